//! The DataPipeline resource: Rust types in the vocabulary of the firm's operations guide.
//!
//! These types are the single source of truth: serde reads them, `check` validates YAML against
//! the JSON schema derived from them, and `finlake crd` prints that schema as a Kubernetes CRD.
//! Every struct denies unknown fields.
//!
//! Every key the firm's operations guide shows is accepted. A key finlake acts on is enforced;
//! one it does not act on yet, or that belongs to another engine (Flink's `job_manager`), carries
//! an `x-finlake-unenforced` note in the schema, and the checker warns at its line with that
//! note. Enum values are matched without regard to case (`Avro`, `JSON`).

use std::collections::BTreeMap;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `finlake.io/v1`, the only API version.
pub const API_VERSION: &str = "finlake.io/v1";
/// The resource kind.
pub const KIND: &str = "DataPipeline";

/// A DataPipeline resource, as written in YAML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DataPipeline {
    /// Always `finlake.io/v1`.
    pub api_version: String,
    /// Always `DataPipeline`.
    pub kind: String,
    /// Name and namespace.
    pub metadata: Metadata,
    /// What the pipeline does.
    pub spec: PipelineSpec,
}

/// Kubernetes-style metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// The pipeline's name, a DNS-1123 label (`market-data-stream`).
    pub name: String,
    /// The namespace it runs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Streaming (the ingestor) or batch (the job runner).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PipelineType {
    /// Long-running, from Kafka.
    Streaming,
    /// Scheduled, over the lake.
    Batch,
}

/// The body of the resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// streaming or batch.
    #[serde(rename = "type")]
    pub pipeline_type: PipelineType,
    /// Where data comes from.
    pub sources: Vec<Source>,
    /// Enrichment steps, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transformations: Vec<Transformation>,
    /// Row rules and table checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<Validation>,
    /// Business rules (trading hours, dedup).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub business_rules: Vec<BusinessRule>,
    /// Complex-event patterns that raise alerts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cep_patterns: Vec<CepPattern>,
    /// Alert channels, or the guide's list of alert rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-finlake-unenforced" = "finlake-ingest evaluates alert rules' conditions into the alerts table and their `kafka://` destinations; delivery to Slack, email, PagerDuty and webhooks (and the `channels` form) comes later"))]
    pub alerting: Option<Alerting>,
    /// Where data lands.
    pub destinations: Vec<Destination>,
    /// Micro-batching settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing: Option<Processing>,
    /// Metrics and logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<Monitoring>,
    /// TLS, credentials, encryption, access control and data classification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<Security>,
    /// Compute resources (the guide's Flink job and task managers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-finlake-unenforced" = "compute resources come from the Deployment's requests and limits (deploy/); finlake has no job or task managers"))]
    pub resources: Option<Resources>,
    /// Socket buffers and network batching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-finlake-unenforced" = "socket buffers are librdkafka's defaults for now, and batching is set in `processing.config` (max_batch_size, batch_timeout)"))]
    pub network: Option<Network>,
    /// Local storage and caching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-finlake-unenforced" = "local volumes and caches are the Deployment's (deploy/); finlake keeps no local state beyond memory"))]
    pub storage: Option<StorageSettings>,
    /// Host metrics to collect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-finlake-unenforced" = "host metrics come from the node exporter and kube-state-metrics; `jvm_gc_metrics` belongs to JVM engines, finlake is not one"))]
    pub infrastructure_monitoring: Vec<String>,
    /// State snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-finlake-unenforced" = "finlake's state is the Delta log itself (txn versions and table history): `finlake restore` uses its snapshots; separate state backups are not taken"))]
    pub backup: Option<Backup>,
    /// Cross-region replication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-finlake-unenforced" = "cross-region replication is the object store's (bucket replication); finlake does not copy tables"))]
    pub replication: Option<Replication>,
    /// `running` or `stopped` (`kubectl patch datapipeline ... desired_state`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-finlake-unenforced" = "finlake-ingest does not watch the resource yet: scale the Deployment to stop it"))]
    pub desired_state: Option<DesiredState>,
}

