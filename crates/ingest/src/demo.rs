//! `finlake demo`: the whole streaming path in one process, with no network and no set-up.
//!
//! An embedded broker (librdkafka's mock cluster, on loopback), the generated feed of one
//! trading day with injected faults and producer retries, each message stamped with the time
//! it arrived that day; the ingestor on the sample spec `market-data-stream` (its stages,
//! rules, dedup and patterns, `ingest_time: message_timestamp` so the day is judged as it
//! arrived); then a reconciliation of every offset from the lake alone, compared with the
//! generator's manifest.
//!
//! Rerunning on the same lake lands nothing twice: the broker is new, but the feed (the same
//! seed and size) is the same bytes at the same offsets, and the ingestor starts each
//! partition at the version its table holds.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use finlake_core::delta::TableSpec;
use finlake_core::generate::{self, Expected, GenOptions, WireFormat};
use finlake_core::spec::SourceType;
use finlake_core::transform::RefData;

use crate::config::PipelineConfig;
use crate::devkafka::{self, EmbeddedBroker, Placed, ProduceOptions};
use crate::error::{IngestError, Result};
use crate::ingestor::{Health, Ingestor};
use crate::reconcile::{self, Fate, Reconciliation};

/// The demo's topic.
pub const TOPIC: &str = "market.trades";

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
    /// Partitions of the topic.
    pub partitions: i32,
    /// Close a micro-batch at this many messages.
    pub batch_size: usize,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            lake: PathBuf::from("demo-lake"),
            rows: 100_000,
            faults: 0.01,
            seed: 42,
            partitions: 3,
            batch_size: 10_000,
        }
    }
}

/// What the demo did.
#[derive(Debug)]
pub struct DemoReport {
    /// Messages in the feed.
    pub feed: usize,
    /// Messages the lake held already (an earlier run's), per the tables' txn versions.
    pub already_landed: usize,
    /// The data table's txn version per partition when the run started.
    pub start_versions: Vec<i64>,
    /// Per offset, from the lake.
    pub reconciliation: Reconciliation,
    /// Alert rows the patterns raised (the whole alerts table).
    pub alerts: usize,
    /// Messages whose fate differs from the manifest, with the first few described.
    pub manifest_mismatches: usize,
    /// The first mismatches.
    pub mismatch_examples: Vec<String>,
    /// The data table.
    pub trades_uri: String,
    /// The quarantine table.
    pub quarantine_uri: String,
    /// Delta version of the data table after the run.
    pub trades_version: i64,
    /// Seconds from the ingestor's start to the commit covering every offset (0 when the
    /// lake held everything already).
    pub ingest_seconds: f64,
    /// The order flow behind the landed trades (orders, executions, quotes, accounts),
    /// written beside them for the batch jobs.
    pub order_flow: finlake_core::orderflow::Landed,
}

/// The sample spec `market-data-stream` (embedded) on `lake` and `bootstrap`, with the given
/// wire format and `processing.config`, and, for a replay, `ingest_time: message_timestamp`.
/// FX rates are the generator's for the demo day (`seed`).
pub fn sample_config(
    lake: &Path,
    bootstrap: &str,
    format: WireFormat,
    processing: &str,
    replay: bool,
    seed: u64,
) -> Result<PipelineConfig> {
    let date = finlake_core::demo::demo_date();
    let format = match format {
        WireFormat::Json => "JSON",
        WireFormat::Avro => "AVRO_CONFLUENT",
    };
    let group = "        consumer_group: finlake-market-data-stream\n";
    let mut source_extra = String::from(group);
    if format == "AVRO_CONFLUENT" {
        source_extra.push_str("        schema_id: 7\n");
    }
    if replay {
        source_extra.push_str("        ingest_time: message_timestamp\n");
    }
    let text = finlake_core::embedded::MARKET_DATA_STREAM
        .replace(
            "    config: {max_batch_size: 1000, batch_timeout: 10ms}",
            &format!("    config: {processing}"),
        )
        .replace("      format: JSON\n", &format!("      format: {format}\n"))
        .replace(group, &source_extra);
    let lake = lake.display().to_string();
    let spec =
        finlake_core::spec::load_str(Path::new("samples/market-data-stream.yaml"), &text, &|k| {
            match k {
                "KAFKA_BOOTSTRAP" => Some(bootstrap.to_string()),
                "LAKE_URI" => Some(lake.clone()),
                _ => None,
            }
        })
        .map_err(finlake_core::Error::from)?;
    let refdata = RefData::new(None).with_table("fx_rates", generate::fx_rates(date, seed));
    PipelineConfig::from_spec(spec, &refdata, &|_| None)
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| IngestError::Internal(e.to_string()))
}

