//! clickpulse-server: the HTTP side of clickpulse.
//!
//! | part | module | what |
//! |---|---|---|
//! | hub | [`hub`] | [`Hub`]: the engine publishes each micro-batch ([`StreamUpdate`]); the hub serialises it once, keeps a bounded history per stream and fans it out to client mailboxes ([`Subscription`]) with snapshot, exact resume, resync and conflation. Publishing is idempotent by batch id, and the history is carried across restarts in checkpoints ([`Hub::snapshot`], [`Hub::restore`]). No sockets. |
//! | WebSocket | [`ws`] | `GET /ws`: the JSON protocol, as [`ws::run_session`] generic over any `Sink`/`Stream`. |
//! | SSE | `sse` | `GET /sse/{stream}`: one stream as Server-Sent Events, resumable with `Last-Event-ID`. |
//! | collector | [`collector`] | `POST /collect` and `GET /p.gif`: validation, group commit through an [`EventAppender`] ([`collector::LogAppender`] for the embedded log), reply after the append. |
//! | metrics | [`metrics`] | [`Metrics`]: process-wide counters other crates update, the last checkpoint's gauges among them; `GET /metrics`. |
//! | API | `api` | `GET /api/streams`. |
//! | job control | `job` | [`JobControl`]: `GET /api/job`, `POST /api/job/stop`, `POST /api/job/checkpoint` for the job attached with [`Hub::set_job_control`]; the POSTs from loopback clients only. |
//! | dashboard | `dashboard` | `/`: the built dashboard, or a page saying how to build it. |
//! | wiring | [`serve`], [`ServerConfig`], [`AppError`] | binding, routes, graceful shutdown, HTTP errors. |
//!
//! The wire protocol, status codes and resume rules are written down in `docs/protocol.md`.
//!
//! # Examples
//!
//! The engine side, without any socket:
//!
//! ```
//! use std::sync::Arc;
//! use clickpulse_server::{Hub, HubConfig, Metrics, StreamUpdate};
//! use serde_json::json;
//!
//! let metrics = Arc::new(Metrics::new());
//! let hub = Hub::new(HubConfig::default(), metrics.clone());
//! hub.register_stream("page_views", vec!["url".into(), "count".into()]);
//!
//! let client = hub.subscription();
//! client.subscribe(&["page_views".to_string()], None)?;
//! for batch in 1..=3 {
//!     let rows = vec![json!({"url": "/news", "count": batch}).into()];
//!     hub.publish(StreamUpdate::new("page_views", batch, rows).with_window(0, 1000))?;
//! }
//! // The client did not read: it gets the newest batch, told that two were skipped.
//! let d = client.try_recv().expect("a message");
//! assert_eq!((d.batch, d.skipped), (3, 2));
//! assert_eq!(metrics.conflated(), 2);
//! # Ok::<(), clickpulse_server::HubError>(())
//! ```
//!
//! The whole server: see [`serve`].

mod api;
pub mod collector;
mod config;
mod dashboard;
mod error;
pub mod hub;
mod job;
mod json;
pub mod metrics;
mod server;
mod sse;
pub mod ws;

pub use collector::{AppendError, EventAppender, LogAppender, MemoryAppender};
pub use config::ServerConfig;
pub use error::AppError;
pub use hub::{Delivery, Hub, HubConfig, HubError, StreamInfo, StreamUpdate, Subscription};
pub use job::JobControl;
pub use metrics::Metrics;
pub use server::{ServerError, ServerHandle, serve, shutdown_signal};
