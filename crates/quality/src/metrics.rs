//! Metric names of the quality crate, registered once in the process-wide registry
//! (`finlake_core::telemetry::Metrics::global().registry`), so `/metrics` and
//! `data-quality-check --metrics-file` expose them with the core's.

use std::sync::OnceLock;

use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGaugeVec, Opts};

/// Rows failing each rule.
pub const RULE_FAILURES_TOTAL: &str = "finlake_rule_failures_total";
/// Keys held in dedup state.
pub const DEDUP_STATE_ENTRIES: &str = "finlake_dedup_state_entries";
/// Rule recompiles after a schema change.
pub const RULE_RECOMPILES_TOTAL: &str = "finlake_rule_recompiles_total";
/// A table check's measured value.
pub const CHECK_VALUE: &str = "finlake_quality_check_value";
/// A table check's verdict: 0 pass, 1 warn, 2 error, 3 insufficient history.
pub const CHECK_STATUS: &str = "finlake_quality_check_status";

/// The quality metrics.
pub struct QualityMetrics {
    /// See [`RULE_FAILURES_TOTAL`].
    pub rule_failures: IntCounterVec,
    /// See [`DEDUP_STATE_ENTRIES`].
    pub dedup_state_entries: IntGaugeVec,
    /// See [`RULE_RECOMPILES_TOTAL`].
    pub recompiles: IntCounter,
    /// See [`CHECK_VALUE`].
    pub check_value: GaugeVec,
    /// See [`CHECK_STATUS`].
    pub check_status: IntGaugeVec,
}

impl QualityMetrics {
    /// The process-wide quality metrics.
    pub fn global() -> &'static QualityMetrics {
        static M: OnceLock<QualityMetrics> = OnceLock::new();
        M.get_or_init(|| {
            let registry = &finlake_core::telemetry::Metrics::global().registry;
            let reg = |c: Box<dyn prometheus::core::Collector>| {
                registry.register(c).expect("registered once")
            };
            let rule_failures = IntCounterVec::new(
                Opts::new(RULE_FAILURES_TOTAL, "Rows that failed a rule."),
                &["pipeline", "rule"],
            )
            .expect("valid metric");
            reg(Box::new(rule_failures.clone()));
            let dedup_state_entries = IntGaugeVec::new(
                Opts::new(DEDUP_STATE_ENTRIES, "Keys held in dedup state."),
                &["pipeline"],
            )
            .expect("valid metric");
            reg(Box::new(dedup_state_entries.clone()));
            let recompiles = IntCounter::new(
                RULE_RECOMPILES_TOTAL,
                "Rule recompiles after a batch schema changed.",
            )
            .expect("valid metric");
            reg(Box::new(recompiles.clone()));
            let check_value = GaugeVec::new(
                Opts::new(CHECK_VALUE, "The value a quality check measured."),
                &["pipeline", "check"],
            )
            .expect("valid metric");
            reg(Box::new(check_value.clone()));
            let check_status = IntGaugeVec::new(
                Opts::new(
                    CHECK_STATUS,
                    "A quality check's verdict: 0 pass, 1 warn, 2 error, 3 insufficient history.",
                ),
                &["pipeline", "check"],
            )
            .expect("valid metric");
            reg(Box::new(check_status.clone()));
            QualityMetrics {
                rule_failures,
                dedup_state_entries,
                recompiles,
                check_value,
                check_status,
            }
        })
    }
}
