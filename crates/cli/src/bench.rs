//! `clickpulse bench`: the whole standard job over the full MSNBC stream, and end-to-end
//! latency from append to WebSocket message at a steady rate.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Subcommand};
use clickpulse_connectors::log::LogWriter;
use clickpulse_engine::RunMode;
use clickpulse_events::{ClickEvent, msnbc};
use clickpulse_job::JobConfig;
use clickpulse_log::{Durability, Log, LogOptions};
use clickpulse_server::Metrics;
use futures::{SinkExt, StreamExt};

use crate::jobrun::{JobRun, RunReport};
use crate::server::Served;

/// `clickpulse bench`
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchKind,
}

#[derive(Debug, Subcommand)]
enum BenchKind {
    /// The standard job over the full MSNBC stream from the embedded log, as fast as possible,
    /// all streams written to files: events/s and peak RSS (of the job's own process).
    Job {
        /// Worker threads.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// The MSNBC file (default: data/msnbc990928.seq.gz).
        #[arg(long)]
        input: Option<PathBuf>,
        /// Checkpoint the job this often (a number of batches, or a duration such as 1s) into
        /// a temporary directory; default: no checkpoints.
        #[arg(long, value_name = "N|DURATION")]
        checkpoint_interval: Option<String>,
        /// Most records one batch takes from one partition (default: the job's 50000).
        #[arg(long)]
        max_records_per_partition: Option<usize>,
    },
    /// Latency from append to the WebSocket message at a steady rate.
    Latency {
        /// Events per second appended.
        #[arg(long, default_value_t = 100_000)]
        rate: u64,
        /// Batch interval.
        #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
        batch_interval: Duration,
        /// How long to measure (after a 3 s warm-up).
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Worker threads.
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
}

/// Runs the chosen benchmark and prints its numbers.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.what {
        BenchKind::Job {
            workers,
            input,
            checkpoint_interval,
            max_records_per_partition,
        } => job(
            workers,
            input,
            checkpoint_interval,
            max_records_per_partition,
        ),
        BenchKind::Latency {
            rate,
            batch_interval,
            duration,
            workers,
        } => latency(rate, batch_interval, duration, workers),
    }
}

