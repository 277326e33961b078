//! A job: `jobs/<name>/job.yaml` and the SQL file it names.
//!
//! The YAML is read like a DataPipeline spec (`${VAR}` expanded, the whole file checked
//! against the schema of [`JobSpec`], every problem reported with its line and column), and
//! its meaning is checked at load: a job that cannot run is refused before anything reads a
//! table, with exit code 2.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use finlake_core::spec::yaml::{Node, NodeKind};
use finlake_core::spec::{self, Diagnostic, Level, LoadedSpec, Pos, SpecError, Validation};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::{BatchError, Result};
use crate::params::Query;

/// `jobs/<name>/job.yaml`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The job's name (its directory under `jobs/`), a DNS-1123 label.
    pub name: String,
    /// One line on what it computes, for `finlake-batch list`.
    pub description: String,
    /// `sql` (the default: inputs, a query, an output) or `maintenance` (compaction,
    /// checkpoint and vacuum of the tables in `maintenance`).
    #[serde(default)]
    pub kind: JobKind,
    /// When the CronJob runs it (cron syntax), for `list` and the deploy manifests.
    #[serde(default)]
    pub schedule: Option<String>,
    /// The exchange (MIC) whose trading calendar gives the default date (the previous
    /// trading day) and `:prev_trading_day`. Default XNYS.
    #[serde(default = "default_calendar")]
    pub calendar: String,
    /// The engines that run the job's SQL; the first is the default.
    #[serde(default = "default_engines")]
    pub engines: Vec<EngineKind>,
    /// Why a job leaves an engine out (required when `engines` is not both).
    #[serde(default)]
    pub engines_reason: Option<String>,
    /// The Delta tables the query reads, registered under their names.
    #[serde(default)]
    pub inputs: Vec<Input>,
    /// The SQL file, relative to the job file. Parameters: `:date`, `:start`, `:end`,
    /// `:prev_trading_day`, bound as DATE values.
    #[serde(default)]
    pub query: Option<String>,
    /// Where the result goes.
    #[serde(default)]
    pub output: Option<Output>,
    /// kind maintenance: the tables and the policy.
    #[serde(default)]
    pub maintenance: Option<Maintenance>,
    /// kind quality_report: the pipeline whose checks run.
    #[serde(default)]
    pub quality_report: Option<QualityReport>,
    /// Checks on the output before it is written: the rule engine's row rules and table
    /// checks, in a DataPipeline's `validation` words. An error-severity failure writes
    /// nothing and exits 65.
    #[serde(default)]
    pub checks: Option<Validation>,
    /// The query's memory limit (`512MiB`, `2GiB`): past it, operators spill to disk or the
    /// run fails with a clear error instead of the pod being killed. `--memory-limit` wins.
    #[serde(default)]
    pub memory_limit: Option<String>,
    /// The run records' table. Default `${LAKE_URI:-./lake}/ops/job_runs`.
    #[serde(default)]
    pub runs_table: Option<String>,
}

fn default_calendar() -> String {
    "XNYS".to_string()
}

fn default_engines() -> Vec<EngineKind> {
    vec![EngineKind::Datafusion]
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Inputs, a query, checks, an output.
    #[default]
    Sql,
    /// Compaction, checkpoint and vacuum.
    Maintenance,
    /// A DataPipeline's rules and table checks over the date's partition, into
    /// `quality_results` (what `data-quality-check` does, on a schedule).
    QualityReport,
}

/// What a quality report checks.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QualityReport {
    /// The DataPipeline (`metadata.name`), found by name in `spec_dirs`.
    pub pipeline: String,
    /// Where its spec is found, relative to the working directory (default: pipelines,
    /// samples).
    #[serde(default)]
    pub spec_dirs: Vec<String>,
    /// Fail the run (exit 65) on warnings too, as `data-quality-check --fail-on warn`.
    #[serde(default)]
    pub fail_on_warn: bool,
}

/// The maintenance policy.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Maintenance {
    /// The tables.
    pub tables: Vec<MaintainedTable>,
    /// Compaction's target file size (`128MiB`, the default).
    #[serde(default)]
    pub target_file_size: Option<String>,
    /// Vacuum deletes files removed from the table longer ago than this (default 7d). It
    /// must be at least `longest_reader` and the table's `delta.deletedFileRetentionDuration`.
    #[serde(default)]
    pub vacuum_retention: Option<spec::Duration>,
    /// The longest a reader of these tables holds an old snapshot (a long query, a
    /// time-travel read, the window `finlake restore` may go back to): vacuum never deletes
    /// files younger than this.
    pub longest_reader: spec::Duration,
}

/// One table maintenance keeps.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintainedTable {
    /// The Delta table.
    pub table_uri: String,
    /// Its date partition column: compaction rewrites the run's date partition only (the
    /// stream may still be writing today's). Absent: the whole table is compacted.
    #[serde(default)]
    pub partition_column: Option<String>,
}

