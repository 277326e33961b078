//! `finlake restore`: a pipeline's tables back to one snapshot, together with the offsets
//! recorded in it, so the stream replays from there (the operations guide's
//! `restore-pipeline --snapshot latest --target market-data-stream`).
//!
//! The snapshot is a version of the data table: given (`--version`), the last one committed
//! at or before a time (`--timestamp`), or the latest one `data-quality-check` verified
//! (`--snapshot latest`: the highest `table_version` of a `quality_results` run of this
//! pipeline with no `error`). Its `txn` versions are the offsets the stream had landed.
//! Each other table of the pipeline (quarantine, processed_events, alerts) goes back to its
//! last version whose own `txn` versions are at most those: the ingestor commits quarantine
//! before data and processed_events after it, so that is the same commit cycle.
//!
//! Each table is restored with Delta RESTORE (a new commit re-adding the snapshot's files; the
//! history stays and can be restored forward again) carrying `txn` actions with the
//! snapshot's versions: a RESTORE alone would leave the latest `txn` actions in force and the
//! stream would not replay. Stop the pipeline first, as the guide does; an ingestor that is
//! still running sees its partitions' versions move under it, drops its buffers and seeks
//! back (its fencing check), so it replays too, but a commit it makes between two tables'
//! restores would be undone by neither.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::DeltaTable;
use finlake_core::delta;
use finlake_core::spec::{DestinationType, LoadedSpec};
use serde::Serialize;

use crate::error::{IngestError, Result};

/// Which snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The latest data-table version data-quality-check verified.
    LatestVerified,
    /// A data-table version.
    Version(u64),
    /// The last data-table version committed at or before this instant.
    Timestamp(DateTime<Utc>),
}

/// What happened to one table.
#[derive(Debug, Clone, Serialize)]
pub struct TableRestore {
    /// The table.
    pub table: String,
    /// Its version before.
    pub from_version: Option<u64>,
    /// The version restored to.
    pub to_version: Option<u64>,
    /// The restore commit (none when the table was already there, absent, or a dry run).
    pub committed_version: Option<u64>,
    /// Files re-added and removed by the restore.
    pub files_restored: usize,
    /// Files removed.
    pub files_removed: usize,
}

/// The outcome.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The pipeline.
    pub pipeline: String,
    /// The data table's snapshot version.
    pub snapshot_version: u64,
    /// How it was chosen.
    pub chosen_by: String,
    /// The offsets the stream resumes from: `txn` app id to the next offset to read.
    pub offsets: BTreeMap<String, i64>,
    /// Per table.
    pub tables: Vec<TableRestore>,
    /// Nothing was written.
    pub dry_run: bool,
}

impl RestoreReport {
    /// Human-readable lines.
    pub fn text(&self) -> String {
        let mut s = format!(
            "{} {}: snapshot = version {} of the data table ({})\n",
            if self.dry_run {
                "would restore"
            } else {
                "restored"
            },
            self.pipeline,
            self.snapshot_version,
            self.chosen_by
        );
        for t in &self.tables {
            s.push_str(&format!(
                "  {:<60} {} -> {}{}\n",
                t.table,
                t.from_version.map_or("absent".into(), |v| v.to_string()),
                t.to_version.map_or("-".into(), |v| v.to_string()),
                match t.committed_version {
                    Some(v) => format!(" (restore commit {v})"),
                    None if t.from_version == t.to_version => " (already there)".into(),
                    None => String::new(),
                }
            ));
        }
        s.push_str("  the stream resumes at:\n");
        for (app, v) in &self.offsets {
            s.push_str(&format!("    {app} offset {v}\n"));
        }
        s
    }
}

/// The tables of a pipeline, from its spec: the datalake destination, the quarantine, and
/// the tables the ingestor keeps beside the data table.
pub fn pipeline_tables(spec: &LoadedSpec) -> Result<(String, Option<String>, Vec<String>)> {
    let err = |m: &str| IngestError::Config {
        file: spec.file.display().to_string(),
        message: m.to_string(),
    };
    let dests = &spec.pipeline.spec.destinations;
    let data = dests
        .iter()
        .find(|d| d.destination_type == DestinationType::Datalake)
        .and_then(|d| d.config.table_uri.clone())
        .ok_or_else(|| err("the pipeline has no datalake destination with a table_uri"))?;
    let quarantine = dests
        .iter()
        .find(|d| d.destination_type == DestinationType::Quarantine)
        .and_then(|d| d.config.table_uri.clone());
    let beside = vec![
        crate::events::table_uri(&data),
        crate::config::alerts_table_uri(&data),
    ];
    Ok((data, quarantine, beside))
}

