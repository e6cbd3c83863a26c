//! The dead-letter producer: records the source could not decode, copied to a side topic.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError as ClientError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use clickpulse_engine::source::DeadLetter;

use super::client::{ClientOptions, apply_options, base_config};
use super::error::{Error, Result};

/// The header naming why a record was dead-lettered.
pub const REASON_HEADER: &str = "reason";
/// The header naming the topic the record came from.
pub const SOURCE_TOPIC_HEADER: &str = "source_topic";
/// The header naming the partition the record came from.
pub const SOURCE_PARTITION_HEADER: &str = "source_partition";
/// The header naming the offset the record had.
pub const SOURCE_OFFSET_HEADER: &str = "source_offset";

/// How long [`DeadLetterProducer::send`] waits for room in a full producer queue.
const QUEUE_FULL_WAIT: Duration = Duration::from_secs(5);

/// Counts of dead letters handed to the producer, delivered and lost.
#[derive(Debug, Default)]
pub(crate) struct DeadLetterCounters {
    pub sent: AtomicU64,
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
}

/// Counts deliveries and logs failures; runs on the producer's polling thread.
pub(crate) struct DeadLetterContext {
    counters: Arc<DeadLetterCounters>,
}

impl ClientContext for DeadLetterContext {}

impl ProducerContext for DeadLetterContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.counters.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "a dead letter could not be written to its Kafka topic");
            }
        }
    }
}

/// Produces dead letters to one topic, idempotently, in the background.
pub(crate) struct DeadLetterProducer {
    topic: String,
    producer: ThreadedProducer<DeadLetterContext>,
    counters: Arc<DeadLetterCounters>,
}

impl DeadLetterProducer {
    pub(crate) fn new(
        brokers: &str,
        topic: &str,
        options: &ClientOptions,
        counters: Arc<DeadLetterCounters>,
    ) -> Result<Self> {
        let mut config = base_config(brokers, "clickpulse-dead-letters");
        config
            .set("enable.idempotence", "true")
            .set("linger.ms", "5");
        apply_options(&mut config, options, &["enable.idempotence"])?;
        let context = DeadLetterContext {
            counters: Arc::clone(&counters),
        };
        let producer = config.create_with_context(context).map_err(|e| {
            Error::client(
                format!("creating the dead-letter producer for `{topic}`"),
                e,
            )
        })?;
        Ok(DeadLetterProducer {
            topic: topic.to_string(),
            producer,
            counters,
        })
    }

    /// Hands `letter` to the producer; key = the original record's key. Waits up to 5 s for room
    /// in a full queue; a record that still cannot be queued is counted as failed and logged.
    pub(crate) fn send(&self, source_topic: &str, key: Option<&[u8]>, letter: &DeadLetter) {
        let partition = letter.partition.to_string();
        let offset = letter.offset.to_string();
        let headers = OwnedHeaders::new_with_capacity(4)
            .insert(Header {
                key: REASON_HEADER,
                value: Some(&letter.reason),
            })
            .insert(Header {
                key: SOURCE_TOPIC_HEADER,
                value: Some(source_topic),
            })
            .insert(Header {
                key: SOURCE_PARTITION_HEADER,
                value: Some(&partition),
            })
            .insert(Header {
                key: SOURCE_OFFSET_HEADER,
                value: Some(&offset),
            });
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topic)
            .payload(letter.raw.as_slice())
            .headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        self.counters.sent.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + QUEUE_FULL_WAIT;
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((ClientError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    record = back;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err((e, _)) => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(topic = %self.topic, partition = letter.partition,
                        offset = letter.offset, error = %e,
                        "a dead letter could not be queued for its Kafka topic");
                    return;
                }
            }
        }
    }

    /// Waits up to `timeout` for every queued dead letter to be acknowledged.
    pub(crate) fn flush(&self, timeout: Duration) -> Result<()> {
        if self.producer.in_flight_count() == 0 {
            return Ok(());
        }
        self.producer
            .flush(timeout)
            .map_err(|_| Error::FlushTimeout {
                topic: self.topic.clone(),
                pending: self.producer.in_flight_count(),
                timeout,
            })
    }
}

impl Drop for DeadLetterProducer {
    fn drop(&mut self) {
        // Dropping the client purges what is still queued: give it a chance to get out first.
        if let Err(e) = self.flush(Duration::from_secs(10)) {
            tracing::error!(error = %e, "dead letters lost at shutdown");
        }
    }
}
