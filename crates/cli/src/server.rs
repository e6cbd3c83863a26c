//! The HTTP side inside the CLI: the server on its own tokio runtime, `clickpulse serve`, and
//! stopping on Ctrl-C / SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use clickpulse_connectors::kafka::{DEFAULT_TOPIC_PREFIX, KafkaUrl};
use clickpulse_engine::ShutdownHandle;
use clickpulse_server::collector::LogAppender;
use clickpulse_server::{EventAppender, Hub, MemoryAppender, Metrics, ServerConfig};
use tokio::sync::oneshot;

use crate::feeds::{CatchUp, Supervisor};
use crate::glue::register_streams;

/// The server running on a background runtime.
pub struct Served {
    pub hub: Hub,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Where the dashboard bundle is: `--dashboard-dir`, else `dashboard/dist` under the current
/// directory or beside the executable's workspace.
pub fn dashboard_dir(given: Option<PathBuf>) -> PathBuf {
    if let Some(dir) = given {
        return dir;
    }
    let here = PathBuf::from("dashboard/dist");
    if here.join("index.html").exists() {
        return here;
    }
    let beside_exe = std::env::current_exe().ok().and_then(|exe| {
        exe.ancestors()
            .nth(3)
            .map(|root| root.join("dashboard/dist"))
    });
    beside_exe
        .filter(|d| d.join("index.html").exists())
        .unwrap_or(here)
}

impl Served {
    /// Starts the server on `addr`; the collector appends to `appender` when given, else keeps
    /// events in memory.
    pub fn start(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        appender: Option<Arc<dyn EventAppender>>,
        dashboard: Option<PathBuf>,
    ) -> anyhow::Result<Served> {
        let config = ServerConfig {
            bind: addr,
            dashboard_dir: dashboard_dir(dashboard),
            ..ServerConfig::default()
        };
        let hub = Hub::new(config.hub_config(), Arc::clone(&metrics));
        register_streams(&hub);
        let appender = appender.unwrap_or_else(|| Arc::new(MemoryAppender::new()));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let served_hub = hub.clone();
        let thread = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ =
                            ready_tx.send(Err(anyhow::anyhow!("starting the HTTP runtime: {e}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let shutdown = async move {
                        let _ = stop_rx.await;
                    };
                    match clickpulse_server::serve(config, served_hub, metrics, appender, shutdown)
                        .await
                    {
                        Ok(handle) => {
                            let _ = ready_tx.send(Ok(handle.local_addr()));
                            if let Err(e) = handle.wait().await {
                                tracing::error!(error = %e, "server stopped with an error");
                            }
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(anyhow::anyhow!(e)));
                        }
                    }
                });
            })
            .context("starting the HTTP thread")?;
        let addr = ready_rx
            .recv()
            .context("the HTTP thread ended before it started")??;
        Ok(Served {
            hub,
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Stops accepting, closes connections gracefully and waits for the server.
    pub fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Calls `handle.stop()` on Ctrl-C or SIGTERM.
pub fn stop_on_signal(handle: ShutdownHandle) {
    stop_on_signal_with(move || {
        eprintln!("stopping: finishing the batch in progress");
        handle.stop();
    });
}

/// `clickpulse serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Port on 127.0.0.1 (use --bind for another address).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Full bind address; overrides --port.
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// The embedded log the collector appends to (no collector log when absent: events are kept in memory).
    #[arg(long)]
    log: Option<PathBuf>,
    /// The collector's topic.
    #[arg(long, default_value = "clicks")]
    topic: String,
    /// The dashboard bundle directory.
    #[arg(long)]
    dashboard_dir: Option<PathBuf>,
    /// Feed the hub from the result topics a `clickpulse run --output-kafka` job writes:
    /// kafka://HOST:PORT (brokers only). A stream's topic is read while the stream has
    /// subscribers (WebSocket or SSE), from its first subscriber to its last.
    #[arg(long, value_name = "URL", value_parser = KafkaUrl::parse)]
    from: Option<KafkaUrl>,
    /// The result topics' prefix (with --from): a stream's topic is <prefix><stream>.
    #[arg(long, default_value = DEFAULT_TOPIC_PREFIX, requires = "from")]
    topic_prefix: String,
    /// Result records per partition a stream's consumer reads back when it starts (with
    /// --from): a number, `all` (the whole topic) or 0 (only new results).
    #[arg(long, default_value = "10000", value_name = "N|all", requires = "from")]
    catch_up: CatchUp,
}

/// Runs the server until Ctrl-C.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let addr = args
        .bind
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], args.port)));
    if let Some(topic) = args.from.as_ref().and_then(KafkaUrl::topic) {
        anyhow::bail!(
            "--from names the topic `{topic}`; give brokers only (kafka://HOST:PORT): \
             the topics are --topic-prefix + the stream name"
        );
    }
    let appender: Option<Arc<dyn EventAppender>> = match &args.log {
        Some(dir) => {
            let log = clickpulse_log::Log::open(dir, clickpulse_log::LogOptions::default())?;
            let topic = match log.topic(&args.topic) {
                Ok(t) => t,
                Err(_) => log.create_topic(&args.topic, 4)?,
            };
            Some(Arc::new(LogAppender::new(topic)))
        }
        None => None,
    };
    let served = Served::start(addr, Arc::new(Metrics::new()), appender, args.dashboard_dir)?;
    let feeds = match &args.from {
        Some(url) => Some(Supervisor::start(
            served.hub.clone(),
            url.brokers(),
            args.topic_prefix.clone(),
            args.catch_up,
        )?),
        None => None,
    };
    match &args.from {
        Some(url) => println!(
            "clickpulse serve: dashboard at http://{}, results from {url} (topics {}<stream>)",
            served.addr, args.topic_prefix
        ),
        None => println!("clickpulse serve: dashboard at http://{}", served.addr),
    }
    let (tx, rx) = std::sync::mpsc::channel();
    stop_on_signal_with(move || {
        let _ = tx.send(());
    });
    let _ = rx.recv();
    if let Some(feeds) = feeds {
        feeds.stop();
    }
    served.stop();
    Ok(())
}

/// Runs `f` on Ctrl-C or SIGTERM.
pub fn stop_on_signal_with(f: impl FnOnce() + Send + 'static) {
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(clickpulse_server::shutdown_signal());
            f();
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not watch for Ctrl-C");
    }
}
