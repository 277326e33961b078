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

/// Parses CSV text (the `csv` crate: quoting, `#` comment lines, blank lines, trimmed
/// fields); `path` names it in errors, each with its line number.
pub fn parse_csv(
    text: &str,
    path: &Path,
    expected_header: &[&str],
) -> Result<Vec<(usize, Vec<String>)>> {
    let err = |message: String| Error::RefData {
        path: path.to_path_buf(),
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| err(format!("line 1: {e}")))?
        .iter()
        .map(str::to_string)
        .collect();
    if header != expected_header {
        return Err(err(format!(
            "line 1: header is `{}`, expected `{}`",
            header.join(","),
            expected_header.join(",")
        )));
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| match e.kind() {
            csv::ErrorKind::UnequalLengths {
                pos: Some(pos),
                len,
                ..
            } => err(format!(
                "line {}: {len} fields, expected {}",
                pos.line(),
                expected_header.len()
            )),
            _ => err(match e.position() {
                Some(pos) => format!("line {}: {e}", pos.line()),
                None => e.to_string(),
            }),
        })?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        rows.push((line, record.iter().map(str::to_string).collect()));
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
    // Compiled-in files, not message bytes; a unit test parses them.
    #[allow(clippy::expect_used)]
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

/// A reference-data value loaded on first use and refreshed after `ttl`, single-flight (many
/// batches asking at once during a cold start or a refresh cause one load: moka's
/// `try_get_with`). When a load fails the failure is remembered for `backoff`: callers in
/// that time get the previous value if there is one (logged), else the error, without
/// calling the loader again, so a broken source is not hammered by every batch.
pub struct RefCache<T> {
    name: String,
    backoff: Duration,
    loader: Loader<T>,
    cache: moka::future::Cache<(), Arc<T>>,
    last_good: std::sync::Mutex<Option<Arc<T>>>,
    last_failure: std::sync::Mutex<Option<(Instant, String)>>,
}

impl<T: Send + Sync + 'static> RefCache<T> {
    /// A cache named `name` (for logs) that calls `loader` at most once per `ttl`, and after
    /// a failure not again for `backoff`.
    pub fn new<F, Fut>(name: impl Into<String>, ttl: Duration, backoff: Duration, loader: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        RefCache {
            name: name.into(),
            backoff,
            loader: Box::new(move || Box::pin(loader())),
            cache: moka::future::Cache::builder()
                .max_capacity(1)
                .time_to_live(ttl)
                .build(),
            last_good: std::sync::Mutex::new(None),
            last_failure: std::sync::Mutex::new(None),
        }
    }

    /// A cache over a file, loaded with `parse` off the async reactor.
    pub fn file(
        path: PathBuf,
        ttl: Duration,
        backoff: Duration,
        parse: fn(&Path) -> Result<T>,
    ) -> Self {
        let name = path.display().to_string();
        RefCache::new(name, ttl, backoff, move || {
            let path = path.clone();
            async move {
                tokio::task::spawn_blocking(move || parse(&path))
                    .await
                    .map_err(|e| Error::Usage(e.to_string()))?
            }
        })
    }

    fn stale_or(&self, message: String) -> Result<Arc<T>> {
        let good = self.last_good.lock().map(|g| g.clone()).unwrap_or(None);
        match good {
            Some(old) => {
                tracing::warn!(cache = %self.name, error = %message, "reference data refresh failed; serving the previous version");
                Ok(old)
            }
            None => Err(Error::RefData {
                path: PathBuf::from(&self.name),
                message,
            }),
        }
    }

    /// The current value, loading or refreshing it if needed.
    pub async fn get(&self) -> Result<Arc<T>> {
        if let Some(v) = self.cache.get(&()).await {
            return Ok(v);
        }
        let recent_failure = self
            .last_failure
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .filter(|(at, _)| at.elapsed() < self.backoff);
        if let Some((_, message)) = recent_failure {
            return self.stale_or(message);
        }
        let loaded = self
            .cache
            .try_get_with((), async { (self.loader)().await.map(Arc::new) })
            .await;
        match loaded {
            Ok(v) => {
                if let Ok(mut g) = self.last_good.lock() {
                    *g = Some(v.clone());
                }
                Ok(v)
            }
            Err(e) => {
                let message = e.to_string();
                if let Ok(mut f) = self.last_failure.lock() {
                    *f = Some((Instant::now(), message.clone()));
                }
                self.stale_or(message)
            }
        }
    }
}

