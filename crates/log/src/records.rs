//! [`Records`]: the result of a read, and [`Record`], one record borrowed from it.

use crate::format::RecordIter;

/// One record, borrowing its key and value from the [`Records`] it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Position of the record in its partition.
    pub offset: u64,
    /// Event time in milliseconds, as given to [`crate::Batch::push`].
    pub timestamp: i64,
    /// The key; may be empty.
    pub key: &'a [u8],
    /// The value.
    pub value: &'a [u8],
}

/// Consecutive records of one partition, as returned by a read.
///
/// The records live in the buffers the read filled (one `pread(2)` each, usually one buffer);
/// iterating hands out [`Record`]s that borrow from them, so a read allocates per buffer, not
/// per record.
///
/// # Examples
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let log = clickpulse_log::Log::open(dir.path(), Default::default())?;
/// # let topic = log.create_topic("clicks", 1)?;
/// # let mut batch = clickpulse_log::Batch::new();
/// # batch.push(1, b"", b"/a")?;
/// # topic.append(0, &batch)?;
/// let records = topic.read(0, 0, 100)?;
/// for record in &records {
///     println!("{} {:?}", record.offset, record.value);
/// }
/// let next = records.next_offset(); // where the next read continues
/// # assert_eq!(next, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Records {
    chunks: Vec<Chunk>,
    first_offset: u64,
    len: usize,
}

/// One buffer read from a segment and the batch payloads in it that a read returns.
#[derive(Debug, Clone, Default)]
struct Chunk {
    buf: Vec<u8>,
    spans: Vec<Span>,
}

/// The part of one batch's payload, inside a chunk's buffer, that a read returns.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    /// Payload start in the buffer.
    pub start: usize,
    /// Payload end in the buffer.
    pub end: usize,
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// Records in the batch.
    pub count: u32,
    /// Leading records of the batch that are not part of the result.
    pub skip: u32,
    /// Records of the batch, after `skip`, that are part of the result.
    pub take: u32,
}

impl Records {
    /// No records, positioned at `offset`.
    pub(crate) fn empty(offset: u64) -> Self {
        Records {
            first_offset: offset,
            ..Records::default()
        }
    }

    pub(crate) fn new(buf: Vec<u8>, spans: Vec<Span>, first_offset: u64) -> Self {
        let len = spans.iter().map(|s| s.take as usize).sum();
        let chunks = if len == 0 {
            Vec::new()
        } else {
            vec![Chunk { buf, spans }]
        };
        Records {
            chunks,
            first_offset,
            len,
        }
    }

    /// Appends `more`, which must start at `self.next_offset()`.
    pub(crate) fn extend(&mut self, more: Records) {
        debug_assert_eq!(
            more.first_offset,
            self.next_offset(),
            "records must be contiguous"
        );
        self.len += more.len;
        self.chunks.extend(more.chunks);
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Offset of the first record (for an empty result: the offset that was asked for).
    pub fn first_offset(&self) -> u64 {
        self.first_offset
    }

    /// The offset after the last record: where the next read continues.
    pub fn next_offset(&self) -> u64 {
        self.first_offset + self.len as u64
    }

    /// Drops the first `n` records (every record when there are fewer), keeping the rest in
    /// their buffers: a reader can read ahead once and hand the records out a few at a time.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let log = clickpulse_log::Log::open(dir.path(), Default::default())?;
    /// # let topic = log.create_topic("clicks", 1)?;
    /// # let mut batch = clickpulse_log::Batch::new();
    /// # for v in [b"/a", b"/b", b"/c"] { batch.push(1, b"", v)?; }
    /// # topic.append(0, &batch)?;
    /// let mut records = topic.read(0, 0, 100)?;
    /// records.advance(2);
    /// assert_eq!((records.first_offset(), records.len()), (2, 1));
    /// assert_eq!(records.iter().next().map(|r| r.value), Some(&b"/c"[..]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn advance(&mut self, n: usize) {
        let mut n = n.min(self.len);
        self.first_offset += n as u64;
        self.len -= n;
        let mut emptied = 0;
        for chunk in &mut self.chunks {
            if n == 0 {
                break;
            }
            let mut dropped = 0;
            for span in &mut chunk.spans {
                let take = span.take as usize;
                if take <= n {
                    n -= take;
                    dropped += 1;
                } else {
                    // `n < take`, which is a u32.
                    let part = n as u32;
                    span.skip += part;
                    span.take -= part;
                    n = 0;
                    break;
                }
            }
            chunk.spans.drain(..dropped);
            if chunk.spans.is_empty() {
                emptied += 1;
            }
        }
        self.chunks.drain(..emptied);
    }

    /// Iterates the records in offset order.
    pub fn iter(&self) -> RecordsIter<'_> {
        RecordsIter {
            chunks: self.chunks.iter(),
            buf: &[],
            spans: [].iter(),
            current: None,
        }
    }
}

impl<'a> IntoIterator for &'a Records {
    type Item = Record<'a>;
    type IntoIter = RecordsIter<'a>;

    fn into_iter(self) -> RecordsIter<'a> {
        self.iter()
    }
}

/// Iterator over [`Records`]; see [`Records::iter`].
#[derive(Debug, Clone)]
pub struct RecordsIter<'a> {
    chunks: std::slice::Iter<'a, Chunk>,
    buf: &'a [u8],
    spans: std::slice::Iter<'a, Span>,
    current: Option<std::iter::Take<RecordIter<'a>>>,
}

impl<'a> RecordsIter<'a> {
    /// The records of the next span, moving to the next chunk when needed.
    fn next_span(&mut self) -> Option<std::iter::Take<RecordIter<'a>>> {
        loop {
            if let Some(span) = self.spans.next() {
                return Some(open(self.buf, span));
            }
            let chunk = self.chunks.next()?;
            self.buf = &chunk.buf;
            self.spans = chunk.spans.iter();
        }
    }
}

/// The records of `span` in `buf`. The payload was verified (checksum and framing) when it was
/// read, so the range exists and the records parse; a failure here only shortens the iteration.
fn open<'a>(buf: &'a [u8], span: &Span) -> std::iter::Take<RecordIter<'a>> {
    let payload = buf.get(span.start..span.end).unwrap_or_default();
    let mut records = RecordIter::new(payload, span.base_offset, span.count);
    if span.skip > 0 {
        records.nth(span.skip as usize - 1);
    }
    records.take(span.take as usize)
}

impl<'a> Iterator for RecordsIter<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        loop {
            if let Some(raw) = self.current.as_mut().and_then(Iterator::next) {
                return Some(Record {
                    offset: raw.offset,
                    timestamp: raw.timestamp,
                    key: raw.key,
                    value: raw.value,
                });
            }
            self.current = Some(self.next_span()?);
        }
    }
}
