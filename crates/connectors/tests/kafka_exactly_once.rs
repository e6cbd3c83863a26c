//! KafkaSink across restarts, against a real broker (tansu 0.6, which has no transactions: these
//! tests exercise the tail scan that replaces them). A restarted job writes the batches after
//! its checkpoint again; every row must still be in its topic exactly once, in order.

#![allow(clippy::unwrap_used)]

mod kafka_common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use clickpulse_connectors::kafka::{KafkaSink, KeySpec, record};
use clickpulse_connectors::{ResultBatch, ResultSink};
use clickpulse_events::JsonRow;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};

use kafka_common::{Broker, Record, create_topic};

const PARTITIONS: u32 = 3;
/// A stream keyed by url (the default key).
const KEYED: &str = "page_views";
/// A stream whose rows have no key: spread round robin.
const KEYLESS: &str = "anomalies";

/// The rows of `stream`'s batch `b`: 2 to 6 of them, and none in every sixth `page_views`
/// batch (an empty batch writes nothing, and the next one names the one before it).
fn rows_of(stream: &str, b: u64) -> Vec<Value> {
    let n = if stream == KEYED && b % 6 == 3 {
        0
    } else {
        b * 7 % 5 + 2
    };
    (0..n)
        .map(|i| match stream {
            KEYED => json!({"url": format!("/p{}", (b * 5 + i * 3) % 11), "count": b + i}),
            _ => json!({"label": format!("{stream}-{b}-{i}"), "n": i}),
        })
        .collect()
}

fn batch(stream: &str, b: u64) -> ResultBatch {
    let windowed = stream == KEYED;
    ResultBatch {
        stream: stream.into(),
        batch: b,
        window_start_ms: windowed.then_some(b * 1000),
        window_end_ms: windowed.then_some(b * 1000 + 1000),
        rows: rows_of(stream, b).into_iter().map(JsonRow::from).collect(),
    }
}

fn sink(brokers: &str) -> KafkaSink {
    KafkaSink::builder(brokers)
        .key(KEYLESS, KeySpec::None)
        .build()
        .unwrap()
}

fn write_all(sink: &mut KafkaSink, streams: &[&str], batches: std::ops::Range<u64>) {
    for b in batches {
        for stream in streams {
            sink.write(&batch(stream, b)).unwrap();
        }
    }
}

fn rows_in(streams: &[&str], batches: std::ops::Range<u64>) -> u64 {
    batches
        .flat_map(|b| streams.iter().map(move |s| rows_of(s, b).len() as u64))
        .sum()
}

/// Every record of `topic`, read from the beginning of each partition until none came for
/// 1.5 s (tansu's partition ends are not to be trusted), in offset order per partition.
fn read_to_end(brokers: &str, topic: &str) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("test-read-to-end-{topic}"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Instant::now();
    let mut out = Vec::new();
    while last.elapsed() < Duration::from_millis(1500) && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            last = Instant::now();
            out.push(Record::of(&m));
        }
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    out
}

fn header(r: &Record, name: &str) -> Option<u64> {
    r.headers.get(name).map(|v| v.parse().unwrap())
}

/// The stream's non-empty batch before `b`, as `prev_batch` names it.
fn prev_of(stream: &str, b: u64) -> Option<u64> {
    (0..b).rev().find(|&p| !rows_of(stream, p).is_empty())
}

/// Checks that `topic` holds every row of `stream`'s batches `0..end` exactly once, with the
/// headers and partition the sink gives it, and each partition's rows in (batch, row) order.
fn assert_exactly_once(brokers: &str, topic: &str, stream: &str, end: u64) {
    let records = read_to_end(brokers, topic);
    let mut seen: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    let mut last_in_partition: HashMap<i32, (u64, u64)> = HashMap::new();
    for r in &records {
        assert_eq!(r.headers[record::STREAM_HEADER], stream, "{r:?}");
        let (b, i) = (
            header(r, record::BATCH_HEADER).unwrap(),
            header(r, record::ROW_HEADER).unwrap(),
        );
        *seen.entry((b, i)).or_default() += 1;
        let rows = rows_of(stream, b);
        assert_eq!(
            r.json(),
            rows[i as usize],
            "value of {stream} batch {b} row {i}"
        );
        assert_eq!(
            header(r, record::BATCH_ROWS_HEADER),
            Some(rows.len() as u64)
        );
        assert_eq!(
            header(r, record::PREV_BATCH_HEADER),
            prev_of(stream, b),
            "{r:?}"
        );
        let key = r.key_text();
        let expected_key = if stream == KEYLESS {
            None
        } else {
            KeySpec::Auto.key_of(&rows[i as usize])
        };
        assert_eq!(key, expected_key);
        let partition = record::partition_of(key.as_deref(), b, i as usize, PARTITIONS);
        assert_eq!(r.partition, partition, "{stream} batch {b} row {i}");
        if let Some(before) = last_in_partition.insert(r.partition, (b, i)) {
            assert!(
                before < (b, i),
                "partition {}: {stream} ({b}, {i}) after {before:?}",
                r.partition
            );
        }
    }
    let duplicates: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicates.is_empty(),
        "{topic}: written twice: {duplicates:?}"
    );
    let expected: Vec<(u64, u64)> = (0..end)
        .flat_map(|b| (0..rows_of(stream, b).len() as u64).map(move |i| (b, i)))
        .collect();
    let got: Vec<(u64, u64)> = seen.into_keys().collect();
    assert_eq!(got, expected, "{topic}: rows missing or extra");
}

