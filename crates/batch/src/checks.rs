//! The output checks: the job's `checks` in a DataPipeline's `validation` words, run by the
//! same rule engine as the stream and `data-quality-check` (row rules compiled against the
//! output's schema) and the table checks that need no history (`row_count`,
//! `missing_percent`).

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use finlake_core::spec::TableCheckKind;
use finlake_quality::checks::{judge, kind_name, rule_status, Status};
use finlake_quality::rules::RuleSet;

use crate::error::{BatchError, Result};
use crate::job::Job;
use crate::summary::CheckOutcome;

/// Evaluates the job's checks on its output; returns every outcome (the caller fails the run
/// on any `error`).
pub fn evaluate(
    job: &Job,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<Vec<CheckOutcome>> {
    let Some(spec) = &job.checks else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let rules = RuleSet::compile(spec, schema.clone())?;
    let mut failed = vec![0u64; rules.rules.len()];
    for b in batches {
        for (i, r) in rules.evaluate(b)?.iter().enumerate() {
            failed[i] += r.failed_rows;
        }
    }
    for (rule, f) in rules.rules.iter().zip(failed) {
        out.push(CheckOutcome {
            name: rule.name.clone(),
            kind: finlake_quality::rules::kind_name(rule.kind).to_string(),
            status: rule_status(f, rule.severity).as_str().to_string(),
            value: f as f64,
        });
    }
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let table_checks = spec
        .pipeline
        .spec
        .validation
        .as_ref()
        .map(|v| v.table_checks.as_slice())
        .unwrap_or_default();
    for c in table_checks {
        let value = match c.kind {
            TableCheckKind::RowCount => rows as f64,
            TableCheckKind::MissingPercent => {
                let column = c.column.as_deref().unwrap_or_default();
                let idx = schema.index_of(column).map_err(|_| {
                    BatchError::Usage(format!(
                        "{}: table check `{}`: the output has no column `{column}` (it has {})",
                        job.file.display(),
                        c.name,
                        schema
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
                let nulls: usize = batches.iter().map(|b| b.column(idx).null_count()).sum();
                if rows == 0 {
                    0.0
                } else {
                    100.0 * nulls as f64 / rows as f64
                }
            }
            other => {
                return Err(BatchError::Usage(format!(
                    "{}: table check `{}` of type {} is not run on a job's output",
                    job.file.display(),
                    c.name,
                    kind_name(other)
                )))
            }
        };
        let status = judge(c, value, None, None).map_err(|m| {
            BatchError::Usage(format!(
                "{}: table check `{}`: {m}",
                job.file.display(),
                c.name
            ))
        })?;
        out.push(CheckOutcome {
            name: c.name.clone(),
            kind: kind_name(c.kind).to_string(),
            status: status.as_str().to_string(),
            value,
        });
    }
    Ok(out)
}

/// The outcomes that fail the run, described.
pub fn failures(outcomes: &[CheckOutcome]) -> Vec<String> {
    outcomes
        .iter()
        .filter(|o| o.status == Status::Error.as_str())
        .map(|o| match o.kind.as_str() {
            "row_count" | "missing_percent" => {
                format!("table check `{}` ({}) measured {}", o.name, o.kind, o.value)
            }
            _ => format!(
                "rule `{}` ({}) failed on {} row(s)",
                o.name, o.kind, o.value
            ),
        })
        .collect()
}
