//! Readers that turn a stream of lines into a stream of events, one result per non-blank line.

use std::io::{self, BufRead};

use super::{LineError, ParseError, ParseOptions, is_blank, parse_content, trim_cr};
use crate::{ClickEvent, LineFormat};

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Where the reader is: the number of the last line read and the offset just after it.
#[derive(Debug, Clone, Copy, Default)]
struct Position {
    line: u64,
    offset: u64,
}

impl Position {
    /// Moves past a line of `len` bytes (terminator included) and returns where it started.
    fn advance(&mut self, len: usize) -> Position {
        let start = Position {
            line: self.line + 1,
            offset: self.offset,
        };
        self.line = start.line;
        self.offset = self.offset.saturating_add(len as u64);
        start
    }
}

/// Parses one raw line found at `at`, its terminator removed; `cut` says that the reader kept
/// only the line's first bytes. Returns `None` for a blank line.
fn parse_at(
    format: LineFormat,
    options: &ParseOptions,
    raw: &[u8],
    cut: bool,
    at: Position,
) -> Option<Result<ClickEvent, ParseError>> {
    let raw = if at.offset == 0 {
        raw.strip_prefix(UTF8_BOM).unwrap_or(raw)
    } else {
        raw
    };
    let content = trim_cr(raw);
    let result = if cut || content.len() > options.max_line_len {
        Err(LineError::TooLong {
            max: options.max_line_len,
        })
    } else if is_blank(content) {
        return None;
    } else {
        parse_content(format, content, options)
    };
    Some(result.map_err(|reason| ParseError::Malformed {
        line: at.line,
        offset: at.offset,
        reason,
    }))
}

/// Reads click events from a [`BufRead`], one per non-blank line.
///
/// It yields `Ok(event)` for a good line and `Err(ParseError::Malformed { .. })` for a bad
/// one, then goes on: a bad line never stops the stream. After the caller has taken an error,
/// [`LineParser::last_line`] gives the raw bytes of that line for a dead-letter output. A
/// failed read yields `Err(ParseError::Io { .. })` and ends the iteration.
///
/// A line longer than the maximum is never held whole: its bytes past the limit are skipped.
///
/// # Examples
/// ```
/// use clickpulse_events::{LineFormat, LineParser};
/// let input = "1000\tv1\t/news\r\n\nv2\t/sports\nbad line\n";
/// let mut parser = LineParser::new(input.as_bytes(), LineFormat::Tsv).with_default_ts_ms(5);
/// let mut events = Vec::new();
/// let mut dead_letters = Vec::new();
/// while let Some(result) = parser.next() {
///     match result {
///         Ok(event) => events.push(event),
///         Err(e) if e.is_fatal() => return Err(e.into()),
///         Err(e) => dead_letters.push((e.line(), parser.last_line().to_vec())),
///     }
/// }
/// assert_eq!(events.len(), 2);
/// assert_eq!(events[1].ts_ms, 5);
/// assert_eq!(dead_letters, [(4, b"bad line".to_vec())]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct LineParser<R> {
    reader: R,
    format: LineFormat,
    options: ParseOptions,
    buf: Vec<u8>,
    /// Whether `buf` holds only the start of an over-long line.
    cut: bool,
    position: Position,
    finished: bool,
}

impl<R: BufRead> LineParser<R> {
    /// A parser of `format` lines from `reader`, with [`ParseOptions::default`].
    pub fn new(reader: R, format: LineFormat) -> Self {
        LineParser {
            reader,
            format,
            options: ParseOptions::default(),
            buf: Vec::new(),
            cut: false,
            position: Position::default(),
            finished: false,
        }
    }

    /// Replaces all options at once.
    pub fn with_options(mut self, options: ParseOptions) -> Self {
        self.options = options;
        self
    }

