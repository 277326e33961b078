//! `data-quality-check`: answers "is this day's data right?" for one pipeline.
//!
//! Read top to bottom, a run is: [`discover`] the pipeline's spec and its table; compile the
//! rules and checks (a bad one fails here, before the lake is touched); reach the lake (bounded
//! by `--timeout`, exit 75); [`scan`] the date's partition in arrival order through the same
//! [`RuleEngine`](crate::RuleEngine) the ingestor runs, measuring the table checks on the
//! way (or reuse the measurements `quality_state` holds for the partition as it is); turn them
//! into [`verdict`]s; append one row per check to `quality_results`; [`write`] the failing rows
//! when asked; return a [`Report`].

mod discover;
mod scan;
mod verdict;
mod write;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use chrono::NaiveDate;
use finlake_core::spec::{self, DestinationType, LoadedSpec};
use finlake_core::transform::ExchangeCalendar;
use sha2::Digest;

pub use discover::{canonical_schema, known_pipelines, sibling};

use crate::error::{QualityError, Result};
use crate::metrics::QualityMetrics;
use crate::report::Report;
use crate::results::{self, RunInfo};
use crate::rules::RuleSet;
use discover::{find_spec, open_table};
use scan::{query_err, scan, Measure};
use verdict::table_check;
use write::{is_file_target, write_dead_letters};

/// What to check, and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// The pipeline's `metadata.name`.
    pub pipeline: String,
    /// The logical date (the `trade_date` partition).
    pub date: NaiveDate,
    /// The spec file; when absent, `spec_dirs` are searched for the pipeline by name.
    pub spec: Option<PathBuf>,
    /// Directories holding DataPipeline specs.
    pub spec_dirs: Vec<PathBuf>,
    /// The lake root, substituted for `${LAKE_URI}` in the spec.
    pub lake: Option<String>,
    /// Directory of `exchange_hours.csv` (and `exchange_holidays.csv`); embedded when absent.
    pub refdata: Option<PathBuf>,
    /// Where failing rows go: a `.jsonl`/`.ndjson`/`.json` file, or a Delta table URI.
    pub dead_letter: Option<String>,
    /// The `quality_results` table; next to the checked table when absent.
    pub results: Option<String>,
    /// Bound on the whole run.
    pub timeout: Duration,
    /// "Now", for freshness (tests pin it); the clock when absent.
    pub now: Option<i64>,
    /// Recompute every metric from the table even when `quality_state` holds them for the
    /// partition as it is now.
    pub rescan: bool,
    /// Memory the sorted read (the fallback, see `scan`) may hold before it spills to disk.
    pub memory_limit: usize,
}

/// [`Options::memory_limit`] unless told otherwise.
pub const DEFAULT_MEMORY_LIMIT: usize = 512 << 20;

