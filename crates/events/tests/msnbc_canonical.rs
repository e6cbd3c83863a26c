//! The published MSNBC file, loaded by `msnbc::load`, against the canonical mapping computed
//! here from the raw text with plain code.

use std::io::{BufRead, BufReader};
use std::sync::OnceLock;

use clickpulse_events::ClickEvent;
use clickpulse_events::msnbc::{self, MsnbcStream};

/// The raw file as the reference model sees it: category names and sequence lines.
struct Raw {
    categories: Vec<String>,
    sequences: Vec<Vec<usize>>,
}

fn raw() -> &'static Raw {
    static RAW: OnceLock<Raw> = OnceLock::new();
    RAW.get_or_init(|| {
        let file = std::fs::File::open(msnbc::default_msnbc_path()).expect("data file present");
        let text = BufReader::new(flate2::read::GzDecoder::new(file));
        let mut lines = text.lines().map(|l| l.expect("readable line"));
        let mut categories = Vec::new();
        for line in lines.by_ref() {
            if line.trim() == "% Sequences:" {
                break;
            }
            if !line.starts_with('%') {
                categories.extend(line.split_whitespace().map(String::from));
            }
        }
        let sequences = lines
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                l.split_whitespace()
                    .map(|t| t.parse().expect("numeric category"))
                    .collect()
            })
            .collect();
        Raw {
            categories,
            sequences,
        }
    })
}

fn stream() -> &'static MsnbcStream {
    static STREAM: OnceLock<MsnbcStream> = OnceLock::new();
    STREAM.get_or_init(|| msnbc::load(msnbc::default_msnbc_path()).expect("loadable file"))
}

/// The canonical event of click `j` of line `i`, straight from the formula.
fn expected(raw: &Raw, i: usize, j: usize) -> ClickEvent {
    let n = raw.sequences.len() as u64;
    let ts = 938_476_800_000 + (i as u64 * 86_400_000 / n) + j as u64 * 10_000;
    let category = raw.sequences[i][j];
    ClickEvent::page_view(
        ts,
        format!("v{}", i % 250_000),
        format!("/{}", raw.categories[category - 1]),
    )
}

/// Where click `j` of line `i` sits in the stream.
fn index_of(stream: &MsnbcStream, i: usize, j: usize) -> usize {
    stream
        .clicks()
        .iter()
        .position(|c| c.line_index() as usize == i && c.click_index() as usize == j)
        .expect("every click is in the stream")
}

#[test]
fn counts_are_the_published_ones() {
    let stream = stream();
    assert_eq!(stream.len(), 4_698_794);
    assert_eq!(stream.len(), msnbc::EVENTS);
    assert_eq!(stream.sequence_count(), 989_818);
    assert_eq!(stream.sequence_count(), msnbc::SEQUENCES);
    assert_eq!(stream.iter().len(), 4_698_794);
}

#[test]
fn categories_come_from_the_header() {
    let stream = stream();
    assert_eq!(stream.categories(), raw().categories.as_slice());
    assert_eq!(stream.categories().len(), 17);
    assert_eq!(stream.url(1), Some("/frontpage"));
    assert_eq!(stream.url(17), Some("/travel"));
}

#[test]
fn first_and_last_events() {
    let stream = stream();
    assert_eq!(
        stream.get(0),
        Some(ClickEvent::page_view(938_476_800_000, "v0", "/frontpage"))
    );
    // Lines 1 and 2 start floor(86400000 / 989818) = 87 ms apart; line 0's second click is
    // 10 s later.
    assert_eq!(
        stream.get(1),
        Some(ClickEvent::page_view(938_476_800_087, "v1", "/news"))
    );
    assert_eq!(
        stream.get(2),
        Some(ClickEvent::page_view(938_476_800_174, "v2", "/tech"))
    );
    // The last event is the latest click in the file: find it from the raw sequences.
    let raw = raw();
    let (i, j) = (0..raw.sequences.len())
        .flat_map(|i| (0..raw.sequences[i].len()).map(move |j| (i, j)))
        .max_by_key(|&(i, j)| (expected_ts(raw, i, j), i, j))
        .expect("non-empty file");
    assert_eq!(stream.get(stream.len() - 1), Some(expected(raw, i, j)));
    assert_eq!(stream.get(stream.len()), None);
}

