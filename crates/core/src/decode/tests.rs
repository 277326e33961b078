use super::*;
use crate::spec::SourceType;

const GOOD: &str = r#"{"trade_id":"T1","symbol":"AAPL","exchange":"XNAS","price":"101.250000","quantity":100,"currency":"USD","side":"B","timestamp":"2026-11-20T14:30:00.123456Z"}"#;

fn decode_json(msgs: &[&str]) -> Decoded {
    let d = SourceDecoder::json(SourceType::Trade);
    let bytes: Vec<&[u8]> = msgs.iter().map(|m| m.as_bytes()).collect();
    d.decode(&bytes).expect("decode never fails on bad data")
}

#[test]
fn clean_batch_lands_every_message_with_utc_schema() {
    let out = decode_json(&[GOOD, GOOD, GOOD]);
    assert_eq!(out.batch.num_rows(), 3);
    assert!(out.rejects.is_empty());
    assert_eq!(
        out.batch.schema(),
        crate::schema::source_schema(SourceType::Trade)
    );
    assert_eq!(out.rows.values().to_vec(), vec![0, 1, 2]);
}

#[test]
fn each_trap_is_a_reject_naming_the_field_and_the_rest_lands() {
    let two = format!("{GOOD}{GOOD}");
    let truncated = &GOOD[..40];
    let excess = GOOD.replace("\"101.250000\"", "101.1234567");
    let numeric_ts = GOOD.replace("\"2026-11-20T14:30:00.123456Z\"", "1795185000");
    let missing = GOOD.replace("\"symbol\":\"AAPL\",", "");
    let wrong_type = GOOD.replace("\"quantity\":100", "\"quantity\":{\"a\":1}");
    let msgs = [
        GOOD,
        &two,
        truncated,
        GOOD,
        &excess,
        &numeric_ts,
        &missing,
        &wrong_type,
        "",
        GOOD,
    ];
    let out = decode_json(&msgs);
    assert_eq!(out.batch.num_rows(), 3, "{:#?}", out.rejects);
    assert_eq!(out.rows.values().to_vec(), vec![0, 3, 9]);
    let by_index: Vec<(u32, Option<&str>)> = out
        .rejects
        .iter()
        .map(|r| (r.index, r.field.as_deref()))
        .collect();
    assert_eq!(
        by_index,
        vec![
            (1, None),
            (2, None),
            (4, Some("price")),
            (5, Some("timestamp")),
            (6, Some("symbol")),
            (7, Some("quantity")),
            (8, None)
        ]
    );
    assert!(
        out.rejects[0].reason.contains("more than one JSON value"),
        "{}",
        out.rejects[0].reason
    );
    assert!(
        out.rejects[1].reason.contains("truncated"),
        "{}",
        out.rejects[1].reason
    );
    assert!(
        out.rejects[2].reason.contains("7 decimal places"),
        "{}",
        out.rejects[2].reason
    );
    assert!(
        out.rejects[3].reason.contains("number"),
        "{}",
        out.rejects[3].reason
    );
    assert!(
        out.rejects[4].reason.contains("missing"),
        "{}",
        out.rejects[4].reason
    );
}

#[test]
fn trailing_zeros_beyond_the_scale_lose_nothing_and_are_accepted() {
    let ok = GOOD.replace("\"101.250000\"", "101.2500000000");
    let out = decode_json(&[&ok]);
    assert!(out.rejects.is_empty(), "{:?}", out.rejects);
}

#[test]
fn decimal_parser_refuses_rounding_and_overflow() {
    assert_eq!(parse_decimal("-0.5", 18, 6), Ok(-500_000));
    assert_eq!(parse_decimal("1e5", 18, 6), Err(DecimalError::Syntax));
    assert_eq!(
        parse_decimal("1234567890123.5", 18, 6),
        Err(DecimalError::Overflow)
    );
    assert_eq!(
        parse_decimal("123456789012.5", 18, 6),
        Ok(123_456_789_012_500_000)
    );
    assert_eq!(parse_decimal(".", 18, 6), Err(DecimalError::Syntax));
}

fn avro_decoder(framing: AvroFraming) -> SourceDecoder {
    SourceDecoder::avro(
        SourceType::Trade,
        &crate::schema::avro_schema(SourceType::Trade),
        framing,
    )
    .unwrap()
}

fn avro_messages(n: usize) -> Vec<Vec<u8>> {
    let (symbols, calendar) = crate::demo::embedded_refdata().unwrap();
    crate::generate::generate(
        &crate::generate::GenOptions {
            rows: n,
            faults: 0.0,
            seed: 7,
            format: crate::generate::WireFormat::Avro,
            date: crate::demo::demo_date(),
            source_type: SourceType::Trade,
        },
        &symbols,
        &calendar,
    )
    .messages
}

#[test]
fn avro_truncated_and_trailing_bytes_are_rejects() {
    let msgs = avro_messages(4);
    let truncated = &msgs[1][..msgs[1].len() - 3];
    let mut trailing = msgs[2].clone();
    trailing.extend_from_slice(&[1, 2, 3]);
    let batch: Vec<&[u8]> = vec![&msgs[0], truncated, &trailing, &msgs[3]];
    let out = avro_decoder(AvroFraming::Plain).decode(&batch).unwrap();
    assert_eq!(out.rows.values().to_vec(), vec![0, 3]);
    assert_eq!(out.rejects.len(), 2);
    // arrow-avro reports a varint cut short by the end of the message as a bad varint
    let r0 = &out.rejects[0].reason;
    assert!(
        r0.contains("truncated") || r0.contains("bad varint"),
        "{r0}"
    );
    assert!(
        out.rejects[1].reason.contains("after its Avro record"),
        "{}",
        out.rejects[1].reason
    );
}

