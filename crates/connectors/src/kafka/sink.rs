//! Result batches into Kafka topics.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError as ClientError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use serde_json::Value;

use super::client::{ClientOptions, apply_options, base_config};
use super::error::{Error, Result};
use super::record::headers_for;
use super::url::validate_topic;
use crate::result::{ResultBatch, ResultSink, SinkError};

/// The fields the default key is taken from, the first one a row has.
pub const AUTO_KEY_FIELDS: [&str; 4] = ["url", "visitor_id", "segment", "item"];

/// The topic prefix of streams without a topic of their own.
pub const DEFAULT_TOPIC_PREFIX: &str = "clickpulse.";

/// Which record key a stream's rows get.
///
/// A field's value becomes key text as is when it is a string, and as its JSON text otherwise
/// (`42`, `true`); a missing or `null` field is empty text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum KeySpec {
    /// The first of `url`, `visitor_id`, `segment`, `item` the row has; no key when it has none.
    #[default]
    Auto,
    /// These fields' values joined by `|` (a single field: its value alone); no key when the row
    /// has none of them.
    Fields(Vec<String>),
    /// No key: the client spreads the rows over partitions.
    None,
}

impl KeySpec {
    /// The key of `row`, or `None` for no key.
    ///
    /// # Examples
    /// ```
    /// use clickpulse_connectors::kafka::KeySpec;
    /// let row = serde_json::json!({"visitor_id": "v7", "clicks": 3, "segment": "new"});
    /// assert_eq!(KeySpec::Auto.key_of(&row).as_deref(), Some("v7"));
    /// let spec = KeySpec::Fields(vec!["segment".into(), "clicks".into()]);
    /// assert_eq!(spec.key_of(&row).as_deref(), Some("new|3"));
    /// assert_eq!(KeySpec::None.key_of(&row), None);
    /// ```
    pub fn key_of(&self, row: &Value) -> Option<String> {
        match self {
            KeySpec::Auto => AUTO_KEY_FIELDS
                .iter()
                .find_map(|f| row.get(f).filter(|v| !v.is_null()))
                .map(key_text),
            KeySpec::Fields(fields) => {
                if !fields
                    .iter()
                    .any(|f| row.get(f).is_some_and(|v| !v.is_null()))
                {
                    return None;
                }
                let parts: Vec<String> = fields
                    .iter()
                    .map(|f| row.get(f).map_or_else(String::new, key_text))
                    .collect();
                Some(parts.join("|"))
            }
            KeySpec::None => None,
        }
    }
}

fn key_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Delivery failures of the batch being written.
#[derive(Debug, Default)]
struct Tally {
    failed: u64,
    first_error: Option<String>,
}

struct SinkContext {
    tally: Arc<Mutex<Tally>>,
}

impl ClientContext for SinkContext {}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            let mut tally = self
                .tally
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            tally.failed += 1;
            tally.first_error.get_or_insert_with(|| e.to_string());
        }
    }
}

/// Writes result batches to Kafka: each stream to its topic, one record per row.
///
/// Records are laid out as in [`record`](super::record): the JSON row as value, a key from the
/// stream's [`KeySpec`] (default [`KeySpec::Auto`]), headers `stream`, `batch`,
/// `window_start_ms`, `window_end_ms` (when windowed), `batch_rows`, `row` and `prev_batch` (the
/// batch this sink wrote for the stream before, so readers can wait for it). A stream goes to
/// `clickpulse.<stream>` unless mapped to a topic of its own. Batches with no rows write
/// nothing.
///
/// The producer is idempotent (`enable.idempotence=true`: no duplicates or reordering from the
/// client's own retries). Every [`write`](ResultSink::write) flushes before it returns, so a
/// batch is acknowledged by the broker when the engine moves on; the flush waits at most the
/// flush timeout (default 10 s) and is then an error, so a broker that is down never blocks the
/// engine forever. Kafka transactions are not used (brokers such as tansu have none), so a job
/// restarted from a checkpoint may write a batch again: consumers de-duplicate by the `batch`
/// header.
///
/// # Examples
/// ```no_run
/// use clickpulse_connectors::kafka::{KafkaSink, KeySpec};
/// use clickpulse_connectors::{ResultBatch, ResultSink};
///
/// let mut sink = KafkaSink::builder("127.0.0.1:9092")
///     .topic("top_pages", "dashboards.top")
///     .key("sessions", KeySpec::Fields(vec!["visitor_id".into()]))
///     .build()?;
/// sink.write(&ResultBatch {
///     stream: "page_views".into(),
///     batch: 7,
///     window_start_ms: Some(0),
///     window_end_ms: Some(1000),
///     rows: vec![serde_json::json!({"url": "/news", "count": 2})].into(),
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct KafkaSink {
    producer: BaseProducer<SinkContext>,
    tally: Arc<Mutex<Tally>>,
    topic_prefix: String,
    topics: HashMap<String, String>,
    keys: HashMap<String, KeySpec>,
    flush_timeout: Duration,
    name: String,
    /// The last batch written for each stream.
    last_batch: HashMap<String, u64>,
}

