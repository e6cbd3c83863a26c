//! Records crossing a process boundary, per record: what a cluster run pays for each record an
//! exchange sends to a worker in another process (records exchanged within a process are moved,
//! not encoded).
//!
//! Run: `cargo bench -p clickpulse-job --bench exchange -- --warm-up-time 1 --measurement-time 3`.
//!
//! timely 0.31 sends a batch of records to another process as bincode 1.3: it sizes the batch
//! (`bincode::serialized_size`), writes it into the connection's buffer
//! (`bincode::serialize_into`), and the receiver deserialises a `Vec<T>` from the bytes. Each
//! benchmark does the same to a batch of 1,000 records, writing into a reused `Vec<u8>`;
//! throughput is in records/s (ns per record = 1 / throughput). The encoded bytes per record are
//! printed once.
//!
//! The records are made from the first events of the MSNBC data set (`data/msnbc990928.seq.gz`,
//! read in canonical order with `msnbc::scan`), each projected with `Click::of` as the job does.
//! The benchmarks are skipped when the file is missing. The record types are those the standard
//! job (`crates/job/src/standard.rs`) sends between workers, with the default settings:
//! - `visit`: `(visitor, (ts_ms, url))`, every click, as `sessions` exchanges them by visitor
//!   (`session_by_key` does not pre-aggregate).
//! - `page_view_partial`: `(url, pane start, count)`, one worker's page views per url and
//!   1-second pane, as `page_views` exchanges them by (url, pane) after pre-aggregating.
//! - `active_visitor`: `(visitor, window start)`, one worker's distinct visitors per 60-second
//!   window, as `active_visitors` (exact count) exchanges them by visitor.
//! - `page_views_run`: one worker's sorted run of `page_views` rows (their keys, their text as
//!   `JsonRows`, their bounds), as every stream hands its rows to the stream's output worker;
//!   per row.
//! - `click`: a whole `Click`, for comparison only: the job never exchanges clicks (each is
//!   projected and fanned out to the streams on the worker that read it).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::hint::black_box;
use std::time::Duration;

use clickpulse_engine::{Window, route};
use clickpulse_events::{JsonRows, msnbc};
use clickpulse_job::click::Click;
use clickpulse_job::config::StreamsConfig;
use clickpulse_job::hashed::HashedStr;
use clickpulse_job::rows::{PageViewRow, ToJson};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Records per exchanged batch.
const RECORDS: usize = 1_000;

/// Events read from the start of the data set: enough for `RECORDS` of every pre-aggregated type.
const EVENTS_READ: usize = 20_000;

/// A worker's run of rows as the standard job's `publish` exchanges it (the job's own type is
/// private): the same fields in the same order, so the same bincode encoding.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Run {
    keys: Vec<(Window, HashedStr)>,
    rows: JsonRows,
    bounds: Option<(u64, u64)>,
}

/// The first `EVENTS_READ` clicks of the data set, or `None` (said why) when it cannot be read.
fn first_clicks() -> Option<Vec<Click>> {
    let path = msnbc::default_msnbc_path();
    let file = match msnbc::scan(&path) {
        Ok(file) => file,
        Err(e) => {
            eprintln!("skipping exchange benchmarks: {}: {e}", path.display());
            return None;
        }
    };
    let clicks = file
        .clicks()
        .expect("MSNBC file opens again")
        .take(EVENTS_READ)
        .map(|c| c.map(|c| Click::of(file.event(&c))))
        .collect::<Result<Vec<Click>, _>>()
        .expect("MSNBC clicks read");
    Some(clicks)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Times `records` crossing as timely sends them, and prints their encoded size per record.
fn crossing<T>(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, records: &[T], n: usize)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let mut buf: Vec<u8> = Vec::new();
    bincode::serialize_into(&mut buf, records).expect("bincode");
    let back: Vec<T> = bincode::deserialize(&buf).expect("records");
    assert_eq!(back, records, "{name} round trip");
    eprintln!(
        "exchange/{name}: {n} records, {:.1} bytes per record",
        buf.len() as f64 / n as f64
    );
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function(name, |b| {
        b.iter(|| {
            let records = black_box(records);
            let len = bincode::serialized_size(records).expect("bincode");
            buf.clear();
            buf.reserve(usize::try_from(len).unwrap_or(0));
            bincode::serialize_into(&mut buf, records).expect("bincode");
            let back: Vec<T> = bincode::deserialize(black_box(&buf)).expect("records");
            back
        })
    });
}

