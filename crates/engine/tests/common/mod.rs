//! Running jobs for the comparisons with the reference model, and the random inputs.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clickpulse_engine::testing::{TEST_BATCH_INTERVAL, collect_event_time_with};
use clickpulse_engine::{DStream, Data, EventTime, QueueSource, RunMode, StreamingContext};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde::{Deserialize, Serialize};

/// Every comparison runs the engine with each of these worker counts.
pub const WORKERS: [usize; 3] = [1, 2, 4];

/// Keys are drawn from this small alphabet so that they collide.
pub const KEYS: [char; 5] = ['a', 'b', 'c', 'd', 'e'];

/// A processing-time record: a key and a small value.
pub type Rec = (char, i32);

/// An event: key, event time (ms), a value.
pub type Ev = (char, u64, u32);

/// An event-time operator's results and late events, merged into one stream so one run checks
/// both.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Out<R, L> {
    /// A result row.
    Result(R),
    /// A late event.
    Late(L),
}

/// Like `testing::collect`, over a queue source with one queue of batches per partition and no
/// event time, and strict: every batch of the run must reach the output exactly once.
pub fn collect_partitioned<T, O, F>(
    workers: usize,
    partitions: Vec<Vec<Vec<T>>>,
    build: F,
) -> clickpulse_engine::Result<Vec<Vec<O>>>
where
    T: Data,
    O: Data + Ord,
    F: for<'s> Fn(DStream<'s, T>) -> DStream<'s, O> + Send + Sync + 'static,
{
    let source = QueueSource::partitioned("test", partitions);
    let seen: Arc<Mutex<BTreeMap<u64, Vec<O>>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let summary = StreamingContext::new(TEST_BATCH_INTERVAL)?
        .workers(workers)?
        .mode(RunMode::UntilEnd)
        .run(move |job| {
            let sink = Arc::clone(&sink);
            build(job.source(&source)?).foreach_batch(move |info, mut rows| {
                rows.sort();
                let again = sink
                    .lock()
                    .expect("a panicking thread poisoned the lock")
                    .insert(info.batch, rows);
                assert!(again.is_none(), "batch {} was output twice", info.batch);
            });
            Ok(())
        })?;
    let seen = std::mem::take(&mut *seen.lock().expect("a panicking thread poisoned the lock"));
    let batches: Vec<u64> = seen.keys().copied().collect();
    assert_eq!(batches, (0..summary.batches).collect::<Vec<_>>());
    Ok(seen.into_values().collect())
}

/// Asserts that the engine with 1, 2 and 4 workers gives `expected` for `partitions`.
pub fn engine_matches<T, O, F>(
    partitions: &[Vec<Vec<T>>],
    expected: &[Vec<O>],
    build: F,
) -> Result<(), TestCaseError>
where
    T: Data,
    O: Data + Ord + std::fmt::Debug,
    F: for<'s> Fn(DStream<'s, T>) -> DStream<'s, O> + Clone + Send + Sync + 'static,
{
    for workers in WORKERS {
        let got = collect_partitioned(workers, partitions.to_vec(), build.clone())
            .map_err(|e| TestCaseError::fail(format!("{workers} workers: {e}")))?;
        prop_assert_eq!(&got[..], expected, "{} workers", workers);
    }
    Ok(())
}

/// Asserts that the engine with 1, 2 and 4 workers gives `expected` for event-time `partitions`
/// read with allowed lateness `lateness_ms` (idle timeout 1 h, so only the data moves time).
pub fn event_time_matches<O, F>(
    partitions: &[Vec<Vec<Ev>>],
    lateness_ms: u64,
    expected: &[Vec<O>],
    build: F,
) -> Result<(), TestCaseError>
where
    O: Data + Ord + std::fmt::Debug,
    F: for<'s> Fn(DStream<'s, Ev>) -> DStream<'s, O> + Clone + Send + Sync + 'static,
{
    for workers in WORKERS {
        let event_time = EventTime::new(|e: &Ev| e.1)
            .allowed_lateness(Duration::from_millis(lateness_ms))
            .idle_timeout(Duration::from_secs(3600));
        let got = collect_event_time_with(workers, partitions.to_vec(), event_time, build.clone())
            .map_err(|e| TestCaseError::fail(format!("{workers} workers: {e}")))?;
        prop_assert_eq!(&got[..], expected, "{} workers", workers);
    }
    Ok(())
}

/// A record with a key from [`KEYS`] and a value in 1..=9.
pub fn rec() -> impl Strategy<Value = Rec> {
    (prop::sample::select(KEYS.to_vec()), 1..=9i32)
}

/// 1 to 6 batches of up to 30 records: one partition.
pub fn batches() -> impl Strategy<Value = Vec<Vec<Rec>>> {
    prop::collection::vec(prop::collection::vec(rec(), 0..=30), 1..=6)
}

/// 1 to 3 partitions of 0 to 6 batches of up to 30 records.
pub fn partitions() -> impl Strategy<Value = Vec<Vec<Vec<Rec>>>> {
    prop::collection::vec(
        prop::collection::vec(prop::collection::vec(rec(), 0..=30), 0..=6),
        1..=3,
    )
}

/// 1 to 3 partitions of 0 to 6 batches of up to 30 events. Event time runs about a second per
/// batch with a spread of -5 s ..= +3 s around it, so events arrive out of order, partitions
/// disagree, and many are late.
pub fn event_partitions() -> impl Strategy<Value = Vec<Vec<Vec<Ev>>>> {
    let raw = (
        prop::sample::select(KEYS[..4].to_vec()),
        -5_000i64..=3_000,
        0..100u32,
    );
    prop::collection::vec(
        prop::collection::vec(prop::collection::vec(raw, 0..=30), 0..=6),
        1..=3,
    )
    .prop_map(|parts| {
        parts
            .into_iter()
            .map(|batches| {
                batches
                    .into_iter()
                    .enumerate()
                    .map(|(b, evs)| {
                        evs.into_iter()
                            .map(|(k, spread, v)| {
                                let ts = (b as i64 * 1_000 + 2_000 + spread).max(0) as u64;
                                (k, ts, v)
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect()
    })
}

/// Allowed lateness in ms: none, less than a batch's worth, more than one.
pub fn lateness() -> impl Strategy<Value = u64> {
    prop::sample::select(vec![0u64, 300, 1_000, 2_500])
}
