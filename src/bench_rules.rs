//! `finlake bench rules`: the rule engine (ten rules and dedup, `benches/rules-bench.yaml`)
//! over a Parquet file of trades, timed end to end from reading the file to the last verdict.
//! `scripts/bench-rules` runs it and the same rules in DuckDB on the same file.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;

use finlake_quality::engine::{EngineStats, RuleEngine};
use finlake_quality::error::{QualityError, Result};
use finlake_quality::fixtures::{self, Injected};

/// The bench pipeline.
pub const SPEC: &str = include_str!("../crates/quality/benches/rules-bench.yaml");

fn io(path: &Path) -> impl Fn(std::io::Error) -> QualityError + '_ {
    move |source| QualityError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes `rows` trades with light faults (and the session columns, so both engines read the
/// same input) to `path`.
pub fn write_input(path: &Path, rows: usize, seed: u64) -> Result<()> {
    let per_mille = |k: usize| rows * k / 1000;
    let day = fixtures::trade_day(
        chrono::NaiveDate::from_ymd_opt(2026, 11, 20).expect("valid"),
        rows,
        seed,
        Injected {
            null_isin: per_mille(2),
            negative_price: per_mille(1),
            bad_isin: per_mille(1),
            after_hours: per_mille(2),
            duplicates: per_mille(3),
            conflicts: per_mille(1),
            late: per_mille(1) / 10,
        },
        60_000_000,
    )?;
    let calendar = finlake_core::transform::ExchangeCalendar::embedded();
    let batch = finlake_quality::enrich::add_session_columns(&day.batch, &calendar)?;
    let file = std::fs::File::create(path).map_err(io(path))?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_max_row_group_row_count(Some(1 << 20))
        .build();
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props))
        .map_err(|e| QualityError::Usage(format!("{}: {e}", path.display())))?;
    for start in (0..batch.num_rows()).step_by(1 << 16) {
        let len = (1usize << 16).min(batch.num_rows() - start);
        w.write(&batch.slice(start, len))
            .map_err(|e| QualityError::Usage(format!("{}: {e}", path.display())))?;
    }
    w.close()
        .map_err(|e| QualityError::Usage(format!("{}: {e}", path.display())))?;
    Ok(())
}

/// One timed run: read `path`, run every batch through a fresh engine. With `threads` 2, one
/// thread reads the file and evaluates the row rules while the other routes, deduplicates
/// and flags (the stateful half must see batches in order; the channel keeps it).
pub fn run_once(path: &Path, batch_rows: usize, threads: usize) -> Result<(Duration, EngineStats)> {
    let spec = Arc::new(finlake_core::spec::load_str(
        Path::new("crates/quality/benches/rules-bench.yaml"),
        SPEC,
        &|_| None,
    )?);
    let calendar = Arc::new(finlake_core::transform::ExchangeCalendar::embedded());
    let started = Instant::now();
    let file = std::fs::File::open(path).map_err(io(path))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| QualityError::Usage(format!("{}: {e}", path.display())))?;
    let schema = builder.schema().clone();
    let reader = builder
        .with_batch_size(batch_rows)
        .build()
        .map_err(|e| QualityError::Usage(format!("{}: {e}", path.display())))?;
    let mut engine = RuleEngine::new(spec, schema, calendar)?;
    let mut evaluator = engine.evaluator();
    if threads <= 1 {
        for batch in reader {
            let evaluated = evaluator.evaluate(batch?)?;
            engine.apply(evaluated)?;
        }
    } else {
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let producer = std::thread::spawn(move || -> Result<()> {
            for batch in reader {
                let evaluated = evaluator.evaluate(batch?);
                let failed = evaluated.is_err();
                if tx.send(evaluated).is_err() || failed {
                    break;
                }
            }
            Ok(())
        });
        for evaluated in rx {
            engine.apply(evaluated?)?;
        }
        producer.join().expect("the reader thread does not panic")?;
    }
    Ok((started.elapsed(), engine.totals().clone()))
}
