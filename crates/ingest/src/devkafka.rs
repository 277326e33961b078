//! A broker for development, tests and the demo: librdkafka's mock cluster (the real Kafka
//! wire protocol on loopback) in a process of its own, and the generated feed produced into a
//! broker.
//!
//! Know its limits: each partition keeps at most 5 MiB or 100,000 message sets and silently
//! deletes the oldest beyond that (the low watermark moves: check it is still 0 before
//! reconciling, see [`low_watermarks`]); the cluster is not `Send`; a group's first rebalance
//! waits `group.initial.rebalance.delay.ms` (3 s) and the Rust wrapper offers no safe way to
//! lower it.

use std::io::Write;
use std::time::Duration;

use finlake_core::generate::{FeedGenerator, GenOptions, WireFormat};
use finlake_core::transform::{ExchangeCalendar, SymbolMap};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::error::{IngestError, Result};

/// Starts a mock cluster with `brokers` brokers and `topics` of `partitions` partitions each.
/// The cluster lives as long as the returned value, on the calling thread.
pub fn mock_cluster(
    brokers: i32,
    topics: &[String],
    partitions: i32,
) -> Result<MockCluster<'static, rdkafka::producer::DefaultProducerContext>> {
    let cluster = MockCluster::new(brokers).map_err(IngestError::kafka("start mock cluster"))?;
    for t in topics {
        cluster
            .create_topic(t, partitions, 1)
            .map_err(IngestError::kafka("create topic"))?;
    }
    Ok(cluster)
}

/// The mock broker on a thread of its own (it is not `Send`), until `stop` is dropped or sent.
pub struct EmbeddedBroker {
    /// Its bootstrap address.
    pub bootstrap: String,
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<Result<()>>,
}

