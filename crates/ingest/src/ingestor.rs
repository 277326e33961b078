//! The consumer loop of one pipeline: messages into per-partition micro-batches, each
//! micro-batch through the stages and the rule engine's stateless half off the reactor, and on
//! the commit cadence the stateful half (dedup) and one commit per table carrying a `txn` per
//! source partition.
//!
//! Exactly once, per partition:
//! - reading starts at the data table's `txn` version (set inside the assign, see
//!   [`crate::assign`]);
//! - a commit first checks that each partition's version in the snapshot it commits against is
//!   the batch's first offset; delta-rs's conflict checker raises `ConcurrentTransaction` when
//!   another writer committed the same app id since. Either means another process owns the
//!   partition now: everything buffered is dropped, versions are re-read and reading resumes
//!   from them ([`Ingestor::resync`]). Never a blind retry;
//! - the quarantine table carries its own versions and skips what it already holds after a
//!   crash between its commit and the data table's;
//! - dedup state is changed only by batches about to be committed (the stateful half runs at
//!   commit time), so dropping a revoked partition's buffers leaves no trace in it; after a
//!   failed commit it is rebuilt from the table's tail.
//!
//! Every source message ends as exactly one of: a landed row, a quarantine row, a counted
//! duplicate. The counts per partition and offset range go into the data commit's metadata
//! (`finlake.partitions`), so the invariant can be checked from the lake alone.

// Data path: no unwrap/expect on anything derived from message bytes or another process.
#![warn(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, UInt32Array};
use arrow::compute::filter_record_batch;
use deltalake::DeltaTable;
use finlake_core::compact;
use finlake_core::delta::{self, CommitExtras};
use finlake_core::pipeline::{quarantine_batch, BatchContext, Rejected};
use finlake_core::spec::{IngestTime, StartingOffsets};
use finlake_quality::engine::{Evaluated, Evaluator};
use finlake_quality::patterns::PatternSet;
use finlake_quality::RuleEngine;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;
use tokio::sync::watch;
use tracing::Instrument;

use crate::assign::{Change, IngestContext, Tp, VersionReader, Versions};
use crate::breaker::Breaker;
use crate::config::PipelineConfig;
use crate::error::{IngestError, Result};
use crate::events::{self, BatchRecord};
use crate::metrics::IngestMetrics;

/// Headers a dead letter carries.
pub mod headers {
    /// Why the message was rejected.
    pub const REASON: &str = "finlake-reason";
    /// The rule or stage that rejected it.
    pub const RULE: &str = "finlake-rule";
    /// `<topic>/<partition>/<offset>` of the source message.
    pub const SOURCE: &str = "finlake-source";
    /// The correlation id of the micro-batch (or the message's own, when it came with one).
    pub const CORRELATION_ID: &str = "finlake-correlation-id";
    /// Headers a producer's own correlation id is taken from, first match wins: it then
    /// follows the message into `_correlation_id`, the quarantine and the dead letter.
    pub const INBOUND_CORRELATION: [&str; 3] =
        [CORRELATION_ID, "correlation-id", "x-correlation-id"];
    /// Longest inbound correlation id kept (a longer one is ignored, with a log line).
    pub const MAX_CORRELATION_LEN: usize = 200;
}

/// The producer's correlation id of a message, if it sent one (valid UTF-8, not too long).
fn inbound_correlation<'m>(m: &'m rdkafka::message::BorrowedMessage<'_>) -> Option<&'m [u8]> {
    use rdkafka::message::Headers;
    let h = m.headers()?;
    for name in headers::INBOUND_CORRELATION {
        if let Some(v) = h
            .iter()
            .find(|x| x.key.eq_ignore_ascii_case(name))
            .and_then(|x| x.value)
        {
            if v.len() <= headers::MAX_CORRELATION_LEN && std::str::from_utf8(v).is_ok() {
                return Some(v);
            }
            tracing::debug!(
                offset = m.offset(),
                "inbound correlation id ignored: not UTF-8 or too long"
            );
        }
    }
    None
}

/// Commits retried after a transient error before the buffers are dropped and re-read.
const COMMIT_ATTEMPTS: u32 = 5;
/// Expired log files are cleaned up (in the background) every this many data commits.
const MAINTENANCE_EVERY: u64 = 100;

/// The tables a pipeline writes, as the maintenance task names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TableKind {
    Data,
    Quarantine,
    Events,
    Alerts,
}
/// How often the consumer-lag gauges are refreshed.
const LAG_EVERY: Duration = Duration::from_secs(5);
/// Buffered micro-batches are committed early once they hold this many messages.
const MAX_PENDING_MESSAGES: usize = 2_000_000;
/// How often the receiving loop walks its partitions for timeouts, idleness and the commit's
/// turn; between walks it only reads the clock, once a message, to know when the next is due.
const HOUSEKEEPING: Duration = Duration::from_millis(1);

/// Readiness of the process: every pipeline's tables are open and it owns partitions.
#[derive(Debug, Default)]
pub struct Health {
    /// Set once the tables are open and the consumer has subscribed.
    pub started: AtomicBool,
    /// Set while the pipeline owns at least one partition.
    pub assigned: AtomicBool,
    /// Set by the operator's signal (SIGUSR1): resume every source the circuit breaker paused.
    pub resume: AtomicBool,
    /// When `Some` (a benchmark sets it), each data commit appends (partition, next offset,
    /// when) for every partition it covers: produce-to-committed latency without polling.
    pub commits: std::sync::Mutex<Option<Vec<(i32, i64, Instant)>>>,
    /// When `Some` (a benchmark sets it), each commit appends its wall time in ms (prepare,
    /// dead letters and every table's commit: what the loop waits for) and the part of it
    /// spent writing (dead letters and the Delta commits, from the snapshot update on).
    pub commit_ms: std::sync::Mutex<Option<Vec<(f64, f64)>>>,
}

/// Messages of one partition collected for the next micro-batch.
struct Open {
    raw: Raw,
    opened: Instant,
}

impl Open {
    fn new() -> Self {
        Open {
            raw: Raw::default(),
            opened: Instant::now(),
        }
    }
}

/// Raw messages of a micro-batch (one byte arena, where each ends, their offsets), kept
/// until commit: quarantine and dead letters need them.
#[derive(Default)]
struct Raw {
    arena: Vec<u8>,
    ends: Vec<usize>,
    offsets: Vec<i64>,
    /// Each message's Kafka timestamp, µs (`i64::MIN` when it has none): `_ingested_at`
    /// under `ingest_time: message_timestamp`.
    times: Vec<i64>,
    /// Producers' correlation ids: the bytes, and (message index, start, end) of each.
    id_arena: Vec<u8>,
    ids: Vec<(u32, u32, u32)>,
}

impl Raw {
    /// Each message's own correlation id, or None when no message of the batch had one.
    fn message_ids(&self) -> Option<Vec<Option<&str>>> {
        if self.ids.is_empty() {
            return None;
        }
        let mut out = vec![None; self.offsets.len()];
        for &(i, a, b) in &self.ids {
            // checked as UTF-8 when it was read
            out[i as usize] = std::str::from_utf8(&self.id_arena[a as usize..b as usize]).ok();
        }
        Some(out)
    }

    /// Settles each message's ingest time by the source's `ingest_time`; returns the batch's
    /// (the latest). Under `wall_clock` that is now, for every message, and `times` is
    /// cleared (no per-row column is needed); under `message_timestamp` each message keeps
    /// its Kafka timestamp, and one without a timestamp takes now.
    fn ingest_times(&mut self, clock: IngestTime) -> i64 {
        let now = now_micros();
        match clock {
            IngestTime::WallClock => {
                self.times.clear();
                now
            }
            IngestTime::MessageTimestamp => {
                for t in &mut self.times {
                    if *t == i64::MIN {
                        *t = now;
                    }
                }
                self.times.iter().copied().max().unwrap_or(now)
            }
        }
    }

    /// Per-message ingest times, when the source takes them from the messages.
    fn arrivals(&self) -> Option<&[i64]> {
        (!self.times.is_empty()).then_some(self.times.as_slice())
    }

    fn msgs(&self) -> Vec<&[u8]> {
        let mut start = 0;
        self.ends
            .iter()
            .map(|&end| {
                let s = &self.arena[start..end];
                start = end;
                s
            })
            .collect()
    }
}

/// A micro-batch through the stateless stages, waiting for its commit.
struct Closed {
    tp: Tp,
    raw: Raw,
    correlation_id: String,
    ingested_at: i64,
    stage_rejects: Vec<Rejected>,
    stage_quarantine: RecordBatch,
    good_index: UInt32Array,
    evaluated: Evaluated,
    stage_ms: f64,
    rules_ms: f64,
}

/// What one partition contributes to a commit.
#[derive(Debug, Clone, Copy, Default)]
struct PartCommit {
    /// What the tables held of the partition when the commit was prepared.
    held: Versions,
    from: i64,
    next: i64,
    messages: u64,
    landed: u64,
    quarantined: u64,
    duplicates: u64,
}

/// A commit ready to write: the stateful half has run.
struct Prepared {
    landed: Vec<RecordBatch>,
    quarantine: Vec<RecordBatch>,
    /// Alert rows (the alerts table's schema) not yet in the alerts table.
    alerts: Vec<RecordBatch>,
    dead_letters: Vec<DeadLetter>,
    parts: BTreeMap<Tp, PartCommit>,
    records: Vec<BatchRecord>,
    /// Idle partitions' `txn`s are written again: every table commits, empty or not.
    restamp: bool,
    /// The consumer's revocation count when the commit was prepared.
    revocations: u64,
}

