//! Trade tables with known injected faults, for tests and benchmarks of the quality side.
//!
//! A clean day comes from the core's seeded generator run through the core's decode and
//! transform stages (so rows are what the ingestor lands), sorted into arrival order by event
//! time. Faults are then injected into chosen rows, and what was injected is returned as
//! [`Injected`]: the counts a correct `data-quality-check` must report. The counts come from
//! the injection, never from the code under test.

use std::sync::Arc;

use arrow::array::{
    Array, AsArray, Decimal128Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    UInt32Array,
};
use arrow::compute::{sort_to_indices, take_record_batch};
use arrow::datatypes::{Decimal128Type, TimestampMicrosecondType};
use chrono::NaiveDate;
use finlake_core::generate::{self, GenOptions, WireFormat};
use finlake_core::pipeline::BatchContext;
use finlake_core::spec::SourceType;
use finlake_core::transform::{ExchangeCalendar, Session};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::Result;

/// What to inject, as row counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Injected {
    /// Rows with a NULL `isin`.
    pub null_isin: usize,
    /// Rows with a negative price.
    pub negative_price: usize,
    /// Rows with an ISIN whose check digit is wrong.
    pub bad_isin: usize,
    /// Rows 30 minutes after their exchange's close.
    pub after_hours: usize,
    /// Exact copies of an earlier row, arriving right after it.
    pub duplicates: usize,
    /// Copies with the same key and a different price (corrections), right after the original.
    pub conflicts: usize,
    /// Rows (new keys) arriving 90 s or more after rows newer than them by more than the window.
    pub late: usize,
}

/// A generated day.
#[derive(Debug, Clone)]
pub struct Day {
    /// The rows, in arrival order, in the table schema of `market-data-stream`.
    pub batch: RecordBatch,
    /// What was injected.
    pub injected: Injected,
}

