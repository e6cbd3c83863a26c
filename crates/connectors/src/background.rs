//! Runs a slow sink on a thread of its own, so that the engine's output thread only hands batches
//! over.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use crate::result::{ResultBatch, ResultSink, SinkError};

enum Message {
    Batch(Arc<ResultBatch>),
    Flush(SyncSender<Result<(), SinkError>>),
}

/// A sink that writes through another sink on a background thread, in the order batches come.
///
/// Up to `capacity` batches wait for the thread; a write beyond that blocks until the thread has
/// caught up, so a slow destination slows the job down instead of filling memory. A failed write
/// is logged with the stream and batch and then reported by the next [`ResultSink::flush`]; it
/// does not stop later batches. Dropping the sink writes what is queued, then ends the thread.
///
/// # Examples
/// ```
/// use clickpulse_connectors::{BackgroundSink, ResultBatch, ResultSink, files::JsonlSink};
/// use clickpulse_events::JsonRow;
/// let dir = tempfile::tempdir().unwrap();
/// let mut sink = BackgroundSink::new(JsonlSink::new(dir.path()), 8).unwrap();
/// sink.write(&ResultBatch {
///     stream: "page_views".into(),
///     batch: 1,
///     window_start_ms: None,
///     window_end_ms: None,
///     rows: vec![JsonRow::from(serde_json::json!({"count": 2}))].into(),
/// }).unwrap();
/// sink.flush().unwrap(); // waits for the file
/// assert!(dir.path().join("page_views/batch-000000000001.jsonl").exists());
/// ```
pub struct BackgroundSink {
    name: String,
    queue: Option<SyncSender<Message>>,
    thread: Option<JoinHandle<()>>,
}

impl BackgroundSink {
    /// Moves `sink` to a new thread with room for `capacity` waiting batches.
    ///
    /// # Errors
    /// [`SinkError::Write`] when the thread cannot be started.
    pub fn new<S: ResultSink + 'static>(mut sink: S, capacity: usize) -> Result<Self, SinkError> {
        let name = sink.name().to_string();
        let (queue, rx): (_, Receiver<Message>) = sync_channel(capacity.max(1));
        let thread = std::thread::Builder::new()
            .name(format!("sink-{name}"))
            .spawn(move || {
                let mut failure: Option<SinkError> = None;
                for message in rx {
                    match message {
                        Message::Batch(batch) => {
                            if let Err(e) = sink.write_shared(&batch) {
                                tracing::error!(sink = sink.name(), stream = %batch.stream,
                                    batch = batch.batch, error = %e, "result sink failed");
                                failure.get_or_insert(e);
                            }
                        }
                        Message::Flush(reply) => {
                            let result = match failure.take() {
                                Some(e) => Err(e),
                                None => sink.flush(),
                            };
                            // The flusher may have given up waiting; nothing to do then.
                            let _ = reply.send(result);
                        }
                    }
                }
                if let Err(e) = sink.flush() {
                    tracing::error!(sink = sink.name(), error = %e, "result sink failed to flush");
                }
            })
            .map_err(|e| SinkError::Write {
                sink: name.clone(),
                message: format!("cannot start the sink's thread: {e}"),
            })?;
        Ok(BackgroundSink {
            name,
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    fn send(&self, message: Message) -> Result<(), SinkError> {
        let gone = || SinkError::Write {
            sink: self.name.clone(),
            message: "the sink's thread has stopped".into(),
        };
        self.queue
            .as_ref()
            .ok_or_else(gone)?
            .send(message)
            .map_err(|_| gone())
    }
}

impl std::fmt::Debug for BackgroundSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackgroundSink")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ResultSink for BackgroundSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(&mut self, batch: &ResultBatch) -> Result<(), SinkError> {
        self.send(Message::Batch(Arc::new(batch.clone())))
    }

    fn write_shared(&mut self, batch: &Arc<ResultBatch>) -> Result<(), SinkError> {
        self.send(Message::Batch(Arc::clone(batch)))
    }

    /// Waits until every batch handed over so far is written; reports the first failure since
    /// the last flush.
    fn flush(&mut self) -> Result<(), SinkError> {
        let (reply, done) = sync_channel(1);
        self.send(Message::Flush(reply))?;
        done.recv().map_err(|_| SinkError::Write {
            sink: self.name.clone(),
            message: "the sink's thread has stopped".into(),
        })?
    }
}

impl Drop for BackgroundSink {
    fn drop(&mut self) {
        self.queue = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!(sink = %self.name, "the sink's thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use clickpulse_events::JsonRows;

    use super::*;

    /// Records batch ids; fails the batches listed in `fail`.
    struct Recording {
        seen: Arc<Mutex<Vec<u64>>>,
        fail: Vec<u64>,
    }

    impl ResultSink for Recording {
        fn name(&self) -> &str {
            "recording"
        }
        fn write(&mut self, batch: &ResultBatch) -> Result<(), SinkError> {
            std::thread::sleep(std::time::Duration::from_millis(1));
            self.seen.lock().unwrap().push(batch.batch);
            if self.fail.contains(&batch.batch) {
                return Err(SinkError::Write {
                    sink: "recording".into(),
                    message: format!("batch {} refused", batch.batch),
                });
            }
            Ok(())
        }
    }

    fn batch(id: u64) -> ResultBatch {
        ResultBatch {
            stream: "s".into(),
            batch: id,
            window_start_ms: None,
            window_end_ms: None,
            rows: JsonRows::new(),
        }
    }

    #[test]
    fn writes_in_order_and_flush_waits_for_all() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let inner = Recording {
            seen: Arc::clone(&seen),
            fail: Vec::new(),
        };
        let mut sink = BackgroundSink::new(inner, 2).unwrap();
        for id in 0..20 {
            sink.write(&batch(id)).unwrap();
        }
        sink.flush().unwrap();
        assert_eq!(*seen.lock().unwrap(), (0..20).collect::<Vec<_>>());
    }

    #[test]
    fn a_failed_batch_is_reported_by_flush_and_later_batches_still_go() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let inner = Recording {
            seen: Arc::clone(&seen),
            fail: vec![3],
        };
        let mut sink = BackgroundSink::new(inner, 4).unwrap();
        for id in 0..6 {
            sink.write(&batch(id)).unwrap();
        }
        let err = sink.flush().unwrap_err();
        assert!(err.to_string().contains("batch 3 refused"), "{err}");
        assert_eq!(*seen.lock().unwrap(), (0..6).collect::<Vec<_>>());
        sink.flush().unwrap();
    }

    #[test]
    fn dropping_writes_what_is_queued() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let inner = Recording {
            seen: Arc::clone(&seen),
            fail: Vec::new(),
        };
        let mut sink = BackgroundSink::new(inner, 16).unwrap();
        for id in 0..10 {
            sink.write(&batch(id)).unwrap();
        }
        drop(sink);
        assert_eq!(seen.lock().unwrap().len(), 10);
    }
}
