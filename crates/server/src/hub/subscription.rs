//! One client's view of the hub: a bounded mailbox with one slot per subscribed stream.
//!
//! The publisher (an engine thread) writes into the mailbox under a short lock and wakes the
//! client with a [`Notify`]; the client's task takes messages out at its own pace. Each slot
//! holds the catch-up `backlog` (the snapshot or the replayed history, bounded by the history
//! length) and at most one `pending` live message: a newer live message replaces an unsent one
//! and counts as skipped. So a client that does not read costs a bounded amount of memory and
//! never slows the publisher or the other clients.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::Notify;

use super::message::BatchMessage;
use super::{Hub, HubError};

/// A message handed to a client: one batch of one stream plus this client's flags.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The stream the batch belongs to.
    pub stream: Arc<str>,
    /// The batch id.
    pub batch: u64,
    /// `true` when this message is a snapshot (the latest batch at subscription time) rather
    /// than the successor of the previous message.
    pub snapshot: bool,
    /// `true` when the client asked to resume from a batch the hub no longer holds: this
    /// snapshot replaces whatever the client had.
    pub resync: bool,
    /// How many live batches of this stream were dropped (conflated) just before this one.
    pub skipped: u64,
    msg: Arc<BatchMessage>,
}

impl Delivery {
    /// The message as sent on the wire (a UTF-8 JSON object, see `docs/protocol.md`).
    pub fn to_json(&self) -> Bytes {
        self.msg.render(self.snapshot, self.resync, self.skipped)
    }
}

/// A catch-up message waiting in a slot's backlog.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) msg: Arc<BatchMessage>,
    pub(crate) snapshot: bool,
    pub(crate) resync: bool,
}

/// What one client holds for one stream.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// Snapshot or replayed history, sent in order before any live message.
    backlog: VecDeque<Queued>,
    /// The newest live message not yet sent.
    pending: Option<Arc<BatchMessage>>,
    /// Live messages replaced while pending since the last live message was sent.
    skipped: u64,
    /// Live messages below this batch id are not for this client (`from_batch` ahead of the
    /// hub).
    min_batch: u64,
    /// The next live message goes out as a resync snapshot: the client asked to resume from a
    /// batch the hub no longer holds while the hub held no batch to send instead (a restored
    /// stream whose retained batches were all evicted).
    resync_next: bool,
}

impl Slot {
    /// A slot that starts with `backlog` and takes live batches ≥ `min_batch`.
    pub(crate) fn new(backlog: VecDeque<Queued>, min_batch: u64) -> Self {
        Slot {
            backlog,
            min_batch,
            ..Slot::default()
        }
    }

    /// A slot with nothing to send yet whose first live message is a resync snapshot.
    pub(crate) fn resync_at_first_live() -> Self {
        Slot {
            resync_next: true,
            ..Slot::default()
        }
    }

    fn is_empty(&self) -> bool {
        self.backlog.is_empty() && self.pending.is_none()
    }
}

/// The per-client state shared between the publisher and the client's task.
#[derive(Debug)]
pub(crate) struct ClientShared {
    pub(crate) id: u64,
    mailbox: Mutex<Mailbox>,
    notify: Notify,
}

#[derive(Debug, Default)]
struct Mailbox {
    slots: HashMap<Arc<str>, Slot>,
    /// Streams whose slot is not empty, each once, in the order they will be served: a simple
    /// round robin so that one busy stream cannot starve the others.
    ready: VecDeque<Arc<str>>,
}

