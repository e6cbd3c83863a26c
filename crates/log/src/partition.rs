//! One partition: its segments, its writer (appends, rolls, fsyncs, poisoning), its reads and
//! its retention.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use crate::commit::Commits;
use crate::format::{BATCH_HEADER_LEN, BatchHeader, Verify};
use crate::fsio::{self, lock};
use crate::recovery::{self, PartitionName, RecoveryReport};
use crate::retention::{self, RetentionReport, SegmentAge};
use crate::segment::{self, Position, ReadRequest, ReadStop, Segment};
use crate::{Batch, Durability, Error, LogOptions, Records, Result, Retention};

/// The options a partition needs, and what it shares with the log about fsyncs.
#[derive(Debug, Clone)]
pub(crate) struct PartitionConfig {
    pub durability: Durability,
    pub segment_bytes: u64,
    pub index_interval: u64,
    pub max_read_bytes: usize,
    pub commits: Arc<Commits>,
}

impl PartitionConfig {
    pub(crate) fn new(options: &LogOptions, commits: Arc<Commits>) -> Self {
        PartitionConfig {
            durability: options.durability,
            segment_bytes: options.segment_bytes,
            index_interval: options.index_interval_bytes,
            max_read_bytes: options.max_read_bytes,
            commits,
        }
    }
}

/// A partition of a topic.
#[derive(Debug)]
pub(crate) struct Partition {
    topic: Arc<str>,
    id: u32,
    dir: PathBuf,
    config: PartitionConfig,
    /// Segments in offset order; never empty for a writer.
    segments: RwLock<Vec<Arc<Segment>>>,
    /// With a writer: the end offset readers may see (acknowledged records).
    end: AtomicU64,
    /// `None` when the log is read-only.
    writer: Option<WriterSide>,
}

/// The writing half of a partition.
#[derive(Debug)]
struct WriterSide {
    state: Mutex<Writer>,
    /// The end offset known to be fsynced. Its lock serializes fsyncs (group commit: one fsync
    /// covers every batch written before it started). Lock order: `durable`, then `state`.
    durable: Mutex<u64>,
    /// Serializes retention passes.
    retention: Mutex<()>,
}

/// The active segment and the append position. Guarded by `WriterSide::state`.
#[derive(Debug)]
struct Writer {
    file: Arc<File>,
    segment: Arc<Segment>,
    pos: u64,
    next_offset: u64,
    /// Set after a failed fsync or an unrecoverable failed write: the operation and its error.
    poison: Option<(&'static str, String)>,
}

impl Partition {
    /// Opens a partition for writing: recovers its directory and positions the writer at the
    /// end. The caller holds the topic's writer lock.
    pub fn open_writer(
        topic: Arc<str>,
        id: u32,
        dir: PathBuf,
        config: PartitionConfig,
    ) -> Result<(Partition, Option<RecoveryReport>)> {
        let name = PartitionName {
            topic: &topic,
            partition: id,
            dir: &dir,
        };
        let recovered = recovery::recover(&name, config.index_interval)?;
        let Some(active) = recovered.segments.last().cloned() else {
            return Err(Error::TopicNotFound(topic.to_string()));
        };
        let end = active.end();
        let file = open_for_append(&active.path, end.pos)?;
        let writer = Writer {
            file: Arc::new(file),
            segment: active,
            pos: end.pos,
            next_offset: end.offset,
            poison: None,
        };
        let partition = Partition {
            topic,
            id,
            dir,
            config,
            segments: RwLock::new(recovered.segments),
            end: AtomicU64::new(end.offset),
            writer: Some(WriterSide {
                state: Mutex::new(writer),
                durable: Mutex::new(end.offset),
                retention: Mutex::new(()),
            }),
        };
        Ok((partition, recovered.report))
    }

