//! Reading a partition: streamed in arrival order through the rule engine, measuring the
//! table checks on the way (row counts, NULLs, distinct keys, newest event, values seen,
//! exchanges present).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Schema, SchemaRef, TimestampMicrosecondType};
use deltalake::DeltaTable;
use finlake_core::spec::{self, TableCheckKind};
use futures::StreamExt;

use super::{write::dead_letters, Job};
use crate::engine::RuleEngine;
use crate::error::{QualityError, Result};

/// Key columns and the distinct keys seen, as the rule engine's dedup fingerprints them
/// (128 bits a key, no allocation per row).
pub(super) struct KeySet {
    columns: Vec<String>,
    scratch: [Vec<u64>; 2],
    seen: crate::dedup::FingerprintSet,
}

/// What a scan of a partition measured; cached in `quality_state` with the rule counts.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Measure {
    pub(super) rows: u64,
    pub(super) nulls: BTreeMap<String, u64>,
    #[serde(skip)]
    pub(super) keys: Option<KeySet>,
    /// Key columns and distinct keys, for duplicate_count.
    pub(super) distinct_keys: Option<(Vec<String>, u64)>,
    pub(super) newest: Option<i64>,
    pub(super) seen: BTreeMap<String, BTreeMap<String, bool>>,
    /// The exchanges (MICs) in the partition: freshness is judged against their closes.
    #[serde(default)]
    pub(super) exchanges: std::collections::BTreeSet<String>,
}

impl Measure {
    /// Nothing measured yet, for `checks`.
    fn for_checks(checks: &[spec::TableCheck], dedup_keys: Option<Vec<String>>) -> Self {
        let mut m = Measure::default();
        for c in checks {
            match c.kind {
                TableCheckKind::MissingPercent => {
                    if let Some(col) = &c.column {
                        m.nulls.insert(col.clone(), 0);
                    }
                }
                TableCheckKind::DuplicateCount => {
                    m.keys = Some(KeySet {
                        columns: dedup_keys.clone().unwrap_or_default(),
                        scratch: Default::default(),
                        seen: Default::default(),
                    });
                }
                TableCheckKind::Completeness => {
                    if let Some(col) = &c.column {
                        m.seen.insert(
                            col.clone(),
                            c.expected.iter().map(|v| (v.clone(), false)).collect(),
                        );
                    }
                }
                _ => {}
            }
        }
        m
    }
}

/// The arrival order: the order in which rows reached the lake.
const ARRIVAL: [&str; 4] = ["_ingested_at", "_topic", "_partition", "_offset"];
/// Rows per batch read from a data file.
const BATCH_ROWS: usize = 32 * 1024;
/// Data files read and evaluated ahead of the one being applied.
const FILES_AHEAD: usize = 3;

/// Why an ordered read stopped.
enum Interrupt {
    /// Rows are not in arrival order in file order: the partition must be sorted.
    OutOfOrder(String),
    Failed(QualityError),
}

impl From<QualityError> for Interrupt {
    fn from(e: QualityError) -> Self {
        Interrupt::Failed(e)
    }
}

/// A data file of the partition, where it sits in arrival order.
struct DataFile {
    path: deltalake::Path,
    size: u64,
    first_arrival: Option<i64>,
    modified: i64,
}

