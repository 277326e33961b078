//! Stream compaction: tiered, order-preserving, `dataChange: false`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{AsArray, Date32Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use finlake_core::compact::{self, CompactOptions, LEVEL_TAG};
use finlake_core::delta::{self, CommitExtras, TableSpec};
use futures::TryStreamExt;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("trade_date", DataType::Date32, false),
    ]))
}

fn batch(ids: std::ops::Range<i64>, day: i32) -> RecordBatch {
    let n = (ids.end - ids.start) as usize;
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(ids)),
            Arc::new(Date32Array::from(vec![day; n])),
        ],
    )
    .unwrap()
}

fn spec(uri: &str) -> TableSpec {
    TableSpec {
        uri: uri.into(),
        schema: schema(),
        partition_by: vec!["trade_date".into()],
        checkpoint_interval: Some(5),
        storage_options: HashMap::new(),
    }
}

/// Appends `commits` commits of 3 rows of day `day`, ids from `*next`, each with the
/// `txn` version of the next id.
async fn stream(
    mut table: deltalake::DeltaTable,
    commits: usize,
    day: i32,
    next: &mut i64,
) -> deltalake::DeltaTable {
    for _ in 0..commits {
        let extras = CommitExtras {
            txns: vec![("pipe/t/0".into(), *next + 3)],
            ..CommitExtras::default()
        };
        table = delta::append(table, vec![batch(*next..*next + 3, day)], &extras)
            .await
            .unwrap();
        *next += 3;
    }
    table
}

/// The live files of a day: (level, ids in file order), in the order compaction keeps.
async fn files_of(table: &deltalake::DeltaTable, day: &str) -> Vec<(u32, Vec<i64>)> {
    let snapshot = table.snapshot().unwrap();
    let mut files = Vec::new();
    for f in snapshot.log_data().into_iter() {
        if f.partition_values_map()
            .get("trade_date")
            .cloned()
            .flatten()
            .as_deref()
            != Some(day)
        {
            continue;
        }
        #[allow(deprecated)]
        let add = f.add_action();
        let tag = |n: &str| {
            add.tags
                .as_ref()
                .and_then(|t| t.get(n).cloned().flatten())
                .and_then(|v| v.parse::<i64>().ok())
        };
        let level = tag(LEVEL_TAG).unwrap_or(0) as u32;
        let first = tag(compact::FIRST_WRITTEN_TAG).unwrap_or(add.modification_time);
        let reader = delta::DataFileReader::new(
            table.object_store(),
            f.object_store_path(),
            f.size() as u64,
        );
        let batches: Vec<RecordBatch> =
            parquet::arrow::ParquetRecordBatchStreamBuilder::new(reader)
                .await
                .unwrap()
                .build()
                .unwrap()
                .try_collect()
                .await
                .unwrap();
        let ids: Vec<i64> = batches
            .iter()
            .flat_map(|b| {
                b.column_by_name("id")
                    .unwrap()
                    .as_primitive::<Int64Type>()
                    .values()
                    .to_vec()
            })
            .collect();
        files.push((first, add.path.clone(), level, ids));
    }
    files.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    files.into_iter().map(|(_, _, l, ids)| (l, ids)).collect()
}

