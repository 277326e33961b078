//! Row rules: compiled once, at load, from the spec's `validation.rules` and condition
//! `business_rules` into DataFusion physical expressions, then evaluated on each RecordBatch
//! into one failure mask per rule. Splitting on the masks is [`crate::split`]; the stateful
//! rule (dedup) is [`crate::dedup`].
//!
//! # NULL semantics
//!
//! A rule never passes or fails a NULL silently: every rule result counts the rows it did not
//! check or could not decide (`null_rows`), and the policy is fixed per kind:
//!
//! | kind | a NULL ... |
//! | --- | --- |
//! | `not_null` | in the column fails the rule (that is what it checks) |
//! | `range`, `regex`, `accepted_values`, `isin`, `currency`, `timestamp_skew` | in the column is not checked: the row passes this rule and is counted under `null_rows`; pair it with `not_null` to require a value |
//! | `sql` and business conditions | that makes the condition unknown fails the rule (a condition that cannot be shown to hold does not hold), counted under `null_rows` too |
//!
//! # What is refused at load
//!
//! Unknown columns (with a "did you mean"), conditions that are not boolean, type mismatches,
//! functions that are not immutable (`now()`, `current_date`, `random()`, `uuid()`: they would
//! give a live batch and last year's table different answers), aggregates, window functions and
//! subqueries (rules are row-local; state belongs to dedup and `cep_patterns`). Every error
//! names the spec file, line and column of the rule.
// Data path: no unwrap/expect on anything derived from message bytes; each remaining one
// says why it cannot fail.
#![warn(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::compute::kernels::boolean::{and_kleene, is_null, not, or_kleene};
use arrow::datatypes::{DataType, Schema, SchemaRef, TimeUnit};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, DataFusionError, SchemaError};
use datafusion::execution::config::SessionConfig;
use datafusion::logical_expr::{ColumnarValue, Expr, ExprSchemable, Volatility};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use finlake_core::spec::{self, Diagnostic, LoadedSpec, Pos, RuleKind, Severity, SpecError};

use crate::error::{QualityError, Result};

/// What happens to a row that fails a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Land the row with `label` in its `_flags` column (`flag` labels with the rule name,
    /// `flag_<label>` with the label).
    Flag {
        /// The label written to `_flags`.
        label: String,
    },
    /// Discard the row, counted.
    Drop,
    /// Quarantine the row (and send it to the dead-letter topic) with the rule and reason.
    DeadLetter,
    /// Fail the whole batch (the ingestor stops, a batch job exits 65).
    Fail,
}

impl Action {
    /// Parses an action in the operations guide's words; `None` for an unknown one.
    pub fn parse(text: &str, rule: &str) -> Option<Action> {
        Some(match text {
            "flag" => Action::Flag { label: rule.into() },
            "drop" => Action::Drop,
            "dead_letter" => Action::DeadLetter,
            "fail" => Action::Fail,
            other => Action::Flag {
                label: other
                    .strip_prefix("flag_")
                    .filter(|l| !l.is_empty())?
                    .into(),
            },
        })
    }

    /// The action as written in a spec.
    pub fn name(&self) -> String {
        match self {
            Action::Flag { label } => format!("flag_{label}"),
            Action::Drop => "drop".into(),
            Action::DeadLetter => "dead_letter".into(),
            Action::Fail => "fail".into(),
        }
    }
}

/// How a rule treats NULL (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NullPolicy {
    /// A NULL in the column fails the rule (`not_null`).
    Fails,
    /// A NULL in the column is not checked; the row passes this rule and is counted.
    NotChecked,
    /// A condition that evaluates to NULL fails the rule, and is counted.
    UnknownFails,
}

/// Where a rule was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `spec.validation.rules[i]`.
    Validation(usize),
    /// `spec.business_rules[i]`.
    Business(usize),
    /// `spec.validation.table_checks[i]`.
    TableCheck(usize),
    /// `spec.cep_patterns[i]`.
    Pattern(usize),
    /// `spec.alerting[i]` (the guide's list of alert rules).
    Alert(usize),
}

