//! A Kafka topic as an engine source.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError as ClientError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use clickpulse_engine::source::{
    DeadLetter, PartitionId, PartitionReader, PartitionedSource, PollContext, Polled, ReadStatus,
    SourceError,
};
use clickpulse_events::{ClickEvent, LineFormat, ParseOptions, binary, parse_line};

use super::client::{ClientOptions, apply_options, base_config, check_target, partition_count};
use super::dead_letter::{DeadLetterCounters, DeadLetterProducer};
use super::error::{Error, Result, client_error_is_retryable};

/// Settings the source sets itself and refuses from [`KafkaSourceBuilder::option`].
const RESERVED: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
    "auto.offset.reset",
];

/// The largest first byte taken as the binary codec: JSON text starts with `{`, or with
/// whitespace (tab = 0x09 and up), never with a byte below 0x09.
const MAX_BINARY_TAG: u8 = 0x08;

/// Reads click events from a Kafka topic: the Kafka counterpart of
/// [`LogSource`](crate::log::LogSource).
///
/// # Records
/// One click per record value: a JSON object as in NDJSON (the fields of
/// [`ClickEvent`]; see [`clickpulse_events`] for the rules), or the binary encoding of
/// [`clickpulse_events::binary`] when the value's first byte is below `0x09` (the version tag,
/// `0x01` today; no JSON text starts with such a byte). Keys are not read. A record that does
/// not decode (bad JSON, a missing field, an empty value, a tombstone) becomes a
/// [`DeadLetter`] with its partition, offset and reason — the engine counts and forwards it —
/// and is also produced, unchanged and with the same key, to the dead-letter topic
/// (default `<topic>.dlq`), with headers `reason`, `source_topic`, `source_partition` and
/// `source_offset`. The dead-letter topic must exist unless the broker creates topics itself.
///
/// # Offsets belong to the engine
/// Partitions are spread over workers by the engine (`p mod workers`), so the source never
/// subscribes and never takes part in a consumer-group rebalance: each worker's
/// [`open`](PartitionedSource::open) assigns its partition explicitly, at the offset the
/// engine's checkpoint gives, or at the partition's first offset (its low watermark). Automatic
/// commits are off. After a batch completed everywhere the engine calls
/// [`processed`](PartitionReader::processed), and the source commits that offset to the consumer
/// group asynchronously (at most once per partition per commit interval, default 1 s, and once
/// more when the partition closes), only so that lag tools see progress; nothing reads those
/// commits back.
///
/// # Failures
/// librdkafka reconnects by itself; while a broker is down, polls return retryable
/// [`SourceError`]s and the engine rests the partition and tries again. The reader never
/// returns a record below its position, so a client that re-fetches after a reconnect cannot
/// cause duplicates. When the next offset to read is no longer in the log:
/// - *below* the log start (deleted by retention, or a re-created topic): records were lost
///   before they were read — a fatal error, unless
///   [`fail_on_data_loss(false)`](KafkaSourceBuilder::fail_on_data_loss), which skips to the
///   log start with a warning;
/// - *beyond* the log end (a broker that restarted without its data and is being refilled, or
///   is still recovering): a retryable error; the reader assigns the partition again at its
///   position after each engine back-off, until the log reaches it, and resumes there.
///
/// A broker that serves a fetch from past the offset asked for — tansu 0.6 does when the offset
/// is inside a record batch, as a checkpoint's offsets usually are — cannot make the reader skip
/// records: until a record at or before its position has come after an assignment, the reader
/// takes neither a later record nor the partition's end, and assigns the partition again
/// further back instead (dropping the records before its position).
///
/// Partitions added to the topic later are found by [`partitions`](PartitionedSource::partitions),
/// which asks the cluster each time.
///
/// # Sharing
/// Clones share one librdkafka consumer (one connection per broker) whose partitions are split
/// into one queue per reader, so the engine's worker threads read their partitions without
/// contending. Run one job at a time on a source value.
///
/// # Examples
/// ```no_run
/// use std::time::Duration;
/// use clickpulse_connectors::kafka::KafkaSource;
/// use clickpulse_engine::{RunMode, StreamingContext};
///
/// let clicks = KafkaSource::builder("127.0.0.1:9092", "clicks", "clickpulse")
///     .dead_letter_topic("clicks.bad")
///     .build()?;
/// StreamingContext::new(Duration::from_secs(1))?
///     .workers(2)?
///     .mode(RunMode::Continuous)
///     .run(move |job| {
///         job.source(&clicks)?
///             .map(|click| click.url)
///             .count_by_value()
///             .print(10);
///         Ok(())
///     })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct KafkaSource {
    inner: Arc<Inner>,
}

/// Configures a [`KafkaSource`]; made by [`KafkaSource::builder`].
#[derive(Debug, Clone)]
pub struct KafkaSourceBuilder {
    brokers: String,
    topic: String,
    group_id: String,
    name: Option<String>,
    dead_letter_topic: Option<String>,
    fail_on_data_loss: bool,
    metadata_timeout: Duration,
    poll_wait: Duration,
    commit_interval: Duration,
    options: ClientOptions,
}

