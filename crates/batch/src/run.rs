//! One run of one job for one logical date: open the inputs (pruned to the date's window),
//! run the SQL, check the output, replace the date's partition in one commit, record the run.
//!
//! Every run ends in a [`RunSummary`], ok or not, appended to `job_runs` (a dry run writes
//! nothing at all). A failure before the write leaves the output table as it was.

use std::collections::HashMap;

use arrow::array::{Array, AsArray, RecordBatch};
use chrono::{Datelike, NaiveDate, Utc};
use deltalake::{DeltaTable, FilterOp, FilterValue};
use finlake_core::delta::{self, CommitExtras, TableSpec};
use finlake_core::transform::ExchangeCalendar;
use futures::TryStreamExt;
use tracing::Instrument;

use crate::calendar;
use crate::checks;
use crate::engine::{self, MemoryLimit, OpenInput};
use crate::error::{BatchError, Result};
use crate::job::{EngineKind, Job, JobKind, WriteMode};
use crate::params::{date32, Params};
use crate::runs;
use crate::summary::{InputUsed, OutputWritten, RunSummary};

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Print the plan (files read, partition replaced) and write nothing.
    pub dry_run: bool,
    /// Overrides the job's memory limit.
    pub memory_limit: Option<MemoryLimit>,
    /// The backfill this run is part of (resume skips dates it finished).
    pub backfill_id: Option<String>,
    /// Leave `job_runs` alone (tests of the query alone).
    pub no_record: bool,
    /// The engine (`--engine`); default the job's first.
    pub engine: Option<EngineKind>,
    /// Print the executed plan with each operator's metrics (rows, time, memory) to stderr.
    pub profile: bool,
}

/// Runs of one date that lose a commit race before the run gives up.
const COMMIT_ATTEMPTS: u32 = 4;

/// The finlake version commits and records carry.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The engine a sql run uses: `--engine`, else the job's first.
fn engine_of(job: &Job, opts: &RunOptions) -> EngineKind {
    opts.engine
        .or(job.spec.engines.first().copied())
        .unwrap_or(EngineKind::Datafusion)
}

/// Runs `job` for `date`. Never fails: the outcome, with its exit code, is the summary.
pub async fn run(job: &Job, date: NaiveDate, opts: &RunOptions) -> RunSummary {
    let run_id = finlake_core::telemetry::correlation_id("BATCH");
    let span =
        tracing::info_span!("run", correlation_id = %run_id, job = %job.spec.name, date = %date);
    let mut s = RunSummary {
        job: job.spec.name.clone(),
        run_id: run_id.clone(),
        logical_date: date,
        status: "ok".into(),
        exit_code: 0,
        error_class: None,
        error: None,
        engine: match job.spec.kind {
            JobKind::Sql => engine_of(job, opts).name(),
            JobKind::Maintenance => "delta",
            JobKind::QualityReport => "rule-engine",
        }
        .into(),
        params: None,
        rows_in: 0,
        rows_out: 0,
        inputs: Vec::new(),
        output: job
            .spec
            .output
            .as_ref()
            .map(|o| OutputWritten {
                table: o.table_uri.clone(),
                mode: match o.mode {
                    WriteMode::OverwritePartition => "overwrite_partition",
                    WriteMode::Append => "append",
                    WriteMode::Merge => "merge",
                }
                .into(),
                ..OutputWritten::default()
            })
            .unwrap_or_default(),
        maintenance: Vec::new(),
        checks: Vec::new(),
        backfill_id: opts.backfill_id.clone(),
        started_at: Utc::now(),
        ended_at: Utc::now(),
        finlake_version: VERSION.into(),
    };
    async {
        tracing::info!("run started");
        let mut attempt = 1;
        let outcome = loop {
            let outcome = execute(job, date, opts, &mut s).await;
            match &outcome {
                // another writer committed to the output first (a backfill's parallel dates
                // replace different partitions of one table): the run is idempotent, so it
                // runs again on the new snapshot
                Err(BatchError::Delta(e)) if e.is_commit_conflict() && attempt < COMMIT_ATTEMPTS => {
                    tracing::warn!(error = %e, attempt, "commit conflict; running again");
                    attempt += 1;
                    s.inputs.clear();
                    s.maintenance.clear();
                    s.rows_in = 0;
                }
                _ => break outcome,
            }
        };
        if let Err(e) = &outcome {
            s.fail(e, e.to_string());
            tracing::error!(error = %e, exit_code = s.exit_code, "run failed");
        }
        s.ended_at = Utc::now();
        if !opts.dry_run && !opts.no_record {
            if let Err(e) = runs::record(&job.runs_table, &s).await {
                tracing::error!(error = %e, table = %job.runs_table, "the run could not be recorded in job_runs");
                if s.exit_code == 0 {
                    // the output is written, but "did it run?" would be answered wrong:
                    // fail, and the rerun (idempotent) records it
                    s.fail(&e, format!("recording the run in {}: {e}", job.runs_table));
                }
            }
        }
        if s.exit_code == 0 {
            tracing::info!(rows_in = s.rows_in, rows_out = s.rows_out, version = ?s.output.version, ms = (s.ended_at - s.started_at).num_milliseconds(), "run finished");
        }
    }
    .instrument(span)
    .await;
    s
}

