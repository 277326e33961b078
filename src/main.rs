//! `finlake`: the umbrella command. Parses arguments, sets up telemetry and calls one library
//! function per subcommand; exit codes come from the error class in one place.

mod bench_rules;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use finlake_core::generate::{self, GenOptions, WireFormat};
use finlake_core::spec::{self, Level, SourceType};
use finlake_core::telemetry::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "finlake",
    version,
    about = "Land market and trade data in a Delta Lake and keep it trustworthy"
)]
struct Cli {
    /// Log format: json or pretty.
    #[arg(
        long,
        env = "FINLAKE_LOG_FORMAT",
        default_value = "pretty",
        global = true
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum GenFormat {
    Json,
    Avro,
}

#[derive(Clone, Copy, ValueEnum)]
enum GenKind {
    Trade,
    Quote,
}

#[derive(Subcommand)]
enum Command {
    /// Check DataPipeline specs (their keys and values, then their rules, table checks and
    /// patterns compiled against the pipeline's table schema, as the ingestor and
    /// data-quality-check do at start-up); exit 0 when all are valid, 2 otherwise.
    Validate {
        /// Spec files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the Kubernetes CustomResourceDefinition of DataPipeline.
    Crd,
    /// Print the built-in Avro schema (.avsc) of a source type.
    Avsc {
        /// Source type: trade, quote, fx_rate, execution_report, ...
        source_type: String,
    },
    /// Write a seeded synthetic feed (JSON: one message per line; Avro: each message prefixed
    /// with its length as a 4-byte big-endian integer).
    Generate {
        /// Number of messages.
        #[arg(long, default_value_t = 10_000)]
        rows: usize,
        /// Wire format.
        #[arg(long, value_enum, default_value = "json")]
        format: GenFormat,
        /// Record type.
        #[arg(long, value_enum, default_value = "trade")]
        kind: GenKind,
        /// Fraction of messages with an injected fault (0 to 1).
        #[arg(long, default_value_t = 0.0)]
        faults: f64,
        /// Seed: the same seed gives the same bytes.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Trading day.
        #[arg(long, default_value = "2026-11-20")]
        date: chrono::NaiveDate,
        /// Output file (or `--kafka`).
        #[arg(long, required_unless_present = "kafka")]
        out: Option<PathBuf>,
        /// Produce the feed to this broker instead of a file (message i to partition
        /// i mod partitions); prints where each message went with `--manifest`.
        #[arg(long, conflicts_with = "out")]
        kafka: Option<String>,
        /// The topic for `--kafka`.
        #[arg(long, default_value = "market.trades")]
        topic: String,
        /// Avro in the Confluent wire format with this schema id (with `--kafka`).
        #[arg(long)]
        confluent_schema_id: Option<u32>,
        /// With `--kafka`: stamp each message with its generated arrival time (a few hundred
        /// ms after its event) instead of now, so a source with `ingest_time:
        /// message_timestamp` replays the day as it arrived.
        #[arg(long, requires = "kafka")]
        arrival_timestamps: bool,
        /// Also write each message's expected outcome, one JSON object per line.
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Also write the Avro schema (.avsc) of the records.
        #[arg(long)]
        avsc: Option<PathBuf>,
    },
    /// Run the streaming ingestor: the same as `finlake-ingest` (try `finlake ingest --help`).
    #[command(disable_help_flag = true)]
    Ingest {
        /// Arguments of finlake-ingest.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Where did a message go? `finlake trace SPEC topic:partition:offset` (or a correlation
    /// id): landed (table, version), quarantined (why) or a duplicate (of which offset).
    Trace(finlake_ingest::cli::TraceArgs),
    /// Restore a pipeline's tables to one snapshot with the offsets recorded in it, so the
    /// stream replays from there (`--snapshot latest`: the latest version
    /// data-quality-check passed; or `--version V`, `--timestamp T`). Stop the pipeline first.
    Restore(finlake_ingest::cli::RestoreArgs),
    /// Start a development Kafka broker (librdkafka's mock cluster) and print its bootstrap
    /// address; it serves until SIGTERM or Ctrl-C.
    DevKafka {
        /// Partitions of each topic.
        #[arg(long, default_value_t = 3)]
        partitions: i32,
        /// Topics to create.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "market.trades,market.trades.dlq"
        )]
        topics: Vec<String>,
        /// Brokers in the cluster.
        #[arg(long, default_value_t = 1)]
        brokers: i32,
        /// Also stop when stdin closes (a parent process that dies takes the broker with it).
        #[arg(long)]
        exit_on_stdin_close: bool,
    },
    /// Benchmark the ingestor: messages pre-produced into the mock broker, then the time
    /// from start to the commit covering every offset (sample spec, rules and dedup on).
    BenchIngest {
        /// Messages.
        #[arg(long, default_value_t = 200_000)]
        rows: usize,
        /// Partitions.
        #[arg(long, default_value_t = 6)]
        partitions: i32,
        /// Wire format (avro is the Confluent wire format).
        #[arg(long, value_enum, default_value = "json")]
        format: GenFormat,
        /// max_batch_size.
        #[arg(long, default_value_t = 20_000)]
        batch: u32,
        /// commit_interval.
        #[arg(long, default_value = "1s")]
        commit_interval: String,
    },
    /// Benchmark the ingestor's latency: steady JSON load at --rate messages/s into the mock
    /// broker while the ingestor runs; prints the produce-to-committed latency percentiles
    /// and this process's RSS over the run, as one JSON line.
    BenchLatency {
        /// Messages per second.
        #[arg(long, default_value_t = 10_000)]
        rate: u32,
        /// Seconds of load.
        #[arg(long, default_value_t = 60)]
        seconds: u32,
        /// Seconds at the start left out of the figures.
        #[arg(long, default_value_t = 5)]
        warmup: u32,
        /// Partitions.
        #[arg(long, default_value_t = 3)]
        partitions: i32,
        /// commit_interval.
        #[arg(long, default_value = "100ms")]
        commit_interval: String,
        /// Turn the stream's small-file compaction off (to measure what it buys).
        #[arg(long)]
        no_compaction: bool,
    },
    /// The whole streaming path with no set-up: an embedded broker, a generated day of trades
    /// with faults and producer retries, the ingestor on the sample spec (rules, dedup,
    /// patterns) into ./demo-lake, and every offset reconciled.
    Demo {
        /// Where the tables go.
        #[arg(long, default_value = "demo-lake")]
        lake: PathBuf,
        /// Messages to generate.
        #[arg(long, default_value_t = 100_000)]
        rows: usize,
        /// Fraction of faulty messages.
        #[arg(long, default_value_t = 0.01)]
        faults: f64,
        /// Seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Messages per micro-batch.
        #[arg(long, default_value_t = 10_000)]
        batch_size: usize,
        /// Partitions of the embedded topic (rerun a lake with the same number).
        #[arg(long, default_value_t = 3)]
        partitions: i32,
    },
    /// Run a batch job (`finlake batch run daily-bars --date 2026-11-20`), or list them:
    /// the same as `finlake-batch` (try `finlake batch --help`).
    #[command(disable_help_flag = true)]
    Batch {
        /// Arguments of finlake-batch.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Is a day's data right? The same as `data-quality-check` (try `finlake dq --help`).
    #[command(disable_help_flag = true)]
    Dq {
        /// Arguments of data-quality-check.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Benchmark a batch job: a day of generated trades landed in <lake>/market/trades
    /// (once, when absent), then the job timed over it, writing its output each run; one
    /// JSON line per run and the median.
    BenchBatch {
        /// The lake (its trades table is written first when absent).
        #[arg(long, default_value = "bench-lake")]
        lake: PathBuf,
        /// Trades to generate.
        #[arg(long, default_value_t = 2_000_000)]
        rows: usize,
        /// The job.
        #[arg(long, default_value = "daily-bars")]
        job: String,
        /// Timed runs.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// The engine (one the job names).
        #[arg(long, value_enum)]
        engine: Option<finlake_batch::job::EngineKind>,
        /// Print each run's executed plan with its operators' metrics to stderr.
        #[arg(long)]
        profile: bool,
    },
    /// Benchmark the rule engine: ten rules and dedup over a Parquet file of trades
    /// (written first when absent); prints one JSON line per run and the median.
    BenchRules {
        /// The input file.
        #[arg(long, default_value = "bench-trades.parquet")]
        parquet: PathBuf,
        /// Rows to generate when the file is absent.
        #[arg(long, default_value_t = 10_000_000)]
        rows: usize,
        /// Timed runs.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Rows per batch read from the file.
        #[arg(long, default_value_t = 65_536)]
        batch_rows: usize,
        /// 1: everything on one thread; 2: read and evaluate on one, dedup on the other.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `finlake ingest` sets up its own logging from its own `--log-format` (json by default,
    // as in production); the first set-up would win
    if !matches!(cli.command, Command::Ingest { .. } | Command::Batch { .. }) {
        telemetry::init(cli.log_format);
    }
    match run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("finlake: {err:#}");
            let code = finlake_quality::error::class_of(err.as_ref()).exit_code();
            ExitCode::from(code as u8)
        }
    }
}

fn run(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Dq { args } => finlake_quality::cli::main(
            std::iter::once(std::ffi::OsString::from("finlake dq")).chain(args),
        ),
        Command::BenchBatch {
            lake,
            rows,
            job,
            runs,
            engine,
            profile,
        } => bench_batch(&lake, rows, &job, runs, engine, profile),
        Command::BenchRules {
            parquet,
            rows,
            runs,
            batch_rows,
            threads,
        } => {
            use crate::bench_rules as bench;
            if !parquet.exists() {
                eprintln!("writing {rows} trades to {}", parquet.display());
                bench::write_input(&parquet, rows, 7)?;
            }
            let mut secs = Vec::with_capacity(runs);
            for run in 0..runs.max(1) {
                let (took, stats) = bench::run_once(&parquet, batch_rows, threads)?;
                secs.push(took.as_secs_f64());
                println!(
                    "{}",
                    serde_json::json!({
                        "engine": "finlake", "threads": threads, "run": run, "seconds": took.as_secs_f64(),
                        "rows": stats.rows, "landed": stats.landed, "quarantined": stats.quarantined,
                        "dropped": stats.dropped, "flagged": stats.flagged,
                        "duplicate_rows": stats.dedup.duplicate_rows,
                        "conflicting_duplicates": stats.dedup.conflicting_duplicates,
                        "late": stats.dedup.late,
                        "rule_failures": stats.rules.iter().map(|(k, v)| (k.clone(), v.failed)).collect::<std::collections::BTreeMap<_, _>>(),
                    })
                );
            }
            secs.sort_by(f64::total_cmp);
            let median = secs[secs.len() / 2];
            println!(
                "{}",
                serde_json::json!({"engine": "finlake", "median_seconds": median})
            );
            Ok(0)
        }
        Command::Ingest { args } => {
            use clap::Parser as _;
            let args = finlake_ingest::cli::IngestArgs::try_parse_from(
                std::iter::once(std::ffi::OsString::from("finlake ingest")).chain(args),
            )
            .unwrap_or_else(|e| e.exit());
            Ok(finlake_ingest::cli::main(args))
        }
        Command::Batch { args } => {
            use clap::Parser as _;
            let args = finlake_batch::cli::BatchArgs::try_parse_from(
                std::iter::once(std::ffi::OsString::from("finlake batch")).chain(args),
            )
            .unwrap_or_else(|e| e.exit());
            Ok(finlake_batch::cli::main(args))
        }
        Command::Trace(args) => Ok(finlake_ingest::cli::trace_main(args)),
        Command::Restore(args) => Ok(finlake_ingest::cli::restore_main(args)),
        Command::DevKafka {
            partitions,
            topics,
            brokers,
            exit_on_stdin_close,
        } => {
            finlake_ingest::devkafka::serve(brokers, &topics, partitions, exit_on_stdin_close)?;
            Ok(0)
        }
        Command::BenchIngest {
            rows,
            partitions,
            format,
            batch,
            commit_interval,
        } => {
            let summary = finlake_ingest::bench::run(&finlake_ingest::bench::BenchOptions {
                rows,
                partitions,
                format: match format {
                    GenFormat::Json => WireFormat::Json,
                    GenFormat::Avro => WireFormat::Avro,
                },
                batch,
                commit_interval,
            })?;
            println!("{summary}");
            Ok(0)
        }
        Command::BenchLatency {
            rate,
            seconds,
            warmup,
            partitions,
            commit_interval,
            no_compaction,
        } => {
            let summary =
                finlake_ingest::bench::run_latency(&finlake_ingest::bench::LatencyOptions {
                    rate,
                    seconds,
                    warmup,
                    partitions,
                    commit_interval,
                    no_compaction,
                })?;
            println!("{summary}");
            Ok(0)
        }
        Command::Validate { files } => Ok(validate(&files)),
        Command::Avsc { source_type } => {
            let t: SourceType =
                serde_json::from_value(serde_json::Value::String(source_type.clone())).map_err(
                    |_| finlake_core::Error::Usage(format!("unknown source type `{source_type}`")),
                )?;
            println!("{}", finlake_core::schema::avro_schema(t));
            Ok(0)
        }
        Command::Crd => {
            print!("{}", spec::to_yaml(&spec::crd()));
            Ok(0)
        }
        Command::Generate {
            rows,
            format,
            kind,
            faults,
            seed,
            date,
            out,
            kafka,
            topic,
            confluent_schema_id,
            arrival_timestamps,
            manifest,
            avsc,
        } => {
            if !(0.0..=1.0).contains(&faults) {
                return Err(finlake_core::Error::Usage(format!(
                    "--faults must be between 0 and 1, got {faults}"
                ))
                .into());
            }
            let (symbols, calendar) = finlake_core::demo::embedded_refdata()?;
            let source_type = match kind {
                GenKind::Trade => SourceType::Trade,
                GenKind::Quote => SourceType::Quote,
            };
            let format = match format {
                GenFormat::Json => WireFormat::Json,
                GenFormat::Avro => WireFormat::Avro,
            };
            let opts = GenOptions {
                rows,
                faults,
                seed,
                format,
                date,
                source_type,
            };
            if let Some(bootstrap) = kafka {
                let rt = tokio::runtime::Runtime::new()?;
                let (expected, placed) = rt.block_on(finlake_ingest::devkafka::produce_feed(
                    &finlake_ingest::devkafka::ProduceOptions {
                        bootstrap: bootstrap.clone(),
                        topic: topic.clone(),
                        gen: opts,
                        confluent_schema_id,
                        window: 10_000,
                        arrival_timestamps,
                    },
                    &symbols,
                    &calendar,
                ))?;
                if let Some(path) = manifest {
                    let mut w = std::io::BufWriter::new(
                        std::fs::File::create(&path).map_err(io_err(&path))?,
                    );
                    for (e, p) in expected.iter().zip(&placed) {
                        let mut v = serde_json::to_value(e)?;
                        v["partition"] = p.partition.into();
                        v["offset"] = p.offset.into();
                        serde_json::to_writer(&mut w, &v)?;
                        w.write_all(b"\n").map_err(io_err(&path))?;
                    }
                    w.flush().map_err(io_err(&path))?;
                }
                eprintln!(
                    "produced {} messages to {topic} at {bootstrap}",
                    placed.len()
                );
                return Ok(0);
            }
            let Some(out) = out else {
                return Err(finlake_core::Error::Usage(
                    "give --out FILE or --kafka BOOTSTRAP".into(),
                )
                .into());
            };
            let g = generate::generate(&opts, &symbols, &calendar);
            let mut w = std::io::BufWriter::new(std::fs::File::create(&out).map_err(io_err(&out))?);
            for m in &g.messages {
                match format {
                    WireFormat::Json => {
                        w.write_all(m).map_err(io_err(&out))?;
                        w.write_all(b"\n").map_err(io_err(&out))?;
                    }
                    WireFormat::Avro => {
                        w.write_all(&(m.len() as u32).to_be_bytes())
                            .map_err(io_err(&out))?;
                        w.write_all(m).map_err(io_err(&out))?;
                    }
                }
            }
            w.flush().map_err(io_err(&out))?;
            if let Some(path) = manifest {
                let mut w =
                    std::io::BufWriter::new(std::fs::File::create(&path).map_err(io_err(&path))?);
                for e in &g.manifest {
                    serde_json::to_writer(&mut w, e)?;
                    w.write_all(b"\n").map_err(io_err(&path))?;
                }
                w.flush().map_err(io_err(&path))?;
            }
            if let Some(path) = avsc {
                std::fs::write(&path, finlake_core::schema::avro_schema(source_type))
                    .map_err(io_err(&path))?;
            }
            eprintln!("wrote {} messages to {}", g.messages.len(), out.display());
            Ok(0)
        }
        Command::Demo {
            lake,
            rows,
            faults,
            seed,
            batch_size,
            partitions,
        } => {
            let opts = finlake_ingest::demo::DemoOptions {
                lake,
                rows,
                faults,
                seed,
                partitions,
                batch_size,
            };
            let report = finlake_ingest::demo::run(&opts)?;
            let r = &report.reconciliation;
            let versions = report
                .start_versions
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            println!(
                "finlake demo: {} messages (seed {seed}, {:.1}% faults) through an embedded broker, {partitions} partitions",
                report.feed,
                faults * 100.0
            );
            if report.already_landed >= report.feed {
                println!("  all already in the lake (txn versions {versions}): nothing written");
            } else {
                if report.already_landed > 0 {
                    println!(
                        "  {} already in the lake (txn versions {versions}): the ingestor started after them",
                        report.already_landed
                    );
                }
                println!(
                    "  ingested in {:.1} s (sample spec: stages, rules, dedup, patterns)",
                    report.ingest_seconds
                );
            }
            println!(
                "  landed      {:>8} rows in {} (Delta version {})",
                r.landed, report.trades_uri, report.trades_version
            );
            println!(
                "  quarantined {:>8} rows in {}",
                r.quarantined, report.quarantine_uri
            );
            for ((stage, rule), n) in r.rejects() {
                println!("    {n:>6}  {stage:<10} {rule}");
            }
            println!(
                "  duplicates  {:>8} producer retries counted, not landed",
                r.duplicates
            );
            println!(
                "  alerts      {:>8} pattern matches in the alerts table",
                report.alerts
            );
            let flow = &report.order_flow;
            println!(
                "  order flow  {:>8} orders, {} executions (one per trade), {} NBBO quotes, accounts: market/orders, market/executions, market/quotes, refdata/accounts",
                flow.orders, flow.executions, flow.quotes
            );
            println!(
                "  reconciled per offset: landed + quarantined + duplicates = {} of {} messages; {} offsets out of place; {} differ from the manifest",
                r.landed + r.quarantined + r.duplicates,
                report.feed,
                r.problems.len(),
                report.manifest_mismatches
            );
            for p in r.problems.iter().take(5) {
                eprintln!("  problem: {p}");
            }
            for m in &report.mismatch_examples {
                eprintln!("  differs: {m}");
            }
            if !r.problems.is_empty() || report.manifest_mismatches > 0 {
                anyhow::bail!("the demo lost or misrouted messages: this is a bug");
            }
            Ok(0)
        }
    }
}

fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> finlake_core::Error + '_ {
    move |e| finlake_core::Error::io(path, e)
}

