//! Pattern alerts: `spec.cep_patterns` and the guide's `spec.alerting` rules with a
//! `condition`, evaluated over the rows a stream lands, with per-key state.
//!
//! A pattern is a true/false SQL condition over the landed row, plus two stateful terms:
//!
//! - `prev(col)`: `col` of the previous row of the same key (the pattern's `keys`, default
//!   `symbol`), in the order rows land. NULL for a key's first row, so nothing matches there.
//! - `avg(col)` / `avg(col, 20d)`: the mean of `col` over the key's earlier rows whose event
//!   time is within the window of the newest one seen (the row itself is excluded, so a spike
//!   is compared with what came before it). The window is the argument, else the pattern's
//!   `window`, else one day. NULL when the key has no earlier row in the window.
//!
//! The terms are rewritten into columns (`"prev(price)"`, `"avg(quantity, 5m)"`) that are
//! computed per batch from the state, and the condition is planned by the rule compiler over
//! the landed schema plus those columns: the same functions, checks and spec-line errors as
//! row rules. A matching row is an alert: a row of the alerts table (see [`alerts_schema`])
//! whose `detail` is the row and its terms as JSON.
//!
//! State is bounded: a key is forgotten once it has been silent for the pattern's retention
//! (the longest of its windows, one day when it has none), and an `avg` keeps at most
//! [`BUCKETS`] time buckets per key, so the window's edge is exact to 1/[`BUCKETS`] of it.
//! State is restart-safe: [`PatternSet::seed_from_table`] replays the retention's tail of the
//! data table through the same code with alerts off, so a restart continues where the landed
//! rows left off.
#![warn(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array,
    RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{
    DataType, Field, Float64Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use arrow::row::{RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::physical_expr::PhysicalExpr;
use finlake_core::spec::{AlertSeverity, Alerting, Duration, LoadedSpec, SpecError};

use crate::error::{QualityError, Result};
use crate::rules::{plan_condition, Origin};

/// Time buckets an `avg` keeps per key.
pub const BUCKETS: i64 = 60;

/// The window of an `avg` (and the retention of a pattern) when the spec gives none.
const DEFAULT_WINDOW_MICROS: i64 = 86_400_000_000;

/// Silent keys are swept every this many batches.
const SWEEP_EVERY: u64 = 64;

/// The alerts table's schema.
pub fn alerts_schema() -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("pipeline", DataType::Utf8, false),
        Field::new("alert", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("severity", DataType::Utf8, false),
        Field::new("condition", DataType::Utf8, false),
        Field::new("key", DataType::Utf8, true),
        Field::new("event_time", ts(), true),
        Field::new("detail", DataType::Utf8, false),
        Field::new("output_topic", DataType::Utf8, true),
        Field::new("destinations", DataType::Utf8, true),
        Field::new("_topic", DataType::Utf8, true),
        Field::new("_partition", DataType::Int32, true),
        Field::new("_offset", DataType::Int64, true),
        Field::new("_correlation_id", DataType::Utf8, true),
        Field::new("detected_at", ts(), false),
        Field::new("alert_date", DataType::Date32, true),
    ]))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum TermKind {
    Prev,
    Avg { window: i64 },
}

#[derive(Debug, Clone)]
struct Term {
    kind: TermKind,
    /// Index of the column in the landed schema.
    column: usize,
    /// The column's type (prev's output type).
    data_type: DataType,
}

/// One term found in a pattern's text, before the schema is known.
#[derive(Debug, Clone, PartialEq)]
struct ParsedTerm {
    prev: bool,
    column: String,
    window: Option<i64>,
    /// The synthetic column's name, as written back into the condition.
    name: String,
}

