//! Rule compilation (errors at file:line) and evaluation (NULL semantics, actions, flags).

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{Field, Schema};
use finlake_quality::fixtures::Injected;
use finlake_quality::rules::RuleSet;
use finlake_quality::{enrich, RuleEngine};

use crate::common::{self, calendar, trade_schema, with_rules};

fn compile_err(rules: &str, business: &str) -> String {
    let text = with_rules(rules, business);
    let spec = common::spec("rules-test.yaml", &text).expect("the spec itself is valid");
    RuleSet::compile(&spec, enrich::enriched_schema(&trade_schema()))
        .expect_err("the rules must be refused")
        .to_string()
}

const NO_BUSINESS: &str = "    - {name: hours, condition: \"timestamp BETWEEN market_open AND market_close\", action: flag_after_hours}";

#[test]
fn unknown_column_is_refused_with_file_line_and_hint() {
    let err = compile_err(
        "      - {name: ok, type: sql, condition: \"price > 0\"}\n      - {name: typo, type: sql, condition: \"prize > 0\"}",
        NO_BUSINESS,
    );
    // line 14 is the second rule (the rules start on line 13 of the generated spec)
    assert!(err.contains("rules-test.yaml:14:"), "{err}");
    assert!(err.contains("unknown column `prize`"), "{err}");
    assert!(err.contains("price"), "hint names the near miss: {err}");
}

#[test]
fn column_rules_name_their_unknown_column() {
    let err = compile_err("      - {name: c, type: isin, column: isn}", NO_BUSINESS);
    assert!(err.contains("rules-test.yaml:13:"), "{err}");
    assert!(
        err.contains("unknown column `isn`") && err.contains("isin"),
        "{err}"
    );
}

#[test]
fn functions_that_are_not_immutable_are_refused() {
    for (cond, func) in [
        ("timestamp < now()", "now"),
        ("trade_date = current_date", "current_date"),
        ("random() < 0.5", "random"),
        ("uuid() <> ''", "uuid"),
    ] {
        let err = compile_err(
            &format!("      - {{name: r, type: sql, condition: \"{cond}\"}}"),
            NO_BUSINESS,
        );
        assert!(err.contains("rules-test.yaml:13:"), "{cond}: {err}");
        assert!(err.contains(&format!("`{func}`")), "{cond}: {err}");
        assert!(err.contains("rather than immutable"), "{cond}: {err}");
    }
}

#[test]
fn stateful_and_ill_typed_conditions_are_refused() {
    let err = compile_err(
        "      - {name: agg, type: sql, condition: \"quantity > avg(quantity)\"}",
        NO_BUSINESS,
    );
    assert!(err.contains("row-local"), "{err}");
    let err = compile_err(
        "      - {name: num, type: sql, condition: \"price + 1\"}",
        NO_BUSINESS,
    );
    assert!(err.contains("not a true/false condition"), "{err}");
    let err = compile_err(
        "      - {name: mix, type: sql, condition: \"price AND quantity > 0\"}",
        NO_BUSINESS,
    );
    assert!(
        err.contains("rules-test.yaml:13:") && err.contains("`mix`"),
        "{err}"
    );
    // a window on a condition is a pattern, not a rule
    let err = compile_err(
        "      - {name: ok, type: sql, condition: \"price > 0\"}",
        "    - {name: w, condition: \"price > 0\", window: 1m, action: flag}",
    );
    assert!(err.contains("cep_patterns"), "{err}");
}