/// A spec's rules, table checks, dedup and patterns compiled as the ingestor and
/// `data-quality-check` compile them at start-up, against the pipeline's own table schema: a
/// spec `validate` passes does not fail later on a rule.
fn compile_rules(loaded: &spec::LoadedSpec) -> Result<(), spec::SpecError> {
    let canonical = finlake_quality::dqc::canonical_schema(loaded);
    finlake_quality::rules::RuleSet::compile(
        loaded,
        finlake_quality::enrich::enriched_schema(&canonical),
    )?;
    finlake_quality::patterns::PatternSet::compile(
        loaded,
        finlake_quality::engine::landed_schema(&canonical),
    )?;
    Ok(())
}

fn validate(files: &[PathBuf]) -> u8 {
    let mut ok = true;
    for file in files {
        match spec::load(file).and_then(|loaded| compile_rules(&loaded).map(|()| loaded)) {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    eprintln!("{}", w.render(file));
                }
                eprintln!(
                    "{}: valid ({})",
                    file.display(),
                    loaded.pipeline.metadata.name
                );
            }
            Err(spec::SpecError::Invalid { diagnostics, .. }) => {
                ok = false;
                for d in &diagnostics {
                    eprintln!("{}", d.render(file));
                }
                let errors = diagnostics
                    .iter()
                    .filter(|d| d.level == Level::Error)
                    .count();
                eprintln!("{}: invalid, {errors} error(s)", file.display());
            }
            Err(e) => {
                ok = false;
                eprintln!("{e}");
            }
        }
    }
    if ok {
        0
    } else {
        2
    }
}