/// `spec.desired_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DesiredState {
    /// Consume and land.
    Running,
    /// Stop consuming, committing what is buffered.
    Stopped,
}

/// `spec.resources`: the guide's Flink resource block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Flink's job manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_manager: Option<ResourceSpec>,
    /// Flink's task managers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_manager: Option<ResourceSpec>,
}

/// CPU, memory, replicas and slots of one kind of worker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    /// Kubernetes CPU quantity (`2000m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Kubernetes memory quantity (`4Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Number of workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// Task slots per worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<u32>,
}

/// `spec.network`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Socket buffer sizes (`1MB`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer_sizes: Option<BufferSizes>,
    /// Batching on the network path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_processing: Option<NetworkBatching>,
}

/// Socket buffer sizes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BufferSizes {
    /// Receive buffer (`1MB`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_receive: Option<String>,
    /// Send buffer (`1MB`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_send: Option<String>,
}

/// Batching on the network path.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkBatching {
    /// On or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Messages per batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_size: Option<u32>,
    /// Longest wait for a batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_timeout: Option<Duration>,
}

/// `spec.storage`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// A local volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_storage: Option<LocalStorage>,
    /// A cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caching: Option<Caching>,
}

/// A local volume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalStorage {
    /// On or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Kubernetes quantity (`500Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Volume type (`nvme`).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub volume_type: Option<String>,
}

/// A cache.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Caching {
    /// On or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Kubernetes quantity (`50Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Eviction policy (`lru`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

/// `spec.backup`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    /// Periodic state snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_snapshots: Option<StateSnapshots>,
}

/// Periodic state snapshots.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateSnapshots {
    /// On or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// How often (`1h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency: Option<Duration>,
    /// How long kept (`7d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Duration>,
    /// Where (`s3://fintech-backups/data-pipelines`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
}

/// `spec.replication`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Replication {
    /// On or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Target regions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<ReplicationTarget>,
}

/// One replication target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplicationTarget {
    /// Region (`us-west-2`).
    pub region: String,
    /// How far behind it may be (`30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_tolerance: Option<Duration>,
}

/// The kind of record a source carries; each has a built-in Arrow schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceType {
    /// Executed trades.
    Trade,
    /// Top-of-book quotes.
    Quote,
    /// Order book level updates.
    BookUpdate,
    /// FX spot rates.
    FxRate,
    /// Bond prices.
    BondPrice,
    /// Execution reports.
    ExecutionReport,
    /// Orders.
    Order,
    /// Corporate actions.
    CorporateAction,
    /// Trades from an internal order management system (the guide's `trade-feed`): the
    /// trade schema.
    #[serde(rename = "trade-feed")]
    TradeFeed,
    /// Risk positions per account and instrument.
    Positions,
}

/// Wire format of a source's messages (matched without regard to case: `Avro`, `json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Format {
    /// One JSON object per message.
    #[serde(rename = "JSON")]
    Json,
    /// Plain Avro binary bodies, schema from `config.avro_schema`.
    #[serde(rename = "AVRO")]
    Avro,
    /// Confluent wire format: magic byte, 4-byte schema id, Avro body.
    #[serde(rename = "AVRO_CONFLUENT")]
    AvroConfluent,
}

/// A Kafka source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Name, unique in the pipeline.
    pub name: String,
    /// Record type.
    #[serde(rename = "type")]
    pub source_type: SourceType,
    /// Wire format.
    pub format: Format,
    /// Who produces the data (`internal`, `bloomberg`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-finlake-unenforced" = "descriptive: finlake reads what arrives on the topic whoever produces it"))]
    pub provider: Option<String>,
    /// How often data arrives (`real-time`, `1m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-finlake-unenforced" = "descriptive: the stream is consumed as it arrives; use a table check (freshness) to alert on a late source"))]
    pub frequency: Option<String>,
    /// Connection settings.
    pub config: SourceConfig,
}

