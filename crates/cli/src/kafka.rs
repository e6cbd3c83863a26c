//! Kafka in the CLI: the job's input topic, its result topics, and the collector into Kafka.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use clickpulse_connectors::kafka::{
    KafkaClickWriter, KafkaSink, KafkaSource, KafkaUrl, ensure_topic,
};
use clickpulse_engine::source::PartitionedSource;
use clickpulse_events::ClickEvent;
use clickpulse_job::{JobConfig, STREAMS};
use clickpulse_server::EventAppender;
use clickpulse_server::collector::AppendError;

/// How long creating a topic or reading its metadata may take.
pub const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// Partitions of the topics `run` creates (result and dead-letter topics): one, so that any
/// consumer reads a stream's batches in order. Results are small next to the clicks.
const CREATED_TOPIC_PARTITIONS: u32 = 1;

/// Every stream the standard job writes: the seven standard streams, `late_events` and
/// `dead_letters`.
pub fn result_streams() -> impl Iterator<Item = &'static str> {
    STREAMS
        .iter()
        .copied()
        .chain(["late_events", "dead_letters"])
}

/// The Kafka input of a job: where it is, and the source reading it.
pub struct KafkaInput {
    /// `kafka://brokers/topic`, for messages.
    pub url: String,
    /// The bootstrap brokers.
    pub brokers: String,
    /// The clicks' topic.
    pub topic: String,
    /// The source the job reads.
    pub source: KafkaSource,
}

impl KafkaInput {
    /// The source over `input.kafka` (`url`), its dead-letter topic created when missing, and
    /// the input topic too (with `input.partitions`) when `create`.
    ///
    /// # Errors
    /// A bad URL or setting, an unreachable cluster, or a missing input topic (the message
    /// says how to fill it).
    pub fn open(config: &JobConfig, url: &str, create: bool) -> anyhow::Result<KafkaInput> {
        let input = &config.input;
        let parsed = KafkaUrl::parse(url)?;
        let brokers = parsed.brokers();
        let topic = parsed.topic_or(&input.topic).to_string();
        if create {
            ensure_topic(&brokers, &topic, input.partitions, KAFKA_TIMEOUT)
                .with_context(|| format!("creating the input topic `{topic}` on {brokers}"))?;
        }
        let mut builder = KafkaSource::builder(&brokers, &topic, &input.kafka_group_id)
            .metadata_timeout(KAFKA_TIMEOUT);
        builder = match input.dead_letter_topic_for(&topic) {
            Some(dlq) => {
                ensure_topic(&brokers, &dlq, CREATED_TOPIC_PARTITIONS, KAFKA_TIMEOUT)
                    .with_context(|| format!("creating the dead-letter topic `{dlq}`"))?;
                builder.dead_letter_topic(dlq)
            }
            None => builder.no_dead_letter_topic(),
        };
        let source = builder.build()?;
        let url = format!("kafka://{brokers}/{topic}");
        let partitions = source.partitions().map_err(|e| {
            anyhow::anyhow!("reading {url}: {e} (to fill it: clickpulse replay --to {url})")
        })?;
        tracing::info!(%url, partitions, group = %input.kafka_group_id, "reading clicks from Kafka");
        Ok(KafkaInput {
            url,
            brokers,
            topic,
            source,
        })
    }

    /// A collector appender producing to the same topic.
    ///
    /// # Errors
    /// When the producer cannot be made or the topic's metadata read.
    pub fn appender(&self) -> anyhow::Result<KafkaAppender> {
        let writer = KafkaClickWriter::builder(&self.brokers, &self.topic)
            .metadata_timeout(KAFKA_TIMEOUT)
            .build()
            .with_context(|| format!("the collector's producer to {}", self.url))?;
        Ok(KafkaAppender {
            writer: Mutex::new(writer),
        })
    }
}

/// The result sink for `output.kafka`, after creating every result topic that is missing.
///
/// # Errors
/// A bad URL, an unreachable cluster, or a topic the cluster refuses to create.
pub fn result_sink(url: &str, prefix: &str) -> anyhow::Result<KafkaSink> {
    let brokers = KafkaUrl::parse(url)?.brokers();
    for stream in result_streams() {
        let topic = format!("{prefix}{stream}");
        ensure_topic(&brokers, &topic, CREATED_TOPIC_PARTITIONS, KAFKA_TIMEOUT)
            .with_context(|| format!("creating the result topic `{topic}` on {brokers}"))?;
    }
    tracing::info!(%brokers, topics = %format!("{prefix}<stream>"), "writing results to Kafka");
    Ok(KafkaSink::builder(brokers).topic_prefix(prefix).build()?)
}

/// The collector's events into a Kafka topic (`run --serve` with a Kafka input), partitioned as
/// `replay --to` does.
pub struct KafkaAppender {
    writer: Mutex<KafkaClickWriter>,
}

impl EventAppender for KafkaAppender {
    fn append(&self, events: &[ClickEvent]) -> Result<(), AppendError> {
        let mut writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match writer.write(events) {
            Ok(_) => Ok(()),
            Err(e) if e.is_retryable() => Err(AppendError::Unavailable(e.to_string())),
            Err(e) => Err(AppendError::Rejected(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_streams_are_the_standard_ones_and_the_side_streams() {
        let streams: Vec<_> = result_streams().collect();
        assert_eq!(streams.len(), STREAMS.len() + 2);
        assert!(streams.contains(&"top_pages"));
        assert_eq!(&streams[STREAMS.len()..], &["late_events", "dead_letters"]);
    }
}
