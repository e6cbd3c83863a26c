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
        /// The error beneath the source's report (an I/O or broker error), when it gave one.
        #[source]
        cause: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
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
    /// The processes of a job could not connect to each other (a process did not start, runs
    /// with other settings, or is unreachable).
    #[error("cluster: process {process} could not join the job: {message}")]
    ClusterStart {
        /// This process's index.
        process: usize,
        /// What went wrong, naming the peer.
        message: String,
    },
    /// Another process of the job was lost (it died or became unreachable). timely is
    /// fail-stop: every process stops; restart them all and the job resumes from its latest
    /// checkpoint.
    #[error(
        "lost process {process} ({address}): {cause}; every process of the job stops: restart them and the job resumes from its latest checkpoint"
    )]
    PeerLost {
        /// The lost process's index.
        process: usize,
        /// Its address in the host file.
        address: String,
        /// How its connection ended.
        cause: String,
    },
    /// Another worker failed and the job stopped with it; that worker's error says why.
    #[error("another worker failed; see its error")]
    PeerFailed,
    /// The job could not be restored from its checkpoint, or could not keep its offset log.
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
}

/// Why a job could not start from its checkpoint or keep its offset log, and who must act.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The checkpoint storage failed. Retrying may help; if not, the operator must look at the
    /// storage (disk, permissions, credentials).
    #[error(transparent)]
    Store(#[from] crate::checkpoint::StoreError),
    /// The newest checkpoint was taken by another job (other streams, windows or key groups).
    /// The user must either run the job that took it or start anew with `--from-scratch`, which
    /// keeps the old checkpoints aside.
    #[error(
        "the checkpoint at {store} (batch {batch}) was taken by a different job: {}; run the same job, or start anew with --from-scratch (old checkpoints are kept aside)",
        differences.join("; ")
    )]
    JobChanged {
        /// The checkpoint storage.
        store: String,
        /// The checkpoint's batch.
        batch: u64,
        /// What differs, one entry per setting.
        differences: Vec<String>,
    },
    /// An operator's saved state does not decode as that operator's state: the checkpoint was
    /// written by another version, or damaged after its checksum was taken.
    #[error("the checkpoint's state of operator `{operator}` cannot be read: {message}")]
    State {
        /// The operator's name.
        operator: String,
        /// The decoder's message.
        message: String,
    },
    /// The offset log could not be written, so no output of the batches after it may leave
    /// the process; the job stops. The operator must look at the checkpoint storage; a restart
    /// resumes from the last checkpoint.
    #[error("the offset log could not be written: {message}")]
    OffsetLog {
        /// What the storage said.
        message: String,
    },
    /// A batch re-run after a restart read past its logged end: the input at those offsets is
    /// not what the batch read the first time (the source skipped records, or the input was
    /// replaced). Its results would differ, so the run stops.
    #[error(
        "batch {batch} of source `{source_name}` partition {partition} was at offset {expected} the first time and is at {got} now: the input changed; restore it or start anew with --from-scratch"
    )]
    InputChanged {
        /// The batch being re-run.
        batch: u64,
        /// The source.
        source_name: String,
        /// The partition.
        partition: u32,
        /// The offset the log recorded.
        expected: u64,
        /// Where reading ended now.
        got: u64,
    },
    /// A batch logged before the restart cannot be read again: the input no longer holds it
    /// (retention removed it, or the log was replaced). The user must restore the input or start
    /// anew with `--from-scratch`.
    #[error(
        "batch {batch} read source `{source_name}` partition {partition} up to offset {expected}, but the input now ends at {got}; restore the input or start anew with --from-scratch"
    )]
    InputTruncated {
        /// The batch being re-run.
        batch: u64,
        /// The source.
        source_name: String,
        /// The partition.
        partition: u32,
        /// The offset the log recorded.
        expected: u64,
        /// Where the input ends now.
        got: u64,
    },
}

/// The engine's `Result`.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