async fn open(uri: &str) -> Result<Option<DeltaTable>> {
    Ok(delta::open_existing(uri, &HashMap::new()).await?)
}

async fn at_version(uri: &str, v: u64) -> Result<DeltaTable> {
    let mut t = open(uri)
        .await?
        .ok_or_else(|| IngestError::Internal(format!("{uri} vanished")))?;
    t.load_version(v)
        .await
        .map_err(delta::table_err(uri, "load version"))?;
    Ok(t)
}

/// The pipeline's `txn` app ids: every (topic, partition) a micro-batch was recorded for in
/// processed_events, or landed or quarantined a row.
async fn app_ids(pipeline: &str, tables: &[&str]) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for uri in tables {
        let Some(t) = open(uri).await? else { continue };
        for b in delta::read_all(&t).await? {
            let (topic, part) = match (
                delta::string_column(&b, "topic").or_else(|| delta::string_column(&b, "_topic")),
                b.column_by_name("partition")
                    .or_else(|| b.column_by_name("_partition"))
                    .and_then(|c| arrow::compute::cast(c, &arrow::datatypes::DataType::Int32).ok()),
            ) {
                (Some(t), Some(p)) => (t, p),
                _ => continue,
            };
            use arrow::array::{Array, AsArray};
            let part = part.as_primitive::<arrow::datatypes::Int32Type>();
            for i in 0..b.num_rows() {
                if topic.is_valid(i) && part.is_valid(i) {
                    out.insert(crate::config::app_id(
                        pipeline,
                        topic.value(i),
                        part.value(i),
                    ));
                }
            }
        }
    }
    Ok(out)
}

async fn txns(t: &DeltaTable, apps: &BTreeSet<String>) -> Result<BTreeMap<String, i64>> {
    let mut out = BTreeMap::new();
    for app in apps {
        if let Some(v) = delta::txn_version(t, app).await? {
            out.insert(app.clone(), v);
        }
    }
    Ok(out)
}

/// The latest data-table version a data-quality-check run of `pipeline` passed (no check
/// at `error`), from `quality_results` beside the data table.
async fn latest_verified(pipeline: &str, data: &str) -> Result<Option<u64>> {
    let results = finlake_quality::dqc::sibling(data, "quality_results");
    let Some(t) = open(&results).await? else {
        return Ok(None);
    };
    // run id -> (version, any error)
    let mut runs: HashMap<String, (i64, bool)> = HashMap::new();
    for b in delta::read_all(&t).await? {
        let (Some(run), Some(p), Some(status)) = (
            delta::string_column(&b, "run_id"),
            delta::string_column(&b, "pipeline"),
            delta::string_column(&b, "status"),
        ) else {
            continue;
        };
        let Some(version) = b
            .column_by_name("table_version")
            .and_then(|c| arrow::compute::cast(c, &arrow::datatypes::DataType::Int64).ok())
        else {
            continue;
        };
        use arrow::array::AsArray;
        let version = version.as_primitive::<arrow::datatypes::Int64Type>();
        for i in 0..b.num_rows() {
            if p.value(i) != pipeline {
                continue;
            }
            let e = runs
                .entry(run.value(i).to_string())
                .or_insert((version.value(i), false));
            e.1 |= status.value(i) == "error";
        }
    }
    Ok(runs
        .values()
        .filter(|(_, failed)| !failed)
        .map(|(v, _)| *v)
        .max()
        .map(|v| v.max(0) as u64))
}

