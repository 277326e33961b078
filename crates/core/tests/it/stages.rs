//! The spec drives the stages: `Stages::from_spec` reads the transformations' settings and
//! the reference tables they name.

use std::path::Path;

use arrow::array::AsArray;
use finlake_core::demo::{demo_date, embedded_refdata};
use finlake_core::generate::{self, GenOptions, WireFormat};
use finlake_core::pipeline::{Outcome, Stages};
use finlake_core::spec::{self, SourceType};
use finlake_core::transform::RefData;

fn feed(rows: usize, faults: f64) -> generate::Generated {
    let (symbols, calendar) = embedded_refdata().unwrap();
    generate::generate(
        &GenOptions {
            rows,
            faults,
            seed: 77,
            format: WireFormat::Json,
            date: demo_date(),
            source_type: SourceType::Trade,
        },
        &symbols,
        &calendar,
    )
}

fn run(spec_text: &str, refdata: &RefData, g: &generate::Generated) -> Outcome {
    let spec = spec::load_str(Path::new("p.yaml"), spec_text, &|_| None).unwrap();
    let stages = Stages::from_spec(&spec, 0, refdata).unwrap();
    let msgs: Vec<&[u8]> = g.messages.iter().map(Vec::as_slice).collect();
    super::process(&stages, &msgs, 0)
}

fn refdata() -> RefData {
    RefData::new(None).with_table("fx_rates", generate::fx_rates(demo_date(), 1))
}

const SAMPLE: &str = finlake_core::embedded::MARKET_DATA_STREAM;

#[test]
fn fallback_strategy_in_the_spec_decides_what_happens_to_unmapped_symbols() {
    let g = feed(3_000, 0.2);
    let unknown = g
        .manifest
        .iter()
        .filter(|e| e.fault.as_deref() == Some("UnknownSymbol"))
        .count();
    assert!(unknown > 0);
    let rejected = run(SAMPLE, &refdata(), &g);
    let by_normalize = rejected
        .rejects
        .iter()
        .filter(|r| r.stage == "normalize")
        .count();
    assert_eq!(by_normalize, unknown);

    let keep = SAMPLE.replace("fallback_strategy: reject", "fallback_strategy: keep");
    assert_ne!(keep, SAMPLE);
    let kept = run(&keep, &refdata(), &g);
    assert_eq!(
        kept.rejects
            .iter()
            .filter(|r| r.stage == "normalize")
            .count(),
        0
    );
    assert_eq!(kept.good.num_rows(), rejected.good.num_rows() + unknown);
    let isin = kept.good.column_by_name("isin").unwrap().as_string::<i32>();
    assert_eq!(
        isin.iter().filter(|v| *v == Some("ZZZQ")).count(),
        unknown,
        "`keep` lands the symbol itself in the isin column"
    );
}

#[test]
fn mapping_table_in_the_spec_names_the_file_the_isins_come_from() {
    let dir = tempfile::tempdir().unwrap();
    // every symbol mapped to one other (valid) ISIN
    let shipped = finlake_core::embedded::SYMBOL_MAPPING;
    let mut alt = String::new();
    for (i, line) in shipped.lines().enumerate() {
        if i == 0 || line.trim().is_empty() || line.starts_with('#') {
            alt.push_str(line);
        } else {
            let f: Vec<&str> = line.split(',').collect();
            alt.push_str(&format!("{},{},DE0007164600,{},{}", f[0], f[1], f[3], f[4]));
        }
        alt.push('\n');
    }
    std::fs::write(dir.path().join("alt_mapping.csv"), alt).unwrap();
    let g = feed(2_000, 0.0);
    let before = run(SAMPLE, &refdata(), &g);
    let text = SAMPLE.replace(
        "mapping_table: symbol_mapping",
        "mapping_table: alt_mapping",
    );
    let rd = RefData::new(Some(dir.path().to_path_buf()))
        .with_table("fx_rates", generate::fx_rates(demo_date(), 1));
    let after = run(&text, &rd, &g);
    let isins = |o: &Outcome| {
        o.good
            .column_by_name("isin")
            .unwrap()
            .as_string::<i32>()
            .iter()
            .map(|v| v.unwrap().to_string())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert!(isins(&before).len() > 3);
    assert_eq!(
        isins(&after),
        ["DE0007164600".to_string()].into_iter().collect()
    );
    // a table that exists nowhere is an error naming the file looked for
    let missing = SAMPLE.replace("mapping_table: symbol_mapping", "mapping_table: nowhere");
    let spec = spec::load_str(Path::new("p.yaml"), &missing, &|_| None).unwrap();
    let err = Stages::from_spec(&spec, 0, &rd).err().unwrap().to_string();
    assert!(err.contains("nowhere.csv"), "{err}");
}
