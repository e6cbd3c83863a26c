//! Helpers for the Kafka integration tests: a real Kafka-protocol broker ([`Broker`], from
//! `clickpulse-testkit`: tansu in memory on a free port, optionally behind a proxy that can cut
//! clients off), topics, reading records back, and the url-counting job the tests run.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

pub use clickpulse_testkit::Broker;

/// Creates `topic` with `partitions` partitions.
pub fn create_topic(brokers: &str, topic: &str, partitions: u32) {
    clickpulse_connectors::kafka::ensure_topic(brokers, topic, partitions, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("create {topic}: {e}"));
}

/// A record read back, owned.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: HashMap<String, String>,
}

impl Record {
    pub fn key_text(&self) -> Option<String> {
        self.key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.value).expect("JSON value")
    }
}

/// Reads every record of `topic` (all partitions, from the beginning) until `expected` are in or
/// `timeout` passes.
pub fn read_all(brokers: &str, topic: &str, expected: usize, timeout: Duration) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("test-reader-{topic}"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).expect("assign");
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < expected && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(Record::of(&m)),
            Some(Err(e)) => eprintln!("read_all {topic}: {e}"),
            None => {}
        }
    }
    out
}

impl Record {
    /// A consumed message as a record (headers as text).
    pub fn of(m: &impl Message) -> Record {
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let v = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                        (h.key.to_string(), v.into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        Record {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers,
        }
    }
}

/// A deterministic click stream: `n` clicks of `visitors` visitors over `urls` urls.
pub fn clicks(n: usize, visitors: usize, urls: usize) -> Vec<clickpulse_events::ClickEvent> {
    (0..n)
        .map(|i| {
            let mut e = clickpulse_events::ClickEvent::page_view(
                938_476_800_000 + (i as u64) * 7,
                format!("v{}", (i * 7919) % visitors),
                format!("/page{}", (i * 31 + i / 3) % urls),
            );
            if i % 5 == 0 {
                e.referrer = Some("https://example.com/".into());
            }
            e
        })
        .collect()
}

/// Counts per url, the reference the engine's output is compared with.
pub fn url_counts(events: &[clickpulse_events::ClickEvent]) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    for e in events {
        *counts.entry(e.url.clone()).or_insert(0) += 1;
    }
    counts
}

/// Url counts that a running job fills in.
pub type SharedCounts = Arc<Mutex<HashMap<String, u64>>>;

/// The counts and the job function the Kafka tests run: `count_by_value` over the urls of
/// `source`, every batch added into the returned map.
pub fn url_count_job<S>(
    source: S,
) -> (
    SharedCounts,
    impl Fn(&mut clickpulse_engine::Job<'_>) -> clickpulse_engine::Result<()> + Send + Sync + 'static,
)
where
    S: clickpulse_engine::source::PartitionedSource<Item = clickpulse_events::ClickEvent> + Clone,
{
    let counts: SharedCounts = Arc::default();
    let sink = Arc::clone(&counts);
    let job = move |job: &mut clickpulse_engine::Job<'_>| {
        let sink = Arc::clone(&sink);
        job.source(&source)?
            .map(|click| click.url)
            .count_by_value()
            .foreach_batch(move |_, rows| {
                let mut counts = sink.lock().unwrap();
                for (url, n) in rows {
                    *counts.entry(url).or_insert(0) += n;
                }
            });
        Ok(())
    };
    (counts, job)
}

/// Counts the records of `topic` (all partitions, from the beginning): reads until none has come
/// for two seconds (the broker's end offsets are not trusted: tansu under-reports them).
pub fn count_all(brokers: &str, topic: &str) -> usize {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("test-counter-{topic}"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut list = TopicPartitionList::new();
    for p in 0..metadata.topics()[0].partitions().len() as i32 {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).expect("assign");
    let mut count = 0;
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(2) {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            count += 1;
            last = Instant::now();
        }
    }
    count
}
