//! The UCI MSNBC sequence file, replayed as a click stream by the canonical mapping.
//!
//! The file (`msnbc990928.seq`, usually gzipped) starts with a header whose non-comment lines
//! name the page categories; category ids in the body are 1-based indices into that list.
//! After the line `% Sequences:` every non-blank line is one visit: the ids of the pages
//! clicked, in order. Lines starting with `%` are comments; blank lines are skipped.
//!
//! # The canonical mapping
//!
//! With `i = 0..N-1` the index of a sequence line in file order (N = 989,818 in the published
//! file) and `j = 0..` the index of a click within its line:
//!
//! - `visitor_id = "v" + (i mod 250000)`: visitors return several times a day;
//! - `url = "/" + category_name`;
//! - `ts_ms = 938476800000 + floor(i * 86400000 / N) + j * 10000`: the visits spread over
//!   28 September 1999 (UTC), ten seconds between clicks;
//! - stream order: by `(ts_ms, i, j)`; 4,698,794 events in all.
//!
//! [`load`] applies it: it reads the whole file, sorts compact [`MsnbcClick`]s (16 bytes
//! each, about 75 MB for the published file) and materialises [`ClickEvent`]s only as they
//! are iterated. [`scan`] and [`MsnbcFile::clicks`] give the same clicks in the same order in
//! bounded memory (reading the file twice), for a replay of a file of any size.
//!
//! # Examples
//! ```
//! use clickpulse_events::msnbc;
//! let file = "% Different categories found in input file:\n\nfrontpage news\n\n% Sequences:\n\n1 1\n2\n";
//! let stream = msnbc::read(file.as_bytes())?;
//! assert_eq!((stream.sequence_count(), stream.len()), (2, 3));
//! let urls: Vec<String> = stream.iter().map(|e| e.url).collect();
//! // Line 1 starts half a day after line 0, so both clicks of line 0 come first.
//! assert_eq!(urls, ["/frontpage", "/frontpage", "/news"]);
//! # Ok::<(), msnbc::MsnbcError>(())
//! ```

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::ClickEvent;

mod ordered;

pub use ordered::{MsnbcFile, OrderedClicks, scan};

/// The event time of the first click of the first visit: 1999-09-28T00:00:00Z.
pub const BASE_TS_MS: u64 = 938_476_800_000;
/// The span over which visit starts are spread: one day.
pub const DAY_MS: u64 = 86_400_000;
/// The time between two clicks of one visit: 10 s.
pub const CLICK_GAP_MS: u64 = 10_000;
/// Visitor ids repeat with this period of line indices.
pub const VISITOR_MODULUS: u32 = 250_000;
/// The number of sequence lines (N) in the published file.
pub const SEQUENCES: usize = 989_818;
/// The number of clicks in the published file.
pub const EVENTS: usize = 4_698_794;
/// The file name of the published file, gzipped.
pub const FILE_NAME: &str = "msnbc990928.seq.gz";

/// The largest click index `j` whose time offset fits the compact form.
const MAX_CLICK_INDEX: u64 = (u32::MAX as u64 - DAY_MS) / CLICK_GAP_MS;

/// A shorthand for results of this module.
pub type Result<T, E = MsnbcError> = std::result::Result<T, E>;

/// Why an MSNBC file could not be loaded. The file is read whole before any event is
/// produced, so an error means no stream at all: the caller must supply another file.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MsnbcError {
    /// The file could not be opened.
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Reading or decompressing failed.
    #[error("read failed at line {line}: {source}")]
    Io {
        /// The 1-based line being read.
        line: u64,
        /// The cause (a corrupt gzip stream shows up here too).
        #[source]
        source: io::Error,
    },
    /// The file ended before its `% Sequences:` line: it is not an MSNBC sequence file.
    #[error("no `% Sequences:` line: not an MSNBC sequence file")]
    NoSequences,
    /// The header names no categories.
    #[error("the header names no categories")]
    NoCategories,
    /// The header names more categories than the compact form holds.
    #[error("the header names {count} categories; at most 255 are supported")]
    TooManyCategories {
        /// How many it names.
        count: usize,
    },
    /// A header line is not UTF-8.
    #[error("line {line}: category names are not valid UTF-8")]
    InvalidHeader {
        /// The 1-based line number.
        line: u64,
    },
    /// A sequence line holds something other than category ids of the header.
    #[error("line {line}: {token:?} is not a category id in 1..={max}")]
    BadCategory {
        /// The 1-based line number.
        line: u64,
        /// The offending token, cut to 32 bytes.
        token: String,
        /// The largest category id.
        max: usize,
    },
    /// A sequence line has more clicks than the compact form holds (over 420,000).
    #[error("line {line}: more than {max} clicks in one sequence")]
    SequenceTooLong {
        /// The 1-based line number.
        line: u64,
        /// The most clicks a sequence may have.
        max: u64,
    },
    /// The file has more than `u32::MAX` sequence lines.
    #[error("more than {} sequence lines", u32::MAX)]
    TooManySequences,
    /// The file changed between [`scan`] and a read of its clicks.
    #[error("{} changed while it was being read", path.display())]
    Changed {
        /// The file.
        path: PathBuf,
    },
}

