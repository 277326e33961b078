//! Dedup: batch-split invariance (proptest), bounded state, conflicts and late rows routed
//! and counted, and seeding from the tail of a Delta table.

use std::sync::{Arc, OnceLock};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use finlake_quality::engine::EngineStats;
use finlake_quality::fixtures::{Day, Injected};
use finlake_quality::RuleEngine;
use proptest::prelude::*;

use crate::common::{self, calendar};

fn sample_spec() -> Arc<finlake_core::spec::LoadedSpec> {
    let path = common::root().join("samples/market-data-stream.yaml");
    Arc::new(finlake_core::spec::load(&path).unwrap())
}

fn faulty_day() -> &'static Day {
    static DAY: OnceLock<Day> = OnceLock::new();
    DAY.get_or_init(|| {
        common::day(
            3000,
            21,
            Injected {
                null_isin: 9,
                negative_price: 7,
                bad_isin: 6,
                after_hours: 8,
                duplicates: 12,
                conflicts: 5,
                late: 4,
            },
        )
    })
}

/// What a run produced, by source offset: landed offsets with flags, rejects, counts.
#[derive(Debug, PartialEq)]
struct Run {
    landed: Vec<(i64, Vec<String>)>,
    rejects: Vec<(i64, String)>,
    stats: EngineStats,
}

fn run(batch: &RecordBatch, cuts: &[usize]) -> Run {
    let mut engine = RuleEngine::new(sample_spec(), batch.schema(), calendar()).unwrap();
    let mut landed = Vec::new();
    let mut rejects = Vec::new();
    let mut bounds: Vec<usize> = cuts
        .iter()
        .copied()
        .filter(|&c| c > 0 && c < batch.num_rows())
        .collect();
    bounds.sort_unstable();
    bounds.dedup();
    bounds.insert(0, 0);
    bounds.push(batch.num_rows());
    for w in bounds.windows(2) {
        let part = batch.slice(w[0], w[1] - w[0]);
        let offsets = part
            .column_by_name("_offset")
            .unwrap()
            .as_primitive::<Int64Type>()
            .clone();
        let out = engine.process(&part).unwrap();
        let lo = out
            .landed
            .column_by_name("_offset")
            .unwrap()
            .as_primitive::<Int64Type>();
        let flags = out
            .landed
            .column_by_name("_flags")
            .unwrap()
            .as_list::<i32>();
        for i in 0..out.landed.num_rows() {
            let f = flags.value(i);
            let f: Vec<String> = f
                .as_string::<i32>()
                .iter()
                .flatten()
                .map(String::from)
                .collect();
            landed.push((lo.value(i), f));
        }
        for r in out.rejects {
            rejects.push((offsets.value(r.row as usize), r.reason));
        }
    }
    Run {
        landed,
        rejects,
        stats: engine.totals().clone(),
    }
}

#[test]
fn a_thousand_micro_batches_give_the_same_verdicts_and_counts_as_one_batch() {
    let day = faulty_day();
    let n = day.batch.num_rows();
    let one = run(&day.batch, &[]);
    let cuts: Vec<usize> = (1..1000).map(|i| i * n / 1000).collect();
    let many = run(&day.batch, &cuts);
    assert_eq!(one, many);
    // and the counts are the injected ones
    let s = &one.stats;
    let inj = day.injected;
    assert_eq!(s.dedup.duplicate_rows, inj.duplicates as u64);
    assert_eq!(s.dedup.conflicting_duplicates, inj.conflicts as u64);
    assert_eq!(s.dedup.late, inj.late as u64);
    assert_eq!(
        s.dedup.duplicate_keys,
        (inj.duplicates + inj.conflicts) as u64
    );
    assert_eq!(s.rules["price-positive"].failed, inj.negative_price as u64);
    assert_eq!(s.rules["isin-valid"].failed, inj.bad_isin as u64);
    assert_eq!(s.rules["isin-valid"].null_rows, inj.null_isin as u64);
    assert_eq!(
        s.rules["trading-hours-check"].failed,
        inj.after_hours as u64
    );
    assert_eq!(s.landed + s.quarantined + s.dropped, s.rows);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn any_split_into_micro_batches_gives_the_same_output(cuts in proptest::collection::vec(0usize..3100, 0..40)) {
        let day = faulty_day();
        let one = run(&day.batch, &[]);
        let split = run(&day.batch, &cuts);
        prop_assert_eq!(one, split);
    }
}