    /// Opens a partition for reading alongside a writer that may be in another process.
    pub fn open_reader(
        topic: Arc<str>,
        id: u32,
        dir: PathBuf,
        config: PartitionConfig,
    ) -> Result<Partition> {
        let partition = Partition {
            topic,
            id,
            dir,
            config,
            segments: RwLock::new(Vec::new()),
            end: AtomicU64::new(0),
            writer: None,
        };
        partition.refresh()?;
        Ok(partition)
    }

    // ----- appending -------------------------------------------------------------------------

    /// Appends a batch; returns the offsets it was given.
    pub fn append(&self, batch: &Batch) -> Result<Range<u64>> {
        let side = self.writer_side()?;
        if batch.is_empty() {
            return Err(Error::EmptyBatch);
        }
        let payload = batch.payload();
        // Checksummed before taking the lock: the lock covers only header, write and index.
        let payload_crc = crc32c::crc32c(payload);
        let range = {
            let mut w = lock(&side.state);
            self.check_poison(&w)?;
            let total = (BATCH_HEADER_LEN + payload.len()) as u64;
            if w.pos > 0 && w.pos + total > self.config.segment_bytes {
                self.roll(&mut w)?;
            }
            let header = BatchHeader {
                payload_len: payload.len() as u32,
                record_count: batch.count(),
                base_offset: w.next_offset,
                max_timestamp: batch.max_timestamp(),
                payload_crc,
            };
            self.write(&mut w, &header.encode(), payload)?;
            let at = Position {
                pos: w.pos,
                offset: w.next_offset,
            };
            let next = Position {
                pos: w.pos + total,
                offset: header.next_offset(),
            };
            w.segment.extend_index(at, next, self.config.index_interval);
            w.pos = next.pos;
            w.next_offset = next.offset;
            if self.config.durability.visible_when_written() {
                self.end.store(next.offset, Ordering::Release);
            }
            at.offset..next.offset
        };
        if self.config.durability == Durability::EveryBatch {
            self.sync_to(side, range.end)?;
        }
        Ok(range)
    }

    fn writer_side(&self) -> Result<&WriterSide> {
        self.writer
            .as_ref()
            .ok_or_else(|| Error::ReadOnly(self.dir.clone()))
    }

    /// Writes header and payload with one `writev(2)`. On failure the partial batch is cut off
    /// again; if even that fails, the writer is poisoned.
    fn write(&self, w: &mut Writer, header: &[u8], payload: &[u8]) -> Result<()> {
        let mut bufs = [IoSlice::new(header), IoSlice::new(payload)];
        let Err(err) = write_batch(&w.file, &mut bufs) else {
            return Ok(());
        };
        let pos = w.pos;
        let undo = w
            .file
            .set_len(pos)
            .and_then(|()| (&*w.file).seek(SeekFrom::Start(pos)).map(drop));
        if let Err(undo_err) = undo {
            let cause = format!("{err}; cutting off the partial batch failed too: {undo_err}");
            w.poison = Some(("write", cause));
        }
        Err(Error::io("appending to", &w.segment.path, err))
    }

    /// Starts a new segment at the writer's next offset. The old one is fsynced first (unless
    /// durability is `None`) so that a machine crash cannot leave a hole before a newer segment.
    fn roll(&self, w: &mut Writer) -> Result<()> {
        if self.config.durability != Durability::None {
            if let Err(err) = sync_data(&w.file) {
                return Err(self.poison(w, "fsync", err));
            }
            self.config.commits.counted_fsync();
        }
        let (segment, file) = match Segment::create(&self.dir, w.next_offset) {
            Ok(created) => created,
            Err(err) => {
                // The new file may exist without a durable directory entry: unknown state.
                w.poison = Some(("segment roll", err.to_string()));
                return Err(err);
            }
        };
        let segment = Arc::new(segment);
        fsio::write(&self.segments).push(Arc::clone(&segment));
        w.file = Arc::new(file);
        w.segment = segment;
        w.pos = 0;
        Ok(())
    }

