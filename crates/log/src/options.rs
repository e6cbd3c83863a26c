//! How a [`crate::Log`] is opened: durability, segment size, retention, access.

use std::time::Duration;

use crate::{Error, Result};

/// When appended records are forced to stable storage (fsync).
///
/// Every setting survives a crash of the *process*: an append returns after its single
/// `write(2)`, so the bytes are in the operating system's page cache. The settings differ in what
/// survives a crash of the *machine* (kernel panic, power loss).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Never fsync (except when asked with [`crate::Topic::sync`]).
    ///
    /// Guarantees: a process crash loses nothing that was acknowledged. A machine crash can lose
    /// any amount of recent data the kernel had not yet written back; recovery on the next open
    /// keeps the longest valid prefix and truncates the rest.
    None,
    /// fsync (`fdatasync`) before `append` returns.
    ///
    /// Guarantees: every acknowledged record survives a machine crash. Concurrent appends to one
    /// partition share one fsync (group commit). In-process readers see a record only after it
    /// is durable. This is the default.
    #[default]
    EveryBatch,
    /// fsync at most every interval, from a background thread, and when a segment is rolled.
    ///
    /// Guarantees: a process crash loses nothing acknowledged; a machine crash loses at most the
    /// records acknowledged in roughly the last interval (plus one fsync's duration). Appends
    /// never wait for an fsync except at a segment roll. Topics that outlive their
    /// [`crate::Log`] handle are synced once when dropped.
    Interval(Duration),
    /// Group commit: appends return after their `write(2)`; a background thread fsyncs every
    /// partition written to (one *group commit*) once `bytes` were appended across the log's
    /// partitions since the last one, and at least every `interval`. In-process readers see
    /// a record once its group commit is done, as under [`Durability::EveryBatch`]; a writer
    /// that needs its records durable now (the end of a replay) calls [`crate::Topic::sync`]
    /// or [`crate::Log::sync`]. When the background thread falls four limits behind, the
    /// appender commits itself.
    ///
    /// Guarantees: a process crash loses nothing that was written. A machine crash loses at
    /// most the records written since the last group commit: about `bytes` (at most four times
    /// `bytes`) or `interval`, whichever is less; everything before a returned
    /// [`crate::Topic::sync`] survives it. Appends never wait for an fsync except at a segment
    /// roll and under back-pressure. Topics that outlive their [`crate::Log`] handle are synced
    /// once when dropped.
    Group {
        /// The longest a written record waits for its group commit.
        interval: Duration,
        /// Bytes written across the log's partitions that start a group commit.
        bytes: u64,
    },
}

impl Durability {
    /// Whether an append is visible to readers as soon as it is written (rather than once it
    /// is durable).
    pub(crate) fn visible_when_written(self) -> bool {
        matches!(self, Durability::None | Durability::Interval(_))
    }

    /// How often the background thread fsyncs, if it does.
    pub(crate) fn background_interval(self) -> Option<Duration> {
        match self {
            Durability::Interval(every)
            | Durability::Group {
                interval: every, ..
            } => Some(every),
            Durability::None | Durability::EveryBatch => None,
        }
    }
}

/// Which old segments retention deletes. Both limits apply per partition; the segment being
/// written is never deleted. Default = keep everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    pub(crate) max_age: Option<Duration>,
    pub(crate) max_bytes: Option<u64>,
}

impl Retention {
    /// Keeps everything (the default).
    pub fn forever() -> Self {
        Retention::default()
    }

    /// Deletes a segment once its last write is older than `age`. Default = no age limit.
    ///
    /// Age is wall-clock time since the segment file was last written (its mtime), not the
    /// records' timestamps: record timestamps are event time chosen by producers, and a replay
    /// of old data would otherwise be deleted as soon as it is written.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// Deletes the oldest segments while a partition holds more than `bytes`. Default = no size
    /// limit.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    /// Whether any limit is set.
    pub fn is_forever(&self) -> bool {
        self.max_age.is_none() && self.max_bytes.is_none()
    }
}

