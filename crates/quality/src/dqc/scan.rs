//! Reading a partition: streamed in arrival order through the rule engine, measuring the
//! table checks on the way (row counts, NULLs, distinct keys, newest event, values seen,
//! exchanges present).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampMicrosecondType};
use deltalake::DeltaTable;
use finlake_core::spec::{self, TableCheckKind};
use futures::StreamExt;

use super::{write::dead_letters, Job};
use crate::engine::RuleEngine;
use crate::error::{QualityError, Result};

/// Casts a scanned batch to `schema` (string views and dictionary partition values become
/// the canonical types); columns outside `schema` are dropped.
pub(super) fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let cols = schema
        .fields()
        .iter()
        .map(|f| {
            let c = batch
                .column_by_name(f.name())
                .ok_or_else(|| QualityError::Query {
                    table: "scan".into(),
                    message: format!("column `{}` is missing from the table", f.name()),
                })?;
            Ok(if c.data_type() == f.data_type() {
                c.clone()
            } else {
                cast(c, f.data_type())?
            })
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    // the table may hold NULLs in columns the canonical schema declares required
    let relaxed: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    Ok(RecordBatch::try_new(Arc::new(Schema::new(relaxed)), cols)?)
}

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

/// Streams the partition through the rule engine, measuring the table checks on the way.
pub(super) async fn scan(
    job: &Job<'_>,
    table: &DeltaTable,
    table_schema: &Schema,
    table_checks: &[spec::TableCheck],
    dead: &mut Vec<RecordBatch>,
) -> Result<(Measure, crate::engine::EngineStats)> {
    let (opts, spec, canonical, calendar, uri) = (
        job.opts,
        &job.spec,
        &job.canonical,
        &job.calendar,
        job.uri.as_str(),
    );
    let ctx = finlake_core::delta::sql_context(table, "t").await?;
    let mut order = vec!["_ingested_at", "_topic", "_partition", "_offset"];
    order.retain(|c| table_schema.index_of(c).is_ok());
    let order_by = if order.is_empty() {
        String::new()
    } else {
        format!(" ORDER BY {}", order.join(", "))
    };
    let sql = format!(
        "SELECT * FROM t WHERE {} = DATE '{}'{order_by}",
        finlake_core::schema::TRADE_DATE,
        opts.date
    );
    let df = ctx.sql(&sql).await.map_err(|e| query_err(uri, e))?;
    let mut stream = df.execute_stream().await.map_err(|e| query_err(uri, e))?;

    let mut engine = RuleEngine::new(
        spec.clone(),
        canonical_nullable(canonical),
        calendar.clone(),
    )?;
    let dedup_keys = engine.rules().dedup.as_ref().map(|d| d.keys.clone());
    let mut m = Measure::default();
    for c in table_checks {
        match c.kind {
            TableCheckKind::MissingPercent => {
                if let Some(col) = &c.column {
                    m.nulls.insert(col.clone(), 0);
                }
            }
            TableCheckKind::DuplicateCount => {
                let keys = dedup_keys.clone().unwrap_or_default();
                m.keys = Some(KeySet {
                    columns: keys,
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
    let relaxed = canonical_nullable(canonical);
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| query_err(uri, e))?;
        if batch.num_rows() == 0 {
            continue;
        }
        let batch = conform(&batch, &relaxed)?;
        measure(&mut m, &batch)?;
        let out = engine.process(&batch)?;
        if opts.dead_letter.is_some() {
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
