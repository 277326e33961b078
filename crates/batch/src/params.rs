//! A job's SQL and its parameters.
//!
//! Job files write parameters as `:date`, `:start`, `:end` and `:prev_trading_day`. That is
//! not DataFusion's syntax (`$name`), and a value is never spliced into SQL text: the query
//! is parsed once at load (sqlparser, the parser DataFusion itself uses), each `:name`
//! placeholder is found in the AST and checked against the known names (an unknown one is a
//! load error with its line and column), and renamed to `$name`. At run time DataFusion binds
//! typed values to those placeholders (`DataFrame::with_param_values`). For an engine with no
//! binding of its own (Polars' SQL context) and for `--dry-run`'s display,
//! [`Query::with_literals`] rewrites the same AST with typed `DATE '…'` literals.

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::path::Path;

use chrono::NaiveDate;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::sql::sqlparser::ast::{
    self, visit_expressions_mut, Expr, Statement, TypedString, Value, ValueWithSpan,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// The parameters a job's SQL may use, all DATE values.
pub const PARAMS: &[&str] = &["date", "start", "end", "prev_trading_day"];

/// A parsed query with `$name` placeholders.
#[derive(Debug, Clone)]
pub struct Query {
    statement: Statement,
    /// The parameters the query uses.
    pub used: BTreeSet<String>,
    /// The tables (and table functions) it reads, its own `WITH` names left out: the job
    /// checks each is one of its declared inputs.
    pub relations: BTreeSet<String>,
}

/// Collects what a statement reads and the names its `WITH` clauses define.
#[derive(Default)]
struct Relations {
    read: BTreeSet<String>,
    defined: BTreeSet<String>,
}

impl ast::Visitor for Relations {
    type Break = ();

    fn pre_visit_query(&mut self, q: &ast::Query) -> ControlFlow<()> {
        for cte in q.with.iter().flat_map(|w| &w.cte_tables) {
            self.defined.insert(cte.alias.name.value.to_lowercase());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, name: &ast::ObjectName) -> ControlFlow<()> {
        // unquoted identifiers are case-insensitive (DataFusion lowercases them)
        self.read.insert(name.to_string().to_lowercase());
        ControlFlow::Continue(())
    }
}

/// The values of one run's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Params {
    /// The logical date.
    pub date: NaiveDate,
    /// The first day of the inputs' window (the date, or its lookback's first trading day).
    pub start: NaiveDate,
    /// The last day of the window: the date.
    pub end: NaiveDate,
    /// The trading day before the date on the job's calendar.
    pub prev_trading_day: NaiveDate,
}

impl Params {
    fn get(&self, name: &str) -> Option<NaiveDate> {
        match name {
            "date" => Some(self.date),
            "start" => Some(self.start),
            "end" => Some(self.end),
            "prev_trading_day" => Some(self.prev_trading_day),
            _ => None,
        }
    }

    /// DataFusion's named parameter values (`Date32`).
    pub fn values(&self) -> ParamValues {
        let map: HashMap<String, ScalarValue> = PARAMS
            .iter()
            .filter_map(|n| Some((n.to_string(), date32(self.get(n)?))))
            .collect();
        ParamValues::Map(map.into_iter().map(|(k, v)| (k, v.into())).collect())
    }
}

/// A date as DataFusion's `Date32` (days since the epoch).
pub fn date32(d: NaiveDate) -> ScalarValue {
    ScalarValue::Date32(Some(finlake_core::transform::symbols::epoch_days(d)))
}

impl Query {
    /// Parses `sql` (from `file`, for messages): exactly one query (`SELECT`/`WITH`), its
    /// parameters among [`PARAMS`].
    pub fn parse(file: &Path, sql: &str) -> Result<Query, String> {
        let mut statements = Parser::parse_sql(&GenericDialect {}, sql)
            .map_err(|e| format!("{}: the SQL does not parse: {e}", file.display()))?;
        if statements.len() != 1 {
            return Err(format!(
                "{}: a job's SQL is one query; found {} statements",
                file.display(),
                statements.len()
            ));
        }
        let mut statement = statements.remove(0);
        if !matches!(statement, Statement::Query(_)) {
            return Err(format!(
                "{}: a job's SQL is a query (SELECT or WITH); the writing is the job's `output`",
                file.display()
            ));
        }
        let mut used = BTreeSet::new();
        let mut bad = Vec::new();
        let _ = visit_expressions_mut(&mut statement, |e: &mut Expr| {
            if let Expr::Value(ValueWithSpan {
                value: Value::Placeholder(p),
                span,
            }) = e
            {
                let at = format!(
                    "{}:{}:{}",
                    file.display(),
                    span.start.line,
                    span.start.column
                );
                match p.strip_prefix(':') {
                    Some(name) if PARAMS.contains(&name) => {
                        used.insert(name.to_string());
                        *p = format!("${name}");
                    }
                    Some(name) => bad.push(format!(
                        "{at}: unknown parameter `:{name}` (the parameters are {})",
                        PARAMS
                            .iter()
                            .map(|p| format!(":{p}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                    None => bad.push(format!(
                        "{at}: placeholder `{p}`: a job's SQL names its parameters, like `:date`"
                    )),
                }
            }
            ControlFlow::<()>::Continue(())
        });
        if !bad.is_empty() {
            return Err(bad.join("; "));
        }
        let mut rel = Relations::default();
        let _ = ast::Visit::visit(&statement, &mut rel);
        let relations = rel.read.difference(&rel.defined).cloned().collect();
        Ok(Query {
            statement,
            used,
            relations,
        })
    }

    /// The statement with `$name` placeholders, for DataFusion to plan and bind.
    pub fn statement(&self) -> Statement {
        self.statement.clone()
    }

    /// The statement with each placeholder replaced by a typed literal (`DATE '2026-11-20'`),
    /// rewritten in the AST: for engines without parameter binding, and for display.
    pub fn with_literals(&self, params: &Params) -> Statement {
        let mut s = self.statement.clone();
        let _ = visit_expressions_mut(&mut s, |e: &mut Expr| {
            if let Expr::Value(ValueWithSpan {
                value: Value::Placeholder(p),
                span,
            }) = e
            {
                if let Some(d) = p.strip_prefix('$').and_then(|n| params.get(n)) {
                    *e = Expr::TypedString(TypedString {
                        data_type: ast::DataType::Date,
                        value: ValueWithSpan {
                            value: Value::SingleQuotedString(d.format("%Y-%m-%d").to_string()),
                            span: *span,
                        },
                        uses_odbc_syntax: false,
                    });
                }
            }
            ControlFlow::<()>::Continue(())
        });
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        Params {
            date: d("2026-11-20"),
            start: d("2026-11-19"),
            end: d("2026-11-20"),
            prev_trading_day: d("2026-11-19"),
        }
    }

    #[test]
    fn named_parameters_become_placeholders_and_typed_literals() {
        let q = Query::parse(
            Path::new("q.sql"),
            "SELECT * FROM t WHERE d = :date AND s = ':date' AND p >= :prev_trading_day",
        )
        .unwrap();
        assert_eq!(
            q.used,
            BTreeSet::from(["date".to_string(), "prev_trading_day".to_string()])
        );
        let df = q.statement().to_string();
        assert!(df.contains("d = $date"), "{df}");
        // a string that looks like a parameter is data, untouched
        assert!(df.contains("s = ':date'"), "{df}");
        let lit = q.with_literals(&params()).to_string();
        assert!(lit.contains("d = DATE '2026-11-20'"), "{lit}");
        assert!(lit.contains("p >= DATE '2026-11-19'"), "{lit}");
    }

    #[test]
    fn the_tables_a_query_reads_are_listed_without_its_own_with_names() {
        let q = Query::parse(
            Path::new("q.sql"),
            "WITH d AS (SELECT * FROM Trades) SELECT * FROM d JOIN (SELECT * FROM \"Quotes\") q ON true, read_parquet('/etc/x')",
        )
        .unwrap();
        let got: Vec<&str> = q.relations.iter().map(String::as_str).collect();
        assert_eq!(got, ["\"quotes\"", "read_parquet", "trades"]);
    }

    #[test]
    fn unknown_parameters_and_statements_are_refused_with_their_place() {
        let e = Query::parse(Path::new("q.sql"), "SELECT 1\nFROM t WHERE d = :day").unwrap_err();
        assert!(e.contains("q.sql:2:"), "{e}");
        assert!(e.contains("unknown parameter `:day`"), "{e}");
        let e = Query::parse(Path::new("q.sql"), "SELECT * FROM t WHERE d = $1").unwrap_err();
        assert!(e.contains("placeholder `$1`"), "{e}");
        let e = Query::parse(Path::new("q.sql"), "DELETE FROM t").unwrap_err();
        assert!(e.contains("is a query"), "{e}");
        let e = Query::parse(Path::new("q.sql"), "SELECT 1; SELECT 2").unwrap_err();
        assert!(e.contains("2 statements"), "{e}");
    }
}
