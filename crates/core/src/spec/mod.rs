//! The DataPipeline spec: parse, expand `${VAR}`, check the whole file, and emit the CRD.
//!
//! [`load`] is the one entry point: it returns the typed pipeline plus warnings, or every
//! problem in the file at once, each with `file:line:column` and a hint where one helps.
//! This module does not act on the spec; the stages that use each section do.

mod check;
mod types;
pub mod yaml;

use std::fmt;
use std::path::{Path, PathBuf};

use schemars::generate::SchemaSettings;
use serde_json::Value;

pub use check::suggest;
pub use types::*;
pub use yaml::Pos;

/// Error or warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// The file is invalid.
    Error,
    /// The file is valid, but something in it deserves attention.
    Warning,
}

/// One problem in a spec file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub level: Level,
    /// Where in the file.
    pub pos: Pos,
    /// The dotted path of the node (`spec.processing.config.batch_timeout`).
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it, where a hint helps.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// Renders as `file:line:col: error: message (hint)`.
    pub fn render(&self, file: &Path) -> String {
        let level = match self.level {
            Level::Error => "error",
            Level::Warning => "warning",
        };
        let mut s = format!(
            "{}:{}:{}: {level}: {}",
            file.display(),
            self.pos.line,
            self.pos.col,
            self.message
        );
        if let Some(h) = &self.hint {
            s.push_str(&format!(" ({h})"));
        }
        s
    }
}

/// Errors of loading a spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file has problems; all of them are listed.
    #[error("{}", render_all(file, diagnostics))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Every problem found, errors and warnings.
        diagnostics: Vec<Diagnostic>,
    },
}

fn render_all(file: &Path, diags: &[Diagnostic]) -> String {
    let errors: Vec<String> = diags
        .iter()
        .filter(|d| d.level == Level::Error)
        .map(|d| d.render(file))
        .collect();
    format!(
        "{} has {} error(s):\n{}",
        file.display(),
        errors.len(),
        errors.join("\n")
    )
}

/// A checked pipeline with the warnings found while checking it.
#[derive(Debug, Clone)]
pub struct LoadedSpec {
    /// The file it came from.
    pub file: PathBuf,
    /// The pipeline.
    pub pipeline: DataPipeline,
    /// Warnings (such as sections not enforced yet).
    pub warnings: Vec<Diagnostic>,
    /// The positioned YAML tree, so later stages (the rule compiler) can point at a line.
    pub root: yaml::Node,
}

impl LoadedSpec {
    /// The position of the deepest node that exists on `path`
    /// (`["spec", "validation", "rules", "0", "condition"]`).
    pub fn pos(&self, path: &[&str]) -> Pos {
        let owned: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        (0..=owned.len())
            .rev()
            .find_map(|n| self.root.at(&owned[..n]))
            .map(|n| n.pos)
            .unwrap_or_default()
    }

    /// A diagnostic at `path` in this spec, rendered `file:line:col: error: message`.
    pub fn error_at(&self, path: &[&str], message: String, hint: Option<String>) -> Diagnostic {
        Diagnostic {
            level: Level::Error,
            pos: self.pos(path),
            path: path.join("."),
            message,
            hint,
        }
    }
}

/// Reads, expands and checks a spec file, using the process environment for `${VAR}`.
pub fn load(path: &Path) -> Result<LoadedSpec, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_str(path, &text, &|name| std::env::var(name).ok())
}

