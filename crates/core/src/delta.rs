//! Delta table IO over object_store: open-or-create, append with `txn` actions in the same
//! commit (for exactly-once), read those versions back, overwrite one partition, additive
//! schema evolution, and checkpoints every N commits.
//!
//! URIs: `file://`, a plain path, `memory://` and `s3://` (S3 options such as
//! `AWS_ENDPOINT_URL` come from the destination's `storage_options` or the environment).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{StructType, Transaction};
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableError};
use url::Url;

use crate::error::ErrorClass;

/// Delta IO errors; each names the table URI.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    /// The URI cannot be used.
    #[error("table {uri}: {message}")]
    Uri {
        /// The URI as given.
        uri: String,
        /// Why.
        message: String,
    },
    /// delta-rs failed.
    #[error("table {uri}: {operation}: {source}")]
    Table {
        /// The table URI.
        uri: String,
        /// What finlake was doing.
        operation: &'static str,
        /// The underlying error (boxed: delta-rs errors are large).
        source: Box<DeltaTableError>,
    },
    /// The table would expire the `txn` versions exactly-once depends on.
    #[error("table {uri}: delta.setTransactionRetentionDuration is `{value}`; it would silently expire the txn versions finlake uses for exactly-once. Unset it on this table")]
    TxnRetention {
        /// The table URI.
        uri: String,
        /// The property's value.
        value: String,
    },
    /// A schema change that is not additive.
    #[error("table {uri}: schema change refused: {message} (only new nullable columns are added automatically)")]
    SchemaChange {
        /// The table URI.
        uri: String,
        /// What differs.
        message: String,
    },
}

impl DeltaError {
    /// Whether a commit lost a race for a `txn` app id: another writer committed the same
    /// application transaction since the snapshot this commit was built on (delta-rs's
    /// `ConcurrentTransaction` conflict). For the ingestor: another process owns that
    /// partition now.
    pub fn is_concurrent_transaction(&self) -> bool {
        use deltalake::kernel::transaction::{CommitConflictError, TransactionError};
        match self {
            DeltaError::Table { source, .. } => matches!(
                source.as_ref(),
                DeltaTableError::Transaction {
                    source: TransactionError::CommitConflict(
                        CommitConflictError::ConcurrentTransaction
                    )
                }
            ),
            _ => false,
        }
    }

    /// Whether a commit lost any race to a concurrent writer (delta-rs's conflict checker
    /// refused it): the operation can be run again on the new snapshot.
    pub fn is_commit_conflict(&self) -> bool {
        use deltalake::kernel::transaction::TransactionError;
        match self {
            DeltaError::Table { source, .. } => matches!(
                source.as_ref(),
                DeltaTableError::VersionAlreadyExists(_)
                    | DeltaTableError::Transaction {
                        source: TransactionError::CommitConflict(_)
                            | TransactionError::MaxCommitAttempts(_)
                    }
            ),
            _ => false,
        }
    }

    /// Transient for storage failures, config for bad URIs and tables, internal otherwise.
    pub fn class(&self) -> ErrorClass {
        match self {
            DeltaError::Uri { .. }
            | DeltaError::TxnRetention { .. }
            | DeltaError::SchemaChange { .. } => ErrorClass::Config,
            DeltaError::Table { source, .. } => match source.as_ref() {
                DeltaTableError::NotATable(_) | DeltaTableError::InvalidTableLocation(_) => {
                    ErrorClass::Config
                }
                other => storage_class(other).unwrap_or(ErrorClass::Internal),
            },
        }
    }
}

pub(crate) type Result<T> = std::result::Result<T, DeltaError>;