/// Restores `spec`'s pipeline to `target`; `dry_run` says what it would do.
pub async fn restore(spec: &LoadedSpec, target: Target, dry_run: bool) -> Result<RestoreReport> {
    let pipeline = spec.pipeline.metadata.name.clone();
    let (data_uri, quarantine, beside) = pipeline_tables(spec)?;
    let usage = |m: String| IngestError::Config {
        file: spec.file.display().to_string(),
        message: m,
    };
    let data = open(&data_uri)
        .await?
        .ok_or_else(|| usage(format!("there is no data table at {data_uri}")))?;
    let latest = data.version().unwrap_or_default();
    let (snapshot, chosen_by) = match target {
        Target::Version(v) if v > latest => {
            return Err(usage(format!(
                "version {v} is past the data table's latest, {latest}"
            )))
        }
        Target::Version(v) => (v, "--version".to_string()),
        Target::Timestamp(ts) => {
            let mut t = data.clone();
            t.load_with_datetime(ts).await.map_err(|e| {
                usage(format!("no version of {data_uri} at or before {ts}: {e}"))
            })?;
            let v = t.version().unwrap_or_default();
            (v, format!("the last commit at or before {}", ts.to_rfc3339()))
        }
        Target::LatestVerified => match latest_verified(&pipeline, &data_uri).await? {
            Some(v) if v <= latest => (v, "the latest version data-quality-check passed".into()),
            Some(v) => {
                return Err(usage(format!(
                    "quality_results names version {v} of {data_uri}, past its latest ({latest})"
                )))
            }
            None => {
                return Err(usage(format!(
                    "no verified snapshot of {pipeline}: quality_results beside {data_uri} has no passing data-quality-check run; give --version or --timestamp"
                )))
            }
        },
    };
    let mut all: Vec<&str> = vec![data_uri.as_str()];
    all.extend(quarantine.as_deref());
    all.extend(beside.iter().map(String::as_str));
    // processed_events has a row per micro-batch and quarantine is small: read those; the
    // data table only when they name nothing
    let mut apps = app_ids(&pipeline, &all[1..]).await?;
    if apps.is_empty() {
        apps = app_ids(&pipeline, &all[..1]).await?;
    }
    let offsets = txns(&at_version(&data_uri, snapshot).await?, &apps).await?;

    let mut tables = Vec::new();
    for uri in all {
        let Some(table) = open(uri).await? else {
            tables.push(TableRestore {
                table: uri.to_string(),
                from_version: None,
                to_version: None,
                committed_version: None,
                files_restored: 0,
                files_removed: 0,
            });
            continue;
        };
        let now = table.version().unwrap_or_default();
        let to = if uri == data_uri {
            snapshot
        } else {
            // the last version whose txns are all at most the snapshot's: monotone in the
            // version (txn versions never go back within one history), so bisect
            let fits = |t: BTreeMap<String, i64>| {
                t.iter()
                    .all(|(app, v)| offsets.get(app).is_some_and(|o| v <= o))
            };
            let (mut lo, mut hi) = (0u64, now);
            if fits(txns(&table, &apps).await?) {
                lo = now;
            }
            while lo < hi {
                let mid = lo + (hi - lo).div_ceil(2);
                if fits(txns(&at_version(uri, mid).await?, &apps).await?) {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            lo
        };
        let mut r = TableRestore {
            table: uri.to_string(),
            from_version: Some(now),
            to_version: Some(to),
            committed_version: None,
            files_restored: 0,
            files_removed: 0,
        };
        if to != now && !dry_run {
            let keep = txns(&at_version(uri, to).await?, &apps).await?;
            let props = CommitProperties::default()
                .with_application_transactions(
                    keep.iter()
                        .map(|(app, v)| Transaction::new(app, *v))
                        .collect(),
                )
                .with_metadata([(
                    "finlake_restore".to_string(),
                    serde_json::json!({
                        "pipeline": pipeline, "snapshot_version": snapshot, "restored_to": to,
                    }),
                )]);
            let (t, metrics) = table
                .restore()
                .with_version_to_restore(to)
                .with_commit_properties(props)
                .await
                .map_err(delta::table_err(uri, "restore"))?;
            r.committed_version = t.version();
            r.files_restored = metrics.num_restored_file;
            r.files_removed = metrics.num_removed_file;
            tracing::info!(table = uri, from = now, to, commit = ?t.version(), "table restored");
        }
        tables.push(r);
    }
    Ok(RestoreReport {
        pipeline,
        snapshot_version: snapshot,
        chosen_by,
        offsets,
        tables,
        dry_run,
    })
}