fn exchange(c: &mut Criterion) {
    let Some(clicks) = first_clicks() else {
        return;
    };
    let streams = StreamsConfig::default();
    let pane_ms = ms(streams.page_views_window);
    let visitors_ms = ms(streams.active_visitors_window);

    let visits: Vec<(HashedStr, (u64, HashedStr))> = clicks
        .iter()
        .take(RECORDS)
        .map(|c| (c.visitor.clone(), (c.ts_ms, c.url.clone())))
        .collect();
    // Page views per (pane, url) and visitors per window, in key order, as one worker of one
    // process would pre-aggregate them over these events.
    let mut views: BTreeMap<(u64, HashedStr), u64> = BTreeMap::new();
    let mut seen: BTreeSet<(u64, HashedStr)> = BTreeSet::new();
    for c in &clicks {
        if c.page_view {
            *views
                .entry((c.ts_ms - c.ts_ms % pane_ms, c.url.clone()))
                .or_default() += 1;
        }
        seen.insert((c.ts_ms - c.ts_ms % visitors_ms, c.visitor.clone()));
    }
    let partials: Vec<(HashedStr, u64, u64)> = views
        .into_iter()
        .take(RECORDS)
        .map(|((pane, url), n)| (url, pane, n))
        .collect();
    let active: Vec<(HashedStr, u64)> = seen
        .into_iter()
        .take(RECORDS)
        .map(|(start, visitor)| (visitor, start))
        .collect();
    assert!(
        partials.len() == RECORDS && active.len() == RECORDS,
        "{EVENTS_READ} events give {} partials and {} visitors",
        partials.len(),
        active.len()
    );
    let mut run = Run {
        keys: Vec::with_capacity(RECORDS),
        rows: JsonRows::with_capacity(RECORDS, RECORDS * 80),
        bounds: None,
    };
    for (url, pane, count) in &partials {
        let w = Window {
            start_ms: *pane,
            end_ms: pane + pane_ms,
        };
        let row = PageViewRow {
            window_start_ms: w.start_ms,
            window_end_ms: w.end_ms,
            url: url.clone(),
            count: *count,
        };
        row.write_to(&mut run.rows);
        run.keys.push((w, url.clone()));
        let (s, e) = run.bounds.get_or_insert((w.start_ms, w.end_ms));
        (*s, *e) = ((*s).min(w.start_ms), (*e).max(w.end_ms));
    }
    let runs = vec![run];
    let click_batch: Vec<Click> = clicks.into_iter().take(RECORDS).collect();

    // The strings are sent without their hashes and hashed again as they are read: records still
    // route (and find their table entries) as before they crossed.
    let back: Vec<(HashedStr, (u64, HashedStr))> =
        bincode::deserialize(&bincode::serialize(&visits).expect("bincode")).expect("visits");
    assert!(
        back.iter()
            .zip(&visits)
            .all(|(a, b)| route(&a.0) == route(&b.0) && route(&a.1.1) == route(&b.1.1))
    );

    let mut group = c.benchmark_group("exchange");
    crossing(&mut group, "visit", &visits, RECORDS);
    crossing(&mut group, "page_view_partial", &partials, RECORDS);
    crossing(&mut group, "active_visitor", &active, RECORDS);
    crossing(&mut group, "page_views_run", &runs, RECORDS);
    crossing(&mut group, "click", &click_batch, RECORDS);
    group.finish();
}

criterion_group!(benches, exchange);
criterion_main!(benches);
