//! Symbol to ISIN through an effective-dated mapping (the mapping valid on the row's trade date).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Date32Array, RecordBatch, StringArray, StringBuilder};
use chrono::NaiveDate;

use super::refdata::{bad_line, parse_csv};
use super::{is_valid_isin, RowReject};
use crate::error::{Error, Result};
use crate::spec::FallbackStrategy;

#[derive(Debug, Clone)]
struct Entry {
    from: i32,
    to: Option<i32>,
    isin: String,
}

/// The mapping, keyed by symbol then MIC, each with its validity periods.
#[derive(Debug, Clone, Default)]
pub struct SymbolMap {
    by_symbol: HashMap<String, HashMap<String, Vec<Entry>>>,
}

fn epoch() -> NaiveDate {
    // `NaiveDate::default()` is 1970-01-01
    NaiveDate::default()
}

/// Days since 1970-01-01 of a date.
pub fn epoch_days(d: NaiveDate) -> i32 {
    (d - epoch()).num_days() as i32
}

/// The date `days` after 1970-01-01 (an Arrow `Date32` value); the inverse of [`epoch_days`].
pub fn date_of_epoch_days(days: i32) -> NaiveDate {
    epoch() + chrono::Duration::days(i64::from(days))
}

impl SymbolMap {
    /// Loads `symbol_mapping.csv` (symbol, mic, isin, valid_from, valid_to); every ISIN's check
    /// digit is verified and overlapping periods are refused, each error naming the line.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses mapping CSV text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut map = SymbolMap::default();
        for (line, f) in parse_csv(
            text,
            path,
            &["symbol", "mic", "isin", "valid_from", "valid_to"],
        )? {
            if !is_valid_isin(&f[2]) {
                return Err(bad_line(
                    path,
                    line,
                    format!("`{}` is not a valid ISIN", f[2]),
                ));
            }
            let date = |s: &str| {
                NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .map(epoch_days)
                    .map_err(|_| {
                        bad_line(path, line, format!("`{s}` is not a date like 2026-01-31"))
                    })
            };
            let from = date(&f[3])?;
            let to = if f[4].is_empty() {
                None
            } else {
                Some(date(&f[4])?)
            };
            let periods = map
                .by_symbol
                .entry(f[0].clone())
                .or_default()
                .entry(f[1].clone())
                .or_default();
            let overlaps = periods
                .iter()
                .any(|e| from < e.to.unwrap_or(i32::MAX) && e.from < to.unwrap_or(i32::MAX));
            if overlaps {
                return Err(bad_line(
                    path,
                    line,
                    format!("{} on {} overlaps an earlier validity period", f[0], f[1]),
                ));
            }
            periods.push(Entry {
                from,
                to,
                isin: f[2].clone(),
            });
        }
        Ok(map)
    }

    /// The ISIN of `symbol` on `mic` valid on `day` (days since epoch); `valid_to` is exclusive.
    pub fn lookup(&self, symbol: &str, mic: &str, day: i32) -> Option<&str> {
        self.by_symbol
            .get(symbol)?
            .get(mic)?
            .iter()
            .find(|e| e.from <= day && e.to.is_none_or(|to| day < to))
            .map(|e| e.isin.as_str())
    }

    /// Every (symbol, MIC, ISIN) valid on `day`, for generators and checks.
    pub fn valid_on(&self, day: i32) -> Vec<(&str, &str, &str)> {
        let mut out: Vec<(&str, &str, &str)> = self
            .by_symbol
            .iter()
            .flat_map(|(s, mics)| {
                mics.iter().filter_map(move |(m, es)| {
                    es.iter()
                        .find(|e| e.from <= day && e.to.is_none_or(|to| day < to))
                        .map(|e| (s.as_str(), m.as_str(), e.isin.as_str()))
                })
            })
            .collect();
        out.sort_unstable();
        out
    }
}

/// The normalize transform.
#[derive(Debug, Clone)]
pub struct Normalizer {
    /// Transform name, used as the rule in rejects.
    pub name: String,
    /// The mapping.
    pub map: Arc<SymbolMap>,
    /// What to do with unmapped rows.
    pub fallback: FallbackStrategy,
}

impl Normalizer {
    /// Computes the `isin` column for a batch with `symbol`, `exchange` and `trade_date`.
    /// Rows without a mapping are rejects under `reject`.
    pub fn apply(&self, batch: &RecordBatch) -> Result<(StringArray, Vec<RowReject>)> {
        let col = |name: &str| {
            batch.column_by_name(name).ok_or_else(|| {
                Error::Usage(format!("normalize `{}` needs a `{name}` column", self.name))
            })
        };
        let symbols = col("symbol")?.as_string::<i32>();
        let mics = col("exchange")?.as_string::<i32>();
        let days: &Date32Array = col(crate::schema::TRADE_DATE)?.as_primitive();
        let n = batch.num_rows();
        let mut out = StringBuilder::with_capacity(n, n * 12);
        let mut rejects = Vec::new();
        for row in 0..n {
            let (sym, mic, day) = (symbols.value(row), mics.value(row), days.value(row));
            match self.map.lookup(sym, mic, day) {
                Some(isin) => out.append_value(isin),
                None => match self.fallback {
                    FallbackStrategy::Keep => out.append_value(sym),
                    FallbackStrategy::Null => out.append_null(),
                    FallbackStrategy::Reject => {
                        out.append_null();
                        let date = date_of_epoch_days(day);
                        rejects.push(RowReject {
                                row,
                                rule: self.name.clone(),
                                field: "symbol".into(),
                                reason: format!(
                                    "field `symbol`: no ISIN mapping for `{sym}` on `{mic}` valid on {date}"
                                ),
                            });
                    }
                },
            }
        }
        let isin = out.finish();
        debug_assert_eq!(isin.len(), n);
        Ok((isin, rejects))
    }
}
