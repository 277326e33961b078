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
