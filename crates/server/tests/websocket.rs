//! `GET /ws` on a real socket: snapshot, live, resume, resync, conflation, bad requests.

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_gets_the_snapshot_then_live_batches() {
    let server = TestServer::start().await;
    server.publish("top_pages", 1);
    server.publish("top_pages", 2);
    let mut ws = ws_connect(server.addr).await;
    ws_subscribe(&mut ws, &["top_pages"], None).await;
    let snap = ws_next(&mut ws).await;
    assert_eq!(flags(&snap), (2, true, false, 0));
    assert_eq!(snap["stream"], "top_pages");
    assert_eq!(snap["window_start_ms"], 2000);
    assert_eq!(snap["window_end_ms"], 3000);
    assert_eq!(snap["rows"], json!([{"url": "/", "count": 2}]));
    for b in 3..=5 {
        server.publish("top_pages", b);
        assert_eq!(flags(&ws_next(&mut ws).await), (b, false, false, 0));
    }
    assert_eq!(server.metrics.clients().0, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_with_from_batch_gets_exactly_the_missed_batches() {
    let server = TestServer::start().await;
    let mut ws = ws_connect(server.addr).await;
    ws_subscribe(&mut ws, &["top_pages"], None).await;
    for b in 1..=3 {
        server.publish("top_pages", b);
    }
    let mut last_seen = 0;
    while last_seen < 3 {
        last_seen = flags(&ws_next(&mut ws).await).0;
    }
    drop(ws);

    // Batches published while the client is away, some ids skipped (empty batches).
    for b in [4, 5, 7, 8] {
        server.publish("top_pages", b);
    }
    let mut ws = ws_connect(server.addr).await;
    ws_subscribe(&mut ws, &["top_pages"], Some(last_seen + 1)).await;
    server.publish("top_pages", 9);
    let mut got = Vec::new();
    while got.last() != Some(&9) {
        let (batch, snapshot, resync, skipped) = flags(&ws_next(&mut ws).await);
        assert!(!snapshot && !resync && skipped == 0);
        got.push(batch);
    }
    assert_eq!(got, vec![4, 5, 7, 8, 9], "no gap, no duplicate");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_batch_older_than_the_history_gets_a_resync_snapshot() {
    let server = TestServer::start_with(clickpulse_server::ServerConfig {
        history_len: 5,
        ..Default::default()
    })
    .await;
    for b in 1..=20 {
        server.publish("top_pages", b);
    }
    let mut ws = ws_connect(server.addr).await;
    ws_subscribe(&mut ws, &["top_pages"], Some(10)).await;
    assert_eq!(flags(&ws_next(&mut ws).await), (20, true, true, 0));
    server.publish("top_pages", 21);
    assert_eq!(flags(&ws_next(&mut ws).await), (21, false, false, 0));

    // Within the history the same request is exact.
    let mut ws = ws_connect(server.addr).await;
    ws_subscribe(&mut ws, &["top_pages"], Some(18)).await;
    let mut batches = Vec::new();
    for _ in 0..4 {
        batches.push(flags(&ws_next(&mut ws).await).0);
    }
    assert_eq!(batches, vec![18, 19, 20, 21]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_is_conflated_while_a_fast_client_gets_every_batch() {
    const BATCHES: u64 = 600;
    let server = TestServer::start().await;
    let mut slow = ws_connect_small_buffer(server.addr).await;
    ws_subscribe(&mut slow, &["top_pages"], None).await;
    let mut fast = ws_connect(server.addr).await;
    ws_subscribe(&mut fast, &["top_pages"], None).await;

    // 16 KiB per message: the slow client's socket buffers fill after a few hundred KiB.
    let filler = "x".repeat(16 * 1024);
    for b in 1..=BATCHES {
        // publish returns although the slow client reads nothing.
        server.publish_rows("top_pages", b, vec![json!({"url": filler, "count": b})]);
        let (batch, snapshot, _, skipped) = flags(&ws_next(&mut fast).await);
        assert_eq!(
            (batch, snapshot, skipped),
            (b, false, 0),
            "fast client misses nothing"
        );
    }

    // Now the slow client reads: increasing batches, each skipped count exactly the gap.
    let mut prev = 0;
    let mut received = 0;
    while prev < BATCHES {
        let (batch, _, _, skipped) = flags(&ws_next(&mut slow).await);
        assert!(batch > prev);
        assert_eq!(
            skipped,
            batch - prev - 1,
            "skipped = batches dropped before {batch}"
        );
        prev = batch;
        received += 1;
    }
    assert!(
        received < BATCHES,
        "the slow client was conflated ({received} messages)"
    );
    assert_eq!(server.metrics.conflated(), BATCHES - received);
    let text = reqwest::get(server.url("/metrics"))
        .await
        .expect("get")
        .text()
        .await
        .expect("body");
    let line = format!("clickpulse_conflated_messages_total {}", BATCHES - received);
    assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_get_errors_without_disconnecting() {
    let server = TestServer::start().await;
    let mut ws = ws_connect(server.addr).await;
    let cases = [
        ("{not json", "invalid JSON"),
        (r#"{"op":"jump"}"#, "unknown op"),
        (
            r#"{"op":"subscribe","streams":["no_such_stream"]}"#,
            "unknown stream",
        ),
        (
            r#"{"op":"subscribe","streams":"top_pages"}"#,
            "`streams` must be an array",
        ),
    ];
    for (text, reason) in cases {
        use futures::SinkExt;
        ws.send(tokio_tungstenite::tungstenite::Message::text(text))
            .await
            .expect("send");
        let v = ws_next(&mut ws).await;
        assert_eq!(v["type"], "error", "{text}");
        assert!(
            v["reason"].as_str().expect("reason").contains(reason),
            "{v}"
        );
    }
    ws_send(&mut ws, json!({"op": "ping"})).await;
    assert_eq!(ws_next(&mut ws).await, json!({"type": "pong"}));
    ws_subscribe(&mut ws, &["page_views"], None).await;
    server.publish("page_views", 1);
    assert_eq!(flags(&ws_next(&mut ws).await).0, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_websocket_sessions() {
    use futures::StreamExt;
    let server = TestServer::start().await;
    let mut ws = ws_connect(server.addr).await;
    ws_subscribe(&mut ws, &["top_pages"], None).await;
    server.stop().await;
    let end = tokio::time::timeout(HANG_GUARD, async {
        loop {
            match ws.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_)))
                | None
                | Some(Err(_)) => {
                    return;
                }
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the client sees the connection close");
}
