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
        let partitions = self.topic.partitions();
        let mut batches: Vec<Batch> = (0..partitions).map(|_| Batch::new()).collect();
        let mut buf = Vec::with_capacity(64);
        for e in events {
            buf.clear();
            binary::encode(e, &mut buf);
            let p = partition_for(&e.visitor_id, partitions) as usize;
            if let Some(batch) = batches.get_mut(p) {
                let ts = i64::try_from(e.ts_ms).unwrap_or(i64::MAX);
                batch.push(ts, e.visitor_id.as_bytes(), &buf)?;
            }
        }
        for (p, batch) in (0u32..).zip(&batches) {
            if !batch.is_empty() {
                self.topic.append(p, batch)?;
            }
        }
        Ok(events.len())
    }

    /// The topic written to.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }
}
