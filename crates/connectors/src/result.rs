//! Result batches and the sink trait every result destination implements.

use std::sync::Arc;

use clickpulse_events::JsonRows;
use serde::{Deserialize, Serialize};

/// One stream's rows of one batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultBatch {
    /// The stream's name (`page_views`, `top_pages`, …).
    pub stream: String,
    /// The engine batch that produced the rows.
    pub batch: u64,
    /// The earliest window start among the rows, when the rows are windowed.
    pub window_start_ms: Option<u64>,
    /// The latest window end among the rows, when the rows are windowed.
    pub window_end_ms: Option<u64>,
    /// The rows, JSON objects with the stream's fields, serialised where they were computed.
    pub rows: JsonRows,
}

/// A sink failure.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing failed; the operator must look at the destination (disk, permissions, broker).
    #[error("{sink}: {message}")]
    Write {
        /// Which sink.
        sink: String,
        /// What went wrong.
        message: String,
    },
}

/// A destination for result batches. Called from the engine's output thread: a sink must not
/// block for long (hand slow work to its own thread).
pub trait ResultSink: Send {
    /// A short name for logs.
    fn name(&self) -> &str;

    /// Takes one stream's rows of one batch.
    ///
    /// # Errors
    /// A [`SinkError`] when the batch could not be delivered.
    fn write(&mut self, batch: &ResultBatch) -> Result<(), SinkError>;

    /// Takes a batch that other sinks share; sinks that keep or pass on batches override it to
    /// avoid a copy. By default the same as [`write`](Self::write).
    ///
    /// # Errors
    /// As [`write`](Self::write).
    fn write_shared(&mut self, batch: &Arc<ResultBatch>) -> Result<(), SinkError> {
        self.write(batch)
    }

    /// Waits until every batch taken so far has reached its destination. By default nothing to
    /// wait for.
    ///
    /// # Errors
    /// A [`SinkError`] for a batch that could not be delivered.
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}
