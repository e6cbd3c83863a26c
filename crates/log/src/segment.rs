//! One segment file: its name, its sparse in-memory index, and the two ways of walking it —
//! scanning (recovery and tail discovery) and reading records.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};

use crate::format::{self, BATCH_HEADER_LEN, BatchCheck, BatchHeader, Verify};
use crate::fsio::{self, read_at_most};
use crate::records::{Records, Span};
use crate::{Defect, Error, Result};

/// Suffix of segment file names.
const SEGMENT_SUFFIX: &str = ".log";

/// Bytes read per step when hopping over batch headers without checking payloads.
const HEADER_SCAN_CHUNK: usize = 16 << 10;

/// The file name of the segment whose first offset is `base`.
pub(crate) fn file_name(base: u64) -> String {
    format!("{base:020}{SEGMENT_SUFFIX}")
}

/// The base offset in a segment file name, or `None` if the name is not a segment's.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segment files in a partition directory, by ascending base offset. Other files are ignored.
pub(crate) fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(base) = entry.file_name().to_str().and_then(parse_file_name) {
            segments.push((base, entry.path()));
        }
    }
    segments.sort_unstable_by_key(|(base, _)| *base);
    Ok(segments)
}

/// A position in a segment: a byte position where a batch starts (or would start) and the offset
/// of that batch's first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub pos: u64,
    pub offset: u64,
}

/// Sparse map from offsets to byte positions, plus the end of the verified prefix of the segment.
#[derive(Debug)]
pub(crate) struct SegmentIndex {
    /// Batch starts, ascending; the first is always the segment start.
    entries: Vec<Position>,
    /// Where the verified prefix ends: the next batch goes here.
    end: Position,
}

impl SegmentIndex {
    fn new(base: u64) -> Self {
        let start = Position {
            pos: 0,
            offset: base,
        };
        SegmentIndex {
            entries: vec![start],
            end: start,
        }
    }

    /// The last indexed batch start at or before `offset`.
    pub fn floor(&self, offset: u64) -> Position {
        let after = self.entries.partition_point(|e| e.offset <= offset);
        after
            .checked_sub(1)
            .and_then(|i| self.entries.get(i))
            .copied()
            .unwrap_or(self.end)
    }

    /// The end of the verified prefix.
    pub fn end(&self) -> Position {
        self.end
    }

    /// Records a verified batch at `at` that ends at `next`. Ignored unless it continues the
    /// verified prefix.
    pub fn extend(&mut self, at: Position, next: Position, interval: u64) {
        if at != self.end {
            return;
        }
        let last_entry = self.entries.last().map_or(0, |e| e.pos);
        if at.pos >= last_entry.saturating_add(interval) {
            self.entries.push(at);
        }
        self.end = next;
    }
}

/// A segment file of a partition.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Offset of the first record.
    pub base: u64,
    /// The file.
    pub path: PathBuf,
    /// Read handle, opened on first use so that old segments cost no file descriptor until read.
    file: OnceLock<Arc<File>>,
    /// Sparse index and verified end.
    pub index: RwLock<SegmentIndex>,
}

impl Segment {
    /// A segment for an existing file; nothing is read yet.
    pub fn new(base: u64, path: PathBuf) -> Self {
        Segment {
            base,
            path,
            file: OnceLock::new(),
            index: RwLock::new(SegmentIndex::new(base)),
        }
    }

    /// Creates an empty segment file starting at `base` in `dir` and fsyncs the directory.
    /// Returns the segment and a handle for appending to it.
    pub fn create(dir: &Path, base: u64) -> Result<(Segment, File)> {
        let path = dir.join(file_name(base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io("creating segment", &path, e))?;
        fsio::sync_dir(dir).map_err(|e| Error::io("fsyncing directory", dir, e))?;
        Ok((Segment::new(base, path), file))
    }

    /// The read handle.
    pub fn file(&self) -> io::Result<&Arc<File>> {
        if let Some(file) = self.file.get() {
            return Ok(file);
        }
        let file = Arc::new(File::open(&self.path)?);
        Ok(self.file.get_or_init(|| file))
    }

    /// The end of the verified prefix.
    pub fn end(&self) -> Position {
        fsio::read(&self.index).end()
    }

    /// Records a verified batch; see [`SegmentIndex::extend`].
    pub fn extend_index(&self, at: Position, next: Position, interval: u64) {
        fsio::write(&self.index).extend(at, next, interval);
    }

    /// Forgets everything verified so far.
    pub fn reset_index(&self) {
        *fsio::write(&self.index) = SegmentIndex::new(self.base);
    }
}

/// How a scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScanOutcome {
    /// The file's length when the scan started.
    pub file_len: u64,
    /// The first unverifiable batch position, if the verified prefix does not reach `file_len`.
    pub defect: Option<Defect>,
}

