//! Currency conversion of price and notional to a base currency.
//!
//! The rate used is the latest with a timestamp at or before the event time on the event's
//! UTC day; when that day has none, the `previous_day` fallback takes the last rate of the most
//! recent earlier day with rates, at most [`MAX_FALLBACK_DAYS`] back (a weekend). Results are
//! rounded half-even to the column's scale; a result that does not fit its precision is a
//! reject naming the field, never a wrong number, and a row with no usable rate is a reject.
//!
//! Rates are accepted as the market quotes them, in either direction: EUR/USD (base EUR,
//! quote USD: USD per EUR) is used as it is; USD/JPY (base USD, quote JPY: JPY per USD) is
//! inverted to USD per JPY at the rate column's scale (10 places), rounded half to even, so
//! 151.5 JPY per USD becomes 0.0066006601. The relative error of an inverted rate is at most
//! half a unit in the tenth place divided by the rate (below 1e-8 for any rate under 5,000 per
//! base unit); the conversion of a price then rounds once more, half-even, to its own scale.
//! When a currency is quoted both ways, the two series merge by time and the latest wins.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, BooleanArray, Decimal128Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{Decimal128Type, Int64Type, TimestampMicrosecondType};

use super::RowReject;
use crate::error::{Error, Result};
use crate::schema::{self, Kind, NOTIONAL, PRICE, RATE};

/// How far back `previous_day` may reach, in days.
pub const MAX_FALLBACK_DAYS: i64 = 4;
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Rates to one base currency, per source currency, sorted by time.
#[derive(Debug, Clone, Default)]
pub struct FxRates {
    base: String,
    by_ccy: HashMap<String, Vec<(i64, i128)>>,
}

impl FxRates {
    /// Builds from an `fx_rate` batch (base_currency, quote_currency, rate, timestamp), keeping
    /// the pairs that involve `base` in either direction (pairs quoted `base/XXX` are inverted,
    /// see the module docs). A zero or negative rate is refused, naming its row.
    pub fn from_batch(base: &str, batch: &RecordBatch) -> Result<Self> {
        let col = |n: &str| {
            batch
                .column_by_name(n)
                .ok_or_else(|| Error::Usage(format!("fx rates need a `{n}` column")))
        };
        let from = col("base_currency")?.as_string::<i32>();
        let to = col("quote_currency")?.as_string::<i32>();
        let rate = col("rate")?.as_primitive::<Decimal128Type>();
        let ts = col("timestamp")?.as_primitive::<TimestampMicrosecondType>();
        let mut rates = FxRates {
            base: base.to_string(),
            by_ccy: HashMap::new(),
        };
        let unit = 10i128.pow(RATE_SCALE);
        for i in 0..batch.num_rows() {
            let (b, q, r) = (from.value(i), to.value(i), rate.value(i));
            if b == q || (b != base && q != base) {
                continue;
            }
            if r <= 0 {
                return Err(Error::Usage(format!(
                    "fx rate row {i}: {b}/{q} has a non-positive rate"
                )));
            }
            let (ccy, per_base) = if q == base {
                (b, r)
            } else {
                // base/XXX: XXX per base unit; invert to base per XXX at the same scale.
                (q, div_round_half_even(unit * unit, r))
            };
            if per_base == 0 {
                return Err(Error::Usage(format!(
                    "fx rate row {i}: {b}/{q} = {r}e-{RATE_SCALE} inverts to zero at {RATE_SCALE} places"
                )));
            }
            rates
                .by_ccy
                .entry(ccy.to_string())
                .or_default()
                .push((ts.value(i), per_base));
        }
        rates.by_ccy.values_mut().for_each(|v| v.sort_unstable());
        Ok(rates)
    }

    /// The rate for `ccy` at event time `t`: (rate at scale 10, rate time, source).
    pub fn lookup(&self, ccy: &str, t: i64) -> Option<(i128, Option<i64>, &'static str)> {
        if ccy == self.base {
            return Some((10i128.pow(RATE_SCALE), None, "identity"));
        }
        let series = self.by_ccy.get(ccy)?;
        let idx = series.partition_point(|(ts, _)| *ts <= t);
        let (ts, rate) = *series.get(idx.checked_sub(1)?)?;
        let day = t.div_euclid(MICROS_PER_DAY);
        let rate_day = ts.div_euclid(MICROS_PER_DAY);
        if rate_day == day {
            Some((rate, Some(ts), "spot"))
        } else if day - rate_day <= MAX_FALLBACK_DAYS {
            Some((rate, Some(ts), "previous_day"))
        } else {
            None
        }
    }
}

const RATE_SCALE: u32 = 10;