/// Kafka connection settings of a source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The topic to consume (required unless the source is a database change stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_topic: Option<String>,
    /// Broker list; when absent the ingestor uses `KAFKA_BOOTSTRAP` from its environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_servers: Option<String>,
    /// Schema registry URL (Confluent-framed Avro).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-finlake-unenforced" = "the registry is not contacted yet: the writer schema is `avro_schema`, or the source type's built-in schema (`finlake avsc <type>`)"))]
    pub schema_registry: Option<String>,
    /// Database of a change-stream source (PostgreSQL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-finlake-unenforced" = "database change streams are not read by finlake: publish them to Kafka (Debezium) and name the topic in `kafka_topic`"))]
    pub database: Option<String>,
    /// Table of a change-stream source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-finlake-unenforced" = "database change streams are not read by finlake: publish them to Kafka (Debezium) and name the topic in `kafka_topic`"))]
    pub table: Option<String>,
    /// Read the table's change stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-finlake-unenforced" = "database change streams are not read by finlake: publish them to Kafka (Debezium) and name the topic in `kafka_topic`"))]
    pub change_stream: Option<bool>,
    /// Consumer group; defaults to `finlake-<pipeline>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_group: Option<String>,
    /// Path of the `.avsc` writer schema (AVRO and AVRO_CONFLUENT); the source type's
    /// built-in schema when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avro_schema: Option<String>,
    /// Schema id the `.avsc` is registered under (AVRO_CONFLUENT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_id: Option<u32>,
    /// Where the ingestor starts a partition the table holds nothing of: `earliest` (the
    /// default: messages produced before the first start land too) or `latest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_offsets: Option<StartingOffsets>,
    /// What a row's `_ingested_at` is, against which clock skew and lateness are judged:
    /// `wall_clock` (the default: when the ingestor read the message) or
    /// `message_timestamp` (the Kafka message's own timestamp: a replay of a recorded feed
    /// judged as it arrived then, not as it is read now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_time: Option<IngestTime>,
}

/// The clock of `_ingested_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IngestTime {
    /// When the ingestor read the message.
    #[default]
    WallClock,
    /// The message's Kafka timestamp (producer's CreateTime or the broker's LogAppendTime).
    MessageTimestamp,
}

/// Where a partition with no committed version starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StartingOffsets {
    /// The first message the broker still holds.
    #[default]
    Earliest,
    /// Only messages produced after the partition is assigned.
    Latest,
}

/// What a transformation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransformType {
    /// Symbol to ISIN through the effective-dated mapping table.
    Normalize,
    /// Prices and notionals to a base currency.
    CurrencyConversion,
    /// The guide's word for enrichment from a reference source: with `base_currency`, it is a
    /// currency conversion (the guide's currency-conversion example).
    Enrich,
}

/// What to do with a row the mapping does not cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FallbackStrategy {
    /// Send the row to quarantine with the reason.
    Reject,
    /// Land the row with its original symbol in the ISIN column.
    Keep,
    /// Land the row with a null ISIN.
    Null,
}

/// One enrichment step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Transformation {
    /// Name, unique in the pipeline.
    pub name: String,
    /// What it does.
    #[serde(rename = "type")]
    pub transform_type: TransformType,
    /// Settings of the step.
    #[serde(default)]
    pub config: TransformConfig,
}

/// Settings of a transformation; which apply depends on its type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// normalize: the target identifier standard (`ISIN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standard: Option<String>,
    /// normalize: the mapping table (`symbol_mapping` reads `symbol_mapping.csv` from the reference data directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping_table: Option<String>,
    /// normalize: what to do with unmapped rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_strategy: Option<FallbackStrategy>,
    /// currency_conversion: the base currency, `USD` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_currency: Option<String>,
    /// currency_conversion: the rate table (`fx_rates`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_source: Option<String>,
    /// currency_conversion: `previous_day` to use the previous day's last rate when the day has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// enrich: the reference source (`fx-rates`), the guide's word for `rate_source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// enrich: the kind of rate; `spot` (the only kind finlake converts with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_type: Option<String>,
    /// enrich: the guide's word for `fallback` (`previous_day`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_rate: Option<String>,
}

