//! The in-memory queue source, for tests and examples.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::{
    PartitionId, PartitionReader, PartitionedSource, PollContext, Polled, ReadStatus, SourceError,
};
use crate::dstream::Data;
use crate::time::BatchId;

type Queue<T> = Arc<Mutex<VecDeque<Vec<T>>>>;

/// A source fed from memory: each partition is a queue of batches, and every engine batch takes
/// at most one queued batch from each partition (like Spark's `queueStream` with
/// `oneAtATime = true`), so which batch a record lands in is deterministic. A queued batch larger
/// than the context's `max_records_per_partition` is spread over several engine batches (the
/// rest of it comes first in the next one).
///
/// In bounded mode a partition ends when its queue is empty; otherwise more batches may be pushed
/// while the job runs.
///
/// # Examples
/// ```
/// use clickpulse_engine::QueueSource;
/// let q = QueueSource::new("numbers", 1);
/// q.push(0, vec![1, 2, 3]);
/// q.push(0, vec![4]);
/// assert_eq!(q.queued(0), 2);
/// ```
pub struct QueueSource<T> {
    name: String,
    queues: Vec<Queue<T>>,
}

impl<T> Clone for QueueSource<T> {
    fn clone(&self) -> Self {
        QueueSource {
            name: self.name.clone(),
            queues: self.queues.clone(),
        }
    }
}

impl<T: Data> QueueSource<T> {
    /// An empty source named `name` with `partitions` partitions (at least 1).
    pub fn new(name: impl Into<String>, partitions: u32) -> Self {
        let n = partitions.max(1) as usize;
        QueueSource {
            name: name.into(),
            queues: (0..n).map(|_| Arc::default()).collect(),
        }
    }

    /// A one-partition source holding `batches`, one per engine batch.
    pub fn from_batches(name: impl Into<String>, batches: Vec<Vec<T>>) -> Self {
        Self::partitioned(name, vec![batches])
    }

    /// A source whose partition `p` holds `partitions[p]`, one batch per engine batch.
    pub fn partitioned(name: impl Into<String>, partitions: Vec<Vec<Vec<T>>>) -> Self {
        let source = Self::new(name, u32::try_from(partitions.len()).unwrap_or(u32::MAX));
        for (p, batches) in partitions.into_iter().enumerate() {
            for b in batches {
                source.push(p as PartitionId, b);
            }
        }
        source
    }

    /// Queues one batch on `partition` (ignored when the partition does not exist).
    pub fn push(&self, partition: PartitionId, batch: Vec<T>) {
        if let Some(q) = self.queues.get(partition as usize) {
            lock(q).push_back(batch);
        }
    }

    /// Batches still queued on `partition`.
    pub fn queued(&self, partition: PartitionId) -> usize {
        self.queues
            .get(partition as usize)
            .map_or(0, |q| lock(q).len())
    }
}

fn lock<T>(q: &Queue<T>) -> std::sync::MutexGuard<'_, VecDeque<Vec<T>>> {
    q.lock().unwrap_or_else(|p| p.into_inner())
}

impl<T: Data> PartitionedSource for QueueSource<T> {
    type Item = T;

    fn name(&self) -> &str {
        &self.name
    }

    fn partitions(&self) -> Result<u32, SourceError> {
        Ok(u32::try_from(self.queues.len()).unwrap_or(u32::MAX))
    }

    fn open(
        &self,
        partition: PartitionId,
        from: Option<u64>,
    ) -> Result<Box<dyn PartitionReader<T>>, SourceError> {
        let queue = self
            .queues
            .get(partition as usize)
            .cloned()
            .ok_or_else(|| SourceError::fatal(format!("no partition {partition}")))?;
        if from.is_some_and(|f| f > 0) {
            return Err(SourceError::fatal(
                "a queue source cannot be re-read from an offset",
            ));
        }
        Ok(Box::new(QueueReader {
            queue,
            served: None,
            leftover: VecDeque::new(),
            position: 0,
        }))
    }
}

struct QueueReader<T> {
    queue: Queue<T>,
    served: Option<BatchId>,
    /// The rest of a queued batch that exceeded `max_records`.
    leftover: VecDeque<T>,
    position: u64,
}

impl<T: Data> PartitionReader<T> for QueueReader<T> {
    fn poll(&mut self, ctx: &PollContext, out: &mut Polled<T>) -> Result<ReadStatus, SourceError> {
        let mut q = lock(&self.queue);
        if self.leftover.is_empty()
            && self.served != Some(ctx.batch)
            && let Some(batch) = q.pop_front()
        {
            self.served = Some(ctx.batch);
            self.leftover.extend(batch);
        }
        let n = ctx.max_records.min(self.leftover.len());
        out.items.extend(self.leftover.drain(..n));
        self.position += n as u64;
        // One queued batch per engine batch: "more" means "in this batch or a later one".
        Ok(if q.is_empty() && self.leftover.is_empty() {
            ReadStatus::CaughtUp
        } else {
            ReadStatus::More
        })
    }

    fn position(&self) -> u64 {
        self.position
    }
}
