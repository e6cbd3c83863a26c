//! Result rows, one core: writing them as JSON text (serde_json against [`JsonRow::object`]), and
//! passing them between processes as timely does (bincode).
//!
//! Run: `cargo bench -p clickpulse-events --bench row -- --quick`.
//! - `rows`: each benchmark writes 100,000 `page_views`-shaped rows (two window bounds, a url, a
//!   count); throughput is in rows/s.
//! - `exchange`: each benchmark serialises a batch of 1,000 such rows and deserialises it again,
//!   as a [`JsonRows`] and as a `Vec<JsonRow>`, through bincode (timely's encoding for records
//!   that cross processes) and, for comparison, through serde_json (the rows as JSON values,
//!   checked on both sides); throughput is in rows/s. The encoded bytes per row are printed once.

use std::hint::black_box;

use clickpulse_events::{JsonRow, JsonRows};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::Serialize;

const ROWS: usize = 100_000;

#[derive(Serialize)]
struct PageView<'a> {
    window_start_ms: u64,
    window_end_ms: u64,
    url: &'a str,
    count: u64,
}

fn rows(c: &mut Criterion) {
    let urls: Vec<String> = (0..17).map(|i| format!("/category/{i}")).collect();
    let views: Vec<PageView<'_>> = (0..ROWS)
        .map(|i| PageView {
            window_start_ms: 1_000_000_000_000 + i as u64 * 1_000,
            window_end_ms: 1_000_000_001_000 + i as u64 * 1_000,
            url: &urls[i % urls.len()],
            count: (i % 40) as u64 + 1,
        })
        .collect();
    let mut group = c.benchmark_group("rows");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("serde_json", |b| {
        b.iter(|| {
            let rows: Vec<JsonRow> = views
                .iter()
                .map(|v| JsonRow::new(v).expect("row"))
                .collect();
            black_box(rows)
        })
    });
    group.bench_function("object", |b| {
        b.iter(|| {
            let rows: Vec<JsonRow> = views
                .iter()
                .map(|v| {
                    JsonRow::object(|o| {
                        o.u64("window_start_ms", v.window_start_ms)
                            .u64("window_end_ms", v.window_end_ms)
                            .str("url", v.url)
                            .u64("count", v.count);
                    })
                })
                .collect();
            black_box(rows)
        })
    });
    group.finish();
}

/// Rows in the batch the `exchange` group passes between processes.
const EXCHANGED_ROWS: usize = 1_000;

fn exchange(c: &mut Criterion) {
    let mut batch = JsonRows::new();
    for i in 0..EXCHANGED_ROWS as u64 {
        let start = 1_700_000_000_000 + (i / 100) * 10_000;
        batch.object(|o| {
            o.u64("window_start_ms", start)
                .u64("window_end_ms", start + 10_000)
                .str(
                    "url",
                    &format!("/news/{}/story-{}", i % 23, i * 7919 % 1000),
                )
                .u64("count", i * 37 % 500 + 1);
        });
    }
    let rows = batch.to_rows();
    let per_row = |bytes: usize| bytes as f64 / EXCHANGED_ROWS as f64;
    let encoded_rows = bincode::serialize(&batch).expect("bincode");
    let encoded_vec = bincode::serialize(&rows).expect("bincode");
    eprintln!(
        "exchange: {EXCHANGED_ROWS} rows, {:.1} bytes of JSON text per row; encoded per row: \
         bincode JsonRows {:.1}, bincode Vec<JsonRow> {:.1}, serde_json JsonRows {:.1}",
        per_row(batch.text_len()),
        per_row(encoded_rows.len()),
        per_row(encoded_vec.len()),
        per_row(serde_json::to_vec(&batch).expect("JSON").len()),
    );
    assert_eq!(
        bincode::deserialize::<JsonRows>(&encoded_rows).expect("rows"),
        batch
    );
    assert_eq!(
        bincode::deserialize::<Vec<JsonRow>>(&encoded_vec).expect("rows"),
        rows
    );

    let mut group = c.benchmark_group("exchange");
    group.throughput(Throughput::Elements(EXCHANGED_ROWS as u64));
    group.bench_function("bincode_json_rows", |b| {
        b.iter(|| {
            let bytes = bincode::serialize(black_box(&batch)).expect("bincode");
            let back: JsonRows = bincode::deserialize(&bytes).expect("rows");
            black_box(back)
        })
    });
    group.bench_function("bincode_vec_json_row", |b| {
        b.iter(|| {
            let bytes = bincode::serialize(black_box(&rows)).expect("bincode");
            let back: Vec<JsonRow> = bincode::deserialize(&bytes).expect("rows");
            black_box(back)
        })
    });
    // What the rows cost through `RawValue` before: serde_json, the only format it works with.
    group.bench_function("serde_json_json_rows", |b| {
        b.iter(|| {
            let bytes = serde_json::to_vec(black_box(&batch)).expect("JSON");
            let back: JsonRows = serde_json::from_slice(&bytes).expect("rows");
            black_box(back)
        })
    });
    group.bench_function("serde_json_vec_json_row", |b| {
        b.iter(|| {
            let bytes = serde_json::to_vec(black_box(&rows)).expect("JSON");
            let back: Vec<JsonRow> = serde_json::from_slice(&bytes).expect("rows");
            black_box(back)
        })
    });
    group.finish();
}

criterion_group!(benches, rows, exchange);
criterion_main!(benches);
