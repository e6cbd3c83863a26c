//! Behaviour of the public API: appends and reads, reopening, rolls, retention, read-only
//! readers, locking, and concurrent use from several threads.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use clickpulse_log::{Batch, Durability, Error, Log, LogOptions, Retention, Topic};

fn small_segments() -> LogOptions {
    LogOptions::default()
        .durability(Durability::None)
        .segment_bytes(4096)
        .index_interval_bytes(512)
        .max_read_bytes(4096)
}

fn value(partition: u32, offset: u64) -> Vec<u8> {
    format!("p{partition}-o{offset}-")
        .repeat(1 + (offset % 5) as usize)
        .into_bytes()
}

/// Appends `count` records to `partition` in batches of `per_batch`, values from [`value`].
fn fill(topic: &Topic, partition: u32, count: u64, per_batch: u64) {
    let mut batch = Batch::new();
    let mut offset = topic.end_offset(partition).expect("end");
    let end = offset + count;
    while offset < end {
        batch.clear();
        let n = per_batch.min(end - offset);
        for o in offset..offset + n {
            batch
                .push(o as i64 * 10, &o.to_be_bytes(), &value(partition, o))
                .expect("push");
        }
        let range = topic.append(partition, &batch).expect("append");
        assert_eq!(range, offset..offset + n);
        offset += n;
    }
}

/// Reads the whole partition from `from` with a reader and checks every record.
fn check_all(topic: &Topic, partition: u32, from: u64) -> u64 {
    let mut reader = topic.reader(partition, from).expect("reader");
    let mut expected = from;
    loop {
        let records = reader.poll(37).expect("poll");
        if records.is_empty() {
            break;
        }
        for record in &records {
            assert_eq!(record.offset, expected);
            assert_eq!(record.key, expected.to_be_bytes());
            assert_eq!(record.timestamp, expected as i64 * 10);
            assert_eq!(record.value, value(partition, expected));
            expected += 1;
        }
    }
    assert_eq!(expected, topic.end_offset(partition).expect("end"));
    expected
}

fn segment_files(dir: &Path, topic: &str, partition: u32) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir.join(topic).join(partition.to_string()))
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

#[test]
fn handles_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Log>();
    assert_send_sync::<Topic>();
    assert_send_sync::<clickpulse_log::Records>();
    assert_send_sync::<clickpulse_log::Reader>();
}

#[test]
fn records_round_trip_across_segment_rolls_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = Log::open(dir.path(), small_segments()).expect("open");
        let topic = log.create_topic("clicks", 2).expect("create");
        fill(&topic, 0, 1000, 7);
        fill(&topic, 1, 10, 1);
        assert_eq!(check_all(&topic, 0, 0), 1000);
        assert_eq!(check_all(&topic, 0, 555), 1000);
        assert_eq!(check_all(&topic, 1, 0), 10);
        let all = topic.read(0, 0, 5000).expect("read across segments");
        assert_eq!((all.len(), all.next_offset()), (1000, 1000));
        assert!(all.iter().map(|r| r.offset).eq(0..1000));
    }
    assert!(
        segment_files(dir.path(), "clicks", 0).len() > 5,
        "expected segment rolls"
    );
    let log = Log::open(dir.path(), small_segments()).expect("reopen");
    let topic = log.topic("clicks").expect("topic");
    assert!(topic.recovery().is_empty(), "{:?}", topic.recovery());
    assert_eq!(topic.partitions(), 2);
    assert_eq!(topic.end_offset(0).expect("end"), 1000);
    fill(&topic, 0, 100, 13);
    assert_eq!(check_all(&topic, 0, 0), 1100);
}

#[test]
fn a_read_from_inside_a_batch_starts_at_that_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), small_segments()).expect("open");
    let topic = log.create_topic("t", 1).expect("create");
    fill(&topic, 0, 20, 10);
    let records = topic.read(0, 13, 4).expect("read");
    let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [13, 14, 15, 16]);
    assert_eq!((records.first_offset(), records.next_offset()), (13, 17));
}

