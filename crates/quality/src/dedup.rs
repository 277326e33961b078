//! Deduplication on business keys within an event-time window: the one stateful rule.
//!
//! A duplicate is a row whose key was seen at an event time at most `window` apart.
//!
//! The watermark is kept per source partition (`_topic`, `_partition`): each partition's newest
//! event time, advanced row by row, but not by a row whose event time is more than `max_skew`
//! ahead of its ingest time (`_ingested_at`; the spec's `timestamp_skew` rule on the event time,
//! 5 minutes without one): a producer's clock one day ahead does not make every later row late.
//! (Only ahead: a partition read from a backlog is behind its ingest time by design, and must
//! still move its own watermark.)
//! The watermark the rows are judged by is the minimum over the partitions, minus the window:
//! a partition that lags in event time is not late wholesale because another is ahead. A row
//! older than it is `late` (it cannot be checked against state that is gone). State older than
//! it is treated as gone at once and dropped when the state has doubled (it rotates its two
//! generations, see [`state`]), so the entries held are at most twice the keys of one window,
//! and the verdicts do not depend on how the input is split into batches. A partition that stops sending holds the watermark where it is (the ingestor
//! forgets a partition when it is revoked, [`Deduplicator::forget_partition`]).
//!
//! Verdicts: `Unique` lands; `Duplicate` (same key and same payload) is counted and dropped;
//! `Conflict` (same key, different payload: a correction or a bust) is quarantined with a
//! reason that names the first version's partition and offset, never dropped; `Late` is
//! handled as the rule says.
//!
//! Keys are compared by 128-bit fingerprints: two independently seeded 64-bit hashes
//! (DataFusion's `create_hashes`, vectorised over the Arrow arrays) per row, so the state holds
//! no key bytes and nothing is allocated per row or per key. Two different keys share a
//! fingerprint with odds near n²/2¹²⁹ for n keys in a window, far below any hardware error
//! rate; the data is not adversarial. Payloads are compared by a third 64-bit hash, and only
//! when a key repeats: a conflicting retry passes for an exact one with odds 2⁻⁶⁴ per repeated
//! key (a day's 11,000 producer retries: once in 10¹⁵ days). An entry holds its first
//! version's fingerprint, event time and lineage (64 bytes with its place in a table) and
//! nothing of the batch it came in: the state's memory is its entries', however far apart in event time the
//! source partitions are (a backlog read unevenly keeps the slowest partition's window, and
//! with it every faster partition's rows since).
// Data path: no unwrap/expect on anything derived from message bytes; each remaining one
// says why it cannot fail.
#![warn(clippy::unwrap_used, clippy::expect_used)]

mod state;

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int32Type, Int64Type, TimestampMicrosecondType};
use datafusion::common::hash_utils::{create_hashes, QualityRandomState};

use crate::error::Result;
use crate::rules::DedupRule;

/// The verdict on one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// First sight of the key within the window.
    Unique,
    /// Same key and payload as a row seen within the window: dropped, counted.
    Duplicate {
        /// `_partition` of the first version, when the batch has lineage.
        partition: Option<i32>,
        /// `_offset` of the first version.
        offset: Option<i64>,
    },
    /// Same key within the window, different payload: quarantined.
    Conflict {
        /// `_partition` of the first version, when the batch has lineage.
        partition: Option<i32>,
        /// `_offset` of the first version.
        offset: Option<i64>,
        /// Event time of the first version, UTC microseconds.
        event_time: i64,
    },
    /// Older than the watermark.
    Late {
        /// The watermark when the row arrived, UTC microseconds.
        watermark: i64,
    },
}

/// Dedup counts; mergeable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DedupStats {
    /// Rows seen.
    pub rows: u64,
    /// Rows dropped as exact duplicates.
    pub duplicate_rows: u64,
    /// Distinct keys seen more than once within a window (exact or conflicting).
    pub duplicate_keys: u64,
    /// Rows quarantined as conflicting duplicates.
    pub conflicting_duplicates: u64,
    /// Rows older than the watermark.
    pub late: u64,
}

