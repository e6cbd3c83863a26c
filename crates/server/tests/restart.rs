//! A server restarted with its hub restored from a snapshot, on real sockets: clients that
//! resume with `Last-Event-ID` or `from_batch` get every batch once, in order, while the
//! restarted job publishes again the batches after its checkpoint.

mod common;

use common::*;
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_resuming_after_a_restart_get_every_batch_once_in_order() {
    let first = TestServer::start().await;
    for b in 1..=6 {
        first.publish("top_pages", b);
    }
    // The checkpoint of batch 4; 5 and 6 were published (and seen) after it.
    let saved = first.hub.snapshot(4).expect("snapshot");
    first.stop().await;

    let second = TestServer::start().await;
    second.hub.restore(&saved).expect("restore");
    // An SSE client that had seen batch 2 reconnects before the job publishes anything.
    let resp = reqwest::Client::new()
        .get(second.url("/sse/top_pages"))
        .header("Last-Event-ID", "2")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut sse = SseReader::new(resp);
    let mut sse_got = Vec::new();
    for _ in 0..2 {
        sse_got.push(flags(&sse.next().await.data));
    }
    // A WebSocket client that had seen batch 6.
    let mut ws = ws_connect(second.addr).await;
    ws_subscribe(&mut ws, &["top_pages"], Some(7)).await;

    // The job re-runs 5 and 6 (the hub already has 4 and skips it), then goes on.
    let mut ws_got = Vec::new();
    for b in 4..=8 {
        second.publish("top_pages", b);
        if b >= 5 {
            sse_got.push(flags(&sse.next().await.data));
        }
        if b >= 7 {
            ws_got.push(flags(&ws_next(&mut ws).await));
        }
    }
    let plain = |batches: std::ops::RangeInclusive<u64>| -> Vec<(u64, bool, bool, u64)> {
        batches.map(|b| (b, false, false, 0)).collect()
    };
    assert_eq!(sse_got, plain(3..=8), "no gap, no repeat");
    assert_eq!(ws_got, plain(7..=8), "no gap, no repeat");
    second.stop().await;
}
