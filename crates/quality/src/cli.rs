//! The command line of `data-quality-check` (also `finlake dq`):
//! `data-quality-check --pipeline market-data-stream --date 2026-11-20`.
//!
//! Exit codes: 0 all pass or warnings only, 65 an error-severity check failed (or a warning
//! with `--fail-on warn`), 2 bad arguments, spec or unknown pipeline, 75 the lake was
//! unreachable, 70 an internal error. Never 1, so a crash is never read as a verdict.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use crate::{dqc, report, QualityError};
use clap::{Parser, ValueEnum};
use finlake_core::ErrorClass;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
    Html,
    Junit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FailOn {
    Error,
    Warn,
}

/// Is this day's data right? Runs a pipeline's rules and table checks over one date.
#[derive(Debug, Parser)]
#[command(name = "data-quality-check", version)]
pub struct Args {
    /// The pipeline's metadata.name.
    #[arg(long)]
    pipeline: String,
    /// The logical date (trade_date partition), YYYY-MM-DD.
    #[arg(long)]
    date: chrono::NaiveDate,
    /// The spec file; by default the pipeline is looked up by name in --spec-dir.
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Directories of DataPipeline specs (repeatable).
    #[arg(long = "spec-dir", env = "FINLAKE_SPEC_DIR", value_delimiter = ':', default_values = ["pipelines", "samples"])]
    spec_dirs: Vec<PathBuf>,
    /// The lake root, substituted for ${LAKE_URI} in the spec.
    #[arg(long, env = "LAKE_URI")]
    lake: Option<String>,
    /// Directory with exchange_hours.csv and exchange_holidays.csv (embedded by default).
    #[arg(long)]
    refdata: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Write the report here instead of standard output.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Write failing rows with rule and reason: a .jsonl file or a Delta table URI.
    #[arg(long)]
    dead_letter: Option<String>,
    /// Recompute every metric from the table, even when quality_state already holds them for
    /// the partition as it is now (same spec, same data files).
    #[arg(long)]
    rescan: bool,
    /// The quality_results table (default: beside the checked table).
    #[arg(long)]
    results: Option<String>,
    /// Exit 65 on warnings too.
    #[arg(long, value_enum, default_value = "error")]
    fail_on: FailOn,
    /// Memory the sorted read may hold before it spills to disk (the fallback for a partition
    /// whose files are out of arrival order or carry deletion vectors): 512MiB, 2GiB, ...
    #[arg(long, default_value = "512MiB", value_parser = finlake_core::spec::parse_bytes)]
    memory_limit: usize,
    /// Give up on the lake after this long (exit 75).
    #[arg(long, default_value = "30s", value_parser = humantime_secs)]
    timeout: std::time::Duration,
    /// Write the Prometheus text exposition of the results here (textfile collector).
    #[arg(long)]
    metrics_file: Option<PathBuf>,
    /// Log format: json or pretty.
    #[arg(long, env = "FINLAKE_LOG_FORMAT", default_value = "pretty")]
    log_format: finlake_core::telemetry::LogFormat,
}

fn humantime_secs(s: &str) -> Result<std::time::Duration, String> {
    finlake_core::spec::Duration::parse(s).map(|d| d.0)
}

/// Parses `argv` (clap exits 2 on bad arguments), runs the check, and exits the process with
/// the verdict's code. Exits rather than returns: after a timeout, storage tasks may still be
/// running, and tearing down the runtime must not turn the verdict into a panic's exit code.
pub fn main<I, T>(argv: I) -> !
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let internal = ErrorClass::Internal.exit_code();
    std::panic::set_hook(Box::new(move |info| {
        eprintln!("data-quality-check: internal error: {info}");
        std::process::exit(internal);
    }));
    let args = Args::parse_from(argv);
    finlake_core::telemetry::init(args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("data-quality-check: cannot start the runtime: {e}");
            std::process::exit(internal);
        }
    };
    let code = run(&args, &runtime);
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

/// Reports an error once, on stderr, and returns its exit code (decided by
/// [`crate::error::class_of`], the one mapping).
fn fail(e: &QualityError) -> i32 {
    let code = crate::error::class_of(e).exit_code();
    eprintln!("data-quality-check: {e}");
    code
}

fn run(args: &Args, runtime: &tokio::runtime::Runtime) -> i32 {
    let correlation_id = finlake_core::telemetry::correlation_id("dqc");
    let span = tracing::info_span!("dqc", correlation_id = %correlation_id, pipeline = %args.pipeline, date = %args.date);
    let _enter = span.enter();
    let opts = dqc::Options {
        pipeline: args.pipeline.clone(),
        date: args.date,
        spec: args.spec.clone(),
        spec_dirs: args.spec_dirs.clone(),
        lake: args.lake.clone(),
        refdata: args.refdata.clone(),
        dead_letter: args.dead_letter.clone(),
        results: args.results.clone(),
        timeout: args.timeout,
        now: None,
        rescan: args.rescan,
        memory_limit: args.memory_limit,
    };
    let result = runtime.block_on(dqc::run(&opts));
    let report = match result {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let to_terminal = args.output.is_none() && std::io::stdout().is_terminal();
    let body = match args.format {
        Format::Text => report::text(
            &report,
            to_terminal && std::env::var_os("NO_COLOR").is_none(),
        ),
        Format::Json => report::json(&report),
        Format::Html => report::html(&report),
        Format::Junit => report::junit(&report),
    };
    let io = |path: String| move |source| QualityError::Io { path, source };
    let written = match &args.output {
        Some(path) => std::fs::write(path, body).map_err(io(path.display().to_string())),
        None => std::io::stdout()
            .write_all(body.as_bytes())
            .map_err(io("stdout".into())),
    };
    if let Err(e) = written {
        return fail(&e);
    }
    if let Some(path) = &args.metrics_file {
        let text = finlake_core::telemetry::Metrics::global().render();
        if let Err(e) = std::fs::write(path, text).map_err(io(path.display().to_string())) {
            return fail(&e);
        }
    }
    let code = report.exit_code(args.fail_on == FailOn::Warn);
    tracing::info!(status = %report.status(), exit_code = code, rows = report.run.rows, "checked");
    code
}