/// Where a pipeline's reference tables come from, by the names a spec gives them
/// (`mapping_table: symbol_mapping`, `rate_source: fx_rates`):
/// 1. tables handed over in memory (`with_table`: the demo's generated rates);
/// 2. `<dir>/<name>.csv` when a reference data directory is given;
/// 3. the copies shipped with finlake (`symbol_mapping`, and the exchange calendar).
///
/// A name none of them has is a configuration error naming the file looked for.
#[derive(Debug, Clone, Default)]
pub struct RefData {
    /// The reference data directory, if any.
    pub dir: Option<PathBuf>,
    tables: HashMap<String, arrow::array::RecordBatch>,
}

impl RefData {
    /// Reference data from `dir` (or the shipped copies when `None`).
    pub fn new(dir: Option<PathBuf>) -> Self {
        RefData {
            dir,
            tables: HashMap::new(),
        }
    }

    /// Hands over an in-memory table under `name` (it wins over files).
    pub fn with_table(mut self, name: &str, batch: arrow::array::RecordBatch) -> Self {
        self.tables.insert(name.to_string(), batch);
        self
    }

    fn file(&self, name: &str, ext: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{name}.{ext}")))
    }

    /// The exchange calendar: `<dir>/exchange_hours.csv` (and holidays beside it) when that
    /// file exists, else the shipped one.
    pub fn calendar(&self) -> Result<ExchangeCalendar> {
        match self.file("exchange_hours", "csv").filter(|p| p.exists()) {
            Some(path) => ExchangeCalendar::load(&path),
            None => Ok(ExchangeCalendar::embedded()),
        }
    }

    /// The symbol mapping called `name`.
    pub fn symbol_map(&self, name: &str) -> Result<super::SymbolMap> {
        if let Some(path) = self.file(name, "csv").filter(|p| p.exists()) {
            return super::SymbolMap::load(&path);
        }
        if name == "symbol_mapping" {
            return super::SymbolMap::parse(
                crate::embedded::SYMBOL_MAPPING,
                Path::new("<embedded>/symbol_mapping.csv"),
            );
        }
        Err(self.missing(name, "a symbol mapping"))
    }

    /// The FX rates called `name` (a table handed over, or a CSV with the `fx_rate` columns).
    pub fn fx_rates(&self, name: &str) -> Result<arrow::array::RecordBatch> {
        if let Some(batch) = self.tables.get(name) {
            return Ok(batch.clone());
        }
        if let Some(path) = self.file(name, "csv").filter(|p| p.exists()) {
            return read_fx_csv(&path);
        }
        Err(self.missing(name, "FX rates"))
    }

    fn missing(&self, name: &str, what: &str) -> Error {
        Error::RefData {
            path: self
                .file(name, "csv")
                .unwrap_or_else(|| PathBuf::from(format!("<refdata>/{name}.csv"))),
            message: format!(
                "no reference table `{name}` ({what}): give a reference data directory \
                 holding {name}.csv"
            ),
        }
    }
}

/// Reads FX rates from a CSV with header `base_currency,quote_currency,rate,timestamp`
/// (rates as decimals, timestamps RFC 3339).
pub fn read_fx_csv(path: &Path) -> Result<arrow::array::RecordBatch> {
    use arrow::array::{Decimal128Builder, StringBuilder, TimestampMicrosecondBuilder};
    let rows = read_csv(
        path,
        &["base_currency", "quote_currency", "rate", "timestamp"],
    )?;
    let n = rows.len();
    let mut base = StringBuilder::with_capacity(n, 3 * n);
    let mut quote = StringBuilder::with_capacity(n, 3 * n);
    let mut rate = Decimal128Builder::with_capacity(n)
        .with_data_type(crate::schema::arrow_type(crate::schema::RATE));
    let mut source = StringBuilder::with_capacity(n, 8 * n);
    let mut ts = TimestampMicrosecondBuilder::with_capacity(n);
    let crate::schema::Kind::Dec(p, s) = crate::schema::RATE else {
        unreachable!("RATE is a decimal kind")
    };
    for (line, f) in rows {
        base.append_value(&f[0]);
        quote.append_value(&f[1]);
        rate.append_value(
            crate::decode::parse_decimal(&f[2], p, s)
                .map_err(|e| bad_line(path, line, format!("rate `{}`: {e:?}", f[2])))?,
        );
        source.append_value(path.display().to_string());
        ts.append_value(
            crate::decode::parse_timestamp_micros(&f[3]).map_err(|e| bad_line(path, line, e))?,
        );
    }
    Ok(arrow::array::RecordBatch::try_new(
        crate::schema::source_schema(crate::spec::SourceType::FxRate),
        vec![
            Arc::new(base.finish()),
            Arc::new(quote.finish()),
            Arc::new(rate.finish()),
            Arc::new(source.finish()),
            Arc::new(ts.finish().with_timezone(crate::schema::UTC)),
        ],
    )?)
}
