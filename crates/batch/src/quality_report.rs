//! `kind: quality_report` jobs: a DataPipeline's row rules and table checks over the date's
//! partition, into `quality_results`: `data-quality-check` on the batch runner's schedule,
//! with a `job_runs` row and the runner's exit codes (65 on an error-severity failure).

use std::path::PathBuf;
use std::time::Duration;

use chrono::NaiveDate;
use finlake_quality::checks::Status;

use crate::error::{BatchError, Result};
use crate::job::Job;
use crate::run::RunOptions;
use crate::summary::{CheckOutcome, RunSummary};

/// Bound on the whole check, as `data-quality-check --timeout`'s default.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the report; the checks go to the summary and `quality_results`.
pub async fn execute(
    job: &Job,
    date: NaiveDate,
    opts: &RunOptions,
    s: &mut RunSummary,
) -> Result<()> {
    let Some(q) = &job.spec.quality_report else {
        return Err(BatchError::Internal(
            "a quality_report job without its section".into(),
        ));
    };
    if opts.dry_run {
        s.status = "dry_run".into();
        return Ok(());
    }
    let spec_dirs: Vec<PathBuf> = if q.spec_dirs.is_empty() {
        vec!["pipelines".into(), "samples".into()]
    } else {
        q.spec_dirs.iter().map(PathBuf::from).collect()
    };
    let report = finlake_quality::dqc::run(&finlake_quality::dqc::Options {
        pipeline: q.pipeline.clone(),
        date,
        spec: None,
        spec_dirs,
        lake: std::env::var("LAKE_URI").ok(),
        refdata: None,
        dead_letter: None,
        results: None,
        timeout: TIMEOUT,
        now: None,
        rescan: false,
        memory_limit: finlake_quality::dqc::DEFAULT_MEMORY_LIMIT,
    })
    .await?;
    s.rows_in = report.run.rows;
    s.checks = report
        .results
        .iter()
        .map(|r| CheckOutcome {
            name: r.name.clone(),
            kind: r.kind.clone(),
            status: r.status.as_str().to_string(),
            value: r.value,
        })
        .collect();
    if report.exit_code(q.fail_on_warn) != 0 {
        let failing = |st: Status| st == Status::Error || (q.fail_on_warn && st != Status::Pass);
        return Err(BatchError::QualityFailed {
            job: job.spec.name.clone(),
            pipeline: q.pipeline.clone(),
            date,
            failed: report
                .results
                .iter()
                .filter(|r| failing(r.status))
                .map(|r| format!("{} ({}): {}", r.name, r.status.as_str(), r.detail))
                .collect(),
        });
    }
    Ok(())
}
