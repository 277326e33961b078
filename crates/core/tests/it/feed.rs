use std::sync::Arc;

use arrow::array::AsArray;
use finlake_core::decode::{AvroFraming, SourceDecoder};
use finlake_core::demo::{demo_date, embedded_refdata};
use finlake_core::generate::{self, GenOptions, Generated, WireFormat};
use finlake_core::pipeline::Stages;
use finlake_core::spec::{FallbackStrategy, SourceType};
use finlake_core::transform::{FxConverter, FxRates, Normalizer};

fn feed(format: WireFormat, rows: usize, faults: f64, seed: u64) -> Generated {
    let (symbols, calendar) = embedded_refdata().unwrap();
    generate::generate(
        &GenOptions {
            rows,
            faults,
            seed,
            format,
            date: demo_date(),
            source_type: SourceType::Trade,
        },
        &symbols,
        &calendar,
    )
}

fn stages(decoder: SourceDecoder) -> Stages {
    let (symbols, calendar) = embedded_refdata().unwrap();
    let fx = FxRates::from_batch("USD", &generate::fx_rates(demo_date(), 1)).unwrap();
    Stages::new(
        decoder,
        Arc::new(calendar),
        Some(Normalizer {
            name: "normalize".into(),
            map: Arc::new(symbols),
            fallback: FallbackStrategy::Reject,
        }),
        Some(FxConverter {
            name: "fx".into(),
            rates: Arc::new(fx),
            previous_day: true,
        }),
    )
}

fn avro() -> SourceDecoder {
    SourceDecoder::avro(
        SourceType::Trade,
        &finlake_core::schema::avro_schema(SourceType::Trade),
        AvroFraming::Plain,
    )
    .unwrap()
}

/// Runs a feed in micro-batches and checks every message against the manifest.
fn check_against_manifest(g: &Generated, stages: &Stages) -> (usize, usize) {
    let mut landed = 0;
    let mut rejected = 0;
    for start in (0..g.messages.len()).step_by(5_000) {
        let end = (start + 5_000).min(g.messages.len());
        let msgs: Vec<&[u8]> = g.messages[start..end].iter().map(Vec::as_slice).collect();
        let out = super::process(stages, &msgs, start as i64);
        for i in out.good_index.values() {
            let exp = &g.manifest[start + *i as usize];
            assert_eq!(
                exp.outcome,
                "lands",
                "message {} landed but the manifest says {exp:?}",
                start + *i as usize
            );
        }
        let raw = out
            .quarantine
            .column_by_name("raw_payload")
            .unwrap()
            .as_binary::<i32>();
        let offsets_col = out
            .quarantine
            .column_by_name("_offset")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>();
        for (k, r) in out.rejects.iter().enumerate() {
            let idx = start + r.index as usize;
            let exp = &g.manifest[idx];
            assert_eq!(
                exp.outcome, "rejected",
                "message {idx} rejected ({}) but the manifest says {exp:?}",
                r.reason
            );
            assert_eq!(
                exp.stage.as_deref(),
                Some(r.stage),
                "message {idx}: {}",
                r.reason
            );
            if let Some(field) = &exp.field {
                assert_eq!(r.field.as_ref(), Some(field), "message {idx}: {}", r.reason);
                assert!(
                    r.reason.contains(field.as_str()),
                    "reason must name the field: {}",
                    r.reason
                );
            }
            assert_eq!(
                raw.value(k),
                g.messages[idx].as_slice(),
                "raw bytes of message {idx} changed"
            );
            assert_eq!(offsets_col.value(k), idx as i64);
        }
        assert_eq!(out.good.num_rows() + out.rejects.len(), msgs.len());
        landed += out.good.num_rows();
        rejected += out.rejects.len();
    }
    (landed, rejected)
}

/// Every listed fault kind occurs in the feed, so the manifest check covers each of them.
fn assert_faults_present(g: &Generated, kinds: &[&str]) {
    for kind in kinds {
        let n = g
            .manifest
            .iter()
            .filter(|e| e.fault.as_deref() == Some(*kind))
            .count();
        assert!(n > 0, "no {kind} fault in the feed");
    }
}

