//! finlake-ingest: the streaming ingestor. Kafka topics (JSON or Avro) in; validated,
//! deduplicated, enriched Delta tables out, exactly once; rejects to the quarantine table and
//! the dead-letter topic.
//!
//! - [`config`]: a DataPipeline spec resolved for streaming, refused at start-up when it
//!   cannot run;
//! - [`assign`]: partition ownership, start offsets set inside the assign call;
//! - [`ingestor`]: the consumer loop, micro-batches, commits with a `txn` per partition;
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`;
//! - [`devkafka`]: librdkafka's mock cluster as a development broker, and the generated feed
//!   produced into it.

pub mod assign;
pub mod bench;
pub mod cli;
pub mod config;
pub mod devkafka;
pub mod error;
pub mod http;
pub mod ingestor;
pub mod metrics;

pub use error::{IngestError, Result};