/// Each partition's txn version in the data table (0 where it holds none).
async fn versions(data: &TableSpec, pipeline: &str, partitions: i32) -> Result<Vec<i64>> {
    let Some(t) = finlake_core::delta::open_existing(&data.uri, &data.storage_options).await?
    else {
        return Ok(vec![0; partitions as usize]);
    };
    let mut out = Vec::new();
    for p in 0..partitions {
        let app = crate::config::app_id(pipeline, TOPIC, p);
        out.push(
            finlake_core::delta::txn_version(&t, &app)
                .await?
                .unwrap_or(0),
        );
    }
    Ok(out)
}

/// Runs the ingestor until the data table's txn versions reach `highs`, then stops it (it
/// commits what it buffered and exits cleanly).
async fn ingest_until(cfg: PipelineConfig, highs: &[i64]) -> Result<Duration> {
    let partitions = highs.len() as i32;
    let data = cfg.data.clone();
    let name = cfg.name.clone();
    let health: Arc<Health> = Arc::default();
    let (stop, stop_watch) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let ingestor = Ingestor::start(cfg, health.clone()).await?;
    let mut task = tokio::spawn(ingestor.run(stop_watch));
    loop {
        tokio::select! {
            done = &mut task => {
                done.map_err(|e| IngestError::Internal(e.to_string()))??;
                return Err(IngestError::Internal("the ingestor stopped before the feed was in".into()));
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        if !health.assigned.load(Ordering::SeqCst) {
            continue;
        }
        let now = versions(&data, &name, partitions).await?;
        if now.iter().zip(highs).all(|(v, h)| v >= h) {
            break;
        }
    }
    let elapsed = started.elapsed();
    let _ = stop.send(true);
    task.await
        .map_err(|e| IngestError::Internal(e.to_string()))??;
    Ok(elapsed)
}

/// The message a producer retry repeats (`duplicate_of:<index>`).
fn retry_of(e: &Expected) -> Option<u64> {
    e.fault
        .as_deref()?
        .strip_prefix("duplicate_of:")?
        .parse()
        .ok()
}

/// Compares each message's fate with the manifest: a reject is quarantined (naming the field
/// the manifest names), a clean message lands, and of a message and its producer retries
/// exactly one lands and the rest are counted duplicates (which one depends on which partition
/// was read first). Returns the mismatches and the first few described.
fn compare(manifest: &[Expected], placed: &[Placed], r: &Reconciliation) -> (usize, Vec<String>) {
    let fate = |i: usize| {
        placed.get(i).and_then(|p| {
            r.fates
                .get(&p.partition)
                .and_then(|v| v.get(usize::try_from(p.offset).ok()?))
                .and_then(Option::as_ref)
        })
    };
    let mut retries: std::collections::HashMap<usize, Vec<usize>> = Default::default();
    for (i, e) in manifest.iter().enumerate() {
        if let Some(j) = retry_of(e) {
            retries.entry(j as usize).or_default().push(i);
        }
    }
    let (mut n, mut examples) = (0, Vec::new());
    let mut mismatch = |i: usize, what: String| {
        n += 1;
        if examples.len() < 5 {
            let p = &placed[i];
            examples.push(format!(
                "message {i} ({TOPIC}/{}/{}): {what}",
                p.partition, p.offset
            ));
        }
    };
    for (i, e) in manifest.iter().enumerate() {
        // a missing offset is a reconciliation problem already
        let Some(f) = fate(i) else { continue };
        if retry_of(e).is_some() {
            continue; // judged with its original
        }
        if let Some(group) = retries.get(&i) {
            let fates: Vec<Option<&Fate>> = std::iter::once(Some(f))
                .chain(group.iter().map(|&k| fate(k)))
                .collect();
            let landed = fates.iter().filter(|f| **f == Some(&Fate::Landed)).count();
            let dups = fates
                .iter()
                .filter(|f| **f == Some(&Fate::Duplicate))
                .count();
            if landed != 1 || dups != group.len() {
                mismatch(i, format!("it and its producer retries {group:?}: {fates:?}; one lands, the rest are duplicates"));
            }
            continue;
        }
        let ok = match f {
            Fate::Landed => e.outcome == "lands",
            Fate::Duplicate => false,
            Fate::Quarantined { field, .. } => {
                e.outcome == "rejected"
                    && (e.field.is_none() || field.is_none() || e.field == *field)
            }
        };
        if !ok {
            mismatch(
                i,
                format!(
                    "the manifest says {} (stage {:?}, field {:?}, fault {:?}); the lake has {f:?}",
                    e.outcome, e.stage, e.field, e.fault
                ),
            );
        }
    }
    (n, examples)
}

/// Runs the demo.
pub fn run(opts: &DemoOptions) -> Result<DemoReport> {
    let partitions = opts.partitions.max(1);
    let broker = EmbeddedBroker::start(
        &[
            TOPIC.to_string(),
            "market.trades.dlq".into(),
            "alerts.price_gap".into(),
            "alerts.unusual_volume".into(),
        ],
        partitions,
    )?;
    let result = run_on(opts, &broker.bootstrap, partitions);
    broker.stop();
    result
}

fn run_on(opts: &DemoOptions, bootstrap: &str, partitions: i32) -> Result<DemoReport> {
    let rt = runtime()?;
    let (symbols, calendar) = finlake_core::demo::embedded_refdata()?;
    let (manifest, placed): (Vec<Expected>, Vec<Placed>) = rt.block_on(devkafka::produce_feed(
        &ProduceOptions {
            bootstrap: bootstrap.to_string(),
            topic: TOPIC.into(),
            gen: GenOptions {
                rows: opts.rows,
                faults: opts.faults,
                seed: opts.seed,
                format: WireFormat::Json,
                date: finlake_core::demo::demo_date(),
                source_type: SourceType::Trade,
            },
            confluent_schema_id: None,
            window: 20_000,
            arrival_timestamps: true,
        },
        &symbols,
        &calendar,
    ))?;
    let marks = devkafka::low_watermarks(bootstrap, TOPIC)?;
    if let Some((p, lo, _)) = marks.iter().find(|m| m.1 != 0) {
        return Err(IngestError::Internal(format!(
            "the embedded broker dropped the oldest messages of partition {p} (low watermark {lo}; it keeps 5 MiB a partition): ask for fewer --rows or more --partitions"
        )));
    }
    let highs: Vec<i64> = marks.iter().map(|m| m.2).collect();
    let cfg = sample_config(
        &opts.lake,
        bootstrap,
        WireFormat::Json,
        &format!(
            "{{max_batch_size: {}, batch_timeout: 50ms, commit_interval: 500ms}}",
            opts.batch_size.max(1)
        ),
        true,
        opts.seed,
    )?;
    let (data, quarantine, events, alerts) = (
        cfg.data.clone(),
        cfg.quarantine.clone(),
        cfg.events.clone(),
        cfg.alerts.clone(),
    );
    let start_versions = rt.block_on(versions(&cfg.data, &cfg.name, partitions))?;
    let already_landed: usize = start_versions
        .iter()
        .zip(&highs)
        .map(|(v, h)| (*v).min(*h).max(0) as usize)
        .sum();
    let ingest_seconds = if already_landed < placed.len() {
        rt.block_on(ingest_until(cfg, &highs))?.as_secs_f64()
    } else {
        0.0
    };
    let reconciliation = rt.block_on(reconcile::reconcile(
        &data,
        &quarantine,
        &events,
        TOPIC,
        &highs,
    ))?;
    let (mismatches, examples) = compare(&manifest, &placed, &reconciliation);
    // what the batch jobs read beside the trades: the orders and executions behind them, the
    // NBBO over the day and the accounts (replaced per date: a rerun writes the same rows)
    let order_flow = rt.block_on(finlake_core::orderflow::land(
        &opts.lake.display().to_string(),
        finlake_core::demo::demo_date(),
        opts.seed,
        &data.storage_options,
    ))?;
    let (trades_version, alerts) = rt.block_on(async {
        let t = finlake_core::delta::open_existing(&data.uri, &data.storage_options).await?;
        let version = t
            .as_ref()
            .and_then(|t| t.version())
            .map_or(-1, |v| v as i64);
        let mut n = 0;
        if let Some(a) = &alerts {
            if let Some(t) = finlake_core::delta::open_existing(&a.uri, &a.storage_options).await? {
                n = finlake_core::delta::read_all(&t)
                    .await?
                    .iter()
                    .map(|b| b.num_rows())
                    .sum();
            }
        }
        Ok::<_, IngestError>((version, n))
    })?;
    Ok(DemoReport {
        feed: placed.len(),
        already_landed,
        start_versions,
        reconciliation,
        alerts,
        manifest_mismatches: mismatches,
        mismatch_examples: examples,
        trades_uri: data.uri,
        quarantine_uri: quarantine.uri,
        trades_version,
        ingest_seconds,
        order_flow,
    })
}
