//! The `clickpulse` command: demo, run, replay, serve, bench.

mod bench;
mod demo;
mod glue;
mod jobrun;
mod replay;
mod server;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use clickpulse_engine::RunMode;
use clickpulse_events::Format;
use clickpulse_job::JobConfig;
use clickpulse_log::{Durability, Log, LogOptions};

// The engine allocates many small strings and vectors on several threads at once, where
// mimalloc is markedly faster than the system allocator (measured in docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// clickpulse: real-time clickstream analytics in one binary.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Everything embedded: replays MSNBC into the embedded log, runs the standard job and serves
    /// the live dashboard.
    Demo(demo::DemoArgs),
    /// Runs the standard job from a job file (flags override the file).
    Run(RunArgs),
    /// Replays clicks from a file into the embedded log.
    Replay(ReplayArgs),
    /// Serves the dashboard, WebSocket/SSE hub and collector without running a job.
    Serve(server::ServeArgs),
    /// Measures the whole standard job and its end-to-end latency.
    Bench(bench::BenchArgs),
    /// Writes the demo visitor-history table as CSV.
    GenHistory {
        /// Output file (standard output when absent).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// `clickpulse run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job file (TOML). Without one, the standard job runs with its defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The embedded log directory (overrides input.log).
    #[arg(long)]
    log: Option<PathBuf>,
    /// The input topic (overrides input.topic).
    #[arg(long)]
    topic: Option<String>,
    /// Write each stream's batches as JSON Lines under this directory (overrides output.dir).
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Process the input up to its current end, emit everything (closing every window and
    /// session) and stop.
    #[arg(long)]
    until_end: bool,
    /// Worker threads (overrides engine.workers).
    #[arg(long)]
    workers: Option<usize>,
    /// Batch interval, e.g. 500ms (overrides engine.batch_interval).
    #[arg(long, value_parser = humantime::parse_duration)]
    batch_interval: Option<Duration>,
    /// Also serve the dashboard, hub and collector on this address (e.g. 127.0.0.1:8080).
    #[arg(long)]
    serve: Option<std::net::SocketAddr>,
    /// Print the run's summary as one JSON line at the end.
    #[arg(long)]
    json: bool,
}

/// `clickpulse replay`
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The input file.
    #[arg(long)]
    input: PathBuf,
    /// msnbc, tsv, csv or ndjson. Default: msnbc for *.seq / *.seq.gz, else from the extension.
    #[arg(long)]
    format: Option<Format>,
    /// The embedded log directory.
    #[arg(long, default_value = "clickpulse-data/log")]
    log: PathBuf,
    /// The topic (created with --partitions partitions when missing).
    #[arg(long, default_value = "clicks")]
    topic: String,
    /// Partitions of a new topic.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// A steady rate in events/s (default: as fast as possible).
    #[arg(long, conflicts_with = "speed")]
    rate: Option<f64>,
    /// Replay at the events' own clock sped up by this factor (60 = an hour of clicks a minute).
    #[arg(long)]
    speed: Option<f64>,
    /// When appends are fsynced: none, batch (every append) or an interval such as 100ms.
    #[arg(long, default_value = "batch")]
    durability: String,
    /// Where unparseable lines are kept (JSON Lines with their position).
    #[arg(long, default_value = "dead-letters.jsonl")]
    dead_letters: PathBuf,
}

/// Parses `none`, `batch` or a duration.
fn parse_durability(s: &str) -> anyhow::Result<Durability> {
    match s {
        "none" => Ok(Durability::None),
        "batch" => Ok(Durability::EveryBatch),
        other => humantime::parse_duration(other)
            .map(Durability::Interval)
            .with_context(|| {
                format!("--durability `{other}`: expected none, batch or a duration like 100ms")
            }),
    }
}

