//! The embedded log as an engine source: good records arrive, bad payloads become dead letters
//! at their offsets, whichever decoder the source uses.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clickpulse_connectors::log::LogSource;
use clickpulse_engine::source::{DeadLetter, PartitionedSource};
use clickpulse_engine::{Data, RunMode, StreamingContext};
use clickpulse_events::{ClickEvent, binary};
use clickpulse_log::{Batch, Log, LogOptions, Topic};

/// A one-partition topic holding three good events and two bad payloads, at offsets 1 and 3.
fn topic(dir: &std::path::Path) -> Topic {
    let log = Log::open(dir, LogOptions::default()).expect("open the log");
    let topic = log.create_topic("clicks", 1).expect("create the topic");
    let mut batch = Batch::new();
    let mut push = |value: &[u8]| batch.push(0, b"", value).expect("push a record");
    let encoded = |e: &ClickEvent| {
        let mut buf = Vec::new();
        binary::encode(e, &mut buf);
        buf
    };
    push(&encoded(&ClickEvent::page_view(1, "v1", "/a")));
    push(b"\x07not a click");
    push(&encoded(&ClickEvent::page_view(2, "v2", "/bb")));
    push(b"");
    push(&encoded(&ClickEvent::page_view(3, "v3", "/ccc")));
    topic.append(0, &batch).expect("append");
    topic
}

/// Runs `source` to its end on 2 workers: every record (in offset order: there is one partition)
/// and every dead letter's (offset, raw, whether it names its source and partition).
fn read_all<S>(source: S) -> (Vec<S::Item>, Vec<(u64, Vec<u8>, bool)>)
where
    S: PartitionedSource + Clone,
    S::Item: Data,
{
    let items: Arc<Mutex<BTreeMap<u64, Vec<S::Item>>>> = Arc::default();
    let dead: Arc<Mutex<Vec<(u64, Vec<u8>, bool)>>> = Arc::default();
    let (items_sink, dead_sink) = (Arc::clone(&items), Arc::clone(&dead));
    StreamingContext::new(Duration::from_millis(50))
        .expect("a context")
        .workers(2)
        .expect("2 workers")
        .mode(RunMode::UntilEnd)
        .run(move |job| {
            let (records, dead_letters) = job.source_with_dead_letters(&source, None)?;
            let items_sink = Arc::clone(&items_sink);
            records.foreach_batch(move |info, rows| {
                let mut all = items_sink
                    .lock()
                    .expect("a panicking thread poisoned the lock");
                all.insert(info.batch, rows);
            });
            let dead_sink = Arc::clone(&dead_sink);
            dead_letters.foreach_batch(move |_, rows: Vec<DeadLetter>| {
                let mut all = dead_sink
                    .lock()
                    .expect("a panicking thread poisoned the lock");
                all.extend(rows.into_iter().map(|d| {
                    let named = d.source == "clicks" && d.partition == 0 && !d.reason.is_empty();
                    (d.offset, d.raw, named)
                }));
            });
            Ok(())
        })
        .expect("the run");
    let items: Vec<S::Item> = items
        .lock()
        .expect("a panicking thread poisoned the lock")
        .values()
        .flatten()
        .cloned()
        .collect();
    let mut dead = dead
        .lock()
        .expect("a panicking thread poisoned the lock")
        .clone();
    dead.sort();
    (items, dead)
}

fn expected_dead() -> Vec<(u64, Vec<u8>, bool)> {
    vec![
        (1, b"\x07not a click".to_vec(), true),
        (3, Vec::new(), true),
    ]
}

#[test]
fn bad_payloads_become_dead_letters_at_their_offsets() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (events, dead) = read_all(LogSource::new(topic(dir.path())));
    let urls: Vec<&str> = events.iter().map(|e| e.url.as_str()).collect();
    assert_eq!(urls, ["/a", "/bb", "/ccc"]);
    assert_eq!(dead, expected_dead());
}

#[test]
fn a_source_with_its_own_decoder_keeps_what_it_projects_and_the_same_dead_letters() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url_len = |b: &[u8]| binary::decode_ref(b).map(|e| (e.ts_ms, e.url.len()));
    let (lens, dead) = read_all(LogSource::decoding(topic(dir.path()), url_len));
    assert_eq!(lens, [(1, 2), (2, 3), (3, 4)]);
    assert_eq!(dead, expected_dead());
}

/// Polls of a few records at a time hand out every record once, in order, and the reader's
/// position is always the first record not handed out (the log source reads ahead): also
/// across a bad record, after the reader catches up and more is appended, and when a reader is
/// opened again at a position it reported.
#[test]
fn positions_follow_what_small_polls_hand_out_while_the_source_reads_ahead() {
    use clickpulse_engine::source::{PollContext, Polled, ReadStatus};

    let dir = tempfile::tempdir().expect("a temporary directory");
    let topic = topic(dir.path());
    let source = LogSource::new(topic.clone());
    let mut reader = source.open(0, None).expect("open partition 0");
    let poll = |reader: &mut Box<dyn clickpulse_engine::source::PartitionReader<ClickEvent>>,
                max_records: usize| {
        let mut out = Polled::default();
        let status = reader
            .poll(
                &PollContext {
                    batch: 0,
                    max_records,
                },
                &mut out,
            )
            .expect("a poll");
        let dead: Vec<u64> = out.dead_letters.iter().map(|d| d.offset).collect();
        let ts: Vec<u64> = out.items.iter().map(|e| e.ts_ms).collect();
        (ts, dead, status, reader.position())
    };
    // Offsets 0..5: good (ts 1), bad, good (ts 2), bad, good (ts 3).
    assert_eq!(
        poll(&mut reader, 2),
        (vec![1], vec![1], ReadStatus::More, 2)
    );
    assert_eq!(poll(&mut reader, 1), (vec![2], vec![], ReadStatus::More, 3));
    assert_eq!(
        poll(&mut reader, 5),
        (vec![3], vec![3], ReadStatus::CaughtUp, 5)
    );
    assert_eq!(
        poll(&mut reader, 5),
        (vec![], vec![], ReadStatus::CaughtUp, 5)
    );

    let mut more = Batch::new();
    for ts in 10..20u64 {
        let mut buf = Vec::new();
        binary::encode(&ClickEvent::page_view(ts, "v9", "/z"), &mut buf);
        more.push(0, b"", &buf).expect("push a record");
    }
    topic.append(0, &more).expect("append");
    assert_eq!(
        poll(&mut reader, 3),
        (vec![10, 11, 12], vec![], ReadStatus::More, 8)
    );
    // A reader opened where this one stands goes on from there.
    let mut again = source.open(0, Some(reader.position())).expect("open at 8");
    assert_eq!(
        poll(&mut again, 4),
        (vec![13, 14, 15, 16], vec![], ReadStatus::More, 12)
    );
    assert_eq!(poll(&mut reader, 100).0, (13..20).collect::<Vec<_>>());
    assert_eq!(reader.position(), 15);
}
