//! The crate error and the one place where an error becomes an exit code.
//!
//! Each module has its own `thiserror` enum; all of them convert into [`Error`], and every
//! variant knows its [`ErrorClass`], so a binary maps an error to an exit code (2 config,
//! 65 data, 75 transient, 70 internal) and the ingestor knows whether to back off or stop.

use std::path::PathBuf;

/// What kind of failure an error is, and so what the caller should do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Bad configuration or arguments: fix the input, retrying will not help.
    Config,
    /// The data itself is wrong (a quality failure).
    Data,
    /// A dependency (object store, Kafka) failed; a retry may succeed.
    Transient,
    /// A bug or an invariant that did not hold.
    Internal,
}

impl ErrorClass {
    /// The process exit code for this class, per `sysexits.h` where one fits.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorClass::Config => 2,
            ErrorClass::Data => 65,
            ErrorClass::Transient => 75,
            ErrorClass::Internal => 70,
        }
    }
}

/// The crate error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A DataPipeline spec or other configuration is invalid.
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    /// Reference data (symbol mapping, exchange hours, FX rates) could not be loaded.
    #[error("reference data {path}: {message}")]
    RefData {
        /// The file that failed.
        path: PathBuf,
        /// What was wrong, with the line where there is one.
        message: String,
    },
    /// A Delta table operation failed.
    #[error(transparent)]
    Delta(#[from] crate::delta::DeltaError),
    /// Arrow computation failed (a bug, or data that broke an Arrow invariant).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Local file IO failed (a missing or unreadable file, an unwritable path): the
    /// configuration is wrong, a retry will not help.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Invalid input to a command (arguments, generated options).
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// The class of this error, which decides retries and exit codes.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Spec(_) | Error::RefData { .. } | Error::Usage(_) => ErrorClass::Config,
            Error::Delta(e) => e.class(),
            Error::Arrow(_) => ErrorClass::Internal,
            Error::Io { .. } => ErrorClass::Config,
        }
    }

    /// Wraps an IO error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias for the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