    /// Makes everything written up to `end` durable, sharing the fsync with concurrent callers,
    /// then publishes it to readers.
    fn sync_to(&self, side: &WriterSide, end: u64) -> Result<()> {
        let mut durable = lock(&side.durable);
        if *durable >= end {
            return Ok(());
        }
        let (file, written, segment) = {
            let w = lock(&side.state);
            self.check_poison(&w)?;
            (Arc::clone(&w.file), w.next_offset, Arc::clone(&w.segment))
        };
        if let Err(err) = sync_data(&file) {
            let mut w = lock(&side.state);
            let err = self.poison(&mut w, "fsync", err);
            tracing::error!(segment = %segment.path.display(), %err, "fsync failed; partition poisoned");
            return Err(err);
        }
        self.config.commits.counted_fsync();
        *durable = written;
        self.end.fetch_max(written, Ordering::Release);
        Ok(())
    }

    /// fsyncs whatever was written and is not yet durable. A no-op for a read-only partition.
    pub fn sync(&self) -> Result<()> {
        let Some(side) = &self.writer else {
            return Ok(());
        };
        let written = lock(&side.state).next_offset;
        self.sync_to(side, written)
    }

    /// Marks the writer poisoned after `err` in `operation`; returns the error to report.
    fn poison(&self, w: &mut Writer, operation: &'static str, err: io::Error) -> Error {
        w.poison = Some((operation, err.to_string()));
        Error::io("fsyncing", &w.segment.path, err)
    }

    fn check_poison(&self, w: &Writer) -> Result<()> {
        match &w.poison {
            None => Ok(()),
            Some((operation, cause)) => Err(Error::Poisoned {
                topic: self.topic.to_string(),
                partition: self.id,
                operation,
                cause: cause.clone(),
            }),
        }
    }

    // ----- offsets ---------------------------------------------------------------------------

    /// The next offset to be written (for a writer: the end of what readers may see).
    pub fn end_offset(&self) -> Result<u64> {
        if self.writer.is_some() {
            return Ok(self.end.load(Ordering::Acquire));
        }
        self.refresh()?;
        let Some(last) = fsio::read(&self.segments).last().cloned() else {
            return Ok(0);
        };
        segment::scan(&last, Verify::Full, self.config.index_interval)
            .map_err(|e| Error::io("scanning segment", &last.path, e))?;
        Ok(last.end().offset)
    }

    /// The earliest offset still in the partition.
    pub fn start_offset(&self) -> Result<u64> {
        if self.writer.is_none() {
            self.refresh()?;
        }
        let segments = fsio::read(&self.segments);
        Ok(segments.first().map_or(0, |s| s.base))
    }

    // ----- reading ---------------------------------------------------------------------------

    /// Reads up to `max_records` records from `from`; fewer only when the end is reached.
    ///
    /// Errors met after some records were read end the read early instead: the next read
    /// starts there and reports them.
    pub fn read(&self, from: u64, max_records: usize) -> Result<Records> {
        let mut records = self.read_step(from, max_records)?;
        while records.len() < max_records && !records.is_empty() {
            match self.read_step(records.next_offset(), max_records - records.len()) {
                Ok(more) if !more.is_empty() => records.extend(more),
                Ok(_) | Err(_) => break,
            }
        }
        Ok(records)
    }

    /// Reads records from `from` that one read buffer (`max_read_bytes`) holds, up to
    /// `max_records`: fewer than [`Partition::read`] may return before the end, but every byte
    /// read is used, where `read` would read a second buffer for the records past the first and
    /// leave that buffer's rest to be read again.
    pub fn read_buffer(&self, from: u64, max_records: usize) -> Result<Records> {
        self.read_step(from, max_records)
    }

    /// One read: records from one buffer of one segment.
    fn read_step(&self, from: u64, max_records: usize) -> Result<Records> {
        if self.writer.is_none() {
            return self.read_detached(from, max_records);
        }
        let end = self.end.load(Ordering::Acquire);
        let Some((segment, next_base, start)) = self.locate(from) else {
            return Err(self.out_of_range(from, self.start_offset()?, end));
        };
        if from > end {
            return Err(self.out_of_range(from, start, end));
        }
        if from == end || max_records == 0 {
            return Ok(Records::empty(from));
        }
        let req = self.request(
            from,
            max_records,
            next_base.map_or(end, |b| b.min(end)),
            true,
        );
        match segment::read(&segment, &req) {
            Ok((records, _)) => Ok(records),
            Err(err) => Err(self.deleted_under_us(err, from)?),
        }
    }