/// Configures a [`KafkaSink`]; made by [`KafkaSink::builder`].
#[derive(Debug, Clone)]
pub struct KafkaSinkBuilder {
    brokers: String,
    topic_prefix: String,
    topics: HashMap<String, String>,
    keys: HashMap<String, KeySpec>,
    flush_timeout: Duration,
    options: ClientOptions,
}

impl KafkaSink {
    /// A builder for a sink writing to the cluster at `brokers` (`host:port,host:port`).
    pub fn builder(brokers: impl Into<String>) -> KafkaSinkBuilder {
        KafkaSinkBuilder {
            brokers: brokers.into(),
            topic_prefix: DEFAULT_TOPIC_PREFIX.into(),
            topics: HashMap::new(),
            keys: HashMap::new(),
            flush_timeout: Duration::from_secs(10),
            options: Vec::new(),
        }
    }

    /// The topic `stream` is written to.
    pub fn topic_for(&self, stream: &str) -> String {
        topic_for(&self.topics, &self.topic_prefix, stream)
    }

    fn key_spec(&self, stream: &str) -> &KeySpec {
        static AUTO: KeySpec = KeySpec::Auto;
        self.keys.get(stream).unwrap_or(&AUTO)
    }

    fn reset_tally(&self) {
        *self
            .tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Tally::default();
    }

    /// Queues one record, waiting (until `deadline`) for room when the client's queue is full.
    fn send(&self, record: BaseRecord<'_, str, [u8]>, deadline: Instant) -> Result<()> {
        let mut record = record;
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((ClientError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    record = back;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, back)) => {
                    return Err(Error::client(format!("producing to `{}`", back.topic), e));
                }
            }
        }
    }

    fn write_batch(&self, batch: &ResultBatch) -> Result<()> {
        let topic = self.topic_for(&batch.stream);
        let prev = self.last_batch.get(&batch.stream).copied();
        let spec = self.key_spec(&batch.stream);
        let deadline = Instant::now() + self.flush_timeout;
        self.reset_tally();
        for (i, row) in batch.rows.iter().enumerate() {
            let key = match spec {
                KeySpec::None => None,
                // Every row is JSON (written by the job or checked when pushed).
                _ => spec.key_of(&serde_json::from_str(row).unwrap_or(Value::Null)),
            };
            let mut record = BaseRecord::to(&topic)
                .payload(row.as_bytes())
                .headers(headers_for(batch, i, prev));
            if let Some(key) = key.as_deref() {
                record = record.key(key);
            }
            self.send(record, deadline)?;
            self.producer.poll(Duration::ZERO);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if self.producer.flush(left).is_err() {
            return Err(Error::FlushTimeout {
                topic,
                pending: self.producer.in_flight_count(),
                timeout: self.flush_timeout,
            });
        }
        let tally = self
            .tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if tally.failed > 0 {
            return Err(Error::Delivery {
                topic,
                sent: batch.rows.len() as u64,
                failed: tally.failed,
                first_error: tally.first_error.clone().unwrap_or_default(),
            });
        }
        Ok(())
    }
}

fn topic_for(topics: &HashMap<String, String>, prefix: &str, stream: &str) -> String {
    topics
        .get(stream)
        .cloned()
        .unwrap_or_else(|| format!("{prefix}{stream}"))
}

impl fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic_prefix", &self.topic_prefix)
            .field("topics", &self.topics)
            .field("keys", &self.keys)
            .field("flush_timeout", &self.flush_timeout)
            .finish_non_exhaustive()
    }
}

impl ResultSink for KafkaSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(&mut self, batch: &ResultBatch) -> Result<(), SinkError> {
        if batch.rows.is_empty() {
            return Ok(());
        }
        self.write_batch(batch).map_err(|e| SinkError::Write {
            sink: format!("kafka ({})", self.topic_for(&batch.stream)),
            message: e.to_string(),
        })?;
        self.last_batch.insert(batch.stream.clone(), batch.batch);
        Ok(())
    }
}

