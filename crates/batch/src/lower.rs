//! Lowerings of portable SQL idioms to the form DataFusion runs fastest, applied to the
//! parsed statement before DataFusion plans it. A job's SQL is one text both engines read;
//! where the subset they share spells a computation in a way one engine executes poorly, the
//! statement is rewritten here into an equivalent one, and a test holds the two equal.
//!
//! - `array_agg(x ORDER BY k...)[1]` (the first value in an order, the spelling Polars' SQL
//!   and DuckDB read) becomes `first_value(x ORDER BY k...)`. Both keep a NULL `x` when it
//!   sorts first (`first_value` respects NULLs unless told otherwise) and both give NULL for
//!   an empty group. DataFusion's `array_agg` gathers every value of the group into a list and
//!   sorts it; `first_value` keeps one candidate per group: on a 10 M-row day `daily-bars`
//!   drops from 4.0 s to 0.6 s (BENCHMARKS.md).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, AccessExpr, Expr, Function, FunctionArgumentClause, FunctionArguments,
    Ident, ObjectName, ObjectNamePart, Statement, Subscript, Value,
};

/// The statement with every lowering applied.
pub fn for_datafusion(mut statement: Statement) -> Statement {
    let _ = visit_expressions_mut(&mut statement, |e: &mut Expr| {
        if let Some(f) = first_of_ordered_array_agg(e) {
            *e = Expr::Function(f);
        }
        ControlFlow::<()>::Continue(())
    });
    statement
}

/// `array_agg(x ORDER BY ...)[1]` as `first_value(x ORDER BY ...)`, when `e` is exactly that:
/// one argument, no DISTINCT, an ORDER BY and no other clause, no FILTER, no OVER.
fn first_of_ordered_array_agg(e: &Expr) -> Option<Function> {
    let Expr::CompoundFieldAccess { root, access_chain } = e else {
        return None;
    };
    let [AccessExpr::Subscript(Subscript::Index { index })] = access_chain.as_slice() else {
        return None;
    };
    let Expr::Value(v) = index else { return None };
    if !matches!(&v.value, Value::Number(n, _) if n == "1") {
        return None;
    }
    let Expr::Function(f) = root.as_ref() else {
        return None;
    };
    let name = f.name.to_string();
    if !name.eq_ignore_ascii_case("array_agg")
        || f.filter.is_some()
        || f.over.is_some()
        || f.null_treatment.is_some()
        || !f.within_group.is_empty()
        || !matches!(f.parameters, FunctionArguments::None)
    {
        return None;
    }
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    let ordered = matches!(
        list.clauses.as_slice(),
        [FunctionArgumentClause::OrderBy(keys)] if !keys.is_empty()
    );
    if list.duplicate_treatment.is_some() || list.args.len() != 1 || !ordered {
        return None;
    }
    let mut first = f.clone();
    first.name = ObjectName(vec![ObjectNamePart::Identifier(Ident::new("first_value"))]);
    Some(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn lowered(sql: &str) -> String {
        let s = Parser::parse_sql(&GenericDialect {}, sql)
            .unwrap()
            .remove(0);
        for_datafusion(s).to_string()
    }

    #[test]
    fn the_first_of_an_ordered_array_agg_becomes_first_value() {
        let sql = lowered(
            "SELECT array_agg(price ORDER BY ts, id)[1] AS open, \
             ARRAY_AGG(price ORDER BY ts DESC, id DESC)[1] AS close FROM t GROUP BY k",
        );
        assert!(
            sql.contains("first_value(price ORDER BY ts, id) AS open"),
            "{sql}"
        );
        assert!(
            sql.contains("first_value(price ORDER BY ts DESC, id DESC) AS close"),
            "{sql}"
        );
    }

    #[test]
    fn other_array_aggs_are_left_alone() {
        for sql in [
            "SELECT array_agg(price ORDER BY ts)[2] FROM t",
            "SELECT array_agg(price)[1] FROM t",
            "SELECT array_agg(DISTINCT price ORDER BY price)[1] FROM t",
            "SELECT array_agg(price ORDER BY ts) FILTER (WHERE q > 0)[1] FROM t",
            "SELECT array_agg(price ORDER BY ts) FROM t",
            "SELECT array_agg(price ORDER BY ts)[1][1] FROM t",
        ] {
            assert!(!lowered(sql).contains("first_value"), "{sql}");
        }
    }
}
