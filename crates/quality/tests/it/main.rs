//! Integration tests of finlake-quality: one binary, modules by area.

mod common;
mod dedup;
mod dqc;
mod rules;