/// `n / d` rounded half to even.
pub fn div_round_half_even(n: i128, d: i128) -> i128 {
    let q = n / d;
    let r = n % d;
    let twice = r.abs() * 2;
    let away = if n.signum() * d.signum() < 0 { -1 } else { 1 };
    if twice > d.abs() || (twice == d.abs() && q % 2 != 0) {
        q + away
    } else {
        q
    }
}

fn limit(kind: Kind) -> i128 {
    match kind {
        Kind::Dec(p, _) => 10i128.pow(u32::from(p)),
        _ => unreachable!("decimal kinds only"),
    }
}

/// The currency-conversion transform.
#[derive(Debug, Clone)]
pub struct FxConverter {
    /// Transform name, the rule in rejects.
    pub name: String,
    /// The rates.
    pub rates: Arc<FxRates>,
    /// Whether `previous_day` is allowed.
    pub previous_day: bool,
}

impl FxConverter {
    /// Computes `price_base, notional, notional_base, fx_rate, fx_rate_ts, fx_source` for a batch
    /// with `price` (DECIMAL(18,6)), `quantity`, `currency` and `timestamp`.
    pub fn apply(&self, batch: &RecordBatch) -> Result<(Vec<ArrayRef>, Vec<RowReject>)> {
        let col = |n: &str| {
            batch
                .column_by_name(n)
                .ok_or_else(|| Error::Usage(format!("`{}` needs a `{n}` column", self.name)))
        };
        let price = col("price")?.as_primitive::<Decimal128Type>();
        let qty = col("quantity")?.as_primitive::<Int64Type>();
        let ccy = col("currency")?.as_string::<i32>();
        let ts = col(schema::EVENT_TIME)?.as_primitive::<TimestampMicrosecondType>();
        let n = batch.num_rows();
        let dec =
            |k: Kind| Decimal128Builder::with_capacity(n).with_data_type(schema::arrow_type(k));
        let (mut price_base, mut notional, mut notional_base, mut fx_rate) =
            (dec(PRICE), dec(NOTIONAL), dec(NOTIONAL), dec(RATE));
        let mut fx_ts = TimestampMicrosecondBuilder::with_capacity(n);
        let mut fx_source = StringBuilder::with_capacity(n, n * 8);
        let mut rejects = Vec::new();
        let rate_unit = 10i128.pow(RATE_SCALE);
        for row in 0..n {
            let reject = |field: &str, reason: String| RowReject {
                row,
                rule: self.name.clone(),
                field: field.into(),
                reason: format!("field `{field}`: {reason}"),
            };
            let found = self
                .rates
                .lookup(ccy.value(row), ts.value(row))
                .filter(|(_, _, src)| *src != "previous_day" || self.previous_day);
            let computed = match found {
                None => Err(reject(
                    "currency",
                    format!(
                        "no {}→{} rate at or before the event time{}",
                        ccy.value(row),
                        self.rates.base,
                        if self.previous_day {
                            " (previous_day fallback tried)"
                        } else {
                            ""
                        }
                    ),
                )),
                Some((rate, rts, src)) => {
                    let p = price.value(row);
                    let notional_v = p.checked_mul(i128::from(qty.value(row)));
                    let pb = p
                        .checked_mul(rate)
                        .map(|x| div_round_half_even(x, rate_unit));
                    let nb = notional_v
                        .and_then(|nv| nv.checked_mul(rate))
                        .map(|x| div_round_half_even(x, rate_unit));
                    match (pb, notional_v, nb) {
                        (Some(pb), Some(nv), Some(nb))
                            if pb.abs() < limit(PRICE)
                                && nv.abs() < limit(NOTIONAL)
                                && nb.abs() < limit(NOTIONAL) =>
                        {
                            Ok((pb, nv, nb, rate, rts, src))
                        }
                        (pb, _, _) => {
                            let field = if pb.is_some_and(|v| v.abs() < limit(PRICE)) {
                                "notional"
                            } else {
                                "price"
                            };
                            Err(reject(
                                field,
                                "the converted value overflows its decimal column".into(),
                            ))
                        }
                    }
                }
            };
            match computed {
                Ok((pb, nv, nb, rate, rts, src)) => {
                    price_base.append_value(pb);
                    notional.append_value(nv);
                    notional_base.append_value(nb);
                    fx_rate.append_value(rate);
                    fx_ts.append_option(rts);
                    fx_source.append_value(src);
                }
                Err(r) => {
                    rejects.push(r);
                    // placeholders, filtered out with the row
                    price_base.append_value(0);
                    notional.append_value(0);
                    notional_base.append_value(0);
                    fx_rate.append_value(0);
                    fx_ts.append_null();
                    fx_source.append_value("");
                }
            }
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(price_base.finish()),
            Arc::new(notional.finish()),
            Arc::new(notional_base.finish()),
            Arc::new(fx_rate.finish()),
            Arc::new(fx_ts.finish().with_timezone(schema::UTC)),
            Arc::new(fx_source.finish()),
        ];
        Ok((cols, rejects))
    }
}

