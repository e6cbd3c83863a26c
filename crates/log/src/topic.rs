//! [`Topic`]: a named set of partitions, its metadata file and its writer lock.

use std::fs;
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::commit::{AfterAppend, Commits};
use crate::format::BATCH_HEADER_LEN;
use crate::fsio;
use crate::lock::{self, Acquired, WriterLock};
use crate::partition::{Partition, PartitionConfig};
use crate::{
    Batch, Error, LogOptions, Reader, Records, RecoveryReport, Result, Retention, RetentionReport,
};

/// The metadata file of a topic directory.
const META_FILE: &str = "topic.meta";
/// The metadata format version written by this crate.
const META_FORMAT: u32 = 1;
/// Most partitions a topic may have.
pub const MAX_PARTITIONS: u32 = 4096;

/// A topic: `partitions()` partitions, each an ordered, offset-addressed sequence of records.
///
/// Cheap to clone (an `Arc` inside); `Send + Sync`, so one handle can be shared by appending and
/// reading threads. Appends to one partition are serialized by that partition's writer lock;
/// reads never take it.
///
/// # Examples
///
/// ```
/// use clickpulse_log::{Batch, Log, LogOptions};
///
/// let dir = tempfile::tempdir()?;
/// let log = Log::open(dir.path(), LogOptions::default())?;
/// let topic = log.create_topic("clicks", 2)?;
///
/// let mut batch = Batch::new();
/// batch.push(1_000, b"visitor-7", b"/pricing")?;
/// batch.push(1_010, b"visitor-7", b"/signup")?;
/// assert_eq!(topic.append(1, &batch)?, 0..2);
///
/// let records = topic.read(1, 0, 10)?;
/// let urls: Vec<&[u8]> = records.iter().map(|r| r.value).collect();
/// assert_eq!(urls, [&b"/pricing"[..], &b"/signup"[..]]);
/// assert_eq!(topic.end_offset(1)?, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Topic {
    inner: Arc<TopicInner>,
}

/// The shared state behind [`Topic`] handles.
#[derive(Debug)]
pub(crate) struct TopicInner {
    name: Arc<str>,
    dir: PathBuf,
    /// Dropped before `_lock` (field order), so the final fsyncs happen under the lock.
    partitions: Vec<Partition>,
    recovery: Vec<RecoveryReport>,
    retention: Retention,
    read_only: bool,
    commits: Arc<Commits>,
    _lock: Option<WriterLock>,
}

