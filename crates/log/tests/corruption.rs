//! Hand-damaged segment files, one test per kind of damage: recovery on open keeps every batch
//! before the damage, cuts the rest, reports it, and the log then opens cleanly and appends on.

use std::fs;
use std::path::{Path, PathBuf};

use clickpulse_log::{Batch, Defect, Durability, Error, Log, LogOptions, RecoveryReport, Topic};

/// Records per batch.
const RECORDS: u64 = 4;
/// Bytes of one batch: header 40 + 4 × (16 + key 3 + value 20).
const BATCH: u64 = 40 + RECORDS * (16 + 3 + 20);

fn options() -> LogOptions {
    LogOptions::default()
        .durability(Durability::None)
        .segment_bytes(4096) // 20 batches per segment
}

fn value(offset: u64) -> Vec<u8> {
    format!("value-{offset:014}").into_bytes()
}

/// A log with `batches` batches of [`RECORDS`] records in partition 0 of topic "t".
fn log_with(dir: &Path, batches: u64) {
    let log = Log::open(dir, options()).expect("open");
    let topic = log.create_topic("t", 1).expect("create");
    let mut batch = Batch::new();
    for b in 0..batches {
        batch.clear();
        for o in b * RECORDS..(b + 1) * RECORDS {
            batch.push(o as i64, b"key", &value(o)).expect("push");
        }
        topic.append(0, &batch).expect("append");
    }
    assert_eq!(batch.encoded_len() as u64 + 40, BATCH);
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir.join("t").join("0"))
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// Reopens for writing and returns the topic and its single recovery report.
fn recover(dir: &Path) -> (Log, Topic, RecoveryReport) {
    let log = Log::open(dir, options()).expect("reopen");
    let topic = log.topic("t").expect("topic");
    let [report] = topic.recovery() else {
        panic!("expected one recovery report, got {:?}", topic.recovery());
    };
    let report = report.clone();
    (log, topic, report)
}

/// Checks that the partition holds exactly offsets `0..end` with their original contents.
fn assert_intact_prefix(topic: &Topic, end: u64) {
    assert_eq!(topic.end_offset(0).expect("end"), end);
    let mut reader = topic.reader(0, 0).expect("reader");
    let mut next = 0;
    loop {
        let records = reader.poll(1000).expect("poll");
        if records.is_empty() {
            break;
        }
        for record in &records {
            assert_eq!(
                (record.offset, record.value),
                (next, value(next).as_slice())
            );
            next += 1;
        }
    }
    assert_eq!(next, end);
}

/// The log reopens with no report and appends where recovery left off.
fn assert_reopens_cleanly(dir: &Path, end: u64) {
    let log = Log::open(dir, options()).expect("reopen");
    let topic = log.topic("t").expect("topic");
    assert!(topic.recovery().is_empty(), "{:?}", topic.recovery());
    let mut batch = Batch::new();
    batch.push(0, b"", b"after recovery").expect("push");
    assert_eq!(topic.append(0, &batch).expect("append"), end..end + 1);
}

fn flip_bit(path: &Path, position: u64) {
    let mut bytes = fs::read(path).expect("read");
    bytes[position as usize] ^= 0x10;
    fs::write(path, bytes).expect("write");
}

fn truncate(path: &Path, len: u64) {
    fs::File::options()
        .write(true)
        .open(path)
        .expect("open")
        .set_len(len)
        .expect("truncate");
}

#[test]
fn bit_flip_in_a_record_cuts_the_log_before_its_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    log_with(dir.path(), 5);
    let segment = &segments(dir.path())[0];
    flip_bit(segment, 3 * BATCH + 40 + 25);
    let (_log, topic, report) = recover(dir.path());
    assert_eq!(report.defect, Defect::PayloadChecksum);
    assert_eq!((&report.segment, report.position), (segment, 3 * BATCH));
    assert_eq!(report.bytes_dropped, 2 * BATCH);
    assert_eq!(report.end_offset, 3 * RECORDS);
    assert_eq!(fs::metadata(segment).expect("meta").len(), 3 * BATCH);
    assert_intact_prefix(&topic, 3 * RECORDS);
    drop((_log, topic));
    assert_reopens_cleanly(dir.path(), 3 * RECORDS);
}

#[test]
fn truncated_header_is_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    log_with(dir.path(), 5);
    let segment = &segments(dir.path())[0];
    truncate(segment, 4 * BATCH + 20);
    let (_log, topic, report) = recover(dir.path());
    assert_eq!(report.defect, Defect::TruncatedHeader);
    assert_eq!((report.position, report.bytes_dropped), (4 * BATCH, 20));
    assert_intact_prefix(&topic, 4 * RECORDS);
    drop((_log, topic));
    assert_reopens_cleanly(dir.path(), 4 * RECORDS);
}

#[test]
fn zero_filled_tail_is_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    log_with(dir.path(), 5);
    let segment = &segments(dir.path())[0];
    // What a machine crash can leave: the file size grew, the data never reached the disk.
    truncate(segment, 5 * BATCH + 4096);
    let (_log, topic, report) = recover(dir.path());
    assert_eq!(report.defect, Defect::ZeroFilled);
    assert_eq!((report.position, report.bytes_dropped), (5 * BATCH, 4096));
    assert_intact_prefix(&topic, 5 * RECORDS);
    drop((_log, topic));
    assert_reopens_cleanly(dir.path(), 5 * RECORDS);
}

