//! Click events into a Kafka topic, for replay and load.

use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError as ClientError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use clickpulse_events::{ClickEvent, binary, partition_for};

use super::client::{ClientOptions, apply_options, base_config, check_target, partition_count};
use super::error::{Error, Result};

/// How [`KafkaClickWriter`] writes an event as a record value. [`KafkaSource`](super::KafkaSource)
/// reads both, in any mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ValueFormat {
    /// The event's JSON object, as users' producers write it. The default.
    #[default]
    Json,
    /// The binary encoding of [`clickpulse_events::binary`] (first byte below `0x09`): fewer
    /// bytes for the broker to store and serve, and cheaper to decode than JSON.
    Binary,
}

impl std::str::FromStr for ValueFormat {
    type Err = String;

    /// `json` or `binary`.
    ///
    /// # Examples
    /// ```
    /// use clickpulse_connectors::kafka::ValueFormat;
    /// assert_eq!("binary".parse(), Ok(ValueFormat::Binary));
    /// assert!("avro".parse::<ValueFormat>().is_err());
    /// ```
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "json" => Ok(ValueFormat::Json),
            "binary" => Ok(ValueFormat::Binary),
            other => Err(format!("`{other}` is not a value format (json or binary)")),
        }
    }
}

/// Delivery results since the last flush.
#[derive(Debug, Default)]
struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

struct WriterContext {
    deliveries: Arc<Deliveries>,
}

impl ClientContext for WriterContext {}

impl ProducerContext for WriterContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.deliveries.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.deliveries.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self
                    .deliveries
                    .first_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// Produces click events to a topic, for `clickpulse replay` and load tests.
///
/// Each event is one record: the value its JSON, or its binary encoding (see [`ValueFormat`];
/// [`KafkaSource`](super::KafkaSource) reads both), the key its `visitor_id`, the timestamp its
/// `ts_ms`. The partition is chosen here, not by
/// librdkafka: [`partition_for`]`(visitor_id, partitions)`, the FNV-1a rule the embedded log and
/// the collector use, so a visitor's clicks land in the same partition number whichever log
/// holds them and stay in order. The partition count is read once when the writer is made;
/// [`refresh_partitions`](Self::refresh_partitions) reads it again (visitors then move, so do it
/// between replays, not in the middle of one).
///
/// The producer is tuned for throughput — `linger.ms=20`, batches up to 1 MB, `lz4`
/// compression, a queue of a million records — and idempotent (`enable.idempotence=true`), so
/// its retries neither duplicate nor reorder. [`write`](Self::write) queues a slice of events and
/// waits until the broker acknowledged every one; [`send`](Self::send) and
/// [`flush`](Self::flush) split the two for callers that pipeline.
///
/// # Examples
/// ```no_run
/// use clickpulse_connectors::kafka::KafkaClickWriter;
/// use clickpulse_events::ClickEvent;
///
/// let mut writer = KafkaClickWriter::new("127.0.0.1:9092", "clicks")?;
/// let written = writer.write(&[ClickEvent::page_view(938476800000, "v1", "/news")])?;
/// assert_eq!(written, 1);
/// # Ok::<(), clickpulse_connectors::kafka::Error>(())
/// ```
pub struct KafkaClickWriter {
    producer: BaseProducer<WriterContext>,
    deliveries: Arc<Deliveries>,
    topic: String,
    partitions: u32,
    flush_timeout: Duration,
    metadata_timeout: Duration,
    format: ValueFormat,
    buf: Vec<u8>,
    sent: u64,
}

/// Configures a [`KafkaClickWriter`]; made by [`KafkaClickWriter::builder`].
#[derive(Debug, Clone)]
pub struct KafkaClickWriterBuilder {
    brokers: String,
    topic: String,
    flush_timeout: Duration,
    metadata_timeout: Duration,
    format: ValueFormat,
    options: ClientOptions,
}

impl KafkaClickWriter {
    /// A builder for a writer into `topic` on `brokers`.
    pub fn builder(
        brokers: impl Into<String>,
        topic: impl Into<String>,
    ) -> KafkaClickWriterBuilder {
        KafkaClickWriterBuilder {
            brokers: brokers.into(),
            topic: topic.into(),
            flush_timeout: Duration::from_secs(30),
            metadata_timeout: Duration::from_secs(10),
            format: ValueFormat::Json,
            options: Vec::new(),
        }
    }

    /// A writer with every default.
    ///
    /// # Errors
    /// As [`KafkaClickWriterBuilder::build`].
    pub fn new(brokers: &str, topic: &str) -> Result<Self> {
        KafkaClickWriter::builder(brokers, topic).build()
    }

    /// The topic written to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition count events are spread over.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Reads the topic's partition count again and spreads later events over it.
    ///
    /// # Errors
    /// [`Error::TopicNotFound`] or [`Error::Client`] as for [`KafkaClickWriterBuilder::build`].
    pub fn refresh_partitions(&mut self) -> Result<u32> {
        self.partitions =
            partition_count(self.producer.client(), &self.topic, self.metadata_timeout)?;
        Ok(self.partitions)
    }

