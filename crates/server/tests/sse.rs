//! `GET /sse/{stream}` on a real socket.

mod common;

use common::*;
use reqwest::StatusCode;

async fn open(server: &TestServer, path: &str, last_event_id: Option<u64>) -> SseReader {
    let mut req = reqwest::Client::new().get(server.url(path));
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id.to_string());
    }
    let resp = req.send().await.expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    let ct = resp.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    SseReader::new(resp)
}

/// How many subscribers the hub counts on `stream`.
fn subscribers(server: &TestServer, stream: &str) -> usize {
    server
        .hub
        .streams()
        .into_iter()
        .find(|s| s.name == stream)
        .map(|s| s.subscribers)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_sends_snapshot_then_live_with_batch_ids() {
    let server = TestServer::start().await;
    server.publish("top_pages", 1);
    let mut sse = open(&server, "/sse/top_pages", None).await;
    let ev = sse.next().await;
    assert_eq!(ev.id.as_deref(), Some("1"));
    assert_eq!(flags(&ev.data), (1, true, false, 0));
    assert_eq!(subscribers(&server, "top_pages"), 1);
    assert_eq!(server.metrics.clients().1, 1);
    server.publish("top_pages", 2);
    let ev = sse.next().await;
    assert_eq!(ev.id.as_deref(), Some("2"));
    assert_eq!(flags(&ev.data), (2, false, false, 0));
    assert_eq!(ev.data["stream"], "top_pages");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_after_the_last_batch_seen() {
    let server = TestServer::start().await;
    for b in [1, 2, 3, 5, 6] {
        server.publish("page_views", b);
    }
    let mut sse = open(&server, "/sse/page_views", Some(2)).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let ev = sse.next().await;
        let (batch, snapshot, resync, skipped) = flags(&ev.data);
        assert!(!snapshot && !resync && skipped == 0);
        assert_eq!(ev.id, Some(batch.to_string()));
        got.push(batch);
    }
    assert_eq!(got, vec![3, 5, 6]);
    server.publish("page_views", 7);
    assert_eq!(flags(&sse.next().await.data).0, 7);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_batch_query_resumes_inclusive_and_the_header_wins() {
    let server = TestServer::start().await;
    for b in 1..=4 {
        server.publish("page_views", b);
    }
    let mut sse = open(&server, "/sse/page_views?from_batch=3", None).await;
    assert_eq!(flags(&sse.next().await.data).0, 3);
    assert_eq!(flags(&sse.next().await.data).0, 4);
    let mut sse = open(&server, "/sse/page_views?from_batch=1", Some(3)).await;
    assert_eq!(flags(&sse.next().await.data).0, 4);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_stream_is_404_and_bad_resume_points_are_400() {
    let server = TestServer::start().await;
    let resp = reqwest::get(server.url("/sse/nope"))
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .expect("reason")
            .contains("unknown stream"),
        "{body}"
    );

    let resp = reqwest::get(server.url("/sse/top_pages?from_batch=x"))
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = reqwest::Client::new()
        .get(server.url("/sse/top_pages"))
        .header("Last-Event-ID", "yesterday")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_sse_streams() {
    let server = TestServer::start().await;
    server.publish("top_pages", 1);
    let mut sse = open(&server, "/sse/top_pages", None).await;
    sse.next().await;
    // stop() waits for the graceful shutdown, which needs the SSE response to end.
    server.stop().await;
}
