//! Result batches into Kafka topics.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError as ClientError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::client::{ClientOptions, apply_options, base_config};
use super::error::{Error, Result};
use super::record::{BatchHeaders, partition_of};
use super::resume::TopicTails;
use super::resume_scan::{ScanSettings, scan_topic};
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

    /// The key of the row whose JSON text is `row`: [`key_of`](Self::key_of) of the parsed row,
    /// without building the whole row for [`KeySpec::Auto`] (only the key fields are read).
    fn key_of_text(&self, row: &str) -> Option<String> {
        match self {
            KeySpec::None => None,
            KeySpec::Auto => match auto_key_of_text(row) {
                Some(key) => key,
                None => self.key_of(&serde_json::from_str(row).unwrap_or(Value::Null)),
            },
            KeySpec::Fields(_) => self.key_of(&serde_json::from_str(row).unwrap_or(Value::Null)),
        }
    }
}

/// The [`AUTO_KEY_FIELDS`] of a row, each as its JSON text; other fields are skipped unread.
#[derive(Deserialize)]
struct AutoKeyFields<'a> {
    #[serde(borrow)]
    url: Option<&'a RawValue>,
    #[serde(borrow)]
    visitor_id: Option<&'a RawValue>,
    #[serde(borrow)]
    segment: Option<&'a RawValue>,
    #[serde(borrow)]
    item: Option<&'a RawValue>,
}

/// The [`KeySpec::Auto`] key of an object row's text; `None` when the text is not a plain
/// object (the caller then parses the whole row).
fn auto_key_of_text(row: &str) -> Option<Option<String>> {
    // A derived struct would also take an array; only objects have key fields.
    if !row.trim_start().starts_with('{') {
        return None;
    }
    let fields: AutoKeyFields<'_> = serde_json::from_str(row).ok()?;
    // `null` fields come as `None`, as `key_of` skips them.
    let Some(raw) = [fields.url, fields.visitor_id, fields.segment, fields.item]
        .into_iter()
        .flatten()
        .next()
    else {
        return Some(None);
    };
    let value: Value = serde_json::from_str(raw.get()).ok()?;
    Some(Some(key_text(&value)))
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

/// How batches reach the broker; decided at the first write.
enum Delivery {
    /// Not decided yet (or the transactional producer failed for good: decide again).
    Undecided,
    /// Through the idempotent producer; readers may see part of a batch while it is written.
    Idempotent,
    /// Each batch in one transaction of this producer.
    Transactional(BaseProducer<SinkContext>),
}

/// One row of a batch: where it goes, and whether it is written or already there.
#[derive(Debug)]
struct PlannedRow<'a> {
    /// The row's index in the batch.
    index: usize,
    /// The row's JSON text.
    payload: &'a str,
    partition: i32,
    key: Option<String>,
    /// False when the partition already holds the row (written before a restart).
    write: bool,
}

/// What the sink knows of a topic it writes to.
#[derive(Debug)]
struct TopicState {
    /// What the topic holds: read before the first write, then updated with each batch.
    tails: TopicTails,
    /// The streams the read went far enough back for.
    streams: Vec<String>,
    skipped_rows: u64,
    skipped_batches: u64,
    /// Whether the end of the skipping was logged.
    caught_up: bool,
}

