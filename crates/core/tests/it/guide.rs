//! The operations guide is the spec's vocabulary: every YAML block of
//! `../shared/reference/operations-guide.md`, and the bodies of its `kubectl patch` commands,
//! pasted into one spec, validate with zero errors; each key finlake does not act on is a
//! warning at its own line.

use std::path::{Path, PathBuf};

use finlake_core::spec::{self, Level, SpecError};
use yaml_rust2::yaml::Hash;
use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};

fn guide_path() -> PathBuf {
    let p = super::root().join("../shared/reference/operations-guide.md");
    assert!(
        p.exists(),
        "the operations guide is read from {} (shared/ beside the checkout)",
        p.display()
    );
    p
}

/// The guide's YAML blocks (those with content) and its `kubectl patch -p '<json>'` bodies.
fn guide_blocks() -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(guide_path()).unwrap();
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let fence = line.trim_start();
        if fence == "```yaml" {
            let mut body = String::new();
            for (_, l) in lines.by_ref() {
                if l.trim_start().starts_with("```") {
                    break;
                }
                body.push_str(l);
                body.push('\n');
            }
            let meaningful = body
                .lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
            if meaningful {
                out.push((i + 2, body));
            }
        } else if line.contains("kubectl patch") {
            if let Some(json) = line
                .split(" -p '")
                .nth(1)
                .and_then(|r| r.split('\'').next())
            {
                // the patch body is `{"spec": {...}}`: JSON is YAML
                out.push((i + 1, json.to_string()));
            }
        }
    }
    out
}

/// Deep merge: mappings merge key by key, lists concatenate, a later scalar wins.
fn merge(into: &mut Yaml, from: Yaml) {
    match (into, from) {
        (Yaml::Hash(a), Yaml::Hash(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (Yaml::Array(a), Yaml::Array(b)) => a.extend(b),
        (slot, v) => *slot = v,
    }
}

fn one_spec() -> String {
    let base = "apiVersion: finlake.io/v1
kind: DataPipeline
metadata: {name: guide-pipeline, namespace: data-prod}
spec:
  type: streaming
  destinations:
    - {name: lake, type: datalake, technology: delta, config: {table_uri: /tmp/guide-lake}}
";
    let mut doc = YamlLoader::load_from_str(base).unwrap().remove(0);
    let mut spec_part = Yaml::Hash(Hash::new());
    let blocks = guide_blocks();
    assert!(
        blocks.len() >= 25,
        "only {} blocks found in the guide",
        blocks.len()
    );
    for (line, block) in blocks {
        let y = YamlLoader::load_from_str(&block)
            .unwrap_or_else(|e| panic!("guide line {line}: {e}"))
            .remove(0);
        // patch bodies start at `spec:`; the other blocks are keys of the spec
        let y = match y {
            Yaml::Hash(mut h) if h.contains_key(&Yaml::String("spec".into())) => {
                h.remove(&Yaml::String("spec".into())).unwrap_or(Yaml::Null)
            }
            other => other,
        };
        merge(&mut spec_part, y);
    }
    if let Yaml::Hash(h) = &mut doc {
        merge(h.get_mut(&Yaml::String("spec".into())).unwrap(), spec_part);
    }
    let mut out = String::new();
    YamlEmitter::new(&mut out).dump(&doc).unwrap();
    out
}

#[test]
fn every_block_of_the_operations_guide_validates_with_zero_errors() {
    let text = one_spec();
    let loaded = match spec::load_str(Path::new("guide.yaml"), &text, &|_| None) {
        Ok(l) => l,
        Err(SpecError::Invalid { diagnostics, .. }) => panic!(
            "{} errors:\n{}\n--- the spec:\n{text}",
            diagnostics
                .iter()
                .filter(|d| d.level == Level::Error)
                .count(),
            diagnostics
                .iter()
                .map(|d| d.render(Path::new("guide.yaml")))
                .collect::<Vec<_>>()
                .join("\n")
        ),
        Err(e) => panic!("{e}"),
    };
    let s = &loaded.pipeline.spec;
    // what finlake acts on is read, not only accepted
    assert_eq!(s.sources.len(), 2);
    assert_eq!(s.sources[1].format, spec::Format::Avro, "`Avro` is AVRO");
    assert_eq!(s.sources[0].source_type, spec::SourceType::TradeFeed);
    let proc = s.processing.as_ref().unwrap();
    assert_eq!(
        proc.config.commit_every().map(|d| d.0),
        Some(std::time::Duration::from_secs(1)),
        "commit_interval: 1000ms"
    );
    assert_eq!(proc.config.parallelism, Some(64));
    assert_eq!(
        proc.config
            .max_poll_records
            .as_ref()
            .and_then(|m| m.value()),
        Some(5000)
    );
    assert_eq!(s.desired_state, Some(spec::DesiredState::Running));
    let enrich = s
        .transformations
        .iter()
        .find(|t| t.transform_type == spec::TransformType::Enrich)
        .unwrap();
    assert_eq!(enrich.config.rate_table(), Some("fx-rates"));
    assert_eq!(enrich.config.rate_fallback(), Some("previous_day"));
}

#[test]
fn each_unenforced_key_warns_at_its_own_line() {
    let text = one_spec();
    let lines: Vec<&str> = text.lines().collect();
    let loaded = spec::load_str(Path::new("guide.yaml"), &text, &|_| None).unwrap();
    let w = &loaded.warnings;
    for key in [
        "spec.resources",
        "spec.network",
        "spec.storage",
        "spec.backup",
        "spec.replication",
        "spec.infrastructure_monitoring",
        "spec.security.encryption",
        "spec.security.dataClassification",
        "spec.monitoring.dashboard",
        "spec.processing.engine",
        "spec.processing.config.num_stream_threads",
        "spec.sources.0.config.database",
        "spec.sources.1.config.schema_registry",
        "spec.alerting",
    ] {
        assert!(
            w.iter().any(|d| d.path == key),
            "no warning for {key}: {:#?}",
            w.iter().map(|d| &d.path).collect::<Vec<_>>()
        );
    }
    for d in w {
        let last = d.path.rsplit('.').next().unwrap();
        let line = lines[d.pos.line - 1];
        assert!(
            line.contains(last),
            "warning `{}` points at line {} which is `{line}`",
            d.message,
            d.pos.line
        );
        assert!(
            d.message.contains("not acted on") || d.message.contains("not written yet"),
            "a warning says why: {}",
            d.message
        );
    }
}

#[test]
fn an_unknown_key_stays_an_error_with_a_hint() {
    let text = one_spec().replace("refresh_rate", "refresh_rat");
    match spec::load_str(Path::new("guide.yaml"), &text, &|_| None) {
        Err(SpecError::Invalid { diagnostics, .. }) => {
            let e = diagnostics
                .iter()
                .find(|d| d.level == Level::Error)
                .unwrap();
            assert!(e.message.contains("refresh_rat"), "{}", e.message);
            assert_eq!(e.hint.as_deref(), Some("did you mean `refresh_rate`?"));
        }
        other => panic!("expected an error, got {other:?}"),
    }
}
