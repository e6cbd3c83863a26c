//! The crate's error type: every variant says who must act and whether a retry can help.

use std::io;
use std::path::PathBuf;

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the log failed.
///
/// Each variant's documentation says who must act: the **caller** (a bug or a wrong argument in
/// the calling code), the **operator** (disk, permissions, another process, damaged files), or
/// nobody (a retry can succeed). [`Error::is_retryable`] answers the last question in code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file system operation failed.
    ///
    /// Who acts: the operator (disk full, permissions, failing device). A retry can help for
    /// transient conditions such as a full disk that has been cleaned up.
    #[error("I/O error while {action} {path}: {source}")]
    Io {
        /// What the log was doing, e.g. "writing to".
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Another writer (another process, or another [`crate::Log`] in this process) holds the
    /// topic's writer lock.
    ///
    /// Who acts: the operator — stop the other writer — or the caller, by opening the log
    /// read-only ([`crate::LogOptions::read_only`]) to read alongside the writer.
    #[error(
        "topic {topic:?} is already open for writing ({holder}; lock file {path}): stop the other \
         writer, or open the log read-only to read alongside it"
    )]
    Locked {
        /// The topic.
        topic: String,
        /// The lock file.
        path: PathBuf,
        /// Who holds the lock, as far as the lock file says.
        holder: String,
    },

    /// The topic does not exist (or its creation never completed).
    ///
    /// Who acts: the caller — create it with [`crate::Log::create_topic`] first.
    #[error("topic {0:?} does not exist: create it with create_topic first")]
    TopicNotFound(String),

    /// The topic name cannot be used as a directory name.
    ///
    /// Who acts: the caller.
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The topic exists with another partition count. Partition counts never change, because
    /// keys are assigned to partitions by hash.
    ///
    /// Who acts: the caller — use the existing count, or a new topic.
    #[error(
        "topic {topic:?} exists with {existing} partitions, not {requested}: partition counts \
         cannot change; use {existing} or create a new topic"
    )]
    PartitionCountMismatch {
        /// The topic.
        topic: String,
        /// The count on disk.
        existing: u32,
        /// The count asked for.
        requested: u32,
    },

    /// A partition number beyond the topic's partitions.
    ///
    /// Who acts: the caller.
    #[error("topic {topic:?} has {partitions} partitions; partition {partition} does not exist")]
    NoSuchPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many partitions the topic has.
        partitions: u32,
    },

    /// A read asked for an offset that is not in the partition: before the earliest offset kept
    /// (deleted by retention) or after the end.
    ///
    /// Who acts: the caller — reposition the reader, e.g. to `earliest`.
    #[error(
        "offset {requested} is out of range for {topic}/{partition}: earliest is {earliest}, end \
         is {end}"
    )]
    OffsetOutOfRange {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The offset asked for.
        requested: u64,
        /// The earliest offset still in the partition.
        earliest: u64,
        /// The next offset to be written.
        end: u64,
    },

    /// An earlier write or fsync of this partition failed, so what is on disk is unknown; the
    /// partition refuses further appends.
    ///
    /// Who acts: the operator — fix the device, then reopen the log: recovery on open keeps every
    /// valid batch and truncates the rest.
    #[error(
        "partition {topic}/{partition} refuses appends after a failed {operation}: {cause}; fix \
         the disk and reopen the log"
    )]
    Poisoned {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// What failed: "fsync" or "write".
        operation: &'static str,
        /// The original error, as text.
        cause: String,
    },

    /// The operation writes, and the log was opened read-only.
    ///
    /// Who acts: the caller.
    #[error("the log at {0} is open read-only")]
    ReadOnly(PathBuf),

    /// A batch with no records was appended.
    ///
    /// Who acts: the caller.
    #[error("cannot append an empty batch")]
    EmptyBatch,

    /// A batch, key or value is larger than the format allows.
    ///
    /// Who acts: the caller — split the batch.
    #[error("batch of {bytes} bytes exceeds the limit of {limit} bytes: split it")]
    BatchTooLarge {
        /// The size of the batch (or record) in bytes.
        bytes: usize,
        /// The largest size allowed.
        limit: usize,
    },

    /// Data that was acknowledged earlier no longer verifies (bit rot, or a file changed behind the
    /// log's back). Torn tails are not reported this way: recovery repairs them on open.
    ///
    /// Who acts: the operator — restore the file, or delete the damaged segment and everything
    /// after it.
    #[error("corrupt segment {path} at byte {position}: {defect}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte position of the damaged batch.
        position: u64,
        /// What is wrong.
        defect: Defect,
    },

    /// A topic's metadata file is unreadable.
    ///
    /// Who acts: the operator.
    #[error("bad topic metadata in {path}: {reason}")]
    BadMetadata {
        /// The metadata file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// An option or argument is out of range.
    ///
    /// Who acts: the caller.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
}

impl Error {
    /// Whether retrying the same call later can succeed without anyone acting first.
    ///
    /// True for I/O errors (which may be transient) and for [`Error::Locked`] (the other writer
    /// may exit); false for everything that needs a different call or an operator.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Io { .. } | Error::Locked { .. })
    }

    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// What is wrong with the bytes where a batch should start. Reported by recovery and by
/// [`Error::Corrupt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Defect {
    /// Fewer bytes than a batch header remain in the file.
    #[error("truncated batch header")]
    TruncatedHeader,
    /// The header bytes are all zero (a preallocated or zero-filled tail after a crash).
    #[error("zero-filled bytes where a batch should start")]
    ZeroFilled,
    /// The header does not start with the batch magic.
    #[error("bad batch magic")]
    BadMagic,
    /// The header checksum does not match.
    #[error("batch header checksum mismatch")]
    HeaderChecksum,
    /// The header checksum matches but a field is impossible (zero records, oversized payload,
    /// unknown flags).
    #[error("impossible batch header field")]
    BadHeader,
    /// The file ends before the batch's payload does.
    #[error("batch payload truncated")]
    TruncatedPayload,
    /// The payload checksum does not match.
    #[error("batch payload checksum mismatch")]
    PayloadChecksum,
    /// The payload checksum matches but the records do not fill it exactly.
    #[error("malformed records in batch")]
    MalformedRecords,
    /// The batch does not start at the offset where the previous one ended.
    #[error("batch starts at offset {found}, expected {expected}")]
    OffsetMismatch {
        /// The offset the batch should start at.
        expected: u64,
        /// The offset in its header.
        found: u64,
    },
    /// A segment does not start where the previous segment ended.
    #[error("segment starts at offset {found}, expected {expected}")]
    SegmentGap {
        /// The offset the segment should start at.
        expected: u64,
        /// The offset in its file name.
        found: u64,
    },
}
