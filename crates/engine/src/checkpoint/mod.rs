//! Checkpoints and exactly-once recovery.
//!
//! The batch is the unit of consistency. For every batch `b`, every worker first makes durable,
//! before its input moves past `b` (and so before any output of `b` can exist), a record of what
//! the batch read: the offset range of each of its partitions and the watermark reports it sent,
//! which carry the clock's readings of idle partitions (the offset log, [`WalRecord`]). Every so
//! often (by batch count or time, see [`CheckpointInterval`]) the workers mark a batch as a
//! checkpoint batch; each stateful operator serialises its state as it ends that batch, split by
//! key group; a background thread writes the parts, waits until every sink has delivered the
//! batch, then writes the [`Manifest`], which alone makes the checkpoint visible.
//!
//! On restart the newest readable checkpoint is restored (a torn or corrupt one is skipped with a
//! warning, a checkpoint of another job is refused), the batches logged after it are re-run with
//! exactly the logged offset ranges and watermark reports, so they produce the same results
//! (sinks overwrite or skip them by batch id), and the job goes on with new batches. Batch ids
//! continue. State is restored by key group, so a checkpoint taken with `W` workers restores with
//! any other worker count.
//!
//! | part | what |
//! |---|---|
//! | [`CheckpointStore`] | where objects live; [`MemoryStore`] in memory, the `clickpulse-checkpoint` crate on `object_store` |
//! | [`Checkpointing`] | the settings a [`StreamingContext`](crate::StreamingContext) takes |
//! | [`format`] | the objects and their framing |
//! | [`Recovered`] | what a restart found: the checkpoint, the batches to re-run |
//! | [`inspect`] | read a checkpoint's state without running the job |

pub mod format;
pub mod recovery;
pub(crate) mod state;
mod store;
pub(crate) mod wal;
pub(crate) mod writer;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use format::{
    Manifest, OperatorState, PartitionPosition, PartitionRange, WalRecord, WorkerPart,
};
pub use recovery::{Recovered, inspect};
pub use store::{CheckpointStore, MemoryStore, StoreError};

use crate::time::BatchId;

/// How often a checkpoint is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointInterval {
    /// Every `n` batches.
    Batches(u64),
    /// When at least this much time has passed since the last one.
    Every(Duration),
}

impl Default for CheckpointInterval {
    /// Every 10 s: a few percent of throughput on the standard job (docs/benchmarks.md).
    fn default() -> Self {
        CheckpointInterval::Every(Duration::from_secs(10))
    }
}

impl FromStr for CheckpointInterval {
    type Err = String;

    /// `10` (batches) or a duration with a unit (`5s`, `500ms`, `1m`).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use clickpulse_engine::checkpoint::CheckpointInterval;
    /// assert_eq!("10".parse(), Ok(CheckpointInterval::Batches(10)));
    /// assert_eq!("5s".parse(), Ok(CheckpointInterval::Every(Duration::from_secs(5))));
    /// assert_eq!("250ms".parse(), Ok(CheckpointInterval::Every(Duration::from_millis(250))));
    /// assert!("0".parse::<CheckpointInterval>().is_err());
    /// assert!("soon".parse::<CheckpointInterval>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(n) = s.parse::<u64>() {
            return match n {
                0 => Err("a checkpoint interval of 0 batches: use at least 1".into()),
                n => Ok(CheckpointInterval::Batches(n)),
            };
        }
        let (number, unit) =
            s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
        let value: f64 = number.trim().parse().map_err(|_| {
            format!("`{s}` is neither a batch count (10) nor a duration (5s, 500ms)")
        })?;
        let secs = match unit {
            "ms" => value / 1000.0,
            "s" => value,
            "m" | "min" => value * 60.0,
            "h" => value * 3600.0,
            _ => return Err(format!("`{s}`: unknown unit `{unit}` (use ms, s, m or h)")),
        };
        if !(secs > 0.0 && secs.is_finite()) {
            return Err(format!("`{s}`: the interval must be positive"));
        }
        Ok(CheckpointInterval::Every(Duration::from_secs_f64(secs)))
    }
}

impl std::fmt::Display for CheckpointInterval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckpointInterval::Batches(n) => write!(f, "{n} batches"),
            CheckpointInterval::Every(d) => write!(f, "{d:?}"),
        }
    }
}

