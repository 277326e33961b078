//! A YAML tree that remembers where every node came from.
//!
//! serde stops at the first error and forgets positions, so the spec is first read into this
//! tree (from yaml-rust2's marked events), checked whole against the schema of the Rust types
//! (see `check`), and only then handed to serde as a `serde_json::Value`.

use std::collections::BTreeMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A position in a source file, 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Self {
        Pos {
            line: m.line(),
            col: m.col() + 1,
        }
    }
}

/// A YAML node with its position.
#[derive(Debug, Clone)]
pub struct Node {
    /// Where the node starts.
    pub pos: Pos,
    /// What it holds.
    pub kind: NodeKind,
}

/// The shape of a node.
#[derive(Debug, Clone)]
pub enum NodeKind {
    /// A scalar; `plain` is false for quoted and block scalars, which are always strings.
    Scalar {
        /// The text of the scalar.
        value: String,
        /// True for an unquoted scalar, whose type is resolved (int, float, bool, null).
        plain: bool,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, keys in source order with the key's own position.
    Map(Vec<(String, Pos, Node)>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    anchors: BTreeMap<usize, Node>,
    error: Option<(Pos, String)>,
}

enum Frame {
    Seq(Pos, usize, Vec<Node>),
    Map(Pos, usize, Vec<(String, Pos, Node)>, Option<(String, Pos)>),
}

impl Builder {
    fn push_node(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq(_, _, items)) => items.push(node),
            Some(Frame::Map(_, _, entries, pending)) => match pending.take() {
                None => match node.kind {
                    NodeKind::Scalar { value, .. } => *pending = Some((value, node.pos)),
                    _ => {
                        self.error
                            .get_or_insert((node.pos, "mapping keys must be plain strings".into()));
                    }
                },
                Some((key, key_pos)) => entries.push((key, key_pos, node)),
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos::from(mark);
        match ev {
            Event::Scalar(value, style, anchor, _) => {
                let plain = matches!(style, TScalarStyle::Plain);
                self.push_node(
                    Node {
                        pos,
                        kind: NodeKind::Scalar { value, plain },
                    },
                    anchor,
                );
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq(pos, anchor, Vec::new())),
            Event::MappingStart(anchor, _) => {
                self.stack.push(Frame::Map(pos, anchor, Vec::new(), None))
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq(pos, anchor, items)) => (
                        Node {
                            pos,
                            kind: NodeKind::Seq(items),
                        },
                        anchor,
                    ),
                    Some(Frame::Map(pos, anchor, entries, _)) => (
                        Node {
                            pos,
                            kind: NodeKind::Map(entries),
                        },
                        anchor,
                    ),
                    None => return,
                };
                self.push_node(node, anchor);
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(mut node) => {
                    node.pos = pos;
                    self.push_node(node, 0);
                }
                None => {
                    self.error
                        .get_or_insert((pos, format!("unknown alias {id}")));
                }
            },
            _ => {}
        }
    }
}

/// Parses YAML text into a positioned tree. An empty document is an error.
pub fn parse(text: &str) -> Result<Node, (Pos, String)> {
    let mut builder = Builder::default();
    Parser::new_from_str(text)
        .load(&mut builder, false)
        .map_err(|e| (Pos::from(*e.marker()), e.info().to_string()))?;
    if let Some(err) = builder.error {
        return Err(err);
    }
    builder
        .root
        .ok_or_else(|| (Pos { line: 1, col: 1 }, "the document is empty".to_string()))
}

/// Expands `${VAR}` and `${VAR:-default}` in a string from `lookup`.
/// Returns the names of missing variables (without default) as errors.
pub fn expand_env(
    input: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(input.len());
    let mut missing = Vec::new();
    let mut rest = input;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let expr = &after[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        match (lookup(name), default) {
            (Some(v), _) if !v.is_empty() || default.is_none() => out.push_str(&v),
            (_, Some(d)) => out.push_str(d),
            (None, None) => missing.push(name.to_string()),
            (Some(_), None) => unreachable!("guard above covers an empty value with no default"),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing)
    }
}