/// The path of the published file in this checkout: `data/msnbc990928.seq.gz` under the
/// workspace root (found from this crate's manifest directory at build time), for tests,
/// benchmarks and the demo.
pub fn default_msnbc_path() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().and_then(Path::parent).unwrap_or(manifest);
    root.join("data").join(FILE_NAME)
}

/// Loads an MSNBC sequence file, gzipped (detected by its magic bytes) or plain.
///
/// # Errors
/// [`MsnbcError::Open`] if the file cannot be opened, and any error of [`read`].
pub fn load(path: impl AsRef<Path>) -> Result<MsnbcStream> {
    read(open_text(path.as_ref())?)
}

/// Opens an MSNBC file as text: gunzipped when it starts with gzip's magic bytes.
fn open_text(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    let file = File::open(path).map_err(|source| MsnbcError::Open {
        path: path.to_owned(),
        source,
    })?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let magic = reader
        .fill_buf()
        .map_err(|source| MsnbcError::Io { line: 1, source })?;
    if magic.starts_with(&[0x1f, 0x8b]) {
        let text = flate2::bufread::MultiGzDecoder::new(reader);
        Ok(Box::new(BufReader::with_capacity(1 << 16, text)))
    } else {
        Ok(Box::new(reader))
    }
}

/// Reads an uncompressed MSNBC sequence file and applies the canonical mapping.
///
/// # Errors
/// [`MsnbcError::Io`] if reading fails; [`MsnbcError::NoSequences`], [`MsnbcError::NoCategories`],
/// [`MsnbcError::TooManyCategories`], [`MsnbcError::InvalidHeader`] for a header that is not
/// one of an MSNBC file; [`MsnbcError::BadCategory`] for a click that names no category;
/// [`MsnbcError::SequenceTooLong`] and [`MsnbcError::TooManySequences`] for a file beyond the
/// compact form's limits.
pub fn read(mut reader: impl BufRead) -> Result<MsnbcStream> {
    let mut lines = Lines::default();
    let categories = read_header(&mut reader, &mut lines)?;
    let max = categories.len();
    let mut clicks = Vec::new();
    let mut sequences: u32 = 0;
    while let Some((line_no, line)) = lines.next(&mut reader)? {
        parse_sequence(line, max, |position, category| {
            if u64::from(position) > MAX_CLICK_INDEX {
                return Err(MsnbcError::SequenceTooLong {
                    line: line_no,
                    max: MAX_CLICK_INDEX + 1,
                });
            }
            clicks.push(MsnbcClick {
                ts_offset_ms: 0,
                line_index: sequences,
                click_index: position,
                category,
            });
            Ok(())
        })
        .map_err(|e| e.at_line(line_no))?;
        sequences = sequences
            .checked_add(1)
            .ok_or(MsnbcError::TooManySequences)?;
    }
    Ok(MsnbcStream::new(categories, clicks, sequences))
}