/// The class of a storage failure found anywhere in an error's `source()` chain, or `None`
/// when the chain holds no storage error.
///
/// delta-kernel and DataFusion wrap object_store's errors in their own, so the chain is walked
/// and each link downcast (the kernel's `ObjectStore` variant has no `source()`, so it is
/// opened by name); the first link that says something decides:
/// - `object_store::Error::NotFound`, `PermissionDenied`, `Unauthenticated` (HTTP 404, 403,
///   401), a bad path or configuration key: [`ErrorClass::Config`]: fix the URI or the
///   credentials, a retry will not help;
/// - an HTTP error while connecting, sending, or waiting (`HttpErrorKind::Connect`,
///   `Request`, `Timeout`, `Interrupted`) and an I/O error such as a refused or reset
///   connection: [`ErrorClass::Transient`];
/// - a local I/O error that is not found or permission denied: [`ErrorClass::Config`];
/// - a local file shorter than the log says (`UnexpectedEof`): [`ErrorClass::Data`], the
///   lake is damaged;
/// - a request that got an HTTP status: 4xx (but 408 and 429) config, 5xx, 408, 429
///   transient. object_store keeps that status in a crate-private type for some requests
///   (an S3 list of a missing bucket is `Generic`), so there it is read from the innermost
///   link's own rendering of the status code, `Server returned non-2xx status code: 404`.
pub fn storage_class(err: &(dyn std::error::Error + 'static)) -> Option<ErrorClass> {
    use object_store::client::{HttpError, HttpErrorKind};
    use std::io::ErrorKind;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut innermost = err;
    while let Some(e) = cur {
        innermost = e;
        if let Some(k) = e.downcast_ref::<buoyant_kernel::Error>() {
            match k {
                buoyant_kernel::Error::ObjectStore(inner) => {
                    cur = Some(inner);
                    continue;
                }
                buoyant_kernel::Error::FileNotFound(_) => return Some(ErrorClass::Config),
                _ => {}
            }
        }
        if let Some(os) = e.downcast_ref::<object_store::Error>() {
            match os {
                object_store::Error::NotFound { .. }
                | object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
                | object_store::Error::InvalidPath { .. }
                | object_store::Error::UnknownConfigurationKey { .. } => {
                    return Some(ErrorClass::Config)
                }
                // Generic and the rest: the cause is further down the chain.
                _ => {}
            }
        } else if let Some(http) = e.downcast_ref::<HttpError>() {
            return Some(match http.kind() {
                HttpErrorKind::Connect
                | HttpErrorKind::Request
                | HttpErrorKind::Timeout
                | HttpErrorKind::Interrupted => ErrorClass::Transient,
                _ => ErrorClass::Internal,
            });
        } else if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                ErrorKind::NotFound | ErrorKind::PermissionDenied | ErrorKind::InvalidInput => {
                    return Some(ErrorClass::Config)
                }
                // a file shorter than the log says: the lake is damaged, not the run
                ErrorKind::UnexpectedEof => return Some(ErrorClass::Data),
                ErrorKind::ConnectionRefused
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::NotConnected
                | ErrorKind::TimedOut
                | ErrorKind::BrokenPipe
                | ErrorKind::Interrupted
                | ErrorKind::HostUnreachable
                | ErrorKind::NetworkUnreachable
                | ErrorKind::NetworkDown => return Some(ErrorClass::Transient),
                _ => {}
            }
        }
        cur = e.source();
    }
    if let Some(status) = http_status(&innermost.to_string()) {
        return Some(match status {
            408 | 429 => ErrorClass::Transient,
            400..=499 => ErrorClass::Config,
            _ => ErrorClass::Transient,
        });
    }
    None
}

/// The status in object_store's `Server returned non-2xx status code: 404 Not Found: ...`.
fn http_status(text: &str) -> Option<u16> {
    let rest = text.split("non-2xx status code: ").nth(1)?;
    rest.get(..3)?.parse().ok()
}

/// What a table should look like, and how to reach it.
#[derive(Debug, Clone)]
pub struct TableSpec {
    /// URI or path.
    pub uri: String,
    /// Schema to create the table with.
    pub schema: SchemaRef,
    /// Partition columns.
    pub partition_by: Vec<String>,
    /// Checkpoint every N commits (Delta's default is 100).
    pub checkpoint_interval: Option<u32>,
    /// Object store options.
    pub storage_options: HashMap<String, String>,
}

/// Turns a URI or plain path into a URL; plain paths are made absolute and created.
pub fn table_url(uri: &str) -> Result<Url> {
    crate::localstore::register();
    let err = |message: String| DeltaError::Uri {
        uri: uri.to_string(),
        message,
    };
    if uri.contains("://") {
        let url = Url::parse(uri).map_err(|e| err(e.to_string()))?;
        if url.scheme() == "file" {
            std::fs::create_dir_all(url.path()).map_err(|e| err(e.to_string()))?;
        }
        return Ok(url);
    }
    std::fs::create_dir_all(uri).map_err(|e| err(e.to_string()))?;
    let abs = std::fs::canonicalize(uri).map_err(|e| err(e.to_string()))?;
    Url::from_directory_path(&abs).map_err(|_| err("not an absolute path".into()))
}

/// Wraps a delta-rs error with the table's URI and what finlake was doing:
/// `.map_err(delta::table_err(uri, "restore"))`.
pub fn table_err<'a>(
    uri: &'a str,
    operation: &'static str,
) -> impl FnOnce(DeltaTableError) -> DeltaError + 'a {
    move |source| DeltaError::Table {
        uri: uri.to_string(),
        operation,
        source: Box::new(source),
    }
}

/// Opens the table if it exists (`None` when there is no table at the URI yet): for readers
/// that must not create one.
pub async fn open_existing(
    uri: &str,
    storage_options: &HashMap<String, String>,
) -> Result<Option<DeltaTable>> {
    let url = table_url(uri)?;
    if url.scheme() == "s3" || url.scheme() == "s3a" {
        deltalake::aws::register_handlers(None);
    }
    if url.scheme() == "file" && url.to_file_path().is_ok_and(|p| !p.exists()) {
        return Ok(None);
    }
    let options = with_client_defaults(&url, storage_options);
    let table = DeltaTable::try_from_url_with_storage_options(url, options)
        .await
        .map_err(table_err(uri, "open"))?;
    Ok(table.version().is_some().then_some(table))
}

