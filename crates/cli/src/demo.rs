//! `clickpulse demo`: everything embedded — MSNBC replayed into the embedded log at a visible
//! speed, the standard job, the dashboard.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use clickpulse_connectors::log::LogWriter;
use clickpulse_engine::RunMode;
use clickpulse_events::msnbc;
use clickpulse_job::JobConfig;
use clickpulse_log::{Durability, Log, LogOptions};
use clickpulse_server::{LogAppender, Metrics};

use crate::jobrun::JobRun;
use crate::replay::{LogReplayWriter, Pace, ReadAhead, Replayer};
use crate::server::{Served, stop_on_signal_with};

/// `clickpulse demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Port for the dashboard on 127.0.0.1.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Replay speed: the clicks' own clock sped up this many times (60 = one hour a minute).
    #[arg(long, default_value_t = 60.0)]
    speed: f64,
    /// Micro-batch interval.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    batch_interval: Duration,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Where the embedded log lives (a fresh temporary directory when absent).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The MSNBC file (default: data/msnbc990928.seq.gz).
    #[arg(long)]
    input: Option<PathBuf>,
    /// The dashboard bundle directory (default: dashboard/dist).
    #[arg(long)]
    dashboard_dir: Option<PathBuf>,
}

fn msnbc_path(given: Option<PathBuf>) -> PathBuf {
    given
        .or_else(|| {
            let here = PathBuf::from("data").join(msnbc::FILE_NAME);
            here.exists().then_some(here)
        })
        .unwrap_or_else(msnbc::default_msnbc_path)
}

/// Runs the demo until Ctrl-C.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.speed.is_nan() || args.speed <= 0.0 {
        anyhow::bail!("--speed must be positive");
    }
    let temp = tempfile::Builder::new()
        .prefix("clickpulse-demo-")
        .tempdir()?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let mut config = JobConfig::default();
    config.input.log = data_dir.join("log");
    config.engine.batch_interval = args.batch_interval;
    config.engine.workers = args.workers;
    // The demo replays MSNBC into a fresh log at every start: nothing to resume.
    config.checkpoint.enabled = false;
    config.validate()?;

    let log = Log::open(
        &config.input.log,
        LogOptions::default().durability(Durability::None),
    )
    .with_context(|| format!("opening the demo log at {}", config.input.log.display()))?;
    let topic = match log.topic(&config.input.topic) {
        Ok(t) => t,
        Err(_) => log.create_topic(&config.input.topic, config.input.partitions)?,
    };
    let metrics = Arc::new(Metrics::new());
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], args.port));
    let served = Served::start(
        addr,
        Arc::clone(&metrics),
        Some(Arc::new(LogAppender::new(topic.clone()))),
        args.dashboard_dir.clone(),
    )?;

    let path = msnbc_path(args.input.clone());
    let file = msnbc::scan(&path).with_context(|| format!("reading {}", path.display()))?;
    println!(
        "clickpulse demo: dashboard at http://{} — replaying {} MSNBC clicks at {}x; Ctrl-C to stop",
        served.addr,
        file.len(),
        args.speed
    );

    let stopping = Arc::new(AtomicBool::new(false));
    let replay_stop = Arc::clone(&stopping);
    let clicks = file
        .clicks()
        .with_context(|| format!("reading {}", path.display()))?
        .map(|c| c.context("reading the MSNBC file"));
    let mut clicks = ReadAhead::start(clicks)?;
    let mut writer = LogReplayWriter::new(LogWriter::new(topic.clone()), false).with_msnbc(file);
    let speed = args.speed;
    let replay = std::thread::Builder::new()
        .name("replay".into())
        .spawn(move || {
            let mut replayer: Replayer<'_, msnbc::MsnbcClick> = Replayer {
                writer: &mut writer,
                pace: Pace::Speed(speed),
                chunk: 2_000,
                progress: None,
            };
            let replayed = replayer.run(&mut clicks, || replay_stop.load(Ordering::Relaxed));
            match replayed.and_then(|s| clicks.finish().map(|()| s)) {
                Ok(s) => tracing::info!(events = s.events, "demo replay finished"),
                Err(e) => tracing::error!(error = %e, "demo replay failed"),
            }
        })?;

    let job = JobRun {
        config,
        mode: RunMode::Continuous,
        hub: Some(served.hub.clone()),
        metrics,
        from_scratch: true,
    };
    let report = job.run_log(topic, |handle| {
        stop_on_signal_with(move || {
            eprintln!("stopping: finishing the batch in progress");
            stopping.store(true, Ordering::Relaxed);
            handle.stop();
        });
    })?;
    let _ = replay.join();
    served.stop();
    println!(
        "demo stopped: {} events in {} batches; history lookups skipped by the Bloom filter: {:.0}%",
        report.events,
        report.batches,
        report.history_skip_rate * 100.0
    );
    Ok(())
}
