//! `finlake trace`: where did this message go? Given `topic:partition:offset` or a
//! correlation id, the answer comes from the lake alone: the `processed_events` row of the
//! micro-batch that read it, the data table (landed, which version), the quarantine (why),
//! or the duplicate it was (of which partition and offset); for an offset no batch covers yet,
//! how far the table has read that partition.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type, TimestampMicrosecondType};
use deltalake::datafusion::prelude::{col, lit, Expr, SessionContext};
use deltalake::DeltaTable;
use finlake_core::delta;
use serde::Serialize;

use crate::config::PipelineConfig;
use crate::error::{IngestError, Result};

/// What is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// One source message.
    Offset {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
    },
    /// A micro-batch's or a commit's correlation id.
    Correlation(String),
}

impl Query {
    /// `topic:partition:offset` (the topic may itself contain `:`), else a correlation id.
    pub fn parse(s: &str) -> Query {
        let mut it = s.rsplitn(3, ':');
        if let (Some(o), Some(p), Some(t)) = (it.next(), it.next(), it.next()) {
            if let (Ok(partition), Ok(offset)) = (p.parse::<i32>(), o.parse::<i64>()) {
                if !t.is_empty() {
                    return Query::Offset {
                        topic: t.to_string(),
                        partition,
                        offset,
                    };
                }
            }
        }
        Query::Correlation(s.to_string())
    }
}

/// One micro-batch, as `processed_events` holds it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Batch {
    /// Correlation id.
    pub batch_id: String,
    /// The data commit's correlation id.
    pub commit_id: String,
    /// The data table's version holding it.
    pub data_version: i64,
    /// Source.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Offsets, inclusive.
    pub from_offset: i64,
    /// Last offset.
    pub to_offset: i64,
    /// Messages, and what they became.
    pub messages: i64,
    /// Landed rows.
    pub landed: i64,
    /// Quarantined rows.
    pub quarantined: i64,
    /// Duplicates dropped.
    pub duplicates: i64,
    /// When the batch was read (UTC, RFC 3339).
    pub ingested_at: String,
    /// Rebuilt from the data table's log after a crash.
    pub repaired: bool,
}

/// What became of one message.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Fate {
    /// A row of the data table.
    Landed {
        /// The table.
        table: String,
        /// The version that added it.
        data_version: Option<i64>,
        /// Its `_correlation_id`.
        correlation_id: String,
    },
    /// A row of the quarantine table.
    Quarantined {
        /// The table.
        table: String,
        /// Stage that rejected it.
        stage: String,
        /// Rule (or stage step).
        rule: String,
        /// Why.
        reason: String,
        /// Its `_correlation_id`.
        correlation_id: String,
    },
    /// Dropped as a duplicate.
    Duplicate {
        /// The first version's partition, if recorded.
        of_partition: Option<i32>,
        /// The first version's offset, if recorded.
        of_offset: Option<i64>,
    },
    /// Not read yet: the table's next offset for the partition is `next`.
    NotYetIngested {
        /// The data table's `txn` version of the partition, if any.
        next: Option<i64>,
    },
    /// Covered by a commit but in no table and counted as no duplicate: the invariant broke.
    Unaccounted {
        /// What was looked at.
        detail: String,
    },
}

/// The answer.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Trace {
    /// The pipeline.
    pub pipeline: String,
    /// The question, as given.
    pub query: String,
    /// The micro-batches concerned (the one that read the offset; or those of the id).
    pub batches: Vec<Batch>,
    /// For an offset: its fate.
    pub fate: Option<Fate>,
    /// For a producer's correlation id (a message header): the messages that carried it.
    pub messages: Vec<Located>,
}

/// A message found by its correlation id.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Located {
    /// `topic:partition:offset`.
    pub at: String,
    /// `landed` or `quarantined`.
    pub outcome: String,
}

impl Trace {
    /// Exit code: 0 when the lake accounts for what was asked, 65 when it does not (an id
    /// that matches nothing, or an offset covered but unaccounted for).
    pub fn exit_code(&self) -> i32 {
        match &self.fate {
            Some(Fate::Unaccounted { .. }) => 65,
            None if self.batches.is_empty() && self.messages.is_empty() => 65,
            _ => 0,
        }
    }