/// Opens the table, creating it with the spec's schema and partitioning when absent.
pub async fn open_or_create(spec: &TableSpec) -> Result<DeltaTable> {
    let url = table_url(&spec.uri)?;
    if url.scheme() == "s3" || url.scheme() == "s3a" {
        deltalake::aws::register_handlers(None);
    }
    let options = with_client_defaults(&url, &spec.storage_options);
    let mut table = deltalake::DeltaTableBuilder::from_url(url)
        .map_err(table_err(&spec.uri, "open"))?
        .with_storage_options(options)
        .build()
        .map_err(table_err(&spec.uri, "open"))?;
    // load only a table that is there: loading an empty location makes delta-kernel log an
    // ERROR ("No files in log segment") before delta-rs reports "not a table", on every create
    let exists = deltalake::logstore::LogStore::is_delta_table_location(table.log_store().as_ref())
        .await
        .map_err(table_err(&spec.uri, "open"))?;
    if exists {
        table.load().await.map_err(table_err(&spec.uri, "open"))?;
    }
    let table = if table.version().is_none() {
        let schema: StructType =
            spec.schema
                .as_ref()
                .try_into_kernel()
                .map_err(|e| DeltaError::Uri {
                    uri: spec.uri.clone(),
                    message: format!("schema cannot be stored in Delta: {e}"),
                })?;
        let mut create = table
            .create()
            .with_columns(schema.fields().cloned())
            .with_partition_columns(spec.partition_by.clone());
        if let Some(n) = spec.checkpoint_interval {
            create = create.with_configuration_property(
                deltalake::TableProperty::CheckpointInterval,
                Some(n.to_string()),
            );
        }
        // Min/max statistics mean nothing for raw bytes (quarantine's `raw_payload`): name
        // the columns that get them, so the writer neither computes nor warns about the rest.
        if let Some(columns) = stats_columns(&spec.schema, &spec.partition_by) {
            create = create.with_configuration_property(
                deltalake::TableProperty::DataSkippingStatsColumns,
                Some(columns),
            );
        }
        create.await.map_err(table_err(&spec.uri, "create"))?
    } else {
        table
    };
    check_txn_retention(&table, &spec.uri)?;
    Ok(table)
}

/// finlake's own bounds on every object-store request of a remote table, unless the table's
/// storage options set them: a request times out after 30 s (5 s to connect), and a failed
/// one is retried 3 times within 30 s. object_store's defaults (10 retries over up to 3
/// minutes, no request timeout) would hold a stream's commit, or a quality check, for minutes
/// before anyone hears of it; the caller's own retry (the ingestor backs off and resyncs) and
/// exit code 75 say more. Local paths have no client and get none.
pub fn with_client_defaults(
    url: &Url,
    options: &HashMap<String, String>,
) -> HashMap<String, String> {
    crate::localstore::register();
    let mut out = options.clone();
    if url.scheme() != "file" && url.scheme() != "memory" {
        for (k, v) in CLIENT_DEFAULTS {
            out.entry(k.to_string()).or_insert_with(|| v.to_string());
        }
    }
    out
}

/// See [`with_client_defaults`].
pub const CLIENT_DEFAULTS: [(&str, &str); 4] = [
    ("timeout", "30s"),
    ("connect_timeout", "5s"),
    ("max_retries", "3"),
    ("retry_timeout", "30s"),
];

/// The columns that get data-skipping statistics when a schema has binary columns: every
/// other top-level column but the partition columns (which have none). `None` when no column
/// is binary (Delta's default then applies).
fn stats_columns(schema: &Schema, partition_by: &[String]) -> Option<String> {
    use arrow::datatypes::DataType;
    let binary = |dt: &DataType| {
        matches!(
            dt,
            DataType::Binary
                | DataType::LargeBinary
                | DataType::BinaryView
                | DataType::FixedSizeBinary(_)
        )
    };
    if !schema.fields().iter().any(|f| binary(f.data_type())) {
        return None;
    }
    let names: Vec<&str> = schema
        .fields()
        .iter()
        .filter(|f| !binary(f.data_type()) && !partition_by.contains(f.name()))
        .map(|f| f.name().as_str())
        .collect();
    Some(names.join(","))
}

/// Refuses a table whose transaction retention would expire exactly-once versions.
pub fn check_txn_retention(table: &DeltaTable, uri: &str) -> Result<()> {
    let snapshot = table.snapshot().map_err(table_err(uri, "read snapshot"))?;
    if let Some(value) = snapshot.table_config().set_transaction_retention_duration {
        return Err(DeltaError::TxnRetention {
            uri: uri.to_string(),
            value: format!("{value:?}"),
        });
    }
    Ok(())
}

/// The latest `txn` version recorded for `app_id`, if any.
pub async fn txn_version(table: &DeltaTable, app_id: &str) -> Result<Option<i64>> {
    let uri = table.table_url().to_string();
    let snapshot = table.snapshot().map_err(table_err(&uri, "read snapshot"))?;
    snapshot
        .transaction_version(table.log_store().as_ref(), app_id)
        .await
        .map_err(table_err(&uri, "read txn version"))
}

