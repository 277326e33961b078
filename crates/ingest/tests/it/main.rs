//! The ingestor end to end: a real broker (librdkafka's mock cluster, hosted by the test on
//! its own thread, so the ingestor is always a separate process), the generated feed, the
//! `finlake-ingest` binary, and the lake read back.

mod harness;
mod ingest;
