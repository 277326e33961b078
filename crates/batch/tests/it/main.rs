//! finlake-batch through its binary, on lakes of generated trades.

use std::path::{Path, PathBuf};
use std::process::Output;

use chrono::NaiveDate;
use finlake_core::delta::{self, CommitExtras, TableSpec};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// A clean generated day of trades as the stream lands them (`rows` messages; the few the
/// sample spec's stages reject are left out), in event-time order.
fn trades_day(date: NaiveDate, rows: usize, seed: u64) -> arrow::array::RecordBatch {
    let day = finlake_quality::fixtures::trade_day(
        date,
        rows,
        seed,
        finlake_quality::fixtures::Injected::default(),
        60_000_000,
    )
    .unwrap();
    assert!(day.batch.num_rows() > rows / 2, "most trades land");
    day.batch
}

/// Appends `batch` to the lake's `market/trades` in `commits` commits (as a stream does, a
/// file per commit), each with the stream's `txn` for partition 0.
async fn append_trades(lake: &Path, batch: &arrow::array::RecordBatch, commits: usize) {
    let mut table = delta::open_or_create(&TableSpec {
        uri: lake.join("market/trades").display().to_string(),
        schema: batch.schema(),
        partition_by: vec!["trade_date".into()],
        checkpoint_interval: None,
        storage_options: Default::default(),
    })
    .await
    .unwrap();
    let n = batch.num_rows();
    for i in 0..commits {
        let (from, to) = (n * i / commits, n * (i + 1) / commits);
        let extras = CommitExtras {
            txns: vec![(TXN_APP.into(), to as i64)],
            ..CommitExtras::default()
        };
        table = delta::append(table, vec![batch.slice(from, to - from)], &extras)
            .await
            .unwrap();
    }
}

const TXN_APP: &str = "market-data-stream/market.trades/0";

/// A lake whose `market/trades` holds a clean generated day of `rows` trades per date.
async fn lake_with_trades(dates: &[&str], rows: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (i, date) in dates.iter().enumerate() {
        append_trades(dir.path(), &trades_day(d(date), rows, 7 + i as u64), 1).await;
    }
    dir
}

fn batch(lake: &Path, args: &[&str]) -> Output {
    batch_env(lake, args, &[])
}

