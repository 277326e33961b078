//! `kind: maintenance` jobs: per table, compaction of the run date's partition (Delta
//! OPTIMIZE: a stream leaves one small file per commit and partition), a checkpoint, and a
//! vacuum that never deletes a file younger than the job's `longest_reader` nor than the
//! table's own `delta.deletedFileRetentionDuration`.
//!
//! Compaction rewrites only the date's partition: today's, which the stream is still
//! appending to, is left to tomorrow's run. It is a `dataChange: false` rewrite, so the
//! stream's `txn` versions, the rows and their count are unchanged; a concurrent append
//! from the stream does not conflict with it.

use std::collections::HashMap;
use std::num::NonZeroU64;

use chrono::NaiveDate;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::table::config::TablePropertiesExt;
use deltalake::{FilterOp, FilterValue};
use finlake_core::delta;

use crate::error::{BatchError, Result};
use crate::job::{humanize, parse_bytes, Job, DEFAULT_RETENTION};
use crate::run::{files_in, RunOptions, VERSION};
use crate::summary::{RunSummary, TableMaintenance};

/// Compaction's default target file size.
const TARGET_FILE_SIZE: u64 = 128 * 1024 * 1024;

/// Runs the maintenance of every table of the job, in order. A table that is not there yet
/// is reported absent; a failure stops the run (the tables before it are done, and every
/// step is safe to repeat).
pub async fn execute(
    job: &Job,
    date: NaiveDate,
    opts: &RunOptions,
    s: &mut RunSummary,
) -> Result<()> {
    let Some(m) = &job.spec.maintenance else {
        return Err(BatchError::Internal(
            "a maintenance job without its section".into(),
        ));
    };
    let retention = m.vacuum_retention.map_or(DEFAULT_RETENTION, |d| d.0);
    let target = m
        .target_file_size
        .as_deref()
        .map(parse_bytes)
        .transpose()
        .map_err(BatchError::Usage)?
        .map_or(TARGET_FILE_SIZE, |b| b as u64);
    if opts.dry_run {
        s.status = "dry_run".into();
    }
    for t in &m.tables {
        let mut report = TableMaintenance {
            table: t.table_uri.clone(),
            vacuum_retention: humanize(retention),
            ..TableMaintenance::default()
        };
        let Some(table) = delta::open_existing(&t.table_uri, &HashMap::new()).await? else {
            report.absent = true;
            s.maintenance.push(report);
            continue;
        };
        // the table's own floor: refuse rather than let vacuum fail half-way
        let floor = table
            .snapshot()
            .map(|snap| snap.table_config().deleted_file_retention_duration())
            .unwrap_or(DEFAULT_RETENTION);
        if retention < floor {
            return Err(BatchError::Usage(format!(
                "{}: vacuum_retention {} is shorter than {}'s delta.deletedFileRetentionDuration {}",
                job.file.display(),
                humanize(retention),
                t.table_uri,
                humanize(floor)
            )));
        }
        let uri = t.table_uri.as_str();
        let window = t.partition_column.as_ref().map(|_| (date, date));
        report.partition = t.partition_column.as_ref().map(|c| format!("{c}={date}"));
        report.files_before = files_in(&table, t.partition_column.as_deref(), window)
            .await?
            .len();
        let day = date.to_string();
        let filters = match &t.partition_column {
            Some(c) => vec![(c.as_str(), FilterOp::Eq, FilterValue::Scalar(day.as_str()))],
            None => Vec::new(),
        };
        let metadata = CommitProperties::default().with_metadata([
            (
                "job".to_string(),
                serde_json::Value::from(job.spec.name.clone()),
            ),
            ("run_id".to_string(), s.run_id.clone().into()),
            ("logical_date".to_string(), day.clone().into()),
            ("finlake_version".to_string(), VERSION.into()),
        ]);
        // a dry run compacts and checkpoints nothing and only counts what vacuum would delete
        let table = if opts.dry_run {
            table
        } else {
            let (table, metrics) = table
                .optimize()
                .with_filters(&filters)
                .with_target_size(NonZeroU64::new(target).unwrap_or(NonZeroU64::MIN))
                .with_commit_properties(metadata.clone())
                .await
                .map_err(delta::table_err(uri, "compact"))?;
            report.compacted_removed = metrics.num_files_removed;
            report.compacted_added = metrics.num_files_added;
            let table = delta::checkpoint_and_reopen(&table).await?;
            report.checkpoint_version = table.version();
            table
        };
        let (table, metrics) = table
            .vacuum()
            .with_retention_period(chrono::Duration::seconds(retention.as_secs() as i64))
            .with_dry_run(opts.dry_run)
            .with_commit_properties(metadata)
            .await
            .map_err(delta::table_err(uri, "vacuum"))?;
        report.vacuumed = metrics.files_deleted.len();
        report.files_after = files_in(&table, t.partition_column.as_deref(), window)
            .await?
            .len();
        tracing::info!(
            table = %t.table_uri,
            removed = report.compacted_removed,
            added = report.compacted_added,
            vacuumed = report.vacuumed,
            "table maintained"
        );
        s.maintenance.push(report);
    }
    Ok(())
}
