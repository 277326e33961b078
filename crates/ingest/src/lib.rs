//! finlake-ingest: the streaming ingestor (Kafka in, Delta out, exactly once). Empty until its
//! issue lands; the per-batch chain it will drive is `finlake_core::pipeline`.
