//! Integration tests of finlake-quality: one binary, modules by area.

mod common;
mod dedup;
mod dqc;
#[path = "../../../core/tests/it/moto.rs"]
mod moto;
mod patterns;
mod rules;
