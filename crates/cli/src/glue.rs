//! Glue between the engine, the job and the server: results into the hub, batch events into
//! metrics and the dashboard's streaming panel.

use std::sync::Arc;
use std::time::Duration;

use clickpulse_connectors::{ResultBatch, ResultSink, SinkError};
use clickpulse_engine::listener::{BatchCompleted, StreamingListener};
use clickpulse_job::{STREAMS, stream_fields};
use clickpulse_server::{Hub, Metrics, StreamUpdate};

/// Results into the WebSocket/SSE hub.
pub struct HubSink {
    hub: Hub,
}

impl HubSink {
    /// Registers the standard streams (and `batches`, `late_events`, `dead_letters`) with `hub`.
    pub fn new(hub: Hub) -> Self {
        register_streams(&hub);
        HubSink { hub }
    }
}

/// Registers every stream the standard job publishes.
pub fn register_streams(hub: &Hub) {
    let extra = ["late_events", "dead_letters"];
    for name in STREAMS.iter().chain(extra.iter()) {
        let fields = stream_fields(name).iter().map(|f| f.to_string()).collect();
        hub.register_stream(*name, fields);
    }
    let batch_fields = [
        "batch",
        "input_rows",
        "processing_ms",
        "scheduling_delay_ms",
        "total_delay_ms",
        "batch_interval_ms",
    ];
    hub.register_stream(
        "batches",
        batch_fields.iter().map(|f| f.to_string()).collect(),
    );
}

impl ResultSink for HubSink {
    fn name(&self) -> &str {
        "hub"
    }

    fn write(&mut self, batch: &ResultBatch) -> Result<(), SinkError> {
        self.hub
            .publish(update_of(batch))
            .map_err(|e| SinkError::Write {
                sink: "hub".into(),
                message: e.to_string(),
            })
    }
}

/// A result batch as a hub update, with its window bounds when it has both.
pub fn update_of(batch: &ResultBatch) -> StreamUpdate {
    let update = StreamUpdate::new(batch.stream.clone(), batch.batch, batch.rows.to_rows());
    match (batch.window_start_ms, batch.window_end_ms) {
        (Some(s), Some(e)) => update.with_window(s, e),
        _ => update,
    }
}

/// Batch events into Prometheus metrics and the `batches` stream.
pub struct BatchListener {
    pub hub: Option<Hub>,
    pub metrics: Arc<Metrics>,
    pub batch_interval: Duration,
    last_late: std::sync::atomic::AtomicU64,
    /// The last batch completed (for `GET /api/job`).
    pub last_batch: Arc<std::sync::atomic::AtomicU64>,
    /// The first batch id that is not a re-run of a logged batch (set after a restore).
    pub new_from: Arc<std::sync::atomic::AtomicU64>,
    /// When the first such batch completed.
    pub first_new_done: Arc<std::sync::OnceLock<std::time::Instant>>,
    /// Every worker of every process as it last reported (for `GET /api/job`).
    pub workers: Workers,
}

/// Every worker of every process as it last reported, with the events it read in all.
pub type Workers = Arc<std::sync::Mutex<std::collections::BTreeMap<u32, WorkerStatus>>>;

/// One worker as `GET /api/job` shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WorkerStatus {
    pub worker: u32,
    pub process: u32,
    pub events: u64,
    pub state_keys: u64,
    pub state_bytes: u64,
    /// Its partitions (`source/partition`): next offset, end and lag when it last reported.
    pub partitions: std::collections::BTreeMap<String, PartitionView>,
}

/// One partition as `GET /api/job` shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PartitionView {
    pub next: u64,
    pub end: Option<u64>,
    pub lag: Option<u64>,
}

