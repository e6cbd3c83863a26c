//! The `clickpulse` command: demo, run, replay, serve, bench, state, status, stop.

mod alloc;
mod bench;
mod cluster;
mod control;
mod demo;
mod feeds;
mod glue;
mod jobrun;
mod kafka;
mod replay;
mod server;
mod state;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use clickpulse_connectors::kafka::KafkaUrl;
use clickpulse_engine::RunMode;
use clickpulse_job::JobConfig;

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
    /// Replays clicks from a file into the embedded log or a Kafka topic.
    Replay(replay::ReplayArgs),
    /// Serves the dashboard, WebSocket/SSE hub and collector without running a job (with
    /// --from, the hub shows a job's results from Kafka).
    Serve(server::ServeArgs),
    /// Measures the whole standard job and its end-to-end latency.
    Bench(bench::BenchArgs),
    /// Prints the status of the job a `clickpulse run --serve` server runs.
    Status(control::ControlArgs),
    /// Asks the job a `clickpulse run --serve` server runs to stop after its batch in progress:
    /// it checkpoints, flushes its sinks and exits 0.
    Stop(control::ControlArgs),
    /// Reads a job's newest checkpoint without running it: operators with key and byte counts,
    /// or one operator's entries as JSON Lines. Read-only.
    State(state::StateArgs),
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
    #[arg(long, conflicts_with = "input_kafka")]
    log: Option<PathBuf>,
    /// The input topic (overrides input.topic; a Kafka URL's own topic wins).
    #[arg(long)]
    topic: Option<String>,
    /// Read clicks from Kafka instead of the embedded log: kafka://HOST:PORT/TOPIC (overrides
    /// input.kafka).
    #[arg(long, value_name = "URL", value_parser = KafkaUrl::parse)]
    input_kafka: Option<KafkaUrl>,
    /// Write each stream's batches as JSON Lines under this directory (overrides output.dir).
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Also write results to Kafka, one topic per stream (created when missing):
    /// kafka://HOST:PORT (overrides output.kafka; prefix: output.kafka_topic_prefix).
    #[arg(long, value_name = "URL", value_parser = KafkaUrl::parse)]
    output_kafka: Option<KafkaUrl>,
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
    /// Also serve the dashboard, hub and collector on this address (e.g. 127.0.0.1:8080); the
    /// collector appends to the job's input topic (embedded log or Kafka).
    #[arg(long)]
    serve: Option<std::net::SocketAddr>,
    /// Print the run's summary as one JSON line at the end.
    #[arg(long)]
    json: bool,
    /// Where checkpoints and the offset log live: a directory or
    /// s3://BUCKET/PREFIX?endpoint=URL&region=R&allow_http=true (overrides checkpoint.dir;
    /// default clickpulse-data/checkpoints/<job name>).
    #[arg(long, value_name = "DIR|URL")]
    checkpoint_dir: Option<String>,
    /// How often to checkpoint: a number of batches (10) or a duration (5s) (overrides
    /// checkpoint.interval; default 10s).
    #[arg(long, value_name = "N|DURATION")]
    checkpoint_interval: Option<String>,
    /// Start anew instead of resuming from the job's latest checkpoint; the old checkpoints are
    /// kept aside, not deleted.
    #[arg(long, conflicts_with = "no_checkpoint")]
    from_scratch: bool,
    /// Keep no offset log and no checkpoints (and do not resume): every start reads the input
    /// from its beginning (overrides checkpoint.enabled).
    #[arg(long)]
    no_checkpoint: bool,
    /// Run as one process of several: FILE lists every process's host:port, one per line,
    /// process 0 first (timely's host-file format). Every process gets the same host file and
    /// job file; results are gathered on process 0, which runs the sinks and the hub
    /// (overrides cluster.hosts).
    #[arg(long, value_name = "FILE")]
    hosts: Option<PathBuf>,
    /// This process's index in the host file (overrides cluster.process, which
    /// CLICKPULSE__CLUSTER__PROCESS also sets).
    #[arg(long, value_name = "I")]
    process: Option<usize>,
    /// Start the job as N processes on this machine over loopback, each with --workers
    /// workers, and restart them all from the latest checkpoint when one fails (overrides
    /// cluster.local_processes).
    #[arg(long, value_name = "N", conflicts_with_all = ["hosts", "process"])]
    local_processes: Option<usize>,
}

