//! Built-in schemas: one declaration per source type, from which the canonical Arrow schema,
//! the JSON wire schema and the Avro `.avsc` are all derived, so they cannot drift apart.
//!
//! Money is Decimal128 (never floats), event times are UTC microseconds, and every landed row
//! carries lineage columns and the derived `trade_date` partition column.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::spec::SourceType;

/// The type of a source field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// UTF-8 text.
    Str,
    /// Exact decimal with precision and scale.
    Dec(u8, i8),
    /// UTC timestamp, microseconds; RFC 3339 string in JSON, `timestamp-micros` in Avro.
    Ts,
    /// 64-bit integer.
    I64,
    /// 32-bit integer.
    I32,
    /// Calendar date; `YYYY-MM-DD` in JSON, `date` in Avro.
    Date,
}

/// One field of a source record.
#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    /// Column name.
    pub name: &'static str,
    /// Type.
    pub kind: Kind,
    /// A message without it is a reject.
    pub required: bool,
    /// Must be greater than zero (a basic check applied before the rule engine).
    pub positive: bool,
}

const fn f(name: &'static str, kind: Kind, required: bool) -> FieldSpec {
    FieldSpec {
        name,
        kind,
        required,
        positive: false,
    }
}
const fn pos(name: &'static str, kind: Kind) -> FieldSpec {
    FieldSpec {
        name,
        kind,
        required: true,
        positive: true,
    }
}

/// Price columns: 18 digits, 6 after the point.
pub const PRICE: Kind = Kind::Dec(18, 6);
/// Notional columns: 24 digits, 6 after the point.
pub const NOTIONAL: Kind = Kind::Dec(24, 6);
/// FX rate columns: 18 digits, 10 after the point.
pub const RATE: Kind = Kind::Dec(18, 10);
/// The ingest time lineage column.
pub const INGESTED_AT: &str = "_ingested_at";
/// The event time column every source has.
pub const EVENT_TIME: &str = "timestamp";

const TRADE: &[FieldSpec] = &[
    f("trade_id", Kind::Str, true),
    f("symbol", Kind::Str, true),
    f("exchange", Kind::Str, true),
    pos("price", PRICE),
    pos("quantity", Kind::I64),
    f("currency", Kind::Str, true),
    f("side", Kind::Str, false),
    f("timestamp", Kind::Ts, true),
];
const QUOTE: &[FieldSpec] = &[
    f("symbol", Kind::Str, true),
    f("exchange", Kind::Str, true),
    f("bid_price", PRICE, false),
    f("ask_price", PRICE, false),
    f("bid_size", Kind::I64, false),
    f("ask_size", Kind::I64, false),
    f("currency", Kind::Str, true),
    f("timestamp", Kind::Ts, true),
];
const BOOK_UPDATE: &[FieldSpec] = &[
    f("symbol", Kind::Str, true),
    f("exchange", Kind::Str, true),
    f("side", Kind::Str, true),
    f("level", Kind::I32, true),
    f("price", PRICE, true),
    f("size", Kind::I64, true),
    f("action", Kind::Str, true),
    f("currency", Kind::Str, true),
    f("timestamp", Kind::Ts, true),
];
const FX_RATE: &[FieldSpec] = &[
    f("base_currency", Kind::Str, true),
    f("quote_currency", Kind::Str, true),
    pos("rate", RATE),
    f("source", Kind::Str, false),
    f("timestamp", Kind::Ts, true),
];
const BOND_PRICE: &[FieldSpec] = &[
    f("isin", Kind::Str, true),
    pos("clean_price", PRICE),
    f("dirty_price", PRICE, false),
    f("yield_pct", Kind::Dec(12, 6), false),
    f("currency", Kind::Str, true),
    f("timestamp", Kind::Ts, true),
];
const EXECUTION_REPORT: &[FieldSpec] = &[
    f("exec_id", Kind::Str, true),
    f("order_id", Kind::Str, true),
    f("symbol", Kind::Str, true),
    f("exchange", Kind::Str, true),
    f("side", Kind::Str, true),
    f("exec_type", Kind::Str, true),
    f("last_price", PRICE, false),
    f("last_qty", Kind::I64, false),
    f("cum_qty", Kind::I64, false),
    f("currency", Kind::Str, true),
    f("timestamp", Kind::Ts, true),
];
const ORDER: &[FieldSpec] = &[
    f("order_id", Kind::Str, true),
    f("symbol", Kind::Str, true),
    f("exchange", Kind::Str, true),
    f("side", Kind::Str, true),
    f("order_type", Kind::Str, true),
    f("price", PRICE, false),
    pos("quantity", Kind::I64),
    f("time_in_force", Kind::Str, false),
    f("currency", Kind::Str, true),
    f("timestamp", Kind::Ts, true),
];
const CORPORATE_ACTION: &[FieldSpec] = &[
    f("action_id", Kind::Str, true),
    f("isin", Kind::Str, true),
    f("action_type", Kind::Str, true),
    f("ex_date", Kind::Date, true),
    f("ratio", Kind::Dec(18, 8), false),
    f("amount", PRICE, false),
    f("currency", Kind::Str, false),
    f("timestamp", Kind::Ts, true),
];

const POSITION: &[FieldSpec] = &[
    f("account_id", Kind::Str, true),
    f("symbol", Kind::Str, true),
    f("exchange", Kind::Str, false),
    f("quantity", Kind::I64, true),
    f("market_value", NOTIONAL, false),
    f("currency", Kind::Str, true),
    f("timestamp", Kind::Ts, true),
];

