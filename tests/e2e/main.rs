//! End-to-end tests of the `finlake` binary against real readers (Python deltalake,
//! jsonschema). One binary so the tree links once.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn finlake(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_finlake"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run finlake")
}

fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn validate_accepts_every_sample() {
    let out = finlake(&[
        "validate",
        "samples/market-data-stream.yaml",
        "samples/fx-rates.yaml",
        "samples/trade-feed.yaml",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // sections nobody enforces yet are said loudly, not passed silently; enforced ones are not
    assert!(
        stderr.contains("`spec.alerting` is accepted but not acted on"),
        "{stderr}"
    );
    assert!(!stderr.contains("cep_patterns"), "{stderr}");
}

#[test]
fn validate_exits_2_naming_the_unknown_key_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("samples/fx-rates.yaml"))
        .unwrap()
        .replace("batch_timeout: 100ms", "batch_timout: 100ms");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, &text).unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("batch_timout"))
        .unwrap()
        + 1;
    let out = finlake(&["validate", "samples/fx-rates.yaml", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let expected = format!("{}:{line}:", bad.display());
    assert!(
        stderr.contains(&expected)
            && stderr.contains("`batch_timout`")
            && stderr.contains("did you mean `batch_timeout`?"),
        "{stderr}"
    );
}

/// A spec whose YAML is well formed but whose rule names a column the table does not have,
/// or whose pattern does not compile, is refused by `validate` as the ingestor and
/// `data-quality-check` refuse it at start-up: at its line, with a hint.
#[test]
fn validate_compiles_the_rules_and_patterns() {
    let dir = tempfile::tempdir().unwrap();
    let sample = std::fs::read_to_string(root().join("samples/market-data-stream.yaml")).unwrap();
    let cases = [
        (
            sample.replace(
                "column: isin, action: dead_letter",
                "column: isn, action: dead_letter",
            ),
            "column: isn",
            "did you mean `isin`?",
        ),
        (
            sample.replace(
                "condition: \"timestamp BETWEEN market_open AND market_close\"",
                "condition: \"timestamp BETWEEN market_open AND market_clos\"",
            ),
            "market_clos",
            "market_clos",
        ),
        (
            sample.replace(
                "pattern: \"quantity > 10 * avg(quantity)\"",
                "pattern: \"quantty > 10 * avg(quantity)\"",
            ),
            "quantty",
            "quantty",
        ),
    ];
    for (i, (text, at, says)) in cases.iter().enumerate() {
        assert_ne!(text, &sample, "case {i} changes the sample");
        let bad = dir.path().join(format!("bad{i}.yaml"));
        std::fs::write(&bad, text).unwrap();
        let line = text.lines().position(|l| l.contains(at)).unwrap() + 1;
        let out = finlake(&["validate", bad.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "case {i}: {stderr}");
        assert!(
            stderr.contains(&format!("{}:{line}:", bad.display())) && stderr.contains(says),
            "case {i}: {stderr}"
        );
    }
}

const CRD_CHECK: &str = r#"
import json, sys, yaml, jsonschema
crd = yaml.safe_load(open(sys.argv[1]))
schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
# The apiserver's strict field validation (kubectl's default) refuses unknown fields of
# objects that list their properties; jsonschema needs that rule spelled out.
def strict(s):
    if isinstance(s, dict):
        if "properties" in s and "x-kubernetes-preserve-unknown-fields" not in s:
            s["additionalProperties"] = False
        for v in s.values(): strict(v)
    elif isinstance(s, list):
        for v in s: strict(v)
strict(schema)
for path in sys.argv[2:]:
    doc = yaml.safe_load(open(path))
    errors = list(jsonschema.Draft4Validator(schema).iter_errors(doc))
    print(path, "valid" if not errors else "invalid: " + errors[0].message)
"#;

#[test]
fn crd_schema_accepts_the_samples_and_refuses_an_unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    let crd = finlake(&["crd"]);
    assert!(crd.status.success());
    let crd_path = dir.path().join("crd.yaml");
    std::fs::write(&crd_path, &crd.stdout).unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(root().join("samples/market-data-stream.yaml")).unwrap();
    std::fs::write(
        &bad,
        text.replace("  processing:", "  procesing_extra: 1\n  processing:"),
    )
    .unwrap();
    let samples: Vec<String> = ["market-data-stream", "fx-rates", "trade-feed"]
        .iter()
        .map(|s| {
            root()
                .join(format!("samples/{s}.yaml"))
                .display()
                .to_string()
        })
        .collect();
    let mut args: Vec<&str> = vec![crd_path.to_str().unwrap()];
    args.extend(samples.iter().map(String::as_str));
    args.push(bad.to_str().unwrap());
    let report = python(CRD_CHECK, &args);
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), 4, "{report}");
    for l in &lines[..3] {
        assert!(l.ends_with(" valid"), "{report}");
    }
    assert!(
        lines[3].contains("invalid") && lines[3].contains("procesing_extra"),
        "{report}"
    );
}