/// Streams the partition through the rule engine in arrival order, measuring the table
/// checks on the way. Only the columns the rules, dedup and table checks read are read.
///
/// Arrival order comes from the log, not from a sort: data files in the order of their first
/// arrival (`_ingested_at` minimum in the file's statistics), rows in file order, each file
/// read and evaluated on its own task a few files ahead of the stateful half (dedup, counts),
/// which sees them in order. The order is verified as it is applied: each source partition's
/// offsets rise (see [`ArrivalCheck`]). A partition whose files interleave (another writer, a
/// compaction that reordered rows), that replays offsets, or that has deletion vectors or
/// column mapping is read through a sorted query instead.
pub(super) async fn scan(
    job: &Job<'_>,
    table: &DeltaTable,
    table_schema: &Schema,
    table_checks: &[spec::TableCheck],
    dead: &mut Vec<RecordBatch>,
) -> Result<(Measure, crate::engine::EngineStats)> {
    let projected = projection(job, table_schema, table_checks)?;
    if let Some(files) = files_in_arrival_order(table, job.opts.date)? {
        let count = files.len();
        let engine = engine_for(job, &projected)?;
        let source = ordered_files(job, table, files, &projected, engine.evaluator());
        match apply_in_order(job, table_checks, &projected, engine, source, true, dead).await {
            Ok(r) => return Ok(r),
            Err(Interrupt::Failed(e)) => return Err(e),
            Err(Interrupt::OutOfOrder(at)) => {
                tracing::info!(
                    files = count,
                    %at,
                    "the partition's files are not in arrival order; reading it sorted instead"
                );
                dead.clear();
            }
        }
    } else {
        tracing::info!(
            "the partition has deletion vectors or mapped columns; reading it sorted instead"
        );
    }
    let engine = engine_for(job, &projected)?;
    let source = sorted_query(job, table, table_schema, &projected, engine.evaluator()).await?;
    match apply_in_order(job, table_checks, &projected, engine, source, false, dead).await {
        Ok(r) => Ok(r),
        Err(Interrupt::Failed(e)) => Err(e),
        Err(Interrupt::OutOfOrder(at)) => Err(QualityError::Query {
            table: job.uri.clone(),
            message: format!("sorted scan out of order at {at}"),
        }),
    }
}

/// The engine for one read of the partition: the rules bound to the projected columns; it
/// counts, it builds no landed batch.
fn engine_for(job: &Job<'_>, projected: &SchemaRef) -> Result<RuleEngine> {
    Ok(RuleEngine::new(job.spec.clone(), projected.clone(), job.calendar.clone())?.counts_only())
}

