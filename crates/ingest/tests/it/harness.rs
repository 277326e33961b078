//! Shared pieces: the broker thread, the spec and reference data, the ingestor process, and
//! reading the lake back for reconciliation.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type};
use finlake_core::generate::{GenOptions, WireFormat};
use finlake_core::spec::SourceType;
use finlake_ingest::devkafka::{self, Placed, ProduceOptions};
use rdkafka::mocking::MockCluster;

pub const TOPIC: &str = "market.trades";
pub const DLQ: &str = "market.trades.dlq";

type Job = Box<dyn FnOnce(&MockCluster<'static, rdkafka::producer::DefaultProducerContext>) + Send>;

/// A mock cluster on a thread of its own (it is not `Send`); dropped, it stops.
pub struct Broker {
    pub bootstrap: String,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Broker {
    pub fn start(partitions: i32) -> Broker {
        let (tx, rx) = mpsc::channel::<Job>();
        let (btx, brx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let cluster =
                devkafka::mock_cluster(1, &[TOPIC.to_string(), DLQ.to_string()], partitions)
                    .expect("mock cluster");
            btx.send(cluster.bootstrap_servers()).unwrap();
            while let Ok(job) = rx.recv() {
                job(&cluster);
            }
        });
        Broker {
            bootstrap: brx.recv().unwrap(),
            jobs: Some(tx),
            thread: Some(thread),
        }
    }

    /// Runs `f` on the cluster's thread.
    #[allow(dead_code)]
    pub fn with<F>(&self, f: F)
    where
        F: FnOnce(&MockCluster<'static, rdkafka::producer::DefaultProducerContext>)
            + Send
            + 'static,
    {
        let (tx, rx) = mpsc::channel();
        self.jobs
            .as_ref()
            .unwrap()
            .send(Box::new(move |c| {
                f(c);
                tx.send(()).unwrap();
            }))
            .unwrap();
        rx.recv().unwrap();
    }

    /// (partition, low, high) of the source topic.
    pub fn watermarks(&self) -> Vec<(i32, i64, i64)> {
        devkafka::low_watermarks(&self.bootstrap, TOPIC).expect("watermarks")
    }

    /// Asserts the broker dropped nothing (the mock keeps 5 MiB or 100,000 message sets per
    /// partition): otherwise a reconciliation measures nothing.
    pub fn assert_nothing_dropped(&self) {
        for (p, lo, _) in self.watermarks() {
            assert_eq!(lo, 0, "the mock broker dropped messages of partition {p}");
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn gen(rows: usize, faults: f64, seed: u64, format: WireFormat) -> GenOptions {
    GenOptions {
        rows,
        faults,
        seed,
        format,
        date: finlake_core::demo::demo_date(),
        source_type: SourceType::Trade,
    }
}

/// Produces the feed; returns the manifest and where each message went.
pub fn produce(
    bootstrap: &str,
    opts: GenOptions,
    confluent: Option<u32>,
) -> (Vec<finlake_core::generate::Expected>, Vec<Placed>) {
    let (symbols, calendar) = finlake_core::demo::embedded_refdata().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(devkafka::produce_feed(
        &ProduceOptions {
            bootstrap: bootstrap.to_string(),
            topic: TOPIC.to_string(),
            gen: opts,
            confluent_schema_id: confluent,
            window: 5_000,
            arrival_timestamps: false,
        },
        &symbols,
        &calendar,
    ))
    .expect("produce")
}

/// A work directory: the spec (the sample's, with `processing` set for a test), reference
/// data with the generator's FX rates, and the lake.
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new(format: &str, processing: &str) -> Workdir {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let sample = std::fs::read_to_string(root.join("samples/market-data-stream.yaml")).unwrap();
        let spec = sample
            .replace(
                "    config: {max_batch_size: 1000, batch_timeout: 10ms}",
                &format!("    config: {processing}"),
            )
            .replace("      format: JSON\n", &format!("      format: {format}\n"))
            // checkpoints every few commits: the tests run through the maintenance task's
            // checkpoints and table swaps, kills and rebalances included
            .replace("checkpoint_interval: 50", "checkpoint_interval: 3");
        assert!(
            spec.contains("checkpoint_interval: 3"),
            "the sample's checkpoint line moved"
        );
        let spec = if format == "AVRO_CONFLUENT" {
            spec.replace(
                "        consumer_group: finlake-market-data-stream\n",
                "        consumer_group: finlake-market-data-stream\n        schema_id: 7\n",
            )
        } else {
            spec
        };
        assert!(
            spec.contains(processing),
            "the sample's processing line moved"
        );
        std::fs::write(dir.path().join("spec.yaml"), spec).unwrap();
        let refdata = dir.path().join("refdata");
        std::fs::create_dir_all(&refdata).unwrap();
        std::fs::write(
            refdata.join("fx_rates.csv"),
            finlake_core::generate::fx_rates_csv(finlake_core::demo::demo_date(), 42),
        )
        .unwrap();
        Workdir { dir }
    }

    pub fn lake(&self) -> PathBuf {
        self.dir.path().join("lake")
    }

    pub fn trades(&self) -> PathBuf {
        self.lake().join("market/trades")
    }

    pub fn quarantine(&self) -> PathBuf {
        self.lake().join("market/quarantine")
    }

    pub fn events(&self) -> PathBuf {
        self.lake().join("market/trades_processed_events")
    }

    pub fn alerts(&self) -> PathBuf {
        self.lake().join("market/trades_alerts")
    }
}

/// A running `finlake-ingest`.
pub struct Ingest {
    pub child: Child,
    pub metrics: String,
    pub log: PathBuf,
}

impl Ingest {
    pub fn start(w: &Workdir, bootstrap: &str, extra_env: &[(&str, &str)]) -> Ingest {
        let n = std::fs::read_dir(w.dir.path()).unwrap().count();
        let log = w.dir.path().join(format!("ingest-{n}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_finlake-ingest"));
        cmd.arg(w.dir.path().join("spec.yaml"))
            .arg("--refdata")
            .arg(w.dir.path().join("refdata"))
            .args(["--metrics-addr", "127.0.0.1:0", "--log-format", "json"])
            .env("KAFKA_BOOTSTRAP", bootstrap)
            .env("LAKE_URI", w.lake())
            .env(
                "RUST_LOG",
                std::env::var("FINLAKE_TEST_RUST_LOG")
                    .unwrap_or_else(|_| "warn,finlake_ingest=info".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn finlake-ingest");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut file = std::fs::File::create(&log2).unwrap();
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                use std::io::Write;
                let _ = writeln!(file, "{line}");
                if !sent {
                    if let Some(url) = line.strip_prefix("finlake-ingest: metrics on ") {
                        let _ = tx.send(url.to_string());
                        sent = true;
                    }
                }
            }
        });
        let metrics = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "finlake-ingest did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        Ingest {
            child,
            metrics,
            log,
        }
    }

    /// Waits until `/readyz` says ready (tables open, partitions assigned); returns how long.
    pub fn wait_ready(&self, timeout: Duration) -> Duration {
        let started = Instant::now();
        let url = self.metrics.replace("/metrics", "/readyz");
        while http_get(&url).0 != 200 {
            assert!(
                started.elapsed() < timeout,
                "not ready after {timeout:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        started.elapsed()
    }

    /// SIGTERM, then the exit code.
    pub fn stop(mut self) -> i32 {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "no exit within 60 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to exit on its own; its exit code.
    pub fn wait_exit(mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "still running after {timeout:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Blocks on a future in a fresh runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Runtime::new().unwrap().block_on(f)
}

/// The data table's `txn` version of each partition (None when the table is absent).
pub fn versions(table: &Path, partitions: i32) -> Vec<Option<i64>> {
    block_on(async {
        let url = finlake_core::delta::table_url(&table.display().to_string()).unwrap();
        let Ok(t) = deltalake::open_table(url).await else {
            return vec![None; partitions as usize];
        };
        let mut out = Vec::new();
        for p in 0..partitions {
            let id = format!("market-data-stream/{TOPIC}/{p}");
            out.push(finlake_core::delta::txn_version(&t, &id).await.unwrap());
        }
        out
    })
}

/// Waits until the data table covers every offset the broker holds.
pub fn wait_caught_up(broker: &Broker, w: &Workdir, ingest: &Ingest, timeout: Duration) {
    let highs: Vec<i64> = broker.watermarks().iter().map(|w| w.2).collect();
    let deadline = Instant::now() + timeout;
    loop {
        let v = versions(&w.trades(), highs.len() as i32);
        if v.iter().zip(&highs).all(|(v, h)| *v == Some(*h)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not caught up after {timeout:?}: versions {v:?}, high watermarks {highs:?}\n{}",
            ingest.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn read_table(path: &Path) -> Vec<RecordBatch> {
    block_on(async {
        let url = finlake_core::delta::table_url(&path.display().to_string()).unwrap();
        let t = deltalake::open_table(url).await.unwrap();
        finlake_core::delta::read_all(&t).await.unwrap()
    })
}

/// (partition, offset) of every row of a table, with how often each occurs.
pub fn lineage(path: &Path) -> HashMap<(i32, i64), usize> {
    let mut out = HashMap::new();
    if !path.join("_delta_log").exists() {
        return out;
    }
    for b in read_table(path) {
        for key in keys(&b) {
            *out.entry(key).or_default() += 1;
        }
    }
    out
}

/// The `finlake` metadata of every commit of a table, in version order.
pub fn commit_metadata(path: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(path.join("_delta_log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(m) = v.pointer("/commitInfo/finlake") {
                out.push(m.clone());
            }
        }
    }
    out
}

/// Every (partition, offset) the broker holds is exactly one of: a landed row, a quarantine
/// row, a duplicate counted in a data commit. Returns (landed, quarantined, duplicates).
pub fn reconcile(broker: &Broker, w: &Workdir) -> (usize, usize, u64) {
    broker.assert_nothing_dropped();
    // alerts: each of a landed row, none twice (across the kill and rebalance tests too)
    alert_rows(w);
    let landed = lineage(&w.trades());
    let quarantined = lineage(&w.quarantine());
    for (k, n) in landed.iter().chain(quarantined.iter()) {
        assert_eq!(*n, 1, "{k:?} is in a table {n} times");
    }
    for k in landed.keys() {
        assert!(
            !quarantined.contains_key(k),
            "{k:?} both landed and quarantined"
        );
    }
    // duplicates per partition from the data commits; offset ranges contiguous and disjoint
    let mut dups: BTreeMap<i32, u64> = BTreeMap::new();
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    // messages a test's stand-in for another process claimed (the fencing test)
    let mut external: BTreeMap<i32, u64> = BTreeMap::new();
    // offset ranges (first, last) the micro-batches covered, from processed_events and the
    // stand-in's claims
    let mut ranges: BTreeMap<i32, Vec<(i64, i64)>> = BTreeMap::new();
    for m in commit_metadata(&w.trades()) {
        for p in m["partitions"].as_array().unwrap() {
            let part = p["partition"].as_i64().unwrap() as i32;
            let from = p["from"].as_i64().unwrap();
            let expected = next.get(&part).copied().unwrap_or(0);
            assert_eq!(
                from, expected,
                "partition {part}: a commit starts at {from}, the previous ended at {expected}"
            );
            next.insert(part, p["next"].as_i64().unwrap());
            *dups.entry(part).or_default() += p["duplicates"].as_u64().unwrap();
            let sum = p["landed"].as_u64().unwrap()
                + p["quarantined"].as_u64().unwrap()
                + p["duplicates"].as_u64().unwrap()
                + p["external"].as_u64().unwrap_or(0);
            assert_eq!(sum, p["messages"].as_u64().unwrap(), "commit counts: {p}");
            *external.entry(part).or_default() += p["external"].as_u64().unwrap_or(0);
            if p["external"].as_u64().unwrap_or(0) > 0 {
                ranges
                    .entry(part)
                    .or_default()
                    .push((from, p["next"].as_i64().unwrap() - 1));
            }
        }
    }
    // processed_events: one row per micro-batch, its counts adding up, its duplicates listed
    let mut ev_counts: BTreeMap<i32, [i64; 3]> = BTreeMap::new();
    for b in read_table(&w.events()) {
        let col = |n: &str| b.column_by_name(n).unwrap().clone();
        let i64s = |n: &str| col(n).as_primitive::<Int64Type>().clone();
        let (part, from, to) = (
            col("partition").as_primitive::<Int32Type>().clone(),
            i64s("from_offset"),
            i64s("to_offset"),
        );
        let (msgs, l, q, d) = (
            i64s("messages"),
            i64s("landed"),
            i64s("quarantined"),
            i64s("duplicates"),
        );
        let dup_list = col("duplicate_offsets");
        let dup_list = dup_list.as_list::<i32>();
        for r in 0..b.num_rows() {
            assert_eq!(msgs.value(r), l.value(r) + q.value(r) + d.value(r));
            if !arrow::array::Array::is_null(dup_list, r) {
                assert_eq!(
                    dup_list.value(r).len() as i64,
                    d.value(r),
                    "duplicates listed"
                );
            }
            ranges
                .entry(part.value(r))
                .or_default()
                .push((from.value(r), to.value(r)));
            let c = ev_counts.entry(part.value(r)).or_default();
            c[0] += l.value(r);
            c[1] += q.value(r);
            c[2] += d.value(r);
        }
    }
    for (p, _lo, hi) in broker.watermarks() {
        let l = landed.keys().filter(|k| k.0 == p).count() as i64;
        let q = quarantined.keys().filter(|k| k.0 == p).count() as i64;
        let d = dups.get(&p).copied().unwrap_or(0) as i64;
        let e = external.get(&p).copied().unwrap_or(0) as i64;
        assert_eq!(
            l + q + d + e,
            hi,
            "partition {p}: {l} landed + {q} quarantined + {d} duplicates + {e} claimed elsewhere != {hi} messages"
        );
        assert_eq!(
            next.get(&p).copied().unwrap_or(0),
            hi,
            "partition {p}: commits end below the high watermark"
        );
        let mut covered = ranges.remove(&p).unwrap_or_default();
        covered.sort();
        let mut expect = 0;
        for (from, to) in covered {
            assert_eq!(
                from, expect,
                "processed_events, partition {p}: a batch starts at {from}, the previous ended at {}",
                expect - 1
            );
            expect = to + 1;
        }
        assert_eq!(
            expect, hi,
            "processed_events, partition {p}: covered up to {expect}"
        );
        assert_eq!(
            ev_counts.get(&p).copied().unwrap_or_default(),
            [l, q, d],
            "processed_events counts, partition {p}"
        );
    }
    (landed.len(), quarantined.len(), dups.values().sum())
}

/// Rows of a table as Python's `deltalake` and `polars` count them.
pub fn python_counts(path: &Path) -> (usize, usize) {
    let script = "import os, sys\nfrom deltalake import DeltaTable\nimport polars as pl\n\
        p = sys.argv[1]\nn1 = DeltaTable(p).to_pyarrow_table().num_rows\n\
        n2 = pl.read_delta(p).height\nprint(n1, n2, flush=True)\nos._exit(0)\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8(out.stdout).unwrap();
    let v: Vec<usize> = s.split_whitespace().map(|x| x.parse().unwrap()).collect();
    (v[0], v[1])
}

/// GET a URL on loopback with a plain HTTP/1.1 request.
pub fn http_get(url: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let status = buf[9..12].parse().unwrap();
    let body = buf
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Every message of the dead-letter topic: (payload, headers by name).
pub fn dead_letters(bootstrap: &str) -> Vec<(Vec<u8>, HashMap<String, String>)> {
    read_topic(bootstrap, DLQ)
}

/// Every message of `topic` (payload and headers), from the beginning.
pub fn read_topic(bootstrap: &str, topic: &str) -> Vec<(Vec<u8>, HashMap<String, String>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("reader-{topic}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let parts = devkafka::partition_count(bootstrap, topic).unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..parts {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut eof = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while eof < parts && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                let mut h = HashMap::new();
                if let Some(hs) = m.headers() {
                    for x in hs.iter() {
                        h.insert(
                            x.key.to_string(),
                            String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                        );
                    }
                }
                out.push((m.payload().unwrap_or_default().to_vec(), h));
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => eof += 1,
            Some(Err(e)) => panic!("{e}"),
            None => {}
        }
    }
    out
}

/// (partition, offset) -> raw bytes of every quarantine row.
pub fn quarantine_raw(path: &Path) -> HashMap<(i32, i64), Vec<u8>> {
    let mut out = HashMap::new();
    for b in read_table(path) {
        let raw = arrow::compute::cast(
            b.column_by_name("raw_payload").unwrap(),
            &arrow::datatypes::DataType::Binary,
        )
        .unwrap();
        let raw = raw.as_binary::<i32>();
        for (i, key) in keys(&b).into_iter().enumerate() {
            out.insert(key, raw.value(i).to_vec());
        }
    }
    out
}

/// (`_partition`, `_offset`) of each row of a batch.
fn keys(b: &RecordBatch) -> Vec<(i32, i64)> {
    let p = b
        .column_by_name("_partition")
        .unwrap()
        .as_primitive::<Int32Type>();
    let o = b
        .column_by_name("_offset")
        .unwrap()
        .as_primitive::<Int64Type>();
    p.values()
        .iter()
        .copied()
        .zip(o.values().iter().copied())
        .collect()
}

/// Produces raw payloads to partition 0 of the source topic, in order.
pub fn produce_raw(bootstrap: &str, payloads: &[Vec<u8>]) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    block_on(async {
        let producer: FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("enable.idempotence", "true")
            .create()
            .unwrap();
        let sends: Vec<_> = payloads
            .iter()
            .map(|p| {
                producer.send(
                    FutureRecord::<(), _>::to(TOPIC).payload(p).partition(0),
                    Duration::from_secs(30),
                )
            })
            .collect();
        for s in futures::future::join_all(sends).await {
            s.unwrap();
        }
    });
}

/// The alerts table's rows as (alert, partition, offset), checking that each is of a landed
/// row and none is there twice.
pub fn alert_rows(w: &Workdir) -> Vec<(String, i32, i64)> {
    let mut out = Vec::new();
    if !w.alerts().join("_delta_log").exists() {
        return out;
    }
    let landed = lineage(&w.trades());
    for b in read_table(&w.alerts()) {
        let alert = arrow::compute::cast(
            b.column_by_name("alert").unwrap(),
            &arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let alert = alert.as_string::<i32>();
        let (p, o) = (
            b.column_by_name("_partition")
                .unwrap()
                .as_primitive::<Int32Type>(),
            b.column_by_name("_offset")
                .unwrap()
                .as_primitive::<Int64Type>(),
        );
        for i in 0..b.num_rows() {
            let key = (p.value(i), o.value(i));
            assert!(
                landed.contains_key(&key),
                "an alert of {key:?}, which did not land"
            );
            out.push((alert.value(i).to_string(), key.0, key.1));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for a in &out {
        assert!(
            seen.insert(a.clone()),
            "alert {a:?} is in the alerts table twice"
        );
    }
    out
}