/// Generates `rows` clean trades on `date` and injects `faults`. `window_micros` is the dedup
/// window, which late rows must exceed.
pub fn trade_day(
    date: NaiveDate,
    rows: usize,
    seed: u64,
    faults: Injected,
    window_micros: i64,
) -> Result<Day> {
    let (symbols, _) = finlake_core::demo::embedded_refdata()?;
    let calendar = ExchangeCalendar::embedded();
    let generated = generate::generate(
        &GenOptions {
            rows,
            faults: 0.0,
            seed,
            format: WireFormat::Json,
            date,
            source_type: SourceType::Trade,
        },
        &symbols,
        &calendar,
    );
    let stages = finlake_core::demo::trade_stages(date, seed)?;
    let msgs: Vec<&[u8]> = generated.messages.iter().map(Vec::as_slice).collect();
    let offsets: Vec<i64> = (0..msgs.len() as i64).collect();
    let clean = stages
        .process(
            &msgs,
            &BatchContext {
                topic: "market.trades",
                partition: 0,
                offsets: &offsets,
                correlation_id: "fixture",
                ingested_at: 0,
                arrivals: None,
                message_ids: None,
            },
        )?
        .good;
    let by_time = sort_to_indices(
        clean.column_by_name("timestamp").expect("column"),
        None,
        None,
    )?;
    let clean = take_record_batch(&clean, &by_time)?;
    let n = clean.num_rows();
    let col = |name: &str| {
        clean
            .column_by_name(name)
            .expect("trade table column")
            .clone()
    };
    let ts = col("timestamp")
        .as_primitive::<TimestampMicrosecondType>()
        .clone();
    let mics = col("exchange").as_string::<i32>().clone();
    let dates = col("trade_date")
        .as_primitive::<arrow::datatypes::Date32Type>()
        .clone();

    // disjoint fault rows
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let mut pool: Vec<usize> = (0..n).collect();
    pool.shuffle(&mut rng);
    let mut take = |k: usize| -> Vec<usize> {
        let k = k.min(pool.len());
        pool.split_off(pool.len() - k)
    };
    let null_isin = take(faults.null_isin);
    let negative = take(faults.negative_price);
    let bad_isin = take(faults.bad_isin);
    let after_hours = take(faults.after_hours);
    let dup_of = take(faults.duplicates);
    let conflict_of = take(faults.conflicts);
    let late_of = take(faults.late);

    #[derive(Clone, Copy, PartialEq)]
    enum Mut {
        None,
        NullIsin,
        Negative,
        BadIsin,
        AfterHours(i64),
        Conflict,
        Late(usize),
    }
    let mut muts = vec![Mut::None; n];
    for &i in &null_isin {
        muts[i] = Mut::NullIsin;
    }
    for &i in &negative {
        muts[i] = Mut::Negative;
    }
    for &i in &bad_isin {
        muts[i] = Mut::BadIsin;
    }
    for &i in &after_hours {
        let day = finlake_core::transform::symbols::date_of_epoch_days(dates.value(i));
        let Some(Session::Open(_, close)) = calendar.session(mics.value(i), day) else {
            unreachable!("the generator only trades in sessions")
        };
        muts[i] = Mut::AfterHours(close + 30 * 60 * 1_000_000);
    }
    // arrival order: (source row, mutation, event time)
    let mut arrival: Vec<(usize, Mut, i64)> = (0..n)
        .map(|i| {
            let t = match muts[i] {
                Mut::AfterHours(t) => t,
                _ => ts.value(i),
            };
            (i, muts[i], t)
        })
        .collect();
    arrival.sort_by_key(|a| a.2);
    // copies arrive right after their original; late rows after the first row newer than
    // them by more than the window (and 90 s). One pass, no inserts into the middle.
    let mut copies: std::collections::HashMap<usize, Vec<Mut>> = std::collections::HashMap::new();
    for &i in &dup_of {
        copies.entry(i).or_default().push(Mut::None);
    }
    for &i in &conflict_of {
        copies.entry(i).or_default().push(Mut::Conflict);
    }
    let mut late_after: std::collections::HashMap<usize, Vec<(usize, usize)>> =
        std::collections::HashMap::new();
    let mut late_count = 0;
    for (k, &src) in late_of.iter().enumerate() {
        let after = ts.value(src) + window_micros + 90_000_000;
        let at = arrival.partition_point(|a| a.2 < after);
        if at < arrival.len() {
            late_after.entry(at).or_default().push((src, k));
            late_count += 1;
        }
    }
    let mut merged = Vec::with_capacity(arrival.len() + copies.len() + late_count);
    for (at, &(src, m, t)) in arrival.iter().enumerate() {
        merged.push((src, m, t));
        if m == Mut::None {
            for &c in copies.get(&src).into_iter().flatten() {
                merged.push((src, c, ts.value(src)));
            }
        }
        for &(late_src, k) in late_after.get(&at).into_iter().flatten() {
            merged.push((late_src, Mut::Late(k), ts.value(late_src)));
        }
    }
    let arrival = merged;
    let idx: UInt32Array = arrival.iter().map(|a| a.0 as u32).collect();
    let out = take_record_batch(&clean, &idx)?;
    let schema = out.schema();
    let mut cols = out.columns().to_vec();
    let price = out
        .column_by_name("price")
        .expect("price")
        .as_primitive::<Decimal128Type>();
    let price: Decimal128Array = price
        .iter()
        .zip(&arrival)
        .map(|(p, a)| match a.1 {
            Mut::Negative => p.map(|v| -v),
            Mut::Conflict => p.map(|v| v + 10_000),
            _ => p,
        })
        .collect::<Decimal128Array>()
        .with_data_type(price.data_type().clone());
    let isin = out.column_by_name("isin").expect("isin").as_string::<i32>();
    let isin: StringArray = isin
        .iter()
        .zip(&arrival)
        .map(|(v, a)| match a.1 {
            Mut::NullIsin => None,
            Mut::BadIsin => v.map(|s| {
                let (body, check) = s.split_at(s.len() - 1);
                let d = check.parse::<u8>().unwrap_or(0);
                format!("{body}{}", (d + 1) % 10)
            }),
            _ => v.map(str::to_string),
        })
        .collect();
    let trade_id = out
        .column_by_name("trade_id")
        .expect("trade_id")
        .as_string::<i32>();
    let trade_id: StringArray = trade_id
        .iter()
        .zip(&arrival)
        .map(|(v, a)| match a.1 {
            Mut::Late(k) => Some(format!("LATE-{k}")),
            _ => v.map(str::to_string),
        })
        .collect();
    let times: TimestampMicrosecondArray = arrival
        .iter()
        .map(|a| Some(a.2))
        .collect::<TimestampMicrosecondArray>()
        .with_timezone(finlake_core::schema::UTC);
    // ingest time: arrival after the newest event so far, 0.2 to 2 s later, and never before
    // the row that arrived ahead of it (a consumer reads a partition in offset order)
    let (mut newest, mut last) = (i64::MIN, i64::MIN);
    let ingested: TimestampMicrosecondArray = arrival
        .iter()
        .map(|a| {
            newest = newest.max(a.2);
            last = last.max(newest + rng.random_range(200_000..2_000_000));
            Some(last)
        })
        .collect::<TimestampMicrosecondArray>()
        .with_timezone(finlake_core::schema::UTC);
    let offsets: arrow::array::Int64Array = (0..arrival.len() as i64).map(Some).collect();
    for (name, array) in [
        ("price", Arc::new(price) as arrow::array::ArrayRef),
        ("isin", Arc::new(isin)),
        ("trade_id", Arc::new(trade_id)),
        ("timestamp", Arc::new(times)),
        (finlake_core::schema::INGESTED_AT, Arc::new(ingested)),
        ("_offset", Arc::new(offsets)),
    ] {
        cols[schema.index_of(name)?] = array;
    }
    let batch = RecordBatch::try_new(schema, cols)?;
    Ok(Day {
        batch,
        injected: Injected {
            null_isin: null_isin.len(),
            negative_price: negative.len(),
            bad_isin: bad_isin.len(),
            after_hours: after_hours.len(),
            duplicates: dup_of.len(),
            conflicts: conflict_of.len(),
            late: late_count,
        },
    })
}
