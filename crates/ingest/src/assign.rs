//! Partition ownership: the consumer context whose rebalance callback sets each partition's
//! start offset inside the assign call, from the tables' `txn` versions.
//!
//! The traps this avoids (librdkafka's headers, rust-rdkafka's tracker):
//! - A seek right after an assign fails with "Erroneous state" (fetching has not started),
//!   and a seek with timeout 0 reports nothing. So the offsets go into the assign itself:
//!   `rebalance` is overridden, each partition's next offset is put into the list
//!   (`Offset::Offset(v)`, or the spec's `starting_offsets` for a partition the table holds
//!   nothing of), and `incremental_assign`'s `Result` is handled (the default drops it).
//! - The callback runs synchronously inside `recv()`. The versions of a partition this
//!   process is assigned are read from the Delta log there, on a thread of its own (another
//!   process may have committed the partition since we last saw it: a version we remember
//!   from an earlier ownership is never trusted). Partitions kept across a cooperative
//!   rebalance are not touched and need no read.
//! - In cooperative mode Assign and Revoke carry only the partitions that change. On revoke
//!   exactly those partitions' buffers are dropped (the loop does it, told through
//!   [`Assignment`]); `assignment_lost()` is read before the unassign.
//! - `auto.offset.reset=error`: an offset retention has overtaken is an error and a metric,
//!   never a silent jump.

// Runs inside the consumer's poll: no unwrap/expect, a failure is reported to the loop.
#![warn(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use finlake_core::delta::{self, TableSpec};
use finlake_core::spec::StartingOffsets;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;

use crate::config::app_id;
use crate::error::{IngestError, Result};
use crate::metrics::IngestMetrics;

/// A source partition: (topic, partition).
pub type Tp = (String, i32);

/// What the tables hold of one partition: the next offset each would take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Versions {
    /// The data table's `txn` version (the next offset to read), if it has one.
    pub data: Option<i64>,
    /// The quarantine table's own version. Ahead of `data` only after a crash between the
    /// two commits: quarantine rows below it are already there and are skipped.
    pub quarantine: Option<i64>,
    /// The `processed_events` table's own version. Behind `data` only after a crash between
    /// the two commits: the next commit fills the gap from the data table's log.
    pub events: Option<i64>,
    /// The alerts table's own version (when the pipeline has patterns): alerts of rows
    /// below it are there already and are skipped.
    pub alerts: Option<i64>,
}

impl Versions {
    /// Where reading starts: the data table's version.
    pub fn start(&self) -> Option<i64> {
        self.data
    }
}

/// One change of ownership, as the callback made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Assigned, with the tables' versions read at assignment.
    Assigned(Tp, Versions),
    /// Revoked; `true` when the assignment was lost.
    Revoked(Tp, bool),
}

/// Ownership changes since the loop last looked, in the order they happened (a partition
/// assigned then revoked before the loop looks must end up not owned).
#[derive(Debug, Default)]
pub struct Assignment {
    /// The changes, oldest first.
    pub changes: Vec<Change>,
    /// A rebalance that failed: the loop stops with it (the group moves the partitions on).
    pub failed: Option<String>,
}

/// Reads the tables' versions for partitions, from the latest log.
#[derive(Clone)]
pub struct VersionReader {
    pipeline: String,
    data: TableSpec,
    quarantine: TableSpec,
    events: TableSpec,
    alerts: Option<TableSpec>,
}

impl VersionReader {
    /// A reader of the `data`, `quarantine` and `events` tables' txn versions for `pipeline`.
    pub fn new(
        pipeline: &str,
        data: &TableSpec,
        quarantine: &TableSpec,
        events: &TableSpec,
        alerts: Option<&TableSpec>,
    ) -> Self {
        VersionReader {
            pipeline: pipeline.to_string(),
            data: data.clone(),
            quarantine: quarantine.clone(),
            events: events.clone(),
            alerts: alerts.cloned(),
        }
    }

    /// Each partition's versions, from the latest snapshot of the three tables.
    pub async fn read(&self, parts: &[Tp]) -> Result<HashMap<Tp, Versions>> {
        let data = delta::open_or_create(&self.data).await?;
        let quarantine = delta::open_or_create(&self.quarantine).await?;
        let events = delta::open_or_create(&self.events).await?;
        let alerts = match &self.alerts {
            Some(a) => Some(delta::open_or_create(a).await?),
            None => None,
        };
        let mut out = HashMap::new();
        for (topic, p) in parts {
            let id = app_id(&self.pipeline, topic, *p);
            let v = Versions {
                data: delta::txn_version(&data, &id).await?,
                quarantine: delta::txn_version(&quarantine, &id).await?,
                events: delta::txn_version(&events, &id).await?,
                alerts: match &alerts {
                    Some(a) => delta::txn_version(a, &id).await?,
                    None => None,
                },
            };
            out.insert((topic.clone(), *p), v);
        }
        Ok(out)
    }