struct DeadLetter {
    payload: Vec<u8>,
    key: String,
    reason: String,
    rule: String,
    correlation_id: String,
}

/// State of an owned partition.
struct Part {
    /// Next offset expected (None until the first message when starting from the broker's
    /// earliest or latest).
    next: Option<i64>,
    /// What the tables hold.
    committed: Versions,
    open: Option<Open>,
    /// A seek that failed and is retried; messages are dropped until it succeeds.
    seek_to: Option<Offset>,
    /// When its last message came.
    last_seen: Instant,
    /// Silent for [`IDLE_PARTITION`]: it no longer holds the dedup watermark.
    idle: bool,
    /// When a commit of ours last wrote its `txn` (or it was assigned).
    stamped: Instant,
}

impl Part {
    fn new(committed: Versions) -> Self {
        Part {
            next: committed.start(),
            committed,
            open: None,
            seek_to: None,
            last_seen: Instant::now(),
            idle: false,
            stamped: Instant::now(),
        }
    }
}

/// A partition that sends nothing for this long stops holding the dedup watermark back (it is
/// caught up, or its producers stopped); its next message makes it count again.
const IDLE_PARTITION: Duration = Duration::from_secs(5);

/// Appends a message to its partition's open micro-batch; returns the partition when that
/// batch is full. `last` keeps the previous message's partition key, so a run of messages of
/// one partition (as librdkafka delivers them) allocates no key.
#[allow(clippy::too_many_arguments)]
fn push(
    parts: &mut HashMap<Tp, Part>,
    last: &mut Option<Tp>,
    topic: &str,
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
    payload: &[u8],
    id: Option<&[u8]>,
    max_rows: usize,
    max_bytes: usize,
) -> Option<Tp> {
    if !matches!(last, Some((t, p)) if *p == partition && t == topic) {
        *last = Some((topic.to_string(), partition));
    }
    let tp = last.as_ref()?;
    // a message of a partition revoked meanwhile: the next owner reads it
    let part = parts.get_mut(tp)?;
    if part.seek_to.is_some() {
        return None;
    }
    match part.next {
        Some(next) if offset < next => return None, // fetched before a seek: stale
        Some(next) if offset > next => {
            // transaction markers and compaction leave gaps; anything else would be loss,
            // which auto.offset.reset=error turns into an error instead
            tracing::debug!(
                topic,
                partition,
                expected = next,
                got = offset,
                "offset gap"
            );
        }
        _ => {}
    }
    part.next = Some(offset + 1);
    let open = part.open.get_or_insert_with(|| {
        part.last_seen = Instant::now();
        part.idle = false;
        Open::new()
    });
    let raw = &mut open.raw;
    if let Some(id) = id {
        let start = raw.id_arena.len() as u32;
        raw.id_arena.extend_from_slice(id);
        raw.ids
            .push((raw.offsets.len() as u32, start, raw.id_arena.len() as u32));
    }
    raw.arena.extend_from_slice(payload);
    raw.ends.push(raw.arena.len());
    raw.offsets.push(offset);
    raw.times
        .push(timestamp_ms.map_or(i64::MIN, |t| t.saturating_mul(1000)));
    (raw.offsets.len() >= max_rows || raw.arena.len() >= max_bytes).then(|| tp.clone())
}

/// One pipeline's ingestor.
pub struct Ingestor {
    cfg: Arc<PipelineConfig>,
    consumer: StreamConsumer<IngestContext>,
    engine: RuleEngine,
    /// Evaluators bound to the stages' schema, one per micro-batch under way (rules are
    /// compiled once per evaluator, not per batch).
    evaluators: Vec<Evaluator>,
    /// The tables: here between commits, on the commit task during one.
    writer: Option<Writer>,
    /// The commit under way, if any: the loop receives and closes micro-batches meanwhile.
    committing: Option<Committing>,
    /// The patterns' state, when the spec has patterns.
    patterns: Option<PatternSet>,
    reader: VersionReader,
    topics: HashMap<String, usize>,
    parts: HashMap<Tp, Part>,
    generation_seen: u64,
    pending: Vec<Closed>,
    /// Micro-batches being decoded and evaluated, in the order they closed (at most
    /// `workers`); they join `pending` in that order.
    inflight: std::collections::VecDeque<tokio::task::JoinHandle<(Evaluator, Result<Closed>)>>,
    /// Messages in `pending` and `inflight`.
    pending_messages: usize,
    health: Arc<Health>,
    metrics: &'static IngestMetrics,
    lag_updated: Instant,
    commits: u64,
    /// The running maintenance task: the tables it checkpointed, opened afresh.
    maintenance: Option<tokio::task::JoinHandle<Vec<(TableKind, DeltaTable)>>>,
    /// The version each table was last checkpointed at (or opened at).
    checkpointed: HashMap<TableKind, u64>,
    last_tp: Option<Tp>,
    /// A client of its own for high watermarks (the lag gauges), and its running fetch.
    lag_client: Arc<rdkafka::consumer::BaseConsumer>,
    lag_task: Option<tokio::task::JoinHandle<()>>,
    breaker: Option<Breaker>,
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// A Kafka client's settings: the broker, a client id (`finlake-ingest-<pipeline><suffix>`),
/// `defaults`, then the `FINLAKE_KAFKA_*` settings from the environment, which win (a
/// `group.id` among them only for the group's consumer).
fn client_config(
    cfg: &PipelineConfig,
    suffix: &str,
    defaults: &[(&str, &str)],
    group: bool,
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.bootstrap)
        .set("client.id", format!("finlake-ingest-{}{suffix}", cfg.name));
    for (k, v) in defaults {
        c.set(*k, *v);
    }
    for (k, v) in &cfg.kafka_settings {
        if group || k != "group.id" {
            c.set(k, v);
        }
    }
    c
}

/// The consumer's settings. `auto.offset.reset=error`: a start offset that retention has
/// overtaken is an error, never a silent jump; the start offsets themselves come from the
/// tables. Kafka's committed offsets are a hint for lag tools (committed after each Delta
/// commit), never read back.
///
/// `fetch.queue.backoff.ms`: when a partition's local queue is over librdkafka's thresholds
/// (`queued.min.messages`, `queued.max.messages.kbytes`), its next fetch waits this long;
/// librdkafka's 1 s default left the loop idle for up to a second every time it caught up
/// with its queue while a backlog waited on the broker (catching up after an outage, a
/// replay): 10 ms keeps the queue fed, and costs only a timer while the queue is full.
fn consumer_config(cfg: &PipelineConfig) -> ClientConfig {
    client_config(
        cfg,
        "",
        &[
            ("group.id", &cfg.group),
            ("partition.assignment.strategy", "cooperative-sticky"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "error"),
            ("enable.partition.eof", "false"),
            ("session.timeout.ms", "10000"),
            ("heartbeat.interval.ms", "1000"),
            ("fetch.queue.backoff.ms", "10"),
        ],
        true,
    )
}

impl Ingestor {
    /// Opens the tables (creating them), seeds dedup from the data table's tail, and
    /// subscribes. Fails fast on configuration errors.
    pub async fn start(cfg: PipelineConfig, health: Arc<Health>) -> Result<Self> {
        let cfg = Arc::new(cfg);
        // open_or_create refuses a table whose txn retention would expire our versions
        let data = delta::open_or_create(&cfg.data).await?;
        let quarantine = delta::open_or_create(&cfg.quarantine).await?;
        let events = delta::open_or_create(&cfg.events).await?;
        let alerts = match &cfg.alerts {
            Some(a) => Some(delta::open_or_create(a).await?),
            None => None,
        };
        let engine = Self::new_engine(&cfg, &data).await?;
        let patterns = Self::new_patterns(&cfg, &data).await?;
        let reader = VersionReader::new(
            &cfg.name,
            &cfg.data,
            &cfg.quarantine,
            &cfg.events,
            cfg.alerts.as_ref(),
        );
        let context = IngestContext::new(&cfg.name, reader.clone(), cfg.starting_offsets);
        let consumer: StreamConsumer<IngestContext> = consumer_config(&cfg)
            .create_with_context(context)
            .map_err(IngestError::kafka("create consumer"))?;
        let topics: Vec<&str> = cfg.sources.iter().map(|s| s.topic.as_str()).collect();
        consumer
            .subscribe(&topics)
            .map_err(IngestError::kafka("subscribe"))?;
        let alert_topics = patterns
            .as_ref()
            .map(|p| p.output_topics())
            .unwrap_or_default();
        let producer = match (&cfg.dead_letter_topic, alert_topics.is_empty()) {
            (None, true) => None,
            _ => Some(
                client_config(
                    &cfg,
                    "-dlq",
                    &[
                        ("message.timeout.ms", "30000"),
                        ("enable.idempotence", "true"),
                    ],
                    false,
                )
                .create::<FutureProducer>()
                .map_err(IngestError::kafka("create dead-letter and alert producer"))?,
            ),
        };
        let lag_client = Arc::new(
            client_config(&cfg, "-lag", &[], false)
                .create::<rdkafka::consumer::BaseConsumer>()
                .map_err(IngestError::kafka("create lag client"))?,
        );
        tracing::info!(
            pipeline = %cfg.name,
            topics = ?topics,
            group = %cfg.group,
            table = %cfg.data.uri,
            quarantine = %cfg.quarantine.uri,
            commit_interval = ?cfg.commit_interval,
            parallelism = cfg.workers,
            "ingestor started"
        );
        let cores = crate::config::cores();
        if cfg.workers > 4 * cores {
            tracing::warn!(
                pipeline = %cfg.name,
                parallelism = cfg.workers,
                cores,
                max_batch_size = cfg.max_batch_rows,
                "processing.config.parallelism is far above the cores this process may use: up to that many closed micro-batches are held at once (parallelism x max_batch_size messages) for no gain in speed"
            );
        }
        health.started.store(true, Ordering::SeqCst);
        let cfg_breaker = cfg.circuit_breaker;
        Ok(Ingestor {
            topics: cfg
                .sources
                .iter()
                .enumerate()
                .map(|(i, s)| (s.topic.clone(), i))
                .collect(),
            writer: Some(Writer {
                cfg: cfg.clone(),
                metrics: IngestMetrics::global(),
                producer,
                revocations: consumer.context().revocations.clone(),
                data,
                quarantine,
                events,
                alerts,
                txns: Default::default(),
            }),
            committing: None,
            cfg,
            consumer,
            engine,
            evaluators: Vec::new(),
            patterns,
            reader,
            parts: HashMap::new(),
            generation_seen: 0,
            pending: Vec::new(),
            inflight: Default::default(),
            pending_messages: 0,
            health,
            metrics: IngestMetrics::global(),
            lag_updated: Instant::now() - LAG_EVERY,
            commits: 0,
            maintenance: None,
            checkpointed: HashMap::new(),
            last_tp: None,
            lag_client,
            lag_task: None,
            breaker: cfg_breaker.map(Breaker::new),
        })
    }

