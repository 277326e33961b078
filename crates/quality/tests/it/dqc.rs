//! `data-quality-check` through its binary: exact counts on a day with injected faults,
//! a clean day, bad arguments and specs, an unreachable lake, and the JUnit and HTML reports.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use finlake_quality::fixtures::Injected;
use serde_json::Value;

use crate::common;

const BIN: &str = env!("CARGO_BIN_EXE_data-quality-check");

fn dqc(lake: &Path, date: &str, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["--pipeline", "market-data-stream", "--date", date, "--lake"])
        .arg(lake)
        .arg("--spec-dir")
        .arg(common::root().join("samples"))
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run data-quality-check")
}

/// The sample spec with `edits` applied, written as `dir/file`; its path and text.
fn sample_with(dir: &Path, file: &str, edits: &[(&str, &str)]) -> (std::path::PathBuf, String) {
    let mut text =
        std::fs::read_to_string(common::root().join("samples/market-data-stream.yaml")).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "the sample has no `{from}`");
        text = text.replace(from, to);
    }
    let path = dir.join(file);
    std::fs::write(&path, &text).unwrap();
    (path, text)
}

fn results(out: &Output) -> Vec<Value> {
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    v["results"].as_array().unwrap().clone()
}

fn value(results: &[Value], name: &str) -> f64 {
    results
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no result `{name}`"))["value"]
        .as_f64()
        .unwrap()
}

fn status<'a>(results: &'a [Value], name: &str) -> &'a str {
    results.iter().find(|r| r["name"] == name).unwrap()["status"]
        .as_str()
        .unwrap()
}

const FAULTS: Injected = Injected {
    null_isin: 23,
    negative_price: 17,
    bad_isin: 11,
    after_hours: 13,
    duplicates: 19,
    conflicts: 7,
    late: 5,
};

