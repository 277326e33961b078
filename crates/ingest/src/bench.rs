//! `finlake bench-ingest`: messages pre-produced into the mock broker, then the ingestor (in
//! this process, release build) from start to the commit that covers every offset, with the
//! sample spec's rules and dedup on. Prints one JSON line.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use finlake_core::generate::{GenOptions, WireFormat};
use finlake_core::spec::SourceType;
use finlake_core::transform::RefData;

use crate::config::PipelineConfig;
use crate::devkafka::{self, ProduceOptions};
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

/// Peak resident set of this process, KiB (`VmHWM`).
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Runs the benchmark; returns its JSON summary.
pub fn run(opts: &BenchOptions) -> Result<serde_json::Value> {
    let topic = "market.trades".to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let partitions = opts.partitions;
    let t2 = topic.clone();
    let broker = std::thread::spawn(move || -> Result<()> {
        let cluster = devkafka::mock_cluster(1, &[t2, "market.trades.dlq".into()], partitions)?;
        let _ = tx.send(cluster.bootstrap_servers());
        let _ = stop_rx.recv();
        Ok(())
    });
    let bootstrap = rx
        .recv()
        .map_err(|_| IngestError::Internal("mock broker did not start".into()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| IngestError::Internal(e.to_string()))?;
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
    let refdata = dir.join("refdata");
    std::fs::create_dir_all(&refdata).map_err(|e| finlake_core::Error::io(&refdata, e))?;
    std::fs::write(
        refdata.join("fx_rates.csv"),
        finlake_core::generate::fx_rates_csv(date, 42),
    )
    .map_err(|e| finlake_core::Error::io(&refdata, e))?;
    let format = match opts.format {
        WireFormat::Json => "JSON",
        WireFormat::Avro => "AVRO_CONFLUENT",
    };
    let text = finlake_core::embedded::MARKET_DATA_STREAM
        .replace(
            "    config: {max_batch_size: 1000, batch_timeout: 10ms}",
            &format!(
                "    config: {{max_batch_size: {}, batch_timeout: 50ms, commit_interval: {}}}",
                opts.batch, opts.commit_interval
            ),
        )
        .replace("      format: JSON\n", &format!("      format: {format}\n"))
        .replace(
            "        consumer_group: finlake-market-data-stream\n",
            "        consumer_group: finlake-market-data-stream\n        schema_id: 7\n",
        );
    let lake = dir.join("lake").display().to_string();
    let spec =
        finlake_core::spec::load_str(Path::new("samples/market-data-stream.yaml"), &text, &|k| {
            match k {
                "KAFKA_BOOTSTRAP" => Some(bootstrap.clone()),
                "LAKE_URI" => Some(lake.clone()),
                _ => None,
            }
        })
        .map_err(finlake_core::Error::from)?;
    let cfg = PipelineConfig::from_spec(spec, &RefData::new(Some(refdata)), &|_| None)?;
    let data = cfg.data.clone();
    let app = |p: i32| crate::config::app_id(&cfg.name, &topic, p);
    let apps: Vec<String> = (0..partitions).map(app).collect();
    let health: Arc<Health> = Arc::default();
    let (stop, stop_watch) = tokio::sync::watch::channel(false);
    let result = rt.block_on(async {
        let started = Instant::now();
        let ingestor = Ingestor::start(cfg, health.clone()).await?;
        let task = tokio::spawn(ingestor.run(stop_watch));
        let mut assigned = None;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if assigned.is_none() && health.assigned.load(Ordering::SeqCst) {
                assigned = Some(started.elapsed());
            }
            let t = finlake_core::delta::open_or_create(&data).await?;
            let mut done = true;
            for (p, a) in apps.iter().enumerate() {
                if finlake_core::delta::txn_version(&t, a).await? != Some(highs[p]) {
                    done = false;
                    break;
                }
            }
            if done {
                break;
            }
            if task.is_finished() {
                return Err(IngestError::Internal("the ingestor stopped".into()));
            }
        }
        let total = started.elapsed();
        let _ = stop.send(true);
        task.await
            .map_err(|e| IngestError::Internal(e.to_string()))??;
        Ok::<_, IngestError>((assigned.unwrap_or_default(), total))
    });
    let _ = stop_tx.send(());
    let _ = broker.join();
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

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("finlake-bench-ingest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| finlake_core::Error::io(&dir, e))?;
    Ok(dir)
}
