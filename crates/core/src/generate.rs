//! A seeded generator of realistic market data with injected faults, and its manifest.
//!
//! Records are planned once and then encoded as JSON or Avro, so the same seed gives the
//! same rows in both formats (and the same bytes on every run). Each message's expected
//! outcome goes to the manifest: lands, or rejected naming the stage and field.

use std::io::Write;

use chrono::{NaiveDate, TimeZone};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::schema::{self, Kind};
use crate::spec::SourceType;
use crate::transform::{ExchangeCalendar, SymbolMap};

/// Wire format of generated messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    /// One JSON object per message.
    Json,
    /// Plain Avro binary bodies.
    Avro,
}

/// A value of one field.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Str(String),
    /// Unscaled decimal at the field's scale.
    Dec(i128),
    Ts(i64),
    Int(i64),
}

/// The kinds of injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Broken wire bytes: truncated, or (JSON) two objects in one message.
    BadBytes,
    /// A required field left out.
    MissingField,
    /// A symbol no mapping knows.
    UnknownSymbol,
    /// A negative price.
    NegativePrice,
    /// JSON only: a price with more decimal places than the column keeps.
    ExcessPrecision,
    /// JSON only: a timestamp written as a number.
    NumericTimestamp,
    /// An exact repeat of an earlier message (lands; dedup is the rule engine's job).
    Duplicate,
    /// JSON only: an integer field written with a fraction (`"quantity": 100.7`).
    FractionalInteger,
    /// JSON only: the same key twice with different values (`"side":"B","side":"S"`).
    DuplicateKey,
    /// Avro only: a `timestamp-micros` value outside any representable date.
    TimestampOutOfRange,
}

/// One message's expected outcome.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Expected {
    /// Message index (= offset).
    pub index: u64,
    /// `lands` or `rejected`.
    pub outcome: String,
    /// The stage expected to reject it: `decode`, `normalize`, `check`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// The field the reject must name, where one is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The injected fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
}

/// Generator options.
#[derive(Debug, Clone)]
pub struct GenOptions {
    /// Number of messages.
    pub rows: usize,
    /// Fraction of messages with an injected fault.
    pub faults: f64,
    /// RNG seed.
    pub seed: u64,
    /// Wire format.
    pub format: WireFormat,
    /// The trading day.
    pub date: NaiveDate,
    /// Record type: trade or quote.
    pub source_type: SourceType,
}

/// Generated messages and their manifest.
#[derive(Debug, Clone)]
pub struct Generated {
    /// One payload per message.
    pub messages: Vec<Vec<u8>>,
    /// One expectation per message.
    pub manifest: Vec<Expected>,
    /// The planned event time of each message (UTC µs), in message order: non-decreasing.
    pub event_times: Vec<i64>,
}

fn currency_of(mic: &str) -> &'static str {
    match mic {
        "XLON" => "GBP",
        "XETR" | "XPAR" | "XAMS" => "EUR",
        "XTKS" => "JPY",
        "XSWX" => "CHF",
        _ => "USD",
    }
}

/// Generates trades or quotes for listed symbols, within each exchange's session.
pub fn generate(opts: &GenOptions, symbols: &SymbolMap, calendar: &ExchangeCalendar) -> Generated {
    FeedGenerator::new(opts, symbols, calendar).next_chunk(opts.rows)
}

/// The same feed as [`generate`], produced a chunk at a time: only the planned event times
/// (16 bytes a message) are held for the whole feed, so a feed of any size streams.
/// Chunks concatenated are byte for byte what [`generate`] returns.
pub struct FeedGenerator {
    opts: GenOptions,
    rng: ChaCha8Rng,
    listed: Vec<(String, String)>,
    prices: Vec<i128>,
    plan: Vec<(usize, i64)>,
    next: usize,
    /// The last clean message and its index: what a producer retry repeats.
    last_clean: Option<(usize, Vec<u8>)>,
}