/// Landed rows in JPY (quoted USD/JPY by the market, so inverted), EUR and GBP.
fn assert_currencies_landed(g: &Generated, stages: &Stages, currencies: &[&str]) {
    // every 20th message: the feed is in event-time order, Tokyo first, London and New York later
    let msgs: Vec<&[u8]> = g.messages.iter().step_by(20).map(Vec::as_slice).collect();
    let out = super::process(stages, &msgs, 0);
    let ccy = out
        .good
        .column_by_name("currency")
        .unwrap()
        .as_string::<i32>();
    for c in currencies {
        assert!(
            ccy.iter().any(|v| v == Some(*c)),
            "no {c} trade landed: {:?}",
            out.rejects.iter().find(|r| r.reason.contains(c))
        );
    }
}

#[test]
fn json_feed_of_100k_with_faults_matches_the_manifest_message_by_message() {
    let g = feed(WireFormat::Json, 100_000, 0.01, 11);
    assert_faults_present(
        &g,
        &[
            "FractionalInteger",
            "DuplicateKey",
            "ExcessPrecision",
            "NumericTimestamp",
        ],
    );
    let stages = stages(SourceDecoder::json(SourceType::Trade));
    assert_currencies_landed(&g, &stages, &["JPY", "EUR", "GBP"]);
    let (landed, rejected) = check_against_manifest(&g, &stages);
    assert_eq!(landed + rejected, 100_000);
    let expected_rejects = g
        .manifest
        .iter()
        .filter(|e| e.outcome == "rejected")
        .count();
    assert_eq!(rejected, expected_rejects);
    assert!(
        rejected > 500 && rejected < 1_500,
        "about 1% faults, minus duplicates: {rejected}"
    );
}

#[test]
fn avro_feed_of_100k_with_faults_matches_the_manifest_message_by_message() {
    let g = feed(WireFormat::Avro, 100_000, 0.01, 12);
    assert_faults_present(&g, &["TimestampOutOfRange", "MissingField", "BadBytes"]);
    let (landed, rejected) = check_against_manifest(&g, &stages(avro()));
    assert_eq!(landed + rejected, 100_000);
    assert_eq!(
        rejected,
        g.manifest
            .iter()
            .filter(|e| e.outcome == "rejected")
            .count()
    );
}

#[test]
fn json_and_avro_decodes_of_the_same_rows_are_equal() {
    let json = feed(WireFormat::Json, 2_000, 0.0, 5);
    let avro_feed = feed(WireFormat::Avro, 2_000, 0.0, 5);
    let j: Vec<&[u8]> = json.messages.iter().map(Vec::as_slice).collect();
    let a: Vec<&[u8]> = avro_feed.messages.iter().map(Vec::as_slice).collect();
    let jb = SourceDecoder::json(SourceType::Trade).decode(&j).unwrap();
    let ab = avro().decode(&a).unwrap();
    assert!(jb.rejects.is_empty() && ab.rejects.is_empty());
    assert_eq!(jb.batch.schema(), ab.batch.schema());
    assert_eq!(jb.batch, ab.batch);
}

#[test]
fn the_same_seed_gives_the_same_bytes() {
    let a = feed(WireFormat::Json, 500, 0.05, 3);
    let b = feed(WireFormat::Json, 500, 0.05, 3);
    let c = feed(WireFormat::Json, 500, 0.05, 4);
    assert_eq!(a.messages, b.messages);
    assert_ne!(a.messages, c.messages);
}

#[test]
fn a_feed_generated_in_chunks_is_the_whole_feed_byte_for_byte() {
    let opts = GenOptions {
        rows: 7_000,
        faults: 0.05,
        seed: 31,
        format: WireFormat::Json,
        date: demo_date(),
        source_type: SourceType::Trade,
    };
    let (symbols, calendar) = embedded_refdata().unwrap();
    let whole = generate::generate(&opts, &symbols, &calendar);
    let mut stream = generate::FeedGenerator::new(&opts, &symbols, &calendar);
    let (mut messages, mut manifest, mut times) = (Vec::new(), Vec::new(), Vec::new());
    for n in [1, 999, 2_500, 3_500] {
        let chunk = stream.next_chunk(n);
        messages.extend(chunk.messages);
        manifest.extend(chunk.manifest);
        times.extend(chunk.event_times);
    }
    assert_eq!(stream.remaining(), 0);
    assert_eq!(messages, whole.messages);
    assert_eq!(manifest, whole.manifest);
    assert_eq!(times, whole.event_times);
    // retries across a chunk boundary repeat the message before them
    assert!(whole.manifest.iter().any(|e| e
        .fault
        .as_deref()
        .is_some_and(|f| f.starts_with("duplicate_of:"))));
}
