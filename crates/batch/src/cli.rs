//! `finlake-batch` (also `finlake batch`): `run JOB [--date D | --from D1 --to D2]`, `list`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use clap::{Args, Parser, Subcommand};
use finlake_core::telemetry::{self, LogFormat};
use futures::StreamExt;

use crate::calendar;
use crate::engine::MemoryLimit;
use crate::error::BatchError;
use crate::job::{self, EngineKind, Job};
use crate::run::{self, RunOptions};
use crate::runs;
use crate::summary::{self, RunSummary};

/// The batch job runner: regulatory aggregations and quality reports over the lake, one
/// logical date per run, idempotent. Exit codes: 0 ok, 2 bad config or arguments, 65 the
/// output failed an error-severity check (nothing written), 75 transient (retry), 70
/// internal.
#[derive(Debug, Parser)]
#[command(name = "finlake-batch", version)]
pub struct BatchArgs {
    #[command(subcommand)]
    command: Command,
    /// Log format: json or pretty (logs go to stderr; stdout has the JSON summary).
    #[arg(
        long,
        global = true,
        env = "FINLAKE_LOG_FORMAT",
        default_value = "pretty"
    )]
    log_format: LogFormat,
    /// Where jobs live: `<dir>/<name>/job.yaml`.
    #[arg(long, global = true, env = "FINLAKE_JOBS_DIR", default_value = "jobs")]
    jobs_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a job for a date (default: the previous trading day of its calendar) or a range.
    Run(RunArgs),
    /// The jobs, with their description, schedule and last run.
    List,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// A job name (a directory under --jobs-dir) or a job file.
    job: String,
    /// The logical date, YYYY-MM-DD.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    date: Option<NaiveDate>,
    /// Backfill from this date (its calendar's trading days, both ends included).
    #[arg(long, requires = "to")]
    from: Option<NaiveDate>,
    /// Backfill up to this date.
    #[arg(long, requires = "from")]
    to: Option<NaiveDate>,
    /// Dates run at once in a backfill.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
    /// Print the plan (files read, partition replaced) and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// The query's memory limit (`512MiB`, `2GiB`); past it operators spill to disk.
    #[arg(long, env = "FINLAKE_MEMORY_LIMIT")]
    memory_limit: Option<String>,
    /// The SQL engine, one of the job's `engines` (default: its first).
    #[arg(long, value_enum)]
    engine: Option<EngineKind>,
    /// Print the executed plan with each operator's rows, time and memory to stderr
    /// (DataFusion engine): where a slow run spends its time.
    #[arg(long)]
    profile: bool,
}

/// Runs the command; returns the exit code.
pub fn main(args: BatchArgs) -> u8 {
    telemetry::init(args.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return 70;
        }
    };
    rt.block_on(async {
        match args.command {
            Command::List => list(&args.jobs_dir).await,
            Command::Run(r) => run_command(&args.jobs_dir, r).await,
        }
    })
}

fn fail(e: &BatchError) -> u8 {
    eprintln!("error: {e}");
    e.exit_code() as u8
}

fn load(jobs_dir: &Path, name: &str) -> Result<Job, BatchError> {
    let file = job::locate(jobs_dir, name)?;
    job::load(&file, &|v| std::env::var(v).ok())
}