impl DedupStats {
    /// Adds another batch's counts.
    pub fn merge(&mut self, o: &DedupStats) {
        self.rows += o.rows;
        self.duplicate_rows += o.duplicate_rows;
        self.duplicate_keys += o.duplicate_keys;
        self.conflicting_duplicates += o.conflicting_duplicates;
        self.late += o.late;
    }
}

/// The key was seen again within the window.
const REPEATED: u8 = 1;
const HAS_OFFSET: u8 = 2;
const HAS_PARTITION: u8 = 4;

impl state::Entry {
    fn lineage(&self) -> (Option<i32>, Option<i64>) {
        (
            (self.flags & HAS_PARTITION != 0).then_some(self.partition),
            (self.flags & HAS_OFFSET != 0).then_some(self.offset),
        )
    }
}

/// A key's 128-bit fingerprint as the state holds it: two 64-bit halves, so an entry is
/// aligned to 8 bytes, not 16 as a `u128` would make it. The state's tables are probed by the
/// low half, already a hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key(u64, u64);

/// Fingerprints are already hashes: a set of them uses their low bits as they are.
#[derive(Default, Clone, Copy)]
pub(crate) struct Prehashed(u64);

/// A set of 128-bit key fingerprints (as dedup keys its state).
pub(crate) type FingerprintSet =
    std::collections::HashSet<u128, std::hash::BuildHasherDefault<Prehashed>>;

/// Adds the 128-bit fingerprint of every row's `cols` to `set`, the same fingerprint dedup
/// keys its state with (see the module docs for the collision odds); `scratch` is reused
/// across batches so nothing is allocated per row.
pub(crate) fn add_fingerprints(
    cols: &[ArrayRef],
    n: usize,
    scratch: &mut [Vec<u64>; 2],
    set: &mut FingerprintSet,
) -> Result<()> {
    let [a, b] = scratch;
    fingerprints(cols, n, a, b)?;
    set.extend(
        a.iter()
            .zip(b.iter())
            .map(|(&x, &y)| (u128::from(x) << 64) | u128::from(y)),
    );
    Ok(())
}

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

/// The 128-bit fingerprints of a batch's dedup keys (two 64-bit hash passes, row by row) and
/// its payloads' hashes, made ahead of [`Deduplicator::process_rows_fingerprinted`], typically
/// on another thread.
#[derive(Debug, Default)]
pub struct KeyFingerprints {
    keys: [Vec<u64>; 2],
    payload: Vec<u64>,
}

impl KeyFingerprints {
    /// Fingerprints `rule`'s key columns of `batch`.
    pub fn of(rule: &DedupRule, batch: &RecordBatch) -> Result<Self> {
        let schema = batch.schema();
        let cols = rule
            .keys
            .iter()
            .map(|k| Ok(batch.column(schema.index_of(k)?).clone()))
            .collect::<Result<Vec<ArrayRef>>>()?;
        let mut out = KeyFingerprints::default();
        let [a, b] = &mut out.keys;
        fingerprints(&cols, batch.num_rows(), a, b)?;
        payload_hashes(batch, &rule.keys, &mut out.payload)?;
        Ok(out)
    }
}

/// A batch's rows by source partition (`_topic`, `_partition`): each row's topic as an index
/// into the batch's few distinct topics, found by the stateless half so the stateful half
/// compares no string per row. Rows without lineage (no column, or NULL) count as topic `""`,
/// partition 0.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Sources {
    /// The batch's distinct topics, in order of first appearance (a pipeline reads few).
    topics: Vec<String>,
    /// Each row's index into `topics`; empty when every row has topic 0 (one topic).
    topic_of: Vec<u32>,
    /// `_partition`, when the batch has it without NULLs.
    partitions: Option<arrow::buffer::ScalarBuffer<i32>>,
    rows: usize,
}

