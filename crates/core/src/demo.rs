//! What `finlake demo` (in `finlake-ingest`, which can run the rule engine) and the tests
//! share from the core: the demo's trading day, the shipped reference data, the sample spec
//! and its stages.

use std::path::Path;

use chrono::NaiveDate;

use crate::error::Result;
use crate::generate;
use crate::pipeline::Stages;
use crate::transform::{ExchangeCalendar, RefData, SymbolMap};

/// The demo's trading day.
pub fn demo_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 20).expect("valid date")
}

/// The shipped reference data.
pub fn embedded_refdata() -> Result<(SymbolMap, ExchangeCalendar)> {
    Ok((
        SymbolMap::parse(
            crate::embedded::SYMBOL_MAPPING,
            Path::new("<embedded>/symbol_mapping.csv"),
        )?,
        ExchangeCalendar::embedded(),
    ))
}

/// The sample pipeline `market-data-stream` (embedded), with `${VAR}` defaults.
pub fn sample_spec() -> Result<crate::spec::LoadedSpec> {
    Ok(crate::spec::load_str(
        Path::new("samples/market-data-stream.yaml"),
        crate::embedded::MARKET_DATA_STREAM,
        &|_| None,
    )?)
}

/// The stages of the sample `market-data-stream`, built from its spec on the shipped
/// reference data and the generator's FX rates for `date` (`fx_rates`): JSON trades, symbols
/// to ISIN (unmapped rejected), prices to USD.
pub fn trade_stages(date: NaiveDate, seed: u64) -> Result<Stages> {
    let refdata = RefData::new(None).with_table("fx_rates", generate::fx_rates(date, seed));
    Stages::from_spec(&sample_spec()?, 0, &refdata)
}
