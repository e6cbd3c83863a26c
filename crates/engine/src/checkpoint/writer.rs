//! The background writer: takes each worker's serialised state off the worker threads, writes
//! the parts, and makes a checkpoint visible with its manifest once every part is durable and
//! every sink has delivered the checkpoint's batch.
//!
//! In a job of several processes every process writes its own workers' parts to the shared
//! storage; process 0, where the sinks run, waits until the other processes' parts are there
//! and writes the manifest.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::format::{
    Kind, Layout, MANIFEST_VERSION, Manifest, OperatorState, PartitionPosition, WorkerPart, encode,
    parse_checkpoint_batch, parse_wal_name,
};
use super::{CheckpointStats, Hooks, StoreError};
use crate::checkpoint::CheckpointStore;
use crate::metrics::EngineMetrics;
use crate::time::BatchId;

/// What the workers hand the writer.
pub(crate) enum Msg {
    /// One worker's state after `batch`.
    Part {
        batch: BatchId,
        worker: u32,
        workers: u32,
        operators: BTreeMap<String, OperatorState>,
    },
    /// Where every partition stands after `batch` (from worker 0, which sees every report).
    Positions {
        batch: BatchId,
        positions: Vec<PartitionPosition>,
    },
    /// The checkpoint of `batch` is not taken after all (from worker 0).
    Abandon { batch: BatchId },
}

/// What the writer thread needs besides its messages.
pub(crate) struct WriterConfig {
    pub store: Arc<dyn CheckpointStore>,
    pub layout: Layout,
    pub workers: u32,
    /// The workers of this process (global indices).
    pub local: std::ops::Range<u32>,
    pub key_groups: u32,
    pub keep: usize,
    pub fingerprint: BTreeMap<String, String>,
    pub hooks: Hooks,
    pub metrics: Arc<EngineMetrics>,
}

impl WriterConfig {
    /// Whether this process writes manifests (process 0, whose first worker is worker 0) or
    /// only its workers' parts.
    fn commits(&self) -> bool {
        self.local.start == 0
    }
}

/// A checkpoint being written.
#[derive(Default)]
struct Pending {
    parts: BTreeMap<u32, (String, u64)>,
    positions: Option<Vec<PartitionPosition>>,
    started: Option<Instant>,
}

/// The handle the engine keeps: a channel to the thread and how many checkpoints are under way.
pub(crate) struct Writer {
    tx: Mutex<Option<Sender<Msg>>>,
    in_flight: Arc<AtomicUsize>,
    /// Set when the run failed: a checkpoint waiting for other processes' parts gives up.
    abort: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    /// Starts the writer thread.
    pub(crate) fn start(config: WriterConfig) -> std::io::Result<Writer> {
        let (tx, rx) = channel();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&in_flight);
        let abort = Arc::new(AtomicBool::new(false));
        let aborted = Arc::clone(&abort);
        let thread = std::thread::Builder::new()
            .name("checkpoint-writer".into())
            .spawn(move || run(config, rx, counter, &aborted))?;
        Ok(Writer {
            tx: Mutex::new(Some(tx)),
            in_flight,
            abort,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Gives up checkpoints that wait for other processes (the run failed: they will not come).
    pub(crate) fn abort(&self) {
        self.abort.store(true, Ordering::SeqCst);
    }

    /// Counts a checkpoint as started (called once per checkpoint, by worker 0).
    pub(crate) fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
    }

    /// Checkpoints started and not yet visible or given up.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Hands a message to the thread.
    pub(crate) fn send(&self, msg: Msg) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = tx.as_ref()
            && tx.send(msg).is_err()
        {
            tracing::error!("the checkpoint writer has stopped; this checkpoint is lost");
        }
    }

    /// Writes everything handed over so far and stops the thread.
    pub(crate) fn finish(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread
            && t.join().is_err()
        {
            tracing::error!("the checkpoint writer panicked");
        }
    }
}