#[test]
fn conflicting_duplicates_and_late_rows_are_counted_and_routed_never_dropped() {
    let day = faulty_day();
    let r = run(&day.batch, &[]);
    let conflicts: Vec<&(i64, String)> = r
        .rejects
        .iter()
        .filter(|(_, why)| why.starts_with("conflicting_duplicate"))
        .collect();
    assert_eq!(conflicts.len(), day.injected.conflicts);
    for (offset, why) in &conflicts {
        // the first version is findable: it landed, and the reason names its offset
        let first: i64 = why
            .split("offset ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            r.landed.iter().any(|(o, _)| *o == first),
            "first version {first} of {offset} landed"
        );
    }
    let late: Vec<_> = r
        .landed
        .iter()
        .filter(|(_, f)| f.iter().any(|x| x == "late"))
        .collect();
    assert_eq!(
        late.len(),
        day.injected.late,
        "late rows land flagged `late` by default"
    );
    // every input row is accounted for: landed, quarantined, or a counted duplicate
    let total = r.landed.len() + r.rejects.len() + r.stats.dropped as usize;
    assert_eq!(total, day.batch.num_rows());
    assert_eq!(r.stats.dropped, r.stats.dedup.duplicate_rows);
}

#[test]
fn late_rows_can_be_quarantined_instead() {
    let text = std::fs::read_to_string(common::root().join("samples/market-data-stream.yaml"))
        .unwrap()
        .replace(
            "action: deduplicate",
            "action: deduplicate\n      on_late: dead_letter",
        );
    let spec = Arc::new(common::spec("late.yaml", &text).unwrap());
    let day = faulty_day();
    let mut engine = RuleEngine::new(spec, day.batch.schema(), calendar()).unwrap();
    let out = engine.process(&day.batch).unwrap();
    let late = out
        .rejects
        .iter()
        .filter(|r| r.reason.starts_with("late:"))
        .count();
    assert_eq!(late, day.injected.late);
}

#[test]
fn state_stays_within_one_window_of_keys_plus_one_batch() {
    let day = common::day(20_000, 33, Injected::default());
    let batch = &day.batch;
    let times = batch
        .column_by_name("timestamp")
        .unwrap()
        .as_primitive::<TimestampMicrosecondType>();
    let window = 60_000_000i64;
    // the most rows (all keys are unique) any window of event time holds
    let t: Vec<i64> = (0..times.len()).map(|i| times.value(i)).collect();
    let (mut lo, mut most) = (0, 0);
    for hi in 0..t.len() {
        while t[hi] - t[lo] > window {
            lo += 1;
        }
        most = most.max(hi - lo + 1);
    }
    let batch_size = 250;
    let mut engine = RuleEngine::new(sample_spec(), batch.schema(), calendar()).unwrap();
    let gauge = finlake_quality::metrics::QualityMetrics::global()
        .dedup_state_entries
        .with_label_values(&["market-data-stream"]);
    let mut peak = 0;
    for start in (0..batch.num_rows()).step_by(batch_size) {
        let len = batch_size.min(batch.num_rows() - start);
        engine.process(&batch.slice(start, len)).unwrap();
        let entries = engine.dedup().unwrap().state_entries();
        assert_eq!(gauge.get(), entries as i64, "the gauge reports the state");
        peak = peak.max(entries);
    }
    // the state is swept when it doubles (at 4,096 keys at least): never more than twice
    // one window's keys
    assert!(
        peak <= (2 * most).max(4096),
        "peak {peak} > twice the window keys {most}"
    );
    assert!(
        peak < batch.num_rows() / 4,
        "state is bounded by the window, not the day: {peak}"
    );
}