impl EmbeddedBroker {
    /// Starts it with `topics` of `partitions` partitions each.
    pub fn start(topics: &[String], partitions: i32) -> Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<Result<String>>();
        let (stop, stop_rx) = std::sync::mpsc::channel::<()>();
        let topics = topics.to_vec();
        // the cluster is not `Send`: it lives and dies on this thread
        let thread = std::thread::spawn(move || -> Result<()> {
            match mock_cluster(1, &topics, partitions) {
                Ok(cluster) => {
                    let _ = tx.send(Ok(cluster.bootstrap_servers()));
                    let _ = stop_rx.recv();
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
            Ok(())
        });
        let bootstrap = rx.recv().map_err(|_| {
            IngestError::Internal("mock broker thread ended before it started".into())
        })??;
        Ok(EmbeddedBroker {
            bootstrap,
            stop,
            thread,
        })
    }

    /// Stops it and waits for its thread.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// `finlake dev-kafka`: starts the mock cluster, prints its bootstrap address on stdout (one
/// line), and serves until SIGTERM or SIGINT, or until stdin closes when `stdin_closes` (so a
/// test's broker dies with the test).
pub fn serve(brokers: i32, topics: &[String], partitions: i32, stdin_closes: bool) -> Result<()> {
    let cluster = mock_cluster(brokers, topics, partitions)?;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{}", cluster.bootstrap_servers());
    let _ = out.flush();
    eprintln!(
        "dev-kafka: mock cluster at {} with topics {topics:?} ({partitions} partitions each); \
         each partition keeps at most 5 MiB or 100,000 message sets",
        cluster.bootstrap_servers()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| IngestError::Internal(format!("runtime: {e}")))?;
    rt.block_on(async {
        let stdin_eof = async {
            if stdin_closes {
                let _ = tokio::task::spawn_blocking(|| {
                    let mut sink = Vec::new();
                    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
                })
                .await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = stdin_eof => {}
            _ = term => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    });
    drop(cluster);
    Ok(())
}

/// Where a produced message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Placed {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// Options of [`produce_feed`].
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    /// Broker list.
    pub bootstrap: String,
    /// Topic.
    pub topic: String,
    /// The feed.
    pub gen: GenOptions,
    /// Confluent framing (magic byte and schema id) for Avro.
    pub confluent_schema_id: Option<u32>,
    /// Messages to leave unacknowledged at most (the producer's window).
    pub window: usize,
    /// Stamp each message with its generated arrival time (a few hundred ms after its event
    /// time) instead of the time it is sent: a recorded day replayed, for a spec whose source
    /// says `ingest_time: message_timestamp`.
    pub arrival_timestamps: bool,
}

/// Produces the generated feed: message `i` to partition `i % partitions`, so each partition
/// is in event-time order. Returns the manifest and where each message went.
pub async fn produce_feed(
    opts: &ProduceOptions,
    symbols: &SymbolMap,
    calendar: &ExchangeCalendar,
) -> Result<(Vec<finlake_core::generate::Expected>, Vec<Placed>)> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &opts.bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        // the mock keeps 5 MiB per partition: compressed message sets hold ~4x the messages
        .set("compression.type", "lz4")
        .set("batch.num.messages", "10000")
        .set("message.timeout.ms", "60000")
        .create()
        .map_err(IngestError::kafka("create producer"))?;
    let partitions = partition_count(&opts.bootstrap, &opts.topic)?;
    let mut feed = FeedGenerator::new(&opts.gen, symbols, calendar);
    let mut manifest = Vec::with_capacity(feed.remaining());
    let mut placed = Vec::with_capacity(feed.remaining());
    let mut index = 0usize;
    let mut arrivals = finlake_core::generate::Arrivals::new(opts.gen.seed);
    while feed.remaining() > 0 {
        let chunk = feed.next_chunk(opts.window.max(1));
        let times = arrivals.next(&chunk.event_times);
        let framed: Vec<Vec<u8>> = match (opts.gen.format, opts.confluent_schema_id) {
            (WireFormat::Avro, Some(id)) => chunk
                .messages
                .iter()
                .map(|m| {
                    let mut f = Vec::with_capacity(m.len() + 5);
                    f.push(0u8);
                    f.extend_from_slice(&id.to_be_bytes());
                    f.extend_from_slice(m);
                    f
                })
                .collect(),
            _ => Vec::new(),
        };
        let payloads: &[Vec<u8>] = if framed.is_empty() {
            &chunk.messages
        } else {
            &framed
        };
        let mut deliveries = Vec::with_capacity(payloads.len());
        for (m, t) in payloads.iter().zip(&times) {
            let partition = (index % partitions as usize) as i32;
            index += 1;
            let mut record: FutureRecord<'_, (), [u8]> = FutureRecord::to(&opts.topic)
                .payload(m.as_slice())
                .partition(partition);
            if opts.arrival_timestamps {
                record = record.timestamp(t.div_euclid(1000));
            }
            deliveries.push(producer.send(record, Duration::from_secs(60)));
        }
        for d in futures::future::join_all(deliveries).await {
            let delivery = d.map_err(|(e, _)| IngestError::Kafka {
                operation: "produce",
                source: e,
            })?;
            placed.push(Placed {
                partition: delivery.partition,
                offset: delivery.offset,
            });
        }
        manifest.extend(chunk.manifest);
    }
    Ok((manifest, placed))
}

fn metadata_client(bootstrap: &str) -> Result<BaseConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(IngestError::kafka("create metadata client"))
}

/// The number of partitions of `topic`, asked through `consumer`.
fn partitions_of(consumer: &BaseConsumer, bootstrap: &str, topic: &str) -> Result<i32> {
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(IngestError::kafka("fetch metadata"))?;
    let n = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().len() as i32)
        .unwrap_or(0);
    if n == 0 {
        return Err(IngestError::Config {
            file: bootstrap.to_string(),
            message: format!("topic `{topic}` does not exist (or has no partitions)"),
        });
    }
    Ok(n)
}

/// The number of partitions of `topic`.
pub fn partition_count(bootstrap: &str, topic: &str) -> Result<i32> {
    partitions_of(&metadata_client(bootstrap)?, bootstrap, topic)
}

/// Each partition's (low, high) watermark. A low watermark above 0 on the mock broker means
/// it deleted messages (5 MiB or 100,000 message sets per partition): a reconciliation then
/// measures nothing.
pub fn low_watermarks(bootstrap: &str, topic: &str) -> Result<Vec<(i32, i64, i64)>> {
    let consumer = metadata_client(bootstrap)?;
    let n = partitions_of(&consumer, bootstrap, topic)?;
    (0..n)
        .map(|p| {
            let (lo, hi) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .map_err(IngestError::kafka("fetch watermarks"))?;
            Ok((p, lo, hi))
        })
        .collect()
}
