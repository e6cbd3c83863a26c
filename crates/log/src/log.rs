//! [`Log`]: a directory of topics, and the background thread for interval fsyncs and retention.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::commit::{Commits, Woken};
use crate::fsio::{self, lock};
use crate::topic::{self, Topic, TopicInner};
use crate::{Error, LogOptions, Result, RetentionReport};

/// An embedded log: a directory holding one subdirectory per topic.
///
/// Cheap to clone (an `Arc` inside) and `Send + Sync`. Topics opened through one `Log` are
/// shared: asking twice for a topic returns handles to the same partitions.
///
/// Writing a topic takes its advisory writer lock (one writer process per topic); a log opened
/// with [`LogOptions::read_only`] takes no locks and may read while another process writes.
///
/// With [`crate::Durability::Interval`], [`crate::Durability::Group`] or a [`crate::Retention`]
/// limit, a background thread fsyncs and applies retention; it stops when the last clone of the
/// `Log` is dropped.
///
/// # On disk
///
/// ```text
/// <dir>/<topic>/topic.meta                      "format = 1", "partitions = N" (written last,
///                                               atomically: a topic with metadata is complete)
/// <dir>/<topic>/writer.lock                     flock(2)ed by the writing process; holds its pid
/// <dir>/<topic>/<partition>/<base offset>.log   segments, 20-digit zero-padded base offset
/// ```
///
/// A segment is a sequence of record batches, each a 40-byte header (magic `CPLB`, header
/// CRC32C, payload length, record count, base offset, max timestamp, payload CRC32C) followed by
/// its records; see [`crate::format`] for the byte layout. Segments roll at
/// [`LogOptions::segment_bytes`]; the offset index is sparse, in memory, and rebuilt on open.
/// Opening a topic for writing verifies the tail and truncates a torn or corrupt one, reporting
/// it ([`Topic::recovery`], see [`crate::recovery`]). Directories are fsynced when topics,
/// partitions and segments are created or deleted.
///
/// # Examples
///
/// ```
/// use clickpulse_log::{Log, LogOptions};
///
/// let dir = tempfile::tempdir()?;
/// let log = Log::open(dir.path(), LogOptions::default())?;
/// log.create_topic("clicks", 4)?;
/// drop(log);
///
/// let log = Log::open(dir.path(), LogOptions::default())?;
/// assert_eq!(log.topic("clicks")?.partitions(), 4);
/// assert!(log.create_topic("clicks", 8).is_err()); // partition counts never change
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Log {
    inner: Arc<LogInner>,
}

#[derive(Debug)]
struct LogInner {
    shared: Arc<Shared>,
    /// Declared after `shared`: dropping it stops and joins the thread.
    _maintenance: Option<Maintenance>,
}

/// State shared with the background thread.
#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    options: LogOptions,
    topics: Mutex<HashMap<String, Arc<TopicInner>>>,
    commits: Arc<Commits>,
}

