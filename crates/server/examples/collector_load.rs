//! Load generator for the collector: N tasks send NDJSON batches over keep-alive connections
//! for a bounded time, then it reports events/s and request latency percentiles.
//!
//! By default it starts a server in this process on 127.0.0.1:0, appending to the embedded log
//! in a temporary directory with an fsync for every append (group commit makes that cheap):
//!
//! ```text
//! cargo run --release -p clickpulse-server --example collector_load -- \
//!     --connections 64 --events-per-request 100 --seconds 10
//! ```
//!
//! Options (all optional):
//! - `--connections N` concurrent keep-alive connections, one task each (default 64)
//! - `--events-per-request N` NDJSON lines per request (default 100)
//! - `--seconds N` how long to send (default 10)
//! - `--appender log|memory` where events go (default `log`)
//! - `--durability every-batch|none` fsync policy of the log (default `every-batch`)
//! - `--partitions N` partitions of the log topic (default 4)
//! - `--dir PATH` directory for the log (default: a temporary directory, removed at the end)
//! - `--url URL` load an already running server's `/collect` instead of starting one
//! - `--serve-only` only start the server (print its address, run until Ctrl-C), e.g. for `wrk`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clickpulse_events::ClickEvent;
use clickpulse_log::{Durability, Log, LogOptions};
use clickpulse_server::collector::LogAppender;
use clickpulse_server::{
    AppendError, EventAppender, Hub, MemoryAppender, Metrics, ServerConfig, serve, shutdown_signal,
};

// The allocator of the clickpulse binary, whose collector this measures (the system allocator
// cost about a sixth of the CPU here).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone)]
struct Options {
    connections: usize,
    events_per_request: usize,
    seconds: u64,
    appender: String,
    durability: String,
    partitions: u32,
    dir: Option<std::path::PathBuf>,
    url: Option<String>,
    serve_only: bool,
}

impl Options {
    fn parse() -> Result<Self, BoxError> {
        let mut o = Options {
            connections: 64,
            events_per_request: 100,
            seconds: 10,
            appender: "log".into(),
            durability: "every-batch".into(),
            partitions: 4,
            dir: None,
            url: None,
            serve_only: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            if flag == "--serve-only" {
                o.serve_only = true;
                continue;
            }
            let value = args.next().ok_or(format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--connections" => o.connections = value.parse()?,
                "--events-per-request" => o.events_per_request = value.parse()?,
                "--seconds" => o.seconds = value.parse()?,
                "--appender" => o.appender = value,
                "--durability" => o.durability = value,
                "--partitions" => o.partitions = value.parse()?,
                "--dir" => o.dir = Some(value.into()),
                "--url" => o.url = Some(value),
                other => return Err(format!("unknown option {other}").into()),
            }
        }
        Ok(o)
    }
}

/// Counts appends and events, to report how much group commit merged.
struct Counting {
    inner: Arc<dyn EventAppender>,
    appends: AtomicU64,
    events: AtomicU64,
}

