//! Job control over HTTP: `GET /api/job`, `POST /api/job/stop` and `POST /api/job/checkpoint`.
//!
//! The server does not run the job; the embedding program attaches it as a [`JobControl`]
//! with [`Hub::set_job_control`](crate::Hub::set_job_control). Until then, and after
//! [`Hub::clear_job_control`](crate::Hub::clear_job_control), the three routes answer 404.
//!
//! The two POSTs change what the job does, so until admin tokens exist they are accepted only
//! from a loopback address (the client is on the server's machine); other clients get 403.
//! `GET /api/job` only reads and is open like `/api/streams`.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::error::AppError;
use crate::server::LiveState;

/// A running job as the server sees it: what the job routes call.
///
/// The methods are called on the server's async runtime, so each must return at once: `stop`
/// and `checkpoint` only ask (the job acts at its next batch boundary), and `status` reads
/// what the job already keeps.
///
/// # Examples
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use clickpulse_server::{Hub, HubConfig, JobControl, Metrics};
/// use serde_json::{Value, json};
///
/// #[derive(Default)]
/// struct Job {
///     stopping: AtomicBool,
/// }
///
/// impl JobControl for Job {
///     fn status(&self) -> Value {
///         json!({"state": if self.stopping.load(Ordering::Relaxed) { "stopping" } else { "running" }})
///     }
///     fn stop(&self) {
///         self.stopping.store(true, Ordering::Relaxed);
///     }
///     fn checkpoint(&self) {}
/// }
///
/// let hub = Hub::new(HubConfig::default(), Arc::new(Metrics::new()));
/// hub.set_job_control(Arc::new(Job::default()));
/// let job = hub.job_control().expect("attached");
/// job.stop();
/// assert_eq!(job.status(), json!({"state": "stopping"}));
/// ```
pub trait JobControl: Send + Sync {
    /// The job's status, answered as is by `GET /api/job` (a JSON object whose fields the
    /// job chooses).
    fn status(&self) -> Value;
    /// Asks the job to stop after the batch in progress (`POST /api/job/stop`); returns at
    /// once.
    fn stop(&self);
    /// Asks for a checkpoint as soon as possible (`POST /api/job/checkpoint`); returns at
    /// once.
    fn checkpoint(&self);
}

/// Where the hub keeps the attached job.
#[derive(Default)]
pub(crate) struct JobSlot(RwLock<Option<Arc<dyn JobControl>>>);

impl JobSlot {
    /// Attaches `job`, or detaches with `None`.
    pub(crate) fn set(&self, job: Option<Arc<dyn JobControl>>) {
        // An `Option` is replaced whole: a poisoned lock still holds a consistent one.
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = job;
    }

    /// The attached job.
    pub(crate) fn get(&self) -> Option<Arc<dyn JobControl>> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl fmt::Debug for JobSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let attached = self.get().is_some();
        f.debug_struct("JobSlot")
            .field("attached", &attached)
            .finish()
    }
}

/// `GET /api/job`: the job's status.
pub(crate) async fn status(State(state): State<LiveState>) -> Result<Json<Value>, AppError> {
    Ok(Json(attached(&state)?.status()))
}

/// `POST /api/job/stop`: 202 `{"stopping": true}`; loopback clients only.
pub(crate) async fn stop(
    State(state): State<LiveState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    let job = allowed(&state, peer, "stop")?;
    job.stop();
    Ok((StatusCode::ACCEPTED, Json(json!({ "stopping": true }))))
}

/// `POST /api/job/checkpoint`: 202 `{"checkpoint_requested": true}`; loopback clients only.
pub(crate) async fn checkpoint(
    State(state): State<LiveState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    let job = allowed(&state, peer, "checkpoint")?;
    job.checkpoint();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "checkpoint_requested": true })),
    ))
}

/// The attached job, when `peer` may control it.
fn allowed(
    state: &LiveState,
    peer: SocketAddr,
    action: &str,
) -> Result<Arc<dyn JobControl>, AppError> {
    require_loopback(peer)?;
    let job = attached(state)?;
    tracing::info!(%peer, action, "job control request");
    Ok(job)
}

fn attached(state: &LiveState) -> Result<Arc<dyn JobControl>, AppError> {
    state
        .hub
        .job_control()
        .ok_or_else(|| AppError::NotFound("no job runs in this server".into()))
}

/// Refuses clients that are not on this machine (an IPv4 address mapped into IPv6 counts as
/// the IPv4 address).
fn require_loopback(peer: SocketAddr) -> Result<(), AppError> {
    if peer.ip().to_canonical().is_loopback() {
        return Ok(());
    }
    Err(AppError::Forbidden(format!(
        "job control is accepted only from this machine (a loopback address), not from {}",
        peer.ip()
    )))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::response::IntoResponse;

    use super::*;
    use crate::server::LiveState;
    use crate::{Hub, HubConfig, Metrics};

    #[test]
    fn only_loopback_addresses_may_control_the_job() {
        for ok in [
            "127.0.0.1:1",
            "127.8.9.10:1",
            "[::1]:1",
            "[::ffff:127.0.0.1]:1",
        ] {
            let addr: SocketAddr = ok.parse().expect("addr");
            assert_eq!(require_loopback(addr), Ok(()), "{ok}");
        }
        for refused in [
            "10.0.0.7:1",
            "0.0.0.0:1",
            "[fe80::1]:1",
            "[::ffff:10.0.0.7]:1",
        ] {
            let addr: SocketAddr = refused.parse().expect("addr");
            let err = require_loopback(addr).expect_err(refused);
            assert_eq!(err.status(), StatusCode::FORBIDDEN, "{refused}");
        }
    }

    #[derive(Default)]
    struct CountingJob {
        stops: AtomicUsize,
    }

    impl JobControl for CountingJob {
        fn status(&self) -> Value {
            json!({})
        }
        fn stop(&self) {
            self.stops.fetch_add(1, Ordering::Relaxed);
        }
        fn checkpoint(&self) {}
    }

    /// A remote client is refused with 403 and the reason, through the crate's one error
    /// conversion, and the job is not touched. (The socket tests can only connect from
    /// loopback.)
    #[tokio::test]
    async fn a_remote_stop_is_403_with_the_reason_and_does_not_reach_the_job() {
        let hub = Hub::new(HubConfig::default(), Arc::new(Metrics::new()));
        let job = Arc::new(CountingJob::default());
        hub.set_job_control(job.clone());
        let state = LiveState::for_tests(hub);
        let peer: SocketAddr = "192.0.2.1:40000".parse().expect("addr");
        let err = stop(State(state), ConnectInfo(peer))
            .await
            .expect_err("refused");
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        let body: Value = serde_json::from_slice(&body).expect("JSON");
        let reason = body["error"].as_str().expect("an error reason");
        assert!(reason.contains("192.0.2.1"), "{reason}");
        assert!(reason.contains("loopback"), "{reason}");
        assert_eq!(job.stops.load(Ordering::Relaxed), 0);
    }
}
