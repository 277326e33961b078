//! Verdicts: a partition's measurements and the engine's counts turned into check results.

use std::collections::BTreeMap;

use arrow::datatypes::{DataType, Schema};
use chrono::NaiveDate;
use finlake_core::spec::{self, TableCheckKind};
use finlake_core::transform::{ExchangeCalendar, Session};

use super::scan::Measure;
use crate::checks::{self, CheckResult, Status};
use crate::error::{QualityError, Result};
use crate::results;
use crate::rules::{kind_name, RuleSet};
use finlake_core::spec::LoadedSpec;

/// What a table check is judged against besides the measurements.
#[derive(Clone, Copy)]
pub(super) struct Verdicts<'a> {
    /// The table's expected schema.
    pub(super) canonical: &'a Schema,
    /// The table's actual schema.
    pub(super) table_schema: &'a Schema,
    /// Exchange sessions (freshness).
    pub(super) calendar: &'a ExchangeCalendar,
    /// The logical date checked.
    pub(super) date: NaiveDate,
    /// The run's "now", UTC microseconds.
    pub(super) now: i64,
    /// Earlier days' values per check (volume_anomaly).
    pub(super) history: &'a BTreeMap<String, Vec<results::Point>>,
}

/// Judges one table check.
pub(super) fn table_check(
    c: &spec::TableCheck,
    m: &Measure,
    v: &Verdicts<'_>,
) -> Result<CheckResult> {
    let &Verdicts {
        canonical,
        table_schema,
        calendar,
        date,
        now,
        history,
    } = v;
    let kind = checks::kind_name(c.kind).to_string();
    let judge = |value: f64, dw: Option<&str>, de: Option<&str>| {
        checks::judge(c, value, dw, de)
            .map_err(|e| QualityError::Usage(format!("check `{}`: {e}", c.name)))
    };
    let (value, unit, status, detail): (f64, &str, Status, String) = match c.kind {
        TableCheckKind::RowCount => {
            let v = m.rows as f64;
            (
                v,
                "rows",
                judge(v, None, Some("1"))?,
                format!("{} rows on {date}", m.rows),
            )
        }
        TableCheckKind::MissingPercent => {
            let col = c.column.as_deref().unwrap_or_default();
            let nulls = m.nulls.get(col).copied().unwrap_or(0);
            let pct = if m.rows == 0 {
                0.0
            } else {
                100.0 * nulls as f64 / m.rows as f64
            };
            (
                pct,
                "%",
                judge(pct, None, None)?,
                format!("{nulls} of {} rows have no `{col}`", m.rows),
            )
        }
        TableCheckKind::DuplicateCount => match &m.distinct_keys {
            Some((keys, distinct)) if !keys.is_empty() => {
                let d = m.rows - distinct;
                (
                    d as f64,
                    "rows",
                    judge(d as f64, None, Some("0"))?,
                    format!(
                        "{d} rows repeat a key ({}) already in the partition",
                        keys.join(", ")
                    ),
                )
            }
            _ => (
                0.0,
                "rows",
                Status::Error,
                "duplicate_count needs a deduplicate business rule for its keys".into(),
            ),
        },
        TableCheckKind::Freshness => {
            let reference = freshness_reference(calendar, date, now, &m.exchanges);
            match m.newest {
                Some(t) => {
                    let lag = ((reference - t).max(0)) as f64 / 1e6;
                    (
                        lag,
                        "s",
                        judge(lag, None, None)?,
                        format!("newest event {}s before {}", lag, fmt_ts(reference)),
                    )
                }
                None => (
                    f64::INFINITY,
                    "s",
                    Status::Error,
                    "no rows: nothing is fresh".into(),
                ),
            }
        }
        TableCheckKind::Schema => {
            let mut problems = Vec::new();
            for f in canonical.fields() {
                match table_schema.field_with_name(f.name()) {
                    Err(_) => problems.push(format!("missing column `{}`", f.name())),
                    Ok(t) if !same_type(t.data_type(), f.data_type()) => problems.push(format!(
                        "column `{}` is {}, expected {}",
                        f.name(),
                        t.data_type(),
                        f.data_type()
                    )),
                    Ok(_) => {}
                }
            }
            let v = problems.len() as f64;
            let detail = if problems.is_empty() {
                "every expected column has its type".to_string()
            } else {
                problems.join("; ")
            };
            (v, "columns", judge(v, None, Some("0"))?, detail)
        }
        TableCheckKind::Completeness => {
            let col = c.column.as_deref().unwrap_or_default();
            let missing: Vec<&str> = m
                .seen
                .get(col)
                .map(|e| {
                    e.iter()
                        .filter(|(_, s)| !**s)
                        .map(|(v, _)| v.as_str())
                        .collect()
                })
                .unwrap_or_default();
            let v = missing.len() as f64;
            let detail = if missing.is_empty() {
                format!("all {} expected `{col}` values present", c.expected.len())
            } else {
                format!("missing `{col}` values: {}", missing.join(", "))
            };
            (v, "values", judge(v, None, Some("0"))?, detail)
        }
        TableCheckKind::VolumeAnomaly => {
            let past: Vec<f64> = history
                .get(&c.name)
                .map(|pts| {
                    pts.iter()
                        .rev()
                        .take(checks::HISTORY_DAYS)
                        .map(|p| p.rows as f64)
                        .collect()
                })
                .unwrap_or_default();
            let x = m.rows as f64;
            match checks::robust_score(x, &past) {
                None => (
                    f64::NAN,
                    "score",
                    Status::InsufficientHistory,
                    format!(
                        "{} days of history, {} needed",
                        past.len(),
                        checks::MIN_HISTORY_DAYS
                    ),
                ),
                Some(score) => {
                    let mut sorted = past.clone();
                    sorted.sort_by(f64::total_cmp);
                    let med = sorted[sorted.len() / 2];
                    (score, "score", judge(score.abs(), Some("3.5"), Some("5"))?, format!("{} rows against a median of {med} over {} days: robust z-score {score:.2}", m.rows, past.len()))
                }
            }
        }
    };
    Ok(CheckResult {
        name: c.name.clone(),
        kind,
        status,
        value,
        unit: unit.into(),
        warn: c.warn.clone(),
        error: c.error.clone(),
        detail,
    })
}

