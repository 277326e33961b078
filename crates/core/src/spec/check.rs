//! Whole-file checking of a spec: every problem of a file, each with line, column and a hint.
//!
//! Structure (unknown keys, types, enums, durations, required keys) is checked by walking the
//! positioned YAML tree against the JSON schema derived from the Rust types, so the checker,
//! serde and the CRD can never disagree. Meaning (a datalake destination needs a `table_uri`,
//! names are unique, actions are known) is checked afterwards on the typed value.

use serde_json::Value;

use super::types::{DataPipeline, DestinationType, Duration, Format, TransformType};
use super::yaml::{Node, NodeKind, Pos};
use super::{Diagnostic, Level};

/// Collects diagnostics for one file.
pub(crate) struct Checker<'a> {
    pub(crate) root: &'a Node,
    pub(crate) out: Vec<Diagnostic>,
    /// Enum values written in another case (`Avro`), with their canonical spelling (`AVRO`):
    /// applied to the tree before serde reads it.
    pub(crate) rewrites: Vec<(Vec<String>, String)>,
}

/// The schema key that marks a key finlake accepts but does not act on; its value is the
/// reason, shown in the warning at the key's line.
pub const UNENFORCED: &str = "x-finlake-unenforced";

impl Checker<'_> {
    fn push(
        &mut self,
        level: Level,
        pos: Pos,
        path: &[String],
        message: String,
        hint: Option<String>,
    ) {
        self.out.push(Diagnostic {
            level,
            pos,
            path: path.join("."),
            message,
            hint,
        });
    }

    /// Checks `node` against `schema` (an inlined OpenAPI-style schema).
    pub(crate) fn structure(&mut self, node: &Node, schema: &Value, path: &mut Vec<String>) {
        let is_null = matches!(&node.kind, NodeKind::Scalar { plain: true, value } if matches!(value.as_str(), "" | "~" | "null"));
        if is_null && schema.get("nullable").and_then(Value::as_bool) == Some(true) {
            return;
        }
        // documented enum variants come as `oneOf: [{enum: [v], ...}, ...]`
        let one_of_values: Option<Vec<&str>> = schema
            .get("oneOf")
            .and_then(Value::as_array)
            .and_then(|alts| {
                alts.iter()
                    .map(|a| {
                        a.get("enum")
                            .and_then(Value::as_array)
                            .map(|e| e.iter().filter_map(Value::as_str).collect::<Vec<_>>())
                    })
                    .collect::<Option<Vec<_>>>()
                    .map(|v| v.concat())
            });
        if let Some(allowed) = one_of_values {
            let string_schema = serde_json::json!({"type": "string", "enum": allowed});
            return self.structure(node, &string_schema, path);
        }
        // untagged alternatives (`alerting`: a mapping of channels or a list of rules)
        if let Some(alts) = schema.get("anyOf").and_then(Value::as_array) {
            return self.alternatives(node, alts, path);
        }
        let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
        match (ty, &node.kind) {
            ("object", NodeKind::Map(entries)) => {
                let props = schema.get("properties").and_then(Value::as_object);
                let additional = schema.get("additionalProperties");
                for (key, key_pos, child) in entries {
                    path.push(key.clone());
                    match props.and_then(|p| p.get(key)) {
                        Some(sub) => {
                            if let Some(note) = sub.get(UNENFORCED).and_then(Value::as_str) {
                                self.push(
                                    Level::Warning,
                                    *key_pos,
                                    path,
                                    format!(
                                        "`{}` is accepted but not acted on: {note}",
                                        display_path(path)
                                    ),
                                    None,
                                );
                            }
                            self.structure(child, sub, path)
                        }
                        None => match additional {
                            Some(Value::Bool(false)) => {
                                let known: Vec<&str> = props
                                    .map(|p| p.keys().map(String::as_str).collect())
                                    .unwrap_or_default();
                                let parent = &path[..path.len() - 1];
                                self.push(
                                    Level::Error,
                                    *key_pos,
                                    path,
                                    format!("unknown key `{key}` in `{}`", display_path(parent)),
                                    Some(suggest(key, &known)),
                                );
                            }
                            Some(sub @ Value::Object(_)) => self.structure(child, sub, path),
                            _ => {}
                        },
                    }
                    path.pop();
                }
                if let Some(required) = schema.get("required").and_then(Value::as_array) {
                    for name in required.iter().filter_map(Value::as_str) {
                        if !entries.iter().any(|(k, _, _)| k == name) {
                            self.push(
                                Level::Error,
                                node.pos,
                                path,
                                format!(
                                    "missing required key `{name}` in `{}`",
                                    display_path(path)
                                ),
                                None,
                            );
                        }
                    }
                }
            }
            ("array", NodeKind::Seq(items)) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        path.push(i.to_string());
                        self.structure(item, item_schema, path);
                        path.pop();
                    }
                }
            }
            ("string" | "integer" | "number" | "boolean", NodeKind::Scalar { .. }) => {
                self.scalar(node, ty, schema, path)
            }
            ("", _) => {}
            (expected, _) => {
                let found = match &node.kind {
                    NodeKind::Map(_) => "a mapping",
                    NodeKind::Seq(_) => "a list",
                    NodeKind::Scalar { .. } => "a single value",
                };
                let expected = match expected {
                    "object" => "a mapping of keys",
                    "array" => "a list",
                    other => other,
                };
                self.push(
                    Level::Error,
                    node.pos,
                    path,
                    format!("`{}` must be {expected}, found {found}", display_path(path)),
                    None,
                );
            }
        }
    }

    /// A node that may take one of several shapes: the first alternative with no error wins;
    /// otherwise the errors of the alternative whose shape matches the node are reported.
    fn alternatives(&mut self, node: &Node, alts: &[Value], path: &mut Vec<String>) {
        let mut matching_shape: Option<Checker<'_>> = None;
        let mut first: Option<Checker<'_>> = None;
        let node_is_null = matches!(&node.kind, NodeKind::Scalar { plain: true, value } if matches!(value.as_str(), "" | "~" | "null"));
        for alt in alts {
            // `Option<T>`'s null branch (`enum: [null]`) matches a null and nothing else
            let null_only = alt
                .get("enum")
                .and_then(Value::as_array)
                .is_some_and(|e| e.iter().all(Value::is_null));
            if null_only {
                if node_is_null {
                    return;
                }
                continue;
            }
            let mut trial = Checker {
                root: self.root,
                out: Vec::new(),
                rewrites: Vec::new(),
            };
            trial.structure(node, alt, path);
            if !trial.out.iter().any(|d| d.level == Level::Error) {
                self.out.append(&mut trial.out);
                self.rewrites.append(&mut trial.rewrites);
                return;
            }
            let shape = alt.get("type").and_then(Value::as_str);
            let fits = matches!(
                (&node.kind, shape),
                (NodeKind::Map(_), Some("object"))
                    | (NodeKind::Seq(_), Some("array"))
                    | (
                        NodeKind::Scalar { .. },
                        Some("string" | "integer" | "number" | "boolean")
                    )
            );
            if fits && matching_shape.is_none() {
                matching_shape = Some(trial);
            } else if first.is_none() {
                first = Some(trial);
            }
        }
        match matching_shape.or(first) {
            Some(mut trial) => self.out.append(&mut trial.out),
            None => {
                let shapes: Vec<&str> = alts
                    .iter()
                    .filter_map(|a| a.get("type").and_then(Value::as_str))
                    .map(|t| match t {
                        "object" => "a mapping",
                        "array" => "a list",
                        other => other,
                    })
                    .collect();
                self.push(
                    Level::Error,
                    node.pos,
                    path,
                    format!("`{}` must be {}", display_path(path), shapes.join(" or ")),
                    None,
                );
            }
        }
    }

    fn scalar(&mut self, node: &Node, ty: &str, schema: &Value, path: &[String]) {
        let value = node.to_json();
        let ok = match ty {
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => true,
        };
        if !ok {
            let shown = match &value {
                Value::String(s) => format!("`{s}`"),
                other => format!("`{other}`"),
            };
            let hint = (ty == "string" && !value.is_string())
                .then(|| "quote it to make it a string".to_string());
            self.push(
                Level::Error,
                node.pos,
                path,
                format!(
                    "`{}` must be {} {ty}, found {shown}",
                    display_path(path),
                    if ty == "integer" { "an" } else { "a" }
                ),
                hint,
            );
            return;
        }
        if let (Some(allowed), Value::String(s)) =
            (schema.get("enum").and_then(Value::as_array), &value)
        {
            let allowed: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
            let other_case = allowed
                .iter()
                .find(|a| a.eq_ignore_ascii_case(s) && **a != s.as_str());
            if let Some(canonical) = other_case {
                self.rewrites.push((path.to_vec(), canonical.to_string()));
            } else if !allowed.contains(&s.as_str()) {
                self.push(
                    Level::Error,
                    node.pos,
                    path,
                    format!("unknown value `{s}` for `{}`", display_path(path)),
                    Some(suggest(s, &allowed)),
                );
            }
        }
        if schema.get("format").and_then(Value::as_str) == Some("duration") {
            if let Value::String(s) = &value {
                if let Err(e) = Duration::parse(s) {
                    self.push(Level::Error, node.pos, path, e, None);
                }
            }
        }
        if let (Some(min), Some(v)) = (
            schema.get("minimum").and_then(Value::as_f64),
            value.as_f64(),
        ) {
            if v < min {
                self.push(
                    Level::Error,
                    node.pos,
                    path,
                    format!("`{}` must be at least {min}, found {v}", display_path(path)),
                    None,
                );
            }
        }
    }

    fn at(&mut self, level: Level, path: &[&str], message: String, hint: Option<String>) {
        let owned: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        // Point at the key itself when the path ends in one (its value may start on the next
        // line), else at the deepest node that exists on the path.
        let key_pos =
            owned
                .split_last()
                .and_then(|(last, parent)| match &self.root.at(parent)?.kind {
                    NodeKind::Map(entries) => entries
                        .iter()
                        .find(|(k, _, _)| k == last)
                        .map(|(_, p, _)| *p),
                    _ => None,
                });
        let pos = key_pos
            .or_else(|| {
                (0..=owned.len())
                    .rev()
                    .find_map(|n| self.root.at(&owned[..n]))
                    .map(|n| n.pos)
            })
            .unwrap_or_default();
        self.push(level, pos, &owned, message, hint);
    }

    /// Checks what the schema cannot say: required settings per kind, unique names, actions.
    pub(crate) fn meaning(&mut self, p: &DataPipeline) {
        if p.api_version != super::types::API_VERSION {
            self.at(
                Level::Error,
                &["apiVersion"],
                format!(
                    "apiVersion must be `{}`, found `{}`",
                    super::types::API_VERSION,
                    p.api_version
                ),
                None,
            );
        }
        if p.kind != super::types::KIND {
            self.at(
                Level::Error,
                &["kind"],
                format!("kind must be `{}`, found `{}`", super::types::KIND, p.kind),
                None,
            );
        }
        let name = &p.metadata.name;
        let dns_label = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if !dns_label {
            self.at(
                Level::Error,
                &["metadata", "name"],
                format!("metadata.name `{name}` must be a DNS-1123 label: lower-case letters, digits and `-`"),
                None,
            );
        }
        let s = &p.spec;
        if s.sources.is_empty() {
            self.at(
                Level::Error,
                &["spec", "sources"],
                "a pipeline needs at least one source".into(),
                None,
            );
        }
        for (i, src) in s.sources.iter().enumerate() {
            let idx = i.to_string();
            let change_stream = src.config.database.is_some() || src.config.table.is_some();
            if src.config.kafka_topic.is_none() && !change_stream {
                self.at(
                    Level::Error,
                    &["spec", "sources", &idx, "config"],
                    format!("source `{}` has no `kafka_topic`", src.name),
                    Some("such as `kafka_topic: market.trades`".into()),
                );
            }
            if src.format == Format::AvroConfluent
                && src.config.schema_id.is_none()
                && src.config.schema_registry.is_none()
            {
                self.at(
                    Level::Error,
                    &["spec", "sources", &idx, "config"],
                    format!(
                        "source `{}` is AVRO_CONFLUENT but has no `schema_id` (nor a `schema_registry`)",
                        src.name
                    ),
                    None,
                );
            }
        }
        for (i, t) in s.transformations.iter().enumerate() {
            let idx = i.to_string();
            match t.transform_type {
                TransformType::Normalize => {
                    if t.config.mapping_table.is_none() {
                        self.at(
                            Level::Error,
                            &["spec", "transformations", &idx, "config"],
                            format!(
                                "normalize transformation `{}` needs `mapping_table`",
                                t.name
                            ),
                            Some("such as `mapping_table: symbol_mapping`".into()),
                        );
                    }
                    if let Some(std) = &t.config.standard {
                        if std != "ISIN" {
                            self.at(
                                Level::Error,
                                &["spec", "transformations", &idx, "config", "standard"],
                                format!("unsupported identifier standard `{std}`"),
                                Some("the supported standard is `ISIN`".into()),
                            );
                        }
                    }
                }
                TransformType::Enrich if t.config.base_currency.is_none() => {
                    self.at(
                        Level::Error,
                        &["spec", "transformations", &idx, "config"],
                        format!(
                            "enrich transformation `{}` needs `base_currency`: finlake's enrichment \
                             is currency conversion (the operations guide's example)",
                            t.name
                        ),
                        Some("such as `base_currency: USD`".into()),
                    );
                }
                TransformType::CurrencyConversion | TransformType::Enrich => {
                    if let Some(rt) = &t.config.rate_type {
                        if !rt.eq_ignore_ascii_case("spot") {
                            self.at(
                                Level::Error,
                                &["spec", "transformations", &idx, "config", "rate_type"],
                                format!(
                                    "unsupported rate type `{rt}`: finlake converts at spot rates"
                                ),
                                Some("use `rate_type: spot`".into()),
                            );
                        }
                    }
                    if let Some(ccy) = &t.config.base_currency {
                        if !crate::transform::is_iso_currency(ccy) {
                            self.at(
                                Level::Error,
                                &["spec", "transformations", &idx, "config", "base_currency"],
                                format!("`{ccy}` is not an ISO 4217 currency code"),
                                None,
                            );
                        }
                    }
                    if let Some(fb) = t.config.rate_fallback() {
                        if fb != "previous_day" && fb != "none" {
                            let key = if t.config.fallback.is_some() {
                                "fallback"
                            } else {
                                "fallback_rate"
                            };
                            self.at(
                                Level::Error,
                                &["spec", "transformations", &idx, "config", key],
                                format!("unknown rate fallback `{fb}`"),
                                Some(suggest(fb, &["previous_day", "none"])),
                            );
                        }
                    }
                }
            }
        }
        for (i, rule) in s.business_rules.iter().enumerate() {
            let idx = i.to_string();
            self.action(
                &["spec", "business_rules", &idx, "action"],
                &rule.action,
                true,
            );
            if rule.action == "deduplicate" {
                if rule.keys.is_empty() || rule.window.is_none() {
                    self.at(
                        Level::Error,
                        &["spec", "business_rules", &idx],
                        format!("deduplicate rule `{}` needs `keys` and `window`", rule.name),
                        None,
                    );
                }
            } else if rule.condition.is_none() {
                self.at(
                    Level::Error,
                    &["spec", "business_rules", &idx],
                    format!("business rule `{}` needs a `condition`", rule.name),
                    None,
                );
            }
        }
        if let Some(v) = &s.validation {
            for (i, rule) in v.rules.iter().enumerate() {
                if let Some(action) = &rule.action {
                    let idx = i.to_string();
                    self.action(
                        &["spec", "validation", "rules", &idx, "action"],
                        action,
                        false,
                    );
                }
            }
        }
        if !s
            .destinations
            .iter()
            .any(|d| d.destination_type == DestinationType::Datalake)
        {
            self.at(
                Level::Error,
                &["spec", "destinations"],
                "a pipeline needs at least one `datalake` destination".into(),
                None,
            );
        }
        for (i, d) in s.destinations.iter().enumerate() {
            let idx = i.to_string();
            match d.destination_type {
                DestinationType::Datalake | DestinationType::Quarantine => {
                    if d.config.table_uri.is_none() {
                        self.at(
                            Level::Error,
                            &["spec", "destinations", &idx, "config"],
                            format!("destination `{}` has no `table_uri`", d.name),
                            Some("such as `table_uri: s3://lake/market/trades`".into()),
                        );
                    }
                }
                DestinationType::Cache => self.at(
                    Level::Warning,
                    &["spec", "destinations", &idx, "type"],
                    format!(
                        "cache destination `{}` is accepted but not written yet: finlake lands \
                         tables; a cache of latest values comes with the ingestor",
                        d.name
                    ),
                    None,
                ),
                DestinationType::DeadLetter => {
                    if d.config.topic.is_none() {
                        self.at(
                            Level::Error,
                            &["spec", "destinations", &idx, "config"],
                            format!("dead_letter destination `{}` has no `topic`", d.name),
                            None,
                        );
                    }
                }
            }
            if d.config.checkpoint_interval == Some(0) {
                self.at(
                    Level::Error,
                    &[
                        "spec",
                        "destinations",
                        &idx,
                        "config",
                        "checkpoint_interval",
                    ],
                    "checkpoint_interval must be at least 1".into(),
                    None,
                );
            }
        }
        if let Some(proc) = &s.processing {
            if proc.processing_type.is_some_and(|t| t != s.pipeline_type) {
                self.at(
                    Level::Error,
                    &["spec", "processing", "type"],
                    "`processing.type` disagrees with `spec.type`".into(),
                    None,
                );
            }
            if let Some(engine) = proc
                .engine
                .as_deref()
                .filter(|e| !e.eq_ignore_ascii_case("finlake"))
            {
                self.at(
                    Level::Warning,
                    &["spec", "processing", "engine"],
                    format!(
                        "`spec.processing.engine` is accepted but not acted on: `{engine}` is \
                         another engine; finlake runs the pipeline on its own"
                    ),
                    None,
                );
            }
            if let Some(m) = &proc.config.max_poll_records {
                if m.value().is_none_or(|v| v == 0) {
                    self.at(
                        Level::Error,
                        &["spec", "processing", "config", "max_poll_records"],
                        "max_poll_records must be a whole number of at least 1".into(),
                        None,
                    );
                }
            }
            if let (Some(commit), Some(_)) = (
                proc.config.commit_interval,
                proc.config.checkpointing.as_ref().and_then(|c| c.interval),
            ) {
                self.at(
                    Level::Warning,
                    &["spec", "processing", "config", "checkpointing"],
                    format!(
                        "`spec.processing.config.checkpointing` is accepted but not acted on: \
                         `commit_interval` ({commit}) is also given, and it wins"
                    ),
                    None,
                );
            }
        }
        if let Some(super::types::Alerting::Rules(rules)) = &s.alerting {
            for (i, rule) in rules.iter().enumerate() {
                for (j, dest) in rule.destinations.iter().enumerate() {
                    let known = [
                        "slack://",
                        "email://",
                        "pagerduty://",
                        "kafka://",
                        "https://",
                    ];
                    if !known.iter().any(|k| dest.starts_with(k)) {
                        let (ii, jj) = (i.to_string(), j.to_string());
                        self.at(
                            Level::Error,
                            &["spec", "alerting", &ii, "destinations", &jj],
                            format!("unknown alert destination `{dest}`"),
                            Some(format!(
                                "write it as one of {}",
                                known.map(|k| format!("{k}...")).join(", ")
                            )),
                        );
                    }
                }
            }
        }
        if let Some(0) = s.processing.as_ref().and_then(|p| p.config.max_batch_size) {
            self.at(
                Level::Error,
                &["spec", "processing", "config", "max_batch_size"],
                "max_batch_size must be at least 1".into(),
                None,
            );
        }
        self.unique_names("sources", s.sources.iter().map(|x| x.name.as_str()));
        self.unique_names(
            "transformations",
            s.transformations.iter().map(|x| x.name.as_str()),
        );
        self.unique_names(
            "business_rules",
            s.business_rules.iter().map(|x| x.name.as_str()),
        );
        self.unique_names(
            "destinations",
            s.destinations.iter().map(|x| x.name.as_str()),
        );
    }

    fn action(&mut self, path: &[&str], action: &str, allow_dedup: bool) {
        let base = ["flag", "drop", "dead_letter", "fail"];
        let ok = base.contains(&action)
            || action.strip_prefix("flag_").is_some_and(|l| !l.is_empty())
            || (allow_dedup && action == "deduplicate");
        if !ok {
            let mut known = base.to_vec();
            if allow_dedup {
                known.push("deduplicate");
            }
            self.at(
                Level::Error,
                path,
                format!("unknown action `{action}`"),
                Some(format!(
                    "{} (or `flag_<label>`, such as `flag_after_hours`)",
                    suggest(action, &known)
                )),
            );
        }
    }

    fn unique_names<'n>(&mut self, section: &str, names: impl Iterator<Item = &'n str>) {
        let mut seen = std::collections::BTreeSet::new();
        for (i, name) in names.enumerate() {
            if !seen.insert(name) {
                let idx = i.to_string();
                self.at(
                    Level::Error,
                    &["spec", section, &idx, "name"],
                    format!("duplicate name `{name}` in `spec.{section}`"),
                    None,
                );
            }
        }
    }
}

fn display_path(path: &[String]) -> String {
    if path.is_empty() {
        "(top level)".to_string()
    } else {
        path.join(".")
    }
}

/// "did you mean `x`?" for a near miss, else the list of what is allowed.
pub fn suggest(word: &str, known: &[&str]) -> String {
    let best = known
        .iter()
        .map(|k| {
            (
                strsim::levenshtein(&word.to_lowercase(), &k.to_lowercase()),
                *k,
            )
        })
        .min();
    match best {
        Some((d, k)) if d <= 2.max(word.len() / 3) => format!("did you mean `{k}`?"),
        _ if known.is_empty() => "this section takes no keys".to_string(),
        _ => format!("expected one of: {}", known.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_misses_and_lists_otherwise() {
        assert_eq!(
            suggest("batch_timout", &["max_batch_size", "batch_timeout"]),
            "did you mean `batch_timeout`?"
        );
        assert_eq!(
            suggest("zzz", &["a_long_key", "another"]),
            "expected one of: a_long_key, another"
        );
    }
}