/// What a [`KafkaSource`] has done since it was built (all its readers together).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KafkaSourceStats {
    /// Records decoded into click events.
    pub records: u64,
    /// Records that did not decode.
    pub dead_letters: u64,
    /// Dead letters the dead-letter topic acknowledged.
    pub dead_letters_delivered: u64,
    /// Dead letters that could not be written to the dead-letter topic.
    pub dead_letters_failed: u64,
    /// Retryable errors returned to the engine (a broker down, a partition out of range).
    pub retryable_errors: u64,
    /// Offset commits the group coordinator acknowledged (counted as readers serve the
    /// client's events, so the last ones of a run may be missing).
    pub commits: u64,
    /// Offset commits that failed (harmless for results: the engine owns offsets).
    pub commit_failures: u64,
    /// Polls by the engine (each reads up to a chunk of records from one partition).
    pub polls: u64,
    /// Polls that found no record buffered and waited for one (up to the poll wait): the
    /// reader was ahead of the fetches.
    pub waits: u64,
    /// The time those polls spent waiting, all readers together.
    pub wait_time: Duration,
}

#[derive(Debug, Default)]
struct Counters {
    records: AtomicU64,
    dead_letters: AtomicU64,
    retryable_errors: AtomicU64,
    commits: AtomicU64,
    commit_failures: AtomicU64,
    polls: AtomicU64,
    waits: AtomicU64,
    wait_nanos: AtomicU64,
    dead_letter_delivery: Arc<DeadLetterCounters>,
    /// Each partition's high watermark from the client's last statistics (every second).
    high_watermarks: Mutex<std::collections::HashMap<i32, i64>>,
}

/// Counts commit results; runs on whichever thread serves the consumer's main queue.
struct SourceContext {
    counters: Arc<Counters>,
}

impl ClientContext for SourceContext {
    /// librdkafka reports a partition's end as an error event, which rdkafka logs as a global
    /// error before the reader takes it as the end: one error line each time a reader catches
    /// up. It is the normal end of a read, logged at debug; other errors keep rdkafka's
    /// error line.
    fn error(&self, error: ClientError, reason: &str) {
        match error {
            ClientError::PartitionEOF(partition) => {
                tracing::debug!(partition, "partition at its end: {reason}");
            }
            // The same end, when it reaches the main queue as a client-wide event (readers that
            // keep polling an ended partition until its batch's chunk is full see it there).
            ClientError::Global(RDKafkaErrorCode::PartitionEOF) => {
                tracing::debug!("partition at its end: {reason}");
            }
            error => tracing::error!("librdkafka: {error}: {reason}"),
        }
    }

