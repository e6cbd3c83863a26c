//! The hub: fan-out of engine results to WebSocket and SSE clients, without sockets.
//!
//! The engine calls [`Hub::publish`] from its own threads after every micro-batch. The hub
//! serialises the update once, appends it to the stream's bounded history and offers it to every
//! subscribed client's mailbox (see [`Subscription`]). Publishing takes two short locks per
//! subscriber and never waits on a client. A batch id the stream has already published is
//! ignored, so a job that re-runs batches after a restart does not deliver them twice.
//!
//! Across restarts the history travels in the job's checkpoints: [`Hub::snapshot`] writes it as
//! JSON (the format is in `snapshot.rs`) and [`Hub::restore`] reads it back into the new
//! process's hub, so that clients resuming with `from_batch` or `Last-Event-ID` get every batch
//! once, in order.
//!
//! The hub is also where the embedding program attaches the job the server controls
//! ([`Hub::set_job_control`]): it is the one object the job and the server both hold.
//!
//! Lock order: the stream map, then a stream's lock, then a client's mailbox lock; never the
//! other way round. Only [`Hub::restore`] holds several streams' locks at once.

mod message;
mod snapshot;
mod subscription;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use clickpulse_events::JsonRow;
use serde::Serialize;

use self::message::BatchMessage;
use self::subscription::{ClientShared, Queued, Slot};
pub use self::subscription::{Delivery, Subscription};
use crate::job::{JobControl, JobSlot};
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
    /// usually not published). [`Hub::publish`] ignores an id the stream has already passed.
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

/// Why the hub refused a call. None is helped by retrying the same call.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The stream was never registered with [`Hub::register_stream`]: a caller bug, or a client
    /// naming a stream that does not exist.
    #[error("unknown stream {0:?}")]
    UnknownStream(String),
    /// [`Hub::restore`] was given text that is not a snapshot this version of
    /// [`Hub::snapshot`] writes (the message says what is wrong): the checkpoint's extra state
    /// is damaged or from a newer version. The hub is unchanged; the caller can go on without
    /// the old history.
    #[error("malformed hub snapshot: {0}")]
    BadSnapshot(String),
    /// [`Hub::restore`] was called after the named stream had published: a caller bug
    /// (restore before the job publishes). The hub is unchanged.
    #[error("cannot restore stream {0:?}: it has published batches already")]
    RestoreAfterPublish(String),
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
    job: JobSlot,
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
    /// The highest batch id dropped from `history` (or, after a restore, up to which batches
    /// may be missing: see `snapshot.rs`).
    evicted_up_to: Option<u64>,
    subscribers: HashMap<u64, Subscriber>,
}

/// A client subscribed to a stream, with the resume point it asked for.
#[derive(Debug)]
struct Subscriber {
    client: Arc<ClientShared>,
    /// `from_batch` of the subscription, so that a restore can give the client the history
    /// it asked for.
    from_batch: Option<u64>,
}

impl StreamState {
    fn new(name: &str, fields: Vec<String>) -> Self {
        StreamState {
            name: Arc::from(name),
            inner: Mutex::new(StreamInner {
                fields,
                ..StreamInner::default()
            }),
        }
    }

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

    /// The highest batch id this stream has published (or, restored, may have published):
    /// [`Hub::publish`] ignores ids up to it.
    fn last_published(&self) -> Option<u64> {
        self.latest().map(|m| m.batch).or(self.evicted_up_to)
    }

    /// The slot a new subscriber starts with (see [`Subscription::subscribe`]).
    fn initial_slot(&self, from_batch: Option<u64>) -> Slot {
        match from_batch {
            None => self.snapshot_slot(false),
            Some(from) if self.can_replay_from(from) => self.replay_slot(from),
            Some(_) => self.snapshot_slot(true),
        }
    }

    /// The latest batch flagged `snapshot` (and `resync`), then live batches.
    fn snapshot_slot(&self, resync: bool) -> Slot {
        match self.latest() {
            Some(msg) => {
                let snapshot = Queued {
                    msg: msg.clone(),
                    snapshot: true,
                    resync,
                };
                Slot::new(VecDeque::from([snapshot]), 0)
            }
            // Batches the client wants are gone and there is none to send instead: the next
            // live batch carries the resync.
            None if resync => Slot::resync_at_first_live(),
            None => Slot::new(VecDeque::new(), 0),
        }
    }