/// Compares a batch schema with the table's; `Ok(true)` when the batch adds nullable columns.
fn additive_change(
    table_schema: &Schema,
    batch_schema: &Schema,
) -> std::result::Result<bool, String> {
    let mut problems = Vec::new();
    for f in table_schema.fields() {
        match batch_schema.field_with_name(f.name()) {
            // nested field names and nullability differ by writer: arrow names a list element
            // `item`, the Delta schema reads back as `element`, and another writer may have
            // declared the elements non-null; [`conform`] makes the batch the table's shape
            Ok(b) if same_shape(b.data_type(), f.data_type()) => {}
            Ok(b) => problems.push(format!(
                "column `{}` is {} in the table and {} in the batch",
                f.name(),
                f.data_type(),
                b.data_type()
            )),
            Err(_) => problems.push(format!("column `{}` is missing from the batch", f.name())),
        }
    }
    let mut added = false;
    for b in batch_schema.fields() {
        if table_schema.field_with_name(b.name()).is_err() {
            if b.is_nullable() {
                added = true;
            } else {
                problems.push(format!("new column `{}` must be nullable", b.name()));
            }
        }
    }
    if problems.is_empty() {
        Ok(added)
    } else {
        Err(problems.join("; "))
    }
}

/// Whether two types hold the same values, ignoring nested fields' names (a list's or a map's
/// entries) and nullability. Struct fields keep their names: they are columns.
fn same_shape(a: &DataType, b: &DataType) -> bool {
    use DataType::*;
    match (a, b) {
        (List(x), List(y)) | (LargeList(x), LargeList(y)) | (Map(x, _), Map(y, _)) => {
            same_shape(x.data_type(), y.data_type())
        }
        (FixedSizeList(x, n), FixedSizeList(y, m)) => {
            n == m && same_shape(x.data_type(), y.data_type())
        }
        (Struct(x), Struct(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|(x, y)| x.name() == y.name() && same_shape(x.data_type(), y.data_type()))
        }
        _ => a == b,
    }
}

