//! `msnbc::scan` + `MsnbcFile::clicks` (bounded memory) against `msnbc::read` (the whole file
//! sorted at once) on generated sequence files: the same clicks in the same order, and the
//! same errors.

use std::io::Write;

use clickpulse_events::msnbc::{self, MsnbcClick, MsnbcError};
use proptest::prelude::*;

/// A sequence file with `categories` categories and these visits (category ids 1-based).
fn file_text(categories: usize, visits: &[Vec<usize>]) -> String {
    let names: Vec<String> = (0..categories).map(|k| format!("c{k}")).collect();
    let mut text = format!(
        "% Different categories found in input file:\n\n{}\n\n% Sequences:\n\n",
        names.join(" ")
    );
    for visit in visits {
        let ids: Vec<String> = visit.iter().map(usize::to_string).collect();
        text.push_str(&ids.join(" "));
        text.push('\n');
    }
    text
}

fn visits() -> impl Strategy<Value = (usize, Vec<Vec<usize>>)> {
    (1usize..5).prop_flat_map(|categories| {
        // Mostly short visits, some long ones that outlive many reader steps.
        let visit = prop_oneof![
            8 => prop::collection::vec(1..=categories, 1..6),
            1 => prop::collection::vec(1..=categories, 50..1_500),
        ];
        (Just(categories), prop::collection::vec(visit, 0..300))
    })
}

fn ordered(path: &std::path::Path) -> Result<Vec<MsnbcClick>, MsnbcError> {
    msnbc::scan(path)?.clicks()?.collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn bounded_reader_matches_the_whole_file_sort((categories, visits) in visits(), gzip in any::<bool>()) {
        let text = file_text(categories, &visits);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("visits.seq");
        if gzip {
            let mut encoder = flate2::write::GzEncoder::new(
                std::fs::File::create(&path).unwrap(),
                flate2::Compression::fast(),
            );
            encoder.write_all(text.as_bytes()).unwrap();
            encoder.finish().unwrap();
        } else {
            std::fs::write(&path, &text).unwrap();
        }
        let whole = msnbc::read(text.as_bytes()).unwrap();
        let file = msnbc::scan(&path).unwrap();
        prop_assert_eq!(file.len(), whole.len() as u64);
        prop_assert_eq!(file.sequence_count(), whole.sequence_count());
        let got = ordered(&path).unwrap();
        prop_assert_eq!(got.as_slice(), whole.clicks());
        let events: Vec<_> = got.iter().map(|c| file.event(c)).collect();
        let want: Vec<_> = whole.iter().collect();
        prop_assert_eq!(events, want);
    }
}

#[test]
fn a_bad_file_fails_the_scan_as_it_fails_the_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.seq");
    std::fs::write(&path, file_text(2, &[vec![1, 2], vec![1, 3]])).unwrap();
    let scanned = msnbc::scan(&path).unwrap_err();
    let loaded = msnbc::load(&path).unwrap_err();
    assert_eq!(scanned.to_string(), loaded.to_string());
    assert!(
        matches!(scanned, MsnbcError::BadCategory { line: 8, .. }),
        "{scanned}"
    );
}

#[test]
fn a_file_changed_after_its_scan_is_an_error_not_a_wrong_stream() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("visits.seq");
    std::fs::write(&path, file_text(2, &[vec![1, 2], vec![2]])).unwrap();
    let file = msnbc::scan(&path).unwrap();
    let read_after = |text: String| {
        std::fs::write(&path, text).unwrap();
        file.clicks()?.collect::<Result<Vec<_>, _>>()
    };
    for (what, text) in [
        (
            "one more visit",
            file_text(2, &[vec![1, 2], vec![2], vec![1]]),
        ),
        ("one fewer visit", file_text(2, &[vec![1, 2]])),
        ("other categories", file_text(3, &[vec![1, 2], vec![2]])),
    ] {
        let err = read_after(text).unwrap_err();
        assert!(matches!(err, MsnbcError::Changed { .. }), "{what}: {err}");
    }
}
