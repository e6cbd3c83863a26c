//! `clickpulse serve --from kafka://…`: the hub fed from a job's result topics, apart from the
//! engine.
//!
//! A supervisor thread looks at the hub's subscriber counts every [`POLL_INTERVAL`] and keeps
//! one [`ResultConsumer`] running for each stream that has subscribers: started when the first
//! client subscribes, stopped when the last one leaves. (The hub has no subscribe callback;
//! polling its counts costs one short lock per stream.) Consumers publish every batch into the
//! hub with its window bounds. A consumer started again reads its catch-up records again; the
//! batches the hub already has are skipped, so a stream's history in the hub has no duplicate.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use clickpulse_connectors::ResultBatch;
use clickpulse_connectors::kafka::{ResultConsumer, StartFrom};
use clickpulse_server::{Hub, StreamInfo};

use crate::glue::update_of;
use crate::kafka::result_streams;

/// How often the supervisor compares subscriber counts with the running consumers.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How much of a result topic a consumer reads back when it starts (`--catch-up`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchUp(pub StartFrom);

impl FromStr for CatchUp {
    type Err = String;

    /// `all` (the whole topic), `0` (only new results) or a number of records per partition.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" => Ok(CatchUp(StartFrom::Beginning)),
            "0" => Ok(CatchUp(StartFrom::End)),
            n => n
                .parse::<u64>()
                .map(|n| CatchUp(StartFrom::Recent(n)))
                .map_err(|_| format!("`{s}`: expected `all` or a number of records")),
        }
    }
}

/// A running feed of one stream into the hub.
pub trait Feed {
    /// Whether it still runs (a consumer whose thread died is started again).
    fn is_running(&self) -> bool;
    /// Stops it and waits until it has stopped.
    fn stop(self);
}

impl Feed for ResultConsumer {
    fn is_running(&self) -> bool {
        ResultConsumer::is_running(self)
    }

    fn stop(self) {
        ResultConsumer::stop(self);
    }
}

/// One feed per stream with subscribers, made by `start`.
pub struct Feeds<F: Feed, S: FnMut(&str) -> anyhow::Result<F>> {
    start: S,
    streams: Vec<String>,
    running: BTreeMap<String, F>,
    /// Streams whose last start failed, so the failure is logged once, not every poll.
    failed: BTreeMap<String, String>,
}

impl<F: Feed, S: FnMut(&str) -> anyhow::Result<F>> Feeds<F, S> {
    /// Feeds for `streams` (others are left alone), none running yet.
    pub fn new(streams: Vec<String>, start: S) -> Self {
        Feeds {
            start,
            streams,
            running: BTreeMap::new(),
            failed: BTreeMap::new(),
        }
    }

    /// The streams being fed.
    #[cfg(test)]
    pub fn running(&self) -> Vec<&str> {
        self.running.keys().map(String::as_str).collect()
    }

    /// Starts a feed for every fed stream with subscribers in `infos` and stops the others.
    pub fn reconcile(&mut self, infos: &[StreamInfo]) {
        for info in infos {
            if !self.streams.contains(&info.name) {
                continue;
            }
            let wanted = info.subscribers > 0;
            let alive = self.running.get(&info.name).map(Feed::is_running);
            match (wanted, alive) {
                (true, Some(true)) | (false, None) => {}
                (true, None) => self.start(&info.name),
                (true, Some(false)) => {
                    tracing::warn!(stream = %info.name, "result consumer ended; starting it again");
                    self.stop(&info.name);
                    self.start(&info.name);
                }
                (false, Some(_)) => self.stop(&info.name),
            }
        }
    }

    /// Stops every feed.
    pub fn stop_all(&mut self) {
        for (_, feed) in std::mem::take(&mut self.running) {
            feed.stop();
        }
    }

    fn start(&mut self, stream: &str) {
        match (self.start)(stream) {
            Ok(feed) => {
                tracing::info!(stream, "first subscriber: result consumer started");
                self.failed.remove(stream);
                self.running.insert(stream.to_string(), feed);
            }
            Err(e) => {
                let message = format!("{e:#}");
                if self.failed.get(stream) != Some(&message) {
                    tracing::error!(stream, error = %message, "cannot start the result consumer; retrying");
                }
                self.failed.insert(stream.to_string(), message);
            }
        }
    }

    fn stop(&mut self, stream: &str) {
        if let Some(feed) = self.running.remove(stream) {
            feed.stop();
            tracing::info!(stream, "last subscriber left: result consumer stopped");
        }
    }
}

/// Publishes a batch read back from Kafka into the hub; batches it already has are skipped
/// (by the hub: a consumer started again reads batches the hub already has).
pub fn publish(hub: &Hub, batch: ResultBatch) {
    if let Err(e) = hub.publish(update_of(&batch)) {
        tracing::warn!(error = %e, "cannot publish a result batch");
    }
}