impl Origin {
    fn path(self) -> [String; 3] {
        match self {
            Origin::Validation(i) => ["validation".into(), "rules".into(), i.to_string()],
            Origin::Business(i) => ["business_rules".into(), i.to_string(), String::new()],
            Origin::TableCheck(i) => ["validation".into(), "table_checks".into(), i.to_string()],
            Origin::Pattern(i) => ["cep_patterns".into(), i.to_string(), String::new()],
            Origin::Alert(i) => ["alerting".into(), i.to_string(), String::new()],
        }
    }

    /// The YAML path of `field` of this rule.
    pub fn field_path(self, field: &str) -> Vec<String> {
        let mut out = vec!["spec".to_string()];
        out.extend(self.path().into_iter().filter(|s| !s.is_empty()));
        if !field.is_empty() {
            out.push(field.into());
        }
        out
    }
}

/// A compiled row rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The rule's name.
    pub name: String,
    /// Its kind as written (`sql`, `isin`, ...; business conditions are `sql`).
    pub kind: RuleKind,
    /// What happens to a failing row.
    pub action: Action,
    /// warn or error.
    pub severity: Severity,
    /// The column checked, for column rules.
    pub column: Option<String>,
    /// The rule as the SQL condition a good row satisfies (for reports and dead letters).
    pub condition: String,
    /// How NULL is treated.
    pub null_policy: NullPolicy,
    /// Where it was declared.
    pub origin: Origin,
    /// Its line in the spec.
    pub pos: Pos,
    expr: Arc<dyn PhysicalExpr>,
    column_index: Option<usize>,
}

/// One rule on one batch.
#[derive(Debug, Clone)]
pub struct RuleResult {
    /// `true` where the row failed the rule; never NULL.
    pub failed: BooleanArray,
    /// Rows that failed.
    pub failed_rows: u64,
    /// Rows whose value was NULL (not checked, or an unknown condition; see the module docs).
    pub null_rows: u64,
    /// Rows on which the rule could not be evaluated (a division by zero, a failed CAST):
    /// they fail the rule and are counted here.
    pub error_rows: u64,
    /// Where the rule could not be evaluated, and the batch's error text (for the reason).
    pub errors: Option<(BooleanArray, String)>,
}

/// How far an event time may be from its ingest time and still move the dedup watermark,
/// when the spec has no `timestamp_skew` rule on the event time.
pub const DEFAULT_MAX_SKEW_MICROS: i64 = 5 * 60 * 1_000_000;

/// The dedup business rule, told apart from row rules at load.
#[derive(Debug, Clone, PartialEq)]
pub struct DedupRule {
    /// The rule's name.
    pub name: String,
    /// Business key columns.
    pub keys: Vec<String>,
    /// Event-time window, microseconds.
    pub window_micros: i64,
    /// What happens to a row older than the watermark.
    pub on_late: LateAction,
    /// A row whose event time is ahead of its ingest time by more than this does not move its
    /// partition's watermark: the spec's `timestamp_skew` rule on the event time, else 5 minutes.
    pub max_skew_micros: i64,
    /// Its line in the spec.
    pub pos: Pos,
}

/// What happens to a late row (older than the watermark, so not checkable against state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LateAction {
    /// Land it with `late` in `_flags` (the default).
    Flag,
    /// Quarantine it.
    DeadLetter,
}

/// The rules of a pipeline, bound to one schema.
#[derive(Debug, Clone)]
pub struct RuleSet {
    /// Row-local rules, in spec order (validation rules, then business conditions).
    pub rules: Vec<Rule>,
    /// The stateful dedup rule, if any.
    pub dedup: Option<DedupRule>,
    /// The schema the rules are bound to.
    pub schema: SchemaRef,
    /// The spec file, for messages.
    pub file: PathBuf,
}

/// Name of the UDF behind `type: isin`.
pub const ISIN_UDF: &str = "finlake_is_isin";
/// Name of the UDF behind `type: currency`.
pub const CURRENCY_UDF: &str = "finlake_is_currency";

