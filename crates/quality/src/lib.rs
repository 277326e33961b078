//! finlake-quality: one rule engine for stream and batch, table checks, quality results,
//! and the `data-quality-check` command.
//!
//! Modules in data-flow order: [`enrich`] (session columns the rules read), [`rules`]
//! (compile the spec's rules to DataFusion physical expressions; NULL semantics), [`dedup`]
//! (the stateful rule), [`engine`] (masks to the split and counts), then the table side:
//! [`checks`] (checks over a partition), [`results`] (the `quality_results` table),
//! [`report`] (text, JSON, JUnit, HTML), [`dqc`] (the command) and [`cli`] (its arguments and
//! exit codes). `fixtures` (feature `fixtures`, not part of the library's API) writes
//! trade tables with known injected faults for the tests and `finlake bench-rules`.

pub mod checks;
pub mod cli;
pub mod dedup;
pub mod dqc;
pub mod engine;
pub mod enrich;
pub mod error;
#[cfg(feature = "fixtures")]
pub mod fixtures;
pub mod metrics;
pub mod patterns;
pub mod report;
pub mod results;
pub mod rules;

pub use engine::RuleEngine;
pub use error::{QualityError, Result};
