//! Enrichment columns computed before the rules run, so a rule can say
//! `timestamp BETWEEN market_open AND market_close`.
//!
//! `market_open` and `market_close` are the regular session of the row's exchange on its
//! `trade_date`, from the exchange-hours reference data, converted from the exchange's own
//! time zone to UTC on that date: daylight saving is applied per exchange (so the weeks when
//! New York and Europe change clocks on different Sundays come out right), holidays give NULL
//! (the session does not exist, so the condition is unknown and fails), early closes replace
//! the close. Rows of an unknown exchange get NULL too.
// Data path: no unwrap/expect on anything derived from message bytes; each remaining one
// says why it cannot fail.
#![warn(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, TimestampMicrosecondBuilder};
use arrow::datatypes::{DataType, Date32Type, Field, Schema, SchemaRef};
use finlake_core::schema;
use finlake_core::transform::{ExchangeCalendar, Session};

use crate::error::Result;

/// Session open column.
pub const MARKET_OPEN: &str = "market_open";
/// Session close column.
pub const MARKET_CLOSE: &str = "market_close";

/// Whether a schema can be enriched (it has `exchange` and `trade_date`).
pub fn applies(schema: &Schema) -> bool {
    schema.index_of("exchange").is_ok() && schema.index_of(schema::TRADE_DATE).is_ok()
}

/// The schema with the enrichment columns added (when they apply).
pub fn enriched_schema(base: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
    if applies(base) {
        for name in [MARKET_OPEN, MARKET_CLOSE] {
            if base.index_of(name).is_err() {
                fields.push(Field::new(name, schema::timestamp_type(), true));
            }
        }
    }
    Arc::new(Schema::new_with_metadata(fields, base.metadata().clone()))
}