#[test]
fn reads_outside_the_partition_are_out_of_range_and_the_end_is_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), small_segments()).expect("open");
    let topic = log.create_topic("t", 1).expect("create");
    assert!(topic.read(0, 0, 10).expect("read at end").is_empty());
    fill(&topic, 0, 5, 5);
    assert!(topic.read(0, 5, 10).expect("read at end").is_empty());
    match topic.read(0, 6, 10) {
        Err(Error::OffsetOutOfRange {
            requested: 6,
            earliest: 0,
            end: 5,
            ..
        }) => {}
        other => panic!("expected out of range, got {other:?}"),
    }
    assert!(matches!(
        topic.read(1, 0, 10),
        Err(Error::NoSuchPartition {
            partition: 1,
            partitions: 1,
            ..
        })
    ));
}

#[test]
fn topics_are_created_once_with_a_fixed_partition_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogOptions::default()).expect("open");
    assert!(matches!(log.topic("clicks"), Err(Error::TopicNotFound(_))));
    log.create_topic("clicks", 3).expect("create");
    assert_eq!(
        log.create_topic("clicks", 3).expect("again").partitions(),
        3
    );
    assert!(matches!(
        log.create_topic("clicks", 4),
        Err(Error::PartitionCountMismatch {
            existing: 3,
            requested: 4,
            ..
        })
    ));
    assert!(matches!(
        log.create_topic("bad/name", 1),
        Err(Error::InvalidTopicName { .. })
    ));
    assert!(matches!(
        log.create_topic("zero", 0),
        Err(Error::InvalidArgument(_))
    ));
    drop(log);
    let log = Log::open(dir.path(), LogOptions::default()).expect("reopen");
    let err = log
        .create_topic("clicks", 1)
        .expect_err("mismatch after reopen");
    assert!(
        err.to_string().contains("exists with 3 partitions"),
        "{err}"
    );
    assert_eq!(log.topic_names().expect("names"), ["clicks"]);
}

#[test]
fn empty_batches_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogOptions::default()).expect("open");
    let topic = log.create_topic("t", 1).expect("create");
    assert!(matches!(
        topic.append(0, &Batch::new()),
        Err(Error::EmptyBatch)
    ));
    assert_eq!(topic.end_offset(0).expect("end"), 0);
}

#[test]
fn a_second_writer_open_is_refused_until_the_first_closes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Log::open(dir.path(), LogOptions::default()).expect("open");
    let topic = first.create_topic("clicks", 1).expect("create");
    let second = Log::open(dir.path(), LogOptions::default()).expect("open second");
    let err = second.topic("clicks").expect_err("second writer");
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    assert!(err.is_retryable());
    // A read-only log reads alongside the writer.
    let reader = Log::open(dir.path(), LogOptions::default().read_only(true)).expect("ro");
    reader.topic("clicks").expect("read-only topic");
    drop(topic);
    drop(first);
    second
        .topic("clicks")
        .expect("lock released with the first log");
}

#[test]
fn read_only_log_follows_the_writer_and_refuses_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = Log::open(dir.path(), small_segments()).expect("open");
    let topic = writer.create_topic("clicks", 1).expect("create");
    let reader_log = Log::open(dir.path(), small_segments().read_only(true)).expect("ro");
    let follower = reader_log.topic("clicks").expect("topic");
    assert!(follower.is_read_only());
    let mut batch = Batch::new();
    batch.push(1, b"", b"x").expect("push");
    assert!(matches!(
        follower.append(0, &batch),
        Err(Error::ReadOnly(_))
    ));
    assert!(matches!(
        reader_log.create_topic("other", 1),
        Err(Error::ReadOnly(_))
    ));

    let mut reader = follower.reader(0, 0).expect("reader");
    let mut seen = 0u64;
    for round in 0..5 {
        fill(&topic, 0, 300, 11); // rolls several segments per round
        loop {
            let records = reader.poll(50).expect("poll");
            if records.is_empty() {
                break;
            }
            for record in &records {
                assert_eq!(record.offset, seen);
                assert_eq!(record.value, value(0, seen));
                seen += 1;
            }
        }
        assert_eq!(seen, 300 * (round + 1), "caught up in round {round}");
        assert_eq!(follower.end_offset(0).expect("end"), seen);
    }
    assert!(matches!(
        follower.read(0, seen + 1, 1),
        Err(Error::OffsetOutOfRange { .. })
    ));
}

