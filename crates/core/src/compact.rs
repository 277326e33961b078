//! Small-file compaction for tables a stream appends to, in the background of the stream.
//!
//! Every stream commit adds a small file per table and partition. delta-rs 1.1 carries the
//! table's whole file list through every commit (the snapshot's materialised files are
//! re-derived from the previous ones after each commit), so a stream that never compacts
//! commits more slowly, and holds more memory, with every file it has written. The nightly
//! `maintenance` job compacts yesterday; this bounds today's file count while it is written.
//!
//! The scheme is tiered, as log-structured stores do it: a file the stream wrote is level 0;
//! [`CompactOptions::fan_in`] consecutive files of one level in a partition become one file of
//! the next level, up to [`CompactOptions::target_size`]. A partition then holds fewer than
//! `fan_in` files per level, and each row is rewritten once per level (log base `fan_in` of
//! the day's commits), never the whole day at every round.
//!
//! Order is kept: a partition's files are taken in the order they were written (the tag
//! `finlake.firstWritten`, else the add's `modificationTime`, then the path), only runs of
//! consecutive files are merged, and their rows are written in that order. Readers that
//! need arrival order (the quality scan, dedup seeding) read a compacted partition as they
//! read the files it came from. The rewrite is `dataChange: false`: rows, counts and the
//! stream's `txn` versions are unchanged, and a concurrent append does not conflict with it.
//!
//! A table with `delta.autoOptimize.autoCompact = false` (Databricks' name for the same
//! feature) is left alone; so is one with column mapping or deletion vectors.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{Field, Schema, SchemaRef};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, Remove};
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableError};
use futures::TryStreamExt;

use crate::delta::{table_err, DataFileReader, DeltaError, Result};

/// The tag holding a file's level (absent: 0, a file the stream wrote).
pub const LEVEL_TAG: &str = "finlake.level";
/// The tag holding when the first of a compacted file's sources was written (ms).
pub const FIRST_WRITTEN_TAG: &str = "finlake.firstWritten";
/// The table property that turns compaction off (`false`).
pub const AUTO_COMPACT_PROPERTY: &str = "delta.autoOptimize.autoCompact";

/// How compaction picks its files.
#[derive(Debug, Clone, Copy)]
pub struct CompactOptions {
    /// Consecutive files of one level that become one file of the next.
    pub fan_in: usize,
    /// Files at or above this size are not rewritten; outputs roll at it.
    pub target_size: u64,
}

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions {
            fan_in: 10,
            target_size: 128 * 1024 * 1024,
        }
    }
}

/// What one compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Files rewritten (removed with `dataChange: false`).
    pub files_removed: usize,
    /// Files written in their place.
    pub files_added: usize,
    /// Rows rewritten.
    pub rows: u64,
    /// The compaction's commit, when there was one.
    pub version: Option<u64>,
}

/// A live file, as compaction sees it.
struct Candidate {
    add: Add,
    level: u32,
    first_written: i64,
}

/// Files to merge into one, in order, and the level they make.
struct Unit {
    files: Vec<Candidate>,
    level: u32,
}