/// Writes result batches to Kafka: each stream to its topic, one record per row, exactly once
/// across restarts.
///
/// Records are laid out as in [`record`](super::record): the JSON row as value, a key from the
/// stream's [`KeySpec`] (default [`KeySpec::Auto`]), headers `stream`, `batch`,
/// `window_start_ms`, `window_end_ms` (when windowed), `batch_rows`, `row` and `prev_batch` (the
/// batch this sink wrote for the stream before, so readers can wait for it). A stream goes to
/// `clickpulse.<stream>` unless mapped to a topic of its own; the topic must exist. Batches with
/// no rows write nothing.
///
/// # Delivery
/// The producer is idempotent (`enable.idempotence=true`: no duplicates or reordering from the
/// client's own retries). Every [`write`](ResultSink::write) flushes before it returns, so a
/// batch is acknowledged by the broker when the engine moves on; the flush waits at most the
/// flush timeout (default 10 s) and is then an error, so a broker that is down never blocks the
/// engine forever. The sink chooses each row's partition itself with
/// [`partition_of`](super::record::partition_of): by the key's CRC-32 as librdkafka does, and
/// round robin by row index (from a partition that moves on by one each batch) for rows without
/// a key, so that a batch written again goes to the same partitions.
///
/// # Exactly once across restarts
/// A job restarted from a checkpoint writes the batches after it again, the same rows in the
/// same order. Before its first write to a topic the sink reads the tail of each of the topic's
/// partitions and notes, per stream, the newest batch there and which of its rows are there;
/// it then skips every row its partition already holds: rows of older batches, and the rows of
/// the newest batch read back (a writer stopped in the middle of a batch leaves some of them
/// out). The rule and how far back it reads are in `resume.rs`, and where a partition ends in
/// `resume_scan.rs` (tansu reports ends too early, so the sink reads on until no record comes for
/// 500 ms). [`skipped_rows`](Self::skipped_rows) counts the rows skipped, and the log says how
/// many per topic once the sink has caught up. The sink must be the topic's only writer, the
/// partition count must not change between a batch's first write and its re-run, and a job
/// whose write failed must restart from its checkpoint rather than go on to later batches (a
/// partition holding batch `b + 1` is taken to hold all of batch `b`).
///
/// Where the broker has transactions (the first write tries `init_transactions` with the
/// transactional id, default `clickpulse-sink-<topic prefix>`, for up to the transaction
/// timeout, default 10 s), each batch is one transaction: a read-committed reader sees a batch
/// whole or not at all, and a crashed writer's unfinished batch is aborted when the restarted
/// one starts. Where it has none (tansu 0.6), the sink says so in the log and relies on the tail
/// scan alone; readers may then see part of a batch until the restarted sink completes it.
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
/// println!("{} rows were already there", sink.skipped_rows());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct KafkaSink {
    producer: BaseProducer<SinkContext>,
    /// The producer's configuration, for the transactional one.
    config: ClientConfig,
    delivery: Delivery,
    /// `None` when transactions are off.
    transactional_id: Option<String>,
    transaction_timeout: Duration,
    scan: ScanSettings,
    tally: Arc<Mutex<Tally>>,
    topic_prefix: String,
    topics: HashMap<String, String>,
    keys: HashMap<String, KeySpec>,
    flush_timeout: Duration,
    name: String,
    /// The last batch written for each stream.
    last_batch: HashMap<String, u64>,
    /// Per topic written to.
    state: HashMap<String, TopicState>,
    skipped_rows: u64,
}

/// Configures a [`KafkaSink`]; made by [`KafkaSink::builder`].
#[derive(Debug, Clone)]
pub struct KafkaSinkBuilder {
    brokers: String,
    topic_prefix: String,
    topics: HashMap<String, String>,
    keys: HashMap<String, KeySpec>,
    flush_timeout: Duration,
    transactions: bool,
    transactional_id: Option<String>,
    transaction_timeout: Duration,
    resume_timeout: Duration,
    options: ClientOptions,
}

/// How long a partition must stay without new records past its reported end before the resume
/// scan takes it as read to the end.
const RESUME_QUIET: Duration = Duration::from_millis(500);

impl KafkaSink {
    /// A builder for a sink writing to the cluster at `brokers` (`host:port,host:port`).
    pub fn builder(brokers: impl Into<String>) -> KafkaSinkBuilder {
        KafkaSinkBuilder {
            brokers: brokers.into(),
            topic_prefix: DEFAULT_TOPIC_PREFIX.into(),
            topics: HashMap::new(),
            keys: HashMap::new(),
            flush_timeout: Duration::from_secs(10),
            transactions: true,
            transactional_id: None,
            transaction_timeout: Duration::from_secs(10),
            resume_timeout: Duration::from_secs(30),
            options: Vec::new(),
        }
    }

