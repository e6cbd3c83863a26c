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

/// A source over records held in memory, one vector per partition, addressed by offset (the
/// record's index): unlike [`QueueSource`] it can be read again from any offset, as a restored
/// job does. Each poll reads at most the poll's `max_records`, so until-end runs cut the same
/// batches every time.
///
/// # Examples
/// ```
/// use clickpulse_engine::source::PartitionedSource;
/// use clickpulse_engine::testing::VecSource;
/// let source = VecSource::new("numbers", vec![vec![1, 2, 3], vec![4]]);
/// assert_eq!(source.partitions().unwrap(), 2);
/// ```
#[derive(Debug)]
pub struct VecSource<T> {
    name: String,
    partitions: Arc<Vec<Vec<T>>>,
}

impl<T> Clone for VecSource<T> {
    fn clone(&self) -> Self {
        VecSource {
            name: self.name.clone(),
            partitions: Arc::clone(&self.partitions),
        }
    }
}

impl<T: Data + Sync> VecSource<T> {
    /// A source named `name` whose partition `p` holds `partitions[p]`.
    pub fn new(name: impl Into<String>, partitions: Vec<Vec<T>>) -> Self {
        VecSource {
            name: name.into(),
            partitions: Arc::new(partitions),
        }
    }
}

impl<T: Data + Sync> crate::source::PartitionedSource for VecSource<T> {
    type Item = T;

    fn name(&self) -> &str {
        &self.name
    }

    fn partitions(&self) -> std::result::Result<u32, crate::source::SourceError> {
        Ok(u32::try_from(self.partitions.len()).unwrap_or(u32::MAX))
    }

    fn open(
        &self,
        partition: crate::source::PartitionId,
        from: Option<u64>,
    ) -> std::result::Result<Box<dyn crate::source::PartitionReader<T>>, crate::source::SourceError>
    {
        if partition as usize >= self.partitions.len() {
            return Err(crate::source::SourceError::fatal(format!(
                "no partition {partition}"
            )));
        }
        Ok(Box::new(VecReader {
            partitions: Arc::clone(&self.partitions),
            partition: partition as usize,
            position: from.unwrap_or(0),
        }))
    }
}

struct VecReader<T> {
    partitions: Arc<Vec<Vec<T>>>,
    partition: usize,
    position: u64,
}

impl<T: Data> crate::source::PartitionReader<T> for VecReader<T> {
    fn poll(
        &mut self,
        ctx: &crate::source::PollContext,
        out: &mut crate::source::Polled<T>,
    ) -> std::result::Result<crate::source::ReadStatus, crate::source::SourceError> {
        let records = self
            .partitions
            .get(self.partition)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let from = usize::try_from(self.position).unwrap_or(usize::MAX);
        let taken = records.get(from..).unwrap_or_default();
        let n = taken.len().min(ctx.max_records);
        out.items.extend(taken.iter().take(n).cloned());
        self.position += n as u64;
        Ok(if n < taken.len() {
            crate::source::ReadStatus::More
        } else {
            crate::source::ReadStatus::CaughtUp
        })
    }

    fn position(&self) -> u64 {
        self.position
    }
}