impl Sources {
    /// The sources of `batch`'s rows.
    pub fn of(batch: &RecordBatch) -> Self {
        let n = batch.num_rows();
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .filter(|c| c.null_count() == 0)
                .cloned()
        };
        let mut out = Sources {
            partitions: column("_partition").and_then(|c| {
                c.as_primitive_opt::<Int32Type>()
                    .map(|p| p.values().clone())
            }),
            rows: n,
            ..Sources::default()
        };
        let topics = column("_topic").and_then(|c| match c.data_type() {
            DataType::Utf8 | DataType::Dictionary(..) => Some(c),
            _ => arrow::compute::cast(&c, &DataType::Utf8).ok(),
        });
        let dictionary = topics
            .as_ref()
            .and_then(|c| c.as_dictionary_opt::<Int32Type>())
            .and_then(|d| Some((d.keys().values(), d.values().as_string_opt::<i32>()?)));
        let plain = topics.as_ref().and_then(|c| c.as_string_opt::<i32>());
        if let Some((keys, values)) = dictionary {
            let index: Vec<u32> = values
                .iter()
                .map(|v| out.topic(v.unwrap_or_default()))
                .collect();
            // one topic (the usual dictionary of a file's `_topic`) needs no index a row
            if index.iter().any(|&i| i != 0) {
                // keys index the values (arrow validates a dictionary's keys)
                out.topic_of = keys
                    .iter()
                    .map(|&k| index.get(k as usize).copied().unwrap_or_default())
                    .collect();
            }
        } else if let Some(topics) = plain.filter(|t| constant(t).is_none()) {
            let mut last: Option<(&str, u32)> = None;
            out.topic_of = (0..n)
                .map(|row| {
                    let name = topics.value(row);
                    let id = match last {
                        Some((l, id)) if l == name => id,
                        _ => out.topic(name),
                    };
                    last = Some((name, id));
                    id
                })
                .collect();
        } else {
            let name = plain.filter(|t| !t.is_empty()).map(|t| t.value(0));
            out.topics.push(name.unwrap_or_default().to_string());
        }
        out
    }

    fn topic(&mut self, name: &str) -> u32 {
        index_in(&mut self.topics, name)
    }

    /// The rows these are the sources of.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// `row`'s source: (index into [`Sources::topics`], partition).
    pub fn source(&self, row: usize) -> (u32, i32) {
        (
            self.topic_of.get(row).copied().unwrap_or(0),
            self.partitions.as_ref().map_or(0, |p| p[row]),
        )
    }

    /// The batch's distinct topics, which the sources index.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }
}

/// The least newest event time of the source partitions.
fn least(partitions: &[((u32, i32), i64)]) -> Option<i64> {
    partitions.iter().map(|p| p.1).min()
}

/// `name`'s index in `names`, added at the end when it is not there (the lists are short:
/// a pipeline's topics).
pub(crate) fn index_in(names: &mut Vec<String>, name: &str) -> u32 {
    match names.iter().position(|t| t == name) {
        Some(i) => i as u32,
        None => {
            names.push(name.to_string());
            (names.len() - 1) as u32
        }
    }
}

/// The value every row of `a` holds (no NULLs), found without comparing row by row: the
/// offsets rise by one length, and the value bytes are that value repeated.
fn constant(a: &arrow::array::StringArray) -> Option<&str> {
    if a.is_empty() || a.null_count() > 0 {
        return None;
    }
    let first = a.value(0);
    let len = first.len();
    let offsets = a.value_offsets();
    if !offsets.windows(2).all(|w| (w[1] - w[0]) as usize == len) {
        return None;
    }
    let start = offsets[0] as usize;
    let bytes = a.value_data().get(start..start + len * a.len())?;
    let block = first.repeat(64);
    let block = block.as_bytes();
    bytes
        .chunks(block.len().max(1))
        .all(|c| c == &block[..c.len()])
        .then_some(first)
}

/// Source partitions numbered below this are found by index (dedup's watermark, dq's order
/// check), the rest by a search; a partition number from the data cannot size an index past it.
pub(crate) const INDEXED_PARTITIONS: usize = 1 << 20;