#[test]
fn every_sample_spec_compiles_against_its_table_schema() {
    for name in [
        "market-data-stream.yaml",
        "fx-rates.yaml",
        "trade-feed.yaml",
    ] {
        let path = common::root().join("samples").join(name);
        let spec = finlake_core::spec::load(&path).unwrap();
        let schema = finlake_quality::dqc::canonical_schema(&spec);
        RuleSet::compile(&spec, enrich::enriched_schema(&schema))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// `batch` with `column` set to NULL in `rows` (and made nullable).
fn with_nulls(batch: &RecordBatch, column: &str, rows: &[usize]) -> RecordBatch {
    let i = batch.schema().index_of(column).unwrap();
    let col = batch.column(i).as_string::<i32>();
    let replaced: StringArray = (0..col.len())
        .map(|r| (!rows.contains(&r)).then(|| col.value(r)))
        .collect();
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[i] = fields[i].clone().with_nullable(true);
    let mut cols = batch.columns().to_vec();
    cols[i] = Arc::new(replaced);
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
}

#[test]
fn null_semantics_are_explicit_per_rule_kind() {
    let text = with_rules(
        "      - {name: present, type: not_null, column: isin, action: flag}\n      - {name: valid, type: isin, column: isin, action: flag}\n      - {name: shape, type: regex, column: isin, pattern: \"^[A-Z]{2}\", action: flag}\n      - {name: cond, type: sql, condition: \"length(isin) = 12\", action: flag}",
        NO_BUSINESS,
    );
    let spec = Arc::new(common::spec("nulls.yaml", &text).unwrap());
    let day = common::day(40, 7, Injected::default());
    let batch = with_nulls(&day.batch, "isin", &[3, 5]);
    let mut engine = RuleEngine::new(spec, batch.schema(), calendar()).unwrap();
    let out = engine.process(&batch).unwrap();
    let s = &out.stats.rules;
    // not_null: NULL fails
    assert_eq!((s["present"].failed, s["present"].null_rows), (2, 2));
    // column rules: NULL is not checked, and counted
    assert_eq!((s["valid"].failed, s["valid"].null_rows), (0, 2));
    assert_eq!((s["shape"].failed, s["shape"].null_rows), (0, 2));
    // conditions: unknown fails, and is counted
    assert_eq!((s["cond"].failed, s["cond"].null_rows), (2, 2));
    // flagged rows land, each listing the rules it failed
    assert_eq!(out.landed.num_rows(), 40);
    let flags = out
        .landed
        .column_by_name("_flags")
        .unwrap()
        .as_list::<i32>();
    let row3: Vec<String> = flags
        .value(3)
        .as_string::<i32>()
        .iter()
        .flatten()
        .map(String::from)
        .collect();
    assert_eq!(row3, vec!["present".to_string(), "cond".to_string()]);
    assert_eq!(flags.value(0).len(), 0);
}

#[test]
fn actions_route_rows_by_the_strictest_rule() {
    let text = with_rules(
        "      - {name: neg, type: sql, condition: \"price > 0\", action: dead_letter}\n      - {name: bad-isin, type: isin, column: isin, action: drop}",
        NO_BUSINESS,
    );
    let spec = Arc::new(common::spec("actions.yaml", &text).unwrap());
    let day = common::day(
        300,
        11,
        Injected {
            negative_price: 4,
            bad_isin: 3,
            after_hours: 5,
            ..Injected::default()
        },
    );
    let mut engine = RuleEngine::new(spec, day.batch.schema(), calendar()).unwrap();
    let out = engine.process(&day.batch).unwrap();
    assert_eq!(out.rejects.len(), 4);
    assert!(out
        .rejects
        .iter()
        .all(|r| r.rule == "neg" && r.reason.contains("price > 0")));
    assert_eq!(out.stats.dropped, 3);
    assert_eq!(
        out.stats.rules["hours"].failed, 5,
        "after-hours rows fail the session rule"
    );
    assert_eq!(out.stats.flagged, 5);
    assert_eq!(out.landed.num_rows(), 300 - 4 - 3);
    let flags = out
        .landed
        .column_by_name("_flags")
        .unwrap()
        .as_list::<i32>();
    let flagged: usize = (0..flags.len())
        .filter(|&i| !flags.value(i).is_empty())
        .count();
    assert_eq!(flagged, 5);
    for i in 0..flags.len() {
        if !flags.value(i).is_empty() {
            assert_eq!(flags.value(i).as_string::<i32>().value(0), "after_hours");
        }
    }
}

#[test]
fn a_fail_rule_fails_the_batch() {
    let text = with_rules(
        "      - {name: stop, type: sql, condition: \"price > 0\", action: fail}",
        NO_BUSINESS,
    );
    let spec = Arc::new(common::spec("fail.yaml", &text).unwrap());
    let day = common::day(
        50,
        3,
        Injected {
            negative_price: 1,
            ..Injected::default()
        },
    );
    let mut engine = RuleEngine::new(spec, day.batch.schema(), calendar()).unwrap();
    let err = engine.process(&day.batch).unwrap_err();
    assert_eq!(err.class(), finlake_core::ErrorClass::Data);
    assert!(err.to_string().contains("`stop` failed on 1 row"), "{err}");
}

#[test]
fn a_schema_change_recompiles_and_a_lost_column_is_refused() {
    let text = with_rules(
        "      - {name: neg, type: sql, condition: \"price > 0\"}",
        NO_BUSINESS,
    );
    let spec = Arc::new(common::spec("schema.yaml", &text).unwrap());
    let day = common::day(30, 5, Injected::default());
    let mut engine = RuleEngine::new(spec, day.batch.schema(), calendar()).unwrap();
    engine.process(&day.batch).unwrap();
    // a new column: the rules recompile and still hold
    let before = finlake_quality::metrics::QualityMetrics::global()
        .recompiles
        .get();
    let mut fields: Vec<Field> = day
        .batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(
        "venue_note",
        arrow::datatypes::DataType::Utf8,
        true,
    ));
    let mut cols = day.batch.columns().to_vec();
    cols.push(Arc::new(StringArray::from(vec![Some("x"); 30])));
    let wider = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
    assert_eq!(engine.process(&wider).unwrap().landed.num_rows(), 30);
    assert!(
        finlake_quality::metrics::QualityMetrics::global()
            .recompiles
            .get()
            > before
    );
    // a batch without `price`: the rule cannot bind, and says where it was declared
    let narrow = day
        .batch
        .project(
            &(0..day.batch.num_columns())
                .filter(|&i| day.batch.schema().field(i).name() != "price")
                .collect::<Vec<_>>(),
        )
        .unwrap();
    let err = engine.process(&narrow).unwrap_err().to_string();
    assert!(
        err.contains("schema.yaml:13:") && err.contains("price"),
        "{err}"
    );
}

#[test]
fn an_evaluation_error_fails_only_the_rows_it_concerns() {
    // quantity = 100 divides by zero; every other row gets its real verdict
    let text = with_rules(
        "      - {name: ratio, type: sql, condition: \"quantity / (quantity - 100) >= 0\", action: dead_letter}",
        NO_BUSINESS,
    );
    let spec = Arc::new(common::spec("div0.yaml", &text).unwrap());
    let day = common::day(400, 21, Injected::default());
    let qty = day
        .batch
        .column_by_name("quantity")
        .unwrap()
        .as_primitive::<arrow::datatypes::Int64Type>();
    let zero_rows = qty.iter().filter(|q| *q == Some(100)).count();
    assert!(zero_rows > 0, "the fixture must hold a quantity of 100");
    let mut engine = RuleEngine::new(spec, day.batch.schema(), calendar()).unwrap();
    let out = engine
        .process(&day.batch)
        .expect("a division by zero on some rows must not fail the batch");
    let stats = out.stats.rules["ratio"];
    assert_eq!(stats.error_rows, zero_rows as u64);
    // generated quantities are multiples of 100 from 100 up: every other row passes
    assert_eq!(out.rejects.len(), zero_rows);
    assert!(out
        .rejects
        .iter()
        .all(|r| r.reason.contains("could not be evaluated") && r.reason.contains("zero")));
    assert_eq!(out.landed.num_rows(), 400 - zero_rows);
}

/// The rule engine's landed batch (`_flags` a list whose element arrow names `item`, nullable)
/// appends to a table another writer created with the list's element named `element` and
/// declared non-null: the append takes the table's shape, and that writer reads the flags back.
#[test]
fn flagged_rows_append_to_a_table_another_writer_created() {
    let text = with_rules(
        "      - {name: present, type: not_null, column: isin, action: flag}",
        NO_BUSINESS,
    );
    let spec = Arc::new(common::spec("flags.yaml", &text).unwrap());
    let day = common::day(40, 7, Injected::default());
    let batch = with_nulls(&day.batch, "isin", &[3, 5]);
    let mut engine = RuleEngine::new(spec, batch.schema(), calendar()).unwrap();
    let landed = engine.process(&batch).unwrap().landed;
    assert_eq!(landed.num_rows(), 40);
    let dir = tempfile::tempdir().unwrap();
    let parquet_path = dir.path().join("landed.parquet");
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&parquet_path).unwrap(),
        landed.schema(),
        None,
    )
    .unwrap();
    w.write(&landed).unwrap();
    w.close().unwrap();
    let table = dir.path().join("trades");
    // the other writer: its first 10 rows, `_flags` as list<element: string not null>
    let py = r#"