async fn execute(job: &Job, date: NaiveDate, opts: &RunOptions, s: &mut RunSummary) -> Result<()> {
    match job.spec.kind {
        JobKind::Maintenance => return crate::maintenance::execute(job, date, opts, s).await,
        JobKind::QualityReport => return crate::quality_report::execute(job, date, opts, s).await,
        JobKind::Sql => {}
    }
    let cal = ExchangeCalendar::embedded();
    let mic = job.spec.calendar.as_str();
    if !calendar::is_trading_day(&cal, mic, date) {
        tracing::warn!(
            calendar = mic,
            "the date is not a trading day on the job's calendar"
        );
    }
    // each pruned input's first and last partition; `:start` is the earliest first
    let windows: Vec<Option<(NaiveDate, NaiveDate)>> = job
        .spec
        .inputs
        .iter()
        .map(|i| {
            i.partition_column.as_ref().map(|_| {
                let first = if i.month_to_date {
                    date.with_day(1).unwrap_or(date)
                } else {
                    calendar::trading_days_back(&cal, mic, date, i.lookback_trading_days)
                };
                (first, date)
            })
        })
        .collect();
    let start = windows.iter().flatten().map(|w| w.0).min().unwrap_or(date);
    let params = Params {
        date,
        start,
        end: date,
        prev_trading_day: calendar::previous_trading_day(&cal, mic, date),
    };
    s.params = Some(params);

    let mut inputs = Vec::new();
    for (input, window) in job.spec.inputs.iter().zip(windows) {
        let table = delta::open_existing(&input.table_uri, &HashMap::new())
            .await?
            .ok_or_else(|| {
                BatchError::Usage(format!(
                    "{}: input `{}`: there is no Delta table at {}",
                    job.file.display(),
                    input.name,
                    input.table_uri
                ))
            })?;
        let files = files_in(&table, input.partition_column.as_deref(), window).await?;
        let used = InputUsed {
            name: input.name.clone(),
            table: input.table_uri.clone(),
            version: table.version(),
            window,
            files: files.len(),
            bytes: files.iter().map(|f| f.1).sum(),
            rows: files.iter().map(|f| f.2).sum(),
            file_list: if opts.dry_run {
                files.iter().map(|f| f.0.clone()).collect()
            } else {
                Vec::new()
            },
        };
        s.rows_in += used.rows;
        s.inputs.push(used);
        inputs.push(OpenInput {
            input,
            table,
            window,
        });
    }

    let (_, out) = job.sql()?;
    let existing = delta::open_existing(&out.table_uri, &HashMap::new()).await?;
    let date_column = job.date_column();
    if let Some(c) = date_column {
        s.output.partition = Some(format!("{c}={date}"));
        if let Some(t) = &existing {
            s.output.replaces_files = files_in(t, Some(c), Some((date, date))).await?.len();
        }
    }
    if opts.dry_run {
        s.status = "dry_run".into();
        return Ok(());
    }

    let limit = opts.memory_limit.clone().or_else(|| {
        job.memory_limit.map(|bytes| MemoryLimit {
            bytes,
            text: job.spec.memory_limit.clone().unwrap_or_default(),
        })
    });
    let (schema, batches) = match engine_of(job, opts) {
        EngineKind::Polars => {
            crate::polars_engine::run_polars(job, &inputs, &params, limit.as_ref()).await?
        }
        EngineKind::Datafusion => {
            engine::run_datafusion(job, &inputs, &params, limit.as_ref(), opts.profile).await?
        }
    };
    s.rows_out = batches.iter().map(|b| b.num_rows() as u64).sum();

    if let Some(c) = date_column {
        let outside = rows_outside(&batches, c, date)
            .map_err(|m| BatchError::Usage(format!("{}: {m}", job.query_file.display())))?;
        if outside > 0 {
            return Err(BatchError::OutsidePartition {
                job: job.spec.name.clone(),
                date,
                column: c.to_string(),
                rows: outside,
            });
        }
    }

    s.checks = checks::evaluate(job, &schema, &batches)?;
    let failed = checks::failures(&s.checks);
    if !failed.is_empty() {
        return Err(BatchError::ChecksFailed {
            job: job.spec.name.clone(),
            date,
            failed,
        });
    }

    let extras = CommitExtras {
        txns: Vec::new(),
        metadata: vec![
            ("job".into(), job.spec.name.clone().into()),
            ("run_id".into(), s.run_id.clone().into()),
            ("logical_date".into(), date.to_string().into()),
            ("finlake_version".into(), VERSION.into()),
            (
                "inputs".into(),
                serde_json::Value::Array(
                    s.inputs
                        .iter()
                        .map(|i| format!("{}@{}", i.table, i.version.unwrap_or_default()).into())
                        .collect(),
                ),
            ),
        ],
        deferred_checkpoint: false,
    };
    let table = match existing {
        Some(t) => t,
        None => {
            delta::open_or_create(&TableSpec {
                uri: out.table_uri.clone(),
                schema: schema.clone(),
                partition_by: out.partition_by.clone(),
                checkpoint_interval: None,
                storage_options: HashMap::new(),
            })
            .await?
        }
    };
    let table = match (out.mode, date_column) {
        (WriteMode::OverwritePartition, Some(c)) => {
            delta::replace_partition(table, batches, c, date32(date), &extras).await?
        }
        (WriteMode::Merge, _) => {
            let (table, inserted, updated) =
                delta::merge(table, batches, &out.keys, &extras).await?;
            s.output.inserted = Some(inserted as u64);
            s.output.updated = Some(updated as u64);
            table
        }
        _ => delta::append(table, batches, &extras).await?,
    };
    s.output.version = table.version();
    Ok(())
}