fn run(config: WriterConfig, rx: Receiver<Msg>, in_flight: Arc<AtomicUsize>, abort: &AtomicBool) {
    // Only process 0 counts checkpoints under way (its worker 0 starts them).
    let done = |in_flight: &AtomicUsize| {
        if config.commits() {
            in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    };
    let mut pending: BTreeMap<BatchId, Pending> = BTreeMap::new();
    while let Ok(msg) = rx.recv() {
        let batch = match msg {
            Msg::Part {
                batch,
                worker,
                workers,
                operators,
            } => {
                let p = pending.entry(batch).or_default();
                p.started.get_or_insert_with(Instant::now);
                let part = WorkerPart {
                    batch,
                    worker,
                    workers,
                    operators,
                };
                match write_part(&config, &part) {
                    Ok(written) => {
                        p.parts.insert(worker, written);
                    }
                    Err(e) => {
                        tracing::error!(batch, worker, error = %e, "checkpoint part not written; this checkpoint is skipped");
                        pending.remove(&batch);
                        done(&in_flight);
                        continue;
                    }
                }
                batch
            }
            Msg::Abandon { batch } => {
                pending.remove(&batch);
                done(&in_flight);
                continue;
            }
            Msg::Positions { batch, positions } => {
                let p = pending.entry(batch).or_default();
                p.started.get_or_insert_with(Instant::now);
                p.positions = Some(positions);
                batch
            }
        };
        let complete = pending.get(&batch).is_some_and(|p| {
            p.parts.len() == config.local.len() && (p.positions.is_some() || !config.commits())
        });
        if let Some(mut p) = complete.then(|| pending.remove(&batch)).flatten() {
            if config.commits() {
                let committed = remote_parts(&config, batch, abort).and_then(|remote| {
                    p.parts.extend(remote);
                    commit(&config, batch, p)
                });
                if let Err(e) = committed {
                    tracing::error!(batch, error = %e, "checkpoint not committed");
                }
            }
            done(&in_flight);
            // Anything older that never completed (a failed part) will not complete now.
            pending.retain(|b, _| *b > batch);
        }
    }
    if !pending.is_empty() {
        tracing::warn!(
            checkpoints = pending.len(),
            "incomplete checkpoints dropped at shutdown"
        );
    }
}

/// The parts of the other processes' workers, once every one is in the storage (each process
/// writes its own): their names and sizes by worker.
fn remote_parts(
    config: &WriterConfig,
    batch: BatchId,
    abort: &AtomicBool,
) -> Result<BTreeMap<u32, (String, u64)>, String> {
    let dir = config.layout.checkpoint_dir(batch);
    let wanted: Vec<(u32, String)> = (0..config.workers)
        .filter(|w| !config.local.contains(w))
        .map(|w| (w, Layout::part_name(w, config.workers)))
        .collect();
    let mut found = BTreeMap::new();
    if wanted.is_empty() {
        return Ok(found);
    }
    let started = Instant::now();
    let mut nap = Duration::from_millis(5);
    let mut warned = false;
    loop {
        let listed = config.store.list(&dir).map_err(|e| e.to_string())?;
        let missing: Vec<&(u32, String)> = wanted
            .iter()
            .filter(|(_, name)| !listed.iter().any(|p| p.ends_with(name.as_str())))
            .collect();
        if missing.is_empty() {
            break;
        }
        if abort.load(Ordering::SeqCst) {
            return Err(format!(
                "the run stopped before the parts of {} other workers were written",
                missing.len()
            ));
        }
        if !warned && started.elapsed() > Duration::from_secs(60) {
            tracing::warn!(
                batch,
                missing = missing.len(),
                "the checkpoint waits for other processes' parts"
            );
            warned = true;
        }
        std::thread::sleep(nap);
        // Doubling up to 200 ms; once a minute has passed (shared storage?), every second.
        let most = if warned { 1000 } else { 200 };
        nap = (nap * 2).min(Duration::from_millis(most));
    }
    for (w, name) in wanted {
        let path = format!("{dir}{name}");
        let size = config
            .store
            .size(&path)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("part {name} vanished"))?;
        found.insert(w, (name, size));
    }
    Ok(found)
}

fn write_part(config: &WriterConfig, part: &WorkerPart) -> Result<(String, u64), StoreError> {
    let name = Layout::part_name(part.worker, part.workers);
    let bytes = encode(Kind::Part, part);
    let len = bytes.len() as u64;
    let path = format!("{}{name}", config.layout.checkpoint_dir(part.batch));
    config.store.put(&path, bytes)?;
    Ok((name, len))
}

/// Waits for the sinks, writes the manifest, forgets old checkpoints.
fn commit(config: &WriterConfig, batch: BatchId, p: Pending) -> Result<(), String> {
    (config.hooks.commit)(batch)
        .map_err(|e| format!("the sinks did not deliver batch {batch}: {e}"))?;
    let bytes: u64 = p.parts.values().map(|(_, n)| n).sum();
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        batch,
        workers: config.workers,
        key_groups: config.key_groups,
        fingerprint: config.fingerprint.clone(),
        parts: p.parts.into_values().map(|(name, _)| name).collect(),
        bytes,
        positions: p.positions.unwrap_or_default(),
        created_ms: crate::time::now_ms(),
        extra: (config.hooks.extra)(batch),
    };
    config
        .store
        .put(&config.layout.manifest(batch), manifest.encode())
        .map_err(|e| e.to_string())?;
    let duration = p.started.map(|s| s.elapsed()).unwrap_or_default();
    tracing::info!(
        batch,
        bytes,
        ms = duration.as_millis() as u64,
        "checkpoint written"
    );
    config.metrics.set_checkpoint(CheckpointStats {
        batch,
        bytes,
        duration,
        written_at_ms: manifest.created_ms,
    });
    if let Err(e) = prune(config, batch) {
        tracing::warn!(error = %e, "old checkpoints not removed");
    }
    Ok(())
}

/// Keeps the newest `keep` checkpoints and the offset log after the oldest of them; removes
/// older checkpoints, parts of checkpoints that never completed, and older log records.
fn prune(config: &WriterConfig, newest: BatchId) -> Result<(), StoreError> {
    let store = &config.store;
    let listed = store.list(&config.layout.checkpoints_prefix())?;
    let mut complete: Vec<BatchId> = listed
        .iter()
        .filter(|p| p.ends_with("/MANIFEST"))
        .filter_map(|p| parse_checkpoint_batch(p))
        .collect();
    complete.sort_unstable();
    // With fewer than `keep` checkpoints nothing is old yet: the log from batch 0 stays, so
    // that even a damaged only checkpoint leaves a way back.
    let Some(kept_from) = complete
        .len()
        .checked_sub(config.keep.max(1))
        .and_then(|i| complete.get(i).copied())
    else {
        return Ok(());
    };
    for path in &listed {
        let Some(b) = parse_checkpoint_batch(path) else {
            continue;
        };
        let old = b < kept_from;
        let abandoned = b < newest && !complete.contains(&b);
        if old || abandoned {
            store.delete(path)?;
        }
    }
    for path in store.list(&config.layout.wal_prefix())? {
        if parse_wal_name(&path).is_some_and(|(b, ..)| b <= kept_from) {
            store.delete(&path)?;
        }
    }
    Ok(())
}