/// `finlake bench-batch`: see the command's help.
fn bench_batch(
    lake: &Path,
    rows: usize,
    job: &str,
    runs: usize,
    engine: Option<finlake_batch::job::EngineKind>,
    profile: bool,
) -> anyhow::Result<u8> {
    use finlake_core::delta::{self, CommitExtras, TableSpec};
    let rt = tokio::runtime::Runtime::new()?;
    let lake = std::path::absolute(lake)?;
    let trades = lake.join("market/trades");
    let date = finlake_core::demo::demo_date();
    if !trades.exists() {
        eprintln!("writing {rows} trades to {}", trades.display());
        let day = finlake_quality::fixtures::trade_day(
            date,
            rows,
            7,
            finlake_quality::fixtures::Injected::default(),
            60_000_000,
        )?;
        rt.block_on(async {
            let mut table = delta::open_or_create(&TableSpec {
                uri: trades.display().to_string(),
                schema: day.batch.schema(),
                partition_by: vec!["trade_date".into()],
                checkpoint_interval: None,
                storage_options: Default::default(),
            })
            .await?;
            // a file per million rows, as compaction leaves a day
            for start in (0..day.batch.num_rows()).step_by(1_000_000) {
                let len = 1_000_000.min(day.batch.num_rows() - start);
                table = delta::append(
                    table,
                    vec![day.batch.slice(start, len)],
                    &CommitExtras::default(),
                )
                .await?;
            }
            anyhow::Ok(())
        })?;
    }
    if !lake.join("market/executions").exists() {
        // the order flow behind the trades, for the jobs that read it (execution-quality-605)
        eprintln!("writing the order flow behind the trades");
        let landed = rt.block_on(finlake_core::orderflow::land(
            &lake.display().to_string(),
            date,
            7,
            &Default::default(),
        ))?;
        eprintln!("{landed:?}");
    }
    let lake_uri = lake.display().to_string();
    let env = move |v: &str| (v == "LAKE_URI").then(|| lake_uri.clone());
    let file = finlake_batch::job::locate(Path::new("jobs"), job)?;
    let job = finlake_batch::job::load(&file, &env)?;
    let opts = finlake_batch::run::RunOptions {
        no_record: true,
        engine,
        profile,
        ..Default::default()
    };
    let mut secs = Vec::new();
    for run in 0..runs.max(1) {
        let t0 = std::time::Instant::now();
        let s = rt.block_on(finlake_batch::run::run(&job, date, &opts));
        let took = t0.elapsed().as_secs_f64();
        if s.exit_code != 0 {
            anyhow::bail!("the job failed: {}", s.error.unwrap_or_default());
        }
        secs.push(took);
        println!(
            "{}",
            serde_json::json!({"job": s.job, "engine": s.engine, "run": run, "seconds": took, "rows_in": s.rows_in,
                "rows_out": s.rows_out, "rows_per_second": s.rows_in as f64 / took})
        );
    }
    secs.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({"median_seconds": secs[secs.len() / 2], "runs": secs.len()})
    );
    Ok(0)
}
