//! `finlake bench-ingest`: messages pre-produced into the mock broker, then the ingestor (in
//! this process, release build) from start to the commit that covers every offset, with the
//! sample spec's rules and dedup on. Prints one JSON line.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use finlake_core::generate::{GenOptions, WireFormat};
use finlake_core::spec::SourceType;

use crate::config::PipelineConfig;
use crate::demo::runtime;
use crate::devkafka::{self, EmbeddedBroker, ProduceOptions};
use crate::error::{IngestError, Result};
use crate::ingestor::{Health, Ingestor};

/// Benchmark settings.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Messages.
    pub rows: usize,
    /// Partitions of the topic.
    pub partitions: i32,
    /// JSON or Avro (Confluent framing).
    pub format: WireFormat,
    /// `max_batch_size`.
    pub batch: u32,
    /// `commit_interval`, as the spec writes it (`1s`).
    pub commit_interval: String,
}

/// A KiB figure of this process from `/proc/self/status` (`VmHWM`, `VmRSS`); 0 elsewhere.
fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Peak resident set of this process, KiB (`VmHWM`).
pub fn peak_rss_kib() -> u64 {
    proc_status_kib("VmHWM:")
}

/// The sample spec with the benchmark's processing settings, on a lake under `dir`.
fn bench_config(
    dir: &Path,
    bootstrap: &str,
    format: WireFormat,
    processing: &str,
) -> Result<PipelineConfig> {
    crate::demo::sample_config(&dir.join("lake"), bootstrap, format, processing, false, 42)
}

/// Runs the benchmark; returns its JSON summary.
pub fn run(opts: &BenchOptions) -> Result<serde_json::Value> {
    let topic = "market.trades".to_string();
    let partitions = opts.partitions;
    let broker = EmbeddedBroker::start(&[topic.clone(), "market.trades.dlq".into()], partitions)?;
    let bootstrap = broker.bootstrap.clone();
    let rt = runtime()?;
    let (symbols, calendar) = finlake_core::demo::embedded_refdata()?;
    let date = finlake_core::demo::demo_date();
    let produce_started = Instant::now();
    let (_, placed) = rt.block_on(devkafka::produce_feed(
        &ProduceOptions {
            bootstrap: bootstrap.clone(),
            topic: topic.clone(),
            gen: GenOptions {
                rows: opts.rows,
                faults: 0.01,
                seed: 42,
                format: opts.format,
                date,
                source_type: SourceType::Trade,
            },
            confluent_schema_id: (opts.format == WireFormat::Avro).then_some(7),
            window: 20_000,
            arrival_timestamps: false,
        },
        &symbols,
        &calendar,
    ))?;
    let produce_seconds = produce_started.elapsed().as_secs_f64();
    let marks = devkafka::low_watermarks(&bootstrap, &topic)?;
    if let Some((p, lo, _)) = marks.iter().find(|m| m.1 != 0) {
        return Err(IngestError::Internal(format!(
            "the mock broker dropped messages of partition {p} (low watermark {lo}): fewer rows or more partitions"
        )));
    }
    let highs: Vec<i64> = marks.iter().map(|m| m.2).collect();
    let dir = tempfile_dir()?;
    let format = match opts.format {
        WireFormat::Json => "JSON",
        WireFormat::Avro => "AVRO_CONFLUENT",
    };
    let cfg = bench_config(
        &dir,
        &bootstrap,
        opts.format,
        &format!(
            "{{max_batch_size: {}, batch_timeout: 50ms, commit_interval: {}}}",
            opts.batch, opts.commit_interval
        ),
    )?;
    let data = cfg.data.clone();
    let app = |p: i32| crate::config::app_id(&cfg.name, &topic, p);
    let apps: Vec<String> = (0..partitions).map(app).collect();
    let health: Arc<Health> = Arc::default();
    if let Ok(mut c) = health.commits.lock() {
        // each data commit reports its partitions' versions and when it landed: the clock
        // stops at the commit itself, and the benchmark reads no table while it runs
        *c = Some(Vec::new());
    }
    let (stop, stop_watch) = tokio::sync::watch::channel(false);
    let result = rt.block_on(async {
        let started = Instant::now();
        let ingestor = Ingestor::start(cfg, health.clone()).await?;
        let task = tokio::spawn(ingestor.run(stop_watch));
        let mut assigned = None;
        let mut reached = vec![-1i64; partitions as usize];
        let done_at = loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if assigned.is_none() && health.assigned.load(Ordering::SeqCst) {
                assigned = Some(started.elapsed());
            }
            let commits = health
                .commits
                .lock()
                .ok()
                .and_then(|mut c| c.as_mut().map(std::mem::take))
                .unwrap_or_default();
            // the first commit after which every partition is covered
            let mut done = None;
            for (p, next, at) in commits {
                if let Some(r) = reached.get_mut(p as usize) {
                    *r = (*r).max(next);
                }
                if done.is_none() && reached.iter().zip(&highs).all(|(r, h)| r >= h) {
                    done = Some(at);
                }
            }
            if let Some(at) = done {
                break at;
            }
            if task.is_finished() {
                return Err(IngestError::Internal("the ingestor stopped".into()));
            }
        };
        let total = done_at - started;
        let _ = stop.send(true);
        task.await
            .map_err(|e| IngestError::Internal(e.to_string()))??;
        // the table itself, read once after the clock stopped, covers every offset
        let t = finlake_core::delta::open_or_create(&data).await?;
        for (p, a) in apps.iter().enumerate() {
            let v = finlake_core::delta::txn_version(&t, a).await?;
            if v != Some(highs[p]) {
                return Err(IngestError::Internal(format!(
                    "partition {p}: the table's txn is {v:?}, the topic holds {}",
                    highs[p]
                )));
            }
        }
        Ok::<_, IngestError>((assigned.unwrap_or_default(), total))
    });
    broker.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let (assigned, total) = result?;
    let after = (total - assigned).as_secs_f64();
    Ok(serde_json::json!({
        "messages": placed.len(),
        "format": format,
        "partitions": partitions,
        "max_batch_size": opts.batch,
        "commit_interval": opts.commit_interval,
        "produce_seconds": produce_seconds,
        "seconds_to_assignment": assigned.as_secs_f64(),
        "seconds_total": total.as_secs_f64(),
        "seconds_after_assignment": after,
        "messages_per_second_after_assignment": placed.len() as f64 / after,
        "peak_rss_mib": peak_rss_kib() / 1024,
    }))
}

