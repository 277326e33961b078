//! `data-quality-check`: answers "is this day's data right?" for one pipeline.
//!
//! Finds the pipeline's spec, opens its lake table, streams the date's partition in arrival
//! order through the same [`RuleEngine`] the ingestor runs, measures the table checks on
//! the way, appends one row per check to `quality_results`, and returns a [`Report`]. The
//! whole run is bounded by `timeout`: an unreachable lake is an error of class transient
//! (exit 75) within that time, whatever the object store's own retry policy would do.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray, UInt32Array};
use arrow::compute::{cast, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampMicrosecondType};
use arrow::row::{RowConverter, SortField};
use chrono::NaiveDate;
use deltalake::DeltaTable;
use finlake_core::spec::{self, DestinationType, LoadedSpec, TableCheckKind, TransformType};
use finlake_core::transform::{ExchangeCalendar, Session};
use futures::StreamExt;
use sha2::Digest;

use crate::checks::{self, CheckResult, Status};
use crate::dedup::Verdict;
use crate::engine::RuleEngine;
use crate::error::{QualityError, Result};
use crate::metrics::QualityMetrics;
use crate::report::Report;
use crate::results::{self, RunInfo};
use crate::rules::{kind_name, RuleSet};

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
}

/// Spec files in `dirs`, with the pipeline names they declare.
pub fn known_pipelines(dirs: &[PathBuf]) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml") | Some("yml")
                )
            })
            .collect();
        files.sort();
        for path in files {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let Ok(node) = spec::yaml::parse(&text) else {
                continue;
            };
            let json = node.to_json();
            if json.get("kind").and_then(|k| k.as_str()) != Some(spec::KIND) {
                continue;
            }
            if let Some(name) = json.pointer("/metadata/name").and_then(|n| n.as_str()) {
                out.push((name.to_string(), path));
            }
        }
    }
    out
}

fn find_spec(opts: &Options) -> Result<PathBuf> {
    if let Some(p) = &opts.spec {
        return Ok(p.clone());
    }
    let known = known_pipelines(&opts.spec_dirs);
    if let Some((_, path)) = known.iter().find(|(n, _)| n == &opts.pipeline) {
        return Ok(path.clone());
    }
    let dirs: Vec<String> = opts
        .spec_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    let names: Vec<&str> = known.iter().map(|(n, _)| n.as_str()).collect();
    Err(QualityError::Usage(format!(
        "unknown pipeline `{}`: known pipelines in {} are: {}",
        opts.pipeline,
        dirs.join(", "),
        if names.is_empty() {
            "(none)".to_string()
        } else {
            names.join(", ")
        }
    )))
}

/// The canonical table schema of a pipeline's first source, after its transforms.
pub fn canonical_schema(spec: &LoadedSpec) -> SchemaRef {
    let p = &spec.pipeline.spec;
    let st = p.sources[0].source_type;
    let has = |t| p.transformations.iter().any(|x| x.transform_type == t);
    finlake_core::schema::table_schema(
        st,
        has(TransformType::Normalize),
        has(TransformType::CurrencyConversion) || has(TransformType::Enrich),
    )
}