/// Reads header lines up to `% Sequences:` and returns the category names.
fn read_header(reader: &mut impl BufRead, lines: &mut Lines) -> Result<Vec<String>> {
    let mut categories = Vec::new();
    loop {
        let (number, line) = lines.next_raw(reader)?.ok_or(MsnbcError::NoSequences)?;
        let text =
            std::str::from_utf8(line).map_err(|_| MsnbcError::InvalidHeader { line: number })?;
        let text = text.trim();
        if let Some(comment) = text.strip_prefix('%') {
            if comment.trim().eq_ignore_ascii_case("sequences:") {
                break;
            }
        } else {
            categories.extend(text.split_whitespace().map(str::to_owned));
        }
    }
    match categories.len() {
        0 => Err(MsnbcError::NoCategories),
        count if count > usize::from(u8::MAX) => Err(MsnbcError::TooManyCategories { count }),
        _ => Ok(categories),
    }
}

/// Calls `click(j, category_id)` for each whitespace-separated category id on the line.
fn parse_sequence(
    line: &[u8],
    max: usize,
    mut click: impl FnMut(u32, u8) -> Result<()>,
) -> Result<()> {
    let mut position: u32 = 0;
    for token in line
        .split(|b| b.is_ascii_whitespace())
        .filter(|t| !t.is_empty())
    {
        let category = parse_category(token, max).ok_or_else(|| MsnbcError::BadCategory {
            line: 0,
            token: String::from_utf8_lossy(token.get(..32).unwrap_or(token)).into_owned(),
            max,
        })?;
        click(position, category)?;
        position = position.saturating_add(1);
    }
    Ok(())
}

/// A 1-based category id, if `token` is one in `1..=max`.
fn parse_category(token: &[u8], max: usize) -> Option<u8> {
    if token.len() > 3 || !token.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let id = token
        .iter()
        .fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
    if (1..=max).contains(&id) {
        u8::try_from(id).ok()
    } else {
        None
    }
}

impl MsnbcError {
    /// Sets the line number of an error raised without one.
    fn at_line(self, line_no: u64) -> Self {
        match self {
            MsnbcError::BadCategory { token, max, .. } => MsnbcError::BadCategory {
                line: line_no,
                token,
                max,
            },
            other => other,
        }
    }
}

/// The line reader of [`read`]: one reused buffer, a line counter, comments and blanks
/// skipped by [`Lines::next`].
#[derive(Default)]
struct Lines {
    buf: Vec<u8>,
    /// The 1-based number of the line in `buf`.
    number: u64,
}

impl Lines {
    /// The next line with its number, or `None` at the end.
    fn next_raw(&mut self, reader: &mut impl BufRead) -> Result<Option<(u64, &[u8])>> {
        self.buf.clear();
        self.number += 1;
        let read = reader
            .read_until(b'\n', &mut self.buf)
            .map_err(|source| MsnbcError::Io {
                line: self.number,
                source,
            })?;
        Ok((read > 0).then_some((self.number, self.buf.as_slice())))
    }

    /// The next line that is neither blank nor a comment, trimmed, with its number; or `None`
    /// at the end.
    fn next(&mut self, reader: &mut impl BufRead) -> Result<Option<(u64, &[u8])>> {
        loop {
            if self.next_raw(reader)?.is_none() {
                return Ok(None);
            }
            let text = self.buf.trim_ascii();
            if !text.is_empty() && !text.starts_with(b"%") {
                break;
            }
        }
        Ok(Some((self.number, self.buf.trim_ascii())))
    }
}

/// One click of the MSNBC file in compact form (16 bytes): where it is in the file, and
/// its canonical event time.
///
/// Ordered as the canonical stream is: by time, then line index, then click index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MsnbcClick {
    ts_offset_ms: u32,
    line_index: u32,
    click_index: u32,
    category: u8,
}

impl MsnbcClick {
    /// The canonical event time, ms since the Unix epoch.
    pub fn ts_ms(&self) -> u64 {
        BASE_TS_MS + u64::from(self.ts_offset_ms)
    }

    /// `i`: the index of the click's sequence line, 0-based in file order.
    pub fn line_index(&self) -> u32 {
        self.line_index
    }

    /// `j`: the index of the click within its line, 0-based.
    pub fn click_index(&self) -> u32 {
        self.click_index
    }

    /// The 1-based category id, as written in the file.
    pub fn category_id(&self) -> u8 {
        self.category
    }

    /// The visitor number: `i mod 250000` (the id without its `v`).
    pub fn visitor(&self) -> u32 {
        self.line_index % VISITOR_MODULUS
    }