const READ_TABLE: &str = r#"
import sys
from deltalake import DeltaTable
t = DeltaTable(sys.argv[1])
tbl = t.to_pyarrow_table()
total = sum(tbl.column("price").to_pylist())
print(tbl.num_rows, int(total * 10**6), t.version(), flush=True)
import os; os._exit(0)  # the deltalake wheel can abort in runtime teardown at exit
"#;

fn delta_sum(dir: &Path) -> (usize, i128) {
    use arrow::array::AsArray;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = finlake_core::delta::table_url(&dir.display().to_string()).unwrap();
        let table = deltalake::open_table(url).await.unwrap();
        let batches = finlake_core::delta::read_all(&table).await.unwrap();
        let rows = batches.iter().map(|b| b.num_rows()).sum();
        let sum = batches
            .iter()
            .flat_map(|b| {
                b.column_by_name("price")
                    .unwrap()
                    .as_primitive::<arrow::datatypes::Decimal128Type>()
                    .values()
                    .to_vec()
            })
            .sum();
        (rows, sum)
    })
}

#[test]
fn demo_lands_tables_that_python_deltalake_reads_identically() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let demo = [
        "demo",
        "--lake",
        lake.to_str().unwrap(),
        "--rows",
        "30000",
        "--seed",
        "9",
    ];
    let out = finlake(&demo);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("0 offsets out of place; 0 differ from the manifest"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    // stderr is a pipe here: no colour codes; and no statistics warning for raw bytes
    assert!(!stderr.contains('\u{1b}'), "ANSI codes on a pipe: {stderr}");
    assert!(!stderr.contains("Skipping column"), "{stderr}");
    let (rows, sum) = delta_sum(&lake.join("market/trades"));
    let py = python(READ_TABLE, &[lake.join("market/trades").to_str().unwrap()]);
    let fields: Vec<&str> = py.split_whitespace().collect();
    assert_eq!(fields[0].parse::<usize>().unwrap(), rows, "{py}");
    assert_eq!(fields[1].parse::<i128>().unwrap(), sum, "{py}");
    let q = python("import sys\nfrom deltalake import DeltaTable\nprint(DeltaTable(sys.argv[1]).to_pyarrow_table().num_rows, flush=True)\nimport os; os._exit(0)", &[lake.join("market/quarantine").to_str().unwrap()]);
    let q = q.trim().parse::<usize>().unwrap();
    assert!(
        stdout.contains(&format!("landed      {rows:>8}")),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("quarantined {q:>8}")), "{stdout}");
    // rerunning on the same lake lands nothing again: the txn version says all 30,000 are in
    let again = finlake(&demo);
    assert!(again.status.success());
    assert_eq!(delta_sum(&lake.join("market/trades")).0, rows);
    let again_out = String::from_utf8_lossy(&again.stdout);
    assert!(
        again_out.contains("all already in the lake (txn versions 10000, 10000, 10000)")
            && again_out.contains("nothing written"),
        "{again_out}"
    );

    // the producer retries the generator's manifest lists were counted, not landed: every
    // message is a landed row, a quarantine row or one of them
    let manifest = dir.path().join("manifest.jsonl");
    let gen = finlake(&[
        "generate",
        "--rows",
        "30000",
        "--faults",
        "0.01",
        "--seed",
        "9",
        "--out",
        dir.path().join("feed.jsonl").to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
    ]);
    assert!(gen.status.success());
    let retries = std::fs::read_to_string(&manifest)
        .unwrap()
        .lines()
        .filter(|l| l.contains("duplicate_of:"))
        .count();
    assert!(retries > 0);
    assert_eq!(rows + q + retries, 30_000, "{stdout}");
    assert!(
        stdout.contains(&format!("duplicates  {retries:>8}")),
        "{stdout}"
    );
    let dq = finlake(&[
        "dq",
        "--pipeline",
        "market-data-stream",
        "--date",
        "2026-11-20",
        "--lake",
        lake.to_str().unwrap(),
        "--spec-dir",
        root().join("samples").to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(
        dq.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&dq.stderr)
    );
    // the ingestor's lake (three partitions, each micro-batch's rows grouped by partition) is
    // read straight from its files in the order the stream applied them, not sorted
    let log = String::from_utf8_lossy(&dq.stderr);
    assert!(log.contains("scanned the partition"), "{log}");
    assert!(!log.contains("reading it sorted"), "{log}");
    let report: serde_json::Value = serde_json::from_slice(&dq.stdout).unwrap();
    let value = |name: &str| {
        report["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()["value"]
            .as_f64()
            .unwrap()
    };
    // dq's own dedup over the landed table finds nothing the stream let through
    assert_eq!(value("duplicate-detection.duplicate_rows"), 0.0);
    // the demo replays a recorded day (each message's Kafka timestamp is when it arrived, a
    // few hundred ms after its event, and the spec says `ingest_time: message_timestamp`),
    // so the sample spec's clock-skew rule flags nothing
    assert_eq!(value("clock-skew"), 0.0);
    assert_eq!(value("enough-trades"), rows as f64);
    assert_eq!(value("price-positive"), 0.0);

    // the batch runner on the demo's lake, as the README shows it, checked bar by bar
    // against a plain-Python recomputation read through the deltalake package
    // `finlake batch run JOB --date 2026-11-20` on the demo's lake: its JSON summary
    let batch_job = |job: &str| -> serde_json::Value {
        let o = Command::new(env!("CARGO_BIN_EXE_finlake"))
            .args(["batch", "run", job, "--date", "2026-11-20"])
            .env("LAKE_URI", &lake)
            .env(
                "FINLAKE_TERMINATION_LOG",
                dir.path().join("termination-log"),
            )
            .current_dir(root())
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{job}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let summary = batch_job("daily-bars");
    assert_eq!(summary["rows_in"].as_u64(), Some(rows as u64), "{summary}");
    let check = python(
        &std::fs::read_to_string(root().join("scripts/expected/daily_bars.py")).unwrap(),
        &[lake.to_str().unwrap(), "2026-11-20"],
    );
    let check: serde_json::Value = serde_json::from_str(check.trim()).unwrap();
    assert_eq!(check["mismatches"], serde_json::json!([]), "{check}");
    assert_eq!(
        check["bars"].as_u64(),
        summary["rows_out"].as_u64(),
        "{check}"
    );

    // the scheduled quality report is data-quality-check through the batch runner
    let qr = batch_job("quality-report");
    let enough = qr["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "enough-trades")
        .unwrap();
    assert_eq!(enough["value"].as_f64(), Some(rows as f64), "{qr}");

    // every job in jobs/ runs on the demo's lake (the order flow the demo landed beside the
    // trades feeds the regulatory ones), and polars reads every table they wrote
    let mut outputs = Vec::new();
    let mut jobs: Vec<String> = std::fs::read_dir(root().join("jobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    jobs.sort();
    assert!(jobs.len() >= 9, "{jobs:?}");
    for job in &jobs {
        let s = batch_job(job);
        assert_eq!(s["status"], "ok", "{job}: {s}");
        if let Some(uri) = s["output"]["table"].as_str().filter(|t| !t.is_empty()) {
            outputs.push(uri.to_string());
        }
    }
    let read = python(
        "import sys, polars as pl\nfor uri in sys.argv[1:]:\n    print(uri, pl.read_delta(uri).height)\nimport os; sys.stdout.flush(); os._exit(0)",
        &outputs.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(read.lines().count(), outputs.len(), "{read}");
    for table in [
        "execution_quality_605",
        "large_trader",
        "best_execution_venues",
        "indicators",
    ] {
        let line = read
            .lines()
            .find(|l| l.contains(table))
            .unwrap_or_else(|| panic!("{table}: {read}"));
        let n: usize = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n > 0, "{table} is empty: {read}");
    }
    // one execution per landed trade, readable by an independent reader
    let flow = python(
        "import sys, polars as pl\nprint(pl.read_delta(sys.argv[1]).height, flush=True)\nimport os; os._exit(0)",
        &[lake.join("market/executions").to_str().unwrap()],
    );
    assert_eq!(flow.trim().parse::<usize>().unwrap(), rows);

    // the guide's restore-pipeline: the latest snapshot data-quality-check passed is the
    // data table as it is (dq above passed it), so nothing moves
    let restore = |extra: &[&str]| {
        let mut args = vec![
            "restore",
            "--pipeline",
            "market-data-stream",
            "--lake",
            lake.to_str().unwrap(),
            "--format",
            "json",
        ];
        args.extend(extra);
        finlake(&args)
    };
    let out = restore(&["--snapshot", "latest"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let data = &report["tables"][0];
    assert_eq!(data["from_version"], data["to_version"], "{report}");
    assert_eq!(report["snapshot_version"], data["from_version"], "{report}");
    assert_eq!(report["offsets"].as_object().unwrap().len(), 3, "{report}");
    let out = restore(&["--version", "99"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("past the data table's latest"));
}

#[test]
fn generate_is_deterministic_and_writes_a_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str| {
        let out = dir.path().join(name);
        let manifest = dir.path().join(format!("{name}.manifest"));
        let o = finlake(&[
            "generate",
            "--rows",
            "2000",
            "--faults",
            "0.05",
            "--seed",
            "3",
            "--out",
            out.to_str().unwrap(),
            "--manifest",
            manifest.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (
            std::fs::read(out).unwrap(),
            std::fs::read_to_string(manifest).unwrap(),
        )
    };
    let (a, ma) = run("a.jsonl");
    let (b, _) = run("b.jsonl");
    assert_eq!(a, b);
    assert_eq!(ma.lines().count(), 2000);
    assert!(
        ma.lines()
            .any(|l| l.contains("\"rejected\"") && l.contains("\"field\"")),
        "manifest names fields"
    );
    let bad = finlake(&[
        "generate",
        "--rows",
        "1",
        "--faults",
        "2",
        "--out",
        "/dev/null",
    ]);
    assert_eq!(bad.status.code(), Some(2));
}

/// The commands in README.md's `sh` blocks, as written: `cargo run --release -- ARGS` runs
/// this build's `finlake ARGS` (the same program in the test profile), `./scripts/test` is
/// the suite running this test and is skipped. Any other command fails the test, so the
/// README cannot show one nobody runs.
fn readme_commands() -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut out = Vec::new();
    let mut in_sh = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            in_sh = !in_sh && t == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let cmd = t.split(" #").next().unwrap().trim();
        if cmd.is_empty() || cmd == "./scripts/test" {
            continue;
        }
        let args = cmd
            .strip_prefix("cargo run --release -- ")
            .unwrap_or_else(|| {
                panic!("README command `{cmd}` is not one this test knows how to run")
            });
        out.push(args.split_whitespace().map(String::from).collect());
    }
    out
}

#[test]
fn readme_commands_run_as_written() {
    let cmds = readme_commands();
    assert!(cmds.len() >= 2, "{cmds:?}");
    let dir = tempfile::tempdir().unwrap();
    // the README is run from the repository root: samples/ is where specs are found
    std::os::unix::fs::symlink(root().join("samples"), dir.path().join("samples")).unwrap();
    for args in cmds {
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        if args[0] == "demo" {
            // a small size: the point is that the command works as written
            args.extend(["--rows", "3000"]);
        }
        let out = Command::new(env!("CARGO_BIN_EXE_finlake"))
            .args(&args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "`finlake {}` failed:\n{}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The streaming path through the binaries, as a developer runs it: `finlake dev-kafka` (the
/// broker, its own process), `finlake generate --kafka` (the feed, with its manifest of where
/// each message went), `finlake ingest` on the sample spec with `${KAFKA_BOOTSTRAP}` and
/// `${LAKE_URI}` from the environment. Every message of the manifest is in the lake once.
#[test]
fn dev_kafka_generate_and_ingest_through_the_binaries() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Command::new(env!("CARGO_BIN_EXE_finlake"))
        .args(["dev-kafka", "--partitions", "2", "--exit-on-stdin-close"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(broker.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let bootstrap = line.trim().to_string();
    assert!(bootstrap.contains(':'), "bootstrap address: {line:?}");
    let manifest = dir.path().join("manifest.jsonl");
    let out = finlake(&[
        "generate",
        "--kafka",
        &bootstrap,
        "--rows",
        "4000",
        "--faults",
        "0.02",
        "--manifest",
        manifest.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refdata = dir.path().join("refdata");
    std::fs::create_dir_all(&refdata).unwrap();
    std::fs::write(
        refdata.join("fx_rates.csv"),
        finlake_core::generate::fx_rates_csv(finlake_core::demo::demo_date(), 42),
    )
    .unwrap();
    let lake = dir.path().join("lake");
    let mut ingest = Command::new(env!("CARGO_BIN_EXE_finlake"))
        .args(["ingest", "samples/market-data-stream.yaml", "--refdata"])
        .arg(&refdata)
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env("KAFKA_BOOTSTRAP", &bootstrap)
        .env("LAKE_URI", &lake)
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&manifest)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let high = |p: i64| rows.iter().filter(|r| r["partition"] == p).count() as i64;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let trades = lake.join("market/trades");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let done = rt.block_on(async {
            let Ok(url) = finlake_core::delta::table_url(&trades.display().to_string()) else {
                return false;
            };
            let Ok(t) = deltalake::open_table(url).await else {
                return false;
            };
            let mut ok = true;
            for p in 0..2 {
                let id = format!("market-data-stream/market.trades/{p}");
                ok &= finlake_core::delta::txn_version(&t, &id)
                    .await
                    .ok()
                    .flatten()
                    == Some(high(p));
            }
            ok
        });
        if done {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not ingested in 90 s");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Command::new("kill")
        .args(["-TERM", &ingest.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(ingest.wait().unwrap().code(), Some(0));
    drop(broker.stdin.take());
    broker.wait().unwrap();
    // what the manifest says is rejected is in the quarantine, at its partition and offset
    let rejected = rows.iter().filter(|r| r["outcome"] == "rejected").count();
    let count = python(
        "import os, sys\nfrom deltalake import DeltaTable\n\
         q = DeltaTable(sys.argv[1]).to_pyarrow_table()\nt = DeltaTable(sys.argv[2]).to_pyarrow_table()\n\
         print(q.num_rows, t.num_rows, flush=True)\nos._exit(0)\n",
        &[
            lake.join("market/quarantine").to_str().unwrap(),
            trades.to_str().unwrap(),
        ],
    );
    let v: Vec<usize> = count
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(v[0], rejected, "quarantine rows");
    assert!(v[1] > 0 && v[0] + v[1] <= 4000, "{v:?}");

    // `finlake trace` answers where each kind of message went, from the lake alone
    let trace = |query: &str| -> (Option<i32>, serde_json::Value) {
        let out = Command::new(env!("CARGO_BIN_EXE_finlake"))
            .args([
                "trace",
                "samples/market-data-stream.yaml",
                query,
                "--format",
                "json",
            ])
            .env("LAKE_URI", &lake)
            .env("FINLAKE_REFDATA", &refdata)
            .env_remove("KAFKA_BOOTSTRAP")
            .current_dir(root())
            .output()
            .unwrap();
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "trace {query}: {e}: {} {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code(), v)
    };
    let at = |r: &serde_json::Value| format!("market.trades:{}:{}", r["partition"], r["offset"]);
    let landed = rows
        .iter()
        .find(|r| r["outcome"] == "lands" && r.get("fault").is_none())
        .unwrap();
    let (code, t) = trace(&at(landed));
    assert_eq!(code, Some(0), "{t}");
    assert_eq!(t["fate"]["outcome"], "landed", "{t}");
    assert_eq!(
        t["fate"]["data_version"], t["batches"][0]["data_version"],
        "{t}"
    );
    let batch = &t["batches"][0];
    assert!(
        batch["from_offset"].as_i64() <= landed["offset"].as_i64()
            && landed["offset"].as_i64() <= batch["to_offset"].as_i64(),
        "{t}"
    );
    // the batch's correlation id leads back to it
    let (code, by_id) = trace(batch["batch_id"].as_str().unwrap());
    assert_eq!(code, Some(0));
    assert_eq!(by_id["batches"][0], *batch);
    let rejected = rows.iter().find(|r| r["outcome"] == "rejected").unwrap();
    let (code, t) = trace(&at(rejected));
    assert_eq!(code, Some(0), "{t}");
    assert_eq!(t["fate"]["outcome"], "quarantined", "{t}");
    assert!(!t["fate"]["reason"].as_str().unwrap().is_empty(), "{t}");
    // a producer retry: dropped as the duplicate of the message it repeats
    let dup = rows
        .iter()
        .find(|r| {
            r["fault"]
                .as_str()
                .is_some_and(|f| f.starts_with("duplicate_of:"))
        })
        .expect("the feed has producer retries");
    let j: usize = dup["fault"].as_str().unwrap()["duplicate_of:".len()..]
        .parse()
        .unwrap();
    // (the two are on different partitions: whichever was read first is the original)
    let (code, t) = trace(&at(dup));
    assert_eq!(code, Some(0), "{t}");
    let (code, u) = trace(&at(&rows[j]));
    assert_eq!(code, Some(0), "{u}");
    let (copy, original, t) = if t["fate"]["outcome"] == "duplicate" {
        assert_eq!(u["fate"]["outcome"], "landed", "{u}");
        (dup, &rows[j], t)
    } else {
        assert_eq!(t["fate"]["outcome"], "landed", "{t}");
        (&rows[j], dup, u)
    };
    assert_eq!(t["fate"]["outcome"], "duplicate", "{t} for {copy}");
    assert_eq!(t["fate"]["of_partition"], original["partition"], "{t}");
    assert_eq!(t["fate"]["of_offset"], original["offset"], "{t}");
    // beyond what was read, and an id nobody issued
    let (code, t) = trace(&format!("market.trades:0:{}", high(0) + 5));
    assert_eq!(
        (code, &t["fate"]["outcome"]),
        (Some(0), &serde_json::json!("not_yet_ingested")),
        "{t}"
    );
    let (code, _) = trace("ING:no-such-batch");
    assert_eq!(code, Some(65));
}