impl Log {
    /// Opens (creating if needed, unless read-only) the log in `dir`. Topics are opened — and,
    /// for writing, locked and recovered — when first asked for.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for inconsistent options; [`Error::Io`] if the directory cannot
    /// be created (or, read-only, does not exist).
    pub fn open(dir: impl AsRef<Path>, options: LogOptions) -> Result<Log> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        if options.read_only {
            fs::metadata(&dir).map_err(|e| Error::io("opening log directory", &dir, e))?;
        } else {
            create_dir_durably(&dir)?;
        }
        let shared = Arc::new(Shared {
            dir,
            commits: Arc::new(Commits::new(options.durability)),
            options,
            topics: Mutex::new(HashMap::new()),
        });
        let maintenance = Maintenance::start(&shared)?;
        Ok(Log {
            inner: Arc::new(LogInner {
                shared,
                _maintenance: maintenance,
            }),
        })
    }

    /// Creates topic `name` with `partitions` partitions, or opens it if it already exists with
    /// that many.
    ///
    /// # Errors
    ///
    /// [`Error::PartitionCountMismatch`] if it exists with another count;
    /// [`Error::InvalidTopicName`]; [`Error::InvalidArgument`] for 0 or more than 4096
    /// partitions; [`Error::Locked`] if another writer has it open; [`Error::ReadOnly`];
    /// [`Error::Io`].
    pub fn create_topic(&self, name: &str, partitions: u32) -> Result<Topic> {
        let shared = &self.inner.shared;
        if shared.options.read_only {
            return Err(Error::ReadOnly(shared.dir.clone()));
        }
        let mut topics = lock(&shared.topics);
        if let Some(inner) = topics.get(name) {
            if inner.partition_count() != partitions {
                return Err(Error::PartitionCountMismatch {
                    topic: name.to_owned(),
                    existing: inner.partition_count(),
                    requested: partitions,
                });
            }
            return Ok(Topic::new(Arc::clone(inner)));
        }
        let inner = Arc::new(topic::create(
            &shared.dir,
            name,
            partitions,
            &shared.options,
            &shared.commits,
        )?);
        topics.insert(name.to_owned(), Arc::clone(&inner));
        Ok(Topic::new(inner))
    }

    /// Opens existing topic `name`: for writing (taking its lock and recovering its partitions,
    /// see [`Topic::recovery`]) or, if the log is read-only, for reading.
    ///
    /// # Errors
    ///
    /// [`Error::TopicNotFound`]; [`Error::Locked`] if another writer has it open;
    /// [`Error::BadMetadata`]; [`Error::Io`].
    pub fn topic(&self, name: &str) -> Result<Topic> {
        let shared = &self.inner.shared;
        let mut topics = lock(&shared.topics);
        if let Some(inner) = topics.get(name) {
            return Ok(Topic::new(Arc::clone(inner)));
        }
        let inner = Arc::new(topic::open(
            &shared.dir,
            name,
            &shared.options,
            &shared.commits,
        )?);
        topics.insert(name.to_owned(), Arc::clone(&inner));
        Ok(Topic::new(inner))
    }

    /// Names of the topics in the directory, sorted.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the directory cannot be listed.
    pub fn topic_names(&self) -> Result<Vec<String>> {
        let dir = &self.inner.shared.dir;
        let entries = fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("listing", dir, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if topic::validate_name(&name).is_ok() && entry.path().join("topic.meta").exists() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// fsyncs the un-synced appends of every topic opened through this log.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if an fsync failed (that partition is then poisoned); [`Error::Poisoned`].
    pub fn sync(&self) -> Result<()> {
        self.inner
            .shared
            .open_topics()
            .iter()
            .try_for_each(|t| t.sync())
    }

    /// fsyncs of segment files done so far by this log's topics: what a durability setting
    /// costs.
    pub fn fsyncs(&self) -> u64 {
        self.inner.shared.commits.fsyncs()
    }

    /// Applies retention now to every topic opened for writing through this log.
    ///
    /// # Errors
    ///
    /// [`Error::ReadOnly`]; [`Error::Io`] if listing or deleting files failed.
    pub fn enforce_retention(&self) -> Result<Vec<RetentionReport>> {
        self.inner.shared.enforce_retention()
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.shared.dir
    }

    /// Whether the log was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.inner.shared.options.read_only
    }
}

impl Shared {
    fn open_topics(&self) -> Vec<Arc<TopicInner>> {
        lock(&self.topics).values().cloned().collect()
    }

    fn enforce_retention(&self) -> Result<Vec<RetentionReport>> {
        if self.options.read_only {
            return Err(Error::ReadOnly(self.dir.clone()));
        }
        let mut reports = Vec::new();
        for inner in self.open_topics() {
            reports.extend(Topic::new(inner).enforce_retention()?);
        }
        Ok(reports)
    }

    fn sync_dirty(&self) {
        self.commits.committing();
        for inner in self.open_topics() {
            if !inner.needs_sync() {
                continue;
            }
            if let Err(err) = inner.sync() {
                tracing::error!(%err, "interval fsync failed");
            }
        }
    }
}

/// Creates `dir` (and missing parents) and fsyncs the parent so that the new entry is durable.
fn create_dir_durably(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| Error::io("creating log directory", dir, e))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fsio::sync_dir(parent).map_err(|e| Error::io("fsyncing directory", parent, e))?;
    }
    Ok(())
}

/// The background thread: interval fsyncs, group commits and periodic retention.
#[derive(Debug)]
struct Maintenance {
    commits: Arc<Commits>,
    handle: Option<JoinHandle<()>>,
}

impl Maintenance {
    /// Starts the thread if the options need one.
    fn start(shared: &Arc<Shared>) -> Result<Option<Maintenance>> {
        let options = &shared.options;
        let sync_every = options.durability.background_interval();
        let retention_every =
            (!options.retention.is_forever()).then_some(options.retention_check_interval);
        if options.read_only || (sync_every.is_none() && retention_every.is_none()) {
            return Ok(None);
        }
        let commits = Arc::clone(&shared.commits);
        let shared = Arc::clone(shared);
        let handle = std::thread::Builder::new()
            .name("clickpulse-log-maintenance".to_owned())
            .spawn(move || run(&shared, sync_every, retention_every))
            .map_err(|e| Error::io("starting the maintenance thread for", PathBuf::new(), e))?;
        Ok(Some(Maintenance {
            commits,
            handle: Some(handle),
        }))
    }
}

impl Drop for Maintenance {
    fn drop(&mut self) {
        self.commits.stop();
        if let Some(handle) = self.handle.take() {
            if handle.join().is_err() {
                tracing::error!("log maintenance thread panicked");
            }
        }
    }
}

