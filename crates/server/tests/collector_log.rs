//! The collector on the real embedded log (fsync every batch) in a temp dir.

mod common;

use std::sync::Arc;

use clickpulse_events::partition_for;
use clickpulse_events::{ClickEvent, binary};
use clickpulse_log::{Durability, Log, LogOptions};
use clickpulse_server::collector::LogAppender;
use clickpulse_server::{MemoryAppender, ServerConfig};
use common::*;
use reqwest::StatusCode;

const PARTITIONS: u32 = 4;

fn read_all(dir: &std::path::Path) -> Vec<ClickEvent> {
    let log = Log::open(dir, LogOptions::default().read_only(true)).expect("open read-only");
    let topic = log.topic("clicks").expect("topic");
    let mut events = Vec::new();
    for p in 0..PARTITIONS {
        let mut reader = topic.reader(p, 0).expect("reader");
        loop {
            let records = reader.poll(10_000).expect("poll");
            if records.is_empty() {
                break;
            }
            for r in records.iter() {
                let event = binary::decode(r.value).expect("decodes");
                assert_eq!(partition_for(&event.visitor_id, PARTITIONS), p);
                events.push(event);
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collected_events_are_in_the_log_when_the_reply_arrives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(
        dir.path(),
        LogOptions::default().durability(Durability::EveryBatch),
    )
    .expect("open");
    let sink = Arc::new(LogAppender::open(&log, "clicks", PARTITIONS).expect("topic"));
    let server = TestServer::start_full(
        ServerConfig::default(),
        sink,
        Arc::new(MemoryAppender::new()),
    )
    .await;

    let client = reqwest::Client::new();
    let requests = (0..40).map(|i| {
        let (client, url) = (client.clone(), server.url("/collect"));
        async move {
            let body = (0..25)
                .map(|j| format!(r#"{{"ts_ms":{j},"visitor_id":"v{}","url":"/r{i}"}}"#, j % 9))
                .collect::<Vec<_>>()
                .join("\n");
            let resp = client
                .post(url)
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await
                .expect("request");
            assert_eq!(resp.status(), StatusCode::OK);
        }
    });
    futures::future::join_all(requests).await;
    // Replies arrived: a separate read-only handle must see every event now.
    let events = read_all(dir.path());
    assert_eq!(events.len(), 1000);
    for i in 0..40 {
        let url = format!("/r{i}");
        let mut mine: Vec<&ClickEvent> = events.iter().filter(|e| e.url == url).collect();
        assert_eq!(mine.len(), 25);
        mine.sort_by_key(|e| e.ts_ms);
        assert!(mine.iter().enumerate().all(|(j, e)| e.ts_ms == j as u64));
    }
    // A visitor's events of one request keep their order within its partition.
    for v in 0..9 {
        let visitor = format!("v{v}");
        for i in 0..40 {
            let url = format!("/r{i}");
            let ts: Vec<u64> = events
                .iter()
                .filter(|e| e.visitor_id == visitor && e.url == url)
                .map(|e| e.ts_ms)
                .collect();
            assert!(
                ts.windows(2).all(|w| w[0] < w[1]),
                "{visitor} {url}: {ts:?}"
            );
        }
    }

    let resp = reqwest::get(server.url("/p.gif?url=/pixel&visitor_id=vp"))
        .await
        .expect("pixel");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        read_all(dir.path())
            .iter()
            .any(|e| e.url == "/pixel" && e.visitor_id == "vp")
    );
    server.stop().await;
}
