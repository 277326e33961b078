//! The batch runner's errors, each with the exit code a CronJob's `podFailurePolicy` acts on:
//! 2 bad config or arguments, 65 the output failed an error-severity check (nothing written),
//! 75 transient (storage unreachable: retry), 70 internal. Never 1.

use finlake_core::error::ErrorClass;

/// Errors of a job run.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The job file (or its SQL) is invalid: every problem with its line.
    #[error(transparent)]
    Spec(#[from] finlake_core::spec::SpecError),
    /// Bad arguments (an unknown job, a malformed date, an empty range).
    #[error("{0}")]
    Usage(String),
    /// A Delta table operation failed.
    #[error(transparent)]
    Delta(#[from] finlake_core::delta::DeltaError),
    /// The core failed (reference data, IO).
    #[error(transparent)]
    Core(#[from] finlake_core::error::Error),
    /// The query failed to plan or run.
    #[error("{job}: the query failed: {message}")]
    Query {
        /// The job.
        job: String,
        /// DataFusion's message.
        message: String,
        /// Config (a planning error: a missing column or table), transient (storage), or
        /// internal.
        class: ErrorClass,
    },
    /// The query needed more memory than the limit.
    #[error("{job}: the query needs more memory than its limit of {limit}: {message} (raise `memory_limit` in the job or pass --memory-limit)")]
    Memory {
        /// The job.
        job: String,
        /// The limit, as given.
        limit: String,
        /// DataFusion's message.
        message: String,
    },
    /// An error-severity check failed on the output: nothing was written.
    #[error("{job} {date}: the output failed {} check(s), nothing was written: {}", failed.len(), failed.join("; "))]
    ChecksFailed {
        /// The job.
        job: String,
        /// The logical date.
        date: chrono::NaiveDate,
        /// Each failed check, described.
        failed: Vec<String>,
    },
    /// A quality report found an error-severity failure (the results are in
    /// `quality_results`).
    #[error("{job} {date}: {pipeline} failed {} check(s): {}", failed.len(), failed.join("; "))]
    QualityFailed {
        /// The job.
        job: String,
        /// The pipeline checked.
        pipeline: String,
        /// The logical date.
        date: chrono::NaiveDate,
        /// Each failed check, described.
        failed: Vec<String>,
    },
    /// The query returned rows outside the partition the run replaces.
    #[error("{job} {date}: the query returned {rows} row(s) whose `{column}` is not {date}: an overwrite_partition job writes its own date only")]
    OutsidePartition {
        /// The job.
        job: String,
        /// The logical date.
        date: chrono::NaiveDate,
        /// The date column.
        column: String,
        /// How many rows.
        rows: usize,
    },
    /// The rule engine failed (a rule that does not compile against the output).
    #[error(transparent)]
    Quality(#[from] finlake_quality::QualityError),
    /// Arrow failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A bug.
    #[error("internal: {0}")]
    Internal(String),
}

impl BatchError {
    /// What kind of failure this is.
    pub fn class(&self) -> ErrorClass {
        match self {
            BatchError::Spec(_) | BatchError::Usage(_) => ErrorClass::Config,
            BatchError::Delta(e) => e.class(),
            BatchError::Core(e) => e.class(),
            BatchError::Query { class, .. } => *class,
            BatchError::Memory { .. } => ErrorClass::Internal,
            BatchError::ChecksFailed { .. } | BatchError::QualityFailed { .. } => ErrorClass::Data,
            BatchError::OutsidePartition { .. } => ErrorClass::Config,
            BatchError::Quality(e) => e.class(),
            BatchError::Arrow(_) | BatchError::Internal(_) => ErrorClass::Internal,
        }
    }

    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        self.class().exit_code()
    }

    /// A short name of the class for the summary (`config`, `data`, `transient`, `internal`).
    pub fn class_name(&self) -> &'static str {
        match self.class() {
            ErrorClass::Config => "config",
            ErrorClass::Data => "data",
            ErrorClass::Transient => "transient",
            ErrorClass::Internal => "internal",
        }
    }
}

/// Result alias.
pub type Result<T, E = BatchError> = std::result::Result<T, E>;