/// The job file with the flags applied, validated.
fn run_config(args: &RunArgs) -> anyhow::Result<JobConfig> {
    let mut config = JobConfig::load(args.config.as_deref())?;
    if let Some(log) = &args.log {
        config.input.log.clone_from(log);
    }
    if let Some(topic) = &args.topic {
        config.input.topic.clone_from(topic);
    }
    if let Some(url) = &args.input_kafka {
        config.input.kafka = Some(url.to_string());
    }
    if let Some(dir) = &args.output_dir {
        config.output.dir = Some(dir.clone());
    }
    if let Some(url) = &args.output_kafka {
        config.output.kafka = Some(url.to_string());
    }
    if let Some(w) = args.workers {
        config.engine.workers = w;
    }
    if let Some(b) = args.batch_interval {
        config.engine.batch_interval = b;
    }
    if let Some(dir) = &args.checkpoint_dir {
        config.checkpoint.dir = Some(dir.clone());
    }
    if let Some(interval) = &args.checkpoint_interval {
        config.checkpoint.interval.clone_from(interval);
    }
    if args.no_checkpoint {
        config.checkpoint.enabled = false;
    }
    if let Some(hosts) = &args.hosts {
        config.cluster.hosts = Some(hosts.clone());
    }
    if let Some(process) = args.process {
        config.cluster.process = Some(process);
    }
    if config.cluster.is_member() {
        // A member of a cluster, perhaps started by `--local-processes`: it starts no others.
        config.cluster.local_processes = 1;
    }
    if let Some(n) = args.local_processes {
        config.cluster.local_processes = n;
    }
    config.validate()?;
    config.cluster.check()?;
    Ok(config)
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = run_config(&args)?;
    if config.cluster.local_processes > 1 {
        return cluster::supervise(&args, &config);
    }
    let process = config.cluster.process.unwrap_or(0);
    if config.cluster.is_member() {
        cluster::follow_supervisor();
        if process != 0 && args.serve.is_some() && config.input.kafka.is_none() {
            anyhow::bail!(
                "--serve on process {process}: with the embedded log only process 0 serves (the log has one writer, and the hub is on process 0); read clicks from Kafka to run a collector on every process"
            );
        }
    }
    let mode = if args.until_end {
        if args.serve.is_none() {
            // The process ends with the input: no need to hand memory back before then.
            alloc::keep_freed_memory();
        }
        RunMode::UntilEnd
    } else {
        RunMode::Continuous
    };
    let input = jobrun::Input::open(&config, args.serve.is_none())?;
    let metrics = std::sync::Arc::new(clickpulse_server::Metrics::new());
    let served = match args.serve {
        Some(addr) => Some(server::Served::start(
            addr,
            std::sync::Arc::clone(&metrics),
            Some(input.appender()?),
            None,
        )?),
        None => None,
    };
    let job = jobrun::JobRun {
        config,
        mode,
        hub: served.as_ref().map(|s| s.hub.clone()),
        metrics,
        from_scratch: args.from_scratch,
    };
    let report = job.run_input(&input, server::stop_on_signal)?;
    if process != 0 {
        // Process 0 reports the job; the others say what they did on standard error.
        eprintln!(
            "process {process}: done after {} batches; sent {} bytes to the other processes",
            report.batches, report.exchange_bytes_sent
        );
    } else if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "processed {} events in {} batches ({} late, {} dead letters) in {:.2} s: {:.0} events/s; peak RSS {} MiB; history lookups skipped by the Bloom filter: {:.1}%",
            report.events,
            report.batches,
            report.late_events,
            report.dead_letters,
            report.elapsed_s,
            report.events_per_s,
            report.peak_rss_bytes.unwrap_or(0) / (1 << 20),
            report.history_skip_rate * 100.0
        );
        if let Some(b) = report.resumed_from_batch {
            println!(
                "resumed from the checkpoint of batch {b}; re-ran {} logged batches; batches {}..{}",
                report.replayed_batches,
                report.first_batch,
                report.first_batch + report.batches
            );
        }
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
        Command::Replay(args) => replay::run(args),
        Command::Serve(args) => server::serve(args),
        Command::Bench(args) => bench::run(args),
        Command::State(args) => state::run(args),
        Command::Status(args) => control::status(args),
        Command::Stop(args) => control::stop(args),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("clickpulse").chain(args.iter().copied()))
    }

    #[test]
    fn kafka_flags_parse_and_refuse_what_does_not_go_together() {
        assert!(
            parse(&[
                "replay",
                "--input",
                "f.ndjson",
                "--to",
                "kafka://h:9/clicks"
            ])
            .is_ok()
        );
        let refused: &[&[&str]] = &[
            &[
                "replay",
                "--input",
                "f",
                "--to",
                "kafka://h:9/c",
                "--log",
                "d",
            ],
            &[
                "replay",
                "--input",
                "f",
                "--to",
                "kafka://h:9/c",
                "--durability",
                "none",
            ],
            &["replay", "--input", "f", "--to", "http://h:9/c"],
            &["run", "--input-kafka", "kafka://h:9/c", "--log", "d"],
            &["run", "--output-kafka", "kafka://h:0"],
            &["serve", "--topic-prefix", "x."],
            &["serve", "--from", "kafka://h:9", "--catch-up", "some"],
        ];
        for args in refused {
            assert!(parse(args).is_err(), "{args:?} was accepted");
        }
    }

    #[test]
    fn cluster_flags_are_checked_and_name_the_key() {
        let run_args = |line: &[&str]| match parse(line) {
            Ok(Cli {
                command: Command::Run(args),
            }) => args,
            other => panic!("run did not parse: {other:?}"),
        };
        let err = |line: &[&str]| run_config(&run_args(line)).unwrap_err().to_string();
        assert!(err(&["run", "--process", "1"]).contains("cluster.process"));
        assert!(err(&["run", "--local-processes", "0"]).contains("cluster.local_processes"));
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, "# two\n127.0.0.1:2101\n127.0.0.1:2102\n").unwrap();
        let h = hosts.to_str().unwrap();
        let config = run_config(&run_args(&["run", "--hosts", h, "--process", "1"])).unwrap();
        assert_eq!(config.cluster.addresses().unwrap().len(), 2);
        let e = err(&["run", "--hosts", h, "--process", "5"]);
        assert!(
            e.contains("cluster.process") && e.contains("2 processes"),
            "{e}"
        );
        std::fs::write(&hosts, "127.0.0.1\n").unwrap();
        let e = err(&["run", "--hosts", h, "--process", "0"]);
        assert!(
            e.contains("cluster.hosts") && e.contains("not host:port"),
            "{e}"
        );
        assert!(parse(&["run", "--local-processes", "2", "--hosts", h]).is_err());
    }

    #[test]
    fn run_flags_override_the_job_file() {
        let Ok(Cli {
            command: Command::Run(args),
        }) = parse(&[
            "run",
            "--input-kafka",
            "kafka://h:9/clicks",
            "--output-kafka",
            "kafka://h:9",
        ])
        else {
            panic!("run did not parse");
        };
        let config = run_config(&args).unwrap();
        assert_eq!(config.input.kafka.as_deref(), Some("kafka://h:9/clicks"));
        assert_eq!(config.output.kafka.as_deref(), Some("kafka://h:9"));
        assert_eq!(config.output.kafka_topic_prefix, "clickpulse.");
    }

    #[test]
    fn an_output_url_with_a_topic_is_refused() {
        let Ok(Cli {
            command: Command::Run(args),
        }) = parse(&["run", "--output-kafka", "kafka://h:9/results"])
        else {
            panic!("run did not parse");
        };
        let err = run_config(&args).unwrap_err().to_string();
        assert!(err.contains("output.kafka"), "{err}");
    }
}
