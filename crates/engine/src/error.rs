//! The engine's error type.

use std::time::Duration;

/// What went wrong, and who must act on it.
///
/// Configuration and job-definition errors are the caller's to fix and never succeed on retry;
/// [`EngineError::Source`] carries the source's own judgement of whether a retry can help.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A window length or slide is not a whole, positive multiple of the batch interval.
    #[error(
        "{what} is {value:?}, which is not a positive multiple of the batch interval {batch_interval:?}"
    )]
    NotBatchMultiple {
        /// Which setting (`window length`, `slide duration`).
        what: &'static str,
        /// The value given.
        value: Duration,
        /// The context's batch interval.
        batch_interval: Duration,
    },
    /// A configuration value is out of range; `key` names it.
    #[error("invalid setting `{key}`: {reason}")]
    InvalidConfig {
        /// The setting's name.
        key: &'static str,
        /// Why it is rejected.
        reason: String,
    },
    /// The job defines no output operation, so nothing would ever run.
    #[error("the job has no output operation (foreach_batch, print, save_as_text_files, ...)")]
    NoOutput,
    /// A source failed.
    #[error("source `{source_name}` failed: {message}")]
    Source {
        /// The source's name.
        source_name: String,
        /// What it reported.
        message: String,
        /// Whether retrying may help.
        retryable: bool,
    },
    /// An output operation failed (for example a file could not be written).
    #[error("output `{output}` failed: {message}")]
    Output {
        /// The output's name.
        output: String,
        /// What went wrong.
        message: String,
    },
    /// The dataflow runtime failed (a worker thread panicked or could not start).
    #[error("dataflow runtime: {0}")]
    Runtime(String),
}

/// The engine's `Result`.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
