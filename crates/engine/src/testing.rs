//! Helpers that run a small job over in-memory batches and collect what it emits per batch — for
//! examples, tests and reference-model comparisons.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::context::{RunMode, StreamingContext};
use crate::dstream::{DStream, Data};
use crate::error::Result;
use crate::source::{EventTime, QueueSource};

/// The batch interval the helpers use (1 s), so DStream window lengths can be written in seconds.
pub const TEST_BATCH_INTERVAL: Duration = Duration::from_secs(1);

type Collected<O> = Arc<Mutex<Vec<Vec<O>>>>;

/// Runs `build` over a one-partition queue source holding `batches` (batch `i` of the source is
/// engine batch `i`) on `workers` workers until the input ends, and returns every batch's output,
/// sorted within the batch.
///
/// # Errors
/// Whatever the engine returns (bad configuration, a failing source).
///
/// # Examples
/// ```
/// use clickpulse_engine::testing::collect;
/// let out = collect(2, vec![vec![1, 2], vec![]], |s| s.map(|x: i32| -x)).unwrap();
/// assert_eq!(out, vec![vec![-2, -1], vec![]]);
/// ```
pub fn collect<T, O, F>(workers: usize, batches: Vec<Vec<T>>, build: F) -> Result<Vec<Vec<O>>>
where
    T: Data,
    O: Data + Ord,
    F: for<'s> Fn(DStream<'s, T>) -> DStream<'s, O> + Send + Sync + 'static,
{
    let source = QueueSource::from_batches("test", batches);
    run(workers, move |job| Ok(build(job.source(&source)?)))
}

/// Like [`collect`], over a queue source with one queue of batches per partition and event time
/// read by `ts` (allowed lateness 0, idle timeout 1 h so that only the data decides).
///
/// # Errors
/// Whatever the engine returns.
pub fn collect_event_time<T, O, F>(
    workers: usize,
    partitions: Vec<Vec<Vec<T>>>,
    ts: impl Fn(&T) -> u64 + Send + Sync + Clone + 'static,
    build: F,
) -> Result<Vec<Vec<O>>>
where
    T: Data,
    O: Data + Ord,
    F: for<'s> Fn(DStream<'s, T>) -> DStream<'s, O> + Send + Sync + 'static,
{
    collect_event_time_with(
        workers,
        partitions,
        EventTime::new(ts).idle_timeout(Duration::from_secs(3600)),
        build,
    )
}

/// Like [`collect_event_time`] with full control of the event-time settings.
///
/// # Errors
/// Whatever the engine returns.
pub fn collect_event_time_with<T, O, F>(
    workers: usize,
    partitions: Vec<Vec<Vec<T>>>,
    event_time: EventTime<T>,
    build: F,
) -> Result<Vec<Vec<O>>>
where
    T: Data,
    O: Data + Ord,
    F: for<'s> Fn(DStream<'s, T>) -> DStream<'s, O> + Send + Sync + 'static,
{
    let source = QueueSource::partitioned("test", partitions);
    run(workers, move |job| {
        Ok(build(
            job.source_with_event_time(&source, event_time.clone())?,
        ))
    })
}

fn run<O, F>(workers: usize, build: F) -> Result<Vec<Vec<O>>>
where
    O: Data + Ord,
    F: for<'s, 'j> Fn(&'j mut crate::Job<'s>) -> Result<DStream<'s, O>> + Send + Sync + 'static,
{
    let collected: Collected<O> = Arc::default();
    let sink = Arc::clone(&collected);
    let summary = StreamingContext::new(TEST_BATCH_INTERVAL)?
        .workers(workers)?
        .mode(RunMode::UntilEnd)
        .run(move |job| {
            let sink = Arc::clone(&sink);
            build(job)?.foreach_batch(move |info, mut rows| {
                rows.sort();
                let mut all = sink.lock().unwrap_or_else(|p| p.into_inner());
                let index = usize::try_from(info.batch).unwrap_or(usize::MAX);
                if all.len() <= index {
                    all.resize_with(index + 1, Vec::new);
                }
                if let Some(slot) = all.get_mut(index) {
                    *slot = rows;
                }
            });
            Ok(())
        })?;
    let mut all = std::mem::take(&mut *collected.lock().unwrap_or_else(|p| p.into_inner()));
    let batches = usize::try_from(summary.batches).unwrap_or(usize::MAX);
    if all.len() < batches {
        all.resize_with(batches, Vec::new);
    }
    Ok(all)
}