/// The columns to read: what the row rules, dedup (keys, payload, lineage) and the table
/// checks name, in the canonical schema's order; every column when failing rows are written
/// out. All nullable: the table may hold NULLs in columns the canonical schema requires.
fn projection(
    job: &Job<'_>,
    table_schema: &Schema,
    table_checks: &[spec::TableCheck],
) -> Result<SchemaRef> {
    let full = canonical_nullable(&job.canonical);
    if job.opts.dead_letter.is_some() {
        return Ok(full);
    }
    let rules = &job.rules;
    let mut need = rules.columns();
    need.extend(
        [
            finlake_core::schema::TRADE_DATE,
            finlake_core::schema::EVENT_TIME,
            "exchange",
        ]
        .map(String::from),
    );
    need.extend(ARRIVAL.map(String::from));
    if let Some(d) = &rules.dedup {
        need.extend(d.keys.iter().cloned());
        need.extend(
            full.fields()
                .iter()
                .map(|f| f.name())
                .filter(|n| crate::dedup::is_payload(n))
                .cloned(),
        );
    }
    need.extend(table_checks.iter().filter_map(|c| c.column.clone()));
    let fields: Vec<_> = full
        .fields()
        .iter()
        .filter(|f| need.contains(f.name()) && table_schema.index_of(f.name()).is_ok())
        .cloned()
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

/// The partition's data files in arrival order, or `None` when they cannot be read directly
/// (deletion vectors, column mapping).
fn files_in_arrival_order(
    table: &DeltaTable,
    date: chrono::NaiveDate,
) -> Result<Option<Vec<DataFile>>> {
    let uri = table.table_url().to_string();
    if finlake_core::delta::maps_columns(table).map_err(|e| query_err(&uri, e))? {
        return Ok(None);
    }
    let snapshot = table.snapshot().map_err(|e| query_err(&uri, e))?;
    let day = date.to_string();
    let mut files = Vec::new();
    for f in snapshot.log_data().into_iter() {
        let in_day = f
            .partition_values_map()
            .get(finlake_core::schema::TRADE_DATE)
            .is_some_and(|v| v.as_deref() == Some(day.as_str()));
        if !in_day {
            continue;
        }
        if f.deletion_vector_descriptor().is_some() {
            return Ok(None);
        }
        files.push(DataFile {
            path: f.object_store_path(),
            size: f.size() as u64,
            // Delta keeps it to the millisecond: ties are resolved by the row check
            first_arrival: f
                .stats()
                .as_deref()
                .and_then(|s| finlake_core::delta::stats_timestamp(s, "minValues", ARRIVAL[0])),
            modified: f.modification_time(),
        });
    }
    files.sort_by(|a, b| {
        (a.first_arrival, a.modified, a.path.as_ref()).cmp(&(
            b.first_arrival,
            b.modified,
            b.path.as_ref(),
        ))
    });
    Ok(Some(files))
}

type Evaluations = tokio::sync::mpsc::Receiver<Result<crate::engine::Evaluated>>;

/// Reads and evaluates the files, each on its own task, up to [`FILES_AHEAD`] ahead; hands
/// the evaluated batches on in file order.
fn ordered_files(
    job: &Job<'_>,
    table: &DeltaTable,
    files: Vec<DataFile>,
    projected: &SchemaRef,
    evaluator: crate::engine::Evaluator,
) -> Evaluations {
    let store = table.object_store();
    let (out, rx) = tokio::sync::mpsc::channel(2);
    let (projected, uri, date) = (projected.clone(), job.uri.clone(), job.opts.date);
    tokio::spawn(async move {
        let mut pending = std::collections::VecDeque::new();
        let mut files = files.into_iter();
        loop {
            while pending.len() < FILES_AHEAD {
                let Some(file) = files.next() else { break };
                let (tx, rx) = tokio::sync::mpsc::channel(2);
                let task = tokio::spawn(read_file(
                    store.clone(),
                    file,
                    projected.clone(),
                    date,
                    evaluator.clone(),
                    uri.clone(),
                    tx,
                ));
                pending.push_back((task, rx));
            }
            let Some((_, mut rx)) = pending.pop_front() else {
                break;
            };
            while let Some(item) = rx.recv().await {
                let failed = item.is_err();
                if out.send(item).await.is_err() || failed {
                    for (task, _) in &pending {
                        task.abort();
                    }
                    return;
                }
            }
        }
    });
    rx
}

/// One data file: the projected columns, conformed, evaluated batch by batch.
async fn read_file(
    store: deltalake::logstore::ObjectStoreRef,
    file: DataFile,
    projected: SchemaRef,
    date: chrono::NaiveDate,
    mut evaluator: crate::engine::Evaluator,
    uri: String,
    tx: tokio::sync::mpsc::Sender<Result<crate::engine::Evaluated>>,
) {
    use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
    let path = file.path.to_string();
    let read = async {
        let reader = finlake_core::delta::DataFileReader::new(store, file.path, file.size);
        let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
        let roots: Vec<usize> = projected
            .fields()
            .iter()
            .filter_map(|f| builder.schema().index_of(f.name()).ok())
            .collect();
        let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), roots);
        builder
            .with_projection(mask)
            .with_batch_size(BATCH_ROWS)
            .build()
    };
    let mut stream = match read.await {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(Err(file_err(&uri, &path, e))).await;
            return;
        }
    };
    while let Some(batch) = stream.next().await {
        let item = batch
            .map_err(|e| file_err(&uri, &path, e))
            .and_then(|b| conform(&b, &projected, date))
            .and_then(|b| evaluator.evaluate(b));
        let failed = item.is_err();
        if tx.send(item).await.is_err() || failed {
            return;
        }
    }
}

