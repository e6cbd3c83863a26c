//! Where the standard job's batches go: every registered [`ResultSink`].

use std::sync::{Arc, Mutex};

use clickpulse_connectors::{ResultBatch, ResultSink};

/// The sinks a job writes to, shared by the job's output operations (which run on worker 0).
#[derive(Clone, Default)]
pub struct Outputs {
    sinks: Arc<Mutex<Vec<Box<dyn ResultSink>>>>,
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

    /// Hands `batch` to every sink; a failing sink is logged and does not stop the others.
    pub fn write(&self, batch: ResultBatch) {
        let batch = Arc::new(batch);
        let mut sinks = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        for sink in sinks.iter_mut() {
            if let Err(e) = sink.write_shared(&batch) {
                tracing::error!(sink = sink.name(), stream = %batch.stream, batch = batch.batch,
                    error = %e, "result sink failed");
            }
        }
    }

    /// Waits until every sink has delivered what it was given; logs each failure.
    ///
    /// # Errors
    /// How many sinks failed, when any did.
    pub fn flush(&self) -> Result<(), String> {
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