/// [`batch`] with more environment variables.
fn batch_env(lake: &Path, args: &[&str], vars: &[(&str, &str)]) -> Output {
    // as Kubernetes does, the termination-log file exists (empty) before the container runs
    std::fs::write(lake.join("termination-log"), "").unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_finlake-batch"))
        .args(args)
        .arg("--jobs-dir")
        .arg(root().join("jobs"))
        .env("LAKE_URI", lake)
        .env("FINLAKE_TERMINATION_LOG", lake.join("termination-log"))
        .env("NO_COLOR", "1")
        .envs(vars.iter().copied())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn summary(o: &Output) -> serde_json::Value {
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

async fn open(uri: &Path) -> Option<deltalake::DeltaTable> {
    delta::open_existing(&uri.display().to_string(), &Default::default())
        .await
        .unwrap()
}

/// The table's rows as sorted debug lines (order-free comparison).
async fn rows(uri: &Path) -> Vec<String> {
    let Some(t) = open(uri).await else {
        return Vec::new();
    };
    let batches = delta::read_all(&t).await.unwrap();
    let mut out = Vec::new();
    for b in &batches {
        let text = arrow::util::pretty::pretty_format_batches(std::slice::from_ref(b))
            .unwrap()
            .to_string();
        // cells trimmed: the padding depends on the batch, not the row
        out.extend(
            text.lines()
                .filter(|l| l.starts_with("| "))
                .map(|l| l.split('|').map(str::trim).collect::<Vec<_>>().join("|")),
        );
    }
    out.retain(|l| !l.contains("trade_date") && !l.contains("logical_date"));
    out.sort();
    out
}

async fn rows_of(uri: &Path) -> usize {
    let t = open(uri).await.unwrap();
    delta::read_all(&t)
        .await
        .unwrap()
        .iter()
        .map(arrow::array::RecordBatch::num_rows)
        .sum()
}

fn python_check(lake: &Path, date: &str) -> serde_json::Value {
    let o = std::process::Command::new("python3")
        .arg(root().join("scripts/expected/daily_bars.py"))
        .arg(lake)
        .arg(date)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(o.stdout.trim_ascii()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn daily_bars_match_an_independent_computation_and_a_rerun_changes_nothing() {
    let lake = lake_with_trades(&["2026-11-19", "2026-11-20"], 3000).await;
    let lake = lake.path();
    let bars = lake.join("reports/daily_bars");
    for date in ["2026-11-19", "2026-11-20"] {
        let o = batch(lake, &["run", "daily-bars", "--date", date]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let s = summary(&o);
        assert_eq!(s["status"], "ok");
        assert_eq!(s["logical_date"], date);
        assert!(s["rows_out"].as_u64().unwrap() > 10, "{s}");
        // the input was pruned to the date's partition: the rows read are that day's only
        assert_eq!(s["inputs"][0]["window"], serde_json::json!([date, date]));
        let expected = python_check(lake, date);
        assert_eq!(expected["mismatches"], serde_json::json!([]), "{expected}");
        assert_eq!(expected["bars"].as_u64(), s["rows_out"].as_u64());
        assert_eq!(s["rows_in"].as_u64(), expected["trades"].as_u64(), "{s}");
        // the termination message is the summary
        let term: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(lake.join("termination-log")).unwrap())
                .unwrap();
        assert_eq!(term["run_id"], s["run_id"]);
        assert_eq!(term["exit_code"], 0);
    }
    let before = rows(&bars).await;
    let v_before = open(&bars).await.unwrap().version().unwrap();
    let o = batch(lake, &["run", "daily-bars", "--date", "2026-11-20"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        rows(&bars).await,
        before,
        "a rerun leaves the table's contents identical"
    );
    let t = open(&bars).await.unwrap();
    assert_eq!(t.version().unwrap(), v_before + 1, "one commit per run");
    // the commit says who wrote it and from what
    let info = t.history(Some(1)).collect::<Vec<_>>().await;
    let meta = serde_json::to_value(info[0].as_ref().unwrap()).unwrap();
    let flat = meta.to_string();
    assert!(flat.contains("\"job\":\"daily-bars\""), "{flat}");
    assert!(flat.contains("\"logical_date\":\"2026-11-20\""), "{flat}");
    assert!(flat.contains("market/trades@"), "{flat}");
    // every run is recorded
    let runs = finlake_batch::runs::read(&lake.join("ops/job_runs").display().to_string())
        .await
        .unwrap();
    assert_eq!(runs.len(), 3);
    assert!(runs
        .iter()
        .all(|r| r.status == "ok" && r.exit_code == 0 && r.job == "daily-bars"));
    // and `list` shows the last one
    let o = batch(lake, &["list"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out.lines().find(|l| l.starts_with("daily-bars")).unwrap();
    assert!(line.contains("2026-11-20 ok (exit 0)"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn profile_shows_the_executed_plan_and_datafusion_settings_come_from_the_environment() {
    let lake = lake_with_trades(&["2026-11-20"], 500).await;
    let lake = lake.path();
    let o = batch(
        lake,
        &["run", "daily-bars", "--date", "2026-11-20", "--profile"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    // the plan that ran, with each operator's metrics
    assert!(err.contains("AggregateExec"), "{err}");
    assert!(err.contains("output_rows="), "{err}");
    // the job's portable `array_agg(price ORDER BY ...)[1]` ran as DataFusion's first_value
    assert!(err.contains("first_value(trades.price) ORDER BY"), "{err}");
    assert!(!err.contains("array_agg"), "{err}");
    // a DataFusion setting from the environment: a malformed one is bad config
    let o = batch_env(
        lake,
        &["run", "daily-bars", "--date", "2026-11-20"],
        &[("DATAFUSION_EXECUTION_BATCH_SIZE", "lots")],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("DATAFUSION_"), "{}", text(&o));
}

use futures::StreamExt;

/// Runs [`job_variant`] for 2026-11-20 and checks its exit code.
fn run_variant(
    lake: &Path,
    edit: impl Fn(String) -> String,
    sql: Option<&str>,
    code: i32,
) -> Output {
    let job = job_variant(lake, edit, sql);
    let o = batch(
        lake,
        &["run", job.to_str().unwrap(), "--date", "2026-11-20"],
    );
    assert_eq!(o.status.code(), Some(code), "{}", text(&o));
    o
}

/// A copy of the shipped daily-bars job with its job.yaml edited.
fn job_variant(lake: &Path, edit: impl Fn(String) -> String, sql: Option<&str>) -> PathBuf {
    let dir = lake.join("jobs/variant");
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = std::fs::read_to_string(root().join("jobs/daily-bars/job.yaml")).unwrap();
    std::fs::write(dir.join("job.yaml"), edit(yaml)).unwrap();
    let query = match sql {
        Some(s) => s.to_string(),
        None => std::fs::read_to_string(root().join("jobs/daily-bars/daily-bars.sql")).unwrap(),
    };
    std::fs::write(dir.join("daily-bars.sql"), query).unwrap();
    dir.join("job.yaml")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_output_failing_an_error_check_writes_nothing_and_exits_65() {
    let lake = lake_with_trades(&["2026-11-20"], 500).await;
    let lake = lake.path();
    let o = run_variant(
        lake,
        |y| {
            y.replace(
                "  table_checks:",
                "    - {name: tiny-volume, type: sql, severity: error, condition: \"volume < 10\"}\n  table_checks:",
            )
        },
        None,
        65,
    );
    let s = summary(&o);
    assert_eq!(s["status"], "failed");
    assert_eq!(s["error_class"], "data");
    let err = s["error"].as_str().unwrap();
    assert!(err.contains("rule `tiny-volume` (sql) failed on"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");
    assert!(
        open(&lake.join("reports/daily_bars")).await.is_none(),
        "no output table"
    );
    let runs = finlake_batch::runs::read(&lake.join("ops/job_runs").display().to_string())
        .await
        .unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!((runs[0].status.as_str(), runs[0].exit_code), ("failed", 65));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_arguments_and_bad_jobs_exit_2_before_anything_runs() {
    let lake = lake_with_trades(&["2026-11-20"], 200).await;
    let lake = lake.path();
    // an injection attempt in the date is no date: exit 2, nothing runs
    let o = batch(
        lake,
        &["run", "daily-bars", "--date", "2026-11-20' OR '1'='1"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(open(&lake.join("ops/job_runs")).await.is_none());
    // a query that reads a table or a file the job does not declare is refused at load
    for sql in [
        "SELECT trade_date FROM trades JOIN quarantine USING (trade_date) WHERE trade_date = :date",
        "SELECT * FROM read_parquet('/etc/passwd')",
    ] {
        let o = run_variant(lake, |y| y, Some(sql), 2);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("which is not one of the job's inputs (trades)"),
            "{err}"
        );
    }
    // a malformed date
    let o = batch(lake, &["run", "daily-bars", "--date", "2026-11-31"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("2026-11-31"),
        "{}",
        text(&o)
    );
    // an unknown job, with a suggestion
    let o = batch(lake, &["run", "daily-bar", "--date", "2026-11-20"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("did you mean `daily-bars`?"),
        "{}",
        text(&o)
    );
    // an unknown key in the job file, with its line
    let o = run_variant(
        lake,
        |y| y.replace("calendar: XNYS", "calender: XNYS"),
        None,
        2,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("job.yaml:7:1"), "{err}");
    assert!(err.contains("calender"), "{err}");
    // an unknown parameter in the SQL, with its line and column
    let o = run_variant(
        lake,
        |y| y,
        Some("SELECT trade_date, isin FROM trades\nWHERE trade_date = :day"),
        2,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("daily-bars.sql:2:20: unknown parameter `:day`"),
        "{err}"
    );
    // a query naming a column the input does not have: config, not a crash
    let o = run_variant(
        lake,
        |y| y,
        Some("SELECT trade_date, venue_code FROM trades WHERE trade_date = :date"),
        2,
    );
    assert!(
        summary(&o)["error"]
            .as_str()
            .unwrap()
            .contains("venue_code"),
        "{}",
        text(&o)
    );
    // nothing was written by any of them
    assert!(open(&lake.join("reports/daily_bars")).await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_shows_the_files_and_the_partition_and_writes_nothing() {
    let lake = lake_with_trades(&["2026-11-19", "2026-11-20"], 300).await;
    let lake = lake.path();
    let o = batch(
        lake,
        &["run", "daily-bars", "--date", "2026-11-20", "--dry-run"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let s = summary(&o);
    assert_eq!(s["status"], "dry_run");
    assert_eq!(s["output"]["partition"], "trade_date=2026-11-20");
    let files = s["inputs"][0]["file_list"].as_array().unwrap();
    assert!(!files.is_empty());
    assert!(
        files
            .iter()
            .all(|f| f.as_str().unwrap().contains("trade_date=2026-11-20")),
        "only the date's partition is read: {files:?}"
    );
    assert!(open(&lake.join("reports/daily_bars")).await.is_none());
    assert!(
        open(&lake.join("ops/job_runs")).await.is_none(),
        "a dry run records nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backfill_runs_the_trading_days_in_parallel_and_resumes_where_it_stopped() {
    // trades from Monday the 16th to Friday the 20th; the range also holds a weekend and
    // Monday the 23rd, which has no trades (an empty partition: a warning, not a failure)
    let days = [
        "2026-11-16",
        "2026-11-17",
        "2026-11-18",
        "2026-11-19",
        "2026-11-20",
    ];
    let lake = lake_with_trades(&days, 300).await;
    let lake = lake.path();
    // the 18th also holds a trade whose ISIN fails its check digit: its bar fails the job's
    // isin-valid check, so that date exits 65 and writes nothing
    let bad = {
        let b = trades_day(d("2026-11-18"), 50, 99).slice(0, 1);
        let i = b.schema().index_of("isin").unwrap();
        let mut cols = b.columns().to_vec();
        cols[i] = std::sync::Arc::new(arrow::array::StringArray::from(vec!["US0000000000"]));
        arrow::array::RecordBatch::try_new(b.schema(), cols).unwrap()
    };
    append_trades(lake, &bad, 1).await;
    let args = [
        "run",
        "daily-bars",
        "--from",
        "2026-11-16",
        "--to",
        "2026-11-23",
        "--jobs",
        "3",
    ];
    let o = batch(lake, &args);
    assert_eq!(o.status.code(), Some(65), "{}", text(&o));
    let total = summary(&o);
    assert_eq!(
        (total["dates"].as_u64(), total["ran"].as_u64()),
        (Some(6), Some(6)),
        "{total}"
    );
    assert_eq!(total["failed"][0]["date"], "2026-11-18", "{total}");
    // progress, one plain line per date when stderr is not a terminal
    assert_eq!(
        String::from_utf8_lossy(&o.stderr)
            .matches("] daily-bars 2026-11-")
            .count(),
        6,
        "{}",
        text(&o)
    );
    // the operator removes the bad trade and starts the same backfill again: only the date
    // that failed runs
    let t = open(&lake.join("market/trades")).await.unwrap();
    use deltalake::datafusion::prelude::{col, lit};
    t.delete()
        .with_predicate(col("isin").eq(lit("US0000000000")))
        .await
        .unwrap();
    let o = batch(lake, &args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let total = summary(&o);
    assert_eq!(
        (total["skipped"].as_u64(), total["ran"].as_u64()),
        (Some(5), Some(1)),
        "{total}"
    );
    for day in days {
        let expected = python_check(lake, day);
        assert_eq!(
            expected["mismatches"],
            serde_json::json!([]),
            "{day}: {expected}"
        );
        assert!(expected["bars"].as_u64().unwrap() > 0, "{day}: {expected}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn volume_baseline_reads_twenty_trading_days_of_daily_bars() {
    let lake = lake_with_trades(&["2026-11-18", "2026-11-19", "2026-11-20"], 600).await;
    let lake = lake.path();
    let o = batch(
        lake,
        &[
            "run",
            "daily-bars",
            "--from",
            "2026-11-18",
            "--to",
            "2026-11-20",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = batch(lake, &["run", "volume-baseline", "--date", "2026-11-20"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let s = summary(&o);
    // 19 XNYS trading days back from Friday 2026-11-20 (no holiday in between)
    let start = s["params"]["start"].as_str().unwrap().to_string();
    assert_eq!(start, "2026-10-26", "{s}");
    assert_eq!(
        s["inputs"][0]["window"],
        serde_json::json!([start, "2026-11-20"])
    );
    assert_eq!(
        s["inputs"][0]["files"], 3,
        "one daily_bars file per day: {s}"
    );
    let out = std::process::Command::new("python3")
        .arg(root().join("scripts/expected/volume_baseline.py"))
        .args([lake.to_str().unwrap(), "2026-11-20", &start])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let check: serde_json::Value = serde_json::from_slice(out.stdout.trim_ascii()).unwrap();
    assert_eq!(check["mismatches"], serde_json::json!([]), "{check}");
    assert_eq!(check["rows"].as_u64(), s["rows_out"].as_u64());
    // both independent readers read every table the jobs wrote
    for table in [
        "reports/daily_bars",
        "reports/volume_baseline",
        "ops/job_runs",
    ] {
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg("import sys, os\nimport polars as pl\nfrom deltalake import DeltaTable\nprint(pl.read_delta(sys.argv[1]).height, DeltaTable(sys.argv[1]).to_pyarrow_table().num_rows, flush=True)\nos._exit(0)")
            .arg(lake.join(table))
            .output()
            .unwrap();
        assert!(out.status.success(), "{table}: {}", text(&out));
        let counts = String::from_utf8_lossy(&out.stdout);
        let n: Vec<usize> = counts
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!(n[0], n[1], "{table}: polars and deltalake disagree");
        assert_eq!(n[0], rows_of(&lake.join(table)).await, "{table}");
    }
    // instruments that traded on all three days have three days in their window
    let rows = rows(&lake.join("reports/volume_baseline")).await;
    assert!(rows.iter().any(|r| r.contains("|3|")), "{rows:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn maintenance_compacts_the_day_keeps_rows_and_txns_and_vacuums_nothing_young() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path();
    append_trades(lake, &trades_day(d("2026-11-19"), 400, 1), 3).await;
    append_trades(lake, &trades_day(d("2026-11-20"), 1200, 2), 6).await;
    let trades = lake.join("market/trades");
    let before = rows(&trades).await;
    let t = open(&trades).await.unwrap();
    let txn = delta::txn_version(&t, TXN_APP).await.unwrap();
    let v0 = t.version().unwrap();
    let files = |day: &str| -> usize {
        std::fs::read_dir(trades.join(format!("trade_date={day}")))
            .unwrap()
            .count()
    };
    assert_eq!(files("2026-11-20"), 6);

    // a dry run says what it would do and does nothing
    let o = batch(
        lake,
        &["run", "maintenance", "--date", "2026-11-20", "--dry-run"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let s = summary(&o);
    assert_eq!(s["maintenance"][0]["files_before"], 6, "{s}");
    assert_eq!(open(&trades).await.unwrap().version().unwrap(), v0);

    let o = batch(lake, &["run", "maintenance", "--date", "2026-11-20"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let s = summary(&o);
    let m = &s["maintenance"][0];
    assert_eq!(
        (m["files_before"].as_u64(), m["files_after"].as_u64()),
        (Some(6), Some(1)),
        "{s}"
    );
    assert_eq!(m["compacted_removed"], 6);
    // removed files are younger than the 168h retention: vacuum deletes none of them
    assert_eq!(m["vacuumed"], 0);
    assert!(m["checkpoint_version"].as_u64().is_some(), "{s}");
    // the tables the stream has not created here are reported, not created
    assert_eq!(s["maintenance"][1]["absent"], true, "{s}");
    assert!(open(&lake.join("market/quarantine")).await.is_none());

    // same rows, the other day untouched, the stream's txn version kept
    assert_eq!(rows(&trades).await, before);
    let t = open(&trades).await.unwrap();
    assert_eq!(delta::txn_version(&t, TXN_APP).await.unwrap(), txn);
    let live = t.get_files_by_partitions(&[]).await.unwrap();
    let live_on = |day: &str| live.iter().filter(|p| p.as_ref().contains(day)).count();
    assert_eq!((live_on("2026-11-19"), live_on("2026-11-20")), (3, 1));
    assert!(std::fs::read_dir(trades.join("_delta_log"))
        .unwrap()
        .any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".checkpoint.parquet")));
    // an independent reader sees the same rows
    let py = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sys, os\nfrom deltalake import DeltaTable\nprint(DeltaTable(sys.argv[1]).to_pyarrow_table().num_rows, flush=True)\nos._exit(0)")
        .arg(&trades)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&py.stdout).trim(),
        before.len().to_string(),
        "{}",
        text(&py)
    );

    // a retention shorter than the longest reader is refused before anything runs
    let o = run_variant(
        lake,
        |_| {
            std::fs::read_to_string(root().join("jobs/maintenance/job.yaml"))
                .unwrap()
                .replace("vacuum_retention: 168h", "vacuum_retention: 24h")
        },
        None,
        2,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("vacuum_retention 24h is shorter than longest_reader 72h"),
        "{err}"
    );
}

/// deploy/finlake-batch-cronjobs.yaml runs every scheduled job in jobs/ on the job's own
/// schedule, and its podFailurePolicy fails the Job at once on the exit codes a rerun cannot
/// change (2, 65, 70) while 75 (transient) is retried.
#[test]
fn the_cronjobs_follow_the_jobs_schedules_and_exit_codes() {
    let text = std::fs::read_to_string(root().join("deploy/finlake-batch-cronjobs.yaml")).unwrap();
    let docs: Vec<serde_json::Value> = text
        .split("\n---\n")
        .skip(1)
        .map(|d| finlake_core::spec::yaml::parse(d).unwrap().to_json())
        .collect();
    let jobs = finlake_batch::job::list_dir(&root().join("jobs"));
    let scheduled: Vec<(String, String)> = jobs
        .iter()
        .filter_map(|(name, file)| {
            let job = finlake_batch::job::load(file, &|_| None).unwrap();
            Some((name.clone(), job.spec.schedule?))
        })
        .collect();
    assert!(scheduled.len() >= 3, "{scheduled:?}");
    assert_eq!(docs.len(), scheduled.len(), "one CronJob per scheduled job");
    for (name, schedule) in scheduled {
        let cron = docs
            .iter()
            .find(|d| d["metadata"]["name"] == format!("finlake-{name}"))
            .unwrap_or_else(|| panic!("no CronJob for {name}"));
        assert_eq!(cron["spec"]["schedule"], schedule.as_str(), "{name}");
        assert_eq!(cron["spec"]["timeZone"], "Etc/UTC", "{name}");
        let job = &cron["spec"]["jobTemplate"]["spec"];
        let container = &job["template"]["spec"]["containers"][0];
        assert_eq!(container["command"], serde_json::json!(["finlake-batch"]));
        assert_eq!(container["args"][0], "run");
        assert_eq!(container["args"][1], name.as_str());
        assert_eq!(container["terminationMessagePath"], "/dev/termination-log");
        let rule = &job["podFailurePolicy"]["rules"][0];
        assert_eq!(rule["action"], "FailJob");
        assert_eq!(rule["onExitCodes"]["containerName"], container["name"]);
        assert_eq!(
            rule["onExitCodes"]["values"],
            serde_json::json!([2, 65, 70]),
            "{name}"
        );
    }
}

/// A backfill SIGKILLed after its second date and started again ends with the same table as
/// an uninterrupted backfill of the same days.
#[tokio::test(flavor = "multi_thread")]
async fn a_backfill_killed_halfway_and_restarted_ends_as_an_uninterrupted_one() {
    use std::io::{BufRead, BufReader};
    let days = [
        "2026-11-16",
        "2026-11-17",
        "2026-11-18",
        "2026-11-19",
        "2026-11-20",
    ];
    let killed = lake_with_trades(&days, 4000).await;
    let whole = lake_with_trades(&days, 4000).await;
    let args = [
        "run",
        "daily-bars",
        "--from",
        "2026-11-16",
        "--to",
        "2026-11-20",
    ];
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_finlake-batch"))
        .args(args)
        .arg("--jobs-dir")
        .arg(root().join("jobs"))
        .env("LAKE_URI", killed.path())
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut done = 0;
    while done < 2 {
        let line = lines.next().expect("the backfill ended early").unwrap();
        if line.starts_with('[') && line.contains("] daily-bars ") {
            done += 1;
        }
    }
    child.kill().unwrap(); // SIGKILL, mid-way through the third date
    child.wait().unwrap();
    let o = batch(killed.path(), &args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let total = summary(&o);
    assert!(total["skipped"].as_u64().unwrap() >= 2, "{total}");
    let o = batch(whole.path(), &args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let bars = |lake: &Path| lake.join("reports/daily_bars");
    let (a, b) = (
        rows(&bars(killed.path())).await,
        rows(&bars(whole.path())).await,
    );
    assert!(a.len() > 5 * 10, "{}", a.len());
    assert_eq!(a, b);
}

#[tokio::test(flavor = "multi_thread")]
async fn exposure_by_currency_matches_an_independent_computation() {
    let lake = lake_with_trades(&["2026-11-19", "2026-11-20"], 3000).await;
    let lake = lake.path();
    let o = batch(
        lake,
        &["run", "exposure-by-currency", "--date", "2026-11-20"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let s = summary(&o);
    // the generator's venues trade in USD, EUR, GBP and JPY
    assert_eq!(s["rows_out"], 4, "{s}");
    let out = std::process::Command::new("python3")
        .arg(root().join("scripts/expected/exposure_by_currency.py"))
        .args([lake.to_str().unwrap(), "2026-11-20"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let check: serde_json::Value = serde_json::from_slice(out.stdout.trim_ascii()).unwrap();
    assert_eq!(check["mismatches"], serde_json::json!([]), "{check}");
    assert_eq!(check["trades"].as_u64(), s["rows_in"].as_u64(), "{check}");
    assert_eq!(check["rows"].as_u64(), s["rows_out"].as_u64(), "{check}");
}

/// A query past its memory limit spills or fails with a message that names the limit (exit
/// 70); it never writes a wrong result or leaves a half-written partition.
#[tokio::test(flavor = "multi_thread")]
async fn a_tiny_memory_limit_spills_or_fails_naming_the_limit() {
    let lake = lake_with_trades(&["2026-11-20"], 3000).await;
    let lake = lake.path();
    let o = batch(
        lake,
        &[
            "run",
            "daily-bars",
            "--date",
            "2026-11-20",
            "--memory-limit",
            "64KiB",
        ],
    );
    match o.status.code() {
        Some(0) => {
            // it spilled: the same bars as the independent computation
            let expected = python_check(lake, "2026-11-20");
            assert_eq!(expected["mismatches"], serde_json::json!([]), "{expected}");
        }
        Some(70) => {
            let s = summary(&o);
            let err = s["error"].as_str().unwrap();
            assert!(err.contains("its limit of 64KiB"), "{err}");
            assert!(err.contains("--memory-limit"), "{err}");
            assert!(open(&lake.join("reports/daily_bars")).await.is_none());
        }
        other => panic!("exit {other:?}: {}", text(&o)),
    }
    // a limit that is no size is refused before anything runs
    let o = batch(
        lake,
        &[
            "run",
            "daily-bars",
            "--date",
            "2026-11-20",
            "--memory-limit",
            "lots",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--memory-limit"));
}

/// A lake of generated trades per date (as [`lake_with_trades`]) and the order flow behind
/// them: orders, executions, NBBO quotes and accounts, as `finlake demo` lands them.
async fn lake_with_flow(dates: &[&str], rows: usize) -> tempfile::TempDir {
    let dir = lake_with_trades(dates, rows).await;
    for (i, date) in dates.iter().enumerate() {
        let landed = finlake_core::orderflow::land(
            dir.path().to_str().unwrap(),
            d(date),
            11 + i as u64,
            &Default::default(),
        )
        .await
        .unwrap();
        assert!(
            landed.executions == landed.trades && landed.orders > 0,
            "{landed:?}"
        );
    }
    dir
}

/// Runs `scripts/expected/<script>.py LAKE DATE` and returns its JSON line; it must find no
/// mismatch.
fn expected(script: &str, lake: &Path, date: &str) -> serde_json::Value {
    let o = std::process::Command::new("python3")
        .arg(root().join("scripts/expected").join(script))
        .arg(lake)
        .arg(date)
        .output()
        .unwrap();
    let check: serde_json::Value = serde_json::from_slice(o.stdout.trim_ascii())
        .unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(check["mismatches"], serde_json::json!([]), "{check}");
    assert!(o.status.success(), "{}", text(&o));
    check
}

/// Runs `job` for 2026-11-20 on `lake` (exit 0) and its independent check
/// `scripts/expected/<script>`, which must find no mismatch and as many rows as the run wrote.
fn run_and_check(lake: &Path, job: &str, script: &str) -> (serde_json::Value, serde_json::Value) {
    let o = batch(lake, &["run", job, "--date", "2026-11-20"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let s = summary(&o);
    let check = expected(script, lake, "2026-11-20");
    assert_eq!(check["rows"].as_u64(), s["rows_out"].as_u64(), "{check}");
    (s, check)
}

/// Runs `scripts/fixtures/<script> LAKE ARGS...`, which writes a test lake with the Python
/// `deltalake` writer.
fn fixture(script: &str, lake: &Path, args: &[&str]) {
    let o = std::process::Command::new("python3")
        .arg(root().join("scripts/fixtures").join(script))
        .arg(lake)
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn execution_quality_605_matches_an_independent_computation() {
    let lake = lake_with_flow(&["2026-11-20"], 4000).await;
    let lake = lake.path();
    let (_, check) = run_and_check(lake, "execution-quality-605", "execution_quality_605.py");
    assert!(check["orders"].as_u64().unwrap() > 100, "{check}");
    // both order categories, several size buckets
    let report = rows(&lake.join("reports/execution_quality_605")).await;
    for needle in ["|market|", "|marketable_limit|", "|all <200k|"] {
        assert!(
            report.iter().any(|r| r.contains(needle)),
            "{needle}: {report:?}"
        );
    }
    assert!(check["buckets"].as_object().unwrap().len() >= 4, "{check}");
    // a rerun leaves the same rows
    let o = batch(
        lake,
        &["run", "execution-quality-605", "--date", "2026-11-20"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        rows(&lake.join("reports/execution_quality_605")).await,
        report
    );
}

/// Rule 605's notional size buckets at each edge: an order just below a bound, at it and
/// just above it (one share at a midpoint of B - 0.01, B, B + 0.01).
#[test]
fn rule_605_buckets_include_the_lower_bound_and_exclude_the_upper() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path();
    fixture("rule605_edges.py", lake, &["2026-11-20"]);
    let o = batch(
        lake,
        &["run", "execution-quality-605", "--date", "2026-11-20"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let check = expected("execution_quality_605.py", lake, "2026-11-20");
    // B - 0.01 falls in the bucket below B; B and B + 0.01 in the one starting at B
    let want = serde_json::json!({
        "<250": 1, "250-<1k": 3, "1k-<5k": 3, "5k-<10k": 3, "10k-<20k": 3,
        "20k-<50k": 3, "50k-<200k": 3, ">=200k": 2,
    });
    assert_eq!(check["buckets"], want, "{check}");
    assert_eq!(check["orders"], 21);
}

/// Rule 13h-1's levels at, just below and just above each threshold (shares and USD, day and
/// month to date), purchases and sales in two accounts of one owner counted together; not
/// NMS and last month's activity do not count.
#[test]
fn large_trader_levels_are_reached_at_equality_per_owner() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path();
    fixture("large_trader_levels.py", lake, &["2026-11-20"]);
    let o = batch(lake, &["run", "large-trader", "--date", "2026-11-20"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let s = summary(&o);
    // the month's window: from the first of November, whatever the trading calendar says
    assert_eq!(s["params"]["start"], "2026-11-01", "{s}");
    let check = expected("large_trader.py", lake, "2026-11-20");
    let want: Vec<&str> = vec![
        "DS-ABOVE", "DS-AT", "DU-ABOVE", "DU-AT", "MS-ABOVE", "MS-AT", "MU-ABOVE", "MU-AT",
    ];
    assert_eq!(check["owners"], serde_json::json!(want), "{check}");
}

#[tokio::test(flavor = "multi_thread")]
async fn large_trader_matches_an_independent_computation() {
    let lake = lake_with_flow(&["2026-11-19", "2026-11-20"], 3000).await;
    let lake = lake.path();
    let (s, check) = run_and_check(lake, "large-trader", "large_trader.py");
    // both days are in the month's window
    assert!(check["executions"].as_u64().unwrap() > 3000, "{check}");
    // the generator's activity is skewed: its busiest owners reach the USD levels
    assert!(s["rows_out"].as_u64().unwrap() > 0, "{s}");
}

#[tokio::test(flavor = "multi_thread")]
async fn best_execution_venues_matches_an_independent_computation() {
    let lake = lake_with_flow(&["2026-11-20"], 4000).await;
    let lake = lake.path();
    let (s, check) = run_and_check(lake, "best-execution-venues", "best_execution_venues.py");
    // the generator spreads 4000 trades evenly over 16 instruments: one liquidity band (80 to
    // 1999 trades a day), in which more than five venues executed, cut to the top five
    assert_eq!(check["classes"], 1, "{check}");
    assert_eq!(s["rows_out"], 5, "{s}");
}

/// The indicators against TA-Lib, every day of a backfill over two months of bars: values,
/// the NULLs of each look-back, and the flat-series RSI (50 here, 0 in TA-Lib).
#[test]
fn indicators_match_ta_lib_over_a_backfill() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path();
    fixture("daily_bars_series.py", lake, &["2026-09-21", "2026-11-20"]);
    let o = batch(
        lake,
        &[
            "run",
            "indicators",
            "--from",
            "2026-09-21",
            "--to",
            "2026-11-20",
            "--jobs",
            "2",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = std::process::Command::new("python3")
        .arg(root().join("scripts/expected/indicators.py"))
        .arg(lake)
        .output()
        .unwrap();
    let check: serde_json::Value = serde_json::from_slice(o.stdout.trim_ascii())
        .unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(check["mismatches"], serde_json::json!([]), "{check}");
    assert!(o.status.success(), "{}", text(&o));
    // 44 trading days (Thanksgiving week aside) x 5 series, less the late series' first 25
    assert!(check["rows"].as_u64().unwrap() > 150, "{check}");
    let leading = &check["leading_nulls"];
    for (name, n) in [
        ("sma_20", 19),
        ("ema_20", 19),
        ("rsi_14", 14),
        ("bb_upper", 19),
    ] {
        assert_eq!(leading[name], serde_json::json!([n]), "{name}: {check}");
    }
    assert_eq!(
        check["flat_rsi"],
        serde_json::json!(["US4592001014"]),
        "{check}"
    );
}

/// A table's rows, order-free, for comparing two engines' outputs: each row as its exact
/// columns (integers, decimals, text, dates: rendered) and its float columns beside them.
async fn rows_with_floats(uri: &Path) -> Vec<(String, Vec<Option<f64>>)> {
    use arrow::array::{Array, AsArray};
    let t = open(uri).await.unwrap();
    let mut out = Vec::new();
    for b in delta::read_all(&t).await.unwrap() {
        let opts = arrow::util::display::FormatOptions::default().with_null("NULL");
        let formatters: Vec<_> = b
            .columns()
            .iter()
            .map(|c| arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &opts).unwrap())
            .collect();
        for i in 0..b.num_rows() {
            let mut key = Vec::new();
            let mut floats = Vec::new();
            for (c, f) in b.columns().iter().zip(&formatters) {
                if let Some(x) = c.as_primitive_opt::<arrow::datatypes::Float64Type>() {
                    floats.push(x.is_valid(i).then(|| x.value(i)));
                } else {
                    key.push(f.value(i).to_string());
                }
            }
            out.push((key.join("|"), floats));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// DataFusion and Polars give the same rows for every job that names both engines: exact
/// for integers, decimals, text and dates; floats (averages and ratios of exact sums) to
/// 1e-9 relative.
#[tokio::test(flavor = "multi_thread")]
async fn datafusion_and_polars_give_the_same_rows_for_every_job_naming_both() {
    let lake = lake_with_flow(&["2026-11-19", "2026-11-20"], 3000).await;
    let lake = lake.path();
    for date in ["2026-11-19", "2026-11-20"] {
        let o = batch(lake, &["run", "daily-bars", "--date", date]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    let env = |v: &str| (v == "LAKE_URI").then(|| lake.display().to_string());
    let mut compared = Vec::new();
    for (name, file) in finlake_batch::job::list_dir(&root().join("jobs")) {
        let job = finlake_batch::job::load(&file, &env).unwrap();
        let engines = &job.spec.engines;
        if !engines.contains(&finlake_batch::job::EngineKind::Polars) {
            // a job that leaves Polars out says why
            assert!(
                job.spec.kind != finlake_batch::job::JobKind::Sql
                    || job.spec.engines_reason.is_some(),
                "{name}"
            );
            continue;
        }
        let out = PathBuf::from(&job.spec.output.as_ref().unwrap().table_uri);
        let mut results = Vec::new();
        for engine in ["datafusion", "polars"] {
            let o = batch(
                lake,
                &["run", &name, "--date", "2026-11-20", "--engine", engine],
            );
            assert_eq!(o.status.code(), Some(0), "{name} on {engine}: {}", text(&o));
            assert_eq!(summary(&o)["engine"], engine);
            results.push(rows_with_floats(&out).await);
        }
        let (df, pl) = (&results[0], &results[1]);
        assert!(!df.is_empty(), "{name} wrote no rows");
        assert_eq!(df.len(), pl.len(), "{name}: row counts differ");
        for (a, b) in df.iter().zip(pl) {
            assert_eq!(a.0, b.0, "{name}: exact columns differ");
            for (x, y) in a.1.iter().zip(&b.1) {
                let same = match (x, y) {
                    (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1e-9),
                    (None, None) => true,
                    _ => false,
                };
                assert!(same, "{name}: {x:?} vs {y:?} in {}", a.0);
            }
        }
        compared.push(name);
    }
    assert!(compared.len() >= 6, "{compared:?}");
}

/// `mode: merge` upserts on the keys: a rerun updates every row and inserts none (the table
/// unchanged), another date inserts its rows beside; a merge without keys is refused at load.
#[tokio::test(flavor = "multi_thread")]
async fn merge_mode_upserts_on_the_keys() {
    let lake = lake_with_trades(&["2026-11-19", "2026-11-20"], 800).await;
    let lake = lake.path();
    let merge = |y: String| {
        y.replace(
            "  mode: overwrite_partition",
            "  mode: merge\n  keys: [trade_date, isin, venue, currency]",
        )
    };
    let job = job_variant(lake, merge, None);
    let run = |date: &str| {
        let o = batch(lake, &["run", job.to_str().unwrap(), "--date", date]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        summary(&o)
    };
    let first = run("2026-11-20");
    let bars = first["rows_out"].as_u64().unwrap();
    assert_eq!(first["output"]["inserted"].as_u64(), Some(bars), "{first}");
    let before = rows(&lake.join("reports/daily_bars")).await;
    let again = run("2026-11-20");
    assert_eq!(again["output"]["inserted"], 0, "{again}");
    assert_eq!(again["output"]["updated"].as_u64(), Some(bars), "{again}");
    assert_eq!(rows(&lake.join("reports/daily_bars")).await, before);
    let other = run("2026-11-19");
    assert_eq!(
        rows_of(&lake.join("reports/daily_bars")).await as u64,
        bars + other["rows_out"].as_u64().unwrap()
    );
    // no keys: refused at load, naming the line
    let o = run_variant(
        lake,
        |y| y.replace("  mode: overwrite_partition", "  mode: merge"),
        None,
        2,
    );
    assert!(text(&o).contains("mode merge needs `keys`"), "{}", text(&o));
}