#[test]
fn a_restarted_dedup_seeded_from_the_table_tail_still_catches_duplicates() {
    let day = common::day(2000, 44, Injected::default());
    let n = day.batch.num_rows();
    let (before, after) = (day.batch.slice(0, n / 2), day.batch.slice(n / 2, n - n / 2));
    // the last row landed before the restart arrives again after it
    let again = before.slice(before.num_rows() - 1, 1);
    let dir = tempfile::tempdir().unwrap();
    common::write_trades(dir.path(), before.clone());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let table = rt
        .block_on(deltalake::open_table(
            url::Url::from_directory_path(dir.path().join("market/trades").canonicalize().unwrap())
                .unwrap(),
        ))
        .unwrap();
    for seeded in [false, true] {
        let mut engine = RuleEngine::new(sample_spec(), after.schema(), calendar()).unwrap();
        if seeded {
            let rows = rt
                .block_on(engine.dedup().unwrap().seed_from_table(&table))
                .unwrap();
            assert!(
                rows > 0 && rows < before.num_rows(),
                "only the last window is read: {rows}"
            );
        }
        let out = engine.process(&again).unwrap();
        let dup = out.stats.dedup.duplicate_rows;
        assert_eq!(dup, seeded as u64, "seeded={seeded}");
        assert_eq!(
            engine.process(&after).unwrap().stats.dedup.duplicate_rows,
            0
        );
    }
}

#[test]
fn a_retry_processed_under_new_reference_data_is_a_duplicate_not_a_conflict() {
    use arrow::array::{Array, Decimal128Array};
    use arrow::compute::concat_batches;
    let day = common::day(50, 5, Injected::default());
    let first = day.batch.slice(0, 1);
    // the same message again, converted with a newer FX rate: only derived columns differ
    let mut cols = first.columns().to_vec();
    for name in ["price_base", "fx_rate"] {
        let i = first.schema().index_of(name).unwrap();
        let old = cols[i].as_primitive::<arrow::datatypes::Decimal128Type>();
        let bumped =
            Decimal128Array::from(vec![old.value(0) + 1]).with_data_type(old.data_type().clone());
        cols[i] = Arc::new(bumped);
    }
    let retry = RecordBatch::try_new(first.schema(), cols).unwrap();
    let both = concat_batches(&first.schema(), &[first.clone(), retry]).unwrap();
    let mut engine = RuleEngine::new(sample_spec(), both.schema(), calendar()).unwrap();
    let out = engine.process(&both).unwrap();
    assert_eq!(out.stats.dedup.duplicate_rows, 1, "{:?}", out.stats.dedup);
    assert_eq!(out.stats.dedup.conflicting_duplicates, 0);
    assert_eq!(out.landed.num_rows(), 1);
}

/// `batch` with column `name` replaced by `f(row, old value)`.
fn with_i64(batch: &RecordBatch, name: &str, f: impl Fn(usize, i64) -> i64) -> RecordBatch {
    use arrow::array::ArrayRef;
    let i = batch.schema().index_of(name).unwrap();
    let col = batch.column(i);
    let new: ArrayRef = match col.data_type() {
        arrow::datatypes::DataType::Timestamp(_, tz) => Arc::new(
            arrow::array::TimestampMicrosecondArray::from_iter_values(
                col.as_primitive::<TimestampMicrosecondType>()
                    .values()
                    .iter()
                    .enumerate()
                    .map(|(r, &v)| f(r, v)),
            )
            .with_timezone_opt(tz.clone()),
        ),
        arrow::datatypes::DataType::Int32 => Arc::new(arrow::array::Int32Array::from_iter_values(
            col.as_primitive::<arrow::datatypes::Int32Type>()
                .values()
                .iter()
                .enumerate()
                .map(|(r, &v)| f(r, i64::from(v)) as i32),
        )),
        other => panic!("{other}"),
    };
    let mut cols = batch.columns().to_vec();
    cols[i] = new;
    RecordBatch::try_new(batch.schema(), cols).unwrap()
}

fn clean_day() -> RecordBatch {
    common::day(2000, 5, Injected::default()).batch
}