/// A UDF answering `f` on each string; `memoize` when `f` costs more than a hash lookup and
/// the column holds few distinct values (ISINs), not for a bitmap probe (currency codes). On a
/// dictionary-encoded column (as `finlake dq` reads a table's few-valued strings) `f` runs
/// once a dictionary value, and the rows take their key's answer.
fn string_predicate(
    name: &str,
    f: fn(&str) -> bool,
    memoize: bool,
) -> datafusion::logical_expr::ScalarUDF {
    use datafusion::logical_expr::{Signature, TypeSignature};
    let signature = Signature::one_of(
        vec![
            TypeSignature::Exact(vec![DataType::Utf8]),
            TypeSignature::Exact(vec![DataType::Dictionary(
                Box::new(DataType::Int32),
                Box::new(DataType::Utf8),
            )]),
        ],
        Volatility::Immutable,
    );
    let fun = move |args: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> {
        // memoized: each distinct value checked once a batch, a repeat costs a lookup in a
        // small table
        let strings = |a: &ArrayRef| -> BooleanArray {
            let strings = a.as_string::<i32>();
            if !memoize {
                return strings.iter().map(|v| v.map(f)).collect();
            }
            let mut known = datafusion::common::HashMap::<&str, bool>::default();
            strings
                .iter()
                .map(|v| v.map(|s| *known.entry(s).or_insert_with(|| f(s))))
                .collect()
        };
        let eval = |a: &ArrayRef| -> datafusion::error::Result<ArrayRef> {
            match a.as_dictionary_opt::<arrow::datatypes::Int32Type>() {
                Some(d) => {
                    let answers = strings(d.values());
                    Ok(arrow::compute::take(&answers, d.keys(), None)?)
                }
                None => Ok(Arc::new(strings(a))),
            }
        };
        Ok(match &args[0] {
            ColumnarValue::Array(a) => ColumnarValue::Array(eval(a)?),
            ColumnarValue::Scalar(s) => {
                let a = s.to_array()?;
                ColumnarValue::Scalar(datafusion::common::ScalarValue::try_from_array(
                    &eval(&a)?,
                    0,
                )?)
            }
        })
    };
    datafusion::logical_expr::ScalarUDF::from(
        datafusion::logical_expr::expr_fn::SimpleScalarUDF::new_with_signature(
            name,
            signature,
            DataType::Boolean,
            Arc::new(fun),
        ),
    )
}

/// The session rules compile in: decimals parse as decimals (money rules are exact), and the
/// finlake predicates are registered.
pub fn session() -> SessionContext {
    let mut config = SessionConfig::new();
    config.options_mut().sql_parser.parse_float_as_decimal = true;
    let ctx = SessionContext::new_with_config(config);
    ctx.register_udf(string_predicate(
        ISIN_UDF,
        finlake_core::transform::is_valid_isin,
        true,
    ));
    ctx.register_udf(string_predicate(
        CURRENCY_UDF,
        finlake_core::transform::is_iso_currency,
        false,
    ));
    ctx
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn number(v: f64) -> String {
    // Rust prints the shortest text that reads back as the same f64 (`0.1`, not
    // `0.1000000000000000055`), and the parser reads it as an exact decimal.
    format!("{v}")
}

struct Compiler<'a> {
    spec: &'a LoadedSpec,
    ctx: SessionContext,
    schema: SchemaRef,
    df_schema: DFSchema,
    errors: Vec<Diagnostic>,
}

