//! A quality run's report, and its renderings: text (coloured on a terminal), JSON, JUnit XML
//! (so CI systems show each check as a test) and one self-contained HTML file (no network:
//! inline CSS and SVG charts of each metric over the last 30 days with today's point and the
//! thresholds).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::checks::{parse_threshold, CheckResult, Status};
use crate::results::{Point, RunInfo};

/// What a run found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// What was checked against what.
    pub run: RunInfo,
    /// One result per rule, dedup counter and table check.
    pub results: Vec<CheckResult>,
    /// Past values per check (latest run per date), for charts.
    #[serde(skip)]
    pub history: BTreeMap<String, Vec<Point>>,
    /// Warnings about the spec or the partition.
    pub warnings: Vec<String>,
    /// `scan` when the partition was read, `cache` when its metrics came from `quality_state`
    /// (same spec, same files in the partition).
    pub metrics_from: String,
}

impl Report {
    /// The worst verdict.
    pub fn status(&self) -> Status {
        self.results
            .iter()
            .map(|r| r.status)
            .max()
            .unwrap_or(Status::Pass)
    }

    /// 0 when everything passed or only warned, 65 when an error-severity check failed, or
    /// when `fail_on_warn` and anything warned (insufficient history included).
    pub fn exit_code(&self, fail_on_warn: bool) -> i32 {
        match self.status() {
            Status::Error => 65,
            Status::Warn | Status::InsufficientHistory if fail_on_warn => 65,
            _ => 0,
        }
    }

    fn counts(&self) -> (usize, usize, usize) {
        let c = |s: &[Status]| {
            self.results
                .iter()
                .filter(|r| s.contains(&r.status))
                .count()
        };
        (
            c(&[Status::Pass]),
            c(&[Status::Warn, Status::InsufficientHistory]),
            c(&[Status::Error]),
        )
    }
}

fn value_text(r: &CheckResult) -> String {
    if r.value.is_nan() {
        "-".into()
    } else if r.value.is_infinite() {
        if r.value > 0.0 { "+inf" } else { "-inf" }.into()
    } else if r.value.fract() == 0.0 && r.value.abs() < 1e15 {
        format!("{}{}", r.value as i64, unit_suffix(&r.unit))
    } else {
        format!("{:.3}{}", r.value, unit_suffix(&r.unit))
    }
}

fn unit_suffix(unit: &str) -> &str {
    match unit {
        "%" => "%",
        "s" => "s",
        _ => "",
    }
}

