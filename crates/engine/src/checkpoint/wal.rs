//! The offset log's writer: takes each worker's record of each batch off the worker thread and
//! writes it in the background, and holds every output of a batch back until every worker's
//! record of that batch is durable.
//!
//! Writing the record on the worker thread before its input moves past the batch would put a
//! storage round trip (three fsyncs on a local disk) on every batch's critical path. Instead the
//! worker hands the record over and goes on; the records are written in order, and an output
//! operation of batch `b` waits (in [`WalWriter::wait_durable`]) until every worker's record of
//! `b` is durable. By the time a batch has been processed its records are normally long written,
//! so the wait costs nothing, and the rule stays: nothing of a batch leaves the process before
//! the batch is in the offset log.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::CheckpointStore;
use super::format::{Kind, Layout, WalRecord, encode};
use crate::time::BatchId;

/// Durability of the records so far: per worker of this process, the highest batch whose record
/// is durable.
#[derive(Debug, Default)]
struct Durable {
    upto: Vec<Option<BatchId>>,
    /// The index of this process's first worker (`upto[0]` is its).
    offset: usize,
    /// Why writing stopped, once it did: every later output is refused.
    failed: Option<String>,
}

/// The background writer of one process's offset-log records.
pub(crate) struct WalWriter {
    tx: Mutex<Option<Sender<WalRecord>>>,
    durable: Arc<(Mutex<Durable>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The batches the records' workers had already logged before this run (the first batch).
    first: BatchId,
}

impl WalWriter {
    /// Starts the writer for this process's workers `local` (global indices) whose first batch is
    /// `first`.
    pub(crate) fn start(
        store: Arc<dyn CheckpointStore>,
        layout: Layout,
        local: std::ops::Range<usize>,
        first: BatchId,
    ) -> std::io::Result<WalWriter> {
        let (tx, rx) = channel();
        let durable = Arc::new((
            Mutex::new(Durable {
                upto: vec![None; local.len()],
                offset: local.start,
                failed: None,
            }),
            Condvar::new(),
        ));
        let shared = Arc::clone(&durable);
        let thread = std::thread::Builder::new()
            .name("offset-log".into())
            .spawn(move || run(store.as_ref(), &layout, &rx, &shared))?;
        Ok(WalWriter {
            tx: Mutex::new(Some(tx)),
            durable,
            thread: Mutex::new(Some(thread)),
            first,
        })
    }

    /// Hands one worker's record over (records of one worker come in batch order).
    pub(crate) fn submit(&self, record: WalRecord) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if tx.as_ref().is_none_or(|tx| tx.send(record).is_err()) {
            self.fail("the offset-log writer has stopped".into());
        }
    }

    /// Why writing failed, if it did.
    pub(crate) fn failure(&self) -> Option<String> {
        lock(&self.durable.0).failed.clone()
    }

    fn fail(&self, why: String) {
        let (state, changed) = &*self.durable;
        lock(state).failed.get_or_insert(why);
        changed.notify_all();
    }

    /// Waits until the record of `batch` of every worker of this process is durable. In a job of
    /// several processes, every worker also waits for its own record before its input moves past
    /// the batch ([`WalWriter::worker_durable`]), so the batch's outputs, which run on process 0
    /// once every worker's input has moved past it, never run before every record is durable.
    ///
    /// # Errors
    /// Why the log could not be written: the batch's output must not leave the process.
    pub(crate) fn wait_durable(&self, batch: BatchId) -> Result<(), String> {
        if batch < self.first {
            return Ok(());
        }
        let (state, changed) = &*self.durable;
        let mut durable = lock(state);
        loop {
            if let Some(why) = &durable.failed {
                return Err(format!("batch {batch} is not in the offset log: {why}"));
            }
            if durable.upto.iter().all(|u| u.is_some_and(|u| u >= batch)) {
                return Ok(());
            }
            let (next, timeout) = changed
                .wait_timeout(durable, Duration::from_secs(10))
                .unwrap_or_else(|p| p.into_inner());
            durable = next;
            if timeout.timed_out() {
                tracing::warn!(
                    batch,
                    "outputs wait for the offset log: the checkpoint storage is slow"
                );
            }
        }
    }

    /// Whether worker `worker`'s record of `batch` is durable.
    ///
    /// # Errors
    /// Why the log could not be written.
    pub(crate) fn worker_durable(&self, batch: BatchId, worker: usize) -> Result<bool, String> {
        if batch < self.first {
            return Ok(true);
        }
        let durable = lock(&self.durable.0);
        if let Some(why) = &durable.failed {
            return Err(format!("batch {batch} is not in the offset log: {why}"));
        }
        Ok(durable
            .upto
            .get(worker.wrapping_sub(durable.offset))
            .is_some_and(|u| u.is_some_and(|u| u >= batch)))
    }

    /// Writes what was handed over and stops the thread.
    pub(crate) fn finish(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread
            && t.join().is_err()
        {
            self.fail("the offset-log writer panicked".into());
        }
    }
}

fn lock(m: &Mutex<Durable>) -> MutexGuard<'_, Durable> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes records as they come, one worker's in order; after a failure it writes nothing more
/// (a later record durable past a missing one would be of no use).
fn run(
    store: &dyn CheckpointStore,
    layout: &Layout,
    rx: &Receiver<WalRecord>,
    durable: &(Mutex<Durable>, Condvar),
) {
    let mut queue: VecDeque<WalRecord> = VecDeque::new();
    while let Ok(first) = rx.recv() {
        queue.push_back(first);
        queue.extend(rx.try_iter());
        while let Some(record) = queue.pop_front() {
            if lock(&durable.0).failed.is_some() {
                continue;
            }
            let path = layout.wal(record.batch, record.epoch, record.worker, record.workers);
            let written = store.put(&path, encode(Kind::Wal, &record));
            let mut state = lock(&durable.0);
            match written {
                Ok(()) => {
                    let at = (record.worker as usize).wrapping_sub(state.offset);
                    if let Some(slot) = state.upto.get_mut(at) {
                        *slot = Some(record.batch);
                    }
                }
                Err(e) => {
                    tracing::error!(batch = record.batch, worker = record.worker, error = %e,
                        "offset log not written; the job stops");
                    state.failed.get_or_insert(e.to_string());
                }
            }
            drop(state);
            durable.1.notify_all();
        }
    }
}