/// Checks spec text; `file` names it in messages, `env` resolves `${VAR}`.
pub fn load_str(
    file: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LoadedSpec, SpecError> {
    let invalid = |diagnostics| SpecError::Invalid {
        file: file.to_path_buf(),
        diagnostics,
    };
    let mut root = yaml::parse(text).map_err(|(pos, message)| {
        invalid(vec![Diagnostic {
            level: Level::Error,
            pos,
            path: String::new(),
            message: format!("not valid YAML: {message}"),
            hint: None,
        }])
    })?;
    let mut env_errors = Vec::new();
    root.expand_env(env, &mut env_errors);
    let checker = check::Checker {
        root: &root,
        rewrites: Vec::new(),
        out: env_errors
            .into_iter()
            .map(|(pos, message)| Diagnostic {
                level: Level::Error,
                pos,
                path: String::new(),
                message,
                hint: None,
            })
            .collect(),
    };
    let schema = json_schema();
    let mut checker = checker;
    checker.structure(&root, &schema, &mut Vec::new());
    // Enum values in another case (`Avro`) are read in their canonical spelling.
    let (out, rewrites) = (checker.out, checker.rewrites);
    for (path, canonical) in &rewrites {
        root.set_scalar(path, canonical);
    }
    let mut checker = check::Checker {
        root: &root,
        rewrites: Vec::new(),
        out,
    };
    if checker.out.iter().any(|d| d.level == Level::Error) {
        // Still check the meaning of what is sound, so one run reports every problem: drop
        // the nodes that failed, and if what is left reads, check it too.
        let bad: Vec<&str> = checker
            .out
            .iter()
            .filter(|d| d.level == Level::Error)
            .map(|d| d.path.as_str())
            .collect();
        let pruned = root.to_json_without(&bad);
        if let Ok(partial) = serde_json::from_value::<DataPipeline>(pruned) {
            let before = checker.out.len();
            checker.meaning(&partial);
            // warnings about the partial value would repeat on the next run; keep errors
            let tail: Vec<Diagnostic> = checker
                .out
                .drain(before..)
                .filter(|d| d.level == Level::Error)
                .collect();
            checker.out.extend(tail);
        }
        checker.out.sort_by_key(|d| (d.pos.line, d.pos.col));
        return Err(invalid(checker.out));
    }
    let pipeline: DataPipeline = match serde_json::from_value(root.to_json()) {
        Ok(p) => p,
        Err(e) => {
            // The schema walk should have caught this; report it rather than panic.
            checker.out.push(Diagnostic {
                level: Level::Error,
                pos: root.pos,
                path: String::new(),
                message: e.to_string(),
                hint: None,
            });
            return Err(invalid(checker.out));
        }
    };
    checker.meaning(&pipeline);
    if checker.out.iter().any(|d| d.level == Level::Error) {
        return Err(invalid(checker.out));
    }
    let warnings = checker.out;
    Ok(LoadedSpec {
        file: file.to_path_buf(),
        pipeline,
        warnings,
        root,
    })
}

/// Reads YAML text of another document type (a batch job's `job.yaml`) the way [`load_str`]
/// reads a DataPipeline: `${VAR}` expanded by `env`, the whole tree checked against `T`'s
/// JSON schema so every unknown key, wrong type or missing field is reported with its line
/// and column, then deserialised. Returns the value and the positioned tree (for later
/// diagnostics that point into the file).
pub fn load_document<T>(
    file: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(T, yaml::Node), SpecError>
where
    T: schemars::JsonSchema + serde::de::DeserializeOwned,
{
    let invalid = |diagnostics| SpecError::Invalid {
        file: file.to_path_buf(),
        diagnostics,
    };
    let at = |pos, message| Diagnostic {
        level: Level::Error,
        pos,
        path: String::new(),
        message,
        hint: None,
    };
    let mut root = yaml::parse(text)
        .map_err(|(pos, message)| invalid(vec![at(pos, format!("not valid YAML: {message}"))]))?;
    let mut env_errors = Vec::new();
    root.expand_env(env, &mut env_errors);
    let mut checker = check::Checker {
        root: &root,
        rewrites: Vec::new(),
        out: env_errors.into_iter().map(|(p, m)| at(p, m)).collect(),
    };
    checker.structure(&root, &schema_for::<T>(), &mut Vec::new());
    let (out, rewrites) = (checker.out, checker.rewrites);
    if out.iter().any(|d| d.level == Level::Error) {
        let mut out = out;
        out.sort_by_key(|d| (d.pos.line, d.pos.col));
        return Err(invalid(out));
    }
    for (path, canonical) in &rewrites {
        root.set_scalar(path, canonical);
    }
    let value = serde_json::from_value(root.to_json())
        .map_err(|e| invalid(vec![at(root.pos, e.to_string())]))?;
    Ok((value, root))
}

/// `T`'s JSON schema as the checker reads it: OpenAPI 3 dialect, every subschema inlined.
fn schema_for<T: schemars::JsonSchema>() -> Value {
    let generator = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .into_generator();
    let mut schema = generator.into_root_schema_for::<T>().to_value();
    if let Some(obj) = schema.as_object_mut() {
        obj.remove("title");
        obj.remove("components");
    }
    schema
}

/// The JSON schema of a DataPipeline (OpenAPI 3 dialect, every subschema inlined),
/// with `additionalProperties: false` on every object: what `load` checks against.
pub fn json_schema() -> Value {
    schema_for::<DataPipeline>()
}

/// The Kubernetes CustomResourceDefinition for DataPipeline, as a JSON value.
///
/// Kubernetes structural schemas forbid `additionalProperties` next to `properties`; the
/// apiserver instead rejects unknown fields itself under strict field validation (kubectl's
/// default), which is the same rule `load` applies. So the CRD drops those markers.
pub fn crd() -> Value {
    let mut schema = json_schema();
    strip_for_kubernetes(&mut schema);
    serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "datapipelines.finlake.io"},
        "spec": {
            "group": "finlake.io",
            "names": {
                "kind": KIND,
                "listKind": "DataPipelineList",
                "plural": "datapipelines",
                "singular": "datapipeline",
                "shortNames": ["dp"]
            },
            "scope": "Namespaced",
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": schema}
            }]
        }
    })
}

