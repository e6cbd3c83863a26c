//! Wiring: the router, [`serve`] and graceful shutdown.
//!
//! Handlers can extract the client's address as `ConnectInfo<SocketAddr>` (the job control
//! routes accept only loopback clients).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::collector::{self, Collector, CommitQueue, EventAppender};
use crate::config::ServerConfig;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::{api, dashboard, job, sse, ws};

/// Completes when the server starts shutting down (or was dropped).
#[derive(Debug, Clone)]
pub(crate) struct Shutdown {
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// A future that completes at shutdown; owns what it needs, so it can outlive `self`.
    pub(crate) fn wait(&self) -> impl Future<Output = ()> + Send + use<> {
        let mut rx = self.rx.clone();
        async move {
            // An error means the sender is gone: the server is gone too.
            let _ = rx.wait_for(|stopping| *stopping).await;
        }
    }
}

/// What the long-lived WebSocket and SSE connections need: deliberately not the collector, so
/// that they cannot keep its writer thread alive.
#[derive(Debug, Clone)]
pub(crate) struct LiveState {
    pub(crate) hub: Hub,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) shutdown: Shutdown,
}

/// The router's state.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    live: LiveState,
    collector: Arc<Collector>,
}

#[cfg(test)]
impl LiveState {
    /// A state around `hub` for calling handlers in unit tests (already shutting down).
    pub(crate) fn for_tests(hub: Hub) -> Self {
        let (_, rx) = watch::channel(false);
        LiveState {
            hub,
            metrics: Arc::new(Metrics::new()),
            shutdown: Shutdown { rx },
        }
    }
}

impl FromRef<AppState> for LiveState {
    fn from_ref(state: &AppState) -> Self {
        state.live.clone()
    }
}

impl FromRef<AppState> for Arc<Collector> {
    fn from_ref(state: &AppState) -> Self {
        state.collector.clone()
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address is taken, not local, or not permitted: fix the configuration.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The collector's writer thread could not start (out of threads or memory).
    #[error("cannot start the collector writer thread: {0}")]
    Writer(std::io::Error),
    /// Accepting connections failed.
    #[error("server failed: {0}")]
    Serve(std::io::Error),
    /// The server task or the collector writer panicked (a bug).
    #[error("server task failed: {0}")]
    Panicked(String),
}

/// A running server (see [`serve`]).
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    task: JoinHandle<Result<(), ServerError>>,
}

impl ServerHandle {
    /// The address the server listens on (the real port when the configured one was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the server has shut down: the shutdown signal fired, in-flight requests
    /// were answered, live connections were closed and the collector writer finished.
    ///
    /// # Errors
    /// [`ServerError::Serve`] or [`ServerError::Panicked`].
    pub async fn wait(self) -> Result<(), ServerError> {
        self.task
            .await
            .map_err(|e| ServerError::Panicked(e.to_string()))?
    }
}

/// Binds `config.bind` and serves every endpoint in a background task until
/// `shutdown_signal` completes; returns once listening.
///
/// At shutdown the server stops accepting, closes WebSocket sessions and SSE streams, answers
/// in-flight requests (collector requests after their append), then stops the collector's
/// writer thread. [`ServerHandle::wait`] returns when all that is done.
///
/// # Errors
/// [`ServerError::Bind`] when the address cannot be bound, [`ServerError::Writer`] when the
/// collector writer cannot start.
///
/// # Examples
/// ```no_run
/// use std::sync::Arc;
/// use clickpulse_server::{serve, shutdown_signal, Hub, MemoryAppender, Metrics, ServerConfig};
///
/// # async fn run() -> Result<(), clickpulse_server::ServerError> {
/// let config = ServerConfig::default();
/// let metrics = Arc::new(Metrics::new());
/// let hub = Hub::new(config.hub_config(), metrics.clone());
/// let server = serve(config, hub, metrics, Arc::new(MemoryAppender::new()), shutdown_signal()).await?;
/// println!("listening on http://{}", server.local_addr());
/// server.wait().await
/// # }
/// ```
pub async fn serve<F>(
    config: ServerConfig,
    hub: Hub,
    metrics: Arc<Metrics>,
    appender: Arc<dyn EventAppender>,
    shutdown_signal: F,
) -> Result<ServerHandle, ServerError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let bind_error = |source| ServerError::Bind {
        addr: config.bind,
        source,
    };
    let listener = TcpListener::bind(config.bind).await.map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    let (queue, writer) =
        CommitQueue::start(appender, config.max_group_events).map_err(ServerError::Writer)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let state = AppState {
        live: LiveState {
            hub,
            metrics: metrics.clone(),
            shutdown: Shutdown { rx: stop_rx },
        },
        collector: Arc::new(Collector {
            queue,
            metrics,
            batch_limit: config.batch_limit,
        }),
    };
    let app = router(&config, state).into_make_service_with_connect_info::<SocketAddr>();
    // Small WebSocket frames and replies must not wait for Nagle.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown_signal.await;
                let _ = stop_tx.send(true);
            })
            .await;
        // Every collector request is answered by now and the router (holding the queue) is
        // dropped, so the writer drains and ends.
        let joined = tokio::task::spawn_blocking(move || writer.join()).await;
        served.map_err(ServerError::Serve)?;
        match joined {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(ServerError::Panicked("collector writer".into())),
            Err(e) => Err(ServerError::Panicked(e.to_string())),
        }
    });
    tracing::info!(%addr, "clickpulse server listening");
    Ok(ServerHandle { addr, task })
}

/// Every route (see `docs/protocol.md`), behind tower-http's trace layer: a span per request
/// (method, path, version) and its response at debug level (`RUST_LOG=tower_http=debug` shows
/// them), server errors (5xx) at warn level always.
fn router(config: &ServerConfig, state: AppState) -> Router {
    use tower_http::trace::{DefaultMakeSpan, DefaultOnFailure, DefaultOnResponse, TraceLayer};
    let trace = TraceLayer::new_for_http()
        .make_span_with(DefaultMakeSpan::new().level(tracing::Level::DEBUG))
        .on_response(DefaultOnResponse::new().level(tracing::Level::DEBUG))
        .on_failure(DefaultOnFailure::new().level(tracing::Level::WARN));
    Router::new()
        .route("/ws", get(ws::handler))
        .route("/sse/{stream}", get(sse::handler))
        .route("/api/streams", get(api::streams))
        .route("/api/job", get(job::status))
        .route("/api/job/stop", post(job::stop))
        .route("/api/job/checkpoint", post(job::checkpoint))
        .route("/metrics", get(api::metrics))
        .route(
            "/collect",
            post(collector::collect).layer(DefaultBodyLimit::max(config.body_limit)),
        )
        .route("/p.gif", get(collector::pixel))
        .merge(dashboard::router(&config.dashboard_dir))
        .layer(trace)
        .with_state(state)
}

/// Completes on Ctrl-C (SIGINT) or, on Unix, SIGTERM: the usual `shutdown_signal` for
/// [`serve`].
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}
