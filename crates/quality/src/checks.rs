//! Verdicts: thresholds, row-rule and dedup results, and the table checks over one partition
//! (row_count, missing_percent, duplicate_count, freshness, schema, completeness,
//! volume_anomaly). Measuring is done by [`crate::dqc`] while it streams the partition; this
//! module turns measurements into [`CheckResult`]s.
//!
//! # Thresholds
//!
//! `warn` and `error` give the level at which a check warns or fails. For `row_count` (a
//! minimum) the check fires when the value is below the level; for every other kind (a
//! maximum) when the value is above it. A leading `<`, `<=`, `>` or `>=` writes the passing
//! condition instead (`< 1%` passes below 1 %). Values may carry `%` or a duration unit
//! (`5m`, measured in seconds).
//!
//! # volume_anomaly
//!
//! Today's row count against the same pipeline's row counts on up to the 20 previous days
//! that have a recorded result in `quality_results` (days without trading have none). The
//! score is the robust z-score `0.6745 * (x - median) / MAD`; it warns at |score| > 3.5 and
//! fails at |score| > 5 unless thresholds say otherwise. With fewer than 5 days of history
//! the verdict is `insufficient_history`: not a pass. When MAD is 0 (a flat history) any
//! change scores infinite.

use std::fmt;

use finlake_core::spec::{Severity, TableCheck, TableCheckKind};

/// A verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Within thresholds.
    Pass,
    /// Not enough history to judge (counts as a warning).
    InsufficientHistory,
    /// Past the warn threshold, or a warn-severity rule failed.
    Warn,
    /// Past the error threshold, or an error-severity rule failed.
    Error,
}

impl Status {
    /// As written in reports and `quality_results`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::InsufficientHistory => "insufficient_history",
            Status::Warn => "warn",
            Status::Error => "error",
        }
    }

    /// The `finlake_quality_check_status` value.
    pub fn code(self) -> i64 {
        match self {
            Status::Pass => 0,
            Status::Warn => 1,
            Status::Error => 2,
            Status::InsufficientHistory => 3,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one check or rule on one partition.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckResult {
    /// The check's or rule's name.
    pub name: String,
    /// `rule:<kind>`, `dedup:<counter>` or the table check kind.
    pub kind: String,
    /// The verdict.
    pub status: Status,
    /// What was measured.
    pub value: f64,
    /// Its unit: `rows`, `%`, `s`, `score`, `columns`, `values`.
    pub unit: String,
    /// The warn threshold as written, if any.
    pub warn: Option<String>,
    /// The error threshold as written, if any.
    pub error: Option<String>,
    /// One sentence for a human.
    pub detail: String,
}

/// A parsed threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    /// The level.
    pub value: f64,
    /// The passing comparison.
    pub pass: Cmp,
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// value < level passes.
    Lt,
    /// value <= level passes.
    Le,
    /// value > level passes.
    Gt,
    /// value >= level passes.
    Ge,
}

/// Parses `1%`, `< 5%`, `50000`, `>= 1000`, `5m`; `minimum` picks the meaning of a bare level.
pub fn parse_threshold(text: &str, minimum: bool) -> Result<Threshold, String> {
    let t = text.trim();
    let (pass, rest) = if let Some(r) = t.strip_prefix("<=") {
        (Some(Cmp::Le), r)
    } else if let Some(r) = t.strip_prefix(">=") {
        (Some(Cmp::Ge), r)
    } else if let Some(r) = t.strip_prefix('<') {
        (Some(Cmp::Lt), r)
    } else if let Some(r) = t.strip_prefix('>') {
        (Some(Cmp::Gt), r)
    } else {
        (None, t)
    };
    let rest = rest.trim();
    let value = if let Some(p) = rest.strip_suffix('%') {
        p.trim()
            .parse::<f64>()
            .map_err(|_| format!("`{text}` is not a percentage"))?
    } else if let Ok(v) = rest.parse::<f64>() {
        v
    } else {
        finlake_core::spec::Duration::parse(rest)
            .map(|d| d.0.as_secs_f64())
            .map_err(|_| format!("`{text}` is not a number, a percentage or a duration"))?
    };
    Ok(Threshold {
        value,
        pass: pass.unwrap_or(if minimum { Cmp::Ge } else { Cmp::Le }),
    })
}

impl Threshold {
    /// Whether `v` passes.
    pub fn passes(&self, v: f64) -> bool {
        match self.pass {
            Cmp::Lt => v < self.value,
            Cmp::Le => v <= self.value,
            Cmp::Gt => v > self.value,
            Cmp::Ge => v >= self.value,
        }
    }
}

/// Whether a bare threshold of this kind is a minimum.
pub fn is_minimum(kind: TableCheckKind) -> bool {
    kind == TableCheckKind::RowCount
}

/// The table check kind as written in a spec.
pub fn kind_name(kind: TableCheckKind) -> &'static str {
    match kind {
        TableCheckKind::RowCount => "row_count",
        TableCheckKind::MissingPercent => "missing_percent",
        TableCheckKind::DuplicateCount => "duplicate_count",
        TableCheckKind::Freshness => "freshness",
        TableCheckKind::Schema => "schema",
        TableCheckKind::Completeness => "completeness",
        TableCheckKind::VolumeAnomaly => "volume_anomaly",
    }
}