#[test]
fn a_restarted_sink_writes_every_row_exactly_once() {
    let Some(broker) = Broker::start("a_restarted_sink_writes_every_row_exactly_once") else {
        return;
    };
    let brokers = broker.brokers();
    let streams = [KEYED, KEYLESS];
    for stream in streams {
        create_topic(&brokers, &format!("clickpulse.{stream}"), PARTITIONS);
    }
    let (k, n, m) = (5, 12, 18);

    // The first run writes batches 0..12, then the process dies.
    let mut first = sink(&brokers);
    write_all(&mut first, &streams, 0..n);
    assert_eq!(
        first.uses_transactions(),
        Some(false),
        "tansu 0.6 has no transactions: the tail scan is what this test checks"
    );
    assert_eq!(first.skipped_rows(), 0, "nothing was there before");
    drop(first);

    // The restarted job resumes from its checkpoint after batch 4: batches 5..12 again, then
    // new ones up to 18.
    let mut restarted = sink(&brokers);
    write_all(&mut restarted, &streams, k..m);
    assert_eq!(restarted.skipped_rows(), rows_in(&streams, k..n));

    // Recovered again in the same process (the engine restores its checkpoint without a
    // restart): the sink remembers what it wrote, nothing is written twice.
    let before = restarted.skipped_rows();
    write_all(&mut restarted, &streams, k..m);
    assert_eq!(restarted.skipped_rows() - before, rows_in(&streams, k..m));

    for stream in streams {
        assert_exactly_once(&brokers, &format!("clickpulse.{stream}"), stream, m);
    }
}