/// Casts a scanned batch to `schema` (string views and dictionary partition values become
/// the canonical types); columns outside `schema` are dropped.
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let cols = schema
        .fields()
        .iter()
        .map(|f| {
            let c = batch
                .column_by_name(f.name())
                .ok_or_else(|| QualityError::Query {
                    table: "scan".into(),
                    message: format!("column `{}` is missing from the table", f.name()),
                })?;
            Ok(if c.data_type() == f.data_type() {
                c.clone()
            } else {
                cast(c, f.data_type())?
            })
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    // the table may hold NULLs in columns the canonical schema declares required
    let relaxed: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    Ok(RecordBatch::try_new(Arc::new(Schema::new(relaxed)), cols)?)
}

fn sibling(uri: &str, name: &str) -> String {
    let trimmed = uri.trim_end_matches('/');
    match trimmed.rfind('/') {
        Some(i) => format!("{}/{name}", &trimmed[..i]),
        None => name.to_string(),
    }
}

async fn open_table(uri: &str, storage: &HashMap<String, String>) -> Result<DeltaTable> {
    let url = if uri.contains("://") {
        url::Url::parse(uri).map_err(|e| QualityError::Usage(format!("table {uri}: {e}")))?
    } else {
        let p = Path::new(uri);
        if !p.exists() {
            return Err(QualityError::Usage(format!(
                "table {uri}: no such directory (is --lake right?)"
            )));
        }
        let abs = std::fs::canonicalize(p).map_err(|e| QualityError::Io {
            path: uri.into(),
            source: e,
        })?;
        url::Url::from_directory_path(abs)
            .map_err(|_| QualityError::Usage(format!("table {uri}: not a directory")))?
    };
    if url.scheme() == "s3" || url.scheme() == "s3a" {
        deltalake::aws::register_handlers(None);
    }
    let table = DeltaTable::try_from_url_with_storage_options(url, storage.clone())
        .await
        .map_err(|e| finlake_core::delta::DeltaError::Table {
            uri: uri.into(),
            operation: "open",
            source: Box::new(e),
        })?;
    if table.version().is_none() {
        return Err(QualityError::Usage(format!(
            "table {uri}: not a Delta table (no _delta_log)"
        )));
    }
    Ok(table)
}

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
    let work = check_table(
        opts,
        spec,
        rules,
        canonical,
        calendar,
        uri.clone(),
        storage,
        results_uri,
        spec_sha256,
    );
    work.await
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

/// Key columns, their row converter, and the distinct keys seen.
struct KeySet {
    columns: Vec<String>,
    converter: RowConverter,
    seen: HashSet<Box<[u8]>>,
}

/// What a scan of a partition measured; cached in `quality_state` with the rule counts.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Measure {
    rows: u64,
    nulls: BTreeMap<String, u64>,
    #[serde(skip)]
    keys: Option<KeySet>,
    /// Key columns and distinct keys, for duplicate_count.
    distinct_keys: Option<(Vec<String>, u64)>,
    newest: Option<i64>,
    seen: BTreeMap<String, BTreeMap<String, bool>>,
    /// The exchanges (MICs) in the partition: freshness is judged against their closes.
    #[serde(default)]
    exchanges: std::collections::BTreeSet<String>,
}

/// A partition's cached measurements.
#[derive(serde::Serialize, serde::Deserialize)]
struct Cached {
    measure: Measure,
    stats: crate::engine::EngineStats,
}