impl ClientShared {
    pub(crate) fn new(id: u64) -> Self {
        ClientShared {
            id,
            mailbox: Mutex::new(Mailbox::default()),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Mailbox> {
        // The mailbox holds no invariant a panic could break halfway, so a poisoned lock is
        // still usable.
        self.mailbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Installs (or replaces) the slot for `stream`. Called under the stream's lock so that
    /// no live message can fall between the backlog and the first live message.
    pub(crate) fn install(&self, stream: &Arc<str>, slot: Slot) {
        self.put(stream, slot, true);
    }

    /// Replaces the slot for `stream` if the client still has one (a restore giving an early
    /// subscriber the history it asked for). Called under the stream's lock, like
    /// [`ClientShared::install`].
    pub(crate) fn reinstall(&self, stream: &Arc<str>, slot: Slot) {
        self.put(stream, slot, false);
    }

    /// Puts `slot` in place of `stream`'s; without `create`, only where there is one.
    fn put(&self, stream: &Arc<str>, slot: Slot, create: bool) {
        let mut mb = self.lock();
        if !create && !mb.slots.contains_key(stream) {
            return;
        }
        mb.ready.retain(|s| s != stream);
        let has_backlog = !slot.is_empty();
        mb.slots.insert(stream.clone(), slot);
        if has_backlog {
            mb.ready.push_back(stream.clone());
            drop(mb);
            self.notify.notify_one();
        }
    }

    /// Removes the slot for `stream`; returns whether there was one.
    pub(crate) fn remove(&self, stream: &str) -> bool {
        let mut mb = self.lock();
        mb.ready.retain(|s| &**s != stream);
        mb.slots.remove(stream).is_some()
    }

    /// Offers a live message. Returns `true` when it replaced an unsent one (conflation).
    pub(crate) fn offer(&self, stream: &Arc<str>, msg: &Arc<BatchMessage>) -> bool {
        let mut guard = self.lock();
        let mb = &mut *guard;
        let Some(slot) = mb.slots.get_mut(stream) else {
            return false;
        };
        if msg.batch < slot.min_batch {
            return false;
        }
        let was_empty = slot.is_empty();
        let replaced = slot.pending.replace(msg.clone()).is_some();
        if replaced {
            slot.skipped += 1;
        }
        if was_empty {
            mb.ready.push_back(stream.clone());
            drop(guard);
            self.notify.notify_one();
        }
        replaced
    }

    /// Takes the next message, if any.
    fn take(&self) -> Option<Delivery> {
        let mut guard = self.lock();
        let mb = &mut *guard;
        while let Some(stream) = mb.ready.pop_front() {
            let Some(slot) = mb.slots.get_mut(&stream) else {
                continue;
            };
            let Some(delivery) = take_from_slot(&stream, slot) else {
                continue;
            };
            if !slot.is_empty() {
                mb.ready.push_back(stream);
            }
            return Some(delivery);
        }
        None
    }

    /// The streams this client is subscribed to.
    pub(crate) fn streams(&self) -> Vec<Arc<str>> {
        self.lock().slots.keys().cloned().collect()
    }
}

fn take_from_slot(stream: &Arc<str>, slot: &mut Slot) -> Option<Delivery> {
    if let Some(q) = slot.backlog.pop_front() {
        return Some(Delivery {
            stream: stream.clone(),
            batch: q.msg.batch,
            snapshot: q.snapshot,
            resync: q.resync,
            skipped: 0,
            msg: q.msg,
        });
    }
    let msg = slot.pending.take()?;
    let skipped = std::mem::take(&mut slot.skipped);
    // A resync replaces whatever the client had: nothing before it counts as skipped.
    let resync = std::mem::take(&mut slot.resync_next);
    Some(Delivery {
        stream: stream.clone(),
        batch: msg.batch,
        snapshot: resync,
        resync,
        skipped: if resync { 0 } else { skipped },
        msg,
    })
}

/// One client's subscriptions (a WebSocket connection, an SSE response, a test).
///
/// Created by [`Hub::subscription`]; dropping it detaches the client from every stream.
///
/// # Examples
/// ```
/// use std::sync::Arc;
/// use clickpulse_server::{Hub, HubConfig, Metrics, StreamUpdate};
///
/// let hub = Hub::new(HubConfig::default(), Arc::new(Metrics::new()));
/// hub.register_stream("page_views", vec!["url".into(), "count".into()]);
/// let sub = hub.subscription();
/// sub.subscribe(&["page_views".to_string()], None)?;
/// hub.publish(StreamUpdate::new("page_views", 1, vec![serde_json::json!({"url": "/", "count": 1}).into()]))?;
/// let d = sub.try_recv().expect("a live batch");
/// assert_eq!((d.batch, d.snapshot, d.skipped), (1, false, 0));
/// # Ok::<(), clickpulse_server::HubError>(())
/// ```
#[derive(Debug)]
pub struct Subscription {
    hub: Hub,
    client: Arc<ClientShared>,
}

impl Subscription {
    pub(crate) fn new(hub: Hub, client: Arc<ClientShared>) -> Self {
        Subscription { hub, client }
    }

    /// Subscribes to `streams`.
    ///
    /// With `from_batch: None` the client first gets the latest batch of each stream (flagged
    /// `snapshot`), then every new batch. With `Some(n)` it gets exactly the retained batches
    /// with id ≥ `n` in order, then every new batch; when batches ≥ `n` have already left the
    /// history it gets the latest batch flagged `snapshot` and `resync` instead (or, when the
    /// hub holds no batch of the stream, as after a restore whose batches had all been evicted,
    /// the next batch published, flagged so). Subscribing again to a stream restarts it with
    /// the new rule. A subscription made before [`Hub::restore`] gets what it would have got
    /// subscribing after it.
    ///
    /// # Errors
    /// [`HubError::UnknownStream`] naming the first stream that is not registered; nothing is
    /// subscribed then.
    pub fn subscribe(&self, streams: &[String], from_batch: Option<u64>) -> Result<(), HubError> {
        self.hub.attach(&self.client, streams, from_batch)
    }

    /// Unsubscribes from `streams`; unknown or unsubscribed names are ignored. Messages of
    /// these streams not yet taken are dropped.
    pub fn unsubscribe(&self, streams: &[String]) {
        for stream in streams {
            if self.client.remove(stream) {
                self.hub.detach(self.client.id, stream);
            }
        }
    }

    /// The next message if one is waiting.
    pub fn try_recv(&self) -> Option<Delivery> {
        self.client.take()
    }

    /// Waits for the next message.
    ///
    /// Cancel safe: a message is taken from the mailbox only in the poll that returns it.
    pub async fn recv(&self) -> Delivery {
        loop {
            if let Some(d) = self.client.take() {
                return d;
            }
            // `notify_one` stores a permit when nobody waits, so a message offered between
            // `take` and this line still wakes us.
            self.client.notify.notified().await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        for stream in self.client.streams() {
            self.hub.detach(self.client.id, &stream);
        }
    }
}
