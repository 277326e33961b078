//! The order flow behind a day of landed trades: the accounts that trade, the orders they
//! sent, one execution report per trade, and the NBBO quotes over the day, seeded and
//! reproducible, so the regulatory jobs (Rule 605 execution quality, best execution, large
//! traders) have linked data to read.
//!
//! Every landed trade is a fill of exactly one order (`executions.trade_id`); an order has one
//! to three fills of the same instrument and side within a few seconds, and sometimes a
//! cancelled remainder. Quotes are NBBO snapshots, one per instrument per second, from the
//! session's open to a minute past its close (so the last executions have a midpoint a
//! minute later); the quote stamped second `s` is the NBBO in force from `s` to `s + 1`. The
//! midpoint follows the last trade's price with a spread of one to four ticks.
//!
//! Orders are typed from the quote at their receipt: market orders, marketable limits (a buy
//! limit at or above the offer, a sell limit at or below the bid) and, where the fills allow
//! it, non-marketable limits. The jobs classify from the data, not from the generator's
//! intent. Accounts belong to owners (the person exercising investment discretion, Rule 13h-1),
//! several accounts to some owners, and activity is skewed towards a few of them.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, BooleanBuilder, Decimal128Array, Decimal128Builder, Int64Array, Int64Builder,
    RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampMicrosecondType};
use chrono::{NaiveDate, TimeZone};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::schema::{arrow_type, timestamp_type, NOTIONAL, PRICE};
use crate::transform::ExchangeCalendar;

/// How many accounts the generator's firm has.
pub const ACCOUNTS: usize = 30;
/// One tick (a cent) at the price scale (6).
const TICK: i128 = 10_000;
const MICROS: i64 = 1_000_000;

/// The day's derived tables.
#[derive(Debug, Clone)]
pub struct OrderFlow {
    /// [`orders_schema`].
    pub orders: RecordBatch,
    /// [`executions_schema`]: one row per trade.
    pub executions: RecordBatch,
    /// [`quotes_schema`].
    pub quotes: RecordBatch,
}

/// Where the derived tables live under a lake root: (orders, executions, quotes, accounts).
pub const TABLES: [&str; 4] = [
    "market/orders",
    "market/executions",
    "market/quotes",
    "refdata/accounts",
];

fn date_field() -> Field {
    Field::new("trade_date", DataType::Date32, false)
}

/// `refdata/accounts`: account, owner (the discretion id), owner's name, account type.
pub fn accounts_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("account_id", DataType::Utf8, false),
        Field::new("owner_id", DataType::Utf8, false),
        Field::new("owner_name", DataType::Utf8, false),
        Field::new("account_type", DataType::Utf8, false),
    ]))
}

/// `market/orders`: the core's order fields plus account, ISIN, routing and the date.
/// `price` is the limit (NULL for a market order), `timestamp` the time of receipt.
pub fn orders_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Utf8, false),
        Field::new("account_id", DataType::Utf8, false),
        Field::new("symbol", DataType::Utf8, false),
        Field::new("isin", DataType::Utf8, false),
        Field::new("exchange", DataType::Utf8, false),
        Field::new("side", DataType::Utf8, false),
        Field::new("order_type", DataType::Utf8, false),
        Field::new("price", arrow_type(PRICE), true),
        Field::new("quantity", DataType::Int64, false),
        Field::new("time_in_force", DataType::Utf8, false),
        Field::new("directed", DataType::Boolean, false),
        Field::new("venue", DataType::Utf8, false),
        Field::new("currency", DataType::Utf8, false),
        Field::new("timestamp", timestamp_type(), false),
        date_field(),
    ]))
}

/// `market/executions`: the core's execution report fields plus the trade it is, the
/// account, the execution venue, the liquidity flag (`ADD` passive, `REMOVE` aggressive) and
/// the USD notional the stream computed for the trade.
pub fn executions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("exec_id", DataType::Utf8, false),
        Field::new("order_id", DataType::Utf8, false),
        Field::new("trade_id", DataType::Utf8, false),
        Field::new("account_id", DataType::Utf8, false),
        Field::new("symbol", DataType::Utf8, false),
        Field::new("isin", DataType::Utf8, false),
        Field::new("exchange", DataType::Utf8, false),
        Field::new("venue", DataType::Utf8, false),
        Field::new("side", DataType::Utf8, false),
        Field::new("exec_type", DataType::Utf8, false),
        Field::new("last_price", arrow_type(PRICE), false),
        Field::new("last_qty", DataType::Int64, false),
        Field::new("cum_qty", DataType::Int64, false),
        Field::new("liquidity", DataType::Utf8, false),
        Field::new("currency", DataType::Utf8, false),
        Field::new("notional_usd", arrow_type(NOTIONAL), false),
        Field::new("timestamp", timestamp_type(), false),
        date_field(),
    ]))
}