    /// Keeps each partition's high watermark, for the lag in progress reports.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut marks = self
            .counters
            .high_watermarks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for topic in statistics.topics.values() {
            for (id, p) in &topic.partitions {
                if *id >= 0 && p.hi_offset >= 0 {
                    marks.insert(*id, p.hi_offset);
                }
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        match result {
            Ok(()) => self.counters.commits.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                tracing::debug!(error = %e, "offset commit failed (only lag tools miss it)");
                self.counters
                    .commit_failures
                    .fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

type SourceConsumer = BaseConsumer<SourceContext>;

struct Inner {
    name: String,
    topic: String,
    brokers: String,
    consumer: Arc<SourceConsumer>,
    /// Serialises split-then-assign, so a partition's queue exists before it is assigned.
    assign_lock: Mutex<()>,
    dead_letter_topic: Option<String>,
    dead_letters: OnceLock<Option<DeadLetterProducer>>,
    options: ClientOptions,
    fail_on_data_loss: bool,
    metadata_timeout: Duration,
    poll_wait: Duration,
    commit_interval: Duration,
    counters: Arc<Counters>,
}

impl KafkaSource {
    /// The librdkafka settings the source tunes its consumer with, applied before the caller's
    /// [`option`](KafkaSourceBuilder::option)s (which win):
    ///
    /// - `fetch.wait.max.ms = 10`: micro-batches want what is there now; librdkafka's default
    ///   500 ms fetch wait made a bounded run cut ~100 tiny batches and run at half speed
    ///   (measured against tansu).
    /// - `fetch.queue.backoff.ms = 10`: once a partition has `queued.min.messages` (default
    ///   100,000) records fetched and not yet read, librdkafka stops fetching it for this long
    ///   (default 1 s). The engine reads 100,000 records in well under a second, then waited
    ///   for the rest of it: reading stalled at about 100,000 records/s per partition
    ///   (measured against tansu: a bare consumer read 192k records/s with the default, 829k
    ///   with 10 ms).
    pub const CONSUMER_SETTINGS: &'static [(&'static str, &'static str)] = &[
        ("fetch.wait.max.ms", "10"),
        ("fetch.queue.backoff.ms", "10"),
        // Each partition's high watermark once a second, for the lag in progress reports.
        ("statistics.interval.ms", "1000"),
    ];

    /// A builder for a source over `topic` on `brokers` (`host:port,host:port`), committing
    /// progress to the consumer group `group_id`.
    pub fn builder(
        brokers: impl Into<String>,
        topic: impl Into<String>,
        group_id: impl Into<String>,
    ) -> KafkaSourceBuilder {
        let topic = topic.into();
        KafkaSourceBuilder {
            brokers: brokers.into(),
            dead_letter_topic: Some(format!("{topic}.dlq")),
            topic,
            group_id: group_id.into(),
            name: None,
            fail_on_data_loss: true,
            metadata_timeout: Duration::from_secs(10),
            poll_wait: Duration::from_millis(10),
            commit_interval: Duration::from_secs(1),
            options: Vec::new(),
        }
    }

    /// A source with every default (see [`KafkaSourceBuilder`]).
    ///
    /// # Errors
    /// As [`KafkaSourceBuilder::build`].
    pub fn new(brokers: &str, topic: &str, group_id: &str) -> Result<Self> {
        KafkaSource::builder(brokers, topic, group_id).build()
    }

    /// The topic read.
    pub fn topic(&self) -> &str {
        &self.inner.topic
    }

    /// The dead-letter topic, unless dead letters are not copied to Kafka.
    pub fn dead_letter_topic(&self) -> Option<&str> {
        self.inner.dead_letter_topic.as_deref()
    }

    /// What the source has done so far.
    pub fn stats(&self) -> KafkaSourceStats {
        let c = &self.inner.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        KafkaSourceStats {
            records: load(&c.records),
            dead_letters: load(&c.dead_letters),
            dead_letters_delivered: load(&c.dead_letter_delivery.delivered),
            dead_letters_failed: load(&c.dead_letter_delivery.failed),
            retryable_errors: load(&c.retryable_errors),
            commits: load(&c.commits),
            commit_failures: load(&c.commit_failures),
            polls: load(&c.polls),
            waits: load(&c.waits),
            wait_time: Duration::from_nanos(load(&c.wait_nanos)),
        }
    }

    /// Waits up to `timeout` until every dead letter produced so far is acknowledged. Readers do
    /// this when they close, and the source when it is dropped.
    ///
    /// # Errors
    /// [`Error::FlushTimeout`] when some are still in flight.
    pub fn flush_dead_letters(&self, timeout: Duration) -> Result<()> {
        self.inner.flush_dead_letters(timeout)
    }
}

impl fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSource")
            .field("name", &self.inner.name)
            .field("brokers", &self.inner.brokers)
            .field("topic", &self.inner.topic)
            .field("dead_letter_topic", &self.inner.dead_letter_topic)
            .finish_non_exhaustive()
    }
}

impl KafkaSourceBuilder {
    /// The source's name in the engine: offsets in checkpoints, dead letters and logs are filed
    /// under it. Default = the topic.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Where records that do not decode are copied. Default = `<topic>.dlq`.
    pub fn dead_letter_topic(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter_topic = Some(topic.into());
        self
    }

    /// Do not copy dead letters to Kafka (the engine still counts and forwards them).
    pub fn no_dead_letter_topic(mut self) -> Self {
        self.dead_letter_topic = None;
        self
    }

    /// Whether records deleted before they were read (the next offset is below the log start)
    /// stop the job (`true`) or are skipped with a warning (`false`). Default = `true`.
    pub fn fail_on_data_loss(mut self, fail: bool) -> Self {
        self.fail_on_data_loss = fail;
        self
    }

    /// How long metadata and watermark requests may take. Default = 10 s.
    pub fn metadata_timeout(mut self, timeout: Duration) -> Self {
        self.metadata_timeout = timeout;
        self
    }

    /// How long a poll waits for a first record when none is buffered and the partition is not
    /// known to be at its end. Default = 10 ms.
    pub fn poll_wait(mut self, wait: Duration) -> Self {
        self.poll_wait = wait;
        self
    }

    /// The shortest time between two commits of one partition's progress. Default = 1 s.
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval;
        self
    }

