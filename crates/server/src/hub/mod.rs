//! The hub: fan-out of engine results to WebSocket and SSE clients, without sockets.
//!
//! The engine calls [`Hub::publish`] from its own threads after every micro-batch. The hub
//! serialises the update once, appends it to the stream's bounded history and offers it to every
//! subscribed client's mailbox (see [`Subscription`]). Publishing takes two short locks per
//! subscriber and never waits on a client.
//!
//! Lock order: a stream's lock, then a client's mailbox lock; never the other way round.

mod message;
mod subscription;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use clickpulse_events::JsonRow;
use serde::Serialize;

use self::message::BatchMessage;
use self::subscription::{ClientShared, Queued, Slot};
pub use self::subscription::{Delivery, Subscription};
use crate::metrics::Metrics;

/// How many messages each stream keeps for resuming clients. Default = 600.
pub const DEFAULT_HISTORY_LEN: usize = 600;

/// Hub settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Messages kept per stream for clients resuming with `from_batch` (at least 1).
    /// Default = [`DEFAULT_HISTORY_LEN`].
    pub history_len: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            history_len: DEFAULT_HISTORY_LEN,
        }
    }
}

/// One micro-batch of results of one stream, as the engine hands it to the hub.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamUpdate {
    /// The registered stream name.
    pub stream: String,
    /// The batch id; strictly increasing per stream (gaps allowed: batches without rows are
    /// usually not published).
    pub batch: u64,
    /// Start of the result's window (inclusive), ms since the epoch, if it has one.
    pub window_start_ms: Option<u64>,
    /// End of the result's window (exclusive), ms since the epoch, if it has one.
    pub window_end_ms: Option<u64>,
    /// The rows, one JSON object per row with the stream's fields.
    pub rows: Vec<JsonRow>,
}

impl StreamUpdate {
    /// An update without window bounds.
    pub fn new(stream: impl Into<String>, batch: u64, rows: Vec<JsonRow>) -> Self {
        StreamUpdate {
            stream: stream.into(),
            batch,
            window_start_ms: None,
            window_end_ms: None,
            rows,
        }
    }

    /// Sets the window bounds `[start_ms, end_ms)`.
    pub fn with_window(mut self, start_ms: u64, end_ms: u64) -> Self {
        self.window_start_ms = Some(start_ms);
        self.window_end_ms = Some(end_ms);
        self
    }
}

/// What the hub knows about a stream (the `/api/streams` entries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamInfo {
    /// The stream name.
    pub name: String,
    /// The row fields, as registered.
    pub fields: Vec<String>,
    /// The latest published batch id, `None` before the first publish.
    pub latest_batch: Option<u64>,
    /// Clients currently subscribed.
    pub subscribers: usize,
}

/// Why the hub refused a call. Both are caller bugs: retrying the same call cannot help.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The stream was never registered with [`Hub::register_stream`].
    #[error("unknown stream {0:?}")]
    UnknownStream(String),
    /// A publish whose batch id is not greater than the stream's latest one.
    #[error("stream {stream:?}: batch {batch} is not after the latest published batch {latest}")]
    StaleBatch {
        /// The stream.
        stream: String,
        /// The refused batch id.
        batch: u64,
        /// The latest batch id already published.
        latest: u64,
    },
    /// The batch's header could not be serialised (not expected: its fields are plain strings
    /// and numbers, and the rows are copied in as the text they are).
    #[error("cannot serialise the update: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// The WebSocket/SSE fan-out hub. Cheap to clone; all clones share one hub.
///
/// # Examples
/// ```
/// use std::sync::Arc;
/// use clickpulse_server::{Hub, HubConfig, Metrics, StreamUpdate};
/// use serde_json::json;
///
/// let hub = Hub::new(HubConfig::default(), Arc::new(Metrics::new()));
/// hub.register_stream("top_pages", vec!["url".into(), "count".into()]);
/// hub.publish(StreamUpdate::new("top_pages", 1, vec![json!({"url": "/", "count": 3}).into()]))?;
///
/// // A client subscribing now first gets the latest batch as a snapshot.
/// let sub = hub.subscription();
/// sub.subscribe(&["top_pages".to_string()], None)?;
/// let first = sub.try_recv().expect("snapshot");
/// assert!(first.snapshot);
/// assert_eq!(first.batch, 1);
/// # Ok::<(), clickpulse_server::HubError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

#[derive(Debug)]
struct HubInner {
    config: HubConfig,
    metrics: Arc<Metrics>,
    streams: RwLock<BTreeMap<String, Arc<StreamState>>>,
    next_client: AtomicU64,
}

#[derive(Debug)]
struct StreamState {
    name: Arc<str>,
    inner: Mutex<StreamInner>,
}

#[derive(Debug, Default)]
struct StreamInner {
    fields: Vec<String>,
    history: VecDeque<Arc<BatchMessage>>,
    /// The highest batch id dropped from `history`.
    evicted_up_to: Option<u64>,
    subscribers: HashMap<u64, Arc<ClientShared>>,
}

impl StreamState {
    fn lock(&self) -> MutexGuard<'_, StreamInner> {
        // Every mutation under this lock is completed before anything that can panic, so a
        // poisoned lock still guards consistent state.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl StreamInner {
    fn latest(&self) -> Option<&Arc<BatchMessage>> {
        self.history.back()
    }