/// `market/quotes`: NBBO snapshots, one per instrument and second.
pub fn quotes_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("symbol", DataType::Utf8, false),
        Field::new("isin", DataType::Utf8, false),
        Field::new("exchange", DataType::Utf8, false),
        Field::new("bid_price", arrow_type(PRICE), false),
        Field::new("ask_price", arrow_type(PRICE), false),
        Field::new("bid_size", DataType::Int64, false),
        Field::new("ask_size", DataType::Int64, false),
        Field::new("currency", DataType::Utf8, false),
        Field::new("timestamp", timestamp_type(), false),
        date_field(),
    ]))
}

/// The firm's accounts: `ACCOUNTS` accounts of 18 owners (owner `k` holds the accounts
/// `k`, `k + 18`, ...: the first twelve owners hold two accounts each).
pub fn accounts() -> RecordBatch {
    const OWNERS: usize = 18;
    let types = ["INDIVIDUAL", "FUND", "PROPRIETARY"];
    let mut id = StringBuilder::new();
    let mut owner = StringBuilder::new();
    let mut name = StringBuilder::new();
    let mut kind = StringBuilder::new();
    for a in 0..ACCOUNTS {
        let o = a % OWNERS;
        id.append_value(account_id(a));
        owner.append_value(format!("OWN{o:03}"));
        name.append_value(format!("Owner {o:03}"));
        kind.append_value(types[o % types.len()]);
    }
    RecordBatch::try_new(
        accounts_schema(),
        vec![
            Arc::new(id.finish()),
            Arc::new(owner.finish()),
            Arc::new(name.finish()),
            Arc::new(kind.finish()),
        ],
    )
    .expect("columns match the accounts schema")
}

fn account_id(a: usize) -> String {
    format!("ACC{a:04}")
}

/// The venues an order on `mic` may be routed to: the listing exchange first.
fn venues(mic: &str) -> &'static [&'static str] {
    match mic {
        "XNAS" => &["XNAS", "XNYS", "ARCX", "BATS", "EDGX", "IEXG"],
        "XNYS" => &["XNYS", "XNAS", "ARCX", "BATS", "EDGX", "IEXG"],
        "XLON" => &["XLON", "CEUX", "TRQX", "AQXE"],
        "XETR" => &["XETR", "CEUX", "TRQX", "AQXE"],
        "XPAR" => &["XPAR", "CEUX", "TRQX"],
        "XTKS" => &["XTKS", "CHIJ"],
        _ => &["XOFF"],
    }
}

/// One instrument's quote path: per second from `start` (UTC µs), (bid, ask).
struct Path {
    start: i64,
    quotes: Vec<(i128, i128)>,
}

impl Path {
    /// The quote in force at `t` (the snapshot of `t`'s second), clamped to the path.
    fn at(&self, t: i64) -> (i128, i128) {
        let i = ((t - self.start).div_euclid(MICROS)).clamp(0, self.quotes.len() as i64 - 1);
        self.quotes[i as usize]
    }
}

/// An order being built from consecutive fills.
struct Order {
    symbol: usize,
    buy: bool,
    account: usize,
    first: i64,
    fills: u32,
    planned: u32,
    qty: i64,
    max_price: i128,
    min_price: i128,
}

fn column<'a>(trades: &'a RecordBatch, name: &str) -> Result<&'a Arc<dyn Array>> {
    trades
        .column_by_name(name)
        .ok_or_else(|| Error::Usage(format!("the trades batch has no column `{name}`")))
}

fn strings(trades: &RecordBatch, name: &str) -> Result<arrow::array::StringArray> {
    column(trades, name)?;
    crate::delta::string_column(trades, name)
        .ok_or_else(|| Error::Usage(format!("trades column `{name}` is not text")))
}

