//! The DataFusion engine: one session per run with every input registered, pruned to its
//! date window, and a memory pool that spills (sorts, aggregations, joins) past the limit.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::DataFusionError;
use datafusion::execution::disk_manager::DiskManagerBuilder;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{col, lit, DataFrame, SessionConfig, SessionContext};
use deltalake::DeltaTable;
use finlake_core::error::ErrorClass;

use crate::error::{BatchError, Result};
use crate::job::{Input, Job};
use crate::params::{date32, Params};

/// An input opened for a run: the table at the version read, and its date window.
pub struct OpenInput<'a> {
    /// The job's declaration.
    pub input: &'a Input,
    /// The table.
    pub table: DeltaTable,
    /// The first and last date partition read, when pruned.
    pub window: Option<(chrono::NaiveDate, chrono::NaiveDate)>,
}

/// The memory limit the run uses: the command line's, else the job's.
#[derive(Debug, Clone)]
pub struct MemoryLimit {
    /// Bytes.
    pub bytes: usize,
    /// As written, for messages.
    pub text: String,
}

/// The run's DataFusion session: the memory pool, finlake's window functions, and every
/// input registered under its name, filtered to its date window (pushed into the Delta scan).
pub async fn session(
    job: &Job,
    inputs: &[OpenInput<'_>],
    limit: Option<&MemoryLimit>,
) -> Result<SessionContext> {
    let name = job.spec.name.clone();
    let classify = |e: DataFusionError| classify(&name, limit, e);
    let mut runtime = RuntimeEnvBuilder::new();
    if let Some(l) = limit {
        runtime = runtime
            .with_memory_pool(Arc::new(FairSpillPool::new(l.bytes)))
            .with_disk_manager_builder(DiskManagerBuilder::default());
    }
    let runtime = runtime.build_arc().map_err(classify)?;
    // DataFusion's own settings from `DATAFUSION_*` variables (for example
    // `DATAFUSION_EXECUTION_BATCH_SIZE`), so a CronJob can tune a job without a release
    let config = SessionConfig::from_env()
        .map_err(|e| BatchError::Usage(format!("DATAFUSION_* environment: {e}")))?
        .with_information_schema(false);
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .build();
    let ctx = SessionContext::new_with_state(state);
    for f in crate::indicators::functions() {
        ctx.register_udwf(f);
    }
    for i in inputs {
        let uri = i.table.table_url().to_string();
        i.table
            .update_datafusion_session(&ctx.state())
            .map_err(finlake_core::delta::table_err(&uri, "register"))?;
        let provider = i.table.table_provider().await.map_err(|e| {
            BatchError::Delta(finlake_core::delta::DeltaError::Table {
                uri: uri.clone(),
                operation: "scan",
                source: Box::new(deltalake::DeltaTableError::Generic(e.to_string())),
            })
        })?;
        let mut df = ctx.read_table(provider).map_err(classify)?;
        if let (Some(column), Some((from, to))) = (&i.input.partition_column, i.window) {
            // pushed down to the Delta scan: only the window's partitions are listed and read
            df = df
                .filter(col(column.as_str()).between(lit(date32(from)), lit(date32(to))))
                .map_err(classify)?;
        }
        ctx.register_table(i.input.name.as_str(), df.into_view())
            .map_err(classify)?;
    }
    Ok(ctx)
}

/// The job's query planned in `ctx` with its parameters bound: nothing runs until collected.
pub async fn plan(
    job: &Job,
    ctx: &SessionContext,
    params: &Params,
    limit: Option<&MemoryLimit>,
) -> Result<DataFrame> {
    let name = job.spec.name.clone();
    let classify = |e: DataFusionError| classify(&name, limit, e);
    let (query, _) = job.sql()?;
    let statement = datafusion::sql::parser::Statement::Statement(Box::new(
        crate::lower::for_datafusion(query.statement()),
    ));
    let state = ctx.state();
    let plan = state.statement_to_plan(statement).await.map_err(classify)?;
    DataFrame::new(state, plan)
        .with_param_values(params.values())
        .map_err(classify)
}

/// Runs the job's query on DataFusion; returns the output schema and batches. With
/// `profile`, the executed plan with each operator's metrics goes to stderr (EXPLAIN ANALYZE
/// of this very run, not a second one).
pub async fn run_datafusion(
    job: &Job,
    inputs: &[OpenInput<'_>],
    params: &Params,
    limit: Option<&MemoryLimit>,
    profile: bool,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let classify = |e: DataFusionError| classify(&job.spec.name, limit, e);
    let ctx = session(job, inputs, limit).await?;
    let df = plan(job, &ctx, params, limit).await?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let task = Arc::new(df.task_ctx());
    let physical = df.create_physical_plan().await.map_err(classify)?;
    let batches = datafusion::physical_plan::collect(Arc::clone(&physical), task)
        .await
        .map_err(classify)?;
    if profile {
        eprintln!(
            "{}",
            datafusion::physical_plan::display::DisplayableExecutionPlan::with_metrics(
                physical.as_ref()
            )
            .indent(true)
        );
    }
    Ok((schema, batches))
}

/// A DataFusion error as the run reports it: past the memory limit, a planning error (the
/// job's SQL names a column or table that is not there: config), a storage failure
/// (transient or config by its kind), else internal.
pub(crate) fn classify(job: &str, limit: Option<&MemoryLimit>, e: DataFusionError) -> BatchError {
    let root = e.find_root();
    if let DataFusionError::ResourcesExhausted(m) = root {
        return BatchError::Memory {
            job: job.to_string(),
            limit: limit
                .map(|l| l.text.clone())
                .unwrap_or_else(|| "none".into()),
            message: m.clone(),
        };
    }
    let class = match root {
        DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::SQL(..)
        | DataFusionError::NotImplemented(_) => ErrorClass::Config,
        _ => finlake_core::delta::storage_class(&e).unwrap_or(ErrorClass::Internal),
    };
    BatchError::Query {
        job: job.to_string(),
        message: e.to_string(),
        class,
    }
}