/// The supervisor thread; stops the consumers and ends when stopped or dropped.
pub struct Supervisor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Supervisor {
    /// Feeds `hub` from `<prefix><stream>` on `brokers`, one consumer per subscribed stream.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start(
        hub: Hub,
        brokers: String,
        prefix: String,
        catch_up: CatchUp,
    ) -> anyhow::Result<Supervisor> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let streams = result_streams().map(String::from).collect();
        let feed_hub = hub.clone();
        let start = move |stream: &str| {
            let hub = feed_hub.clone();
            let topic = format!("{prefix}{stream}");
            ResultConsumer::start(&brokers, stream, &topic, catch_up.0, move |batch| {
                publish(&hub, batch);
            })
            .with_context(|| format!("reading {topic}"))
        };
        let thread = std::thread::Builder::new()
            .name("kafka-feeds".into())
            .spawn(move || {
                let mut feeds = Feeds::new(streams, start);
                while !stopping.load(Ordering::Relaxed) {
                    feeds.reconcile(&hub.streams());
                    std::thread::sleep(POLL_INTERVAL);
                }
                feeds.stop_all();
            })
            .context("starting the Kafka feed supervisor")?;
        Ok(Supervisor {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops every consumer and waits for the supervisor to end.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.shut_down();
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use clickpulse_server::{HubConfig, Metrics, StreamUpdate};

    use super::*;

    /// A feed that records its stop in a shared log.
    struct FakeFeed {
        stream: String,
        alive: Rc<RefCell<bool>>,
        log: Rc<RefCell<Vec<String>>>,
    }

    impl Feed for FakeFeed {
        fn is_running(&self) -> bool {
            *self.alive.borrow()
        }

        fn stop(self) {
            self.log.borrow_mut().push(format!("stop {}", self.stream));
        }
    }

    fn hub() -> Hub {
        let hub = Hub::new(HubConfig::default(), Arc::new(Metrics::new()));
        crate::glue::register_streams(&hub);
        hub
    }

    #[test]
    fn a_feed_runs_exactly_while_its_stream_has_subscribers() {
        let hub = hub();
        let log = Rc::new(RefCell::new(Vec::new()));
        let alive = Rc::new(RefCell::new(true));
        let (l, a) = (Rc::clone(&log), Rc::clone(&alive));
        let mut feeds = Feeds::new(vec!["top_pages".into(), "sessions".into()], |s: &str| {
            l.borrow_mut().push(format!("start {s}"));
            Ok(FakeFeed {
                stream: s.to_string(),
                alive: Rc::clone(&a),
                log: Rc::clone(&l),
            })
        });
        feeds.reconcile(&hub.streams());
        assert!(log.borrow().is_empty(), "no subscriber, no feed");

        let first = hub.subscription();
        first.subscribe(&["top_pages".into()], Some(0)).unwrap();
        let second = hub.subscription();
        second
            .subscribe(&["top_pages".into(), "batches".into()], None)
            .unwrap();
        feeds.reconcile(&hub.streams());
        feeds.reconcile(&hub.streams());
        assert_eq!(*log.borrow(), ["start top_pages"], "one feed, started once");
        assert_eq!(feeds.running(), ["top_pages"], "`batches` is not fed");

        drop(first);
        feeds.reconcile(&hub.streams());
        assert_eq!(feeds.running(), ["top_pages"], "one subscriber is left");
        drop(second);
        feeds.reconcile(&hub.streams());
        assert_eq!(*log.borrow(), ["start top_pages", "stop top_pages"]);
        assert!(feeds.running().is_empty());
    }

    #[test]
    fn a_dead_feed_is_started_again_and_a_failed_start_is_retried() {
        let hub = hub();
        let log = Rc::new(RefCell::new(Vec::new()));
        let alive = Rc::new(RefCell::new(true));
        let fail = Rc::new(RefCell::new(true));
        let (l, a, f) = (Rc::clone(&log), Rc::clone(&alive), Rc::clone(&fail));
        let mut feeds = Feeds::new(vec!["sessions".into()], |s: &str| {
            if *f.borrow() {
                anyhow::bail!("broker unreachable");
            }
            l.borrow_mut().push(format!("start {s}"));
            Ok(FakeFeed {
                stream: s.to_string(),
                alive: Rc::clone(&a),
                log: Rc::clone(&l),
            })
        });
        let client = hub.subscription();
        client.subscribe(&["sessions".into()], None).unwrap();
        feeds.reconcile(&hub.streams());
        assert!(feeds.running().is_empty());
        *fail.borrow_mut() = false;
        feeds.reconcile(&hub.streams());
        assert_eq!(feeds.running(), ["sessions"]);
        *alive.borrow_mut() = false;
        feeds.reconcile(&hub.streams());
        assert_eq!(
            *log.borrow(),
            ["start sessions", "stop sessions", "start sessions"]
        );
        feeds.stop_all();
        assert!(feeds.running().is_empty());
    }

    #[test]
    fn batches_read_again_are_skipped_and_windows_kept() {
        let hub = hub();
        let batch = |b: u64| ResultBatch {
            stream: "top_pages".into(),
            batch: b,
            window_start_ms: Some(0),
            window_end_ms: Some(30_000),
            rows: vec![serde_json::json!({"rank": 1, "url": "/", "count": b})].into(),
        };
        publish(&hub, batch(3));
        publish(&hub, batch(4));
        publish(&hub, batch(3));
        let client = hub.subscription();
        client.subscribe(&["top_pages".into()], Some(3)).unwrap();
        let got: Vec<u64> = std::iter::from_fn(|| client.try_recv())
            .map(|d| d.batch)
            .collect();
        assert_eq!(got, [3, 4]);
        let expected =
            StreamUpdate::new("top_pages", 4, batch(4).rows.to_rows()).with_window(0, 30_000);
        assert_eq!(update_of(&batch(4)), expected);
    }

    #[test]
    fn catch_up_values() {
        assert_eq!("all".parse(), Ok(CatchUp(StartFrom::Beginning)));
        assert_eq!("0".parse(), Ok(CatchUp(StartFrom::End)));
        assert_eq!("500".parse(), Ok(CatchUp(StartFrom::Recent(500))));
        assert!("some".parse::<CatchUp>().is_err());
    }
}