    async fn new_engine(cfg: &PipelineConfig, data: &DeltaTable) -> Result<RuleEngine> {
        let stages = &cfg.sources[0].stages;
        let mut engine = RuleEngine::new(
            cfg.spec.clone(),
            stages.table_schema().clone(),
            stages.calendar.clone(),
        )?;
        if let Some(dedup) = engine.dedup() {
            let seeded = dedup.seed_from_table(data).await?;
            tracing::info!(pipeline = %cfg.name, rows = seeded, "dedup state seeded from the table's tail");
        }
        Ok(engine)
    }

    /// The patterns, their state rebuilt from the data table's tail.
    async fn new_patterns(cfg: &PipelineConfig, data: &DeltaTable) -> Result<Option<PatternSet>> {
        let landed = finlake_quality::engine::landed_schema(cfg.sources[0].stages.table_schema());
        let Some(mut patterns) = PatternSet::compile(&cfg.spec, landed)
            .map_err(|e| IngestError::Core(finlake_core::Error::from(e)))?
        else {
            return Ok(None);
        };
        let rows = patterns.seed_from_table(data).await?;
        tracing::info!(pipeline = %cfg.name, rows, keys = patterns.keys_held(), "pattern state seeded from the table's tail");
        Ok(Some(patterns))
    }

