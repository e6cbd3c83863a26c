//! A WebSocket client subscribed to a continuous job across SIGKILLs and restarts of the job
//! receives every batch id once, in order: the batch ids it gets are exactly the batches the job
//! wrote (its result files), none twice, none resynced. The job is stopped at the end with
//! `clickpulse stop`, which must make it exit 0.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{clickpulse, free_port, replay_msnbc, run_checkpointed, run_ok};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const STREAM: &str = "page_views";

/// Starts the continuous job, serving on `port`.
fn start(ckpt: &Path, log: &Path, out: &Path, port: u16) -> Child {
    run_checkpointed(ckpt)
        .args(["--topic", "clicks", "--batch-interval", "200ms"])
        .args(["--checkpoint-interval", "3", "--serve"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--log")
        .arg(log)
        .arg("--output-dir")
        .arg(out)
        .env("CLICKPULSE__ENGINE__MAX_RECORDS_PER_PARTITION", "1500")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The body of `GET path` on the server at `port`, if it answers.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
}

/// What the client saw: every batch message's id, and the flags that would mean a loss.
#[derive(Default)]
struct Seen {
    batches: Vec<u64>,
    resyncs: usize,
    skipped: u64,
}

/// Reads batch messages of [`STREAM`] until the connection drops or `until` passes, subscribing
/// from the batch after the last one seen.
async fn follow(port: u16, seen: &mut Seen, until: Instant) {
    let url = format!("ws://127.0.0.1:{port}/ws");
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&url).await else {
        tokio::time::sleep(Duration::from_millis(100)).await;
        return;
    };
    let from = seen.batches.last().map_or(0, |b| b + 1);
    let subscribe = json!({"op": "subscribe", "streams": [STREAM], "from_batch": from});
    if ws
        .send(Message::Text(subscribe.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    while Instant::now() < until {
        let next = tokio::time::timeout(Duration::from_millis(200), ws.next()).await;
        let msg = match next {
            Err(_) => continue,
            Ok(Some(Ok(msg))) => msg,
            Ok(_) => return, // the job went away
        };
        let Message::Text(text) = msg else { continue };
        let v: Value = serde_json::from_str(&text).unwrap();
        if v["type"] != "batch" {
            continue;
        }
        seen.batches.push(v["batch"].as_u64().unwrap());
        seen.resyncs += usize::from(v["resync"] == true);
        seen.skipped += v["skipped"].as_u64().unwrap_or(0);
    }
}

#[test]
fn a_websocket_client_gets_every_batch_once_across_kills_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    replay_msnbc(&log, Some(150_000));
    let (ckpt, out) = (dir.path().join("checkpoints"), dir.path().join("out"));
    let port = free_port();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut seen = Seen::default();
    let mut job = start(&ckpt, &log, &out, port);
    // Two kills while the job works through the input, then a run that is stopped.
    for round in 0..3 {
        let until = Instant::now() + Duration::from_secs(if round < 2 { 4 } else { 12 });
        while Instant::now() < until {
            runtime.block_on(follow(port, &mut seen, until));
        }
        if round < 2 {
            job.kill().unwrap(); // SIGKILL
            job.wait().unwrap();
            eprintln!("killed after batch {:?}", seen.batches.last());
            job = start(&ckpt, &log, &out, port);
        }
    }
    let metrics = http_get(port, "/metrics").unwrap_or_default();
    assert!(
        metrics.contains("clickpulse_last_checkpoint_batch"),
        "{metrics}"
    );
    let status: Value = serde_json::from_str(&http_get(port, "/api/job").unwrap()).unwrap();
    assert_eq!(status["state"], "running", "{status}");
    assert!(status["resumed_from_batch"].is_u64(), "{status}");

    let stop = run_ok(clickpulse().args(["stop", "--url", &format!("http://127.0.0.1:{port}")]));
    assert!(String::from_utf8_lossy(&stop.stdout).contains("stopping"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = job.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the job did not stop");
        runtime.block_on(follow(
            port,
            &mut seen,
            Instant::now() + Duration::from_millis(300),
        ));
    };
    assert!(status.success(), "stopped job exited with {status}");

    let mut written: Vec<u64> = std::fs::read_dir(out.join(STREAM))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| {
            n.strip_prefix("batch-")?
                .strip_suffix(".jsonl")?
                .parse()
                .ok()
        })
        .collect();
    written.sort_unstable();
    assert!(written.len() > 20, "{} batches written", written.len());
    assert_eq!((seen.resyncs, seen.skipped), (0, 0));
    assert!(
        seen.batches.windows(2).all(|w| w[0] < w[1]),
        "out of order or repeated: {:?}",
        seen.batches
    );
    assert_eq!(seen.batches, written, "the client's batches are the job's");
}