/// Walks the segment from its verified end to the end of the file, extending the index with
/// every batch that verifies, and stops at the first that does not.
///
/// With [`Verify::Header`] only headers are checked (and that each payload fits in the file).
pub(crate) fn scan(segment: &Segment, verify: Verify, interval: u64) -> io::Result<ScanOutcome> {
    let file = segment.file()?;
    let file_len = file.metadata()?.len();
    let chunk = match verify {
        Verify::Header => HEADER_SCAN_CHUNK,
        Verify::Full => 1 << 20,
    };
    let mut at = segment.end();
    let mut want = chunk;
    while at.pos < file_len {
        let len = want.min(usize::try_from(file_len - at.pos).unwrap_or(usize::MAX));
        let buf = read_at_most(file, at.pos, len)?;
        if buf.is_empty() {
            break; // the file shrank under a read-only scan: its end is the tail
        }
        let at_eof = buf.len() < len || at.pos + buf.len() as u64 >= file_len;
        let mut walked = 0usize;
        let mut needed = 0usize;
        while let Some(rest) = buf.get(walked..).filter(|rest| !rest.is_empty()) {
            let check = format::check_batch(rest, at.offset, verify);
            let header = match check {
                BatchCheck::Valid(header) => header,
                BatchCheck::Incomplete { needed: n } if !at_eof => {
                    needed = n; // the batch continues past this chunk: read it whole
                    break;
                }
                _ => {
                    return Ok(ScanOutcome {
                        file_len,
                        defect: format::tail_defect(check, rest, at_eof),
                    });
                }
            };
            if at.pos + header.total_len() > file_len {
                return Ok(ScanOutcome {
                    file_len,
                    defect: Some(Defect::TruncatedPayload),
                });
            }
            let next = next_position(at, &header);
            segment.extend_index(at, next, interval);
            walked = walked.saturating_add(header.total_len() as usize);
            at = next;
        }
        want = chunk.max(needed);
    }
    Ok(ScanOutcome {
        file_len,
        defect: None,
    })
}

fn next_position(at: Position, header: &BatchHeader) -> Position {
    Position {
        pos: at.pos + header.total_len(),
        offset: header.next_offset(),
    }
}

/// What a read in one segment is asked to do.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadRequest {
    /// First offset wanted.
    pub from: u64,
    /// Most records to return.
    pub max_records: usize,
    /// Offset at which to stop: the next segment's base or the published end.
    pub limit: u64,
    /// Whether every batch before `limit` is known to be complete and valid. A batch that does
    /// not verify is then corruption; otherwise it is an unfinished tail and the read stops.
    pub strict: bool,
    /// Bytes to read at once.
    pub chunk: usize,
    /// Sparse index interval.
    pub index_interval: u64,
}

/// Why a read in one segment stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadStop {
    /// Reached the limit, the record count, or the end of the chunk.
    Done,
    /// Reached a batch at the tail that is missing or does not verify yet; it would start at
    /// `offset`.
    Tail { offset: u64 },
}

/// Reads records from one segment. Returns the records and why the read stopped.
pub(crate) fn read(segment: &Segment, req: &ReadRequest) -> Result<(Records, ReadStop)> {
    let io_err = |e| Error::io("reading segment", &segment.path, e);
    let file = segment.file().map_err(io_err)?;
    let (mut at, verified_end) = {
        let index = fsio::read(&segment.index);
        (index.floor(req.from), index.end())
    };
    let file_end = if req.strict && verified_end.offset >= req.limit {
        verified_end.pos
    } else {
        file.metadata().map_err(io_err)?.len()
    };
    let mut want = req.chunk;
    loop {
        let len = want.min(usize::try_from(file_end.saturating_sub(at.pos)).unwrap_or(usize::MAX));
        let buf = read_at_most(file, at.pos, len).map_err(io_err)?;
        let at_eof = buf.len() < len || at.pos + buf.len() as u64 >= file_end;
        let mut walk = Walk::new(segment, req, at, verified_end);
        let step = walk.run(&buf, at_eof)?;
        match step {
            WalkEnd::Finished(stop) => {
                let records = Records::new(buf, walk.spans, req.from);
                return Ok((records, stop));
            }
            WalkEnd::Continue { at: next, needed } => {
                at = next;
                want = req.chunk.max(needed);
            }
        }
    }
}

/// How one pass of a [`Walk`] over a buffer ended.
enum WalkEnd {
    /// The read is over.
    Finished(ReadStop),
    /// Nothing was collected and the buffer ran out: read again at `at`, at least `needed` bytes.
    Continue { at: Position, needed: usize },
}

/// One pass over a buffer read from a segment, collecting the spans of wanted records.
struct Walk<'a> {
    segment: &'a Segment,
    req: &'a ReadRequest,
    at: Position,
    verified_end: Position,
    spans: Vec<Span>,
    collected: usize,
}

impl<'a> Walk<'a> {
    fn new(
        segment: &'a Segment,
        req: &'a ReadRequest,
        at: Position,
        verified_end: Position,
    ) -> Self {
        Walk {
            segment,
            req,
            at,
            verified_end,
            spans: Vec::new(),
            collected: 0,
        }
    }