/// Plain or coloured text: a header, one line per check, a summary.
pub fn text(r: &Report, color: bool) -> String {
    let paint = |s: Status, text: &str| -> String {
        if !color {
            return text.to_string();
        }
        let code = match s {
            Status::Pass => "32",
            Status::Warn | Status::InsufficientHistory => "33",
            Status::Error => "31;1",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "data-quality-check {} on {} ({} rows, table version {}, run {})",
        r.run.pipeline, r.run.date, r.run.rows, r.run.table_version, r.run.run_id
    );
    let _ = writeln!(
        out,
        "table {} (metrics from {})",
        r.run.dataset, r.metrics_from
    );
    let w = r
        .results
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let _ = writeln!(
        out,
        "{:<20} {:<w$} {:>14}  detail",
        "STATUS", "CHECK", "VALUE"
    );
    for c in &r.results {
        let status = format!("{:<20}", c.status.as_str().to_uppercase());
        let _ = writeln!(
            out,
            "{} {:<w$} {:>14}  {}",
            paint(c.status, &status),
            c.name,
            value_text(c),
            c.detail
        );
    }
    for warning in &r.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    let (p, wn, e) = r.counts();
    let _ = writeln!(
        out,
        "{}: {p} passed, {wn} warned, {e} failed",
        paint(r.status(), &r.status().as_str().to_uppercase())
    );
    out
}

/// The report as JSON.
pub fn json(r: &Report) -> String {
    let mut v = serde_json::to_value(r).expect("a report always serialises");
    v["status"] = r.status().as_str().into();
    serde_json::to_string_pretty(&v).expect("a value always serialises")
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// JUnit XML: one test suite per run, one test case per check; errors are failures, warnings
/// pass with their detail in `system-out`.
pub fn junit(r: &Report) -> String {
    use quick_junit::{NonSuccessKind, Report as Junit, TestCase, TestCaseStatus, TestSuite};
    let mut suite = TestSuite::new(format!("{} {}", r.run.pipeline, r.run.date));
    for c in &r.results {
        let status = match c.status {
            Status::Error => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(format!("{} = {}", c.name, value_text(c)))
                    .set_type(c.kind.as_str())
                    .set_description(c.detail.as_str());
                s
            }
            _ => TestCaseStatus::success(),
        };
        let mut case = TestCase::new(c.name.as_str(), status);
        case.set_classname(format!("{}.{}", r.run.pipeline, c.kind));
        if matches!(c.status, Status::Warn | Status::InsufficientHistory) {
            case.set_system_out(format!("{}: {}", c.status, c.detail));
        }
        suite.add_test_case(case);
    }
    let mut report = Junit::new("data-quality-check");
    report.add_test_suite(suite);
    // Serialising an in-memory model to a String cannot fail on I/O; an error here would be a
    // bug in the model, reported in the output rather than by a panic.
    report
        .to_string()
        .unwrap_or_else(|e| format!("<!-- junit serialisation failed: {e} -->\n"))
}

/// One self-contained HTML page: summary, a row per check, a 30-day chart per check.
pub fn html(r: &Report) -> String {
    let (p, w, e) = r.counts();
    let mut rows = String::new();
    for c in &r.results {
        let _ = writeln!(
            rows,
            "<tr class=\"{s}\"><td class=\"status\">{S}</td><td>{n}</td><td>{k}</td><td class=\"num\">{v}</td><td>{d}</td><td>{chart}</td></tr>",
            s = c.status.as_str(),
            S = c.status.as_str().to_uppercase(),
            n = xml_escape(&c.name),
            k = xml_escape(&c.kind),
            v = xml_escape(&value_text(c)),
            d = xml_escape(&c.detail),
            chart = chart(r, c),
        );
    }
    let warnings: String = r
        .warnings
        .iter()
        .map(|w| format!("<li>{}</li>", xml_escape(w)))
        .collect();
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>data-quality-check {pipeline} {date}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}
table{{border-collapse:collapse;width:100%}}
th,td{{border-bottom:1px solid #ddd;padding:.4em .6em;text-align:left;vertical-align:middle}}
td.num{{text-align:right;font-variant-numeric:tabular-nums}}
tr.pass td.status{{color:#1a7f37}} tr.warn td.status,tr.insufficient_history td.status{{color:#9a6700}}
tr.error td.status{{color:#cf222e;font-weight:bold}}
.summary span{{margin-right:1.5em}} svg{{display:block}}
</style></head><body>
<h1>data-quality-check: {pipeline} on {date}</h1>
<p class="summary" id="summary"><span>verdict: <b>{verdict}</b></span><span>{p} passed</span><span>{w} warned</span><span>{e} failed</span><span>{rows_n} rows</span></p>
<p>table <code>{dataset}</code>, version {version}; run <code>{run_id}</code>; spec sha256 <code>{sha}</code>; finlake {fv}</p>
<ul>{warnings}</ul>
<table id="checks"><thead><tr><th>status</th><th>check</th><th>kind</th><th>value</th><th>detail</th><th>last 30 days</th></tr></thead>
<tbody>
{rows}</tbody></table>
</body></html>
"#,
        pipeline = xml_escape(&r.run.pipeline),
        date = r.run.date,
        verdict = r.status().as_str().to_uppercase(),
        rows_n = r.run.rows,
        dataset = xml_escape(&r.run.dataset),
        version = r.run.table_version,
        run_id = r.run.run_id,
        sha = r.run.spec_sha256,
        fv = r.run.finlake_version,
    )
}

/// An inline SVG line chart of a check's value over the 30 days before the run, today's
/// point in the verdict's colour, and dashed lines at the thresholds.
fn chart(r: &Report, c: &CheckResult) -> String {
    let (wd, ht, pad) = (240.0, 60.0, 6.0);
    let start = r.run.date - chrono::Days::new(30);
    let mut pts: Vec<(f64, f64)> = r
        .history
        .get(&c.name)
        .map(|v| {
            v.iter()
                .filter(|p| p.date >= start && p.date < r.run.date)
                .filter_map(|p| p.value.map(|v| ((p.date - start).num_days() as f64, v)))
                .collect()
        })
        .unwrap_or_default();
    let today = c.value.is_finite().then_some((30.0, c.value));
    pts.extend(today);
    let min_max = |t: &Option<String>| {
        t.as_deref()
            .and_then(|t| parse_threshold(t, c.kind == "row_count").ok())
            .map(|t| t.value)
    };
    let thresholds: Vec<(f64, &str)> = [
        (min_max(&c.warn), "#9a6700"),
        (min_max(&c.error), "#cf222e"),
    ]
    .into_iter()
    .filter_map(|(v, col)| v.map(|v| (v, col)))
    .collect();
    let ys: Vec<f64> = pts
        .iter()
        .map(|p| p.1)
        .chain(thresholds.iter().map(|t| t.0))
        .collect();
    let (lo, hi) = ys
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &y| {
            (a.min(y), b.max(y))
        });
    let (lo, hi) = if ys.is_empty() {
        (0.0, 1.0)
    } else if hi - lo < 1e-9 {
        (lo - 1.0, hi + 1.0)
    } else {
        (lo, hi)
    };
    let x = |d: f64| pad + d / 30.0 * (wd - 2.0 * pad);
    let y = |v: f64| ht - pad - (v - lo) / (hi - lo) * (ht - 2.0 * pad);
    let mut svg = format!(
        "<svg class=\"chart\" data-check=\"{}\" data-points=\"{}\" width=\"{wd}\" height=\"{ht}\" viewBox=\"0 0 {wd} {ht}\" xmlns=\"http://www.w3.org/2000/svg\" role=\"img\"><title>{} over 30 days</title><rect width=\"{wd}\" height=\"{ht}\" fill=\"#f6f8fa\"/>",
        xml_escape(&c.name),
        pts.len(),
        xml_escape(&c.name)
    );
    for (v, col) in &thresholds {
        let _ = write!(
            svg,
            "<line class=\"threshold\" x1=\"{pad}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{col}\" stroke-dasharray=\"4 3\"/>",
            wd - pad,
            y = y(*v)
        );
    }
    if pts.len() > 1 {
        let path: Vec<String> = pts
            .iter()
            .map(|(d, v)| format!("{:.1},{:.1}", x(*d), y(*v)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"#0969da\" stroke-width=\"1.5\" points=\"{}\"/>",
            path.join(" ")
        );
    }
    if let Some((d, v)) = today {
        let col = match c.status {
            Status::Pass => "#1a7f37",
            Status::Error => "#cf222e",
            _ => "#9a6700",
        };
        let _ = write!(
            svg,
            "<circle class=\"today\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{col}\"/>",
            x(d),
            y(v)
        );
    }
    svg.push_str("</svg>");
    svg
}