impl TransformConfig {
    /// The rate table, under either name (`rate_source`, or the guide's `source`).
    pub fn rate_table(&self) -> Option<&str> {
        self.rate_source.as_deref().or(self.source.as_deref())
    }

    /// The rate fallback, under either name (`fallback`, or the guide's `fallback_rate`).
    pub fn rate_fallback(&self) -> Option<&str> {
        self.fallback.as_deref().or(self.fallback_rate.as_deref())
    }
}

/// Row rules and table checks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Validation {
    /// Rules evaluated on every row.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<ValidationRule>,
    /// Checks over a whole table partition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub table_checks: Vec<TableCheck>,
}

/// The kinds of row rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// The column has a value.
    NotNull,
    /// The value lies between `min` and `max`.
    Range,
    /// The value matches `pattern`.
    Regex,
    /// The value is one of `values`.
    AcceptedValues,
    /// The value is an ISIN with a valid check digit.
    Isin,
    /// The value is an ISO 4217 currency code.
    Currency,
    /// Event time is within `max_skew` of ingest time.
    TimestampSkew,
    /// A SQL condition over the row (`condition`).
    Sql,
}

/// Severity of a rule or check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Reported, does not fail the run.
    Warn,
    /// Fails the run.
    Error,
}

/// A row rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidationRule {
    /// Name, unique in the pipeline.
    pub name: String,
    /// Kind of rule.
    #[serde(rename = "type")]
    pub kind: RuleKind,
    /// The column the rule checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// range: lower bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// range: upper bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// range: whether the bounds are included (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inclusive: Option<bool>,
    /// regex: the pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// accepted_values: the values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// timestamp_skew: the largest allowed distance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_skew: Option<Duration>,
    /// sql: the condition a good row satisfies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// flag, flag_<label>, drop, dead_letter or fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// warn or error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
}

/// The kinds of table check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TableCheckKind {
    /// Rows in the partition between `min` and `max`.
    RowCount,
    /// Percent of nulls in `column`.
    MissingPercent,
    /// Rows sharing a business key.
    DuplicateCount,
    /// Newest event time against now.
    Freshness,
    /// Expected columns and types.
    Schema,
    /// Every expected symbol or venue present.
    Completeness,
    /// Today's volume against history.
    VolumeAnomaly,
}

/// A check over a table partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TableCheck {
    /// Name, unique in the pipeline.
    pub name: String,
    /// Kind of check.
    #[serde(rename = "type")]
    pub kind: TableCheckKind,
    /// The column checked, where the kind has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// Threshold at which the check warns (`1%`, `5m`, `10000`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warn: Option<String>,
    /// Threshold at which the check fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// completeness: the values that must be present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expected: Vec<String>,
}

/// A business rule: a SQL condition with an action, or dedup on keys within a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BusinessRule {
    /// Name, unique in the pipeline.
    pub name: String,
    /// The condition a good row satisfies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// deduplicate: the event-time window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
    /// deduplicate: the business key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// flag, flag_<label>, drop, dead_letter, fail or deduplicate.
    pub action: String,
    /// deduplicate: what happens to a row older than the watermark (`flag`, the default, lands
    /// it flagged `late`; `dead_letter` quarantines it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_late: Option<LateHandling>,
    /// warn or error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
}

/// What dedup does with a late row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LateHandling {
    /// Land it, flagged `late`.
    Flag,
    /// Quarantine it.
    DeadLetter,
}

/// A complex-event pattern.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CepPattern {
    /// Name, unique in the pipeline.
    pub name: String,
    /// A true/false SQL condition over the landed row, with `prev(col)` (the previous row of
    /// the same key) and `avg(col)` / `avg(col, 20d)` (the key's mean over the window).
    pub pattern: String,
    /// Topic the alerts go to.
    pub output_topic: String,
    /// Key the state is kept per (default: symbol).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// Window of the pattern's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
}