impl Compiler<'_> {
    fn error(&mut self, origin: Origin, field: &str, message: String, hint: Option<String>) {
        let path = origin.field_path(field);
        let refs: Vec<&str> = path.iter().map(String::as_str).collect();
        self.errors.push(self.spec.error_at(&refs, message, hint));
    }

    /// "did you mean" among the schema's columns.
    fn column_hint(&self, name: &str) -> String {
        let names: Vec<&str> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        spec::suggest(name, &names)
    }

    fn column(&mut self, origin: Origin, name: Option<&str>, rule: &str) -> Option<usize> {
        let Some(name) = name else {
            self.error(origin, "", format!("rule `{rule}` needs a `column`"), None);
            return None;
        };
        match self.schema.index_of(name) {
            Ok(i) => Some(i),
            Err(_) => {
                self.error(
                    origin,
                    "column",
                    format!("rule `{rule}`: unknown column `{name}`"),
                    Some(self.column_hint(name)),
                );
                None
            }
        }
    }

    /// A DataFusion error about a rule's condition, as a diagnostic at the rule.
    fn df_error(
        &mut self,
        origin: Origin,
        field: &str,
        rule: &str,
        sql: &str,
        e: &DataFusionError,
    ) {
        let (message, hint) = describe(e, &self.schema);
        self.error(
            origin,
            field,
            format!("rule `{rule}`: {message} in `{sql}`"),
            hint,
        );
    }

    /// Parses, checks and plans one condition.
    fn plan(
        &mut self,
        origin: Origin,
        field: &str,
        rule: &str,
        sql: &str,
    ) -> Option<Arc<dyn PhysicalExpr>> {
        let expr = match self.ctx.parse_sql_expr(sql, &self.df_schema) {
            Ok(e) => e,
            Err(e) => {
                self.df_error(origin, field, rule, sql, &e);
                return None;
            }
        };
        let mut refused = Vec::new();
        let _ = expr.apply(|e| {
            match e {
                Expr::ScalarFunction(f) => {
                    let v = f.func.signature().volatility;
                    if v != Volatility::Immutable {
                        refused.push(format!(
                            "`{}` is {} rather than immutable, so the rule could give a live batch and a rerun over the table different answers",
                            f.func.name(),
                            format!("{v:?}").to_lowercase()
                        ));
                    }
                }
                Expr::AggregateFunction(_) | Expr::WindowFunction(_) => refused.push(format!(
                    "`{e}` needs other rows; row rules are row-local (dedup is a business rule with `keys` and `window`, patterns over rows belong in `cep_patterns`)"
                )),
                Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_) => {
                    refused.push("subqueries are not allowed in rules".into())
                }
                _ => {}
            }
            Ok(TreeNodeRecursion::Continue)
        });
        if !refused.is_empty() {
            for r in refused {
                self.error(origin, field, format!("rule `{rule}`: {r}"), None);
            }
            return None;
        }
        match expr.get_type(&self.df_schema) {
            Ok(DataType::Boolean) => {}
            Ok(other) => {
                self.error(
                    origin,
                    field,
                    format!("rule `{rule}`: `{sql}` is {other}, not a true/false condition"),
                    None,
                );
                return None;
            }
            Err(e) => {
                self.df_error(origin, field, rule, sql, &e);
                return None;
            }
        }
        match self.ctx.create_physical_expr(expr, &self.df_schema) {
            Ok(p) => Some(p),
            Err(e) => {
                self.df_error(origin, field, rule, sql, &e);
                None
            }
        }
    }
}

/// Plans one true/false condition over `schema` with the rule compiler's checks (immutable
/// functions only, no aggregates or subqueries, boolean result), for the pattern engine; the
/// error names the spec line of `origin`'s `field`.
pub fn plan_condition(
    spec: &LoadedSpec,
    schema: SchemaRef,
    origin: Origin,
    field: &str,
    name: &str,
    sql: &str,
) -> std::result::Result<Arc<dyn PhysicalExpr>, SpecError> {
    let invalid = |diagnostics| SpecError::Invalid {
        file: spec.file.clone(),
        diagnostics,
    };
    let df_schema = DFSchema::try_from(schema.as_ref().clone()).map_err(|e| {
        invalid(vec![spec.error_at(
            &origin
                .field_path(field)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            e.to_string(),
            None,
        )])
    })?;
    let mut c = Compiler {
        spec,
        ctx: session(),
        schema,
        df_schema,
        errors: Vec::new(),
    };
    match c.plan(origin, field, name, sql) {
        Some(p) if c.errors.is_empty() => Ok(p),
        _ => Err(invalid(c.errors)),
    }
}

/// A DataFusion error as a sentence and a hint, for a rule author.
fn describe(e: &DataFusionError, schema: &Schema) -> (String, Option<String>) {
    if let DataFusionError::SchemaError(err, _) = e.find_root() {
        if let SchemaError::FieldNotFound { field, .. } = err.as_ref() {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            return (
                format!("unknown column `{}`", field.name),
                Some(spec::suggest(&field.name, &names)),
            );
        }
    }
    let text = e.find_root().to_string();
    let text = text
        .strip_prefix("Error during planning: ")
        .or_else(|| text.strip_prefix("SQL error: "))
        .unwrap_or(&text)
        .to_string();
    (text, None)
}

impl RuleSet {
    /// The columns the row rules read, by name (session columns included).
    pub fn columns(&self) -> std::collections::BTreeSet<String> {
        self.rules
            .iter()
            .flat_map(|r| datafusion::physical_expr::utils::collect_columns(&r.expr))
            .map(|c| c.name().to_string())
            .collect()
    }