    /// The topic `stream` is written to.
    pub fn topic_for(&self, stream: &str) -> String {
        topic_for(&self.topics, &self.topic_prefix, stream)
    }

    /// How many rows this sink did not write because their partition already held them
    /// (written before a restart), since it was made.
    pub fn skipped_rows(&self) -> u64 {
        self.skipped_rows
    }

    /// Whether batches are written in transactions: `None` before the first write decided it,
    /// `Some(false)` where the broker has none (tansu) or they are turned off.
    pub fn uses_transactions(&self) -> Option<bool> {
        match self.delivery {
            Delivery::Undecided => None,
            Delivery::Idempotent => Some(false),
            Delivery::Transactional(_) => Some(true),
        }
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

    fn write_batch(&mut self, batch: &ResultBatch) -> Result<()> {
        let topic = self.topic_for(&batch.stream);
        self.decide_delivery(&topic);
        self.resume(&topic, &batch.stream)?;
        let Some(state) = self.state.get(&topic) else {
            return Err(Error::Resume {
                topic,
                reason: "the topic's state was lost".into(),
            });
        };
        let plan = plan_rows(self.key_spec(&batch.stream), batch, &state.tails);
        let prev = self.prev_for(batch, &state.tails);
        if let Err(e) = self.deliver(batch, &topic, &plan, prev) {
            // What reached the topic is unknown now: read it again before the next write.
            self.state.remove(&topic);
            return Err(e);
        }
        self.note_written(&topic, batch, &plan, prev);
        Ok(())
    }

    /// Reads what `topic` holds unless it was read already with `stream` among its streams.
    fn resume(&mut self, topic: &str, stream: &str) -> Result<()> {
        let known = self.state.get(topic);
        if known.is_some_and(|s| s.streams.iter().any(|s| s == stream)) {
            return Ok(());
        }
        let mut streams: Vec<String> = self
            .topics
            .iter()
            .filter(|(_, t)| t.as_str() == topic)
            .map(|(s, _)| s.clone())
            .chain(known.into_iter().flat_map(|s| s.streams.iter().cloned()))
            .chain([stream.to_string()])
            .collect();
        streams.sort();
        streams.dedup();
        let started = Instant::now();
        let tails = scan_topic(&self.scan, topic, &streams)?;
        let newest: Vec<String> = tails
            .streams()
            .map(|s| format!("{s} {}", tails.newest(s).unwrap_or_default()))
            .collect();
        tracing::info!(topic, partitions = tails.partitions(), took = ?started.elapsed(),
            newest_batches = %if newest.is_empty() { "none".into() } else { newest.join(", ") },
            "read the result topic's tail: rows already there will not be written again");
        self.state.insert(
            topic.to_string(),
            TopicState {
                tails,
                streams,
                skipped_rows: 0,
                skipped_batches: 0,
                caught_up: false,
            },
        );
        Ok(())
    }

    /// The `prev_batch` of `batch`: the one its rows already in the topic name, else the
    /// stream's batch written before it, by this sink or (after a restart) found in the topic.
    fn prev_for(&self, batch: &ResultBatch, tails: &TopicTails) -> Option<u64> {
        if let Some(prev) = tails.prev_of(&batch.stream, batch.batch) {
            return prev;
        }
        self.last_batch
            .get(&batch.stream)
            .copied()
            .filter(|&b| b < batch.batch)
            .or_else(|| tails.newest_before(&batch.stream, batch.batch))
    }

    /// Sends the rows of `plan` to be written and waits for the broker: in one transaction
    /// where there are transactions.
    fn deliver(
        &mut self,
        batch: &ResultBatch,
        topic: &str,
        plan: &[PlannedRow<'_>],
        prev: Option<u64>,
    ) -> Result<()> {
        let rows: Vec<&PlannedRow<'_>> = plan.iter().filter(|r| r.write).collect();
        if rows.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + self.flush_timeout;
        self.reset_tally();
        let (producer, transactional) = match &self.delivery {
            Delivery::Transactional(p) => (p, true),
            _ => (&self.producer, false),
        };
        let wait = Wait {
            deadline,
            flush_timeout: self.flush_timeout,
        };
        let headers = BatchHeaders::new(batch, prev);
        let result = send_in_transaction_if(producer, transactional, topic, wait, || {
            for (i, row) in rows.iter().enumerate() {
                let mut record = BaseRecord::to(topic)
                    .partition(row.partition)
                    .payload(row.payload.as_bytes())
                    .headers(headers.row(row.index));
                if let Some(key) = row.key.as_deref() {
                    record = record.key(key);
                }
                send(producer, record, wait.deadline)?;
                // Delivery reports only count failures: serve them now and then, not per row.
                if i % 1024 == 1023 {
                    producer.poll(Duration::ZERO);
                }
            }
            Ok(())
        })
        .and_then(|()| self.check_tally(topic, rows.len()));
        if result.is_err() && transactional {
            self.abandon_transaction(deadline);
        }
        result
    }

    /// Fails when the broker refused records of the batch just flushed.
    fn check_tally(&self, topic: &str, sent: usize) -> Result<()> {
        let tally = self
            .tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if tally.failed == 0 {
            return Ok(());
        }
        Err(Error::Delivery {
            topic: topic.to_string(),
            sent: sent as u64,
            failed: tally.failed,
            first_error: tally.first_error.clone().unwrap_or_default(),
        })
    }

    /// Aborts the transaction of a batch that failed; a producer that cannot abort is dropped,
    /// and the next write makes a new one (whose start aborts what is left).
    fn abandon_transaction(&mut self, deadline: Instant) {
        let Delivery::Transactional(producer) = &self.delivery else {
            return;
        };
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        if let Err(e) = producer.abort_transaction(left) {
            tracing::warn!(error = %e, "cannot abort the batch's transaction; starting over");
            self.delivery = Delivery::Undecided;
        }
    }

    /// Counts the rows skipped and notes the batch as written.
    fn note_written(
        &mut self,
        topic: &str,
        batch: &ResultBatch,
        plan: &[PlannedRow<'_>],
        prev: Option<u64>,
    ) {
        let skipped = plan.iter().filter(|r| !r.write).count() as u64;
        self.skipped_rows += skipped;
        self.last_batch.insert(batch.stream.clone(), batch.batch);
        let Some(state) = self.state.get_mut(topic) else {
            return;
        };
        state.tails.record_written(
            &batch.stream,
            batch.batch,
            prev,
            plan.iter().map(|r| r.partition),
        );
        if skipped > 0 {
            if state.skipped_rows == 0 {
                tracing::info!(topic, stream = %batch.stream, batch = batch.batch,
                    "skipping rows the topic already holds (written before a restart)");
            }
            state.skipped_rows += skipped;
            state.skipped_batches += 1;
        } else if state.skipped_rows > 0 && !state.caught_up {
            state.caught_up = true;
            tracing::info!(
                topic,
                rows = state.skipped_rows,
                batches = state.skipped_batches,
                resumed_at = batch.batch,
                "caught up: rows already in the topic were skipped"
            );
        }
    }

    /// Tries transactions once, at the first write (to `topic`).
    fn decide_delivery(&mut self, topic: &str) {
        if !matches!(self.delivery, Delivery::Undecided) {
            return;
        }
        self.delivery = match self.transactional_producer(topic) {
            Ok(producer) => {
                tracing::info!(sink = %self.name,
                    "the broker has transactions: each batch is written in one transaction");
                Delivery::Transactional(producer)
            }
            Err(why) => {
                tracing::info!(sink = %self.name, %why,
                    "no transactions: batches are written idempotently, and rows already in a \
                     topic after a restart are found by reading its tail and skipped");
                Delivery::Idempotent
            }
        };
    }

    /// A producer whose transactions are initialised and work, or why there is none.
    fn transactional_producer(&self, topic: &str) -> Result<BaseProducer<SinkContext>, String> {
        let id = self
            .transactional_id
            .as_deref()
            .ok_or("transactions are turned off")?;
        let mut config = self.config.clone();
        config.set("transactional.id", id);
        let context = SinkContext {
            tally: Arc::clone(&self.tally),
        };
        let producer: BaseProducer<SinkContext> = config
            .create_with_context(context)
            .map_err(|e| e.to_string())?;
        producer
            .init_transactions(self.transaction_timeout)
            .map_err(|e| format!("init_transactions: {e}"))?;
        probe_transaction(
            &producer,
            &self.scan.config,
            id,
            topic,
            self.transaction_timeout,
        )?;
        Ok(producer)
    }
}

/// Runs a transaction that produces nothing and is aborted, through the requests that brokers
/// without transactions refuse: `init_transactions` alone is not enough, tansu 0.6 accepts it and
/// refuses only the commit (`EndTxn`), after the batch's records went out. The transaction
/// carries an offset of the consumer group `<id>-probe` (which `AddOffsetsToTxn` and
/// `TxnOffsetCommit` send at once) and is aborted (`EndTxn`): no record is produced, and a
/// broker with transactions commits nothing (one without them may keep the offset, partition 0
/// at 0, of that group, which nobody reads).
fn probe_transaction(
    producer: &BaseProducer<SinkContext>,
    consumer_config: &ClientConfig,
    id: &str,
    topic: &str,
    timeout: Duration,
) -> Result<(), String> {
    let mut config = consumer_config.clone();
    config.set("group.id", format!("{id}-probe"));
    let consumer: BaseConsumer = config.create().map_err(|e| e.to_string())?;
    let group = consumer
        .group_metadata()
        .ok_or("the probe consumer has no group metadata")?;
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(topic, 0, Offset::Offset(0))
        .map_err(|e| e.to_string())?;
    producer
        .begin_transaction()
        .map_err(|e| format!("begin_transaction: {e}"))?;
    producer
        .send_offsets_to_transaction(&offsets, &group, timeout)
        .map_err(|e| format!("send_offsets_to_transaction: {e}"))?;
    producer
        .abort_transaction(timeout)
        .map_err(|e| format!("abort_transaction: {e}"))
}

/// Where each row of `batch` goes and whether its partition already holds it.
fn plan_rows<'a>(
    spec: &KeySpec,
    batch: &'a ResultBatch,
    tails: &TopicTails,
) -> Vec<PlannedRow<'a>> {
    batch
        .rows
        .iter()
        .enumerate()
        .map(|(index, payload)| {
            // Every row is JSON (written by the job or checked when pushed).
            let key = spec.key_of_text(payload);
            let partition = partition_of(key.as_deref(), batch.batch, index, tails.partitions());
            let held = tails.holds(&batch.stream, partition, batch.batch, index as u64);
            PlannedRow {
                index,
                payload,
                partition,
                key,
                write: !held,
            }
        })
        .collect()
}

/// How long a batch's delivery may take.
#[derive(Debug, Clone, Copy)]
struct Wait {
    deadline: Instant,
    /// The whole time allowed, for the error.
    flush_timeout: Duration,
}

/// Runs `send` and waits (until the deadline) for the broker to take what it sent: in a
/// transaction committed at the end when `transactional`, else with a flush.
fn send_in_transaction_if(
    producer: &BaseProducer<SinkContext>,
    transactional: bool,
    topic: &str,
    wait: Wait,
    send: impl FnOnce() -> Result<()>,
) -> Result<()> {
    if transactional {
        producer
            .begin_transaction()
            .map_err(|e| Error::client(format!("beginning a transaction on `{topic}`"), e))?;
    }
    send()?;
    let left = wait.deadline.saturating_duration_since(Instant::now());
    if transactional {
        return producer.commit_transaction(left).map_err(|e| {
            Error::client(format!("committing a batch's transaction on `{topic}`"), e)
        });
    }
    producer.flush(left).map_err(|_| Error::FlushTimeout {
        topic: topic.to_string(),
        pending: producer.in_flight_count(),
        timeout: wait.flush_timeout,
    })
}

/// Queues one record, waiting (until `deadline`) for room when the client's queue is full.
fn send(
    producer: &BaseProducer<SinkContext>,
    record: BaseRecord<'_, str, [u8]>,
    deadline: Instant,
) -> Result<()> {
    let mut record = record;
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((ClientError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                if Instant::now() < deadline =>
            {
                record = back;
                producer.poll(Duration::from_millis(10));
            }
            Err((e, back)) => {
                return Err(Error::client(format!("producing to `{}`", back.topic), e));
            }
        }
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
            .field("transactions", &self.uses_transactions())
            .field("skipped_rows", &self.skipped_rows)
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
        })
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

