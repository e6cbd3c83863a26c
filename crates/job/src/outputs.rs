//! Where the standard job's batches go: every registered [`ResultSink`].

use std::sync::{Arc, Mutex};

use clickpulse_connectors::{ResultBatch, ResultSink};

/// The sinks a job writes to, shared by the job's output operations (which run on worker 0).
///
/// Once a sink fails, every later batch is refused: a sink that lost batch `b` must not get
/// `b + 1` (Kafka's restart rule relies on a partition holding `b + 1` holding all of `b`), and
/// no checkpoint may be committed past it. The job stops, and a restart from the last checkpoint
/// writes the batches again.
#[derive(Clone, Default)]
pub struct Outputs {
    sinks: Arc<Mutex<Vec<Box<dyn ResultSink>>>>,
    failed: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for Outputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outputs").finish_non_exhaustive()
    }
}

impl Outputs {
    /// No sinks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a sink.
    pub fn add(&self, sink: Box<dyn ResultSink>) {
        self.sinks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(sink);
    }

    /// Hands `batch` to every sink; a failing sink does not keep the batch from the others.
    ///
    /// # Errors
    /// The first sink's failure (this batch's or an earlier one's: after a failure, every batch
    /// is refused).
    pub fn write(&self, batch: ResultBatch) -> Result<(), String> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        let batch = Arc::new(batch);
        let mut sinks = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        let mut first = None;
        for sink in sinks.iter_mut() {
            if let Err(e) = sink.write_shared(&batch) {
                tracing::error!(sink = sink.name(), stream = %batch.stream, batch = batch.batch,
                    error = %e, "result sink failed");
                first.get_or_insert_with(|| format!("{}: {e}", sink.name()));
            }
        }
        match first {
            Some(e) => {
                self.failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert_with(|| e.clone());
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// The first sink failure, if one happened.
    pub fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until every sink has delivered what it was given; logs each failure.
    ///
    /// # Errors
    /// How many sinks failed, when any did.
    pub fn flush(&self) -> Result<(), String> {
        if let Some(e) = self.failure() {
            return Err(format!("a result sink failed earlier: {e}"));
        }
        let mut sinks = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        let mut failed = 0;
        for sink in sinks.iter_mut() {
            if let Err(e) = sink.flush() {
                tracing::error!(sink = sink.name(), error = %e, "result sink failed");
                failed += 1;
            }
        }
        match failed {
            0 => Ok(()),
            n => Err(format!("{n} result sink(s) failed; see the log")),
        }
    }
}

/// A sink that keeps every batch in memory (for tests and benchmarks).
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    batches: Arc<Mutex<Vec<ResultBatch>>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every batch written so far.
    pub fn batches(&self) -> Vec<ResultBatch> {
        self.batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every row of `stream`, in batch order, parsed.
    pub fn rows(&self, stream: &str) -> Vec<serde_json::Value> {
        self.batches()
            .into_iter()
            .filter(|b| b.stream == stream)
            .flat_map(|b| b.rows.to_values())
            .collect()
    }
}

impl ResultSink for MemorySink {
    fn name(&self) -> &str {
        "memory"
    }

    fn write(&mut self, batch: &ResultBatch) -> Result<(), clickpulse_connectors::SinkError> {
        self.batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(batch.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickpulse_connectors::SinkError;

    /// Fails from its `fail_at`-th batch on.
    struct Flaky {
        seen: usize,
        fail_at: usize,
    }

    impl ResultSink for Flaky {
        fn name(&self) -> &str {
            "flaky"
        }

        fn write(&mut self, _batch: &ResultBatch) -> Result<(), SinkError> {
            self.seen += 1;
            if self.seen > self.fail_at {
                return Err(SinkError::Write {
                    sink: "flaky".into(),
                    message: "disk full".into(),
                });
            }
            Ok(())
        }
    }

    fn batch(b: u64) -> ResultBatch {
        ResultBatch {
            stream: "s".into(),
            batch: b,
            window_start_ms: None,
            window_end_ms: None,
            rows: vec![serde_json::json!({"n": b})].into(),
        }
    }

    #[test]
    fn after_a_sink_fails_every_batch_is_refused_and_flush_fails() {
        let outputs = Outputs::new();
        let memory = MemorySink::new();
        outputs.add(Box::new(Flaky {
            seen: 0,
            fail_at: 1,
        }));
        outputs.add(Box::new(memory.clone()));
        assert!(outputs.write(batch(0)).is_ok());
        assert!(outputs.flush().is_ok());
        let err = outputs.write(batch(1)).unwrap_err();
        assert!(err.contains("disk full"), "{err}");
        // The other sink still got the failing batch; nothing after it reaches any sink.
        assert!(outputs.write(batch(2)).is_err());
        let got: Vec<u64> = memory.batches().iter().map(|b| b.batch).collect();
        assert_eq!(got, vec![0, 1]);
        assert!(outputs.flush().is_err(), "no checkpoint past a failure");
    }
}