/// Rewrites `prev(col)` and `avg(col[, window])` into quoted column names, skipping string
/// literals and quoted identifiers. Errors are sentences for the spec author.
fn rewrite(text: &str) -> std::result::Result<(String, Vec<ParsedTerm>), String> {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 16);
    let mut terms: Vec<ParsedTerm> = Vec::new();
    let mut i = 0;
    // the end of a quoted run starting at `i` (quote char `q`, doubled to escape)
    let quoted_end = |i: usize, q: u8| -> std::result::Result<usize, String> {
        let mut j = i + 1;
        while j < b.len() {
            if b[j] == q {
                if j + 1 < b.len() && b[j + 1] == q {
                    j += 2;
                    continue;
                }
                return Ok(j + 1);
            }
            j += 1;
        }
        Err(format!("unterminated {} in `{text}`", q as char))
    };
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    while i < b.len() {
        let c = b[i];
        if c == b'\'' || c == b'"' {
            let end = quoted_end(i, c)?;
            out.push_str(&text[i..end]);
            i = end;
            continue;
        }
        if ident(c) && (i == 0 || !ident(b[i - 1])) {
            let mut j = i;
            while j < b.len() && ident(b[j]) {
                j += 1;
            }
            let word = &text[i..j];
            let lower = word.to_ascii_lowercase();
            let mut k = j;
            while k < b.len() && b[k].is_ascii_whitespace() {
                k += 1;
            }
            if (lower == "prev" || lower == "avg") && k < b.len() && b[k] == b'(' {
                // the matching parenthesis, and the top-level commas
                let (mut depth, mut m, mut commas) = (0usize, k, Vec::new());
                let close = loop {
                    if m >= b.len() {
                        return Err(format!("`{word}(` is not closed in `{text}`"));
                    }
                    match b[m] {
                        b'\'' | b'"' => {
                            m = quoted_end(m, b[m])?;
                            continue;
                        }
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                break m;
                            }
                        }
                        b',' if depth == 1 => commas.push(m),
                        _ => {}
                    }
                    m += 1;
                };
                let mut bounds = vec![k + 1];
                bounds.extend(commas.iter().map(|c| c + 1));
                let mut ends = commas.clone();
                ends.push(close);
                let args: Vec<&str> = bounds
                    .iter()
                    .zip(&ends)
                    .map(|(s, e)| text[*s..*e].trim())
                    .collect();
                let prev = lower == "prev";
                let max_args = if prev { 1 } else { 2 };
                if args.len() > max_args || args[0].is_empty() {
                    return Err(if prev {
                        format!(
                            "`prev` takes one column: `prev(price)`, not `{}`",
                            &text[i..=close]
                        )
                    } else {
                        format!(
                            "`avg` takes a column and an optional window: `avg(quantity)` or `avg(quantity, 20d)`, not `{}`",
                            &text[i..=close]
                        )
                    });
                }
                let column = match args[0].strip_prefix('"').and_then(|a| a.strip_suffix('"')) {
                    Some(q) => q.replace("\"\"", "\""),
                    None if args[0].bytes().all(ident) => args[0].to_string(),
                    None => {
                        return Err(format!(
                            "`{}` takes a column name, not the expression `{}`",
                            lower, args[0]
                        ))
                    }
                };
                let window = match args.get(1) {
                    None => None,
                    Some(w) => {
                        let w = w.trim_matches('\'');
                        let d = Duration::parse(w)
                            .map_err(|e| format!("the window of `{}`: {e}", &text[i..=close]))?;
                        let micros = i64::try_from(d.0.as_micros()).unwrap_or(i64::MAX);
                        if micros <= 0 {
                            return Err(format!(
                                "the window of `{}` must be longer than zero",
                                &text[i..=close]
                            ));
                        }
                        Some(micros)
                    }
                };
                let name = match (prev, args.get(1)) {
                    (true, _) => format!("prev({column})"),
                    (false, None) => format!("avg({column})"),
                    (false, Some(w)) => format!("avg({column}, {})", w.trim_matches('\'')),
                };
                out.push('"');
                out.push_str(&name.replace('"', "\"\""));
                out.push('"');
                if !terms.iter().any(|t| t.name == name) {
                    terms.push(ParsedTerm {
                        prev,
                        column,
                        window,
                        name,
                    });
                }
                i = close + 1;
                continue;
            }
            out.push_str(word);
            i = j;
            continue;
        }
        out.push(c as char);
        i += 1;
    }
    Ok((out, terms))
}

