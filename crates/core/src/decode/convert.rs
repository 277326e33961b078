//! Per-field conversion from wire columns to canonical ones, with the checks the Arrow
//! decoders do not make: required fields present, no decimal places lost, timestamps given as
//! RFC 3339 strings with an offset and no sub-microsecond digits lost.
//!
//! The loops here run over whole columns with borrowed `&str` values: no allocation per row
//! except for the reason text of a reject.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Date32Builder, Decimal128Builder, RecordBatch,
    TimestampMicrosecondBuilder,
};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, SchemaRef};

use super::{DecodeError, Reject};
use crate::schema::{self, Kind};
use crate::spec::SourceType;

/// Why a decimal string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecimalError {
    /// Not a plain decimal number.
    Syntax,
    /// More digits after the point than the scale holds (and they are not all zero).
    TooManyPlaces(usize),
    /// More digits than the precision holds.
    Overflow,
}

/// Parses a plain decimal (`-12.5`, `101.000100`) into an integer at `scale`, exactly.
/// Excess trailing zeros are accepted; any other excess digit is an error, never rounded away.
///
/// ```
/// use finlake_core::decode::{parse_decimal, DecimalError};
/// assert_eq!(parse_decimal("101.25", 18, 6), Ok(101_250_000));
/// assert_eq!(parse_decimal("1.2345678", 18, 6), Err(DecimalError::TooManyPlaces(7)));
/// ```
pub fn parse_decimal(s: &str, precision: u8, scale: i8) -> Result<i128, DecimalError> {
    let bytes = s.as_bytes();
    let (neg, digits) = match bytes.first() {
        Some(b'-') => (true, &bytes[1..]),
        Some(b'+') => (false, &bytes[1..]),
        _ => (false, bytes),
    };
    let scale = scale.max(0) as usize;
    let mut int_part: i128 = 0;
    let mut int_digits = 0usize;
    let mut frac_digits = 0usize;
    let mut seen_point = false;
    let mut any_digit = false;
    let mut lost_nonzero = false;
    let mut total_places = 0usize;
    for &b in digits {
        match b {
            b'0'..=b'9' => {
                any_digit = true;
                let d = i128::from(b - b'0');
                if seen_point {
                    total_places += 1;
                    if frac_digits < scale {
                        int_part = int_part * 10 + d;
                        frac_digits += 1;
                    } else if d != 0 {
                        lost_nonzero = true;
                    }
                } else {
                    if int_digits > 0 || d != 0 {
                        int_digits += 1;
                    }
                    if int_digits > 38 {
                        return Err(DecimalError::Overflow);
                    }
                    int_part = int_part * 10 + d;
                }
            }
            b'.' if !seen_point => seen_point = true,
            _ => return Err(DecimalError::Syntax),
        }
    }
    if !any_digit {
        return Err(DecimalError::Syntax);
    }
    if lost_nonzero {
        return Err(DecimalError::TooManyPlaces(total_places));
    }
    if int_digits + scale > precision as usize {
        return Err(DecimalError::Overflow);
    }
    let mut v = int_part;
    for _ in frac_digits..scale {
        v *= 10;
    }
    Ok(if neg { -v } else { v })
}

/// Why an integer's text was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntError {
    /// Not a plain integer (letters, `true`, an empty string).
    Syntax,
    /// A fraction other than zeros (`100.7`): never truncated.
    Fraction,
    /// An exponent (`1e3`): integers are written out in full.
    Exponent,
    /// Outside the column's range.
    OutOfRange,
}

/// Parses an integer strictly into `[min, max]`. A fraction of zeros (`100.0`) loses nothing
/// and is accepted, as excess zero places are for decimals; any other fraction, an exponent
/// or a value outside the range is an error, never truncated or wrapped.
///
/// ```
/// use finlake_core::decode::{parse_int, IntError};
/// assert_eq!(parse_int("-42", i64::MIN, i64::MAX), Ok(-42));
/// assert_eq!(parse_int("100.0", i64::MIN, i64::MAX), Ok(100));
/// assert_eq!(parse_int("100.7", i64::MIN, i64::MAX), Err(IntError::Fraction));
/// assert_eq!(parse_int("1e3", i64::MIN, i64::MAX), Err(IntError::Exponent));
/// assert_eq!(parse_int("2147483648", i32::MIN.into(), i32::MAX.into()), Err(IntError::OutOfRange));
/// ```
pub fn parse_int(s: &str, min: i64, max: i64) -> Result<i64, IntError> {
    let bytes = s.as_bytes();
    let (neg, rest) = match bytes.first() {
        Some(b'-') => (true, &bytes[1..]),
        Some(b'+') => (false, &bytes[1..]),
        _ => (false, bytes),
    };
    let int_len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if int_len == 0 {
        return Err(IntError::Syntax);
    }
    match rest[int_len..].split_first() {
        None => {}
        Some((b'.', frac)) => {
            if let Some(bad) = frac.iter().find(|b| !b.is_ascii_digit()) {
                return Err(if matches!(bad, b'e' | b'E') {
                    IntError::Exponent
                } else {
                    IntError::Syntax
                });
            }
            if frac.iter().any(|&b| b != b'0') {
                return Err(IntError::Fraction);
            }
        }
        Some((b'e' | b'E', _)) => return Err(IntError::Exponent),
        Some(_) => return Err(IntError::Syntax),
    }
    // Accumulate negatively so i64::MIN parses; overflow is out of range.
    let mut v: i64 = 0;
    for &b in &rest[..int_len] {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_sub(i64::from(b - b'0')))
            .ok_or(IntError::OutOfRange)?;
    }
    let v = if neg {
        v
    } else {
        v.checked_neg().ok_or(IntError::OutOfRange)?
    };
    if v < min || v > max {
        return Err(IntError::OutOfRange);
    }
    Ok(v)
}