/// Options for [`crate::Log::open`]. Start from [`LogOptions::default`] and chain the setters.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use clickpulse_log::{Durability, LogOptions, Retention};
///
/// let options = LogOptions::default()
///     .durability(Durability::Interval(Duration::from_millis(200)))
///     .segment_bytes(16 << 20)
///     .retention(Retention::forever().max_age(Duration::from_secs(24 * 3600)));
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
pub struct LogOptions {
    pub(crate) durability: Durability,
    pub(crate) segment_bytes: u64,
    pub(crate) retention: Retention,
    pub(crate) retention_check_interval: Duration,
    pub(crate) read_only: bool,
    pub(crate) index_interval_bytes: u64,
    pub(crate) max_read_bytes: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            durability: Durability::EveryBatch,
            segment_bytes: 64 << 20,
            retention: Retention::forever(),
            retention_check_interval: Duration::from_secs(60),
            read_only: false,
            index_interval_bytes: 64 << 10,
            max_read_bytes: 1 << 20,
        }
    }
}

impl LogOptions {
    /// When appends are fsynced. Default = [`Durability::EveryBatch`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Size at which a partition starts a new segment file. A batch never spans two segments,
    /// so a segment can exceed this by one batch. Default = 64 MiB.
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes;
        self
    }

    /// Which old segments to delete. Default = [`Retention::forever`].
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// How often the background thread applies retention (when a limit is set).
    /// [`crate::Log::enforce_retention`] applies it on demand. Default = 60 s.
    pub fn retention_check_interval(mut self, interval: Duration) -> Self {
        self.retention_check_interval = interval;
        self
    }

    /// Opens the log for reading only: no writer locks are taken, nothing on disk is changed, and
    /// another process may be appending at the same time. Readers stop at a batch at the tail that
    /// is incomplete or does not verify yet, and see every batch the writer has completely
    /// written. Default = false.
    ///
    /// A reader in another process cannot see the writer's fsyncs: under
    /// [`Durability::EveryBatch`] it can read a batch in the moment between the writer's
    /// `write(2)` and its fsync. Only a machine crash in that moment loses such a batch; a crash
    /// of the writer process does not.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Bytes of segment between two entries of the in-memory sparse offset index. Smaller
    /// makes random reads faster and costs more memory (16 bytes per entry). Default = 64 KiB.
    pub fn index_interval_bytes(mut self, bytes: u64) -> Self {
        self.index_interval_bytes = bytes;
        self
    }

    /// Bytes read from a segment file by one read call (more when a single batch is larger).
    /// Default = 1 MiB.
    pub fn max_read_bytes(mut self, bytes: usize) -> Self {
        self.max_read_bytes = bytes;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.segment_bytes < 4096 {
            return Err(Error::InvalidArgument(
                "segment_bytes must be at least 4096",
            ));
        }
        if self.index_interval_bytes == 0 {
            return Err(Error::InvalidArgument(
                "index_interval_bytes must be positive",
            ));
        }
        if self.max_read_bytes < 4096 {
            return Err(Error::InvalidArgument(
                "max_read_bytes must be at least 4096",
            ));
        }
        if self.durability == Durability::Interval(Duration::ZERO) {
            return Err(Error::InvalidArgument(
                "Durability::Interval needs a positive interval (use EveryBatch to sync every append)",
            ));
        }
        if let Durability::Group { interval, bytes } = self.durability {
            if interval.is_zero() || bytes == 0 {
                return Err(Error::InvalidArgument(
                    "Durability::Group needs a positive interval and byte count",
                ));
            }
        }
        if self.retention_check_interval.is_zero() {
            return Err(Error::InvalidArgument(
                "retention_check_interval must be positive",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_durable() {
        let options = LogOptions::default();
        assert!(options.validate().is_ok());
        assert_eq!(options.durability, Durability::EveryBatch);
        assert!(options.retention.is_forever());
    }

    #[test]
    fn zero_interval_is_rejected() {
        let options = LogOptions::default().durability(Durability::Interval(Duration::ZERO));
        assert!(matches!(options.validate(), Err(Error::InvalidArgument(_))));
        let options = LogOptions::default().segment_bytes(10);
        assert!(matches!(options.validate(), Err(Error::InvalidArgument(_))));
        for (interval, bytes) in [(Duration::ZERO, 1), (Duration::from_secs(1), 0)] {
            let options = LogOptions::default().durability(Durability::Group { interval, bytes });
            assert!(matches!(options.validate(), Err(Error::InvalidArgument(_))));
        }
    }
}