    /// A few lines for a terminal.
    pub fn text(&self) -> String {
        let mut out = format!("{} {}\n", self.pipeline, self.query);
        match &self.fate {
            Some(Fate::Landed {
                table,
                data_version,
                correlation_id,
            }) => out += &format!(
                "  landed in {table}{} (correlation id {correlation_id})\n",
                data_version.map_or(String::new(), |v| format!(" at version {v}"))
            ),
            Some(Fate::Quarantined {
                table,
                stage,
                rule,
                reason,
                correlation_id,
            }) => out += &format!(
                "  quarantined in {table} by {stage}/{rule}: {reason} (correlation id {correlation_id})\n"
            ),
            Some(Fate::Duplicate {
                of_partition,
                of_offset,
            }) => out += &format!(
                "  dropped as a duplicate of partition {} offset {}\n",
                of_partition.map_or("?".into(), |p| p.to_string()),
                of_offset.map_or("?".into(), |o| o.to_string())
            ),
            Some(Fate::NotYetIngested { next }) => out += &format!(
                "  not ingested yet: the table has read this partition up to offset {}\n",
                next.map_or("(nothing)".into(), |n| (n - 1).to_string())
            ),
            Some(Fate::Unaccounted { detail }) => out += &format!("  UNACCOUNTED: {detail}\n"),
            None if self.batches.is_empty() && self.messages.is_empty() => {
                out += "  no micro-batch, commit or message has this id\n"
            }
            None => {}
        }
        for m in &self.messages {
            out += &format!("  message {} {}\n", m.at, m.outcome);
        }
        for b in &self.batches {
            out += &format!(
                "  batch {} read {}/{} offsets {}..={} at {}: {} messages, {} landed, {} quarantined, {} duplicates; data version {} (commit {}){}\n",
                b.batch_id, b.topic, b.partition, b.from_offset, b.to_offset, b.ingested_at,
                b.messages, b.landed, b.quarantined, b.duplicates, b.data_version, b.commit_id,
                if b.repaired { " [rebuilt from the log]" } else { "" }
            );
        }
        out
    }
}

async fn scan(table: &DeltaTable, filter: Expr) -> Result<Vec<RecordBatch>> {
    let uri = table.table_url().to_string();
    let q = |e: &dyn std::fmt::Display| IngestError::Internal(format!("{uri}: trace query: {e}"));
    let ctx: SessionContext = delta::sql_context(table, "t").await?;
    let df = ctx.table("t").await.map_err(|e| q(&e))?;
    let df = df.filter(filter).map_err(|e| q(&e))?;
    let out = df.collect().await.map_err(|e| q(&e))?;
    Ok(out.into_iter().filter(|b| b.num_rows() > 0).collect())
}

/// A column as strings (scans may give string views), cast once per batch.
fn strings(b: &RecordBatch, name: &str) -> arrow::array::StringArray {
    delta::string_column(b, name)
        .unwrap_or_else(|| arrow::array::StringArray::from(vec![""; b.num_rows()]))
}

/// A column as 64-bit integers, cast once per batch.
fn ints(b: &RecordBatch, name: &str) -> arrow::array::Int64Array {
    b.column_by_name(name)
        .and_then(|c| arrow::compute::cast(c, &arrow::datatypes::DataType::Int64).ok())
        .map(|c| c.as_primitive::<Int64Type>().clone())
        .unwrap_or_else(|| arrow::array::Int64Array::from(vec![0; b.num_rows()]))
}

fn batches_of(rows: &[RecordBatch]) -> Vec<Batch> {
    let mut out = Vec::new();
    for b in rows {
        let s = |n: &str| strings(b, n);
        let i = |n: &str| ints(b, n);
        let (batch_id, commit_id, topic) = (s("batch_id"), s("commit_id"), s("topic"));
        let (version, partition, from, to) = (
            i("data_version"),
            i("partition"),
            i("from_offset"),
            i("to_offset"),
        );
        let (messages, landed, quarantined, duplicates) = (
            i("messages"),
            i("landed"),
            i("quarantined"),
            i("duplicates"),
        );
        let ingested = b
            .column_by_name("ingested_at")
            .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>());
        let repaired = b
            .column_by_name("repaired")
            .and_then(|c| c.as_boolean_opt());
        for r in 0..b.num_rows() {
            out.push(Batch {
                batch_id: batch_id.value(r).to_string(),
                commit_id: commit_id.value(r).to_string(),
                data_version: version.value(r),
                topic: topic.value(r).to_string(),
                partition: partition.value(r) as i32,
                from_offset: from.value(r),
                to_offset: to.value(r),
                messages: messages.value(r),
                landed: landed.value(r),
                quarantined: quarantined.value(r),
                duplicates: duplicates.value(r),
                ingested_at: ingested
                    .and_then(|c| chrono::DateTime::from_timestamp_micros(c.value(r)))
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default(),
                repaired: repaired.is_some_and(|c| c.value(r)),
            });
        }
    }
    out.sort_by_key(|b| (b.topic.clone(), b.partition, b.from_offset));
    out
}

/// The duplicate entry for `offset` in an events row, if it lists one.
fn duplicate_in(rows: &[RecordBatch], offset: i64) -> Option<Fate> {
    for b in rows {
        let (Some(d), Some(p), Some(o)) = (
            b.column_by_name("duplicate_offsets")
                .map(|c| c.as_list::<i32>()),
            b.column_by_name("first_partitions")
                .map(|c| c.as_list::<i32>()),
            b.column_by_name("first_offsets")
                .map(|c| c.as_list::<i32>()),
        ) else {
            continue;
        };
        for r in 0..b.num_rows() {
            if d.is_null(r) {
                continue;
            }
            let dv = d.value(r);
            let dv = dv.as_primitive::<Int64Type>();
            if let Some(i) = (0..dv.len()).find(|&i| dv.value(i) == offset) {
                let pv = p.value(r);
                let pv = pv.as_primitive::<Int32Type>();
                let ov = o.value(r);
                let ov = ov.as_primitive::<Int64Type>();
                return Some(Fate::Duplicate {
                    of_partition: (!pv.is_null(i)).then(|| pv.value(i)),
                    of_offset: (!ov.is_null(i)).then(|| ov.value(i)),
                });
            }
        }
    }
    None
}