impl FeedGenerator {
    /// Plans the feed (symbols, event times); no message is encoded yet.
    pub fn new(opts: &GenOptions, symbols: &SymbolMap, calendar: &ExchangeCalendar) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        let day = crate::transform::symbols::epoch_days(opts.date);
        let listed: Vec<(String, String)> = symbols
            .valid_on(day)
            .into_iter()
            .filter(|(_, mic, _)| calendar.get(mic).is_some())
            .map(|(s, m, _)| (s.to_string(), m.to_string()))
            .collect();
        assert!(
            !listed.is_empty(),
            "no symbol in the mapping is listed on a known exchange on {}",
            opts.date
        );
        let prices: Vec<i128> = listed
            .iter()
            .map(|_| rng.random_range(20_000_000..500_000_000))
            .collect();
        // Event times first, sorted: a feed arrives roughly in event-time order, so the rule
        // engine's watermark sees late rows only where a test puts them.
        let mut plan: Vec<(usize, i64)> = {
            let mut times = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x7135);
            (0..opts.rows)
                .map(|_| {
                    let k = times.random_range(0..listed.len());
                    let ex = calendar.get(&listed[k].1).expect("filtered above");
                    // a random instant in the regular session, in the exchange's own time zone
                    let session = (ex.close - ex.open).num_microseconds().unwrap_or(1).max(1);
                    let local = opts.date.and_time(ex.open)
                        + chrono::Duration::microseconds(times.random_range(0..session));
                    let ts = ex
                        .tz
                        .from_local_datetime(&local)
                        .earliest()
                        .expect("sessions do not fall in DST gaps")
                        .timestamp_micros();
                    (k, ts)
                })
                .collect()
        };
        plan.sort_by_key(|p| p.1);
        FeedGenerator {
            opts: opts.clone(),
            rng,
            listed,
            prices,
            plan,
            next: 0,
            last_clean: None,
        }
    }

    /// Messages not yet produced.
    pub fn remaining(&self) -> usize {
        self.plan.len() - self.next
    }

    /// Skips the next `n` messages without keeping them (a rerun resuming after what the lake
    /// already holds); the random sequence advances exactly as if they were produced.
    pub fn skip(&mut self, n: usize) {
        let mut left = n.min(self.remaining());
        while left > 0 {
            let k = left.min(10_000);
            let _ = self.next_chunk(k);
            left -= k;
        }
    }

    /// The next up to `n` messages, their manifest and event times.
    pub fn next_chunk(&mut self, n: usize) -> Generated {
        let start = self.next;
        let end = (start + n).min(self.plan.len());
        self.next = end;
        let opts = &self.opts;
        let rng = &mut self.rng;
        let listed = &self.listed;
        let prices = &mut self.prices;
        let fields = schema::source_fields(opts.source_type);
        let mut messages: Vec<Vec<u8>> = Vec::with_capacity(end - start);
        let mut manifest = Vec::with_capacity(end - start);
        for i in start..end {
            let (k, ts) = self.plan[i];
            let fault = (rng.random::<f64>() < opts.faults).then(|| {
                let kinds: &[Fault] = match opts.format {
                    WireFormat::Json => &[
                        Fault::BadBytes,
                        Fault::MissingField,
                        Fault::UnknownSymbol,
                        Fault::NegativePrice,
                        Fault::ExcessPrecision,
                        Fault::NumericTimestamp,
                        Fault::Duplicate,
                        Fault::FractionalInteger,
                        Fault::DuplicateKey,
                    ],
                    WireFormat::Avro => &[
                        Fault::BadBytes,
                        Fault::MissingField,
                        Fault::UnknownSymbol,
                        Fault::NegativePrice,
                        Fault::Duplicate,
                        Fault::TimestampOutOfRange,
                    ],
                };
                kinds[rng.random_range(0..kinds.len())]
            });
            if let (Some(Fault::Duplicate), Some((j, previous))) = (fault, &self.last_clean) {
                // a producer retry: the previous good message again, moments later
                let j = *j;
                messages.push(previous.clone());
                manifest.push(Expected {
                    index: i as u64,
                    outcome: "lands".into(),
                    stage: None,
                    field: None,
                    fault: Some(format!("duplicate_of:{j}")),
                });
                continue;
            }
            let (sym, mic) = &listed[k];
            // random walk of ±0.1%, prices in cents
            let step = prices[k] / 1000;
            prices[k] = (prices[k] + rng.random_range(-step..=step)).max(1_000_000);
            let price = prices[k] / 10_000 * 10_000;
            let mut rec: Vec<Option<Val>> = fields
                .iter()
                .map(|f| {
                    Some(match (f.name, f.kind) {
                        ("trade_id", _) => Val::Str(format!("T{}-{i:08}", opts.seed)),
                        ("symbol", _) => Val::Str(sym.clone()),
                        ("exchange", _) => Val::Str(mic.clone()),
                        ("currency", _) => Val::Str(currency_of(mic).into()),
                        ("side", _) => {
                            Val::Str(if rng.random::<bool>() { "B" } else { "S" }.into())
                        }
                        ("price", _) => Val::Dec(price),
                        ("bid_price", _) => Val::Dec(price - 10_000),
                        ("ask_price", _) => Val::Dec(price + 10_000),
                        (_, Kind::I64) => Val::Int(rng.random_range(1..100) * 100),
                        (_, Kind::Ts) => Val::Ts(ts),
                        (name, kind) => unreachable!("generator has no value for {name}: {kind:?}"),
                    })
                })
                .collect();
            let mut expected = Expected {
                index: i as u64,
                outcome: "lands".into(),
                stage: None,
                field: None,
                fault: fault.map(|f| format!("{f:?}")),
            };
            let field_idx = |name: &str| fields.iter().position(|f| f.name == name);
            let mut reject = |stage: &str, field: Option<&str>| {
                expected.outcome = "rejected".into();
                expected.stage = Some(stage.into());
                expected.field = field.map(Into::into);
            };
            let mut bytes = match fault {
                Some(Fault::MissingField) => {
                    let required: Vec<usize> =
                        (0..fields.len()).filter(|&j| fields[j].required).collect();
                    let j = required[rng.random_range(0..required.len())];
                    match opts.format {
                        WireFormat::Json => {
                            rec[j] = None;
                            reject("decode", Some(fields[j].name));
                            encode_json(fields, &rec, None)
                        }
                        WireFormat::Avro => {
                            // a binary record cannot omit a field: the writer stopped short of it
                            reject("decode", None);
                            let full = encode_avro(fields, &rec);
                            let prefix = encode_avro(&fields[..j], &rec[..j]);
                            full[..prefix.len().min(full.len() - 1)].to_vec()
                        }
                    }
                }
                Some(Fault::UnknownSymbol) => {
                    if let Some(j) = field_idx("symbol") {
                        rec[j] = Some(Val::Str("ZZZQ".into()));
                    }
                    reject("normalize", Some("symbol"));
                    encode(opts.format, fields, &rec)
                }
                Some(Fault::NegativePrice) => {
                    let j = fields
                        .iter()
                        .position(|f| f.positive)
                        .expect("every generated type has a price");
                    rec[j] = Some(Val::Dec(-price));
                    reject("check", Some(fields[j].name));
                    encode(opts.format, fields, &rec)
                }
                Some(Fault::ExcessPrecision) => {
                    reject("decode", Some("price"));
                    encode_json(
                        fields,
                        &rec,
                        Some(("price", format!("{}.1234567", price / 1_000_000))),
                    )
                }
                Some(Fault::NumericTimestamp) => {
                    reject("decode", Some("timestamp"));
                    encode_json(
                        fields,
                        &rec,
                        Some(("timestamp", (ts / 1_000_000).to_string())),
                    )
                }
                Some(Fault::FractionalInteger) => {
                    let j = fields
                        .iter()
                        .position(|f| matches!(f.kind, Kind::I64 | Kind::I32))
                        .expect("every generated type has an integer field");
                    reject("decode", Some(fields[j].name));
                    let whole = match &rec[j] {
                        Some(Val::Int(v)) => *v,
                        _ => 100,
                    };
                    encode_json(fields, &rec, Some((fields[j].name, format!("{whole}.7"))))
                }
                Some(Fault::DuplicateKey) => {
                    // the key again at the end, with another value: `..."symbol":"AAPL",...,"symbol":"ZZZQ"}`
                    reject("decode", Some("symbol"));
                    let mut out = encode_json(fields, &rec, None);
                    out.pop();
                    out.extend_from_slice(b",\"symbol\":\"ZZZQ\"}");
                    out
                }
                Some(Fault::TimestampOutOfRange) => {
                    let j = field_idx(schema::EVENT_TIME).expect("every type has the event time");
                    rec[j] = Some(Val::Ts(i64::MAX - i as i64));
                    reject("decode", Some(schema::EVENT_TIME));
                    encode_avro(fields, &rec)
                }
                Some(Fault::BadBytes) => {
                    reject("decode", None);
                    let full = encode(opts.format, fields, &rec);
                    if opts.format == WireFormat::Json && rng.random::<bool>() {
                        let mut two = full.clone();
                        two.extend_from_slice(&full);
                        two
                    } else {
                        full[..full.len() / 2].to_vec()
                    }
                }
                None | Some(Fault::Duplicate) => {
                    let bytes = encode(opts.format, fields, &rec);
                    self.last_clean = Some((i, bytes.clone()));
                    bytes
                }
            };
            bytes.shrink_to_fit();
            messages.push(bytes);
            manifest.push(expected);
        }
        Generated {
            messages,
            manifest,
            event_times: self.plan[start..end].iter().map(|p| p.1).collect(),
        }
    }
}

