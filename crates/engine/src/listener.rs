//! Listening to batches as they are submitted, started and completed: metrics and the dashboard's
//! streaming panel are built on this.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::metrics::StateSize;
use crate::source::PartitionProgress;
use crate::time::BatchId;

/// A batch has been cut: its input is closed.
#[derive(Debug, Clone, Serialize)]
pub struct BatchSubmitted {
    /// The batch.
    pub batch: BatchId,
    /// The batch's nominal start, ms since the epoch.
    pub batch_time_ms: u64,
    /// How late the batch started reading after its nominal start (it waited for the previous
    /// batches to finish).
    pub scheduling_delay: Duration,
}

/// A batch has been processed by every operator on every worker.
#[derive(Debug, Clone, Serialize)]
pub struct BatchCompleted {
    /// The batch.
    pub batch: BatchId,
    /// The batch's nominal start, ms since the epoch.
    pub batch_time_ms: u64,
    /// Records read from all sources in the batch.
    pub input_rows: u64,
    /// Records that could not be decoded in the batch.
    pub dead_letters: u64,
    /// How late the batch started after its nominal start.
    pub scheduling_delay: Duration,
    /// From the end of reading to completion everywhere.
    pub processing_time: Duration,
    /// Scheduling delay plus processing time (as in Spark's streaming statistics).
    pub total_delay: Duration,
    /// Offsets consumed in the batch, per source partition.
    pub offsets: Vec<PartitionProgress>,
    /// State size per stateful operator (this process's workers), after the batch.
    pub state: BTreeMap<String, StateSize>,
    /// Late events counted so far: this process's, and those the other processes had counted
    /// when they reported (a batch or two behind).
    pub late_events_total: u64,
    /// The last checkpoint written, if checkpoints are on and one was.
    pub last_checkpoint: Option<crate::checkpoint::CheckpointStats>,
    /// Every worker of every process: what it read in the batch and the state it holds.
    pub workers: Vec<WorkerProgress>,
}

/// One worker's part of a batch, as it reported it (in a job of several processes, every
/// process's workers are here).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkerProgress {
    /// The worker's index among all workers of the job.
    pub worker: u32,
    /// The process it runs in.
    pub process: u32,
    /// Records it read in the batch.
    pub rows: u64,
    /// Records it could not decode in the batch.
    pub dead_letters: u64,
    /// The keys its stateful operators held when it reported (after its previous batch).
    pub state_keys: u64,
    /// Their approximate bytes.
    pub state_bytes: u64,
    /// Late events its process counted so far (reported by each process's first worker; 0 on
    /// the others).
    pub late_events_total: u64,
    /// Bytes its process sent to the other processes so far (likewise; 0 with one process).
    pub exchange_sent_bytes: u64,
    /// Its partitions when it reported: next offset, end and lag.
    pub partitions: Vec<crate::source::PartitionStatus>,
}

/// Receives batch events. Called on worker 0's thread: keep it quick (hand work to a channel).
pub trait StreamingListener: Send + Sync {
    /// A batch's input was closed.
    fn on_batch_submitted(&self, _event: &BatchSubmitted) {}
    /// A batch completed everywhere.
    fn on_batch_completed(&self, _event: &BatchCompleted) {}
}