/// `batch` in the table's own schema: each column the table has takes the table's field (its
/// nested names and nullability, cast where they differ), so a batch built by the rule engine
/// appends to a table another writer created. A NULL where the table declares none is an
/// error naming the column. Columns the table lacks (an additive change) stay as they are.
fn conform(table: &Schema, batch: &RecordBatch) -> std::result::Result<RecordBatch, String> {
    let schema = batch.schema();
    if schema.fields().iter().all(|b| {
        table.field_with_name(b.name()).map_or(true, |t| {
            t.data_type() == b.data_type() && t.is_nullable() == b.is_nullable()
        })
    }) {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (b, col) in schema.fields().iter().zip(batch.columns()) {
        let Ok(t) = table.field_with_name(b.name()) else {
            fields.push(b.as_ref().clone());
            columns.push(col.clone());
            continue;
        };
        if !t.is_nullable() && col.null_count() > 0 {
            return Err(format!(
                "column `{}` is NOT NULL in the table but {} rows are NULL",
                b.name(),
                col.null_count()
            ));
        }
        let col = if col.data_type() == t.data_type() {
            col.clone()
        } else {
            arrow::compute::cast(col, t.data_type())
                .map_err(|e| format!("column `{}`: {e}", b.name()))?
        };
        fields.push(t.clone());
        columns.push(col);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())
}

/// A commit's extras: `txn` actions and commit-info metadata.
#[derive(Debug, Clone, Default)]
pub struct CommitExtras {
    /// (app id, version) pairs written as `txn` actions in the same commit.
    pub txns: Vec<(String, i64)>,
    /// Key-values added to the commit info (`job`, `run_id`, `correlation_id`).
    pub metadata: Vec<(String, serde_json::Value)>,
    /// The writer checkpoints on a task of its own ([`checkpoint_and_reopen`]): the commit
    /// writes none, even on a `checkpointInterval` boundary. Off, a commit on a boundary
    /// writes the checkpoint inline (delta-rs's post-commit hook) and the table is reopened
    /// from it.
    pub deferred_checkpoint: bool,
}

impl CommitExtras {
    /// The commit's properties. Expired-log cleanup is off: delta-rs would otherwise list
    /// `_delta_log` after every commit (its default follows `delta.enableExpiredLogCleanup`),
    /// a cost that grows with the table's history; [`cleanup_logs`] does it on its own
    /// cadence. Checkpoints still come every `checkpoint_interval` commits and bound replay.
    fn properties(&self) -> CommitProperties {
        CommitProperties::default()
            .with_cleanup_expired_logs(Some(false))
            .with_create_checkpoint(!self.deferred_checkpoint)
            .with_application_transactions(
                self.txns
                    .iter()
                    .map(|(app, v)| Transaction::new(app, *v))
                    .collect(),
            )
            .with_metadata(self.metadata.clone())
    }
}

/// Removes log files older than the table's log retention that a checkpoint covers: the
/// maintenance that commits no longer do inline. Returns how many files were removed.
pub async fn cleanup_logs(table: &DeltaTable) -> Result<usize> {
    use deltalake::table::config::TablePropertiesExt;
    let uri = table.table_url().to_string();
    let snapshot = table.snapshot().map_err(table_err(&uri, "read snapshot"))?;
    let version = snapshot.version();
    let cutoff = chrono::Utc::now().timestamp_millis()
        - snapshot.table_config().log_retention_duration().as_millis() as i64;
    deltalake::protocol::checkpoints::cleanup_expired_logs_for(
        version,
        table.log_store().as_ref(),
        cutoff,
        None,
    )
    .await
    .map_err(table_err(&uri, "clean up expired logs"))
}

/// The table's schema as Arrow.
pub fn arrow_schema(table: &DeltaTable, uri: &str) -> Result<Schema> {
    use deltalake::kernel::engine::arrow_conversion::TryIntoArrow;
    let snapshot = table.snapshot().map_err(table_err(uri, "read snapshot"))?;
    let schema = snapshot.schema();
    schema
        .as_ref()
        .try_into_arrow()
        .map_err(|e: arrow::error::ArrowError| DeltaError::Uri {
            uri: uri.to_string(),
            message: e.to_string(),
        })
}

/// The session delta-rs plans a write with: one partition, so the rows land in the files in
/// the order they were given. delta-rs's default session repartitions the input over the
/// cores and the writer then interleaves 8,192-row chunks from the partitions within a file
/// (seen on a 2-core machine: a file's row 24,576 was offset 33,057, row 32,768 offset
/// 24,794). Readers that need arrival order (the quality scan, dedup seeding) read the files
/// in commit order and the rows in file order; they verify it, but they should not have to
/// sort. The input of a write is in memory already, so the partitions bought no parallelism.
fn in_order_session() -> Arc<dyn deltalake::datafusion::catalog::Session> {
    static STATE: std::sync::OnceLock<deltalake::datafusion::execution::SessionState> =
        std::sync::OnceLock::new();
    let state = STATE.get_or_init(|| {
        let overrides = HashMap::from([(
            "datafusion.execution.target_partitions".to_string(),
            "1".to_string(),
        )]);
        #[allow(clippy::expect_used)]
        deltalake::delta_datafusion::DeltaSessionContext::new_with_session_overrides(&overrides)
            .expect("target_partitions is a valid DataFusion option")
            .state()
    });
    Arc::new(state.clone())
}

/// Appends batches (possibly none) with `extras` in one commit; returns the updated table.
/// A batch that adds nullable columns evolves the schema; any other difference is refused.
pub async fn append(
    table: DeltaTable,
    batches: Vec<RecordBatch>,
    extras: &CommitExtras,
) -> Result<DeltaTable> {
    let uri = table.table_url().to_string();
    let batches: Vec<RecordBatch> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
    if batches.is_empty() {
        return commit_without_data(table, extras, &uri).await;
    }
    let mut mode = None;
    let mut batches = batches;
    if let Some(first) = batches.first() {
        let current = arrow_schema(&table, &uri)?;
        match additive_change(&current, first.schema().as_ref()) {
            Ok(true) => mode = Some(SchemaMode::Merge),
            Ok(false) => {}
            Err(message) => return Err(DeltaError::SchemaChange { uri, message }),
        }
        batches = batches
            .iter()
            .map(|b| conform(&current, b))
            .collect::<std::result::Result<_, _>>()
            .map_err(|message| DeltaError::SchemaChange {
                uri: uri.clone(),
                message,
            })?;
    }
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut write = table
        .write(batches)
        .with_session_state(in_order_session())
        .with_save_mode(SaveMode::Append)
        .with_commit_properties(extras.properties());
    if let Some(m) = mode {
        write = write.with_schema_mode(m);
    }
    let table = write.await.map_err(table_err(&uri, "append"))?;
    crate::telemetry::Metrics::global()
        .rows_written
        .with_label_values(&[uri.as_str()])
        .inc_by(rows as u64);
    if extras.deferred_checkpoint {
        return Ok(table);
    }
    reopen_at_checkpoint(table, &uri).await
}

/// A commit with no data files: only the `txn` actions and the commit info. delta-rs's write
/// refuses an empty input ("No data source supplied"), but a stream's commit interval can
/// hold nothing to land (every message rejected or a duplicate) and its offsets must still
/// be recorded.
async fn commit_without_data(
    table: DeltaTable,
    extras: &CommitExtras,
    uri: &str,
) -> Result<DeltaTable> {
    use deltalake::kernel::transaction::CommitBuilder;
    use deltalake::protocol::DeltaOperation;
    let snapshot = table.snapshot().map_err(table_err(uri, "read snapshot"))?;
    let commit = CommitBuilder::from(extras.properties())
        .with_actions(Vec::new())
        .build(
            Some(snapshot),
            table.log_store(),
            DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by: None,
                predicate: None,
            },
        )
        .await
        .map_err(table_err(uri, "commit"))?;
    let mut table = table;
    table
        .update_incremental(Some(commit.version()))
        .await
        .map_err(table_err(uri, "load the new version"))?;
    if extras.deferred_checkpoint {
        return Ok(table);
    }
    reopen_at_checkpoint(table, uri).await
}