    /// Puts the visitor id, `"v" + visitor()`, in `out` (replacing what it held): the id
    /// without allocating, for writers that encode many clicks.
    pub fn write_visitor_id(&self, out: &mut String) {
        out.clear();
        out.push('v');
        out.push_str(itoa::Buffer::new().format(self.visitor()));
    }
}

/// The categories of a file's header and their urls.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Urls {
    names: Vec<String>,
    /// `"/" + name` for each category, in id order.
    urls: Vec<String>,
}

impl Urls {
    fn new(names: Vec<String>) -> Self {
        let urls = names.iter().map(|name| format!("/{name}")).collect();
        Urls { names, urls }
    }

    fn names(&self) -> &[String] {
        &self.names
    }

    fn len(&self) -> usize {
        self.names.len()
    }

    fn url(&self, category_id: u8) -> Option<&str> {
        let index = usize::from(category_id).checked_sub(1)?;
        self.urls.get(index).map(String::as_str)
    }

    fn event(&self, click: &MsnbcClick) -> ClickEvent {
        let mut visitor = String::with_capacity(8);
        click.write_visitor_id(&mut visitor);
        ClickEvent::page_view(
            click.ts_ms(),
            visitor,
            self.url(click.category).unwrap_or_default(),
        )
    }
}

/// The clicks of an MSNBC file in canonical order, with the file's categories.
#[derive(Debug, Clone)]
pub struct MsnbcStream {
    urls: Urls,
    clicks: Vec<MsnbcClick>,
    sequences: u32,
}

impl MsnbcStream {
    /// Times the clicks (which know their position but not yet their time) and sorts them.
    fn new(categories: Vec<String>, mut clicks: Vec<MsnbcClick>, sequences: u32) -> Self {
        let n = u64::from(sequences.max(1));
        for click in &mut clicks {
            let start = u64::from(click.line_index) * DAY_MS / n;
            let offset = start + u64::from(click.click_index) * CLICK_GAP_MS;
            // `read` bounds the click index so that the offset always fits.
            click.ts_offset_ms = u32::try_from(offset).unwrap_or(u32::MAX);
        }
        clicks.sort_unstable();
        MsnbcStream {
            urls: Urls::new(categories),
            clicks,
            sequences,
        }
    }

    /// The category names from the header; category id `k` is `categories()[k - 1]`.
    pub fn categories(&self) -> &[String] {
        self.urls.names()
    }

    /// The url of a 1-based category id (`"/" + name`), if there is such a category.
    pub fn url(&self, category_id: u8) -> Option<&str> {
        self.urls.url(category_id)
    }

    /// N: the number of sequence lines (visits) in the file.
    pub fn sequence_count(&self) -> usize {
        self.sequences as usize
    }

    /// The number of clicks (events).
    pub fn len(&self) -> usize {
        self.clicks.len()
    }

    /// Whether the file has no clicks.
    pub fn is_empty(&self) -> bool {
        self.clicks.is_empty()
    }

    /// All clicks in canonical order, in compact form.
    pub fn clicks(&self) -> &[MsnbcClick] {
        &self.clicks
    }

    /// The click event of a compact click.
    pub fn event(&self, click: &MsnbcClick) -> ClickEvent {
        self.urls.event(click)
    }

    /// The event at `index` in canonical order, if there is one.
    pub fn get(&self, index: usize) -> Option<ClickEvent> {
        self.clicks.get(index).map(|c| self.event(c))
    }

    /// All events in canonical order.
    pub fn iter(&self) -> Events<'_> {
        self.iter_from(0)
    }

    /// The events from `index` on, in canonical order (empty if `index >= len()`): for a
    /// replay that resumes from an offset.
    pub fn iter_from(&self, index: usize) -> Events<'_> {
        Events {
            stream: self,
            clicks: self.clicks.get(index..).unwrap_or_default().iter(),
        }
    }
}

impl<'a> IntoIterator for &'a MsnbcStream {
    type Item = ClickEvent;
    type IntoIter = Events<'a>;

    fn into_iter(self) -> Events<'a> {
        self.iter()
    }
}

/// The events of an [`MsnbcStream`] in canonical order, materialised one at a time.
#[derive(Debug, Clone)]
pub struct Events<'a> {
    stream: &'a MsnbcStream,
    clicks: std::slice::Iter<'a, MsnbcClick>,
}