import os, sys
import pyarrow as pa, pyarrow.parquet as pq
from deltalake import DeltaTable, write_deltalake
t = pq.read_table(sys.argv[1])
i = t.schema.get_field_index("_flags")
flags = pa.list_(pa.field("element", pa.string(), nullable=False))
t = t.set_column(i, pa.field("_flags", flags, nullable=False), t.column(i).cast(flags))
write_deltalake(sys.argv[2], t.slice(0, 10), partition_by=["trade_date"])
f = DeltaTable(sys.argv[2]).schema().to_arrow().field("_flags")
print(f.type.value_field.nullable, flush=True)
os._exit(0)
"#;
    let (nullable, err) = common::python(py, &[&parquet_path, &table]);
    assert_eq!(
        nullable, "False",
        "the other writer declared the elements non-null: {err}"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let t = deltalake::open_table(
            url::Url::from_directory_path(std::fs::canonicalize(&table).unwrap()).unwrap(),
        )
        .await
        .unwrap();
        finlake_core::delta::append(t, vec![landed.clone()], &Default::default())
            .await
            .expect("the flagged batch appends to the other writer's table");
    });
    let py = r#"
import os, sys
from deltalake import DeltaTable
t = DeltaTable(sys.argv[1]).to_pyarrow_table()
flagged = sorted(set(tuple(f) for f in t.column("_flags").to_pylist() if f))
print(t.num_rows, flagged, flush=True)
os._exit(0)
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", py])
        .arg(&table)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "50 [('present',)]",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `finlake dq` binds the rules to a schema whose few-valued strings are dictionaries: every
