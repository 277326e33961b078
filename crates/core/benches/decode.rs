//! JSON and Avro decode into Arrow, clean and with 1% faults: 100,000 trades per iteration
//! in batches of 10,000 (the throughput configuration).
#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use finlake_core::decode::{AvroFraming, SourceDecoder};
use finlake_core::demo::{demo_date, embedded_refdata};
use finlake_core::generate::{generate, GenOptions, WireFormat};
use finlake_core::spec::SourceType;

const ROWS: usize = 100_000;
const BATCH: usize = 10_000;

fn feed(format: WireFormat, faults: f64) -> Vec<Vec<u8>> {
    let (symbols, calendar) = embedded_refdata().expect("embedded reference data");
    generate(
        &GenOptions {
            rows: ROWS,
            faults,
            seed: 1,
            format,
            date: demo_date(),
            source_type: SourceType::Trade,
        },
        &symbols,
        &calendar,
    )
    .messages
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.sample_size(10);
    let avro = SourceDecoder::avro(
        SourceType::Trade,
        &finlake_core::schema::avro_schema(SourceType::Trade),
        AvroFraming::Plain,
    )
    .expect("built-in schema");
    let json = SourceDecoder::json(SourceType::Trade);
    for (format, decoder, name) in [
        (WireFormat::Json, &json, "json"),
        (WireFormat::Avro, &avro, "avro"),
    ] {
        for faults in [0.0, 0.01] {
            let msgs = feed(format, faults);
            let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
            group.bench_with_input(
                BenchmarkId::new(name, format!("faults={faults}")),
                &refs,
                |b, refs| {
                    b.iter(|| {
                        let mut rows = 0;
                        for chunk in refs.chunks(BATCH) {
                            rows += decoder.decode(chunk).expect("decode").batch.num_rows();
                        }
                        rows
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
