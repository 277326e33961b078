//! finlake-ingest: the streaming ingestor. Kafka topics (JSON or Avro) in; validated,
//! deduplicated, enriched Delta tables out, exactly once; rejects to the quarantine table and
//! the dead-letter topic.
//!
//! - [`config`]: a DataPipeline spec resolved for streaming, refused at start-up when it
//!   cannot run;
//! - [`assign`]: partition ownership, start offsets set inside the assign call;
//! - [`ingestor`]: the consumer loop, micro-batches, commits with a `txn` per partition;
//! - [`breaker`]: the circuit breaker that pauses a source whose rejects pile up;
//! - [`events`]: the `processed_events` table, what became of every micro-batch;
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`;
//! - [`trace`]: `finlake trace`, where a message went, from the lake alone;
//! - [`reconcile`]: every source offset landed, quarantined or a counted duplicate, from the
//!   lake alone;
//! - [`demo`]: `finlake demo`, the whole streaming path in one process;
//! - [`restore`]: `finlake restore`, a pipeline's tables and offsets back to one snapshot;
//! - [`devkafka`]: librdkafka's mock cluster as a development broker, and the generated feed
//!   produced into it.

pub mod assign;
pub mod bench;
pub mod breaker;
pub mod cli;
pub mod config;
pub mod demo;
pub mod devkafka;
pub mod error;
pub mod events;
pub mod http;
pub mod ingestor;
pub mod metrics;
pub mod reconcile;
pub mod restore;
pub mod trace;
pub mod txncache;

pub use error::{IngestError, Result};
