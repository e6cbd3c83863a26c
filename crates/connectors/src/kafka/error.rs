//! The Kafka connector's errors: who must act, and whether a retry can help.

use std::time::Duration;

use rdkafka::error::{KafkaError as ClientError, RDKafkaErrorCode};

use super::url::UrlError;

/// The Kafka connector's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A Kafka connector failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `kafka://` URL that cannot be used; the operator must fix it.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// A setting that is not valid; the operator must fix the configuration.
    #[error("invalid Kafka setting `{key}`: {reason}")]
    Config {
        /// The setting.
        key: String,
        /// Why it is refused.
        reason: String,
    },
    /// The Kafka client failed while doing `what`. [`Error::is_retryable`] says whether trying
    /// again may help (a broker down or restarting) or not (bad credentials, a bad setting).
    #[error("Kafka: {what}: {source}")]
    Client {
        /// What was being done (`fetching metadata of topic clicks`, …).
        what: String,
        /// The client's error.
        #[source]
        source: ClientError,
    },
    /// The topic does not exist on the cluster; the operator must create it (for instance with
    /// [`ensure_topic`](super::ensure_topic)).
    #[error("Kafka topic `{topic}` does not exist; create it first")]
    TopicNotFound {
        /// The topic.
        topic: String,
    },
    /// The broker refused or lost records after the client's own retries.
    #[error(
        "{failed} of {sent} records to Kafka topic `{topic}` were not delivered: {first_error}"
    )]
    Delivery {
        /// The topic written to.
        topic: String,
        /// Records handed to the client.
        sent: u64,
        /// Records whose delivery failed.
        failed: u64,
        /// The first failure's reason.
        first_error: String,
    },
    /// Records were still undelivered when the flush timeout ran out: the broker is down or too
    /// slow. They may still be delivered later; retrying is safe (the producer is idempotent).
    #[error(
        "Kafka topic `{topic}`: {pending} records still undelivered after {timeout:?} \
         (broker down or slow?)"
    )]
    FlushTimeout {
        /// The topic written to.
        topic: String,
        /// Records not yet acknowledged.
        pending: i32,
        /// The timeout that ran out.
        timeout: Duration,
    },
    /// The sink could not find out which rows a result topic already holds (written before a
    /// restart), so it wrote nothing rather than risk duplicates. Retrying may help (a broker
    /// that is slow or restarting).
    #[error("Kafka topic `{topic}`: cannot tell where to resume: {reason}")]
    Resume {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
}

impl Error {
    /// Whether trying again later may succeed (a broker restart, a timeout) rather than needing
    /// an operator (a bad URL or setting, a missing topic, refused credentials).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Url(_) | Error::Config { .. } | Error::TopicNotFound { .. } => false,
            Error::Client { source, .. } => client_error_is_retryable(source),
            Error::Delivery { .. } | Error::FlushTimeout { .. } | Error::Resume { .. } => true,
        }
    }

    /// A client error while doing `what`.
    pub(crate) fn client(what: impl Into<String>, source: ClientError) -> Self {
        Error::Client {
            what: what.into(),
            source,
        }
    }
}

/// Whether a client error may go away by itself. Configuration, authentication, authorization,
/// fatal and size errors will not; network, broker and timeout errors may.
pub(crate) fn client_error_is_retryable(e: &ClientError) -> bool {
    match e {
        ClientError::ClientConfig(..)
        | ClientError::ClientCreation(_)
        | ClientError::MessageConsumptionFatal(_)
        | ClientError::Subscription(_)
        | ClientError::Nul(_) => false,
        other => other.rdkafka_error_code().is_none_or(code_is_retryable),
    }
}

fn code_is_retryable(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    !matches!(
        code,
        C::Fatal
            | C::InvalidArgument
            | C::UnknownTopic
            | C::InvalidTopic
            | C::MessageSizeTooLarge
            | C::InvalidMessageSize
            | C::TopicAuthorizationFailed
            | C::GroupAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::SaslAuthenticationFailed
            | C::Authentication
            | C::UnsupportedFeature
            | C::UnsupportedVersion
            | C::InvalidConfig
            | C::InvalidRequest
            | C::PolicyViolation
            | C::UnsupportedForMessageFormat
            | C::UnsupportedCompressionType
            | C::NotImplemented
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_trouble_is_retryable_and_bad_settings_are_not() {
        let down = Error::client(
            "fetching metadata",
            ClientError::MetadataFetch(RDKafkaErrorCode::AllBrokersDown),
        );
        assert!(down.is_retryable());
        let auth = Error::client(
            "producing",
            ClientError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed),
        );
        assert!(!auth.is_retryable());
        let missing = Error::TopicNotFound {
            topic: "clicks".into(),
        };
        assert!(!missing.is_retryable());
        assert_eq!(
            missing.to_string(),
            "Kafka topic `clicks` does not exist; create it first"
        );
    }
}
