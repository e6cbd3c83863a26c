//! The talk's pipeline end to end, through the real `clickpulse` binary and a real
//! Kafka-protocol broker (tansu):
//!
//! MSNBC clicks (NDJSON) → `replay --to kafka://…/clicks` → `run --input-kafka … --output-kafka …`
//! → result topics → `serve --from kafka://…` → a WebSocket client;
//!
//! and the same file through the embedded log (`replay --log`, `run --log`), whose results must
//! be the same, stream by stream. Skipped (and says so) without tansu, except under `CI=true`.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clickpulse_connectors::kafka::{ResultConsumer, StartFrom};
use clickpulse_events::msnbc;
use clickpulse_job::STREAMS;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use common::{
    Broker, Running, all_streams, batchless_sorted, clickpulse, free_port, jsonl_rows, run_ok,
    without_batch,
};

/// How many canonical MSNBC events the test replays.
const EVENTS: usize = 30_000;

/// The first `n` events of the canonical MSNBC replay as NDJSON.
fn write_msnbc_slice(path: &Path, n: usize) {
    let stream = msnbc::load(msnbc::default_msnbc_path()).unwrap();
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for event in stream.iter().take(n) {
        serde_json::to_writer(&mut out, &event).unwrap();
        out.write_all(b"\n").unwrap();
    }
    out.flush().unwrap();
}

/// The `--json` summary a `run` printed last.
fn run_summary(stdout: &[u8]) -> Value {
    let text = String::from_utf8_lossy(stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("summary `{line}`: {e}"))
}

#[test]
fn msnbc_through_kafka_equals_the_embedded_log_and_reaches_websocket_clients() {
    let Some(broker) = Broker::start("kafka_pipeline") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let clicks = dir.path().join("clicks.ndjson");
    write_msnbc_slice(&clicks, EVENTS);
    let (kafka_out, log_out) = (dir.path().join("out-kafka"), dir.path().join("out-log"));
    let input = format!("{}/clicks", broker.url());

    let replayed = run_ok(
        clickpulse()
            .arg("replay")
            .arg("--input")
            .arg(&clicks)
            .args(["--to", &input, "--partitions", "4"])
            .current_dir(dir.path()),
    );
    let said = String::from_utf8_lossy(&replayed.stdout);
    assert!(
        said.contains(&format!(
            "replayed {EVENTS} events into {input} (4 partitions)"
        )),
        "{said}"
    );
    let kafka_run = run_ok(
        clickpulse()
            .args(["run", "--until-end", "--json", "--input-kafka", &input])
            .args(["--output-kafka", &broker.url()])
            .arg("--output-dir")
            .arg(&kafka_out)
            .current_dir(dir.path()),
    );
    assert_eq!(run_summary(&kafka_run.stdout)["events"], EVENTS);

    let log = dir.path().join("log");
    run_ok(
        clickpulse()
            .arg("replay")
            .arg("--input")
            .arg(&clicks)
            .arg("--log")
            .arg(&log)
            .args(["--partitions", "4", "--durability", "none"])
            .current_dir(dir.path()),
    );
    let log_run = run_ok(
        clickpulse()
            .args(["run", "--until-end", "--json", "--log"])
            .arg(&log)
            .arg("--output-dir")
            .arg(&log_out)
            .current_dir(dir.path()),
    );
    assert_eq!(run_summary(&log_run.stdout)["events"], EVENTS);

    for stream in all_streams() {
        let from_kafka = jsonl_rows(&kafka_out, stream);
        let from_log = jsonl_rows(&log_out, stream);
        if STREAMS.contains(&stream) {
            assert!(!from_log.is_empty(), "{stream}: no rows at all");
        }
        assert_eq!(
            batchless_sorted(&from_kafka),
            batchless_sorted(&from_log),
            "{stream}: Kafka and embedded-log runs differ"
        );
    }

    every_result_topic_holds_what_the_run_wrote(&broker.brokers(), &kafka_out);
    serve_from_kafka_feeds_websocket_clients(&broker, dir.path(), &kafka_out);
}

