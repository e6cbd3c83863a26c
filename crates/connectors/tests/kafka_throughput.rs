//! Throughput of replaying MSNBC clicks into Kafka and of reading them back through the engine,
//! against a real broker (tansu, memory storage). Ignored by default: run it in release mode,
//!
//! ```text
//! cargo test --release -p clickpulse-connectors --test kafka_throughput -- --ignored --nocapture
//! ```
//!
//! `KAFKA_BENCH_EVENTS` sets how many events (default 1,000,000, the first of the canonical
//! MSNBC replay order), `KAFKA_BENCH_PARTITIONS` the topic's partitions (default 4) and
//! `KAFKA_BENCH_WORKERS` the engine's workers (default 2). It prints events/s; it asserts only
//! that every event came back and counts the same, never a speed.

#![allow(clippy::unwrap_used)]

mod kafka_common;

use std::time::{Duration, Instant};

use clickpulse_connectors::kafka::{KafkaClickWriter, KafkaSource};
use clickpulse_engine::{RunMode, StreamingContext};
use clickpulse_events::msnbc;

use kafka_common::{Broker, create_topic, url_count_job, url_counts};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore = "a benchmark: run with --release -- --ignored --nocapture"]
fn replay_into_kafka_and_read_back_through_the_engine() {
    let Some(broker) = Broker::start("kafka_throughput") else {
        return;
    };
    let brokers = broker.brokers();
    let n = env_or("KAFKA_BENCH_EVENTS", 1_000_000);
    let partitions = env_or("KAFKA_BENCH_PARTITIONS", 4);
    let workers = env_or("KAFKA_BENCH_WORKERS", 2);
    let stream = msnbc::load(msnbc::default_msnbc_path()).unwrap();
    let events: Vec<_> = stream.iter().take(n).collect();
    let n = events.len();
    create_topic(&brokers, "clicks", partitions as u32);

    let started = Instant::now();
    let mut writer = KafkaClickWriter::new(&brokers, "clicks").unwrap();
    for event in &events {
        writer.send(event).unwrap();
    }
    let delivered = writer.flush().unwrap();
    let produce = started.elapsed();
    assert_eq!(delivered, n as u64);
    let bytes: usize = events
        .iter()
        .map(|e| serde_json::to_vec(e).unwrap().len())
        .sum();
    println!(
        "replay:  {n} events ({:.1} MB JSON) into {partitions} partitions in {:.2} s: {:.0} events/s",
        bytes as f64 / 1e6,
        produce.as_secs_f64(),
        n as f64 / produce.as_secs_f64()
    );

    let source = KafkaSource::new(&brokers, "clicks", "bench").unwrap();
    let (counts, job) = url_count_job(source);
    let started = Instant::now();
    let summary = StreamingContext::new(Duration::from_millis(100))
        .unwrap()
        .workers(workers)
        .unwrap()
        .mode(RunMode::UntilEnd)
        .run(job)
        .unwrap();
    let consume = started.elapsed();
    println!(
        "consume: {n} events through KafkaSource + count_by_value on {workers} workers in {:.2} s \
         ({} batches): {:.0} events/s",
        consume.as_secs_f64(),
        summary.batches,
        n as f64 / consume.as_secs_f64()
    );
    assert_eq!(summary.input_rows, n as u64);
    assert_eq!(*counts.lock().unwrap(), url_counts(&events));
}
