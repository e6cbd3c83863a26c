//! Engine throughput: events/s of the core operators over synthetic Zipf-distributed urls and
//! visitors held in memory, with 1 and 2 workers.
//!
//! `cargo bench -p clickpulse-engine --bench operators`
//!
//! Each iteration runs a whole bounded job (until the in-memory input ends) over `EVENTS`
//! events split into 2 partitions, cut into batches of `CHUNK` events per partition.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clickpulse_engine::{DStream, QueueSource, RunMode, StreamingContext};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Zipf};

const EVENTS: usize = 4_000_000;
const PARTITIONS: usize = 2;
const CHUNK: usize = 50_000;
const URLS: f64 = 10_000.0;

type Click = (u64, u64); // (url id, visitor id)

/// `EVENTS` clicks, Zipf(1.1) over `URLS` urls and uniform over `visitors` visitors, cut into
/// per-partition batches.
fn clicks(visitors: u64) -> Vec<Vec<Vec<Click>>> {
    let mut rng = SmallRng::seed_from_u64(7);
    let zipf = Zipf::new(URLS, 1.1).expect("valid zipf");
    let per_part = EVENTS / PARTITIONS;
    (0..PARTITIONS)
        .map(|_| {
            let all: Vec<Click> = (0..per_part)
                .map(|_| (zipf.sample(&mut rng) as u64, rng.random_range(0..visitors)))
                .collect();
            all.chunks(CHUNK).map(<[Click]>::to_vec).collect()
        })
        .collect()
}

/// Runs `build` over `data` with `workers` workers; the job's output is counted, not kept.
fn run<O, F>(workers: usize, data: Vec<Vec<Vec<Click>>>, build: F) -> u64
where
    O: clickpulse_engine::Data,
    F: for<'s> Fn(DStream<'s, Click>) -> DStream<'s, O> + Send + Sync + 'static,
{
    let source = QueueSource::partitioned("bench", data);
    let rows = Arc::new(AtomicU64::new(0));
    let sink = Arc::clone(&rows);
    StreamingContext::new(Duration::from_secs(1))
        .and_then(|c| c.workers(workers))
        .map(|c| c.mode(RunMode::UntilEnd))
        .and_then(|c| {
            c.run(move |job| {
                let sink = Arc::clone(&sink);
                build(job.source(&source)?)
                    .count()
                    .foreach_batch(move |_, n| {
                        sink.fetch_add(n.iter().sum::<u64>(), Ordering::Relaxed);
                    });
                Ok(())
            })
        })
        .expect("bench job runs");
    rows.load(Ordering::Relaxed)
}

fn bench_operator<O, F>(c: &mut Criterion, name: &str, visitors: u64, build: F)
where
    O: clickpulse_engine::Data,
    F: for<'s> Fn(DStream<'s, Click>) -> DStream<'s, O> + Send + Sync + Clone + 'static,
{
    let data = clicks(visitors);
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(EVENTS as u64));
    for workers in [1, 2] {
        group.bench_function(format!("{workers}_workers"), |b| {
            b.iter_batched(
                || data.clone(),
                |d| black_box(run(workers, d, build.clone())),
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

fn operators(c: &mut Criterion) {
    let w30 = Duration::from_secs(30);
    let s5 = Duration::from_secs(5);
    bench_operator(c, "count_by_value", 100_000, |s| {
        s.map(|(url, _)| url).count_by_value()
    });
    bench_operator(c, "count_by_value_and_window_inv", 100_000, move |s| {
        s.map(|(url, _)| url)
            .count_by_value_and_window(w30, s5)
            .expect("valid window")
    });
    bench_operator(c, "count_by_value_and_window_plain", 100_000, move |s| {
        s.map(|(url, _)| url)
            .count_by_value_and_window_plain(w30, s5)
            .expect("valid window")
    });
    bench_operator(c, "top_n", 100_000, |s| {
        s.map(|(url, _)| url).count_by_value().top_n(10, |r| r.1)
    });
    bench_operator(c, "update_state_by_key_1M_keys", 1_000_000, |s| {
        s.map(|(url, visitor)| (visitor, url)).update_state_by_key(
            |vals: Vec<u64>, old: Option<u64>| Some(old.unwrap_or(0) + vals.len() as u64),
        )
    });
}

criterion_group!(benches, operators);
criterion_main!(benches);
