//! Integration tests of finlake-core: one binary, a module per area.

mod compact;
mod delta;
mod feed;
mod guide;
mod moto;
mod refcache;
mod spec;
mod stages;

/// The repository root.
pub fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `msgs` through `stages` as one batch of partition 0 of topic `t`, the first message at
/// `first_offset`.
pub fn process(
    stages: &finlake_core::pipeline::Stages,
    msgs: &[&[u8]],
    first_offset: i64,
) -> finlake_core::pipeline::Outcome {
    let offsets: Vec<i64> = (first_offset..first_offset + msgs.len() as i64).collect();
    stages
        .process(
            msgs,
            &finlake_core::pipeline::BatchContext {
                topic: "t",
                partition: 0,
                offsets: &offsets,
                correlation_id: "test:1",
                ingested_at: 0,
                arrivals: None,
                message_ids: None,
            },
        )
        .unwrap()
}

/// The options finlake-core compiles into jemalloc (`lib.rs`) are the ones in effect: freed
/// pages go back to the system after 1 s, with `MADV_DONTNEED`.
#[cfg(feature = "jemalloc")]
#[test]
fn jemalloc_returns_freed_pages_within_a_second() {
    use tikv_jemalloc_ctl::{Access, AsName};
    let dirty: isize = b"opt.dirty_decay_ms\0".name().read().unwrap();
    let muzzy: isize = b"opt.muzzy_decay_ms\0".name().read().unwrap();
    assert_eq!((dirty, muzzy), (1000, 0));
    let a = finlake_core::telemetry::allocator_bytes().expect("jemalloc figures");
    assert!(a.allocated > 0 && a.resident >= a.allocated, "{a:?}");
}