#[test]
fn a_day_with_injected_faults_reports_exactly_the_injected_counts_and_exits_65() {
    let day = common::day(6000, 101, FAULTS);
    let rows = day.batch.num_rows() as f64;
    let lake = tempfile::tempdir().unwrap();
    common::write_trades(lake.path(), day.batch.clone());
    let dead = lake.path().join("dead.jsonl");
    let out = dqc(
        lake.path(),
        "2026-11-20",
        &["--format", "json", "--dead-letter", dead.to_str().unwrap()],
    );
    assert_eq!(
        out.status.code(),
        Some(65),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = results(&out);
    let inj = day.injected;
    assert_eq!(value(&r, "price-positive"), inj.negative_price as f64);
    assert_eq!(status(&r, "price-positive"), "error");
    assert_eq!(value(&r, "isin-valid"), inj.bad_isin as f64);
    assert_eq!(value(&r, "currency-iso"), 0.0);
    assert_eq!(value(&r, "clock-skew"), 0.0);
    assert_eq!(value(&r, "trading-hours-check"), inj.after_hours as f64);
    assert_eq!(
        value(&r, "duplicate-detection.duplicate_rows"),
        inj.duplicates as f64
    );
    assert_eq!(
        value(&r, "duplicate-detection.conflicting_duplicates"),
        inj.conflicts as f64
    );
    assert_eq!(value(&r, "duplicate-detection.late"), inj.late as f64);
    assert_eq!(
        value(&r, "duplicate-detection.duplicate_keys"),
        (inj.duplicates + inj.conflicts) as f64
    );
    let missing = value(&r, "isin-missing");
    assert!(
        (missing - 100.0 * inj.null_isin as f64 / rows).abs() < 1e-9,
        "{missing}"
    );
    assert_eq!(value(&r, "enough-trades"), rows);
    assert_eq!(status(&r, "volume"), "insufficient_history");

    // dead letters: every failing row once per rule, with rule and reason
    let lines: Vec<Value> = std::fs::read_to_string(&dead)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let per_rule = |rule: &str| lines.iter().filter(|l| l["_dq_rule"] == rule).count();
    assert_eq!(per_rule("price-positive"), inj.negative_price);
    assert_eq!(per_rule("trading-hours-check"), inj.after_hours);
    assert_eq!(
        per_rule("duplicate-detection"),
        inj.duplicates + inj.conflicts + inj.late
    );
    assert!(lines
        .iter()
        .all(|l| l["_dq_reason"].as_str().is_some_and(|s| !s.is_empty())));
    // the same dead letters into a Delta table, read back by an independent reader
    let dl_table = lake.path().join("dead_letters");
    let again = dqc(
        lake.path(),
        "2026-11-20",
        &[
            "--format",
            "json",
            "--rescan",
            "--dead-letter",
            dl_table.to_str().unwrap(),
        ],
    );
    assert_eq!(again.status.code(), Some(65));
    let (rows, err) = common::python(
        "import os, sys; from deltalake import DeltaTable; t = DeltaTable(sys.argv[1]).to_pyarrow_table(); print(t.num_rows, flush=True); os._exit(0)",
        &[&dl_table],
    );
    assert_eq!(rows, lines.len().to_string(), "{err}");

    // the results table: one row per check, read back by an independent reader
    let qr = lake.path().join("market/quality_results");
    let (text, err) = common::python(
        "import os, sys; from deltalake import DeltaTable; t = DeltaTable(sys.argv[1]).to_pyarrow_table(); print(t.num_rows, len(set(t.column('run_id').to_pylist())), t.column('spec_sha256')[0].as_py(), flush=True); os._exit(0)",
        &[&qr],
    );
    let parts: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(parts.len(), 3, "python: {text} {err}");
    // two runs (the JSON-lines one and the Delta one), one row per check each
    assert_eq!(parts[0].parse::<usize>().unwrap(), 2 * r.len());
    assert_eq!(parts[1], "2");
    assert_eq!(parts[2].len(), 64, "spec sha256");
}

#[test]
fn a_clean_day_exits_0_and_junit_lists_every_check() {
    let day = common::day(3000, 202, Injected::default());
    let lake = tempfile::tempdir().unwrap();
    common::write_trades(lake.path(), day.batch);
    let out = dqc(lake.path(), "2026-11-20", &["--format", "junit"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let xml = String::from_utf8(out.stdout).unwrap();
    assert!(xml.contains("failures=\"0\""), "{xml}");
    for name in [
        "price-positive",
        "isin-valid",
        "trading-hours-check",
        "isin-missing",
        "volume",
    ] {
        assert!(xml.contains(&format!("name=\"{name}\"")), "{name} in {xml}");
    }
    // warnings stay warnings unless asked
    let strict = dqc(
        lake.path(),
        "2026-11-20",
        &["--format", "json", "--fail-on", "warn"],
    );
    assert_eq!(
        strict.status.code(),
        Some(65),
        "row_count warns below 50000 and volume has no history"
    );
}

#[test]
fn an_unknown_pipeline_exits_2_listing_the_known_ones() {
    let out = Command::new(BIN)
        .args([
            "--pipeline",
            "market-data-streem",
            "--date",
            "2026-11-20",
            "--spec-dir",
        ])
        .arg(common::root().join("samples"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("market-data-stream") && err.contains("fx-rates"),
        "{err}"
    );
    // bad arguments are 2 as well, never 1
    let out = Command::new(BIN)
        .args(["--pipeline", "x", "--date", "20-11-2026"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_bad_rule_is_refused_at_load_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, _) = sample_with(
        dir.path(),
        "bad.yaml",
        &[(
            "condition: \"price > 0 AND quantity > 0\"",
            "condition: \"price > 0 AND qty > 0 AND timestamp < now()\"",
        )],
    );
    let out = Command::new(BIN)
        .args([
            "--pipeline",
            "market-data-stream",
            "--date",
            "2026-11-20",
            "--spec",
        ])
        .arg(&spec)
        .arg("--lake")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:28:"), "{err}");
    assert!(err.contains("qty"), "{err}");
}

#[test]
fn an_unreachable_lake_exits_75_within_the_timeout() {
    // a loopback port nobody listens on
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let out = Command::new(BIN)
        .args([
            "--pipeline",
            "market-data-stream",
            "--date",
            "2026-11-20",
            "--lake",
            "s3://lake",
            "--timeout",
            "3s",
            "--spec-dir",
        ])
        .arg(common::root().join("samples"))
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "x")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let took = started.elapsed();
    assert_eq!(
        out.status.code(),
        Some(75),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("s3://lake"));
    // the bound is the point of the option: object_store's own retries would take minutes
    assert!(took < Duration::from_secs(3 + 15), "took {took:?}");
}

#[test]
fn the_html_report_renders_checks_and_history_charts_in_chromium() {
    let lake = tempfile::tempdir().unwrap();
    // six earlier trading days give volume_anomaly its history
    let days = [
        "2026-11-12",
        "2026-11-13",
        "2026-11-16",
        "2026-11-17",
        "2026-11-18",
        "2026-11-19",
        "2026-11-20",
    ];
    for (i, d) in days.iter().enumerate() {
        let date = chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap();
        let day = finlake_quality::fixtures::trade_day(
            date,
            1500 + 20 * i,
            300 + i as u64,
            Injected::default(),
            60_000_000,
        )
        .unwrap();
        common::write_trades(lake.path(), day.batch);
        if i + 1 < days.len() {
            let out = dqc(lake.path(), d, &["--format", "json"]);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{d}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let html = lake.path().join("report.html");
    let out = dqc(
        lake.path(),
        "2026-11-20",
        &["--format", "html", "--output", html.to_str().unwrap()],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        !page.contains("https://") && !page.contains(" src=") && !page.contains(" href="),
        "self-contained: nothing to fetch"
    );

    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok())
        .expect("chromium is needed for this test: scripts/test installs Debian's `chromium`");
    let profile = tempfile::tempdir().unwrap();
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ];
    let url = format!("file://{}", html.display());
    let dom = Command::new(chromium)
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", &url])
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    for name in [
        "price-positive",
        "trading-hours-check",
        "volume",
        "enough-trades",
    ] {
        assert!(dom.contains(name), "{name} rendered");
    }
    let charts = dom.matches("<svg class=\"chart\"").count();
    assert!(charts >= 10, "a chart per check, found {charts}");
    // the volume check had six days of history: its chart has 7 points, not 1
    assert!(
        dom.contains("data-check=\"enough-trades\" data-points=\"7\""),
        "seven days of row counts"
    );
    let shot = lake.path().join("report.png");
    let shot_run = Command::new(chromium)
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args([
            &format!("--screenshot={}", shot.display()),
            "--window-size=1400,1200",
            &url,
        ])
        .output()
        .unwrap();
    assert!(
        shot_run.status.success(),
        "{}",
        String::from_utf8_lossy(&shot_run.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );

    // with that history, a day at a fifth of the usual volume is an anomaly, not a pass
    let date = chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
    let thin =
        finlake_quality::fixtures::trade_day(date, 320, 999, Injected::default(), 60_000_000)
            .unwrap();
    common::write_trades(lake.path(), thin.batch);
    let out = dqc(lake.path(), "2026-11-23", &["--format", "json"]);
    let r = results(&out);
    assert_eq!(
        status(&r, "volume"),
        "error",
        "score {}",
        value(&r, "volume")
    );
    assert!(value(&r, "volume") < -5.0);
    assert_eq!(out.status.code(), Some(65));
}

fn metrics_from(out: &Output) -> String {
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["metrics_from"].as_str().unwrap().to_string()
}

#[test]
fn metrics_are_reused_until_a_commit_touches_the_partition() {
    let lake = tempfile::tempdir().unwrap();
    let first = common::day(
        1500,
        404,
        Injected {
            negative_price: 3,
            ..Injected::default()
        },
    );
    let n1 = first.batch.num_rows() as f64;
    common::write_trades(lake.path(), first.batch);
    let json = ["--format", "json"];
    let a = dqc(lake.path(), "2026-11-20", &json);
    assert_eq!(metrics_from(&a), "scan");
    let b = dqc(lake.path(), "2026-11-20", &json);
    assert_eq!(metrics_from(&b), "cache", "nothing changed: no rescan");
    assert_eq!(value(&results(&b), "price-positive"), 3.0);
    assert_eq!(value(&results(&b), "enough-trades"), n1);
    assert_eq!(b.status.code(), Some(65));
    // another date's partition changing does not touch this one
    let other = finlake_quality::fixtures::trade_day(
        chrono::NaiveDate::from_ymd_opt(2026, 11, 19).unwrap(),
        300,
        405,
        Injected::default(),
        60_000_000,
    )
    .unwrap();
    common::write_trades(lake.path(), other.batch);
    assert_eq!(
        metrics_from(&dqc(lake.path(), "2026-11-20", &json)),
        "cache"
    );
    // a commit into the partition (a late backfill) makes the next run recompute
    let more = common::day(
        500,
        406,
        Injected {
            negative_price: 2,
            ..Injected::default()
        },
    );
    let n2 = more.batch.num_rows() as f64;
    common::write_trades(lake.path(), more.batch);
    let c = dqc(lake.path(), "2026-11-20", &json);
    assert_eq!(metrics_from(&c), "scan");
    assert_eq!(value(&results(&c), "enough-trades"), n1 + n2);
    assert_eq!(value(&results(&c), "price-positive"), 5.0);
    // and --rescan always reads the table
    let d = dqc(lake.path(), "2026-11-20", &["--format", "json", "--rescan"]);
    assert_eq!(metrics_from(&d), "scan");
    assert_eq!(value(&results(&d), "price-positive"), 5.0);
}

#[test]
fn completeness_schema_freshness_and_duplicate_count_checks() {
    let lake = tempfile::tempdir().unwrap();
    let day = common::day(
        2000,
        505,
        Injected {
            duplicates: 4,
            ..Injected::default()
        },
    );
    common::write_trades(lake.path(), day.batch);
    let (spec, _) = sample_with(lake.path(), "checks.yaml", &[("      - {name: volume, type: volume_anomaly}", "      - {name: volume, type: volume_anomaly}\n      - {name: venues, type: completeness, column: exchange, expected: [XNAS, XNYS, XLON, XETR, XTKS, XPAR]}\n      - {name: columns, type: schema}\n      - {name: fresh, type: freshness, warn: \"30m\", error: \"2h\"}\n      - {name: dup-keys, type: duplicate_count}")]);
    let out = dqc(
        lake.path(),
        "2026-11-20",
        &["--format", "json", "--spec", spec.to_str().unwrap()],
    );
    let r = results(&out);
    assert_eq!(status(&r, "venues"), "error");
    assert_eq!(value(&r, "venues"), 1.0);
    let venues = r.iter().find(|x| x["name"] == "venues").unwrap();
    assert!(venues["detail"].as_str().unwrap().contains("XPAR"));
    assert_eq!(
        status(&r, "columns"),
        "pass",
        "{:?}",
        r.iter().find(|x| x["name"] == "columns")
    );
    // the newest trade is within minutes of the day's last close
    assert_eq!(
        status(&r, "fresh"),
        "pass",
        "{:?}",
        r.iter().find(|x| x["name"] == "fresh")
    );
    assert!(value(&r, "fresh") < 1800.0);
    // every injected exact duplicate repeats a key in the partition
    assert_eq!(value(&r, "dup-keys"), 4.0);
    assert_eq!(status(&r, "dup-keys"), "error");
    assert_eq!(out.status.code(), Some(65));
}

#[test]
fn a_misspelt_table_check_column_is_refused_at_load_not_measured_as_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, text) = sample_with(
        dir.path(),
        "typo.yaml",
        &[
            (
                "type: missing_percent, column: isin",
                "type: missing_percent, column: isn",
            ),
            ("warn: \"50000\"", "warn: \"lots\""),
        ],
    );
    let line = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let out = dqc(
        dir.path(),
        "2026-11-20",
        &["--spec", spec.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("typo.yaml:{}:", line("column: isn")))
            && err.contains("unknown column `isn`")
            && err.contains("did you mean `isin`?"),
        "{err}"
    );
    assert!(
        err.contains(&format!("typo.yaml:{}:", line("warn: \"lots\""))) && err.contains("`lots`"),
        "{err}"
    );
}

#[test]
fn local_file_problems_exit_2_and_a_damaged_file_65_so_a_scheduler_does_not_retry() {
    let lake = tempfile::tempdir().unwrap();
    common::write_trades(lake.path(), common::day(300, 7, Injected::default()).batch);
    // exits 2; its standard error
    let exit_2 = |args: &[&str]| -> String {
        let out = dqc(lake.path(), "2026-11-20", args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{err}");
        err
    };
    let missing = exit_2(&["--spec", "/nonexistent/typo.yaml"]);
    assert!(missing.contains("/nonexistent/typo.yaml"));
    exit_2(&["--refdata", "/nonexistent/refdata"]);
    let err = exit_2(&["--dead-letter", "/nonexistent/dir/dead.jsonl"]);
    // one clear line, not a log line and then the message again
    assert_eq!(
        err.lines()
            .filter(|l| l.contains("/nonexistent/dir"))
            .count(),
        1,
        "{err}"
    );
    // a data file the log lists, gone from the disk (read directly, not through object_store)
    let day = lake.path().join("market/trades/trade_date=2026-11-20");
    let file = std::fs::read_dir(&day)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "parquet"))
        .unwrap();
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    // cut short: the file is mapped, not read, and a mapping past a file's end would be a
    // SIGBUS; the read refuses it first, names the file and exits 65 (the lake is damaged:
    // no retry, and not finlake's fault)
    let whole = std::fs::read(&file).unwrap();
    std::fs::write(&file, &whole[..whole.len() / 2]).unwrap();
    let out = dqc(lake.path(), "2026-11-20", &["--rescan"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(err.contains(&name) && err.contains("past its end"), "{err}");
    std::fs::remove_file(&file).unwrap();
    let gone = exit_2(&["--rescan"]);
    assert!(gone.contains(&name), "{gone}");
}

#[test]
fn freshness_is_judged_against_the_exchanges_in_the_partition() {
    use arrow::array::AsArray;
    let lake = tempfile::tempdir().unwrap();
    let day = common::day(3000, 606, Injected::default());
    // a Tokyo-only pipeline: its day ends at the Tokyo close, 15 hours before New York's
    let ex = day
        .batch
        .column_by_name("exchange")
        .unwrap()
        .as_string::<i32>();
    let tokyo: arrow::array::BooleanArray = ex.iter().map(|v| Some(v == Some("XTKS"))).collect();
    let batch = arrow::compute::filter_record_batch(&day.batch, &tokyo).unwrap();
    assert!(batch.num_rows() > 50);
    common::write_trades(lake.path(), batch);
    let (spec, _) = sample_with(lake.path(), "tokyo.yaml", &[("      - {name: volume, type: volume_anomaly}", "      - {name: volume, type: volume_anomaly}\n      - {name: fresh, type: freshness, warn: \"30m\", error: \"2h\"}")]);
    let out = dqc(
        lake.path(),
        "2026-11-20",
        &["--format", "json", "--spec", spec.to_str().unwrap()],
    );
    let r = results(&out);
    assert_eq!(
        status(&r, "fresh"),
        "pass",
        "{:?}",
        r.iter().find(|x| x["name"] == "fresh")
    );
    assert!(value(&r, "fresh") < 1800.0);
}

#[test]
fn the_textfile_metrics_carry_no_date_label_and_count_rows_written() {
    let lake = tempfile::tempdir().unwrap();
    let day = common::day(1500, 8, Injected::default());
    let rows = day.batch.num_rows();
    common::write_trades(lake.path(), day.batch);
    let prom = lake.path().join("dq.prom");
    let out = dqc(
        lake.path(),
        "2026-11-20",
        &["--metrics-file", prom.to_str().unwrap()],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&prom).unwrap();
    let value_line = text
        .lines()
        .find(|l| {
            l.starts_with("finlake_quality_check_value{") && l.contains("check=\"enough-trades\"")
        })
        .unwrap_or_else(|| panic!("{text}"));
    assert!(value_line.ends_with(&format!(" {rows}")), "{value_line}");
    assert!(
        !text.contains("date=\""),
        "a date label grows a series per day: {text}"
    );
    // the results rows this run appended are counted
    let written = text
        .lines()
        .find(|l| l.starts_with("finlake_rows_written_total{") && l.contains("quality_results"))
        .unwrap_or_else(|| panic!("{text}"));
    let n: f64 = written.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n > 0.0, "{written}");
}

#[test]
fn changed_reference_data_invalidates_cached_metrics_and_results_are_partitioned() {
    let lake = tempfile::tempdir().unwrap();
    common::write_trades(lake.path(), common::day(1200, 9, Injected::default()).batch);
    let refdata = tempfile::tempdir().unwrap();
    for f in ["exchange_hours.csv", "exchange_holidays.csv"] {
        std::fs::copy(
            common::root().join("samples").join(f),
            refdata.path().join(f),
        )
        .unwrap();
    }
    let args = [
        "--format",
        "json",
        "--refdata",
        refdata.path().to_str().unwrap(),
    ];
    assert_eq!(metrics_from(&dqc(lake.path(), "2026-11-20", &args)), "scan");
    assert_eq!(
        metrics_from(&dqc(lake.path(), "2026-11-20", &args)),
        "cache"
    );
    // a session hour changes: the session columns the rules read change, so must the metrics
    let hours = refdata.path().join("exchange_hours.csv");
    let text = std::fs::read_to_string(&hours).unwrap();
    let changed = text.replacen("16:00", "15:30", 1);
    assert_ne!(changed, text);
    std::fs::write(&hours, changed).unwrap();
    assert_eq!(metrics_from(&dqc(lake.path(), "2026-11-20", &args)), "scan");
    // quality_results and quality_state are partitioned by pipeline, so a run reads its own
    for table in ["quality_results", "quality_state"] {
        let dir = lake.path().join("market").join(table);
        assert!(
            dir.join("pipeline=market-data-stream").is_dir(),
            "{} has no pipeline partition",
            dir.display()
        );
    }
}

/// The late count depends on arrival order (a row is late only after a newer one was seen),
/// so it is the witness that the scan applies rows in arrival order however the lake holds
/// them: files committed in reverse arrival order are read in arrival order straight from
/// the log; so are the rows of several source partitions written a micro-batch at a time;
/// a partition's offsets going back, or rows out of arrival order inside a file, make the
/// scan sort instead, and say so.
#[test]
fn rows_are_checked_in_arrival_order_whatever_the_commit_or_row_order() {
    let day = common::day(6000, 101, FAULTS);
    let n = day.batch.num_rows();
    let inj = day.injected;
    let check = |lake: &Path| -> (Vec<Value>, String) {
        let out = Command::new(BIN)
            .args(["--pipeline", "market-data-stream", "--date", "2026-11-20"])
            .arg("--lake")
            .arg(lake)
            .arg("--spec-dir")
            .arg(common::root().join("samples"))
            .args(["--format", "json", "--log-format", "json"])
            .env("RUST_LOG", "warn,finlake_quality=info")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(65), "{out:?}");
        (results(&out), String::from_utf8_lossy(&out.stderr).into())
    };
    // what does not depend on the order
    let same_rows = |r: &[Value]| assert_order_free_counts(r, &inj, n);
    let exact = |r: &[Value]| assert_counts_in_arrival_order(r, &inj, n);

    // three commits, the last rows to arrive committed first
    let third = n / 3;
    let lake = tempfile::tempdir().unwrap();
    common::write_commits(
        lake.path(),
        &day.batch,
        &[(2 * third, n - 2 * third), (third, third), (0, third)],
    );
    let (r, log) = check(lake.path());
    exact(&r);
    assert!(!log.contains("reading it sorted"), "{log}");

    // three source partitions landed as a consumer of all three lands them: messages arrive
    // interleaved, each micro-batch's rows are written grouped by partition (so `_ingested_at`
    // does not rise through the file), each partition's offsets rise
    let grouped = by_source_partition(&day.batch, 3, 1500);
    let lake = tempfile::tempdir().unwrap();
    common::write_commits(lake.path(), &grouped, &[(0, n / 2), (n / 2, n - n / 2)]);
    let (direct, log) = check(lake.path());
    same_rows(&direct);
    assert!(!log.contains("reading it sorted"), "{log}");

    // late verdicts follow the order the rows were applied in (the watermark is the minimum
    // over the partitions): the file's order, as the rule engine sees it on the same rows
    let late_in_order = |batch: &arrow::array::RecordBatch| {
        let spec =
            finlake_core::spec::load(&common::root().join("samples/market-data-stream.yaml"));
        let mut engine = finlake_quality::RuleEngine::new(
            std::sync::Arc::new(spec.unwrap()),
            batch.schema(),
            common::calendar(),
        )
        .unwrap();
        engine.process(batch).unwrap().stats.dedup.late as f64
    };
    assert_eq!(
        value(&direct, "duplicate-detection.late"),
        late_in_order(&grouped)
    );

    // one file in which the partitions' offsets go back halfway through: sorted, and said;
    // the sort is by ingest time, which puts the rows back in the order they arrived in
    let lake = tempfile::tempdir().unwrap();
    let replayed = arrow::compute::concat_batches(
        &grouped.schema(),
        &[grouped.slice(n / 2, n - n / 2), grouped.slice(0, n / 2)],
    )
    .unwrap();
    common::write_commits(lake.path(), &replayed, &[(0, n)]);
    let (sorted, log) = check(lake.path());
    same_rows(&sorted);
    assert_eq!(
        value(&sorted, "duplicate-detection.late"),
        late_in_order(&by_source_partition(&day.batch, 3, 1))
    );
    assert!(
        log.contains("not in arrival order; reading it sorted instead"),
        "{log}"
    );

    // one file whose rows are in reverse arrival order
    let reversed = reversed(&day.batch);
    let lake = tempfile::tempdir().unwrap();
    common::write_commits(lake.path(), &reversed, &[(0, n)]);
    let (r, log) = check(lake.path());
    exact(&r);
    assert!(
        log.contains("not in arrival order; reading it sorted instead"),
        "{log}"
    );
}

/// `batch`'s rows last first.
fn reversed(batch: &arrow::array::RecordBatch) -> arrow::array::RecordBatch {
    let n = batch.num_rows() as u32;
    arrow::compute::take_record_batch(
        batch,
        &arrow::array::UInt32Array::from_iter_values((0..n).rev()),
    )
    .unwrap()
}

/// The counts of a day of `n` rows with `inj` injected that do not depend on the order its
/// rows are judged in.
fn assert_order_free_counts(r: &[Value], inj: &Injected, n: usize) {
    assert_eq!(
        value(r, "duplicate-detection.duplicate_rows"),
        inj.duplicates as f64
    );
    assert_eq!(
        value(r, "duplicate-detection.conflicting_duplicates"),
        inj.conflicts as f64
    );
    assert_eq!(value(r, "trading-hours-check"), inj.after_hours as f64);
    assert_eq!(value(r, "enough-trades"), n as f64);
}

/// Every count, the late rows too, as the fixture injected them in its (one-partition)
/// arrival order.
fn assert_counts_in_arrival_order(r: &[Value], inj: &Injected, n: usize) {
    assert_order_free_counts(r, inj, n);
    assert_eq!(value(r, "duplicate-detection.late"), inj.late as f64);
}

/// A partition that must be read sorted (its rows out of arrival order) is sorted within
/// `--memory-limit`, spilling to disk beyond it, so a day of any size holds the same memory:
/// a limit a fraction of the day's size gives the exact counts; a limit too small for the sort
/// to work in is a clear error, not an abort.
#[test]
fn the_sorted_read_spills_beyond_its_memory_limit() {
    let day = common::day(250_000, 202, FAULTS);
    let n = day.batch.num_rows();
    let reversed = reversed(&day.batch);
    let lake = tempfile::tempdir().unwrap();
    common::write_commits(lake.path(), &reversed, &[(0, n)]);
    let spill = tempfile::tempdir().unwrap();
    let check = |limit: &str| {
        Command::new(BIN)
            .args(["--pipeline", "market-data-stream", "--date", "2026-11-20"])
            .arg("--lake")
            .arg(lake.path())
            .arg("--spec-dir")
            .arg(common::root().join("samples"))
            .args(["--format", "json", "--log-format", "json", "--rescan"])
            .args(["--memory-limit", limit])
            .env("TMPDIR", spill.path())
            .env("RUST_LOG", "warn,finlake_quality=info")
            .output()
            .unwrap()
    };
    // the limit is a fraction of the day's rows: the sort cannot hold them and must spill
    // (the 64 KiB run below shows the limit is enforced, not ignored)
    let size = reversed.get_array_memory_size();
    assert!(size > 4 * (12 << 20), "the day is only {size} bytes");
    let out = check("12MiB");
    assert_eq!(out.status.code(), Some(65), "{out:?}");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("reading it sorted"), "{log}");
    let r = results(&out);
    assert_counts_in_arrival_order(&r, &day.injected, n);

    let out = check("64KiB");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("raise --memory-limit"), "{err}");

    let out = check("lots");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// `batch` (one source partition, in arrival order) as a consumer of `partitions` partitions
/// lands it: row i of each `chunk` went to partition i % `partitions` (offsets numbered per
/// partition), and the chunk is written grouped by partition, as a micro-batch is.
fn by_source_partition(
    batch: &arrow::array::RecordBatch,
    partitions: i32,
    chunk: usize,
) -> arrow::array::RecordBatch {
    use arrow::array::{Int32Array, Int64Array, UInt32Array};
    let n = batch.num_rows();
    let mut next = vec![0i64; partitions as usize];
    let (mut order, mut parts, mut offsets) = (Vec::new(), Vec::new(), Vec::new());
    for start in (0..n).step_by(chunk) {
        let end = (start + chunk).min(n);
        for p in 0..partitions {
            for row in (start..end).filter(|r| (*r as i32) % partitions == p) {
                order.push(row as u32);
                parts.push(p);
                offsets.push(next[p as usize]);
                next[p as usize] += 1;
            }
        }
    }
    let out = arrow::compute::take_record_batch(batch, &UInt32Array::from(order)).unwrap();
    let schema = out.schema();
    let mut cols = out.columns().to_vec();
    cols[schema.index_of("_partition").unwrap()] = std::sync::Arc::new(Int32Array::from(parts));
    cols[schema.index_of("_offset").unwrap()] = std::sync::Arc::new(Int64Array::from(offsets));
    arrow::array::RecordBatch::try_new(schema, cols).unwrap()
}

/// The lake on a real S3 endpoint (moto): the scan reads the data files straight from the
/// object store, in arrival order, and the results land beside the table.
#[test]
fn a_day_on_s3_is_read_file_by_file_with_exact_counts() {
    let moto = crate::moto::start();
    crate::moto::create_bucket(moto.1, "lake");
    let opts = crate::moto::options(moto.1);
    let day = common::day(3000, 7, FAULTS);
    let n = day.batch.num_rows();
    let inj = day.injected;
    common::write_commits_to(
        "s3://lake/market/trades",
        opts.clone(),
        &day.batch,
        &[(0, n / 2), (n / 2, n - n / 2)],
    );
    let out = Command::new(BIN)
        .args(["--pipeline", "market-data-stream", "--date", "2026-11-20"])
        .args([
            "--lake",
            "s3://lake",
            "--format",
            "json",
            "--log-format",
            "json",
        ])
        .arg("--spec-dir")
        .arg(common::root().join("samples"))
        .envs(&opts)
        .env("RUST_LOG", "warn,finlake_quality=info")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{log}");
    let r = results(&out);
    assert_eq!(value(&r, "enough-trades"), n as f64);
    assert_eq!(value(&r, "duplicate-detection.late"), inj.late as f64);
    assert_eq!(
        value(&r, "duplicate-detection.duplicate_rows"),
        inj.duplicates as f64
    );
    assert_eq!(value(&r, "price-positive"), inj.negative_price as f64);
    assert!(log.contains("scanned the partition"), "{log}");
    assert!(!log.contains("reading it sorted"), "{log}");
}

/// dq reads as dictionaries the strings its partition's first file keeps dictionary-encoded;
/// a later file written without dictionaries (another writer, a dictionary page that
/// overflowed) must give the same measures as the same rows written with them.
#[test]
fn a_later_file_without_dictionaries_measures_the_same() {
    let day = common::day(
        4000,
        818,
        Injected {
            null_isin: 7,
            negative_price: 5,
            bad_isin: 6,
            after_hours: 9,
            duplicates: 11,
            conflicts: 4,
            late: 3,
        },
    );
    let n = day.batch.num_rows();
    let half = n / 2;
    let (dictionaries, mixed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    common::write_commits(
        dictionaries.path(),
        &day.batch,
        &[(0, half), (half, n - half)],
    );
    common::write_commits(mixed.path(), &day.batch, &[(0, half)]);
    // the second commit's file, appended to the other lake by Python deltalake with
    // dictionary encoding off
    let script = r#"
import os, sys
import pyarrow as pa, pyarrow.parquet as pq
from deltalake import DeltaTable, write_deltalake, WriterProperties, ColumnProperties
src, dst = sys.argv[1], sys.argv[2]
def added(uri):
    now = DeltaTable(uri)
    before = set(DeltaTable(uri, version=now.version() - 1).file_uris())
    [f] = [f for f in now.file_uris() if f not in before]
    return f
second = added(src)
t = pq.read_table(second)
t = t.append_column("trade_date", pa.array([pa.scalar(DeltaTable(src).to_pyarrow_table().column("trade_date")[0].as_py())] * t.num_rows, pa.date32()))
plain = WriterProperties(default_column_properties=ColumnProperties(dictionary_enabled=False))
write_deltalake(dst, t, mode="append", partition_by=["trade_date"], writer_properties=plain)
m = pq.ParquetFile(added(dst)).metadata.row_group(0)
isin = [m.column(i) for i in range(m.num_columns) if m.column(i).path_in_schema == "isin"][0]
print("dictionary" if isin.has_dictionary_page else "plain", flush=True)
os._exit(0)
"#;
    let (encoding, err) = common::python(
        script,
        &[
            dictionaries.path().join("market/trades"),
            mixed.path().join("market/trades"),
        ],
    );
    assert_eq!(encoding, "plain", "{err}");
    let measures = |lake: &Path| {
        let out = dqc(lake, "2026-11-20", &["--format", "json", "--rescan"]);
        let mut r: Vec<(String, Value)> = results(&out)
            .iter()
            .map(|r| (r["name"].as_str().unwrap().to_string(), r["value"].clone()))
            .collect();
        r.sort_by(|a, b| a.0.cmp(&b.0));
        r
    };
    let expected = measures(dictionaries.path());
    assert!(
        expected
            .iter()
            .any(|(name, v)| name == "isin-valid" && v.as_f64() > Some(0.0)),
        "{expected:?}"
    );
    assert_eq!(measures(mixed.path()), expected);
}