/// The SQL engines.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// Apache DataFusion, in process (the default).
    Datafusion,
    /// Polars' SQL context, the inputs crossed as Arrow IPC.
    Polars,
}

impl EngineKind {
    /// The name jobs and `--engine` use.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Datafusion => "datafusion",
            EngineKind::Polars => "polars",
        }
    }
}

/// One input table.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The name the SQL uses.
    pub name: String,
    /// The Delta table (`${LAKE_URI:-./lake}/market/trades`).
    pub table_uri: String,
    /// The table's date partition column: the input is pruned to the run's window, so the
    /// query reads only the partitions the date needs. Absent: the whole table.
    #[serde(default)]
    pub partition_column: Option<String>,
    /// Trading days before the run's date the window reaches back (0: the date alone).
    #[serde(default)]
    pub lookback_trading_days: u32,
    /// The window starts on the first calendar day of the date's month (a month-to-date
    /// aggregate such as Rule 13h-1's monthly levels); `:start` is that day.
    #[serde(default)]
    pub month_to_date: bool,
}

/// How the output is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// Replace the run's date partition, in one commit (a rerun gives the same table).
    #[default]
    OverwritePartition,
    /// Append the rows.
    Append,
    /// Upsert on `keys`.
    Merge,
}

/// The output table.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// The Delta table, created on the first run.
    pub table_uri: String,
    /// How rows are written.
    #[serde(default)]
    pub mode: WriteMode,
    /// Partition columns; for `overwrite_partition` the first is the date column the run
    /// replaces.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// merge: the key columns.
    #[serde(default)]
    pub keys: Vec<String>,
}

/// A job ready to run: the spec, its SQL parsed, its checks as a pipeline spec the rule
/// engine compiles.
#[derive(Debug, Clone)]
pub struct Job {
    /// The spec.
    pub spec: JobSpec,
    /// The job file.
    pub file: PathBuf,
    /// The SQL, parsed and its parameters resolved (kind sql).
    pub query: Option<Query>,
    /// The SQL file.
    pub query_file: PathBuf,
    /// The checks as the rule engine reads them (positions point into the job file).
    pub checks: Option<Arc<LoadedSpec>>,
    /// The memory limit, bytes.
    pub memory_limit: Option<usize>,
    /// The run records' table.
    pub runs_table: String,
}

impl Job {
    /// The date column the run replaces (`overwrite_partition`).
    pub fn date_column(&self) -> Option<&str> {
        let out = self.spec.output.as_ref()?;
        match out.mode {
            WriteMode::OverwritePartition => out.partition_by.first().map(String::as_str),
            _ => None,
        }
    }

    /// A sql job's query and output (load made sure a sql job has both).
    pub fn sql(&self) -> Result<(&Query, &Output)> {
        match (&self.query, &self.spec.output) {
            (Some(q), Some(o)) => Ok((q, o)),
            _ => Err(BatchError::Internal(format!(
                "job `{}` has no query or output",
                self.spec.name
            ))),
        }
    }
}

/// The job file of `name_or_path`: a path to a `job.yaml` (or its directory), or a name
/// under `jobs_dir`.
pub fn locate(jobs_dir: &Path, name_or_path: &str) -> Result<PathBuf> {
    let p = Path::new(name_or_path);
    let candidates = [
        p.to_path_buf(),
        p.join("job.yaml"),
        jobs_dir.join(name_or_path).join("job.yaml"),
    ];
    if let Some(found) = candidates.iter().find(|c| c.is_file()) {
        return Ok(found.clone());
    }
    let known: Vec<String> = list_dir(jobs_dir).into_iter().map(|(n, _)| n).collect();
    let refs: Vec<&str> = known.iter().map(String::as_str).collect();
    Err(BatchError::Usage(format!(
        "no job `{name_or_path}`: not a job file, nor a job in {}: {}",
        jobs_dir.display(),
        if refs.is_empty() {
            "that directory holds no job".to_string()
        } else {
            spec::suggest(name_or_path, &refs)
        }
    )))
}

/// The jobs under `jobs_dir`: (name, job file), sorted.
pub fn list_dir(jobs_dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(jobs_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let file = e.path().join("job.yaml");
            file.is_file()
                .then(|| (e.file_name().to_string_lossy().into_owned(), file))
        })
        .collect();
    out.sort();
    out
}