/// The thread body: sleeps until the next due task or until stopped.
fn run(shared: &Shared, sync_every: Option<Duration>, retention_every: Option<Duration>) {
    let due = |every: Option<Duration>| every.map(|e| Instant::now() + e);
    let mut next_sync = due(sync_every);
    let mut next_retention = due(retention_every);
    loop {
        let next = next_sync.into_iter().chain(next_retention).min();
        let woken = shared.commits.wait(next);
        if woken == Woken::Stop {
            return;
        }
        let now = Instant::now();
        // A group commit asked for by an appender, or the interval's.
        if woken == Woken::Commit || next_sync.is_some_and(|t| t <= now) {
            shared.sync_dirty();
            next_sync = due(sync_every);
        }
        if next_retention.is_some_and(|t| t <= now) {
            if let Err(err) = shared.enforce_retention() {
                tracing::error!(%err, "retention failed");
            }
            next_retention = due(retention_every);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{Batch, Durability, Retention};

    /// Polls `done` until it holds or a generous deadline passes (a liveness check of the
    /// background thread, not a speed test).
    fn eventually(mut done: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    fn batch(len: usize) -> Batch {
        let mut batch = Batch::new();
        batch.push(0, b"", &vec![7; len]).expect("push");
        batch
    }

    #[test]
    fn interval_durability_is_synced_by_the_background_thread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options =
            LogOptions::default().durability(Durability::Interval(Duration::from_millis(5)));
        let log = Log::open(dir.path(), options).expect("open");
        let topic = log.create_topic("t", 1).expect("topic");
        topic.append(0, &batch(10)).expect("append");
        let inner = lock(&log.inner.shared.topics)
            .get("t")
            .cloned()
            .expect("open topic");
        assert!(eventually(|| !inner.needs_sync()), "never synced");
    }

    #[test]
    fn group_commits_make_records_visible_and_count_their_fsyncs() {
        let dir = tempfile::tempdir().expect("tempdir");
        // An interval far beyond the test: only the byte limit and explicit syncs commit.
        let group = Durability::Group {
            interval: Duration::from_secs(3600),
            bytes: 1000,
        };
        let log = Log::open(dir.path(), LogOptions::default().durability(group)).expect("open");
        let topic = log.create_topic("t", 2).expect("topic");
        topic.append(0, &batch(100)).expect("append");
        assert_eq!(
            topic.end_offset(0).expect("end"),
            0,
            "visible before its commit"
        );
        assert_eq!(log.fsyncs(), 0, "no fsync per append");
        // Crossing the byte limit (across partitions) wakes the background thread.
        topic.append(1, &batch(1000)).expect("append");
        assert!(
            eventually(
                || topic.end_offset(0).ok() == Some(1) && topic.end_offset(1).ok() == Some(1)
            ),
            "the group commit never came"
        );
        assert_eq!(log.fsyncs(), 2, "one fsync per partition written");
        topic.append(0, &batch(10)).expect("append");
        topic.sync().expect("sync");
        assert_eq!(
            topic.end_offset(0).expect("end"),
            2,
            "visible after an explicit sync"
        );
        assert_eq!(topic.fsyncs(), 3);
    }

    #[test]
    fn an_appender_far_ahead_of_the_group_commits_commits_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let group = Durability::Group {
            interval: Duration::from_secs(3600),
            bytes: 1,
        };
        let log = Log::open(dir.path(), LogOptions::default().durability(group)).expect("open");
        let topic = log.create_topic("t", 1).expect("topic");
        // One batch is more than four limits: the append commits before it returns.
        topic.append(0, &batch(100)).expect("append");
        assert_eq!(topic.end_offset(0).expect("end"), 1);
    }

    #[test]
    fn retention_runs_in_the_background() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = LogOptions::default()
            .durability(Durability::None)
            .segment_bytes(4096)
            .retention(Retention::forever().max_bytes(8192))
            .retention_check_interval(Duration::from_millis(5));
        let log = Log::open(dir.path(), options).expect("open");
        let topic = log.create_topic("t", 1).expect("topic");
        for _ in 0..20 {
            topic.append(0, &batch(2000)).expect("append");
        }
        assert!(
            eventually(|| topic.start_offset(0).is_ok_and(|start| start > 0)),
            "retention never ran"
        );
    }

    #[test]
    fn dropping_the_log_stops_the_thread_and_releases_the_topics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options =
            LogOptions::default().durability(Durability::Interval(Duration::from_millis(1)));
        let log = Log::open(dir.path(), options.clone()).expect("open");
        log.create_topic("t", 1).expect("topic");
        drop(log);
        let again = Log::open(dir.path(), options).expect("reopen");
        again
            .topic("t")
            .expect("lock released when the log was dropped");
    }
}
