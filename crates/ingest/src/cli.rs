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
