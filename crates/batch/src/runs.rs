//! The `job_runs` table: one row per run, ok or not, so "did last night's job run, and what
//! did it write?" is a query over the lake. Partitioned by the logical date.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, Date32Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use chrono::NaiveDate;
use finlake_core::delta::{self, CommitExtras, TableSpec};

use crate::error::Result;
use crate::summary::RunSummary;

/// The `job_runs` schema.
pub fn schema() -> SchemaRef {
    let ts = finlake_core::schema::timestamp_type();
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("job", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("exit_code", DataType::Int32, false),
        Field::new("started_at", ts.clone(), false),
        Field::new("ended_at", ts, false),
        Field::new("rows_in", DataType::Int64, false),
        Field::new("rows_out", DataType::Int64, false),
        Field::new("output_version", DataType::Int64, true),
        Field::new("error", DataType::Utf8, true),
        Field::new("backfill_id", DataType::Utf8, true),
        Field::new("finlake_version", DataType::Utf8, false),
        Field::new("summary", DataType::Utf8, false),
        Field::new("logical_date", DataType::Date32, false),
    ]))
}

fn micros(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_micros()
}

/// Appends one run's row.
pub async fn record(uri: &str, s: &RunSummary) -> Result<()> {
    let table = delta::open_or_create(&TableSpec {
        uri: uri.to_string(),
        schema: schema(),
        partition_by: vec!["logical_date".to_string()],
        checkpoint_interval: None,
        storage_options: HashMap::new(),
    })
    .await?;
    let summary = serde_json::to_string(s).unwrap_or_default();
    let batch = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(vec![s.run_id.as_str()])),
            Arc::new(StringArray::from(vec![s.job.as_str()])),
            Arc::new(StringArray::from(vec![s.status.as_str()])),
            Arc::new(Int32Array::from(vec![s.exit_code])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![micros(s.started_at)]).with_timezone("UTC"),
            ),
            Arc::new(
                TimestampMicrosecondArray::from(vec![micros(s.ended_at)]).with_timezone("UTC"),
            ),
            Arc::new(Int64Array::from(vec![s.rows_in as i64])),
            Arc::new(Int64Array::from(vec![s.rows_out as i64])),
            Arc::new(Int64Array::from(vec![s.output.version.map(|v| v as i64)])),
            Arc::new(StringArray::from(vec![s.error.as_deref()])),
            Arc::new(StringArray::from(vec![s.backfill_id.as_deref()])),
            Arc::new(StringArray::from(vec![s.finlake_version.as_str()])),
            Arc::new(StringArray::from(vec![summary.as_str()])),
            Arc::new(Date32Array::from(vec![
                finlake_core::transform::symbols::epoch_days(s.logical_date),
            ])),
        ],
    )?;
    let extras = CommitExtras {
        txns: Vec::new(),
        metadata: vec![
            ("job".into(), s.job.clone().into()),
            ("run_id".into(), s.run_id.clone().into()),
        ],
        deferred_checkpoint: false,
    };
    delta::append(table, vec![batch], &extras).await?;
    Ok(())
}

/// One recorded run, as `list` and backfill resume read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRow {
    /// The job.
    pub job: String,
    /// The logical date.
    pub logical_date: NaiveDate,
    /// ok, failed.
    pub status: String,
    /// The exit code.
    pub exit_code: i32,
    /// When it ended, µs.
    pub ended_at: i64,
    /// The backfill it belonged to.
    pub backfill_id: Option<String>,
}

/// Every recorded run (the table is small: one row per job and date), oldest first. An
/// absent table is no runs.
pub async fn read(uri: &str) -> Result<Vec<RunRow>> {
    let Some(table) = delta::open_existing(uri, &HashMap::new()).await? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for b in delta::read_all(&table).await? {
        let s = |name: &str| delta::string_column(&b, name);
        let (Some(job), Some(status), Some(backfill)) = (s("job"), s("status"), s("backfill_id"))
        else {
            continue;
        };
        let (Some(date), Some(code), Some(ended)) = (
            b.column_by_name("logical_date").and_then(|c| {
                c.as_primitive_opt::<arrow::datatypes::Date32Type>()
                    .cloned()
            }),
            b.column_by_name("exit_code")
                .and_then(|c| c.as_primitive_opt::<arrow::datatypes::Int32Type>().cloned()),
            b.column_by_name("ended_at").and_then(|c| {
                c.as_primitive_opt::<arrow::datatypes::TimestampMicrosecondType>()
                    .cloned()
            }),
        ) else {
            continue;
        };
        for i in 0..b.num_rows() {
            out.push(RunRow {
                job: job.value(i).to_string(),
                logical_date: date.value_as_date(i).unwrap_or_default(),
                status: status.value(i).to_string(),
                exit_code: code.value(i),
                ended_at: ended.value(i),
                backfill_id: (!backfill.is_null(i)).then(|| backfill.value(i).to_string()),
            });
        }
    }
    out.sort_by_key(|r| r.ended_at);
    Ok(out)
}