    /// The slot a new subscriber starts with (see [`Subscription::subscribe`]).
    fn initial_slot(&self, from_batch: Option<u64>) -> Slot {
        let snapshot = |resync| {
            let backlog = self.latest().map(|msg| Queued {
                msg: msg.clone(),
                snapshot: true,
                resync,
            });
            Slot::new(backlog.into_iter().collect(), 0)
        };
        let Some(from) = from_batch else {
            return snapshot(false);
        };
        if !self.can_replay_from(from) {
            return snapshot(true);
        }
        let backlog = self
            .history
            .iter()
            .filter(|m| m.batch >= from)
            .map(|m| Queued {
                msg: m.clone(),
                snapshot: false,
                resync: false,
            })
            .collect();
        Slot::new(backlog, from)
    }

    /// Whether every batch ≥ `from` this hub published is still in the history.
    ///
    /// Batches between the last evicted one and the first retained one were never published
    /// (they had no rows), so a resume point there is exact. A resume point below the first
    /// batch this hub ever saw is not: an earlier server may have published batches there.
    fn can_replay_from(&self, from: u64) -> bool {
        match (self.history.front(), self.evicted_up_to) {
            (None, _) => true,
            (Some(first), _) if from >= first.batch => true,
            (Some(_), Some(evicted)) => from > evicted,
            (Some(_), None) => false,
        }
    }
}

impl Hub {
    /// A hub with no streams. `metrics` receives the conflation counter.
    pub fn new(config: HubConfig, metrics: Arc<Metrics>) -> Self {
        let config = HubConfig {
            history_len: config.history_len.max(1),
        };
        Hub {
            inner: Arc::new(HubInner {
                config,
                metrics,
                streams: RwLock::new(BTreeMap::new()),
                next_client: AtomicU64::new(0),
            }),
        }
    }

    /// Registers a stream with its row fields. Registering an existing stream again replaces
    /// its fields and keeps its history and subscribers.
    pub fn register_stream(&self, name: impl Into<String>, fields: Vec<String>) {
        let name = name.into();
        let mut streams = self
            .inner
            .streams
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match streams.get(&name) {
            Some(state) => state.lock().fields = fields,
            None => {
                let state = StreamState {
                    name: Arc::from(name.as_str()),
                    inner: Mutex::new(StreamInner {
                        fields,
                        ..StreamInner::default()
                    }),
                };
                streams.insert(name, Arc::new(state));
            }
        }
    }

    /// Publishes one batch of a stream to its history and to every subscriber.
    ///
    /// Never blocks on clients: a client that has not taken its previous message of this
    /// stream gets this one instead (conflation, counted in `skipped` and in
    /// [`Metrics`]' `conflated_messages_total`).
    ///
    /// # Errors
    /// [`HubError::UnknownStream`] for an unregistered stream, [`HubError::StaleBatch`] when
    /// `update.batch` is not greater than the stream's latest batch; the update is dropped.
    pub fn publish(&self, update: StreamUpdate) -> Result<(), HubError> {
        let stream = self.stream(&update.stream)?;
        let msg = BatchMessage::encode(&update)?;
        let mut inner = stream.lock();
        let latest = inner.latest().map(|m| m.batch);
        if let Some(latest) = latest.filter(|&latest| latest >= msg.batch) {
            return Err(HubError::StaleBatch {
                stream: update.stream,
                batch: msg.batch,
                latest,
            });
        }
        if inner.history.len() >= self.inner.config.history_len {
            let evicted = inner.history.pop_front().map(|m| m.batch);
            inner.evicted_up_to = evicted.or(inner.evicted_up_to);
        }
        inner.history.push_back(msg.clone());
        let conflated = inner
            .subscribers
            .values()
            .filter(|client| client.offer(&stream.name, &msg))
            .count();
        drop(inner);
        if conflated > 0 {
            self.inner.metrics.add_conflated(conflated as u64);
        }
        Ok(())
    }

    /// A new client with no subscriptions.
    pub fn subscription(&self) -> Subscription {
        let id = self.inner.next_client.fetch_add(1, Ordering::Relaxed);
        Subscription::new(self.clone(), Arc::new(ClientShared::new(id)))
    }

    /// Whether `name` is a registered stream.
    pub fn has_stream(&self, name: &str) -> bool {
        self.stream(name).is_ok()
    }

    /// Every registered stream, by name.
    pub fn streams(&self) -> Vec<StreamInfo> {
        let streams = self
            .inner
            .streams
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        streams
            .iter()
            .map(|(name, state)| {
                let inner = state.lock();
                StreamInfo {
                    name: name.clone(),
                    fields: inner.fields.clone(),
                    latest_batch: inner.latest().map(|m| m.batch),
                    subscribers: inner.subscribers.len(),
                }
            })
            .collect()
    }

    /// The hub's settings.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    fn stream(&self, name: &str) -> Result<Arc<StreamState>, HubError> {
        let streams = self
            .inner
            .streams
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        streams
            .get(name)
            .cloned()
            .ok_or_else(|| HubError::UnknownStream(name.to_owned()))
    }

    /// Subscribes `client` to `names` (all or nothing).
    fn attach(
        &self,
        client: &Arc<ClientShared>,
        names: &[String],
        from_batch: Option<u64>,
    ) -> Result<(), HubError> {
        let states = names
            .iter()
            .map(|name| self.stream(name))
            .collect::<Result<Vec<_>, _>>()?;
        for state in states {
            let mut inner = state.lock();
            client.install(&state.name, inner.initial_slot(from_batch));
            inner.subscribers.insert(client.id, client.clone());
        }
        Ok(())
    }

    /// Removes client `id` from `name`'s subscribers.
    fn detach(&self, id: u64, name: &str) {
        if let Ok(state) = self.stream(name) {
            state.lock().subscribers.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests;
