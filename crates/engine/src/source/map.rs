//! [`MapItems`]: a source whose records are turned into another type as they are read.

use std::sync::Arc;

use super::SourceError;
use super::{PartitionId, PartitionReader, PartitionedSource, PollContext, Polled, ReadStatus};
use crate::dstream::Data;

/// `inner` with `f` applied to each record on the worker that reads it, before the record enters
/// the dataflow (see [`PartitionedSource::map_items`]). Offsets, partitions and dead letters are
/// the inner source's.
pub struct MapItems<S, F> {
    inner: S,
    f: Arc<F>,
}

impl<S: Clone, F> Clone for MapItems<S, F> {
    fn clone(&self) -> Self {
        MapItems {
            inner: self.inner.clone(),
            f: Arc::clone(&self.f),
        }
    }
}

impl<S, F> MapItems<S, F> {
    pub(super) fn new(inner: S, f: F) -> Self {
        MapItems {
            inner,
            f: Arc::new(f),
        }
    }
}

impl<S, F, U> PartitionedSource for MapItems<S, F>
where
    S: PartitionedSource,
    F: Fn(S::Item) -> U + Send + Sync + 'static,
    U: Data,
{
    type Item = U;

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn partitions(&self) -> Result<u32, SourceError> {
        self.inner.partitions()
    }

    fn open(
        &self,
        partition: PartitionId,
        from: Option<u64>,
    ) -> Result<Box<dyn PartitionReader<U>>, SourceError> {
        Ok(Box::new(MapReader {
            inner: self.inner.open(partition, from)?,
            f: Arc::clone(&self.f),
            scratch: Polled::default(),
        }))
    }
}

struct MapReader<T, F> {
    inner: Box<dyn PartitionReader<T>>,
    f: Arc<F>,
    /// The inner reader's records of one poll; kept so that its buffer is reused.
    scratch: Polled<T>,
}

impl<T, U, F: Fn(T) -> U> PartitionReader<U> for MapReader<T, F> {
    fn end(&mut self) -> Option<u64> {
        self.inner.end()
    }

    fn poll(&mut self, ctx: &PollContext, out: &mut Polled<U>) -> Result<ReadStatus, SourceError> {
        let status = self.inner.poll(ctx, &mut self.scratch);
        out.items.extend(self.scratch.items.drain(..).map(&*self.f));
        out.dead_letters.append(&mut self.scratch.dead_letters);
        status
    }

    fn position(&self) -> u64 {
        self.inner.position()
    }

    fn processed(&mut self, offset: u64) {
        self.inner.processed(offset);
    }
}
