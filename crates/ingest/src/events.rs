//! The `processed_events` table: one row per micro-batch, saying what became of each offset
//! range (landed, quarantined, duplicates and of which offset), in which data-table version,
//! and how long each stage took. `finlake trace` answers "where did this message go" from it.
//!
//! The data commit is the truth: its commit info carries the same records (without the
//! duplicate pairs) in `finlake.batches`. The events table is committed after it, with a `txn`
//! per partition of its own; a crash between the two leaves a gap that the next commit of that
//! partition fills from the data table's log ([`records_from_log`]), marked `repaired`.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int32Array, Int32Builder, Int64Array,
    Int64Builder, ListBuilder, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::DeltaTable;
use finlake_core::delta::TableSpec;
use serde::{Deserialize, Serialize};

use crate::error::{IngestError, Result};

/// What one micro-batch became.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BatchRecord {
    /// The micro-batch's correlation id.
    pub id: String,
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// First offset.
    pub from: i64,
    /// Last offset (inclusive).
    pub to: i64,
    /// Messages read.
    pub messages: u64,
    /// Rows landed in the data table.
    pub landed: u64,
    /// Rows written to quarantine.
    pub quarantined: u64,
    /// Duplicates counted and dropped.
    pub duplicates: u64,
    /// When the batch was closed, UTC microseconds (its rows' `_ingested_at`).
    pub ingested_at: i64,
    /// Decode and transforms, milliseconds.
    pub stage_ms: f64,
    /// Rule evaluation, milliseconds.
    pub rules_ms: f64,
    /// Dedup and routing at commit time, milliseconds.
    pub dedup_ms: f64,
    /// Each dropped duplicate: (its offset, the first version's partition and offset). Not in
    /// the commit info (it can be long), so not in repaired rows.
    #[serde(skip)]
    pub duplicate_of: Vec<(i64, Option<i32>, Option<i64>)>,
}

/// The table's schema.
pub fn schema() -> SchemaRef {
    let list = |t: DataType| DataType::List(Arc::new(Field::new("item", t, true)));
    Arc::new(Schema::new(vec![
        Field::new("batch_id", DataType::Utf8, false),
        Field::new("pipeline", DataType::Utf8, false),
        Field::new("topic", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("from_offset", DataType::Int64, false),
        Field::new("to_offset", DataType::Int64, false),
        Field::new("messages", DataType::Int64, false),
        Field::new("landed", DataType::Int64, false),
        Field::new("quarantined", DataType::Int64, false),
        Field::new("duplicates", DataType::Int64, false),
        // each duplicate's offset, and the partition and offset of the version it repeats
        // (NULL in a repaired row: not recorded)
        Field::new("duplicate_offsets", list(DataType::Int64), true),
        Field::new("first_partitions", list(DataType::Int32), true),
        Field::new("first_offsets", list(DataType::Int64), true),
        Field::new("commit_id", DataType::Utf8, false),
        Field::new("data_version", DataType::Int64, false),
        Field::new("stage_ms", DataType::Float64, false),
        Field::new("rules_ms", DataType::Float64, false),
        Field::new("dedup_ms", DataType::Float64, false),
        Field::new("commit_ms", DataType::Float64, true),
        Field::new("ingested_at", finlake_core::schema::timestamp_type(), false),
        Field::new("instance", DataType::Utf8, false),
        Field::new("repaired", DataType::Boolean, false),
        Field::new("ingest_date", DataType::Date32, false),
    ]))
}

/// The URI of the `processed_events` table beside the data table at `data_uri`.
pub fn table_uri(data_uri: &str) -> String {
    format!("{}_processed_events", data_uri.trim_end_matches('/'))
}

/// The table beside the data table: `<data uri>_processed_events`, partitioned by day.
pub fn table_spec(data: &TableSpec) -> TableSpec {
    TableSpec {
        uri: table_uri(&data.uri),
        schema: schema(),
        partition_by: vec!["ingest_date".into()],
        checkpoint_interval: data.checkpoint_interval,
        storage_options: data.storage_options.clone(),
    }
}

/// A record as committed: which commit, which data version, how long the commit took
/// (`None` for a repaired one).
pub struct Committed<'a> {
    /// The record.
    pub record: &'a BatchRecord,
    /// The commit's correlation id.
    pub commit_id: &'a str,
    /// The data table's version that holds it.
    pub data_version: i64,
    /// The commit's duration.
    pub commit_ms: Option<f64>,
    /// The committing process.
    pub instance: &'a str,
    /// Rebuilt from the data table's log after a crash.
    pub repaired: bool,
}

