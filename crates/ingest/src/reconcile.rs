//! Reconciliation from the lake alone: every source offset is exactly one of a landed row (the
//! data table's `_partition`, `_offset`), a quarantine row, or a counted duplicate (listed in
//! `processed_events`). `finlake demo` runs it after its stream; an operator can ask the same
//! of any pipeline's tables.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int32Type, Int64Type};
use arrow::record_batch::RecordBatch;
use finlake_core::delta::{self, TableSpec};

use crate::error::{IngestError, Result};

/// Where one source offset went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// A row of the data table.
    Landed,
    /// A quarantine row: its stage, rule and field.
    Quarantined {
        /// `decode`, `normalize`, `rule`, `dedup`...
        stage: String,
        /// The rule (or check) that rejected it.
        rule: String,
        /// The field it names, if any.
        field: Option<String>,
    },
    /// A duplicate the dedup rule counted.
    Duplicate,
}

/// The reconciliation of one topic's partitions, offsets `0..high` each.
#[derive(Debug, Default)]
pub struct Reconciliation {
    /// Each offset's fate, by partition (index = offset); `None` where the lake holds nothing.
    pub fates: BTreeMap<i32, Vec<Option<Fate>>>,
    /// Rows landed.
    pub landed: usize,
    /// Quarantine rows.
    pub quarantined: usize,
    /// Counted duplicates.
    pub duplicates: usize,
    /// What broke the invariant: an offset missing, in two places, or twice in one table.
    pub problems: Vec<String>,
}

impl Reconciliation {
    /// Quarantine rows by (stage, rule), most first.
    pub fn rejects(&self) -> Vec<((String, String), usize)> {
        let mut by: HashMap<(String, String), usize> = HashMap::new();
        for f in self.fates.values().flatten().flatten() {
            if let Fate::Quarantined { stage, rule, .. } = f {
                *by.entry((stage.clone(), rule.clone())).or_default() += 1;
            }
        }
        let mut out: Vec<_> = by.into_iter().collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out
    }
}

async fn read(spec: &TableSpec) -> Result<Vec<RecordBatch>> {
    match delta::open_existing(&spec.uri, &spec.storage_options).await? {
        Some(table) => Ok(delta::read_all(&table).await?),
        None => Ok(Vec::new()),
    }
}

/// A text column, as `Utf8` whatever the scan gave.
fn text(b: &RecordBatch, name: &str, table: &str) -> Result<arrow::array::StringArray> {
    delta::string_column(b, name)
        .ok_or_else(|| IngestError::Internal(format!("{table}: no text column `{name}`")))
}

fn column<'a>(b: &'a RecordBatch, name: &str, table: &str) -> Result<&'a dyn Array> {
    b.column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| IngestError::Internal(format!("{table}: no column `{name}`")))
}

/// Reconciles `topic`'s partitions against the data, quarantine and `processed_events`
/// tables; `highs[p]` is partition p's high watermark. Offsets at or past a high watermark
/// (an earlier, longer feed) are not counted.
pub async fn reconcile(
    data: &TableSpec,
    quarantine: &TableSpec,
    events: &TableSpec,
    topic: &str,
    highs: &[i64],
) -> Result<Reconciliation> {
    let mut r = Reconciliation::default();
    for (p, &h) in highs.iter().enumerate() {
        r.fates.insert(p as i32, vec![None; h.max(0) as usize]);
    }
    let place = |r: &mut Reconciliation, p: i32, o: i64, fate: Fate| {
        let Some(slot) = r
            .fates
            .get_mut(&p)
            .and_then(|v| usize::try_from(o).ok().and_then(|o| v.get_mut(o)))
        else {
            return;
        };
        match slot {
            Some(prev) => r
                .problems
                .push(format!("{topic}/{p}/{o}: {prev:?} and {fate:?}")),
            None => {
                match fate {
                    Fate::Landed => r.landed += 1,
                    Fate::Quarantined { .. } => r.quarantined += 1,
                    Fate::Duplicate => r.duplicates += 1,
                }
                *slot = Some(fate);
            }
        }
    };
    for b in read(data).await? {
        let (t, p, o) = (
            text(&b, "_topic", "data")?,
            column(&b, "_partition", "data")?.as_primitive::<Int32Type>(),
            column(&b, "_offset", "data")?.as_primitive::<Int64Type>(),
        );
        for i in 0..b.num_rows() {
            if t.value(i) == topic {
                place(&mut r, p.value(i), o.value(i), Fate::Landed);
            }
        }
    }
    for b in read(quarantine).await? {
        let (t, p, o) = (
            text(&b, "_topic", "quarantine")?,
            column(&b, "_partition", "quarantine")?.as_primitive::<Int32Type>(),
            column(&b, "_offset", "quarantine")?.as_primitive::<Int64Type>(),
        );
        let (stage, rule, field) = (
            text(&b, "stage", "quarantine")?,
            text(&b, "rule", "quarantine")?,
            text(&b, "field", "quarantine")?,
        );
        for i in 0..b.num_rows() {
            if t.value(i) == topic {
                let fate = Fate::Quarantined {
                    stage: stage.value(i).to_string(),
                    rule: rule.value(i).to_string(),
                    field: field.is_valid(i).then(|| field.value(i).to_string()),
                };
                place(&mut r, p.value(i), o.value(i), fate);
            }
        }
    }
    for b in read(events).await? {
        let (t, p) = (
            text(&b, "topic", "processed_events")?,
            column(&b, "partition", "processed_events")?.as_primitive::<Int32Type>(),
        );
        let dups = column(&b, "duplicate_offsets", "processed_events")?.as_list::<i32>();
        for i in 0..b.num_rows() {
            if t.value(i) != topic || dups.is_null(i) {
                continue;
            }
            let list = dups.value(i);
            for o in list.as_primitive::<Int64Type>().iter().flatten() {
                place(&mut r, p.value(i), o, Fate::Duplicate);
            }
        }
    }
    for (p, v) in &r.fates {
        let missing: Vec<usize> = (0..v.len()).filter(|&o| v[o].is_none()).collect();
        if let Some(first) = missing.first() {
            r.problems.push(format!(
                "{topic}/{p}: {} offsets in no table (the first: {first})",
                missing.len()
            ));
        }
    }
    Ok(r)
}