/// One row whose producer's clock is a day ahead does not make every later row late: it is
/// more than max_skew (the sample's clock-skew rule, 5 minutes) ahead of its ingest time, so it
/// does not move the watermark.
#[test]
fn a_timestamp_from_a_clock_a_day_ahead_does_not_make_later_rows_late() {
    let day = clean_day();
    let base = run(&day, &[]);
    assert_eq!(base.stats.dedup.late, 0);
    let ahead = with_i64(&day, "timestamp", |r, t| {
        if r == 100 {
            t + 86_400_000_000
        } else {
            t
        }
    });
    let out = run(&ahead, &[500, 1000]);
    assert_eq!(out.stats.dedup.late, 0, "{:?}", out.stats.dedup);
    assert_eq!(out.stats.rows, base.stats.rows);
}

/// Two source partitions, the second an hour behind the first in event time (its backlog is
/// being read): the watermark is the lagging partition's, so none of its rows is late.
/// `day` with every other row moved to partition 1 and an hour back in event time.
fn an_hour_behind(day: &RecordBatch) -> RecordBatch {
    let hour = 3_600_000_000i64;
    let lagging = with_i64(day, "_partition", |r, p| if r % 2 == 1 { 1 } else { p });
    with_i64(
        &lagging,
        "timestamp",
        |r, t| if r % 2 == 1 { t - hour } else { t },
    )
}

/// The state holds nothing of the batches it judged (an entry is a key's fingerprint, event
/// time, payload hash and lineage): with a partition an hour behind, the state keeps an hour
/// of the other partition's keys, and only their 64 bytes each, not the batches they came in.
#[test]
fn the_state_keeps_no_batch_alive() {
    let lagging = an_hour_behind(&clean_day());
    let mut engine = RuleEngine::new(sample_spec(), lagging.schema(), calendar()).unwrap();
    let mut judged = Vec::new();
    for start in (0..lagging.num_rows()).step_by(500) {
        let len = 500.min(lagging.num_rows() - start);
        // a copy of its own, so the count below is the engine's references only
        let batch = RecordBatch::try_new(
            lagging.schema(),
            lagging
                .slice(start, len)
                .columns()
                .iter()
                .map(|c| arrow::array::make_array(c.to_data()))
                .collect(),
        )
        .unwrap();
        engine.process(&batch).unwrap();
        judged.push(batch);
    }
    assert!(engine.dedup().unwrap().state_entries() > 0);
    for (i, b) in judged.iter().enumerate() {
        for c in b.columns() {
            assert_eq!(
                Arc::strong_count(c),
                1,
                "batch {i}: the engine still holds a column of it"
            );
        }
    }
}

#[test]
fn a_partition_an_hour_behind_another_is_not_late_wholesale() {
    let lagging = an_hour_behind(&clean_day());
    let out = run(&lagging, &[700]);
    assert_eq!(out.stats.dedup.late, 0, "{:?}", out.stats.dedup);
}

/// A revoked partition no longer holds the watermark back: forgotten, the watermark is the
/// remaining partition's.
#[test]
fn a_forgotten_partition_no_longer_holds_the_watermark() {
    let day = clean_day();
    let hour = 3_600_000_000i64;
    let window = 60_000_000i64;
    let lagging = with_i64(&day, "_partition", |r, p| if r % 2 == 1 { 1 } else { p });
    let lagging = with_i64(
        &lagging,
        "timestamp",
        |r, t| if r % 2 == 1 { t - hour } else { t },
    );
    let topic = lagging
        .column_by_name("_topic")
        .unwrap()
        .as_string::<i32>()
        .value(0)
        .to_string();
    let times = lagging
        .column_by_name("timestamp")
        .unwrap()
        .as_primitive::<TimestampMicrosecondType>()
        .clone();
    let newest = |parity: usize| {
        (0..times.len())
            .filter(|r| r % 2 == parity)
            .map(|r| times.value(r))
            .max()
            .unwrap()
    };
    let mut engine = RuleEngine::new(sample_spec(), lagging.schema(), calendar()).unwrap();
    engine.process(&lagging).unwrap();
    let dedup = engine.dedup().unwrap();
    assert_eq!(
        dedup.watermark(),
        Some(newest(1) - window),
        "the lagging one holds it"
    );
    dedup.forget_partition(&topic, 1);
    assert_eq!(
        dedup.watermark(),
        Some(newest(0) - window),
        "then the other's"
    );
}