/// Simulated arrival (ingest) times for a feed, chunk by chunk: each message a few hundred
/// milliseconds (100 to 600 ms, seeded) after its event time, never before the message ahead
/// of it, as a live feed handler delivers them.
pub struct Arrivals {
    rng: ChaCha8Rng,
    last: i64,
}

impl Arrivals {
    /// Arrivals for a feed generated with `seed`.
    pub fn new(seed: u64) -> Self {
        Arrivals {
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0xA771),
            last: i64::MIN,
        }
    }

    /// The arrival times of the next messages, given their event times.
    pub fn next(&mut self, event_times: &[i64]) -> Vec<i64> {
        event_times
            .iter()
            .map(|&t| {
                self.last = self.last.max(t + self.rng.random_range(100_000..600_000));
                self.last
            })
            .collect()
    }
}

fn encode(format: WireFormat, fields: &[schema::FieldSpec], rec: &[Option<Val>]) -> Vec<u8> {
    match format {
        WireFormat::Json => encode_json(fields, rec, None),
        WireFormat::Avro => encode_avro(fields, rec),
    }
}

fn fmt_decimal(out: &mut Vec<u8>, v: i128, scale: i8) {
    let scale = scale.max(0) as u32;
    let p = 10i128.pow(scale);
    let sign = if v < 0 { "-" } else { "" };
    let (int, frac) = (v.abs() / p, v.abs() % p);
    if scale == 0 {
        write!(out, "{sign}{int}").expect("Vec write");
    } else {
        write!(out, "{sign}{int}.{frac:0width$}", width = scale as usize).expect("Vec write");
    }
}

