//! Telemetry: `tracing` set-up (JSON or pretty), correlation ids, and the Prometheus registry
//! with the metric names every finlake binary uses.

use std::sync::OnceLock;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Log output style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, spans included (production).
    Json,
    /// Human-readable (terminals).
    Pretty,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(LogFormat::Json),
            "pretty" | "text" => Ok(LogFormat::Pretty),
            other => Err(format!("unknown log format `{other}` (json or pretty)")),
        }
    }
}

/// Installs the global subscriber; `RUST_LOG` filters (default: finlake at info, dependencies
/// at warn). Logs go to stderr.
pub fn init(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    // finlake's own crates at info, dependencies at warn (delta-kernel logs every snapshot at
    // info). delta-kernel also logs an ERROR when it probes a table that does not exist yet,
    // which open-or-create does on purpose; that one target is silenced unless RUST_LOG asks.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(
            "warn,finlake=info,finlake_core=info,finlake_quality=info,finlake_ingest=info,finlake_batch=info,data_quality_check=info,\
             buoyant_kernel::snapshot::builder=off",
        )
    });
    // Colour only on a terminal: a pipe or a file (`2>log`) gets plain text; NO_COLOR wins.
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}

/// A new correlation id: `<service>:<uuid>`. One per batch, carried by every log line of the
/// batch (through its span) and by the `_correlation_id` column of every row it lands.
pub fn correlation_id(service: &str) -> String {
    format!("{service}:{}", uuid::Uuid::new_v4())
}

/// Messages decoded, by outcome (`landed`, `rejected`).
pub const MESSAGES_TOTAL: &str = "finlake_messages_total";
/// Rejects by stage and field.
pub const REJECTS_TOTAL: &str = "finlake_rejects_total";
/// Rows committed to a table.
pub const ROWS_WRITTEN_TOTAL: &str = "finlake_rows_written_total";
/// Time to process one batch, by stage.
pub const BATCH_STAGE_SECONDS: &str = "finlake_batch_stage_duration_seconds";
/// The allocator's bytes, by kind (`allocated`, `resident`, `retained`).
pub const ALLOCATOR_BYTES: &str = "finlake_allocator_bytes";

/// What the global allocator holds, in bytes (jemalloc's `stats.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocatorBytes {
    /// Bytes in live allocations: the heap the program holds.
    pub allocated: u64,
    /// Bytes in pages the allocator has touched and not returned: most of the RSS.
    pub resident: u64,
    /// Bytes of address space kept unmapped-but-reserved for reuse (not in the RSS).
    pub retained: u64,
}

/// The global allocator's figures now, or `None` when finlake runs on another allocator
/// (feature `jemalloc` off). Refreshes jemalloc's statistics epoch first; cheap (microseconds).
pub fn allocator_bytes() -> Option<AllocatorBytes> {
    #[cfg(feature = "jemalloc")]
    {
        use tikv_jemalloc_ctl::{epoch, stats};
        epoch::advance().ok()?;
        Some(AllocatorBytes {
            allocated: stats::allocated::read().ok()? as u64,
            resident: stats::resident::read().ok()? as u64,
            retained: stats::retained::read().ok()? as u64,
        })
    }
    #[cfg(not(feature = "jemalloc"))]
    {
        None
    }
}

/// The metrics of the core stages.
pub struct Metrics {
    /// The registry they are registered in.
    pub registry: Registry,
    /// See [`MESSAGES_TOTAL`].
    pub messages: IntCounterVec,
    /// See [`REJECTS_TOTAL`].
    pub rejects: IntCounterVec,
    /// See [`ROWS_WRITTEN_TOTAL`].
    pub rows_written: IntCounterVec,
    /// See [`BATCH_STAGE_SECONDS`].
    pub stage_seconds: HistogramVec,
    /// See [`ALLOCATOR_BYTES`]; refreshed on each [`Metrics::render`].
    pub allocator: IntGaugeVec,
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        let messages = counter(
            MESSAGES_TOTAL,
            "Messages decoded, by outcome.",
            &["outcome"],
        );
        let rejects = counter(
            REJECTS_TOTAL,
            "Rejected messages, by stage and field.",
            &["stage", "field"],
        );
        let rows_written = counter(ROWS_WRITTEN_TOTAL, "Rows committed, by table.", &["table"]);
        let stage_seconds = HistogramVec::new(
            HistogramOpts::new(BATCH_STAGE_SECONDS, "Time to run one stage on one batch.")
                .buckets(prometheus::exponential_buckets(0.0001, 4.0, 10).expect("valid buckets")),
            &["stage"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(stage_seconds.clone()))
            .expect("registered once");
        let allocator = IntGaugeVec::new(
            Opts::new(
                ALLOCATOR_BYTES,
                "Bytes the memory allocator holds: allocated (live heap), resident, retained.",
            ),
            &["kind"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(allocator.clone()))
            .expect("registered once");
        Metrics {
            registry,
            messages,
            rejects,
            rows_written,
            stage_seconds,
            allocator,
        }
    }

    /// The process-wide metrics.
    pub fn global() -> &'static Metrics {
        static METRICS: OnceLock<Metrics> = OnceLock::new();
        METRICS.get_or_init(Metrics::new)
    }

    /// The text exposition format of every metric.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        if let Some(a) = allocator_bytes() {
            let gauge = |kind: &str, v: u64| {
                self.allocator
                    .with_label_values(&[kind])
                    .set(i64::try_from(v).unwrap_or(i64::MAX))
            };
            gauge("allocated", a.allocated);
            gauge("resident", a.resident);
            gauge("retained", a.retained);
        }
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("exposition format is UTF-8")
    }
}