/// Reads each stream's result topic back (all at once) and compares it with the run's JSONL
/// files, batch ids included.
fn every_result_topic_holds_what_the_run_wrote(brokers: &str, written: &Path) {
    let readers: Vec<_> = all_streams()
        .into_iter()
        .map(|stream| {
            let got = Arc::new(Mutex::new(Vec::new()));
            let sink = Arc::clone(&got);
            let topic = format!("clickpulse.{stream}");
            let consumer = ResultConsumer::start(brokers, stream, &topic, StartFrom::Beginning, {
                move |batch| {
                    let mut rows = sink.lock().unwrap();
                    for mut row in batch.rows.to_values() {
                        row.as_object_mut()
                            .unwrap()
                            .insert("batch".into(), json!(batch.batch));
                        rows.push(row);
                    }
                }
            })
            .unwrap();
            (topic, jsonl_rows(written, stream), got, consumer)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let all_in = || {
        readers
            .iter()
            .all(|(_, expected, got, _)| got.lock().unwrap().len() >= expected.len())
    };
    while !all_in() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Anything beyond the expected rows would come in within the idle timeout (1 s).
    std::thread::sleep(Duration::from_millis(1200));
    for (topic, expected, got, consumer) in readers {
        consumer.stop();
        let got = got.lock().unwrap().clone();
        assert_eq!(
            got.iter().map(Value::to_string).collect::<Vec<_>>(),
            expected.iter().map(Value::to_string).collect::<Vec<_>>(),
            "{topic}"
        );
    }
}

/// `serve --from`: a WebSocket client subscribing to `top_pages` from batch 0 gets the batches
/// the Kafka run wrote, with their window bounds; the stream's consumer starts with the first
/// subscriber and stops when it leaves.
fn serve_from_kafka_feeds_websocket_clients(broker: &Broker, dir: &Path, written: &Path) {
    let expected = batches_of(&jsonl_rows(written, "top_pages"));
    assert!(!expected.is_empty());
    let port = free_port();
    let log_path = dir.join("serve.log");
    let serve_log = std::fs::File::create(&log_path).unwrap();
    let serve = Running(
        clickpulse()
            .args(["serve", "--from", &broker.url(), "--catch-up", "all"])
            .args(["--port", &port.to_string()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(serve_log)
            .current_dir(dir)
            .spawn()
            .unwrap(),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let first = *expected.keys().next().unwrap();
    let got = runtime.block_on(read_top_pages(port, first, expected.len()));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "top_pages batch ids over the WebSocket"
    );
    for (batch, (window, rows)) in &got {
        let (_, expected_rows) = &expected[batch];
        assert_eq!(rows, expected_rows, "top_pages batch {batch}");
        assert_eq!(*window, window_of(expected_rows), "batch {batch}'s window");
    }
    // The client has gone: the consumer stops within a supervisor poll or two.
    let deadline = Instant::now() + Duration::from_secs(10);
    let stopped = "last subscriber left: result consumer stopped";
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    while !log().contains(stopped) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = log();
    assert!(
        log.contains("first subscriber: result consumer started"),
        "{log}"
    );
    assert!(log.contains(stopped), "{log}");
    drop(serve);
}

/// The window bounds of a batch: the smallest start and the largest end of its rows.
fn window_of(rows: &[Value]) -> (Option<u64>, Option<u64>) {
    let starts = rows.iter().filter_map(|r| r["window_start_ms"].as_u64());
    let ends = rows.iter().filter_map(|r| r["window_end_ms"].as_u64());
    (starts.min(), ends.max())
}

/// JSONL rows grouped by batch id (without the `batch` field), with the batch's window.
type Batches = BTreeMap<u64, ((Option<u64>, Option<u64>), Vec<Value>)>;

fn batches_of(rows: &[Value]) -> Batches {
    let mut out: Batches = BTreeMap::new();
    for row in rows {
        let batch = row["batch"].as_u64().unwrap();
        out.entry(batch).or_default().1.push(without_batch(row));
    }
    for (window, rows) in out.values_mut() {
        *window = window_of(rows);
    }
    out
}

/// Subscribes to `top_pages` from batch 0 and collects batches until `expected` are in. A
/// reader that falls behind is conflated (`skipped` > 0); it then resumes from the batch after
/// the last one it had (or from `first`, the first batch it should have had), as the protocol
/// says a client needing every batch must.
async fn read_top_pages(port: u16, first: u64, expected: usize) -> Batches {
    let url = format!("ws://127.0.0.1:{port}/ws");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ws = loop {
        match tokio_tungstenite::connect_async(&url).await {
            Ok((ws, _)) => break ws,
            Err(e) if Instant::now() > deadline => panic!("{url}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let subscribe = |from: u64| {
        Message::text(
            json!({"op": "subscribe", "streams": ["top_pages"], "from_batch": from}).to_string(),
        )
    };
    ws.send(subscribe(0)).await.unwrap();
    let mut got: Batches = BTreeMap::new();
    let mut last = None;
    while got.len() < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, ws.next())
            .await
            .unwrap_or_else(|_| panic!("{} of {expected} batches after 60 s", got.len()))
            .expect("the server closed the connection")
            .unwrap();
        let Message::Text(text) = msg else { continue };
        let m: Value = serde_json::from_str(&text).unwrap();
        if m["type"] != "batch" {
            continue;
        }
        assert_eq!(m["stream"], "top_pages");
        let batch = m["batch"].as_u64().unwrap();
        if m["skipped"].as_u64().unwrap_or(0) > 0 {
            let from = last.map_or(first, |b: u64| b + 1);
            ws.send(subscribe(from)).await.unwrap();
        }
        let window = (m["window_start_ms"].as_u64(), m["window_end_ms"].as_u64());
        let rows = m["rows"].as_array().unwrap().clone();
        got.insert(batch, (window, rows));
        last = Some(last.map_or(batch, |l: u64| l.max(batch)));
    }
    ws.close(None).await.unwrap();
    got
}