/// Judges `value` against a check's thresholds (or the defaults given).
pub fn judge(
    check: &TableCheck,
    value: f64,
    default_warn: Option<&str>,
    default_error: Option<&str>,
) -> Result<Status, String> {
    let min = is_minimum(check.kind);
    let error = check.error.as_deref().or(default_error);
    let warn = check.warn.as_deref().or(default_warn);
    if let Some(e) = error {
        if !parse_threshold(e, min)?.passes(value) {
            return Ok(Status::Error);
        }
    }
    if let Some(w) = warn {
        if !parse_threshold(w, min)?.passes(value) {
            return Ok(Status::Warn);
        }
    }
    Ok(Status::Pass)
}

/// The status of a rule that failed on `failed` rows.
pub fn rule_status(failed: u64, severity: Severity) -> Status {
    match (failed, severity) {
        (0, _) => Status::Pass,
        (_, Severity::Warn) => Status::Warn,
        (_, Severity::Error) => Status::Error,
    }
}

/// Fewest days of history volume_anomaly judges on.
pub const MIN_HISTORY_DAYS: usize = 5;
/// Most days of history volume_anomaly reads.
pub const HISTORY_DAYS: usize = 20;

/// The robust z-score of `x` against `history`, or `None` with too little history.
pub fn robust_score(x: f64, history: &[f64]) -> Option<f64> {
    if history.len() < MIN_HISTORY_DAYS {
        return None;
    }
    let med = median(history);
    let deviations: Vec<f64> = history.iter().map(|v| (v - med).abs()).collect();
    let mad = median(&deviations);
    Some(if mad == 0.0 {
        if x == med {
            0.0
        } else {
            f64::INFINITY.copysign(x - med)
        }
    } else {
        0.6745 * (x - med) / mad
    })
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_thresholds_are_minimum_or_maximum_by_kind() {
        let min = parse_threshold("1000", true).unwrap();
        assert!(min.passes(1000.0) && !min.passes(999.0));
        let max = parse_threshold("1%", false).unwrap();
        assert!(max.passes(1.0) && !max.passes(1.01));
        let explicit = parse_threshold("< 5%", false).unwrap();
        assert!(explicit.passes(4.99) && !explicit.passes(5.0));
        assert_eq!(parse_threshold("5m", false).unwrap().value, 300.0);
        assert!(parse_threshold("lots", false).is_err());
    }

    #[test]
    fn robust_score_needs_history_and_resists_outliers() {
        assert_eq!(robust_score(10.0, &[10.0, 11.0]), None);
        let hist = [100.0, 102.0, 98.0, 101.0, 99.0, 5000.0];
        // the 5000 outlier in history does not hide a halving today
        assert!(robust_score(50.0, &hist).unwrap() < -5.0);
        assert!(robust_score(100.0, &hist).unwrap().abs() < 1.0);
        assert_eq!(robust_score(7.0, &[5.0; 6]), Some(f64::INFINITY));
    }
}
