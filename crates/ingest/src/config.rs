//! What the ingestor runs, resolved from a DataPipeline spec at start-up: topics, group,
//! tables, dead-letter topic, batching and commit cadence. Everything a spec gets wrong for
//! streaming is refused here, before anything connects, naming the spec file.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use finlake_core::delta::TableSpec;
use finlake_core::pipeline::Stages;
use finlake_core::schema;
use finlake_core::spec::{DestinationType, IngestTime, LoadedSpec, PipelineType, StartingOffsets};
use finlake_core::transform::RefData;

use crate::error::{IngestError, Result};

/// Default rows per micro-batch (the guide's latency setting is 1000 / 10 ms; throughput runs
/// set far larger batches).
pub const DEFAULT_MAX_BATCH_ROWS: usize = 10_000;
/// Default bytes per micro-batch.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 16 << 20;
/// Default micro-batch timeout.
pub const DEFAULT_BATCH_TIMEOUT: Duration = Duration::from_millis(100);
/// Default commit interval (issue 9: one commit per 10 ms batch cannot work on S3).
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// One source of a pipeline: a topic and the stages its messages go through.
pub struct SourceRuntime {
    /// The spec's source name.
    pub name: String,
    /// The topic.
    pub topic: String,
    /// Decode and transforms.
    pub stages: Stages,
    /// The clock of `_ingested_at`.
    pub ingest_time: IngestTime,
}

/// A pipeline, ready to run.
pub struct PipelineConfig {
    /// The spec.
    pub spec: Arc<LoadedSpec>,
    /// `metadata.name`.
    pub name: String,
    /// The sources, one per topic.
    pub sources: Vec<SourceRuntime>,
    /// Broker list.
    pub bootstrap: String,
    /// Consumer group.
    pub group: String,
    /// Where a partition the table holds nothing of starts.
    pub starting_offsets: StartingOffsets,
    /// The landed rows' table (its schema includes `_flags`).
    pub data: TableSpec,
    /// The quarantine table.
    pub quarantine: TableSpec,
    /// The `processed_events` table ([`crate::events`]), beside the data table.
    pub events: TableSpec,
    /// The alerts table, beside the data table, when the spec has `cep_patterns` or
    /// `alerting` rules.
    pub alerts: Option<TableSpec>,
    /// The dead-letter topic, if any.
    pub dead_letter_topic: Option<String>,
    /// Close a micro-batch at this many messages.
    pub max_batch_rows: usize,
    /// ... or this many payload bytes.
    pub max_batch_bytes: usize,
    /// ... or when its first message is this old.
    pub batch_timeout: Duration,
    /// Micro-batches decoded and evaluated at once (`processing.config.parallelism`,
    /// default the cores this process may use); the loop receives while they run.
    pub workers: usize,
    /// Commit buffered micro-batches this often.
    pub commit_interval: Duration,
    /// The circuit breaker, when the spec sets one.
    pub circuit_breaker: Option<crate::breaker::BreakerConfig>,
    /// Extra librdkafka settings (`FINLAKE_KAFKA_<NAME>` from the environment, `.` as `_`).
    pub kafka_settings: Vec<(String, String)>,
    /// An owned partition whose `txn` has not been written for this long is written again
    /// (same version) in the next commit, so a log retention set on the table later cannot
    /// expire an idle partition's version (`FINLAKE_TXN_RESTAMP`, default 1h).
    pub txn_restamp: Duration,
    /// The maintenance task compacts each table's small files (`finlake_core::compact`)
    /// every this many data commits (`FINLAKE_COMPACT_EVERY`, default 10; 0 turns it off for
    /// every table, `delta.autoOptimize.autoCompact = false` for one).
    pub compact_every: u64,
}

/// Default of [`PipelineConfig::txn_restamp`].
pub const DEFAULT_TXN_RESTAMP: Duration = Duration::from_secs(3600);

