//! Kafka: clicks in and results out, on rdkafka (librdkafka).
