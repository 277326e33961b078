//! The command line of `finlake-ingest` (and `finlake ingest`): arguments, telemetry, the
//! runtime, signals, and the one place an error becomes an exit code (0, 2 config,
//! 70 internal, 75 transient; never 1).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use finlake_core::telemetry::{self, LogFormat};
use finlake_core::transform::RefData;
use finlake_core::ErrorClass;

use crate::error::IngestError;
use crate::ingestor::Health;

/// `finlake-ingest [OPTIONS] SPEC...`
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "finlake-ingest",
    version,
    about = "Ingest Kafka topics into Delta tables, exactly once, as DataPipeline specs say"
)]
pub struct IngestArgs {
    /// DataPipeline spec files (`${VAR}` expanded from the environment).
    #[arg(required = true)]
    pub specs: Vec<PathBuf>,
    /// Reference data directory (symbol_mapping.csv, fx_rates.csv, exchange_hours.csv).
    #[arg(long, env = "FINLAKE_REFDATA")]
    pub refdata: Option<PathBuf>,
    /// Address of /metrics, /healthz and /readyz (default: 0.0.0.0 and the first spec's
    /// `monitoring.metrics_port`, else 9464). Port 0 picks a free port and logs it.
    #[arg(long, env = "FINLAKE_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Log format: json or pretty.
    #[arg(long, env = "FINLAKE_LOG_FORMAT", default_value = "json")]
    pub log_format: LogFormat,
}

/// Runs the ingestor; returns the exit code (it follows the error's class).
pub fn main(args: IngestArgs) -> u8 {
    telemetry::init(args.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ErrorClass::Internal.exit_code() as u8;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => 0,
        Err(e) => {
            let class = e.class();
            tracing::error!(error = %e, exit_code = class.exit_code(), "finlake-ingest stopped");
            class.exit_code() as u8
        }
    }
}

/// Loads the specs (failing fast), serves the HTTP port, runs every pipeline until SIGTERM or
/// SIGINT, then commits what is buffered and returns.
pub async fn run(args: IngestArgs) -> Result<(), IngestError> {
    let refdata = RefData::new(args.refdata.clone());
    let pipelines = crate::config::load(&args.specs, &refdata)?;
    let port = pipelines
        .first()
        .and_then(|p| p.spec.pipeline.spec.monitoring.as_ref())
        .and_then(|m| m.metrics_port)
        .unwrap_or(9464);
    let addr = args
        .metrics_addr
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], port)));
    let health: Vec<Arc<Health>> = pipelines.iter().map(|_| Arc::default()).collect();
    let bound = crate::http::serve(addr, health.clone()).await?;
    eprintln!("finlake-ingest: metrics on http://{bound}/metrics");
    #[cfg(unix)]
    {
        // SIGUSR1: resume every source the circuit breaker paused
        let health = health.clone();
        if let Ok(mut usr1) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        {
            tokio::spawn(async move {
                while usr1.recv().await.is_some() {
                    tracing::info!("SIGUSR1: resuming paused sources");
                    for h in &health {
                        h.resume.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            });
        }
    }
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: finishing and committing what is buffered");
        let _ = tx.send(true);
    });
    crate::ingestor::run_all(pipelines, health, rx).await
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `finlake trace SPEC QUERY`: where did a message go?
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "finlake trace",
    about = "Where did this message go? Landed (table and version), quarantined (why) or a duplicate (of which offset)"
)]
pub struct TraceArgs {
    /// The pipeline's DataPipeline spec (`${VAR}` expanded from the environment).
    pub spec: PathBuf,
    /// `topic:partition:offset`, or a micro-batch's or commit's correlation id.
    pub query: String,
    /// Reference data directory, as `finlake ingest` was given it: the spec compiles the
    /// same way, so the tables and transaction ids resolve the same way.
    #[arg(long, env = "FINLAKE_REFDATA")]
    pub refdata: Option<PathBuf>,
    /// Output: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub format: String,
}

/// A two-thread runtime for a command that reads the lake; the exit code 70 (after saying
/// why) when it cannot start.
fn small_runtime(command: &str) -> std::result::Result<tokio::runtime::Runtime, u8> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("finlake {command}: cannot start the runtime: {e}");
            ErrorClass::Internal.exit_code() as u8
        })
}