#[test]
fn truncated_mid_batch_is_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    log_with(dir.path(), 5);
    let segment = &segments(dir.path())[0];
    truncate(segment, 4 * BATCH + 100);
    let (_log, topic, report) = recover(dir.path());
    assert_eq!(report.defect, Defect::TruncatedPayload);
    assert_eq!((report.position, report.bytes_dropped), (4 * BATCH, 100));
    assert!(report.to_string().contains("dropped 100 bytes"), "{report}");
    assert_intact_prefix(&topic, 4 * RECORDS);
    drop((_log, topic));
    assert_reopens_cleanly(dir.path(), 4 * RECORDS);
}

#[test]
fn damaged_header_in_a_sealed_segment_drops_every_later_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    log_with(dir.path(), 50);
    let files = segments(dir.path());
    assert_eq!(files.len(), 3, "20 batches per segment");
    flip_bit(&files[0], 5 * BATCH + 20); // inside the sixth batch's header
    let (_log, topic, report) = recover(dir.path());
    assert_eq!(report.defect, Defect::HeaderChecksum);
    assert_eq!((&report.segment, report.position), (&files[0], 5 * BATCH));
    assert_eq!(report.deleted_segments, files[1..].to_vec());
    assert_eq!(report.bytes_dropped, 50 * BATCH - 5 * BATCH);
    assert_eq!(segments(dir.path()), files[..1].to_vec());
    assert_intact_prefix(&topic, 5 * RECORDS);
    drop((_log, topic));
    assert_reopens_cleanly(dir.path(), 5 * RECORDS);
}

#[test]
fn missing_middle_segment_drops_the_segments_after_the_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    log_with(dir.path(), 50);
    let files = segments(dir.path());
    fs::remove_file(&files[1]).expect("remove");
    let (_log, topic, report) = recover(dir.path());
    assert_eq!(
        report.defect,
        Defect::SegmentGap {
            expected: 20 * RECORDS,
            found: 40 * RECORDS
        }
    );
    assert_eq!(report.deleted_segments, vec![files[2].clone()]);
    assert_intact_prefix(&topic, 20 * RECORDS);
}

#[test]
fn bit_flip_in_a_sealed_segment_payload_is_reported_by_the_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    log_with(dir.path(), 50);
    let files = segments(dir.path());
    // Sealed segments get a header check on open; payloads are verified on every read.
    flip_bit(&files[0], 2 * BATCH + 60);
    let log = Log::open(dir.path(), options()).expect("reopen");
    let topic = log.topic("t").expect("topic");
    assert!(topic.recovery().is_empty());
    let records = topic
        .read(0, 0, 1000)
        .expect("the batches before the damage");
    assert_eq!(records.len() as u64, 2 * RECORDS);
    match topic.read(0, 2 * RECORDS, 1000) {
        Err(Error::Corrupt {
            path,
            position,
            defect: Defect::PayloadChecksum,
        }) => assert_eq!((path, position), (files[0].clone(), 2 * BATCH)),
        other => panic!("expected corruption, got {other:?}"),
    }
    let err = topic
        .read(0, 2 * RECORDS + 1, 1)
        .expect_err("inside the damaged batch");
    assert!(err.to_string().contains("payload checksum"), "{err}");
    assert_eq!(topic.read(0, 3 * RECORDS, 1).expect("after it").len(), 1);
}

#[test]
fn read_only_reader_of_a_damaged_tail_reads_the_prefix_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    log_with(dir.path(), 5);
    let segment = &segments(dir.path())[0];
    flip_bit(segment, 3 * BATCH + 40 + 25);
    let damaged = fs::read(segment).expect("read");
    let log = Log::open(dir.path(), options().read_only(true)).expect("open read-only");
    let topic = log.topic("t").expect("topic");
    assert!(topic.recovery().is_empty());
    assert_intact_prefix(&topic, 3 * RECORDS);
    assert!(
        topic
            .read(0, 3 * RECORDS, 10)
            .expect("at the damage")
            .is_empty()
    );
    assert_eq!(fs::read(segment).expect("read"), damaged);
}

#[test]
fn sealed_segment_that_becomes_active_is_checked_in_full() {
    let dir = tempfile::tempdir().expect("tempdir");
    log_with(dir.path(), 50);
    let files = segments(dir.path());
    // Segment 0's payload damage would only be found by a read, but the gap after it makes it
    // the active segment, so recovery checks it in full and cuts at the damage.
    flip_bit(&files[0], 7 * BATCH + 40 + 3);
    fs::remove_file(&files[1]).expect("remove");
    let (_log, topic, report) = recover(dir.path());
    assert_eq!(report.defect, Defect::PayloadChecksum);
    assert_eq!((&report.segment, report.position), (&files[0], 7 * BATCH));
    assert_eq!(report.deleted_segments, vec![files[2].clone()]);
    assert_intact_prefix(&topic, 7 * RECORDS);
    drop((_log, topic));
    assert_reopens_cleanly(dir.path(), 7 * RECORDS);
}
