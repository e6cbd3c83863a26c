//! The canonical stream read in bounded memory: [`scan`] reads the file once to check it and
//! count its visits (N, which every click's time depends on); [`MsnbcFile::clicks`] reads it
//! again and yields the clicks in canonical order while holding only the visits that are
//! still open.
//!
//! Visit `i` starts at `floor(i * DAY / N)`, which is known before the line is read and never
//! decreases with `i`. So once every line starting before a time `h` has been read, every
//! click before `h` is known: the reader moves `h` on by a step, reads the lines that start
//! before it, sorts the clicks before it and hands them out; the later clicks of long visits
//! wait as a *tail* (a byte per click) until the horizon reaches them. It holds about one
//! step of clicks plus the tails of visits still going on: well under a megabyte for the
//! published file, whatever the file's size.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use super::{
    CLICK_GAP_MS, DAY_MS, Lines, MAX_CLICK_INDEX, MsnbcClick, MsnbcError, Result, Urls, open_text,
    parse_sequence, read_header,
};
use crate::ClickEvent;

/// How far the reader's horizon moves at each step, in ms of event time: about 700 visits of
/// the published file.
const STEP_MS: u64 = 60_000;

/// An MSNBC file checked by [`scan`], ready to be read in canonical order by
/// [`MsnbcFile::clicks`] as often as needed.
#[derive(Debug, Clone)]
pub struct MsnbcFile {
    path: PathBuf,
    urls: Urls,
    sequences: u32,
    clicks: u64,
}

/// Reads the MSNBC file at `path` (gzipped or plain) once, checking every line, and counts its
/// visits and clicks; holds nothing of it but the header.
///
/// # Errors
/// As [`super::load`]: a file that does not load with `load` does not scan either, and the
/// error is the same.
pub fn scan(path: impl AsRef<Path>) -> Result<MsnbcFile> {
    let path = path.as_ref();
    let mut reader = open_text(path)?;
    let mut lines = Lines::default();
    let urls = Urls::new(read_header(&mut reader, &mut lines)?);
    let max = urls.len();
    let mut sequences: u32 = 0;
    let mut clicks: u64 = 0;
    while let Some((line_no, line)) = lines.next(&mut reader)? {
        parse_sequence(line, max, |position, _| {
            if u64::from(position) > MAX_CLICK_INDEX {
                return Err(MsnbcError::SequenceTooLong {
                    line: line_no,
                    max: MAX_CLICK_INDEX + 1,
                });
            }
            clicks += 1;
            Ok(())
        })
        .map_err(|e| e.at_line(line_no))?;
        sequences = sequences
            .checked_add(1)
            .ok_or(MsnbcError::TooManySequences)?;
    }
    Ok(MsnbcFile {
        path: path.to_owned(),
        urls,
        sequences,
        clicks,
    })
}

impl MsnbcFile {
    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
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
    pub fn len(&self) -> u64 {
        self.clicks
    }

    /// Whether the file has no clicks.
    pub fn is_empty(&self) -> bool {
        self.clicks == 0
    }

    /// The click event of a compact click.
    pub fn event(&self, click: &MsnbcClick) -> ClickEvent {
        self.urls.event(click)
    }

    /// Opens the file again and reads its clicks in canonical order (the order of
    /// [`super::MsnbcStream::clicks`]), in bounded memory.
    ///
    /// # Errors
    /// [`MsnbcError::Open`] if the file cannot be opened again. The iterator yields
    /// [`MsnbcError::Io`] if reading fails, and [`MsnbcError::Changed`] if the file no longer
    /// holds what [`scan`] found.
    pub fn clicks(&self) -> Result<OrderedClicks> {
        let mut reader = open_text(&self.path)?;
        let mut lines = Lines::default();
        let header = read_header(&mut reader, &mut lines)?;
        if header != self.urls.names() {
            return Err(MsnbcError::Changed {
                path: self.path.clone(),
            });
        }
        Ok(OrderedClicks {
            file: self.clone(),
            reader,
            lines,
            next_line: 0,
            horizon: 0,
            tails: Vec::new(),
            ready: Vec::new(),
            taken: 0,
            failed: false,
        })
    }
}

/// The clicks of an [`MsnbcFile`] in canonical order; made by [`MsnbcFile::clicks`].
pub struct OrderedClicks {
    file: MsnbcFile,
    reader: Box<dyn BufRead + Send>,
    lines: Lines,
    /// The index of the next sequence line to read.
    next_line: u32,
    /// Every click before this time offset (ms) was read: the clicks before it are ready.
    horizon: u64,
    /// Visits read whose later clicks lie beyond the horizon.
    tails: Vec<Tail>,
    /// Clicks before the horizon, in order; handed out from `taken` on.
    ready: Vec<MsnbcClick>,
    taken: usize,
    failed: bool,
}

/// The clicks of a visit that lie beyond the horizon: the visit, the index of the first of
/// them and their categories.
#[derive(Debug)]
struct Tail {
    line_index: u32,
    start: u64,
    next_click: u32,
    categories: Vec<u8>,
}

