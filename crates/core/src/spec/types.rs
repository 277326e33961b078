//! The DataPipeline resource: Rust types in the vocabulary of the firm's operations guide.
//!
//! These types are the single source of truth: serde reads them, `check` validates YAML against
//! the JSON schema derived from them, and `finlake crd` prints that schema as a Kubernetes CRD.
//! Every struct denies unknown fields.

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
    /// Where alerts go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerting: Option<Alerting>,
    /// Where data lands.
    pub destinations: Vec<Destination>,
    /// Micro-batching settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing: Option<Processing>,
    /// Metrics and logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<Monitoring>,
    /// TLS and credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<Security>,
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
}

/// Wire format of a source's messages.
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
    /// Connection settings.
    pub config: SourceConfig,
}

/// Kafka connection settings of a source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The topic to consume.
    pub kafka_topic: String,
    /// Broker list.
    pub bootstrap_servers: String,
    /// Consumer group; defaults to `finlake-<pipeline>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_group: Option<String>,
    /// Path of the `.avsc` writer schema (AVRO and AVRO_CONFLUENT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avro_schema: Option<String>,
    /// Schema id the `.avsc` is registered under (AVRO_CONFLUENT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_id: Option<u32>,
}

/// What a transformation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransformType {
    /// Symbol to ISIN through the effective-dated mapping table.
    Normalize,
    /// Prices and notionals to a base currency.
    CurrencyConversion,
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
    /// The pattern expression, with `prev(col)` for the previous row of the same key.
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

/// Where alerts go.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Alerting {
    /// Alert channels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<AlertChannel>,
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
}

/// Table technology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Technology {
    /// Delta Lake.
    Delta,
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
}

/// Micro-batching settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Processing {
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
    pub log_format: Option<String>,
    /// Consumer lag (seconds) above which the pipeline is unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lag: Option<Duration>,
}

/// TLS and credentials, passed to librdkafka and the object store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Security {
    /// `PLAINTEXT`, `SSL`, `SASL_SSL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// `PLAIN`, `SCRAM-SHA-512`, `OAUTHBEARER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_mechanism: Option<String>,
    /// Kubernetes secret holding the credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
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