/// 128-bit fingerprints of `cols` for every row (two seeded 64-bit hash passes).
fn fingerprints(cols: &[ArrayRef], n: usize, a: &mut Vec<u64>, b: &mut Vec<u64>) -> Result<()> {
    for (buf, seed) in [(a, 0x0f1e_2d3c_4b5a_6978u64), (b, 0x8796_a5b4_c3d2_e1f0u64)] {
        hash_into(cols, n, seed, buf)?;
    }
    Ok(())
}

fn hash_into(cols: &[ArrayRef], n: usize, seed: u64, buf: &mut Vec<u64>) -> Result<()> {
    buf.clear();
    buf.resize(n, 0);
    create_hashes(cols, &QualityRandomState::with_seed(seed), buf).map_err(|e| {
        crate::error::QualityError::Evaluate {
            rule: "deduplicate".into(),
            message: e.to_string(),
        }
    })?;
    Ok(())
}

/// Every row's payload hash: the columns [`is_payload`] names, in the batch's order, NULL
/// hashed as NULL, but for the key's (a key hit has them equal already). String views and
/// dictionaries hash as their values ([`normalize_strings`] makes scanned batches plain first
/// where it matters).
fn payload_hashes(batch: &RecordBatch, keys: &[String], out: &mut Vec<u64>) -> Result<()> {
    let schema = batch.schema();
    let cols: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .filter(|(f, _)| is_payload(f.name()) && !keys.contains(f.name()))
        .map(|(_, c)| c.clone())
        .collect();
    hash_into(&cols, batch.num_rows(), 0x5a69_7887_96a5_b4c3, out)
}

/// Dedup state for one pipeline (one key space).
#[derive(Debug)]
pub struct Deduplicator {
    rule: DedupRule,
    /// The keys' first versions, in two generations (see [`state`]): entries older than the
    /// watermark are never matched, and leave when the generations rotate. Removing each key
    /// in event-time order would be a random probe a row instead.
    state: state::State,
    /// Newest event time per source partition (topic index, partition), and their minimum.
    partitions: Vec<((u32, i32), i64)>,
    last_partition: usize,
    /// Where each source partition sits in `partitions`, by topic index and partition number
    /// (plus one; 0: not there): rows of a hundred partitions interleaved one by one must not
    /// search the list a row, and hashing a key per row cost more than the rest of the
    /// watermark.
    slots: Vec<Vec<u32>>,
    topics: Vec<String>,
    min_newest: Option<i64>,
    /// `min_newest` is only a lower bound: the partition that held the minimum has moved on
    /// since. It is made exact again only when a verdict depends on it (see `run`): rows of a
    /// hundred partitions in turn each move the minimum, and rescanning the partitions for
    /// each was 3 % of `finlake dq`'s time, a tree of them 6 %.
    stale: bool,
    stats: DedupStats,
    scratch: KeyFingerprints,
}

/// Whether a column is part of what the producer sent: the source's own fields. Lineage
/// (`_*`), the columns finlake derives (`trade_date`, `isin`, `price_base`, `fx_rate`,
/// `fx_source`, ...) and the rule engine's session columns are not: a producer's retry
/// processed under newer reference data is the same message, not a conflicting duplicate.
pub(crate) fn is_payload(name: &str) -> bool {
    !name.starts_with('_')
        && name != crate::enrich::MARKET_OPEN
        && name != crate::enrich::MARKET_CLOSE
        && name != finlake_core::schema::TRADE_DATE
        && !finlake_core::schema::enrichment_fields(true, true)
            .iter()
            .any(|f| f.name() == name)
}

impl Deduplicator {
    /// Empty state for `rule`.
    pub fn new(rule: DedupRule) -> Self {
        Deduplicator {
            rule,
            state: state::State::default(),
            partitions: Vec::new(),
            last_partition: 0,
            slots: Vec::new(),
            topics: Vec::new(),
            min_newest: None,
            stale: false,
            stats: DedupStats::default(),
            scratch: Default::default(),
        }
    }

    /// The rule.
    pub fn rule(&self) -> &DedupRule {
        &self.rule
    }

    /// Keys held in state (the `finlake_dedup_state_entries` gauge).
    pub fn state_entries(&self) -> usize {
        self.state.len()
    }

