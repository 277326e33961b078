//! `finlake-ingest` through its binary.

use std::collections::HashMap;
use std::time::Duration;

use arrow::array::AsArray;
use finlake_core::generate::WireFormat;

use crate::harness::*;

const PROCESSING: &str = "{max_batch_size: 2000, batch_timeout: 50ms, commit_interval: 300ms}";

/// Messages produced before the ingestor's first start all land (offset 0 of every partition
/// included), with the sample spec's rules and dedup; every offset is exactly one of landed,
/// quarantined, duplicate; SIGTERM exits 0; Python reads both tables; every reject is a dead
/// letter with its raw bytes and the finlake headers.
fn lands_a_feed_produced_before_the_first_start(format: WireFormat, spec_format: &str) {
    let broker = Broker::start(3);
    let confluent = (spec_format == "AVRO_CONFLUENT").then_some(7);
    let (manifest, placed) = produce(&broker.bootstrap, gen(20_000, 0.02, 42, format), confluent);
    let w = Workdir::new(spec_format, PROCESSING);
    let ingest = Ingest::start(&w, &broker.bootstrap, &[]);
    wait_caught_up(&broker, &w, &ingest, Duration::from_secs(120));
    // the lag gauges come from a fetch of the high watermarks that runs on its own task
    // after a commit: give it a moment to report
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let (status, body) = loop {
        let (status, body) = http_get(&ingest.metrics);
        if body.contains("finlake_ingest_consumer_lag_messages{")
            || std::time::Instant::now() > deadline
        {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status, 200);
    assert!(body.contains("finlake_ingest_commits_total"), "{body}");
    let ready = http_get(&ingest.metrics.replace("/metrics", "/readyz"));
    assert_eq!(ready.0, 200, "{}", ready.1);
    promtool_check(&body);
    assert!(
        body.contains("finlake_ingest_consumer_lag_messages{"),
        "lag per partition: {body}"
    );
    // the allocator's live heap, as jemalloc counts it: a real figure, not a zero
    let allocated = body
        .lines()
        .find_map(|l| l.strip_prefix("finlake_allocator_bytes{kind=\"allocated\"} "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("allocator bytes: {body}"));
    assert!(allocated > 1 << 20, "allocated {allocated} B");
    let log = ingest.log();
    assert_eq!(ingest.stop(), 0, "{log}");
    // every line of the pipeline's run carries a correlation id
    let mut lines = 0;
    for line in log.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let target = v["target"].as_str().unwrap_or_default();
        if target.starts_with("finlake_ingest::ingestor")
            || target.starts_with("finlake_ingest::assign")
        {
            lines += 1;
            assert!(
                v.pointer("/span/correlation_id").is_some(),
                "a line without a correlation id: {line}"
            );
        }
    }
    assert!(lines > 5, "{log}");
    // the group's committed offsets (what kafka-consumer-groups and kcat show) follow the
    // Delta versions: a hint for lag tools, written after each commit
    let committed = group_offsets(&broker.bootstrap, "finlake-market-data-stream", 3);
    assert_eq!(
        committed,
        versions(&w.trades(), 3),
        "committed offsets = Delta versions"
    );

    let (landed, quarantined, duplicates) = reconcile(&broker, &w);
    // the manifest: what the stages reject is quarantined; every duplicate the generator
    // repeated is counted once
    let rejected: std::collections::HashSet<(i32, i64)> = manifest
        .iter()
        .zip(&placed)
        .filter(|(e, _)| e.outcome == "rejected")
        .map(|(_, p)| (p.partition, p.offset))
        .collect();
    let faults_dup = manifest
        .iter()
        .filter(|e| {
            e.fault
                .as_deref()
                .is_some_and(|f| f.starts_with("duplicate_of:"))
        })
        .count() as u64;
    assert!(
        faults_dup > 0 && !rejected.is_empty(),
        "the feed has faults"
    );
    assert_eq!(
        quarantined,
        rejected.len(),
        "quarantine holds the manifest's rejects"
    );
    assert_eq!(
        duplicates, faults_dup,
        "each repeated message is one counted duplicate"
    );
    assert_eq!(landed + quarantined + duplicates as usize, 20_000);
    let landed_keys = lineage(&w.trades());
    for p in placed.iter().filter(|p| p.offset == 0) {
        assert!(
            landed_keys.contains_key(&(p.partition, 0)) || rejected.contains(&(p.partition, 0)),
            "offset 0 of partition {} is in the lake",
            p.partition
        );
    }
    assert_eq!(python_counts(&w.trades()), (landed, landed));
    assert_eq!(python_counts(&w.quarantine()), (quarantined, quarantined));
    // dead letters: one per reject, with its raw bytes and the headers
    let raw = quarantine_raw(&w.quarantine());
    let letters = dead_letters(&broker.bootstrap);
    assert_eq!(
        letters.len(),
        quarantined,
        "one dead letter per quarantine row"
    );
    for (payload, h) in &letters {
        for k in [
            "finlake-reason",
            "finlake-rule",
            "finlake-source",
            "finlake-correlation-id",
        ] {
            assert!(h.contains_key(k), "dead letter without {k}: {h:?}");
        }
        let src: Vec<&str> = h["finlake-source"].rsplitn(3, '/').collect();
        let key = (
            src[1].parse::<i32>().unwrap(),
            src[0].parse::<i64>().unwrap(),
        );
        assert_eq!(
            raw.get(&key),
            Some(payload),
            "dead letter {key:?} carries the raw bytes"
        );
        assert!(h["finlake-correlation-id"].starts_with("ING:"));
    }
    // an outside client sees them too, as the guide's troubleshooting expects
    let out = std::process::Command::new("kcat")
        .args([
            "-b",
            &broker.bootstrap,
            "-C",
            "-t",
            DLQ,
            "-e",
            "-q",
            "-f",
            "%h\\n",
        ])
        .output()
        .expect("kcat (Debian package kcat; scripts/test installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("finlake-reason="))
            .count(),
        quarantined,
        "{text}"
    );
}

/// `promtool check metrics` (Debian package prometheus) accepts the exposition.
fn promtool_check(body: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn json_feed_produced_before_the_first_start_lands_exactly_once() {
    lands_a_feed_produced_before_the_first_start(WireFormat::Json, "JSON");
}

#[test]
fn avro_confluent_feed_produced_before_the_first_start_lands_exactly_once() {
    lands_a_feed_produced_before_the_first_start(WireFormat::Avro, "AVRO_CONFLUENT");
}

/// Micro-batches decoded and evaluated side by side (`parallelism: 4`, batches of 100)
/// still reach dedup in their partition's order: on one partition, each message the
/// generator repeated is the one counted as the duplicate, of the very message it repeats,
/// never the other way round.
#[test]
fn parallel_micro_batches_keep_their_partitions_order() {
    let broker = Broker::start(1);
    let (manifest, placed) = produce(
        &broker.bootstrap,
        gen(6_000, 0.05, 7, WireFormat::Json),
        None,
    );
    let w = Workdir::new(
        "JSON",
        "{max_batch_size: 100, batch_timeout: 50ms, commit_interval: 300ms, parallelism: 4}",
    );
    let ingest = Ingest::start(&w, &broker.bootstrap, &[]);
    wait_caught_up(&broker, &w, &ingest, Duration::from_secs(120));
    let log = ingest.log();
    assert_eq!(ingest.stop(), 0, "{log}");
    let (_, _, duplicates) = reconcile(&broker, &w);
    // (duplicate's offset, offset of the message it repeats), from the manifest
    let mut expected: Vec<(i64, i64)> = manifest
        .iter()
        .zip(&placed)
        .filter_map(|(e, p)| {
            let j: usize = e
                .fault
                .as_deref()?
                .strip_prefix("duplicate_of:")?
                .parse()
                .ok()?;
            Some((p.offset, placed[j].offset))
        })
        .collect();
    expected.sort();
    assert!(
        expected.len() >= 20,
        "the feed repeats messages: {expected:?}"
    );
    let mut counted = Vec::new();
    for b in read_table(&w.events()) {
        let dups = b
            .column_by_name("duplicate_offsets")
            .unwrap()
            .as_list::<i32>();
        let firsts = b.column_by_name("first_offsets").unwrap().as_list::<i32>();
        for r in 0..b.num_rows() {
            let d = dups.value(r);
            let f = firsts.value(r);
            let (d, f) = (
                d.as_primitive::<arrow::datatypes::Int64Type>(),
                f.as_primitive::<arrow::datatypes::Int64Type>(),
            );
            counted.extend(d.values().iter().copied().zip(f.values().iter().copied()));
        }
    }
    counted.sort();
    assert_eq!(duplicates as usize, expected.len());
    assert_eq!(
        counted, expected,
        "each repeat is the duplicate, of its original"
    );
}

/// Produces `chunks` chunks of the feed while the test goes on; returns the manifest and
/// placements when joined.
fn produce_in_background(
    bootstrap: String,
    rows: usize,
    chunks: usize,
    pause: Duration,
) -> std::thread::JoinHandle<Vec<finlake_core::generate::Expected>> {
    std::thread::spawn(move || {
        // one feed, produced a chunk at a time: the seed is per chunk, so the chunks differ
        let mut manifest = Vec::new();
        for c in 0..chunks {
            let (m, _) = produce(
                &bootstrap,
                gen(rows / chunks, 0.02, 1000 + c as u64, WireFormat::Json),
                None,
            );
            manifest.extend(m);
            std::thread::sleep(pause);
        }
        manifest
    })
}

/// A tiny seeded generator for kill times (no dependency for one number a second).
struct XorShift(u64);

impl XorShift {
    fn next_ms(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo)
    }
}

/// SIGKILL at random moments, ten times, while the feed is being produced: after the last
/// restart every offset is exactly one of landed, quarantined, duplicate: nothing lost,
/// nothing twice, quarantine included.
#[test]
fn survives_ten_sigkills_during_a_load_with_nothing_lost_or_doubled() {
    let broker = Broker::start(3);
    let w = Workdir::new("JSON", PROCESSING);
    // A killed member holds its partitions until its session times out (the mock refuses
    // less than 6 s, and then waits 3 s for an empty group): each restart joins a group of
    // its own instead. Start offsets come from the Delta log, not the group, so this is the
    // same recovery; it only skips the broker's wait.
    let group = |i: usize| format!("finlake-kill-test-{i}");
    let producer = produce_in_background(
        broker.bootstrap.clone(),
        60_000,
        60,
        Duration::from_millis(1_000),
    );
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    // runs that committed something before their kill (so kills hit a working ingestor,
    // not only one still joining the group)
    let mut progressed = 0;
    let mut last = versions(&w.trades(), 3);
    for i in 0..10 {
        let ingest = Ingest::start(
            &w,
            &broker.bootstrap,
            &[
                ("FINLAKE_KAFKA_GROUP_ID", &group(i)),
                // compaction every other commit, so kills land in compactions too
                ("FINLAKE_COMPACT_EVERY", "2"),
            ],
        );
        let joined = ingest.wait_ready(Duration::from_secs(60));
        let run = rng.next_ms(200, 2_500);
        eprintln!("ready after {joined:?}; killing {run} ms later");
        std::thread::sleep(Duration::from_millis(run));
        let log = ingest.log();
        ingest.kill();
        let now = versions(&w.trades(), 3);
        eprintln!("killed at versions {now:?}");
        if now == last {
            eprintln!("{}", log.lines().take(40).collect::<Vec<_>>().join("\n"));
        }
        if now != last {
            progressed += 1;
        }
        last = now;
    }
    let manifest = producer.join().unwrap();
    let ingest = Ingest::start(
        &w,
        &broker.bootstrap,
        &[
            ("FINLAKE_KAFKA_GROUP_ID", &group(10)),
            ("FINLAKE_COMPACT_EVERY", "2"),
        ],
    );
    wait_caught_up(&broker, &w, &ingest, Duration::from_secs(180));
    let log = ingest.log();
    assert_eq!(ingest.stop(), 0, "{log}");
    assert!(
        progressed >= 3,
        "only {progressed} of 10 runs committed before their kill"
    );
    let (landed, quarantined, duplicates) = reconcile(&broker, &w);
    let rejected = manifest.iter().filter(|e| e.outcome == "rejected").count();
    assert_eq!(
        quarantined, rejected,
        "quarantine: every reject exactly once"
    );
    assert_eq!(landed + duplicates as usize, manifest.len() - rejected);
    // the small files were compacted on the way (OPTIMIZE commits, no data change), and an
    // independent reader sees the same rows
    let optimized = operations(&w.trades())
        .iter()
        .filter(|o| o.as_str() == "OPTIMIZE")
        .count();
    assert!(optimized >= 1, "no compaction in the trades table's log");
    assert_eq!(python_counts(&w.trades()), (landed, landed));
    assert_eq!(python_counts(&w.quarantine()), (quarantined, quarantined));
}

/// The `operation` of every commit in a table's log, in version order.
fn operations(table: &std::path::Path) -> Vec<String> {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .filter_map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).ok()?;
                    v.pointer("/commitInfo/operation")?
                        .as_str()
                        .map(str::to_string)
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Two processes share 6 partitions: one joins mid-stream (a cooperative rebalance moves
/// some partitions to it), the other leaves mid-stream (SIGTERM: it commits and leaves).
/// Every offset is committed once: each commit of a partition starts where the previous
/// one, from whichever process, ended.
#[test]
fn two_processes_share_partitions_as_one_joins_and_one_leaves() {
    let broker = Broker::start(6);
    let w = Workdir::new("JSON", PROCESSING);
    let producer = produce_in_background(
        broker.bootstrap.clone(),
        48_000,
        40,
        Duration::from_millis(500),
    );
    let a = Ingest::start(&w, &broker.bootstrap, &[]);
    a.wait_ready(Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(3));
    let b = Ingest::start(&w, &broker.bootstrap, &[]);
    b.wait_ready(Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(5));
    let log_a = a.log();
    assert_eq!(a.stop(), 0, "{log_a}");
    let manifest = producer.join().unwrap();
    wait_caught_up(&broker, &w, &b, Duration::from_secs(120));
    let log_b = b.log();
    assert_eq!(b.stop(), 0, "{log_b}");
    assert!(
        log_a.contains("partitions revoked"),
        "the join moved partitions away from the first process"
    );
    let (landed, quarantined, duplicates) = reconcile(&broker, &w);
    let rejected = manifest.iter().filter(|e| e.outcome == "rejected").count();
    assert_eq!(quarantined, rejected);
    assert_eq!(landed + duplicates as usize, manifest.len() - rejected);
    // both processes committed, and while both ran each partition had one committer
    let meta = commit_metadata(&w.trades());
    let instances: std::collections::BTreeSet<&str> = meta
        .iter()
        .map(|m| m["instance"].as_str().unwrap())
        .collect();
    assert_eq!(instances.len(), 2, "{instances:?}");
}

/// The fencing path: another writer commits a partition this ingestor owns (a stand-in for
/// a process that took it over). The ingestor's next commit of that partition fails its
/// check (or delta-rs's ConcurrentTransaction); it drops what it buffered, re-reads the
/// versions and resumes after the other writer's, committing nothing twice.
#[test]
fn a_partition_committed_by_another_writer_is_fenced_not_doubled() {
    let broker = Broker::start(3);
    let w = Workdir::new("JSON", PROCESSING);
    let producer = produce_in_background(
        broker.bootstrap.clone(),
        30_000,
        30,
        Duration::from_millis(300),
    );
    let ingest = Ingest::start(&w, &broker.bootstrap, &[]);
    ingest.wait_ready(Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    // the other writer claims the next 100 offsets of partition 0, retrying on conflicts
    let app = format!("market-data-stream/{TOPIC}/0");
    let claimed_from = block_on(async {
        loop {
            let url = finlake_core::delta::table_url(&w.trades().display().to_string()).unwrap();
            let t = deltalake::open_table(url).await.unwrap();
            let v = finlake_core::delta::txn_version(&t, &app)
                .await
                .unwrap()
                .unwrap();
            let extras = finlake_core::delta::CommitExtras {
                txns: vec![(app.clone(), v + 100)],
                metadata: vec![(
                    "finlake".into(),
                    serde_json::json!({"pipeline": "market-data-stream", "instance": "other-writer",
                        "partitions": [{"topic": TOPIC, "partition": 0, "from": v, "next": v + 100,
                        "messages": 100, "landed": 0, "quarantined": 0, "duplicates": 0, "external": 100}]}),
                )],
                deferred_checkpoint: false,
            };
            match finlake_core::delta::append(t, vec![], &extras).await {
                Ok(_) => break v,
                Err(e) if e.is_concurrent_transaction() => continue,
                Err(e) => panic!("{e}"),
            }
        }
    });
    let manifest = producer.join().unwrap();
    wait_caught_up(&broker, &w, &ingest, Duration::from_secs(120));
    let (_, metrics) = http_get(&ingest.metrics);
    let log = ingest.log();
    assert_eq!(ingest.stop(), 0, "{log}");
    let fenced = metric(&metrics, "finlake_ingest_fenced_total");
    assert!(fenced >= 1.0, "the fencing path ran: {metrics}");
    assert!(log.contains("resync"), "{log}");
    // nothing of the claimed range landed; everything else reconciles
    let landed = lineage(&w.trades());
    let quarantined = lineage(&w.quarantine());
    for o in claimed_from..claimed_from + 100 {
        assert!(
            !landed.contains_key(&(0, o)) && !quarantined.contains_key(&(0, o)),
            "offset {o} was claimed by the other writer"
        );
    }
    let (l, q, d) = reconcile(&broker, &w);
    assert_eq!(l + q + d as usize + 100, manifest.len());
}

/// The broker goes down for 4 s mid-load and comes back, then fetches and produces fail
/// with injected errors: the ingestor recovers without a restart and nothing is lost.
#[test]
fn broker_down_and_injected_request_errors_lose_nothing() {
    use rdkafka::types::RDKafkaApiKey;
    use rdkafka::types::RDKafkaRespErr;
    let broker = Broker::start(3);
    let w = Workdir::new("JSON", PROCESSING);
    let producer = produce_in_background(
        broker.bootstrap.clone(),
        20_000,
        20,
        Duration::from_millis(400),
    );
    let ingest = Ingest::start(&w, &broker.bootstrap, &[]);
    ingest.wait_ready(Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1));
    broker.with(|c| c.broker_down(1).unwrap());
    std::thread::sleep(Duration::from_secs(4));
    broker.with(|c| c.broker_up(1).unwrap());
    std::thread::sleep(Duration::from_secs(1));
    broker.with(|c| {
        c.request_errors(
            RDKafkaApiKey::Fetch,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 5],
        );
        c.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT; 3],
        );
    });
    let manifest = producer.join().unwrap();
    wait_caught_up(&broker, &w, &ingest, Duration::from_secs(120));
    let (_, metrics) = http_get(&ingest.metrics);
    let log = ingest.log();
    assert_eq!(ingest.stop(), 0, "{log}");
    assert!(
        metric(&metrics, "finlake_ingest_kafka_errors_total") >= 1.0,
        "the outage was seen by the client: {metrics}"
    );
    let (landed, quarantined, duplicates) = reconcile(&broker, &w);
    let rejected = manifest.iter().filter(|e| e.outcome == "rejected").count();
    assert_eq!(quarantined, rejected);
    assert_eq!(landed + duplicates as usize, manifest.len() - rejected);
    assert!(
        dead_letters(&broker.bootstrap).len() >= quarantined,
        "dead letters are at least once"
    );
}