    /// Compiles the spec's rules against `schema` (the table's canonical schema plus the
    /// enrichment columns, see [`crate::enrich`]). Every problem is reported at once, with the
    /// spec file and line.
    pub fn compile(spec: &LoadedSpec, schema: SchemaRef) -> std::result::Result<Self, SpecError> {
        let df_schema =
            DFSchema::try_from(schema.as_ref().clone()).map_err(|e| SpecError::Invalid {
                file: spec.file.clone(),
                diagnostics: vec![spec.error_at(&["spec"], e.to_string(), None)],
            })?;
        let mut c = Compiler {
            spec,
            ctx: session(),
            schema: schema.clone(),
            df_schema,
            errors: Vec::new(),
        };
        let mut rules = Vec::new();
        let p = &spec.pipeline.spec;
        let validation = p.validation.as_ref().map(|v| v.rules.as_slice());
        for (i, r) in validation.unwrap_or_default().iter().enumerate() {
            let origin = Origin::Validation(i);
            let action = r.action.as_deref().unwrap_or("dead_letter");
            let Some(action) = Action::parse(action, &r.name) else {
                // the spec check already reported it
                continue;
            };
            let col = r.column.as_deref();
            let (condition, null_policy, field) = match r.kind {
                RuleKind::Sql => match &r.condition {
                    Some(cond) => (cond.clone(), NullPolicy::UnknownFails, "condition"),
                    None => {
                        c.error(
                            origin,
                            "",
                            format!("rule `{}` of type sql needs a `condition`", r.name),
                            None,
                        );
                        continue;
                    }
                },
                kind => {
                    let (Some(idx), Some(col)) = (c.column(origin, col, &r.name), col) else {
                        continue;
                    };
                    let q = quote_ident(col);
                    let cond = match kind {
                        RuleKind::NotNull => format!("{q} IS NOT NULL"),
                        RuleKind::Range => {
                            let (lo, hi) = if r.inclusive.unwrap_or(true) {
                                (">=", "<=")
                            } else {
                                (">", "<")
                            };
                            match (r.min, r.max) {
                                (Some(a), Some(b)) => {
                                    format!("{q} {lo} {} AND {q} {hi} {}", number(a), number(b))
                                }
                                (Some(a), None) => format!("{q} {lo} {}", number(a)),
                                (None, Some(b)) => format!("{q} {hi} {}", number(b)),
                                (None, None) => {
                                    c.error(
                                        origin,
                                        "",
                                        format!(
                                            "range rule `{}` needs `min`, `max` or both",
                                            r.name
                                        ),
                                        None,
                                    );
                                    continue;
                                }
                            }
                        }
                        RuleKind::Regex => match &r.pattern {
                            Some(p) => {
                                if let Err(e) = regex::Regex::new(p) {
                                    c.error(
                                        origin,
                                        "pattern",
                                        format!("rule `{}`: bad pattern: {e}", r.name),
                                        None,
                                    );
                                    continue;
                                }
                                format!("regexp_like({q}, {})", quote_str(p))
                            }
                            None => {
                                c.error(
                                    origin,
                                    "",
                                    format!("regex rule `{}` needs a `pattern`", r.name),
                                    None,
                                );
                                continue;
                            }
                        },
                        RuleKind::AcceptedValues => {
                            if r.values.is_empty() {
                                c.error(
                                    origin,
                                    "",
                                    format!("accepted_values rule `{}` needs `values`", r.name),
                                    None,
                                );
                                continue;
                            }
                            let vals: Vec<String> = r.values.iter().map(|v| quote_str(v)).collect();
                            format!("{q} IN ({})", vals.join(", "))
                        }
                        RuleKind::Isin => format!("{ISIN_UDF}({q})"),
                        RuleKind::Currency => format!("{CURRENCY_UDF}({q})"),
                        RuleKind::TimestampSkew => {
                            let ok_type = matches!(
                                schema.field(idx).data_type(),
                                DataType::Timestamp(TimeUnit::Microsecond, _)
                            );
                            let ingested = schema.index_of(finlake_core::schema::INGESTED_AT);
                            if !ok_type || ingested.is_err() {
                                c.error(
                                    origin,
                                    "column",
                                    format!(
                                        "timestamp_skew rule `{}` needs a microsecond timestamp column and `{}`",
                                        r.name,
                                        finlake_core::schema::INGESTED_AT
                                    ),
                                    None,
                                );
                                continue;
                            }
                            let Some(skew) = r.max_skew else {
                                c.error(
                                    origin,
                                    "",
                                    format!("timestamp_skew rule `{}` needs `max_skew`", r.name),
                                    None,
                                );
                                continue;
                            };
                            format!(
                                "abs(CAST({q} AS BIGINT) - CAST({} AS BIGINT)) <= {}",
                                quote_ident(finlake_core::schema::INGESTED_AT),
                                skew.0.as_micros()
                            )
                        }
                        RuleKind::Sql => unreachable!("handled above"),
                    };
                    let policy = if kind == RuleKind::NotNull {
                        NullPolicy::Fails
                    } else {
                        NullPolicy::NotChecked
                    };
                    (cond, policy, "column")
                }
            };
            let Some(expr) = c.plan(origin, field, &r.name, &condition) else {
                continue;
            };
            let column_index = col.and_then(|n| schema.index_of(n).ok());
            rules.push(Rule {
                name: r.name.clone(),
                kind: r.kind,
                action,
                severity: r.severity.unwrap_or(Severity::Error),
                column: col.map(str::to_string),
                condition,
                null_policy,
                origin,
                pos: spec.pos(&["spec", "validation", "rules", &i.to_string()]),
                expr,
                column_index,
            });
        }
        let mut dedup = None;
        for (i, b) in p.business_rules.iter().enumerate() {
            let origin = Origin::Business(i);
            let pos = spec.pos(&["spec", "business_rules", &i.to_string()]);
            if b.action == "deduplicate" {
                if b.condition.is_some() {
                    c.error(
                        origin,
                        "condition",
                        format!(
                            "dedup rule `{}` takes `keys` and `window`, not a condition",
                            b.name
                        ),
                        None,
                    );
                    continue;
                }
                if b.keys.is_empty() {
                    c.error(
                        origin,
                        "",
                        format!(
                            "dedup rule `{}` needs `keys` (such as [symbol, exchange, trade_id])",
                            b.name
                        ),
                        None,
                    );
                    continue;
                }
                let mut ok = true;
                for (k, key) in b.keys.iter().enumerate() {
                    if schema.index_of(key).is_err() {
                        let names: Vec<&str> =
                            schema.fields().iter().map(|f| f.name().as_str()).collect();
                        let path = origin.field_path("keys");
                        let mut refs: Vec<&str> = path.iter().map(String::as_str).collect();
                        let k = k.to_string();
                        refs.push(&k);
                        c.errors.push(spec.error_at(
                            &refs,
                            format!("dedup rule `{}`: unknown key column `{key}`", b.name),
                            Some(spec::suggest(key, &names)),
                        ));
                        ok = false;
                    }
                }
                if schema.index_of(finlake_core::schema::EVENT_TIME).is_err() {
                    c.error(
                        origin,
                        "",
                        format!(
                            "dedup rule `{}` needs the event time column `{}`",
                            b.name,
                            finlake_core::schema::EVENT_TIME
                        ),
                        None,
                    );
                    ok = false;
                }
                let Some(window) = b.window else {
                    c.error(
                        origin,
                        "",
                        format!("dedup rule `{}` needs a `window` (such as 1m)", b.name),
                        None,
                    );
                    continue;
                };
                if ok && dedup.is_some() {
                    c.error(
                        origin,
                        "",
                        "only one deduplicate rule per pipeline".into(),
                        None,
                    );
                } else if ok {
                    dedup = Some(DedupRule {
                        name: b.name.clone(),
                        keys: b.keys.clone(),
                        window_micros: window.0.as_micros() as i64,
                        on_late: match b.on_late {
                            Some(spec::LateHandling::DeadLetter) => LateAction::DeadLetter,
                            Some(spec::LateHandling::Flag) | None => LateAction::Flag,
                        },
                        max_skew_micros: validation
                            .unwrap_or_default()
                            .iter()
                            .find(|r| {
                                r.kind == RuleKind::TimestampSkew
                                    && r.column.as_deref() == Some(finlake_core::schema::EVENT_TIME)
                            })
                            .and_then(|r| r.max_skew.as_ref())
                            .map_or(DEFAULT_MAX_SKEW_MICROS, |d| d.0.as_micros() as i64),
                        pos,
                    });
                }
                continue;
            }
            if b.window.is_some() || !b.keys.is_empty() {
                c.error(
                    origin,
                    "window",
                    format!(
                        "business rule `{}`: `window` and `keys` belong to `action: deduplicate`; windowed conditions belong in `cep_patterns`",
                        b.name
                    ),
                    None,
                );
                continue;
            }
            let Some(cond) = &b.condition else {
                c.error(
                    origin,
                    "",
                    format!("business rule `{}` needs a `condition`", b.name),
                    None,
                );
                continue;
            };
            let Some(action) = Action::parse(&b.action, &b.name) else {
                continue;
            };
            let Some(expr) = c.plan(origin, "condition", &b.name, cond) else {
                continue;
            };
            rules.push(Rule {
                name: b.name.clone(),
                kind: RuleKind::Sql,
                action,
                severity: b.severity.unwrap_or(Severity::Warn),
                column: None,
                condition: cond.clone(),
                null_policy: NullPolicy::UnknownFails,
                origin,
                pos,
                expr,
                column_index: None,
            });
        }
        check_table_checks(&mut c, dedup.is_some());
        if !c.errors.is_empty() {
            c.errors.sort_by_key(|d| (d.pos.line, d.pos.col));
            return Err(SpecError::Invalid {
                file: spec.file.clone(),
                diagnostics: c.errors,
            });
        }
        Ok(RuleSet {
            rules,
            dedup,
            schema,
            file: spec.file.clone(),
        })
    }