    /// Runs until `shutdown` turns true (then commits what is buffered and returns) or an
    /// error that retrying cannot fix.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let mut next_commit = Instant::now() + self.cfg.commit_interval;
        // the walks over the partitions (seeks to retry, batch timeouts, idleness, breakers,
        // the commit's turn) run once a HOUSEKEEPING, not once a message: at a few hundred
        // thousand messages a second they and their clock reads were a tenth of the CPU
        let mut housekeeping_due = Instant::now();
        let mut deadline = housekeeping_due;
        loop {
            if self.rebalanced() {
                self.finish_inflight().await?;
                self.sync_assignment()?;
                housekeeping_due = Instant::now();
            }
            let now = Instant::now();
            let housekeeping = now >= housekeeping_due;
            if housekeeping {
                housekeeping_due = now + HOUSEKEEPING;
                self.retry_seeks();
                // while a commit runs the next one waits for it, not for the clock
                let commit_at = if self.committing.is_some() {
                    now + self.cfg.commit_interval
                } else {
                    next_commit
                };
                deadline = self
                    .parts
                    .values()
                    .filter_map(|p| p.open.as_ref().map(|o| o.opened + self.cfg.batch_timeout))
                    .min()
                    .map_or(commit_at, |t| t.min(commit_at));
            }
            // a batch opened since the last walk is seen by the next, at most HOUSEKEEPING on;
            // right after a walk the deadline is current, so an idle loop sleeps until it
            let wake = if housekeeping {
                deadline
            } else {
                deadline.min(housekeeping_due)
            };
            tokio::select! {
                biased;
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        break;
                    }
                }
                joined = commit_done(&mut self.committing) => {
                    if let Some(c) = self.committing.take() {
                        self.committed(joined, c.started).instrument(c.span).await?;
                    }
                }
                msg = self.consumer.recv() => match msg {
                    Ok(m) => {
                        let (max_rows, max_bytes) = (self.cfg.max_batch_rows, self.cfg.max_batch_bytes);
                        let full = if self.rebalanced() {
                            // a rebalance ran inside this recv: take it first (rare, so the
                            // message is copied out)
                            let (topic, partition, offset, ts) = (m.topic().to_string(), m.partition(), m.offset(), m.timestamp().to_millis());
                            let payload = m.payload().unwrap_or_default().to_vec();
                            let id = inbound_correlation(&m).map(<[u8]>::to_vec);
                            drop(m);
                            self.finish_inflight().await?;
                            self.sync_assignment()?;
                            push(&mut self.parts, &mut self.last_tp, &topic, partition, offset, ts, &payload, id.as_deref(), max_rows, max_bytes)
                        } else {
                            // the hot path: the payload goes from librdkafka's buffer straight
                            // into the partition's arena, nothing allocated per message
                            let payload = m.payload().unwrap_or_default();
                            let id = inbound_correlation(&m);
                            let full = push(&mut self.parts, &mut self.last_tp, m.topic(), m.partition(), m.offset(), m.timestamp().to_millis(), payload, id, max_rows, max_bytes);
                            drop(m);
                            full
                        };
                        if let Some(tp) = full {
                            self.close(&tp).await?;
                        }
                    }
                    Err(e) => {
                        self.metrics.kafka_errors.with_label_values(&[&self.cfg.name]).inc();
                        tracing::warn!(pipeline = %self.cfg.name, error = %e, "consume error");
                        if matches!(e, rdkafka::error::KafkaError::MessageConsumption(rdkafka::types::RDKafkaErrorCode::AutoOffsetReset)) {
                            return Err(IngestError::Kafka { operation: "consume: the start offset is gone (retention overtook it); nothing was skipped silently", source: e });
                        }
                    }
                },
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
            if housekeeping {
                self.close_expired().await?;
                self.mark_idle();
                self.close_breakers();
            }
            if self.committing.is_some() {
                if self.pending_messages >= MAX_PENDING_MESSAGES {
                    // receiving outran the commit: wait for it
                    self.finish_commit().await?;
                }
            } else if (housekeeping && Instant::now() >= next_commit)
                || self.pending_messages >= MAX_PENDING_MESSAGES
            {
                // the cadence runs from each commit's start: a 100 ms interval is a commit
                // every 100 ms, not every 100 ms plus the commit's own time (a commit that
                // takes longer than the interval is followed by the next as soon as it ends)
                let started = Instant::now();
                self.commit().await?;
                next_commit = started + self.cfg.commit_interval;
            }
        }
        tracing::info!(pipeline = %self.cfg.name, "shutting down: committing what is buffered");
        self.finish_commit().await?;
        let tps: Vec<Tp> = self.parts.keys().cloned().collect();
        for tp in tps {
            self.close(&tp).await?;
        }
        self.commit().await?;
        self.finish_commit().await?;
        if let Some(h) = self.maintenance.take() {
            // a checkpoint under way finishes (the next start reads from it)
            let _ = h.await;
        }
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "no consumer offsets to commit at shutdown");
        }
        self.consumer.unsubscribe();
        Ok(())
    }

    /// Whether a rebalance callback ran since the last [`Self::sync_assignment`].
    fn rebalanced(&self) -> bool {
        self.consumer.context().generation.load(Ordering::SeqCst) != self.generation_seen
    }

    /// Takes the rebalance callback's changes: drops revoked partitions' buffers (those not
    /// committed are re-read by the next owner), starts assigned ones at their versions.
    fn sync_assignment(&mut self) -> Result<()> {
        let ctx = self.consumer.context();
        let generation = ctx.generation.load(Ordering::SeqCst);
        if generation == self.generation_seen {
            return Ok(());
        }
        self.generation_seen = generation;
        let (changes, failed) = {
            let mut a = ctx.assignment.lock().unwrap_or_else(|e| e.into_inner());
            (std::mem::take(&mut a.changes), a.failed.take())
        };
        for change in changes {
            match change {
                Change::Revoked(tp, lost) => {
                    if self.parts.remove(&tp).is_some() {
                        let before = self.pending.len();
                        self.pending.retain(|c| c.tp != tp);
                        self.pending_messages =
                            self.pending.iter().map(|c| c.raw.offsets.len()).sum();
                        tracing::info!(
                            pipeline = %self.cfg.name, topic = %tp.0, partition = tp.1, lost,
                            dropped_batches = before - self.pending.len(),
                            "partition revoked: its uncommitted batches are dropped (the next owner re-reads them)"
                        );
                    }
                    if let Some(d) = self.engine.dedup() {
                        d.forget_partition(&tp.0, tp.1);
                    }
                }
                Change::Assigned(tp, committed) => {
                    // until its first rows, an assigned partition holds the dedup watermark
                    // back: the others' rows must not evict state its rows may still repeat
                    if let Some(d) = self.engine.dedup() {
                        d.expect_partition(&tp.0, tp.1);
                    }
                    if self.breaker.as_ref().is_some_and(|b| b.is_open(&tp.0)) {
                        self.pause_partitions(std::slice::from_ref(&tp), true);
                    }
                    self.parts.insert(tp, Part::new(committed));
                }
            }
        }
        self.metrics
            .assigned
            .with_label_values(&[&self.cfg.name])
            .set(self.parts.len() as i64);
        self.health
            .assigned
            .store(!self.parts.is_empty(), Ordering::SeqCst);
        if let Some(message) = failed {
            return Err(IngestError::Internal(format!("rebalance: {message}")));
        }
        Ok(())
    }

    fn retry_seeks(&mut self) {
        for (tp, part) in self.parts.iter_mut() {
            if let Some(offset) = part.seek_to {
                match self
                    .consumer
                    .seek(&tp.0, tp.1, offset, Duration::from_secs(5))
                {
                    Ok(()) => {
                        tracing::info!(topic = %tp.0, partition = tp.1, ?offset, "seeked");
                        part.seek_to = None;
                    }
                    Err(e) => {
                        tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "seek failed; retrying")
                    }
                }
            }
        }
    }

    /// Pauses (or resumes) fetching of `tps`.
    fn pause_partitions(&self, tps: &[Tp], pause: bool) {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in tps {
            tpl.add_partition(t, *p);
        }
        let r = if pause {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        if let Err(e) = r {
            tracing::error!(error = %e, pause, partitions = ?tps, "pause/resume failed");
        }
    }

    /// Pauses (or resumes) every owned partition of `topic` and sets its circuit gauge;
    /// returns how many partitions.
    fn set_topic_paused(&self, topic: &str, paused: bool) -> usize {
        let tps: Vec<Tp> = self
            .parts
            .keys()
            .filter(|tp| tp.0 == topic)
            .cloned()
            .collect();
        self.pause_partitions(&tps, paused);
        self.metrics
            .circuit_open
            .with_label_values(&[&self.cfg.name, topic])
            .set(i64::from(paused));
        tps.len()
    }

    /// The circuit breaker as a micro-batch closes: counts the topic's rejects (decode,
    /// transform and `dead_letter` rules) and pauses a topic that has had too many. What is
    /// buffered is still committed and reading resumes at the next offset: nothing is dropped.
    /// Counting here rather than at commit stops a broken feed within a few micro-batches,
    /// before the prefetched backlog pours into quarantine.
    fn trip_breaker(&mut self, topic: &str, rejects: u64) {
        let Some(breaker) = self.breaker.as_mut() else {
            return;
        };
        let Some(count) = breaker.record(topic, rejects, Instant::now()) else {
            return;
        };
        let partitions = self.set_topic_paused(topic, true);
        self.metrics
            .circuit_trips
            .with_label_values(&[&self.cfg.name, topic])
            .inc();
        tracing::error!(
            alert = "circuit_breaker",
            %topic,
            rejects = count,
            partitions,
            "circuit open: too many rejects, the source is paused (resumes after the cool-down, or now with SIGUSR1)"
        );
    }

    /// Resumes the sources whose cool-down has passed, or all of them on the operator's signal.
    fn close_breakers(&mut self) {
        let signalled = self.health.resume.swap(false, Ordering::SeqCst);
        let Some(breaker) = self.breaker.as_mut() else {
            return;
        };
        for topic in breaker.close_due(Instant::now(), signalled) {
            self.set_topic_paused(&topic, false);
            tracing::warn!(%topic, signalled, "circuit closed: reading the source again");
        }
    }

    /// Partitions silent for [`IDLE_PARTITION`] stop holding the dedup watermark.
    fn mark_idle(&mut self) {
        let now = Instant::now();
        for (tp, part) in self.parts.iter_mut() {
            if !part.idle && part.open.is_none() && now >= part.last_seen + IDLE_PARTITION {
                part.idle = true;
                if let Some(d) = self.engine.dedup() {
                    d.forget_partition(&tp.0, tp.1);
                }
                tracing::debug!(topic = %tp.0, partition = tp.1, "partition idle: it no longer holds the dedup watermark");
            }
        }
    }

    async fn close_expired(&mut self) -> Result<()> {
        let now = Instant::now();
        let due: Vec<Tp> = self
            .parts
            .iter()
            .filter(|(_, p)| {
                p.open
                    .as_ref()
                    .is_some_and(|o| now >= o.opened + self.cfg.batch_timeout)
            })
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in due {
            self.close(&tp).await?;
        }
        Ok(())
    }

    /// Closes a partition's micro-batch: decode, transforms and rule evaluation start on a
    /// blocking thread, and the loop goes on receiving. When `workers` batches are under way
    /// already, it first waits for the oldest (the back-pressure on receiving).
    async fn close(&mut self, tp: &Tp) -> Result<()> {
        let Some(Open { raw, .. }) = self.parts.get_mut(tp).and_then(|p| p.open.take()) else {
            return Ok(());
        };
        if raw.offsets.is_empty() {
            return Ok(());
        }
        while self.inflight.len() >= self.cfg.workers {
            self.finish_oldest().await?;
        }
        self.metrics
            .messages
            .with_label_values(&[&self.cfg.name, &tp.0])
            .inc_by(raw.offsets.len() as u64);
        self.metrics
            .bytes
            .with_label_values(&[&self.cfg.name, &tp.0])
            .inc_by(raw.arena.len() as u64);
        let source = *self.topics.get(&tp.0).ok_or_else(|| {
            IngestError::Internal(format!("message from unsubscribed topic {}", tp.0))
        })?;
        self.pending_messages += raw.offsets.len();
        let cfg = self.cfg.clone();
        let mut evaluator = self
            .evaluators
            .pop()
            .unwrap_or_else(|| self.engine.evaluator());
        let tp2 = tp.clone();
        let correlation_id = finlake_core::telemetry::correlation_id("ING");
        let span = tracing::info_span!("batch", correlation_id = %correlation_id, pipeline = %cfg.name, topic = %tp.0, partition = tp.1);
        let metrics = self.metrics;
        self.inflight
            .push_back(tokio::task::spawn_blocking(move || {
                let _g = span.enter();
                let started = Instant::now();
                let mut raw = raw;
                let ingested_at = raw.ingest_times(cfg.sources[source].ingest_time);
                let result = (|| -> Result<Closed> {
                    let msgs = raw.msgs();
                    let ids = raw.message_ids();
                    let ctx = BatchContext {
                        topic: &tp2.0,
                        partition: tp2.1,
                        offsets: &raw.offsets,
                        correlation_id: &correlation_id,
                        ingested_at,
                        arrivals: raw.arrivals(),
                        message_ids: ids.as_deref(),
                    };
                    let t0 = Instant::now();
                    let out = cfg.sources[source].stages.process(&msgs, &ctx)?;
                    let stage_ms = t0.elapsed().as_secs_f64() * 1e3;
                    let t0 = Instant::now();
                    let evaluated = evaluator.evaluate(out.good)?;
                    let rules_ms = t0.elapsed().as_secs_f64() * 1e3;
                    drop(msgs);
                    drop(ids);
                    metrics
                        .batch_seconds
                        .with_label_values(&[&cfg.name])
                        .observe(started.elapsed().as_secs_f64());
                    Ok(Closed {
                        tp: tp2,
                        correlation_id,
                        ingested_at,
                        stage_rejects: out.rejects,
                        stage_quarantine: out.quarantine,
                        good_index: out.good_index,
                        evaluated,
                        raw,
                        stage_ms,
                        rules_ms,
                    })
                })();
                (evaluator, result)
            }));
        Ok(())
    }

    /// Waits for the oldest micro-batch under way and queues it for the commit.
    async fn finish_oldest(&mut self) -> Result<()> {
        let Some(handle) = self.inflight.pop_front() else {
            return Ok(());
        };
        let (evaluator, closed) = handle
            .await
            .map_err(|e| IngestError::Internal(format!("micro-batch task: {e}")))?;
        self.evaluators.push(evaluator);
        let closed = closed?;
        let rejects = closed.stage_rejects.len() as u64 + closed.evaluated.rule_rejects();
        self.trip_breaker(&closed.tp.0, rejects);
        self.pending.push(closed);
        Ok(())
    }

    /// Waits for every micro-batch under way: before a commit, and before the partitions
    /// change (a revoked partition's batches are dropped from `pending`).
    async fn finish_inflight(&mut self) -> Result<()> {
        while !self.inflight.is_empty() {
            self.finish_oldest().await?;
        }
        Ok(())
    }

    /// The stateful half over the buffered micro-batches, in the order they closed.
    fn prepare(&mut self, batches: Vec<Closed>) -> Result<Prepared> {
        let dedup_rule = self.engine.rules().dedup.as_ref().map(|d| d.name.clone());
        let mut out = Prepared {
            landed: Vec::new(),
            quarantine: Vec::new(),
            alerts: Vec::new(),
            dead_letters: Vec::new(),
            parts: BTreeMap::new(),
            records: Vec::new(),
            restamp: false,
            revocations: self.consumer.context().revocations.load(Ordering::SeqCst),
        };
        for b in batches {
            let n = b.raw.offsets.len();
            let (first, last) = (b.raw.offsets[0], b.raw.offsets[n - 1]);
            let t0 = Instant::now();
            let engine_out = match self.engine.apply(b.evaluated) {
                Ok(o) => o,
                Err(finlake_quality::QualityError::RuleFailed {
                    rule,
                    rows,
                    first_row,
                }) => {
                    let index = b
                        .good_index
                        .values()
                        .get(first_row)
                        .map_or(0, |i| *i as usize);
                    return Err(IngestError::Halted {
                        rule,
                        rows,
                        topic: b.tp.0.clone(),
                        partition: b.tp.1,
                        from: first,
                        to: last,
                        offset: b.raw.offsets.get(index).copied().unwrap_or(first),
                    });
                }
                Err(e) => return Err(e.into()),
            };
            let dedup_ms = t0.elapsed().as_secs_f64() * 1e3;
            let duplicate_of: Vec<(i64, Option<i32>, Option<i64>)> = engine_out
                .dedup
                .iter()
                .filter_map(|(row, v)| match v {
                    finlake_quality::dedup::Verdict::Duplicate { partition, offset } => Some((
                        b.raw.offsets[b.good_index.value(*row as usize) as usize],
                        *partition,
                        *offset,
                    )),
                    _ => None,
                })
                .collect();
            let msgs = b.raw.msgs();
            let ids = b.raw.message_ids();
            let ctx = BatchContext {
                topic: &b.tp.0,
                partition: b.tp.1,
                offsets: &b.raw.offsets,
                correlation_id: &b.correlation_id,
                ingested_at: b.ingested_at,
                arrivals: b.raw.arrivals(),
                message_ids: ids.as_deref(),
            };
            let rule_rejects: Vec<Rejected> = engine_out
                .rejects
                .iter()
                .map(|r| Rejected {
                    index: b.good_index.value(r.row as usize),
                    stage: if Some(&r.rule) == dedup_rule.as_ref() {
                        "dedup"
                    } else {
                        "rule"
                    },
                    rule: r.rule.clone(),
                    field: r.field.clone(),
                    reason: r.reason.clone(),
                })
                .collect();
            // quarantine rows below the quarantine table's own version are there already
            let skip_below = self
                .parts
                .get(&b.tp)
                .and_then(|p| p.committed.quarantine)
                .unwrap_or(i64::MIN);
            let mut quarantined = 0u64;
            for (rejects, batch) in [
                (&b.stage_rejects, b.stage_quarantine.clone()),
                (&rule_rejects, quarantine_batch(&rule_rejects, &msgs, &ctx)?),
            ] {
                quarantined += rejects.len() as u64;
                let keep: Vec<bool> = rejects
                    .iter()
                    .map(|r| b.raw.offsets[r.index as usize] >= skip_below)
                    .collect();
                for (r, k) in rejects.iter().zip(&keep) {
                    if *k && self.cfg.dead_letter_topic.is_some() {
                        let offset = b.raw.offsets[r.index as usize];
                        out.dead_letters.push(DeadLetter {
                            payload: msgs[r.index as usize].to_vec(),
                            key: format!("{}/{}/{}", b.tp.0, b.tp.1, offset),
                            reason: r.reason.clone(),
                            rule: r.rule.clone(),
                            correlation_id: ctx.correlation_id_of(r.index as usize).to_string(),
                        });
                    }
                }
                let batch = if keep.iter().all(|k| *k) {
                    batch
                } else {
                    filter_record_batch(&batch, &BooleanArray::from(keep))
                        .map_err(finlake_core::Error::from)?
                };
                if batch.num_rows() > 0 {
                    out.quarantine.push(batch);
                }
            }
            let pc = out.parts.entry(b.tp.clone()).or_insert_with(|| PartCommit {
                held: held(&self.parts, &b.tp),
                from: first,
                ..PartCommit::default()
            });
            pc.next = last + 1;
            pc.messages += n as u64;
            pc.landed += engine_out.landed.num_rows() as u64;
            pc.quarantined += quarantined;
            pc.duplicates += engine_out.stats.dedup.duplicate_rows;
            out.records.push(BatchRecord {
                id: b.correlation_id,
                topic: b.tp.0.clone(),
                partition: b.tp.1,
                from: first,
                to: last,
                messages: n as u64,
                landed: engine_out.landed.num_rows() as u64,
                quarantined,
                duplicates: engine_out.stats.dedup.duplicate_rows,
                ingested_at: b.ingested_at,
                stage_ms: b.stage_ms,
                rules_ms: b.rules_ms,
                dedup_ms,
                duplicate_of,
            });
            if engine_out.landed.num_rows() > 0 {
                if let Some(patterns) = self.patterns.as_mut() {
                    let raised = patterns.process(&engine_out.landed, b.ingested_at)?;
                    // alerts of rows below the alerts table's own version are there already
                    let held = self
                        .parts
                        .get(&b.tp)
                        .and_then(|p| p.committed.alerts)
                        .unwrap_or(i64::MIN);
                    let raised = if held == i64::MIN || raised.num_rows() == 0 {
                        raised
                    } else {
                        let offsets = raised
                            .column_by_name("_offset")
                            .and_then(|c| c.as_primitive_opt::<arrow::datatypes::Int64Type>())
                            .cloned();
                        match offsets {
                            Some(o) => {
                                let keep: BooleanArray = o
                                    .iter()
                                    .map(|v| Some(v.is_none_or(|v| v >= held)))
                                    .collect();
                                filter_record_batch(&raised, &keep)
                                    .map_err(finlake_core::Error::from)?
                            }
                            None => raised,
                        }
                    };
                    if raised.num_rows() > 0 {
                        out.alerts.push(raised);
                    }
                }
                out.landed.push(engine_out.landed);
            }
        }
        for (tp, pc) in &out.parts {
            if pc.messages != pc.landed + pc.quarantined + pc.duplicates {
                return Err(IngestError::Internal(format!(
                    "{}/{}: {} messages but {} landed + {} quarantined + {} duplicates",
                    tp.0, tp.1, pc.messages, pc.landed, pc.quarantined, pc.duplicates
                )));
            }
        }
        Ok(out)
    }

    /// Starts a commit of what is buffered: the stateful half (dedup, patterns) here, then
    /// dead letters, quarantine, alerts, data and processed_events on a task of its own;
    /// [`Self::finish_commit`] takes its outcome. One commit at a time, in order.
    async fn commit(&mut self) -> Result<()> {
        if self.committing.is_some() {
            return Ok(());
        }
        self.finish_inflight().await?;
        let restamp = self.due_for_restamp();
        if self.pending.is_empty() && restamp.is_empty() {
            return Ok(());
        }
        let commit_id = finlake_core::telemetry::correlation_id("ING-COMMIT");
        let span =
            tracing::info_span!("commit", correlation_id = %commit_id, pipeline = %self.cfg.name);
        // start_commit's task and the outcome's lines run in this span too
        self.start_commit(commit_id, restamp).instrument(span).await
    }

    /// Owned partitions with nothing buffered whose `txn` no commit has written for
    /// `txn_restamp`, with their versions: the next commit writes them again, unchanged.
    fn due_for_restamp(&self) -> Vec<(Tp, i64)> {
        let buffered: std::collections::HashSet<&Tp> = self.pending.iter().map(|b| &b.tp).collect();
        self.parts
            .iter()
            .filter(|(tp, p)| {
                p.stamped.elapsed() >= self.cfg.txn_restamp
                    && p.seek_to.is_none()
                    && !buffered.contains(tp)
            })
            .filter_map(|(tp, p)| Some((tp.clone(), p.committed.data?)))
            .collect()
    }

    async fn start_commit(&mut self, commit_id: String, restamp: Vec<(Tp, i64)>) -> Result<()> {
        let started = Instant::now();
        let batches = std::mem::take(&mut self.pending);
        self.pending_messages = 0;
        let prepared = match self.prepare(batches) {
            Ok(mut p) => {
                if !restamp.is_empty() {
                    tracing::info!(
                        partitions = restamp.len(),
                        "re-stamping idle partitions' txn versions"
                    );
                    p.restamp = true;
                }
                for (tp, v) in restamp {
                    p.parts.entry(tp.clone()).or_insert(PartCommit {
                        held: held(&self.parts, &tp),
                        from: v,
                        next: v,
                        ..PartCommit::default()
                    });
                }
                p
            }
            Err(e) => {
                // the dedup state may hold part of what failed: rebuild it
                tracing::error!(error = %e, "preparing the commit failed");
                self.resync("prepare failed").await?;
                return Err(e);
            }
        };
        self.adopt_maintained().await;
        let mut writer = self.take_writer()?;
        let span = tracing::Span::current();
        let handle = tokio::spawn(
            async move {
                let outcome = writer.commit(prepared, &commit_id, started).await;
                (writer, outcome)
            }
            .instrument(span.clone()),
        );
        self.committing = Some(Committing {
            handle,
            span,
            started,
        });
        Ok(())
    }

    /// Waits for the commit under way, if any, and takes its outcome.
    async fn finish_commit(&mut self) -> Result<()> {
        let Some(c) = self.committing.take() else {
            return Ok(());
        };
        let Committing {
            handle,
            span,
            started,
        } = c;
        let joined = handle.await;
        self.committed(joined, started).instrument(span).await
    }

    /// What a finished commit task left: the tables back, and on success what the tables
    /// now hold of each partition (Kafka's offsets, a hint for lag tools, follow).
    async fn committed(
        &mut self,
        joined: std::result::Result<(Writer, Outcome), tokio::task::JoinError>,
        started: Instant,
    ) -> Result<()> {
        let (writer, outcome) =
            joined.map_err(|e| IngestError::Internal(format!("commit task: {e}")))?;
        self.writer = Some(writer);
        let (prepared, events_ok, write_ms) = match outcome {
            Outcome::Written {
                prepared,
                events_ok,
                write_ms,
            } => (prepared, events_ok, write_ms),
            Outcome::Fenced(e) => {
                self.metrics
                    .fenced
                    .with_label_values(&[&self.cfg.name])
                    .inc();
                tracing::warn!(error = %e, "another process committed a partition of this batch: dropping what is buffered and re-reading the versions");
                return self.resync("fenced").await;
            }
            Outcome::Revoked => {
                tracing::info!("partitions were revoked while the commit was under way: nothing written, what is buffered is re-read");
                return self.resync("revoked during the commit").await;
            }
            Outcome::GaveUp(e) => {
                tracing::error!(error = %e, "commit failed {COMMIT_ATTEMPTS} times; dropping what is buffered and re-reading");
                return self.resync("commit failed").await;
            }
            Outcome::Failed(e) => return Err(e),
        };
        // update what the tables hold, and Kafka's offsets (a hint for lag tools)
        let has_alerts = self.writer.as_ref().is_some_and(|w| w.alerts.is_some());
        let mut tpl = TopicPartitionList::new();
        for (tp, pc) in &prepared.parts {
            if let Some(part) = self.parts.get_mut(tp) {
                part.committed.data = Some(pc.next);
                part.stamped = Instant::now();
                if !prepared.alerts.is_empty() || (prepared.restamp && has_alerts) {
                    part.committed.alerts = Some(pc.alerts_version());
                }
                if !prepared.quarantine.is_empty() || prepared.restamp {
                    part.committed.quarantine = Some(pc.quarantine_version());
                }
                if events_ok {
                    part.committed.events = Some(pc.next);
                }
            }
            let _ = tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(pc.next));
        }
        if let Ok(mut seen) = self.health.commits.lock() {
            if let Some(seen) = seen.as_mut() {
                let now = Instant::now();
                seen.extend(prepared.parts.iter().map(|(tp, pc)| (tp.1, pc.next, now)));
            }
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "kafka offset commit (a hint only) failed");
        }
        let m = self.metrics;
        let name = self.cfg.name.as_str();
        let (mut landed, mut quarantined, mut dup) = (0, 0, 0);
        for pc in prepared.parts.values() {
            landed += pc.landed;
            quarantined += pc.quarantined;
            dup += pc.duplicates;
        }
        m.outcomes
            .with_label_values(&[name, "landed"])
            .inc_by(landed);
        m.outcomes
            .with_label_values(&[name, "quarantined"])
            .inc_by(quarantined);
        m.outcomes
            .with_label_values(&[name, "duplicate"])
            .inc_by(dup);
        for a in &prepared.alerts {
            if let Some(names) = a
                .column_by_name("alert")
                .map(|c| c.as_string::<i32>().clone())
            {
                for n in names.iter().flatten() {
                    m.alerts.with_label_values(&[name, n]).inc();
                }
            }
        }
        m.commit_seconds
            .with_label_values(&[name])
            .observe(started.elapsed().as_secs_f64());
        if let Ok(mut ms) = self.health.commit_ms.lock() {
            if let Some(ms) = ms.as_mut() {
                ms.push((started.elapsed().as_secs_f64() * 1e3, write_ms));
            }
        }
        m.last_commit
            .with_label_values(&[name])
            .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
        self.update_lag(&prepared.parts);
        self.commits += 1;
        self.maintain();
        tracing::info!(
            batches = prepared.records.len(),
            landed,
            quarantined,
            duplicates = dup,
            version = self
                .writer
                .as_ref()
                .and_then(|w| w.data.version())
                .unwrap_or_default(),
            ms = started.elapsed().as_millis() as u64,
            "committed"
        );
        Ok(())
    }

    /// The tables, for a commit task. They are away only while a commit runs, and every
    /// caller waits for it first.
    fn take_writer(&mut self) -> Result<Writer> {
        self.writer
            .take()
            .ok_or_else(|| IngestError::Internal("the tables are away on a commit".into()))
    }

    fn writer_mut(&mut self) -> Result<&mut Writer> {
        self.writer
            .as_mut()
            .ok_or_else(|| IngestError::Internal("the tables are away on a commit".into()))
    }

    /// Compaction, checkpoints and log cleanup, on a task of their own, never inside a
    /// commit. Every `compact_every` data commits (`FINLAKE_COMPACT_EVERY`) each table's small files are compacted
    /// ([`compact::compact_small_files`]: tiered, in write order, `dataChange: false`), so the
    /// file list every commit carries, and with it the commit's cost, stays bounded. A table
    /// whose version has moved its `checkpointInterval` past its last checkpoint gets one,
    /// and comes back opened afresh from it (a long-lived table handle grows slower to commit
    /// to; see `delta::reopen_at_checkpoint`); [`Self::adopt_maintained`] swaps the tables in
    /// before a later commit. Expired log files (delta-rs would list `_delta_log` in every
    /// commit; ours turn that off) are removed every [`MAINTENANCE_EVERY`] data commits. One
    /// run at a time; a failure (a compaction that lost a race included) is logged and
    /// retried on the next run.
    fn maintain(&mut self) {
        if self.maintenance.is_some() {
            return;
        }
        let cleanup = self.commits.is_multiple_of(MAINTENANCE_EVERY);
        let compact =
            self.cfg.compact_every > 0 && self.commits.is_multiple_of(self.cfg.compact_every);
        let mut due = Vec::new();
        for kind in [
            TableKind::Data,
            TableKind::Quarantine,
            TableKind::Events,
            TableKind::Alerts,
        ] {
            let Some(t) = self
                .writer
                .as_mut()
                .and_then(|w| w.table_mut(kind))
                .map(|t| t.clone())
            else {
                continue;
            };
            let Some(v) = t.version() else { continue };
            let last = *self.checkpointed.entry(kind).or_insert(v);
            let checkpoint = v.saturating_sub(last) >= delta::checkpoint_interval(&t);
            if checkpoint {
                self.checkpointed.insert(kind, v);
            }
            if checkpoint || compact || cleanup {
                due.push((kind, t, checkpoint));
            }
        }
        if due.is_empty() {
            return;
        }
        let span = tracing::Span::current();
        let metrics = self.metrics;
        let name = self.cfg.name.clone();
        self.maintenance = Some(tokio::spawn(
            async move {
                let mut fresh = Vec::new();
                for (kind, mut t, checkpoint) in due {
                    let mut changed = false;
                    if compact {
                        let started = Instant::now();
                        let meta = vec![("pipeline".to_string(), serde_json::Value::from(name.clone()))];
                        match compact::compact_small_files(&t, compact::CompactOptions::default(), meta).await {
                            Ok((t2, done)) if done.version.is_some() => {
                                metrics
                                    .compacted_files
                                    .with_label_values(&[&name])
                                    .inc_by(done.files_removed as u64);
                                tracing::info!(table = %t.table_url(), version = done.version, removed = done.files_removed, added = done.files_added, rows = done.rows, ms = started.elapsed().as_millis() as u64, "small files compacted");
                                t = t2;
                                changed = true;
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!(table = %t.table_url(), error = %e, "compaction failed; retried later"),
                        }
                    }
                    if checkpoint {
                        let started = Instant::now();
                        match delta::checkpoint_and_reopen(&t).await {
                            Ok(t2) => {
                                metrics
                                    .checkpoints
                                    .with_label_values(&[&name])
                                    .inc();
                                tracing::info!(table = %t.table_url(), version = t.version().unwrap_or_default(), ms = started.elapsed().as_millis() as u64, "checkpoint written");
                                t = t2;
                                changed = true;
                            }
                            Err(e) => tracing::warn!(table = %t.table_url(), error = %e, "checkpoint failed; retried later"),
                        }
                    }
                    if cleanup {
                        match delta::cleanup_logs(&t).await {
                            Ok(n) => tracing::info!(table = %t.table_url(), removed = n, "expired log files cleaned up"),
                            Err(e) => tracing::warn!(table = %t.table_url(), error = %e, "log cleanup failed; retried later"),
                        }
                    }
                    if changed {
                        fresh.push((kind, t));
                    }
                }
                fresh
            }
            .instrument(span),
        ));
    }

    /// Takes a finished maintenance run's tables, opened afresh at their checkpoints, in
    /// place of the long-lived handles, brought to the version this process has reached
    /// (reading only the few commits since).
    async fn adopt_maintained(&mut self) {
        if !self.maintenance.as_ref().is_some_and(|h| h.is_finished()) {
            return;
        }
        let Some(handle) = self.maintenance.take() else {
            return;
        };
        let fresh = match handle.await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "maintenance task failed");
                return;
            }
        };
        let Some(writer) = self.writer.as_mut() else {
            return;
        };
        for (kind, mut t) in fresh {
            let Some(current) = writer.table_mut(kind) else {
                continue;
            };
            let now = current.version();
            if t.version() < now {
                if let Err(e) = t.update_incremental(now).await {
                    tracing::warn!(table = %t.table_url(), error = %e, "reopened table not brought forward; keeping the old handle");
                    continue;
                }
            }
            if let Some(current) = writer.table_mut(kind) {
                *current = t;
            }
        }
    }

    /// Consumer lag per committed partition (high watermark minus the committed version),
    /// fetched from the broker on a blocking task of its own (never on the loop: a broker
    /// outage must not hold commits), at most every [`LAG_EVERY`] and one fetch at a time.
    fn update_lag(&mut self, parts: &BTreeMap<Tp, PartCommit>) {
        if self.lag_updated.elapsed() < LAG_EVERY
            || self.lag_task.as_ref().is_some_and(|h| !h.is_finished())
        {
            return;
        }
        self.lag_updated = Instant::now();
        let client = self.lag_client.clone();
        let name = self.cfg.name.clone();
        let lag = self.metrics.lag.clone();
        let wanted: Vec<(Tp, i64)> = parts.iter().map(|(tp, pc)| (tp.clone(), pc.next)).collect();
        self.lag_task = Some(tokio::task::spawn_blocking(move || {
            for ((topic, p), next) in wanted {
                match client.fetch_watermarks(&topic, p, Duration::from_secs(5)) {
                    Ok((_, high)) => lag
                        .with_label_values(&[&name, &topic, &p.to_string()])
                        .set((high - next).max(0)),
                    Err(e) => {
                        tracing::debug!(%topic, partition = p, error = %e, "lag: watermarks not fetched")
                    }
                }
            }
        }));
    }

    /// Drops everything buffered, reloads both tables, re-reads every owned partition's
    /// versions and resumes reading from them, and rebuilds the dedup state from the table.
    async fn resync(&mut self, why: &str) -> Result<()> {
        tracing::warn!(pipeline = %self.cfg.name, why, "resync: buffers dropped, versions re-read");
        self.pending.clear();
        for h in self.inflight.drain(..) {
            // their rows are re-read from the versions below
            h.abort();
        }
        // bound to the old engine's rules
        self.evaluators.clear();
        self.pending_messages = 0;
        let cfg = self.cfg.clone();
        let w = self.writer_mut()?;
        w.data = delta::open_or_create(&cfg.data).await?;
        w.txns.clear();
        w.quarantine = delta::open_or_create(&cfg.quarantine).await?;
        w.events = delta::open_or_create(&cfg.events).await?;
        if let Some(a) = &cfg.alerts {
            w.alerts = Some(delta::open_or_create(a).await?);
        }
        let tps: Vec<Tp> = self.parts.keys().cloned().collect();
        let versions = self.reader.read(&tps).await?;
        for (tp, part) in self.parts.iter_mut() {
            let v = versions.get(tp).copied().unwrap_or_default();
            part.committed = v;
            part.open = None;
            part.idle = false;
            part.last_seen = Instant::now();
            part.next = v.start();
            part.seek_to = Some(match (v.start(), self.cfg.starting_offsets) {
                (Some(o), _) => Offset::Offset(o),
                (None, StartingOffsets::Earliest) => Offset::Beginning,
                (None, StartingOffsets::Latest) => Offset::End,
            });
        }
        let data = self.writer_mut()?.data.clone();
        self.engine = Self::new_engine(&cfg, &data).await?;
        self.patterns = Self::new_patterns(&cfg, &data).await?;
        if let Some(d) = self.engine.dedup() {
            for tp in self.parts.keys() {
                d.expect_partition(&tp.0, tp.1);
            }
        }
        self.retry_seeks();
        Ok(())
    }
}