/// The time-bucketed sum and count of one key's values in a window.
#[derive(Debug, Clone, Default)]
struct Window {
    /// (bucket, sum, count), oldest first.
    buckets: VecDeque<(i64, f64, u64)>,
    sum: f64,
    count: u64,
    newest: i64,
}

impl Window {
    fn evict(&mut self, width: i64, window: i64) {
        let oldest = (self.newest - window).div_euclid(width) + 1;
        while let Some(&(b, s, c)) = self.buckets.front() {
            if b >= oldest {
                break;
            }
            self.buckets.pop_front();
            self.sum -= s;
            self.count -= c;
        }
        if self.buckets.is_empty() {
            // no drift from subtracting floats
            self.sum = 0.0;
        }
    }

    fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    fn add(&mut self, t: i64, v: f64, width: i64, window: i64) {
        if t > self.newest || self.buckets.is_empty() {
            self.newest = self.newest.max(t);
            self.evict(width, window);
        }
        let b = t.div_euclid(width);
        if b < (self.newest - window).div_euclid(width) + 1 {
            return; // older than the window: it would be evicted at once
        }
        // most rows go to the newest bucket; a late one searches back
        let pos = self.buckets.iter().rposition(|&(x, _, _)| x <= b);
        match pos {
            Some(p) if self.buckets[p].0 == b => {
                self.buckets[p].1 += v;
                self.buckets[p].2 += 1;
            }
            Some(p) => self.buckets.insert(p + 1, (b, v, 1)),
            None => self.buckets.push_front((b, v, 1)),
        }
        self.sum += v;
        self.count += 1;
    }
}

/// True where `v` is a true boolean; NULL (a first row, an empty window) and anything not
/// boolean is no match.
fn true_only(v: &ArrayRef) -> BooleanArray {
    match v.as_boolean_opt() {
        Some(b) => match b.nulls() {
            Some(nl) => BooleanArray::new(b.values() & nl.inner(), None),
            None => BooleanArray::new(b.values().clone(), None),
        },
        None => BooleanArray::new_null(v.len()),
    }
}

fn df(pattern: &str, e: datafusion::error::DataFusionError) -> QualityError {
    QualityError::Evaluate {
        rule: pattern.to_string(),
        message: e.to_string(),
    }
}

/// One key's state in one pattern.
#[derive(Debug, Clone)]
struct KeyState {
    last_seen: i64,
    prev: Vec<ScalarValue>,
    windows: Vec<Window>,
}

/// A compiled pattern or alert rule, with its state.
struct Pattern {
    name: String,
    kind: &'static str,
    severity: &'static str,
    condition: String,
    output_topic: Option<String>,
    destinations: Option<String>,
    keys: Vec<usize>,
    terms: Vec<Term>,
    expr: Arc<dyn PhysicalExpr>,
    schema: SchemaRef,
    retention: i64,
    converter: RowConverter,
    state: HashMap<Box<[u8]>, KeyState>,
}

/// Alerts one batch raised, and the state the patterns keep.
pub struct PatternSet {
    pipeline: String,
    patterns: Vec<Pattern>,
    landed: SchemaRef,
    event_time: usize,
    newest: i64,
    batches: u64,
}