    /// An extra librdkafka setting for the consumer and the dead-letter producer (security,
    /// fetch sizes, …), applied after clickpulse's own. `bootstrap.servers`, `group.id`,
    /// `enable.auto.commit`, `enable.auto.offset.store`, `enable.partition.eof` and
    /// `auto.offset.reset` are refused: the source's guarantees rest on them.
    pub fn option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.push((key.into(), value.into()));
        self
    }

    /// Makes the source. Nothing is contacted yet: the first
    /// [`partitions`](PartitionedSource::partitions) call reaches the cluster.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty broker list, an invalid topic or dead-letter topic, an empty
    /// group id or a reserved option; [`Error::Client`] when librdkafka refuses a setting.
    pub fn build(self) -> Result<KafkaSource> {
        check_target(&self.brokers, &self.topic)?;
        if let Some(dlq) = &self.dead_letter_topic {
            check_target(&self.brokers, dlq).map_err(|_| Error::Config {
                key: "dead_letter_topic".into(),
                reason: format!("`{dlq}` is not a valid topic name"),
            })?;
        }
        if self.group_id.trim().is_empty() {
            return Err(Error::Config {
                key: "group_id".into(),
                reason: "the consumer group id is empty".into(),
            });
        }
        let counters = Arc::new(Counters::default());
        let mut config = base_config(&self.brokers, "clickpulse-source");
        config
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "error");
        for (key, value) in KafkaSource::CONSUMER_SETTINGS {
            config.set(*key, *value);
        }
        apply_options(&mut config, &self.options, RESERVED)?;
        let context = SourceContext {
            counters: Arc::clone(&counters),
        };
        let consumer: SourceConsumer = config
            .create_with_context(context)
            .map_err(|e| Error::client("creating the consumer", e))?;
        Ok(KafkaSource {
            inner: Arc::new(Inner {
                name: self.name.unwrap_or_else(|| self.topic.clone()),
                topic: self.topic,
                brokers: self.brokers,
                consumer: Arc::new(consumer),
                assign_lock: Mutex::new(()),
                dead_letter_topic: self.dead_letter_topic,
                dead_letters: OnceLock::new(),
                options: self.options,
                fail_on_data_loss: self.fail_on_data_loss,
                metadata_timeout: self.metadata_timeout,
                poll_wait: self.poll_wait,
                commit_interval: self.commit_interval,
                counters,
            }),
        })
    }
}

impl PartitionedSource for KafkaSource {
    type Item = ClickEvent;

    fn name(&self) -> &str {
        &self.inner.name
    }

    fn partitions(&self) -> Result<u32, SourceError> {
        partition_count(
            self.inner.consumer.client(),
            &self.inner.topic,
            self.inner.metadata_timeout,
        )
        .map_err(to_source_error)
    }

    fn open(
        &self,
        partition: PartitionId,
        from: Option<u64>,
    ) -> Result<Box<dyn PartitionReader<ClickEvent>>, SourceError> {
        let kafka_partition = i32::try_from(partition)
            .map_err(|_| SourceError::fatal(format!("partition {partition} is out of range")))?;
        let start = match from {
            Some(offset) => offset,
            None => self.inner.watermarks(kafka_partition)?.0,
        };
        let queue = self.inner.assign(kafka_partition, start)?;
        Ok(Box::new(KafkaPartitionReader {
            inner: Arc::clone(&self.inner),
            partition: kafka_partition,
            queue: Some(queue),
            position: start,
            // At the log start (or offset 0) no fetch can skip anything.
            placement: Placement::new(start, from.is_none() || start == 0),
            at_end: false,
            needs_reassign: false,
            pending_error: None,
            processed: None,
            committed: None,
            options: ParseOptions::default(),
        }))
    }
}

fn to_source_error(e: Error) -> SourceError {
    let error = if e.is_retryable() {
        SourceError::retryable(e.to_string())
    } else {
        SourceError::fatal(e.to_string())
    };
    error.with_cause(e)
}

impl Inner {
    fn what(&self, partition: i32) -> String {
        format!("Kafka topic `{}` partition {partition}", self.topic)
    }

    fn retryable(&self, message: String) -> SourceError {
        self.counters
            .retryable_errors
            .fetch_add(1, Ordering::Relaxed);
        SourceError::retryable(message)
    }

    /// The partition's first and next-to-be-written offsets.
    fn watermarks(&self, partition: i32) -> Result<(u64, u64), SourceError> {
        let (low, high) = self
            .consumer
            .fetch_watermarks(&self.topic, partition, self.metadata_timeout)
            .map_err(|e| {
                let message = format!("{}: reading its offsets: {e}", self.what(partition));
                if client_error_is_retryable(&e) {
                    self.retryable(message)
                } else {
                    SourceError::fatal(message)
                }
            })?;
        Ok((
            u64::try_from(low).unwrap_or(0),
            u64::try_from(high).unwrap_or(0),
        ))
    }

