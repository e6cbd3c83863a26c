//! KafkaClickWriter → topic → KafkaSource under the engine, against a real broker (tansu).

#![allow(clippy::unwrap_used)]

mod kafka_common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clickpulse_connectors::kafka::{
    KafkaClickWriter, KafkaSource, REASON_HEADER, SOURCE_OFFSET_HEADER, SOURCE_PARTITION_HEADER,
};
use clickpulse_engine::source::DeadLetter;
use clickpulse_engine::{QueueSource, RunMode, RunSummary, StreamingContext};
use clickpulse_events::ClickEvent;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use kafka_common::{Broker, clicks, create_topic, read_all, url_count_job, url_counts};

/// Runs count_by_value over the urls of `source` until its end; returns the summed counts.
fn count_urls<S>(source: S, workers: usize) -> (HashMap<String, u64>, RunSummary)
where
    S: clickpulse_engine::source::PartitionedSource<Item = ClickEvent> + Clone,
{
    let (totals, job) = url_count_job(source);
    let summary = StreamingContext::new(Duration::from_millis(50))
        .unwrap()
        .workers(workers)
        .unwrap()
        .mode(RunMode::UntilEnd)
        .max_records_per_partition(2_000)
        .unwrap()
        .run(job)
        .unwrap();
    let totals = totals.lock().unwrap().clone();
    (totals, summary)
}

#[test]
fn clicks_written_to_kafka_count_the_same_as_in_memory_on_two_workers() {
    let Some(broker) = Broker::start("clicks_written_to_kafka_count_the_same") else {
        return;
    };
    let brokers = broker.brokers();
    create_topic(&brokers, "clicks", 4);
    let events = clicks(20_000, 500, 37);
    let mut writer = KafkaClickWriter::new(&brokers, "clicks").unwrap();
    assert_eq!(writer.partitions(), 4);
    for chunk in events.chunks(5_000) {
        assert_eq!(writer.write(chunk).unwrap(), chunk.len());
    }

    let source = KafkaSource::builder(&brokers, "clicks", "clickpulse-test")
        .commit_interval(Duration::ZERO)
        .build()
        .unwrap();
    let (kafka_counts, summary) = count_urls(source.clone(), 2);
    assert_eq!(summary.input_rows, events.len() as u64);
    assert_eq!(summary.dead_letters, 0);

    // The same job over the same events in memory.
    let memory = QueueSource::from_batches("clicks", vec![events.clone()]);
    let (memory_counts, _) = count_urls(memory, 2);
    assert_eq!(kafka_counts, memory_counts);
    assert_eq!(kafka_counts, url_counts(&events));

    let stats = source.stats();
    assert_eq!(stats.records, events.len() as u64);
    assert_eq!(stats.dead_letters, 0);

    // Progress is visible to lag tools: the group's committed offsets reach the partitions'
    // ends (the last commits are asynchronous: give them a moment).
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "clickpulse-test")
        .create()
        .unwrap();
    // Offsets start at 0 with no gaps: a partition's end is its record count. (Not the
    // broker's watermark: tansu 0.6 reports the last batch's base offset + 1 as the end.)
    let mut ends = vec![0i64; 4];
    for e in &events {
        ends[clickpulse_events::partition_for(&e.visitor_id, 4) as usize] += 1;
    }
    let ends: Vec<Offset> = ends.into_iter().map(Offset::Offset).collect();
    let committed = || {
        let mut list = TopicPartitionList::new();
        for p in 0..4 {
            list.add_partition("clicks", p);
        }
        let list = probe
            .committed_offsets(list, Duration::from_secs(10))
            .unwrap();
        (0..4)
            .map(|p| list.find_partition("clicks", p).unwrap().offset())
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while committed() != ends && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(committed(), ends);
}

#[test]
fn records_that_do_not_decode_go_to_the_dead_letter_topic_with_reasons() {
    let Some(broker) = Broker::start("records_that_do_not_decode") else {
        return;
    };
    let brokers = broker.brokers();
    create_topic(&brokers, "raw", 2);
    create_topic(&brokers, "raw.dlq", 1);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let good = serde_json::to_vec(&ClickEvent::page_view(1_000, "v1", "/a")).unwrap();
    let mut binary = Vec::new();
    clickpulse_events::binary::encode(&ClickEvent::page_view(2_000, "v2", "/b"), &mut binary);
    let values: Vec<(i32, &[u8])> = vec![
        (0, &good),
        (0, b"not json at all"),
        (0, &binary),
        (1, b"{\"ts_ms\":5,\"url\":\"/x\"}"),
        (1, &good),
        (1, b""),
    ];
    for (partition, value) in &values {
        let record = BaseRecord::<str, [u8]>::to("raw")
            .partition(*partition)
            .key("k")
            .payload(value);
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let source = KafkaSource::new(&brokers, "raw", "dlq-test").unwrap();
    let dead = Arc::new(Mutex::new(Vec::<DeadLetter>::new()));
    let urls = Arc::new(Mutex::new(Vec::<String>::new()));
    let (dead_sink, url_sink) = (Arc::clone(&dead), Arc::clone(&urls));
    let job_source = source.clone();
    let summary = StreamingContext::new(Duration::from_millis(50))
        .unwrap()
        .workers(2)
        .unwrap()
        .mode(RunMode::UntilEnd)
        .run(move |job| {
            let (dead_sink, url_sink) = (Arc::clone(&dead_sink), Arc::clone(&url_sink));
            let (clicks, dead) = job.source_with_dead_letters(&job_source, None)?;
            clicks
                .map(|c| c.url)
                .foreach_batch(move |_, rows| url_sink.lock().unwrap().extend(rows));
            dead.foreach_batch(move |_, rows| dead_sink.lock().unwrap().extend(rows));
            Ok(())
        })
        .unwrap();
    assert_eq!(summary.input_rows, 3);
    assert_eq!(summary.dead_letters, 3);
    let mut urls = urls.lock().unwrap().clone();
    urls.sort();
    assert_eq!(urls, ["/a", "/a", "/b"]);

    let mut dead = dead.lock().unwrap().clone();
    dead.sort_by_key(|d| (d.partition, d.offset));
    let positions: Vec<(u32, u64)> = dead.iter().map(|d| (d.partition, d.offset)).collect();
    assert_eq!(positions, [(0, 1), (1, 0), (1, 2)]);
    assert!(
        dead[0].reason.starts_with("JSON click event"),
        "{}",
        dead[0].reason
    );
    assert!(dead[1].reason.contains("visitor_id"), "{}", dead[1].reason);
    assert_eq!(dead[2].reason, "record value is empty");
    assert_eq!(dead[0].raw, b"not json at all");
    assert!(dead.iter().all(|d| d.source == "raw"));

    source.flush_dead_letters(Duration::from_secs(10)).unwrap();
    let stats = source.stats();
    assert_eq!((stats.dead_letters, stats.dead_letters_delivered), (3, 3));
    let mut copies = read_all(&brokers, "raw.dlq", 3, Duration::from_secs(20));
    assert_eq!(copies.len(), 3);
    copies.sort_by_key(|r| {
        (
            r.headers[SOURCE_PARTITION_HEADER].clone(),
            r.headers[SOURCE_OFFSET_HEADER].parse::<u64>().unwrap(),
        )
    });
    for (copy, letter) in copies.iter().zip(&dead) {
        assert_eq!(copy.headers[REASON_HEADER], letter.reason);
        assert_eq!(copy.headers["source_topic"], "raw");
        assert_eq!(copy.value, letter.raw);
        assert_eq!(copy.key_text().as_deref(), Some("k"));
    }
}
