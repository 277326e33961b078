//! Shared helpers: specs from text, trade batches, and lake fixtures.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use finlake_core::spec::{self, LoadedSpec};
use finlake_quality::fixtures::{self, Injected};

/// The repository root.
/// Runs `script` under `python3 -c` with `args` (an independent reader: Python `deltalake`,
/// `pyarrow`): its standard output, trimmed, and its standard error.
pub fn python<A: AsRef<std::ffi::OsStr>>(script: &str, args: &[A]) -> (String, String) {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3");
    (
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A spec from text, named `name` in messages.
pub fn spec(name: &str, text: &str) -> Result<LoadedSpec, spec::SpecError> {
    spec::load_str(Path::new(name), text, &|_| None)
}

/// The market-data-stream sample with its rules replaced by `rules` (YAML lines indented
/// for `spec.validation.rules`) and `business` (for `spec.business_rules`).
pub fn with_rules(rules: &str, business: &str) -> String {
    format!(
        r#"apiVersion: finlake.io/v1
kind: DataPipeline
metadata: {{name: rules-test}}
spec:
  type: streaming
  sources:
    - {{name: t, type: trade, format: JSON, config: {{kafka_topic: t, bootstrap_servers: "localhost:9092"}}}}
  transformations:
    - {{name: n, type: normalize, config: {{standard: ISIN, mapping_table: symbol_mapping, fallback_strategy: reject}}}}
    - {{name: fx, type: currency_conversion, config: {{base_currency: USD, rate_source: fx_rates, fallback: previous_day}}}}
  validation:
    rules:
{rules}
  business_rules:
{business}
  destinations:
    - {{name: lake, type: datalake, technology: delta, config: {{table_uri: /tmp/x}}}}
"#
    )
}

/// The canonical schema of a trade pipeline with both transforms.
pub fn trade_schema() -> arrow::datatypes::SchemaRef {
    finlake_core::schema::table_schema(finlake_core::spec::SourceType::Trade, true, true)
}

/// A generated day.
pub fn day(rows: usize, seed: u64, faults: Injected) -> fixtures::Day {
    fixtures::trade_day(
        chrono::NaiveDate::from_ymd_opt(2026, 11, 20).unwrap(),
        rows,
        seed,
        faults,
        60_000_000,
    )
    .expect("fixture day")
}

/// Writes `batch` as the trades table of a lake at `lake` (`<lake>/market/trades`).
pub fn write_trades(lake: &Path, batch: RecordBatch) {
    let n = batch.num_rows();
    write_commits(lake, &batch, &[(0, n)]);
}

/// Writes `chunks` (offset, length) of `batch` as the trades table of a lake at `lake`, one
/// commit each, in the order given.
pub fn write_commits(lake: &Path, batch: &RecordBatch, chunks: &[(usize, usize)]) {
    let uri = lake.join("market/trades").display().to_string();
    write_commits_to(&uri, Default::default(), batch, chunks);
}

/// [`write_commits`] to the table at `uri` with `storage_options` (an S3 endpoint, say).
pub fn write_commits_to(
    uri: &str,
    storage_options: std::collections::HashMap<String, String>,
    batch: &RecordBatch,
    chunks: &[(usize, usize)],
) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut table = finlake_core::delta::open_or_create(&finlake_core::delta::TableSpec {
            uri: uri.to_string(),
            schema: batch.schema(),
            partition_by: vec!["trade_date".into()],
            checkpoint_interval: None,
            storage_options,
        })
        .await
        .unwrap();
        for &(from, len) in chunks {
            table = finlake_core::delta::append(
                table,
                vec![batch.slice(from, len)],
                &Default::default(),
            )
            .await
            .unwrap();
        }
    });
}

/// The embedded calendar.
pub fn calendar() -> Arc<finlake_core::transform::ExchangeCalendar> {
    Arc::new(finlake_core::transform::ExchangeCalendar::embedded())
}