impl KafkaSinkBuilder {
    /// The prefix of topics for streams not mapped by [`topic`](Self::topic). Default =
    /// `clickpulse.`.
    pub fn topic_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.topic_prefix = prefix.into();
        self
    }

    /// Writes `stream` to `topic` instead of `<prefix><stream>`.
    pub fn topic(mut self, stream: impl Into<String>, topic: impl Into<String>) -> Self {
        self.topics.insert(stream.into(), topic.into());
        self
    }

    /// The key of `stream`'s records. Default = [`KeySpec::Auto`].
    pub fn key(mut self, stream: impl Into<String>, key: KeySpec) -> Self {
        self.keys.insert(stream.into(), key);
        self
    }

    /// How long one batch's flush may take before [`write`](ResultSink::write) fails. Default =
    /// 10 s.
    pub fn flush_timeout(mut self, timeout: Duration) -> Self {
        self.flush_timeout = timeout;
        self
    }

    /// An extra librdkafka producer setting (security, compression, …), applied after
    /// clickpulse's own (`linger.ms=5`, `compression.type=lz4`). `enable.idempotence` is refused.
    pub fn option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.push((key.into(), value.into()));
        self
    }

    /// Makes the sink. Nothing is contacted until the first write.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty broker list, a topic name Kafka would refuse, or a
    /// reserved option; [`Error::Client`] when librdkafka refuses a setting.
    pub fn build(self) -> Result<KafkaSink> {
        if self.brokers.trim().is_empty() {
            return Err(Error::Config {
                key: "brokers".into(),
                reason: "the broker list is empty".into(),
            });
        }
        for topic in self.topics.values() {
            validate_topic(topic).map_err(|reason| Error::Config {
                key: "topics".into(),
                reason: format!("`{topic}`: {reason}"),
            })?;
        }
        let mut config = base_config(&self.brokers, "clickpulse-sink");
        config
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("compression.type", "lz4");
        apply_options(&mut config, &self.options, &["enable.idempotence"])?;
        let tally = Arc::new(Mutex::new(Tally::default()));
        let context = SinkContext {
            tally: Arc::clone(&tally),
        };
        let producer = config
            .create_with_context(context)
            .map_err(|e| Error::client("creating the result producer", e))?;
        Ok(KafkaSink {
            producer,
            tally,
            topic_prefix: self.topic_prefix,
            topics: self.topics,
            keys: self.keys,
            flush_timeout: self.flush_timeout,
            name: format!("kafka ({})", self.brokers),
            last_batch: HashMap::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn auto_key_takes_the_first_field_present() {
        let auto = |row: Value| KeySpec::Auto.key_of(&row);
        assert_eq!(
            auto(json!({"url": "/a", "visitor_id": "v"})).as_deref(),
            Some("/a")
        );
        assert_eq!(
            auto(json!({"visitor_id": "v", "segment": "s"})).as_deref(),
            Some("v")
        );
        assert_eq!(
            auto(json!({"segment": "s", "item": "i"})).as_deref(),
            Some("s")
        );
        assert_eq!(auto(json!({"item": 42})).as_deref(), Some("42"));
        assert_eq!(
            auto(json!({"url": null, "item": "i"})).as_deref(),
            Some("i")
        );
        assert_eq!(auto(json!({"count": 3})), None);
        assert_eq!(auto(json!([1, 2])), None);
    }

    #[test]
    fn field_keys_join_values() {
        let spec = KeySpec::Fields(vec!["tenant".into(), "url".into()]);
        assert_eq!(
            spec.key_of(&json!({"tenant": "t1", "url": "/a"}))
                .as_deref(),
            Some("t1|/a")
        );
        assert_eq!(spec.key_of(&json!({"url": "/a"})).as_deref(), Some("|/a"));
        assert_eq!(spec.key_of(&json!({"count": 1})), None);
        let one = KeySpec::Fields(vec!["window_start_ms".into()]);
        assert_eq!(
            one.key_of(&json!({"window_start_ms": 5000})).as_deref(),
            Some("5000")
        );
    }

    #[test]
    fn topics_default_to_the_prefix() {
        let mut topics = HashMap::new();
        topics.insert("top_pages".to_string(), "dash.top".to_string());
        assert_eq!(topic_for(&topics, "clickpulse.", "top_pages"), "dash.top");
        assert_eq!(
            topic_for(&topics, "clickpulse.", "page_views"),
            "clickpulse.page_views"
        );
    }

    #[test]
    fn bad_settings_are_refused_before_connecting() {
        let err = KafkaSink::builder(" ").build().expect_err("empty brokers");
        assert!(err.to_string().contains("broker list is empty"));
        let err = KafkaSink::builder("h:1")
            .topic("s", "bad topic")
            .build()
            .expect_err("bad topic");
        assert!(err.to_string().contains("`bad topic`"));
        let err = KafkaSink::builder("h:1")
            .option("enable.idempotence", "false")
            .build()
            .expect_err("reserved");
        assert!(err.to_string().contains("enable.idempotence"));
    }
}