/// The fields of a source type, in column order.
pub fn source_fields(t: SourceType) -> &'static [FieldSpec] {
    match t {
        SourceType::Trade => TRADE,
        SourceType::Quote => QUOTE,
        SourceType::BookUpdate => BOOK_UPDATE,
        SourceType::FxRate => FX_RATE,
        SourceType::BondPrice => BOND_PRICE,
        SourceType::ExecutionReport => EXECUTION_REPORT,
        SourceType::Order => ORDER,
        SourceType::CorporateAction => CORPORATE_ACTION,
        SourceType::TradeFeed => TRADE,
        SourceType::Positions => POSITION,
    }
}

/// The time zone name every timestamp column carries.
pub const UTC: &str = "UTC";

/// Arrow type of a field kind in the canonical (landed) schema.
pub fn arrow_type(kind: Kind) -> DataType {
    match kind {
        Kind::Str => DataType::Utf8,
        Kind::Dec(p, s) => DataType::Decimal128(p, s),
        Kind::Ts => timestamp_type(),
        Kind::I64 => DataType::Int64,
        Kind::I32 => DataType::Int32,
        Kind::Date => DataType::Date32,
    }
}

/// `Timestamp(Microsecond, "UTC")`.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
}

/// The decoded schema of a source type: its fields with canonical types.
pub fn source_schema(t: SourceType) -> SchemaRef {
    Arc::new(Schema::new(
        source_fields(t)
            .iter()
            .map(|f| Field::new(f.name, arrow_type(f.kind), !f.required))
            .collect::<Vec<_>>(),
    ))
}

/// The schema arrow-json decodes into: decimals, integers, timestamps and dates as text
/// (checked and converted by finlake, so excess decimal places, fractional or out-of-range
/// integers and numeric timestamps are caught rather than rounded or truncated), and every
/// field nullable (so a missing field is a reject naming the field, not a batch error).
pub fn json_wire_schema(t: SourceType) -> SchemaRef {
    Arc::new(Schema::new(
        source_fields(t)
            .iter()
            .map(|f| Field::new(f.name, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ))
}

/// Lineage columns every landed row carries.
pub fn lineage_fields() -> Vec<Field> {
    vec![
        Field::new("_topic", DataType::Utf8, false),
        Field::new("_partition", DataType::Int32, false),
        Field::new("_offset", DataType::Int64, false),
        Field::new("_ingested_at", timestamp_type(), false),
        Field::new("_correlation_id", DataType::Utf8, false),
    ]
}

/// Columns added by the transforms, when configured.
pub fn enrichment_fields(normalize: bool, fx: bool) -> Vec<Field> {
    let mut out = Vec::new();
    if normalize {
        out.push(Field::new("isin", DataType::Utf8, true));
    }
    if fx {
        out.extend([
            Field::new("price_base", arrow_type(PRICE), false),
            Field::new("notional", arrow_type(NOTIONAL), false),
            Field::new("notional_base", arrow_type(NOTIONAL), false),
            Field::new("fx_rate", arrow_type(RATE), false),
            Field::new("fx_rate_ts", timestamp_type(), true),
            Field::new("fx_source", DataType::Utf8, false),
        ]);
    }
    out
}

/// The partition column of data tables: the event's date in the exchange's time zone.
pub const TRADE_DATE: &str = "trade_date";

/// The landed table schema: source fields, enrichment, lineage, then `trade_date`.
pub fn table_schema(t: SourceType, normalize: bool, fx: bool) -> SchemaRef {
    let source = source_schema(t);
    let mut fields: Vec<Field> = source.fields().iter().map(|f| f.as_ref().clone()).collect();
    if normalize && fields.iter().any(|f| f.name() == "isin") {
        // bond prices and corporate actions already carry an ISIN
        fields.extend(enrichment_fields(false, fx));
    } else {
        fields.extend(enrichment_fields(normalize, fx));
    }
    fields.extend(lineage_fields());
    fields.push(Field::new(TRADE_DATE, DataType::Date32, false));
    Arc::new(Schema::new(fields))
}

/// The quarantine table schema; partitioned by `ingest_date`.
pub fn quarantine_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("_topic", DataType::Utf8, false),
        Field::new("_partition", DataType::Int32, false),
        Field::new("_offset", DataType::Int64, false),
        Field::new("_ingested_at", timestamp_type(), false),
        Field::new("_correlation_id", DataType::Utf8, false),
        Field::new("stage", DataType::Utf8, false),
        Field::new("rule", DataType::Utf8, false),
        Field::new("field", DataType::Utf8, true),
        Field::new("reason", DataType::Utf8, false),
        Field::new("raw_payload", DataType::Binary, false),
        Field::new("ingest_date", DataType::Date32, false),
    ]))
}

/// The Avro schema (`.avsc` JSON) of a source type: what producers write and finlake reads.
pub fn avro_schema(t: SourceType) -> String {
    let fields: Vec<serde_json::Value> = source_fields(t)
        .iter()
        .map(|f| {
            let ty = match f.kind {
                Kind::Str => serde_json::json!("string"),
                Kind::I64 => serde_json::json!("long"),
                Kind::I32 => serde_json::json!("int"),
                Kind::Ts => serde_json::json!({"type": "long", "logicalType": "timestamp-micros"}),
                Kind::Date => serde_json::json!({"type": "int", "logicalType": "date"}),
                Kind::Dec(p, s) => serde_json::json!({"type": "bytes", "logicalType": "decimal", "precision": p, "scale": s}),
            };
            if f.required {
                serde_json::json!({"name": f.name, "type": ty})
            } else {
                serde_json::json!({"name": f.name, "type": ["null", ty], "default": null})
            }
        })
        .collect();
    let name = format!("{t:?}");
    serde_json::to_string_pretty(&serde_json::json!({
        "type": "record",
        "name": name,
        "namespace": "io.finlake",
        "fields": fields
    }))
    .expect("a JSON value always serialises")
}