    /// Counts so far.
    pub fn stats(&self) -> DedupStats {
        self.stats
    }

    /// The watermark: the least of the source partitions' newest event times, minus the window.
    pub fn watermark(&self) -> Option<i64> {
        let least = match self.stale {
            true => least(&self.partitions),
            false => self.min_newest,
        };
        least.map(|t| t.saturating_sub(self.rule.window_micros))
    }

    /// Judges every row of `batch`, in order, and updates the state. Returns the rows not
    /// judged [`Verdict::Unique`] (by row index, ascending) with their verdicts: a unique row,
    /// nearly every row, costs no output.
    pub fn process(&mut self, batch: &RecordBatch) -> Result<Vec<(u32, Verdict)>> {
        self.run(batch, None, false, None, None)
    }

    /// Judges the rows `rows` of `batch` (ascending), in order: the other rows were already
    /// routed elsewhere and are not seen. As [`Deduplicator::process`]; no copy of the batch.
    pub fn process_rows(
        &mut self,
        batch: &RecordBatch,
        rows: &[u32],
    ) -> Result<Vec<(u32, Verdict)>> {
        self.run(batch, Some(rows), false, None, None)
    }

    /// [`Deduplicator::process_rows`] with the keys already fingerprinted by
    /// [`KeyFingerprints::of`] and the rows' sources found by [`Sources::of`] (on another
    /// thread: the rule engine's stateless half does both).
    pub fn process_rows_fingerprinted(
        &mut self,
        batch: &RecordBatch,
        rows: &[u32],
        keys: KeyFingerprints,
        sources: &Sources,
    ) -> Result<Vec<(u32, Verdict)>> {
        self.run(batch, Some(rows), false, Some(keys), Some(sources))
    }

    /// Seeds the state with rows that already landed (the tail of the table after a
    /// restart): they enter the state as first versions; nothing is counted.
    pub fn seed(&mut self, batch: &RecordBatch) -> Result<()> {
        self.run(batch, None, true, None, None).map(|_| ())
    }

    /// The index of `topic` among the topics seen.
    fn topic_index(&mut self, topic: &str) -> u32 {
        index_in(&mut self.topics, topic)
    }

