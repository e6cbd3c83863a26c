//! Running the standard job: open the input, wire the outputs, run the engine.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clickpulse_connectors::files::JsonlSink;
use clickpulse_connectors::log::LogSource;
use clickpulse_engine::{RunMode, RunSummary, ShutdownHandle, StreamingContext};
use clickpulse_job::history::History;
use clickpulse_job::{JobConfig, Outputs, StandardJob};
use clickpulse_log::{Log, LogOptions, Topic};
use clickpulse_server::{Hub, Metrics};

use crate::glue::{BatchListener, HubSink};

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
}

impl JobRun {
    /// Builds the engine context with listeners and the job with its sinks.
    fn prepare(&self) -> anyhow::Result<(StreamingContext, StandardJob)> {
        let e = &self.config.engine;
        let mut ctx = StreamingContext::new(e.batch_interval)?
            .workers(e.workers)?
            .max_records_per_partition(e.max_records_per_partition)?
            .mode(self.mode);
        ctx.add_listener(Arc::new(BatchListener::new(
            self.hub.clone(),
            Arc::clone(&self.metrics),
            e.batch_interval,
        )));
        let outputs = Outputs::new();
        if let Some(hub) = &self.hub {
            outputs.add(Box::new(HubSink::new(hub.clone())));
        }
        if let Some(dir) = &self.config.output.dir {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            outputs.add(Box::new(JsonlSink::new(dir)));
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
        Ok((ctx, job))
    }

    /// Runs the job over `topic` until its end (until-end mode) or until `stop` fires.
    pub fn run(
        &self,
        topic: Topic,
        stop: impl FnOnce(ShutdownHandle),
    ) -> anyhow::Result<RunReport> {
        let (ctx, job) = self.prepare()?;
        stop(ctx.shutdown_handle());
        let history = Arc::clone(&job.history);
        let source = LogSource::new(topic);
        let started = Instant::now();
        let summary: RunSummary = ctx.run(move |j| job.build(j, &source))?;
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
        })
    }
}
