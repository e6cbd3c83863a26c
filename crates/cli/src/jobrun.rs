//! Running the standard job: open the input, wire the outputs, run the engine.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clickpulse_checkpoint::ObjectCheckpointStore;
use clickpulse_connectors::BackgroundSink;
use clickpulse_connectors::files::JsonlSink;
use clickpulse_connectors::log::LogSource;
use clickpulse_engine::checkpoint::{Checkpointing, ExtraHook};
use clickpulse_engine::source::PartitionedSource;
use clickpulse_engine::{Cluster, RunMode, RunSummary, ShutdownHandle, StreamingContext};
use clickpulse_job::click::{Click, IntoClick};
use clickpulse_job::history::History;
use clickpulse_job::{JobConfig, Outputs, StandardJob};
use clickpulse_log::{Log, LogOptions, Topic};
use clickpulse_server::{EventAppender, Hub, LogAppender, Metrics};

use crate::glue::{BatchListener, HubSink, RunControl};

/// The manifest entry holding the hub's history.
const HUB_EXTRA: &str = "hub";
use crate::kafka::{self, KafkaInput};

/// Where a job's clicks come from.
pub enum Input {
    /// A topic of the embedded log (the log stays open as long as this value).
    Log {
        /// The open log (held so it stays open while the job reads it).
        _log: Log,
        /// The clicks' topic.
        topic: Topic,
    },
    /// A Kafka topic (`input.kafka`).
    Kafka(KafkaInput),
}

impl Input {
    /// The Kafka topic when `input.kafka` is set, else the embedded log's topic; the topic is
    /// created when missing unless `read_only`.
    ///
    /// # Errors
    /// When the log or the cluster cannot be opened, or the topic is missing.
    pub fn open(config: &JobConfig, read_only: bool) -> anyhow::Result<Input> {
        match &config.input.kafka {
            Some(url) => Ok(Input::Kafka(KafkaInput::open(config, url, !read_only)?)),
            None => {
                let (log, topic) = open_topic(config, read_only)?;
                Ok(Input::Log { _log: log, topic })
            }
        }
    }

    /// Where the collector appends: the same topic.
    ///
    /// # Errors
    /// When the Kafka producer cannot be made.
    pub fn appender(&self) -> anyhow::Result<Arc<dyn EventAppender>> {
        Ok(match self {
            Input::Log { topic, .. } => Arc::new(LogAppender::new(topic.clone())),
            Input::Kafka(k) => Arc::new(k.appender()?),
        })
    }
}

/// Opens (or creates) the embedded log and the input topic.
pub fn open_topic(cfg: &JobConfig, read_only: bool) -> anyhow::Result<(Log, Topic)> {
    let dir = &cfg.input.log;
    let options = LogOptions::default().read_only(read_only);
    let log =
        Log::open(dir, options).with_context(|| format!("opening the log at {}", dir.display()))?;
    let topic = match log.topic(&cfg.input.topic) {
        Ok(t) => t,
        Err(_) if !read_only => log
            .create_topic(&cfg.input.topic, cfg.input.partitions)
            .with_context(|| format!("creating topic `{}`", cfg.input.topic))?,
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "topic `{}` in {} (replay clicks into it first: clickpulse replay --log {} --topic {})",
                    cfg.input.topic,
                    dir.display(),
                    dir.display(),
                    cfg.input.topic
                )
            });
        }
    };
    Ok((log, topic))
}

/// Everything a run of the standard job needs besides its input.
pub struct JobRun {
    pub config: JobConfig,
    pub mode: RunMode,
    pub hub: Option<Hub>,
    pub metrics: Arc<Metrics>,
    /// Ignore existing checkpoints and start a new history beside them.
    pub from_scratch: bool,
}

/// What a finished run did.
#[derive(Debug, serde::Serialize)]
pub struct RunReport {
    pub events: u64,
    pub batches: u64,
    pub late_events: u64,
    pub dead_letters: u64,
    pub elapsed_s: f64,
    pub events_per_s: f64,
    pub peak_rss_bytes: Option<u64>,
    pub history_skip_rate: f64,
    /// The batch of the checkpoint the run resumed from, if it resumed.
    pub resumed_from_batch: Option<u64>,
    /// The first batch the run processed (batch ids continue across restarts).
    pub first_batch: u64,
    /// Batches logged before the restart that the run re-ran exactly.
    pub replayed_batches: u64,
    /// Where the job's checkpoints live (unset when checkpoints are off).
    pub checkpoint: Option<String>,
    /// Seconds spent finding and reading the checkpoint to restore (unset without checkpoints).
    pub restore_s: Option<f64>,
    /// Seconds from the start of the run (checkpoint storage opened, state restored, logged
    /// batches re-run) to the first new batch completed.
    pub first_new_batch_s: Option<f64>,
    /// The checkpoints this run wrote.
    pub checkpoints: clickpulse_engine::metrics::CheckpointTotals,
    /// This process's index (0 unless the job runs on several processes).
    pub process: usize,
    /// How many processes run the job.
    pub processes: usize,
    /// Bytes this process sent to the other processes.
    pub exchange_bytes_sent: u64,
}