    /// Reads without a writer in this process: the end is wherever valid batches stop.
    fn read_detached(&self, from: u64, max_records: usize) -> Result<Records> {
        let mut refreshed = false;
        loop {
            let Some((segment, next_base, _)) = self.locate(from) else {
                if !refreshed {
                    self.refresh()?;
                    refreshed = true;
                    continue;
                }
                let start = self.start_offset()?;
                return Err(self.out_of_range(from, start, self.end_offset()?));
            };
            // A sealed segment may have been deleted by the writer's retention; its file may
            // still be open here, so ask the directory rather than trust the handle.
            if next_base.is_some() && !refreshed && !segment.path.exists() {
                self.refresh()?;
                refreshed = true;
                continue;
            }
            let limit = next_base.unwrap_or(u64::MAX);
            let req = self.request(from, max_records, limit, next_base.is_some());
            let (records, stop) = match segment::read(&segment, &req) {
                Ok(read) => read,
                Err(err) => match self.deleted_under_us(err, from) {
                    Ok(_) if !refreshed => {
                        self.refresh()?;
                        refreshed = true;
                        continue;
                    }
                    Ok(err) | Err(err) => return Err(err),
                },
            };
            let ReadStop::Tail { offset } = stop else {
                return Ok(records);
            };
            if !records.is_empty() || max_records == 0 {
                return Ok(records);
            }
            // At the tail of the newest segment we know of: the writer may have rolled.
            if !refreshed && next_base.is_none() {
                self.refresh()?;
                refreshed = true;
                if fsio::read(&self.segments).last().map(|s| s.base) != Some(segment.base) {
                    continue;
                }
            }
            if offset < from {
                return Err(self.out_of_range(from, self.start_offset()?, offset));
            }
            return Ok(records);
        }
    }

    fn request(&self, from: u64, max_records: usize, limit: u64, strict: bool) -> ReadRequest {
        ReadRequest {
            from,
            max_records,
            limit,
            strict,
            chunk: self.config.max_read_bytes,
            index_interval: self.config.index_interval,
        }
    }

    /// The segment holding `from`, the next segment's base, and the partition's start; `None`
    /// if `from` is before the start.
    fn locate(&self, from: u64) -> Option<(Arc<Segment>, Option<u64>, u64)> {
        let segments = fsio::read(&self.segments);
        let start = segments.first()?.base;
        let after = segments.partition_point(|s| s.base <= from);
        let segment = segments.get(after.checked_sub(1)?)?;
        let next_base = segments.get(after).map(|s| s.base);
        Some((Arc::clone(segment), next_base, start))
    }

    /// Turns "segment file not found" into "out of range" when retention deleted it mid-read.
    /// `Ok` carries the error to return; `Err` an error that is not about a deletion.
    fn deleted_under_us(&self, err: Error, from: u64) -> Result<Error, Error> {
        let not_found =
            matches!(&err, Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound);
        if !not_found {
            return Err(err);
        }
        let start = self.start_offset()?;
        let end = self.end_offset()?;
        Ok(self.out_of_range(from, start, end))
    }

    fn out_of_range(&self, requested: u64, earliest: u64, end: u64) -> Error {
        Error::OffsetOutOfRange {
            topic: self.topic.to_string(),
            partition: self.id,
            requested,
            earliest,
            end,
        }
    }