impl Topic {
    pub(crate) fn new(inner: Arc<TopicInner>) -> Self {
        Topic { inner }
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// fsyncs of segment files done so far by the log this topic was opened through (all its
    /// topics): what a durability setting costs.
    pub fn fsyncs(&self) -> u64 {
        self.inner.commits.fsyncs()
    }

    /// The number of partitions (fixed at creation).
    pub fn partitions(&self) -> u32 {
        self.inner.partitions.len() as u32
    }

    /// The topic's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Whether this handle can only read.
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// What recovery removed when the topic was opened for writing: one report per partition
    /// whose tail was damaged, empty when everything was intact.
    pub fn recovery(&self) -> &[RecoveryReport] {
        &self.inner.recovery
    }

    /// Appends the records of `batch` to `partition` and returns the offsets they were given
    /// (`start..end`, dense). With [`crate::Durability::EveryBatch`] the records are fsynced
    /// before this returns.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchPartition`], [`Error::EmptyBatch`], [`Error::ReadOnly`] for a wrong call;
    /// [`Error::Io`] if the write or fsync failed; [`Error::Poisoned`] after an earlier failed
    /// fsync of this partition.
    pub fn append(&self, partition: u32, batch: &Batch) -> Result<Range<u64>> {
        let range = self.partition(partition)?.append(batch)?;
        let written = (BATCH_HEADER_LEN + batch.payload().len()) as u64;
        if self.inner.commits.appended(written) == AfterAppend::CommitHere {
            self.inner.sync()?;
        }
        Ok(range)
    }

    /// Reads up to `max_records` records of `partition`, starting at offset `from`.
    ///
    /// Returns fewer than `max_records` records only when it reaches the end of what is
    /// readable (for a read-only handle: the last complete, valid batch). Continue at
    /// [`Records::next_offset`], or use a [`Reader`], which does that for you. Damage met after
    /// some records were read ends the read there; the next read reports it.
    ///
    /// # Errors
    ///
    /// [`Error::OffsetOutOfRange`] if `from` is before the earliest offset kept (retention) or
    /// after the end; [`Error::NoSuchPartition`]; [`Error::Io`]; [`Error::Corrupt`] if stored data
    /// no longer verifies.
    pub fn read(&self, partition: u32, from: u64, max_records: usize) -> Result<Records> {
        self.partition(partition)?.read(from, max_records)
    }

    /// Like [`Topic::read`], but only the records one read buffer (`max_read_bytes` of the
    /// options) holds: no records only at the end of what is readable. For readers that keep
    /// what they read and hand it out in pieces ([`Records::advance`]).
    ///
    /// # Errors
    ///
    /// As [`Topic::read`].
    pub fn read_buffer(&self, partition: u32, from: u64, max_records: usize) -> Result<Records> {
        self.partition(partition)?.read_buffer(from, max_records)
    }

    /// A reader of `partition` positioned at `from`, which remembers its position.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchPartition`].
    pub fn reader(&self, partition: u32, from: u64) -> Result<Reader> {
        self.partition(partition)?;
        Ok(Reader::new(self.clone(), partition, from))
    }

    /// The next offset to be written in `partition`: one past the last record readers can see.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchPartition`]; for a read-only handle, [`Error::Io`] while finding the end.
    pub fn end_offset(&self, partition: u32) -> Result<u64> {
        self.partition(partition)?.end_offset()
    }

    /// The earliest offset still stored in `partition` (0 until retention deletes a segment).
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchPartition`]; for a read-only handle, [`Error::Io`] while listing segments.
    pub fn start_offset(&self, partition: u32) -> Result<u64> {
        self.partition(partition)?.start_offset()
    }

    /// fsyncs every partition's un-synced appends now, whatever the durability setting
    /// (e.g. before writing a checkpoint under [`crate::Durability::None`]).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if an fsync failed (the partition is then poisoned);
    /// [`Error::Poisoned`].
    pub fn sync(&self) -> Result<()> {
        self.inner.partitions.iter().try_for_each(Partition::sync)
    }

    /// Applies the log's retention to every partition now and reports what was deleted.
    ///
    /// # Errors
    ///
    /// [`Error::ReadOnly`]; [`Error::Io`] if listing or deleting files failed.
    pub fn enforce_retention(&self) -> Result<Vec<RetentionReport>> {
        let now = SystemTime::now();
        let mut reports = Vec::new();
        for partition in &self.inner.partitions {
            if let Some(report) = partition.enforce_retention(&self.inner.retention, now)? {
                reports.push(report);
            }
        }
        Ok(reports)
    }

    fn partition(&self, partition: u32) -> Result<&Partition> {
        self.inner
            .partitions
            .get(partition as usize)
            .ok_or_else(|| Error::NoSuchPartition {
                topic: self.name().to_owned(),
                partition,
                partitions: self.partitions(),
            })
    }
}

impl TopicInner {
    pub(crate) fn needs_sync(&self) -> bool {
        self.partitions.iter().any(Partition::needs_sync)
    }

    pub(crate) fn sync(&self) -> Result<()> {
        self.partitions.iter().try_for_each(Partition::sync)
    }

    pub(crate) fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }
}

/// Checks that `name` can be a directory name of its own.
pub(crate) fn validate_name(name: &str) -> Result<()> {
    let invalid = |reason| {
        Err(Error::InvalidTopicName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 200 {
        return invalid("must be 1 to 200 bytes long");
    }
    if name.starts_with('.') {
        return invalid("must not start with '.'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return invalid("may contain only ASCII letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

/// Creates the topic (or opens it if it exists with the same partition count) for writing.
pub(crate) fn create(
    log_dir: &Path,
    name: &str,
    partitions: u32,
    options: &LogOptions,
    commits: &Arc<Commits>,
) -> Result<TopicInner> {
    validate_name(name)?;
    if partitions == 0 || partitions > MAX_PARTITIONS {
        return Err(Error::InvalidArgument("a topic needs 1 to 4096 partitions"));
    }
    let dir = log_dir.join(name);
    match fs::create_dir(&dir) {
        Ok(()) => {
            fsio::sync_dir(log_dir).map_err(|e| Error::io("fsyncing directory", log_dir, e))?
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("creating topic directory", &dir, e)),
    }
    let lock = acquire_lock(name, &dir)?;
    if let Some(existing) = read_meta(&dir)? {
        if existing != partitions {
            return Err(Error::PartitionCountMismatch {
                topic: name.to_owned(),
                existing,
                requested: partitions,
            });
        }
        return open_partitions(name, dir, existing, options, commits, Some(lock));
    }
    for p in 0..partitions {
        let partition_dir = dir.join(p.to_string());
        match fs::create_dir(&partition_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("creating partition directory", &partition_dir, e)),
        }
    }
    fsio::sync_dir(&dir).map_err(|e| Error::io("fsyncing directory", &dir, e))?;
    // Partitions first (each creates its first segment), metadata last: a topic whose metadata
    // exists is complete.
    let topic = open_partitions(name, dir, partitions, options, commits, Some(lock))?;
    write_meta(&topic.dir, partitions)?;
    Ok(topic)
}

/// Opens an existing topic, for writing or (with `options.read_only`) for reading.
pub(crate) fn open(
    log_dir: &Path,
    name: &str,
    options: &LogOptions,
    commits: &Arc<Commits>,
) -> Result<TopicInner> {
    validate_name(name)?;
    let dir = log_dir.join(name);
    let not_found = || Error::TopicNotFound(name.to_owned());
    if options.read_only {
        let partitions = read_meta(&dir)?.ok_or_else(not_found)?;
        return open_partitions(name, dir, partitions, options, commits, None);
    }
    if read_meta(&dir)?.is_none() {
        return Err(not_found());
    }
    let lock = acquire_lock(name, &dir)?;
    let partitions = read_meta(&dir)?.ok_or_else(not_found)?;
    open_partitions(name, dir, partitions, options, commits, Some(lock))
}

fn acquire_lock(name: &str, dir: &Path) -> Result<WriterLock> {
    let path = lock::lock_path(dir);
    match WriterLock::try_acquire(&path) {
        Ok(Acquired::Locked(lock)) => Ok(lock),
        Ok(Acquired::HeldBy(holder)) => Err(Error::Locked {
            topic: name.to_owned(),
            path,
            holder,
        }),
        Err(e) => Err(Error::io("locking", path, e)),
    }
}

fn open_partitions(
    name: &str,
    dir: PathBuf,
    partitions: u32,
    options: &LogOptions,
    commits: &Arc<Commits>,
    lock: Option<WriterLock>,
) -> Result<TopicInner> {
    let topic: Arc<str> = Arc::from(name);
    let config = PartitionConfig::new(options, Arc::clone(commits));
    let mut opened = Vec::with_capacity(partitions as usize);
    let mut recovery = Vec::new();
    for p in 0..partitions {
        let partition_dir = dir.join(p.to_string());
        if lock.is_some() {
            let (partition, report) =
                Partition::open_writer(Arc::clone(&topic), p, partition_dir, config.clone())?;
            opened.push(partition);
            recovery.extend(report);
        } else {
            opened.push(Partition::open_reader(
                Arc::clone(&topic),
                p,
                partition_dir,
                config.clone(),
            )?);
        }
    }
    Ok(TopicInner {
        name: topic,
        dir,
        partitions: opened,
        recovery,
        retention: options.retention,
        read_only: lock.is_none(),
        commits: Arc::clone(commits),
        _lock: lock,
    })
}

/// Reads the partition count from the metadata file; `None` if there is none.
fn read_meta(dir: &Path) -> Result<Option<u32>> {
    let path = dir.join(META_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("reading topic metadata", &path, e)),
    };
    parse_meta(&text)
        .map(Some)
        .map_err(|reason| Error::BadMetadata { path, reason })
}

/// Parses `format = 1` / `partitions = N` lines. Pure.
fn parse_meta(text: &str) -> Result<u32, String> {
    let mut format = None;
    let mut partitions = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {line:?} is not `key = value`"));
        };
        let value = value.trim();
        let number = value
            .parse::<u32>()
            .map_err(|_| format!("{} = {value:?} is not a number", key.trim()))?;
        match key.trim() {
            "format" => format = Some(number),
            "partitions" => partitions = Some(number),
            other => return Err(format!("unknown key {other:?}")),
        }
    }
    match (format, partitions) {
        (Some(META_FORMAT), Some(n)) if (1..=MAX_PARTITIONS).contains(&n) => Ok(n),
        (Some(META_FORMAT), Some(n)) => Err(format!("partition count {n} out of range")),
        (Some(f), _) => Err(format!(
            "unsupported format {f} (this build reads {META_FORMAT})"
        )),
        _ => Err("missing `format` or `partitions`".to_owned()),
    }
}

/// Writes the metadata file atomically: temporary file, fsync, rename, directory fsync.
fn write_meta(dir: &Path, partitions: u32) -> Result<()> {
    let path = dir.join(META_FILE);
    let tmp = dir.join(format!("{META_FILE}.tmp"));
    let text = format!(
        "# clickpulse-log topic metadata; do not edit\nformat = {META_FORMAT}\npartitions = {partitions}\n"
    );
    let write = || -> io::Result<()> {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, &path)?;
        fsio::sync_dir(dir)
    };
    write().map_err(|e| Error::io("writing topic metadata", &path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_plain_directory_names_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a b",
            "ü",
            &"x".repeat(201),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["clicks", "page_views.30s", "tenant-1"] {
            assert!(validate_name(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn metadata_parses_and_rejects_garbage() {
        assert_eq!(parse_meta("format = 1\npartitions = 4\n"), Ok(4));
        assert_eq!(parse_meta("# c\nformat=1\n\npartitions=1"), Ok(1));
        assert!(parse_meta("format = 2\npartitions = 4\n").is_err());
        assert!(parse_meta("format = 1\npartitions = 0\n").is_err());
        assert!(parse_meta("format = 1\n").is_err());
        assert!(parse_meta("format = 1\npartitions = four\n").is_err());
        assert!(parse_meta("format = 1\npartitions = 4\ncolour = 3\n").is_err());
    }
}
