//! Property test: random appends, reads, reopens and retention passes against a plain `Vec`
//! per partition.

use std::path::Path;

use clickpulse_log::{Batch, Durability, Error, Log, LogOptions, Retention, Topic};
use proptest::prelude::*;

const PARTITIONS: u32 = 2;

type Rec = (i64, Vec<u8>, Vec<u8>);

#[derive(Debug, Clone)]
enum Op {
    Append {
        partition: u32,
        records: Vec<Rec>,
    },
    Read {
        partition: u32,
        from: u64,
        max: usize,
    },
    ReadOnlyRead {
        partition: u32,
        from: u64,
        max: usize,
    },
    Reopen,
    Retention,
}

fn record() -> impl Strategy<Value = Rec> {
    (
        any::<i64>(),
        proptest::collection::vec(any::<u8>(), 0..8),
        proptest::collection::vec(any::<u8>(), 0..120),
    )
}

fn op() -> impl Strategy<Value = Op> {
    let partition = 0..PARTITIONS;
    prop_oneof![
        6 => (partition.clone(), proptest::collection::vec(record(), 1..30))
            .prop_map(|(partition, records)| Op::Append { partition, records }),
        4 => (partition.clone(), 0u64..400, 1usize..80)
            .prop_map(|(partition, from, max)| Op::Read { partition, from, max }),
        2 => (partition, 0u64..400, 1usize..80)
            .prop_map(|(partition, from, max)| Op::ReadOnlyRead { partition, from, max }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Retention),
    ]
}

fn options() -> LogOptions {
    LogOptions::default()
        .durability(Durability::None)
        .segment_bytes(4096)
        .index_interval_bytes(300)
        .max_read_bytes(4096)
        .retention(Retention::forever().max_bytes(8_192))
}

/// The model: every record ever appended per partition, and the first offset still kept.
struct Model {
    records: Vec<Vec<Rec>>,
    start: Vec<u64>,
}

/// Reads `max` records from `from` and checks them against the model.
fn check_read(topic: &Topic, model: &Model, partition: u32, from: u64, max: usize) {
    let p = partition as usize;
    let end = model.records[p].len() as u64;
    let start = model.start[p];
    match topic.read(partition, from, max) {
        Ok(records) => {
            assert!(
                from >= start && from <= end,
                "read {from} outside {start}..={end}"
            );
            let expected = (max as u64).min(end - from) as usize;
            assert_eq!(records.len(), expected, "a read is short only at the end");
            for (i, record) in records.iter().enumerate() {
                let offset = from + i as u64;
                let (ts, key, value) = &model.records[p][offset as usize];
                assert_eq!(record.offset, offset);
                assert_eq!(
                    (record.timestamp, record.key, record.value),
                    (*ts, &key[..], &value[..])
                );
            }
            // Advancing by growing steps (across batches and read buffers, and past the end)
            // leaves exactly the later records.
            let mut rest = records;
            let mut step = 1;
            while !rest.is_empty() {
                rest.advance(step);
                let done = (rest.first_offset() - from) as usize;
                assert!(
                    done <= expected && rest.len() == expected - done,
                    "{done} advanced"
                );
                for (i, record) in rest.iter().enumerate() {
                    let offset = rest.first_offset() + i as u64;
                    assert_eq!(record.offset, offset);
                    assert_eq!(record.value, &model.records[p][offset as usize].2[..]);
                }
                assert_eq!(rest.iter().count(), rest.len());
                step = step * 2 + 1;
            }
            assert_eq!(rest.first_offset(), from + expected as u64);
            // A one-buffer read gives a prefix of the same records: empty only at the end.
            let buffered = topic
                .read_buffer(partition, from, max)
                .expect("a buffer read where a read succeeds");
            assert!(
                buffered.len() <= expected,
                "a buffer read past the records asked for"
            );
            assert_eq!(buffered.is_empty(), expected == 0, "empty before the end");
            for (i, record) in buffered.iter().enumerate() {
                let offset = from + i as u64;
                assert_eq!(record.offset, offset);
                assert_eq!(record.value, &model.records[p][offset as usize].2[..]);
            }
        }
        Err(Error::OffsetOutOfRange {
            earliest, end: e, ..
        }) => {
            assert!(
                from < start || from > end,
                "read {from} inside {start}..={end} refused"
            );
            assert_eq!((earliest, e), (start, end));
            assert!(matches!(
                topic.read_buffer(partition, from, max),
                Err(Error::OffsetOutOfRange { .. })
            ));
        }
        Err(other) => panic!("read failed: {other}"),
    }
}

fn open(dir: &Path) -> (Log, Topic) {
    let log = Log::open(dir, options()).expect("open");
    let topic = log.create_topic("t", PARTITIONS).expect("topic");
    assert!(
        topic.recovery().is_empty(),
        "clean shutdown needs no recovery"
    );
    (log, topic)
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, mut topic) = open(dir.path());
    let mut model = Model {
        records: vec![Vec::new(); PARTITIONS as usize],
        start: vec![0; PARTITIONS as usize],
    };
    let mut batch = Batch::new();
    for op in ops {
        match op {
            Op::Append { partition, records } => {
                batch.clear();
                for (ts, key, value) in &records {
                    batch.push(*ts, key, value).expect("push");
                }
                let kept = &mut model.records[partition as usize];
                let range = topic.append(partition, &batch).expect("append");
                assert_eq!(
                    range,
                    kept.len() as u64..(kept.len() + records.len()) as u64
                );
                kept.extend(records);
            }
            Op::Read {
                partition,
                from,
                max,
            } => check_read(&topic, &model, partition, from, max),
            Op::ReadOnlyRead {
                partition,
                from,
                max,
            } => {
                let ro = Log::open(dir.path(), options().read_only(true)).expect("open ro");
                let ro_topic = ro.topic("t").expect("topic");
                check_read(&ro_topic, &model, partition, from, max);
            }
            Op::Reopen => {
                drop((topic, log));
                (log, topic) = open(dir.path());
            }
            Op::Retention => {
                topic.enforce_retention().expect("retention");
                for p in 0..PARTITIONS {
                    let start = topic.start_offset(p).expect("start");
                    let i = p as usize;
                    assert!(start >= model.start[i] && start <= model.records[i].len() as u64);
                    model.start[i] = start;
                }
            }
        }
        for p in 0..PARTITIONS {
            let i = p as usize;
            assert_eq!(
                topic.end_offset(p).expect("end"),
                model.records[i].len() as u64
            );
            assert_eq!(topic.start_offset(p).expect("start"), model.start[i]);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn log_behaves_like_a_vec_per_partition(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops);
    }
}