    /// Evaluates every rule on `batch`, whose schema must be the bound one (see
    /// [`crate::engine::RuleEngine`], which projects or recompiles).
    ///
    /// A rule that cannot be evaluated on the batch (division by zero, a CAST that fails on
    /// some value) is evaluated again row by row: the rows it fails on fail the rule and are
    /// counted in [`RuleResult::error_rows`]; the others get their real verdict. Bad data
    /// never stops the stream.
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<Vec<RuleResult>> {
        let n = batch.num_rows();
        self.rules
            .iter()
            .map(|rule| {
                let (value, errored) = match rule.expr.evaluate(batch).and_then(|v| v.into_array(n))
                {
                    Ok(v) => (v, None),
                    Err(e) => {
                        let (v, errored) = evaluate_by_row(rule, batch)?;
                        tracing::warn!(
                            rule = %rule.name,
                            rows = errored.true_count(),
                            error = %e,
                            "rule could not be evaluated on some rows; they fail the rule"
                        );
                        (v, Some((errored, e.to_string())))
                    }
                };
                let value = value
                    .as_boolean_opt()
                    .ok_or_else(|| QualityError::Evaluate {
                        rule: rule.name.clone(),
                        message: format!("gave {}, not booleans", value.data_type()),
                    })?;
                // failed where the value is false, or NULL (unknown)
                let not_true = or_kleene(&not(value)?, &is_null(value)?)?;
                let (failed, null_rows) = match (rule.null_policy, rule.column_index) {
                    (NullPolicy::NotChecked, Some(c)) => {
                        let col_null = is_null(batch.column(c))?;
                        let nulls = col_null.true_count() as u64;
                        (and_kleene(&not_true, &not(&col_null)?)?, nulls)
                    }
                    (NullPolicy::Fails, Some(c)) => (not_true, batch.column(c).null_count() as u64),
                    _ => (not_true, value.null_count() as u64),
                };
                let (failed, null_rows, error_rows) = match &errored {
                    None => (failed, null_rows, 0),
                    Some((rows, _)) => {
                        let k = rows.true_count() as u64;
                        // an errored row is NULL in `value`: count it as an error, not a NULL
                        let nulls = if rule.column_index.is_none() {
                            null_rows.saturating_sub(k)
                        } else {
                            null_rows
                        };
                        (or_kleene(&failed, rows)?, nulls, k)
                    }
                };
                Ok(RuleResult {
                    failed_rows: failed.true_count() as u64,
                    failed,
                    null_rows,
                    error_rows,
                    errors: errored,
                })
            })
            .collect()
    }