/// `spec.alerting`: named channels, or (the guide's form) a list of alert rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Alerting {
    /// `alerting: {channels: [...]}`.
    Channels(AlertChannels),
    /// `alerting: [{name, condition, severity, destinations}]`.
    Rules(Vec<AlertRule>),
}

/// Named alert channels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertChannels {
    /// Alert channels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<AlertChannel>,
}

/// An alert rule: a condition over the stream and where its alerts go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// Name, unique in the pipeline.
    pub name: String,
    /// The condition that raises the alert.
    pub condition: String,
    /// How bad it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<AlertSeverity>,
    /// Where alerts go: `slack://channel`, `email://address`, `pagerduty://key`,
    /// `kafka://topic`, or an `https://` webhook.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<String>,
}

/// The severity of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertSeverity {
    /// For information.
    Info,
    /// Look soon.
    Warning,
    /// Act now.
    Critical,
}

/// Kind of alert channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChannelType {
    /// A Kafka topic.
    Kafka,
    /// A Slack webhook.
    Slack,
    /// PagerDuty.
    Pagerduty,
    /// A generic webhook.
    Webhook,
}

/// One alert channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertChannel {
    /// Name.
    pub name: String,
    /// Kind.
    #[serde(rename = "type")]
    pub channel_type: ChannelType,
    /// Topic, URL or routing key.
    pub target: String,
    /// Lowest severity sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<Severity>,
}

/// Kind of destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DestinationType {
    /// A lake table for good rows.
    Datalake,
    /// The quarantine table for rejects.
    Quarantine,
    /// The dead-letter topic.
    DeadLetter,
    /// An in-memory cache of the latest values (the guide's Redis cache).
    Cache,
}

/// Table or store technology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Technology {
    /// Delta Lake.
    Delta,
    /// Redis (cache destinations).
    Redis,
}

/// A destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// Name, unique in the pipeline.
    pub name: String,
    /// Kind.
    #[serde(rename = "type")]
    pub destination_type: DestinationType,
    /// Table technology (tables only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub technology: Option<Technology>,
    /// Settings.
    #[serde(default)]
    pub config: DestinationConfig,
    /// cache: how long entries live (`24h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Duration>,
}

/// Settings of a destination.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// Table URI (`s3://lake/market/trades`, `file:///data/lake/trades`, a path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_uri: Option<String>,
    /// Partition columns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_by: Vec<String>,
    /// Write a checkpoint every N commits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_interval: Option<u32>,
    /// Object store options (endpoint, region), values may use `${VAR}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub storage_options: BTreeMap<String, String>,
    /// dead_letter: the topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// cache: Redis cluster mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_mode: Option<bool>,
    /// cache: copies of each entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<u32>,
    /// cache: Redis eviction policy (`allkeys-lru`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_policy: Option<String>,
}

/// Micro-batching settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Processing {
    /// `streaming` or `batch`; must agree with `spec.type` when given.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub processing_type: Option<PipelineType>,
    /// The engine (`finlake`; the guide also names `kafka-streams` and `flink`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// The settings.
    #[serde(default)]
    pub config: ProcessingConfig,
}

/// Micro-batching settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessingConfig {
    /// Close a batch at this many rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_size: Option<u32>,
    /// Close a batch after this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_timeout: Option<Duration>,
    /// Decode/transform workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<u32>,
    /// How often buffered micro-batches are committed to Delta (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_interval: Option<Duration>,
    /// The guide's checkpointing block; `interval` is the commit interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpointing: Option<Checkpointing>,
    /// Pause a source whose rejects pile up (a broken producer), instead of filling the
    /// quarantine at full speed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Most records one poll returns (a number, or a number in a string as `kubectl patch`
    /// sends it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_poll_records: Option<IntOrString>,
    /// Kafka Streams' application id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-finlake-unenforced" = "a Kafka Streams setting: finlake's consumer group is `sources[].config.consumer_group`"))]
    pub application_id: Option<String>,
    /// Kafka Streams' thread count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-finlake-unenforced" = "a Kafka Streams setting: finlake's workers are `parallelism`"))]
    pub num_stream_threads: Option<u32>,
    /// Kafka Streams' record cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-finlake-unenforced" = "a Kafka Streams setting: finlake bounds memory by `max_batch_size` and the commit interval"))]
    pub cache_max_bytes_buffering: Option<String>,
}