    /// Whether to write each batch in a transaction where the broker has transactions.
    /// Default = true.
    pub fn transactions(mut self, enabled: bool) -> Self {
        self.transactions = enabled;
        self
    }

    /// The transactional id. It must stay the same across restarts of a job (the restarted
    /// sink then fences its predecessor off and aborts its unfinished batch) and differ between
    /// jobs that write at the same time. Default = `clickpulse-sink-<topic prefix>`.
    pub fn transactional_id(mut self, id: impl Into<String>) -> Self {
        self.transactional_id = Some(id.into());
        self
    }

    /// How long the first write may wait for the broker to start transactions before writing
    /// without them. Default = 10 s.
    pub fn transaction_timeout(mut self, timeout: Duration) -> Self {
        self.transaction_timeout = timeout;
        self
    }

    /// How long reading a topic's tail before the first write to it may take before that write
    /// fails (and the next one reads again). Default = 30 s.
    pub fn resume_timeout(mut self, timeout: Duration) -> Self {
        self.resume_timeout = timeout;
        self
    }

    /// An extra librdkafka setting (security, compression, …), applied after clickpulse's own
    /// (`linger.ms=5`, `compression.type=lz4`, `queue.buffering.max.messages=1000000`,
    /// `batch.num.messages=100000`, `batch.size=1000000`), to the producer and to the consumer that reads
    /// topics' tails. `enable.idempotence` and `transactional.id` are refused.
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
        const RESERVED: [&str; 2] = ["enable.idempotence", "transactional.id"];
        let mut consumer = base_config(&self.brokers, "clickpulse-sink-resume");
        apply_options(&mut consumer, &self.options, &RESERVED)?;
        let mut config = base_config(&self.brokers, "clickpulse-sink");
        config
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            // A batch is queued whole, then flushed: librdkafka's default queue of 100,000
            // records made large batches wait 10 ms at a time for room (measured against tansu).
            .set("queue.buffering.max.messages", "1000000")
            .set("batch.num.messages", "100000")
            .set("batch.size", "1000000");
        apply_options(&mut config, &self.options, &RESERVED)?;
        let tally = Arc::new(Mutex::new(Tally::default()));
        let context = SinkContext {
            tally: Arc::clone(&tally),
        };
        let producer = config
            .create_with_context(context)
            .map_err(|e| Error::client("creating the result producer", e))?;
        let transactional_id = self.transactions.then(|| {
            self.transactional_id
                .unwrap_or_else(|| format!("clickpulse-sink-{}", self.topic_prefix))
        });
        Ok(KafkaSink {
            producer,
            config,
            delivery: Delivery::Undecided,
            transactional_id,
            transaction_timeout: self.transaction_timeout,
            scan: ScanSettings {
                config: consumer,
                timeout: self.resume_timeout,
                quiet: RESUME_QUIET,
            },
            tally,
            topic_prefix: self.topic_prefix,
            topics: self.topics,
            keys: self.keys,
            flush_timeout: self.flush_timeout,
            name: format!("kafka ({})", self.brokers),
            last_batch: HashMap::new(),
            state: HashMap::new(),
            skipped_rows: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::resume::{RowsHeld, Tail};
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
    fn keys_from_row_text_are_the_keys_of_the_parsed_rows() {
        let rows = [
            r#"{"url":"/a","visitor_id":"v"}"#,
            r#"{"count":3,"visitor_id":"v\"q\u00e9"}"#,
            r#" {"segment":"s","item":"i"}"#,
            r#"{"item":42}"#,
            r#"{"item":1.5e3,"x":[1,{"url":"/nested"}]}"#,
            r#"{"url":null,"item":"i"}"#,
            r#"{"url":true}"#,
            r#"{"url":{"a":1}}"#,
            r#"{"count":3}"#,
            r#"{"url":"/a","url":"/b"}"#,
            r#"["/a","v"]"#,
            r#"42"#,
            r#"not json"#,
        ];
        let fields = KeySpec::Fields(vec!["segment".into(), "count".into()]);
        for spec in [KeySpec::Auto, fields, KeySpec::None] {
            for row in rows {
                let parsed = serde_json::from_str(row).unwrap_or(Value::Null);
                assert_eq!(
                    spec.key_of_text(row),
                    spec.key_of(&parsed),
                    "{spec:?} {row}"
                );
            }
        }
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
        let err = KafkaSink::builder("h:1")
            .option("transactional.id", "mine")
            .build()
            .expect_err("reserved");
        assert!(err.to_string().contains("transactional.id"));
    }

    fn tail(batch: u64, rows: &[u64]) -> HashMap<String, Tail> {
        let rows = RowsHeld::Some(rows.iter().copied().collect());
        let tail = Tail {
            batch,
            rows,
            prev: None,
        };
        HashMap::from([("pv".to_string(), tail)])
    }

    #[test]
    fn a_re_run_skips_the_rows_their_partitions_hold() {
        let batch = ResultBatch {
            stream: "pv".into(),
            batch: 5,
            window_start_ms: None,
            window_end_ms: None,
            rows: (0..4).map(|i| json!({ "n": i })).collect::<Vec<_>>().into(),
        };
        // Partition 0 got row 1 of batch 5 before the writer stopped, partition 1 holds a newer
        // batch, partition 2 an older one.
        let tails = TopicTails::new(3, vec![tail(5, &[1]), tail(6, &[0]), tail(4, &[0])]);
        let plan = plan_rows(&KeySpec::None, &batch, &tails);
        let got: Vec<(usize, i32, bool)> = plan
            .iter()
            .map(|r| (r.index, r.partition, r.write))
            .collect();
        // Keyless rows go round robin from partition (5 + 0) mod 3 = 2.
        assert_eq!(
            got,
            [(0, 2, true), (1, 0, false), (2, 1, false), (3, 2, true)]
        );
        assert!(plan.iter().all(|r| r.key.is_none()));
        assert_eq!(plan[3].payload, r#"{"n":3}"#);
    }

    #[test]
    fn keyed_rows_go_by_their_key_and_a_fresh_topic_holds_nothing() {
        let batch = ResultBatch {
            stream: "pv".into(),
            batch: 9,
            window_start_ms: None,
            window_end_ms: None,
            rows: vec![json!({"url": "/a"}), json!({"url": "/a"}), json!({"n": 1})].into(),
        };
        let plan = plan_rows(&KeySpec::Auto, &batch, &TopicTails::new(4, Vec::new()));
        assert!(plan.iter().all(|r| r.write));
        assert_eq!(plan[0].key.as_deref(), Some("/a"));
        assert_eq!(plan[0].partition, plan[1].partition);
        assert_eq!(plan[0].partition, partition_of(Some("/a"), 0, 0, 4));
        assert_eq!(plan[2].partition, partition_of(None, 9, 2, 4));
    }
}