    /// Re-lists the segment files (read-only partitions follow the writer's rolls and retention
    /// this way), keeping what is already known about segments that are still there.
    fn refresh(&self) -> Result<()> {
        let listed =
            segment::list(&self.dir).map_err(|e| Error::io("listing segments in", &self.dir, e))?;
        let mut segments = fsio::write(&self.segments);
        let known = std::mem::take(&mut *segments);
        let mut known = known.into_iter().peekable();
        for (base, path) in listed {
            while known.next_if(|s| s.base < base).is_some() {}
            let segment = match known.next_if(|s| s.base == base) {
                Some(segment) => segment,
                None => Arc::new(Segment::new(base, path)),
            };
            segments.push(segment);
        }
        Ok(())
    }

    // ----- retention -------------------------------------------------------------------------

    /// Deletes the old segments `retention` selects. Appends are not blocked: the segment list
    /// is locked only to unlink entries from it; files are deleted afterwards.
    pub fn enforce_retention(
        &self,
        retention: &Retention,
        now: SystemTime,
    ) -> Result<Option<RetentionReport>> {
        let side = self.writer_side()?;
        let _one_pass_at_a_time = lock(&side.retention);
        let snapshot = fsio::read(&self.segments).clone();
        let ages = snapshot
            .iter()
            .map(segment_age)
            .collect::<Result<Vec<_>>>()?;
        let n = retention::segments_to_delete(&ages, retention, now);
        if n == 0 {
            return Ok(None);
        }
        let (removed, start_offset) = {
            let mut segments = fsio::write(&self.segments);
            let n = n.min(segments.len().saturating_sub(1));
            let removed: Vec<_> = segments.drain(..n).collect();
            (removed, segments.first().map_or(0, |s| s.base))
        };
        let mut report = RetentionReport {
            topic: self.topic.to_string(),
            partition: self.id,
            deleted_segments: Vec::with_capacity(removed.len()),
            bytes_deleted: 0,
            start_offset,
        };
        for segment in &removed {
            match fs::remove_file(&segment.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("deleting segment", &segment.path, e)),
            }
            report.bytes_deleted += segment.end().pos;
            report.deleted_segments.push(segment.path.clone());
        }
        fsio::sync_dir(&self.dir).map_err(|e| Error::io("fsyncing directory", &self.dir, e))?;
        tracing::info!(
            topic = %self.topic,
            partition = self.id,
            deleted = report.deleted_segments.len(),
            start_offset,
            "retention deleted old segments"
        );
        Ok(Some(report))
    }

    /// Whether this partition has pending, un-fsynced appends.
    pub fn needs_sync(&self) -> bool {
        let Some(side) = &self.writer else {
            return false;
        };
        let durable = *lock(&side.durable);
        durable < lock(&side.state).next_offset
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        if self.config.durability.background_interval().is_none() || !self.needs_sync() {
            return;
        }
        if let Err(err) = self.sync() {
            tracing::error!(topic = %self.topic, partition = self.id, %err, "final fsync failed");
        }
    }
}

fn segment_age(segment: &Arc<Segment>) -> Result<SegmentAge> {
    let modified = fs::metadata(&segment.path)
        .and_then(|m| m.modified())
        .map_err(|e| Error::io("reading metadata of", &segment.path, e))?;
    Ok(SegmentAge {
        bytes: segment.end().pos,
        modified,
    })
}

/// `fdatasync`, with an injectable failure in unit tests.
fn sync_data(file: &File) -> io::Result<()> {
    #[cfg(test)]
    if faults::take(&faults::FSYNC) {
        return Err(io::Error::other("injected fsync failure"));
    }
    file.sync_data()
}

/// One `writev` of a batch, with an injectable torn write in unit tests.
fn write_batch(file: &File, bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    #[cfg(test)]
    if faults::take(&faults::WRITE) {
        // Part of the header reaches the file, then the device fails.
        let partial = bufs.first().map(|b| &b[..b.len() / 2]).unwrap_or_default();
        fsio::write_all_vectored(file, &mut [IoSlice::new(partial)])?;
        return Err(io::Error::other("injected write failure"));
    }
    fsio::write_all_vectored(file, bufs)
}

