//! The rule engine on one stream of batches: enrich, evaluate every row rule once into a
//! mask, route each row by the strictest action it failed, deduplicate the survivors, and
//! flag the rest. The same engine runs on a live micro-batch (the ingestor) and over a table
//! partition (`data-quality-check`, batch jobs), so a rule means the same on both.
//!
//! Routing precedence for a row that fails several rules: `fail` (the batch errors) over
//! `dead_letter` over `drop` over `flag`. Counts per rule are taken from the rule's own
//! mask, so a row failing two rules counts once for each.
// Data path: no unwrap/expect on anything derived from message bytes; each remaining one
// says why it cannot fail.
#![warn(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, ListBuilder, RecordBatch, StringBuilder, UInt32Array};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use finlake_core::spec::LoadedSpec;
use finlake_core::transform::ExchangeCalendar;

use crate::dedup::{DedupStats, Deduplicator, Verdict};
use crate::enrich;
use crate::error::{QualityError, Result};
use crate::metrics::QualityMetrics;
use crate::rules::{Action, LateAction, RuleSet};

/// The column listing the flags a landed row carries.
pub const FLAGS: &str = "_flags";
/// The flag a late row lands with.
pub const LATE_FLAG: &str = "late";

/// Counts of one rule; mergeable across batches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RuleStats {
    /// Rows evaluated.
    pub rows: u64,
    /// Rows that failed.
    pub failed: u64,
    /// Rows with NULL (not checked, or unknown).
    pub null_rows: u64,
    /// Rows on which the rule could not be evaluated (they fail it).
    #[serde(default)]
    pub error_rows: u64,
}

impl RuleStats {
    /// Adds another batch's counts.
    pub fn merge(&mut self, o: &RuleStats) {
        self.rows += o.rows;
        self.failed += o.failed;
        self.null_rows += o.null_rows;
        self.error_rows += o.error_rows;
    }
}

/// Counts of a run; mergeable.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EngineStats {
    /// Rows in.
    pub rows: u64,
    /// Rows landed (flagged or not).
    pub landed: u64,
    /// Landed rows with at least one flag.
    pub flagged: u64,
    /// Rows quarantined (dead_letter rules, conflicting duplicates, late rows if so set).
    pub quarantined: u64,
    /// Rows dropped by `drop` rules.
    pub dropped: u64,
    /// Per rule, by name.
    pub rules: BTreeMap<String, RuleStats>,
    /// Dedup counts.
    pub dedup: DedupStats,
}

impl EngineStats {
    /// Adds another batch's counts.
    pub fn merge(&mut self, o: &EngineStats) {
        self.rows += o.rows;
        self.landed += o.landed;
        self.flagged += o.flagged;
        self.quarantined += o.quarantined;
        self.dropped += o.dropped;
        for (k, v) in &o.rules {
            self.rules.entry(k.clone()).or_default().merge(v);
        }
        self.dedup.merge(&o.dedup);
    }
}

/// A row sent to quarantine, by its index in the input batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Row index in the input batch.
    pub row: u32,
    /// The rule.
    pub rule: String,
    /// The column at fault, for column rules.
    pub field: Option<String>,
    /// Why.
    pub reason: String,
}

/// The result of one batch.
#[derive(Debug)]
pub struct BatchOutcome {
    /// Landed rows: the input columns plus `_flags`.
    pub landed: RecordBatch,
    /// Each landed row's index in the input.
    pub landed_index: UInt32Array,
    /// Rows to quarantine, in input order.
    pub rejects: Vec<Reject>,
    /// Counts of this batch.
    pub stats: EngineStats,
    /// Per rule (in [`RuleSet::rules`] order), where the row failed it.
    pub failed: Vec<BooleanArray>,
    /// Rows dedup did not judge unique, by input row.
    pub dedup: Vec<(u32, Verdict)>,
}

/// The stateless half of the engine: binds the rules to a batch's schema (recompiling when
/// it changes), adds the session columns and evaluates every rule. Cheap to clone and `Send`,
/// so it can run on another thread than the stateful half ([`RuleEngine::apply`]).
#[derive(Clone)]
pub struct Evaluator {
    spec: Arc<LoadedSpec>,
    calendar: Arc<ExchangeCalendar>,
    rules: Arc<RuleSet>,
    input_schema: SchemaRef,
}