/// The last checkpoint written (for metrics and `/api/job`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct CheckpointStats {
    /// Its batch.
    pub batch: BatchId,
    /// Bytes of its parts.
    pub bytes: u64,
    /// From the first part handed to the writer to the manifest written.
    #[serde(with = "millis")]
    pub duration: Duration,
    /// When its manifest was written, ms since the epoch.
    pub written_at_ms: u64,
}

mod millis {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// Called before a checkpoint's manifest is written: returns once every sink has delivered every
/// batch up to the given one (so that a restart from this checkpoint never needs them again).
pub type CommitHook = Arc<dyn Fn(BatchId) -> Result<(), String> + Send + Sync>;

/// Called when a manifest is written: extra state of the embedding program to keep in it.
pub type ExtraHook = Arc<dyn Fn(BatchId) -> BTreeMap<String, String> + Send + Sync>;

/// The writer's callbacks.
#[derive(Clone)]
pub(crate) struct Hooks {
    pub commit: CommitHook,
    pub extra: ExtraHook,
}

/// Checkpoint settings for [`StreamingContext::checkpointing`](crate::StreamingContext::checkpointing).
///
/// # Examples
/// ```
/// use std::sync::Arc;
/// use clickpulse_engine::checkpoint::{CheckpointInterval, Checkpointing, MemoryStore};
/// let settings = Checkpointing::new(Arc::new(MemoryStore::default()))
///     .interval(CheckpointInterval::Batches(10))
///     .keep(3);
/// assert_eq!(settings.keep_count(), 3);
/// ```
#[derive(Clone)]
pub struct Checkpointing {
    pub(crate) store: Arc<dyn CheckpointStore>,
    pub(crate) interval: CheckpointInterval,
    pub(crate) keep: usize,
    pub(crate) from_scratch: bool,
    pub(crate) fingerprint: BTreeMap<String, String>,
    pub(crate) hooks: Hooks,
    pub(crate) request: Arc<AtomicBool>,
}

impl Checkpointing {
    /// Checkpoints in `store`, every 10 s, keeping the last 3.
    pub fn new(store: Arc<dyn CheckpointStore>) -> Self {
        Checkpointing {
            store,
            interval: CheckpointInterval::default(),
            keep: 3,
            from_scratch: false,
            fingerprint: BTreeMap::new(),
            hooks: Hooks {
                commit: Arc::new(|_| Ok(())),
                extra: Arc::new(|_| BTreeMap::new()),
            },
            request: Arc::default(),
        }
    }

    /// How often. Default = every 10 s.
    pub fn interval(mut self, interval: CheckpointInterval) -> Self {
        self.interval = interval;
        self
    }

    /// How many complete checkpoints to keep (at least 1). Default = 3.
    pub fn keep(mut self, keep: usize) -> Self {
        self.keep = keep.max(1);
        self
    }

    /// How many complete checkpoints are kept.
    pub fn keep_count(&self) -> usize {
        self.keep
    }

    /// Ignores existing checkpoints and starts a new history beside them (they are kept, not
    /// deleted). Default = false.
    pub fn from_scratch(mut self, yes: bool) -> Self {
        self.from_scratch = yes;
        self
    }

    /// What identifies the job (streams, windows, sources), by setting: a checkpoint whose
    /// fingerprint differs is refused, naming the settings that differ. The engine adds the key
    /// group count and the stateful operators it builds.
    pub fn fingerprint(mut self, fingerprint: BTreeMap<String, String>) -> Self {
        self.fingerprint = fingerprint;
        self
    }

    /// Called before each manifest is written; must return once every sink has delivered every
    /// batch so far. Default = nothing to wait for.
    pub fn on_commit(mut self, hook: CommitHook) -> Self {
        self.hooks.commit = hook;
        self
    }

    /// Extra state to keep in each manifest (see [`Recovered::extra`]). Default = none.
    pub fn on_manifest(mut self, hook: ExtraHook) -> Self {
        self.hooks.extra = hook;
        self
    }

    /// Where checkpoints are stored.
    pub fn store(&self) -> &Arc<dyn CheckpointStore> {
        &self.store
    }

    /// A handle that asks for a checkpoint as soon as possible (from any thread).
    pub fn request_handle(&self) -> CheckpointRequest {
        CheckpointRequest(Arc::clone(&self.request))
    }
}

/// Asks a running job for a checkpoint at the next batch boundary.
#[derive(Debug, Clone)]
pub struct CheckpointRequest(Arc<AtomicBool>);

impl CheckpointRequest {
    /// Asks for a checkpoint.
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Takes a pending request.
    pub(crate) fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}
