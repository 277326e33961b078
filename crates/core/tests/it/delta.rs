use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{AsArray, Date32Array, Decimal128Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use finlake_core::delta::{self, CommitExtras, DeltaError, TableSpec};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("price", DataType::Decimal128(18, 6), false),
        Field::new("trade_date", DataType::Date32, false),
    ]))
}

fn batch(ids: std::ops::Range<i64>, day: i32) -> RecordBatch {
    let n = (ids.end - ids.start) as usize;
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(ids.clone())),
            Arc::new(
                Decimal128Array::from_iter_values(ids.map(|i| i128::from(i) * 1_000_000))
                    .with_precision_and_scale(18, 6)
                    .unwrap(),
            ),
            Arc::new(Date32Array::from(vec![day; n])),
        ],
    )
    .unwrap()
}

fn spec(
    uri: &str,
    checkpoint_interval: Option<u32>,
    storage_options: HashMap<String, String>,
) -> TableSpec {
    TableSpec {
        uri: uri.into(),
        schema: schema(),
        partition_by: vec!["trade_date".into()],
        checkpoint_interval,
        storage_options,
    }
}

fn txn(app: &str, v: i64) -> CommitExtras {
    CommitExtras {
        txns: vec![(app.into(), v)],
        metadata: vec![("job".into(), "test".into())],
        deferred_checkpoint: false,
    }
}

async fn rows(table: &deltalake::DeltaTable) -> usize {
    delta::read_all(table)
        .await
        .unwrap()
        .iter()
        .map(RecordBatch::num_rows)
        .sum()
}

#[tokio::test]
async fn append_carries_txn_versions_that_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("t").display().to_string();
    let table = delta::open_or_create(&spec(&uri, None, HashMap::new()))
        .await
        .unwrap();
    assert_eq!(delta::txn_version(&table, "p/topic/0").await.unwrap(), None);
    let table = delta::append(table, vec![batch(0..10, 20_000)], &txn("p/topic/0", 10))
        .await
        .unwrap();
    let table = delta::append(table, vec![batch(10..15, 20_000)], &txn("p/topic/0", 15))
        .await
        .unwrap();
    assert_eq!(
        delta::txn_version(&table, "p/topic/0").await.unwrap(),
        Some(15)
    );
    let reopened = delta::open_or_create(&spec(&uri, None, HashMap::new()))
        .await
        .unwrap();
    assert_eq!(
        delta::txn_version(&reopened, "p/topic/0").await.unwrap(),
        Some(15)
    );
    assert_eq!(
        delta::txn_version(&reopened, "p/topic/1").await.unwrap(),
        None
    );
    assert_eq!(rows(&reopened).await, 15);
}

#[tokio::test]
async fn memory_tables_work() {
    let table = delta::open_or_create(&spec("memory:///mem-table", None, HashMap::new()))
        .await
        .unwrap();
    let table = delta::append(table, vec![batch(0..3, 1)], &txn("a", 3))
        .await
        .unwrap();
    assert_eq!(rows(&table).await, 3);
}

#[tokio::test]
async fn a_table_that_would_expire_txn_versions_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = delta::table_url(&dir.path().display().to_string()).unwrap();
    use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
    let kernel: deltalake::kernel::StructType = schema().as_ref().try_into_kernel().unwrap();
    deltalake::DeltaTable::try_from_url(url)
        .await
        .unwrap()
        .create()
        .with_columns(kernel.fields().cloned())
        .with_configuration_property(
            deltalake::TableProperty::SetTransactionRetentionDuration,
            Some("interval 1 days"),
        )
        .await
        .unwrap();
    let err = delta::open_or_create(&spec(
        &dir.path().display().to_string(),
        None,
        HashMap::new(),
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, DeltaError::TxnRetention { .. }), "{err}");
    assert!(err.to_string().contains("setTransactionRetentionDuration"));
}