    /// Queues one event without waiting for its delivery; waits for room (up to the flush
    /// timeout) when the client's queue is full.
    ///
    /// # Errors
    /// [`Error::FlushTimeout`] when the queue stayed full; [`Error::Client`] when the client
    /// refuses the record (too large, for instance).
    pub fn send(&mut self, event: &ClickEvent) -> Result<()> {
        self.buf.clear();
        match self.format {
            ValueFormat::Json => {
                serde_json::to_writer(&mut self.buf, event).map_err(|e| Error::Config {
                    key: "event".into(),
                    reason: format!("not serialisable: {e}"),
                })?;
            }
            ValueFormat::Binary => binary::encode(event, &mut self.buf),
        }
        let partition =
            i32::try_from(partition_for(&event.visitor_id, self.partitions)).unwrap_or(0);
        let mut record = BaseRecord::<str, [u8]>::to(&self.topic)
            .key(event.visitor_id.as_str())
            .payload(self.buf.as_slice())
            .partition(partition)
            .timestamp(i64::try_from(event.ts_ms).unwrap_or(i64::MAX));
        let deadline = Instant::now() + self.flush_timeout;
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((ClientError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    if Instant::now() >= deadline {
                        return Err(Error::FlushTimeout {
                            topic: self.topic.clone(),
                            pending: self.producer.in_flight_count(),
                            timeout: self.flush_timeout,
                        });
                    }
                    record = back;
                    self.producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => {
                    return Err(Error::client(format!("producing to `{}`", self.topic), e));
                }
            }
        }
        self.sent += 1;
        // Serve delivery reports now and then so they do not pile up.
        if self.sent & 1023 == 0 {
            self.producer.poll(Duration::ZERO);
        }
        Ok(())
    }

    /// Waits until every event sent since the last flush is acknowledged; returns how many were.
    ///
    /// # Errors
    /// [`Error::FlushTimeout`] after the flush timeout (default 30 s); [`Error::Delivery`] when
    /// the broker refused some (the count says how many).
    pub fn flush(&mut self) -> Result<u64> {
        let flushed = self.producer.flush(self.flush_timeout);
        let sent = std::mem::take(&mut self.sent);
        let delivered = self.deliveries.delivered.swap(0, Ordering::Relaxed);
        let failed = self.deliveries.failed.swap(0, Ordering::Relaxed);
        let first_error = self
            .deliveries
            .first_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if flushed.is_err() {
            return Err(Error::FlushTimeout {
                topic: self.topic.clone(),
                pending: self.producer.in_flight_count(),
                timeout: self.flush_timeout,
            });
        }
        if failed > 0 {
            return Err(Error::Delivery {
                topic: self.topic.clone(),
                sent,
                failed,
                first_error: first_error.unwrap_or_default(),
            });
        }
        Ok(delivered)
    }

    /// Produces `events` and waits for every one to be acknowledged; returns how many were
    /// written.
    ///
    /// # Errors
    /// As [`send`](Self::send) and [`flush`](Self::flush).
    pub fn write(&mut self, events: &[ClickEvent]) -> Result<usize> {
        for event in events {
            self.send(event)?;
        }
        self.flush()?;
        Ok(events.len())
    }
}

impl fmt::Debug for KafkaClickWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaClickWriter")
            .field("topic", &self.topic)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl KafkaClickWriterBuilder {
    /// How long a flush (and a wait for room in a full queue) may take. Default = 30 s.
    pub fn flush_timeout(mut self, timeout: Duration) -> Self {
        self.flush_timeout = timeout;
        self
    }

    /// How long the partition-count request may take. Default = 10 s.
    pub fn metadata_timeout(mut self, timeout: Duration) -> Self {
        self.metadata_timeout = timeout;
        self
    }

    /// How events are written as record values. Default = [`ValueFormat::Json`].
    pub fn value_format(mut self, format: ValueFormat) -> Self {
        self.format = format;
        self
    }

    /// An extra librdkafka producer setting, applied after clickpulse's own (for instance
    /// `compression.type=none` for a broker without lz4). `enable.idempotence` is refused.
    pub fn option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.push((key.into(), value.into()));
        self
    }

    /// Makes the writer and reads the topic's partition count.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty broker list, an invalid topic or a reserved option;
    /// [`Error::TopicNotFound`] when the topic does not exist; [`Error::Client`] when the cluster
    /// cannot be reached within the metadata timeout.
    pub fn build(self) -> Result<KafkaClickWriter> {
        check_target(&self.brokers, &self.topic)?;
        let mut config = base_config(&self.brokers, "clickpulse-replay");
        config
            .set("enable.idempotence", "true")
            .set("linger.ms", "20")
            .set("batch.size", "1000000")
            .set("batch.num.messages", "100000")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", "1000000");
        apply_options(&mut config, &self.options, &["enable.idempotence"])?;
        let deliveries = Arc::new(Deliveries::default());
        let context = WriterContext {
            deliveries: Arc::clone(&deliveries),
        };
        let producer: BaseProducer<WriterContext> = config
            .create_with_context(context)
            .map_err(|e| Error::client("creating the click producer", e))?;
        let partitions = partition_count(producer.client(), &self.topic, self.metadata_timeout)?;
        Ok(KafkaClickWriter {
            producer,
            deliveries,
            topic: self.topic,
            partitions,
            flush_timeout: self.flush_timeout,
            metadata_timeout: self.metadata_timeout,
            format: self.format,
            buf: Vec::with_capacity(256),
            sent: 0,
        })
    }
}