    /// Sets the timestamp of TSV lines that have none. Default = none (such lines are errors).
    pub fn with_default_ts_ms(mut self, ts_ms: u64) -> Self {
        self.options.default_ts_ms = Some(ts_ms);
        self
    }

    /// Sets the longest line accepted, in bytes. Default = 1 MiB.
    pub fn with_max_line_len(mut self, max_line_len: usize) -> Self {
        self.options.max_line_len = max_line_len;
        self
    }

    /// The options in use.
    pub fn options(&self) -> &ParseOptions {
        &self.options
    }

    /// The raw bytes of the line read last, without its `\n`; for an over-long line only its
    /// first `max_line_len + 1` bytes.
    pub fn last_line(&self) -> &[u8] {
        &self.buf
    }

    /// The number of lines read so far, blank ones included.
    pub fn lines_read(&self) -> u64 {
        self.position.line
    }

    /// The number of bytes read so far: the offset of the next line.
    pub fn bytes_read(&self) -> u64 {
        self.position.offset
    }

    /// Gives back the reader.
    pub fn into_inner(self) -> R {
        self.reader
    }

    /// Reads the next line into `buf`, keeping at most `max_line_len + 1` bytes of it (room
    /// for a `\r`). Returns the line's full length with its terminator, or `None` at the end.
    fn read_line(&mut self) -> io::Result<Option<usize>> {
        self.buf.clear();
        self.cut = false;
        let keep = self.options.max_line_len.saturating_add(1);
        let mut len = 0usize;
        loop {
            let available = match self.reader.fill_buf() {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                return Ok((len > 0).then_some(len));
            }
            let (content, used) = match memchr::memchr(b'\n', available) {
                Some(end) => (available.get(..end).unwrap_or_default(), end + 1),
                None => (available, available.len()),
            };
            let room = keep.saturating_sub(self.buf.len());
            match content.get(..room) {
                Some(kept) if kept.len() < content.len() => {
                    self.buf.extend_from_slice(kept);
                    self.cut = true;
                }
                _ => self.buf.extend_from_slice(content),
            }
            let ended = used > content.len();
            self.reader.consume(used);
            len = len.saturating_add(used);
            if ended {
                return Ok(Some(len));
            }
        }
    }
}

impl<R: BufRead> Iterator for LineParser<R> {
    type Item = Result<ClickEvent, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.finished {
            let line = match self.read_line() {
                Ok(Some(len)) => self.position.advance(len),
                Ok(None) => break,
                Err(source) => {
                    self.finished = true;
                    return Some(Err(ParseError::Io {
                        line: self.position.line + 1,
                        offset: self.position.offset,
                        source,
                    }));
                }
            };
            if let Some(result) = parse_at(self.format, &self.options, &self.buf, self.cut, line) {
                return Some(result);
            }
        }
        self.finished = true;
        None
    }
}

/// Parses every line of `data` as `format`: the in-memory counterpart of [`LineParser`],
/// which borrows lines instead of copying them.
///
/// # Examples
/// ```
/// use clickpulse_events::{parse_slice, LineFormat, ParseOptions};
/// let data = b"1,10,/a,1\n2,20,/b,2\n3,x,/c,3\n";
/// let results: Vec<_> = parse_slice(data, LineFormat::Csv, ParseOptions::default()).collect();
/// assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 2);
/// assert_eq!(results[2].as_ref().map_err(|e| e.line()).err(), Some(3));
/// ```
pub fn parse_slice(data: &[u8], format: LineFormat, options: ParseOptions) -> SliceParser<'_> {
    SliceParser {
        rest: data,
        format,
        options,
        last_line: &[],
        position: Position::default(),
    }
}

/// The iterator of [`parse_slice`]: one result per non-blank line of a byte slice.
#[derive(Debug, Clone)]
pub struct SliceParser<'a> {
    rest: &'a [u8],
    format: LineFormat,
    options: ParseOptions,
    last_line: &'a [u8],
    position: Position,
}