/// rule kind that reads a string compiles there and fails the same rows as on plain strings.
#[test]
fn rules_on_dictionary_encoded_strings_fail_the_rows_they_fail_on_plain_strings() {
    use arrow::datatypes::DataType;
    let text = with_rules(
        "      - {name: present, type: not_null, column: isin, action: flag}\n      - {name: valid, type: isin, column: isin, action: flag}\n      - {name: iso, type: currency, column: currency, action: flag}\n      - {name: shape, type: regex, column: symbol, pattern: \"^[A-Z]{3,4}$\", action: flag}\n      - {name: sides, type: accepted_values, column: side, values: [B], action: flag}\n      - {name: cond, type: sql, condition: \"length(isin) = 12 AND upper(currency) <> 'CHF' AND exchange IN ('XNYS', 'XLON')\", action: flag}",
        "    - {name: hours, condition: \"timestamp BETWEEN market_open AND market_close\", action: flag_after_hours}",
    );
    let spec = Arc::new(common::spec("dictionaries.yaml", &text).unwrap());
    let day = common::day(
        2000,
        31,
        Injected {
            null_isin: 5,
            bad_isin: 4,
            after_hours: 6,
            ..Injected::default()
        },
    );
    let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let encoded = ["isin", "currency", "symbol", "side", "exchange"];
    let fields: Vec<Field> = day
        .batch
        .schema()
        .fields()
        .iter()
        .map(|f| match encoded.contains(&f.name().as_str()) {
            true => Field::new(f.name(), dictionary.clone(), f.is_nullable()),
            false => f.as_ref().clone(),
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let cols = schema
        .fields()
        .iter()
        .zip(day.batch.columns())
        .map(|(f, c)| arrow::compute::cast(c, f.data_type()).unwrap())
        .collect();
    let as_dictionaries = RecordBatch::try_new(schema, cols).unwrap();
    let failed = |batch: &RecordBatch| {
        let mut engine = RuleEngine::new(spec.clone(), batch.schema(), calendar())
            .expect("the rules compile")
            .counts_only();
        let out = engine.process(batch).unwrap();
        let mut by_rule: Vec<(String, u64, u64)> = out
            .stats
            .rules
            .iter()
            .map(|(name, s)| (name.clone(), s.failed, s.null_rows))
            .collect();
        by_rule.sort();
        (by_rule, out.stats.flagged)
    };
    let plain = failed(&day.batch);
    assert!(
        plain.0.iter().filter(|(_, failed, _)| *failed > 0).count() >= 4,
        "the day fails most rules somewhere: {plain:?}"
    );
    assert_eq!(failed(&as_dictionaries), plain);
}