/// The instants chrono (and so every date computation downstream) can represent, in UTC
/// microseconds: a wider `timestamp-micros` value from a message is a reject, not a panic.
pub fn timestamp_micros_range() -> std::ops::RangeInclusive<i64> {
    chrono::DateTime::<chrono::Utc>::MIN_UTC.timestamp_micros()
        ..=chrono::DateTime::<chrono::Utc>::MAX_UTC.timestamp_micros()
}

/// Parses an RFC 3339 timestamp with an offset into UTC microseconds.
pub fn parse_timestamp_micros(s: &str) -> Result<i64, String> {
    let t = chrono::DateTime::parse_from_rfc3339(s).map_err(|_| {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'-') {
            format!("expected an RFC 3339 timestamp string such as 2026-11-20T14:30:00.123456Z, found the number `{s}`")
        } else {
            format!("expected an RFC 3339 timestamp with a UTC offset, such as 2026-11-20T14:30:00.123456Z, found `{s}`")
        }
    })?;
    if t.timestamp_subsec_nanos() % 1000 != 0 {
        return Err(format!(
            "`{s}` has sub-microsecond digits, which would be lost"
        ));
    }
    Ok(t.timestamp_micros())
}

fn parse_date(s: &str) -> Result<i32, String> {
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| format!("expected a date such as 2026-11-20, found `{s}`"))?;
    // `NaiveDate::default()` is 1970-01-01
    Ok((d - chrono::NaiveDate::default()).num_days() as i32)
}

fn int_reason(v: &str, e: &IntError, kind: Kind) -> String {
    let ty = if kind == Kind::I32 { "Int32" } else { "Int64" };
    match e {
        IntError::Syntax => format!("`{v}` is not an integer"),
        IntError::Fraction => {
            format!("`{v}` has a fractional part; the column is an integer ({ty}), refusing to truncate")
        }
        IntError::Exponent => {
            format!("`{v}` is written with an exponent; integers must be written out in full")
        }
        IntError::OutOfRange => format!("`{v}` does not fit in {ty}"),
    }
}

struct RowErrors {
    base: u32,
    reasons: Vec<Option<Reject>>,
}

impl RowErrors {
    fn set(&mut self, row: usize, field: &str, reason: impl FnOnce() -> String) {
        if self.reasons[row].is_none() {
            self.reasons[row] = Some(Reject {
                index: self.base + row as u32,
                field: Some(field.to_string()),
                reason: format!("field `{field}`: {}", reason()),
            });
        }
    }
}