    /// Splits the partition into its own queue, then assigns it at `offset`: in this order, so
    /// that no record of it ever lands on the shared main queue.
    fn assign(
        &self,
        partition: i32,
        offset: u64,
    ) -> Result<PartitionQueue<SourceContext>, SourceError> {
        let _guard = self
            .assign_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let queue = self
            .consumer
            .split_partition_queue(&self.topic, partition)
            .ok_or_else(|| {
                SourceError::fatal(format!("{}: cannot open its queue", self.what(partition)))
            })?;
        let offset = i64::try_from(offset).map_err(|_| {
            SourceError::fatal(format!(
                "{}: offset {offset} is too large",
                self.what(partition)
            ))
        })?;
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&self.topic, partition, Offset::Offset(offset))
            .and_then(|()| self.consumer.incremental_assign(&list))
            .map_err(|e| {
                SourceError::fatal(format!("{}: cannot assign it: {e}", self.what(partition)))
            })?;
        Ok(queue)
    }

    fn unassign(&self, partition: i32) {
        let _guard = self
            .assign_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut list = TopicPartitionList::new();
        list.add_partition(&self.topic, partition);
        if let Err(e) = self.consumer.incremental_unassign(&list) {
            tracing::warn!(topic = %self.topic, partition, error = %e, "could not unassign partition");
        }
    }

    /// Serves the consumer's main queue: commit results, and client-wide errors (a broker down),
    /// which become this poll's error.
    fn serve_events(&self) -> Result<(), SourceError> {
        for _ in 0..16 {
            match self.consumer.poll(Duration::ZERO) {
                None => return Ok(()),
                Some(Ok(message)) => {
                    // Every assigned partition has its own queue; this cannot happen.
                    tracing::error!(topic = %self.topic, partition = message.partition(),
                        offset = message.offset(), "record on the consumer's main queue ignored");
                }
                Some(Err(ClientError::PartitionEOF(_))) => {}
                Some(Err(e)) if client_error_is_retryable(&e) => {
                    return Err(self.retryable(format!("Kafka topic `{}`: {e}", self.topic)));
                }
                Some(Err(e)) => {
                    return Err(SourceError::fatal(format!(
                        "Kafka topic `{}`: {e}",
                        self.topic
                    )));
                }
            }
        }
        Ok(())
    }

    fn dead_letter_producer(&self) -> Option<&DeadLetterProducer> {
        let topic = self.dead_letter_topic.as_deref()?;
        self.dead_letters
            .get_or_init(|| {
                let counters = Arc::clone(&self.counters.dead_letter_delivery);
                DeadLetterProducer::new(&self.brokers, topic, &self.options, counters)
                    .inspect_err(|e| tracing::error!(error = %e, "no dead-letter producer"))
                    .ok()
            })
            .as_ref()
    }

    fn send_dead_letter(&self, key: Option<&[u8]>, letter: &DeadLetter) {
        self.counters.dead_letters.fetch_add(1, Ordering::Relaxed);
        if self.dead_letter_topic.is_none() {
            return;
        }
        match self.dead_letter_producer() {
            Some(producer) => producer.send(&self.topic, key, letter),
            None => {
                let d = &self.counters.dead_letter_delivery;
                d.sent.fetch_add(1, Ordering::Relaxed);
                d.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn flush_dead_letters(&self, timeout: Duration) -> Result<()> {
        match self.dead_letters.get() {
            Some(Some(producer)) => producer.flush(timeout),
            _ => Ok(()),
        }
    }

    fn commit(&self, partition: i32, offset: u64) {
        let Ok(offset) = i64::try_from(offset) else {
            return;
        };
        let mut list = TopicPartitionList::new();
        let result = list
            .add_partition_offset(&self.topic, partition, Offset::Offset(offset))
            .and_then(|()| self.consumer.commit(&list, CommitMode::Async));
        if let Err(e) = result {
            self.counters
                .commit_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(topic = %self.topic, partition, error = %e, "offset commit not sent");
        }
    }
}

/// One step of reading a partition queue, owning what it needs (the message borrows the queue).
enum Step {
    /// Nothing buffered.
    Empty,
    /// The partition is at its current end.
    End,
    /// A decoded record.
    Record { offset: u64, event: ClickEvent },
    /// A record that did not decode.
    Dead {
        offset: u64,
        key: Option<Vec<u8>>,
        raw: Vec<u8>,
        reason: String,
    },
    /// The client reported an error for the partition.
    Failed(ClientError),
}

/// Decodes one record value as [`KafkaSource`] does: the binary encoding of
/// [`clickpulse_events::binary`] when the first byte is a version tag (below `0x09`), a JSON
/// click (NDJSON rules) otherwise.
///
/// # Errors
/// Why the value is not a click (a tombstone, an empty value, bad JSON, a missing field, a bad
/// binary record): the reason a dead letter carries.
///
/// # Examples
/// ```
/// use clickpulse_connectors::kafka::decode_click;
/// let click = decode_click(Some(br#"{"ts_ms":1,"visitor_id":"v1","url":"/news"}"#))?;
/// assert_eq!(click.url, "/news");
/// assert!(decode_click(None).is_err());
/// # Ok::<(), String>(())
/// ```
pub fn decode_click(value: Option<&[u8]>) -> Result<ClickEvent, String> {
    decode(value, &ParseOptions::default())
}

/// [`decode_click`] with the reader's parse options.
fn decode(value: Option<&[u8]>, options: &ParseOptions) -> Result<ClickEvent, String> {
    let Some(bytes) = value else {
        return Err("record has no value (a tombstone)".into());
    };
    match bytes.first() {
        None => Err("record value is empty".into()),
        Some(&tag) if tag <= MAX_BINARY_TAG => {
            binary::decode(bytes).map_err(|e| format!("binary click event: {e}"))
        }
        Some(_) => parse_line(LineFormat::Ndjson, bytes, options)
            .map_err(|e| format!("JSON click event: {e}")),
    }
}

fn read_one(queue: &PartitionQueue<SourceContext>, wait: Duration, options: &ParseOptions) -> Step {
    let message = match queue.poll(wait) {
        None => return Step::Empty,
        Some(Err(ClientError::PartitionEOF(_))) => return Step::End,
        Some(Err(e)) => return Step::Failed(e),
        Some(Ok(message)) => message,
    };
    let offset = u64::try_from(message.offset()).unwrap_or(0);
    match decode(message.payload(), options) {
        Ok(event) => Step::Record { offset, event },
        Err(reason) => Step::Dead {
            offset,
            key: message.key().map(<[u8]>::to_vec),
            raw: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            reason,
        },
    }
}

/// Reads one record, waiting up to `wait` for it when none is buffered; such waits are counted
/// (they say the reader is ahead of the fetches).
fn read_or_wait(
    queue: &PartitionQueue<SourceContext>,
    wait: Duration,
    options: &ParseOptions,
    counters: &Counters,
) -> Step {
    match read_one(queue, Duration::ZERO, options) {
        Step::Empty if !wait.is_zero() => {
            let started = Instant::now();
            let step = read_one(queue, wait, options);
            let waited = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            counters.waits.fetch_add(1, Ordering::Relaxed);
            counters.wait_nanos.fetch_add(waited, Ordering::Relaxed);
            step
        }
        step => step,
    }
}

/// Reads one partition on the worker that owns it.
struct KafkaPartitionReader {
    inner: Arc<Inner>,
    partition: i32,
    queue: Option<PartitionQueue<SourceContext>>,
    /// The next offset to return; records below it are never returned (again).
    position: u64,
    /// Where the partition was last assigned, and whether the fetches are known to start at
    /// or before the position since.
    placement: Placement,
    /// The client said the partition is at its end, and no record came since.
    at_end: bool,
    /// The client stopped fetching (out of range): assign again before reading.
    needs_reassign: bool,
    /// An error met after records were taken in the same poll; returned by the next poll.
    pending_error: Option<SourceError>,
    processed: Option<u64>,
    committed: Option<(u64, Instant)>,
    options: ParseOptions,
}

/// Whether the broker is known to serve the reader's partition from at or before its position.
///
/// A Kafka broker serves a fetch from the record batch holding the offset asked for, and the
/// client drops the records before that offset. tansu 0.6 serves it from the first record batch
/// that *starts* at or after the offset (its `fetch` keeps the batches whose base offset is at
/// least the one asked for), so a partition assigned at an offset inside a record batch — a
/// restart from a checkpoint, a re-run of a logged batch — would silently lose the rest of that
/// batch; inside the partition's last batch, the fetches return nothing, and not even the
/// partition's end, for ever. So after each assignment the reader waits for a record at or
/// before its position: a record past it, the partition's end, or nothing at all for
/// [`PLACEMENT_WAIT`] may be such a skip, and the reader then assigns the partition again
/// further back ([`STEP_BACK`] records, eight times more each time, never before the log start)
/// and drops the records before its position, as it does after any re-fetch. Assigned at the
/// log start, nothing can be skipped. A gap that is really in the log (compaction, transaction
/// markers) is read past once a record before it has come.
#[derive(Debug, Clone, Copy)]
struct Placement {
    /// The offset the partition was last assigned at (at most the position).
    assigned_at: u64,
    /// When.
    since: Instant,
    /// A record at or before the position has come since, or the assignment was at the log
    /// start.
    confirmed: bool,
}

impl Placement {
    fn new(assigned_at: u64, confirmed: bool) -> Placement {
        Placement {
            assigned_at,
            since: Instant::now(),
            confirmed,
        }
    }

    /// Nothing has come since an unconfirmed assignment for longer than a fetch takes.
    fn overdue(&self) -> bool {
        !self.confirmed && self.since.elapsed() >= PLACEMENT_WAIT
    }
}

/// How far before its position a reader first assigns a partition again when the broker may
/// have skipped records (see [`Placement`]).
const STEP_BACK: u64 = 1024;

/// How long after an unconfirmed assignment a reader waits for a first record or the
/// partition's end before it assigns the partition further back (see [`Placement`]): far
/// longer than a fetch takes (the source fetches with `fetch.wait.max.ms` = 10).
const PLACEMENT_WAIT: Duration = Duration::from_millis(500);

/// What one `next` call did.
enum Next {
    Took,
    Skipped,
    Empty,
    End,
    /// A record past the position, the partition's end, or nothing for too long, before the
    /// placement was confirmed: assign further back.
    Unconfirmed,
    Failed(SourceError),
}

impl KafkaPartitionReader {
    fn partition_id(&self) -> PartitionId {
        u32::try_from(self.partition).unwrap_or(0)
    }

    fn next(&mut self, wait: Duration, out: &mut Polled<ClickEvent>) -> Next {
        let Some(queue) = self.queue.as_ref() else {
            self.needs_reassign = true;
            return Next::Failed(
                self.inner
                    .retryable(format!("{}: not assigned", self.inner.what(self.partition))),
            );
        };
        match read_or_wait(queue, wait, &self.options, &self.inner.counters) {
            Step::Empty if self.placement.overdue() => Next::Unconfirmed,
            Step::Empty => Next::Empty,
            Step::End if !self.placement.confirmed => Next::Unconfirmed,
            Step::End => {
                self.at_end = true;
                Next::End
            }
            Step::Failed(e) => Next::Failed(self.on_error(&e)),
            Step::Record { offset, .. } | Step::Dead { offset, .. } if offset < self.position => {
                // Re-fetched after a reconnect or a re-seek, or read from before the position
                // on purpose (see `Placement`): already returned.
                self.placement.confirmed = true;
                Next::Skipped
            }
            Step::Record { offset, .. } | Step::Dead { offset, .. }
                if offset > self.position && !self.placement.confirmed =>
            {
                Next::Unconfirmed
            }
            Step::Record { offset, event } => {
                self.advance(offset);
                out.items.push(event);
                Next::Took
            }
            Step::Dead {
                offset,
                key,
                raw,
                reason,
            } => {
                self.advance(offset);
                let letter = DeadLetter {
                    source: self.inner.name.clone(),
                    partition: self.partition_id(),
                    offset,
                    reason,
                    raw,
                };
                self.inner.send_dead_letter(key.as_deref(), &letter);
                out.dead_letters.push(letter);
                Next::Took
            }
        }
    }

    fn advance(&mut self, offset: u64) {
        self.position = offset.saturating_add(1);
        self.placement.confirmed = true;
        self.at_end = false;
    }

    fn on_error(&mut self, e: &ClientError) -> SourceError {
        let what = self.inner.what(self.partition);
        match e {
            ClientError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset) => {
                // The broker refused the fetch position; the client stopped fetching.
                self.needs_reassign = true;
                let bounds = match self.inner.watermarks(self.partition) {
                    Ok(bounds) => bounds,
                    Err(err) => return err,
                };
                match self.skip_deleted(bounds.0) {
                    Err(err) => err,
                    Ok(()) => self.inner.retryable(format!(
                        "{what}: offset {} is not in the log (the broker puts its end at {}): \
                         the broker lost records (restarted without its data?) or is still \
                         recovering; waiting for the log to reach it",
                        self.position, bounds.1
                    )),
                }
            }
            e if client_error_is_retryable(e) => self.inner.retryable(format!("{what}: {e}")),
            e => SourceError::fatal(format!("{what}: {e}")),
        }
    }

    /// When the position is below the log start `low`, records were deleted before they were
    /// read: a fatal error, or (without `fail_on_data_loss`) a warning and a jump to `low`.
    fn skip_deleted(&mut self, low: u64) -> Result<(), SourceError> {
        if self.position >= low {
            return Ok(());
        }
        let message = format!(
            "{}: records {}..{low} were deleted before they were read (retention, or a \
             re-created topic)",
            self.inner.what(self.partition),
            self.position
        );
        if self.inner.fail_on_data_loss {
            return Err(SourceError::fatal(format!(
                "{message}; stopping (fail_on_data_loss is on)"
            )));
        }
        tracing::warn!(topic = %self.inner.topic, partition = self.partition,
            from = self.position, to = low, "{message}; skipping them");
        self.position = low;
        Ok(())
    }

    /// Assigns the partition again at the position after the client stopped fetching it. Only
    /// the log start is checked: some brokers (tansu 0.6) under-report the log end, so whether
    /// the position is in the log again is left to the next fetch, which fails the same way if
    /// it is not.
    fn reassign(&mut self) -> Result<(), SourceError> {
        let (low, _) = self.inner.watermarks(self.partition)?;
        self.skip_deleted(low)?;
        self.assign_at(self.position, low)?;
        tracing::info!(topic = %self.inner.topic, partition = self.partition,
            offset = self.position, "partition assigned again");
        Ok(())
    }

    /// Assigns the partition again further before the position, when the broker may have
    /// served it from past the position (see [`Placement`]).
    fn step_back(&mut self) -> Result<(), SourceError> {
        let (low, _) = self.inner.watermarks(self.partition)?;
        self.skip_deleted(low)?;
        let back = self
            .position
            .saturating_sub(self.placement.assigned_at)
            .saturating_mul(8)
            .max(STEP_BACK);
        let from = self.position.saturating_sub(back).max(low);
        tracing::debug!(topic = %self.inner.topic, partition = self.partition,
            position = self.position, from,
            "no record at or before the position yet: reading from further back");
        self.assign_at(from, low)
    }

    /// Assigns the partition at `from` (at most the position) on a new queue.
    fn assign_at(&mut self, from: u64, low: u64) -> Result<(), SourceError> {
        self.inner.unassign(self.partition);
        self.queue = None;
        self.queue = Some(self.inner.assign(self.partition, from)?);
        self.placement = Placement::new(from, from <= low);
        self.needs_reassign = false;
        self.at_end = false;
        Ok(())
    }
}

impl PartitionReader<ClickEvent> for KafkaPartitionReader {
    fn poll(
        &mut self,
        ctx: &PollContext,
        out: &mut Polled<ClickEvent>,
    ) -> Result<ReadStatus, SourceError> {
        let before = out.items.len();
        let status = self.read_chunk(ctx, out);
        // Counted once a poll: the counters are shared by every worker's readers.
        let counters = &self.inner.counters;
        counters.polls.fetch_add(1, Ordering::Relaxed);
        let records = out.items.len().saturating_sub(before) as u64;
        counters.records.fetch_add(records, Ordering::Relaxed);
        status
    }

    fn position(&self) -> u64 {
        self.position
    }

    /// The high watermark of the client's last statistics (no request is made). tansu 0.6
    /// reports it wrong for some partitions: the lag is then shown as 0.
    fn end(&mut self) -> Option<u64> {
        let marks = self
            .inner
            .counters
            .high_watermarks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        marks
            .get(&self.partition)
            .and_then(|h| u64::try_from(*h).ok())
    }

    fn processed(&mut self, offset: u64) {
        self.processed = Some(offset);
        let due = match self.committed {
            None => true,
            Some((done, at)) => done != offset && at.elapsed() >= self.inner.commit_interval,
        };
        if due {
            self.inner.commit(self.partition, offset);
            self.committed = Some((offset, Instant::now()));
        }
    }
}

impl KafkaPartitionReader {
    /// Reads up to `ctx.max_records` records into `out`, waiting (up to the poll wait) only for
    /// the first, and only when the partition is not known to be at its end.
    fn read_chunk(
        &mut self,
        ctx: &PollContext,
        out: &mut Polled<ClickEvent>,
    ) -> Result<ReadStatus, SourceError> {
        if let Some(e) = self.pending_error.take() {
            return Err(e);
        }
        self.inner.serve_events()?;
        if self.needs_reassign {
            self.reassign()?;
        }
        let mut taken = 0;
        while taken < ctx.max_records {
            let wait = if taken == 0 && !self.at_end {
                self.inner.poll_wait
            } else {
                Duration::ZERO
            };
            match self.next(wait, out) {
                Next::Took => taken += 1,
                Next::Skipped => {}
                Next::Empty if self.at_end => return Ok(ReadStatus::CaughtUp),
                // Not at the end: the next fetch is on its way.
                Next::Empty if taken == 0 => return Ok(ReadStatus::Pending),
                Next::Empty => return Ok(ReadStatus::More),
                Next::End => return Ok(ReadStatus::CaughtUp),
                // Nothing was taken since the assignment (a taken record confirms it).
                Next::Unconfirmed => self.step_back()?,
                Next::Failed(e) if taken > 0 => {
                    self.pending_error = Some(e);
                    return Ok(ReadStatus::More);
                }
                Next::Failed(e) => return Err(e),
            }
        }
        Ok(ReadStatus::More)
    }
}

impl Drop for KafkaPartitionReader {
    fn drop(&mut self) {
        let uncommitted = self
            .processed
            .filter(|&offset| self.committed.map(|(done, _)| done) != Some(offset));
        if let Some(offset) = uncommitted {
            self.inner.commit(self.partition, offset);
        }
        self.inner.unassign(self.partition);
        self.queue = None;
        if let Err(e) = self.inner.flush_dead_letters(Duration::from_secs(5)) {
            tracing::error!(error = %e, "dead letters still in flight when a partition closed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_binary_values_decode_to_the_same_click() {
        let options = ParseOptions::default();
        let click = ClickEvent::page_view(938_476_800_000, "v1", "/news");
        let json = serde_json::to_vec(&click).expect("json");
        let mut bin = Vec::new();
        binary::encode(&click, &mut bin);
        assert_eq!(decode(Some(&json), &options), Ok(click.clone()));
        assert_eq!(decode(Some(&bin), &options), Ok(click));
        let with_newline = b"{\"ts_ms\":1,\"visitor_id\":\"v\",\"url\":\"/a\"}\n";
        assert!(decode(Some(with_newline), &options).is_ok());
    }

    #[test]
    fn bad_values_say_why() {
        let options = ParseOptions::default();
        let reason = |v: Option<&[u8]>| decode(v, &options).expect_err("must fail");
        assert_eq!(reason(None), "record has no value (a tombstone)");
        assert_eq!(reason(Some(b"")), "record value is empty");
        assert!(reason(Some(b"not json")).starts_with("JSON click event: "));
        assert!(reason(Some(b"{\"ts_ms\":1,\"url\":\"/a\"}")).contains("visitor_id"));
        assert!(reason(Some(&[1, 0xff])).starts_with("binary click event: "));
        assert!(reason(Some(&[7])).contains("unsupported record version 7"));
        let two = b"{\"ts_ms\":1,\"visitor_id\":\"v\",\"url\":\"/a\"}\n{}";
        assert!(reason(Some(two)).starts_with("JSON click event: "));
    }
}
