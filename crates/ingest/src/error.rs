//! The ingestor's error, and its class (which decides whether the loop backs off and retries
//! or the process exits, and with which code: 2 config, 70 internal, 75 transient).

use finlake_core::ErrorClass;

/// Errors of the ingestor.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// From the core (spec, reference data, Delta IO).
    #[error(transparent)]
    Core(#[from] finlake_core::Error),
    /// A Delta table operation.
    #[error(transparent)]
    Delta(#[from] finlake_core::delta::DeltaError),
    /// From the rule engine.
    #[error(transparent)]
    Quality(#[from] finlake_quality::QualityError),
    /// A spec the ingestor cannot run, named with its file.
    #[error("{file}: {message}")]
    Config {
        /// The spec file.
        file: String,
        /// What is wrong, and what to write instead.
        message: String,
    },
    /// Kafka refused or failed an operation.
    #[error("kafka: {operation}: {source}")]
    Kafka {
        /// What the ingestor was doing.
        operation: &'static str,
        /// The client's error.
        source: rdkafka::error::KafkaError,
    },
    /// Another process committed a partition this one was about to commit (the fencing path).
    #[error("partition {app_id}: the table holds version {found:?}, this batch starts at {expected}: another process owns it now")]
    Fenced {
        /// `<pipeline>/<topic>/<partition>`.
        app_id: String,
        /// The version the table holds.
        found: Option<i64>,
        /// The batch's first offset.
        expected: i64,
    },
    /// A rule whose action is `fail` failed: the pipeline stops before committing anything of
    /// the commit interval that holds the row (a restart stops there again until the data
    /// or the rule is fixed).
    #[error("rule `{rule}` (action: fail) failed on {rows} row(s) of {topic}/{partition} offsets {from}..={to}, the first at offset {offset}: the pipeline stops; nothing from offset {from} on was committed for this partition. Fix the rule or the data (or produce past it and reset the partition's txn) before restarting")]
    Halted {
        /// The rule.
        rule: String,
        /// Rows of the micro-batch that failed it.
        rows: u64,
        /// Source topic.
        topic: String,
        /// Source partition.
        partition: i32,
        /// The micro-batch's first offset.
        from: i64,
        /// Its last offset.
        to: i64,
        /// The first failing message's offset.
        offset: i64,
    },
    /// The metrics endpoint could not bind.
    #[error("metrics port {port}: {source}")]
    Http {
        /// The port.
        port: u16,
        /// Why.
        source: std::io::Error,
    },
    /// A failure inside the ingestor (a task that panicked, a broken invariant).
    #[error("internal: {0}")]
    Internal(String),
}

impl IngestError {
    /// The class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            IngestError::Core(e) => e.class(),
            IngestError::Delta(e) => e.class(),
            IngestError::Quality(e) => e.class(),
            IngestError::Config { .. } | IngestError::Http { .. } => ErrorClass::Config,
            IngestError::Kafka { source, .. } => kafka_class(source),
            IngestError::Fenced { .. } => ErrorClass::Transient,
            IngestError::Halted { .. } => ErrorClass::Data,
            IngestError::Internal(_) => ErrorClass::Internal,
        }
    }

    /// Whether a Delta commit lost a race for a partition's `txn` (delta-rs's
    /// `ConcurrentTransaction`, or our own check before the commit).
    pub fn is_fenced(&self) -> bool {
        match self {
            IngestError::Fenced { .. } => true,
            IngestError::Delta(e) | IngestError::Core(finlake_core::Error::Delta(e)) => {
                e.is_concurrent_transaction()
            }
            _ => false,
        }
    }

    pub(crate) fn kafka(
        operation: &'static str,
    ) -> impl FnOnce(rdkafka::error::KafkaError) -> Self {
        move |source| IngestError::Kafka { operation, source }
    }
}

/// Configuration errors of the client (a bad setting) are config; everything else from the
/// broker is worth a retry.
fn kafka_class(e: &rdkafka::error::KafkaError) -> ErrorClass {
    use rdkafka::error::KafkaError;
    match e {
        KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_) => ErrorClass::Config,
        _ => ErrorClass::Transient,
    }
}

/// Result alias for the crate.
pub type Result<T, E = IngestError> = std::result::Result<T, E>;
