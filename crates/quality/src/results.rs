//! The `quality_results` Delta table: one row per check per run, so an auditor can tell what
//! was checked against what (run id, table version, the spec's sha256, finlake version), and
//! so volume_anomaly and the HTML report can read the history.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use chrono::NaiveDate;
use deltalake::DeltaTable;
use finlake_core::delta::{self, CommitExtras, TableSpec};
use finlake_core::schema;

use crate::checks::CheckResult;
use crate::error::{QualityError, Result};

/// What identifies a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunInfo {
    /// A new UUID per run.
    pub run_id: String,
    /// When the run started, UTC microseconds.
    pub run_at: i64,
    /// The pipeline.
    pub pipeline: String,
    /// The table checked (URI).
    pub dataset: String,
    /// The logical date checked.
    pub date: NaiveDate,
    /// The Delta version checked.
    pub table_version: i64,
    /// sha256 of the spec file's text.
    pub spec_sha256: String,
    /// finlake's version.
    pub finlake_version: String,
    /// Rows in the partition.
    pub rows: u64,
}

/// The table's schema.
pub fn schema() -> SchemaRef {
    let s = |n: &str| Field::new(n, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        s("run_id"),
        Field::new("run_at", schema::timestamp_type(), false),
        s("pipeline"),
        s("dataset"),
        Field::new("date", DataType::Date32, false),
        s("check"),
        s("kind"),
        s("status"),
        Field::new("value", DataType::Float64, true),
        s("unit"),
        Field::new("warn_threshold", DataType::Utf8, true),
        Field::new("error_threshold", DataType::Utf8, true),
        s("detail"),
        Field::new("rows", DataType::Int64, false),
        Field::new("table_version", DataType::Int64, false),
        s("spec_sha256"),
        s("finlake_version"),
    ]))
}

fn epoch_days(d: NaiveDate) -> i32 {
    finlake_core::transform::symbols::epoch_days(d)
}

