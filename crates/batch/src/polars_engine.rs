//! The Polars engine: the job's SQL through Polars' SQL context, on the same inputs.
//!
//! The inputs are read exactly as the DataFusion engine reads them (the run's session: each
//! Delta table pruned to its date window) and cross into Polars as Arrow IPC streams, the
//! clear boundary CORRECTIONS asks for: Polars has its own Arrow (polars-arrow), the tree keeps
//! one arrow-rs. The result crosses back the same way and is conformed, column by column, to
//! the schema DataFusion plans for the same query, so the output table has one schema
//! whichever engine wrote it. A conformance cast stays within a type family (integers,
//! decimals, floats, text, times): Polars' floats are never turned into decimals silently.
//!
//! Polars' SQL context has no parameter binding: the statement is rewritten in the syntax tree
//! with typed `DATE '…'` literals ([`crate::params::Query::with_literals`]), never spliced as
//! text. Polars has no memory pool to spill with: the memory limit bounds the inputs crossed
//! into it (past it the run fails naming the limit, exit 70).

use std::io::Cursor;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use polars::io::ipc::{IpcStreamReader, IpcStreamWriter};
use polars::io::{SerReader, SerWriter};
use polars::prelude::{CompatLevel, IntoLazy};

use crate::engine::{self, MemoryLimit, OpenInput};
use crate::error::{BatchError, Result};
use crate::job::Job;
use crate::params::Params;

fn query_err(job: &Job, message: String) -> BatchError {
    BatchError::Query {
        job: job.spec.name.clone(),
        message,
        class: finlake_core::error::ErrorClass::Config,
    }
}

fn internal(what: &str, e: impl std::fmt::Display) -> BatchError {
    BatchError::Internal(format!("polars engine, {what}: {e}"))
}

/// Arrow-rs batches as one Arrow IPC stream.
fn to_ipc(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, schema)
        .map_err(|e| internal("writing IPC", e))?;
    for b in batches {
        w.write(b).map_err(|e| internal("writing IPC", e))?;
    }
    w.finish().map_err(|e| internal("writing IPC", e))?;
    drop(w);
    Ok(out)
}

/// Runs the job's query on Polars; returns DataFusion's planned output schema and the rows.
pub async fn run_polars(
    job: &Job,
    inputs: &[OpenInput<'_>],
    params: &Params,
    limit: Option<&MemoryLimit>,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let classify = |e| engine::classify(&job.spec.name, limit, e);
    let ctx = engine::session(job, inputs, limit).await?;
    let planned = engine::plan(job, &ctx, params, limit).await?;
    let schema: SchemaRef = Arc::new(planned.schema().as_arrow().clone());
    let mut sql = polars::sql::SQLContext::new();
    let mut crossed = 0usize;
    for i in inputs {
        let df = ctx.table(i.input.name.as_str()).await.map_err(classify)?;
        let input_schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await.map_err(classify)?;
        let ipc = to_ipc(&input_schema, &batches)?;
        crossed += ipc.len();
        if let Some(l) = limit.filter(|l| crossed > l.bytes) {
            return Err(BatchError::Memory {
                job: job.spec.name.clone(),
                limit: l.text.clone(),
                message: format!(
                    "the inputs crossed into Polars take {crossed} bytes (at `{}`), past the limit; Polars cannot spill: run the job on datafusion",
                    i.input.name
                ),
            });
        }
        let frame = IpcStreamReader::new(Cursor::new(ipc))
            .finish()
            .map_err(|e| internal(&format!("reading input `{}`", i.input.name), e))?;
        sql.register(i.input.name.as_str(), frame.lazy());
    }
    let (query, _) = job.sql()?;
    let text = query.with_literals(params).to_string();
    let name = job.spec.name.clone();
    // Polars runs on its own thread pool and blocks: off the async reactor
    let out = tokio::task::spawn_blocking(move || -> std::result::Result<Vec<u8>, String> {
        let mut frame = sql
            .execute(&text)
            .and_then(|lf| lf.collect())
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        IpcStreamWriter::new(&mut buf)
            .with_compat_level(CompatLevel::newest())
            .finish(&mut frame)
            .map_err(|e| e.to_string())?;
        Ok(buf)
    })
    .await
    .map_err(|e| internal("query task", e))?
    .map_err(|m| query_err(job, format!("polars: {m}")))?;
    let reader = arrow::ipc::reader::StreamReader::try_new(Cursor::new(out), None)
        .map_err(|e| internal("reading the result", e))?;
    let mut batches = Vec::new();
    for b in reader {
        let b = b.map_err(|e| internal("reading the result", e))?;
        batches.push(conform(&name, &b, &schema)?);
    }
    Ok((schema, batches))
}

/// The same kind of value: a cast between them changes representation, not meaning.
fn family(t: &DataType) -> u8 {
    match t {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => 1,
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => 2,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => 3,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => 4,
        DataType::Timestamp(..) => 5,
        DataType::Date32 | DataType::Date64 => 6,
        DataType::Boolean => 7,
        DataType::Null => 0,
        _ => 8,
    }
}

/// Polars' result in the planned schema: columns by name, cast within their type family.
fn conform(job: &str, b: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        let Some(c) = b.column_by_name(f.name()) else {
            return Err(BatchError::Internal(format!(
                "job `{job}`: polars gave no column `{}` (it gave {:?})",
                f.name(),
                b.schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
            )));
        };
        let (from, to) = (c.data_type(), f.data_type());
        if from != to && family(from) != 0 && family(from) != family(to) {
            return Err(BatchError::Internal(format!(
                "job `{job}`: polars gives column `{}` as {from}, DataFusion as {to}: make the SQL's types explicit (CAST) so both engines agree",
                f.name()
            )));
        }
        let c = if from == to {
            c.clone()
        } else {
            arrow::compute::cast(c, to).map_err(|e| {
                BatchError::Internal(format!("job `{job}`: column `{}`: {e}", f.name()))
            })?
        };
        columns.push(c);
    }
    RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| BatchError::Internal(format!("job `{job}`: polars result: {e}")))
}