/// A partition that is assigned but has sent nothing yet holds the watermark back. An
/// ingestor applies partitions' micro-batches one after another: partition 0's batch spans
/// the day, then partition 1's brings copies of rows from the day's first minutes (a
/// producer's retry that went to another partition). Without the expectation, partition 0
/// alone moved the watermark past those rows and their state was gone: the copies landed.
#[test]
fn an_expected_partition_holds_the_watermark_until_its_first_rows() {
    // enough keys that the state is swept (it is swept when it has doubled, from 4,096)
    let day = common::day(20_000, 5, Injected::default()).batch;
    let first = with_i64(&day, "_partition", |_, _| 0);
    let copies = with_i64(&day.slice(0, 10), "_partition", |_, _| 1);
    let topic = day
        .column_by_name("_topic")
        .unwrap()
        .as_string::<i32>()
        .value(0)
        .to_string();
    let duplicates = |expect: bool| {
        let mut engine = RuleEngine::new(sample_spec(), day.schema(), calendar()).unwrap();
        if expect {
            let d = engine.dedup().unwrap();
            d.expect_partition(&topic, 0);
            d.expect_partition(&topic, 1);
        }
        engine.process(&first).unwrap();
        engine.process(&copies).unwrap().stats.dedup.duplicate_rows
    };
    assert_eq!(
        duplicates(false),
        0,
        "without it, the copies are not caught"
    );
    assert_eq!(duplicates(true), 10);
}

/// Seeding reads the last window only, pruned by trade_date and the files' statistics: with
/// an older day's data file gone from storage, a scan of the whole table would fail, the
/// pruned one does not notice.
#[test]
fn seeding_reads_only_the_last_window_s_files() {
    let old = common::day(500, 45, Injected::default()).batch;
    // the same rows, three days earlier (event time, ingest time and trade_date)
    let days3 = 3 * 86_400_000_000i64;
    let old = with_i64(&old, "timestamp", |_, t| t - days3);
    let old = with_i64(&old, finlake_core::schema::INGESTED_AT, |_, t| t - days3);
    let date_idx = old.schema().index_of("trade_date").unwrap();
    let mut cols = old.columns().to_vec();
    cols[date_idx] = Arc::new(arrow::array::Date32Array::from(vec![
        old.column(date_idx)
            .as_primitive::<arrow::datatypes::Date32Type>()
            .value(0)
            - 3;
        old.num_rows()
    ]));
    let old = RecordBatch::try_new(old.schema(), cols).unwrap();
    let recent = common::day(2000, 46, Injected::default()).batch;
    let dir = tempfile::tempdir().unwrap();
    common::write_trades(dir.path(), old);
    common::write_trades(dir.path(), recent);
    let trades = dir.path().join("market/trades");
    let old_dir = std::fs::read_dir(&trades)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("trade_date=2026-11-17"))
        .expect("the older day's partition");
    for f in std::fs::read_dir(&old_dir).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let table = rt
        .block_on(deltalake::open_table(
            url::Url::from_directory_path(trades.canonicalize().unwrap()).unwrap(),
        ))
        .unwrap();
    let mut engine = RuleEngine::new(sample_spec(), day_schema(), calendar()).unwrap();
    let rows = rt
        .block_on(engine.dedup().unwrap().seed_from_table(&table))
        .unwrap();
    assert!(rows > 0, "the last window is seeded");
}

fn day_schema() -> arrow::datatypes::SchemaRef {
    clean_day().schema()
}