/// The guide's checkpointing block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Checkpointing {
    /// How often state is made durable: for finlake, the Delta commit interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
}

/// The stream's circuit breaker: more than `max_rejects` rejects from one source within
/// `window` pauses that source's partitions (nothing is dropped: reading resumes where it
/// stopped), until `cool_down` has passed or the operator sends SIGUSR1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreaker {
    /// Rejects (quarantined messages) tolerated within `window`.
    pub max_rejects: u64,
    /// The sliding window the rejects are counted over (default 1m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
    /// How long the source stays paused before reading resumes on its own (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cool_down: Option<Duration>,
}

impl ProcessingConfig {
    /// The commit interval, from `commit_interval` or `checkpointing.interval`.
    pub fn commit_every(&self) -> Option<Duration> {
        self.commit_interval
            .or_else(|| self.checkpointing.as_ref().and_then(|c| c.interval))
    }
}

/// A count written as a number or as a string of digits (`5000` or `"5000"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    /// `5000`.
    Int(u64),
    /// `"5000"`.
    Str(String),
}

impl IntOrString {
    /// The value, when it is a whole number.
    pub fn value(&self) -> Option<u64> {
        match self {
            IntOrString::Int(v) => Some(*v),
            IntOrString::Str(s) => s.trim().parse().ok(),
        }
    }
}

impl JsonSchema for IntOrString {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IntOrString".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "x-kubernetes-int-or-string": true,
            "anyOf": [{"type": "integer"}, {"type": "string", "pattern": "^[0-9]+$"}],
            "description": "A whole number, or its digits in a string"
        })
    }
}

/// Metrics and logging.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Monitoring {
    /// Port of `/metrics`, `/healthz`, `/readyz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_port: Option<u16>,
    /// `json` or `pretty`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-finlake-unenforced" = "the log format is `finlake-ingest --log-format` (env FINLAKE_LOG_FORMAT, default json)"))]
    pub log_format: Option<String>,
    /// Consumer lag (seconds) above which the pipeline is unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-finlake-unenforced" = "lag is exported per partition as `finlake_ingest_consumer_lag_messages`; alert on it in Prometheus (deploy/), /readyz does not read this threshold yet"))]
    pub max_lag: Option<Duration>,
    /// The guide's quality dashboard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-finlake-unenforced" = "dashboards are Grafana's, provisioned from deploy/ on finlake's metrics; the widgets are not drawn by finlake"))]
    pub dashboard: Option<Dashboard>,
}

/// A dashboard's settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dashboard {
    /// On or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// How often it refreshes (`5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_rate: Option<Duration>,
    /// Panels shown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub widgets: Vec<String>,
}