fn decimals(trades: &RecordBatch, name: &str) -> Result<Decimal128Array> {
    column(trades, name)?
        .as_any()
        .downcast_ref::<Decimal128Array>()
        .cloned()
        .ok_or_else(|| Error::Usage(format!("trades column `{name}` is not a decimal")))
}

/// Derives the order flow behind `trades` (the landed trades of `date`, any order; rows of
/// other dates are ignored). The same trades and seed give the same tables.
pub fn derive(
    trades: &RecordBatch,
    date: NaiveDate,
    seed: u64,
    calendar: &ExchangeCalendar,
) -> Result<OrderFlow> {
    let day = crate::transform::symbols::epoch_days(date);
    let trade_date = column(trades, "trade_date")?
        .as_primitive_opt::<arrow::datatypes::Date32Type>()
        .ok_or_else(|| Error::Usage("trades column `trade_date` is not a date".into()))?
        .clone();
    let ts = column(trades, "timestamp")?
        .as_primitive_opt::<TimestampMicrosecondType>()
        .ok_or_else(|| Error::Usage("trades column `timestamp` is not a timestamp".into()))?
        .clone();
    let (trade_id, symbol, exchange, isin, currency, side) = (
        strings(trades, "trade_id")?,
        strings(trades, "symbol")?,
        strings(trades, "exchange")?,
        strings(trades, "isin")?,
        strings(trades, "currency")?,
        strings(trades, "side")?,
    );
    let price = decimals(trades, "price")?;
    let notional_usd = decimals(trades, "notional_base")?;
    let qty = column(trades, "quantity")?
        .as_any()
        .downcast_ref::<Int64Array>()
        .cloned()
        .ok_or_else(|| Error::Usage("trades column `quantity` is not Int64".into()))?;

    // the date's trades with a side, in (time, trade id) order: the same order every run
    let mut rows: Vec<usize> = (0..trades.num_rows())
        .filter(|&i| trade_date.value(i) == day && side.is_valid(i) && !side.value(i).is_empty())
        .collect();
    rows.sort_by(|&a, &b| (ts.value(a), trade_id.value(a)).cmp(&(ts.value(b), trade_id.value(b))));

    // instruments, numbered in order of first appearance
    let mut instruments: Vec<usize> = Vec::new(); // a representative row
    let mut index: HashMap<(&str, &str), usize> = HashMap::new();
    let mut instrument_of = Vec::with_capacity(rows.len());
    for &r in &rows {
        let key = (symbol.value(r), exchange.value(r));
        let k = *index.entry(key).or_insert_with(|| {
            instruments.push(r);
            instruments.len() - 1
        });
        instrument_of.push(k);
    }

    // each instrument's rows, in time order, gathered in one pass
    let mut rows_of: Vec<Vec<usize>> = vec![Vec::new(); instruments.len()];
    for (&r, &k) in rows.iter().zip(&instrument_of) {
        rows_of[k].push(r);
    }
    // quote paths: the midpoint follows the last trade, spread one to four ticks
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0F10_4A11);
    let mut paths = Vec::with_capacity(instruments.len());
    for (k, &rep) in instruments.iter().enumerate() {
        let mic = exchange.value(rep);
        let ex = calendar.get(mic).ok_or_else(|| {
            Error::Usage(format!("trades on `{mic}`, an exchange the calendar lacks"))
        })?;
        let utc = |t: chrono::NaiveTime| {
            ex.tz
                .from_local_datetime(&date.and_time(t))
                .earliest()
                .map(|d| d.timestamp_micros())
                .ok_or_else(|| Error::Usage(format!("{mic} session time in a DST gap")))
        };
        let (open, close) = (utc(ex.open)?, utc(ex.close)?);
        let seconds = ((close - open) / MICROS + 61).max(1) as usize;
        let mut quotes = Vec::with_capacity(seconds);
        let mine = &rows_of[k];
        let mut next = 0;
        let mut last = price.value(mine[0]);
        for s in 0..seconds {
            let t_end = open + (s as i64 + 1) * MICROS;
            while next < mine.len() && ts.value(mine[next]) < t_end {
                last = price.value(mine[next]);
                next += 1;
            }
            let spread = rng.random_range(1..=4) * TICK;
            let bid = (last - spread / 2 + rng.random_range(-1..=1) * TICK) / TICK * TICK;
            let bid = bid.max(TICK);
            quotes.push((bid, bid + spread));
        }
        paths.push(Path {
            start: open,
            quotes,
        });
    }

    // orders: consecutive fills of one instrument and side within five seconds
    let mut orders: Vec<Order> = Vec::new();
    let mut order_of = Vec::with_capacity(rows.len());
    let mut open_order: HashMap<(usize, bool), usize> = HashMap::new();
    for (n, &r) in rows.iter().enumerate() {
        let k = instrument_of[n];
        let buy = side.value(r) == "B";
        let (t, p, q) = (ts.value(r), price.value(r), qty.value(r));
        let current = open_order.get(&(k, buy)).copied().filter(|&o| {
            let o = &orders[o];
            o.fills < o.planned && t - o.first < 5 * MICROS
        });
        let o = match current {
            Some(o) => o,
            None => {
                // skewed: a few accounts send most orders
                let u: f64 = rng.random();
                let account = ((u * u * u) * ACCOUNTS as f64) as usize;
                orders.push(Order {
                    symbol: k,
                    buy,
                    account: account.min(ACCOUNTS - 1),
                    first: t,
                    fills: 0,
                    planned: rng.random_range(1..=3),
                    qty: 0,
                    max_price: p,
                    min_price: p,
                });
                open_order.insert((k, buy), orders.len() - 1);
                orders.len() - 1
            }
        };
        let order = &mut orders[o];
        order.fills += 1;
        order.qty += q;
        order.max_price = order.max_price.max(p);
        order.min_price = order.min_price.min(p);
        order_of.push(o);
    }

    let stamp = date.format("%Y%m%d").to_string();
    let n = orders.len();
    let mut o_id = StringBuilder::with_capacity(n, n * 18);
    let mut o_account = StringBuilder::with_capacity(n, n * 7);
    let (mut o_symbol, mut o_isin, mut o_exchange, mut o_side, mut o_type) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut o_price = Decimal128Builder::with_capacity(n).with_data_type(arrow_type(PRICE));
    let mut o_qty = Int64Builder::with_capacity(n);
    let (mut o_tif, mut o_venue, mut o_currency) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut o_directed = BooleanBuilder::with_capacity(n);
    let mut o_ts = TimestampMicrosecondBuilder::with_capacity(n);
    // per order: (venue, passive)
    let mut routing: Vec<(&'static str, bool)> = Vec::with_capacity(n);
    for (i, o) in orders.iter().enumerate() {
        let rep = instruments[o.symbol];
        let path = &paths[o.symbol];
        // received up to 1.5 s before its first fill, never before the session's open
        let received = (o.first - rng.random_range(1_000..1_500_000)).max(path.start);
        let (bid, ask) = path.at(received);
        let kind: f64 = rng.random();
        let (order_type, limit, passive) = if kind < 0.25 {
            ("MARKET", None, false)
        } else {
            let non_marketable = kind > 0.8
                && if o.buy {
                    o.max_price < ask
                } else {
                    o.min_price > bid
                };
            let limit = match (o.buy, non_marketable) {
                // a buy limit below the offer, at or above every fill
                (true, true) => {
                    o.max_price + rng.random_range(0..((ask - o.max_price) / TICK).max(1)) * TICK
                }
                (true, false) => ask.max(o.max_price) + rng.random_range(0..5) * TICK,
                (false, true) => {
                    o.min_price - rng.random_range(0..((o.min_price - bid) / TICK).max(1)) * TICK
                }
                (false, false) => (bid.min(o.min_price) - rng.random_range(0..5) * TICK).max(TICK),
            };
            ("LIMIT", Some(limit), non_marketable)
        };
        let cancelled = if rng.random::<f64>() < 0.1 {
            rng.random_range(1..10) * 100
        } else {
            0
        };
        let choices = venues(exchange.value(rep));
        let venue = if rng.random::<bool>() {
            choices[0]
        } else {
            choices[rng.random_range(0..choices.len())]
        };
        let directed = rng.random::<f64>() < 0.05;
        routing.push((venue, passive));
        o_id.append_value(format!("O{stamp}-{i:08}"));
        o_account.append_value(account_id(o.account));
        o_symbol.append_value(symbol.value(rep));
        o_isin.append_value(isin.value(rep));
        o_exchange.append_value(exchange.value(rep));
        o_side.append_value(if o.buy { "B" } else { "S" });
        o_type.append_value(order_type);
        o_price.append_option(limit);
        o_qty.append_value(o.qty + cancelled);
        o_tif.append_value(if cancelled > 0 { "IOC" } else { "DAY" });
        o_directed.append_value(directed);
        o_venue.append_value(venue);
        o_currency.append_value(currency.value(rep));
        o_ts.append_value(received);
    }
    let dates = |len: usize| Arc::new(arrow::array::Date32Array::from(vec![day; len]));
    let orders_batch = RecordBatch::try_new(
        orders_schema(),
        vec![
            Arc::new(o_id.finish()),
            Arc::new(o_account.finish()),
            Arc::new(o_symbol.finish()),
            Arc::new(o_isin.finish()),
            Arc::new(o_exchange.finish()),
            Arc::new(o_side.finish()),
            Arc::new(o_type.finish()),
            Arc::new(o_price.finish()),
            Arc::new(o_qty.finish()),
            Arc::new(o_tif.finish()),
            Arc::new(o_directed.finish()),
            Arc::new(o_venue.finish()),
            Arc::new(o_currency.finish()),
            Arc::new(o_ts.finish().with_timezone(crate::schema::UTC)),
            dates(n),
        ],
    )?;

    // executions: one per trade, in time order
    let m = rows.len();
    let mut e_id = StringBuilder::with_capacity(m, m * 18);
    let mut e_order = StringBuilder::with_capacity(m, m * 18);
    let (mut e_trade, mut e_account, mut e_symbol, mut e_isin, mut e_exchange, mut e_venue) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let (mut e_side, mut e_type, mut e_liq, mut e_currency) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut e_price = Decimal128Builder::with_capacity(m).with_data_type(arrow_type(PRICE));
    let mut e_usd = Decimal128Builder::with_capacity(m).with_data_type(arrow_type(NOTIONAL));
    let (mut e_qty, mut e_cum) = (
        Int64Builder::with_capacity(m),
        Int64Builder::with_capacity(m),
    );
    let mut e_ts = TimestampMicrosecondBuilder::with_capacity(m);
    let mut cum = vec![0i64; n];
    for (j, &r) in rows.iter().enumerate() {
        let o = order_of[j];
        let (venue, passive) = routing[o];
        cum[o] += qty.value(r);
        e_id.append_value(format!("E{stamp}-{j:08}"));
        e_order.append_value(format!("O{stamp}-{o:08}"));
        e_trade.append_value(trade_id.value(r));
        e_account.append_value(account_id(orders[o].account));
        e_symbol.append_value(symbol.value(r));
        e_isin.append_value(isin.value(r));
        e_exchange.append_value(exchange.value(r));
        e_venue.append_value(venue);
        e_side.append_value(side.value(r));
        e_type.append_value("TRADE");
        e_price.append_value(price.value(r));
        e_qty.append_value(qty.value(r));
        e_cum.append_value(cum[o]);
        e_liq.append_value(if passive { "ADD" } else { "REMOVE" });
        e_currency.append_value(currency.value(r));
        e_usd.append_value(notional_usd.value(r));
        e_ts.append_value(ts.value(r));
    }
    let executions = RecordBatch::try_new(
        executions_schema(),
        vec![
            Arc::new(e_id.finish()),
            Arc::new(e_order.finish()),
            Arc::new(e_trade.finish()),
            Arc::new(e_account.finish()),
            Arc::new(e_symbol.finish()),
            Arc::new(e_isin.finish()),
            Arc::new(e_exchange.finish()),
            Arc::new(e_venue.finish()),
            Arc::new(e_side.finish()),
            Arc::new(e_type.finish()),
            Arc::new(e_price.finish()),
            Arc::new(e_qty.finish()),
            Arc::new(e_cum.finish()),
            Arc::new(e_liq.finish()),
            Arc::new(e_currency.finish()),
            Arc::new(e_usd.finish()),
            Arc::new(e_ts.finish().with_timezone(crate::schema::UTC)),
            dates(m),
        ],
    )?;

    // quotes
    let q: usize = paths.iter().map(|p| p.quotes.len()).sum();
    let (mut q_symbol, mut q_isin, mut q_exchange, mut q_currency) = (
        StringBuilder::with_capacity(q, q * 5),
        StringBuilder::with_capacity(q, q * 12),
        StringBuilder::with_capacity(q, q * 4),
        StringBuilder::with_capacity(q, q * 3),
    );
    let mut q_bid = Decimal128Builder::with_capacity(q).with_data_type(arrow_type(PRICE));
    let mut q_ask = Decimal128Builder::with_capacity(q).with_data_type(arrow_type(PRICE));
    let (mut q_bsize, mut q_asize) = (
        Int64Builder::with_capacity(q),
        Int64Builder::with_capacity(q),
    );
    let mut q_ts = TimestampMicrosecondBuilder::with_capacity(q);
    for (k, path) in paths.iter().enumerate() {
        let rep = instruments[k];
        for (s, &(bid, ask)) in path.quotes.iter().enumerate() {
            q_symbol.append_value(symbol.value(rep));
            q_isin.append_value(isin.value(rep));
            q_exchange.append_value(exchange.value(rep));
            q_currency.append_value(currency.value(rep));
            q_bid.append_value(bid);
            q_ask.append_value(ask);
            q_bsize.append_value(rng.random_range(1..50) * 100);
            q_asize.append_value(rng.random_range(1..50) * 100);
            q_ts.append_value(path.start + s as i64 * MICROS);
        }
    }
    let quotes = RecordBatch::try_new(
        quotes_schema(),
        vec![
            Arc::new(q_symbol.finish()),
            Arc::new(q_isin.finish()),
            Arc::new(q_exchange.finish()),
            Arc::new(q_bid.finish()),
            Arc::new(q_ask.finish()),
            Arc::new(q_bsize.finish()),
            Arc::new(q_asize.finish()),
            Arc::new(q_currency.finish()),
            Arc::new(q_ts.finish().with_timezone(crate::schema::UTC)),
            dates(q),
        ],
    )?;
    Ok(OrderFlow {
        orders: orders_batch,
        executions,
        quotes,
    })
}