#[tokio::test]
async fn compaction_merges_runs_of_small_files_in_order_and_keeps_rows_and_txns() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().display().to_string();
    let table = delta::open_or_create(&spec(&uri)).await.unwrap();
    let mut next = 0;
    let table = stream(table, 23, 1, &mut next).await;
    let table = stream(table, 2, 2, &mut next).await;
    let opts = CompactOptions {
        fan_in: 10,
        ..CompactOptions::default()
    };
    let before = table.version();
    let (table, done) = compact::compact_small_files(&table, opts, vec![])
        .await
        .unwrap();
    assert_eq!(
        (done.files_removed, done.files_added, done.rows),
        (23, 1, 69)
    );
    assert_eq!(done.version, before.map(|v| v + 1));
    // day 1: one level-1 file holding ids 0..69 in the order they were written
    assert_eq!(
        files_of(&table, "1970-01-02").await,
        vec![(1, (0..69).collect())]
    );
    // day 2 had fewer files than the fan-in: untouched
    assert_eq!(files_of(&table, "1970-01-03").await.len(), 2);
    // nothing left to do
    let (table, again) = compact::compact_small_files(&table, opts, vec![])
        .await
        .unwrap();
    assert_eq!(again, compact::Compacted::default());
    // the stream goes on, from a handle that predates the compaction as well
    let stale = table.clone();
    let table = stream(table, 10, 1, &mut next).await;
    let (table, done) = compact::compact_small_files(&table, opts, vec![])
        .await
        .unwrap();
    assert_eq!((done.files_removed, done.files_added), (10, 1));
    let day1 = files_of(&table, "1970-01-02").await;
    assert_eq!(day1.iter().map(|f| f.0).collect::<Vec<_>>(), vec![1, 1]);
    let ids: Vec<i64> = day1.iter().flat_map(|f| f.1.clone()).collect();
    let want: Vec<i64> = (0..69).chain(75..105).collect();
    assert_eq!(
        ids, want,
        "the files, in order, hold the rows in the order written"
    );
    // 10 level-1 files would make a level-2 one: write 8 more rounds of 10
    let mut table = table;
    for _ in 0..8 {
        table = stream(table, 10, 1, &mut next).await;
        table = compact::compact_small_files(&table, opts, vec![])
            .await
            .unwrap()
            .0;
    }
    // the round after the tenth level-1 file merges the level
    let (table, done) = compact::compact_small_files(&table, opts, vec![])
        .await
        .unwrap();
    assert_eq!((done.files_removed, done.files_added), (10, 1));
    let day1 = files_of(&table, "1970-01-02").await;
    assert_eq!(
        day1.iter().map(|f| f.0).collect::<Vec<_>>(),
        vec![2],
        "{day1:?}"
    );
    // rows, order and the stream's txn version are what the stream wrote
    let ids: Vec<i64> = day1.iter().flat_map(|f| f.1.clone()).collect();
    let want: Vec<i64> = (0..69).chain(75..next).collect();
    assert_eq!(ids, want);
    assert_eq!(
        delta::txn_version(&table, "pipe/t/0").await.unwrap(),
        Some(next)
    );
    // a commit from the stale handle still lands (compaction does not conflict with appends)
    let stale = delta::append(stale, vec![batch(1000..1003, 1)], &CommitExtras::default())
        .await
        .unwrap();
    let total: usize = delta::read_all(&stale)
        .await
        .unwrap()
        .iter()
        .map(RecordBatch::num_rows)
        .sum();
    assert_eq!(total as i64, next + 3);
    // a compaction planned before appends it did not see still commits after them
    let planned_on = stale.clone();
    let mut next2 = 2000;
    let stale = stream(stale, 10, 1, &mut next2).await;
    let (after, done) = compact::compact_small_files(&planned_on, opts, vec![])
        .await
        .unwrap();
    assert_eq!(
        done.files_removed, 0,
        "the stale handle had only one small file: {done:?}"
    );
    let planned_on = stale.clone();
    let stale = stream(stale, 2, 1, &mut next2).await;
    let (_, done) = compact::compact_small_files(&planned_on, opts, vec![])
        .await
        .unwrap();
    assert_eq!((done.files_removed, done.files_added), (11, 1));
    drop(after);
    let mut now = stale;
    now.update_incremental(None).await.unwrap();
    let total: usize = delta::read_all(&now)
        .await
        .unwrap()
        .iter()
        .map(RecordBatch::num_rows)
        .sum();
    assert_eq!(total as i64, next + 3 + 36);
    // the compactions are OPTIMIZE commits that change no data
    let reopened = delta::open_or_create(&spec(&uri)).await.unwrap();
    let history: Vec<_> = reopened.history(None).try_collect().await.unwrap();
    let optimize = history
        .iter()
        .filter(|c| c.operation.as_deref() == Some("OPTIMIZE"))
        .count();
    assert_eq!(optimize, 12);
}

#[tokio::test]
async fn a_table_can_turn_compaction_off() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().display().to_string();
    let table = delta::open_or_create(&spec(&uri)).await.unwrap();
    let mut table = table;
    // the property, set the way an operator would (an ALTER TABLE SET TBLPROPERTIES)
    table = table
        .set_tbl_properties()
        .with_properties(HashMap::from([(
            compact::AUTO_COMPACT_PROPERTY.to_string(),
            "false".to_string(),
        )]))
        .await
        .unwrap();
    let mut next = 0;
    let table = stream(table, 12, 1, &mut next).await;
    let (_, done) = compact::compact_small_files(
        &table,
        CompactOptions {
            fan_in: 10,
            ..Default::default()
        },
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(done, compact::Compacted::default());
}
