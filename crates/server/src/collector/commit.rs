//! Group commit: one writer thread appends the events of many requests in one call.
//!
//! Requests queue their events on a bounded channel and wait for a one-shot answer. The writer
//! takes the first waiting job, then everything else already queued (up to a cap), appends it
//! all with one [`EventAppender::append`] — one write and one fsync for the whole group — and
//! answers every job of the group. Under load, groups grow by themselves: the longer an fsync
//! takes, the more requests are waiting when it returns.

use std::sync::Arc;
use std::thread::JoinHandle;

use clickpulse_events::ClickEvent;
use tokio::sync::{mpsc, oneshot};

use super::appender::{AppendError, EventAppender};

/// Requests that may wait for the writer before new ones wait for a queue slot.
const QUEUE_DEPTH: usize = 1024;

/// One request's events and where to send the outcome.
struct Job {
    events: Vec<ClickEvent>,
    done: oneshot::Sender<Result<(), AppendError>>,
}

/// The sending side of the writer thread; the thread ends when the last clone is dropped.
#[derive(Debug, Clone)]
pub(crate) struct CommitQueue {
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("events", &self.events.len())
            .finish()
    }
}

impl CommitQueue {
    /// Starts the writer thread. A group holds at most `max_group_events` events (a single
    /// larger request still goes alone).
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub(crate) fn start(
        appender: Arc<dyn EventAppender>,
        max_group_events: usize,
    ) -> std::io::Result<(Self, JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let handle = std::thread::Builder::new()
            .name("clickpulse-collector-writer".into())
            .spawn(move || write_loop(rx, appender.as_ref(), max_group_events.max(1)))?;
        Ok((CommitQueue { tx }, handle))
    }

    /// Appends `events` durably; returns once the writer's append call for them returned.
    ///
    /// # Errors
    /// The appender's error, or [`AppendError::Unavailable`] when the writer has stopped.
    pub(crate) async fn append(&self, events: Vec<ClickEvent>) -> Result<(), AppendError> {
        let (done, outcome) = oneshot::channel();
        let stopped = || AppendError::Unavailable("the collector writer has stopped".into());
        self.tx
            .send(Job { events, done })
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

fn write_loop(mut rx: mpsc::Receiver<Job>, appender: &dyn EventAppender, max_group: usize) {
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        let mut size = group.iter().map(|j| j.events.len()).sum::<usize>();
        while size < max_group {
            let Ok(job) = rx.try_recv() else { break };
            size += job.events.len();
            group.push(job);
        }
        commit(group, appender);
    }
}

/// Appends a group with one call and answers each of its jobs.
fn commit(mut group: Vec<Job>, appender: &dyn EventAppender) {
    let outcome = if let [only] = group.as_slice() {
        appender.append(&only.events)
    } else {
        let total = group.iter().map(|j| j.events.len()).sum();
        let mut all = Vec::with_capacity(total);
        for job in &mut group {
            all.append(&mut job.events);
        }
        appender.append(&all)
    };
    if let Err(e) = &outcome {
        tracing::warn!(error = %e, requests = group.len(), "collector append failed");
    }
    for job in group {
        // A requester that went away (client disconnected) no longer needs the answer.
        let _ = job.done.send(outcome.clone());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::mpsc as std_mpsc;

    use super::*;
    use crate::collector::appender::MemoryAppender;

    /// Blocks each append until the test lets it go, to make requests pile up.
    struct GatedAppender {
        inner: MemoryAppender,
        entered: Mutex<std_mpsc::Sender<usize>>,
        gate: Mutex<std_mpsc::Receiver<()>>,
    }

    impl EventAppender for GatedAppender {
        fn append(&self, events: &[ClickEvent]) -> Result<(), AppendError> {
            let entered = self.entered.lock().expect("lock").clone();
            let _ = entered.send(events.len());
            let _ = self.gate.lock().expect("lock").recv();
            self.inner.append(events)
        }
    }

    struct FailingAppender;

    impl EventAppender for FailingAppender {
        fn append(&self, _: &[ClickEvent]) -> Result<(), AppendError> {
            Err(AppendError::Io(Arc::new(std::io::Error::other(
                "disk on fire",
            ))))
        }
    }

    fn events(n: usize, tag: &str) -> Vec<ClickEvent> {
        (0..n)
            .map(|i| ClickEvent::page_view(i as u64, tag, "/"))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_waiting_during_an_append_are_committed_together() {
        let (entered_tx, entered_rx) = std_mpsc::channel();
        let (gate_tx, gate_rx) = std_mpsc::channel();
        let appender = Arc::new(GatedAppender {
            inner: MemoryAppender::new(),
            entered: Mutex::new(entered_tx),
            gate: Mutex::new(gate_rx),
        });
        let (queue, writer) = CommitQueue::start(appender.clone(), 10_000).expect("start");

        // The first request enters the appender and is held there.
        let q = queue.clone();
        let first = tokio::spawn(async move { q.append(events(1, "a")).await });
        let n = tokio::task::spawn_blocking(move || {
            let n = entered_rx.recv().expect("entered");
            (n, entered_rx)
        });
        let (n, entered_rx) = n.await.expect("join");
        assert_eq!(n, 1);

        // Three more queue up behind it.
        let waiting: Vec<_> = (0..3)
            .map(|i| {
                let q = queue.clone();
                tokio::spawn(async move { q.append(events(2, &format!("b{i}"))).await })
            })
            .collect();
        while queue.tx.capacity() > QUEUE_DEPTH - 3 {
            tokio::task::yield_now().await;
        }
        gate_tx.send(()).expect("release first");
        first.await.expect("join").expect("first append");
        let n = tokio::task::spawn_blocking(move || entered_rx.recv().expect("entered"));
        assert_eq!(
            n.await.expect("join"),
            6,
            "one append for the three waiting requests"
        );
        gate_tx.send(()).expect("release group");
        for w in waiting {
            w.await.expect("join").expect("grouped append");
        }
        assert_eq!(appender.inner.appends(), 2);
        assert_eq!(appender.inner.len(), 7);
        drop(queue);
        drop(gate_tx);
        writer
            .join()
            .expect("writer ends when the queue is dropped");
    }

    #[tokio::test]
    async fn an_append_error_reaches_the_request() {
        let (queue, _writer) = CommitQueue::start(Arc::new(FailingAppender), 100).expect("start");
        let err = queue.append(events(1, "a")).await.expect_err("fails");
        assert!(matches!(err, AppendError::Io(_)));
        assert!(err.is_retryable());
    }
}
