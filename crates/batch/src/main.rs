//! `finlake-batch`: the job runner's binary (also `finlake batch`).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = finlake_batch::cli::BatchArgs::parse();
    ExitCode::from(finlake_batch::cli::main(args))
}