impl BatchListener {
    /// A listener updating `metrics` and, when given, publishing to `hub`.
    pub fn new(hub: Option<Hub>, metrics: Arc<Metrics>, batch_interval: Duration) -> Self {
        BatchListener {
            hub,
            metrics,
            batch_interval,
            last_late: Default::default(),
            last_batch: Arc::default(),
            new_from: Arc::default(),
            first_new_done: Arc::default(),
            workers: Arc::default(),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl StreamingListener for BatchListener {
    fn on_batch_completed(&self, e: &BatchCompleted) {
        self.metrics.add_events_in(e.input_rows);
        self.metrics.add_bad_lines(e.dead_letters);
        let previous = self
            .last_late
            .swap(e.late_events_total, std::sync::atomic::Ordering::Relaxed);
        self.metrics
            .add_late_events(e.late_events_total.saturating_sub(previous));
        self.metrics
            .record_batch(e.processing_time, e.scheduling_delay);
        {
            let mut workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
            for w in &e.workers {
                self.metrics.record_worker(
                    w.process,
                    w.worker,
                    w.rows,
                    w.state_keys,
                    w.state_bytes,
                );
                if w.exchange_sent_bytes > 0 {
                    self.metrics
                        .set_exchange_sent(w.process, w.exchange_sent_bytes);
                }
                let status = workers.entry(w.worker).or_default();
                status.worker = w.worker;
                status.process = w.process;
                status.events += w.rows;
                status.state_keys = w.state_keys;
                status.state_bytes = w.state_bytes;
                for p in &w.partitions {
                    let view = PartitionView {
                        next: p.next,
                        end: p.end,
                        lag: p.end.map(|_| p.lag()),
                    };
                    if let Some(lag) = view.lag {
                        self.metrics.set_partition_lag(&p.source, p.partition, lag);
                    }
                    status
                        .partitions
                        .insert(format!("{}/{}", p.source, p.partition), view);
                }
            }
        }
        for (operator, size) in &e.state {
            self.metrics
                .set_operator_state(operator, size.keys, size.bytes);
        }
        if let Some(c) = e.last_checkpoint {
            self.metrics
                .set_last_checkpoint(c.batch, c.bytes, c.duration, c.written_at_ms);
        }
        self.last_batch
            .store(e.batch, std::sync::atomic::Ordering::Relaxed);
        if e.batch >= self.new_from.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = self.first_new_done.set(std::time::Instant::now());
        }
        let Some(hub) = &self.hub else { return };
        let row = serde_json::json!({
            "batch": e.batch,
            "input_rows": e.input_rows,
            "processing_ms": ms(e.processing_time),
            "scheduling_delay_ms": ms(e.scheduling_delay),
            "total_delay_ms": ms(e.total_delay),
            "batch_interval_ms": ms(self.batch_interval),
        });
        let update = StreamUpdate::new("batches", e.batch, vec![row.into()]);
        if let Err(err) = hub.publish(update) {
            tracing::debug!(error = %err, "could not publish batch stats");
        }
    }
}

/// The running job as `GET /api/job`, `POST /api/job/stop` and `POST /api/job/checkpoint` see
/// it.
pub struct RunControl {
    pub stop: clickpulse_engine::ShutdownHandle,
    pub checkpoint: Option<clickpulse_engine::checkpoint::CheckpointRequest>,
    pub engine: Arc<clickpulse_engine::metrics::EngineMetrics>,
    pub last_batch: Arc<std::sync::atomic::AtomicU64>,
    pub resumed_from_batch: Option<u64>,
    pub checkpoint_dir: Option<String>,
    pub workers: Workers,
}

impl RunControl {
    /// Every process with its workers as they last reported, and the bytes it sent.
    fn processes(&self) -> Vec<serde_json::Value> {
        let workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        let mut by_process: std::collections::BTreeMap<u32, Vec<&WorkerStatus>> =
            std::collections::BTreeMap::new();
        for w in workers.values() {
            by_process.entry(w.process).or_default().push(w);
        }
        let cluster = self.engine.cluster();
        by_process
            .into_iter()
            .map(|(process, ws)| {
                serde_json::json!({
                    "process": process,
                    "address": cluster.as_ref().and_then(|c| c.address(process as usize)),
                    "events": ws.iter().map(|w| w.events).sum::<u64>(),
                    "state_keys": ws.iter().map(|w| w.state_keys).sum::<u64>(),
                    "state_bytes": ws.iter().map(|w| w.state_bytes).sum::<u64>(),
                    "workers": ws,
                })
            })
            .collect()
    }
}

impl clickpulse_server::JobControl for RunControl {
    fn status(&self) -> serde_json::Value {
        let state = if self.stop.is_stopping() {
            "stopping"
        } else {
            "running"
        };
        serde_json::json!({
            "state": state,
            "last_batch": self.last_batch.load(std::sync::atomic::Ordering::Relaxed),
            "resumed_from_batch": self.resumed_from_batch,
            "checkpoints": self.checkpoint_dir,
            "last_checkpoint": self.engine.last_checkpoint(),
            "state_sizes": self.engine.state_sizes(),
            "late_events": self.engine.late_events(),
            "dead_letters": self.engine.dead_letters(),
            "processes": self.processes(),
        })
    }

    fn stop(&self) {
        tracing::info!("stop asked over HTTP: finishing the batch in progress");
        self.stop.stop();
    }

    fn checkpoint(&self) {
        if let Some(c) = &self.checkpoint {
            c.request();
        }
    }
}

/// Peak resident set size of this process, in bytes (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
