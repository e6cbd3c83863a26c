//! Throughput of the input parsers and of the binary record codec, one core.
//!
//! Run: `cargo bench -p clickpulse-events --bench parse -- --quick`.
//! Each text benchmark parses 100,000 lines held in memory with `parse_slice` (or a
//! `LineParser` over a byte slice), so the figures exclude I/O; throughput is in lines/s
//! (events/s for the binary codec).

use std::hint::black_box;

use clickpulse_events::{
    ClickEvent, LineFormat, LineParser, ParseOptions, binary, msnbc, parse_slice,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const LINES: usize = 100_000;

const CATEGORIES: [&str; 17] = [
    "frontpage",
    "news",
    "tech",
    "local",
    "opinion",
    "on-air",
    "misc",
    "weather",
    "msn-news",
    "health",
    "living",
    "business",
    "msn-sports",
    "sports",
    "summary",
    "bbs",
    "travel",
];

/// MSNBC-like events: the text every format below renders.
fn sample_events() -> Vec<ClickEvent> {
    (0..LINES)
        .map(|i| {
            ClickEvent::page_view(
                938_476_800_000 + i as u64 * 17,
                format!("v{}", i * 7919 % 250_000),
                format!("/{}", CATEGORIES[i % CATEGORIES.len()]),
            )
        })
        .collect()
}

fn render(events: &[ClickEvent], line: impl Fn(&ClickEvent) -> String) -> Vec<u8> {
    events.iter().flat_map(|e| line(e).into_bytes()).collect()
}

/// Parses every line and checks that none failed, so the benchmark cannot measure errors.
fn parse_all(data: &[u8], format: LineFormat, options: ParseOptions) -> usize {
    let mut ok = 0;
    for result in parse_slice(data, format, options) {
        ok += usize::from(black_box(result).is_ok());
    }
    assert_eq!(ok, LINES);
    ok
}

fn text_formats(c: &mut Criterion) {
    let events = sample_events();
    let inputs = [
        (
            "tsv_ts_visitor_url",
            LineFormat::Tsv,
            render(&events, |e| {
                format!("{}\t{}\t{}\n", e.ts_ms, e.visitor_id, e.url)
            }),
        ),
        (
            "tsv_visitor_url",
            LineFormat::Tsv,
            render(&events, |e| format!("{}\t{}\n", e.visitor_id, e.url)),
        ),
        (
            "csv",
            LineFormat::Csv,
            render(&events, |e| {
                let ip = format!("10.{}.{}.1", e.ts_ms % 256, e.visitor_id.len());
                format!("{ip},{},{},{ip}\n", e.ts_ms, e.url)
            }),
        ),
        (
            "ndjson",
            LineFormat::Ndjson,
            render(&events, |e| {
                serde_json::to_string(e)
                    .map(|s| s + "\n")
                    .unwrap_or_default()
            }),
        ),
    ];
    let options = ParseOptions::default().with_default_ts_ms(938_476_800_000);
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(LINES as u64));
    for (name, format, data) in &inputs {
        group.bench_function(*name, |b| b.iter(|| parse_all(data, *format, options)));
    }
    let tsv = &inputs[0].2;
    group.bench_function("tsv_ts_visitor_url_line_parser", |b| {
        b.iter(|| {
            let parser = LineParser::new(&tsv[..], LineFormat::Tsv);
            let ok = parser.filter(|r| black_box(r).is_ok()).count();
            assert_eq!(ok, LINES);
        })
    });
    group.finish();
}

fn binary_codec(c: &mut Criterion) {
    let events = sample_events();
    let records: Vec<Vec<u8>> = events
        .iter()
        .map(|e| {
            let mut buf = Vec::new();
            binary::encode(e, &mut buf);
            buf
        })
        .collect();
    let mut group = c.benchmark_group("binary");
    group.throughput(Throughput::Elements(LINES as u64));
    group.bench_function("decode", |b| {
        b.iter(|| {
            for record in &records {
                let _ = black_box(binary::decode(black_box(record)));
            }
        })
    });
    let mut buf = Vec::with_capacity(64 * LINES);
    group.bench_function("encode", |b| {
        b.iter(|| {
            buf.clear();
            for event in &events {
                binary::encode(black_box(event), &mut buf);
            }
            black_box(buf.len())
        })
    });
    group.finish();
}

fn msnbc_load(c: &mut Criterion) {
    let path = msnbc::default_msnbc_path();
    if !path.exists() {
        eprintln!("skipping msnbc benchmarks: {} not found", path.display());
        return;
    }
    let mut group = c.benchmark_group("msnbc");
    group.sample_size(10);
    group.throughput(Throughput::Elements(msnbc::EVENTS as u64));
    group.bench_function("load_and_sort", |b| {
        b.iter(|| msnbc::load(&path).map(|s| s.len()).unwrap_or_default())
    });
    if let Ok(stream) = msnbc::load(&path) {
        group.bench_function("materialise_events", |b| {
            b.iter(|| stream.iter().map(|e| black_box(e).url.len()).sum::<usize>())
        });
    }
    group.finish();
}

criterion_group!(benches, text_formats, binary_codec, msnbc_load);
criterion_main!(benches);
