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

/// jemalloc's options, read before `main`: freed pages go back to the system after 1 s
/// (jemalloc's default: 10 s) and straight away with `MADV_DONTNEED` (its default first
/// marks them `MADV_FREE`, which Linux goes on counting in the RSS until it needs the memory).
/// The ingestor's live heap is small and flat under steady load; its RSS peaks come from
/// bursts (delta-kernel's log replays allocate decoders of a few MiB per commit file), and
/// these options hand those pages back sooner (BENCHMARKS.md, issue 9, session 16).
/// `_RJEM_MALLOC_CONF` in the environment overrides any of them.
#[cfg(feature = "jemalloc")]
// `export_name` counts as unsafe code: the symbol must be the one jemalloc reads (a weak
// `const char *` it declares) and nothing else may define it; the value is a NUL-terminated
// string that lives for the whole program
#[allow(unsafe_code)]
#[used]
#[export_name = "_rjem_malloc_conf"]
static JEMALLOC_CONF: &[u8; 37] = b"dirty_decay_ms:1000,muzzy_decay_ms:0\0";

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
