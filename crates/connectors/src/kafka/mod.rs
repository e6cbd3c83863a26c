//! Kafka: clicks in and results out, on [rdkafka](https://docs.rs/rdkafka) (librdkafka).
//!
//! | part | what it does |
//! |---|---|
//! | [`KafkaSource`] | a topic of click events as an engine source; offsets owned by the engine's checkpoints |
//! | [`KafkaClickWriter`] | click events into a topic (replay, load), partitioned like the embedded log |
//! | [`KafkaSink`] | result batches into one topic per stream, one record per row, exactly once across restarts |
//! | [`ResultConsumer`] | a result topic read back into [`ResultBatch`](crate::ResultBatch)es, for `serve` |
//! | [`KafkaUrl`] | `kafka://HOST:PORT[/TOPIC]` as the CLI takes it |
//! | [`ensure_topic`] | creates a topic unless it exists (tests, demos, replay into a fresh cluster) |
//! | [`record`] | how a result row is laid out as a record (value, key, headers, partition) |
//! | [`Error`] | every failure, typed, with [`Error::is_retryable`] |
//!
//! # Why librdkafka
//! It is the Kafka client the other clients are measured against: the complete protocol
//! (idempotent producer, compression, consumer groups, admin), automatic reconnection, and
//! per-partition queues, which let each engine worker read its own partitions from one shared
//! connection. The pure-Rust clients lack some of these (idempotence, partition queues) or are
//! young. The cost is a C library built from source on the first build (a few minutes).
//!
//! # Offsets
//! The engine owns the source's offsets (they are in its checkpoints): partitions are assigned
//! explicitly, never through a consumer-group subscription and its rebalances; auto-commit is
//! off; commits to the consumer group happen only so that lag tools can see progress. See
//! [`KafkaSource`].
//!
//! # Delivery
//! Producers are idempotent. The result sink puts each row in a partition that depends only on
//! the row (its key, or its place in the batch), and reads the tail of each topic's partitions
//! before its first write to it: a job restarted from a checkpoint writes its batches again,
//! and the sink skips the rows already there, so each row is in its topic once. Where the broker
//! has transactions each batch is also one transaction; tansu has none, and the tail scan alone
//! does it. See [`KafkaSink`].
//!
//! # Example
//! ```
//! use clickpulse_connectors::kafka::{KafkaUrl, KeySpec};
//!
//! let url = KafkaUrl::parse("kafka://127.0.0.1:9092/clicks")?;
//! assert_eq!((url.brokers().as_str(), url.topic()), ("127.0.0.1:9092", Some("clicks")));
//! let row = serde_json::json!({"url": "/news", "count": 3});
//! assert_eq!(KeySpec::Auto.key_of(&row).as_deref(), Some("/news"));
//! # Ok::<(), clickpulse_connectors::kafka::UrlError>(())
//! ```

mod client;
mod dead_letter;
mod error;
pub mod record;
mod result_consumer;
mod resume;
mod resume_scan;
mod sink;
mod source;
mod url;
mod writer;

pub use client::{ClientOptions, ensure_topic};
pub use dead_letter::{
    REASON_HEADER, SOURCE_OFFSET_HEADER, SOURCE_PARTITION_HEADER, SOURCE_TOPIC_HEADER,
};
pub use error::{Error, Result};
pub use result_consumer::{ResultConsumer, StartFrom};
pub use sink::{AUTO_KEY_FIELDS, DEFAULT_TOPIC_PREFIX, KafkaSink, KafkaSinkBuilder, KeySpec};
pub use source::{KafkaSource, KafkaSourceBuilder, KafkaSourceStats, decode_click};
pub use url::{DEFAULT_PORT, KafkaUrl, UrlError};
pub use writer::{KafkaClickWriter, KafkaClickWriterBuilder, ValueFormat};
