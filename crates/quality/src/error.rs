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
    #[error("rule `{rule}` failed on {rows} row(s) and its action is `fail`")]
    RuleFailed {
        /// The rule.
        rule: String,
        /// How many rows failed it.
        rows: u64,
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
            QualityError::RuleFailed { .. } => ErrorClass::Data,
            QualityError::Unreachable { .. } | QualityError::Io { .. } => ErrorClass::Transient,
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

/// Result alias.
pub type Result<T, E = QualityError> = std::result::Result<T, E>;
