//! Sources: where batches come from.
//!
//! A source is a set of partitions, each an offset-addressed sequence of records
//! ([`PartitionedSource`]). Every worker reads a deterministic share of the partitions (partition
//! `p` goes to worker `p mod workers`) through a [`PartitionReader`] and reports, per batch, the
//! offsets it consumed, so that checkpoints can store them and a restart can resume from them.
//! The embedded log and Kafka implement the trait in the connectors crate; [`QueueSource`] is the
//! in-memory source for tests and examples (like Spark's `queueStream`).

pub(crate) mod driver;
mod map;
mod queue;

pub(crate) use driver::{SourceDriver, SourceSettings, TypedSourceDriver};
pub use map::MapItems;
pub use queue::QueueSource;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::dstream::Data;
use crate::time::BatchId;

/// A partition number, `0..partitions`.
pub type PartitionId = u32;

/// A source of records split into offset-addressed partitions.
pub trait PartitionedSource: Send + Sync + 'static {
    /// The record type the source produces.
    type Item: Data;

    /// A short name for logs, errors and offsets.
    fn name(&self) -> &str;

    /// How many partitions the source has now (partitions are `0..n`; the count may grow).
    ///
    /// # Errors
    /// A [`SourceError`] when the source cannot be reached.
    fn partitions(&self) -> Result<u32, SourceError>;

    /// Opens a reader on `partition`, positioned at `from` (the next offset to read), or at the
    /// source's default start when `from` is `None`.
    ///
    /// # Errors
    /// A [`SourceError`] when the partition cannot be opened.
    fn open(
        &self,
        partition: PartitionId,
        from: Option<u64>,
    ) -> Result<Box<dyn PartitionReader<Self::Item>>, SourceError>;

    /// This source with `f` applied to every record as it is read, on the reading worker, before
    /// the record enters the dataflow. Projecting a wide record to the few fields a job needs here
    /// means only the narrow form is ever buffered, routed or copied; `map` on the stream would
    /// carry the wide records through the first step.
    ///
    /// # Examples
    /// ```
    /// use clickpulse_engine::source::{PartitionedSource, QueueSource};
    /// let source = QueueSource::<String>::new("lines", 1).map_items(|line| line.len());
    /// assert_eq!(source.partitions().unwrap(), 1);
    /// ```
    fn map_items<U, F>(self, f: F) -> MapItems<Self, F>
    where
        Self: Sized,
        F: Fn(Self::Item) -> U + Send + Sync + 'static,
        U: Data,
    {
        MapItems::new(self, f)
    }
}

/// Reads one partition. Lives on the worker thread that owns the partition.
pub trait PartitionReader<T> {
    /// Reads up to `ctx.max_records` records into `out`, without blocking for long.
    ///
    /// # Errors
    /// A [`SourceError`]; the engine logs it and, when it is retryable, tries again later.
    fn poll(&mut self, ctx: &PollContext, out: &mut Polled<T>) -> Result<ReadStatus, SourceError>;

    /// The offset of the next record this reader will return.
    fn position(&self) -> u64;

    /// Told after every completed batch which offset this partition has been processed up to;
    /// a reader may commit it somewhere visible (Kafka's consumer group, for lag tools).
    fn processed(&mut self, _offset: u64) {}

    /// The offset after the last record the partition holds now, when the reader knows it
    /// without waiting (for the lag shown in progress reports). Default: unknown.
    fn end(&mut self) -> Option<u64> {
        None
    }
}

/// Where one partition stands: the next offset to read and, when known, its end.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartitionStatus {
    /// The source's name.
    pub source: String,
    /// The partition.
    pub partition: PartitionId,
    /// The next offset to read.
    pub next: u64,
    /// The offset after the partition's last record, when the reader knows it.
    pub end: Option<u64>,
}

impl PartitionStatus {
    /// Records not read yet (0 when the end is unknown or behind).
    pub fn lag(&self) -> u64 {
        self.end.map_or(0, |e| e.saturating_sub(self.next))
    }
}