#[test]
fn read_only_reader_stops_at_an_unfinished_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = Log::open(dir.path(), LogOptions::default()).expect("open");
    let topic = writer.create_topic("t", 1).expect("create");
    fill(&topic, 0, 10, 5);
    let segment = segment_files(dir.path(), "t", 0).pop().expect("segment");
    let complete = fs::read(&segment).expect("read");
    // What another process would see mid-write: the next batch's first bytes only.
    let mut partial = complete.clone();
    partial.extend_from_slice(&complete[..30]);
    fs::write(&segment, &partial).expect("write");

    let reader_log = Log::open(dir.path(), LogOptions::default().read_only(true)).expect("ro");
    let follower = reader_log.topic("t").expect("topic");
    let records = follower.read(0, 0, 100).expect("read");
    assert_eq!(records.len(), 10);
    assert!(follower.read(0, 10, 100).expect("read at tail").is_empty());
    assert_eq!(follower.end_offset(0).expect("end"), 10);
    assert_eq!(
        fs::read(&segment).expect("read"),
        partial,
        "a reader never changes files"
    );
}

#[test]
fn retention_by_size_deletes_old_segments_and_old_positions_get_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = small_segments().retention(Retention::forever().max_bytes(10_000));
    let log = Log::open(dir.path(), options).expect("open");
    let topic = log.create_topic("t", 1).expect("create");
    fill(&topic, 0, 2000, 10);
    let mut reader = topic.reader(0, 0).expect("reader");
    reader.poll(5).expect("poll before retention");
    let ro_log = Log::open(dir.path(), small_segments().read_only(true)).expect("ro");
    let ro_topic = ro_log.topic("t").expect("ro topic");
    let mut ro_reader = ro_topic.reader(0, 0).expect("ro reader");
    ro_reader.poll(5).expect("read-only poll before retention");

    let before = segment_files(dir.path(), "t", 0).len();
    let reports = topic.enforce_retention().expect("retention");
    let [report] = reports.as_slice() else {
        panic!("expected one report, got {reports:?}");
    };
    let start = topic.start_offset(0).expect("start");
    assert_eq!(report.start_offset, start);
    assert!(start > 0);
    let after = segment_files(dir.path(), "t", 0);
    assert_eq!(after.len(), before - report.deleted_segments.len());
    let kept: u64 = after
        .iter()
        .map(|p| fs::metadata(p).expect("meta").len())
        .sum();
    assert!(kept <= 10_000 + 4096, "kept {kept} bytes");

    match reader.poll(5) {
        Err(Error::OffsetOutOfRange {
            requested: 5,
            earliest,
            ..
        }) => assert_eq!(earliest, start),
        other => panic!("expected out of range, got {other:?}"),
    }
    match ro_reader.poll(5) {
        Err(Error::OffsetOutOfRange { earliest, .. }) => assert_eq!(earliest, start),
        other => panic!("read-only reader: expected out of range, got {other:?}"),
    }
    assert_eq!(ro_topic.start_offset(0).expect("ro start"), start);
    let err = topic.read(0, 0, 1).expect_err("deleted");
    assert!(
        err.to_string().contains(&format!("earliest is {start}")),
        "{err}"
    );
    assert_eq!(check_all(&topic, 0, start), 2000);
    fill(&topic, 0, 10, 10);
    drop((log, topic, reader)); // the writer lock lives as long as any handle
    let log = Log::open(dir.path(), small_segments()).expect("reopen");
    assert_eq!(
        log.topic("t")
            .expect("topic")
            .start_offset(0)
            .expect("start"),
        start
    );
}