fn job(
    workers: usize,
    input: Option<PathBuf>,
    checkpoint_interval: Option<String>,
    max_records: Option<usize>,
) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("clickpulse-bench-")
        .tempdir()?;
    let log_dir = dir.path().join("log");
    let path = input.unwrap_or_else(msnbc::default_msnbc_path);
    let stream = msnbc::load(&path).with_context(|| format!("loading {}", path.display()))?;
    eprintln!(
        "replaying {} events into {} ...",
        stream.len(),
        log_dir.display()
    );
    let replayed = {
        let log = Log::open(&log_dir, LogOptions::default().durability(Durability::None))?;
        let writer = LogWriter::new(log.create_topic("clicks", 4)?);
        let started = Instant::now();
        let mut chunk = Vec::with_capacity(50_000);
        for e in stream.iter() {
            chunk.push(e);
            if chunk.len() == chunk.capacity() {
                writer.append(&chunk)?;
                chunk.clear();
            }
        }
        writer.append(&chunk)?;
        log.sync()?;
        stream.len() as f64 / started.elapsed().as_secs_f64()
    };
    drop(stream);
    eprintln!("running the standard job with {workers} workers in a child process ...");
    let exe = std::env::current_exe()?;
    let mut command = std::process::Command::new(exe);
    command
        .args(["run", "--until-end", "--json", "--topic", "clicks"])
        .arg("--log")
        .arg(&log_dir)
        .arg("--output-dir")
        .arg(dir.path().join("out"))
        .args(["--workers", &workers.to_string()])
        .env("RUST_LOG", "warn");
    match &checkpoint_interval {
        Some(interval) => {
            command
                .arg("--checkpoint-dir")
                .arg(dir.path().join("checkpoints"))
                .args(["--checkpoint-interval", interval]);
        }
        None => {
            command.arg("--no-checkpoint");
        }
    }
    if let Some(n) = max_records {
        command.env(
            "CLICKPULSE__ENGINE__MAX_RECORDS_PER_PARTITION",
            n.to_string(),
        );
    }
    let output = command.output().context("running the job")?;
    if !output.status.success() {
        anyhow::bail!(
            "the job failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().last().context("the job printed no summary")?;
    let report: serde_json::Value = serde_json::from_str(line)?;
    let files = count_files(&dir.path().join("out"));
    let checkpoints = match &checkpoint_interval {
        Some(i) => format!("checkpoints every {i}"),
        None => "no checkpoints".into(),
    };
    println!(
        "bench job: MSNBC, {workers} workers, {checkpoints}, {} batches",
        report["batches"]
    );
    println!("  replay into the embedded log : {replayed:.0} events/s");
    println!(
        "  standard job (7 streams)     : {} events in {:.2} s = {:.0} events/s",
        report["events"],
        report["elapsed_s"].as_f64().unwrap_or(0.0),
        report["events_per_s"].as_f64().unwrap_or(0.0)
    );
    println!(
        "  peak RSS of the job process  : {} MiB",
        report["peak_rss_bytes"].as_u64().unwrap_or(0) / (1 << 20)
    );
    println!("  result files written         : {files}");
    if checkpoint_interval.is_some() {
        let c = &report["checkpoints"];
        println!(
            "  checkpoints written          : {} (largest {} bytes, longest {} ms, {} ms in all)",
            c["count"], c["max_bytes"], c["max_ms"], c["total_ms"]
        );
    }
    println!(
        "  late events {}, dead letters {}",
        report["late_events"], report["dead_letters"]
    );
    Ok(())
}

fn count_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        count_files(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

/// Appends `rate` events/s with event time = append time, in 10 ms ticks, until `stop`.
fn generate(writer: LogWriter, rate: u64, stop: Arc<AtomicBool>) -> anyhow::Result<u64> {
    let per_tick = (rate / 100).max(1);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut tick = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let ts = now_ms();
        let events: Vec<ClickEvent> = (0..per_tick)
            .map(|i| {
                let n = sent + i;
                ClickEvent::page_view(ts, format!("v{}", n % 50_000), format!("/page{}", n % 20))
            })
            .collect();
        writer.append(&events)?;
        sent += per_tick;
        tick += 1;
        let due = Duration::from_millis(tick * 10);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    Ok(sent)
}

fn latency(
    rate: u64,
    batch_interval: Duration,
    duration: Duration,
    workers: usize,
) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("clickpulse-latency-")
        .tempdir()?;
    let mut config = JobConfig::default();
    config.input.log = dir.path().join("log");
    config.engine.batch_interval = batch_interval;
    config.engine.workers = workers;
    config.streams.page_views_window = Duration::from_millis(100);
    config.checkpoint.enabled = false;
    config.validate()?;
    let log = Log::open(
        &config.input.log,
        LogOptions::default().durability(Durability::None),
    )?;
    let topic = log.create_topic("clicks", 4)?;
    let metrics = Arc::new(Metrics::new());
    let served = Served::start("127.0.0.1:0".parse()?, Arc::clone(&metrics), None, None)?;
    let url = format!("ws://{}/ws", served.addr);

    let stop = Arc::new(AtomicBool::new(false));
    let gen_stop = Arc::clone(&stop);
    let writer = LogWriter::new(topic.clone());
    let generator = std::thread::spawn(move || generate(writer, rate, gen_stop));
    let job = JobRun {
        config,
        mode: RunMode::Continuous,
        hub: Some(served.hub.clone()),
        metrics,
        from_scratch: true,
    };
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    let engine = std::thread::spawn(move || -> anyhow::Result<RunReport> {
        job.run_log(topic, |h| {
            let _ = handle_tx.send(h);
        })
    });
    let shutdown = handle_rx.recv().context("the job did not start")?;

    let samples = measure_ws(&url, Duration::from_secs(3), duration)?;
    stop.store(true, Ordering::Relaxed);
    shutdown.stop();
    let sent = generator
        .join()
        .map_err(|_| anyhow::anyhow!("generator panicked"))??;
    let report = engine
        .join()
        .map_err(|_| anyhow::anyhow!("engine panicked"))??;
    served.stop();

    let mut sorted = samples;
    sorted.sort_unstable();
    let pct = |p: f64| {
        sorted
            .get(((sorted.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "bench latency: {rate} events/s, batch interval {batch_interval:?}, {workers} workers"
    );
    println!(
        "  appended {sent} events; the job processed {}",
        report.events
    );
    println!(
        "  append -> WebSocket message (page_views, 100 ms windows): n={} p50={} ms p99={} ms max={} ms",
        sorted.len(),
        pct(0.5),
        pct(0.99),
        sorted.last().copied().unwrap_or(0)
    );
    Ok(())
}

/// Subscribes to `page_views` and records, per message after `warmup`, the time from the end of
/// its window (when its last event was appended) to its arrival.
fn measure_ws(url: &str, warmup: Duration, duration: Duration) -> anyhow::Result<Vec<u64>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
        let subscribe = serde_json::json!({"op": "subscribe", "streams": ["page_views"]});
        ws.send(tokio_tungstenite::tungstenite::Message::Text(
            subscribe.to_string().into(),
        ))
        .await?;
        let started = Instant::now();
        let mut samples = Vec::new();
        while started.elapsed() < warmup + duration {
            let next = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
            let Ok(Some(Ok(msg))) = next else { break };
            let received = now_ms();
            let Ok(text) = msg.into_text() else { continue };
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            if value["snapshot"].as_bool() == Some(true) || started.elapsed() < warmup {
                continue;
            }
            if let Some(end) = value["window_end_ms"].as_u64() {
                samples.push(received.saturating_sub(end));
            }
        }
        Ok::<_, anyhow::Error>(samples)
    })
}