fn same_type(a: &DataType, b: &DataType) -> bool {
    let norm = |t: &DataType| match t {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::Dictionary(_, v) => v.as_ref().clone(),
        other => other.clone(),
    };
    norm(a) == norm(b)
}

/// The instant freshness is measured against: now, or for a past date the last close of that
/// date's sessions (data that stops at noon is stale even when checked a week later). Only
/// the exchanges in the partition count (a Tokyo-only pipeline is not judged against New
/// York's close); with none known (no `exchange` column), every exchange in the calendar.
fn freshness_reference(
    calendar: &ExchangeCalendar,
    date: NaiveDate,
    now: i64,
    exchanges: &std::collections::BTreeSet<String>,
) -> i64 {
    let last_close = calendar
        .mics()
        .iter()
        .filter(|m| exchanges.is_empty() || exchanges.contains(**m))
        .filter_map(|m| match calendar.session(m, date) {
            Some(Session::Open(_, c)) => Some(c),
            _ => None,
        })
        .max();
    match last_close {
        Some(c) => c.min(now),
        None => now,
    }
}

fn fmt_ts(t: i64) -> String {
    chrono::DateTime::from_timestamp_micros(t)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// One result per row rule (failing rows against its severity) and per dedup counter.
pub(super) fn rule_results(
    rules: &RuleSet,
    stats: &crate::engine::EngineStats,
    spec: &LoadedSpec,
) -> Vec<CheckResult> {
    let mut out: Vec<CheckResult> = Vec::new();
    for rule in &rules.rules {
        let s = stats.rules.get(&rule.name).copied().unwrap_or_default();
        out.push(CheckResult {
            name: rule.name.clone(),
            kind: format!("rule:{}", kind_name(rule.kind)),
            status: checks::rule_status(s.failed, rule.severity),
            value: s.failed as f64,
            unit: "rows".into(),
            warn: None,
            error: None,
            detail: format!(
                "{} of {} rows fail `{}` (action {}, severity {}); {} NULL ({}){}",
                s.failed,
                s.rows,
                rule.condition,
                rule.action.name(),
                match rule.severity {
                    spec::Severity::Warn => "warn",
                    spec::Severity::Error => "error",
                },
                s.null_rows,
                match rule.null_policy {
                    crate::rules::NullPolicy::Fails => "counted as failures",
                    crate::rules::NullPolicy::NotChecked => "not checked",
                    crate::rules::NullPolicy::UnknownFails => "unknown, counted as failures",
                },
                if s.error_rows > 0 {
                    format!(
                        "; {} could not be evaluated (counted as failures)",
                        s.error_rows
                    )
                } else {
                    String::new()
                }
            ),
        });
    }
    if let Some(d) = &rules.dedup {
        let sev = spec
            .pipeline
            .spec
            .business_rules
            .iter()
            .find(|b| b.name == d.name)
            .and_then(|b| b.severity)
            .unwrap_or(spec::Severity::Warn);
        let ds = stats.dedup;
        for (counter, value, what) in [
            ("duplicate_rows", ds.duplicate_rows, "exact duplicates (same key and payload within the window), dropped"),
            ("duplicate_keys", ds.duplicate_keys, "distinct keys seen more than once within the window"),
            ("conflicting_duplicates", ds.conflicting_duplicates, "same key within the window with a different payload, quarantined with both versions kept"),
            ("late", ds.late, "rows older than the watermark, not checkable against dedup state"),
        ] {
            out.push(CheckResult {
                name: format!("{}.{counter}", d.name),
                kind: format!("dedup:{counter}"),
                status: if counter == "duplicate_keys" { Status::Pass } else { checks::rule_status(value, sev) },
                value: value as f64,
                unit: "rows".into(),
                warn: None,
                error: None,
                detail: format!("{value} {what} (keys {})", d.keys.join(", ")),
            });
        }
    }
    out
}