/// The sources dedup and dq's order check resolve rows by: the topic and partition of each row;
/// a topic that differs from the others in one byte, far into the batch, is its own.
#[test]
fn sources_tell_each_row_its_topic_and_partition() {
    use arrow::array::{ArrayRef, Int32Array, StringArray};
    use finlake_quality::dedup::Sources;
    let batch = |topics: Vec<Option<&str>>, partitions: Vec<i32>| {
        RecordBatch::try_from_iter([
            ("_topic", Arc::new(StringArray::from(topics)) as ArrayRef),
            (
                "_partition",
                Arc::new(Int32Array::from(partitions)) as ArrayRef,
            ),
        ])
        .unwrap()
    };
    // each row's (topic, partition), and how many topics the batch names
    let sources = |b: &RecordBatch| {
        let s = Sources::of(b);
        assert_eq!(s.len(), b.num_rows());
        let rows: Vec<(String, i32)> = (0..s.len())
            .map(|row| {
                let (t, p) = s.source(row);
                (s.topics()[t as usize].clone(), p)
            })
            .collect();
        (rows, s.topics().len())
    };
    let each = |rows: &[(&str, i32)]| -> Vec<(String, i32)> {
        rows.iter().map(|&(t, p)| (t.to_string(), p)).collect()
    };
    assert_eq!(
        sources(&batch(vec![Some("t1"); 5], vec![1, 1, 2, 2, 1])),
        (
            each(&[("t1", 1), ("t1", 1), ("t1", 2), ("t1", 2), ("t1", 1)]),
            1
        )
    );
    let mut topics = vec![Some("t1"); 100];
    topics[90] = Some("t2");
    let mut expected = vec![("t1", 0); 100];
    expected[90] = ("t2", 0);
    assert_eq!(sources(&batch(topics, vec![0; 100])), (each(&expected), 2));
    assert_eq!(
        sources(&batch(
            vec![Some("a"), Some("bb"), Some("bb")],
            vec![3, 3, 3]
        )),
        (each(&[("a", 3), ("bb", 3), ("bb", 3)]), 2)
    );
    // no usable lineage: one source
    assert_eq!(
        sources(&batch(vec![Some("t1"), None], vec![4, 4])),
        (each(&[("", 4), ("", 4)]), 1)
    );
    let none =
        RecordBatch::try_from_iter([("price", Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef)])
            .unwrap();
    assert_eq!(sources(&none), (each(&[("", 0), ("", 0)]), 1));
}

/// `finlake dq` reads a table's few-valued strings as dictionaries: the ISIN and currency
/// checks, the sessions, the key and payload hashes and the source runs then work on the
/// dictionary. Every verdict, flag and count must be the one the same rows get as plain
/// strings, micro-batch by micro-batch.
#[test]
fn dictionary_encoded_strings_get_the_verdicts_plain_strings_get() {
    use arrow::datatypes::{DataType, Field, Schema};
    let day = &faulty_day().batch;
    let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let encoded = ["exchange", "symbol", "currency", "side", "isin", "_topic"];
    let schema = Arc::new(Schema::new(
        day.schema()
            .fields()
            .iter()
            .map(|f| match encoded.contains(&f.name().as_str()) {
                true => Field::new(f.name(), dictionary.clone(), f.is_nullable()),
                false => f.as_ref().clone(),
            })
            .collect::<Vec<_>>(),
    ));
    let columns = schema
        .fields()
        .iter()
        .zip(day.columns())
        .map(|(f, c)| arrow::compute::cast(c, f.data_type()).unwrap())
        .collect();
    let as_dictionaries = RecordBatch::try_new(schema, columns).unwrap();
    assert_eq!(
        as_dictionaries.column_by_name("isin").unwrap().data_type(),
        &dictionary
    );
    let cuts = [250, 1000, 1001, 2400];
    let plain = run(day, &cuts);
    let s = &plain.stats;
    assert!(
        s.quarantined > 0 && s.flagged > 0 && s.dedup.duplicate_rows > 0 && s.dedup.late > 0,
        "the day exercises every verdict: {s:?}"
    );
    assert!(["isin-valid", "trading-hours-check"]
        .iter()
        .all(|r| s.rules.get(*r).is_some_and(|r| r.failed > 0)));
    assert_eq!(run(&as_dictionaries, &cuts), plain);
}

/// A dedup rule on `trade_id` alone, late rows flagged, no limit on clock skew.
fn trade_id_rule(window: i64) -> finlake_quality::rules::DedupRule {
    finlake_quality::rules::DedupRule {
        name: "dedup".into(),
        keys: vec!["trade_id".into()],
        window_micros: window,
        on_late: finlake_quality::rules::LateAction::Flag,
        max_skew_micros: i64::MAX / 4,
        pos: Default::default(),
    }
}

