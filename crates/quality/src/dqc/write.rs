//! What a run writes besides `quality_results`: the failing rows with rule and reason, to a
//! JSON-lines file or a Delta table.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType, Field, Schema};

use crate::dedup::Verdict;
use crate::error::{QualityError, Result};
use crate::rules::RuleSet;

/// Failing rows of one batch with the rule and reason.
pub(super) fn dead_letters(
    batch: &RecordBatch,
    rules: &RuleSet,
    failed: &[arrow::array::BooleanArray],
    dedup: &[(u32, Verdict)],
) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    let mut push = |rows: UInt32Array, rule: &str, reason: Vec<String>| -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let b = take_record_batch(batch, &rows)?;
        let mut fields: Vec<Field> = b
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new("_dq_rule", DataType::Utf8, false));
        fields.push(Field::new("_dq_reason", DataType::Utf8, false));
        let mut cols = b.columns().to_vec();
        cols.push(Arc::new(StringArray::from_iter_values(
            std::iter::repeat_n(rule, rows.len()),
        )));
        cols.push(Arc::new(StringArray::from_iter_values(reason)));
        out.push(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?);
        Ok(())
    };
    for (rule, mask) in rules.rules.iter().zip(failed) {
        let rows: UInt32Array = mask.values().set_indices().map(|i| i as u32).collect();
        let reason = RuleSet::reason(rule);
        let n = rows.len();
        push(rows, &rule.name, vec![reason; n])?;
    }
    if let Some(d) = &rules.dedup {
        let rows: UInt32Array = dedup.iter().map(|(r, _)| *r).collect();
        let reasons = dedup
            .iter()
            .map(|(_, v)| match v {
                Verdict::Duplicate { partition, offset } => format!(
                    "duplicate: same key and payload as partition {} offset {} within the window",
                    partition.map_or("?".into(), |p| p.to_string()),
                    offset.map_or("?".into(), |o| o.to_string())
                ),
                Verdict::Conflict {
                    partition, offset, ..
                } => format!(
                    "conflicting_duplicate: same key as partition {} offset {}, different payload",
                    partition.map_or("?".into(), |p| p.to_string()),
                    offset.map_or("?".into(), |o| o.to_string())
                ),
                Verdict::Late { .. } => "late: older than the watermark".to_string(),
                Verdict::Unique => unreachable!("only non-unique verdicts are kept"),
            })
            .collect();
        push(rows, &d.name, reasons)?;
    }
    Ok(out)
}

/// A `--dead-letter` target that is a local JSON-lines file rather than a Delta table.
pub(super) fn is_file_target(target: &str) -> bool {
    [".jsonl", ".ndjson", ".json"]
        .iter()
        .any(|e| target.ends_with(e))
}

pub(super) async fn write_dead_letters(
    target: &str,
    batches: &[RecordBatch],
    storage: &HashMap<String, String>,
) -> Result<()> {
    if is_file_target(target) {
        let file = std::fs::File::create(target).map_err(|e| QualityError::Io {
            path: target.into(),
            source: e,
        })?;
        let mut w = arrow::json::LineDelimitedWriter::new(std::io::BufWriter::new(file));
        for b in batches {
            w.write(b)?;
        }
        w.finish()?;
        return Ok(());
    }
    let Some(first) = batches.first() else {
        return Ok(());
    };
    let table = finlake_core::delta::open_or_create(&finlake_core::delta::TableSpec {
        uri: target.into(),
        schema: first.schema(),
        partition_by: vec![],
        checkpoint_interval: None,
        storage_options: storage.clone(),
    })
    .await?;
    finlake_core::delta::append(table, batches.to_vec(), &Default::default()).await?;
    Ok(())
}