/// Reads and checks a job file, with `env` for `${VAR}`.
pub fn load(file: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Job> {
    let text = std::fs::read_to_string(file).map_err(|source| {
        BatchError::Spec(SpecError::Read {
            path: file.to_path_buf(),
            source,
        })
    })?;
    let (spec, root): (JobSpec, Node) = spec::load_document(file, &text, env)?;
    let mut errors = Vec::new();
    let at = |path: &[&str]| -> Pos {
        let owned: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        (0..=owned.len())
            .rev()
            .find_map(|n| root.at(&owned[..n]))
            .map(|n| n.pos)
            .unwrap_or_default()
    };
    let mut err = |path: &[&str], message: String| {
        errors.push(Diagnostic {
            level: Level::Error,
            pos: at(path),
            path: path.join("."),
            message,
            hint: None,
        })
    };
    if !is_label(&spec.name) {
        err(
            &["name"],
            format!(
                "job name `{}` must be a DNS-1123 label (lowercase letters, digits, `-`)",
                spec.name
            ),
        );
    }
    if finlake_core::transform::ExchangeCalendar::embedded()
        .get(&spec.calendar)
        .is_none()
    {
        err(
            &["calendar"],
            format!(
                "calendar `{}` is no exchange finlake knows (one of {})",
                spec.calendar,
                finlake_core::transform::ExchangeCalendar::embedded()
                    .mics()
                    .join(", ")
            ),
        );
    }
    if spec.engines.is_empty() {
        err(&["engines"], "`engines` lists no engine".to_string());
    }
    let both = [EngineKind::Datafusion, EngineKind::Polars];
    if spec.kind == JobKind::Sql
        && !both.iter().all(|e| spec.engines.contains(e))
        && spec
            .engines_reason
            .as_deref()
            .is_none_or(|r| r.trim().is_empty())
    {
        err(
            &["engines"],
            "a job that leaves an engine out says why in `engines_reason` (both engines run every job that names both, and a test compares them)".to_string(),
        );
    }
    let mut names = std::collections::HashSet::new();
    for (i, input) in spec.inputs.iter().enumerate() {
        let i = i.to_string();
        if !names.insert(input.name.as_str()) {
            err(
                &["inputs", &i, "name"],
                format!("input `{}` is named twice", input.name),
            );
        }
        if input.month_to_date && input.lookback_trading_days > 0 {
            err(
                &["inputs", &i, "month_to_date"],
                "`month_to_date` and `lookback_trading_days` are two windows: name one".to_string(),
            );
        }
        if (input.lookback_trading_days > 0 || input.month_to_date)
            && input.partition_column.is_none()
        {
            err(
                &["inputs", &i, "lookback_trading_days"],
                "a window (`lookback_trading_days`, `month_to_date`) needs a `partition_column` to prune by".to_string(),
            );
        }
    }
    match (&spec.output, spec.kind) {
        (Some(out), JobKind::Sql) => match out.mode {
            WriteMode::OverwritePartition if out.partition_by.is_empty() => err(
                &["output", "partition_by"],
                "mode overwrite_partition needs `partition_by` (its first column is the date the run replaces)"
                    .to_string(),
            ),
            WriteMode::Merge if out.keys.is_empty() => err(
                &["output", "keys"],
                "mode merge needs `keys`: the columns that identify a row".to_string(),
            ),
            _ => {}
        },
        (None, JobKind::Sql) => err(&[], "a sql job needs an `output`".to_string()),
        (Some(_), JobKind::Maintenance | JobKind::QualityReport) => err(
            &["output"],
            "only a sql job has an `output`".to_string(),
        ),
        (None, JobKind::Maintenance | JobKind::QualityReport) => {}
    }
    match (&spec.maintenance, spec.kind) {
        (None, JobKind::Maintenance) => err(
            &["kind"],
            "a maintenance job needs a `maintenance` section (tables, longest_reader)".to_string(),
        ),
        (Some(_), JobKind::Sql | JobKind::QualityReport) => err(
            &["maintenance"],
            "`maintenance` belongs to `kind: maintenance` jobs".to_string(),
        ),
        (Some(m), JobKind::Maintenance) => {
            let retention = m.vacuum_retention.map_or(DEFAULT_RETENTION, |d| d.0);
            if retention < m.longest_reader.0 {
                err(
                    &["maintenance", "vacuum_retention"],
                    format!(
                        "vacuum_retention {} is shorter than longest_reader {}: vacuum would delete files a reader may still need",
                        humanize(retention),
                        humanize(m.longest_reader.0)
                    ),
                );
            }
            if let Some(Err(e)) = m.target_file_size.as_deref().map(parse_bytes) {
                err(&["maintenance", "target_file_size"], e);
            }
            if m.tables.is_empty() {
                err(
                    &["maintenance", "tables"],
                    "no tables to maintain".to_string(),
                );
            }
        }
        (None, JobKind::Sql | JobKind::QualityReport) => {}
    }
    match (&spec.quality_report, spec.kind) {
        (None, JobKind::QualityReport) => err(
            &["kind"],
            "a quality_report job needs a `quality_report` section (pipeline)".to_string(),
        ),
        (Some(_), JobKind::Sql | JobKind::Maintenance) => err(
            &["quality_report"],
            "`quality_report` belongs to `kind: quality_report` jobs".to_string(),
        ),
        _ => {}
    }
    if spec.kind != JobKind::Sql && (!spec.inputs.is_empty() || spec.query.is_some()) {
        err(
            &["kind"],
            "only a sql job has `inputs` and a `query`".to_string(),
        );
    }
    let memory_limit = match spec.memory_limit.as_deref().map(parse_bytes) {
        Some(Err(m)) => {
            err(&["memory_limit"], m);
            None
        }
        Some(Ok(v)) => Some(v),
        None => None,
    };
    let checks = match &spec.checks {
        Some(v) => match checks_spec(file, &spec.name, v, &root) {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => {
                err(&["checks"], e);
                None
            }
        },
        None => None,
    };
    if let Some(v) = &spec.checks {
        use finlake_core::spec::TableCheckKind as K;
        for (i, c) in v.table_checks.iter().enumerate() {
            if !matches!(c.kind, K::RowCount | K::MissingPercent) {
                err(
                    &["checks", "table_checks", &i.to_string(), "type"],
                    format!(
                        "table check `{}`: a job's output is checked with row_count and missing_percent; `{}` needs a table's history",
                        c.name,
                        finlake_quality::checks::kind_name(c.kind)
                    ),
                );
            }
        }
    }
    let base = file.parent().unwrap_or(Path::new("."));
    let query_file = base.join(spec.query.as_deref().unwrap_or_default());
    let query = match (&spec.query, spec.kind) {
        (Some(_), JobKind::Sql) => match std::fs::read_to_string(&query_file) {
            Ok(sql) => match Query::parse(&query_file, &sql) {
                Ok(q) => {
                    // a job reads its declared inputs and nothing else: no other table, no
                    // file path, no table function
                    let inputs: Vec<&str> = spec.inputs.iter().map(|i| i.name.as_str()).collect();
                    for r in &q.relations {
                        if !inputs.iter().any(|i| i.eq_ignore_ascii_case(r)) {
                            err(
                                &["query"],
                                format!(
                                    "{} reads `{r}`, which is not one of the job's inputs ({}): a job reads only what `inputs` declares",
                                    query_file.display(),
                                    inputs.join(", ")
                                ),
                            );
                        }
                    }
                    Some(q)
                }
                Err(e) => {
                    err(&["query"], e);
                    None
                }
            },
            Err(e) => {
                err(
                    &["query"],
                    format!("cannot read the query {}: {e}", query_file.display()),
                );
                None
            }
        },
        (None, JobKind::Sql) => {
            err(&[], "a sql job needs a `query` (its SQL file)".to_string());
            None
        }
        _ => None,
    };
    let runs_table = match &spec.runs_table {
        Some(t) => t.clone(),
        None => spec::yaml::expand_env("${LAKE_URI:-./lake}/ops/job_runs", env)
            .unwrap_or_else(|_| "./lake/ops/job_runs".to_string()),
    };
    if !errors.is_empty() {
        return Err(BatchError::Spec(SpecError::Invalid {
            file: file.to_path_buf(),
            diagnostics: errors,
        }));
    }
    Ok(Job {
        spec,
        file: file.to_path_buf(),
        query,
        query_file,
        checks,
        memory_limit,
        runs_table,
    })
}

/// The job's `checks` as a DataPipeline the rule compiler reads: only `validation` is set,
/// and its positioned tree is the job file's `checks` node, so a rule's error points at its
/// line in the job file.
fn checks_spec(
    file: &Path,
    name: &str,
    checks: &Validation,
    root: &Node,
) -> std::result::Result<LoadedSpec, String> {
    let pipeline = serde_json::from_value(serde_json::json!({
        "apiVersion": finlake_core::spec::API_VERSION,
        "kind": "DataPipeline",
        "metadata": {"name": name},
        "spec": {
            "type": "batch",
            "sources": [],
            "destinations": [],
            "validation": checks,
        }
    }))
    .map_err(|e| e.to_string())?;
    let node = root
        .at(&["checks".to_string()])
        .cloned()
        .unwrap_or_else(|| root.clone());
    let wrap = |key: &str, n: Node| Node {
        pos: n.pos,
        kind: NodeKind::Map(vec![(key.to_string(), n.pos, n)]),
    };
    Ok(LoadedSpec {
        file: file.to_path_buf(),
        pipeline,
        warnings: Vec::new(),
        root: wrap("spec", wrap("validation", node)),
    })
}

/// Vacuum's retention when the job sets none: Delta's own default.
pub const DEFAULT_RETENTION: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// `168h`, `30m`.
pub fn humanize(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub use finlake_core::spec::parse_bytes;