/// Runs `finlake trace`; returns the exit code: 0 accounted for, 65 not (an id that matches
/// nothing, an offset the lake cannot account for), 2 bad spec, 75 storage unreachable.
pub fn trace_main(args: TraceArgs) -> u8 {
    let rt = match small_runtime("trace") {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = rt.block_on(async {
        let spec = finlake_core::spec::load(&args.spec).map_err(finlake_core::Error::from)?;
        // the broker is not needed to read the lake
        let cfg = crate::config::PipelineConfig::from_spec(
            spec,
            &RefData::new(args.refdata.clone()),
            &|k| {
                std::env::var(k)
                    .ok()
                    .or_else(|| (k == "KAFKA_BOOTSTRAP").then(|| "unused-by-trace:9092".into()))
            },
        )?;
        let query = crate::trace::Query::parse(&args.query);
        crate::trace::trace(&cfg, &query, &args.query).await
    });
    match result {
        Ok(t) => {
            if args.format == "json" {
                println!("{}", serde_json::to_string_pretty(&t).unwrap_or_default());
            } else {
                print!("{}", t.text());
            }
            t.exit_code() as u8
        }
        Err(e) => {
            eprintln!("finlake trace: {e}");
            e.class().exit_code() as u8
        }
    }
}

/// `finlake restore`: a pipeline's tables back to one snapshot with the offsets recorded in
/// it, so the stream replays from there. Stop the pipeline first.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["snapshot", "version", "timestamp"])))]
pub struct RestoreArgs {
    /// The pipeline (its spec is found by name in --spec-dir), as the guide's `--target`.
    #[arg(long, alias = "target")]
    pub pipeline: String,
    /// `latest`: the latest data-table version a data-quality-check run passed.
    #[arg(long, value_parser = ["latest"])]
    pub snapshot: Option<String>,
    /// A version of the data table.
    #[arg(long)]
    pub version: Option<u64>,
    /// The last data-table version committed at or before this instant (RFC 3339).
    #[arg(long)]
    pub timestamp: Option<chrono::DateTime<chrono::Utc>>,
    /// Directories of DataPipeline specs (repeatable).
    #[arg(long = "spec-dir", env = "FINLAKE_SPEC_DIR", value_delimiter = ':', default_values = ["pipelines", "samples"])]
    pub spec_dirs: Vec<PathBuf>,
    /// The lake root, substituted for ${LAKE_URI} in the spec.
    #[arg(long, env = "LAKE_URI")]
    pub lake: Option<String>,
    /// Say what would be restored; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Output: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub format: String,
}

/// Runs `finlake restore`; returns the exit code: 0 done, 2 bad arguments, spec or snapshot,
/// 75 storage unreachable, 70 internal.
pub fn restore_main(args: RestoreArgs) -> u8 {
    let rt = match small_runtime("restore") {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = rt.block_on(async {
        let found = finlake_quality::dqc::known_pipelines(&args.spec_dirs);
        let Some((_, path)) = found.iter().find(|(n, _)| *n == args.pipeline) else {
            let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
            return Err(IngestError::Config {
                file: args
                    .spec_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":"),
                message: format!(
                    "no pipeline `{}`: {}",
                    args.pipeline,
                    finlake_core::spec::suggest(&args.pipeline, &names)
                ),
            });
        };
        let text = std::fs::read_to_string(path).map_err(|e| IngestError::Config {
            file: path.display().to_string(),
            message: e.to_string(),
        })?;
        let lake = args.lake.clone();
        let env = move |k: &str| match (k, &lake) {
            ("LAKE_URI", Some(l)) => Some(l.clone()),
            _ => std::env::var(k).ok(),
        };
        let spec =
            finlake_core::spec::load_str(path, &text, &env).map_err(finlake_core::Error::from)?;
        let target = match (&args.snapshot, args.version, args.timestamp) {
            (_, Some(v), _) => crate::restore::Target::Version(v),
            (_, _, Some(t)) => crate::restore::Target::Timestamp(t),
            _ => crate::restore::Target::LatestVerified,
        };
        crate::restore::restore(&spec, target, args.dry_run).await
    });
    match result {
        Ok(r) => {
            if args.format == "json" {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                print!("{}", r.text());
            }
            0
        }
        Err(e) => {
            eprintln!("finlake restore: {e}");
            e.class().exit_code() as u8
        }
    }
}
