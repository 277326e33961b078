//! Integration tests of finlake-core: one binary, a module per area.

mod delta;
mod feed;
mod guide;
mod refcache;
mod spec;
mod stages;

/// The repository root.
pub fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