/// After a commit that wrote a checkpoint, the table opened afresh: a new log store, loaded
/// from that checkpoint.
///
/// A long-lived `DeltaTable` gets slower to commit to with every commit: on the demo (2
/// cores, release, 100-row commits, checkpoint every 10) 34 ms a commit over the first 100
/// and 472 ms over commits 900 to 1,000, with the profile's shape unchanged (allocation and
/// the kernel's schema work) and a fresh process committing to the same table cheaply.
/// Loading a new `DeltaTable` on the *same* log store from the checkpoint did not help;
/// opening by URL (a new log store, object store and engine) does, so the growth is state
/// the log store keeps. Reopening every `delta.checkpointInterval` commits bounds it at the
/// price of reading one checkpoint: 16 ms then 45 ms over the same 1,000 commits, and the
/// remaining growth follows the table's file count (delta-rs re-materialises the file list
/// on every commit; compacting the table brings a commit back down), which compaction bounds.
async fn reopen_at_checkpoint(table: DeltaTable, uri: &str) -> Result<DeltaTable> {
    use deltalake::table::config::TablePropertiesExt;
    let (Some(version), Ok(snapshot)) = (table.version(), table.snapshot()) else {
        return Ok(table);
    };
    let interval = snapshot.table_config().checkpoint_interval().get();
    // delta-rs checkpoints after version v when v + 1 is a multiple of the interval
    if !(version + 1).is_multiple_of(interval) {
        return Ok(table);
    }
    reopen(&table, uri).await
}

/// The table's `delta.checkpointInterval` (delta-rs's default, 100, when unset).
pub fn checkpoint_interval(table: &DeltaTable) -> u64 {
    use deltalake::table::config::TablePropertiesExt;
    table
        .snapshot()
        .map(|s| s.table_config().checkpoint_interval().get())
        .unwrap_or(100)
}

/// Writes a checkpoint at the table's loaded version and returns the table opened afresh
/// from it (a new log store: see [`reopen_at_checkpoint`] for why). For a writer whose
/// commits defer their checkpoints ([`CommitExtras::deferred_checkpoint`]) and that runs
/// this off its commit path; the table it returns is at the checkpoint's version or later.
pub async fn checkpoint_and_reopen(table: &DeltaTable) -> Result<DeltaTable> {
    let uri = table.table_url().to_string();
    deltalake::protocol::checkpoints::create_checkpoint(table, None)
        .await
        .map_err(table_err(&uri, "checkpoint"))?;
    reopen(table, &uri).await
}

/// The table opened again by URL with the same storage options: a new log store, object
/// store and engine, loaded from the last checkpoint.
async fn reopen(table: &DeltaTable, uri: &str) -> Result<DeltaTable> {
    let log_store = table.log_store();
    let options: HashMap<String, String> = log_store
        .config()
        .options()
        .raw()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    DeltaTable::try_from_url_with_storage_options(table.table_url().clone(), options)
        .await
        .map_err(table_err(uri, "reopen at checkpoint"))
}

/// Replaces the rows of one partition, `column = value` (a typed value, never SQL text),
/// with `batches`, in one commit: a rerun of the same job and date gives the same table. With
/// no rows the partition's rows are deleted (the day had nothing), still in one commit.
pub async fn replace_partition(
    table: DeltaTable,
    batches: Vec<RecordBatch>,
    column: &str,
    value: deltalake::datafusion::scalar::ScalarValue,
    extras: &CommitExtras,
) -> Result<DeltaTable> {
    use deltalake::datafusion::prelude::{col, lit};
    let uri = table.table_url().to_string();
    let predicate = col(column).eq(lit(value));
    let batches: Vec<RecordBatch> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
    if batches.is_empty() {
        let (table, _) = table
            .delete()
            .with_predicate(predicate)
            .with_session_state(in_order_session())
            .with_commit_properties(extras.properties())
            .await
            .map_err(table_err(&uri, "replace partition"))?;
        return Ok(table);
    }
    table
        .write(batches)
        .with_session_state(in_order_session())
        .with_save_mode(SaveMode::Overwrite)
        .with_replace_where(predicate)
        .with_commit_properties(extras.properties())
        .await
        .map_err(table_err(&uri, "replace partition"))
}

/// Upserts `batches` into `table` on the key columns, in one commit: a row whose keys match
/// a row of the table replaces it column by column, any other row is inserted. The keys must
/// be unique within `batches` (MERGE refuses a target row matched twice). Returns the table
/// and (rows inserted, rows updated).
pub async fn merge(
    table: DeltaTable,
    batches: Vec<RecordBatch>,
    keys: &[String],
    extras: &CommitExtras,
) -> Result<(DeltaTable, usize, usize)> {
    use deltalake::datafusion::prelude::{col, Expr, SessionContext};
    let uri = table.table_url().to_string();
    let generic = |e: String| DeltaError::Table {
        uri: uri.clone(),
        operation: "merge",
        source: Box::new(DeltaTableError::Generic(e)),
    };
    let Some(first) = batches.first() else {
        return Ok((table, 0, 0));
    };
    let columns: Vec<String> = first
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let source = SessionContext::new()
        .read_batches(batches)
        .map_err(|e| generic(e.to_string()))?;
    let on = |side: &str, c: &str| col(deltalake::datafusion::common::Column::new(Some(side), c));
    let predicate = keys
        .iter()
        .map(|k| on("target", k).eq(on("source", k)))
        .reduce(Expr::and)
        .ok_or_else(|| generic("merge needs at least one key column".into()))?;
    let (table, metrics) = table
        .merge(source, predicate)
        .with_source_alias("source")
        .with_target_alias("target")
        .with_session_state(in_order_session())
        .with_commit_properties(extras.properties())
        .when_matched_update(|mut u| {
            for c in &columns {
                u = u.update(c.as_str(), on("source", c));
            }
            u
        })
        .map_err(table_err(&uri, "merge"))?
        .when_not_matched_insert(|mut i| {
            for c in &columns {
                i = i.set(c.as_str(), on("source", c));
            }
            i
        })
        .map_err(table_err(&uri, "merge"))?
        .await
        .map_err(table_err(&uri, "merge"))?;
    Ok((
        table,
        metrics.num_target_rows_inserted,
        metrics.num_target_rows_updated,
    ))
}