fn file_err(uri: &str, path: &str, e: parquet::errors::ParquetError) -> QualityError {
    match query_err(uri, e) {
        QualityError::Query { table, message } => QualityError::Query {
            table,
            message: format!("data file {path}: {message}"),
        },
        other => other,
    }
}

/// A batch in the projected schema (which is all nullable: the table may hold NULLs in
/// columns the canonical schema requires): columns by name, cast where the type differs
/// (string views, dictionary partition values), NULL where a data file predates the column
/// (Delta's schema evolution), and the partition value `trade_date`, which is not in a file.
fn conform(
    batch: &RecordBatch,
    schema: &SchemaRef,
    date: chrono::NaiveDate,
) -> Result<RecordBatch> {
    let n = batch.num_rows();
    let cols = schema
        .fields()
        .iter()
        .map(|f| {
            Ok(match batch.column_by_name(f.name()) {
                Some(c) if c.data_type() == f.data_type() => c.clone(),
                Some(c) => cast(c, f.data_type())?,
                None if f.name() == finlake_core::schema::TRADE_DATE => {
                    let days = arrow::datatypes::Date32Type::from_naive_date(date);
                    Arc::new(arrow::array::Date32Array::from_value(days, n)) as ArrayRef
                }
                None => arrow::array::new_null_array(f.data_type(), n),
            })
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        cols,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
    )?)
}

