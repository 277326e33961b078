//! finlake-core: what the ingestor, the batch runner and the quality CLI share.
//!
//! Modules in data-flow order: [`spec`] (the DataPipeline resource), [`schema`] (built-in Arrow
//! schemas), [`decode`] (JSON/Avro to Arrow), [`transform`] (ISIN, FX), [`pipeline`] (the
//! per-batch chain), [`delta`] (table IO); plus [`generate`] (synthetic feed), [`demo`],
//! [`telemetry`] and [`error`].

/// jemalloc for every finlake process (feature `jemalloc`, on by default): with its background
/// threads it returns freed pages to the system. Under glibc's malloc the long-running
/// ingestor's RSS crept up by 300 MiB in 10 minutes of steady load; with jemalloc it levels off
/// (BENCHMARKS.md, issue 9).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

pub mod compact;
pub mod decode;
pub mod delta;
pub mod demo;
pub mod error;
pub mod generate;
pub mod localstore;
pub mod orderflow;
pub mod pipeline;
pub mod schema;
pub mod spec;
pub mod telemetry;
pub mod transform;

pub use error::{Error, ErrorClass, Result};

/// Reference data shipped with finlake, used by the demo and as defaults.
pub mod embedded {
    /// `samples/symbol_mapping.csv`.
    pub const SYMBOL_MAPPING: &str = include_str!("../../../samples/symbol_mapping.csv");
    /// `samples/exchange_hours.csv`.
    pub const EXCHANGE_HOURS: &str = include_str!("../../../samples/exchange_hours.csv");
    /// `samples/exchange_holidays.csv`.
    pub const EXCHANGE_HOLIDAYS: &str = include_str!("../../../samples/exchange_holidays.csv");
    /// `samples/market-data-stream.yaml`: the demo's pipeline.
    pub const MARKET_DATA_STREAM: &str = include_str!("../../../samples/market-data-stream.yaml");
}

/// The finlake version, recorded in commits and reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