#[tokio::test]
async fn replace_partition_is_idempotent_and_leaves_other_days() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().display().to_string();
    let table = delta::open_or_create(&spec(&uri, None, HashMap::new()))
        .await
        .unwrap();
    let table = delta::append(
        table,
        vec![batch(0..10, 100), batch(10..20, 101)],
        &CommitExtras::default(),
    )
    .await
    .unwrap();
    let mut table = table;
    for _ in 0..2 {
        table = delta::replace_partition(
            table,
            vec![batch(50..53, 101)],
            "trade_date",
            deltalake::datafusion::scalar::ScalarValue::Date32(Some(101)),
            &CommitExtras::default(),
        )
        .await
        .unwrap();
    }
    let all = delta::read_all(&table).await.unwrap();
    let mut ids: Vec<i64> = all
        .iter()
        .flat_map(|b| {
            b.column_by_name("id")
                .unwrap()
                .as_primitive::<arrow::datatypes::Int64Type>()
                .values()
                .to_vec()
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..10).chain(50..53).collect::<Vec<_>>());
    // a day with nothing to write empties its partition, and only it
    let table = delta::replace_partition(
        table,
        vec![batch(0..0, 101)],
        "trade_date",
        deltalake::datafusion::scalar::ScalarValue::Date32(Some(101)),
        &CommitExtras::default(),
    )
    .await
    .unwrap();
    let rows: usize = delta::read_all(&table)
        .await
        .unwrap()
        .iter()
        .map(RecordBatch::num_rows)
        .sum();
    assert_eq!(rows, 10);
}

#[tokio::test]
async fn a_new_nullable_column_evolves_the_schema_and_a_type_change_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().display().to_string();
    let table = delta::open_or_create(&spec(&uri, None, HashMap::new()))
        .await
        .unwrap();
    let table = delta::append(table, vec![batch(0..2, 1)], &CommitExtras::default())
        .await
        .unwrap();
    let base = batch(2..4, 1);
    let mut fields: Vec<Field> = schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("venue_note", DataType::Utf8, true));
    let mut cols = base.columns().to_vec();
    cols.push(Arc::new(StringArray::from(vec![Some("x"), None])));
    let wider = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
    let table = delta::append(table, vec![wider], &CommitExtras::default())
        .await
        .unwrap();
    let all = delta::read_all(&table).await.unwrap();
    assert_eq!(all.iter().map(RecordBatch::num_rows).sum::<usize>(), 4);
    assert!(all[0].schema().field_with_name("venue_note").is_ok());

    let changed = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("price", DataType::Decimal128(18, 6), false),
            Field::new("trade_date", DataType::Date32, false),
        ])),
        vec![
            Arc::new(StringArray::from(vec!["a"])),
            base.column(1).slice(0, 1),
            base.column(2).slice(0, 1),
        ],
    )
    .unwrap();
    let err = delta::append(table, vec![changed], &CommitExtras::default())
        .await
        .unwrap_err();
    assert!(matches!(err, DeltaError::SchemaChange { .. }), "{err}");
    assert!(err.to_string().contains("column `id`"), "{err}");
}

#[tokio::test]
async fn checkpoints_are_written_every_n_commits() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().display().to_string();
    let mut table = delta::open_or_create(&spec(&uri, Some(3), HashMap::new()))
        .await
        .unwrap();
    for i in 0..4 {
        table = delta::append(
            table,
            vec![batch(i * 10..i * 10 + 10, 1)],
            &txn("app", i * 10 + 10),
        )
        .await
        .unwrap();
    }
    let checkpoints: Vec<String> = std::fs::read_dir(dir.path().join("_delta_log"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".checkpoint."))
        .collect();
    assert_eq!(
        checkpoints,
        vec!["00000000000000000002.checkpoint.parquet".to_string()]
    );
    let reopened = delta::open_or_create(&spec(&uri, Some(3), HashMap::new()))
        .await
        .unwrap();
    assert_eq!(
        delta::txn_version(&reopened, "app").await.unwrap(),
        Some(40)
    );
    assert_eq!(rows(&reopened).await, 40);
}