async fn run_command(jobs_dir: &Path, r: RunArgs) -> u8 {
    let job = match load(jobs_dir, &r.job) {
        Ok(j) => j,
        Err(e) => return fail(&e),
    };
    let memory_limit = match r.memory_limit.as_deref().map(job::parse_bytes) {
        Some(Err(m)) => return fail(&BatchError::Usage(format!("--memory-limit: {m}"))),
        Some(Ok(bytes)) => Some(MemoryLimit {
            bytes,
            text: r.memory_limit.clone().unwrap_or_default(),
        }),
        None => None,
    };
    if let Some(e) = r.engine {
        if !job.spec.engines.contains(&e) {
            return fail(&BatchError::Usage(format!(
                "job `{}` runs on {} only, not {}: {}",
                job.spec.name,
                job.spec
                    .engines
                    .iter()
                    .map(|e| e.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                e.name(),
                job.spec
                    .engines_reason
                    .as_deref()
                    .unwrap_or("no reason given")
            )));
        }
    }
    let opts = RunOptions {
        dry_run: r.dry_run,
        memory_limit,
        backfill_id: None,
        no_record: false,
        profile: r.profile,
        engine: r.engine,
    };
    let cal = finlake_core::transform::ExchangeCalendar::embedded();
    let mic = job.spec.calendar.as_str();
    let (from, to) = match (r.date, r.from, r.to) {
        (Some(d), _, _) => return report(run::run(&job, d, &opts).await, opts.dry_run),
        (None, Some(a), Some(b)) => (a, b),
        _ => {
            let today = chrono::Utc::now().date_naive();
            let d = calendar::previous_trading_day(&cal, mic, today);
            return report(run::run(&job, d, &opts).await, opts.dry_run);
        }
    };
    if from > to {
        return fail(&BatchError::Usage(format!(
            "--from {from} is after --to {to}"
        )));
    }
    let dates = calendar::trading_days(&cal, mic, from, to);
    if dates.is_empty() {
        return fail(&BatchError::Usage(format!(
            "no {mic} trading day from {from} to {to}"
        )));
    }
    backfill(&job, dates, from, to, r.jobs as usize, opts).await
}

fn report(s: RunSummary, dry_run: bool) -> u8 {
    let line = s.to_json();
    println!("{line}");
    if !dry_run {
        summary::write_termination_log(&s);
    }
    if let Some(e) = &s.error {
        eprintln!("error: {e}");
    }
    s.exit_code as u8
}

/// Runs `dates` up to `parallel` at a time. Dates this backfill (same job, same range)
/// already finished are skipped, so a killed backfill started again resumes where it
/// stopped. Exit code: 0 when every date is ok; 75 when any failure is transient (a rerun
/// resumes); else the first failure's code.
async fn backfill(
    job: &Job,
    dates: Vec<NaiveDate>,
    from: NaiveDate,
    to: NaiveDate,
    parallel: usize,
    opts: RunOptions,
) -> u8 {
    let id = format!("{}:{from}:{to}", job.spec.name);
    let done: std::collections::HashSet<NaiveDate> = if opts.dry_run {
        Default::default()
    } else {
        match runs::read(&job.runs_table).await {
            Ok(rows) => rows
                .into_iter()
                .filter(|r| r.backfill_id.as_deref() == Some(id.as_str()) && r.status == "ok")
                .map(|r| r.logical_date)
                .collect(),
            Err(e) => return fail(&e),
        }
    };
    let todo: Vec<NaiveDate> = dates
        .iter()
        .copied()
        .filter(|d| !done.contains(d))
        .collect();
    let skipped = dates.len() - todo.len();
    if skipped > 0 {
        tracing::info!(backfill = %id, skipped, remaining = todo.len(), "resuming: dates this backfill finished are skipped");
    }
    let progress = Progress::new(todo.len() as u64);
    let opts = RunOptions {
        backfill_id: Some(id.clone()),
        ..opts
    };
    let mut results = Vec::new();
    // the first date alone: it creates the output and job_runs tables, which concurrent
    // first commits would race to create
    let mut todo = todo.into_iter();
    if let Some(first) = todo.next() {
        let s = run::run(job, first, &opts).await;
        progress.step(&s);
        println!("{}", s.to_json());
        results.push(s);
    }
    let mut stream = futures::stream::iter(todo)
        .map(|d| {
            let opts = opts.clone();
            async move { run::run(job, d, &opts).await }
        })
        .buffer_unordered(parallel);
    while let Some(s) = stream.next().await {
        progress.step(&s);
        println!("{}", s.to_json());
        results.push(s);
    }
    progress.finish();
    let failed: Vec<&RunSummary> = results.iter().filter(|s| s.exit_code != 0).collect();
    let code = if failed.is_empty() {
        0
    } else if failed.iter().any(|s| s.exit_code == 75) {
        75
    } else {
        failed
            .iter()
            .min_by_key(|s| s.logical_date)
            .map_or(70, |s| s.exit_code)
    };
    let total = serde_json::json!({
        "backfill_id": id, "job": job.spec.name, "from": from, "to": to,
        "dates": dates.len(), "skipped": skipped, "ran": results.len(),
        "failed": failed.iter().map(|s| serde_json::json!({"date": s.logical_date, "exit_code": s.exit_code, "error": s.error})).collect::<Vec<_>>(),
        "exit_code": code,
    });
    println!("{total}");
    code as u8
}

/// A progress bar on a terminal, plain lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    done: std::sync::atomic::AtomicU64,
}

impl Progress {
    fn new(total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} dates {msg}",
            ) {
                b.set_style(style);
            }
            b
        });
        Progress {
            bar,
            total,
            done: Default::default(),
        }
    }

    fn step(&self, s: &RunSummary) {
        let n = self.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        match &self.bar {
            Some(b) => {
                b.set_message(format!("{} {}", s.logical_date, s.status));
                b.inc(1);
            }
            None => eprintln!(
                "[{n}/{}] {} {} {}: {} rows",
                self.total, s.job, s.logical_date, s.status, s.rows_out
            ),
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}

async fn list(jobs_dir: &Path) -> u8 {
    let jobs = job::list_dir(jobs_dir);
    if jobs.is_empty() {
        return fail(&BatchError::Usage(format!(
            "no jobs in {} (each is <dir>/<name>/job.yaml)",
            jobs_dir.display()
        )));
    }
    let mut code = 0;
    let mut last_runs: std::collections::HashMap<String, Vec<runs::RunRow>> = Default::default();
    println!(
        "{:<24} {:<16} {:<50} DESCRIPTION",
        "JOB", "SCHEDULE", "LAST RUN"
    );
    for (name, file) in jobs {
        let job = match job::load(&file, &|v| std::env::var(v).ok()) {
            Ok(j) => j,
            Err(e) => {
                eprintln!("error: {e}");
                code = 2;
                continue;
            }
        };
        if !last_runs.contains_key(&job.runs_table) {
            let rows = runs::read(&job.runs_table).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, table = %job.runs_table, "job_runs unreadable");
                Vec::new()
            });
            last_runs.insert(job.runs_table.clone(), rows);
        }
        let last = last_runs
            .get(&job.runs_table)
            .and_then(|rows| rows.iter().rev().find(|r| r.job == job.spec.name))
            .map(|r| {
                let ended = chrono::DateTime::from_timestamp_micros(r.ended_at)
                    .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_default();
                format!(
                    "{} {} (exit {}) at {ended}",
                    r.logical_date, r.status, r.exit_code
                )
            })
            .unwrap_or_else(|| "never".to_string());
        println!(
            "{:<24} {:<16} {:<50} {}",
            name,
            job.spec.schedule.as_deref().unwrap_or("-"),
            last,
            job.spec.description
        );
    }
    code
}
