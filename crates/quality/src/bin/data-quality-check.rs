//! `data-quality-check`: see [`finlake_quality::cli`].

fn main() {
    finlake_quality::cli::main(std::env::args_os())
}