    /// The retained batches ≥ `from`, then live batches ≥ `from`.
    fn replay_slot(&self, from: u64) -> Slot {
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
    ///
    /// A stream that has published nothing has nothing to replay: any resume point is exact,
    /// unless a restore said that batches up to `evicted_up_to` may be missing.
    fn can_replay_from(&self, from: u64) -> bool {
        match (self.history.front(), self.evicted_up_to) {
            (Some(first), _) if from >= first.batch => true,
            (_, Some(evicted)) => from > evicted,
            (None, None) => true,
            (Some(_), None) => false,
        }
    }

    /// Gives every subscriber the slot it would have had subscribing now (after a restore
    /// filled the history it subscribed to while empty).
    fn reinstall_subscribers(&self, name: &Arc<str>) {
        for sub in self.subscribers.values() {
            sub.client
                .reinstall(name, self.initial_slot(sub.from_batch));
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
                job: JobSlot::default(),
            }),
        }
    }

    /// Registers a stream with its row fields. Registering an existing stream again replaces
    /// its fields and keeps its history and subscribers.
    pub fn register_stream(&self, name: impl Into<String>, fields: Vec<String>) {
        let name = name.into();
        let mut streams = self.streams_mut();
        match streams.get(&name) {
            Some(state) => state.lock().fields = fields,
            None => {
                let state = Arc::new(StreamState::new(&name, fields));
                streams.insert(name, state);
            }
        }
    }

    /// Publishes one batch of a stream to its history and to every subscriber.
    ///
    /// Never blocks on clients: a client that has not taken its previous message of this
    /// stream gets this one instead (conflation, counted in `skipped` and in
    /// [`Metrics`]' `conflated_messages_total`).
    ///
    /// Idempotent by (stream, batch id): a batch whose id is not greater than the stream's
    /// latest published one (restored ones included) is ignored, with a debug log. A job
    /// re-running batches after a restart can therefore publish them all again.
    ///
    /// # Errors
    /// [`HubError::UnknownStream`] for an unregistered stream; [`HubError::Serialize`] (not
    /// expected) when the header cannot be serialised. The update is dropped.
    pub fn publish(&self, update: StreamUpdate) -> Result<(), HubError> {
        let stream = self.stream(&update.stream)?;
        let msg = BatchMessage::encode(&update)?;
        let mut inner = stream.lock();
        if let Some(latest) = inner.last_published().filter(|&l| l >= msg.batch) {
            tracing::debug!(
                stream = %stream.name,
                batch = msg.batch,
                latest,
                "batch already published: ignored"
            );
            return Ok(());
        }
        if inner.history.len() >= self.inner.config.history_len {
            let evicted = inner.history.pop_front().map(|m| m.batch);
            inner.evicted_up_to = evicted.or(inner.evicted_up_to);
        }
        inner.history.push_back(msg.clone());
        let conflated = inner
            .subscribers
            .values()
            .filter(|sub| sub.client.offer(&stream.name, &msg))
            .count();
        drop(inner);
        if conflated > 0 {
            self.inner.metrics.add_conflated(conflated as u64);
        }
        Ok(())
    }

    /// The retained history of every stream up to batch `up_to_batch`, as JSON text for a
    /// checkpoint; [`Hub::restore`] reads it back. The format is written down in the hub's
    /// `snapshot.rs`.
    ///
    /// Only batches ≤ `up_to_batch` are kept, since a checkpoint of that batch covers exactly
    /// those: a restarted job publishes the later ones again. Each stream also keeps the id up
    /// to which batches may be missing (evicted from the history), so that resume requests
    /// stay exact or resync as they would have in this process. Takes each stream's lock in
    /// turn, briefly; safe to call from any thread while the job publishes.
    ///
    /// # Examples
    /// ```
    /// use std::sync::Arc;
    /// use clickpulse_server::{Hub, HubConfig, Metrics, StreamUpdate};
    /// use serde_json::json;
    ///
    /// let hub = Hub::new(HubConfig::default(), Arc::new(Metrics::new()));
    /// hub.register_stream("page_views", vec!["url".into(), "count".into()]);
    /// for batch in 1..=3 {
    ///     let rows = vec![json!({"url": "/", "count": batch}).into()];
    ///     hub.publish(StreamUpdate::new("page_views", batch, rows))?;
    /// }
    /// // The checkpoint of batch 2; batch 3 is published again by the restarted job.
    /// let saved = hub.snapshot(2)?;
    ///
    /// let restarted = Hub::new(HubConfig::default(), Arc::new(Metrics::new()));
    /// restarted.restore(&saved)?;
    /// restarted.publish(StreamUpdate::new("page_views", 2, vec![]))?; // already there: ignored
    /// restarted.publish(StreamUpdate::new("page_views", 3, vec![json!({"url": "/", "count": 3}).into()]))?;
    ///
    /// let client = restarted.subscription();
    /// client.subscribe(&["page_views".to_string()], Some(1))?;
    /// let got: Vec<u64> = std::iter::from_fn(|| client.try_recv()).map(|d| d.batch).collect();
    /// assert_eq!(got, [1, 2, 3]);
    /// # Ok::<(), clickpulse_server::HubError>(())
    /// ```
    ///
    /// # Errors
    /// [`HubError::Serialize`], not expected: a snapshot holds strings, numbers and messages
    /// the hub wrote as JSON.
    pub fn snapshot(&self, up_to_batch: u64) -> Result<String, HubError> {
        let copies: Vec<_> = self
            .streams_ref()
            .iter()
            .map(|(name, state)| state.lock().copy_up_to(name, up_to_batch))
            .collect();
        snapshot::write(up_to_batch, &copies)
    }

    /// Restores the history a [`Hub::snapshot`] wrote. Call it before the job publishes
    /// anything; clients may already be subscribed (a browser reconnecting as soon as the
    /// server is up): each gets what it asked for, as if it had subscribed after the restore.
    ///
    /// A stream of the snapshot that is not registered is registered with the snapshot's
    /// fields; a registered one keeps its fields. Streams the snapshot does not name are left
    /// alone. At most [`HubConfig::history_len`] batches per stream are kept, the newest.
    ///
    /// # Errors
    /// [`HubError::BadSnapshot`] naming what is wrong with the text,
    /// [`HubError::RestoreAfterPublish`] when a stream of the snapshot has published already.
    /// Either way the hub is left as it was.
    pub fn restore(&self, snapshot: &str) -> Result<(), HubError> {
        let restored = snapshot::read(snapshot, self.inner.config.history_len)?;
        let mut streams = self.streams_mut();
        let states: Vec<(Arc<StreamState>, bool)> = restored
            .iter()
            .map(|r| match streams.get(&r.name) {
                Some(state) => (state.clone(), false),
                None => (Arc::new(StreamState::new(&r.name, r.fields.clone())), true),
            })
            .collect();
        let mut guards: Vec<_> = states.iter().map(|(state, _)| state.lock()).collect();
        let published = restored
            .iter()
            .zip(&guards)
            .find(|(_, g)| g.last_published().is_some());
        if let Some((r, _)) = published {
            return Err(HubError::RestoreAfterPublish(r.name.clone()));
        }
        for ((r, (state, new)), inner) in restored.into_iter().zip(&states).zip(&mut guards) {
            inner.history = r.history;
            inner.evicted_up_to = r.evicted_up_to;
            inner.reinstall_subscribers(&state.name);
            if *new {
                streams.insert(r.name, state.clone());
            }
        }
        Ok(())
    }

    /// Attaches the job this server runs, for `GET /api/job`, `POST /api/job/stop` and
    /// `POST /api/job/checkpoint`; replaces a job attached before. Without one those routes
    /// answer 404.
    ///
    /// The hub holds `job` until [`Hub::clear_job_control`] or until the hub's last clone is
    /// dropped: `job` should not hold this hub (or anything holding it), or neither is ever
    /// freed.
    pub fn set_job_control(&self, job: Arc<dyn JobControl>) {
        self.inner.job.set(Some(job));
    }

    /// Detaches the job (it has ended): the job routes answer 404 again.
    pub fn clear_job_control(&self) {
        self.inner.job.set(None);
    }

    /// The attached job, if any.
    pub fn job_control(&self) -> Option<Arc<dyn JobControl>> {
        self.inner.job.get()
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
        self.streams_ref()
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

    // The stream map is changed only by inserting complete entries, so a poisoned lock still
    // guards a consistent map.
    fn streams_ref(&self) -> RwLockReadGuard<'_, BTreeMap<String, Arc<StreamState>>> {
        self.inner
            .streams
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn streams_mut(&self) -> RwLockWriteGuard<'_, BTreeMap<String, Arc<StreamState>>> {
        self.inner
            .streams
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn stream(&self, name: &str) -> Result<Arc<StreamState>, HubError> {
        self.streams_ref()
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
            let sub = Subscriber {
                client: client.clone(),
                from_batch,
            };
            inner.subscribers.insert(client.id, sub);
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