/// Produces, as a sink stopped in the middle of batch `b` leaves them, the first `keep` rows
/// of each partition's share of the batch (`keep[p]`, all of them when larger).
fn produce_cut_batch(brokers: &str, topic: &str, b: u64, keep: [usize; 3]) -> u64 {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let batch = batch(KEYED, b);
    let rows = rows_of(KEYED, b);
    let mut per_partition = [0usize; 3];
    let mut written = 0;
    for (i, row) in rows.iter().enumerate() {
        let key = KeySpec::Auto.key_of(row).unwrap();
        let p = record::partition_of(Some(&key), b, i, PARTITIONS);
        let slot = &mut per_partition[p as usize];
        *slot += 1;
        if *slot > keep[p as usize] {
            continue;
        }
        let text = |v: Option<u64>| v.map(|v| v.to_string());
        let fields = [
            (record::STREAM_HEADER, Some(KEYED.to_string())),
            (record::BATCH_HEADER, Some(b.to_string())),
            (record::WINDOW_START_HEADER, text(batch.window_start_ms)),
            (record::WINDOW_END_HEADER, text(batch.window_end_ms)),
            (record::BATCH_ROWS_HEADER, Some(rows.len().to_string())),
            (record::ROW_HEADER, Some(i.to_string())),
            (record::PREV_BATCH_HEADER, text(prev_of(KEYED, b))),
        ];
        let mut headers = OwnedHeaders::new();
        for (key, value) in &fields {
            if let Some(value) = value {
                headers = headers.insert(Header {
                    key,
                    value: Some(value.as_str()),
                });
            }
        }
        let payload = row.to_string();
        producer
            .send(
                BaseRecord::to(topic)
                    .partition(p)
                    .key(key.as_str())
                    .payload(payload.as_str())
                    .headers(headers),
            )
            .unwrap();
        written += 1;
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    assert!(
        per_partition[0] >= 2 && per_partition[1] >= 1 && per_partition[2] >= 1,
        "batch {b} must give partition 0 two rows or more, and the others one: {per_partition:?}"
    );
    written
}

#[test]
fn a_batch_cut_off_in_the_middle_is_completed_without_duplicates() {
    let Some(broker) = Broker::start("a_batch_cut_off_in_the_middle_is_completed") else {
        return;
    };
    let brokers = broker.brokers();
    let topic = "clickpulse.page_views";
    create_topic(&brokers, topic, PARTITIONS);
    // Batch 2 has 6 rows: 3 for partition 0, 2 for partition 1, 1 for partition 2.
    let cut = 2;
    let mut first = sink(&brokers);
    write_all(&mut first, &[KEYED], 0..cut);
    drop(first);
    // The sink died while writing batch 2: partition 0 got its first row, partition 1 all of
    // its rows, partition 2 none.
    let landed = produce_cut_batch(&brokers, topic, cut, [1, usize::MAX, 0]);

    // Restarted from a checkpoint after batch 0: batch 1 again, the rest of batch 2, then on
    // (batch 3 is empty: batch 4 names batch 2 as the one before it).
    let mut restarted = sink(&brokers);
    write_all(&mut restarted, &[KEYED], 1..9);
    assert_eq!(restarted.skipped_rows(), rows_in(&[KEYED], 1..cut) + landed);
    assert_exactly_once(&brokers, topic, KEYED, 9);
}

#[test]
fn a_stream_quiet_for_long_in_a_shared_topic_is_found_further_back() {
    let Some(broker) = Broker::start("a_stream_quiet_for_long_in_a_shared_topic") else {
        return;
    };
    let brokers = broker.brokers();
    let topic = "results.shared";
    create_topic(&brokers, topic, 1);
    let shared = |brokers: &str| {
        KafkaSink::builder(brokers)
            .topic("rare", topic)
            .topic("busy", topic)
            .key("rare", KeySpec::None)
            .key("busy", KeySpec::None)
            .build()
            .unwrap()
    };
    let rows = |stream: &str, b: u64, n: usize| ResultBatch {
        stream: stream.into(),
        batch: b,
        window_start_ms: None,
        window_end_ms: None,
        rows: (0..n)
            .map(|i| JsonRow::from(json!({"stream": stream, "b": b, "i": i})))
            .collect(),
    };
    // `rare` writes batches 0 and 1, then only `busy` writes: 3 000 records, more than the
    // first tail read (1 024) covers.
    let mut first = shared(&brokers);
    first.write(&rows("rare", 0, 2)).unwrap();
    first.write(&rows("rare", 1, 2)).unwrap();
    for b in 2..8 {
        first.write(&rows("busy", b, 500)).unwrap();
    }
    drop(first);

    let mut restarted = shared(&brokers);
    restarted.write(&rows("rare", 1, 2)).unwrap();
    restarted.write(&rows("busy", 7, 500)).unwrap();
    restarted.write(&rows("rare", 8, 2)).unwrap();
    assert_eq!(restarted.skipped_rows(), 502);

    let records = read_to_end(&brokers, topic);
    let mut ids: Vec<(String, u64, u64)> = records
        .iter()
        .map(|r| {
            (
                r.headers[record::STREAM_HEADER].clone(),
                header(r, record::BATCH_HEADER).unwrap(),
                header(r, record::ROW_HEADER).unwrap(),
            )
        })
        .collect();
    assert_eq!(ids.len(), 3_006, "2 + 2 + 6 × 500 + 2 rows");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3_006, "no row twice");
}

#[test]
fn keyed_rows_go_where_librdkafka_would_put_them() {
    let Some(broker) = Broker::start("keyed_rows_go_where_librdkafka_would_put_them") else {
        return;
    };
    let brokers = broker.brokers();
    let topic = "partitioner.check";
    create_topic(&brokers, topic, 5);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let keys: Vec<String> = (0..40).map(|i| format!("/page{i}")).collect();
    for key in &keys {
        // No partition: librdkafka's default partitioner chooses.
        producer
            .send(
                BaseRecord::to(topic)
                    .key(key.as_str())
                    .payload(key.as_str()),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let records = kafka_common::read_all(&brokers, topic, keys.len(), Duration::from_secs(20));
    assert_eq!(records.len(), keys.len());
    let partitions: Vec<i32> = records.iter().map(|r| r.partition).collect();
    assert!(partitions.iter().any(|&p| p != partitions[0]), "spread");
    for r in &records {
        let key = r.key_text().unwrap();
        assert_eq!(
            r.partition,
            record::partition_of(Some(&key), 0, 0, 5),
            "{key}"
        );
    }
}
