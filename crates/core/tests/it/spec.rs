use std::path::Path;

use finlake_core::spec::{self, Level, SpecError};

fn no_env(_: &str) -> Option<String> {
    None
}

fn errors(text: &str) -> Vec<spec::Diagnostic> {
    match spec::load_str(Path::new("p.yaml"), text, &no_env) {
        Err(SpecError::Invalid { diagnostics, .. }) => diagnostics
            .into_iter()
            .filter(|d| d.level == Level::Error)
            .collect(),
        other => panic!("expected errors, got {other:?}"),
    }
}

const MINIMAL: &str = "apiVersion: finlake.io/v1
kind: DataPipeline
metadata: {name: p}
spec:
  type: streaming
  sources:
    - {name: s, type: trade, format: JSON, config: {kafka_topic: t, bootstrap_servers: b}}
  destinations:
    - {name: d, type: datalake, config: {table_uri: /tmp/x}}
  processing:
    config: {max_batch_size: 10, batch_timeout: 10ms}
";

#[test]
fn every_sample_validates_and_round_trips() {
    for name in ["market-data-stream", "fx-rates", "trade-feed"] {
        let path = super::root().join(format!("samples/{name}.yaml"));
        let loaded = spec::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.pipeline.metadata.name, name);
        // serialise and read back: the same value
        let json = serde_json::to_string(&loaded.pipeline).unwrap();
        let again = spec::load_str(&path, &json, &no_env).unwrap();
        assert_eq!(again.pipeline, loaded.pipeline);
    }
}

#[test]
fn unknown_key_names_key_line_column_and_hint() {
    let text = MINIMAL.replace("batch_timeout: 10ms", "batch_timout: 10ms");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    let e = &errs[0];
    assert!(e.message.contains("`batch_timout`"), "{}", e.message);
    assert_eq!((e.pos.line, e.pos.col), (11, 34));
    assert_eq!(e.hint.as_deref(), Some("did you mean `batch_timeout`?"));
    assert!(e
        .render(Path::new("p.yaml"))
        .starts_with("p.yaml:11:34: error:"));
}

#[test]
fn three_problems_are_reported_in_one_run() {
    let text = MINIMAL
        .replace("metadata: {name: p}", "metadata: {name: p, colour: red}")
        .replace("batch_timeout: 10ms", "batch_timeout: 10 parsecs")
        .replace(
            "config: {table_uri: /tmp/x}",
            "config: {partition_by: [trade_date]}",
        );
    let errs = errors(&text);
    let msgs: Vec<String> = errs
        .iter()
        .map(|e| format!("{}:{} {}", e.pos.line, e.pos.col, e.message))
        .collect();
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("3:") && m.contains("colour")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("11:") && m.contains("10 parsecs")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("9:") && m.contains("table_uri")),
        "{msgs:?}"
    );
}

#[test]
fn missing_environment_variable_is_named() {
    let text = MINIMAL.replace(
        "bootstrap_servers: b",
        "bootstrap_servers: \"${KAFKA_HOST}\"",
    );
    let errs = errors(&text);
    assert!(errs[0].message.contains("`KAFKA_HOST`"), "{errs:?}");
    let with_default = MINIMAL.replace(
        "bootstrap_servers: b",
        "bootstrap_servers: \"${KAFKA_HOST:-k:9092}\"",
    );
    let ok = spec::load_str(Path::new("p.yaml"), &with_default, &no_env).unwrap();
    assert_eq!(
        ok.pipeline.spec.sources[0]
            .config
            .bootstrap_servers
            .as_deref(),
        Some("k:9092")
    );
}

#[test]
fn unknown_enum_value_and_bad_type_get_hints() {
    let text = MINIMAL
        .replace("type: trade", "type: trades")
        .replace("max_batch_size: 10", "max_batch_size: lots");
    let errs = errors(&text);
    assert!(
        errs.iter().any(|e| e.message.contains("`trades`")
            && e.hint.as_deref() == Some("did you mean `trade`?")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.message.contains("max_batch_size") && e.message.contains("integer")),
        "{errs:?}"
    );
}

#[test]
fn unenforced_sections_warn_instead_of_passing_silently() {
    let text = MINIMAL.to_string()
        + "  alerting:\n    - {name: gap, condition: \"x > 1\", destinations: [\"slack://desk\"]}\n";
    let loaded = spec::load_str(Path::new("p.yaml"), &text, &no_env).unwrap();
    assert!(loaded
        .warnings
        .iter()
        .any(|w| w.message.contains("alerting") && w.message.contains("not acted on")));
}

#[test]
fn deploy_crd_is_the_output_of_finlake_crd() {
    let committed = std::fs::read_to_string(super::root().join("deploy/crd.yaml")).unwrap();
    assert_eq!(
        committed,
        spec::to_yaml(&spec::crd()),
        "deploy/crd.yaml is stale: run `finlake crd > deploy/crd.yaml`"
    );
}

#[test]
fn sample_avro_schemas_are_the_built_in_ones() {
    use finlake_core::spec::SourceType;
    for (file, t) in [
        ("fx_rate", SourceType::FxRate),
        ("execution_report", SourceType::ExecutionReport),
        ("trade", SourceType::Trade),
    ] {
        let committed =
            std::fs::read_to_string(super::root().join(format!("samples/avro/{file}.avsc")))
                .unwrap();
        assert_eq!(
            committed.trim_end(),
            finlake_core::schema::avro_schema(t),
            "samples/avro/{file}.avsc is stale"
        );
    }
}

#[test]
fn enum_values_are_matched_without_regard_to_case() {
    let text = MINIMAL
        .replace("format: JSON", "format: Json")
        .replace("type: trade", "type: Trade");
    let loaded = spec::load_str(Path::new("p.yaml"), &text, &no_env).unwrap();
    assert_eq!(loaded.pipeline.spec.sources[0].format, spec::Format::Json);
    assert_eq!(
        loaded.pipeline.spec.sources[0].source_type,
        spec::SourceType::Trade
    );
    // a value that is not a variant in any case stays an error with a hint
    let errs = errors(&MINIMAL.replace("format: JSON", "format: Jsn"));
    assert!(errs[0].message.contains("unknown value `Jsn`"), "{errs:?}");
}