/// Compacts the table's small files where a level of a partition has `fan_in` consecutive
/// ones; one commit for all of them. Returns the table at that commit (or as given, when
/// there was nothing to do) and what was done. A lost race with another writer that removed
/// the same files is an error: the caller tries again later, and the files this run wrote
/// are left for vacuum.
pub async fn compact_small_files(
    table: &DeltaTable,
    opts: CompactOptions,
    metadata: Vec<(String, serde_json::Value)>,
) -> Result<(DeltaTable, Compacted)> {
    let uri = table.table_url().to_string();
    let Some(units) = plan(table, opts, &uri)? else {
        return Ok((table.clone(), Compacted::default()));
    };
    let snapshot = table.snapshot().map_err(table_err(&uri, "read snapshot"))?;
    let schema = crate::delta::arrow_schema(table, &uri)?;
    let partition_columns = snapshot.metadata().partition_columns().to_vec();
    let store = table.object_store();
    let mut done = Compacted::default();
    let mut actions = Vec::new();
    let now = chrono::Utc::now().timestamp_millis();
    for unit in units {
        let mut writer = RecordBatchWriter::for_table(table)
            .map_err(table_err(&uri, "compact: open a writer"))?
            .with_target_file_size(opts.target_size);
        for f in &unit.files {
            let path =
                object_store::path::Path::parse(&f.add.path).map_err(|e| DeltaError::Uri {
                    uri: uri.clone(),
                    message: format!("compact: data file path `{}`: {e}", f.add.path),
                })?;
            let reader = DataFileReader::new(store.clone(), path, f.add.size.max(0) as u64);
            let stream = parquet::arrow::ParquetRecordBatchStreamBuilder::new(reader)
                .await
                .map_err(|e| generic(&uri, &f.add.path, e))?
                .build()
                .map_err(|e| generic(&uri, &f.add.path, e))?;
            let batches: Vec<RecordBatch> = stream
                .try_collect()
                .await
                .map_err(|e| generic(&uri, &f.add.path, e))?;
            for b in batches {
                let full = with_partition_columns(&schema, &partition_columns, &f.add, &b)
                    .map_err(|e| generic(&uri, &f.add.path, e))?;
                done.rows += full.num_rows() as u64;
                writer
                    .write(full)
                    .await
                    .map_err(table_err(&uri, "compact: write"))?;
            }
        }
        let adds = writer
            .flush()
            .await
            .map_err(table_err(&uri, "compact: finish the file"))?;
        let first_written = unit
            .files
            .iter()
            .map(|f| f.first_written)
            .min()
            .unwrap_or(now);
        for mut add in adds {
            add.data_change = false;
            add.tags = Some(HashMap::from([
                (LEVEL_TAG.to_string(), Some(unit.level.to_string())),
                (
                    FIRST_WRITTEN_TAG.to_string(),
                    Some(first_written.to_string()),
                ),
            ]));
            done.files_added += 1;
            actions.push(Action::Add(add));
        }
        for f in unit.files {
            done.files_removed += 1;
            actions.push(Action::Remove(Remove {
                path: f.add.path,
                data_change: false,
                deletion_timestamp: Some(now),
                extended_file_metadata: Some(true),
                partition_values: Some(f.add.partition_values),
                size: Some(f.add.size),
                tags: f.add.tags,
                deletion_vector: None,
                base_row_id: None,
                default_row_commit_version: None,
            }));
        }
    }
    let props = CommitProperties::default()
        .with_cleanup_expired_logs(Some(false))
        .with_create_checkpoint(false)
        .with_metadata(metadata);
    let commit = CommitBuilder::from(props)
        .with_actions(actions)
        .build(
            Some(snapshot),
            table.log_store(),
            DeltaOperation::Optimize {
                predicate: None,
                target_size: opts.target_size as i64,
            },
        )
        .await
        .map_err(table_err(&uri, "compact: commit"))?;
    let version = commit.version();
    let mut table = table.clone();
    table
        .update_incremental(Some(version))
        .await
        .map_err(table_err(&uri, "load the compacted version"))?;
    done.version = Some(version);
    Ok((table, done))
}

fn generic(uri: &str, file: &str, e: impl std::fmt::Display) -> DeltaError {
    DeltaError::Table {
        uri: uri.to_string(),
        operation: "compact: read a data file",
        source: Box::new(DeltaTableError::Generic(format!("{file}: {e}"))),
    }
}

/// The units of work, or `None` when there is nothing to do.
fn plan(table: &DeltaTable, opts: CompactOptions, uri: &str) -> Result<Option<Vec<Unit>>> {
    let snapshot = table.snapshot().map_err(table_err(uri, "read snapshot"))?;
    let off = snapshot
        .metadata()
        .configuration()
        .get(AUTO_COMPACT_PROPERTY)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"));
    if off
        || crate::delta::maps_columns(table).map_err(table_err(uri, "read the table's features"))?
    {
        return Ok(None);
    }
    // a partition's files, keyed by its values (sorted: one key per partition)
    let mut partitions: BTreeMap<Vec<(String, Option<String>)>, Vec<Candidate>> = BTreeMap::new();
    let mut with_dv: std::collections::HashSet<Vec<(String, Option<String>)>> =
        std::collections::HashSet::new();
    for f in snapshot.log_data().into_iter() {
        let mut key: Vec<(String, Option<String>)> = f.partition_values_map().into_iter().collect();
        key.sort();
        if f.deletion_vector_descriptor().is_some() {
            with_dv.insert(key);
            continue;
        }
        #[allow(deprecated)] // the one public way to a file's tags in delta-rs 1.1
        let add = f.add_action();
        let tag = |name: &str| -> Option<i64> {
            add.tags
                .as_ref()
                .and_then(|t| t.get(name))
                .and_then(|v| v.as_deref())
                .and_then(|v| v.parse().ok())
        };
        let level = tag(LEVEL_TAG).map_or(0, |l| l.clamp(0, i64::from(u32::MAX)) as u32);
        let first_written = tag(FIRST_WRITTEN_TAG).unwrap_or(add.modification_time);
        partitions.entry(key).or_default().push(Candidate {
            add,
            level,
            first_written,
        });
    }
    let mut units = Vec::new();
    for (key, mut files) in partitions {
        if with_dv.contains(&key) || files.len() < opts.fan_in {
            continue;
        }
        files.sort_by(|a, b| {
            (a.first_written, a.add.path.as_str()).cmp(&(b.first_written, b.add.path.as_str()))
        });
        units.extend(units_of(files, opts));
    }
    Ok((!units.is_empty()).then_some(units))
}