/// The tables a pipeline writes and what writes them: owned by the loop between commits,
/// by the commit task during one.
struct Writer {
    cfg: Arc<PipelineConfig>,
    metrics: &'static IngestMetrics,
    producer: Option<FutureProducer>,
    /// The consumer's revocation count (see [`crate::assign::IngestContext::revocations`]).
    revocations: Arc<std::sync::atomic::AtomicU64>,
    data: DeltaTable,
    quarantine: DeltaTable,
    events: DeltaTable,
    /// The alerts table, when the spec has patterns.
    alerts: Option<DeltaTable>,
    /// The data table's txn versions for the fencing check (no log replay per lookup).
    txns: crate::txncache::TxnCache,
}

/// A commit under way on its own task.
struct Committing {
    handle: tokio::task::JoinHandle<(Writer, Outcome)>,
    /// The commit's span (its correlation id), for the lines its outcome logs.
    span: tracing::Span,
    started: Instant,
}

/// How a commit task ended.
enum Outcome {
    Written {
        prepared: Prepared,
        /// Whether the processed_events commit landed too.
        events_ok: bool,
        write_ms: f64,
    },
    /// Another process committed one of the partitions: drop what is buffered, re-read.
    Fenced(IngestError),
    /// Partitions were revoked after the commit was prepared; nothing was written (a lost
    /// partition may already be another member's): drop what is buffered, re-read.
    Revoked,
    /// Transient failures, retried [`COMMIT_ATTEMPTS`] times: drop what is buffered, re-read.
    GaveUp(IngestError),
    Failed(IngestError),
}