/// Runs the check. Spec and argument problems come back before the lake is touched.
pub async fn run(opts: &Options) -> Result<Report> {
    let path = find_spec(opts)?;
    let text = std::fs::read_to_string(&path).map_err(|e| QualityError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    let lake = opts.lake.clone();
    let env = move |k: &str| match (k, &lake) {
        ("LAKE_URI", Some(l)) => Some(l.clone()),
        _ => std::env::var(k).ok(),
    };
    let spec = spec::load_str(&path, &text, &env)?;
    if spec.pipeline.metadata.name != opts.pipeline {
        return Err(QualityError::Usage(format!(
            "{} declares pipeline `{}`, not `{}`",
            path.display(),
            spec.pipeline.metadata.name,
            opts.pipeline
        )));
    }
    let spec = Arc::new(spec);
    // a dead-letter file that cannot be written fails now, not after the scan
    if let Some(target) = opts.dead_letter.as_deref().filter(|t| is_file_target(t)) {
        std::fs::File::create(target).map_err(|e| QualityError::Io {
            path: target.into(),
            source: e,
        })?;
    }
    let canonical = canonical_schema(&spec);
    // compile at load: a bad rule fails here, before the lake is touched
    let rules = RuleSet::compile(&spec, crate::enrich::enriched_schema(&canonical))?;
    let calendar = Arc::new(match &opts.refdata {
        Some(dir) => ExchangeCalendar::load(&dir.join("exchange_hours.csv"))?,
        None => ExchangeCalendar::embedded(),
    });
    let dest = spec
        .pipeline
        .spec
        .destinations
        .iter()
        .find(|d| d.destination_type == DestinationType::Datalake)
        .expect("the spec check requires a datalake destination");
    let uri = dest
        .config
        .table_uri
        .clone()
        .expect("the spec check requires table_uri");
    let mut storage: HashMap<String, String> = dest
        .config
        .storage_options
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if uri.starts_with("s3") {
        let secs = opts.timeout.as_secs().max(1);
        storage
            .entry("timeout".into())
            .or_insert(format!("{secs}s"));
        storage
            .entry("connect_timeout".into())
            .or_insert("5s".into());
    }
    let results_uri = opts
        .results
        .clone()
        .unwrap_or_else(|| sibling(&uri, "quality_results"));
    // The spec as read (after `${VAR}` expansion): the same file with another LAKE_URI or
    // threshold from the environment is another spec.
    let expanded = serde_json::to_vec(&spec.pipeline).unwrap_or_default();
    let spec_sha256 = hex::encode(sha2::Sha256::digest(&expanded));
    check_table(Job {
        opts,
        spec,
        rules,
        canonical,
        calendar,
        uri,
        storage,
        results_uri,
        spec_sha256,
    })
    .await
}

/// What a run knows before it touches the lake: the loaded spec, its compiled rules, the
/// table's expected schema, and where the tables are.
struct Job<'a> {
    opts: &'a Options,
    spec: Arc<LoadedSpec>,
    rules: RuleSet,
    canonical: SchemaRef,
    calendar: Arc<ExchangeCalendar>,
    uri: String,
    storage: HashMap<String, String>,
    results_uri: String,
    spec_sha256: String,
}

/// What cached measurements depend on besides the partition's files: the expanded spec, the
/// reference data the rules read (the exchange calendar: session columns) and the finlake
/// version (a fix to a check must not be hidden by an old cached value).
fn cache_key(spec_sha256: &str, opts: &Options) -> String {
    let mut h = sha2::Sha256::new();
    h.update(spec_sha256.as_bytes());
    h.update(finlake_core::VERSION.as_bytes());
    match &opts.refdata {
        Some(dir) => {
            for name in ["exchange_hours.csv", "exchange_holidays.csv"] {
                h.update(name.as_bytes());
                h.update(std::fs::read(dir.join(name)).unwrap_or_default());
            }
        }
        None => {
            h.update(finlake_core::embedded::EXCHANGE_HOURS.as_bytes());
            h.update(finlake_core::embedded::EXCHANGE_HOLIDAYS.as_bytes());
        }
    }
    hex::encode(h.finalize())
}

/// Runs one step that reaches the lake (opening a table, reading its log) under `--timeout`.
/// Only these steps are bounded as a whole: a scan of a reachable lake may take as long as it
/// takes (each storage request keeps its own timeout), and a slow one is reported as slow.
async fn reach<T>(
    opts: &Options,
    uri: &str,
    step: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(opts.timeout, step).await {
        Ok(r) => r,
        Err(_) => Err(QualityError::Unreachable {
            uri: uri.into(),
            message: format!("no answer within {:?} (--timeout)", opts.timeout),
        }),
    }
}

/// A partition's cached measurements.
#[derive(serde::Serialize, serde::Deserialize)]
struct Cached {
    measure: Measure,
    stats: crate::engine::EngineStats,
}

