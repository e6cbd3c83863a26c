//! `GET /api/job`, `POST /api/job/stop`, `POST /api/job/checkpoint` and the checkpoint gauges
//! of `GET /metrics`, on a real socket.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clickpulse_server::JobControl;
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A job that counts what it was asked to do.
#[derive(Debug, Default)]
struct FakeJob {
    stops: AtomicUsize,
    checkpoints: AtomicUsize,
}

impl JobControl for FakeJob {
    fn status(&self) -> Value {
        json!({
            "state": if self.stops.load(Ordering::SeqCst) > 0 { "stopping" } else { "running" },
            "checkpoints_requested": self.checkpoints.load(Ordering::SeqCst),
        })
    }

    fn stop(&self) {
        self.stops.fetch_add(1, Ordering::SeqCst);
    }

    fn checkpoint(&self) {
        self.checkpoints.fetch_add(1, Ordering::SeqCst);
    }
}

async fn get(server: &TestServer, path: &str) -> (StatusCode, Value) {
    let resp = reqwest::get(server.url(path)).await.expect("request");
    let status = resp.status();
    (status, resp.json().await.expect("a JSON body"))
}

async fn post(server: &TestServer, path: &str) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .post(server.url(path))
        .send()
        .await
        .expect("request");
    let status = resp.status();
    (status, resp.json().await.expect("a JSON body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_job_every_job_route_is_404_with_the_reason() {
    let server = TestServer::start().await;
    let no_job = json!({"error": "no job runs in this server"});
    assert_eq!(
        get(&server, "/api/job").await,
        (StatusCode::NOT_FOUND, no_job.clone())
    );
    for path in ["/api/job/stop", "/api/job/checkpoint"] {
        assert_eq!(
            post(&server, path).await,
            (StatusCode::NOT_FOUND, no_job.clone()),
            "{path}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attached_job_reports_its_status_and_is_stopped_and_checkpointed_from_loopback() {
    let server = TestServer::start().await;
    let job = Arc::new(FakeJob::default());
    server.hub.set_job_control(job.clone());

    assert_eq!(
        get(&server, "/api/job").await,
        (
            StatusCode::OK,
            json!({"state": "running", "checkpoints_requested": 0})
        )
    );
    assert_eq!(
        post(&server, "/api/job/checkpoint").await,
        (StatusCode::ACCEPTED, json!({"checkpoint_requested": true}))
    );
    assert_eq!(job.checkpoints.load(Ordering::SeqCst), 1);
    assert_eq!(
        post(&server, "/api/job/stop").await,
        (StatusCode::ACCEPTED, json!({"stopping": true}))
    );
    assert_eq!(job.stops.load(Ordering::SeqCst), 1);
    assert_eq!(
        get(&server, "/api/job").await,
        (
            StatusCode::OK,
            json!({"state": "stopping", "checkpoints_requested": 1})
        )
    );

    // Reading is not controlling: GET on the POST routes is refused and does nothing.
    let resp = reqwest::get(server.url("/api/job/stop"))
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(job.stops.load(Ordering::SeqCst), 1);

    server.hub.clear_job_control();
    assert_eq!(get(&server, "/api/job").await.0, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_last_checkpoint_once_one_is_written() {
    let server = TestServer::start().await;
    let scrape = || async {
        reqwest::get(server.url("/metrics"))
            .await
            .expect("request")
            .text()
            .await
            .expect("body")
    };
    let before = scrape().await;
    assert!(
        !before.contains("clickpulse_last_checkpoint_age_seconds"),
        "{before}"
    );

    let written_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
        - 30_000;
    server
        .metrics
        .set_last_checkpoint(120, 65_536, Duration::from_millis(750), written_at_ms);
    let text = scrape().await;
    for line in [
        "clickpulse_last_checkpoint_batch 120",
        "clickpulse_last_checkpoint_bytes 65536",
        "clickpulse_last_checkpoint_duration_seconds 0.75",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    let age: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("clickpulse_last_checkpoint_age_seconds "))
        .expect("the age")
        .parse()
        .expect("a number");
    assert!(age >= 30.0, "{age}");
    server.stop().await;
}
