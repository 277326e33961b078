//! Reference data: CSV loading with line-numbered errors, the exchange calendar, and a cache
//! that refreshes single-flight (many batches asking at once cause one load).

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, NaiveTime, TimeZone};
use chrono_tz::Tz;

use crate::error::{Error, Result};

/// Reads a small CSV with a header; yields (line number, fields) for each data line.
pub fn read_csv(path: &Path, expected_header: &[&str]) -> Result<Vec<(usize, Vec<String>)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_csv(&text, path, expected_header)
}

/// Parses CSV text; `path` names it in errors.
pub fn parse_csv(
    text: &str,
    path: &Path,
    expected_header: &[&str],
) -> Result<Vec<(usize, Vec<String>)>> {
    let mut lines = text.lines().enumerate();
    let header: Vec<&str> = lines
        .next()
        .map(|(_, l)| l.split(',').map(str::trim).collect())
        .unwrap_or_default();
    if header != expected_header {
        return Err(Error::RefData {
            path: path.to_path_buf(),
            message: format!(
                "line 1: header is `{}`, expected `{}`",
                header.join(","),
                expected_header.join(",")
            ),
        });
    }
    let mut rows = Vec::new();
    for (i, line) in lines {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<String> = line.split(',').map(|f| f.trim().to_string()).collect();
        if fields.len() != expected_header.len() {
            return Err(Error::RefData {
                path: path.to_path_buf(),
                message: format!(
                    "line {}: {} fields, expected {}",
                    i + 1,
                    fields.len(),
                    expected_header.len()
                ),
            });
        }
        rows.push((i + 1, fields));
    }
    Ok(rows)
}

pub(crate) fn bad_line(path: &Path, line: usize, message: String) -> Error {
    Error::RefData {
        path: path.to_path_buf(),
        message: format!("line {line}: {message}"),
    }
}

/// An exchange's time zone and regular session.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// IANA time zone.
    pub tz: Tz,
    /// Regular session open, local time.
    pub open: NaiveTime,
    /// Regular session close, local time.
    pub close: NaiveTime,
}

/// Exchanges by MIC, from `exchange_hours.csv` (MIC, time zone, open, close), and their
/// closed days and early closes from `exchange_holidays.csv` (MIC, date, close; an empty close
/// means closed all day).
#[derive(Debug, Clone, Default)]
pub struct ExchangeCalendar {
    by_mic: HashMap<String, Exchange>,
    /// (MIC, date) to the early close, or `None` when the exchange is closed that day.
    exceptions: HashMap<(String, NaiveDate), Option<NaiveTime>>,
}

/// One exchange day's regular session in UTC microseconds, or none when it is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// Open from the first to the second instant (UTC microseconds), both included.
    Open(i64, i64),
    /// A weekend or holiday.
    Closed,
}