    fn run(&mut self, buf: &[u8], at_eof: bool) -> Result<WalkEnd> {
        let start_pos = self.at.pos;
        loop {
            if self.at.offset >= self.req.limit || self.collected >= self.req.max_records {
                return Ok(WalkEnd::Finished(ReadStop::Done));
            }
            let within = usize::try_from(self.at.pos - start_pos).unwrap_or(usize::MAX);
            let rest = buf.get(within..).unwrap_or_default();
            let skip_only = self.skippable();
            let verify = if skip_only {
                Verify::Header
            } else {
                Verify::Full
            };
            match format::check_batch(rest, self.at.offset, verify) {
                BatchCheck::Valid(header) => self.take(&header, within, skip_only),
                BatchCheck::Incomplete { .. } if rest.is_empty() && !at_eof => {
                    return Ok(self.ran_out(0));
                }
                check => {
                    if let Some(defect) = format::tail_defect(check, rest, at_eof) {
                        return self.tail(defect);
                    }
                    let needed = match check {
                        BatchCheck::Incomplete { needed } => needed,
                        _ => BATCH_HEADER_LEN,
                    };
                    return Ok(self.ran_out(needed));
                }
            }
        }
    }

    /// Whether the batch at the walk position can be skipped with a header check: it is wholly
    /// before `from` and already verified (so the index need not learn it).
    fn skippable(&self) -> bool {
        self.at.pos < self.verified_end.pos
    }

    /// Accepts the valid batch at the walk position (`within` bytes into the buffer).
    fn take(&mut self, header: &BatchHeader, within: usize, header_only: bool) {
        let next = next_position(self.at, header);
        if header_only && next.offset > self.req.from {
            // Wanted after all: have it verified in full on the next loop turn.
            self.verified_end = self.at;
            return;
        }
        if !header_only {
            self.segment
                .extend_index(self.at, next, self.req.index_interval);
        }
        if next.offset > self.req.from {
            self.push_span(header, within);
        }
        self.at = next;
    }

    fn push_span(&mut self, header: &BatchHeader, within: usize) {
        let skip = self.req.from.saturating_sub(header.base_offset);
        let available = u64::from(header.record_count) - skip;
        let until_limit = self.req.limit.saturating_sub(header.base_offset + skip);
        let room = (self.req.max_records - self.collected) as u64;
        let take = available.min(until_limit).min(room);
        if take == 0 {
            return;
        }
        let start = within + BATCH_HEADER_LEN;
        self.spans.push(Span {
            start,
            end: start + header.payload_len as usize,
            base_offset: header.base_offset,
            count: header.record_count,
            skip: skip as u32,
            take: take as u32,
        });
        self.collected += take as usize;
    }

    /// The buffer ended inside a batch (or before its header).
    fn ran_out(&self, needed: usize) -> WalkEnd {
        if self.spans.is_empty() {
            WalkEnd::Continue {
                at: self.at,
                needed,
            }
        } else {
            WalkEnd::Finished(ReadStop::Done)
        }
    }

    /// The walk reached a batch that is missing or does not verify.
    fn tail(&self, defect: Defect) -> Result<WalkEnd> {
        if !self.spans.is_empty() {
            // Hand out the good records first; the next read starts here and reports it.
            return Ok(WalkEnd::Finished(ReadStop::Done));
        }
        if self.req.strict && self.at.offset < self.req.limit {
            return Err(Error::Corrupt {
                path: self.segment.path.clone(),
                position: self.at.pos,
                defect,
            });
        }
        Ok(WalkEnd::Finished(ReadStop::Tail {
            offset: self.at.offset,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_and_reject_others() {
        assert_eq!(file_name(42), "00000000000000000042.log");
        assert_eq!(parse_file_name(&file_name(42)), Some(42));
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_file_name("42.log"), None);
        assert_eq!(parse_file_name("0000000000000000004a.log"), None);
        assert_eq!(parse_file_name("00000000000000000042.log.tmp"), None);
    }

    #[test]
    fn index_floor_finds_the_batch_at_or_before() {
        let mut index = SegmentIndex::new(100);
        let p = |pos, offset| Position { pos, offset };
        index.extend(p(0, 100), p(50, 110), 1);
        index.extend(p(50, 110), p(90, 120), 1);
        index.extend(p(70, 999), p(100, 1000), 1); // not contiguous: ignored
        assert_eq!(index.end(), p(90, 120));
        assert_eq!(index.floor(100), p(0, 100));
        assert_eq!(index.floor(109), p(0, 100));
        assert_eq!(index.floor(110), p(50, 110));
        assert_eq!(index.floor(500), p(50, 110));
    }

    #[test]
    fn sparse_index_skips_entries_within_the_interval() {
        let mut index = SegmentIndex::new(0);
        let p = |pos, offset| Position { pos, offset };
        index.extend(p(0, 0), p(10, 1), 25);
        index.extend(p(10, 1), p(20, 2), 25);
        index.extend(p(20, 2), p(30, 3), 25);
        index.extend(p(30, 3), p(40, 4), 25);
        assert_eq!(index.floor(2), p(0, 0));
        assert_eq!(index.floor(3), p(30, 3));
    }
}
