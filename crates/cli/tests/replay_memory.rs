//! `clickpulse replay` streams: its memory stays bounded and does not grow with the input.
//! Measured by the allocator's own peak (mimalloc's peak committed bytes, reported in the
//! `--json` summary), never by time.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use clickpulse_log::{Log, LogOptions};
use common::{clickpulse, run_ok};

/// The bound the replay must keep for the full MSNBC file.
const MAX_PEAK_BYTES: u64 = 100 << 20;

/// Replays `input` into a new log under `dir` and returns the `--json` summary.
fn replay(input: &Path, dir: &Path) -> serde_json::Value {
    let output = run_ok(
        clickpulse()
            .args(["replay", "--json", "--input"])
            .arg(input)
            .arg("--log")
            .arg(dir.join("log")),
    );
    serde_json::from_slice(&output.stdout).expect("a JSON summary")
}

fn events_in_log(dir: &Path) -> u64 {
    let log = Log::open(dir.join("log"), LogOptions::default().read_only(true)).unwrap();
    let topic = log.topic("clicks").unwrap();
    (0..topic.partitions())
        .map(|p| topic.end_offset(p).unwrap())
        .sum()
}

/// The header and the first `lines` visits of the MSNBC file, as a plain sequence file.
fn msnbc_prefix(lines: usize, out: &Path) {
    let file = std::fs::File::open(clickpulse_events::msnbc::default_msnbc_path()).unwrap();
    let text = BufReader::new(flate2::read::MultiGzDecoder::new(file));
    let mut out = std::io::BufWriter::new(std::fs::File::create(out).unwrap());
    let mut visits = 0;
    let mut in_body = false;
    for line in text.lines() {
        let line = line.unwrap();
        if in_body && !line.trim().is_empty() {
            if visits == lines {
                break;
            }
            visits += 1;
        }
        in_body |= line.trim() == "% Sequences:";
        writeln!(out, "{line}").unwrap();
    }
    out.flush().unwrap();
}

#[test]
fn replaying_msnbc_stays_within_its_memory_bound_whatever_the_file_size() {
    let dir = tempfile::tempdir().unwrap();
    let tenth = dir.path().join("tenth.seq");
    msnbc_prefix(98_982, &tenth);
    let small = replay(&tenth, &dir.path().join("small"));
    let full = replay(
        &clickpulse_events::msnbc::default_msnbc_path(),
        &dir.path().join("full"),
    );
    assert_eq!(full["events"], 4_698_794, "{full}");
    assert_eq!(events_in_log(&dir.path().join("full")), 4_698_794);
    assert_eq!(
        events_in_log(&dir.path().join("small")),
        small["events"].as_u64().unwrap()
    );
    let peak = |summary: &serde_json::Value| {
        summary["peak_alloc_bytes"]
            .as_u64()
            .unwrap_or_else(|| panic!("no allocator peak in {summary}"))
    };
    eprintln!(
        "allocator peak: {} MiB for a tenth of MSNBC, {} MiB for all of it",
        peak(&small) >> 20,
        peak(&full) >> 20
    );
    assert!(peak(&full) <= MAX_PEAK_BYTES, "{full}");
    // Flat: ten times the input costs at most a few MiB more (read-ahead and batch buffers
    // reach their full size only on long inputs).
    assert!(
        peak(&full) <= peak(&small) + (8 << 20),
        "the peak grew with the input: {small} then {full}"
    );
}