impl<'a> SliceParser<'a> {
    /// The raw bytes of the line read last, without its `\n`.
    pub fn last_line(&self) -> &'a [u8] {
        self.last_line
    }

    /// The number of lines read so far, blank ones included.
    pub fn lines_read(&self) -> u64 {
        self.position.line
    }

    /// The number of bytes read so far: the offset of the next line.
    pub fn bytes_read(&self) -> u64 {
        self.position.offset
    }
}

impl Iterator for SliceParser<'_> {
    type Item = Result<ClickEvent, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.rest.is_empty() {
            let (line, rest) = match memchr::memchr(b'\n', self.rest) {
                Some(end) => (
                    self.rest.get(..end).unwrap_or(self.rest),
                    self.rest.get(end + 1..).unwrap_or_default(),
                ),
                None => (self.rest, &[][..]),
            };
            let at = self.position.advance(self.rest.len() - rest.len());
            self.rest = rest;
            self.last_line = line;
            if let Some(result) = parse_at(self.format, &self.options, line, false, at) {
                return Some(result);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Results of both readers, which must agree, as (line, offset, reason) for errors.
    fn both(data: &[u8], options: ParseOptions) -> Vec<Result<ClickEvent, (u64, u64, LineError)>> {
        let simplify = |r: Result<ClickEvent, ParseError>| {
            r.map_err(|e| match e {
                ParseError::Malformed {
                    line,
                    offset,
                    reason,
                } => (line, offset, reason),
                ParseError::Io { source, .. } => panic!("no I/O error expected: {source}"),
            })
        };
        let from_reader: Vec<_> = LineParser::new(data, LineFormat::Tsv)
            .with_options(options)
            .map(simplify)
            .collect();
        let from_slice: Vec<_> = parse_slice(data, LineFormat::Tsv, options)
            .map(simplify)
            .collect();
        assert_eq!(from_reader, from_slice);
        from_reader
    }

    #[test]
    fn blank_lines_are_skipped_but_counted() {
        let data = b"\n  \r\n1\tv\t/a\n\t\n2\tv\t/b";
        let got = both(data, ParseOptions::default());
        assert_eq!(
            got,
            [
                Ok(ClickEvent::page_view(1, "v", "/a")),
                Ok(ClickEvent::page_view(2, "v", "/b"))
            ]
        );
    }

    #[test]
    fn errors_carry_line_number_and_start_offset() {
        let data = b"1\tv\t/a\r\n\r\nx\tv\t/b\r\n3\tv\t/c\r\n";
        let got = both(data, ParseOptions::default());
        assert_eq!(got.len(), 3);
        assert!(matches!(
            &got[1],
            Err((3, 10, LineError::InvalidTimestamp { .. }))
        ));
        assert_eq!(got[2], Ok(ClickEvent::page_view(3, "v", "/c")));
    }

    #[test]
    fn byte_order_mark_is_skipped_on_the_first_line_only() {
        let data = b"\xEF\xBB\xBF1\tv\t/a\n\xEF\xBB\xBF2\tv\t/b\n";
        let got = both(data, ParseOptions::default());
        assert_eq!(got[0], Ok(ClickEvent::page_view(1, "v", "/a")));
        assert!(matches!(
            &got[1],
            Err((2, 10, LineError::InvalidTimestamp { .. }))
        ));
    }

    #[test]
    fn over_long_lines_are_rejected_and_the_stream_goes_on() {
        let long = format!("1\tv\t/{}\n2\tv\t/ok\n", "a".repeat(100));
        let options = ParseOptions::default().with_max_line_len(20);
        let got = both(long.as_bytes(), options);
        assert_eq!(got[0], Err((1, 0, LineError::TooLong { max: 20 })));
        assert_eq!(got[1], Ok(ClickEvent::page_view(2, "v", "/ok")));
    }

    #[test]
    fn over_long_line_is_not_held_whole() {
        let long = format!("1\tv\t/{}", "a".repeat(10_000));
        let mut parser = LineParser::new(
            std::io::BufReader::with_capacity(16, long.as_bytes()),
            LineFormat::Tsv,
        )
        .with_max_line_len(64);
        assert!(matches!(
            parser.next(),
            Some(Err(ParseError::Malformed {
                reason: LineError::TooLong { max: 64 },
                ..
            }))
        ));
        assert_eq!(parser.last_line().len(), 65);
        assert_eq!(parser.bytes_read(), long.len() as u64);
        assert!(parser.next().is_none());
    }

    #[test]
    fn line_of_exactly_max_len_with_crlf_is_accepted() {
        let options = ParseOptions::default().with_max_line_len(8);
        let got = both(b"1\tv\t/abc\r\n1\tv\t/abc\rX\n", options);
        assert_eq!(
            got,
            [
                Ok(ClickEvent::page_view(1, "v", "/abc")),
                Err((2, 10, LineError::TooLong { max: 8 }))
            ]
        );
    }

    #[test]
    fn default_timestamp_reaches_two_field_lines() {
        let got = both(b"v\t/a\n", ParseOptions::default().with_default_ts_ms(9));
        assert_eq!(got, [Ok(ClickEvent::page_view(9, "v", "/a"))]);
        let got = both(b"v\t/a\n", ParseOptions::default());
        assert_eq!(got, [Err((1, 0, LineError::MissingTimestamp))]);
    }

    #[test]
    fn last_line_gives_the_raw_bad_line() {
        let data = b"1\tv\t/a\nnot tsv\r\n";
        let mut slice = parse_slice(data, LineFormat::Tsv, ParseOptions::default());
        assert!(matches!(slice.next(), Some(Ok(_))));
        assert!(matches!(slice.next(), Some(Err(_))));
        assert_eq!(slice.last_line(), b"not tsv\r");
        assert_eq!((slice.lines_read(), slice.bytes_read()), (2, 16));
        let mut reader = LineParser::new(&data[..], LineFormat::Tsv);
        assert!(matches!(reader.next(), Some(Ok(_))));
        assert!(matches!(reader.next(), Some(Err(_))));
        assert_eq!(reader.last_line(), b"not tsv\r");
        assert_eq!((reader.lines_read(), reader.bytes_read()), (2, 16));
    }

    /// A reader that fails after giving some bytes.
    struct Failing<'a> {
        data: &'a [u8],
        interrupted: bool,
    }

    impl io::Read for Failing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if !self.interrupted {
                self.interrupted = true;
                return Err(io::ErrorKind::Interrupted.into());
            }
            if self.data.is_empty() {
                return Err(io::Error::other("device gone"));
            }
            let n = self.data.len().min(buf.len());
            let (head, tail) = self.data.split_at(n);
            buf[..n].copy_from_slice(head);
            self.data = tail;
            Ok(n)
        }
    }

    #[test]
    fn read_error_is_reported_once_and_ends_the_stream() {
        let reader = io::BufReader::new(Failing {
            data: b"1\tv\t/a\n2\tv",
            interrupted: false,
        });
        let mut parser = LineParser::new(reader, LineFormat::Tsv);
        assert!(matches!(parser.next(), Some(Ok(_))));
        match parser.next() {
            Some(Err(e @ ParseError::Io { .. })) => {
                assert!(e.is_fatal());
                assert_eq!((e.line(), e.offset()), (2, 7));
            }
            other => panic!("expected an I/O error, got {other:?}"),
        }
        assert!(parser.next().is_none());
    }

    #[test]
    fn empty_input_yields_nothing() {
        assert!(both(b"", ParseOptions::default()).is_empty());
        let mut parser = LineParser::new(&b""[..], LineFormat::Ndjson);
        assert!(parser.next().is_none());
        assert!(parser.next().is_none());
    }
}