/// The fallback: the projected columns sorted by arrival in one query, evaluated on a task
/// of its own.
async fn sorted_query(
    job: &Job<'_>,
    table: &DeltaTable,
    table_schema: &Schema,
    projected: &SchemaRef,
    mut evaluator: crate::engine::Evaluator,
) -> Result<Evaluations> {
    let uri = job.uri.as_str();
    let ctx =
        finlake_core::delta::sql_context_in(spilling(job.opts.memory_limit)?, table, "t").await?;
    let mut order = ARRIVAL.to_vec();
    order.retain(|c| table_schema.index_of(c).is_ok());
    let order_by = if order.is_empty() {
        String::new()
    } else {
        format!(" ORDER BY {}", order.join(", "))
    };
    let select = projected
        .fields()
        .iter()
        .map(|f| format!("\"{}\"", f.name().replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {select} FROM t WHERE {} = DATE '{}'{order_by}",
        finlake_core::schema::TRADE_DATE,
        job.opts.date
    );
    let df = ctx.sql(&sql).await.map_err(|e| query_err(uri, e))?;
    let mut stream = df.execute_stream().await.map_err(|e| query_err(uri, e))?;
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let (projected, uri, date) = (projected.clone(), uri.to_string(), job.opts.date);
    let limit = job.opts.memory_limit;
    tokio::spawn(async move {
        while let Some(batch) = stream.next().await {
            let item = batch
                .map_err(|e| sort_err(&uri, limit, e))
                .and_then(|b| conform(&b, &projected, date))
                .and_then(|b| evaluator.evaluate(b));
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    Ok(rx)
}

/// A failed sorted read; one that ran out of its memory limit says which flag to raise (a
/// usage error: a retry would fail the same way).
fn sort_err(uri: &str, limit: usize, e: datafusion::error::DataFusionError) -> QualityError {
    if matches!(
        e.find_root(),
        datafusion::error::DataFusionError::ResourcesExhausted(_)
    ) {
        return QualityError::Usage(format!(
            "table {uri}: the sorted read needs more memory than --memory-limit {:.1} MiB \
             allows, even spilling to disk: raise --memory-limit ({})",
            limit as f64 / f64::from(1u32 << 20),
            e.find_root()
        ));
    }
    query_err(uri, e)
}

/// A session whose sorts spill to disk (the OS temporary directory) beyond `limit` bytes, so
/// the sorted read holds the same memory for a day of any size.
fn spilling(limit: usize) -> Result<datafusion::prelude::SessionContext> {
    use datafusion::execution::disk_manager::DiskManagerBuilder;
    use datafusion::execution::memory_pool::FairSpillPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(limit)))
        .with_disk_manager_builder(DiskManagerBuilder::default())
        .build_arc()
        .map_err(|e| QualityError::Usage(format!("--memory-limit {limit}: {e}")))?;
    let mut config = datafusion::prelude::SessionConfig::new();
    // what a sort keeps back for merging its spills: DataFusion's 10 MiB a sort would take a
    // small limit whole
    config.options_mut().execution.sort_spill_reservation_bytes =
        (limit / 8).clamp(64 << 10, 10 << 20);
    // one sort, not one a core and a merge of their outputs, which needs memory of its own
    // for each input and fails under a limit that one sort spills within
    config = config.with_target_partitions(1);
    Ok(datafusion::prelude::SessionContext::new_with_config_rt(
        config, runtime,
    ))
}

/// The stateful half: applies the evaluated batches in order (routing, dedup, counts),
/// measures the table checks, and, for a direct read, checks that the rows come in arrival
/// order.
async fn apply_in_order(
    job: &Job<'_>,
    table_checks: &[spec::TableCheck],
    projected: &SchemaRef,
    mut engine: RuleEngine,
    mut source: Evaluations,
    check_order: bool,
    dead: &mut Vec<RecordBatch>,
) -> std::result::Result<(Measure, crate::engine::EngineStats), Interrupt> {
    let dedup_keys = engine.rules().dedup.as_ref().map(|d| d.keys.clone());
    let mut m = Measure::for_checks(table_checks, dedup_keys);
    let mut order = ArrivalCheck::new(projected);
    while let Some(evaluated) = source.recv().await {
        let evaluated = evaluated?;
        let batch = evaluated.batch().clone();
        if batch.num_rows() == 0 {
            continue;
        }
        if check_order {
            order.check(&batch).map_err(Interrupt::OutOfOrder)?;
        }
        measure(&mut m, &batch)?;
        let out = engine.apply(evaluated)?;
        if job.opts.dead_letter.is_some() {
            dead.extend(dead_letters(
                &batch,
                engine.rules(),
                &out.failed,
                &out.dedup,
            )?);
        }
    }
    if let Some(k) = m.keys.take() {
        m.distinct_keys = Some((k.columns, k.seen.len() as u64));
    }
    Ok((m, engine.totals().clone()))
}

/// Checks that rows come in arrival order as the log records it, across batches. With
/// lineage (`_topic`, `_partition`, `_offset`): each source partition's rows in offset order,
/// across the files and within them; how the partitions interleave is the order the writer
/// applied them in, which a consumer of many partitions does not keep in `_ingested_at`
/// order. Without lineage: rows in `_ingested_at` order.
enum ArrivalCheck {
    Sources(SourceOrder),
    Global(GlobalOrder),
}

impl ArrivalCheck {
    fn new(schema: &Schema) -> Self {
        let at = |c: &str| schema.index_of(c).ok();
        match (at(ARRIVAL[1]), at(ARRIVAL[2]), at(ARRIVAL[3])) {
            (Some(topic), Some(partition), Some(offset)) => ArrivalCheck::Sources(SourceOrder {
                topic,
                partition,
                offset,
                newest: Default::default(),
            }),
            _ => ArrivalCheck::Global(GlobalOrder::new(schema)),
        }
    }

    /// `Err` names the first row out of order.
    fn check(&mut self, batch: &RecordBatch) -> std::result::Result<(), String> {
        match self {
            ArrivalCheck::Sources(s) => s.check(batch),
            ArrivalCheck::Global(g) => g.check(batch),
        }
    }
}

/// Offset order per source partition.
struct SourceOrder {
    topic: usize,
    partition: usize,
    offset: usize,
    /// By `_partition` number, each topic's newest offset so far (a pipeline reads few
    /// topics; the rows of a hundred partitions may interleave one by one).
    newest: Vec<Vec<(Box<str>, i64)>>,
}

impl SourceOrder {
    fn check(&mut self, batch: &RecordBatch) -> std::result::Result<(), String> {
        use arrow::datatypes::{Int32Type, Int64Type};
        let topics = cast(batch.column(self.topic), &DataType::Utf8).map_err(|e| e.to_string())?;
        let (topics, partitions, offsets) = match (
            topics.as_string_opt::<i32>(),
            batch.column(self.partition).as_primitive_opt::<Int32Type>(),
            batch.column(self.offset).as_primitive_opt::<Int64Type>(),
        ) {
            (Some(t), Some(p), Some(o)) => (t, p, o),
            _ => return Err("lineage columns of unexpected types".into()),
        };
        if topics.null_count() + partitions.null_count() + offsets.null_count() > 0 {
            return Err("rows without lineage (NULL topic, partition or offset)".into());
        }
        let (partitions, offsets) = (partitions.values(), offsets.values());
        let out_of_order = |row: usize, after: i64| {
            format!(
                "topic {} partition {} offset {} after offset {after}",
                topics.value(row),
                partitions[row],
                offsets[row]
            )
        };
        let n = batch.num_rows();
        let mut start = 0;
        while start < n {
            // a run of one source partition's rows: the writer applies a partition's messages
            // a micro-batch at a time
            let (topic, partition) = (topics.value(start), partitions[start]);
            let mut end = start + 1;
            while end < n && partitions[end] == partition && topics.value(end) == topic {
                end += 1;
            }
            let run = &offsets[start..end];
            if let Some(i) = run.windows(2).position(|w| w[1] < w[0]) {
                return Err(out_of_order(start + i + 1, run[i]));
            }
            let Some(slot) = usize::try_from(partition)
                .ok()
                .filter(|&p| p < crate::dedup::INDEXED_PARTITIONS)
            else {
                return Err(format!("topic {topic} partition {partition}: out of range"));
            };
            if self.newest.len() <= slot {
                self.newest.resize_with(slot + 1, Vec::new);
            }
            let topics_seen = &mut self.newest[slot];
            match topics_seen.iter_mut().find(|(t, _)| t.as_ref() == topic) {
                Some((_, newest)) if run[0] < *newest => {
                    return Err(out_of_order(start, *newest));
                }
                Some((_, newest)) => *newest = run[run.len() - 1],
                None => topics_seen.push((topic.into(), run[run.len() - 1])),
            }
            start = end;
        }
        Ok(())
    }
}

/// `_ingested_at` order (then `_topic`, `_partition`, `_offset`, whichever the table has).
struct GlobalOrder {
    columns: Vec<usize>,
    last: Option<RecordBatch>,
}

impl GlobalOrder {
    fn new(schema: &Schema) -> Self {
        GlobalOrder {
            columns: ARRIVAL
                .iter()
                .filter_map(|c| schema.index_of(c).ok())
                .collect(),
            last: None,
        }
    }

    /// `Err` names the first row out of order.
    fn check(&mut self, batch: &RecordBatch) -> std::result::Result<(), String> {
        use arrow::compute::SortOptions;
        use std::cmp::Ordering;
        if self.columns.is_empty() {
            return Ok(());
        }
        let n = batch.num_rows();
        let cmp = |l: &RecordBatch| -> std::result::Result<Vec<_>, String> {
            self.columns
                .iter()
                .map(|&i| {
                    arrow::array::make_comparator(
                        l.column(i),
                        batch.column(i),
                        SortOptions::default(),
                    )
                    .map_err(|e| e.to_string())
                })
                .collect()
        };
        let compare = |cs: &[arrow::array::DynComparator], a: usize, b: usize| {
            cs.iter()
                .map(|c| c(a, b))
                .find(|o| *o != Ordering::Equal)
                .unwrap_or(Ordering::Equal)
        };
        let describe = |row: usize| {
            let col = |name: &str| {
                batch
                    .column_by_name(name)
                    .and_then(|c| arrow::util::display::array_value_to_string(c, row).ok())
                    .unwrap_or_default()
            };
            format!(
                "topic {} partition {} offset {}",
                col("_topic"),
                col("_partition"),
                col("_offset")
            )
        };
        if let Some(last) = &self.last {
            let cs = cmp(last)?;
            if compare(&cs, 0, 0) == Ordering::Greater {
                return Err(describe(0));
            }
        }
        let cs = cmp(batch)?;
        // the first key (`_ingested_at`) decides almost every pair: compare it on the values
        // and fall back to the comparators only on a tie
        let first = batch.column(self.columns[0]);
        let times = (first.null_count() == 0)
            .then(|| first.as_primitive_opt::<TimestampMicrosecondType>())
            .flatten();
        match times {
            Some(t) => {
                let v = t.values();
                for row in 1..n {
                    match v[row - 1].cmp(&v[row]) {
                        Ordering::Less => {}
                        Ordering::Greater => return Err(describe(row)),
                        Ordering::Equal => {
                            if compare(&cs[1..], row - 1, row) == Ordering::Greater {
                                return Err(describe(row));
                            }
                        }
                    }
                }
            }
            None => {
                for row in 1..n {
                    if compare(&cs, row - 1, row) == Ordering::Greater {
                        return Err(describe(row));
                    }
                }
            }
        }
        self.last = Some(batch.slice(n - 1, 1));
        Ok(())
    }
}

pub(super) fn canonical_nullable(s: &SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(
        s.fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ))
}

/// A failed query: unreachable when a storage error in its chain is transient, a usage error
/// when storage says not found or forbidden, otherwise a query error.
pub(super) fn query_err(uri: &str, e: impl std::error::Error + 'static) -> QualityError {
    let message = e.to_string();
    match finlake_core::delta::storage_class(&e) {
        Some(finlake_core::ErrorClass::Transient) => QualityError::Unreachable {
            uri: uri.into(),
            message,
        },
        Some(finlake_core::ErrorClass::Config) => {
            QualityError::Usage(format!("table {uri}: {message}"))
        }
        _ => QualityError::Query {
            table: uri.into(),
            message,
        },
    }
}

pub(super) fn measure(m: &mut Measure, batch: &RecordBatch) -> Result<()> {
    m.rows += batch.num_rows() as u64;
    for (col, n) in m.nulls.iter_mut() {
        if let Some(c) = batch.column_by_name(col) {
            *n += c.null_count() as u64;
        }
    }
    if let Some(KeySet {
        columns: keys,
        scratch,
        seen,
    }) = &mut m.keys
    {
        let cols = keys
            .iter()
            .map(|k| Ok(batch.column(batch.schema().index_of(k)?).clone()))
            .collect::<Result<Vec<_>>>()?;
        crate::dedup::add_fingerprints(&cols, batch.num_rows(), scratch, seen)?;
    }
    if let Some(ts) = batch.column_by_name(finlake_core::schema::EVENT_TIME) {
        if let Some(max) = arrow::compute::max(ts.as_primitive::<TimestampMicrosecondType>()) {
            m.newest = Some(m.newest.map_or(max, |n: i64| n.max(max)));
        }
    }
    if let Some(ex) = batch.column_by_name("exchange") {
        let ex = cast(ex, &DataType::Utf8)?;
        for mic in ex.as_string::<i32>().iter().flatten() {
            if !m.exchanges.contains(mic) {
                m.exchanges.insert(mic.to_string());
            }
        }
    }
    for (col, expected) in m.seen.iter_mut() {
        if let Some(c) = batch.column_by_name(col) {
            let c = cast(c, &DataType::Utf8)?;
            for v in c.as_string::<i32>().iter().flatten() {
                if let Some(seen) = expected.get_mut(v) {
                    *seen = true;
                }
            }
        }
    }
    Ok(())
}