/// The rows of one run.
pub fn batch(run: &RunInfo, results: &[CheckResult]) -> Result<RecordBatch> {
    let n = results.len();
    let rep =
        |v: &str| Arc::new(StringArray::from_iter_values(std::iter::repeat_n(v, n))) as ArrayRef;
    let cols: Vec<ArrayRef> = vec![
        rep(&run.run_id),
        Arc::new(TimestampMicrosecondArray::from_value(run.run_at, n).with_timezone(schema::UTC)),
        rep(&run.pipeline),
        rep(&run.dataset),
        Arc::new(Date32Array::from_value(epoch_days(run.date), n)),
        Arc::new(StringArray::from_iter_values(
            results.iter().map(|r| r.name.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            results.iter().map(|r| r.kind.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            results.iter().map(|r| r.status.as_str()),
        )),
        // JSON and Delta have no infinity; an infinite score is stored as NULL, the detail says it
        Arc::new(Float64Array::from_iter(
            results
                .iter()
                .map(|r| r.value.is_finite().then_some(r.value)),
        )),
        Arc::new(StringArray::from_iter_values(
            results.iter().map(|r| r.unit.as_str()),
        )),
        Arc::new(StringArray::from_iter(
            results.iter().map(|r| r.warn.as_deref()),
        )),
        Arc::new(StringArray::from_iter(
            results.iter().map(|r| r.error.as_deref()),
        )),
        Arc::new(StringArray::from_iter_values(
            results.iter().map(|r| r.detail.as_str()),
        )),
        Arc::new(Int64Array::from_value(run.rows as i64, n)),
        Arc::new(Int64Array::from_value(run.table_version, n)),
        rep(&run.spec_sha256),
        rep(&run.finlake_version),
    ];
    Ok(RecordBatch::try_new(schema(), cols)?)
}

/// Opens (or creates) the results table, partitioned by pipeline.
pub async fn open(uri: &str, storage_options: &HashMap<String, String>) -> Result<DeltaTable> {
    Ok(delta::open_or_create(&TableSpec {
        uri: uri.to_string(),
        schema: schema(),
        partition_by: vec!["pipeline".into()],
        checkpoint_interval: Some(20),
        storage_options: storage_options.clone(),
    })
    .await?)
}

/// Appends one run's rows in one commit.
pub async fn append(
    table: DeltaTable,
    run: &RunInfo,
    results: &[CheckResult],
) -> Result<DeltaTable> {
    let extras = CommitExtras {
        txns: vec![],
        metadata: vec![
            ("run_id".into(), run.run_id.clone().into()),
            ("pipeline".into(), run.pipeline.clone().into()),
        ],
        deferred_checkpoint: false,
    };
    Ok(delta::append(table, vec![batch(run, results)?], &extras).await?)
}

/// The rows of `table` for one pipeline and dataset with `date` in `[lo, hi)` (epoch days):
/// the predicate goes to the scan, so other pipelines' partitions are pruned and file
/// statistics skip other dates, instead of reading the whole table on every run.
async fn scan_for(
    table: &DeltaTable,
    pipeline: &str,
    dataset: &str,
    lo: i32,
    hi: i32,
) -> Result<Vec<RecordBatch>> {
    use datafusion::prelude::{col, lit};
    use datafusion::scalar::ScalarValue;
    let uri = table.table_url().to_string();
    let err = |e: datafusion::error::DataFusionError| QualityError::Query {
        table: uri.clone(),
        message: e.to_string(),
    };
    let ctx = delta::sql_context(table, "t").await?;
    let date = |d: i32| lit(ScalarValue::Date32(Some(d)));
    ctx.table("t")
        .await
        .map_err(err)?
        .filter(
            col("pipeline")
                .eq(lit(pipeline))
                .and(col("dataset").eq(lit(dataset)))
                .and(col("date").gt_eq(date(lo)))
                .and(col("date").lt(date(hi))),
        )
        .map_err(err)?
        .collect()
        .await
        .map_err(err)
}

/// Column `name` of a scanned batch, cast to its type in `schema` (scans may return string
/// views); `table` names the table in the error.
fn column_as(b: &RecordBatch, name: &str, schema: &Schema, table: &str) -> Result<ArrayRef> {
    let c = b.column_by_name(name).ok_or_else(|| QualityError::Query {
        table: table.into(),
        message: format!("no column `{name}`"),
    })?;
    Ok(arrow::compute::cast(
        c,
        schema.field_with_name(name)?.data_type(),
    )?)
}

/// One past value of a check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// The logical date.
    pub date: NaiveDate,
    /// The check's value (NULL for an infinite score).
    pub value: Option<f64>,
    /// The partition's rows.
    pub rows: i64,
}

/// The latest run's value of every check, per date, for `pipeline` and `dataset`, for dates
/// in `[from, to)`. Sorted by date.
pub async fn history(
    table: &DeltaTable,
    pipeline: &str,
    dataset: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<BTreeMap<String, Vec<Point>>> {
    let (lo, hi) = (epoch_days(from), epoch_days(to));
    let batches = scan_for(table, pipeline, dataset, lo, hi).await?;
    let mut latest: BTreeMap<(String, i32), (i64, Option<f64>, i64)> = BTreeMap::new();
    for b in &batches {
        let col = |name: &str| column_as(b, name, &schema(), "quality_results");
        let (p, d, c, date, at, v, rows) = (
            col("pipeline")?,
            col("dataset")?,
            col("check")?,
            col("date")?,
            col("run_at")?,
            col("value")?,
            col("rows")?,
        );
        let (p, d, c) = (
            p.as_string::<i32>(),
            d.as_string::<i32>(),
            c.as_string::<i32>(),
        );
        let date = date.as_primitive::<arrow::datatypes::Date32Type>();
        let at = at.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        let v = v.as_primitive::<Float64Type>();
        let rows = rows.as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let day = date.value(i);
            if p.value(i) != pipeline || d.value(i) != dataset || day < lo || day >= hi {
                continue;
            }
            let value = (!v.is_null(i)).then(|| v.value(i));
            let e = latest
                .entry((c.value(i).to_string(), day))
                .or_insert((i64::MIN, None, 0));
            if at.value(i) >= e.0 {
                *e = (at.value(i), value, rows.value(i));
            }
        }
    }
    let mut out: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    for ((check, day), (_, value, rows)) in latest {
        out.entry(check).or_default().push(Point {
            date: finlake_core::transform::symbols::date_of_epoch_days(day),
            value,
            rows,
        });
    }
    Ok(out)
}

/// The `quality_state` table: a partition's measurements, keyed by pipeline, dataset, date,
/// the spec's sha256 and the partition's fingerprint (its data files). Delta data files are
/// immutable and every rewrite (a rerun batch job, a backfill, an append) changes the set, so
/// an equal fingerprint means equal data, and any later commit touching the partition means a
/// recompute.
pub fn state_schema() -> SchemaRef {
    let s = |n: &str| Field::new(n, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        s("pipeline"),
        s("dataset"),
        Field::new("date", DataType::Date32, false),
        s("spec_sha256"),
        s("fingerprint"),
        Field::new("table_version", DataType::Int64, false),
        s("state"),
        Field::new("written_at", schema::timestamp_type(), false),
    ]))
}