/// Default of [`PipelineConfig::compact_every`]: as often as a level fills
/// (`CompactOptions::fan_in`).
pub const DEFAULT_COMPACT_EVERY: u64 = 10;

fn cfg_err(spec: &LoadedSpec, message: impl Into<String>) -> IngestError {
    IngestError::Config {
        file: spec.file.display().to_string(),
        message: message.into(),
    }
}

impl PipelineConfig {
    /// Resolves `spec` for streaming, with reference data from `refdata`. `env` supplies
    /// `KAFKA_BOOTSTRAP` when the spec has no `bootstrap_servers`.
    pub fn from_spec(
        spec: LoadedSpec,
        refdata: &RefData,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let p = &spec.pipeline.spec;
        let name = spec.pipeline.metadata.name.clone();
        if p.pipeline_type != PipelineType::Streaming {
            return Err(cfg_err(
                &spec,
                format!(
                    "pipeline `{name}` is `type: {:?}`; finlake-ingest runs streaming pipelines (batch ones run with finlake-batch)",
                    p.pipeline_type
                ),
            ));
        }
        let mut sources = Vec::new();
        let mut bootstrap: Option<String> = None;
        let mut group: Option<String> = None;
        let mut starting: Option<StartingOffsets> = None;
        for (i, src) in p.sources.iter().enumerate() {
            let topic = src.config.kafka_topic.clone().ok_or_else(|| {
                cfg_err(
                    &spec,
                    format!(
                        "source `{}` has no `kafka_topic`: finlake-ingest reads Kafka only",
                        src.name
                    ),
                )
            })?;
            let b = src
                .config
                .bootstrap_servers
                .clone()
                .or_else(|| env("KAFKA_BOOTSTRAP"))
                .ok_or_else(|| {
                    cfg_err(
                        &spec,
                        format!(
                            "source `{}` has no `bootstrap_servers` and KAFKA_BOOTSTRAP is not set",
                            src.name
                        ),
                    )
                })?;
            let g = src
                .config
                .consumer_group
                .clone()
                .unwrap_or_else(|| format!("finlake-{name}"));
            let s = src.config.starting_offsets.unwrap_or_default();
            for (what, seen, now) in [
                ("bootstrap_servers", &mut bootstrap, b),
                ("consumer_group", &mut group, g),
            ] {
                match seen {
                    Some(prev) if *prev != now => {
                        return Err(cfg_err(
                            &spec,
                            format!(
                                "sources disagree on `{what}` (`{prev}` and `{now}`): one pipeline is one consumer group on one cluster; split it into two specs"
                            ),
                        ))
                    }
                    _ => *seen = Some(now),
                }
            }
            if starting.is_some_and(|prev| prev != s) {
                return Err(cfg_err(&spec, "sources disagree on `starting_offsets`"));
            }
            starting = Some(s);
            let stages = Stages::from_spec(&spec, i, refdata)?;
            if let Some(first) = sources.first() {
                let first: &SourceRuntime = first;
                if first.stages.table_schema() != stages.table_schema() {
                    return Err(cfg_err(
                        &spec,
                        format!(
                            "sources `{}` and `{}` land different schemas; one pipeline writes one table",
                            first.name, src.name
                        ),
                    ));
                }
            }
            if sources.iter().any(|s: &SourceRuntime| s.topic == topic) {
                return Err(cfg_err(
                    &spec,
                    format!("topic `{topic}` is read by two sources"),
                ));
            }
            sources.push(SourceRuntime {
                name: src.name.clone(),
                topic,
                stages,
                ingest_time: src.config.ingest_time.unwrap_or_default(),
            });
        }
        let first = sources
            .first()
            .ok_or_else(|| cfg_err(&spec, "the pipeline has no sources"))?;
        let landed = finlake_quality::engine::landed_schema(first.stages.table_schema());
        let mut data = None;
        let mut quarantine = None;
        let mut dead_letter_topic = None;
        for d in &p.destinations {
            let table = |schema, default_partition: &str| -> Result<TableSpec> {
                let uri = d.config.table_uri.clone().ok_or_else(|| {
                    cfg_err(
                        &spec,
                        format!("destination `{}` has no `table_uri`", d.name),
                    )
                })?;
                Ok(TableSpec {
                    uri,
                    schema,
                    partition_by: if d.config.partition_by.is_empty() {
                        vec![default_partition.to_string()]
                    } else {
                        d.config.partition_by.clone()
                    },
                    checkpoint_interval: d.config.checkpoint_interval,
                    storage_options: d
                        .config
                        .storage_options
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect::<HashMap<_, _>>(),
                })
            };
            match d.destination_type {
                DestinationType::Datalake => {
                    if data.is_some() {
                        return Err(cfg_err(
                            &spec,
                            "more than one `datalake` destination: one pipeline writes one table",
                        ));
                    }
                    data = Some(table(landed.clone(), schema::TRADE_DATE)?);
                }
                DestinationType::Quarantine => {
                    quarantine = Some(table(schema::quarantine_schema(), "ingest_date")?)
                }
                DestinationType::DeadLetter => {
                    dead_letter_topic = Some(d.config.topic.clone().ok_or_else(|| {
                        cfg_err(
                            &spec,
                            format!("dead_letter destination `{}` has no `topic`", d.name),
                        )
                    })?)
                }
                _ => {}
            }
        }
        let data = data.ok_or_else(|| {
            cfg_err(
                &spec,
                "no `datalake` destination: where should the rows land?",
            )
        })?;
        let quarantine = match quarantine {
            Some(q) => q,
            None => {
                let uri = format!("{}_quarantine", data.uri.trim_end_matches('/'));
                tracing::warn!(pipeline = %name, %uri, "no quarantine destination; rejects go beside the table");
                TableSpec {
                    uri,
                    schema: schema::quarantine_schema(),
                    partition_by: vec!["ingest_date".into()],
                    checkpoint_interval: data.checkpoint_interval,
                    storage_options: data.storage_options.clone(),
                }
            }
        };
        let proc = p.processing.as_ref().map(|p| &p.config);
        let max_batch_rows = proc
            .and_then(|c| c.max_batch_size)
            .map(|n| n as usize)
            .unwrap_or(DEFAULT_MAX_BATCH_ROWS);
        let batch_timeout = proc
            .and_then(|c| c.batch_timeout)
            .map(|d| d.0)
            .unwrap_or(DEFAULT_BATCH_TIMEOUT);
        let workers = match proc.and_then(|c| c.parallelism) {
            Some(0) => {
                return Err(cfg_err(
                    &spec,
                    "`processing.config.parallelism` must be at least 1",
                ))
            }
            Some(n) => n as usize,
            None => cores(),
        };
        let commit_interval = proc
            .and_then(|c| c.commit_every())
            .map(|d| d.0)
            .unwrap_or(DEFAULT_COMMIT_INTERVAL);
        if commit_interval.is_zero() {
            return Err(cfg_err(&spec, "`commit_interval` must be more than 0"));
        }
        let circuit_breaker = match proc.and_then(|c| c.circuit_breaker.as_ref()) {
            None => None,
            Some(b) => {
                let window = b.window.map_or(Duration::from_secs(60), |d| d.0);
                if window.is_zero() {
                    return Err(cfg_err(
                        &spec,
                        "`circuit_breaker.window` must be more than 0",
                    ));
                }
                Some(crate::breaker::BreakerConfig {
                    max_rejects: b.max_rejects,
                    window,
                    cool_down: b.cool_down.map_or(Duration::from_secs(300), |d| d.0),
                })
            }
        };
        let kafka_settings = kafka_settings_from_env();
        let txn_restamp = match env("FINLAKE_TXN_RESTAMP") {
            None => DEFAULT_TXN_RESTAMP,
            Some(v) => humantime::parse_duration(&v)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    cfg_err(
                        &spec,
                        format!("FINLAKE_TXN_RESTAMP=`{v}` is not a duration above zero (say `1h` or `30s`)"),
                    )
                })?,
        };
        let compact_every = match env("FINLAKE_COMPACT_EVERY") {
            None => DEFAULT_COMPACT_EVERY,
            Some(v) => v.trim().parse::<u64>().map_err(|_| {
                cfg_err(
                    &spec,
                    format!("FINLAKE_COMPACT_EVERY=`{v}` is not a number of commits (0 turns compaction off)"),
                )
            })?,
        };
        let events = crate::events::table_spec(&data);
        // the patterns compile here too, so a bad one fails at start-up (exit 2) at its line
        let alerts = match sources.first() {
            Some(s) => {
                let landed = finlake_quality::engine::landed_schema(s.stages.table_schema());
                finlake_quality::patterns::PatternSet::compile(&spec, landed)
                    .map_err(|e| IngestError::Core(finlake_core::Error::from(e)))?
                    .map(|_| alerts_table_spec(&data))
            }
            None => None,
        };
        Ok(PipelineConfig {
            name,
            sources,
            bootstrap: bootstrap.unwrap_or_default(),
            group: group.unwrap_or_default(),
            starting_offsets: starting.unwrap_or_default(),
            data,
            quarantine,
            events,
            alerts,
            circuit_breaker,
            dead_letter_topic,
            max_batch_rows,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            batch_timeout,
            workers,
            commit_interval,
            kafka_settings,
            txn_restamp,
            compact_every,
            spec: Arc::new(spec),
        })
    }

    /// The `txn` app id of a source partition: `<pipeline>/<topic>/<partition>`.
    pub fn app_id(&self, topic: &str, partition: i32) -> String {
        app_id(&self.name, topic, partition)
    }
}