#[allow(clippy::too_many_arguments)]
async fn check_table(
    opts: &Options,
    spec: Arc<LoadedSpec>,
    rules: RuleSet,
    canonical: SchemaRef,
    calendar: Arc<ExchangeCalendar>,
    uri: String,
    storage: HashMap<String, String>,
    results_uri: String,
    spec_sha256: String,
) -> Result<Report> {
    let run_at = chrono::Utc::now().timestamp_micros();
    let now = opts.now.unwrap_or(run_at);
    let table = reach(opts, &uri, open_table(&uri, &storage)).await?;
    let version = table.version().unwrap_or_default();
    let table_schema = finlake_core::delta::arrow_schema(&table, &uri)?;
    let pipeline = spec.pipeline.metadata.name.clone();
    let fingerprint = results::partition_fingerprint(&table, opts.date)
        .await
        .map_err(|e| query_err(&uri, e))?;
    let state_uri = sibling(&results_uri, "quality_state");
    let state_table = reach(opts, &state_uri, results::open_state(&state_uri, &storage)).await?;
    let key = cache_key(&spec_sha256, opts);
    let cached = if opts.rescan || opts.dead_letter.is_some() {
        None
    } else {
        results::cached_state(&state_table, &pipeline, &uri, opts.date, &key, &fingerprint)
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
    let (m, stats) = match cached {
        Some(c) => {
            tracing::info!(
                version,
                "metrics for the partition come from quality_state (unchanged since)"
            );
            (c.measure, c.stats)
        }
        None => {
            let started = std::time::Instant::now();
            let (m, stats) = scan(
                opts,
                &spec,
                &canonical,
                &calendar,
                &table,
                &table_schema,
                &uri,
                &table_checks,
                &mut dead,
            )
            .await?;
            let took = started.elapsed();
            if took > opts.timeout {
                tracing::warn!(
                    seconds = took.as_secs_f64(),
                    rows = m.rows,
                    "the scan was slow: longer than --timeout, but the lake answered throughout"
                );
            }
            let cached = Cached { measure: m, stats };
            let json = serde_json::to_string(&cached).expect("serialisable");
            results::append_state(
                state_table,
                &pipeline,
                &uri,
                opts.date,
                &key,
                &fingerprint,
                version as i64,
                &json,
            )
            .await?;
            (cached.measure, cached.stats)
        }
    };

    // results: rules, dedup, table checks
    let mut out: Vec<CheckResult> = Vec::new();
    for rule in &rules.rules {
        let s = stats.rules.get(&rule.name).copied().unwrap_or_default();
        out.push(CheckResult {
            name: rule.name.clone(),
            kind: format!("rule:{}", kind_name(rule.kind)),
            status: checks::rule_status(s.failed, rule.severity),
            value: s.failed as f64,
            unit: "rows".into(),
            warn: None,
            error: None,
            detail: format!(
                "{} of {} rows fail `{}` (action {}, severity {}); {} NULL ({}){}",
                s.failed,
                s.rows,
                rule.condition,
                rule.action.name(),
                match rule.severity {
                    spec::Severity::Warn => "warn",
                    spec::Severity::Error => "error",
                },
                s.null_rows,
                match rule.null_policy {
                    crate::rules::NullPolicy::Fails => "counted as failures",
                    crate::rules::NullPolicy::NotChecked => "not checked",
                    crate::rules::NullPolicy::UnknownFails => "unknown, counted as failures",
                },
                if s.error_rows > 0 {
                    format!(
                        "; {} could not be evaluated (counted as failures)",
                        s.error_rows
                    )
                } else {
                    String::new()
                }
            ),
        });
    }
    if let Some(d) = &rules.dedup {
        let sev = spec
            .pipeline
            .spec
            .business_rules
            .iter()
            .find(|b| b.name == d.name)
            .and_then(|b| b.severity)
            .unwrap_or(spec::Severity::Warn);
        let ds = stats.dedup;
        for (counter, value, what) in [
            ("duplicate_rows", ds.duplicate_rows, "exact duplicates (same key and payload within the window), dropped"),
            ("duplicate_keys", ds.duplicate_keys, "distinct keys seen more than once within the window"),
            ("conflicting_duplicates", ds.conflicting_duplicates, "same key within the window with a different payload, quarantined with both versions kept"),
            ("late", ds.late, "rows older than the watermark, not checkable against dedup state"),
        ] {
            out.push(CheckResult {
                name: format!("{}.{counter}", d.name),
                kind: format!("dedup:{counter}"),
                status: if counter == "duplicate_keys" { Status::Pass } else { checks::rule_status(value, sev) },
                value: value as f64,
                unit: "rows".into(),
                warn: None,
                error: None,
                detail: format!("{value} {what} (keys {})", d.keys.join(", ")),
            });
        }
    }
    let history_table = reach(opts, &results_uri, results::open(&results_uri, &storage)).await?;
    let from = opts.date - chrono::Days::new(60);
    let history = results::history(
        &history_table,
        &spec.pipeline.metadata.name,
        &uri,
        from,
        opts.date,
    )
    .await?;
    for c in &table_checks {
        out.push(table_check(
            c,
            &m,
            &canonical,
            &table_schema,
            &calendar,
            opts.date,
            now,
            &history,
        )?);
    }

    let run = RunInfo {
        run_id: uuid::Uuid::new_v4().to_string(),
        run_at,
        pipeline: spec.pipeline.metadata.name.clone(),
        dataset: uri.clone(),
        date: opts.date,
        table_version: version as i64,
        spec_sha256,
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
        write_dead_letters(target, &dead, &storage).await?;
    }
    let mut warnings: Vec<String> = spec.warnings.iter().map(|d| d.render(&spec.file)).collect();
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

/// Streams the partition through the rule engine, measuring the table checks on the way.
#[allow(clippy::too_many_arguments)]
async fn scan(
    opts: &Options,
    spec: &Arc<LoadedSpec>,
    canonical: &SchemaRef,
    calendar: &Arc<ExchangeCalendar>,
    table: &DeltaTable,
    table_schema: &Schema,
    uri: &str,
    table_checks: &[spec::TableCheck],
    dead: &mut Vec<RecordBatch>,
) -> Result<(Measure, crate::engine::EngineStats)> {
    let ctx = finlake_core::delta::sql_context(table, "t").await?;
    let mut order = vec!["_ingested_at", "_topic", "_partition", "_offset"];
    order.retain(|c| table_schema.index_of(c).is_ok());
    let order_by = if order.is_empty() {
        String::new()
    } else {
        format!(" ORDER BY {}", order.join(", "))
    };
    let sql = format!(
        "SELECT * FROM t WHERE {} = DATE '{}'{order_by}",
        finlake_core::schema::TRADE_DATE,
        opts.date
    );
    let df = ctx.sql(&sql).await.map_err(|e| query_err(uri, e))?;
    let mut stream = df.execute_stream().await.map_err(|e| query_err(uri, e))?;

    let mut engine = RuleEngine::new(
        spec.clone(),
        canonical_nullable(canonical),
        calendar.clone(),
    )?;
    let dedup_keys = engine.rules().dedup.as_ref().map(|d| d.keys.clone());
    let mut m = Measure::default();
    for c in table_checks {
        match c.kind {
            TableCheckKind::MissingPercent => {
                if let Some(col) = &c.column {
                    m.nulls.insert(col.clone(), 0);
                }
            }
            TableCheckKind::DuplicateCount => {
                let keys = dedup_keys.clone().unwrap_or_default();
                let fields = keys
                    .iter()
                    .map(|k| {
                        Ok(SortField::new(
                            canonical.field_with_name(k)?.data_type().clone(),
                        ))
                    })
                    .collect::<Result<Vec<_>>>()?;
                m.keys = Some(KeySet {
                    columns: keys,
                    converter: RowConverter::new(fields)?,
                    seen: HashSet::new(),
                });
            }
            TableCheckKind::Completeness => {
                if let Some(col) = &c.column {
                    m.seen.insert(
                        col.clone(),
                        c.expected.iter().map(|v| (v.clone(), false)).collect(),
                    );
                }
            }
            _ => {}
        }
    }
    let relaxed = canonical_nullable(canonical);
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| query_err(uri, e))?;
        if batch.num_rows() == 0 {
            continue;
        }
        let batch = conform(&batch, &relaxed)?;
        measure(&mut m, &batch)?;
        let out = engine.process(&batch)?;
        if opts.dead_letter.is_some() {
            dead.extend(dead_letters(
                &batch,
                engine.rules(),
                &out.failed,
                &out.dedup,
            )?);
        }
    }
    if let Some(k) = m.keys.take() {
        m.distinct_keys = Some((k.columns, k.seen.len() as u64));
    }
    Ok((m, engine.totals().clone()))
}