/// A batch with every row rule evaluated.
pub struct Evaluated {
    batch: RecordBatch,
    results: Vec<crate::rules::RuleResult>,
    rules: Arc<RuleSet>,
    /// The dedup keys' fingerprints, made here so the stateful half does not hash.
    keys: Option<crate::dedup::KeyFingerprints>,
    /// The rows' source partitions, found here so the stateful half compares no strings.
    sources: crate::dedup::Sources,
}

impl Evaluated {
    /// The batch as it was evaluated (without the session columns).
    pub fn batch(&self) -> &RecordBatch {
        &self.batch
    }

    /// The batch's rows by source partition.
    pub fn sources(&self) -> &crate::dedup::Sources {
        &self.sources
    }

    /// Rows a `dead_letter` rule will send to quarantine (each row once, however many rules
    /// it fails): known before the stateful half runs, so a circuit breaker can act on a
    /// micro-batch as soon as it is evaluated. Dedup's late rows are not included.
    pub fn rule_rejects(&self) -> u64 {
        let mut union: Option<BooleanArray> = None;
        for (rule, res) in self.rules.rules.iter().zip(&self.results) {
            if res.failed_rows == 0 || !matches!(rule.action, Action::DeadLetter) {
                continue;
            }
            union = Some(match union {
                None => res.failed.clone(),
                Some(u) => arrow::compute::or(&u, &res.failed).unwrap_or(u),
            });
        }
        union.map_or(0, |u| u.true_count() as u64)
    }
}

impl Evaluator {
    /// Binds the rules to `schema`: nothing when it is the bound schema, otherwise a
    /// recompile (a rule that no longer binds is an error naming the spec line).
    fn bind(&mut self, schema: &SchemaRef) -> Result<()> {
        if Arc::ptr_eq(schema, &self.input_schema) || schema == &self.input_schema {
            return Ok(());
        }
        tracing::info!(
            spec = %self.spec.file.display(),
            "batch schema differs from the bound schema; recompiling the rules"
        );
        self.rules = Arc::new(RuleSet::compile(
            &self.spec,
            enrich::enriched_schema(schema),
        )?);
        self.input_schema = schema.clone();
        QualityMetrics::global().recompiles.inc();
        Ok(())
    }

    /// Evaluates every rule on `batch`.
    pub fn evaluate(&mut self, batch: RecordBatch) -> Result<Evaluated> {
        self.bind(&batch.schema())?;
        let enriched = enrich::add_session_columns(&batch, &self.calendar)?;
        let results = self.rules.evaluate(&enriched)?;
        let keys = match &self.rules.dedup {
            Some(rule) => Some(crate::dedup::KeyFingerprints::of(rule, &batch)?),
            None => None,
        };
        let sources = crate::dedup::Sources::of(&batch);
        Ok(Evaluated {
            batch,
            results,
            rules: self.rules.clone(),
            keys,
            sources,
        })
    }
}

/// The engine: compiled rules (recompiled when the schema changes), dedup state, counts.
pub struct RuleEngine {
    evaluator: Evaluator,
    dedup: Option<Deduplicator>,
    totals: EngineStats,
    metrics: &'static QualityMetrics,
    /// Build the landed batch (the ingestor writes it); a check that only counts does not.
    landed: bool,
}

/// The landed schema: `base` plus `_flags`.
pub fn landed_schema(base: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(flags_field());
    Arc::new(Schema::new(fields))
}

fn flags_field() -> Field {
    Field::new(
        FLAGS,
        DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        false,
    )
}

impl RuleEngine {
    /// Compiles the spec's rules against `schema` (the table's canonical schema).
    pub fn new(
        spec: Arc<LoadedSpec>,
        schema: SchemaRef,
        calendar: Arc<ExchangeCalendar>,
    ) -> Result<Self> {
        let rules = RuleSet::compile(&spec, enrich::enriched_schema(&schema))?;
        let dedup = rules.dedup.clone().map(Deduplicator::new);
        Ok(RuleEngine {
            evaluator: Evaluator {
                spec,
                calendar,
                rules: Arc::new(rules),
                input_schema: schema,
            },
            dedup,
            totals: EngineStats::default(),
            metrics: QualityMetrics::global(),
            landed: true,
        })
    }

    /// An engine that counts and routes but leaves [`BatchOutcome::landed`] empty (and
    /// `landed_index` empty): `data-quality-check` needs the counts, failures and dedup
    /// verdicts, not a copy of every surviving row with its flags.
    pub fn counts_only(mut self) -> Self {
        self.landed = false;
        self
    }