    /// The reason a row failed `rule` because it could not be evaluated there.
    pub fn error_reason(rule: &Rule, error: &str) -> String {
        format!(
            "rule `{}` ({}): `{}` could not be evaluated on this row: {error}",
            rule.name,
            kind_name(rule.kind),
            rule.condition
        )
    }

    /// The reason a row failed `rule`, as written to quarantine and dead letters.
    pub fn reason(rule: &Rule) -> String {
        format!(
            "rule `{}` ({}): `{}` does not hold",
            rule.name,
            kind_name(rule.kind),
            rule.condition
        )
    }
}

/// A rule kind as written in a spec (`not_null`, `timestamp_skew`).
pub fn kind_name(kind: RuleKind) -> &'static str {
    match kind {
        RuleKind::NotNull => "not_null",
        RuleKind::Range => "range",
        RuleKind::Regex => "regex",
        RuleKind::AcceptedValues => "accepted_values",
        RuleKind::Isin => "isin",
        RuleKind::Currency => "currency",
        RuleKind::TimestampSkew => "timestamp_skew",
        RuleKind::Sql => "sql",
    }
}

/// Evaluates `rule` one row at a time (zero-copy slices): the slow path, taken only when the
/// whole batch failed. Returns the values (NULL where the row errored) and the errored rows.
fn evaluate_by_row(rule: &Rule, batch: &RecordBatch) -> Result<(ArrayRef, BooleanArray)> {
    let n = batch.num_rows();
    let mut values = arrow::array::BooleanBuilder::with_capacity(n);
    let mut errored = arrow::array::BooleanBuilder::with_capacity(n);
    for row in 0..n {
        let one = batch.slice(row, 1);
        let v = rule.expr.evaluate(&one).and_then(|v| v.into_array(1));
        match v.as_ref().ok().and_then(|a| a.as_boolean_opt()) {
            Some(b) => {
                values.append_option(b.is_valid(0).then(|| b.value(0)));
                errored.append_value(false);
            }
            None => {
                values.append_null();
                errored.append_value(true);
            }
        }
    }
    Ok((Arc::new(values.finish()), errored.finish()))
}