/// Settings of the latency benchmark.
#[derive(Debug, Clone)]
pub struct LatencyOptions {
    /// Messages per second, produced in 10 ms ticks.
    pub rate: u32,
    /// Seconds of load.
    pub seconds: u32,
    /// Seconds at the start left out of the figures (assignment, first commits).
    pub warmup: u32,
    /// Partitions of the topic.
    pub partitions: i32,
    /// `commit_interval`, as the spec writes it.
    pub commit_interval: String,
    /// Turn the stream's compaction off (to measure what it buys).
    pub no_compaction: bool,
}

/// Resident set of this process now, KiB (`VmRSS`).
fn rss_kib() -> u64 {
    proc_status_kib("VmRSS:")
}

/// Steady load at `rate` JSON messages/s (generated as it goes, round robin over the
/// partitions) while the ingestor runs in this process: the latency of each message from
/// the producer's send to the data commit that covers its offset, and this process's RSS
/// every second. The mock broker drops the oldest data past 5 MiB a partition; that is fine
/// here as long as the ingestor keeps up, which the figures show.
pub fn run_latency(opts: &LatencyOptions) -> Result<serde_json::Value> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let topic = "market.trades".to_string();
    let partitions = opts.partitions.max(1);
    let broker = EmbeddedBroker::start(&[topic.clone(), "market.trades.dlq".into()], partitions)?;
    let bootstrap = broker.bootstrap.clone();
    let rt = runtime()?;
    let dir = tempfile_dir()?;
    let cfg = bench_config(
        &dir,
        &bootstrap,
        WireFormat::Json,
        &format!(
            "{{max_batch_size: 20000, batch_timeout: 20ms, commit_interval: {}}}",
            opts.commit_interval
        ),
    )?;
    let cfg = PipelineConfig {
        compact_every: if opts.no_compaction {
            0
        } else {
            cfg.compact_every
        },
        ..cfg
    };
    let (symbols, calendar) = finlake_core::demo::embedded_refdata()?;
    let total = opts.rate as usize * opts.seconds as usize;
    let mut feed = finlake_core::generate::FeedGenerator::new(
        &GenOptions {
            rows: total,
            faults: 0.0,
            seed: 42,
            format: WireFormat::Json,
            date: finlake_core::demo::demo_date(),
            source_type: SourceType::Trade,
        },
        &symbols,
        &calendar,
    );
    let health: Arc<Health> = Arc::default();
    if let Ok(mut c) = health.commits.lock() {
        *c = Some(Vec::new());
    }
    if let Ok(mut c) = health.commit_ms.lock() {
        *c = Some(Vec::new());
    }
    let (stop, stop_watch) = tokio::sync::watch::channel(false);
    let result = rt.block_on(async {
        let ingestor = Ingestor::start(cfg, health.clone()).await?;
        let task = tokio::spawn(ingestor.run(stop_watch));
        while !health.assigned.load(Ordering::SeqCst) {
            if task.is_finished() {
                return Err(IngestError::Internal("the ingestor stopped".into()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let producer: FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("linger.ms", "1")
            .set("compression.type", "lz4")
            .create()
            .map_err(IngestError::kafka("create the load producer"))?;
        // deliveries are awaited in order on a task of their own, which matches each to the
        // commit that covers it; memory stays flat: pending messages and a fixed histogram
        let (dtx, mut drx) =
            tokio::sync::mpsc::unbounded_channel::<(Instant, rdkafka::producer::DeliveryFuture)>();
        let load_started = Instant::now();
        let warmup = Duration::from_secs(opts.warmup as u64);
        let h2 = health.clone();
        let nparts = partitions as usize;
        let collector = tokio::spawn(async move {
            let mut lat = Latencies::new();
            let mut commits: Vec<Vec<(i64, Instant)>> = vec![Vec::new(); nparts];
            let mut pending: Vec<std::collections::VecDeque<(i64, Instant)>> =
                vec![std::collections::VecDeque::new(); nparts];
            let mut failed = 0u64;
            let mut delivered = 0u64;
            let drain = |commits: &mut Vec<Vec<(i64, Instant)>>| {
                if let Ok(mut c) = h2.commits.lock() {
                    if let Some(c) = c.as_mut() {
                        for (p, n, at) in c.drain(..) {
                            if let Some(v) = commits.get_mut(p as usize) {
                                v.push((n, at));
                            }
                        }
                    }
                }
            };
            let resolve =
                |lat: &mut Latencies,
                 commits: &Vec<Vec<(i64, Instant)>>,
                 pending: &mut Vec<std::collections::VecDeque<(i64, Instant)>>| {
                    for (p, q) in pending.iter_mut().enumerate() {
                        while let Some(&(o, at)) = q.front() {
                            let v = &commits[p];
                            let i = v.partition_point(|(n, _)| *n <= o);
                            let Some((_, c)) = v.get(i) else { break };
                            if at.duration_since(load_started) >= warmup {
                                lat.record(c.duration_since(at));
                            }
                            q.pop_front();
                        }
                    }
                };
            let mut last_drain = Instant::now();
            while let Some((at, d)) = drx.recv().await {
                match d.await {
                    Ok(Ok(delivery)) => {
                        delivered += 1;
                        if let Some(q) = pending.get_mut(delivery.partition as usize) {
                            q.push_back((delivery.offset, at));
                        }
                    }
                    _ => failed += 1,
                }
                if last_drain.elapsed() >= Duration::from_millis(10) {
                    drain(&mut commits);
                    resolve(&mut lat, &commits, &mut pending);
                    last_drain = Instant::now();
                }
            }
            // the load is over: wait for the commits that cover the rest
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                drain(&mut commits);
                resolve(&mut lat, &commits, &mut pending);
                if pending.iter().all(|q| q.is_empty()) || Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let unresolved: usize = pending.iter().map(|q| q.len()).sum();
            (lat, delivered, failed, unresolved)
        });
        let per_tick = (opts.rate as usize / 100).max(1);
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut rss: Vec<(f64, u64, Option<finlake_core::telemetry::AllocatorBytes>)> = Vec::new();
        let mut next_rss = Instant::now();
        let mut produced = 0usize;
        let mut i = 0usize;
        while produced < total {
            tick.tick().await;
            let chunk = feed.next_chunk(per_tick.min(total - produced));
            let now = Instant::now();
            for m in &chunk.messages {
                let p = (i % partitions as usize) as i32;
                i += 1;
                let record = FutureRecord::<(), _>::to(&topic).payload(m).partition(p);
                match producer.send_result(record) {
                    Ok(d) => {
                        let _ = dtx.send((now, d));
                    }
                    Err((e, _)) => {
                        return Err(IngestError::Internal(format!(
                            "the load producer's queue refused a message: {e}"
                        )))
                    }
                }
            }
            produced += chunk.messages.len();
            if now >= next_rss {
                rss.push((
                    load_started.elapsed().as_secs_f64(),
                    rss_kib(),
                    finlake_core::telemetry::allocator_bytes(),
                ));
                next_rss = now + Duration::from_secs(1);
            }
            if task.is_finished() {
                return Err(IngestError::Internal("the ingestor stopped".into()));
            }
        }
        let load_seconds = load_started.elapsed().as_secs_f64();
        drop(dtx);
        let (lat, delivered, failed, unresolved) = collector
            .await
            .map_err(|e| IngestError::Internal(e.to_string()))?;
        let _ = stop.send(true);
        task.await
            .map_err(|e| IngestError::Internal(e.to_string()))??;
        if unresolved > 0 {
            return Err(IngestError::Internal(format!(
                "{unresolved} delivered messages were not committed within 120 s of the load's end"
            )));
        }
        Ok::<_, IngestError>((lat, delivered, failed, rss, load_seconds))
    });
    broker.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let (lat, delivered, failed, rss, load_seconds) = result?;
    let commit_ms = health
        .commit_ms
        .lock()
        .ok()
        .and_then(|mut c| c.take())
        .unwrap_or_default();
    // mean of the first and of the last 100 commits, whole and the writing part
    let mean = |v: &[(f64, f64)], part: fn(&(f64, f64)) -> f64| {
        (!v.is_empty()).then(|| v.iter().map(part).sum::<f64>() / v.len() as f64)
    };
    let head = &commit_ms[..commit_ms.len().min(100)];
    let tail = &commit_ms[commit_ms.len().saturating_sub(100)..];
    let (first, last) = (mean(head, |c| c.0), mean(tail, |c| c.0));
    let (first_w, last_w) = (mean(head, |c| c.1), mean(tail, |c| c.1));
    let after_warmup: Vec<_> = rss.iter().filter(|s| s.0 >= opts.warmup as f64).collect();
    let steady: Vec<u64> = after_warmup.iter().map(|r| r.1).collect();
    // the allocator's live heap beside the RSS: growth in `allocated` is memory the program
    // still references; growth in the RSS alone is pages the allocator keeps
    let allocated: Vec<u64> = after_warmup
        .iter()
        .filter_map(|r| r.2.map(|a| a.allocated))
        .collect();
    const MIB: u64 = 1 << 20;
    let per_minute: Vec<serde_json::Value> = after_warmup
        .iter()
        .step_by(60)
        .map(|(t, kib, a)| {
            serde_json::json!({
                "t": t.round(),
                "rss_mib": kib / 1024,
                "allocated_mib": a.map(|a| a.allocated / MIB),
                "resident_mib": a.map(|a| a.resident / MIB),
            })
        })
        .collect();
    Ok(serde_json::json!({
        "rate": opts.rate,
        "seconds": opts.seconds,
        "achieved_rate": delivered as f64 / load_seconds,
        "partitions": partitions,
        "commit_interval": opts.commit_interval,
        "compaction": !opts.no_compaction,
        "delivered": delivered,
        "delivery_failures": failed,
        "measured": lat.count,
        "latency_ms": {"p50": lat.quantile_ms(0.50), "p90": lat.quantile_ms(0.90), "p99": lat.quantile_ms(0.99), "max": lat.max_ms},
        "rss_mib_after_warmup": {
            "first": steady.first().map(|k| k / 1024),
            "min": steady.iter().min().map(|k| k / 1024),
            "max": steady.iter().max().map(|k| k / 1024),
            "last": steady.last().map(|k| k / 1024),
        },
        "allocated_mib_after_warmup": {
            "first": allocated.first().map(|b| b / MIB),
            "max": allocated.iter().max().map(|b| b / MIB),
            "last": allocated.last().map(|b| b / MIB),
        },
        "memory_per_minute": per_minute,
        "commit_ms": {
            "commits": commit_ms.len(),
            "first_100_mean": first,
            "last_100_mean": last,
            "last_over_first": last.zip(first).map(|(l, f)| l / f),
            "writing_first_100_mean": first_w,
            "writing_last_100_mean": last_w,
            "writing_last_over_first": last_w.zip(first_w).map(|(l, f)| l / f),
        },
        "peak_rss_mib": peak_rss_kib() / 1024,
    }))
}

/// A latency histogram in 0.1 ms buckets up to 10 s (and one beyond): fixed memory.
struct Latencies {
    buckets: Vec<u32>,
    count: u64,
    max_ms: f64,
}

impl Latencies {
    const BUCKETS: usize = 100_000;

    fn new() -> Self {
        Latencies {
            buckets: vec![0; Self::BUCKETS + 1],
            count: 0,
            max_ms: 0.0,
        }
    }

    fn record(&mut self, d: Duration) {
        let ms = d.as_secs_f64() * 1e3;
        let i = ((ms * 10.0) as usize).min(Self::BUCKETS);
        self.buckets[i] += 1;
        self.count += 1;
        self.max_ms = self.max_ms.max(ms);
    }

    /// The upper edge of the bucket holding quantile `q`.
    fn quantile_ms(&self, q: f64) -> f64 {
        let target = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += u64::from(*n);
            if seen >= target {
                return (i + 1) as f64 / 10.0;
            }
        }
        f64::NAN
    }
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("finlake-bench-ingest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| finlake_core::Error::io(&dir, e))?;
    Ok(dir)
}