/// What [`land`] wrote: rows per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Landed {
    /// Trades of the date read from `market/trades`.
    pub trades: usize,
    /// Orders.
    pub orders: usize,
    /// Execution reports.
    pub executions: usize,
    /// Quotes.
    pub quotes: usize,
}

/// Reads `date`'s trades from `{lake}/market/trades` and writes the order flow behind them
/// beside it ([`TABLES`]): each table's `date` partition replaced in one commit (a rerun
/// leaves the same rows), the accounts rewritten whole.
pub async fn land(
    lake: &str,
    date: NaiveDate,
    seed: u64,
    storage_options: &HashMap<String, String>,
) -> Result<Landed> {
    use crate::delta::{self, CommitExtras, TableSpec};
    use deltalake::datafusion::prelude::{col, lit};
    use deltalake::datafusion::scalar::ScalarValue;
    let at = |t: &str| format!("{}/{t}", lake.trim_end_matches('/'));
    let uri = at("market/trades");
    let table = delta::open_existing(&uri, storage_options)
        .await?
        .ok_or_else(|| Error::Usage(format!("{uri}: no trades table to derive orders from")))?;
    let day = ScalarValue::Date32(Some(crate::transform::symbols::epoch_days(date)));
    let generic = |e: deltalake::datafusion::error::DataFusionError| {
        Error::from(delta::DeltaError::Table {
            uri: uri.clone(),
            operation: "scan",
            source: Box::new(deltalake::DeltaTableError::Generic(e.to_string())),
        })
    };
    let ctx = delta::sql_context(&table, "trades").await?;
    let batches = ctx
        .table("trades")
        .await
        .map_err(generic)?
        .filter(col("trade_date").eq(lit(day.clone())))
        .map_err(generic)?
        .collect()
        .await
        .map_err(generic)?;
    let trades = match batches.first() {
        Some(b) => arrow::compute::concat_batches(&b.schema(), &batches)?,
        None => return Ok(Landed::default()),
    };
    let flow = derive(&trades, date, seed, &ExchangeCalendar::embedded())?;
    let extras = CommitExtras {
        metadata: vec![(
            "writer".into(),
            serde_json::json!(format!("finlake orderflow {}", crate::VERSION)),
        )],
        ..CommitExtras::default()
    };
    for (name, batch) in [
        (TABLES[0], &flow.orders),
        (TABLES[1], &flow.executions),
        (TABLES[2], &flow.quotes),
    ] {
        let table = delta::open_or_create(&TableSpec {
            uri: at(name),
            schema: batch.schema(),
            partition_by: vec!["trade_date".into()],
            checkpoint_interval: None,
            storage_options: storage_options.clone(),
        })
        .await?;
        delta::replace_partition(
            table,
            vec![batch.clone()],
            "trade_date",
            day.clone(),
            &extras,
        )
        .await?;
    }
    let accounts = accounts();
    let table = delta::open_or_create(&TableSpec {
        uri: at(TABLES[3]),
        schema: accounts.schema(),
        partition_by: vec![],
        checkpoint_interval: None,
        storage_options: storage_options.clone(),
    })
    .await?;
    delta::overwrite(table, vec![accounts], &extras).await?;
    Ok(Landed {
        trades: trades.num_rows(),
        orders: flow.orders.num_rows(),
        executions: flow.executions.num_rows(),
        quotes: flow.quotes.num_rows(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day() -> NaiveDate {
        crate::demo::demo_date()
    }

    fn trades() -> RecordBatch {
        let stages = crate::demo::trade_stages(day(), 3).unwrap();
        let (symbols, calendar) = crate::demo::embedded_refdata().unwrap();
        let g = crate::generate::generate(
            &crate::generate::GenOptions {
                rows: 2000,
                faults: 0.0,
                seed: 3,
                format: crate::generate::WireFormat::Json,
                date: day(),
                source_type: crate::spec::SourceType::Trade,
            },
            &symbols,
            &calendar,
        );
        let msgs: Vec<&[u8]> = g.messages.iter().map(Vec::as_slice).collect();
        let offsets: Vec<i64> = (0..msgs.len() as i64).collect();
        stages
            .process(
                &msgs,
                &crate::pipeline::BatchContext {
                    topic: "t",
                    partition: 0,
                    offsets: &offsets,
                    correlation_id: "test",
                    ingested_at: 0,
                    arrivals: None,
                    message_ids: None,
                },
            )
            .unwrap()
            .good
    }

    #[test]
    fn every_trade_is_one_execution_of_an_order_that_fits_it() {
        let trades = trades();
        let cal = ExchangeCalendar::embedded();
        let flow = derive(&trades, day(), 9, &cal).unwrap();
        assert_eq!(flow.executions.num_rows(), trades.num_rows());
        assert_eq!(derive(&trades, day(), 9, &cal).unwrap().orders, flow.orders);
        let orders = &flow.orders;
        let ids = strings(orders, "order_id").unwrap();
        let qty = orders
            .column_by_name("quantity")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>();
        let received = orders
            .column_by_name("timestamp")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        let mut by_id = HashMap::new();
        for i in 0..orders.num_rows() {
            by_id.insert(
                ids.value(i).to_string(),
                (qty.value(i), received.value(i), 0i64),
            );
        }
        let e = &flow.executions;
        let (order, last_qty) = (
            strings(e, "order_id").unwrap(),
            e.column_by_name("last_qty")
                .unwrap()
                .as_primitive::<arrow::datatypes::Int64Type>()
                .clone(),
        );
        let ets = e
            .column_by_name("timestamp")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        for i in 0..e.num_rows() {
            let o = by_id
                .get_mut(order.value(i))
                .expect("an execution's order exists");
            assert!(o.1 < ets.value(i), "an order is received before it fills");
            o.2 += last_qty.value(i);
        }
        assert!(by_id
            .values()
            .all(|(q, _, filled)| filled <= q && *filled > 0));
        assert!(
            orders.num_rows() < e.num_rows(),
            "some orders fill more than once"
        );
        // some orders of each type
        let types = strings(orders, "order_type").unwrap();
        for t in ["MARKET", "LIMIT"] {
            assert!((0..types.len()).any(|i| types.value(i) == t), "{t}");
        }
        assert!(flow.quotes.num_rows() > 10 * 23_400 / 2);
    }
}