impl EventAppender for Counting {
    fn append(&self, events: &[ClickEvent]) -> Result<(), AppendError> {
        self.inner.append(events)?;
        self.appends.fetch_add(1, Ordering::Relaxed);
        self.events
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

fn main() -> Result<(), BoxError> {
    let options = Options::parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(options))
}

async fn run(o: Options) -> Result<(), BoxError> {
    let tmp = tempfile::tempdir()?;
    let dir = o.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let (sink, _log) = appender(&o, &dir)?;
    let counting = Arc::new(Counting {
        inner: sink,
        appends: AtomicU64::new(0),
        events: AtomicU64::new(0),
    });
    let (url, stop, server) = match &o.url {
        Some(url) => (url.clone(), None, None),
        None => {
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let metrics = Arc::new(Metrics::new());
            let config = ServerConfig {
                bind: "127.0.0.1:0".parse()?,
                batch_limit: o.events_per_request.max(1000),
                body_limit: 64 << 20,
                ..ServerConfig::default()
            };
            let hub = Hub::new(config.hub_config(), metrics.clone());
            let shutdown = async move {
                tokio::select! {
                    _ = stop_rx => {},
                    () = shutdown_signal() => {},
                }
            };
            let server = serve(config, hub, metrics, counting.clone(), shutdown).await?;
            let url = format!("http://{}/collect", server.local_addr());
            (url, Some(stop_tx), Some(server))
        }
    };
    if o.serve_only {
        println!(
            "serving {url} ({} appender, {}); Ctrl-C stops",
            o.appender, o.durability
        );
        if let Some(server) = server {
            server.wait().await?;
        }
        return Ok(());
    }
    println!(
        "{} connections x {} events/request for {} s -> {url} ({} appender, durability {}, {} partitions)",
        o.connections, o.events_per_request, o.seconds, o.appender, o.durability, o.partitions
    );
    let report = load(&o, &url).await?;
    if let Some(stop) = stop {
        let _ = stop.send(());
    }
    if let Some(server) = server {
        server.wait().await?;
    }
    report.print(&counting);
    Ok(())
}

/// The appender chosen by the options, and the log it writes to (kept open).
fn appender(
    o: &Options,
    dir: &std::path::Path,
) -> Result<(Arc<dyn EventAppender>, Option<Log>), BoxError> {
    match o.appender.as_str() {
        "memory" => Ok((Arc::new(MemoryAppender::new()), None)),
        "log" => {
            let durability = match o.durability.as_str() {
                "every-batch" => Durability::EveryBatch,
                "none" => Durability::None,
                other => return Err(format!("unknown durability {other}").into()),
            };
            let log = Log::open(dir, LogOptions::default().durability(durability))?;
            let appender = LogAppender::open(&log, "clicks", o.partitions)?;
            Ok((Arc::new(appender), Some(log)))
        }
        other => Err(format!("unknown appender {other}").into()),
    }
}

struct Report {
    elapsed: Duration,
    requests: u64,
    events: u64,
    errors: u64,
    latencies_us: Vec<u64>,
}

impl Report {
    fn print(mut self, counting: &Counting) {
        self.latencies_us.sort_unstable();
        let pct = |p: f64| {
            let idx = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
            self.latencies_us.get(idx).copied().unwrap_or(0) as f64 / 1000.0
        };
        let secs = self.elapsed.as_secs_f64();
        println!(
            "requests: {} ok, {} failed in {secs:.2} s",
            self.requests, self.errors
        );
        println!(
            "throughput: {:.0} events/s, {:.0} requests/s",
            self.events as f64 / secs,
            self.requests as f64 / secs
        );
        println!(
            "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            pct(0.50),
            pct(0.90),
            pct(0.99),
            pct(1.0)
        );
        let appends = counting.appends.load(Ordering::Relaxed);
        if appends > 0 {
            println!(
                "group commit: {appends} appends for {} requests ({:.1} requests, {:.0} events per append)",
                self.requests,
                self.requests as f64 / appends as f64,
                counting.events.load(Ordering::Relaxed) as f64 / appends as f64
            );
        }
    }
}

/// Runs the connection tasks until the deadline and merges their results.
async fn load(o: &Options, url: &str) -> Result<Report, BoxError> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(o.seconds);
    let tasks: Vec<_> = (0..o.connections)
        .map(|task| {
            let body = ndjson_body(task, o.events_per_request);
            let url = url.to_string();
            tokio::spawn(connection(url, body, deadline))
        })
        .collect();
    let mut report = Report {
        elapsed: Duration::ZERO,
        requests: 0,
        events: 0,
        errors: 0,
        latencies_us: Vec::new(),
    };
    for t in tasks {
        let (requests, errors, latencies) = t.await??;
        report.requests += requests;
        report.errors += errors;
        report.events += requests * o.events_per_request as u64;
        report.latencies_us.extend(latencies);
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

/// One keep-alive connection sending the same body until `deadline`.
async fn connection(
    url: String,
    body: bytes::Bytes,
    deadline: Instant,
) -> Result<(u64, u64, Vec<u64>), BoxError> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()?;
    let (mut ok, mut failed, mut latencies) = (0, 0, Vec::new());
    while Instant::now() < deadline {
        let sent = Instant::now();
        let resp = client
            .post(&url)
            .header("content-type", "application/x-ndjson")
            .body(body.clone())
            .send()
            .await?;
        let status = resp.status();
        resp.bytes().await?;
        latencies.push(sent.elapsed().as_micros() as u64);
        if status.is_success() {
            ok += 1;
        } else {
            failed += 1;
        }
    }
    Ok((ok, failed, latencies))
}

/// `n` click events of task `task`'s visitors, one JSON object per line.
fn ndjson_body(task: usize, n: usize) -> bytes::Bytes {
    let mut body = String::with_capacity(n * 120);
    for i in 0..n {
        body.push_str(&format!(
            r#"{{"ts_ms":{},"visitor_id":"v{}-{}","url":"/category/{}","event_type":"page_view","referrer":"/home"}}"#,
            1_700_000_000_000u64 + i as u64,
            task,
            i % 50,
            i % 17
        ));
        body.push('\n');
    }
    bytes::Bytes::from(body)
}