impl Iterator for Events<'_> {
    type Item = ClickEvent;

    fn next(&mut self) -> Option<ClickEvent> {
        self.clicks.next().map(|c| self.stream.event(c))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.clicks.size_hint()
    }

    fn nth(&mut self, n: usize) -> Option<ClickEvent> {
        self.clicks.nth(n).map(|c| self.stream.event(c))
    }
}

impl ExactSizeIterator for Events<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "% Different categories found in input file:\r\n\r\nfrontpage news tech\r\n\r\n\r\n% Sequences:\r\n\r\n";

    fn read_str(text: &str) -> Result<MsnbcStream> {
        read(text.as_bytes())
    }

    #[test]
    fn small_file_follows_the_canonical_mapping() {
        let stream = read_str(&format!("{HEADER}1 1 \r\n2 \r\n3 2 3 \r\n2")).expect("valid file");
        assert_eq!(stream.categories(), ["frontpage", "news", "tech"]);
        assert_eq!(stream.sequence_count(), 4);
        assert_eq!(stream.len(), 7);
        let day = DAY_MS;
        let got: Vec<(u64, String, String)> = stream
            .iter()
            .map(|e| (e.ts_ms - BASE_TS_MS, e.visitor_id, e.url))
            .collect();
        let want = [
            (0, "v0", "/frontpage"),
            (10_000, "v0", "/frontpage"),
            (day / 4, "v1", "/news"),
            (day / 2, "v2", "/tech"),
            (day / 2 + 10_000, "v2", "/news"),
            (day / 2 + 20_000, "v2", "/tech"),
            (3 * day / 4, "v3", "/news"),
        ];
        let want: Vec<(u64, String, String)> = want
            .into_iter()
            .map(|(t, v, u)| (t, v.to_owned(), u.to_owned()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn equal_times_order_by_line_then_click() {
        // With N = 3, line 1 starts 8 h in: click 2880 of line 0 falls on the same ms.
        let clicks = vec!["1"; 2_881].join(" ");
        let stream = read_str(&format!("{HEADER}{clicks}\n2\n3\n")).expect("valid file");
        let at_8h: Vec<(u32, u32)> = stream
            .clicks()
            .iter()
            .filter(|c| c.ts_ms() == BASE_TS_MS + DAY_MS / 3)
            .map(|c| (c.line_index(), c.click_index()))
            .collect();
        assert_eq!(at_8h, [(0, 2_880), (1, 0)]);
    }

    #[test]
    fn visitor_ids_wrap_at_the_modulus() {
        let click = MsnbcClick {
            ts_offset_ms: 0,
            line_index: 250_001,
            click_index: 0,
            category: 1,
        };
        assert_eq!(click.visitor(), 1);
        let mut id = String::from("stale");
        click.write_visitor_id(&mut id);
        assert_eq!(id, "v1");
    }

    #[test]
    fn missing_sequences_marker_is_rejected() {
        assert!(matches!(
            read_str("% header\nfrontpage news\n1 2\n"),
            Err(MsnbcError::NoSequences)
        ));
        assert!(matches!(read_str(""), Err(MsnbcError::NoSequences)));
    }

    #[test]
    fn header_without_categories_is_rejected() {
        assert!(matches!(
            read_str("% header\n\n% Sequences:\n1\n"),
            Err(MsnbcError::NoCategories)
        ));
    }

    #[test]
    fn more_than_255_categories_are_rejected() {
        let names: Vec<String> = (0..256).map(|k| format!("c{k}")).collect();
        let file = format!("{}\n% Sequences:\n1\n", names.join(" "));
        assert!(matches!(
            read_str(&file),
            Err(MsnbcError::TooManyCategories { count: 256 })
        ));
    }

    #[test]
    fn non_utf8_header_is_rejected() {
        assert!(matches!(
            read(&b"% h\nfront\xffpage\n% Sequences:\n1\n"[..]),
            Err(MsnbcError::InvalidHeader { line: 2 })
        ));
    }

    #[test]
    fn bad_category_ids_name_line_and_token() {
        for (token, line) in [("0", 9), ("4", 9), ("x", 9), ("1000", 9), ("-1", 9)] {
            let file = format!("{HEADER}1 2\n1 {token} 2\n");
            match read_str(&file) {
                Err(MsnbcError::BadCategory {
                    line: l,
                    token: t,
                    max,
                }) => {
                    assert_eq!((l, t.as_str(), max), (line, token, 3));
                }
                other => panic!("{token}: expected BadCategory, got {other:?}"),
            }
        }
    }

    #[test]
    fn sequence_longer_than_the_compact_form_is_rejected() {
        let clicks = vec!["1"; MAX_CLICK_INDEX as usize + 2].join(" ");
        assert!(matches!(
            read_str(&format!("{HEADER}{clicks}\n")),
            Err(MsnbcError::SequenceTooLong { line: 8, .. })
        ));
    }

    #[test]
    fn file_with_no_sequences_is_an_empty_stream() {
        let stream = read_str(HEADER).expect("valid file");
        assert!(stream.is_empty());
        assert_eq!(stream.sequence_count(), 0);
        assert!(stream.iter().next().is_none());
        assert!(stream.get(0).is_none());
        assert_eq!(stream.iter_from(5).len(), 0);
    }

    #[test]
    fn comments_and_blank_lines_in_the_body_are_not_visits() {
        let stream = read_str(&format!("{HEADER}1\n\n% note\n  \n2\n")).expect("valid file");
        assert_eq!(stream.sequence_count(), 2);
        assert_eq!(
            stream.get(1).map(|e| e.ts_ms),
            Some(BASE_TS_MS + DAY_MS / 2)
        );
    }

    #[test]
    fn url_of_unknown_category_is_none() {
        let stream = read_str(HEADER).expect("valid file");
        assert_eq!(stream.url(0), None);
        assert_eq!(stream.url(1), Some("/frontpage"));
        assert_eq!(stream.url(4), None);
    }

    #[test]
    fn gzipped_and_plain_files_load_alike() {
        use std::io::Write;
        let text = format!("{HEADER}1 2\r\n3\r\n");
        let dir = tempfile::tempdir().expect("temp dir");
        let plain = dir.path().join("small.seq");
        std::fs::write(&plain, &text).expect("write plain");
        let gz = dir.path().join("small.seq.gz");
        let mut encoder = flate2::write::GzEncoder::new(
            File::create(&gz).expect("create gz"),
            flate2::Compression::fast(),
        );
        encoder.write_all(text.as_bytes()).expect("compress");
        encoder.finish().expect("finish gz");
        let from_plain: Vec<ClickEvent> = load(&plain).expect("plain loads").iter().collect();
        let from_gz: Vec<ClickEvent> = load(&gz).expect("gz loads").iter().collect();
        assert_eq!(from_plain.len(), 3);
        assert_eq!(from_plain, from_gz);
    }

    #[test]
    fn corrupt_gzip_is_a_read_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bad.seq.gz");
        std::fs::write(&path, [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 0xde, 0xad]).expect("write");
        assert!(matches!(load(&path), Err(MsnbcError::Io { line: 1, .. })));
    }

    /// A reader whose data ends in a failure.
    struct FailsAfter<'a>(&'a [u8]);

    impl io::Read for FailsAfter<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::other("disk gone"));
            }
            let n = self.0.len().min(buf.len());
            let (head, tail) = self.0.split_at(n);
            buf[..n].copy_from_slice(head);
            self.0 = tail;
            Ok(n)
        }
    }

    #[test]
    fn read_failure_names_its_line() {
        let text = format!("{HEADER}1 2\n");
        let err = read(BufReader::new(FailsAfter(text.as_bytes())));
        assert!(
            matches!(err, Err(MsnbcError::Io { line: 9, .. })),
            "{err:?}"
        );
    }

    #[test]
    fn missing_file_is_an_open_error() {
        let err = load("/nonexistent/msnbc.seq.gz");
        assert!(matches!(err, Err(MsnbcError::Open { .. })));
    }

    #[test]
    fn default_path_points_into_the_workspace_data_directory() {
        let path = default_msnbc_path();
        assert!(
            path.ends_with("data/msnbc990928.seq.gz"),
            "{}",
            path.display()
        );
        let root = path.parent().and_then(Path::parent);
        assert!(root.is_some_and(|r| r.join("Cargo.toml").exists()));
    }
}