/// Failures injected on the current thread by unit tests.
#[cfg(test)]
mod faults {
    use std::cell::Cell;
    use std::thread::LocalKey;

    thread_local! {
        pub static FSYNC: Cell<bool> = const { Cell::new(false) };
        pub static WRITE: Cell<bool> = const { Cell::new(false) };
    }

    /// Whether a failure was armed; disarms it.
    pub fn take(fault: &'static LocalKey<Cell<bool>>) -> bool {
        fault.with(|f| f.replace(false))
    }

    /// Arms a failure for the next operation of its kind on this thread.
    pub fn arm(fault: &'static LocalKey<Cell<bool>>) {
        fault.with(|f| f.set(true));
    }
}

fn open_for_append(path: &Path, pos: u64) -> Result<File> {
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io("opening segment for appending", path, e))?;
    file.seek(SeekFrom::Start(pos))
        .map_err(|e| Error::io("seeking in", path, e))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, durability: Durability) -> Partition {
        let config = PartitionConfig {
            durability,
            segment_bytes: 4096,
            index_interval: 1,
            max_read_bytes: 4096,
            commits: Arc::new(Commits::new(durability)),
        };
        let (partition, report) =
            Partition::open_writer(Arc::from("t"), 0, dir.to_path_buf(), config).expect("open");
        assert_eq!(report, None);
        partition
    }

    fn batch(values: &[&[u8]]) -> Batch {
        let mut batch = Batch::new();
        for (i, value) in values.iter().enumerate() {
            batch.push(i as i64, b"k", value).expect("push");
        }
        batch
    }

    fn values(partition: &Partition, from: u64) -> Vec<Vec<u8>> {
        let records = partition.read(from, 1000).expect("read");
        records.iter().map(|r| r.value.to_vec()).collect()
    }

    #[test]
    fn failed_fsync_poisons_the_partition_and_hides_the_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let partition = open(dir.path(), Durability::EveryBatch);
        assert_eq!(partition.append(&batch(&[b"a"])).expect("append"), 0..1);
        faults::arm(&faults::FSYNC);
        let err = partition
            .append(&batch(&[b"b"]))
            .expect_err("fsync must fail");
        assert!(matches!(err, Error::Io { .. }), "{err}");
        let err = partition.append(&batch(&[b"c"])).expect_err("poisoned");
        assert!(
            matches!(
                err,
                Error::Poisoned {
                    operation: "fsync",
                    ..
                }
            ),
            "{err}"
        );
        assert!(partition.sync().is_err(), "sync of a poisoned partition");
        // Readers see only what was acknowledged.
        assert_eq!(partition.end_offset().expect("end"), 1);
        assert_eq!(values(&partition, 0), vec![b"a".to_vec()]);
    }

    #[test]
    fn failed_write_is_cut_off_and_the_next_append_succeeds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let partition = open(dir.path(), Durability::None);
        partition.append(&batch(&[b"a"])).expect("append");
        faults::arm(&faults::WRITE);
        assert!(partition.append(&batch(&[b"b"])).is_err());
        assert_eq!(partition.append(&batch(&[b"c"])).expect("append"), 1..2);
        assert_eq!(values(&partition, 0), vec![b"a".to_vec(), b"c".to_vec()]);
        drop(partition);
        // Nothing of the failed write is left on disk for recovery to find.
        let reopened = open(dir.path(), Durability::None);
        assert_eq!(values(&reopened, 0), vec![b"a".to_vec(), b"c".to_vec()]);
    }

    #[test]
    fn group_commit_publishes_only_after_fsync() {
        let dir = tempfile::tempdir().expect("tempdir");
        let partition = open(dir.path(), Durability::EveryBatch);
        for i in 0..20u8 {
            partition.append(&batch(&[&[i; 300]])).expect("append");
        }
        assert_eq!(partition.end_offset().expect("end"), 20);
        assert!(!partition.needs_sync());
        assert!(
            segment::list(dir.path()).expect("list").len() > 1,
            "300-byte records in 4 KiB segments must roll"
        );
    }
}
