//! clickpulse-server (work in progress)

pub mod hub;
pub mod metrics;

pub use hub::{Delivery, Hub, HubConfig, HubError, StreamInfo, StreamUpdate, Subscription};
pub use metrics::Metrics;
