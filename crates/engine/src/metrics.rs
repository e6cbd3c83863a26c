//! Counters and state sizes the engine keeps while it runs, readable from any thread.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// The size of one stateful operator's state on one worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StateSize {
    /// Keys (or windows, or sessions) held.
    pub keys: u64,
    /// Approximate bytes: the tables' own memory, not heap data owned by keys or values.
    pub bytes: u64,
}

/// Engine-wide counters, shared by the workers of one process.
#[derive(Debug, Default)]
pub struct EngineMetrics {
    late_events: AtomicU64,
    dead_letters: AtomicU64,
    state: Mutex<BTreeMap<(String, usize), StateSize>>,
    checkpoint: Mutex<Option<crate::checkpoint::CheckpointStats>>,
    checkpoints: Mutex<CheckpointTotals>,
    cluster: Mutex<Option<std::sync::Arc<crate::cluster::ClusterStats>>>,
}

/// Every checkpoint written by this process, summed up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CheckpointTotals {
    /// Checkpoints written.
    pub count: u64,
    /// The largest, in bytes of its parts.
    pub max_bytes: u64,
    /// The longest from first part to manifest, in ms.
    pub max_ms: u64,
    /// All of them together, in ms.
    pub total_ms: u64,
}

impl EngineMetrics {
    /// Events that arrived too late for their event-time window or session.
    pub fn late_events(&self) -> u64 {
        self.late_events.load(Ordering::Relaxed)
    }

    /// Records sources could not decode.
    pub fn dead_letters(&self) -> u64 {
        self.dead_letters.load(Ordering::Relaxed)
    }

    /// State size per operator, summed over this process's workers.
    pub fn state_sizes(&self) -> BTreeMap<String, StateSize> {
        let mut out: BTreeMap<String, StateSize> = BTreeMap::new();
        let guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for ((name, _worker), s) in guard.iter() {
            let e = out.entry(name.clone()).or_default();
            e.keys += s.keys;
            e.bytes += s.bytes;
        }
        out
    }

    /// The state of worker `worker` (of this process), summed over its operators.
    pub fn worker_state(&self, worker: usize) -> StateSize {
        let guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut total = StateSize::default();
        for ((_, w), s) in guard.iter() {
            if *w == worker {
                total.keys += s.keys;
                total.bytes += s.bytes;
            }
        }
        total
    }

    /// In a job of several processes: this process's connections to the others (bytes sent and
    /// received per peer), once they are made.
    pub fn cluster(&self) -> Option<std::sync::Arc<crate::cluster::ClusterStats>> {
        self.cluster
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_cluster(&self, stats: std::sync::Arc<crate::cluster::ClusterStats>) {
        *self.cluster.lock().unwrap_or_else(|p| p.into_inner()) = Some(stats);
    }

    /// The last checkpoint written, if any.
    pub fn last_checkpoint(&self) -> Option<crate::checkpoint::CheckpointStats> {
        *self.checkpoint.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_checkpoint(&self, stats: crate::checkpoint::CheckpointStats) {
        *self.checkpoint.lock().unwrap_or_else(|p| p.into_inner()) = Some(stats);
        let ms = u64::try_from(stats.duration.as_millis()).unwrap_or(u64::MAX);
        let mut totals = self.checkpoints.lock().unwrap_or_else(|p| p.into_inner());
        totals.count += 1;
        totals.max_bytes = totals.max_bytes.max(stats.bytes);
        totals.max_ms = totals.max_ms.max(ms);
        totals.total_ms += ms;
    }

    /// Every checkpoint this process wrote, summed up.
    pub fn checkpoint_totals(&self) -> CheckpointTotals {
        *self.checkpoints.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn add_late(&self, n: u64) {
        self.late_events.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_dead_letters(&self, n: u64) {
        self.dead_letters.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set_state(&self, operator: &str, worker: usize, size: StateSize) {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        guard.insert((operator.to_string(), worker), size);
    }
}

/// Where one stateful operator on one worker reports the size of its state.
pub(crate) struct StateReport {
    pub(crate) metrics: std::sync::Arc<EngineMetrics>,
    pub(crate) name: String,
    pub(crate) worker: usize,
}

impl StateReport {
    /// Replaces the reported size.
    pub(crate) fn set(&self, size: StateSize) {
        self.metrics.set_state(&self.name, self.worker, size);
    }
}

/// Approximate bytes of a hash table with `capacity` slots of `(K, V)`.
pub(crate) fn table_bytes<K, V>(capacity: usize) -> u64 {
    // One control byte per slot beside the slot itself (hashbrown's layout).
    (capacity * (std::mem::size_of::<(K, V)>() + 1)) as u64
}