impl ExchangeCalendar {
    /// Loads `exchange_hours.csv`, and `exchange_holidays.csv` beside it when that exists.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut cal = Self::parse(&text, path)?;
        let holidays = path.with_file_name("exchange_holidays.csv");
        if holidays.exists() {
            let text = std::fs::read_to_string(&holidays).map_err(|e| Error::io(&holidays, e))?;
            cal.add_holidays(&text, &holidays)?;
        }
        Ok(cal)
    }

    /// The calendar shipped with finlake: `samples/exchange_hours.csv` and
    /// `samples/exchange_holidays.csv`.
    pub fn embedded() -> Self {
        let mut cal = Self::parse(
            crate::embedded::EXCHANGE_HOURS,
            Path::new("<embedded>/exchange_hours.csv"),
        )
        .expect("the embedded exchange hours parse (tested)");
        cal.add_holidays(
            crate::embedded::EXCHANGE_HOLIDAYS,
            Path::new("<embedded>/exchange_holidays.csv"),
        )
        .expect("the embedded holidays parse (tested)");
        cal
    }

    /// Parses `exchange_hours.csv` text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut by_mic = HashMap::new();
        for (line, f) in parse_csv(text, path, &["mic", "timezone", "open", "close"])? {
            let tz: Tz = f[1]
                .parse()
                .map_err(|_| bad_line(path, line, format!("unknown time zone `{}`", f[1])))?;
            by_mic.insert(
                f[0].clone(),
                Exchange {
                    tz,
                    open: parse_time(&f[2], path, line)?,
                    close: parse_time(&f[3], path, line)?,
                },
            );
        }
        Ok(ExchangeCalendar {
            by_mic,
            exceptions: HashMap::new(),
        })
    }

    /// Adds closed days and early closes (`mic,date,close`; empty close = closed).
    pub fn add_holidays(&mut self, text: &str, path: &Path) -> Result<()> {
        for (line, f) in parse_csv(text, path, &["mic", "date", "close"])? {
            if !self.by_mic.contains_key(&f[0]) {
                return Err(bad_line(
                    path,
                    line,
                    format!("MIC `{}` is not in exchange_hours", f[0]),
                ));
            }
            let date = NaiveDate::parse_from_str(&f[1], "%Y-%m-%d").map_err(|_| {
                bad_line(
                    path,
                    line,
                    format!("`{}` is not a date like 2026-12-24", f[1]),
                )
            })?;
            let close = match f[2].as_str() {
                "" => None,
                t => Some(parse_time(t, path, line)?),
            };
            self.exceptions.insert((f[0].clone(), date), close);
        }
        Ok(())
    }

    /// The exchange for a MIC.
    pub fn get(&self, mic: &str) -> Option<&Exchange> {
        self.by_mic.get(mic)
    }

    /// All MICs, sorted.
    pub fn mics(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.by_mic.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// The regular session of `mic` on the local date `date`, in UTC: open and close are
    /// local wall-clock times converted through the exchange's time zone on that date, so
    /// daylight saving (and the weeks when New York and Europe differ) is handled. Weekends
    /// and listed holidays are closed; an early close replaces the close. `None` for an
    /// unknown MIC.
    pub fn session(&self, mic: &str, date: NaiveDate) -> Option<Session> {
        use chrono::Datelike;
        let ex = self.by_mic.get(mic)?;
        if matches!(date.weekday(), chrono::Weekday::Sat | chrono::Weekday::Sun) {
            return Some(Session::Closed);
        }
        let close = match self.exceptions.get(&(mic.to_string(), date)) {
            Some(None) => return Some(Session::Closed),
            Some(Some(early)) => *early,
            None => ex.close,
        };
        let utc = |t: NaiveTime| {
            // Sessions never start or end inside a DST gap or fold; `earliest` is still
            // well defined if a file says otherwise.
            ex.tz
                .from_local_datetime(&date.and_time(t))
                .earliest()
                .map(|d| d.timestamp_micros())
        };
        Some(match (utc(ex.open), utc(close)) {
            (Some(o), Some(c)) => Session::Open(o, c),
            _ => Session::Closed,
        })
    }
}

fn parse_time(s: &str, path: &Path, line: usize) -> Result<NaiveTime> {
    NaiveTime::parse_from_str(s, "%H:%M")
        .map_err(|_| bad_line(path, line, format!("`{s}` is not a time like 09:30")))
}

type Loader<T> = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Result<T>> + Send>> + Send + Sync>;

/// A reference-data value loaded on first use and refreshed after `ttl`, single-flight:
/// callers arriving during a load wait for it instead of starting their own. When a refresh
/// fails and an older value exists, the older value is served and the failure logged.
pub struct RefCache<T> {
    name: String,
    ttl: Duration,
    loader: Loader<T>,
    state: tokio::sync::Mutex<Option<(Instant, Arc<T>)>>,
}

impl<T: Send + Sync + 'static> RefCache<T> {
    /// A cache named `name` (for logs) that calls `loader` at most once per `ttl`.
    pub fn new<F, Fut>(name: impl Into<String>, ttl: Duration, loader: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        RefCache {
            name: name.into(),
            ttl,
            loader: Box::new(move || Box::pin(loader())),
            state: tokio::sync::Mutex::new(None),
        }
    }

    /// A cache over a file, loaded with `parse`.
    pub fn file(path: PathBuf, ttl: Duration, parse: fn(&Path) -> Result<T>) -> Self {
        let name = path.display().to_string();
        RefCache::new(name, ttl, move || {
            let path = path.clone();
            async move {
                tokio::task::spawn_blocking(move || parse(&path))
                    .await
                    .map_err(|e| Error::Usage(e.to_string()))?
            }
        })
    }

    /// The current value, loading or refreshing it if needed.
    pub async fn get(&self) -> Result<Arc<T>> {
        let mut state = self.state.lock().await;
        if let Some((at, value)) = state.as_ref() {
            if at.elapsed() < self.ttl {
                return Ok(value.clone());
            }
        }
        match (self.loader)().await {
            Ok(v) => {
                let v = Arc::new(v);
                *state = Some((Instant::now(), v.clone()));
                Ok(v)
            }
            Err(e) => match state.as_ref() {
                Some((_, old)) => {
                    tracing::warn!(cache = %self.name, error = %e, "reference data refresh failed; serving the previous version");
                    Ok(old.clone())
                }
                None => Err(e),
            },
        }
    }
}