    /// The compiled rules.
    pub fn rules(&self) -> &RuleSet {
        &self.evaluator.rules
    }

    /// Counts over every batch so far.
    pub fn totals(&self) -> &EngineStats {
        &self.totals
    }

    /// The dedup state, if the spec has a dedup rule.
    pub fn dedup(&mut self) -> Option<&mut Deduplicator> {
        self.dedup.as_mut()
    }

    /// A copy of the stateless half, for another thread.
    pub fn evaluator(&self) -> Evaluator {
        self.evaluator.clone()
    }

    /// Runs one batch: [`Evaluator::evaluate`] then [`RuleEngine::apply`].
    pub fn process(&mut self, batch: &RecordBatch) -> Result<BatchOutcome> {
        let evaluated = self.evaluator.evaluate(batch.clone())?;
        self.apply(evaluated)
    }

    /// The stateful half: routes rows on the evaluated masks, deduplicates the survivors in
    /// order, flags the rest, counts. Batches must be applied in arrival order.
    pub fn apply(&mut self, evaluated: Evaluated) -> Result<BatchOutcome> {
        let Evaluated {
            batch,
            results,
            rules,
            keys,
            sources,
        } = evaluated;
        let batch = &batch;
        let schema = batch.schema();
        let n = batch.num_rows();
        let pipeline = &self.evaluator.spec.pipeline.metadata.name;
        let mut stats = EngineStats {
            rows: n as u64,
            ..EngineStats::default()
        };
        // fate per row: 0 keep, 1 drop, 2 quarantine; the rule that decided it
        let mut fate = vec![0u8; n];
        let mut decided_by: Vec<u32> = vec![u32::MAX; n];
        for (i, (rule, res)) in rules.rules.iter().zip(&results).enumerate() {
            stats.rules.insert(
                rule.name.clone(),
                RuleStats {
                    rows: n as u64,
                    failed: res.failed_rows,
                    null_rows: res.null_rows,
                    error_rows: res.error_rows,
                },
            );
            self.metrics
                .rule_failures
                .with_label_values(&[pipeline, &rule.name])
                .inc_by(res.failed_rows);
            if res.failed_rows == 0 {
                continue;
            }
            let level = match rule.action {
                Action::Fail => {
                    return Err(QualityError::RuleFailed {
                        rule: rule.name.clone(),
                        rows: res.failed_rows,
                        first_row: set_bits(&res.failed).next().unwrap_or_default(),
                    })
                }
                Action::DeadLetter => 2,
                Action::Drop => 1,
                Action::Flag { .. } => continue,
            };
            for row in set_bits(&res.failed) {
                if fate[row] < level {
                    fate[row] = level;
                    decided_by[row] = i as u32;
                }
            }
        }
        let mut rejects = Vec::new();
        for row in 0..n {
            if fate[row] == 2 {
                let i = decided_by[row] as usize;
                let rule = &rules.rules[i];
                let reason = match &results[i].errors {
                    Some((mask, e)) if mask.value(row) => RuleSet::error_reason(rule, e),
                    _ => RuleSet::reason(rule),
                };
                rejects.push(Reject {
                    row: row as u32,
                    rule: rule.name.clone(),
                    field: rule.column.clone(),
                    reason,
                });
            }
        }
        let mut judged = Vec::new();
        // dedup the survivors, in input order
        let mut late = vec![false; n];
        if let Some(dedup) = self.dedup.as_mut() {
            let alive: Vec<u32> = (0..n as u32).filter(|&r| fate[r as usize] == 0).collect();
            let before = dedup.stats();
            let verdicts = match keys {
                Some(keys) => dedup.process_rows_fingerprinted(batch, &alive, keys, &sources)?,
                None => dedup.process_rows(batch, &alive)?,
            };
            let after = dedup.stats();
            stats.dedup = DedupStats {
                rows: after.rows - before.rows,
                duplicate_rows: after.duplicate_rows - before.duplicate_rows,
                duplicate_keys: after.duplicate_keys - before.duplicate_keys,
                conflicting_duplicates: after.conflicting_duplicates
                    - before.conflicting_duplicates,
                late: after.late - before.late,
            };
            let rule = dedup.rule().clone();
            for &(row, v) in &verdicts {
                let row = row as usize;
                match v {
                    Verdict::Unique => {}
                    Verdict::Duplicate { .. } => fate[row] = 1,
                    Verdict::Conflict {
                        partition,
                        offset,
                        event_time,
                    } => {
                        fate[row] = 2;
                        let first = match (partition, offset) {
                            (Some(p), Some(o)) => format!("partition {p} offset {o}"),
                            _ => "an earlier row".to_string(),
                        };
                        rejects.push(Reject {
                            row: row as u32,
                            rule: rule.name.clone(),
                            field: None,
                            reason: format!(
                                "conflicting_duplicate: same key ({}) as {first} (event time {}) within {} µs, different payload; both versions kept",
                                rule.keys.join(", "),
                                fmt_micros(event_time),
                                rule.window_micros
                            ),
                        });
                    }
                    Verdict::Late { watermark } => match rule.on_late {
                        LateAction::Flag => late[row] = true,
                        LateAction::DeadLetter => {
                            fate[row] = 2;
                            rejects.push(Reject {
                                row: row as u32,
                                rule: rule.name.clone(),
                                field: None,
                                reason: format!(
                                    "late: event time older than the watermark {}",
                                    fmt_micros(watermark)
                                ),
                            });
                        }
                    },
                }
            }
            judged = verdicts;
            rejects.sort_by_key(|r| r.row);
            self.metrics
                .dedup_state_entries
                .with_label_values(&[pipeline])
                .set(dedup.state_entries() as i64);
        }
        // flags for the rows that land
        let landed_index: UInt32Array = (0..n as u32).filter(|&r| fate[r as usize] == 0).collect();
        let flag_rules: Vec<(usize, &str)> = rules
            .rules
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match &r.action {
                Action::Flag { label } if results[i].failed_rows > 0 => Some((i, label.as_str())),
                _ => None,
            })
            .collect();
        let landed = if self.landed {
            let keep: BooleanArray = fate.iter().map(|&f| Some(f == 0)).collect();
            let mut flags = ListBuilder::with_capacity(
                StringBuilder::with_capacity(landed_index.len(), 0),
                landed_index.len(),
            )
            .with_field(Arc::new(Field::new("item", DataType::Utf8, true)));
            for &row in landed_index.values() {
                let row = row as usize;
                let mut any = false;
                for &(i, label) in &flag_rules {
                    if results[i].failed.value(row) {
                        flags.values().append_value(label);
                        any = true;
                    }
                }
                if late[row] {
                    flags.values().append_value(LATE_FLAG);
                    any = true;
                }
                stats.flagged += any as u64;
                flags.append(true);
            }
            let kept = filter_record_batch(batch, &keep)?;
            let mut cols: Vec<ArrayRef> = kept.columns().to_vec();
            cols.push(Arc::new(flags.finish()));
            RecordBatch::try_new(landed_schema(&schema), cols)?
        } else {
            // the same count on bitmaps: the rows that land with a flag or late
            let mut flagged = arrow::buffer::BooleanBuffer::collect_bool(n, |r| late[r]);
            for &(i, _) in &flag_rules {
                flagged = &flagged | results[i].failed.values();
            }
            let kept = arrow::buffer::BooleanBuffer::collect_bool(n, |r| fate[r] == 0);
            stats.flagged += (&flagged & &kept).count_set_bits() as u64;
            RecordBatch::new_empty(landed_schema(&schema))
        };
        stats.landed = landed_index.len() as u64;
        stats.quarantined = rejects.len() as u64;
        stats.dropped = n as u64 - stats.landed - stats.quarantined;
        self.totals.merge(&stats);
        debug_assert_eq!(
            stats.landed + stats.quarantined + stats.dropped,
            stats.rows,
            "every row lands, is quarantined or is dropped and counted"
        );
        Ok(BatchOutcome {
            landed,
            landed_index: if self.landed {
                landed_index
            } else {
                UInt32Array::from(Vec::<u32>::new())
            },
            rejects,
            stats,
            failed: results.into_iter().map(|r| r.failed).collect(),
            dedup: judged,
        })
    }
}

fn set_bits(mask: &BooleanArray) -> impl Iterator<Item = usize> + '_ {
    mask.values().set_indices()
}

fn fmt_micros(t: i64) -> String {
    chrono::DateTime::from_timestamp_micros(t)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .unwrap_or_else(|| t.to_string())
}
