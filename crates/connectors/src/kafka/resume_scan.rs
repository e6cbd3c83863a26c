//! Reads the tail of every partition of a result topic, to find what it already holds (see
//! [`resume`](super::resume) for the rule).
//!
//! # Where a partition ends
//! The end a broker reports is only a hint: tansu 0.6 reports the base offset of a partition's
//! last record batch plus one, short of the real end by the rest of that record batch. So a
//! partition is read until it has reached the reported end (or librdkafka reported its end)
//! *and* no record of the topic arrived for [`ScanSettings::quiet`]; nothing else writes to
//! the topic meanwhile (the sink scans before its first write, and its predecessor is gone),
//! so the partitions have stopped growing.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as ClientError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::client::partition_count;
use super::error::{Error, Result};
use super::record::read_position;
use super::resume::{PartitionScan, Tail, TopicTails, window_start};

/// How long one poll blocks.
const POLL: Duration = Duration::from_millis(50);

/// How to read a topic's tail.
#[derive(Debug, Clone)]
pub(crate) struct ScanSettings {
    /// The consumer's configuration (brokers, security), without a group.
    pub config: ClientConfig,
    /// How long the whole scan of a topic may take.
    pub timeout: Duration,
    /// How long a partition must stay without new records past its reported end to count as
    /// read to the end.
    pub quiet: Duration,
}

/// One partition to read in a round.
#[derive(Debug)]
struct Reading {
    /// The offset read from.
    from: i64,
    /// The end the broker reports.
    hint: i64,
    /// The offset after the last record read.
    next: i64,
    /// Whether librdkafka reported the partition's end.
    eof: bool,
    scan: PartitionScan,
}

impl Reading {
    fn reached_end(&self) -> bool {
        self.eof || self.next >= self.hint
    }
}

/// Reads what `topic` holds: the newest batch of every stream in every partition, reading far
/// enough back for each of `streams` (the streams the sink knows of in the topic).
///
/// # Errors
/// [`Error::TopicNotFound`] for a missing topic; [`Error::Client`] when the cluster cannot be
/// reached; [`Error::Resume`] when the partitions were not read to their end within the
/// timeout.
pub(crate) fn scan_topic(
    settings: &ScanSettings,
    topic: &str,
    streams: &[String],
) -> Result<TopicTails> {
    let deadline = Instant::now() + settings.timeout;
    let consumer = consumer(settings)?;
    let partitions = partition_count(consumer.client(), topic, settings.timeout)?;
    let mut bounds = BTreeMap::new();
    for p in 0..i32::try_from(partitions).unwrap_or(i32::MAX) {
        let left = deadline.saturating_duration_since(Instant::now());
        let (low, high) = consumer
            .fetch_watermarks(topic, p, left)
            .map_err(|e| Error::client(format!("reading the offsets of `{topic}` [{p}]"), e))?;
        bounds.insert(p, (low.max(0), high.max(0)));
    }
    let mut found: Vec<HashMap<String, Tail>> = vec![HashMap::new(); partitions as usize];
    // A partition whose end is its start holds nothing: even tansu, which reports ends short,
    // reports the base offset of the last record batch plus one, past the start. Reading it
    // would only wait out the quiet time (a fresh result topic's first write paid it).
    let mut windows: BTreeMap<i32, i64> = bounds
        .iter()
        .filter(|(_, (low, hint))| hint > low)
        .map(|(&p, &(low, hint))| (p, window_start(low, hint, 0)))
        .collect();
    if windows.is_empty() {
        return Ok(TopicTails::new(partitions, found));
    }
    for round in 1.. {
        let read = read_round(&consumer, topic, &windows, &bounds, settings, deadline)?;
        windows.clear();
        for (p, reading) in read {
            let (low, hint) = bounds.get(&p).copied().unwrap_or_default();
            if reading.from <= low || reading.scan.anchored(streams) {
                if let Some(slot) = usize::try_from(p).ok().and_then(|p| found.get_mut(p)) {
                    *slot = reading.scan.into_tails();
                }
            } else {
                windows.insert(p, window_start(low, hint, round));
            }
        }
        if windows.is_empty() {
            break;
        }
        tracing::debug!(topic, partitions = ?windows.keys().collect::<Vec<_>>(),
            "resume scan: reading further back");
    }
    Ok(TopicTails::new(partitions, found))
}

/// A consumer of its own (a fresh group id, never joined nor committed to: librdkafka assigns
/// partitions only with one) that reports partition ends and sees committed records only.
fn consumer(settings: &ScanSettings) -> Result<BaseConsumer> {
    let group = format!(
        "clickpulse-sink-resume-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let mut config = settings.config.clone();
    config
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100");
    config
        .create()
        .map_err(|e| Error::client("creating the resume consumer", e))
}

/// Reads each partition of `windows` from its offset to its end.
fn read_round(
    consumer: &BaseConsumer,
    topic: &str,
    windows: &BTreeMap<i32, i64>,
    bounds: &BTreeMap<i32, (i64, i64)>,
    settings: &ScanSettings,
    deadline: Instant,
) -> Result<BTreeMap<i32, Reading>> {
    let mut list = TopicPartitionList::new();
    let mut reading = BTreeMap::new();
    for (&p, &from) in windows {
        list.add_partition_offset(topic, p, Offset::Offset(from))
            .map_err(|e| Error::client(format!("assigning `{topic}` [{p}]"), e))?;
        let hint = bounds.get(&p).map_or(0, |&(_, hint)| hint);
        let scan = PartitionScan::default();
        reading.insert(
            p,
            Reading {
                from,
                hint,
                next: from,
                eof: false,
                scan,
            },
        );
    }
    consumer
        .assign(&list)
        .map_err(|e| Error::client(format!("assigning the partitions of `{topic}`"), e))?;
    let mut last_record = Instant::now();
    loop {
        if Instant::now() >= deadline {
            return Err(not_at_end(topic, &reading, settings.timeout));
        }
        match consumer.poll(POLL) {
            Some(Ok(message)) => {
                last_record = Instant::now();
                if let Some(r) = reading.get_mut(&message.partition()) {
                    r.next = message.offset().saturating_add(1);
                    if let Some(position) = read_position(&message) {
                        r.scan.observe(&position);
                    }
                }
            }
            Some(Err(ClientError::PartitionEOF(p))) => {
                if let Some(r) = reading.get_mut(&p) {
                    r.eof = true;
                }
            }
            Some(Err(e)) => tracing::debug!(topic, error = %e, "resume scan: client error"),
            None => {}
        }
        if reading.values().all(Reading::reached_end) && last_record.elapsed() >= settings.quiet {
            break;
        }
    }
    consumer
        .unassign()
        .map_err(|e| Error::client(format!("unassigning the partitions of `{topic}`"), e))?;
    Ok(reading)
}

fn not_at_end(topic: &str, reading: &BTreeMap<i32, Reading>, timeout: Duration) -> Error {
    let behind: Vec<String> = reading
        .iter()
        .filter(|(_, r)| !r.reached_end())
        .map(|(p, r)| format!("[{p}] at {} of {}", r.next, r.hint))
        .collect();
    Error::Resume {
        topic: topic.to_string(),
        reason: format!(
            "the partitions were not read to their end within {timeout:?} (behind: {})",
            if behind.is_empty() {
                "none; records kept coming".to_string()
            } else {
                behind.join(", ")
            }
        ),
    }
}