/// A keep-mask with the given rows false.
pub fn mask_without(n: usize, rows: impl IntoIterator<Item = usize>) -> BooleanArray {
    let mut keep = vec![true; n];
    for r in rows {
        keep[r] = false;
    }
    let arr = BooleanArray::from(keep);
    debug_assert_eq!(arr.len(), n);
    arr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_even_rounding() {
        assert_eq!(div_round_half_even(25, 10), 2);
        assert_eq!(div_round_half_even(35, 10), 4);
        assert_eq!(div_round_half_even(-25, 10), -2);
        assert_eq!(div_round_half_even(-35, 10), -4);
        assert_eq!(div_round_half_even(26, 10), 3);
        assert_eq!(div_round_half_even(-26, 10), -3);
        assert_eq!(div_round_half_even(24, 10), 2);
    }

    #[test]
    fn spot_then_previous_day_then_none() {
        let day = MICROS_PER_DAY;
        let mut rates = FxRates {
            base: "USD".into(),
            by_ccy: HashMap::new(),
        };
        rates.by_ccy.insert(
            "EUR".into(),
            vec![
                (10 * day + 100, 10_800_000_000),
                (11 * day + 50, 10_900_000_000),
            ],
        );
        assert_eq!(
            rates.lookup("EUR", 11 * day + 60),
            Some((10_900_000_000, Some(11 * day + 50), "spot"))
        );
        // before the day's first rate: the previous day's last rate
        assert_eq!(
            rates.lookup("EUR", 11 * day + 10).map(|r| r.2),
            Some("previous_day")
        );
        assert_eq!(rates.lookup("EUR", 20 * day), None);
        assert_eq!(rates.lookup("EUR", 5 * day), None);
        assert_eq!(rates.lookup("USD", 5 * day).map(|r| r.2), Some("identity"));
    }

    fn rates_batch(rows: &[(&str, &str, i128)]) -> RecordBatch {
        use arrow::array::{Decimal128Array, StringArray, TimestampMicrosecondArray};
        let n = rows.len();
        RecordBatch::try_new(
            schema::source_schema(crate::spec::SourceType::FxRate),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(
                    Decimal128Array::from_iter_values(rows.iter().map(|r| r.2))
                        .with_data_type(schema::arrow_type(RATE)),
                ),
                Arc::new(StringArray::from_iter_values(std::iter::repeat_n("t", n))),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values((0..n as i64).map(|i| 1_000 + i))
                        .with_timezone(schema::UTC),
                ),
            ],
        )
        .unwrap()
    }

    #[test]
    fn market_convention_pairs_are_inverted_half_even() {
        // USD/JPY 151.5 (JPY per USD) and USD/CHF 0.885, as the market quotes them; EUR/USD as is.
        let batch = rates_batch(&[
            ("USD", "JPY", 1_515_000_000_000),
            ("USD", "CHF", 8_850_000_000),
            ("EUR", "USD", 10_850_000_000),
            ("EUR", "GBP", 8_500_000_000),
        ]);
        let rates = FxRates::from_batch("USD", &batch).unwrap();
        // 1 / 151.5 = 0.00660066006..., to 10 places half-even: 0.0066006601
        assert_eq!(rates.lookup("JPY", 2_000).map(|r| r.0), Some(66_006_601));
        // 1 / 0.885 = 1.12994350282..., to 10 places: 1.1299435028
        assert_eq!(
            rates.lookup("CHF", 2_000).map(|r| r.0),
            Some(11_299_435_028)
        );
        assert_eq!(
            rates.lookup("EUR", 2_000).map(|r| r.0),
            Some(10_850_000_000)
        );
        // a cross not involving the base is not a USD rate
        assert_eq!(rates.lookup("GBP", 2_000), None);
    }

    #[test]
    fn exact_inverse_stays_exact_and_zero_is_refused() {
        // 0.32 XXX per USD inverts to exactly 3.125 USD per XXX: no rounding.
        let rates =
            FxRates::from_batch("USD", &rates_batch(&[("USD", "XXX", 3_200_000_000)])).unwrap();
        assert_eq!(
            rates.lookup("XXX", 2_000).map(|r| r.0),
            Some(31_250_000_000)
        );
        assert!(FxRates::from_batch("USD", &rates_batch(&[("USD", "JPY", 0)])).is_err());
    }
}
