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

    /// What the rows of a batch add, before they are measured: no keys (distinct keys are
    /// counted in arrival order, by the stateful half).
    fn blank(&self) -> Self {
        Measure {
            nulls: self.nulls.keys().map(|c| (c.clone(), 0)).collect(),
            seen: self
                .seen
                .iter()
                .map(|(c, e)| (c.clone(), e.keys().map(|v| (v.clone(), false)).collect()))
                .collect(),
            ..Measure::default()
        }
    }

    /// Adds what another part of the partition measured ([`Measure::blank`], then
    /// [`tally`]).
    fn merge(&mut self, o: Measure) {
        self.rows += o.rows;
        for (c, n) in o.nulls {
            *self.nulls.entry(c).or_default() += n;
        }
        self.newest = self.newest.max(o.newest);
        self.exchanges.extend(o.exchanges);
        for (c, expected) in o.seen {
            let mine = self.seen.entry(c).or_default();
            for (v, seen) in expected {
                *mine.entry(v).or_default() |= seen;
            }
        }
    }
}

/// The arrival order: the order in which rows reached the lake.
const ARRIVAL: [&str; 4] = ["_ingested_at", "_topic", "_partition", "_offset"];
/// Rows per batch read from a data file: a batch's columns stay in the core's cache from
/// decode through evaluation (16k: 6-8 % faster than 32k and 64k on a 10M-row day, and
/// than 8k and 4k, whose per-batch costs show).
const BATCH_ROWS: usize = 16 * 1024;
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
    reader: finlake_core::delta::DataFileReader,
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
    let reading = |engine: &RuleEngine| Reading {
        projected: projected.clone(),
        evaluator: engine.evaluator(),
        measures: Arc::new(Measure::for_checks(table_checks, None)),
        date: job.opts.date,
    };
    if let Some(files) = files_in_arrival_order(table, job.opts.date)? {
        let count = files.len();
        // rows written out keep the table's types
        let direct = match job.opts.dead_letter {
            Some(_) => projected.clone(),
            None => with_dictionaries(table, &files, &projected).await?,
        };
        let engine = engine_for(job, &direct)?;
        let reading = Reading {
            projected: direct.clone(),
            ..reading(&engine)
        };
        let source = ordered_files(job, files, reading);
        match apply_in_order(job, table_checks, &direct, engine, source, true, dead).await {
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
    let source = sorted_query(job, table, table_schema, reading(&engine)).await?;
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
        let path = f.object_store_path();
        files.push(DataFile {
            reader: finlake_core::delta::DataFileReader::in_table(
                table,
                path.clone(),
                f.size() as u64,
            ),
            path,
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

/// Evaluated batches in arrival order, each with its order-free measures.
type Evaluations = tokio::sync::mpsc::Receiver<Result<(crate::engine::Evaluated, Measure)>>;

/// What a reading task needs besides the file: the projected schema, the evaluator, and the
/// measures to take ([`Measure::blank`] of it for each batch).
#[derive(Clone)]
struct Reading {
    projected: SchemaRef,
    evaluator: crate::engine::Evaluator,
    measures: Arc<Measure>,
    date: chrono::NaiveDate,
}

impl Reading {
    /// A batch as read: conformed, evaluated and measured.
    fn take(&mut self, batch: &RecordBatch) -> Result<(crate::engine::Evaluated, Measure)> {
        let batch = conform(batch, &self.projected, self.date)?;
        let mut m = self.measures.blank();
        tally(&mut m, &batch)?;
        Ok((self.evaluator.evaluate(batch)?, m))
    }
}

/// Reads and evaluates the files, each on its own task, up to [`FILES_AHEAD`] ahead; hands
/// the evaluated batches on in file order.
fn ordered_files(job: &Job<'_>, files: Vec<DataFile>, reading: Reading) -> Evaluations {
    let (out, rx) = tokio::sync::mpsc::channel(2);
    let uri = job.uri.clone();
    tokio::spawn(async move {
        let mut pending = std::collections::VecDeque::new();
        let mut files = files.into_iter();
        loop {
            while pending.len() < FILES_AHEAD {
                let Some(file) = files.next() else { break };
                let (tx, rx) = tokio::sync::mpsc::channel(2);
                let task = tokio::spawn(read_file(file, reading.clone(), uri.clone(), tx));
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

/// `projected` with the string columns that the first file keeps dictionary-encoded (exchange,
/// symbol, currency, side: few distinct values) read as dictionaries. They are then never
/// turned into one string a row, and what is computed on them (ISIN and currency checks,
/// session lookups, key hashes) works once a distinct value. A later file whose column is not
/// dictionary-encoded is read into a dictionary all the same (by the Parquet reader): the
/// types stay those of the first file.
async fn with_dictionaries(
    table: &DeltaTable,
    files: &[DataFile],
    projected: &SchemaRef,
) -> Result<SchemaRef> {
    use parquet::arrow::async_reader::AsyncFileReader;
    use parquet::basic::Encoding;
    let Some(first) = files.first() else {
        return Ok(projected.clone());
    };
    let uri = table.table_url().to_string();
    let mut reader = first.reader.clone();
    let meta = reader
        .get_metadata(None)
        .await
        .map_err(|e| file_err(&uri, first.path.as_ref(), e))?;
    let schema = meta.file_metadata().schema_descr();
    let dictionary_encoded = |name: &str| {
        let Some(i) = (0..schema.num_columns()).find(|&i| schema.column(i).path().string() == name)
        else {
            return false;
        };
        !meta.row_groups().is_empty()
            && meta.row_groups().iter().all(|rg| {
                let c = rg.column(i);
                c.dictionary_page_offset().is_some()
                    && c.page_encoding_stats_mask().is_some_and(|m| {
                        m.is_only(Encoding::RLE_DICTIONARY) || m.is_only(Encoding::PLAIN_DICTIONARY)
                    })
            })
    };
    Ok(strings_as_dictionaries(projected, dictionary_encoded))
}

/// `schema` with its string columns that `wanted` names as `Dictionary(Int32, Utf8)`.
fn strings_as_dictionaries(schema: &Schema, wanted: impl Fn(&str) -> bool) -> SchemaRef {
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View if wanted(f.name()) => {
                Arc::new(f.as_ref().clone().with_data_type(DataType::Dictionary(
                    Box::new(DataType::Int32),
                    Box::new(DataType::Utf8),
                )))
            }
            _ => f.clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// One data file: the projected columns, conformed, evaluated and measured batch by batch.
async fn read_file(
    file: DataFile,
    mut reading: Reading,
    uri: String,
    tx: tokio::sync::mpsc::Sender<Result<(crate::engine::Evaluated, Measure)>>,
) {
    use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
    let path = file.path.to_string();
    let read = async {
        use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
        let mut reader = file.reader;
        let mut meta = ArrowReaderMetadata::load_async(&mut reader, Default::default()).await?;
        // the columns the scan reads as dictionaries, read so from the file
        let wanted = |name: &str| {
            reading
                .projected
                .field_with_name(name)
                .is_ok_and(|f| matches!(f.data_type(), DataType::Dictionary(..)))
        };
        if meta.schema().fields().iter().any(|f| wanted(f.name())) {
            let schema = strings_as_dictionaries(meta.schema(), wanted);
            meta = ArrowReaderMetadata::try_new(
                meta.metadata().clone(),
                ArrowReaderOptions::new().with_schema(schema),
            )?;
        }
        let builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, meta);
        let roots: Vec<usize> = reading
            .projected
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
            .and_then(|b| reading.take(&b));
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
        QualityError::Damaged { table, message } => QualityError::Damaged {
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
    mut reading: Reading,
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
    let select = reading
        .projected
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
    let uri = uri.to_string();
    let limit = job.opts.memory_limit;
    tokio::spawn(async move {
        while let Some(batch) = stream.next().await {
            let item = batch
                .map_err(|e| sort_err(&uri, limit, e))
                .and_then(|b| reading.take(&b));
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
        let (evaluated, measured) = evaluated?;
        let batch = evaluated.batch().clone();
        if batch.num_rows() == 0 {
            continue;
        }
        if check_order {
            order
                .check(&batch, evaluated.sources())
                .map_err(Interrupt::OutOfOrder)?;
        }
        m.merge(measured);
        count_keys(&mut m, &batch)?;
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
                lineage: [topic, partition, offset],
                topics: Vec::new(),
                newest: Vec::new(),
            }),
            _ => ArrivalCheck::Global(GlobalOrder::new(schema)),
        }
    }

    /// `Err` names the first row out of order.
    fn check(
        &mut self,
        batch: &RecordBatch,
        sources: &crate::dedup::Sources,
    ) -> std::result::Result<(), String> {
        match self {
            ArrivalCheck::Sources(s) => s.check(batch, sources),
            ArrivalCheck::Global(g) => g.check(batch),
        }
    }
}

/// Offset order per source partition.
struct SourceOrder {
    /// `_topic`, `_partition`, `_offset`.
    lineage: [usize; 3],
    /// The topics seen.
    topics: Vec<String>,
    /// By topic (index into `topics`) and `_partition` number, the newest offset so far
    /// (`None`: no row yet); the rows of a hundred partitions may interleave one by one.
    newest: Vec<Vec<Option<i64>>>,
}

impl SourceOrder {
    /// Checks `batch`, whose rows `sources` (the evaluator's) gives by source partition.
    fn check(
        &mut self,
        batch: &RecordBatch,
        sources: &crate::dedup::Sources,
    ) -> std::result::Result<(), String> {
        use arrow::datatypes::{Int32Type, Int64Type};
        let [topic, partition, offset] = self.lineage.map(|i| batch.column(i));
        if topic.null_count() + partition.null_count() + offset.null_count() > 0 {
            return Err("rows without lineage (NULL topic, partition or offset)".into());
        }
        let offsets = match (
            partition.as_primitive_opt::<Int32Type>(),
            offset.as_primitive_opt::<Int64Type>(),
        ) {
            (Some(_), Some(o)) => o.values(),
            _ => return Err("lineage columns of unexpected types".into()),
        };
        if sources.len() != offsets.len() {
            return Err("the rows' sources do not match the batch".into());
        }
        let topics: Vec<u32> = sources
            .topics()
            .iter()
            .map(|t| crate::dedup::index_in(&mut self.topics, t))
            .collect();
        let out_of_order = |topic: u32, partition: i32, row: usize, after: i64| {
            format!(
                "topic {} partition {partition} offset {} after offset {after}",
                self.topics[topic as usize], offsets[row]
            )
        };
        // row by row: on the live layout a hundred partitions' rows interleave one by one
        for (row, &offset) in offsets.iter().enumerate() {
            let (topic, partition) = sources.source(row);
            let topic = topics.get(topic as usize).copied().unwrap_or_default();
            let Some(slot) = usize::try_from(partition)
                .ok()
                .filter(|&p| p < crate::dedup::INDEXED_PARTITIONS)
            else {
                return Err(format!(
                    "topic {} partition {partition}: out of range",
                    self.topics[topic as usize]
                ));
            };
            if self.newest.len() <= topic as usize {
                self.newest.resize_with(topic as usize + 1, Vec::new);
            }
            let by_partition = &mut self.newest[topic as usize];
            if by_partition.len() <= slot {
                by_partition.resize(slot + 1, None);
            }
            match by_partition[slot] {
                Some(after) if offset < after => {
                    return Err(out_of_order(topic, partition, row, after));
                }
                _ => by_partition[slot] = Some(offset),
            }
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
        Some(finlake_core::ErrorClass::Data) => QualityError::Damaged {
            table: uri.into(),
            message,
        },
        _ => QualityError::Query {
            table: uri.into(),
            message,
        },
    }
}

/// Calls `f` on the values of a string column, at least once each (NULLs skipped): on a
/// dictionary, each value a row refers to, once; otherwise each row's, but for a repeat of
/// the row before.
fn each_value(a: &ArrayRef, mut f: impl FnMut(&str)) -> Result<()> {
    if let Some(d) = a.as_dictionary_opt::<arrow::datatypes::Int32Type>() {
        let mut used = vec![false; d.values().len()];
        for k in d.keys().iter().flatten() {
            if let Some(u) = usize::try_from(k).ok().and_then(|k| used.get_mut(k)) {
                *u = true;
            }
        }
        let values = cast(d.values(), &DataType::Utf8)?;
        let values = values.as_string::<i32>();
        for (i, _) in used.iter().enumerate().filter(|(_, u)| **u) {
            if values.is_valid(i) {
                f(values.value(i));
            }
        }
        return Ok(());
    }
    let a = cast(a, &DataType::Utf8)?;
    let mut last = None;
    for v in a.as_string::<i32>().iter().flatten() {
        if last != Some(v) {
            f(v);
        }
        last = Some(v);
    }
    Ok(())
}

/// Distinct keys: the one measure counted in arrival order, by the stateful half.
fn count_keys(m: &mut Measure, batch: &RecordBatch) -> Result<()> {
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
    Ok(())
}

/// The measures that do not depend on order (rows, NULLs, newest event, exchanges, values
/// seen), made beside the evaluation, on the reading task.
fn tally(m: &mut Measure, batch: &RecordBatch) -> Result<()> {
    m.rows += batch.num_rows() as u64;
    for (col, n) in m.nulls.iter_mut() {
        if let Some(c) = batch.column_by_name(col) {
            *n += c.null_count() as u64;
        }
    }
    if let Some(ts) = batch.column_by_name(finlake_core::schema::EVENT_TIME) {
        if let Some(max) = arrow::compute::max(ts.as_primitive::<TimestampMicrosecondType>()) {
            m.newest = Some(m.newest.map_or(max, |n: i64| n.max(max)));
        }
    }
    if let Some(ex) = batch.column_by_name("exchange") {
        each_value(ex, |mic| {
            if !m.exchanges.contains(mic) {
                m.exchanges.insert(mic.to_string());
            }
        })?;
    }
    for (col, expected) in m.seen.iter_mut() {
        if let Some(c) = batch.column_by_name(col) {
            each_value(c, |v| {
                if let Some(seen) = expected.get_mut(v) {
                    *seen = true;
                }
            })?;
        }
    }
    Ok(())
}
