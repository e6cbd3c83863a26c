//! What a [`crate::Log`]'s partitions and its background thread share about fsyncs: the count
//! of fsyncs, and for [`Durability::Group`] the bytes written since the last group commit and
//! the signal that asks the background thread for one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use crate::Durability;
use crate::fsio::lock;

/// When the bytes waiting for a group commit reach this many times the group's byte limit (the
/// background thread has fallen behind the appenders), the appender commits itself: what a
/// machine crash can lose stays bounded.
const BACKPRESSURE: u64 = 4;

/// Shared by a log's topics, partitions and background thread.
#[derive(Debug)]
pub(crate) struct Commits {
    /// `Some(bytes)` under [`Durability::Group`]: ask for a group commit once this many bytes
    /// were written since the last one.
    group_bytes: Option<u64>,
    /// Bytes appended since the last group commit began (all topics of the log).
    unsynced: AtomicU64,
    /// fsyncs of segment files, counted for [`crate::Log::stats`].
    fsyncs: AtomicU64,
    /// Wakes the background thread: to stop, or for a group commit.
    signal: Mutex<Signal>,
    wake: Condvar,
}

/// Why the background thread was woken.
#[derive(Debug, Default)]
struct Signal {
    stop: bool,
    commit: bool,
}

/// What [`Commits::appended`] asks of the appender.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AfterAppend {
    /// Nothing: the background thread commits in time.
    Return,
    /// Commit now, on the appending thread: the background thread has fallen behind.
    CommitHere,
}

/// How the background thread's wait ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Woken {
    Stop,
    Commit,
    Timeout,
}

impl Commits {
    pub(crate) fn new(durability: Durability) -> Self {
        Commits {
            group_bytes: match durability {
                Durability::Group { bytes, .. } => Some(bytes.max(1)),
                _ => None,
            },
            unsynced: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            signal: Mutex::new(Signal::default()),
            wake: Condvar::new(),
        }
    }

    /// Counts one fsync of a segment file.
    pub(crate) fn counted_fsync(&self) {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
    }

    /// fsyncs of segment files so far.
    pub(crate) fn fsyncs(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }

    /// Notes `bytes` appended (under [`Durability::Group`]; a no-op otherwise) and wakes the
    /// background thread when a group commit is due.
    pub(crate) fn appended(&self, bytes: u64) -> AfterAppend {
        let Some(limit) = self.group_bytes else {
            return AfterAppend::Return;
        };
        let before = self.unsynced.fetch_add(bytes, Ordering::AcqRel);
        let after = before.saturating_add(bytes);
        if after >= limit.saturating_mul(BACKPRESSURE) {
            self.unsynced.store(0, Ordering::Release);
            return AfterAppend::CommitHere;
        }
        if before < limit && after >= limit {
            lock(&self.signal).commit = true;
            self.wake.notify_all();
        }
        AfterAppend::Return
    }

    /// Called as a group commit begins: what is written from now on counts for the next one.
    pub(crate) fn committing(&self) {
        self.unsynced.store(0, Ordering::Release);
    }

    /// Asks the background thread to stop.
    pub(crate) fn stop(&self) {
        lock(&self.signal).stop = true;
        self.wake.notify_all();
    }

    /// Waits until `deadline` (forever when `None`), a stop or a group commit request.
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> Woken {
        let mut signal = lock(&self.signal);
        loop {
            if signal.stop {
                return Woken::Stop;
            }
            if std::mem::take(&mut signal.commit) {
                return Woken::Commit;
            }
            let now = Instant::now();
            signal = match deadline {
                Some(at) if at <= now => return Woken::Timeout,
                Some(at) => match self.wake.wait_timeout(signal, at - now) {
                    Ok((guard, _)) => guard,
                    Err(poisoned) => poisoned.into_inner().0,
                },
                None => match self.wake.wait(signal) {
                    Ok(guard) => guard,
                    Err(poisoned) => poisoned.into_inner(),
                },
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn group(bytes: u64) -> Commits {
        Commits::new(Durability::Group {
            interval: Duration::from_secs(1),
            bytes,
        })
    }

    #[test]
    fn a_group_commit_is_asked_for_once_the_limit_is_crossed() {
        let commits = group(100);
        assert_eq!(commits.appended(60), AfterAppend::Return);
        assert_eq!(commits.wait(Some(Instant::now())), Woken::Timeout);
        assert_eq!(commits.appended(60), AfterAppend::Return);
        assert_eq!(commits.wait(Some(Instant::now())), Woken::Commit);
        // Asked once per crossing, not once per append beyond the limit.
        assert_eq!(commits.appended(10), AfterAppend::Return);
        assert_eq!(commits.wait(Some(Instant::now())), Woken::Timeout);
        commits.committing();
        assert_eq!(commits.appended(100), AfterAppend::Return);
        assert_eq!(commits.wait(Some(Instant::now())), Woken::Commit);
    }

    #[test]
    fn an_appender_far_ahead_of_the_thread_commits_itself() {
        let commits = group(100);
        assert_eq!(commits.appended(399), AfterAppend::Return);
        assert_eq!(commits.appended(1), AfterAppend::CommitHere);
        assert_eq!(
            commits.appended(1),
            AfterAppend::Return,
            "counting starts again"
        );
    }

    #[test]
    fn other_durabilities_never_ask() {
        let commits = Commits::new(Durability::EveryBatch);
        assert_eq!(commits.appended(u64::MAX), AfterAppend::Return);
        commits.stop();
        assert_eq!(commits.wait(None), Woken::Stop);
    }
}
