//! Writing result rows as JSON text, one core: serde_json against [`JsonRow::object`].
//!
//! Run: `cargo bench -p clickpulse-events --bench row -- --quick`.
//! Each benchmark writes 100,000 `page_views`-shaped rows (two window bounds, a url, a count);
//! throughput is in rows/s.

use std::hint::black_box;

use clickpulse_events::JsonRow;
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

criterion_group!(benches, rows);
criterion_main!(benches);