    /// [`VersionReader::read`] from synchronous code (the rebalance callback): on a thread of
    /// its own with its own runtime, so it works whatever runtime (if any) the caller is on.
    pub fn read_blocking(&self, parts: &[Tp]) -> Result<HashMap<Tp, Versions>> {
        let run = || {
            std::thread::scope(|s| {
                s.spawn(|| {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| IngestError::Internal(format!("runtime: {e}")))?;
                    rt.block_on(self.read(parts))
                })
                .join()
                .map_err(|_| IngestError::Internal("version reader panicked".into()))?
            })
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(run)
            }
            _ => run(),
        }
    }
}

/// The consumer's context: logs through `tracing`, and owns the rebalance.
pub struct IngestContext {
    /// Ownership, shared with the loop.
    pub assignment: Arc<Mutex<Assignment>>,
    /// Bumped on every rebalance, so the loop looks at `assignment` only when it changed.
    pub generation: Arc<AtomicU64>,
    /// Bumped on every revoke, before the unassign: a commit under way that was prepared
    /// before it commits nothing (a revoked or lost partition may already be another's).
    pub revocations: Arc<AtomicU64>,
    reader: VersionReader,
    starting: StartingOffsets,
    pipeline: String,
}

impl IngestContext {
    /// A context for `pipeline`.
    pub fn new(pipeline: &str, reader: VersionReader, starting: StartingOffsets) -> Self {
        IngestContext {
            assignment: Arc::default(),
            generation: Arc::default(),
            revocations: Arc::default(),
            reader,
            starting,
            pipeline: pipeline.to_string(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Assignment> {
        // a panic while holding it leaves plain data behind: keep going with it
        self.assignment.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fail(&self, message: String) {
        tracing::error!(pipeline = %self.pipeline, %message, "rebalance failed");
        self.lock().failed = Some(message);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let parts: Vec<Tp> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let versions = match self.reader.read_blocking(&parts) {
            Ok(v) => v,
            Err(e) => {
                // Assign nothing: the loop stops, the group hands the partitions on.
                return self.fail(format!("reading the tables' versions for {parts:?}: {e}"));
            }
        };
        for (topic, p) in &parts {
            let v = versions
                .get(&(topic.clone(), *p))
                .copied()
                .unwrap_or_default();
            let offset = match (v.start(), self.starting) {
                (Some(o), _) => Offset::Offset(o),
                (None, StartingOffsets::Earliest) => Offset::Beginning,
                (None, StartingOffsets::Latest) => Offset::End,
            };
            if let Err(e) = tpl.set_partition_offset(topic, *p, offset) {
                return self.fail(format!("{topic}/{p}: setting start offset: {e}"));
            }
            tracing::info!(pipeline = %self.pipeline, topic = %topic, partition = p, ?offset, "partition assigned");
        }
        let res = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
            _ => consumer.assign(tpl),
        };
        if let Err(e) = res {
            return self.fail(format!("assign {parts:?}: {e}"));
        }
        let mut a = self.lock();
        for tp in parts {
            let v = versions.get(&tp).copied().unwrap_or_default();
            a.changes.push(Change::Assigned(tp, v));
        }
        drop(a);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        // read before the unassign: it describes the state the callback was called in
        let lost = consumer.assignment_lost();
        let parts: Vec<Tp> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        {
            let mut a = self.lock();
            for tp in &parts {
                a.changes.push(Change::Revoked(tp.clone(), lost));
            }
        }
        self.revocations.fetch_add(1, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
        tracing::info!(pipeline = %self.pipeline, partitions = ?parts, lost, "partitions revoked");
        let res = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
            _ => consumer.unassign(),
        };
        if let Err(e) = res {
            self.fail(format!("unassign {parts:?}: {e}"));
        }
    }
}

impl ClientContext for IngestContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                tracing::error!(target: "librdkafka", pipeline = %self.pipeline, fac, "{log_message}")
            }
            L::Warning => {
                tracing::warn!(target: "librdkafka", pipeline = %self.pipeline, fac, "{log_message}")
            }
            _ => {
                tracing::debug!(target: "librdkafka", pipeline = %self.pipeline, fac, "{log_message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        IngestMetrics::global()
            .kafka_errors
            .with_label_values(&[&self.pipeline])
            .inc();
        tracing::warn!(pipeline = %self.pipeline, %error, reason, "kafka client error");
    }
}

impl ConsumerContext for IngestContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.revoke(consumer, tpl),
            other => {
                // librdkafka: on a rebalance error, drop the assignment
                tracing::warn!(pipeline = %self.pipeline, error = ?other, "rebalance error; unassigning");
                self.revoke(consumer, tpl);
            }
        }
    }
}