/// A metric's value (summed over its label sets) from the exposition text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

/// The committed offsets of `group` on the source topic, by partition.
fn group_offsets(bootstrap: &str, group: &str, partitions: i32) -> Vec<Option<i64>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(TOPIC, p);
    }
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    (0..partitions)
        .map(|p| match got.find_partition(TOPIC, p).map(|e| e.offset()) {
            Some(rdkafka::Offset::Offset(o)) => Some(o),
            _ => None,
        })
        .collect()
}

/// Bad configuration fails fast at start-up with exit 2 and a message naming the file:
/// a spec with no broker (no `bootstrap_servers`, no KAFKA_BOOTSTRAP), a batch pipeline, a
/// spec file that is not there.
#[test]
fn bad_configuration_exits_2_at_start_naming_the_file() {
    let w = Workdir::new("JSON", PROCESSING);
    let spec = w.dir.path().join("spec.yaml");
    let run = |spec: &std::path::Path, env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_finlake-ingest"));
        cmd.arg(spec)
            .arg("--refdata")
            .arg(w.dir.path().join("refdata"))
            .args(["--metrics-addr", "127.0.0.1:0", "--log-format", "pretty"])
            .env_remove("KAFKA_BOOTSTRAP")
            .env("LAKE_URI", w.lake());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // the sample's bootstrap defaults to localhost:9092: drop the default to make it missing
    let text = std::fs::read_to_string(&spec).unwrap();
    let no_broker = w.dir.path().join("no-broker.yaml");
    std::fs::write(
        &no_broker,
        text.replace(
            "\"${KAFKA_BOOTSTRAP:-localhost:9092}\"",
            "\"${KAFKA_BOOTSTRAP}\"",
        ),
    )
    .unwrap();
    let (code, err) = run(&no_broker, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("no-broker.yaml") && err.contains("KAFKA_BOOTSTRAP"),
        "{err}"
    );
    let batch = w.dir.path().join("batch.yaml");
    std::fs::write(&batch, text.replace("  type: streaming", "  type: batch")).unwrap();
    let (code, err) = run(&batch, &[("KAFKA_BOOTSTRAP", "127.0.0.1:1")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("batch.yaml") && err.contains("finlake-batch"),
        "{err}"
    );
    let (code, err) = run(&w.dir.path().join("missing.yaml"), &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("missing.yaml"), "{err}");
    let no_workers = w.dir.path().join("no-workers.yaml");
    let zero = text.replace(
        "commit_interval: 300ms}",
        "commit_interval: 300ms, parallelism: 0}",
    );
    assert_ne!(zero, text, "the test's processing line moved");
    std::fs::write(&no_workers, zero).unwrap();
    let (code, err) = run(&no_workers, &[("KAFKA_BOOTSTRAP", "127.0.0.1:1")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("no-workers.yaml") && err.contains("parallelism"),
        "{err}"
    );
}

/// The circuit breaker: a feed with many rejects pauses the source (the metric says so, the
/// log raises the alert and the table stops moving while the broker holds more); SIGUSR1
/// resumes it; in the end nothing was dropped.
#[test]
fn too_many_rejects_pause_the_source_until_the_operator_resumes_it() {
    let broker = Broker::start(2);
    let (manifest, _) = produce(
        &broker.bootstrap,
        gen(6_000, 0.1, 7, WireFormat::Json),
        None,
    );
    let rejected = manifest.iter().filter(|e| e.outcome == "rejected").count();
    assert!(rejected > 200, "the feed has many rejects: {rejected}");
    let w = Workdir::new(
        "JSON",
        "{max_batch_size: 200, batch_timeout: 50ms, commit_interval: 100ms, circuit_breaker: {max_rejects: 40, window: 1m, cool_down: 1h}}",
    );
    let ingest = Ingest::start(&w, &broker.bootstrap, &[]);
    let open = |body: &str| {
        body.lines()
            .any(|l| l.starts_with("finlake_ingest_circuit_open{") && l.ends_with(" 1"))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !open(&http_get(&ingest.metrics).1) {
        assert!(
            std::time::Instant::now() < deadline,
            "the breaker never opened\n{}",
            ingest.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // paused: the versions stand still below what the broker holds
    let highs: Vec<i64> = broker.watermarks().iter().map(|w| w.2).collect();
    std::thread::sleep(Duration::from_millis(500));
    let before = versions(&w.trades(), 2);
    std::thread::sleep(Duration::from_secs(2));
    let after = versions(&w.trades(), 2);
    assert_eq!(before, after, "a paused source commits nothing");
    assert!(
        after.iter().zip(&highs).any(|(v, h)| v.unwrap_or(0) < *h),
        "paused before the end: {after:?} of {highs:?}"
    );
    assert!(
        ingest.log().contains("\"alert\":\"circuit_breaker\""),
        "{}",
        ingest.log()
    );
    // the operator resumes it as often as it opens, until everything is in
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let pid = ingest.child.id().to_string();
    loop {
        let v = versions(&w.trades(), 2);
        if v.iter().zip(&highs).all(|(v, h)| *v == Some(*h)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not caught up: {v:?} of {highs:?}\n{}",
            ingest.log()
        );
        std::process::Command::new("kill")
            .args(["-USR1", &pid])
            .status()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let body = http_get(&ingest.metrics).1;
    let trips: f64 = body
        .lines()
        .filter(|l| l.starts_with("finlake_ingest_circuit_trips_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(trips >= 2.0, "opened again after a resume: {trips}\n{body}");
    assert_eq!(ingest.stop(), 0);
    let (_, quarantined, _) = reconcile(&broker, &w);
    assert_eq!(quarantined, rejected, "nothing dropped");
}

/// A producer's correlation id (a Kafka header) follows its message: into `_correlation_id`
/// of the landed row, or of the quarantine row and the dead letter; `trace` finds the
/// messages by it. Messages without one carry their micro-batch's.
#[test]
fn a_producers_correlation_id_follows_its_message() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let broker = Broker::start(1);
    let (symbols, calendar) = finlake_core::demo::embedded_refdata().unwrap();
    let feed =
        finlake_core::generate::generate(&gen(30, 0.0, 5, WireFormat::Json), &symbols, &calendar);
    type CorrelationHeader<'a> = Option<(&'a str, &'a str)>;
    let mut messages: Vec<(Vec<u8>, CorrelationHeader)> =
        feed.messages.into_iter().map(|m| (m, None)).collect();
    messages[3].1 = Some(("correlation-id", "upstream-ok"));
    messages.push((
        b"{\"nope\"".to_vec(),
        Some(("X-Correlation-Id", "upstream-bad")),
    ));
    block_on(async {
        let producer: FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &broker.bootstrap)
            .create()
            .unwrap();
        for (payload, header) in &messages {
            let mut record = FutureRecord::<(), _>::to(TOPIC)
                .payload(payload)
                .partition(0);
            if let Some((k, v)) = header {
                record = record.headers(OwnedHeaders::new().insert(Header {
                    key: k,
                    value: Some(*v),
                }));
            }
            producer
                .send(record, Duration::from_secs(10))
                .await
                .unwrap();
        }
    });
    let w = Workdir::new("JSON", PROCESSING);
    let ingest = Ingest::start(&w, &broker.bootstrap, &[]);
    wait_caught_up(&broker, &w, &ingest, Duration::from_secs(60));
    assert_eq!(ingest.stop(), 0);
    let ids = |path: &std::path::Path| -> HashMap<i64, String> {
        let mut out = HashMap::new();
        for b in read_table(path) {
            let o = b.column_by_name("_offset").unwrap();
            let o = o
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap();
            // DataFusion scans strings as Utf8View; compare values, not the physical type.
            let c = arrow::compute::cast(
                b.column_by_name("_correlation_id").unwrap(),
                &arrow::datatypes::DataType::Utf8,
            )
            .unwrap();
            let c = arrow::array::AsArray::as_string::<i32>(&c);
            for r in 0..b.num_rows() {
                out.insert(o.value(r), c.value(r).to_string());
            }
        }
        out
    };
    let landed = ids(&w.trades());
    assert_eq!(landed.len(), 30);
    assert_eq!(landed[&3], "upstream-ok");
    assert!(landed[&4].starts_with("ING:"), "{}", landed[&4]);
    assert_eq!(ids(&w.quarantine())[&30], "upstream-bad");
    let letters = dead_letters(&broker.bootstrap);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].1["finlake-correlation-id"], "upstream-bad");
    // trace by the producer's id
    let spec_path = w.dir.path().join("spec.yaml");
    let lake = w.lake().display().to_string();
    let env = |k: &str| match k {
        "LAKE_URI" => Some(lake.clone()),
        "KAFKA_BOOTSTRAP" => Some(broker.bootstrap.clone()),
        _ => None,
    };
    let spec = finlake_core::spec::load_str(
        &spec_path,
        &std::fs::read_to_string(&spec_path).unwrap(),
        &env,
    )
    .unwrap();
    let cfg = finlake_ingest::config::PipelineConfig::from_spec(
        spec,
        &finlake_core::transform::RefData::new(Some(w.dir.path().join("refdata"))),
        &env,
    )
    .unwrap();
    for (id, outcome, offset) in [
        ("upstream-ok", "landed", 3),
        ("upstream-bad", "quarantined", 30),
    ] {
        let q = finlake_ingest::trace::Query::parse(id);
        let t = block_on(finlake_ingest::trace::trace(&cfg, &q, id)).unwrap();
        assert_eq!(t.exit_code(), 0);
        assert_eq!(t.messages.len(), 1, "{t:?}");
        assert_eq!(t.messages[0].at, format!("{TOPIC}:0:{offset}"));
        assert_eq!(t.messages[0].outcome, outcome);
    }
}

/// Replaces the value of `"field":` in a generated JSON message.
fn set_json_field(msg: &[u8], field: &str, value: &str) -> Vec<u8> {
    let s = std::str::from_utf8(msg).unwrap();
    let tag = format!("\"{field}\":");
    let start = s.find(&tag).unwrap() + tag.len();
    let end = start + s[start..].find([',', '}']).unwrap();
    format!("{}{value}{}", &s[..start], &s[end..]).into_bytes()
}

fn json_field<'a>(msg: &'a [u8], field: &str) -> &'a str {
    let s = std::str::from_utf8(msg).unwrap();
    let tag = format!("\"{field}\":");
    let start = s.find(&tag).unwrap() + tag.len();
    let end = start + s[start..].find([',', '}']).unwrap();
    s[start..end].trim_matches('"')
}

/// The sample's `cep_patterns` on a stream that restarts half way: `price-gap` raises exactly
/// the alerts a by-hand pass over the landed rows finds (a symbol's first trade after the
/// restart is compared with its last before it: the state is seeded from the table), and
/// `unusual-volume` catches every injected spike, its 5m average seeded the same way. Each
/// alert is in the alerts table once and on its output topic as JSON; Python reads the table.
#[test]
fn pattern_alerts_land_once_reach_their_topics_and_survive_a_restart() {
    let broker = Broker::start(1);
    let (symbols, calendar) = finlake_core::demo::embedded_refdata().unwrap();
    let feed = finlake_core::generate::generate(
        &gen(6000, 0.0, 11, WireFormat::Json),
        &symbols,
        &calendar,
    );
    let mut msgs = feed.messages;
    let half = msgs.len() / 2;
    let micros = |m: &[u8]| {
        chrono::DateTime::parse_from_rfc3339(json_field(m, "timestamp"))
            .unwrap()
            .timestamp_micros()
    };
    // in the second half: each symbol's first trade. Every other one gaps 20% from the
    // symbol's last price before the restart; the rest that follow their symbol's previous
    // trade within 4 minutes trade 1,000,000 shares (the feed trades at most 9,900)
    let mut last: HashMap<String, usize> = HashMap::new();
    for (i, m) in msgs[..half].iter().enumerate() {
        last.insert(json_field(m, "symbol").to_string(), i);
    }
    let (mut gaps, mut spikes) = (Vec::new(), Vec::new());
    let mut seen = std::collections::HashSet::new();
    for i in half..msgs.len() {
        let symbol = json_field(&msgs[i], "symbol").to_string();
        if !seen.insert(symbol.clone()) {
            continue;
        }
        let Some(&before) = last.get(&symbol) else {
            continue;
        };
        if gaps.len() <= spikes.len() {
            let p: f64 = json_field(&msgs[before], "price").parse().unwrap();
            msgs[i] = set_json_field(&msgs[i], "price", &format!("{:.6}", p * 1.2));
            gaps.push(i as i64);
        } else if micros(&msgs[i]) - micros(&msgs[before]) < 240_000_000 {
            msgs[i] = set_json_field(&msgs[i], "quantity", "1000000");
            spikes.push(i as i64);
        }
    }
    assert!(gaps.len() >= 3 && !spikes.is_empty(), "{gaps:?} {spikes:?}");

    let w = Workdir::new("JSON", PROCESSING);
    produce_raw(&broker.bootstrap, &msgs[..half]);
    let ingest = Ingest::start(&w, &broker.bootstrap, &[]);
    wait_caught_up(&broker, &w, &ingest, Duration::from_secs(90));
    assert_eq!(ingest.stop(), 0);
    produce_raw(&broker.bootstrap, &msgs[half..]);
    let ingest = Ingest::start(&w, &broker.bootstrap, &[]);
    wait_caught_up(&broker, &w, &ingest, Duration::from_secs(90));
    assert!(
        ingest.log().contains("pattern state seeded"),
        "{}",
        ingest.log()
    );
    assert_eq!(ingest.stop(), 0);
    let (landed, _, _) = reconcile(&broker, &w);
    assert_eq!(landed, msgs.len(), "a clean feed lands whole");

    // by hand: over the landed rows in offset order, |price - prev| > 5% of price, exactly
    // (decimals as scaled integers)
    let mut rows: Vec<(i64, String, i128)> = Vec::new();
    for b in read_table(&w.trades()) {
        let sym = arrow::compute::cast(
            b.column_by_name("symbol").unwrap(),
            &arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let sym = sym.as_string::<i32>();
        let off = b
            .column_by_name("_offset")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>();
        let price = b
            .column_by_name("price")
            .unwrap()
            .as_primitive::<arrow::datatypes::Decimal128Type>();
        for i in 0..b.num_rows() {
            rows.push((off.value(i), sym.value(i).to_string(), price.value(i)));
        }
    }
    rows.sort();
    let mut prev: HashMap<&str, i128> = HashMap::new();
    let mut expected_gaps = std::collections::BTreeSet::new();
    for (off, sym, p) in &rows {
        if let Some(q) = prev.insert(sym, *p) {
            if (p - q).abs() * 100 > p * 5 {
                expected_gaps.insert(*off);
            }
        }
    }
    let alerts = alert_rows(&w);
    let of = |name: &str| -> std::collections::BTreeSet<i64> {
        alerts.iter().filter(|a| a.0 == name).map(|a| a.2).collect()
    };
    assert_eq!(of("price-gap"), expected_gaps);
    for g in &gaps {
        assert!(
            expected_gaps.contains(g),
            "the gap at {g} across the restart"
        );
    }
    let volume = of("unusual-volume");
    for s in &spikes {
        assert!(volume.contains(s), "spike at {s} not raised: {volume:?}");
    }

    // the output topics: one JSON message per alert, keyed and traceable to its source row
    for (topic, name) in [
        ("alerts.price_gap", "price-gap"),
        ("alerts.unusual_volume", "unusual-volume"),
    ] {
        let sent = read_topic(&broker.bootstrap, topic);
        let mut offsets = std::collections::BTreeSet::new();
        for (payload, _) in &sent {
            let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
            assert_eq!(v["alert"], name, "{v}");
            assert_eq!(v["source"]["topic"], TOPIC);
            assert!(v["row"]["symbol"].is_string(), "{v}");
            if name == "price-gap" {
                assert!(!v["row"]["prev(price)"].is_null(), "{v}");
            }
            offsets.insert(v["source"]["offset"].as_i64().unwrap());
        }
        assert_eq!(sent.len(), of(name).len(), "{topic}: one message per alert");
        assert_eq!(offsets, of(name), "{topic}");
    }
    let (py, pl) = python_counts(&w.alerts());
    assert_eq!((py, pl), (alerts.len(), alerts.len()));
}

/// A rule with `action: fail` stops the pipeline at the micro-batch that breaks it: exit 65,
/// the log names the rule and the offset, nothing of that batch is committed, and a restart
/// stops there again instead of skipping it.
#[test]
fn a_fail_rule_stops_the_stream_before_committing_the_batch() {
    let broker = Broker::start(1);
    let (symbols, calendar) = finlake_core::demo::embedded_refdata().unwrap();
    let mut feed =
        finlake_core::generate::generate(&gen(50, 0.0, 8, WireFormat::Json), &symbols, &calendar)
            .messages;
    feed[40] = set_json_field(&feed[40], "quantity", "5000000");
    produce_raw(&broker.bootstrap, &feed);
    let w = Workdir::new("JSON", PROCESSING);
    let spec_path = w.dir.path().join("spec.yaml");
    let spec = std::fs::read_to_string(&spec_path).unwrap();
    let skew = "      - {name: clock-skew,";
    assert!(spec.contains(skew));
    std::fs::write(
        &spec_path,
        spec.replace(
            skew,
            &format!("      - {{name: fat-finger, type: sql, condition: \"quantity < 1000000\", action: fail, severity: error}}\n{skew}"),
        ),
    )
    .unwrap();
    for run in 0..2 {
        let ingest = Ingest::start(&w, &broker.bootstrap, &[]);
        let log_path = ingest.log.clone();
        let code = ingest.wait_exit(Duration::from_secs(90));
        let log = std::fs::read_to_string(&log_path).unwrap();
        assert_eq!(code, 65, "run {run}: {log}");
        assert!(
            log.contains("rule `fat-finger` (action: fail)")
                && log.contains(&format!("{TOPIC}/0"))
                && log.contains("the first at offset 40"),
            "run {run}: {log}"
        );
        assert!(
            !lineage(&w.trades()).contains_key(&(0, 40)),
            "the failing row landed"
        );
        assert!(
            versions(&w.trades(), 1)[0].is_none_or(|v| v <= 40),
            "the partition's version moved past the failing offset"
        );
    }
    broker.assert_nothing_dropped();
}

/// How many commits of a table's log write `app`'s `txn` at `version`.
fn txn_writes(table: &std::path::Path, app: &str, version: i64) -> usize {
    let Ok(dir) = std::fs::read_dir(table.join("_delta_log")) else {
        return 0;
    };
    dir.map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter(|p| {
            std::fs::read_to_string(p).unwrap().lines().any(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.pointer("/txn/appId").and_then(|a| a.as_str()) == Some(app)
                    && v.pointer("/txn/version").and_then(|a| a.as_i64()) == Some(version)
            })
        })
        .count()
}

/// A partition that goes quiet has its `txn` written again (same version) every
/// `FINLAKE_TXN_RESTAMP`, in every table the pipeline writes, so a log retention set on a
/// table later cannot expire it; the versions and the reconciliation do not change.
#[test]
fn idle_partitions_txn_versions_are_written_again_unchanged() {
    let broker = Broker::start(2);
    produce(&broker.bootstrap, gen(400, 0.0, 3, WireFormat::Json), None);
    let highs: Vec<Option<i64>> = broker.watermarks().iter().map(|m| Some(m.2)).collect();
    let w = Workdir::new("JSON", PROCESSING);
    let ingest = Ingest::start(&w, &broker.bootstrap, &[("FINLAKE_TXN_RESTAMP", "1s")]);
    wait_caught_up(&broker, &w, &ingest, Duration::from_secs(60));
    let app = format!("market-data-stream/{TOPIC}/1");
    let h = highs[1].unwrap();
    let count = || {
        (
            txn_writes(&w.trades(), &app, h),
            txn_writes(&w.quarantine(), &app, h),
            txn_writes(&w.events(), &app, h),
        )
    };
    let before = count();
    std::thread::sleep(Duration::from_secs(6));
    let after = count();
    let (_, body) = http_get(&ingest.metrics);
    let log = ingest.log();
    assert_eq!(ingest.stop(), 0, "{log}");
    // the re-stamps are commits like any other: every `checkpoint_interval` (3 in these
    // tests) the maintenance task checkpoints the table, off the commit path
    assert!(
        metric(&body, "finlake_ingest_checkpoints_total") >= 1.0,
        "{body}\n{log}"
    );
    assert!(log.contains("checkpoint written"), "{log}");
    let checkpoints = std::fs::read_dir(w.trades().join("_delta_log"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".checkpoint.parquet")
        })
        .count();
    assert!(checkpoints >= 1, "no checkpoint in the trades table's log");
    assert!(
        after.0 >= before.0 + 2,
        "data: {before:?} -> {after:?}\n{log}"
    );
    assert!(after.1 > before.1, "quarantine: {before:?} -> {after:?}");
    assert!(
        after.2 > before.2,
        "processed_events: {before:?} -> {after:?}"
    );
    assert!(log.contains("re-stamping idle partitions"), "{log}");
    assert_eq!(versions(&w.trades(), 2), highs);
    let (landed, quarantined, duplicates) = reconcile(&broker, &w);
    assert_eq!(landed + quarantined + duplicates as usize, 400);
}

/// A `FINLAKE_TXN_RESTAMP` that is no duration, or a `FINLAKE_COMPACT_EVERY` that is no
/// number, is refused at start-up, naming it.
#[test]
fn a_bad_restamp_interval_exits_2() {
    let broker = Broker::start(1);
    let w = Workdir::new("JSON", PROCESSING);
    for (var, value) in [
        ("FINLAKE_TXN_RESTAMP", "often"),
        ("FINLAKE_COMPACT_EVERY", "-1"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_finlake-ingest"))
            .arg(w.dir.path().join("spec.yaml"))
            .arg("--refdata")
            .arg(w.dir.path().join("refdata"))
            .env("KAFKA_BOOTSTRAP", &broker.bootstrap)
            .env("LAKE_URI", w.lake())
            .env(var, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(&format!("{var}=`{value}`")), "{stderr}");
    }
}

/// `finlake restore` takes the pipeline's tables back to an earlier data-table version with
/// the offsets recorded in it; the restarted ingestor replays the stream from there, and every
/// offset is in the lake exactly once again, with the same rows as before the restore.
#[test]
fn restore_to_a_snapshot_replays_the_stream_from_its_offsets() {
    use finlake_core::delta::TableSpec;
    use finlake_ingest::restore::{restore, Target};
    use std::path::PathBuf;
    let broker = Broker::start(2);
    produce(
        &broker.bootstrap,
        gen(1500, 0.02, 5, WireFormat::Json),
        None,
    );
    let w = Workdir::new("JSON", PROCESSING);
    let ingest = Ingest::start(&w, &broker.bootstrap, &[]);
    wait_caught_up(&broker, &w, &ingest, Duration::from_secs(60));
    let snapshot = block_on(async {
        finlake_core::delta::open_existing(&w.trades().display().to_string(), &HashMap::new())
            .await
            .unwrap()
            .unwrap()
            .version()
            .unwrap()
    });
    let offsets = versions(&w.trades(), 2);
    let rows_at_snapshot = lineage(&w.trades()).len();
    // more of the feed lands on top of the snapshot
    produce(
        &broker.bootstrap,
        gen(1500, 0.02, 6, WireFormat::Json),
        None,
    );
    wait_caught_up(&broker, &w, &ingest, Duration::from_secs(60));
    let rows_before = lineage(&w.trades()).len();
    let quarantined_before = lineage(&w.quarantine()).len();
    assert!(rows_before > rows_at_snapshot);
    let log = ingest.log();
    assert_eq!(ingest.stop(), 0, "{log}");

    let spec_path = w.dir.path().join("spec.yaml");
    let text = std::fs::read_to_string(&spec_path).unwrap();
    let lake = w.lake().display().to_string();
    let spec = finlake_core::spec::load_str(&spec_path, &text, &|k| match k {
        "LAKE_URI" => Some(lake.clone()),
        "KAFKA_BOOTSTRAP" => Some(broker.bootstrap.clone()),
        _ => None,
    })
    .unwrap();
    // a dry run says what it would do and writes nothing
    let dry = block_on(restore(&spec, Target::Version(snapshot), true)).unwrap();
    assert!(dry.tables.iter().all(|t| t.committed_version.is_none()));
    assert_eq!(lineage(&w.trades()).len(), rows_before);
    let report = block_on(restore(&spec, Target::Version(snapshot), false)).unwrap();
    let resumed: Vec<Option<i64>> = (0..2)
        .map(|p| {
            report
                .offsets
                .get(&format!("market-data-stream/{TOPIC}/{p}"))
                .copied()
        })
        .collect();
    assert_eq!(resumed, offsets, "{}", report.text());
    // the data table holds the snapshot's rows, and its txn versions are the snapshot's
    assert_eq!(lineage(&w.trades()).len(), rows_at_snapshot);
    assert_eq!(versions(&w.trades(), 2), offsets);
    // quarantine and processed_events went back with it
    for t in &report.tables[1..3] {
        assert!(
            t.committed_version.is_some() && t.to_version < t.from_version,
            "{}",
            report.text()
        );
    }
    assert!(lineage(&w.quarantine()).len() < quarantined_before);

    // the stream replays from the snapshot's offsets
    let ingest = Ingest::start(&w, &broker.bootstrap, &[]);
    wait_caught_up(&broker, &w, &ingest, Duration::from_secs(60));
    let log = ingest.log();
    assert_eq!(ingest.stop(), 0, "{log}");
    let highs: Vec<i64> = broker.watermarks().iter().map(|m| m.2).collect();
    let spec_of = |uri: PathBuf| TableSpec {
        uri: uri.display().to_string(),
        schema: std::sync::Arc::new(arrow::datatypes::Schema::empty()),
        partition_by: Vec::new(),
        checkpoint_interval: None,
        storage_options: HashMap::new(),
    };
    let r = block_on(finlake_ingest::reconcile::reconcile(
        &spec_of(w.trades()),
        &spec_of(w.quarantine()),
        &spec_of(w.events()),
        TOPIC,
        &highs,
    ))
    .unwrap();
    assert!(
        r.problems.is_empty(),
        "{:?}",
        &r.problems[..r.problems.len().min(5)]
    );
    assert_eq!(r.landed + r.quarantined + r.duplicates, 3000);
    assert_eq!(
        r.landed, rows_before,
        "the replay lands what the first pass landed"
    );
    broker.assert_nothing_dropped();
}