impl Node {
    /// Expands environment variables in every scalar, in place. Errors carry the position.
    pub fn expand_env(
        &mut self,
        lookup: &dyn Fn(&str) -> Option<String>,
        errors: &mut Vec<(Pos, String)>,
    ) {
        match &mut self.kind {
            NodeKind::Scalar { value, plain } => {
                if value.contains("${") {
                    match expand_env(value, lookup) {
                        Ok(v) => {
                            *value = v;
                            // An expanded value is data, never YAML syntax: keep it a string.
                            *plain = false;
                        }
                        Err(missing) => {
                            for name in missing {
                                errors.push((
                                    self.pos,
                                    format!(
                                        "environment variable `{name}` is not set and has no default (write `${{{name}:-value}}` to give one)"
                                    ),
                                ));
                            }
                        }
                    }
                }
            }
            NodeKind::Seq(items) => items.iter_mut().for_each(|n| n.expand_env(lookup, errors)),
            NodeKind::Map(entries) => entries
                .iter_mut()
                .for_each(|(_, _, n)| n.expand_env(lookup, errors)),
        }
    }

    /// Converts to JSON, resolving plain scalars by the YAML 1.2 core schema.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            NodeKind::Scalar {
                value,
                plain: false,
            } => Value::String(value.clone()),
            NodeKind::Scalar { value, plain: true } => resolve_plain(value),
            NodeKind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeKind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, _, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// Converts to JSON, leaving out the nodes at the given dotted paths.
    pub fn to_json_without(&self, skip: &[&str]) -> serde_json::Value {
        self.pruned(skip, &mut String::new())
    }

    fn pruned(&self, skip: &[&str], path: &mut String) -> serde_json::Value {
        use serde_json::Value;
        let child = |path: &mut String, seg: &str| {
            let len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(seg);
            len
        };
        match &self.kind {
            NodeKind::Scalar { .. } => self.to_json(),
            NodeKind::Seq(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        let len = child(path, &i.to_string());
                        let v = n.pruned(skip, path);
                        path.truncate(len);
                        v
                    })
                    .collect(),
            ),
            NodeKind::Map(entries) => {
                let mut out = serde_json::Map::new();
                for (k, _, n) in entries {
                    let len = child(path, k);
                    if !skip.contains(&path.as_str()) {
                        out.insert(k.clone(), n.pruned(skip, path));
                    }
                    path.truncate(len);
                }
                Value::Object(out)
            }
        }
    }

    /// Replaces the text of the scalar at `path` (used to write an enum value in its canonical
    /// spelling); does nothing when no scalar is there.
    pub fn set_scalar(&mut self, path: &[String], text: &str) {
        let Some((first, rest)) = path.split_first() else {
            if let NodeKind::Scalar { value, .. } = &mut self.kind {
                *value = text.to_string();
            }
            return;
        };
        match &mut self.kind {
            NodeKind::Map(entries) => {
                if let Some((_, _, n)) = entries.iter_mut().find(|(k, _, _)| k == first) {
                    n.set_scalar(rest, text);
                }
            }
            NodeKind::Seq(items) => {
                if let Some(n) = first.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                    n.set_scalar(rest, text);
                }
            }
            NodeKind::Scalar { .. } => {}
        }
    }

    /// The node at a JSON-pointer-like path (`["spec", "sources", "0", "name"]`), if present.
    pub fn at(&self, path: &[String]) -> Option<&Node> {
        let Some((first, rest)) = path.split_first() else {
            return Some(self);
        };
        match &self.kind {
            NodeKind::Map(entries) => entries
                .iter()
                .find(|(k, _, _)| k == first)
                .and_then(|(_, _, n)| n.at(rest)),
            NodeKind::Seq(items) => first
                .parse::<usize>()
                .ok()
                .and_then(|i| items.get(i))
                .and_then(|n| n.at(rest)),
            NodeKind::Scalar { .. } => None,
        }
    }
}

fn resolve_plain(s: &str) -> serde_json::Value {
    use serde_json::Value;
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = s.parse::<i64>() {
        return Value::from(i);
    }
    if s.chars().any(|c| c.is_ascii_digit()) {
        if let Ok(f) = s.parse::<f64>() {
            if f.is_finite() {
                return Value::from(f);
            }
        }
    }
    Value::String(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_expansion_uses_default_and_reports_missing() {
        let env = |k: &str| (k == "HOST").then(|| "broker:9092".to_string());
        assert_eq!(expand_env("${HOST}", &env).unwrap(), "broker:9092");
        assert_eq!(expand_env("${PORT:-9092}", &env).unwrap(), "9092");
        assert_eq!(
            expand_env("a ${NOPE} b ${ALSO}", &env).unwrap_err(),
            vec!["NOPE".to_string(), "ALSO".to_string()]
        );
    }

    #[test]
    fn positions_are_one_based() {
        let node = parse("a:\n  b: 1\n").unwrap();
        let b = node.at(&["a".into(), "b".into()]).unwrap();
        assert_eq!(b.pos, Pos { line: 2, col: 6 });
        assert_eq!(node.to_json(), serde_json::json!({"a": {"b": 1}}));
    }
}