/// Replaces a whole (small) table's contents in one commit: reference data rewritten whole.
pub async fn overwrite(
    table: DeltaTable,
    batches: Vec<RecordBatch>,
    extras: &CommitExtras,
) -> Result<DeltaTable> {
    let uri = table.table_url().to_string();
    table
        .write(batches)
        .with_session_state(in_order_session())
        .with_save_mode(SaveMode::Overwrite)
        .with_commit_properties(extras.properties())
        .await
        .map_err(table_err(&uri, "overwrite"))
}

/// A DataFusion session with the table registered as `name`, for SQL over it.
pub async fn sql_context(
    table: &DeltaTable,
    name: &str,
) -> Result<deltalake::datafusion::prelude::SessionContext> {
    sql_context_in(
        deltalake::datafusion::prelude::SessionContext::new(),
        table,
        name,
    )
    .await
}

/// [`sql_context`] in a session of the caller's (a memory pool that spills, say).
pub async fn sql_context_in(
    ctx: deltalake::datafusion::prelude::SessionContext,
    table: &DeltaTable,
    name: &str,
) -> Result<deltalake::datafusion::prelude::SessionContext> {
    let uri = table.table_url().to_string();
    let generic = |e: String| DeltaError::Table {
        uri: uri.clone(),
        operation: "scan",
        source: Box::new(DeltaTableError::Generic(e)),
    };
    table
        .update_datafusion_session(&ctx.state())
        .map_err(table_err(&uri, "scan"))?;
    let provider = table
        .table_provider()
        .await
        .map_err(|e| generic(e.to_string()))?;
    ctx.register_table(name, provider)
        .map_err(|e| generic(e.to_string()))?;
    Ok(ctx)
}

/// A text column of a batch read back from a table, as `Utf8`: DataFusion's scans may give
/// `Utf8View` (or a dictionary), which `as_string::<i32>` would panic on. `None` when the
/// batch has no such column or it is not text.
pub fn string_column(b: &RecordBatch, name: &str) -> Option<arrow::array::StringArray> {
    use arrow::array::AsArray;
    let c = b.column_by_name(name)?;
    let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8).ok()?;
    c.as_string_opt::<i32>().cloned()
}

/// Reads a whole table into batches (for tests, checks and small tables).
pub async fn read_all(table: &DeltaTable) -> Result<Vec<RecordBatch>> {
    let uri = table.table_url().to_string();
    let generic = |e: String| DeltaError::Table {
        uri: uri.clone(),
        operation: "scan",
        source: Box::new(DeltaTableError::Generic(e)),
    };
    let ctx = sql_context(table, "t").await?;
    let df = ctx.table("t").await.map_err(|e| generic(e.to_string()))?;
    df.collect().await.map_err(|e| generic(e.to_string()))
}

/// A data file of a table read straight from its object store, for readers that want the
/// file's own row order and a column projection without a query plan (the quality scan reads
/// a partition's files in commit order this way). parquet's `ParquetObjectReader` is
/// deprecated in favour of implementing [`AsyncFileReader`] (arrow-rs #10308); this is that
/// implementation, with the file size known from the log so the footer is one ranged read.
///
/// [`AsyncFileReader`]: parquet::arrow::async_reader::AsyncFileReader
#[derive(Clone, Debug)]
pub struct DataFileReader {
    store: deltalake::logstore::ObjectStoreRef,
    path: object_store::path::Path,
    size: u64,
    /// The file on the local filesystem, for a `file://` table: mapped, not copied (see
    /// `read_local`). object_store's local reads zero each range, then copy into it.
    local: Option<std::path::PathBuf>,
}

impl DataFileReader {
    /// `path` in `store` (the table's store: paths relative to the table root), `size` bytes.
    pub fn new(
        store: deltalake::logstore::ObjectStoreRef,
        path: object_store::path::Path,
        size: u64,
    ) -> Self {
        DataFileReader {
            store,
            path,
            size,
            local: None,
        }
    }

    /// `path` in `table` (relative to its root), `size` bytes: read from the filesystem
    /// directly when the table is local, else from its object store.
    pub fn in_table(table: &DeltaTable, path: object_store::path::Path, size: u64) -> Self {
        let mut root = table.table_url().clone();
        if !root.path().ends_with('/') {
            root.set_path(&format!("{}/", root.path()));
        }
        let local = (root.scheme() == "file")
            .then(|| root.join(path.as_ref()).ok()?.to_file_path().ok())
            .flatten();
        DataFileReader {
            local,
            ..DataFileReader::new(table.object_store(), path, size)
        }
    }
}

