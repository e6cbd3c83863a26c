//! What every Kafka client here shares: its base configuration, topic metadata, topic creation.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, ClientContext, DefaultClientContext};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::types::RDKafkaRespErr;

use super::error::{Error, Result};
use super::url::validate_topic;

/// Extra librdkafka settings (`key`, `value`) applied after clickpulse's own, so they win.
pub type ClientOptions = Vec<(String, String)>;

/// The configuration every clickpulse client starts from: the brokers, a client id, and quick
/// reconnects (a restarted broker is found again within a second).
pub(crate) fn base_config(brokers: &str, client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", client_id)
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "1000");
    config
}

/// Applies the caller's extra settings last, so that they win, except the `reserved` ones the
/// client's guarantees rest on.
///
/// # Errors
/// [`Error::Config`] naming a reserved setting found in `options`.
pub(crate) fn apply_options(
    config: &mut ClientConfig,
    options: &ClientOptions,
    reserved: &[&str],
) -> Result<()> {
    for (key, value) in options {
        if reserved.contains(&key.as_str()) {
            return Err(Error::Config {
                key: key.clone(),
                reason: "clickpulse sets this itself; its guarantees depend on it".into(),
            });
        }
        config.set(key, value);
    }
    Ok(())
}

/// Refuses an empty broker list and an invalid topic name before any client is made.
pub(crate) fn check_target(brokers: &str, topic: &str) -> Result<()> {
    if brokers.trim().is_empty() {
        return Err(Error::Config {
            key: "brokers".into(),
            reason: "the broker list is empty".into(),
        });
    }
    validate_topic(topic).map_err(|reason| Error::Config {
        key: "topic".into(),
        reason: format!("`{topic}`: {reason}"),
    })
}

/// How many partitions `topic` has, from a fresh metadata request.
///
/// # Errors
/// [`Error::TopicNotFound`] when the cluster does not know the topic; [`Error::Client`] when the
/// brokers cannot be reached within `timeout`.
pub(crate) fn partition_count<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<u32> {
    let metadata = client
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| Error::client(format!("fetching metadata of topic `{topic}`"), e))?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(Error::TopicNotFound {
            topic: topic.into(),
        });
    };
    match t.error() {
        None => {}
        Some(e) if is_unknown_topic(e) => {
            return Err(Error::TopicNotFound {
                topic: topic.into(),
            });
        }
        Some(e) => {
            return Err(Error::client(
                format!("fetching metadata of topic `{topic}`"),
                rdkafka::error::KafkaError::MetadataFetch(RDKafkaErrorCode::from(e)),
            ));
        }
    }
    if t.partitions().is_empty() {
        return Err(Error::TopicNotFound {
            topic: topic.into(),
        });
    }
    Ok(u32::try_from(t.partitions().len()).unwrap_or(u32::MAX))
}

fn is_unknown_topic(e: RDKafkaRespErr) -> bool {
    matches!(
        RDKafkaErrorCode::from(e),
        RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic
    )
}

/// Creates `topic` with `partitions` partitions (replication factor 1) unless it exists already.
/// For tests, demos and `replay` into a fresh cluster; production topics are usually made by
/// their owners with the settings they need.
///
/// # Examples
/// ```no_run
/// use std::time::Duration;
/// clickpulse_connectors::kafka::ensure_topic("127.0.0.1:9092", "clicks", 4, Duration::from_secs(10))?;
/// # Ok::<(), clickpulse_connectors::kafka::Error>(())
/// ```
///
/// # Errors
/// [`Error::Config`] for an invalid name or a partition count of 0; [`Error::Client`] when the
/// cluster refuses or cannot be reached within `timeout`. An existing topic is not an error,
/// whatever its partition count.
pub fn ensure_topic(brokers: &str, topic: &str, partitions: u32, timeout: Duration) -> Result<()> {
    check_target(brokers, topic)?;
    let count = i32::try_from(partitions)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| Error::Config {
            key: "partitions".into(),
            reason: format!("{partitions} is outside 1..=2147483647"),
        })?;
    let what = || format!("creating topic `{topic}`");
    let admin: AdminClient<DefaultClientContext> = base_config(brokers, "clickpulse-admin")
        .create()
        .map_err(|e| Error::client(what(), e))?;
    let options = AdminOptions::new().operation_timeout(Some(timeout));
    let new_topic = NewTopic::new(topic, count, TopicReplication::Fixed(1));
    let results = futures_executor::block_on(admin.create_topics([&new_topic], &options))
        .map_err(|e| Error::client(what(), e))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(Error::client(
                    what(),
                    rdkafka::error::KafkaError::AdminOp(code),
                ));
            }
        }
    }
    Ok(())
}
