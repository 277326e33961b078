//! finlake-batch: the job runner for cron and Kubernetes CronJobs. A job
//! (`jobs/<name>/job.yaml` and its SQL) is run for one logical date: its inputs opened and
//! pruned to the date's window, the SQL run on DataFusion with its parameters bound as typed
//! values, the output checked by the rule engine, the date's partition replaced in one
//! commit, and the run recorded in `job_runs`; the process exits with a code the scheduler
//! acts on.
//!
//! - [`job`]: the job file, checked whole at load;
//! - [`params`]: the SQL's `:date`-style parameters, bound through the parsed statement;
//! - [`engine`]: the DataFusion session (every input in one session, a spilling memory pool);
//!   [`lower`]: portable SQL idioms rewritten to the form DataFusion runs fastest;
//! - [`checks`]: the output checks; [`maintenance`]: compaction, checkpoint, vacuum;
//!   [`quality_report`]: a pipeline's checks on a schedule;
//! - [`run`]: one run; [`runs`]: the `job_runs` table; [`summary`]: the JSON summary;
//! - [`calendar`]: trading days; [`cli`]: `finlake-batch run|list`.

pub mod calendar;
pub mod checks;
pub mod cli;
pub mod engine;
pub mod error;
pub mod indicators;
pub mod job;
pub mod lower;
pub mod maintenance;
pub mod params;
pub mod polars_engine;
pub mod quality_report;
pub mod run;
pub mod runs;
pub mod summary;

pub use error::{BatchError, Result};