#[test]
fn confluent_unknown_schema_id_is_a_reject_naming_the_id() {
    let msgs = avro_messages(2);
    let frame = |id: u32, body: &[u8]| [&[0u8][..], &id.to_be_bytes(), body].concat();
    let good = frame(17, &msgs[0]);
    let unknown = frame(99, &msgs[1]);
    let out = avro_decoder(AvroFraming::Confluent(17))
        .decode(&[&good, &unknown])
        .unwrap();
    assert_eq!(out.batch.num_rows(), 1);
    assert_eq!(out.rejects.len(), 1);
    assert!(
        out.rejects[0].reason.contains("unknown schema id 99"),
        "{}",
        out.rejects[0].reason
    );
}

#[test]
fn avsc_with_a_wrong_type_fails_at_start_up() {
    let avsc = crate::schema::avro_schema(SourceType::Trade).replace("\"long\"", "\"int\"");
    let err = SourceDecoder::avro(SourceType::Trade, &avsc, AvroFraming::Plain)
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("quantity") || err.to_string().contains("timestamp"),
        "{err}"
    );
}

#[test]
fn integers_are_parsed_strictly_never_truncated() {
    use arrow::array::AsArray;
    let fraction = GOOD.replace("\"quantity\":100", "\"quantity\":100.7");
    let exponent = GOOD.replace("\"quantity\":100", "\"quantity\":1e2");
    let huge = GOOD.replace("\"quantity\":100", "\"quantity\":9223372036854775808");
    let zeros = GOOD.replace("\"quantity\":100", "\"quantity\":100.000");
    let text = GOOD.replace("\"quantity\":100", "\"quantity\":\"250\"");
    let out = decode_json(&[&fraction, &exponent, &huge, &zeros, &text]);
    let reasons: Vec<(u32, &str, &str)> = out
        .rejects
        .iter()
        .map(|r| (r.index, r.field.as_deref().unwrap_or(""), r.reason.as_str()))
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:#?}");
    assert!(
        reasons[0].2.contains("`100.7` has a fractional part"),
        "{reasons:?}"
    );
    assert!(reasons[1].2.contains("exponent"), "{reasons:?}");
    assert!(
        reasons[2].2.contains("does not fit in Int64"),
        "{reasons:?}"
    );
    assert!(reasons.iter().all(|r| r.1 == "quantity"));
    let q = out.batch.column_by_name("quantity").unwrap();
    let q = q.as_primitive::<arrow::datatypes::Int64Type>();
    assert_eq!(q.values().to_vec(), vec![100, 250]);
}

#[test]
fn a_key_given_twice_is_a_reject_naming_the_key() {
    let twice = GOOD.replace("\"side\":\"B\"", "\"side\":\"B\",\"side\":\"S\"");
    let escaped = GOOD.replace("\"side\":\"B\"", "\"side\":\"B\",\"sid\\u0065\":\"S\"");
    // the same word inside a value or a nested object is not a repeated key
    let nested = GOOD.replace(
        "\"side\":\"B\"",
        "\"side\":\"B\",\"extra\":{\"side\":\"S\"}",
    );
    let in_value = GOOD.replace("\"side\":\"B\"", "\"side\":\"side\"");
    let out = decode_json(&[&twice, &escaped, &nested, &in_value]);
    let got: Vec<(u32, Option<&str>)> = out
        .rejects
        .iter()
        .map(|r| (r.index, r.field.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![(0, Some("side")), (1, Some("side"))],
        "{:#?}",
        out.rejects
    );
    assert!(out.rejects[0].reason.contains("more than once"));
    assert_eq!(out.batch.num_rows(), 2);
}

#[test]
fn avro_timestamp_outside_chrono_range_is_a_reject_not_a_panic() {
    use crate::generate::{self, GenOptions, WireFormat};
    let (symbols, calendar) = crate::demo::embedded_refdata().unwrap();
    let g = generate::generate(
        &GenOptions {
            rows: 3_000,
            faults: 0.2,
            seed: 9,
            format: WireFormat::Avro,
            date: crate::demo::demo_date(),
            source_type: SourceType::Trade,
        },
        &symbols,
        &calendar,
    );
    let bad: Vec<usize> = g
        .manifest
        .iter()
        .filter(|e| e.fault.as_deref() == Some("TimestampOutOfRange"))
        .map(|e| e.index as usize)
        .collect();
    assert!(!bad.is_empty());
    let d = SourceDecoder::avro(
        SourceType::Trade,
        &crate::schema::avro_schema(SourceType::Trade),
        AvroFraming::Plain,
    )
    .unwrap();
    let msgs: Vec<&[u8]> = bad.iter().map(|&i| g.messages[i].as_slice()).collect();
    let out = d.decode(&msgs).unwrap();
    assert_eq!(out.rejects.len(), msgs.len());
    assert!(out
        .rejects
        .iter()
        .all(|r| r.field.as_deref() == Some("timestamp")
            && r.reason.contains("outside the representable range")));
}