/// JSON text of a record; `raw` overrides one field with literal JSON text.
fn encode_json(
    fields: &[schema::FieldSpec],
    rec: &[Option<Val>],
    raw: Option<(&str, String)>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(b'{');
    let mut first = true;
    for (f, v) in fields.iter().zip(rec) {
        let Some(v) = v else { continue };
        if !first {
            out.push(b',');
        }
        first = false;
        write!(out, "\"{}\":", f.name).expect("Vec write");
        if let Some((name, text)) = &raw {
            if *name == f.name {
                out.extend_from_slice(text.as_bytes());
                continue;
            }
        }
        match (v, f.kind) {
            (Val::Str(s), _) => write!(out, "\"{s}\"").expect("Vec write"),
            (Val::Dec(d), Kind::Dec(_, s)) => fmt_decimal(&mut out, *d, s),
            (Val::Ts(t), _) => {
                let dt = chrono::DateTime::from_timestamp_micros(*t).expect("in range");
                write!(out, "\"{}\"", dt.format("%Y-%m-%dT%H:%M:%S%.6fZ")).expect("Vec write")
            }
            (Val::Int(i), _) => write!(out, "{i}").expect("Vec write"),
            (Val::Dec(_), _) => unreachable!("decimal value in a non-decimal field"),
        }
    }
    out.push(b'}');
    out
}

fn zigzag(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
}