/// The data files of `table` in the date window (all of them when it is not pruned): path,
/// bytes, rows (from the log's statistics).
pub(crate) async fn files_in(
    table: &DeltaTable,
    column: Option<&str>,
    window: Option<(NaiveDate, NaiveDate)>,
) -> Result<Vec<(String, u64, u64)>> {
    let (from, to) = window
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .unwrap_or_default();
    let filters = match (column, window) {
        (Some(c), Some(_)) => vec![
            (c, FilterOp::Ge, FilterValue::Scalar(from.as_str())),
            (c, FilterOp::Le, FilterValue::Scalar(to.as_str())),
        ],
        _ => Vec::new(),
    };
    let uri = table.table_url().to_string();
    let views: Vec<_> = table
        .get_active_add_actions_by_partitions(&filters)
        .try_collect()
        .await
        .map_err(delta::table_err(&uri, "list files"))?;
    Ok(views
        .iter()
        .map(|v| {
            (
                v.path().to_string(),
                v.size().max(0) as u64,
                v.num_records().unwrap_or(0) as u64,
            )
        })
        .collect())
}

/// Rows whose `column` (a DATE) is not `date`.
fn rows_outside(
    batches: &[RecordBatch],
    column: &str,
    date: NaiveDate,
) -> std::result::Result<usize, String> {
    let want = match date32(date) {
        datafusion::common::ScalarValue::Date32(Some(d)) => d,
        _ => return Err("internal: a date is not a Date32".into()),
    };
    let mut n = 0;
    for b in batches {
        let c = b.column_by_name(column).ok_or_else(|| {
            format!("the query's result has no column `{column}`, the output's partition column")
        })?;
        let days = c
            .as_primitive_opt::<arrow::datatypes::Date32Type>()
            .ok_or_else(|| format!("the query's `{column}` is {}, not a DATE", c.data_type()))?;
        n += days.iter().filter(|v| *v != Some(want)).count();
    }
    Ok(n)
}