fn strip_for_kubernetes(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.contains_key("properties") {
                map.remove("additionalProperties");
            }
            // `format: duration` is not an OpenAPI format Kubernetes knows; the pattern says it.
            if map.get("format").and_then(Value::as_str) == Some("duration") {
                map.remove("format");
            }
            // finlake's own notes are for the checker, not the apiserver
            map.remove(check::UNENFORCED);
            // A structural schema cannot give one field two shapes (`alerting`: a mapping or a
            // list), except int-or-string: such a field is left to finlake's own check.
            let shapes: std::collections::BTreeSet<&str> = map
                .get("anyOf")
                .and_then(Value::as_array)
                .map(|alts| {
                    alts.iter()
                        .filter_map(|a| a.get("type").and_then(Value::as_str))
                        .collect()
                })
                .unwrap_or_default();
            if shapes.contains("object") && shapes.contains("array") {
                let description = map.remove("description");
                map.clear();
                map.insert(
                    "x-kubernetes-preserve-unknown-fields".into(),
                    Value::Bool(true),
                );
                if let Some(d) = description {
                    map.insert("description".into(), d);
                }
                return;
            }
            if map.contains_key("x-kubernetes-int-or-string") {
                // the apiserver wants bare types in the branches
                if let Some(Value::Array(alts)) = map.get_mut("anyOf") {
                    for alt in alts.iter_mut() {
                        if let Value::Object(a) = alt {
                            a.remove("pattern");
                        }
                    }
                }
            }
            map.values_mut().for_each(strip_for_kubernetes);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_for_kubernetes),
        _ => {}
    }
}

/// Renders a JSON value as block YAML (for `finlake crd`).
pub fn to_yaml(value: &Value) -> String {
    fn conv(v: &Value) -> yaml_rust2::Yaml {
        use yaml_rust2::Yaml;
        match v {
            Value::Null => Yaml::Null,
            Value::Bool(b) => Yaml::Boolean(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Yaml::Integer(i),
                None => Yaml::Real(n.to_string()),
            },
            Value::String(s) => Yaml::String(s.clone()),
            Value::Array(a) => Yaml::Array(a.iter().map(conv).collect()),
            Value::Object(o) => Yaml::Hash(
                o.iter()
                    .map(|(k, v)| (Yaml::String(k.clone()), conv(v)))
                    .collect(),
            ),
        }
    }
    let mut out = String::new();
    yaml_rust2::YamlEmitter::new(&mut out)
        .dump(&conv(value))
        .expect("writing YAML to a String cannot fail");
    out.push('\n');
    out
}

impl fmt::Display for LoadedSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({})",
            self.pipeline.metadata.name,
            self.file.display()
        )
    }
}

/// `512MiB`, `2GiB`, `1.5GB`, `1000000` (bytes).
pub fn parse_bytes(text: &str) -> std::result::Result<usize, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 512MiB or 2GiB"))?;
    let mult: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}` (B, KB, MB, GB, KiB, MiB, GiB)"
            ))
        }
    };
    let bytes = n * mult;
    if !(1.0..1e15).contains(&bytes) {
        return Err(format!("`{text}` is not a sensible memory limit"));
    }
    Ok(bytes as usize)
}