/// Adds `market_open` / `market_close` to a batch that has `exchange` and `trade_date`;
/// other batches are returned unchanged. One calendar lookup per distinct (exchange, date)
/// in the batch, not per row.
pub fn add_session_columns(
    batch: &RecordBatch,
    calendar: &ExchangeCalendar,
) -> Result<RecordBatch> {
    let s = batch.schema();
    if !applies(&s) || s.index_of(MARKET_OPEN).is_ok() {
        return Ok(batch.clone());
    }
    let exchange = batch.column(s.index_of("exchange")?);
    let dates = batch
        .column(s.index_of(schema::TRADE_DATE)?)
        .as_primitive::<Date32Type>();
    let session = |mic: &str, day: i32| {
        let date = finlake_core::transform::symbols::date_of_epoch_days(day);
        match calendar.session(mic, date) {
            Some(Session::Open(o, c)) => Some((o, c)),
            _ => None,
        }
    };
    // a dictionary of MICs on one date (a partition as `finlake dq` reads it): one lookup a
    // MIC, and the rows take their key's session
    let one_date = dates.null_count() == 0
        && !dates.is_empty()
        && arrow::compute::min(dates) == arrow::compute::max(dates);
    if let (Some(dict), true) = (
        exchange.as_dictionary_opt::<arrow::datatypes::Int32Type>(),
        one_date,
    ) {
        if let Some(mics) = dict.values().as_string_opt::<i32>() {
            let day = dates.value(0);
            let mut open = TimestampMicrosecondBuilder::with_capacity(mics.len());
            let mut close = TimestampMicrosecondBuilder::with_capacity(mics.len());
            for mic in mics.iter() {
                let bounds = mic.and_then(|m| session(m, day));
                open.append_option(bounds.map(|b| b.0));
                close.append_option(bounds.map(|b| b.1));
            }
            let mut cols = batch.columns().to_vec();
            for mut bounds in [open, close] {
                let bounds = bounds.finish().with_timezone(schema::UTC);
                cols.push(arrow::compute::take(&bounds, dict.keys(), None)?);
            }
            return Ok(RecordBatch::try_new(enriched_schema(&s), cols)?);
        }
    }
    let exchange: ArrayRef = if exchange.data_type() == &DataType::Utf8 {
        exchange.clone()
    } else {
        arrow::compute::cast(exchange, &DataType::Utf8)?
    };
    let mics = exchange.as_string::<i32>();
    let n = batch.num_rows();
    let mut open = TimestampMicrosecondBuilder::with_capacity(n);
    let mut close = TimestampMicrosecondBuilder::with_capacity(n);
    // hashbrown with foldhash (DataFusion's default map): a lookup per row, cheap
    let mut cache: datafusion::common::HashMap<(&str, i32), Option<(i64, i64)>> =
        datafusion::common::HashMap::default();
    for row in 0..n {
        if mics.is_null(row) || dates.is_null(row) {
            open.append_null();
            close.append_null();
            continue;
        }
        let key = (mics.value(row), dates.value(row));
        let bounds = *cache.entry(key).or_insert_with(|| session(key.0, key.1));
        match bounds {
            Some((o, c)) => {
                open.append_value(o);
                close.append_value(c);
            }
            None => {
                open.append_null();
                close.append_null();
            }
        }
    }
    let mut cols = batch.columns().to_vec();
    cols.push(Arc::new(open.finish().with_timezone(schema::UTC)));
    cols.push(Arc::new(close.finish().with_timezone(schema::UTC)));
    Ok(RecordBatch::try_new(enriched_schema(&s), cols)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn session(mic: &str, y: i32, m: u32, d: u32) -> Option<(String, String)> {
        let cal = ExchangeCalendar::embedded();
        match cal.session(mic, NaiveDate::from_ymd_opt(y, m, d).unwrap())? {
            Session::Open(o, c) => {
                let f = |t: i64| {
                    chrono::DateTime::from_timestamp_micros(t)
                        .unwrap()
                        .format("%H:%M")
                        .to_string()
                };
                Some((f(o), f(c)))
            }
            Session::Closed => None,
        }
    }

    #[test]
    fn sessions_follow_each_exchanges_own_daylight_saving() {
        // 2026-03-10: New York is on EDT (since 8 March), London still on GMT (until 29 March)
        assert_eq!(
            session("XNYS", 2026, 3, 10),
            Some(("13:30".into(), "20:00".into()))
        );
        assert_eq!(
            session("XLON", 2026, 3, 10),
            Some(("08:00".into(), "16:30".into()))
        );
        // 2026-03-31: both on summer time
        assert_eq!(
            session("XLON", 2026, 3, 31),
            Some(("07:00".into(), "15:30".into()))
        );
        // 2026-10-27: London back on GMT (25 Oct), New York still on EDT (until 1 Nov)
        assert_eq!(
            session("XLON", 2026, 10, 27),
            Some(("08:00".into(), "16:30".into()))
        );
        assert_eq!(
            session("XNYS", 2026, 10, 27),
            Some(("13:30".into(), "20:00".into()))
        );
        // winter
        assert_eq!(
            session("XNYS", 2026, 11, 20),
            Some(("14:30".into(), "21:00".into()))
        );
        // Tokyo has no DST
        assert_eq!(
            session("XTKS", 2026, 7, 1),
            Some(("00:00".into(), "06:00".into()))
        );
    }

    #[test]
    fn holidays_close_and_half_days_shorten_the_session() {
        assert_eq!(session("XNYS", 2026, 11, 26), None, "Thanksgiving");
        assert_eq!(
            session("XNYS", 2026, 11, 27),
            Some(("14:30".into(), "18:00".into()))
        );
        assert_eq!(
            session("XLON", 2026, 12, 24),
            Some(("08:00".into(), "12:30".into()))
        );
        assert_eq!(session("XNYS", 2026, 11, 21), None, "Saturday");
        assert_eq!(session("XXXX", 2026, 11, 20), None, "unknown MIC");
    }
}