fn canonical_nullable(s: &SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(
        s.fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ))
}

/// A failed query: unreachable when a storage error in its chain is transient, a usage error
/// when storage says not found or forbidden, otherwise a query error.
fn query_err(uri: &str, e: impl std::error::Error + 'static) -> QualityError {
    let message = e.to_string();
    match finlake_core::delta::storage_class(&e) {
        Some(finlake_core::ErrorClass::Transient) => QualityError::Unreachable {
            uri: uri.into(),
            message,
        },
        Some(finlake_core::ErrorClass::Config) => {
            QualityError::Usage(format!("table {uri}: {message}"))
        }
        _ => QualityError::Query {
            table: uri.into(),
            message,
        },
    }
}

fn measure(m: &mut Measure, batch: &RecordBatch) -> Result<()> {
    m.rows += batch.num_rows() as u64;
    for (col, n) in m.nulls.iter_mut() {
        if let Some(c) = batch.column_by_name(col) {
            *n += c.null_count() as u64;
        }
    }
    if let Some(KeySet {
        columns: keys,
        converter: conv,
        seen: set,
    }) = &mut m.keys
    {
        let cols = keys
            .iter()
            .map(|k| Ok(batch.column(batch.schema().index_of(k)?).clone()))
            .collect::<Result<Vec<_>>>()?;
        let rows = conv.convert_columns(&cols)?;
        for r in rows.iter() {
            if !set.contains(r.as_ref()) {
                set.insert(r.as_ref().into());
            }
        }
    }
    if let Some(ts) = batch.column_by_name(finlake_core::schema::EVENT_TIME) {
        if let Some(max) = arrow::compute::max(ts.as_primitive::<TimestampMicrosecondType>()) {
            m.newest = Some(m.newest.map_or(max, |n: i64| n.max(max)));
        }
    }
    if let Some(ex) = batch.column_by_name("exchange") {
        let ex = cast(ex, &DataType::Utf8)?;
        for mic in ex.as_string::<i32>().iter().flatten() {
            if !m.exchanges.contains(mic) {
                m.exchanges.insert(mic.to_string());
            }
        }
    }
    for (col, expected) in m.seen.iter_mut() {
        if let Some(c) = batch.column_by_name(col) {
            let c = cast(c, &DataType::Utf8)?;
            for v in c.as_string::<i32>().iter().flatten() {
                if let Some(seen) = expected.get_mut(v) {
                    *seen = true;
                }
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn table_check(
    c: &spec::TableCheck,
    m: &Measure,
    canonical: &Schema,
    table_schema: &Schema,
    calendar: &ExchangeCalendar,
    date: NaiveDate,
    now: i64,
    history: &BTreeMap<String, Vec<results::Point>>,
) -> Result<CheckResult> {
    let kind = checks::kind_name(c.kind).to_string();
    let judge = |value: f64, dw: Option<&str>, de: Option<&str>| {
        checks::judge(c, value, dw, de)
            .map_err(|e| QualityError::Usage(format!("check `{}`: {e}", c.name)))
    };
    let (value, unit, status, detail): (f64, &str, Status, String) = match c.kind {
        TableCheckKind::RowCount => {
            let v = m.rows as f64;
            (
                v,
                "rows",
                judge(v, None, Some("1"))?,
                format!("{} rows on {date}", m.rows),
            )
        }
        TableCheckKind::MissingPercent => {
            let col = c.column.as_deref().unwrap_or_default();
            let nulls = m.nulls.get(col).copied().unwrap_or(0);
            let pct = if m.rows == 0 {
                0.0
            } else {
                100.0 * nulls as f64 / m.rows as f64
            };
            (
                pct,
                "%",
                judge(pct, None, None)?,
                format!("{nulls} of {} rows have no `{col}`", m.rows),
            )
        }
        TableCheckKind::DuplicateCount => match &m.distinct_keys {
            Some((keys, distinct)) if !keys.is_empty() => {
                let d = m.rows - distinct;
                (
                    d as f64,
                    "rows",
                    judge(d as f64, None, Some("0"))?,
                    format!(
                        "{d} rows repeat a key ({}) already in the partition",
                        keys.join(", ")
                    ),
                )
            }
            _ => (
                0.0,
                "rows",
                Status::Error,
                "duplicate_count needs a deduplicate business rule for its keys".into(),
            ),
        },
        TableCheckKind::Freshness => {
            let reference = freshness_reference(calendar, date, now, &m.exchanges);
            match m.newest {
                Some(t) => {
                    let lag = ((reference - t).max(0)) as f64 / 1e6;
                    (
                        lag,
                        "s",
                        judge(lag, None, None)?,
                        format!("newest event {}s before {}", lag, fmt_ts(reference)),
                    )
                }
                None => (
                    f64::INFINITY,
                    "s",
                    Status::Error,
                    "no rows: nothing is fresh".into(),
                ),
            }
        }
        TableCheckKind::Schema => {
            let mut problems = Vec::new();
            for f in canonical.fields() {
                match table_schema.field_with_name(f.name()) {
                    Err(_) => problems.push(format!("missing column `{}`", f.name())),
                    Ok(t) if !same_type(t.data_type(), f.data_type()) => problems.push(format!(
                        "column `{}` is {}, expected {}",
                        f.name(),
                        t.data_type(),
                        f.data_type()
                    )),
                    Ok(_) => {}
                }
            }
            let v = problems.len() as f64;
            let detail = if problems.is_empty() {
                "every expected column has its type".to_string()
            } else {
                problems.join("; ")
            };
            (v, "columns", judge(v, None, Some("0"))?, detail)
        }
        TableCheckKind::Completeness => {
            let col = c.column.as_deref().unwrap_or_default();
            let missing: Vec<&str> = m
                .seen
                .get(col)
                .map(|e| {
                    e.iter()
                        .filter(|(_, s)| !**s)
                        .map(|(v, _)| v.as_str())
                        .collect()
                })
                .unwrap_or_default();
            let v = missing.len() as f64;
            let detail = if missing.is_empty() {
                format!("all {} expected `{col}` values present", c.expected.len())
            } else {
                format!("missing `{col}` values: {}", missing.join(", "))
            };
            (v, "values", judge(v, None, Some("0"))?, detail)
        }
        TableCheckKind::VolumeAnomaly => {
            let past: Vec<f64> = history
                .get(&c.name)
                .map(|pts| {
                    pts.iter()
                        .rev()
                        .take(checks::HISTORY_DAYS)
                        .map(|p| p.rows as f64)
                        .collect()
                })
                .unwrap_or_default();
            let x = m.rows as f64;
            match checks::robust_score(x, &past) {
                None => (
                    f64::NAN,
                    "score",
                    Status::InsufficientHistory,
                    format!(
                        "{} days of history, {} needed",
                        past.len(),
                        checks::MIN_HISTORY_DAYS
                    ),
                ),
                Some(score) => {
                    let mut sorted = past.clone();
                    sorted.sort_by(f64::total_cmp);
                    let med = sorted[sorted.len() / 2];
                    (score, "score", judge(score.abs(), Some("3.5"), Some("5"))?, format!("{} rows against a median of {med} over {} days: robust z-score {score:.2}", m.rows, past.len()))
                }
            }
        }
    };
    Ok(CheckResult {
        name: c.name.clone(),
        kind,
        status,
        value,
        unit: unit.into(),
        warn: c.warn.clone(),
        error: c.error.clone(),
        detail,
    })
}

fn same_type(a: &DataType, b: &DataType) -> bool {
    let norm = |t: &DataType| match t {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::Dictionary(_, v) => v.as_ref().clone(),
        other => other.clone(),
    };
    norm(a) == norm(b)
}

/// The instant freshness is measured against: now, or for a past date the last close of that
/// date's sessions (data that stops at noon is stale even when checked a week later). Only
/// the exchanges in the partition count (a Tokyo-only pipeline is not judged against New
/// York's close); with none known (no `exchange` column), every exchange in the calendar.
fn freshness_reference(
    calendar: &ExchangeCalendar,
    date: NaiveDate,
    now: i64,
    exchanges: &std::collections::BTreeSet<String>,
) -> i64 {
    let last_close = calendar
        .mics()
        .iter()
        .filter(|m| exchanges.is_empty() || exchanges.contains(**m))
        .filter_map(|m| match calendar.session(m, date) {
            Some(Session::Open(_, c)) => Some(c),
            _ => None,
        })
        .max();
    match last_close {
        Some(c) => c.min(now),
        None => now,
    }
}

fn fmt_ts(t: i64) -> String {
    chrono::DateTime::from_timestamp_micros(t)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// Failing rows of one batch with the rule and reason.
fn dead_letters(
    batch: &RecordBatch,
    rules: &RuleSet,
    failed: &[arrow::array::BooleanArray],
    dedup: &[(u32, Verdict)],
) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    let mut push = |rows: UInt32Array, rule: &str, reason: Vec<String>| -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let b = take_record_batch(batch, &rows)?;
        let mut fields: Vec<Field> = b
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new("_dq_rule", DataType::Utf8, false));
        fields.push(Field::new("_dq_reason", DataType::Utf8, false));
        let mut cols = b.columns().to_vec();
        cols.push(Arc::new(StringArray::from_iter_values(
            std::iter::repeat_n(rule, rows.len()),
        )));
        cols.push(Arc::new(StringArray::from_iter_values(reason)));
        out.push(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?);
        Ok(())
    };
    for (rule, mask) in rules.rules.iter().zip(failed) {
        let rows: UInt32Array = mask.values().set_indices().map(|i| i as u32).collect();
        let reason = RuleSet::reason(rule);
        let n = rows.len();
        push(rows, &rule.name, vec![reason; n])?;
    }
    if let Some(d) = &rules.dedup {
        let rows: UInt32Array = dedup.iter().map(|(r, _)| *r).collect();
        let reasons = dedup
            .iter()
            .map(|(_, v)| match v {
                Verdict::Duplicate => {
                    "duplicate: same key and payload within the window".to_string()
                }
                Verdict::Conflict {
                    partition, offset, ..
                } => format!(
                    "conflicting_duplicate: same key as partition {} offset {}, different payload",
                    partition.map_or("?".into(), |p| p.to_string()),
                    offset.map_or("?".into(), |o| o.to_string())
                ),
                Verdict::Late { .. } => "late: older than the watermark".to_string(),
                Verdict::Unique => unreachable!("only non-unique verdicts are kept"),
            })
            .collect();
        push(rows, &d.name, reasons)?;
    }
    Ok(out)
}

/// A `--dead-letter` target that is a local JSON-lines file rather than a Delta table.
fn is_file_target(target: &str) -> bool {
    [".jsonl", ".ndjson", ".json"]
        .iter()
        .any(|e| target.ends_with(e))
}

async fn write_dead_letters(
    target: &str,
    batches: &[RecordBatch],
    storage: &HashMap<String, String>,
) -> Result<()> {
    if is_file_target(target) {
        let file = std::fs::File::create(target).map_err(|e| QualityError::Io {
            path: target.into(),
            source: e,
        })?;
        let mut w = arrow::json::LineDelimitedWriter::new(std::io::BufWriter::new(file));
        for b in batches {
            w.write(b)?;
        }
        w.finish()?;
        return Ok(());
    }
    let Some(first) = batches.first() else {
        return Ok(());
    };
    let table = finlake_core::delta::open_or_create(&finlake_core::delta::TableSpec {
        uri: target.into(),
        schema: first.schema(),
        partition_by: vec![],
        checkpoint_interval: None,
        storage_options: storage.clone(),
    })
    .await?;
    finlake_core::delta::append(table, batches.to_vec(), &Default::default()).await?;
    Ok(())
}