impl PartCommit {
    /// The quarantine's version after this commit: never below what it holds.
    fn quarantine_version(&self) -> i64 {
        self.held.quarantine.map_or(self.next, |q| q.max(self.next))
    }

    /// The alerts table's version after this commit: never below what it holds.
    fn alerts_version(&self) -> i64 {
        self.held.alerts.map_or(self.next, |a| a.max(self.next))
    }
}

impl Writer {
    fn table_mut(&mut self, kind: TableKind) -> Option<&mut DeltaTable> {
        match kind {
            TableKind::Data => Some(&mut self.data),
            TableKind::Quarantine => Some(&mut self.quarantine),
            TableKind::Events => Some(&mut self.events),
            TableKind::Alerts => self.alerts.as_mut(),
        }
    }

    /// Writes a prepared commit, retrying transient failures with backoff; then its
    /// processed_events rows.
    async fn commit(&mut self, prepared: Prepared, commit_id: &str, started: Instant) -> Outcome {
        let writing = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            // the fencing check inside the write still guards a revoke that comes later
            if self.revocations.load(Ordering::SeqCst) != prepared.revocations {
                return Outcome::Revoked;
            }
            match self.write(&prepared, commit_id).await {
                Ok(()) => break,
                Err(e) if e.is_fenced() => return Outcome::Fenced(e),
                Err(e)
                    if e.class() == finlake_core::ErrorClass::Transient
                        && attempt < COMMIT_ATTEMPTS =>
                {
                    self.metrics
                        .retries
                        .with_label_values(&[&self.cfg.name])
                        .inc();
                    let backoff = Duration::from_millis(200 * 2u64.pow(attempt));
                    tracing::warn!(error = %e, attempt, ?backoff, "commit failed; retrying the same commit");
                    tokio::time::sleep(backoff).await;
                    // a commit that did land meanwhile shows as ConcurrentTransaction next
                    // time (the same app ids): the fenced path re-reads and goes on
                }
                Err(e) if e.class() == finlake_core::ErrorClass::Transient => {
                    return Outcome::GaveUp(e)
                }
                Err(e) => return Outcome::Failed(e),
            }
        }
        let events_ok = self
            .write_events(&prepared, commit_id, started.elapsed().as_secs_f64() * 1e3)
            .await;
        Outcome::Written {
            prepared,
            events_ok,
            write_ms: writing.elapsed().as_secs_f64() * 1e3,
        }
    }

    /// Dead letters (at least once: produced and acknowledged before the commit), then the
    /// quarantine commit, then the data commit, each with the partitions' `txn`s.
    async fn write(&mut self, p: &Prepared, commit_id: &str) -> Result<()> {
        // fencing: the snapshot we commit against, brought up to date first (so another
        // writer's commit is seen before the quarantine is written), must hold exactly where
        // our batch starts
        self.data.update_incremental(None).await.map_err(|e| {
            finlake_core::delta::DeltaError::Table {
                uri: self.cfg.data.uri.clone(),
                operation: "refresh before commit",
                source: Box::new(e),
            }
        })?;
        for (tp, pc) in &p.parts {
            let app = self.cfg.app_id(&tp.0, tp.1);
            let found = self.txns.version(&self.data, &app).await?;
            let ours = pc.held.data;
            if found != ours || found.is_some_and(|v| v != pc.from) {
                return Err(IngestError::Fenced {
                    app_id: app,
                    found,
                    expected: pc.from,
                });
            }
        }
        self.produce_dead_letters(&p.dead_letters).await?;
        let txns: Vec<(String, i64)> = p
            .parts
            .iter()
            .map(|(tp, pc)| (self.cfg.app_id(&tp.0, tp.1), pc.next))
            .collect();
        let partitions: Vec<serde_json::Value> = p
            .parts
            .iter()
            .map(|(tp, pc)| {
                serde_json::json!({
                    "topic": tp.0, "partition": tp.1, "from": pc.from, "next": pc.next,
                    "messages": pc.messages, "landed": pc.landed,
                    "quarantined": pc.quarantined, "duplicates": pc.duplicates,
                })
            })
            .collect();
        let metadata = vec![(
            "finlake".to_string(),
            serde_json::json!({
                "pipeline": self.cfg.name,
                "commit_id": commit_id,
                "batches": p.records,
                "partitions": partitions,
                "finlake_version": env!("CARGO_PKG_VERSION"),
                "instance": instance_id(),
            }),
        )];
        let extras = CommitExtras {
            txns,
            metadata,
            deferred_checkpoint: true,
        };
        if !p.quarantine.is_empty() || p.restamp {
            // never move the quarantine's version back (after a crash it can be ahead)
            let q_extras = CommitExtras {
                txns: p
                    .parts
                    .iter()
                    .map(|(tp, pc)| (self.cfg.app_id(&tp.0, tp.1), pc.quarantine_version()))
                    .collect(),
                metadata: extras.metadata.clone(),
                deferred_checkpoint: true,
            };
            let table = self.quarantine.clone();
            self.quarantine = delta::append(table, p.quarantine.clone(), &q_extras).await?;
            self.metrics
                .commits
                .with_label_values(&[&self.cfg.name, "quarantine"])
                .inc();
        }
        if !p.alerts.is_empty() || p.restamp {
            // to the output topics first (at least once: a crash before the table commit
            // sends them again), then the table (exactly once: its own versions)
            self.produce_alerts(&p.alerts).await?;
            if let Some(table) = self.alerts.clone() {
                let a_extras = CommitExtras {
                    txns: p
                        .parts
                        .iter()
                        .map(|(tp, pc)| (self.cfg.app_id(&tp.0, tp.1), pc.alerts_version()))
                        .collect(),
                    metadata: extras.metadata.clone(),
                    deferred_checkpoint: true,
                };
                self.alerts = Some(delta::append(table, p.alerts.clone(), &a_extras).await?);
                self.metrics
                    .commits
                    .with_label_values(&[&self.cfg.name, "alerts"])
                    .inc();
            }
        }
        let table = self.data.clone();
        self.data = delta::append(table, p.landed.clone(), &extras).await?;
        self.metrics
            .commits
            .with_label_values(&[&self.cfg.name, "data"])
            .inc();
        Ok(())
    }

    /// The `processed_events` commit after a data commit: this commit's micro-batches, and
    /// those of an earlier data commit that a crash kept out of the table (read back from the
    /// data table's log), with a `txn` per partition. Its failure costs no data: it is logged,
    /// counted, and the gap is filled by the partition's next commit. Returns whether it landed.
    async fn write_events(&mut self, p: &Prepared, commit_id: &str, commit_ms: f64) -> bool {
        let Some(version) = self.data.version() else {
            return false;
        };
        let mut repaired: Vec<(i64, String, String, BatchRecord)> = Vec::new();
        for (tp, pc) in &p.parts {
            let held = pc.held.events;
            // the data table held `pc.from` before this commit; anything of this partition
            // before it that the events table lacks is a gap
            if held.is_some_and(|h| h >= pc.from) || (held.is_none() && pc.from == 0) {
                continue;
            }
            let from = held.unwrap_or(i64::MIN);
            match events::records_from_log(&self.data, &self.cfg.name, &tp.0, tp.1, from, pc.from)
                .await
            {
                Ok(r) => {
                    tracing::info!(topic = %tp.0, partition = tp.1, from, to = pc.from, batches = r.len(), "processed_events: gap filled from the data table's log");
                    repaired.extend(r);
                }
                Err(e) => {
                    tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "processed_events: gap not filled; retried at the next commit");
                    return false;
                }
            }
        }
        let instance = instance_id();
        let mut rows: Vec<events::Committed> = repaired
            .iter()
            .map(|(v, cid, inst, r)| events::Committed {
                record: r,
                commit_id: cid,
                data_version: *v,
                commit_ms: None,
                instance: inst,
                repaired: true,
            })
            .collect();
        rows.extend(p.records.iter().map(|r| events::Committed {
            record: r,
            commit_id,
            data_version: version as i64,
            commit_ms: Some(commit_ms),
            instance,
            repaired: false,
        }));
        let batch = match events::to_batch(&self.cfg.name, &rows) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "processed_events: rows not built");
                return false;
            }
        };
        let extras = CommitExtras {
            txns: p
                .parts
                .iter()
                .map(|(tp, pc)| (self.cfg.app_id(&tp.0, tp.1), pc.next))
                .collect(),
            metadata: vec![(
                "finlake".to_string(),
                serde_json::json!({"pipeline": self.cfg.name, "commit_id": commit_id, "data_version": version}),
            )],
            deferred_checkpoint: true,
        };
        match delta::append(self.events.clone(), vec![batch], &extras).await {
            Ok(t) => {
                self.events = t;
                self.metrics
                    .commits
                    .with_label_values(&[&self.cfg.name, "processed_events"])
                    .inc();
                true
            }
            Err(e) => {
                self.metrics
                    .events_failures
                    .with_label_values(&[&self.cfg.name])
                    .inc();
                tracing::warn!(error = %e, "processed_events commit failed; its rows are rebuilt from the data table's log at the next commit");
                // another writer may have moved it: read it afresh next time
                if let Ok(t) = delta::open_or_create(&self.cfg.events).await {
                    self.events = t;
                }
                false
            }
        }
    }

    /// Each alert as a JSON message to its output topic, keyed by the alert's key.
    async fn produce_alerts(&self, alerts: &[RecordBatch]) -> Result<()> {
        let Some(producer) = &self.producer else {
            return Ok(());
        };
        let mut messages = Vec::new();
        for b in alerts {
            for row in 0..b.num_rows() {
                if let Some((topic, key, payload)) = alert_message(b, row) {
                    messages.push((topic, key, payload));
                }
            }
        }
        let mut deliveries = Vec::with_capacity(messages.len());
        for (topic, key, payload) in &messages {
            let record = FutureRecord::to(topic)
                .payload(payload.as_str())
                .key(key.as_str());
            deliveries.push(producer.send(record, Duration::from_secs(30)));
        }
        for d in futures::future::join_all(deliveries).await {
            d.map_err(|(e, _)| IngestError::Kafka {
                operation: "produce alert",
                source: e,
            })?;
        }
        Ok(())
    }

    async fn produce_dead_letters(&self, letters: &[DeadLetter]) -> Result<()> {
        let (Some(producer), Some(topic)) = (&self.producer, &self.cfg.dead_letter_topic) else {
            return Ok(());
        };
        let mut deliveries = Vec::with_capacity(letters.len());
        for l in letters {
            let headers = OwnedHeaders::new_with_capacity(4)
                .insert(Header {
                    key: headers::REASON,
                    value: Some(l.reason.as_str()),
                })
                .insert(Header {
                    key: headers::RULE,
                    value: Some(l.rule.as_str()),
                })
                .insert(Header {
                    key: headers::SOURCE,
                    value: Some(l.key.as_str()),
                })
                .insert(Header {
                    key: headers::CORRELATION_ID,
                    value: Some(l.correlation_id.as_str()),
                });
            let record = FutureRecord::to(topic)
                .payload(l.payload.as_slice())
                .key(l.key.as_str())
                .headers(headers);
            deliveries.push(producer.send(record, Duration::from_secs(30)));
        }
        for d in futures::future::join_all(deliveries).await {
            d.map_err(|(e, _)| IngestError::Kafka {
                operation: "produce dead letter",
                source: e,
            })?;
        }
        self.metrics
            .dead_letters
            .with_label_values(&[&self.cfg.name])
            .inc_by(letters.len() as u64);
        Ok(())
    }
}