#[tokio::test]
async fn s3_tables_on_a_real_endpoint_keep_txn_versions() {
    let moto = crate::moto::start();
    crate::moto::create_bucket(moto.1, "lake");
    let opts = crate::moto::options(moto.1);
    let s = spec("s3://lake/market/trades", Some(2), opts.clone());
    let table = delta::open_or_create(&s).await.unwrap();
    let table = delta::append(table, vec![batch(0..5, 7)], &txn("p/t/0", 5))
        .await
        .unwrap();
    let table = delta::append(table, vec![batch(5..9, 7)], &txn("p/t/0", 9))
        .await
        .unwrap();
    drop(table);
    let reopened = delta::open_or_create(&s).await.unwrap();
    assert_eq!(
        delta::txn_version(&reopened, "p/t/0").await.unwrap(),
        Some(9)
    );
    assert_eq!(rows(&reopened).await, 9);
    let prices: i128 = delta::read_all(&reopened)
        .await
        .unwrap()
        .iter()
        .flat_map(|b| {
            b.column_by_name("price")
                .unwrap()
                .as_primitive::<arrow::datatypes::Decimal128Type>()
                .values()
                .to_vec()
        })
        .sum();
    assert_eq!(prices, (0..9).sum::<i128>() * 1_000_000);
    assert!(reopened.version().unwrap() >= 2);
    // the client bounds finlake adds reached the table's store (and were accepted by it)
    let used: HashMap<String, String> = reopened
        .log_store()
        .config()
        .options()
        .raw()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in delta::CLIENT_DEFAULTS {
        assert_eq!(used.get(k).map(String::as_str), Some(v), "{k}");
    }
}

/// finlake's request timeout and retry bounds apply to remote tables unless the table's own
/// options set them; local paths get none.
#[test]
fn client_defaults_apply_to_remote_tables_and_yield_to_the_spec() {
    let s3 = url::Url::parse("s3://lake/t").unwrap();
    let mine = HashMap::from([("max_retries".to_string(), "7".to_string())]);
    let got = delta::with_client_defaults(&s3, &mine);
    assert_eq!(got["max_retries"], "7");
    assert_eq!(got["timeout"], "30s");
    let local = url::Url::parse("file:///tmp/t").unwrap();
    assert_eq!(delta::with_client_defaults(&local, &mine), mine);
}

#[tokio::test]
async fn storage_errors_are_classed_by_their_cause_not_their_text() {
    // a bucket that does not exist answers 404: fix the URI, a retry will not help (exit 2);
    // before, the text "Error interacting with object store" made every such error transient
    let moto = crate::moto::start();
    let opts = crate::moto::options(moto.1);
    let s = spec("s3://no-such-bucket/market/trades", None, opts);
    let err = delta::open_or_create(&s).await.unwrap_err();
    assert_eq!(
        err.class(),
        finlake_core::ErrorClass::Config,
        "{err} ({:?})",
        err
    );
    assert!(err.to_string().contains("no-such-bucket"), "{err}");
    // a refused connection anywhere in the chain is transient
    let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
    assert_eq!(
        delta::storage_class(&io),
        Some(finlake_core::ErrorClass::Transient)
    );
}

/// Rows land in a data file in the order they were given: readers that need arrival order
/// read files in commit order and rows in file order. delta-rs's default session
/// interleaved 8,192-row chunks of a 100,000-row batch within the file.
#[tokio::test]
async fn a_file_holds_its_rows_in_the_order_they_were_written() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("t").display().to_string();
    let table = delta::open_or_create(&spec(&uri, None, HashMap::new()))
        .await
        .unwrap();
    let input: Vec<RecordBatch> = (0..10)
        .map(|i| batch(i * 10_000..(i + 1) * 10_000, 20_412))
        .collect();
    let table = delta::append(table, input, &CommitExtras::default())
        .await
        .unwrap();
    let files: Vec<String> = table
        .snapshot()
        .unwrap()
        .log_data()
        .into_iter()
        .map(|f| f.path().to_string())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let file = std::fs::File::open(dir.path().join("t").join(&files[0])).unwrap();
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 8192).unwrap();
    let mut ids = Vec::new();
    for b in reader {
        let b = b.unwrap();
        ids.extend(
            b.column_by_name("id")
                .unwrap()
                .as_primitive::<arrow::datatypes::Int64Type>()
                .values()
                .iter()
                .copied(),
        );
    }
    assert_eq!(ids, (0..100_000).collect::<Vec<i64>>());
}