impl Tail {
    /// The time offset of click `j` of this visit.
    fn offset(&self, j: u32) -> u64 {
        self.start + u64::from(j) * CLICK_GAP_MS
    }

    /// Moves the clicks before `horizon` to `out`; returns whether clicks remain.
    fn take_before(&mut self, horizon: u64, out: &mut Vec<MsnbcClick>) -> bool {
        let first = self.next_click;
        let mut j = first;
        while let Some(&category) = self.categories.get((j - first) as usize) {
            if self.offset(j) >= horizon {
                break;
            }
            out.push(click(self.line_index, j, self.offset(j), category));
            j += 1;
        }
        self.categories.drain(..(j - first) as usize);
        self.next_click = j;
        !self.categories.is_empty()
    }
}

fn click(line_index: u32, click_index: u32, offset: u64, category: u8) -> MsnbcClick {
    MsnbcClick {
        // `scan` bounded the click index so that the offset always fits.
        ts_offset_ms: u32::try_from(offset).unwrap_or(u32::MAX),
        line_index,
        click_index,
        category,
    }
}

impl std::fmt::Debug for OrderedClicks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderedClicks")
            .field("path", &self.file.path)
            .field("next_line", &self.next_line)
            .field("horizon", &self.horizon)
            .field("tails", &self.tails.len())
            .finish_non_exhaustive()
    }
}

impl OrderedClicks {
    /// The file being read.
    pub fn file(&self) -> &MsnbcFile {
        &self.file
    }

    /// The start of visit `i`, ms after the base time.
    fn start(&self, i: u32) -> u64 {
        u64::from(i) * DAY_MS / u64::from(self.file.sequences.max(1))
    }

    fn all_read(&self) -> bool {
        self.next_line >= self.file.sequences
    }

    /// Moves the horizon on until some clicks are ready, or everything is read. Returns false
    /// at the end.
    fn refill(&mut self) -> Result<bool> {
        self.ready.clear();
        self.taken = 0;
        while self.ready.is_empty() {
            if self.all_read() {
                if self.tails.is_empty() {
                    self.check_end()?;
                    return Ok(false);
                }
                // Only long visits remain: skip the steps in which none of them clicks.
                let next = self.tails.iter().map(|t| t.offset(t.next_click)).min();
                self.horizon = self.horizon.max(next.unwrap_or(0));
            }
            self.horizon = self.horizon.saturating_add(STEP_MS);
            let horizon = self.horizon;
            let ready = &mut self.ready;
            self.tails
                .retain_mut(|tail| tail.take_before(horizon, ready));
            while !self.all_read() && self.start(self.next_line) < horizon {
                self.read_line()?;
            }
            // The canonical order is by (time, line, click); a line never has two clicks at
            // one time, so (time, line) packed in one integer orders the same, faster.
            self.ready.sort_unstable_by_key(|c| {
                (u64::from(c.ts_offset_ms) << 32) | u64::from(c.line_index)
            });
        }
        Ok(true)
    }

    /// Reads sequence line `next_line`: its clicks before the horizon become ready, the rest
    /// a tail.
    fn read_line(&mut self) -> Result<()> {
        let line_index = self.next_line;
        let start = self.start(line_index);
        let Some((line_no, line)) = self.lines.next(&mut self.reader)? else {
            return Err(MsnbcError::Changed {
                path: self.file.path.clone(),
            });
        };
        let mut tail = Tail {
            line_index,
            start,
            next_click: 0,
            categories: Vec::new(),
        };
        let (horizon, ready) = (self.horizon, &mut self.ready);
        parse_sequence(line, self.file.urls.len(), |position, category| {
            if u64::from(position) > MAX_CLICK_INDEX {
                return Err(MsnbcError::SequenceTooLong {
                    line: line_no,
                    max: MAX_CLICK_INDEX + 1,
                });
            }
            let offset = tail.offset(position);
            if offset < horizon {
                ready.push(click(line_index, position, offset, category));
                tail.next_click = position + 1;
            } else {
                tail.categories.push(category);
            }
            Ok(())
        })
        .map_err(|e| e.at_line(line_no))?;
        if !tail.categories.is_empty() {
            self.tails.push(tail);
        }
        self.next_line += 1;
        Ok(())
    }

    /// After the last visit: the file must hold no further one.
    fn check_end(&mut self) -> Result<()> {
        match self.lines.next(&mut self.reader)? {
            None => Ok(()),
            Some(_) => Err(MsnbcError::Changed {
                path: self.file.path.clone(),
            }),
        }
    }
}

impl Iterator for OrderedClicks {
    type Item = Result<MsnbcClick>;

    fn next(&mut self) -> Option<Result<MsnbcClick>> {
        if self.failed {
            return None;
        }
        if self.taken >= self.ready.len() {
            match self.refill() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        let click = self.ready.get(self.taken).copied();
        self.taken += 1;
        click.map(Ok)
    }
}