/// What the tables hold of a partition, as far as this process knows.
fn held(parts: &HashMap<Tp, Part>, tp: &Tp) -> Versions {
    parts.get(tp).map(|p| p.committed).unwrap_or_default()
}

/// The end of the commit under way; never, when there is none.
async fn commit_done(
    c: &mut Option<Committing>,
) -> std::result::Result<(Writer, Outcome), tokio::task::JoinError> {
    match c {
        Some(c) => (&mut c.handle).await,
        None => std::future::pending().await,
    }
}

/// This process: `<hostname>/<pid>`, in every commit's metadata (which process committed
/// what, when partitions move between processes).
pub fn instance_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        format!("{host}/{}", std::process::id())
    })
}

/// Runs every pipeline until `shutdown`; the first pipeline that fails stops the others.
pub async fn run_all(
    pipelines: Vec<PipelineConfig>,
    health: Vec<Arc<Health>>,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let mut set = tokio::task::JoinSet::new();
    for (cfg, health) in pipelines.into_iter().zip(health) {
        // every line of a pipeline's run carries a correlation id: its batches' and commits'
        // own where there is one, this run's otherwise
        let run_id = finlake_core::telemetry::correlation_id("ING-RUN");
        let span = tracing::info_span!("pipeline", correlation_id = %run_id, pipeline = %cfg.name);
        let ingestor = Ingestor::start(cfg, health)
            .instrument(span.clone())
            .await?;
        set.spawn(ingestor.run(shutdown.clone()).instrument(span));
    }
    while let Some(r) = set.join_next().await {
        let r = r.map_err(|e| IngestError::Internal(format!("pipeline task: {e}")))?;
        r?;
    }
    Ok(())
}