/// A batch with a list column (the rule engine's `_flags`: arrow names the element `item`)
/// appends to a table whose schema came back from Delta (which names it `element`), commit
/// after commit.
#[tokio::test]
async fn a_list_column_appends_whatever_its_element_is_called() {
    use arrow::array::{ListBuilder, StringBuilder};
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "_flags",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false,
        ),
    ]));
    let batch = |ids: std::ops::Range<i64>| {
        let mut flags = ListBuilder::new(StringBuilder::new());
        for i in ids.clone() {
            if i % 2 == 0 {
                flags.values().append_value("late");
            }
            flags.append(true);
        }
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(ids)),
                Arc::new(flags.finish()),
            ],
        )
        .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("t").display().to_string();
    let table_spec = TableSpec {
        uri,
        schema: schema.clone(),
        partition_by: vec![],
        checkpoint_interval: None,
        storage_options: HashMap::new(),
    };
    let mut table = delta::open_or_create(&table_spec).await.unwrap();
    for k in 0..3 {
        table = delta::append(
            table,
            vec![batch(k * 10..(k + 1) * 10)],
            &CommitExtras::default(),
        )
        .await
        .unwrap();
    }
    // reopened: the schema now comes from the log
    let table = delta::open_or_create(&table_spec).await.unwrap();
    let table = delta::append(table, vec![batch(30..40)], &CommitExtras::default())
        .await
        .unwrap();
    assert_eq!(rows(&table).await, 40);
}

/// A commit interval with nothing to land still records its offsets: `append` with no batch
/// (or only empty ones) commits the `txn` alone. delta-rs's write refuses an empty input.
#[tokio::test]
async fn an_append_of_nothing_commits_the_txn_alone() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("t").display().to_string();
    let t = delta::open_or_create(&spec(&uri, Some(2), HashMap::new()))
        .await
        .unwrap();
    let t = delta::append(t, vec![batch(0..10, 1)], &txn("p/t/0", 10))
        .await
        .unwrap();
    let t = delta::append(t, vec![], &txn("p/t/0", 25)).await.unwrap();
    let t = delta::append(t, vec![batch(0..0, 1)], &txn("p/t/0", 30))
        .await
        .unwrap();
    assert_eq!(delta::txn_version(&t, "p/t/0").await.unwrap(), Some(30));
    assert_eq!(t.version(), Some(3));
    let reopened = deltalake::open_table(delta::table_url(&uri).unwrap())
        .await
        .unwrap();
    assert_eq!(
        delta::txn_version(&reopened, "p/t/0").await.unwrap(),
        Some(30)
    );
    assert_eq!(rows(&reopened).await, 10);
}

/// `cleanup_logs` (the maintenance commits no longer do inline) removes the log files a
/// checkpoint covers once they are older than the table's log retention, and the table still
/// opens at its version with its txn.
#[tokio::test]
async fn log_cleanup_removes_what_a_checkpoint_covers() {
    use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("t").display().to_string();
    let kernel: deltalake::kernel::StructType = schema().as_ref().try_into_kernel().unwrap();
    let url = delta::table_url(&uri).unwrap();
    deltalake::DeltaTable::try_from_url(url.clone())
        .await
        .unwrap()
        .create()
        .with_columns(kernel.fields().cloned())
        .with_partition_columns(["trade_date"])
        .with_configuration_property(deltalake::TableProperty::CheckpointInterval, Some("5"))
        .with_configuration_property(
            deltalake::TableProperty::LogRetentionDuration,
            Some("interval 0 seconds"),
        )
        .await
        .unwrap();
    let mut t = delta::open_or_create(&spec(&uri, Some(5), HashMap::new()))
        .await
        .unwrap();
    for i in 0..12 {
        t = delta::append(t, vec![batch(i..i + 1, 1)], &txn("p/t/0", i + 1))
            .await
            .unwrap();
    }
    let log = dir.path().join("t/_delta_log");
    let commits = || {
        std::fs::read_dir(&log)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "json")
            })
            .count()
    };
    assert_eq!(commits(), 13);
    let removed = delta::cleanup_logs(&t).await.unwrap();
    assert!(removed >= 9, "removed {removed}");
    assert!(commits() <= 4, "{} commit files left", commits());
    let reopened = deltalake::open_table(url).await.unwrap();
    assert_eq!(reopened.version(), Some(12));
    assert_eq!(
        delta::txn_version(&reopened, "p/t/0").await.unwrap(),
        Some(12)
    );
    assert_eq!(rows(&reopened).await, 12);
}