/// TLS and credentials, passed to librdkafka and the object store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Security {
    /// `PLAINTEXT`, `SSL`, `SASL_SSL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-finlake-unenforced" = "librdkafka settings come from the environment: FINLAKE_KAFKA_SECURITY_PROTOCOL=SASL_SSL sets `security.protocol`"))]
    pub protocol: Option<String>,
    /// `PLAIN`, `SCRAM-SHA-512`, `OAUTHBEARER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-finlake-unenforced" = "librdkafka settings come from the environment: FINLAKE_KAFKA_SASL_MECHANISM sets `sasl.mechanism`"))]
    pub sasl_mechanism: Option<String>,
    /// Kubernetes secret holding the credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-finlake-unenforced" = "mount the secret into the Deployment's environment (FINLAKE_KAFKA_SASL_USERNAME/PASSWORD, AWS_*): finlake does not read Kubernetes secrets itself"))]
    pub credentials_secret: Option<String>,
    /// Encryption in transit and at rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-finlake-unenforced" = "TLS to Kafka comes from `protocol` (librdkafka); encryption at rest is the object store's (SSE-KMS), not finlake's"))]
    pub encryption: Option<Encryption>,
    /// How clients authenticate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-finlake-unenforced" = "finlake authenticates to Kafka with `protocol`/`sasl_mechanism` and to storage with its credentials; mutual TLS between services is the mesh's"))]
    pub authentication: Option<Authentication>,
    /// Who may read and write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-finlake-unenforced" = "access to tables and topics is granted by the object store's and Kafka's ACLs; finlake does not check roles"))]
    pub authorization: Option<Authorization>,
    /// Sensitivity of the data (`confidential`).
    #[serde(
        default,
        rename = "dataClassification",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("x-finlake-unenforced" = "recorded only: finlake does not yet tag tables with their classification"))]
    pub data_classification: Option<String>,
    /// Handling the classification requires.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-finlake-unenforced" = "recorded only: the requirements are met by the platform (encryption, audit logs, retention, regions)"))]
    pub handling_requirements: Vec<String>,
}

/// Encryption settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    /// TLS on every connection.
    #[serde(default, rename = "inTransit", skip_serializing_if = "Option::is_none")]
    pub in_transit: Option<bool>,
    /// TLS versions (`TLSv1.3`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protocols: Vec<String>,
    /// Cipher suites.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
    /// Encrypted storage.
    #[serde(default, rename = "atRest", skip_serializing_if = "Option::is_none")]
    pub at_rest: Option<bool>,
    /// Key manager (`vault`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_management: Option<String>,
    /// How often keys rotate (`90d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_rotation: Option<Duration>,
    /// Cipher (`AES-256-GCM`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
}

/// Authentication settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Authentication {
    /// On or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Method (`mutual-tls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The CA (`internal-ca`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    /// How often certificates rotate (`30d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_rotation: Option<Duration>,
}

/// Authorization settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    /// On or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Role bindings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rbac: Vec<RoleBinding>,
}

/// One role binding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBinding {
    /// Role (`data-reader`).
    pub role: String,
    /// What it may do (`read`, `write`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<String>,
    /// Who holds it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<String>,
}

/// A duration written as `10ms`, `5s`, `1m`, `1h30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration(pub std::time::Duration);

/// The regular expression a duration matches (also used in the CRD).
pub const DURATION_PATTERN: &str = r"^([0-9]+(ns|us|ms|s|m|h|d))+$";

impl Duration {
    /// Parses `10ms`, `1m`, `5s`, `1h30m`; whitespace and other units are refused.
    pub fn parse(s: &str) -> Result<Self, String> {
        let valid_shape = !s.is_empty() && {
            let mut rest = s;
            let mut ok = true;
            while !rest.is_empty() {
                let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
                let unit = ["ns", "us", "ms", "s", "m", "h", "d"]
                    .iter()
                    .filter(|u| rest[digits..].starts_with(**u))
                    .max_by_key(|u| u.len());
                match (digits, unit) {
                    (1.., Some(u)) => rest = &rest[digits + u.len()..],
                    _ => {
                        ok = false;
                        break;
                    }
                }
            }
            ok
        };
        if !valid_shape {
            return Err(format!(
                "`{s}` is not a duration: write a number and a unit (ns, us, ms, s, m, h, d), such as `10ms`, `5s` or `1m`"
            ));
        }
        humantime::parse_duration(s)
            .map(Duration)
            .map_err(|e| format!("`{s}` is not a duration: {e}"))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            humantime::format_duration(self.0)
                .to_string()
                .replace(' ', "")
        )
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Duration::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "duration",
            "pattern": DURATION_PATTERN,
            "description": "A duration such as 10ms, 5s, 1m or 1h30m"
        })
    }
}