/// What [`JobRun::prepare`] makes besides the context and the job.
struct Prepared {
    ctx: StreamingContext,
    job: StandardJob,
    restore: Option<std::time::Duration>,
    first_new_done: Arc<std::sync::OnceLock<Instant>>,
    engine: Arc<clickpulse_engine::metrics::EngineMetrics>,
}

impl JobRun {
    /// Builds the engine context with listeners and the job with its sinks.
    fn prepare(&self) -> anyhow::Result<Prepared> {
        let e = &self.config.engine;
        let mut ctx = StreamingContext::new(e.batch_interval)?
            .workers(e.workers)?
            .key_groups(e.key_groups)?
            .max_records_per_partition(e.max_records_per_partition)?
            .mode(self.mode);
        let process = self.config.cluster.process.unwrap_or(0);
        if self.config.cluster.is_member() {
            let addresses = self.config.cluster.addresses()?;
            ctx = ctx
                .cluster(Cluster::Processes { addresses, process })?
                .connect_timeout(self.config.cluster.connect_timeout);
        }
        // Results are gathered on process 0: the sinks and the hub run there only.
        let gathers = process == 0;
        let hub = self.hub.clone().filter(|_| gathers);
        let listener = BatchListener::new(hub.clone(), Arc::clone(&self.metrics), e.batch_interval);
        let last_batch = Arc::clone(&listener.last_batch);
        let new_from = Arc::clone(&listener.new_from);
        let first_new_done = Arc::clone(&listener.first_new_done);
        let workers = Arc::clone(&listener.workers);
        ctx.add_listener(Arc::new(listener));
        let outputs = Outputs::new();
        if let Some(hub) = &hub {
            outputs.add(Box::new(HubSink::new(hub.clone())));
        }
        if let Some(dir) = self.config.output.dir.as_ref().filter(|_| gathers) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            // An fsync per file: on a thread of its own, off the engine's output thread.
            outputs.add(Box::new(BackgroundSink::new(JsonlSink::new(dir), 64)?));
        }
        if let Some(url) = self.config.output.kafka.as_ref().filter(|_| gathers) {
            let prefix = &self.config.output.kafka_topic_prefix;
            outputs.add(Box::new(kafka::result_sink(url, prefix)?));
        }
        let mut request = None;
        let mut restore = None;
        if self.config.checkpoint.enabled {
            let settings = self.checkpointing(&outputs)?;
            request = Some(settings.request_handle());
            let reading = Instant::now();
            ctx = ctx.checkpointing(settings)?;
            restore = Some(reading.elapsed());
            if let Some(r) = ctx.recovered() {
                let first_new = r.first_batch() + r.replay_batches();
                new_from.store(first_new, std::sync::atomic::Ordering::Relaxed);
            }
        }
        if let Some(hub) = &hub {
            self.restore_hub(hub, &ctx);
            hub.set_job_control(Arc::new(RunControl {
                stop: ctx.shutdown_handle(),
                checkpoint: request,
                engine: ctx.metrics(),
                last_batch,
                resumed_from_batch: ctx.recovered().and_then(|r| r.resumed_from()),
                workers,
                checkpoint_dir: self
                    .config
                    .checkpoint
                    .enabled
                    .then(|| self.config.checkpoint.location(&self.config.name)),
            }));
        }
        let history =
            Arc::new(History::load(&self.config.history).context("loading the history table")?);
        history.reload_every(self.config.history.clone());
        tracing::info!(visitors = history.len(), "history table loaded");
        let job = StandardJob {
            config: self.config.clone(),
            outputs,
            history,
        };
        Ok(Prepared {
            engine: ctx.metrics(),
            ctx,
            job,
            restore,
            first_new_done,
        })
    }

    /// Gives the hub back the history it had at the restored checkpoint, so that clients
    /// resuming by batch id after the restart miss and repeat nothing (the re-run batches after
    /// the checkpoint are published again).
    fn restore_hub(&self, hub: &Hub, ctx: &StreamingContext) {
        let Some(snapshot) = ctx.recovered().and_then(|r| r.extra().remove(HUB_EXTRA)) else {
            return;
        };
        match hub.restore(&snapshot) {
            Ok(()) => tracing::info!("hub history restored from the checkpoint"),
            Err(e) => {
                tracing::warn!(error = %e, "hub history not restored; resuming clients will resync")
            }
        }
    }

    /// The job's checkpoint settings: its storage, interval and fingerprint; a manifest is
    /// written only once every sink has delivered its batch, and keeps the hub's history.
    fn checkpointing(&self, outputs: &Outputs) -> anyhow::Result<Checkpointing> {
        let c = &self.config.checkpoint;
        let location = c.location(&self.config.name);
        let store = ObjectCheckpointStore::open(&location).with_context(|| {
            format!("opening the checkpoint storage (checkpoint.dir = {location})")
        })?;
        let sinks = outputs.clone();
        Ok(Checkpointing::new(Arc::new(store))
            .interval(c.interval()?)
            .keep(c.keep)
            .from_scratch(self.from_scratch)
            .fingerprint(self.config.fingerprint())
            .on_commit(Arc::new(move |_batch| sinks.flush()))
            .on_manifest(self.hub_snapshots()))
    }

    /// Each manifest keeps the hub's retained history up to its batch.
    fn hub_snapshots(&self) -> ExtraHook {
        let hub = self.hub.clone();
        Arc::new(move |batch| {
            let mut extra = BTreeMap::new();
            if let Some(hub) = &hub {
                match hub.snapshot(batch) {
                    Ok(text) => {
                        extra.insert(HUB_EXTRA.to_string(), text);
                    }
                    Err(e) => tracing::warn!(error = %e, batch, "hub history not saved"),
                }
            }
            extra
        })
    }

    /// Runs the job over `input` until its end (until-end mode) or until `stop` fires.
    pub fn run_input(
        &self,
        input: &Input,
        stop: impl FnOnce(ShutdownHandle),
    ) -> anyhow::Result<RunReport> {
        match input {
            Input::Log { topic, .. } => self.run_log(topic.clone(), stop),
            Input::Kafka(k) => self.run(k.source.clone(), stop),
        }
    }

    /// Runs the job over a topic of the embedded log, whose records are decoded straight into
    /// clicks.
    pub fn run_log(
        &self,
        topic: Topic,
        stop: impl FnOnce(ShutdownHandle),
    ) -> anyhow::Result<RunReport> {
        self.run(LogSource::decoding(topic, Click::decode), stop)
    }

    /// Runs the job over `source` until its end (until-end mode) or until `stop` fires.
    pub fn run<S>(&self, source: S, stop: impl FnOnce(ShutdownHandle)) -> anyhow::Result<RunReport>
    where
        S: PartitionedSource + Clone + Send + Sync + 'static,
        S::Item: IntoClick,
    {
        let begun = Instant::now();
        let Prepared {
            ctx,
            job,
            restore,
            first_new_done,
            engine,
        } = self.prepare()?;
        stop(ctx.shutdown_handle());
        let checkpoint = self
            .config
            .checkpoint
            .enabled
            .then(|| self.config.checkpoint.location(&self.config.name));
        let history = Arc::clone(&job.history);
        let outputs = job.outputs.clone();
        let started = Instant::now();
        let summary = ctx.run(move |j| job.build(j, &source));
        // The hub holds the job's control while it runs; the job holds the hub.
        if let Some(hub) = &self.hub {
            hub.clear_job_control();
        }
        let summary: RunSummary = summary?;
        // Until every result is delivered (files written, records acknowledged).
        outputs.flush().map_err(anyhow::Error::msg)?;
        let elapsed = started.elapsed().as_secs_f64();
        Ok(RunReport {
            events: summary.input_rows,
            batches: summary.batches,
            late_events: summary.late_events,
            dead_letters: summary.dead_letters,
            elapsed_s: elapsed,
            events_per_s: summary.input_rows as f64 / elapsed.max(1e-9),
            peak_rss_bytes: crate::glue::peak_rss_bytes(),
            history_skip_rate: history.skip_rate(),
            resumed_from_batch: summary.resumed_from_batch,
            first_batch: summary.first_batch,
            replayed_batches: summary.replayed_batches,
            checkpoint,
            restore_s: restore.map(|d| d.as_secs_f64()),
            first_new_batch_s: first_new_done
                .get()
                .map(|t| t.saturating_duration_since(begun).as_secs_f64()),
            checkpoints: engine.checkpoint_totals(),
            process: self.config.cluster.process.unwrap_or(0),
            processes: engine.cluster().map_or(1, |c| c.processes()),
            exchange_bytes_sent: summary.exchange_bytes_sent,
        })
    }
}