/// An alert row as its output-topic message: (topic, key, JSON payload). `None` for an alert
/// without a Kafka destination.
fn alert_message(b: &RecordBatch, row: usize) -> Option<(String, String, String)> {
    let text = |name: &str| -> Option<&str> {
        let c = b.column_by_name(name)?.as_string_opt::<i32>()?;
        (!c.is_null(row)).then(|| c.value(row))
    };
    let micros = |name: &str| -> Option<String> {
        let c = b
            .column_by_name(name)?
            .as_primitive_opt::<arrow::datatypes::TimestampMicrosecondType>()?;
        if c.is_null(row) {
            return None;
        }
        chrono::DateTime::from_timestamp_micros(c.value(row))
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
    };
    let topic = text("output_topic")?;
    let partition = b
        .column_by_name("_partition")
        .and_then(|c| c.as_primitive_opt::<arrow::datatypes::Int32Type>())
        .filter(|c| !c.is_null(row))
        .map(|c| c.value(row));
    let offset = b
        .column_by_name("_offset")
        .and_then(|c| c.as_primitive_opt::<arrow::datatypes::Int64Type>())
        .filter(|c| !c.is_null(row))
        .map(|c| c.value(row));
    let detail: serde_json::Value = text("detail")
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or(serde_json::Value::Null);
    let payload = serde_json::json!({
        "pipeline": text("pipeline"),
        "alert": text("alert"),
        "kind": text("kind"),
        "severity": text("severity"),
        "condition": text("condition"),
        "key": text("key"),
        "event_time": micros("event_time"),
        "detected_at": micros("detected_at"),
        "source": {"topic": text("_topic"), "partition": partition, "offset": offset},
        "correlation_id": text("_correlation_id"),
        "row": detail,
    });
    Some((
        topic.to_string(),
        text("key").unwrap_or_default().to_string(),
        payload.to_string(),
    ))
}