/// The `txn` app id of a source partition: `<pipeline>/<topic>/<partition>`.
pub fn app_id(pipeline: &str, topic: &str, partition: i32) -> String {
    format!("{pipeline}/{topic}/{partition}")
}

/// librdkafka settings from the environment: `FINLAKE_KAFKA_SECURITY_PROTOCOL=SSL` sets
/// `security.protocol`. TLS and SASL go through these.
fn kafka_settings_from_env() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::env::vars()
        .filter_map(|(k, v)| {
            k.strip_prefix("FINLAKE_KAFKA_")
                .map(|name| (name.to_ascii_lowercase().replace('_', "."), v))
        })
        .collect();
    out.sort();
    out
}

/// Loads and resolves spec files (with `${VAR}` from the process environment).
pub fn load(files: &[PathBuf], refdata: &RefData) -> Result<Vec<PipelineConfig>> {
    let mut out = Vec::new();
    for f in files {
        let spec = finlake_core::spec::load(f).map_err(finlake_core::Error::from)?;
        out.push(PipelineConfig::from_spec(spec, refdata, &|k| {
            std::env::var(k).ok()
        })?);
    }
    let mut names: Vec<&str> = out.iter().map(|p| p.name.as_str()).collect();
    names.sort();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(IngestError::Config {
            file: files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            message: format!("two specs are both named `{}`", w[0]),
        });
    }
    Ok(out)
}

/// The URI of the alerts table beside the data table at `data_uri`.
pub fn alerts_table_uri(data_uri: &str) -> String {
    format!("{}_alerts", data_uri.trim_end_matches('/'))
}

/// The alerts table: `<data table>_alerts`, by the alert's event date.
pub fn alerts_table_spec(data: &TableSpec) -> TableSpec {
    TableSpec {
        uri: alerts_table_uri(&data.uri),
        schema: finlake_quality::patterns::alerts_schema(),
        partition_by: vec!["alert_date".into()],
        checkpoint_interval: data.checkpoint_interval,
        storage_options: data.storage_options.clone(),
    }
}

/// The cores this process may use (its CPU quota or affinity; 2 when unknown): the default
/// `processing.config.parallelism`.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}
