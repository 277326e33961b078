//! The ingestor's Prometheus metrics, registered in the process-wide registry beside the
//! core's and the rule engine's, so `/metrics` shows them all.

use std::sync::OnceLock;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};

/// The ingestor's metrics.
pub struct IngestMetrics {
    /// Messages consumed, by pipeline and topic.
    pub messages: IntCounterVec,
    /// Payload bytes consumed, by pipeline and topic.
    pub bytes: IntCounterVec,
    /// Messages by outcome (`landed`, `quarantined`, `duplicate`), by pipeline.
    pub outcomes: IntCounterVec,
    /// Delta commits, by pipeline and table (`data`, `quarantine`).
    pub commits: IntCounterVec,
    /// Commit latency, by pipeline.
    pub commit_seconds: HistogramVec,
    /// Micro-batch processing latency (decode to evaluated), by pipeline.
    pub batch_seconds: HistogramVec,
    /// Commits that lost a partition to another process (the fencing path), by pipeline.
    pub fenced: IntCounterVec,
    /// Commits retried after a transient error, by pipeline.
    pub retries: IntCounterVec,
    /// Checkpoints written by the maintenance task, by pipeline.
    pub checkpoints: IntCounterVec,
    /// Small files rewritten by the maintenance task's compactions, by pipeline.
    pub compacted_files: IntCounterVec,
    /// Dead letters produced, by pipeline.
    pub dead_letters: IntCounterVec,
    /// Alerts raised (committed to the alerts table), by pipeline and alert.
    pub alerts: IntCounterVec,
    /// Partitions owned, by pipeline.
    pub assigned: IntGaugeVec,
    /// Consumer lag in messages, by pipeline, topic and partition.
    pub lag: IntGaugeVec,
    /// Unix time of the last data commit, by pipeline (`time() - metric` is the freshness).
    pub last_commit: prometheus::GaugeVec,
    /// Errors the Kafka client reported, by pipeline.
    pub kafka_errors: IntCounterVec,
    /// 1 while a source is paused by the circuit breaker.
    pub circuit_open: IntGaugeVec,
    /// Times the circuit breaker paused a source.
    pub circuit_trips: IntCounterVec,
    /// `processed_events` commits that failed (their rows are rebuilt later).
    pub events_failures: IntCounterVec,
}

impl IngestMetrics {
    fn new() -> Self {
        let registry = &finlake_core::telemetry::Metrics::global().registry;
        fn reg<C: prometheus::core::Collector + Clone + 'static>(
            r: &prometheus::Registry,
            c: C,
        ) -> C {
            r.register(Box::new(c.clone())).expect("registered once");
            c
        }
        let counter = |name: &str, help: &str, labels: &[&str]| {
            reg(
                registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            reg(
                registry,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let histogram = |name: &str, help: &str| {
            reg(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(
                        prometheus::exponential_buckets(0.0005, 2.0, 16).expect("valid buckets"),
                    ),
                    &["pipeline"],
                )
                .expect("valid metric"),
            )
        };
        let last_commit = reg(
            registry,
            prometheus::GaugeVec::new(
                Opts::new(
                    "finlake_ingest_last_commit_timestamp_seconds",
                    "Unix time of the last data commit; time() minus it is the table's freshness.",
                ),
                &["pipeline"],
            )
            .expect("valid metric"),
        );
        IngestMetrics {
            messages: counter(
                "finlake_ingest_messages_total",
                "Messages consumed.",
                &["pipeline", "topic"],
            ),
            bytes: counter(
                "finlake_ingest_bytes_total",
                "Payload bytes consumed.",
                &["pipeline", "topic"],
            ),
            outcomes: counter(
                "finlake_ingest_outcomes_total",
                "Messages committed, by outcome: landed, quarantined, duplicate.",
                &["pipeline", "outcome"],
            ),
            commits: counter(
                "finlake_ingest_commits_total",
                "Delta commits, by table.",
                &["pipeline", "table"],
            ),
            commit_seconds: histogram(
                "finlake_ingest_commit_duration_seconds",
                "Time to commit buffered micro-batches (both tables).",
            ),
            batch_seconds: histogram(
                "finlake_ingest_batch_duration_seconds",
                "Time to decode, transform and evaluate one micro-batch.",
            ),
            fenced: counter(
                "finlake_ingest_fenced_total",
                "Commits that found a partition committed by another process.",
                &["pipeline"],
            ),
            retries: counter(
                "finlake_ingest_commit_retries_total",
                "Commits retried after a transient error.",
                &["pipeline"],
            ),
            checkpoints: counter(
                "finlake_ingest_checkpoints_total",
                "Checkpoints written off the commit path, by the maintenance task.",
                &["pipeline"],
            ),
            compacted_files: counter(
                "finlake_ingest_compacted_files_total",
                "Small files rewritten into larger ones by the maintenance task's compactions.",
                &["pipeline"],
            ),
            dead_letters: counter(
                "finlake_ingest_dead_letters_total",
                "Rejects produced to the dead-letter topic.",
                &["pipeline"],
            ),
            alerts: counter(
                "finlake_ingest_alerts_total",
                "Alerts raised by cep_patterns and alerting rules (committed to the alerts table).",
                &["pipeline", "alert"],
            ),
            assigned: gauge(
                "finlake_ingest_assigned_partitions",
                "Partitions this process owns.",
                &["pipeline"],
            ),
            lag: gauge(
                "finlake_ingest_consumer_lag_messages",
                "Messages between the committed version and the partition's high watermark.",
                &["pipeline", "topic", "partition"],
            ),
            last_commit,
            kafka_errors: counter(
                "finlake_ingest_kafka_errors_total",
                "Errors the Kafka client reported.",
                &["pipeline"],
            ),
            circuit_open: gauge(
                "finlake_ingest_circuit_open",
                "1 while the circuit breaker keeps a source's partitions paused.",
                &["pipeline", "topic"],
            ),
            circuit_trips: counter(
                "finlake_ingest_circuit_trips_total",
                "Times too many rejects paused a source.",
                &["pipeline", "topic"],
            ),
            events_failures: counter(
                "finlake_ingest_processed_events_failures_total",
                "processed_events commits that failed; the rows are rebuilt from the data table's log.",
                &["pipeline"],
            ),
        }
    }

    /// The process-wide metrics.
    pub fn global() -> &'static IngestMetrics {
        static M: OnceLock<IngestMetrics> = OnceLock::new();
        M.get_or_init(IngestMetrics::new)
    }
}