/// The runs of `fan_in` or more consecutive small files of one level, in `files`' order,
/// cut at `target_size` bytes; each run of two or more becomes a unit.
fn units_of(files: Vec<Candidate>, opts: CompactOptions) -> Vec<Unit> {
    let small = |c: &Candidate| (c.add.size.max(0) as u64) < opts.target_size;
    let mut runs: Vec<Vec<Candidate>> = Vec::new();
    let mut run: Vec<Candidate> = Vec::new();
    for f in files {
        let continues = run
            .last()
            .is_some_and(|last| last.level == f.level && small(&f));
        if !continues {
            runs.push(std::mem::take(&mut run));
        }
        if small(&f) {
            run.push(f);
        }
    }
    runs.push(run);
    let mut units = Vec::new();
    for run in runs.into_iter().filter(|r| r.len() >= opts.fan_in.max(2)) {
        let level = run[0].level.saturating_add(1);
        let mut bin: Vec<Candidate> = Vec::new();
        let mut bytes = 0u64;
        for f in run {
            let size = f.add.size.max(0) as u64;
            if !bin.is_empty() && bytes + size > opts.target_size {
                if bin.len() >= 2 {
                    units.push(Unit {
                        files: std::mem::take(&mut bin),
                        level,
                    });
                }
                bin.clear();
                bytes = 0;
            }
            bytes += size;
            bin.push(f);
        }
        if bin.len() >= 2 {
            units.push(Unit { files: bin, level });
        }
    }
    units
}

/// A file's batch with the table's partition columns put back (a data file does not hold
/// them: their values are the add's) and every column in the table's type and order; a
/// column the file predates is NULL.
fn with_partition_columns(
    schema: &Schema,
    partition_columns: &[String],
    add: &Add,
    batch: &RecordBatch,
) -> std::result::Result<RecordBatch, String> {
    let rows = batch.num_rows();
    let mut fields: Vec<Arc<Field>> = Vec::with_capacity(schema.fields().len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let name = field.name();
        let column: ArrayRef = if partition_columns.iter().any(|c| c == name) {
            let value = add.partition_values.get(name).cloned().flatten();
            let strings: ArrayRef = Arc::new(StringArray::from(vec![value; rows]));
            arrow::compute::cast(&strings, field.data_type())
                .map_err(|e| format!("partition column `{name}`: {e}"))?
        } else {
            match batch.column_by_name(name) {
                Some(c) if c.data_type() == field.data_type() => c.clone(),
                Some(c) => arrow::compute::cast(c, field.data_type())
                    .map_err(|e| format!("column `{name}`: {e}"))?,
                None => new_null_array(field.data_type(), rows),
            }
        };
        fields.push(field.clone());
        columns.push(column);
    }
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    RecordBatch::try_new(schema, columns).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, level: u32, at: i64, size: i64) -> Candidate {
        Candidate {
            add: Add {
                path: path.into(),
                size,
                ..Add::default()
            },
            level,
            first_written: at,
        }
    }

    fn paths(units: &[Unit]) -> Vec<(u32, Vec<&str>)> {
        units
            .iter()
            .map(|u| {
                (
                    u.level,
                    u.files.iter().map(|f| f.add.path.as_str()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn only_runs_of_fan_in_consecutive_files_of_one_level_are_merged() {
        let opts = CompactOptions {
            fan_in: 3,
            target_size: 1000,
        };
        // a level-1 file, then four level-0 files: the four make one level-1 unit
        let files = vec![
            file("a", 1, 1, 300),
            file("b", 0, 2, 10),
            file("c", 0, 3, 10),
            file("d", 0, 4, 10),
            file("e", 0, 5, 10),
        ];
        assert_eq!(
            paths(&units_of(files, opts)),
            vec![(1, vec!["b", "c", "d", "e"])]
        );
        // two level-0 files are fewer than the fan-in: nothing
        let files = vec![
            file("a", 1, 1, 300),
            file("b", 0, 2, 10),
            file("c", 0, 3, 10),
        ];
        assert!(units_of(files, opts).is_empty());
        // a large file breaks a run: neither side reaches the fan-in
        let files = vec![
            file("a", 0, 1, 10),
            file("b", 0, 2, 10),
            file("big", 0, 3, 5000),
            file("c", 0, 4, 10),
            file("d", 0, 5, 10),
        ];
        assert!(units_of(files, opts).is_empty());
        // three level-1 files make a level-2 one
        let files = vec![
            file("a", 1, 1, 100),
            file("b", 1, 2, 100),
            file("c", 1, 3, 100),
        ];
        assert_eq!(
            paths(&units_of(files, opts)),
            vec![(2, vec!["a", "b", "c"])]
        );
    }

    #[test]
    fn a_run_is_cut_at_the_target_size() {
        let opts = CompactOptions {
            fan_in: 2,
            target_size: 100,
        };
        let files = (0..5).map(|i| file(&format!("f{i}"), 0, i, 40)).collect();
        // 40 + 40 fit, a third would pass 100; the last file alone is not rewritten
        assert_eq!(
            paths(&units_of(files, opts)),
            vec![(1, vec!["f0", "f1"]), (1, vec!["f2", "f3"])]
        );
    }
}