    fn run(
        &mut self,
        batch: &RecordBatch,
        rows: Option<&[u32]>,
        seeding: bool,
        keys: Option<KeyFingerprints>,
        sources: Option<&Sources>,
    ) -> Result<Vec<(u32, Verdict)>> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(Vec::new());
        }
        let schema = batch.schema();
        let column = |name: &String| -> Result<ArrayRef> {
            Ok(batch.column(schema.index_of(name)?).clone())
        };
        match keys {
            Some(k) if k.keys[0].len() == n && k.keys[1].len() == n && k.payload.len() == n => {
                self.scratch = k
            }
            _ => {
                let key_cols = self
                    .rule
                    .keys
                    .iter()
                    .map(column)
                    .collect::<Result<Vec<_>>>()?;
                let [k1, k2] = &mut self.scratch.keys;
                fingerprints(&key_cols, n, k1, k2)?;
                payload_hashes(batch, &self.rule.keys, &mut self.scratch.payload)?;
            }
        }
        let times = batch
            .column(schema.index_of(finlake_core::schema::EVENT_TIME)?)
            .as_primitive::<TimestampMicrosecondType>();
        let window = self.rule.window_micros;
        let lineage_col = |name: &str| {
            schema
                .index_of(name)
                .ok()
                .map(|i| batch.column(i))
                .filter(|c| c.null_count() == 0)
        };
        let ingested = lineage_col(finlake_core::schema::INGESTED_AT)
            .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>());
        let partitions = lineage_col("_partition").and_then(|c| c.as_primitive_opt::<Int32Type>());
        let offsets = lineage_col("_offset").and_then(|c| c.as_primitive_opt::<Int64Type>());
        let lineage_flags =
            offsets.map_or(0, |_| HAS_OFFSET) | partitions.map_or(0, |_| HAS_PARTITION);
        let found;
        let sources = match sources {
            Some(s) if s.len() == n => s,
            _ => {
                found = Sources::of(batch);
                &found
            }
        };
        // the batch's topics among the ones seen, once a batch
        let topics: Vec<u32> = sources.topics.iter().map(|t| self.topic_index(t)).collect();
        let judged = rows.map_or(n, <[u32]>::len);
        let mut out = Vec::new();
        let mut stats = DedupStats {
            rows: if seeding { 0 } else { judged as u64 },
            ..DedupStats::default()
        };
        // the rows as a slice, not a boxed iterator: no call through a vtable a row
        let every: Vec<u32>;
        let rows = match rows {
            Some(r) => r,
            None => {
                every = (0..n as u32).collect();
                &every
            }
        };
        for &row in rows {
            let row = row as usize;
            let t = times.value(row);
            // the row's partition first: a partition's first row joins the minimum before it
            // is judged, so it is not late merely for being the first of a lagging partition
            // ahead of its own ingest time by more than max_skew: a clock in the future, which
            // must not move the watermark. Behind it is a backlog being read: it moves.
            let skewed = ingested.is_some_and(|i| t - i.value(row) > self.rule.max_skew_micros);
            if !skewed {
                let (topic, partition) = sources.source(row);
                // `topic` indexes the batch's topics
                let topic = topics.get(topic as usize).copied().unwrap_or_default();
                self.advance((topic, partition), t);
            }
            // the minimum is at most this row's partition's newest event time: a row within a
            // window of that is not late, whatever the exact minimum
            let not_late = !skewed
                && self
                    .partitions
                    .get(self.last_partition)
                    .is_some_and(|p| t >= p.1.saturating_sub(window));
            if self.stale && !not_late {
                self.refresh();
            }
            let watermark = self.min_newest.map(|m| m.saturating_sub(window));
            let verdict = if let Some(watermark) = watermark.filter(|&w| t < w) {
                Verdict::Late { watermark }
            } else {
                let [k1, k2] = &self.scratch.keys;
                let key = Key(k1[row], k2[row]);
                let payload = self.scratch.payload[row];
                // the key's version is either live (a repeat) or free to take (absent, or a
                // stale version older than the watermark or the window)
                let found = self.state.find(key);
                let first = found.and_then(|f| self.state.time(f));
                // a repeat's first version is judged by the exact watermark
                let live = first.is_some_and(|first| {
                    self.watermark().is_none_or(|w| first >= w) && (t - first).abs() <= window
                });
                let repeat = match (found, first) {
                    (Some(f), Some(first)) if live => self.state.get_mut(f).map(|e| (first, e)),
                    _ => None,
                };
                match repeat {
                    Some((first, e)) => {
                        let once = e.flags & REPEATED == 0;
                        e.flags |= REPEATED;
                        if once {
                            stats.duplicate_keys += 1;
                        }
                        let (partition, offset) = e.lineage();
                        if e.payload == payload {
                            Verdict::Duplicate { partition, offset }
                        } else {
                            Verdict::Conflict {
                                partition,
                                offset,
                                event_time: first,
                            }
                        }
                    }
                    None => {
                        let entry = state::Entry {
                            key,
                            payload,
                            offset: offsets.map_or(0, |o| o.value(row)),
                            partition: partitions.map_or(0, |p| p.value(row)),
                            flags: lineage_flags,
                        };
                        self.state.put(found, t, entry);
                        Verdict::Unique
                    }
                }
            };
            match verdict {
                Verdict::Duplicate { .. } => stats.duplicate_rows += 1,
                Verdict::Conflict { .. } => stats.conflicting_duplicates += 1,
                Verdict::Late { .. } => stats.late += 1,
                Verdict::Unique => {}
            }
            // rotate as the state grows, not once a batch: it stays near one window's keys
            // instead of growing by a batch between rotations
            if self.state.due() {
                self.rotate();
            }
            if !seeding && verdict != Verdict::Unique {
                out.push((row as u32, verdict));
            }
        }
        if seeding {
            stats = DedupStats::default();
        }
        self.stats.merge(&stats);
        Ok(out)
    }

    /// Moves a source partition's newest event time forward to `t`, and the minimum over the
    /// partitions with it (exact, or marked `stale`).
    fn advance(&mut self, partition: (u32, i32), t: i64) {
        let at = match self.partitions.get(self.last_partition) {
            Some(p) if p.0 == partition => Some(self.last_partition),
            _ => self.position(partition),
        };
        match at {
            None => {
                self.push_partition(partition, t);
                self.last_partition = self.partitions.len() - 1;
            }
            Some(i) => {
                self.last_partition = i;
                let old = self.partitions[i].1;
                if t <= old {
                    return;
                }
                self.partitions[i].1 = t;
                if self.min_newest == Some(old) {
                    self.stale = true;
                }
            }
        }
    }

    /// Where `partition` sits in `partitions`.
    fn position(&self, (topic, partition): (u32, i32)) -> Option<usize> {
        match usize::try_from(partition) {
            Ok(p) if p < INDEXED_PARTITIONS => self
                .slots
                .get(topic as usize)
                .and_then(|t| t.get(p))
                .and_then(|&i| (i as usize).checked_sub(1)),
            // Kafka numbers partitions from 0; anything else is searched for
            _ => self
                .partitions
                .iter()
                .position(|x| x.0 == (topic, partition)),
        }
    }

    fn push_partition(&mut self, key: (u32, i32), newest: i64) {
        self.partitions.push((key, newest));
        self.index(key, self.partitions.len());
        // exact stays exact; a lower bound stays one
        self.min_newest = Some(self.min_newest.map_or(newest, |m| m.min(newest)));
    }

    fn index(&mut self, (topic, partition): (u32, i32), slot: usize) {
        let Some(p) = usize::try_from(partition)
            .ok()
            .filter(|&p| p < INDEXED_PARTITIONS)
        else {
            return;
        };
        let topic = topic as usize;
        if self.slots.len() <= topic {
            self.slots.resize(topic + 1, Vec::new());
        }
        let t = &mut self.slots[topic];
        if t.len() <= p {
            t.resize(p + 1, 0);
        }
        t[p] = slot as u32;
    }

    /// Registers a source partition that will send rows but has sent none yet (the ingestor
    /// calls this when the partition is assigned): until its first row it holds the watermark
    /// at the beginning of time, so rows of the partitions that did send are not judged late
    /// against it, and no state is evicted for it. A partition that stays silent is
    /// forgotten ([`Deduplicator::forget_partition`]) by the caller after an idle timeout.
    pub fn expect_partition(&mut self, topic: &str, partition: i32) {
        let t = self.topic_index(topic);
        if self.position((t, partition)).is_none() {
            self.push_partition((t, partition), i64::MIN);
        }
    }

    /// Forgets a source partition's watermark (the ingestor calls this when the partition is
    /// revoked: another process judges its rows now, and it must not hold the watermark).
    pub fn forget_partition(&mut self, topic: &str, partition: i32) {
        if let Some(i) = self.topics.iter().position(|t| t == topic) {
            let before = self.partitions.len();
            self.partitions.retain(|p| p.0 != (i as u32, partition));
            if self.partitions.len() != before {
                self.last_partition = 0;
                self.refresh();
                self.slots.clear();
                for at in 0..self.partitions.len() {
                    self.index(self.partitions[at].0, at + 1);
                }
            }
        }
    }

    /// Makes `min_newest` exact.
    fn refresh(&mut self) {
        self.min_newest = least(&self.partitions);
        self.stale = false;
    }

    /// Drops state older than the watermark (a rotation of the generations, see [`state`]).
    fn rotate(&mut self) {
        self.refresh();
        self.state.rotate(self.watermark());
    }
}