fn expected_ts(raw: &Raw, i: usize, j: usize) -> u64 {
    938_476_800_000 + (i as u64 * 86_400_000 / raw.sequences.len() as u64) + j as u64 * 10_000
}

#[test]
fn hand_checked_events_match_the_formula() {
    let stream = stream();
    let raw = raw();
    // Line 2 is "3 2 2 4 2 2 2 3 3": click 3 is category 4, `local`, 30 s after the line's
    // start at floor(2 * 86400000 / 989818) = 174 ms.
    assert_eq!(
        expected(raw, 2, 3),
        ClickEvent::page_view(938_476_830_174, "v2", "/local")
    );
    let last_line = raw.sequences.len() - 1;
    for (i, j) in [
        (0, 0),
        (0, 1),
        (2, 3),
        (250_000, 0),
        (500_123, 0),
        (last_line, 0),
    ] {
        let index = index_of(stream, i, j);
        assert_eq!(
            stream.get(index),
            Some(expected(raw, i, j)),
            "line {i} click {j}"
        );
    }
    // Visitors return: line 250000 is visitor v0 again.
    assert_eq!(expected(raw, 250_000, 0).visitor_id, "v0");
}

#[test]
fn order_is_by_time_then_line_then_click() {
    let clicks = stream().clicks();
    for pair in clicks.windows(2) {
        let key = |c: &msnbc::MsnbcClick| (c.ts_ms(), c.line_index(), c.click_index());
        assert!(
            key(&pair[0]) < key(&pair[1]),
            "{:?} before {:?}",
            pair[0],
            pair[1]
        );
    }
}

#[test]
fn whole_stream_equals_the_reference_model() {
    let raw = raw();
    let mut reference: Vec<(u64, usize, usize, usize)> = raw
        .sequences
        .iter()
        .enumerate()
        .flat_map(|(i, seq)| {
            seq.iter()
                .enumerate()
                .map(move |(j, &cat)| (expected_ts(raw, i, j), i, j, cat))
        })
        .collect();
    reference.sort_unstable();
    let got: Vec<(u64, usize, usize, usize)> = stream()
        .clicks()
        .iter()
        .map(|c| {
            (
                c.ts_ms(),
                c.line_index() as usize,
                c.click_index() as usize,
                usize::from(c.category_id()),
            )
        })
        .collect();
    assert_eq!(got.len(), reference.len());
    assert!(got == reference, "stream differs from the reference model");
}

#[test]
fn iteration_materialises_the_same_events_as_get() {
    let stream = stream();
    let from = 4_698_700;
    let tail: Vec<ClickEvent> = stream.iter_from(from).collect();
    assert_eq!(tail.len(), stream.len() - from);
    for (k, event) in tail.iter().enumerate() {
        assert_eq!(Some(event), stream.get(from + k).as_ref());
    }
    assert!(tail.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms));
}

#[test]
fn the_bounded_reader_yields_the_canonical_order_of_the_whole_file() {
    let file = msnbc::scan(msnbc::default_msnbc_path()).expect("scannable file");
    let stream = stream();
    assert_eq!(file.len(), stream.len() as u64);
    assert_eq!(file.sequence_count(), stream.sequence_count());
    assert_eq!(file.categories(), stream.categories());
    let mut streamed = 0usize;
    for (got, want) in file.clicks().expect("readable").zip(stream.clicks()) {
        let got = got.expect("no read error");
        assert_eq!(&got, want, "click {streamed}");
        streamed += 1;
    }
    assert_eq!(streamed, stream.len());
}
