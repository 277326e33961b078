//! `finlake demo`: generate a feed, run it through decode, transforms and basic checks, and
//! write the `trades` and `quarantine` Delta tables, with no network and no set-up.

use std::path::{Path, PathBuf};

use chrono::NaiveDate;

use crate::delta::{self, CommitExtras, TableSpec};
use crate::error::Result;
use crate::generate::{self, GenOptions, WireFormat};
use crate::pipeline::{reject_counts, BatchContext, Stages};
use crate::schema;
use crate::spec::SourceType;
use crate::transform::{ExchangeCalendar, RefData, SymbolMap};

/// Demo options.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where the tables go.
    pub lake: PathBuf,
    /// Messages to generate.
    pub rows: usize,
    /// Fault fraction.
    pub faults: f64,
    /// Seed.
    pub seed: u64,
    /// Rows per micro-batch.
    pub batch_size: usize,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            lake: PathBuf::from("demo-lake"),
            rows: 100_000,
            faults: 0.01,
            seed: 42,
            batch_size: 10_000,
        }
    }
}

/// What the demo did.
#[derive(Debug)]
pub struct DemoReport {
    /// Messages in the feed.
    pub feed: usize,
    /// Messages already in the lake from an earlier run (the txn version), skipped.
    pub already_landed: usize,
    /// Messages processed by this run.
    pub generated: usize,
    /// Rows landed.
    pub landed: usize,
    /// Rejects, by (stage, field).
    pub rejects: Vec<((String, String), u64)>,
    /// The trades table.
    pub trades_uri: PathBuf,
    /// The quarantine table.
    pub quarantine_uri: PathBuf,
    /// Delta version of the trades table after the run.
    pub trades_version: u64,
    /// Messages whose outcome differed from the manifest (0 when all is well).
    pub manifest_mismatches: usize,
    /// Seconds each commit to the trades table took, in order.
    pub commit_seconds: Vec<f64>,
}

/// The demo's topic name.
pub const DEMO_TOPIC: &str = "market.trades";
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

/// Runs the demo.
pub async fn run(opts: &DemoOptions) -> Result<DemoReport> {
    let (symbols, calendar) = embedded_refdata()?;
    // The feed streams: a chunk is generated, processed and committed before the next.
    let mut feed = generate::FeedGenerator::new(
        &GenOptions {
            rows: opts.rows,
            faults: opts.faults,
            seed: opts.seed,
            format: WireFormat::Json,
            date: demo_date(),
            source_type: SourceType::Trade,
        },
        &symbols,
        &calendar,
    );
    let stages = trade_stages(demo_date(), opts.seed)?;
    let trades_uri = opts.lake.join("market/trades");
    let quarantine_uri = opts.lake.join("market/quarantine");
    let mut trades = delta::open_or_create(&TableSpec {
        uri: trades_uri.display().to_string(),
        schema: stages.table_schema().clone(),
        partition_by: vec![schema::TRADE_DATE.into()],
        checkpoint_interval: Some(10),
        storage_options: Default::default(),
    })
    .await?;
    let mut quarantine = delta::open_or_create(&TableSpec {
        uri: quarantine_uri.display().to_string(),
        schema: schema::quarantine_schema(),
        partition_by: vec!["ingest_date".into()],
        checkpoint_interval: Some(10),
        storage_options: Default::default(),
    })
    .await?;
    let app_id = format!("demo/{DEMO_TOPIC}/0");
    // Rerunning the demo on the same lake skips what it already landed (exactly-once).
    let start = delta::txn_version(&trades, &app_id).await?.unwrap_or(0) as usize;
    let mut landed = 0;
    let mut reject_totals: std::collections::BTreeMap<(String, String), u64> =
        std::collections::BTreeMap::new();
    let mut mismatches = 0;
    let mut commit_seconds = Vec::new();
    let total = feed.remaining();
    // A fresh feed: each message ingested a few hundred ms after its event, so the sample
    // spec's clock-skew rule sees what a live feed shows.
    let mut arrivals = generate::Arrivals::new(opts.seed);
    // What an earlier run landed is generated again (the same bytes) but not processed.
    let mut chunk_start = 0;
    while chunk_start < start.min(total) {
        let skipped = feed.next_chunk((start - chunk_start).min(10_000));
        arrivals.next(&skipped.event_times);
        chunk_start += skipped.messages.len();
    }
    while feed.remaining() > 0 {
        let generated = feed.next_chunk(opts.batch_size.max(1));
        let msgs: Vec<&[u8]> = generated.messages.iter().map(Vec::as_slice).collect();
        let arrivals = arrivals.next(&generated.event_times);
        let end = chunk_start + msgs.len();
        let offsets: Vec<i64> = (chunk_start as i64..end as i64).collect();
        let correlation_id = crate::telemetry::correlation_id("demo");
        let span = tracing::info_span!("batch", correlation_id = %correlation_id);
        let _enter = span.enter();
        let ctx = BatchContext {
            topic: DEMO_TOPIC,
            partition: 0,
            offsets: &offsets,
            correlation_id: &correlation_id,
            ingested_at: arrivals.last().copied().unwrap_or_default(),
            arrivals: Some(&arrivals),
            message_ids: None,
        };
        let out = stages.process(&msgs, &ctx)?;
        for r in &out.rejects {
            let exp = &generated.manifest[r.index as usize];
            if exp.outcome != "rejected" || (exp.field.is_some() && exp.field != r.field) {
                mismatches += 1;
            }
        }
        for i in out.good_index.values() {
            if generated.manifest[*i as usize].outcome != "lands" {
                mismatches += 1;
            }
        }
        let extras = CommitExtras {
            txns: vec![(app_id.clone(), end as i64)],
            metadata: vec![("correlation_id".into(), correlation_id.clone().into())],
        };
        landed += out.good.num_rows();
        quarantine = delta::append(quarantine, vec![out.quarantine], &extras).await?;
        let started = std::time::Instant::now();
        trades = delta::append(trades, vec![out.good], &extras).await?;
        commit_seconds.push(started.elapsed().as_secs_f64());
        tracing::info!(
            rows = end - chunk_start,
            landed = landed,
            rejected = out.rejects.len(),
            "batch committed"
        );
        for (key, n) in reject_counts(&out.rejects) {
            *reject_totals.entry(key).or_default() += n;
        }
        chunk_start = end;
    }
    Ok(DemoReport {
        feed: total,
        already_landed: start.min(total),
        generated: total.saturating_sub(start),
        landed,
        rejects: reject_totals.into_iter().collect(),
        trades_uri,
        quarantine_uri,
        trades_version: trades.version().unwrap_or_default(),
        manifest_mismatches: mismatches,
        commit_seconds,
    })
}
