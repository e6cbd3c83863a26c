//! The session over in-memory channels: protocol replies, ordering, conflation, shutdown.

use std::sync::Arc;

use futures::channel::mpsc;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::*;
use crate::hub::{HubConfig, StreamUpdate};
use crate::metrics::Metrics;

/// A session on channels: `to_server` feeds it frames, `from_server` reads what it writes.
struct Harness {
    hub: Hub,
    metrics: Arc<Metrics>,
    to_server: mpsc::UnboundedSender<ClientFrame>,
    from_server: mpsc::Receiver<Bytes>,
    stop: Option<oneshot::Sender<()>>,
    session: tokio::task::JoinHandle<SessionEnd>,
}

impl Harness {
    /// `out_buffer` is the outgoing channel's capacity: 0 makes a client that holds at most
    /// one unread message before the session's writes stall.
    fn start(out_buffer: usize) -> Self {
        let metrics = Arc::new(Metrics::new());
        let hub = Hub::new(HubConfig { history_len: 100 }, metrics.clone());
        hub.register_stream("s", vec!["n".into()]);
        let (to_server, rx) = mpsc::unbounded();
        let (tx, from_server) = mpsc::channel(out_buffer);
        let (stop, stopped) = oneshot::channel::<()>();
        let session_hub = hub.clone();
        let session = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            run_session(&session_hub, tx, rx, shutdown).await
        });
        Harness {
            hub,
            metrics,
            to_server,
            from_server,
            stop: Some(stop),
            session,
        }
    }

    fn send(&self, text: &str) {
        self.to_server
            .unbounded_send(ClientFrame::Text(text.into()))
            .expect("session alive");
    }

    async fn next(&mut self) -> Value {
        let bytes = self.from_server.next().await.expect("a message");
        serde_json::from_slice(&bytes).expect("server sends JSON")
    }

    fn publish(&self, batch: u64) {
        self.hub
            .publish(StreamUpdate::new(
                "s",
                batch,
                vec![json!({ "n": batch }).into()],
            ))
            .expect("publish");
    }
}

#[tokio::test]
async fn bad_requests_get_errors_and_the_session_goes_on() {
    let mut h = Harness::start(16);
    for (text, reason) in [
        ("not json", "invalid JSON"),
        (r#"{"op":"dance"}"#, "unknown op"),
        (
            r#"{"op":"subscribe","streams":["nope"]}"#,
            "unknown stream \"nope\"",
        ),
    ] {
        h.send(text);
        let v = h.next().await;
        assert_eq!(v["type"], "error", "{text}");
        let got = v["reason"].as_str().expect("reason");
        assert!(got.contains(reason), "{text}: {got}");
    }
    h.to_server
        .unbounded_send(ClientFrame::Binary)
        .expect("alive");
    assert_eq!(h.next().await["type"], "error");
    h.send(r#"{"op":"ping"}"#);
    assert_eq!(h.next().await, json!({"type": "pong"}));
    h.to_server
        .unbounded_send(ClientFrame::Close)
        .expect("alive");
    assert_eq!(h.session.await.expect("join"), SessionEnd::ClientClosed);
}

#[tokio::test]
async fn subscribe_acks_then_snapshot_then_live() {
    let mut h = Harness::start(16);
    h.publish(1);
    h.send(r#"{"op":"subscribe","streams":["s"]}"#);
    assert_eq!(
        h.next().await,
        json!({"type": "subscribed", "streams": ["s"], "from_batch": null})
    );
    let snap = h.next().await;
    assert_eq!(
        (snap["batch"].clone(), snap["snapshot"].clone()),
        (json!(1), json!(true))
    );
    h.publish(2);
    let live = h.next().await;
    assert_eq!(
        (live["batch"].clone(), live["snapshot"].clone()),
        (json!(2), json!(false))
    );
    h.send(r#"{"op":"unsubscribe","streams":["s"]}"#);
    assert_eq!(
        h.next().await,
        json!({"type": "unsubscribed", "streams": ["s"]})
    );
    h.publish(3);
    h.send(r#"{"op":"ping"}"#);
    assert_eq!(
        h.next().await,
        json!({"type": "pong"}),
        "no batch after unsubscribe"
    );
}

#[tokio::test]
async fn resume_replays_the_missed_batches_in_order() {
    let mut h = Harness::start(16);
    for b in 1..=5 {
        h.publish(b);
    }
    h.send(r#"{"op":"subscribe","streams":["s"],"from_batch":3}"#);
    assert_eq!(h.next().await["type"], "subscribed");
    let mut got = Vec::new();
    for _ in 3..=5 {
        got.push(h.next().await["batch"].clone());
    }
    assert_eq!(got, vec![json!(3), json!(4), json!(5)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_conflated_and_publish_never_waits() {
    let mut h = Harness::start(0);
    h.send(r#"{"op":"subscribe","streams":["s"]}"#);
    assert_eq!(h.next().await["type"], "subscribed");
    // The client reads nothing while 500 batches are published: the session stalls on its
    // first write, and every publish still returns.
    for b in 1..=500 {
        h.publish(b);
    }
    let mut received = Vec::new();
    let mut accounted = 0;
    while received.last() != Some(&500) {
        let v = h.next().await;
        let batch = v["batch"].as_u64().expect("batch");
        accounted += 1 + v["skipped"].as_u64().expect("skipped");
        if let Some(&prev) = received.last() {
            assert_eq!(
                v["skipped"].as_u64(),
                Some(batch - prev - 1),
                "skipped counts exactly the batches in between"
            );
        }
        received.push(batch);
    }
    assert_eq!(
        accounted, 500,
        "every batch delivered or counted as skipped"
    );
    assert!(
        received.len() < 500,
        "conflation happened: {} messages",
        received.len()
    );
    assert_eq!(h.metrics.conflated(), 500 - received.len() as u64);
}

#[tokio::test]
async fn shutdown_ends_the_session_and_closes_the_sink() {
    let mut h = Harness::start(16);
    h.send(r#"{"op":"ping"}"#);
    assert_eq!(h.next().await["type"], "pong");
    h.stop.take().map(|s| s.send(()));
    assert_eq!(h.session.await.expect("join"), SessionEnd::Shutdown);
    assert!(h.from_server.next().await.is_none(), "sink closed");
}