/// Converts wire columns (text for decimals and times in JSON; typed in Avro) to the canonical
/// schema, rejecting rows that fail a check. `base` is the batch index of the first row.
pub(crate) fn to_canonical(
    source_type: SourceType,
    canonical: &SchemaRef,
    columns: Vec<ArrayRef>,
    base: u32,
) -> Result<(RecordBatch, Vec<Reject>), DecodeError> {
    let n = columns.first().map_or(0, |c| c.len());
    let mut errs = RowErrors {
        base,
        reasons: vec![None; n],
    };
    let specs = schema::source_fields(source_type);
    let mut out: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    for (spec, col) in specs.iter().zip(columns) {
        let converted: ArrayRef = match (spec.kind, col.data_type()) {
            (Kind::Dec(p, s), DataType::Utf8) => {
                let text = col.as_string::<i32>();
                let mut b = Decimal128Builder::with_capacity(n);
                for row in 0..n {
                    if text.is_null(row) {
                        b.append_null();
                        continue;
                    }
                    let v = text.value(row);
                    match parse_decimal(v, p, s) {
                        Ok(x) => b.append_value(x),
                        Err(e) => {
                            errs.set(row, spec.name, || match e {
                                DecimalError::Syntax => format!("`{v}` is not a decimal number"),
                                DecimalError::TooManyPlaces(k) => format!(
                                    "`{v}` has {k} decimal places, the column keeps {s}; refusing to round"
                                ),
                                DecimalError::Overflow => format!(
                                    "`{v}` does not fit in DECIMAL({p},{s})"
                                ),
                            });
                            b.append_null();
                        }
                    }
                }
                Arc::new(b.finish().with_precision_and_scale(p, s)?)
            }
            (Kind::Ts, DataType::Utf8) => {
                let text = col.as_string::<i32>();
                let mut b = TimestampMicrosecondBuilder::with_capacity(n);
                for row in 0..n {
                    if text.is_null(row) {
                        b.append_null();
                        continue;
                    }
                    match parse_timestamp_micros(text.value(row)) {
                        Ok(t) => b.append_value(t),
                        Err(e) => {
                            errs.set(row, spec.name, || e);
                            b.append_null();
                        }
                    }
                }
                Arc::new(b.finish().with_timezone(schema::UTC))
            }
            (Kind::Date, DataType::Utf8) => {
                let text = col.as_string::<i32>();
                let mut b = Date32Builder::with_capacity(n);
                for row in 0..n {
                    if text.is_null(row) {
                        b.append_null();
                        continue;
                    }
                    match parse_date(text.value(row)) {
                        Ok(d) => b.append_value(d),
                        Err(e) => {
                            errs.set(row, spec.name, || e);
                            b.append_null();
                        }
                    }
                }
                Arc::new(b.finish())
            }
            (Kind::I64 | Kind::I32, DataType::Utf8) => {
                let text = col.as_string::<i32>();
                let narrow = spec.kind == Kind::I32;
                let (min, max) = if narrow {
                    (i64::from(i32::MIN), i64::from(i32::MAX))
                } else {
                    (i64::MIN, i64::MAX)
                };
                let mut parsed = |row: usize| -> Option<i64> {
                    if text.is_null(row) {
                        return None;
                    }
                    let v = text.value(row);
                    parse_int(v, min, max)
                        .map_err(|e| errs.set(row, spec.name, || int_reason(v, &e, spec.kind)))
                        .ok()
                };
                if narrow {
                    // in range by the check above
                    let ints: arrow::array::Int32Array =
                        (0..n).map(|row| parsed(row).map(|v| v as i32)).collect();
                    Arc::new(ints)
                } else {
                    let ints: arrow::array::Int64Array = (0..n).map(&mut parsed).collect();
                    Arc::new(ints)
                }
            }
            (Kind::Ts, DataType::Timestamp(..)) => {
                // Avro: same instant, normalised to the one time zone name finlake uses.
                let micros = arrow::compute::cast(
                    &col,
                    &DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None),
                )?;
                let micros = micros
                    .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                    .clone()
                    .with_timezone(schema::UTC);
                // The value must be an instant chrono can represent (dates are derived from
                // it downstream); outside that it is a reject naming the field, not a panic.
                let range = timestamp_micros_range();
                for (row, v) in micros.iter().enumerate() {
                    if let Some(v) = v.filter(|v| !range.contains(v)) {
                        errs.set(row, spec.name, || {
                            format!(
                                "{v} microseconds since the epoch is outside the representable \
                                 range (years -262143 to 262142)"
                            )
                        });
                    }
                }
                Arc::new(micros)
            }
            (_, dt) if dt == &schema::arrow_type(spec.kind) => col,
            (_, dt) => {
                return Err(DecodeError::Arrow(arrow::error::ArrowError::SchemaError(
                    format!(
                        "field `{}` decoded as {dt}, expected {}",
                        spec.name,
                        schema::arrow_type(spec.kind)
                    ),
                )))
            }
        };
        if spec.required && converted.null_count() > 0 {
            for row in 0..n {
                if converted.is_null(row) {
                    errs.set(row, spec.name, || "is missing or null".to_string());
                }
            }
        }
        out.push(converted);
    }
    let rejects: Vec<Reject> = errs.reasons.into_iter().flatten().collect();
    // Build under a fully nullable schema first: rejected rows hold nulls in required columns.
    let loose = Arc::new(arrow::datatypes::Schema::new(
        canonical
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(loose, out)?;
    let batch = if rejects.is_empty() {
        batch
    } else {
        let keep: arrow::array::BooleanArray = {
            let mut keep = vec![true; n];
            for r in &rejects {
                keep[(r.index - base) as usize] = false;
            }
            keep.into()
        };
        filter_record_batch(&batch, &keep)?
    };
    let batch = RecordBatch::try_new(canonical.clone(), batch.columns().to_vec())?;
    Ok((batch, rejects))
}