/// What a poll is for.
#[derive(Debug, Clone, Copy)]
pub struct PollContext {
    /// The batch being filled.
    pub batch: BatchId,
    /// The most records to return from this call.
    pub max_records: usize,
}

/// What a poll produced: records, and the ones that could not be decoded.
#[derive(Debug)]
pub struct Polled<T> {
    /// Decoded records, in offset order.
    pub items: Vec<T>,
    /// Records that could not be decoded.
    pub dead_letters: Vec<DeadLetter>,
}

impl<T> Default for Polled<T> {
    fn default() -> Self {
        Polled {
            items: Vec::new(),
            dead_letters: Vec::new(),
        }
    }
}

/// Where a reader stands after a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStatus {
    /// More records are available right now.
    More,
    /// Nothing right now, but the partition is not at its end: records are on their way (a
    /// broker's fetch is in flight). In until-end mode the batch waits for them, so that each
    /// batch holds exactly its chunk of every partition, whatever the fetches' timing, and two
    /// runs over the same input cut the same batches. Elsewhere it counts as [`ReadStatus::More`]
    /// with nothing read.
    Pending,
    /// The reader is at the current end; more may come later.
    CaughtUp,
    /// The partition will never have more records.
    Ended,
}

/// A record that could not be decoded, with its position; kept, counted and logged, never dropped
/// silently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The source's name.
    pub source: String,
    /// The partition it came from.
    pub partition: PartitionId,
    /// Its offset (or line number, for a file).
    pub offset: u64,
    /// Why it was rejected.
    pub reason: String,
    /// The raw bytes, as far as they were read.
    pub raw: Vec<u8>,
}

/// A source failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    /// What went wrong.
    pub message: String,
    /// Whether trying again later may succeed (a broker restart) or not (a missing topic).
    pub retryable: bool,
    /// The error that caused it, kept for the error chain.
    #[source]
    pub cause: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

impl SourceError {
    /// A failure that may go away (network, broker restart).
    pub fn retryable(message: impl Into<String>) -> Self {
        SourceError {
            message: message.into(),
            retryable: true,
            cause: None,
        }
    }

    /// A failure that will not go away by itself.
    pub fn fatal(message: impl Into<String>) -> Self {
        SourceError {
            message: message.into(),
            retryable: false,
            cause: None,
        }
    }

    /// The same failure, caused by `cause`.
    ///
    /// # Examples
    /// ```
    /// use std::error::Error;
    /// use clickpulse_engine::source::SourceError;
    /// let io = std::io::Error::other("disk gone");
    /// let e = SourceError::fatal("partition 3 cannot be read").with_cause(io);
    /// assert_eq!(e.source().map(|c| c.to_string()).as_deref(), Some("disk gone"));
    /// ```
    pub fn with_cause(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.cause = Some(std::sync::Arc::new(cause));
        self
    }
}

/// How a source's records carry event time, for event-time operators.
#[derive(Clone)]
pub struct EventTime<T> {
    pub(crate) extract: std::sync::Arc<dyn Fn(&T) -> u64 + Send + Sync>,
    pub(crate) lateness_ms: u64,
    pub(crate) idle_timeout: Duration,
}

impl<T> EventTime<T> {
    /// Event time read from each record by `extract` (ms since the epoch). Default allowed
    /// lateness = 0; default idle timeout = 5 s.
    pub fn new(extract: impl Fn(&T) -> u64 + Send + Sync + 'static) -> Self {
        EventTime {
            extract: std::sync::Arc::new(extract),
            lateness_ms: 0,
            idle_timeout: Duration::from_secs(5),
        }
    }

    /// How far behind the highest event time seen an event may be and still count. Default = 0.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.lateness_ms = u64::try_from(lateness.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// How long a partition may go without records before it stops holding the watermark back.
    /// Default = 5 s.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }
}

/// Offsets one worker consumed from one partition in one batch: `[from, to)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionProgress {
    /// The source's name.
    pub source: String,
    /// The partition.
    pub partition: PartitionId,
    /// First offset read in the batch.
    pub from: u64,
    /// The next offset to read after the batch.
    pub to: u64,
}
