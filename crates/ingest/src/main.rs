//! `finlake-ingest`: the streaming ingestor's binary (also `finlake ingest`).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = finlake_ingest::cli::IngestArgs::parse();
    ExitCode::from(finlake_ingest::cli::main(args))
}