/// The partition's fingerprint: sha256 over its data files, sorted by path, each with its
/// size and its deletion vector (another writer deleting rows changes the fingerprint even
/// when no file is added or removed).
pub async fn partition_fingerprint(
    table: &DeltaTable,
    date: NaiveDate,
) -> std::result::Result<String, deltalake::DeltaTableError> {
    use sha2::Digest;
    let day = date.to_string();
    let snapshot = table.snapshot()?;
    let mut files: Vec<String> = snapshot
        .log_data()
        .into_iter()
        .filter(|f| {
            f.partition_values_map()
                .get(schema::TRADE_DATE)
                .is_some_and(|v| v.as_deref() == Some(day.as_str()))
        })
        .map(|f| {
            format!(
                "{}\t{}\t{:?}",
                f.path(),
                f.size(),
                f.deletion_vector_descriptor()
            )
        })
        .collect();
    files.sort();
    let mut h = sha2::Sha256::new();
    for f in &files {
        h.update(f.as_bytes());
        h.update(b"\n");
    }
    Ok(hex::encode(h.finalize()))
}

/// Opens (or creates) the state table, partitioned by pipeline.
pub async fn open_state(uri: &str, storage: &HashMap<String, String>) -> Result<DeltaTable> {
    Ok(delta::open_or_create(&TableSpec {
        uri: uri.to_string(),
        schema: state_schema(),
        partition_by: vec!["pipeline".into()],
        checkpoint_interval: Some(20),
        storage_options: storage.clone(),
    })
    .await?)
}

/// The cached state for exactly this partition content and spec, if any.
pub async fn cached_state(
    table: &DeltaTable,
    pipeline: &str,
    dataset: &str,
    date: NaiveDate,
    spec_sha256: &str,
    fingerprint: &str,
) -> Result<Option<String>> {
    let day = epoch_days(date);
    for b in scan_for(table, pipeline, dataset, day, day + 1).await? {
        let col = |name: &str| column_as(&b, name, &state_schema(), "quality_state");
        let (p, d, dt, sha, fp, st) = (
            col("pipeline")?,
            col("dataset")?,
            col("date")?,
            col("spec_sha256")?,
            col("fingerprint")?,
            col("state")?,
        );
        let (p, d, sha, fp, st) = (
            p.as_string::<i32>(),
            d.as_string::<i32>(),
            sha.as_string::<i32>(),
            fp.as_string::<i32>(),
            st.as_string::<i32>(),
        );
        let dt = dt.as_primitive::<arrow::datatypes::Date32Type>();
        for i in 0..b.num_rows() {
            if p.value(i) == pipeline
                && d.value(i) == dataset
                && dt.value(i) == day
                && sha.value(i) == spec_sha256
                && fp.value(i) == fingerprint
            {
                return Ok(Some(st.value(i).to_string()));
            }
        }
    }
    Ok(None)
}

/// Records a partition's state.
#[allow(clippy::too_many_arguments)]
pub async fn append_state(
    table: DeltaTable,
    pipeline: &str,
    dataset: &str,
    date: NaiveDate,
    spec_sha256: &str,
    fingerprint: &str,
    table_version: i64,
    state: &str,
) -> Result<DeltaTable> {
    let one = |v: &str| Arc::new(StringArray::from(vec![v])) as ArrayRef;
    let batch = RecordBatch::try_new(
        state_schema(),
        vec![
            one(pipeline),
            one(dataset),
            Arc::new(Date32Array::from(vec![epoch_days(date)])),
            one(spec_sha256),
            one(fingerprint),
            Arc::new(Int64Array::from(vec![table_version])),
            one(state),
            Arc::new(
                TimestampMicrosecondArray::from(vec![chrono::Utc::now().timestamp_micros()])
                    .with_timezone(schema::UTC),
            ),
        ],
    )?;
    Ok(delta::append(table, vec![batch], &CommitExtras::default()).await?)
}