/// Answers `query` for the pipeline `cfg` from its tables.
pub async fn trace(cfg: &PipelineConfig, query: &Query, text: &str) -> Result<Trace> {
    let data = delta::open_existing(&cfg.data.uri, &cfg.data.storage_options).await?;
    let quarantine =
        delta::open_existing(&cfg.quarantine.uri, &cfg.quarantine.storage_options).await?;
    let events = delta::open_existing(&cfg.events.uri, &cfg.events.storage_options).await?;
    let mut out = Trace {
        pipeline: cfg.name.clone(),
        query: text.to_string(),
        batches: Vec::new(),
        fate: None,
        messages: Vec::new(),
    };
    match query {
        Query::Correlation(id) => {
            if let Some(ev) = &events {
                let rows = scan(
                    ev,
                    col("batch_id")
                        .eq(lit(id.as_str()))
                        .or(col("commit_id").eq(lit(id.as_str()))),
                )
                .await?;
                out.batches = batches_of(&rows);
            }
            if out.batches.is_empty() {
                // a producer's own id: the rows that carry it
                for (table, outcome) in [(&data, "landed"), (&quarantine, "quarantined")] {
                    let Some(t) = table else { continue };
                    for b in scan(t, col("_correlation_id").eq(lit(id.as_str()))).await? {
                        let (topic, partition, offset) = (
                            strings(&b, "_topic"),
                            ints(&b, "_partition"),
                            ints(&b, "_offset"),
                        );
                        for r in 0..b.num_rows() {
                            out.messages.push(Located {
                                at: format!(
                                    "{}:{}:{}",
                                    topic.value(r),
                                    partition.value(r),
                                    offset.value(r)
                                ),
                                outcome: outcome.to_string(),
                            });
                        }
                    }
                }
                out.messages.sort_by(|a, b| a.at.cmp(&b.at));
            }
        }
        Query::Offset {
            topic,
            partition,
            offset,
        } => {
            let at = |prefix: &str| {
                col(format!("{prefix}topic"))
                    .eq(lit(topic.as_str()))
                    .and(col(format!("{prefix}partition")).eq(lit(*partition)))
            };
            let ev_rows = match &events {
                Some(ev) => {
                    scan(
                        ev,
                        at("")
                            .and(col("from_offset").lt_eq(lit(*offset)))
                            .and(col("to_offset").gt_eq(lit(*offset))),
                    )
                    .await?
                }
                None => Vec::new(),
            };
            out.batches = batches_of(&ev_rows);
            let row = |p: &str| at(p).and(col("_offset").eq(lit(*offset)));
            if let Some(d) = &data {
                let rows = scan(d, row("_")).await?;
                if let Some(b) = rows.first() {
                    out.fate = Some(Fate::Landed {
                        table: cfg.data.uri.clone(),
                        data_version: out.batches.first().map(|b| b.data_version),
                        correlation_id: strings(b, "_correlation_id").value(0).to_string(),
                    });
                    return Ok(out);
                }
            }
            if let Some(q) = &quarantine {
                let rows = scan(q, row("_")).await?;
                if let Some(b) = rows.first() {
                    out.fate = Some(Fate::Quarantined {
                        table: cfg.quarantine.uri.clone(),
                        stage: strings(b, "stage").value(0).to_string(),
                        rule: strings(b, "rule").value(0).to_string(),
                        reason: strings(b, "reason").value(0).to_string(),
                        correlation_id: strings(b, "_correlation_id").value(0).to_string(),
                    });
                    return Ok(out);
                }
            }
            if let Some(f) = duplicate_in(&ev_rows, *offset) {
                out.fate = Some(f);
                return Ok(out);
            }
            let next = match &data {
                Some(d) => delta::txn_version(d, &cfg.app_id(topic, *partition)).await?,
                None => None,
            };
            out.fate = Some(if next.is_none_or(|n| *offset >= n) {
                Fate::NotYetIngested { next }
            } else if out.batches.iter().any(|b| b.repaired && b.duplicates > 0) {
                Fate::Duplicate {
                    of_partition: None,
                    of_offset: None,
                }
            } else {
                Fate::Unaccounted {
                    detail: format!(
                        "the data table has read this partition up to offset {} but neither it, the quarantine nor processed_events holds offset {offset}",
                        next.unwrap_or_default() - 1
                    ),
                }
            });
        }
    }
    Ok(out)
}
