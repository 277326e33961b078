//! Window functions for the `indicators` job, registered in every DataFusion session the
//! runner opens: `ema(x, n)` and `rsi(x, n)` over a partition in order
//! (`ema(close, 20) OVER (PARTITION BY isin, venue ORDER BY trade_date)`).
//!
//! Both are recursive (each value depends on the one before), which SQL's window frames
//! cannot express; each evaluates its whole partition in one pass over a Float64 array.
//! TA-Lib's conventions (the reference the tests check against):
//!
//! - `ema`: k = 2 / (n + 1), seeded with the simple average of the first n values; NULL for
//!   the first n - 1 rows.
//! - `rsi`: Wilder's smoothing: the first average gain and loss are the simple averages of
//!   the first n changes, then `avg = (avg * (n - 1) + change) / n`; RSI = 100 * gain /
//!   (gain + loss); NULL for the first n rows (n changes need n + 1 values).
//!   Where gain and loss are both zero (no price change over the look-back: a halted or
//!   untraded instrument) TA-Lib returns 0, which reads as "deeply oversold"; finlake
//!   returns 50, neutral, on purpose.
//!
//! A NULL input value makes the rest of its partition NULL: a gap in the series has no
//! defined smoothed value.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Builder};
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{
    PartitionEvaluator, Signature, Volatility, WindowUDF, WindowUDFImpl,
};
use datafusion::physical_expr::expressions::Literal;

/// The recursive indicators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Ema,
    Rsi,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Smoothed {
    kind: Kind,
    signature: Signature,
}

/// `ema(x, n)` and `rsi(x, n)`, to register in a session.
pub fn functions() -> Vec<WindowUDF> {
    [Kind::Ema, Kind::Rsi]
        .into_iter()
        .map(|kind| {
            WindowUDF::from(Smoothed {
                kind,
                signature: Signature::exact(
                    vec![DataType::Float64, DataType::Int64],
                    Volatility::Immutable,
                ),
            })
        })
        .collect()
}

impl WindowUDFImpl for Smoothed {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Ema => "ema",
            Kind::Rsi => "rsi",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn partition_evaluator(
        &self,
        args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        let name = self.name();
        let period = args
            .input_exprs()
            .get(1)
            .and_then(|e| e.downcast_ref::<Literal>())
            .map(|l| l.value().clone());
        let n = match period {
            Some(ScalarValue::Int64(Some(n))) if n > 0 && n <= 10_000 => n as usize,
            Some(ScalarValue::Int32(Some(n))) if n > 0 && n <= 10_000 => n as usize,
            other => {
                return exec_err!(
                    "{name}(x, n): n must be a whole number literal from 1 to 10000, not {other:?}"
                )
            }
        };
        Ok(Box::new(Evaluator { kind: self.kind, n }))
    }

    fn field(&self, field_args: WindowUDFFieldArgs) -> Result<FieldRef> {
        Ok(Arc::new(Field::new(
            field_args.name(),
            DataType::Float64,
            true,
        )))
    }
}

#[derive(Debug)]
struct Evaluator {
    kind: Kind,
    n: usize,
}

impl PartitionEvaluator for Evaluator {
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> Result<ArrayRef> {
        let Some(x) = values.first() else {
            return exec_err!("window function called without its value");
        };
        let x = arrow::compute::cast(x, &DataType::Float64)?;
        let x = x.as_primitive::<Float64Type>();
        let mut out = Float64Builder::with_capacity(num_rows);
        match self.kind {
            Kind::Ema => ema(x, self.n, &mut out),
            Kind::Rsi => rsi(x, self.n, &mut out),
        }
        Ok(Arc::new(out.finish()))
    }
}

fn ema(x: &arrow::array::Float64Array, n: usize, out: &mut Float64Builder) {
    let k = 2.0 / (n as f64 + 1.0);
    let mut sum = 0.0;
    let mut prev = f64::NAN;
    let mut poisoned = false;
    for i in 0..x.len() {
        if poisoned || x.is_null(i) {
            poisoned = true; // a gap: NULL from here on
            out.append_null();
            continue;
        }
        let v = x.value(i);
        if i + 1 < n {
            sum += v;
            out.append_null();
        } else if i + 1 == n {
            prev = (sum + v) / n as f64;
            out.append_value(prev);
        } else {
            prev = k * v + (1.0 - k) * prev;
            out.append_value(prev);
        }
    }
}

fn rsi(x: &arrow::array::Float64Array, n: usize, out: &mut Float64Builder) {
    let (mut gain, mut loss) = (0.0, 0.0);
    let mut poisoned = false;
    for i in 0..x.len() {
        if poisoned || x.is_null(i) || (i > 0 && x.is_null(i - 1)) {
            poisoned = true;
            out.append_null();
            continue;
        }
        if i == 0 {
            out.append_null();
            continue;
        }
        let change = x.value(i) - x.value(i - 1);
        let (up, down) = (change.max(0.0), (-change).max(0.0));
        if i < n {
            gain += up;
            loss += down;
            out.append_null();
            continue;
        }
        if i == n {
            gain = (gain + up) / n as f64;
            loss = (loss + down) / n as f64;
        } else {
            gain = (gain * (n as f64 - 1.0) + up) / n as f64;
            loss = (loss * (n as f64 - 1.0) + down) / n as f64;
        }
        let total = gain + loss;
        out.append_value(if total == 0.0 {
            50.0
        } else {
            100.0 * gain / total
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Float64Array;

    fn run(
        f: fn(&Float64Array, usize, &mut Float64Builder),
        x: &[f64],
        n: usize,
    ) -> Vec<Option<f64>> {
        let mut b = Float64Builder::new();
        f(&Float64Array::from(x.to_vec()), n, &mut b);
        b.finish().iter().collect()
    }

    #[test]
    fn look_backs_match_ta_lib() {
        let x: Vec<f64> = (1..=30).map(f64::from).collect();
        let e = run(ema, &x, 20);
        assert_eq!(e.iter().take_while(|v| v.is_none()).count(), 19);
        assert_eq!(e[19], Some(10.5), "seeded with the SMA of the first 20");
        assert_eq!(e[20], Some(11.5));
        let r = run(rsi, &x, 14);
        assert_eq!(r.iter().take_while(|v| v.is_none()).count(), 14);
        assert_eq!(r[14], Some(100.0));
        // no change at all: neutral, where TA-Lib says 0
        let flat = run(rsi, &[10.0; 30], 14);
        assert_eq!(flat[14..], vec![Some(50.0); 16][..]);
    }
}
