//! The quality crate's error, and its class (which decides the exit code of
//! `data-quality-check`: 2 config, 65 data, 75 transient, 70 internal).

use finlake_core::ErrorClass;

/// Errors of the rule engine, the checks and the quality command.
#[derive(Debug, thiserror::Error)]
pub enum QualityError {
    /// From the core (spec, reference data, Delta IO).
    #[error(transparent)]
    Core(#[from] finlake_core::Error),
    /// A spec whose rules do not compile (file:line for each).
    #[error(transparent)]
    Spec(#[from] finlake_core::spec::SpecError),
    /// A rule failed to evaluate on a batch.
    #[error("rule `{rule}`: evaluation failed: {message}")]
    Evaluate {
        /// The rule.
        rule: String,
        /// Why.
        message: String,
    },
    /// A rule whose action is `fail` failed on some rows.
    #[error("rule `{rule}` failed on {rows} row(s) (the first: row {first_row} of the batch) and its action is `fail`")]
    RuleFailed {
        /// The rule.
        rule: String,
        /// How many rows failed it.
        rows: u64,
        /// The first failing row's index in the batch.
        first_row: usize,
    },
    /// Bad arguments or an unknown pipeline.
    #[error("{0}")]
    Usage(String),
    /// The lake did not answer in time.
    #[error("lake {uri} unreachable: {message}")]
    Unreachable {
        /// The URI tried.
        uri: String,
        /// What happened.
        message: String,
    },
    /// A query over the lake failed.
    #[error("query on {table}: {message}")]
    Query {
        /// The table.
        table: String,
        /// The DataFusion message.
        message: String,
    },
    /// The lake's files do not hold what its log says (a data file shorter than its size).
    #[error("table {table} is damaged: {message}")]
    Damaged {
        /// The table.
        table: String,
        /// What is wrong, naming the file.
        message: String,
    },
    /// Arrow computation failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Writing a report or dead-letter file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl QualityError {
    /// What kind of failure this is.
    pub fn class(&self) -> ErrorClass {
        match self {
            QualityError::Core(e) => e.class(),
            QualityError::Spec(_) | QualityError::Usage(_) => ErrorClass::Config,
            QualityError::RuleFailed { .. } | QualityError::Damaged { .. } => ErrorClass::Data,
            QualityError::Unreachable { .. } => ErrorClass::Transient,
            // A local file (spec, refdata, --output, --dead-letter): fix the path.
            QualityError::Io { .. } => ErrorClass::Config,
            QualityError::Query { .. } | QualityError::Evaluate { .. } | QualityError::Arrow(_) => {
                ErrorClass::Internal
            }
        }
    }
}

impl From<finlake_core::delta::DeltaError> for QualityError {
    fn from(e: finlake_core::delta::DeltaError) -> Self {
        QualityError::Core(e.into())
    }
}

/// The one mapping from an error to its class (and so its exit code) for every finlake
/// binary: the first finlake error in the `source()` chain decides; a storage error found in
/// the chain decides next; anything else is internal (70). Never 1.
pub fn class_of(err: &(dyn std::error::Error + 'static)) -> ErrorClass {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(q) = e.downcast_ref::<QualityError>() {
            return q.class();
        }
        if let Some(c) = e.downcast_ref::<finlake_core::Error>() {
            return c.class();
        }
        if let Some(d) = e.downcast_ref::<finlake_core::delta::DeltaError>() {
            return d.class();
        }
        if e.downcast_ref::<finlake_core::spec::SpecError>().is_some() {
            return ErrorClass::Config;
        }
        cur = e.source();
    }
    finlake_core::delta::storage_class(err).unwrap_or(ErrorClass::Internal)
}

/// Result alias.
pub type Result<T, E = QualityError> = std::result::Result<T, E>;