fn parquet_io(e: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

/// `ranges` of a local file, without a copy: each is mapped from the page cache (populated up
/// front, so a cold file is read here, on the blocking pool, not by whichever task decodes
/// it); a mapping lives as long as the last slice of it. `pread` copied every byte out of the
/// page cache into fresh pages: the copy and the zeroing of those pages were 8 % of
/// `finlake dq`'s CPU on a 10M-row day.
fn read_local(
    path: std::path::PathBuf,
    ranges: Vec<std::ops::Range<u64>>,
) -> parquet::errors::Result<Vec<bytes::Bytes>> {
    // as object_store says it, so the error is classified the same (not found: exit 2)
    let failed = |e: std::io::Error| {
        parquet_io(match e.kind() {
            std::io::ErrorKind::NotFound => object_store::Error::NotFound {
                path: path.display().to_string(),
                source: Box::new(e),
            },
            // the kind kept: storage_class tells a short file (data) from a denied one
            _ => object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(std::io::Error::new(
                    e.kind(),
                    format!("data file {}: {e}", path.display()),
                )),
            },
        })
    };
    let file = std::fs::File::open(&path).map_err(failed)?;
    let size = file.metadata().map_err(failed)?.len();
    if let Some(r) = ranges.iter().find(|r| r.end > size || r.start > r.end) {
        return Err(failed(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("bytes {}..{} past its end ({size} bytes)", r.start, r.end),
        )));
    }
    // each range on its own: a span over them all would also read the columns between them
    // from disk when the file is not cached
    ranges
        .iter()
        .map(|r| match r.end - r.start {
            0 => Ok(bytes::Bytes::new()),
            len => map_span(&file, r.start, len).map_err(failed),
        })
        .collect()
}

/// `len` bytes of `file` from `offset`, mapped read-only and populated.
#[allow(unsafe_code)]
fn map_span(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<bytes::Bytes> {
    let len = usize::try_from(len).map_err(std::io::Error::other)?;
    // SAFETY: a mapping is undefined behaviour if the file changes under it (a truncation
    // raises SIGBUS). The file is a Delta data file: written once under a unique name, never
    // modified in place; vacuum and cleanup unlink it, which leaves a mapping intact. The
    // length was checked against the file's size above.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(offset)
            .len(len)
            .populate()
            .map(file)?
    };
    Ok(bytes::Bytes::from_owner(map))
}

impl parquet::arrow::async_reader::AsyncFileReader for DataFileReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
        use futures::FutureExt;
        async move {
            let mut all = self.get_byte_ranges(vec![range]).await?;
            all.pop().ok_or_else(|| {
                parquet::errors::ParquetError::General("no bytes for the range".into())
            })
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Vec<bytes::Bytes>>> {
        use futures::FutureExt;
        async move {
            if let Some(path) = self.local.clone() {
                return tokio::task::spawn_blocking(move || read_local(path, ranges))
                    .await
                    .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))?;
            }
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(parquet_io)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a parquet::arrow::arrow_reader::ArrowReaderOptions>,
    ) -> futures::future::BoxFuture<
        'a,
        parquet::errors::Result<Arc<parquet::file::metadata::ParquetMetaData>>,
    > {
        use futures::FutureExt;
        async move {
            let size = self.size;
            let metadata = parquet::file::metadata::ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// Whether the table maps logical column names to other physical names in its files
/// (`delta.columnMapping.mode` `name` or `id`): a reader that opens data files itself must
/// then go through the log's mapping.
pub fn maps_columns(table: &DeltaTable) -> std::result::Result<bool, DeltaTableError> {
    use buoyant_kernel::table_features::ColumnMappingMode;
    Ok(table
        .snapshot()?
        .table_config()
        .column_mapping_mode
        .is_some_and(|m| m != ColumnMappingMode::None))
}

/// A timestamp column's bound (`minValues` or `maxValues`) in a data file's statistics (the
/// `stats` JSON of its add action), in microseconds; Delta writes it to the millisecond.
pub fn stats_timestamp(stats: &str, bound: &str, column: &str) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_str(stats).ok()?;
    let ts = v.get(bound)?.get(column)?.as_str()?;
    Some(
        chrono::DateTime::parse_from_rfc3339(ts)
            .ok()?
            .timestamp_micros(),
    )
}

/// The largest value of a timestamp column over the table's live files, in microseconds,
/// from the log's file statistics (no data file is read); `None` when a file has no
/// statistics for it. Delta keeps timestamp statistics to the millisecond, truncated: the
/// true maximum is below the answer plus one millisecond.
pub fn max_timestamp_from_stats(
    table: &DeltaTable,
    column: &str,
) -> std::result::Result<Option<i64>, DeltaTableError> {
    let mut max: Option<i64> = None;
    for f in table.snapshot()?.log_data().into_iter() {
        let micros = f
            .stats()
            .as_deref()
            .and_then(|s| stats_timestamp(s, "maxValues", column));
        match micros {
            Some(m) => max = Some(max.map_or(m, |x: i64| x.max(m))),
            None => return Ok(None),
        }
    }
    Ok(max)
}