#[test]
fn retention_by_age_uses_the_time_segments_were_last_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options =
        small_segments().retention(Retention::forever().max_age(Duration::from_secs(3600)));
    let log = Log::open(dir.path(), options).expect("open");
    let topic = log.create_topic("t", 1).expect("create");
    fill(&topic, 0, 500, 10);
    assert!(
        topic.enforce_retention().expect("retention").is_empty(),
        "nothing is old yet"
    );
    let files = segment_files(dir.path(), "t", 0);
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    for old in &files[..2] {
        let file = fs::File::options().write(true).open(old).expect("open");
        file.set_modified(two_hours_ago).expect("set mtime");
    }
    let reports = topic.enforce_retention().expect("retention");
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].deleted_segments, files[..2].to_vec());
    assert_eq!(segment_files(dir.path(), "t", 0), files[2..].to_vec());
}

#[test]
fn concurrent_appenders_and_readers_see_whole_batches_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = LogOptions::default()
        .durability(Durability::EveryBatch)
        .segment_bytes(64 << 10);
    let log = Log::open(dir.path(), options).expect("open");
    let topic = log.create_topic("t", 2).expect("create");
    let done = Arc::new(AtomicBool::new(false));
    let appenders: Vec<_> = (0..4u8)
        .map(|thread| {
            let topic = topic.clone();
            std::thread::spawn(move || {
                let mut batch = Batch::new();
                for seq in 0..40u8 {
                    batch.clear();
                    for i in 0..=seq {
                        batch
                            .push(i64::from(i), &[thread, seq, i], &[thread; 40])
                            .expect("push");
                    }
                    let range = topic.append(u32::from(thread % 2), &batch).expect("append");
                    assert_eq!(range.end - range.start, u64::from(seq) + 1);
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2u32)
        .map(|partition| {
            let topic = topic.clone();
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut reader = topic.reader(partition, 0).expect("reader");
                let mut previous: Option<[u8; 3]> = None;
                loop {
                    let finished = done.load(Ordering::Acquire);
                    let records = reader.poll(100).expect("poll");
                    for record in &records {
                        let key: [u8; 3] = record.key.try_into().expect("3-byte key");
                        let [thread, seq, i] = key;
                        assert_eq!(u32::from(thread % 2), partition);
                        assert_eq!(record.value, [thread; 40]);
                        // Records of one batch are contiguous and complete.
                        if i > 0 {
                            assert_eq!(previous, Some([thread, seq, i - 1]));
                        }
                        if let Some([pt, ps, pi]) = previous {
                            if i == 0 {
                                assert_eq!(pi, ps, "batch {pt}/{ps} cut short");
                            }
                        }
                        previous = Some(key);
                    }
                    if finished && records.is_empty() {
                        return reader.position();
                    }
                }
            })
        })
        .collect();
    for appender in appenders {
        appender.join().expect("appender");
    }
    done.store(true, Ordering::Release);
    let per_thread: u64 = (1..=40).sum();
    for reader in readers {
        assert_eq!(reader.join().expect("reader"), 2 * per_thread);
    }
}

#[test]
fn interval_durability_appends_and_syncs_on_demand() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = small_segments().durability(Durability::Interval(Duration::from_millis(5)));
    let log = Log::open(dir.path(), options).expect("open");
    let topic = log.create_topic("t", 1).expect("create");
    fill(&topic, 0, 300, 10);
    topic.sync().expect("sync");
    log.sync().expect("sync all");
    drop(topic);
    drop(log);
    let log = Log::open(dir.path(), small_segments()).expect("reopen");
    assert_eq!(check_all(&log.topic("t").expect("topic"), 0, 0), 300);
}