/// Avro binary body of a record (the schema from [`schema::avro_schema`]).
fn encode_avro(fields: &[schema::FieldSpec], rec: &[Option<Val>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    for (f, v) in fields.iter().zip(rec) {
        if !f.required {
            match v {
                None => {
                    zigzag(&mut out, 0);
                    continue;
                }
                Some(_) => zigzag(&mut out, 1),
            }
        }
        match v {
            Some(Val::Str(s)) => {
                zigzag(&mut out, s.len() as i64);
                out.extend_from_slice(s.as_bytes());
            }
            Some(Val::Int(i)) | Some(Val::Ts(i)) => zigzag(&mut out, *i),
            Some(Val::Dec(d)) => {
                let bytes = d.to_be_bytes();
                // minimal two's-complement big-endian
                let mut start = 0;
                while start < 15
                    && ((bytes[start] == 0 && bytes[start + 1] & 0x80 == 0)
                        || (bytes[start] == 0xff && bytes[start + 1] & 0x80 != 0))
                {
                    start += 1;
                }
                zigzag(&mut out, (16 - start) as i64);
                out.extend_from_slice(&bytes[start..]);
            }
            None => {}
        }
    }
    out
}

/// Minute-by-minute FX rates against USD for the day and the day before, as an `fx_rate`
/// batch, quoted as the market quotes them: EUR/USD and GBP/USD (USD per unit), USD/JPY and
/// USD/CHF (units per USD).
pub fn fx_rates(date: NaiveDate, seed: u64) -> arrow::array::RecordBatch {
    use arrow::array::{Decimal128Builder, StringBuilder, TimestampMicrosecondBuilder};
    use std::sync::Arc;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xF0F0);
    // (base, quote, opening rate at scale 10)
    let pairs = [
        ("EUR", "USD", 10_850_000_000i128),
        ("GBP", "USD", 12_700_000_000),
        ("USD", "JPY", 1_515_000_000_000),
        ("USD", "CHF", 8_850_000_000),
    ];
    let start = chrono::Utc
        .from_utc_datetime(
            &(date - chrono::Days::new(1))
                .and_hms_opt(0, 0, 0)
                .expect("valid"),
        )
        .timestamp_micros();
    let minutes = 2 * 24 * 60;
    let n = pairs.len() * minutes;
    let (mut base, mut quote) = (
        StringBuilder::with_capacity(n, 3 * n),
        StringBuilder::with_capacity(n, 3 * n),
    );
    let mut rate =
        Decimal128Builder::with_capacity(n).with_data_type(schema::arrow_type(schema::RATE));
    let mut source = StringBuilder::with_capacity(n, 4 * n);
    let mut ts = TimestampMicrosecondBuilder::with_capacity(n);
    for (b, q, start_rate) in pairs {
        let mut r = start_rate;
        for m in 0..minutes {
            let step = r / 5000;
            r += rng.random_range(-step..=step);
            base.append_value(b);
            quote.append_value(q);
            rate.append_value(r);
            source.append_value("generator");
            ts.append_value(start + m as i64 * 60_000_000);
        }
    }
    arrow::array::RecordBatch::try_new(
        schema::source_schema(SourceType::FxRate),
        vec![
            Arc::new(base.finish()),
            Arc::new(quote.finish()),
            Arc::new(rate.finish()),
            Arc::new(source.finish()),
            Arc::new(ts.finish().with_timezone(schema::UTC)),
        ],
    )
    .expect("columns match the fx_rate schema")
}

/// The generator's FX rates for `date` as the CSV a reference data directory holds
/// (`fx_rates.csv`: `base_currency,quote_currency,rate,timestamp`), so a process that reads
/// reference data from files (the ingestor) converts with the rates the generator used.
pub fn fx_rates_csv(date: NaiveDate, seed: u64) -> String {
    use arrow::array::{AsArray, Decimal128Array};
    use arrow::datatypes::TimestampMicrosecondType;
    let batch = fx_rates(date, seed);
    let base = batch.column(0).as_string::<i32>();
    let quote = batch.column(1).as_string::<i32>();
    let rate = batch
        .column(2)
        .as_any()
        .downcast_ref::<Decimal128Array>()
        .expect("fx rate is a decimal column");
    let ts = batch.column(4).as_primitive::<TimestampMicrosecondType>();
    let mut out = String::from("base_currency,quote_currency,rate,timestamp\n");
    for i in 0..batch.num_rows() {
        let t = chrono::DateTime::from_timestamp_micros(ts.value(i))
            .expect("generated times are in range")
            .format("%Y-%m-%dT%H:%M:%SZ");
        out.push_str(&format!(
            "{},{},{},{t}\n",
            base.value(i),
            quote.value(i),
            rate.value_as_string(i)
        ));
    }
    out
}