impl std::fmt::Debug for PatternSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatternSet")
            .field("pipeline", &self.pipeline)
            .field(
                "patterns",
                &self.patterns.iter().map(|p| &p.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn severity_name(s: Option<AlertSeverity>) -> &'static str {
    match s {
        Some(AlertSeverity::Info) => "info",
        Some(AlertSeverity::Critical) => "critical",
        Some(AlertSeverity::Warning) | None => "warning",
    }
}

impl PatternSet {
    /// Compiles the spec's `cep_patterns` and `alerting` rules over `landed` (the data
    /// table's schema). `None` when the spec has neither. Every error names its spec line.
    pub fn compile(
        spec: &LoadedSpec,
        landed: SchemaRef,
    ) -> std::result::Result<Option<Self>, SpecError> {
        let p = &spec.pipeline.spec;
        let pipeline = spec.pipeline.metadata.name.clone();
        struct Source<'a> {
            origin: Origin,
            field: &'static str,
            name: &'a str,
            kind: &'static str,
            text: &'a str,
            keys: &'a [String],
            window: Option<&'a Duration>,
            severity: &'static str,
            output_topic: Option<String>,
            destinations: Option<String>,
        }
        let mut sources = Vec::new();
        for (i, c) in p.cep_patterns.iter().enumerate() {
            sources.push(Source {
                origin: Origin::Pattern(i),
                field: "pattern",
                name: &c.name,
                kind: "cep_pattern",
                text: &c.pattern,
                keys: &c.keys,
                window: c.window.as_ref(),
                severity: "warning",
                output_topic: Some(c.output_topic.clone()),
                destinations: None,
            });
        }
        if let Some(Alerting::Rules(rules)) = &p.alerting {
            for (i, r) in rules.iter().enumerate() {
                let kafka = r
                    .destinations
                    .iter()
                    .find_map(|d| d.strip_prefix("kafka://"))
                    .map(str::to_string);
                sources.push(Source {
                    origin: Origin::Alert(i),
                    field: "condition",
                    name: &r.name,
                    kind: "alert",
                    text: &r.condition,
                    keys: &[],
                    window: None,
                    severity: severity_name(r.severity),
                    output_topic: kafka,
                    destinations: (!r.destinations.is_empty()).then(|| r.destinations.join(",")),
                });
            }
        }
        if sources.is_empty() {
            return Ok(None);
        }
        let event_time = landed
            .index_of(finlake_core::schema::EVENT_TIME)
            .map_err(|_| {
                SpecError::Invalid {
                    file: spec.file.clone(),
                    diagnostics: vec![spec.error_at(
                        &["spec", "cep_patterns"],
                        format!(
                            "patterns need the event time column `{}`, which this pipeline does not land",
                            finlake_core::schema::EVENT_TIME
                        ),
                        None,
                    )],
                }
            })?;
        let mut diagnostics = Vec::new();
        let mut patterns = Vec::new();
        for s in sources {
            let path = s.origin.field_path(s.field);
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            let mut fail = |message: String, hint: Option<String>| {
                diagnostics.push(spec.error_at(&path, message, hint));
            };
            let (sql, parsed) = match rewrite(s.text) {
                Ok(r) => r,
                Err(e) => {
                    fail(format!("`{}`: {e}", s.name), None);
                    continue;
                }
            };
            let default_window = s.window.map_or(DEFAULT_WINDOW_MICROS, |w| {
                i64::try_from(w.0.as_micros()).unwrap_or(i64::MAX).max(1)
            });
            let mut fields: Vec<Arc<Field>> = landed.fields().iter().cloned().collect();
            let mut terms = Vec::new();
            let mut retention = default_window;
            for t in &parsed {
                let Ok(column) = landed.index_of(&t.column) else {
                    let names: Vec<&str> =
                        landed.fields().iter().map(|f| f.name().as_str()).collect();
                    fail(
                        format!("`{}`: unknown column `{}`", s.name, t.column),
                        Some(finlake_core::spec::suggest(&t.column, &names)),
                    );
                    continue;
                };
                let data_type = landed.field(column).data_type().clone();
                let kind = if t.prev {
                    TermKind::Prev
                } else {
                    if !data_type.is_numeric() {
                        fail(
                            format!(
                                "`{}`: `{}` averages `{}`, which is {data_type}, not a number",
                                s.name, t.name, t.column
                            ),
                            None,
                        );
                        continue;
                    }
                    TermKind::Avg {
                        window: t.window.unwrap_or(default_window),
                    }
                };
                if let TermKind::Avg { window } = kind {
                    retention = retention.max(window);
                }
                let out_type = match kind {
                    TermKind::Prev => data_type.clone(),
                    TermKind::Avg { .. } => DataType::Float64,
                };
                fields.push(Arc::new(Field::new(&t.name, out_type, true)));
                terms.push(Term {
                    kind,
                    column,
                    data_type,
                });
            }
            let key_names: Vec<String> = if s.keys.is_empty() {
                vec!["symbol".to_string()]
            } else {
                s.keys.to_vec()
            };
            let mut keys = Vec::new();
            for k in &key_names {
                match landed.index_of(k) {
                    Ok(i) => keys.push(i),
                    Err(_) => {
                        let names: Vec<&str> =
                            landed.fields().iter().map(|f| f.name().as_str()).collect();
                        fail(
                            format!(
                                "`{}`: key column `{k}` is not in the landed rows{}",
                                s.name,
                                if s.keys.is_empty() {
                                    " (the default key; set `keys`)"
                                } else {
                                    ""
                                }
                            ),
                            Some(finlake_core::spec::suggest(k, &names)),
                        );
                    }
                }
            }
            if terms.len() != parsed.len() || keys.len() != key_names.len() {
                continue;
            }
            let schema = Arc::new(Schema::new(fields));
            let expr = match plan_condition(spec, schema.clone(), s.origin, s.field, s.name, &sql) {
                Ok(e) => e,
                Err(SpecError::Invalid { diagnostics: d, .. }) => {
                    // a derived quantity (the guide's `price_change`) is written with the terms
                    diagnostics.extend(d.into_iter().map(|mut d| {
                        if d.message.contains("unknown column") {
                            let terms = "a pattern sees the landed row's columns, `prev(col)` and `avg(col, window)`: a change is `(price - prev(price)) / prev(price)`";
                            d.hint = Some(match d.hint.take() {
                                Some(h) => format!("{h}; {terms}"),
                                None => terms.to_string(),
                            });
                        }
                        d
                    }));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let converter = RowConverter::new(
                keys.iter()
                    .map(|&k| SortField::new(landed.field(k).data_type().clone()))
                    .collect(),
            )
            .map_err(|e| SpecError::Invalid {
                file: spec.file.clone(),
                diagnostics: vec![spec.error_at(&path, format!("`{}`: {e}", s.name), None)],
            })?;
            patterns.push(Pattern {
                name: s.name.to_string(),
                kind: s.kind,
                severity: s.severity,
                condition: s.text.to_string(),
                output_topic: s.output_topic,
                destinations: s.destinations,
                keys,
                terms,
                expr,
                schema,
                retention,
                converter,
                state: HashMap::new(),
            });
        }
        if !diagnostics.is_empty() {
            return Err(SpecError::Invalid {
                file: spec.file.clone(),
                diagnostics,
            });
        }
        Ok(Some(PatternSet {
            pipeline,
            patterns,
            landed,
            event_time,
            newest: i64::MIN,
            batches: 0,
        }))
    }

    /// The output topics alerts go to.
    pub fn output_topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .patterns
            .iter()
            .filter_map(|p| p.output_topic.clone())
            .collect();
        t.sort();
        t.dedup();
        t
    }

    /// The longest retention of any pattern: how far back [`PatternSet::seed_from_table`]
    /// reads.
    pub fn retention_micros(&self) -> i64 {
        self.patterns.iter().map(|p| p.retention).max().unwrap_or(0)
    }

    /// Keys held, over all patterns (a gauge of the state's size).
    pub fn keys_held(&self) -> usize {
        self.patterns.iter().map(|p| p.state.len()).sum()
    }

    /// Advances the state over a landed batch, in row order; returns the alerts it raised
    /// (rows of [`alerts_schema`]), detected at `detected_at` (UTC microseconds).
    pub fn process(&mut self, batch: &RecordBatch, detected_at: i64) -> Result<RecordBatch> {
        self.run(batch, Some(detected_at))
            .map(|b| b.unwrap_or_else(|| RecordBatch::new_empty(alerts_schema())))
    }

    /// Advances the state without raising alerts (seeding).
    pub fn seed(&mut self, batch: &RecordBatch) -> Result<()> {
        self.run(batch, None).map(|_| ())
    }

    fn run(
        &mut self,
        batch: &RecordBatch,
        detected_at: Option<i64>,
    ) -> Result<Option<RecordBatch>> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(None);
        }
        let batch = crate::dedup::normalize_strings(batch)?;
        let batch = if batch.schema().fields() == self.landed.fields() {
            batch
        } else {
            // a seeding scan: the landed columns by name, in the landed order
            let cols = self
                .landed
                .fields()
                .iter()
                .map(|f| {
                    let c = batch.column(batch.schema().index_of(f.name())?);
                    Ok(if c.data_type() == f.data_type() {
                        c.clone()
                    } else {
                        cast(c, f.data_type())?
                    })
                })
                .collect::<std::result::Result<Vec<_>, arrow::error::ArrowError>>()?;
            RecordBatch::try_new(self.landed.clone(), cols)?
        };
        let times = batch
            .column(self.event_time)
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| QualityError::Evaluate {
                rule: "patterns".into(),
                message: "the event time column is not a microsecond timestamp".into(),
            })?;
        let mut outputs = Vec::new();
        for p in &mut self.patterns {
            let key_cols: Vec<ArrayRef> = p.keys.iter().map(|&k| batch.column(k).clone()).collect();
            let rows = p.converter.convert_columns(&key_cols)?;
            // the terms' inputs: prev reads the column as it is, avg as f64
            let inputs: Vec<ArrayRef> = p
                .terms
                .iter()
                .map(|t| match t.kind {
                    TermKind::Prev => Ok(batch.column(t.column).clone()),
                    TermKind::Avg { .. } => cast(batch.column(t.column), &DataType::Float64),
                })
                .collect::<std::result::Result<_, _>>()?;
            let nulls: Vec<ScalarValue> = p
                .terms
                .iter()
                .map(|t| ScalarValue::try_from(&t.data_type))
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| df(&p.name, e))?;
            let mut prev_out: Vec<Vec<ScalarValue>> = p
                .terms
                .iter()
                .map(|t| match t.kind {
                    TermKind::Prev => Vec::with_capacity(n),
                    TermKind::Avg { .. } => Vec::new(),
                })
                .collect();
            let mut avg_out: Vec<Vec<Option<f64>>> = p
                .terms
                .iter()
                .map(|t| match t.kind {
                    TermKind::Prev => Vec::new(),
                    TermKind::Avg { .. } => Vec::with_capacity(n),
                })
                .collect();
            let emit = detected_at.is_some();
            for row in 0..n {
                let t = if times.is_null(row) {
                    self.newest.max(0)
                } else {
                    times.value(row)
                };
                self.newest = self.newest.max(t);
                let key = rows.row(row);
                if !p.state.contains_key(key.as_ref()) {
                    // a new key: the only allocation per row, and only the first time
                    p.state.insert(
                        key.as_ref().into(),
                        KeyState {
                            last_seen: t,
                            prev: nulls.clone(),
                            windows: vec![Window::default(); p.terms.len()],
                        },
                    );
                }
                let Some(state) = p.state.get_mut(key.as_ref()) else {
                    continue;
                };
                state.last_seen = state.last_seen.max(t);
                for (i, term) in p.terms.iter().enumerate() {
                    match term.kind {
                        TermKind::Prev => {
                            let value = ScalarValue::try_from_array(inputs[i].as_ref(), row)
                                .map_err(|e| df(&p.name, e))?;
                            let old = std::mem::replace(&mut state.prev[i], value);
                            if emit {
                                prev_out[i].push(old);
                            }
                        }
                        TermKind::Avg { window } => {
                            let w = &mut state.windows[i];
                            let width = (window / BUCKETS).max(1);
                            if emit {
                                if t > w.newest {
                                    w.newest = t;
                                    w.evict(width, window);
                                }
                                avg_out[i].push(w.mean());
                            }
                            let values = inputs[i].as_primitive::<Float64Type>();
                            if values.is_valid(row) {
                                w.add(t, values.value(row), width, window);
                            }
                        }
                    }
                }
            }
            if !emit {
                continue;
            }
            let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
            for (i, term) in p.terms.iter().enumerate() {
                cols.push(match term.kind {
                    TermKind::Prev => ScalarValue::iter_to_array(std::mem::take(&mut prev_out[i]))
                        .map_err(|e| df(&p.name, e))?,
                    TermKind::Avg { .. } => {
                        Arc::new(Float64Array::from(std::mem::take(&mut avg_out[i])))
                    }
                });
            }
            let with_terms = RecordBatch::try_new(p.schema.clone(), cols)?;
            let matched = match p.expr.evaluate(&with_terms).and_then(|v| v.into_array(n)) {
                Ok(v) => true_only(&v),
                Err(e) => {
                    // a value the condition cannot take (a division by zero): row by row,
                    // and a row that errors raises nothing. Bad data never stops the stream.
                    let mut errors = 0usize;
                    let m: BooleanArray = (0..n)
                        .map(|r| {
                            let one = with_terms.slice(r, 1);
                            match p.expr.evaluate(&one).and_then(|v| v.into_array(1)) {
                                Ok(v) => Some(true_only(&v).value(0)),
                                Err(_) => {
                                    errors += 1;
                                    Some(false)
                                }
                            }
                        })
                        .collect();
                    tracing::warn!(pattern = %p.name, rows = errors, error = %e, "pattern could not be evaluated on some rows; they raise no alert");
                    m
                }
            };
            if matched.true_count() == 0 {
                continue;
            }
            let hits = filter_record_batch(&with_terms, &matched)?;
            outputs.push(Self::alert_rows(
                &self.pipeline,
                p,
                &hits,
                self.event_time,
                detected_at.unwrap_or_default(),
            )?);
        }
        self.batches += 1;
        if self.batches.is_multiple_of(SWEEP_EVERY) {
            let newest = self.newest;
            for p in &mut self.patterns {
                let horizon = newest.saturating_sub(p.retention);
                p.state.retain(|_, s| s.last_seen >= horizon);
            }
        }
        if outputs.is_empty() {
            return Ok(None);
        }
        Ok(Some(arrow::compute::concat_batches(
            &alerts_schema(),
            &outputs,
        )?))
    }

    /// The alert rows of one pattern's matching rows (few: built row by row).
    fn alert_rows(
        pipeline: &str,
        p: &Pattern,
        hits: &RecordBatch,
        event_time: usize,
        detected_at: i64,
    ) -> Result<RecordBatch> {
        let m = hits.num_rows();
        let mut detail = Vec::with_capacity(m);
        {
            let mut buf = Vec::new();
            let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
            w.write(hits)?;
            w.finish()?;
            drop(w);
            let text = String::from_utf8_lossy(&buf);
            detail.extend(text.lines().map(str::to_string));
        }
        let key_strings: Vec<ArrayRef> = p
            .keys
            .iter()
            .map(|&k| cast(hits.column(k), &DataType::Utf8))
            .collect::<std::result::Result<_, _>>()?;
        let key: StringArray = (0..m)
            .map(|r| {
                let parts: Vec<&str> = key_strings
                    .iter()
                    .map(|c| {
                        let c = c.as_string::<i32>();
                        if c.is_null(r) {
                            ""
                        } else {
                            c.value(r)
                        }
                    })
                    .collect();
                Some(parts.join("|"))
            })
            .collect();
        let col = |name: &str| {
            hits.schema()
                .index_of(name)
                .ok()
                .map(|i| hits.column(i).clone())
        };
        let times = hits
            .column(event_time)
            .as_primitive::<TimestampMicrosecondType>()
            .clone();
        let dates: Date32Array = times
            .iter()
            .map(|t| t.map(|t| t.div_euclid(86_400_000_000) as i32))
            .collect();
        let text = |v: &str| {
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n(v, m))) as ArrayRef
        };
        let opt_text = |v: &Option<String>| {
            Arc::new(StringArray::from_iter(std::iter::repeat_n(v.as_deref(), m))) as ArrayRef
        };
        let or_null_str = |c: Option<ArrayRef>| -> Result<ArrayRef> {
            Ok(match c {
                Some(c) => cast(&c, &DataType::Utf8)?,
                None => Arc::new(StringArray::new_null(m)),
            })
        };
        let partition: ArrayRef = match col("_partition") {
            Some(c) => cast(&c, &DataType::Int32)?,
            None => Arc::new(Int32Array::new_null(m)),
        };
        let offset: ArrayRef = match col("_offset") {
            Some(c) => cast(&c, &DataType::Int64)?,
            None => Arc::new(Int64Array::new_null(m)),
        };
        let cols: Vec<ArrayRef> = vec![
            text(pipeline),
            text(&p.name),
            text(p.kind),
            text(p.severity),
            text(&p.condition),
            Arc::new(key),
            Arc::new(times.with_timezone("UTC")),
            Arc::new(StringArray::from(detail)),
            opt_text(&p.output_topic),
            opt_text(&p.destinations),
            or_null_str(col("_topic"))?,
            partition,
            offset,
            or_null_str(col("_correlation_id"))?,
            Arc::new(TimestampMicrosecondArray::from_value(detected_at, m).with_timezone("UTC")),
            Arc::new(dates),
        ];
        Ok(RecordBatch::try_new(alerts_schema(), cols)?)
    }

    /// Rebuilds the state from the data table: the rows of the longest retention before the
    /// newest event time, in the order they landed, with alerts off. Returns the rows read.
    pub async fn seed_from_table(&mut self, table: &deltalake::DeltaTable) -> Result<usize> {
        let tail = crate::dedup::table_tail(table, self.retention_micros()).await?;
        let mut rows = 0;
        for b in &tail {
            rows += b.num_rows();
            self.seed(b)?;
        }
        Ok(rows)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_turns_terms_into_columns_and_leaves_strings_alone() {
        let (sql, terms) =
            rewrite("abs(price - prev(price)) > price * 0.05 AND side <> 'prev(x)'").unwrap();
        assert_eq!(
            sql,
            "abs(price - \"prev(price)\") > price * 0.05 AND side <> 'prev(x)'"
        );
        assert_eq!(terms.len(), 1);
        let (sql, terms) = rewrite("volume > AVG( volume , 20d ) * 3").unwrap();
        assert_eq!(sql, "volume > \"avg(volume, 20d)\" * 3");
        assert_eq!(terms[0].window, Some(20 * DEFAULT_WINDOW_MICROS));
        assert!(rewrite("prev(a, b) > 1")
            .unwrap_err()
            .contains("one column"));
        assert!(rewrite("avg(price * 2) > 1")
            .unwrap_err()
            .contains("column name"));
        assert!(rewrite("avg(x, 5 parsecs) > 1").is_err());
        assert!(rewrite("prev(x > 1").unwrap_err().contains("not closed"));
        // `previous(x)` and `x.avg` are not terms
        let (sql, terms) = rewrite("previous(x) > avg_x").unwrap();
        assert_eq!((sql.as_str(), terms.len()), ("previous(x) > avg_x", 0));
    }

    #[test]
    fn window_mean_covers_the_window_and_forgets_the_rest() {
        let (width, window) = (1, 10);
        let mut w = Window::default();
        for t in 0..10 {
            w.add(t, t as f64, width, window);
        }
        assert_eq!(w.mean(), Some(4.5));
        w.add(15, 100.0, width, window);
        // rows 0..=5 are out of the window (15 - 10 = 5 and older)
        assert_eq!(w.count, 5);
        assert_eq!(w.mean(), Some((6.0 + 7.0 + 8.0 + 9.0 + 100.0) / 5.0));
        // a late row inside the window counts; one outside does not
        w.add(12, 2.0, width, window);
        w.add(1, 1000.0, width, window);
        assert_eq!(w.count, 6);
    }
}