/// A small deterministic generator (xorshift).
fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// Rows of one topic: `trade_id`, `timestamp`, the `payload` columns, then the lineage
/// (`_partition` as given, `_offset` the row's index).
fn topic_rows(
    ids: Vec<String>,
    times: &[i64],
    payload: Vec<(&str, arrow::array::ArrayRef)>,
    parts: &[i32],
) -> RecordBatch {
    use arrow::array::{ArrayRef, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray};
    let rows = ids.len();
    let mut columns: Vec<(&str, ArrayRef)> = vec![
        ("trade_id", Arc::new(StringArray::from(ids))),
        (
            "timestamp",
            Arc::new(TimestampMicrosecondArray::from(times.to_vec())),
        ),
    ];
    columns.extend(payload);
    columns.extend([
        (
            "_topic",
            Arc::new(StringArray::from(vec!["t"; rows])) as ArrayRef,
        ),
        ("_partition", Arc::new(Int32Array::from(parts.to_vec()))),
        (
            "_offset",
            Arc::new(Int64Array::from_iter_values(0..rows as i64)),
        ),
    ]);
    RecordBatch::try_from_iter(columns).unwrap()
}

/// The watermark as the module docs define it, computed naively beside the deduplicator: the
/// least of the source partitions' newest event times so far, minus the window; a row older
/// than that is late. Forty partitions take turns one row at a time (each turn moves the
/// minimum), at their own pace, with rows out of order within a partition; the verdicts must
/// match row for row, across batches.
#[test]
fn late_verdicts_match_the_watermark_computed_naively() {
    use finlake_quality::dedup::{Deduplicator, Verdict};
    let window = 1_000_000i64;
    let rule = trade_id_rule(window);
    let (partitions, rows) = (40usize, 40_000usize);
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
    let mut clock = vec![0i64; partitions];
    let (mut ids, mut times, mut parts) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..rows {
        let p = i % partitions;
        // each partition at its own pace; now and then a row well behind its partition
        clock[p] += 1 + (next() % (200 * (p as u64 % 5 + 1))) as i64;
        let t = match next() % 50 {
            0 => clock[p] - (next() % (3 * window as u64)) as i64,
            _ => clock[p],
        };
        ids.push(format!("T{i}"));
        times.push(t);
        parts.push(p as i32);
    }
    let batch = topic_rows(ids, &times, Vec::new(), &parts);
    let mut newest: Vec<Option<i64>> = vec![None; partitions];
    let mut expected = Vec::new();
    for row in 0..rows {
        let p = parts[row] as usize;
        newest[p] = Some(newest[p].map_or(times[row], |n| n.max(times[row])));
        let least = newest.iter().flatten().min().copied();
        if let Some(w) = least.map(|m| m - window).filter(|&w| times[row] < w) {
            expected.push((row as u32, Verdict::Late { watermark: w }));
        }
    }
    assert!(
        expected.len() > 100,
        "the day has late rows: {}",
        expected.len()
    );
    let mut dedup = Deduplicator::new(rule);
    let mut got = Vec::new();
    for start in (0..rows).step_by(997) {
        let len = 997.min(rows - start);
        let out = dedup.process(&batch.slice(start, len)).unwrap();
        got.extend(out.into_iter().map(|(r, v)| (r + start as u32, v)));
    }
    assert_eq!(got, expected);
}