/// The rows of `records` for the events table.
pub fn to_batch(pipeline: &str, records: &[Committed<'_>]) -> Result<RecordBatch> {
    let n = records.len();
    let col_i64 = |f: &dyn Fn(&Committed) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(records.iter().map(f)))
    };
    let col_f64 = |f: &dyn Fn(&Committed) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(records.iter().map(f)))
    };
    let mut dup_offsets = ListBuilder::new(Int64Builder::new());
    let mut first_parts = ListBuilder::new(Int32Builder::new());
    let mut first_offsets = ListBuilder::new(Int64Builder::new());
    for c in records {
        if c.repaired {
            dup_offsets.append_null();
            first_parts.append_null();
            first_offsets.append_null();
            continue;
        }
        for (o, p, f) in &c.record.duplicate_of {
            dup_offsets.values().append_value(*o);
            first_parts.values().append_option(*p);
            first_offsets.values().append_option(*f);
        }
        dup_offsets.append(true);
        first_parts.append(true);
        first_offsets.append(true);
    }
    let ingested =
        TimestampMicrosecondArray::from_iter_values(records.iter().map(|c| c.record.ingested_at))
            .with_timezone("UTC");
    let days = Date32Array::from_iter_values(
        records
            .iter()
            .map(|c| (c.record.ingested_at.div_euclid(86_400_000_000)) as i32),
    );
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            records.iter().map(|c| c.record.id.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            pipeline, n,
        ))),
        Arc::new(StringArray::from_iter_values(
            records.iter().map(|c| c.record.topic.as_str()),
        )),
        Arc::new(Int32Array::from_iter_values(
            records.iter().map(|c| c.record.partition),
        )),
        col_i64(&|c| c.record.from),
        col_i64(&|c| c.record.to),
        col_i64(&|c| c.record.messages as i64),
        col_i64(&|c| c.record.landed as i64),
        col_i64(&|c| c.record.quarantined as i64),
        col_i64(&|c| c.record.duplicates as i64),
        Arc::new(dup_offsets.finish()),
        Arc::new(first_parts.finish()),
        Arc::new(first_offsets.finish()),
        Arc::new(StringArray::from_iter_values(
            records.iter().map(|c| c.commit_id),
        )),
        col_i64(&|c| c.data_version),
        col_f64(&|c| c.record.stage_ms),
        col_f64(&|c| c.record.rules_ms),
        col_f64(&|c| c.record.dedup_ms),
        Arc::new(Float64Array::from_iter(records.iter().map(|c| c.commit_ms))),
        Arc::new(ingested),
        Arc::new(StringArray::from_iter_values(
            records.iter().map(|c| c.instance),
        )),
        Arc::new(BooleanArray::from_iter(
            records.iter().map(|c| Some(c.repaired)),
        )),
        Arc::new(days),
    ];
    RecordBatch::try_new(schema(), columns).map_err(|e| IngestError::Internal(e.to_string()))
}

/// A data commit's `finlake` commit info, as written by the ingestor.
#[derive(Debug, Deserialize)]
pub struct CommitInfo {
    /// The pipeline.
    pub pipeline: String,
    /// The commit's correlation id.
    pub commit_id: String,
    /// The micro-batches it holds.
    #[serde(default)]
    pub batches: Vec<BatchRecord>,
    /// The committing process.
    #[serde(default)]
    pub instance: String,
}

/// The `finlake` commit info of the data table's commit `version`, if it is one of ours.
pub async fn commit_info(table: &DeltaTable, version: i64) -> Result<Option<CommitInfo>> {
    let uri = table.table_url().to_string();
    let Ok(v) = version.try_into() else {
        return Ok(None);
    };
    let bytes = table
        .log_store()
        .read_commit_entry(v)
        .await
        .map_err(|e| IngestError::Internal(format!("{uri}: read commit {version}: {e}")))?;
    let Some(bytes) = bytes else { return Ok(None) };
    for line in bytes.split(|b| *b == b'\n') {
        // only the commitInfo line is parsed beyond its first bytes
        if !line.starts_with(br#"{"commitInfo""#) {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(line).map_err(|e| {
            IngestError::Internal(format!("{uri}: commit {version}: commitInfo: {e}"))
        })?;
        let Some(info) = v.get("commitInfo").and_then(|c| c.get("finlake")) else {
            return Ok(None);
        };
        return Ok(serde_json::from_value(info.clone()).ok());
    }
    Ok(None)
}

/// The records of `topic`/`partition` with offsets in `[from, to)`, read from the data
/// table's log newest first, each with the version that holds it. Stops at the first record
/// starting at or below `from`, or where the log ends (cleaned up: then what is older is gone).
pub async fn records_from_log(
    table: &DeltaTable,
    pipeline: &str,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, String, String, BatchRecord)>> {
    let Some(latest) = table.version() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut version = latest as i64;
    while version >= 0 {
        let Some(info) = commit_info(table, version).await? else {
            version -= 1;
            continue;
        };
        let mut done = false;
        if info.pipeline == pipeline {
            for b in info.batches {
                if b.topic == topic && b.partition == partition && b.from < to && b.to >= from {
                    done |= b.from <= from;
                    out.push((version, info.commit_id.clone(), info.instance.clone(), b));
                }
            }
        }
        if done {
            break;
        }
        version -= 1;
    }
    out.reverse();
    Ok(out)
}