async fn check_table(job: Job<'_>) -> Result<Report> {
    let opts = job.opts;
    let (spec, rules, canonical, calendar) = (&job.spec, &job.rules, &job.canonical, &job.calendar);
    let (uri, storage, results_uri) = (&job.uri, &job.storage, &job.results_uri);
    let run_at = chrono::Utc::now().timestamp_micros();
    let now = opts.now.unwrap_or(run_at);
    let state_uri = sibling(results_uri, "quality_state");
    // the tables are opened side by side: each is mostly waiting on its log
    let (table, state_table) = tokio::try_join!(
        reach(opts, uri, open_table(uri, storage)),
        reach(opts, &state_uri, results::open_state(&state_uri, storage)),
    )?;
    let version = table.version().unwrap_or_default();
    let table_schema = finlake_core::delta::arrow_schema(&table, uri)?;
    let pipeline = spec.pipeline.metadata.name.clone();
    let fingerprint = results::partition_fingerprint(&table, opts.date)
        .await
        .map_err(|e| query_err(uri, e))?;
    let key = cache_key(&job.spec_sha256, opts);
    let cached = if opts.rescan || opts.dead_letter.is_some() {
        None
    } else {
        results::cached_state(&state_table, &pipeline, uri, opts.date, &key, &fingerprint)
            .await?
            .and_then(|json| serde_json::from_str::<Cached>(&json).ok())
    };
    let table_checks = spec
        .pipeline
        .spec
        .validation
        .as_ref()
        .map(|v| v.table_checks.clone())
        .unwrap_or_default();
    let from_cache = cached.is_some();
    let mut dead: Vec<RecordBatch> = Vec::new();
    // the last 60 days of results, for the volume check's baseline
    let from = opts.date - chrono::Days::new(60);
    let past = async {
        let table = reach(opts, results_uri, results::open(results_uri, storage)).await?;
        let history = results::history(&table, &pipeline, uri, from, opts.date).await?;
        Ok::<_, QualityError>((table, history))
    };
    let ((m, stats), (history_table, history)) = match cached {
        Some(c) => {
            tracing::info!(
                version,
                "metrics for the partition come from quality_state (unchanged since)"
            );
            ((c.measure, c.stats), past.await?)
        }
        None => {
            let started = std::time::Instant::now();
            let (m, stats) = scan(&job, &table, &table_schema, &table_checks, &mut dead).await?;
            let took = started.elapsed();
            tracing::info!(
                rows = m.rows,
                seconds = took.as_secs_f64(),
                "scanned the partition"
            );
            if took > opts.timeout {
                tracing::warn!(
                    seconds = took.as_secs_f64(),
                    rows = m.rows,
                    "the scan was slow: longer than --timeout, but the lake answered throughout"
                );
            }
            let cached = Cached { measure: m, stats };
            let json = serde_json::to_string(&cached).expect("serialisable");
            // the state written while the history is read: both mostly wait on their logs
            let (_, past) = tokio::try_join!(
                results::append_state(
                    state_table,
                    &pipeline,
                    uri,
                    opts.date,
                    &key,
                    &fingerprint,
                    version as i64,
                    &json,
                ),
                past,
            )?;
            ((cached.measure, cached.stats), past)
        }
    };

    // results: rules, dedup, table checks
    let mut out = verdict::rule_results(rules, &stats, spec);
    let verdicts = verdict::Verdicts {
        canonical,
        table_schema: &table_schema,
        calendar,
        date: opts.date,
        now,
        history: &history,
    };
    for c in &table_checks {
        out.push(table_check(c, &m, &verdicts)?);
    }

    let run = RunInfo {
        run_id: uuid::Uuid::new_v4().to_string(),
        run_at,
        pipeline: spec.pipeline.metadata.name.clone(),
        dataset: uri.clone(),
        date: opts.date,
        table_version: version as i64,
        spec_sha256: job.spec_sha256.clone(),
        finlake_version: finlake_core::VERSION.into(),
        rows: m.rows,
    };
    results::append(history_table, &run, &out).await?;
    // The gauges hold the latest checked date's values; dates are in quality_results, not in
    // label values (a long-running process would grow a series per day).
    let metrics = QualityMetrics::global();
    for r in &out {
        let labels = [run.pipeline.as_str(), r.name.as_str()];
        metrics.check_value.with_label_values(&labels).set(r.value);
        metrics
            .check_status
            .with_label_values(&labels)
            .set(r.status.code());
    }
    if let Some(target) = &opts.dead_letter {
        write_dead_letters(target, &dead, storage).await?;
    }
    // `file:line:col: message`: the report says "warning" itself
    let mut warnings: Vec<String> = spec
        .warnings
        .iter()
        .map(|d| {
            format!(
                "{}:{}:{}: {}",
                spec.file.display(),
                d.pos.line,
                d.pos.col,
                d.message
            )
        })
        .collect();
    if m.rows == 0 {
        warnings.push(format!(
            "partition {} = {} of {uri} is empty",
            finlake_core::schema::TRADE_DATE,
            opts.date
        ));
    }
    Ok(Report {
        run,
        results: out,
        history,
        warnings,
        metrics_from: if from_cache { "cache" } else { "scan" }.into(),
    })
}
