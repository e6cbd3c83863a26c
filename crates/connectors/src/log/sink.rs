//! Clicks into the embedded log.

use clickpulse_events::{ClickEvent, binary, partition_for};
use clickpulse_log::{Batch, Topic};

/// Appends clicks to a topic, each to its visitor's partition, one log batch per partition and
/// call (so one `append` of many clicks is one write, and one fsync under `EveryBatch`).
#[derive(Debug, Clone)]
pub struct LogWriter {
    topic: Topic,
}

impl LogWriter {
    /// A writer into `topic`.
    pub fn new(topic: Topic) -> Self {
        LogWriter { topic }
    }

    /// Appends `events`; returns how many were appended.
    ///
    /// # Errors
    /// The log's error when a partition refuses the append (disk full, poisoned writer, a record
    /// too large). Partitions appended before the failure keep their records.
    pub fn append(&self, events: &[ClickEvent]) -> Result<usize, clickpulse_log::Error> {
        let mut batches = self.batches();
        for e in events {
            batches.push(e)?;
        }
        self.append_batches(&mut batches)
    }

    /// Empty batches for this writer's topic, to fill with [`LogBatches::push`] and append with
    /// [`append_batches`](Self::append_batches), again and again without reallocating.
    pub fn batches(&self) -> LogBatches {
        let partitions = self.topic.partitions();
        LogBatches {
            partitions,
            batches: (0..partitions).map(|_| Batch::new()).collect(),
            value: Vec::with_capacity(64),
            clicks: 0,
        }
    }

    /// Appends every non-empty batch of `batches` (one append per partition) and empties them;
    /// returns how many clicks were appended.
    ///
    /// # Errors
    /// As [`append`](Self::append); the batches are left as they were.
    pub fn append_batches(&self, batches: &mut LogBatches) -> Result<usize, clickpulse_log::Error> {
        for (p, batch) in (0u32..).zip(&batches.batches) {
            if !batch.is_empty() {
                self.topic.append(p, batch)?;
            }
        }
        batches.batches.iter_mut().for_each(Batch::clear);
        Ok(std::mem::take(&mut batches.clicks))
    }

    /// The topic written to.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }
}

/// Clicks encoded as log records and grouped by partition: the value is the click's binary
/// encoding, the key its visitor id, the timestamp its event time, the partition
/// [`partition_for`] of its visitor. Made by [`LogWriter::batches`].
#[derive(Debug)]
pub struct LogBatches {
    partitions: u32,
    batches: Vec<Batch>,
    value: Vec<u8>,
    clicks: usize,
}

impl LogBatches {
    /// Adds a click.
    ///
    /// # Errors
    /// [`clickpulse_log::Error::BatchTooLarge`] when its partition's batch is full.
    pub fn push(&mut self, event: &ClickEvent) -> Result<(), clickpulse_log::Error> {
        self.value.clear();
        binary::encode(event, &mut self.value);
        self.push_encoded(event.ts_ms, &event.visitor_id)
    }

    /// Adds the click `ClickEvent::page_view(ts_ms, visitor_id, url)` without building it.
    ///
    /// # Errors
    /// As [`push`](Self::push).
    pub fn push_page_view(
        &mut self,
        ts_ms: u64,
        visitor_id: &str,
        url: &str,
    ) -> Result<(), clickpulse_log::Error> {
        self.value.clear();
        binary::encode_page_view(ts_ms, visitor_id, url, &mut self.value);
        self.push_encoded(ts_ms, visitor_id)
    }

    fn push_encoded(&mut self, ts_ms: u64, visitor_id: &str) -> Result<(), clickpulse_log::Error> {
        let p = partition_for(visitor_id, self.partitions) as usize;
        if let Some(batch) = self.batches.get_mut(p) {
            let ts = i64::try_from(ts_ms).unwrap_or(i64::MAX);
            batch.push(ts, visitor_id.as_bytes(), &self.value)?;
            self.clicks += 1;
        }
        Ok(())
    }

    /// Clicks added since the last append.
    pub fn len(&self) -> usize {
        self.clicks
    }

    /// Whether no click was added since the last append.
    pub fn is_empty(&self) -> bool {
        self.clicks == 0
    }
}
