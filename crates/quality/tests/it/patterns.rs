//! Pattern alerts: what the compiler refuses (at the spec line), and the guide's `alerting`
//! rules raising alerts over a generated day.

use arrow::array::AsArray;
use finlake_quality::patterns::PatternSet;

use crate::common;

fn with_patterns(patterns: &str, alerting: &str) -> String {
    common::with_rules(
        "      - {name: p, type: sql, condition: \"price > 0\"}",
        "    - {name: d, window: 1m, keys: [symbol, exchange, trade_id], action: deduplicate}",
    )
    .replace(
        "  destinations:",
        &format!("  cep_patterns:\n{patterns}\n  alerting:\n{alerting}\n  destinations:"),
    )
}

fn landed() -> arrow::datatypes::SchemaRef {
    finlake_quality::engine::landed_schema(&common::trade_schema())
}

fn compile_err(patterns: &str, alerting: &str) -> String {
    let text = with_patterns(patterns, alerting);
    let spec = common::spec("patterns.yaml", &text).unwrap();
    match PatternSet::compile(&spec, landed()) {
        Ok(_) => panic!("compiled:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn patterns_that_cannot_work_fail_at_their_spec_line() {
    let none = "    []";
    // an unknown column inside a term, with a suggestion
    let e = compile_err(
        "    - {name: gap, pattern: \"abs(price - prev(prise)) > 1\", output_topic: a}",
        none,
    );
    assert!(
        e.contains("patterns.yaml:") && e.contains("unknown column `prise`"),
        "{e}"
    );
    assert!(e.contains("price"), "a suggestion: {e}");
    // an unknown column outside the terms, via the rule compiler
    let e = compile_err(
        "    - {name: gap, pattern: \"volume > 10 * avg(quantity)\", output_topic: a}",
        none,
    );
    assert!(e.contains("unknown column `volume`"), "{e}");
    // an average of text, an expression in prev, a bad window, a missing key
    for (pattern, says) in [
        ("avg(side) > 1", "not a number"),
        ("prev(price * 2) > 1", "column name"),
        ("quantity > avg(quantity, 5 fortnights)", "window"),
        ("sum(quantity) > 1", "needs other rows"),
        ("price + 1", "not a true/false condition"),
    ] {
        let e = compile_err(
            &format!("    - {{name: x, pattern: \"{pattern}\", output_topic: a}}"),
            none,
        );
        assert!(e.contains(says), "{pattern}: {e}");
    }
    let e = compile_err(
        "    - {name: x, pattern: \"price > prev(price)\", output_topic: a, keys: [desk]}",
        none,
    );
    assert!(e.contains("key column `desk`"), "{e}");
    // the guide's alert rule names a column no trade has: refused at its line
    let guide = "    - {name: circuit-breaker-alert, condition: \"price_change > 0.10 OR price_change < -0.10\", severity: critical, destinations: [\"slack://trading-alerts\"]}";
    let line = with_patterns("    []", guide)
        .lines()
        .position(|l| l.contains("circuit-breaker-alert"))
        .unwrap()
        + 1;
    let e = compile_err("    []", guide);
    assert!(e.contains(&format!("patterns.yaml:{line}:")), "{e}");
    assert!(e.contains("unknown column `price_change`"), "{e}");
    assert!(e.contains("(price - prev(price)) / prev(price)"), "{e}");
}

/// An `alerting` rule with a `condition` over `prev()` raises alerts like a pattern: its
/// severity and destinations are on the row, a `kafka://` destination is its output topic;
/// a division by zero in the condition raises nothing for that row and stops nothing.
#[test]
fn alerting_rules_raise_alerts_with_their_severity_and_destinations() {
    let text = with_patterns(
        "    - {name: z, pattern: \"price / (quantity - quantity) > 1\", output_topic: z}",
        "    - {name: move, condition: \"abs(price - prev(price)) / prev(price) > 0.0000001\", severity: critical, destinations: [\"slack://desk\", \"kafka://alerts.moves\"]}",
    );
    let spec = common::spec("patterns.yaml", &text).unwrap();
    let day = common::day(300, 3, Default::default());
    let mut engine = finlake_quality::RuleEngine::new(
        std::sync::Arc::new(spec.clone()),
        day.batch.schema(),
        common::calendar(),
    )
    .unwrap();
    let landed = engine.process(&day.batch).unwrap().landed;
    let mut set = PatternSet::compile(&spec, landed.schema())
        .unwrap()
        .unwrap();
    assert_eq!(
        set.output_topics(),
        vec!["alerts.moves".to_string(), "z".into()]
    );
    let alerts = set.process(&landed, 1).unwrap();
    // by hand: rows whose symbol traded before at a different price
    let sym = arrow::compute::cast(
        landed.column_by_name("symbol").unwrap(),
        &arrow::datatypes::DataType::Utf8,
    )
    .unwrap();
    let price = arrow::compute::cast(
        landed.column_by_name("price").unwrap(),
        &arrow::datatypes::DataType::Float64,
    )
    .unwrap();
    let (sym, price) = (
        sym.as_string::<i32>(),
        price.as_primitive::<arrow::datatypes::Float64Type>(),
    );
    let mut prev = std::collections::HashMap::new();
    let mut expected = 0;
    for i in 0..landed.num_rows() {
        if let Some(p) = prev.insert(sym.value(i), price.value(i)) {
            if p != price.value(i) {
                expected += 1;
            }
        }
    }
    assert!(expected > 0);
    assert_eq!(
        alerts.num_rows(),
        expected,
        "the division by zero raised nothing"
    );
    let col = |n: &str| {
        arrow::compute::cast(
            alerts.column_by_name(n).unwrap(),
            &arrow::datatypes::DataType::Utf8,
        )
        .unwrap()
    };
    let (alert, severity, dest, topic, detail) = (
        col("alert"),
        col("severity"),
        col("destinations"),
        col("output_topic"),
        col("detail"),
    );
    for i in 0..alerts.num_rows() {
        assert_eq!(alert.as_string::<i32>().value(i), "move");
        assert_eq!(severity.as_string::<i32>().value(i), "critical");
        assert_eq!(
            dest.as_string::<i32>().value(i),
            "slack://desk,kafka://alerts.moves"
        );
        assert_eq!(topic.as_string::<i32>().value(i), "alerts.moves");
        let v: serde_json::Value =
            serde_json::from_str(detail.as_string::<i32>().value(i)).unwrap();
        assert!(v.get("prev(price)").is_some(), "{v}");
    }
}