impl Deduplicator {
    /// Seeds the state from the tail of a landed table: the rows whose event time is within
    /// one window of the newest, in arrival order. A restarted ingestor calls this before its
    /// first batch so duplicates of rows landed before the restart are still caught.
    pub async fn seed_from_table(&mut self, table: &deltalake::DeltaTable) -> Result<usize> {
        let tail = table_tail(table, self.rule.window_micros).await?;
        let mut rows = 0;
        for b in &tail {
            // the converters are typed by the first batch seen; scans may give string views
            let b = normalize_strings(b)?;
            rows += b.num_rows();
            self.seed(&b)?;
        }
        Ok(rows)
    }
}

/// The rows of a landed table whose event time is within `window_micros` of its newest, in
/// the order they landed (`_ingested_at, _topic, _partition, _offset`): what stateful
/// consumers (dedup, patterns) replay after a restart. Pruned by `trade_date` and the files'
/// timestamp statistics, so only the last window's files are read.
pub async fn table_tail(
    table: &deltalake::DeltaTable,
    window_micros: i64,
) -> Result<Vec<arrow::array::RecordBatch>> {
    let uri = table.table_url().to_string();
    let err = |e: &dyn std::fmt::Display| crate::error::QualityError::Query {
        table: uri.clone(),
        message: e.to_string(),
    };
    let ctx = finlake_core::delta::sql_context(table, "t").await?;
    let ts = finlake_core::schema::EVENT_TIME;
    // the newest event time from the log's statistics (no data read); to the millisecond,
    // so one more millisecond; a table without statistics asks the data
    let from_stats =
        finlake_core::delta::max_timestamp_from_stats(table, ts).map_err(|e| err(&e))?;
    let newest = match from_stats {
        Some(m) => Some(m + 1_000),
        None => {
            let newest = ctx
                .sql(&format!("SELECT CAST(max({ts}) AS BIGINT) AS m FROM t"))
                .await
                .map_err(|e| err(&e))?
                .collect()
                .await
                .map_err(|e| err(&e))?;
            newest
                .first()
                .map(|b| b.column(0).as_primitive::<Int64Type>())
                .filter(|c| !c.is_empty() && !c.is_null(0))
                .map(|c| c.value(0))
        }
    };
    let Some(newest) = newest else {
        return Ok(Vec::new());
    };
    let from = newest.saturating_sub(window_micros);
    // typed literals, so the trade_date partitions and the files' timestamp statistics
    // prune. trade_date is the exchange's local date, at most a day either side of the UTC
    // date.
    let Some(from_ts) = chrono::DateTime::from_timestamp_micros(from) else {
        return Ok(Vec::new());
    };
    let first_day = from_ts.date_naive() - chrono::Days::new(1);
    let date = finlake_core::schema::TRADE_DATE;
    let has_date = table
        .snapshot()
        .map_err(|e| err(&e))?
        .schema()
        .field(date)
        .is_some();
    let by_date = if has_date {
        format!("{date} >= DATE '{first_day}' AND ")
    } else {
        String::new()
    };
    ctx.sql(&format!(
        "SELECT * FROM t WHERE {by_date}{ts} >= TIMESTAMP '{}' \
         ORDER BY _ingested_at, _topic, _partition, _offset",
        from_ts.format("%Y-%m-%dT%H:%M:%S%.6fZ"),
    ))
    .await
    .map_err(|e| err(&e))?
    .collect()
    .await
    .map_err(|e| err(&e))
}

/// Casts string views to plain strings, so scanned and live batches compare as equal bytes.
pub fn normalize_strings(b: &RecordBatch) -> Result<RecordBatch> {
    use arrow::datatypes::{DataType, Field, Schema};
    let s = b.schema();
    if !s
        .fields()
        .iter()
        .any(|f| matches!(f.data_type(), DataType::Utf8View | DataType::Dictionary(..)))
    {
        return Ok(b.clone());
    }
    let mut fields = Vec::with_capacity(s.fields().len());
    let mut cols = Vec::with_capacity(s.fields().len());
    for (f, c) in s.fields().iter().zip(b.columns()) {
        let target = match f.data_type() {
            DataType::Utf8View => DataType::Utf8,
            DataType::Dictionary(_, v) => v.as_ref().clone(),
            other => other.clone(),
        };
        cols.push(arrow::compute::cast(c, &target)?);
        fields.push(Field::new(f.name(), target, f.is_nullable()));
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}
