//! The JSON summary of a run: printed to stdout, written to `/dev/termination-log` when that
//! is writable (a CronJob's `podFailurePolicy` and `kubectl describe` read it), and kept in
//! `job_runs.summary`.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

/// One run.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// The job.
    pub job: String,
    /// This run's id (`BATCH:<uuid>`), also the correlation id of its log lines.
    pub run_id: String,
    /// The logical date.
    pub logical_date: NaiveDate,
    /// `ok`, `failed` or `dry_run`.
    pub status: String,
    /// The process exit code this run maps to.
    pub exit_code: i32,
    /// `config`, `data`, `transient` or `internal` when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_class: Option<&'static str>,
    /// The error, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The engine that ran the SQL.
    pub engine: String,
    /// The parameters bound.
    pub params: Option<crate::params::Params>,
    /// Rows in the inputs' windows.
    pub rows_in: u64,
    /// Rows the query produced (and the run wrote).
    pub rows_out: u64,
    /// The inputs read.
    pub inputs: Vec<InputUsed>,
    /// The output (a sql job's).
    #[serde(skip_serializing_if = "OutputWritten::is_empty")]
    pub output: OutputWritten,
    /// The output checks.
    pub checks: Vec<CheckOutcome>,
    /// A maintenance job: what it did to each table.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub maintenance: Vec<TableMaintenance>,
    /// The backfill this run belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backfill_id: Option<String>,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub ended_at: DateTime<Utc>,
    /// finlake's version.
    pub finlake_version: String,
}

/// An input as read.
#[derive(Debug, Clone, Serialize)]
pub struct InputUsed {
    /// The name the SQL uses.
    pub name: String,
    /// The table.
    pub table: String,
    /// The version read.
    pub version: Option<u64>,
    /// The window of its date partitions, when pruned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<(NaiveDate, NaiveDate)>,
    /// Data files in the window.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Their rows (from the log's statistics).
    pub rows: u64,
    /// The files, for `--dry-run` (empty otherwise).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub file_list: Vec<String>,
}

/// The output as written (or, in a dry run, as it would be).
#[derive(Debug, Clone, Serialize, Default)]
pub struct OutputWritten {
    /// The table.
    pub table: String,
    /// `overwrite_partition`, `append` or `merge`.
    pub mode: String,
    /// The partition replaced (`trade_date=2026-11-20`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// Files that partition holds now (replaced by the run).
    pub replaces_files: usize,
    /// The version committed.
    pub version: Option<u64>,
    /// merge: rows inserted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inserted: Option<u64>,
    /// merge: rows updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<u64>,
}

impl OutputWritten {
    /// No output (a maintenance job).
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

/// What maintenance did to one table (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize, Default)]
pub struct TableMaintenance {
    /// The table.
    pub table: String,
    /// Not there (yet): nothing done.
    pub absent: bool,
    /// The partition compacted (`trade_date=2026-11-20`), or none for the whole table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// Data files in that partition before.
    pub files_before: usize,
    /// And after.
    pub files_after: usize,
    /// Compaction: files removed and added.
    pub compacted_removed: u64,
    /// Compaction: files written.
    pub compacted_added: u64,
    /// The version checkpointed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_version: Option<u64>,
    /// Files vacuum deleted (in a dry run: would delete).
    pub vacuumed: usize,
    /// The vacuum retention applied.
    pub vacuum_retention: String,
}

/// One output check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckOutcome {
    /// The rule or check.
    pub name: String,
    /// Its kind as written.
    pub kind: String,
    /// pass, warn or error.
    pub status: String,
    /// Failing rows (a rule) or the measured value (a table check).
    pub value: f64,
}

impl RunSummary {
    /// Marks the run failed by `e` (its exit code and class), with `message` as the error.
    pub fn fail(&mut self, e: &crate::error::BatchError, message: String) {
        self.status = "failed".into();
        self.exit_code = e.exit_code();
        self.error_class = Some(e.class_name());
        self.error = Some(message);
    }

    /// The summary as one JSON line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// Writes the summary to `/dev/termination-log` (or `FINLAKE_TERMINATION_LOG`) when that
/// file is writable; Kubernetes shows it as the container's termination message. Kubernetes
/// keeps 4096 bytes of it: a longer summary is cut to its verdict (job, run, date, status,
/// exit code, error), still valid JSON.
pub fn write_termination_log(s: &RunSummary) {
    let path = std::env::var("FINLAKE_TERMINATION_LOG")
        .unwrap_or_else(|_| "/dev/termination-log".to_string());
    let Ok(mut f) = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
    else {
        return;
    };
    let mut text = s.to_json();
    if text.len() > 4096 {
        let error: Option<String> = s.error.as_ref().map(|e| e.chars().take(3000).collect());
        text = serde_json::json!({
            "job": s.job, "run_id": s.run_id, "logical_date": s.logical_date,
            "status": s.status, "exit_code": s.exit_code, "error_class": s.error_class,
            "error": error, "rows_out": s.rows_out,
        })
        .to_string();
    }
    use std::io::Write;
    let _ = f.write_all(text.as_bytes());
}