/// Refuses, at load, a table check that could only ever pass or never run: a column the
/// table does not have (a misspelt `missing_percent` column would measure 0 %), a kind that
/// needs a column or values without them, a threshold that does not parse, and a
/// `duplicate_count` with no dedup keys to count by.
fn check_table_checks(c: &mut Compiler<'_>, has_dedup: bool) {
    use finlake_core::spec::TableCheckKind as K;
    let Some(v) = c.spec.pipeline.spec.validation.as_ref() else {
        return;
    };
    for (i, t) in v.table_checks.iter().enumerate() {
        let origin = Origin::TableCheck(i);
        let kind = crate::checks::kind_name(t.kind);
        let needs_column = matches!(t.kind, K::MissingPercent | K::Completeness);
        match (&t.column, needs_column) {
            (None, true) => c.error(
                origin,
                "",
                format!("table check `{}` ({kind}) needs a `column`", t.name),
                None,
            ),
            (Some(col), _) if c.schema.index_of(col).is_err() => {
                let hint = c.column_hint(col);
                c.error(
                    origin,
                    "column",
                    format!("table check `{}` ({kind}): unknown column `{col}`", t.name),
                    Some(hint),
                );
            }
            _ => {}
        }
        if t.kind == K::Completeness && t.expected.is_empty() {
            c.error(
                origin,
                "",
                format!(
                    "table check `{}` (completeness) needs `expected` values",
                    t.name
                ),
                None,
            );
        }
        if t.kind == K::DuplicateCount && !has_dedup {
            c.error(
                origin,
                "",
                format!(
                    "table check `{}` (duplicate_count) counts by the keys of a `deduplicate` \
                     business rule, and the pipeline has none",
                    t.name
                ),
                None,
            );
        }
        let minimum = crate::checks::is_minimum(t.kind);
        for (field, value) in [("warn", &t.warn), ("error", &t.error)] {
            if let Some(text) = value {
                if let Err(e) = crate::checks::parse_threshold(text, minimum) {
                    c.error(
                        origin,
                        field,
                        format!("table check `{}`: {field} threshold {e}", t.name),
                        None,
                    );
                }
            }
        }
    }
}