fn format_for(path: &std::path::Path, given: Option<Format>) -> anyhow::Result<Format> {
    if let Some(f) = given {
        return Ok(f);
    }
    let name = path.to_string_lossy();
    let guess = [
        (".seq.gz", Format::Msnbc),
        (".seq", Format::Msnbc),
        (".tsv", Format::Tsv),
        (".csv", Format::Csv),
        (".ndjson", Format::Ndjson),
        (".jsonl", Format::Ndjson),
    ];
    guess
        .iter()
        .find(|(ext, _)| name.ends_with(ext))
        .map(|(_, f)| *f)
        .with_context(|| {
            format!("cannot tell the format of {name}: pass --format msnbc|tsv|csv|ndjson")
        })
}

fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let format = format_for(&args.input, args.format)?;
    let durability = parse_durability(&args.durability)?;
    let log = Log::open(&args.log, LogOptions::default().durability(durability))
        .with_context(|| format!("opening the log at {}", args.log.display()))?;
    let topic = match log.topic(&args.topic) {
        Ok(t) => t,
        Err(_) => log.create_topic(&args.topic, args.partitions)?,
    };
    let (events, total, bad) = replay::read_input(&args.input, format, &args.dead_letters)?;
    let pace = match (args.rate, args.speed) {
        (Some(r), _) if r > 0.0 => replay::Pace::Rate(r),
        (_, Some(s)) if s > 0.0 => replay::Pace::Speed(s),
        (None, None) => replay::Pace::Unlimited,
        _ => anyhow::bail!("--rate and --speed must be positive"),
    };
    let writer = clickpulse_connectors::log::LogWriter::new(topic);
    let progress = replay::progress_bar(total);
    let replayer = replay::Replayer {
        writer: &writer,
        pace,
        chunk: 10_000,
        progress: Some(progress.clone()),
    };
    let mut summary = replayer.run(events, || false)?;
    progress.finish();
    summary.bad_lines = bad.count();
    println!(
        "replayed {} events into {}/{} ({} bad lines{}) in {:.2} s: {:.0} events/s",
        summary.events,
        args.log.display(),
        args.topic,
        summary.bad_lines,
        if summary.bad_lines > 0 {
            format!(", kept in {}", args.dead_letters.display())
        } else {
            String::new()
        },
        summary.elapsed_s,
        summary.events_per_s
    );
    Ok(())
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut config = JobConfig::load(args.config.as_deref())?;
    if let Some(log) = args.log {
        config.input.log = log;
    }
    if let Some(topic) = args.topic {
        config.input.topic = topic;
    }
    if let Some(dir) = args.output_dir {
        config.output.dir = Some(dir);
    }
    if let Some(w) = args.workers {
        config.engine.workers = w;
    }
    if let Some(b) = args.batch_interval {
        config.engine.batch_interval = b;
    }
    config.validate()?;
    let mode = if args.until_end {
        RunMode::UntilEnd
    } else {
        RunMode::Continuous
    };
    let (_log, topic) = jobrun::open_topic(&config, args.serve.is_none())?;
    let metrics = std::sync::Arc::new(clickpulse_server::Metrics::new());
    let served = match args.serve {
        Some(addr) => Some(server::Served::start(
            addr,
            std::sync::Arc::clone(&metrics),
            Some(topic.clone()),
            None,
        )?),
        None => None,
    };
    let job = jobrun::JobRun {
        config,
        mode,
        hub: served.as_ref().map(|s| s.hub.clone()),
        metrics,
    };
    let report = job.run(topic, server::stop_on_signal)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "processed {} events in {} batches ({} late, {} dead letters) in {:.2} s: {:.0} events/s; peak RSS {} MiB",
            report.events,
            report.batches,
            report.late_events,
            report.dead_letters,
            report.elapsed_s,
            report.events_per_s,
            report.peak_rss_bytes.unwrap_or(0) / (1 << 20)
        );
    }
    if let Some(s) = served {
        s.stop();
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Run(args) => run(args),
        Command::Replay(args) => replay(args),
        Command::Serve(args) => server::serve(args),
        Command::Bench(args) => bench::run(args),
        Command::GenHistory { out } => {
            match out {
                Some(path) => {
                    let file = std::fs::File::create(&path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    clickpulse_job::history::write_demo_history_csv(std::io::BufWriter::new(file))?;
                }
                None => clickpulse_job::history::write_demo_history_csv(std::io::stdout().lock())?,
            }
            Ok(())
        }
    }
}