/// Repeats judged against a naive model that keeps every key's version forever: keys come back
/// within the window and beyond it, exactly (a duplicate) or changed (a conflict), over
/// enough keys that the state rotates its generations many times, so first versions are found
/// in the young generation, in the old one, and after moving from one to the other.
#[test]
fn repeat_verdicts_match_a_naive_model_across_rotations() {
    use arrow::array::Int64Array;
    use finlake_quality::dedup::{Deduplicator, Verdict};
    use std::collections::HashMap;
    let window = 20_000i64;
    let rule = trade_id_rule(window);
    let (partitions, rows) = (40usize, 120_000usize);
    let mut next = xorshift(0x2545_f491_4f6c_dd1d);
    let mut clock = vec![0i64; partitions];
    let (mut ids, mut times, mut prices, mut parts): (Vec<String>, Vec<i64>, Vec<i64>, Vec<i32>) =
        Default::default();
    for i in 0..rows {
        let p = i % partitions;
        // a window is about 8,000 rows
        clock[p] += 1 + (next() % 200) as i64;
        // most rows new; some a repeat of a row up to 12,000 rows back (within the window
        // or past it), the same or changed; now and then a row well behind its partition
        let back = (next() % 12_000) as usize;
        let (id, t, price) = match next() % 20 {
            0 if i > back => (ids[i - back].clone(), times[i - back], prices[i - back]),
            1 if i > back => (ids[i - back].clone(), clock[p], next() as i64 % 1000),
            2 => (
                format!("T{i}"),
                clock[p] - (next() % (3 * window as u64)) as i64,
                1,
            ),
            _ => (format!("T{i}"), clock[p], next() as i64 % 1000),
        };
        ids.push(id);
        times.push(t);
        prices.push(price);
        parts.push(p as i32);
    }
    let batch = topic_rows(
        ids.clone(),
        &times,
        vec![("price", Arc::new(Int64Array::from(prices.clone())))],
        &parts,
    );
    // the model: every key's version (event time, price, partition, offset, repeated) kept
    let mut newest: Vec<Option<i64>> = vec![None; partitions];
    let mut version: HashMap<&str, (i64, i64, i32, i64, bool)> = HashMap::new();
    let (mut expected, mut duplicate_keys, mut far) = (Vec::new(), 0u64, 0usize);
    for row in 0..rows {
        let (p, t) = (parts[row] as usize, times[row]);
        newest[p] = Some(newest[p].map_or(t, |n| n.max(t)));
        let w = newest.iter().flatten().min().map(|m| m - window);
        if let Some(w) = w.filter(|&w| t < w) {
            expected.push((row as u32, Verdict::Late { watermark: w }));
            continue;
        }
        let live = version
            .get(ids[row].as_str())
            .filter(|v| w.is_none_or(|w| v.0 >= w) && (t - v.0).abs() <= window)
            .copied();
        match live {
            Some((first, price, partition, offset, repeated)) => {
                if !repeated {
                    duplicate_keys += 1;
                }
                if let Some(v) = version.get_mut(ids[row].as_str()) {
                    v.4 = true;
                }
                far += usize::from(row as i64 - offset > 4096);
                let (partition, offset) = (Some(partition), Some(offset));
                expected.push((
                    row as u32,
                    match price == prices[row] && first == t {
                        true => Verdict::Duplicate { partition, offset },
                        false => Verdict::Conflict {
                            partition,
                            offset,
                            event_time: first,
                        },
                    },
                ));
            }
            None => {
                version.insert(&ids[row], (t, prices[row], p as i32, row as i64, false));
            }
        }
    }
    let count = |f: fn(&Verdict) -> bool| expected.iter().filter(|(_, v)| f(v)).count();
    let duplicates = count(|v| matches!(v, Verdict::Duplicate { .. }));
    let conflicts = count(|v| matches!(v, Verdict::Conflict { .. }));
    let late = count(|v| matches!(v, Verdict::Late { .. }));
    assert!(
        duplicates > 500 && conflicts > 500 && late > 500,
        "the day exercises every verdict: {duplicates} duplicates, {conflicts} conflicts, \
         {late} late"
    );
    // repeats whose first version came more keys earlier than the state holds before its
    // first rotation (4,096)
    assert!(far > 500, "repeats across rotations: {far}");
    let mut dedup = Deduplicator::new(rule);
    let (mut got, mut peak) = (Vec::new(), 0);
    for start in (0..rows).step_by(997) {
        let len = 997.min(rows - start);
        let out = dedup.process(&batch.slice(start, len)).unwrap();
        got.extend(out.into_iter().map(|(r, v)| (r + start as u32, v)));
        peak = peak.max(dedup.state_entries());
    }
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(g, e, "row {}", e.0);
    }
    assert_eq!(dedup.stats().duplicate_keys, duplicate_keys);
    assert!(
        peak < rows / 4,
        "the state rotated: at most {peak} keys held"
    );
}
