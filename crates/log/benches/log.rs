//! Append and read throughput of the embedded log, in events/s and MB/s of encoded batches.
//!
//! Events are 40-byte values with an empty key (56 bytes encoded, plus 40 bytes of header per
//! batch). With 4 partitions, 4 threads work at once, one per partition; `1p-4threads` is four
//! threads appending to one partition (group commit: concurrent appends share an fsync).
//!
//! ```text
//! cargo bench -p clickpulse-log --bench log
//! cargo bench -p clickpulse-log --bench log -- append/every_batch   # a subset
//! ```

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use clickpulse_log::{Batch, Durability, Log, LogOptions, Retention, Topic};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const VALUE_LEN: usize = 40;
/// Bytes kept per partition while appending; older segments are deleted between samples.
const KEEP_BYTES: u64 = 256 << 20;

/// A batch of `n` events with 40-byte JSON-ish values.
fn batch(n: usize) -> Batch {
    let mut batch = Batch::with_capacity(n * (16 + VALUE_LEN));
    for i in 0..n {
        let value = format!(
            "{{\"v\":\"v{:06}\",\"u\":\"/p/{:05}\",\"x\":1}}",
            i % 250_000,
            i % 17
        );
        let value = format!("{value:<width$}", width = VALUE_LEN);
        batch
            .push(938_476_800_000 + i as i64, b"", value.as_bytes())
            .expect("push");
    }
    batch
}

fn open(dir: &Path, durability: Durability, partitions: u32) -> Topic {
    let options = LogOptions::default()
        .durability(durability)
        .retention(Retention::forever().max_bytes(KEEP_BYTES));
    let log = Log::open(dir, options).expect("open");
    log.create_topic("bench", partitions).expect("topic")
}

/// Runs `work(thread)` on `threads` threads at once and returns the wall time.
fn on_threads(threads: u32, work: impl Fn(u32) + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let work = &work;
            scope.spawn(move || work(t));
        }
    });
    start.elapsed()
}

/// One append benchmark: `threads` threads append to `partitions` partitions (thread `t` to
/// partition `t % partitions`).
struct AppendCase {
    name: &'static str,
    durability: Durability,
    batch_len: usize,
    partitions: u32,
    threads: u32,
}

fn append(c: &mut Criterion) {
    let every_batch = Durability::EveryBatch;
    let interval = Durability::Interval(Duration::from_millis(100));
    // The replay's default: a group commit every 8 MiB across partitions or 100 ms.
    let group_commit = Durability::Group {
        interval: Duration::from_millis(100),
        bytes: 8 << 20,
    };
    let mut cases = Vec::new();
    for partitions in [1, 4] {
        for (name, durability) in [
            ("none", Durability::None),
            ("interval_100ms", interval),
            ("group_8MiB_100ms", group_commit),
        ] {
            cases.push(AppendCase {
                name,
                durability,
                batch_len: 1_000,
                partitions,
                threads: partitions,
            });
        }
        for batch_len in [1_000, 10_000] {
            cases.push(AppendCase {
                name: "every_batch",
                durability: every_batch,
                batch_len,
                partitions,
                threads: partitions,
            });
        }
    }
    // Group commit: four threads share one partition and its fsyncs.
    cases.push(AppendCase {
        name: "every_batch",
        durability: every_batch,
        batch_len: 1_000,
        partitions: 1,
        threads: 4,
    });
    let mut group = c.benchmark_group("append");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for case in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let topic = open(dir.path(), case.durability, case.partitions);
        let batch = batch(case.batch_len);
        let threads = u64::from(case.threads);
        group.throughput(Throughput::ElementsAndBytes {
            elements: case.batch_len as u64 * threads,
            bytes: (batch.encoded_len() + 40) as u64 * threads,
        });
        let id = format!(
            "{}/{}p{}/batch{}",
            case.name,
            case.partitions,
            if case.threads == case.partitions {
                String::new()
            } else {
                format!("-{}threads", case.threads)
            },
            case.batch_len
        );
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                topic.enforce_retention().expect("retention"); // outside the timing
                on_threads(case.threads, |t| {
                    for _ in 0..iters {
                        topic.append(t % case.partitions, &batch).expect("append");
                    }
                })
            });
        });
    }
    group.finish();
}

fn read(c: &mut Criterion) {
    const PER_PARTITION: u64 = 2_000_000;
    const PER_READ: usize = 10_000;
    let mut group = c.benchmark_group("read");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for partitions in [1u32, 4] {
        let dir = tempfile::tempdir().expect("tempdir");
        let topic = open(dir.path(), Durability::None, partitions);
        let fill = batch(10_000);
        for p in 0..partitions {
            for _ in 0..PER_PARTITION / 10_000 {
                topic.append(p, &fill).expect("fill");
            }
        }
        let bytes_per_event = (fill.encoded_len() + 40) as u64 / 10_000;
        group.throughput(Throughput::ElementsAndBytes {
            elements: PER_READ as u64 * u64::from(partitions),
            bytes: bytes_per_event * PER_READ as u64 * u64::from(partitions),
        });
        group.bench_function(format!("{partitions}p/poll{PER_READ}"), |b| {
            b.iter_custom(|iters| {
                on_threads(partitions, |p| {
                    let mut reader = topic.reader(p, 0).expect("reader");
                    for _ in 0..iters {
                        read_events(&mut reader, PER_READ, PER_PARTITION);
                    }
                })
            });
        });
    }
    group.finish();
}

/// Reads exactly `n` events, touching every value, wrapping to offset 0 at `end`.
fn read_events(reader: &mut clickpulse_log::Reader, n: usize, end: u64) {
    let mut left = n;
    let mut checksum = 0usize;
    while left > 0 {
        if reader.position() >= end {
            reader.seek(0);
        }
        let records = reader.poll(left).expect("poll");
        for record in &records {
            checksum = checksum.wrapping_add(record.value.len() + record.timestamp as usize);
        }
        left -= records.len();
    }
    black_box(checksum);
}

criterion_group!(benches, append, read);
criterion_main!(benches);
