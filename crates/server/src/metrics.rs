//! The process-wide metrics registry, exposed at `GET /metrics`.
//!
//! Built on [`prometheus_client`]: every metric is an atomic, so the engine, the log and the
//! server update them from any thread without locks (the per-operator gauges take a read lock
//! on their label map). The crate stays out of the public API: callers use the named methods
//! of [`Metrics`].
//!
//! The last checkpoint's gauges are set by the job when a checkpoint is written
//! ([`Metrics::set_last_checkpoint`]); its age is computed when the metrics are scraped, so it
//! grows while no checkpoint is written.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The content type of [`Metrics::encode`]'s output (OpenMetrics text, which Prometheus
/// scrapes natively).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The label of the per-operator state gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperatorLabels {
    operator: String,
}

/// The labels of the per-worker metrics (a job of several processes has workers on each).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    process: u32,
    worker: u32,
}

/// The labels of the per-partition metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    source: String,
    partition: u32,
}

/// The label of the per-process metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessLabels {
    process: u32,
}

/// A gauge holding seconds as an `f64`.
type SecondsGauge = Gauge<f64, AtomicU64>;

/// `clickpulse_last_checkpoint_age_seconds`: seconds since the last checkpoint was written,
/// computed at every scrape; absent from the exposition before the first checkpoint (an age
/// of 0 would claim a fresh one).
#[derive(Debug, Clone)]
struct CheckpointAge {
    /// When the last checkpoint was written, ms since the epoch; [`CheckpointAge::NEVER`]
    /// before the first.
    written_at_ms: Arc<AtomicU64>,
}

impl CheckpointAge {
    const NEVER: u64 = u64::MAX;

    fn new() -> Self {
        CheckpointAge {
            written_at_ms: Arc::new(AtomicU64::new(Self::NEVER)),
        }
    }

    fn set(&self, written_at_ms: u64) {
        self.written_at_ms.store(written_at_ms, Ordering::Relaxed);
    }

    fn written_at_ms(&self) -> Option<u64> {
        Some(self.written_at_ms.load(Ordering::Relaxed)).filter(|&ms| ms != Self::NEVER)
    }
}

impl EncodeMetric for CheckpointAge {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let age = self
            .written_at_ms()
            .map_or(0.0, |written| age_seconds(written, now_ms()));
        encoder.encode_gauge(&age)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }

    fn is_empty(&self) -> bool {
        self.written_at_ms().is_none()
    }
}

/// Seconds from `written_at_ms` to `now_ms`; 0 when the clock is behind the writer's.
fn age_seconds(written_at_ms: u64, now_ms: u64) -> f64 {
    Duration::from_millis(now_ms.saturating_sub(written_at_ms)).as_secs_f64()
}

fn now_ms() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

/// Counters and gauges of the whole process, all prefixed `clickpulse_`.
///
/// Share it as `Arc<Metrics>`; every method takes `&self` and is safe to call from any thread.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use clickpulse_server::Metrics;
///
/// let metrics = Metrics::new();
/// metrics.add_events_in(3);
/// metrics.record_batch(Duration::from_millis(40), Duration::from_millis(2));
/// metrics.set_operator_state("page_views_30s", 120, 8_192);
/// let text = metrics.encode().expect("encodes");
/// assert!(text.contains("clickpulse_events_in_total 3"));
/// assert!(text.contains(r#"clickpulse_operator_state_keys{operator="page_views_30s"} 120"#));
/// ```
pub struct Metrics {
    registry: Registry,
    events_in: Counter,
    bad_lines: Counter,
    late_events: Counter,
    batches: Counter,
    batch_processing: SecondsGauge,
    batch_scheduling_delay: SecondsGauge,
    batch_processing_hist: Histogram,
    state_keys: Family<OperatorLabels, Gauge>,
    state_bytes: Family<OperatorLabels, Gauge>,
    ws_clients: Gauge,
    sse_clients: Gauge,
    conflated: Counter,
    collector_requests: Counter,
    collector_events: Counter,
    collector_rejected: Counter,
    checkpoint_batch: Gauge,
    checkpoint_bytes: Gauge,
    checkpoint_duration: SecondsGauge,
    checkpoint_age: CheckpointAge,
    worker_events: Family<WorkerLabels, Counter>,
    worker_state_keys: Family<WorkerLabels, Gauge>,
    worker_state_bytes: Family<WorkerLabels, Gauge>,
    exchange_sent: Family<ProcessLabels, Gauge>,
    partition_lag: Family<PartitionLabels, Gauge>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric at zero.
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("clickpulse"),
            events_in: Counter::default(),
            bad_lines: Counter::default(),
            late_events: Counter::default(),
            batches: Counter::default(),
            batch_processing: SecondsGauge::default(),
            batch_scheduling_delay: SecondsGauge::default(),
            // 1 ms … ~16 s: micro-batches run from tens of ms to seconds.
            batch_processing_hist: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            state_keys: Family::default(),
            state_bytes: Family::default(),
            ws_clients: Gauge::default(),
            sse_clients: Gauge::default(),
            conflated: Counter::default(),
            collector_requests: Counter::default(),
            collector_events: Counter::default(),
            collector_rejected: Counter::default(),
            checkpoint_batch: Gauge::default(),
            checkpoint_bytes: Gauge::default(),
            checkpoint_duration: SecondsGauge::default(),
            checkpoint_age: CheckpointAge::new(),
            worker_events: Family::default(),
            worker_state_keys: Family::default(),
            worker_state_bytes: Family::default(),
            exchange_sent: Family::default(),
            partition_lag: Family::default(),
        };
        m.register_all();
        m
    }

    fn register_all(&mut self) {
        let r = &mut self.registry;
        r.register(
            "worker_events_in",
            "Events read by each worker of each process",
            self.worker_events.clone(),
        );
        r.register(
            "worker_state_keys",
            "Keys held by each worker's stateful operators",
            self.worker_state_keys.clone(),
        );
        r.register_with_unit(
            "worker_state",
            "Approximate bytes of each worker's operator state",
            Unit::Bytes,
            self.worker_state_bytes.clone(),
        );
        r.register(
            "partition_lag",
            "Records of each input partition not read yet (when its end is known)",
            self.partition_lag.clone(),
        );
        r.register_with_unit(
            "exchange_sent",
            "Bytes each process sent to the other processes of the job",
            Unit::Bytes,
            self.exchange_sent.clone(),
        );
        r.register(
            "events_in",
            "Events read by the engine",
            self.events_in.clone(),
        );
        r.register(
            "bad_lines",
            "Input lines that did not parse",
            self.bad_lines.clone(),
        );
        r.register(
            "late_events",
            "Events too late for their window",
            self.late_events.clone(),
        );
        r.register("batches", "Micro-batches completed", self.batches.clone());
        r.register_with_unit(
            "last_batch_processing",
            "Processing time of the latest batch",
            Unit::Seconds,
            self.batch_processing.clone(),
        );
        r.register_with_unit(
            "last_batch_scheduling_delay",
            "Scheduling delay of the latest batch (start minus due time)",
            Unit::Seconds,
            self.batch_scheduling_delay.clone(),
        );
        r.register_with_unit(
            "batch_processing",
            "Batch processing time",
            Unit::Seconds,
            self.batch_processing_hist.clone(),
        );
        r.register(
            "operator_state_keys",
            "Keys held by a stateful operator",
            self.state_keys.clone(),
        );
        r.register_with_unit(
            "operator_state",
            "Approximate state size of a stateful operator",
            Unit::Bytes,
            self.state_bytes.clone(),
        );
        r.register(
            "ws_clients",
            "Connected WebSocket clients",
            self.ws_clients.clone(),
        );
        r.register(
            "sse_clients",
            "Connected SSE clients",
            self.sse_clients.clone(),
        );
        r.register(
            "conflated_messages",
            "Hub messages replaced before a slow client took them",
            self.conflated.clone(),
        );
        r.register(
            "collector_requests",
            "Collector requests",
            self.collector_requests.clone(),
        );
        r.register(
            "collector_events",
            "Events accepted by the collector",
            self.collector_events.clone(),
        );
        r.register(
            "collector_rejected",
            "Events rejected by the collector",
            self.collector_rejected.clone(),
        );
        self.register_checkpoint();
    }

    fn register_checkpoint(&mut self) {
        let r = &mut self.registry;
        r.register(
            "last_checkpoint_batch",
            "Batch of the last checkpoint written",
            self.checkpoint_batch.clone(),
        );
        r.register_with_unit(
            "last_checkpoint",
            "Size of the last checkpoint written",
            Unit::Bytes,
            self.checkpoint_bytes.clone(),
        );
        r.register_with_unit(
            "last_checkpoint_duration",
            "Time the last checkpoint took to write",
            Unit::Seconds,
            self.checkpoint_duration.clone(),
        );
        r.register_with_unit(
            "last_checkpoint_age",
            "Time since the last checkpoint was written (absent before the first)",
            Unit::Seconds,
            self.checkpoint_age.clone(),
        );
    }

    /// Adds `n` to `clickpulse_events_in_total`.
    pub fn add_events_in(&self, n: u64) {
        self.events_in.inc_by(n);
    }

    /// Adds `n` to `clickpulse_bad_lines_total`.
    pub fn add_bad_lines(&self, n: u64) {
        self.bad_lines.inc_by(n);
    }

    /// Adds `n` to `clickpulse_late_events_total`.
    pub fn add_late_events(&self, n: u64) {
        self.late_events.inc_by(n);
    }

    /// Records a completed batch: increments `clickpulse_batches_total`, sets the last
    /// processing time and scheduling delay gauges and feeds the processing-time histogram.
    pub fn record_batch(&self, processing: Duration, scheduling_delay: Duration) {
        self.batches.inc();
        self.batch_processing.set(processing.as_secs_f64());
        self.batch_scheduling_delay
            .set(scheduling_delay.as_secs_f64());
        self.batch_processing_hist.observe(processing.as_secs_f64());
    }

    /// Sets the state size of `operator` (`clickpulse_operator_state_keys` and
    /// `clickpulse_operator_state_bytes`).
    pub fn set_operator_state(&self, operator: &str, keys: u64, bytes: u64) {
        let labels = OperatorLabels {
            operator: operator.to_owned(),
        };
        self.state_keys
            .get_or_create(&labels)
            .set(saturating_i64(keys));
        self.state_bytes
            .get_or_create(&labels)
            .set(saturating_i64(bytes));
    }

    /// Records what worker `worker` of process `process` did in a batch: `rows` read
    /// (`clickpulse_worker_events_in_total`) and the state it holds
    /// (`clickpulse_worker_state_keys`, `clickpulse_worker_state_bytes`).
    ///
    /// # Examples
    /// ```
    /// use clickpulse_server::Metrics;
    /// let metrics = Metrics::new();
    /// metrics.record_worker(1, 3, 500, 20, 4096);
    /// metrics.set_exchange_sent(1, 1 << 20);
    /// let text = metrics.encode().expect("encodes");
    /// assert!(text.contains(r#"clickpulse_worker_events_in_total{process="1",worker="3"} 500"#));
    /// assert!(text.contains(r#"clickpulse_exchange_sent_bytes{process="1"} 1048576"#));
    /// ```
    pub fn record_worker(&self, process: u32, worker: u32, rows: u64, keys: u64, bytes: u64) {
        let labels = WorkerLabels { process, worker };
        self.worker_events.get_or_create(&labels).inc_by(rows);
        self.worker_state_keys
            .get_or_create(&labels)
            .set(saturating_i64(keys));
        self.worker_state_bytes
            .get_or_create(&labels)
            .set(saturating_i64(bytes));
    }

    /// Sets the records of `source`'s partition `partition` not read yet
    /// (`clickpulse_partition_lag`).
    pub fn set_partition_lag(&self, source: &str, partition: u32, lag: u64) {
        let labels = PartitionLabels {
            source: source.to_owned(),
            partition,
        };
        self.partition_lag
            .get_or_create(&labels)
            .set(saturating_i64(lag));
    }

    /// Sets the bytes process `process` sent to the others (`clickpulse_exchange_sent_bytes`).
    pub fn set_exchange_sent(&self, process: u32, bytes: u64) {
        self.exchange_sent
            .get_or_create(&ProcessLabels { process })
            .set(saturating_i64(bytes));
    }

    /// Records a checkpoint written: `clickpulse_last_checkpoint_batch`, `_bytes` and
    /// `_duration_seconds`, and the time it was written (`written_at_ms`, ms since the epoch),
    /// from which `clickpulse_last_checkpoint_age_seconds` is computed at every scrape.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use clickpulse_server::Metrics;
    ///
    /// let metrics = Metrics::new();
    /// assert!(!metrics.encode().expect("encodes").contains("clickpulse_last_checkpoint_age"));
    /// metrics.set_last_checkpoint(42, 4096, Duration::from_millis(250), 1_700_000_000_000);
    /// let text = metrics.encode().expect("encodes");
    /// assert!(text.contains("clickpulse_last_checkpoint_batch 42"));
    /// assert!(text.contains("clickpulse_last_checkpoint_age_seconds "));
    /// ```
    pub fn set_last_checkpoint(
        &self,
        batch: u64,
        bytes: u64,
        duration: Duration,
        written_at_ms: u64,
    ) {
        self.checkpoint_batch.set(saturating_i64(batch));
        self.checkpoint_bytes.set(saturating_i64(bytes));
        self.checkpoint_duration.set(duration.as_secs_f64());
        self.checkpoint_age.set(written_at_ms);
    }

    /// Adds `n` to `clickpulse_conflated_messages_total`.
    pub fn add_conflated(&self, n: u64) {
        self.conflated.inc_by(n);
    }

    /// Counts one collector request with its accepted and rejected events.
    pub fn record_collect(&self, accepted: u64, rejected: u64) {
        self.collector_requests.inc();
        self.collector_events.inc_by(accepted);
        self.collector_rejected.inc_by(rejected);
    }

    /// Increments `clickpulse_ws_clients` until the guard is dropped.
    pub fn ws_client(&self) -> ClientGuard {
        ClientGuard::new(self.ws_clients.clone())
    }

    /// Increments `clickpulse_sse_clients` until the guard is dropped.
    pub fn sse_client(&self) -> ClientGuard {
        ClientGuard::new(self.sse_clients.clone())
    }

    /// Current `clickpulse_conflated_messages_total`.
    pub fn conflated(&self) -> u64 {
        self.conflated.get()
    }

    /// Current (`clickpulse_ws_clients`, `clickpulse_sse_clients`).
    pub fn clients(&self) -> (i64, i64) {
        (self.ws_clients.get(), self.sse_clients.get())
    }

    /// The OpenMetrics text exposition of every metric, ending in `# EOF`.
    ///
    /// # Errors
    /// Only if formatting fails, which writing to a `String` does not.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::with_capacity(4096);
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Keeps a client gauge incremented while alive (see [`Metrics::ws_client`]).
#[derive(Debug)]
pub struct ClientGuard {
    gauge: Gauge,
}

impl ClientGuard {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        ClientGuard { gauge }
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_metric() {
        let m = Metrics::new();
        m.add_events_in(5);
        m.add_bad_lines(1);
        m.add_late_events(2);
        m.record_batch(Duration::from_millis(250), Duration::from_millis(10));
        m.set_operator_state("sessions", 7, 700);
        m.add_conflated(4);
        m.record_collect(10, 3);
        let _ws = m.ws_client();
        let text = m.encode().expect("encodes");
        for line in [
            "clickpulse_events_in_total 5",
            "clickpulse_bad_lines_total 1",
            "clickpulse_late_events_total 2",
            "clickpulse_batches_total 1",
            "clickpulse_last_batch_processing_seconds 0.25",
            "clickpulse_last_batch_scheduling_delay_seconds 0.01",
            "clickpulse_batch_processing_seconds_count 1",
            r#"clickpulse_operator_state_keys{operator="sessions"} 7"#,
            r#"clickpulse_operator_state_bytes{operator="sessions"} 700"#,
            "clickpulse_ws_clients 1",
            "clickpulse_sse_clients 0",
            "clickpulse_conflated_messages_total 4",
            "clickpulse_collector_requests_total 1",
            "clickpulse_collector_events_total 10",
            "clickpulse_collector_rejected_total 3",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    /// The value of the sample line named `name` (without labels).
    fn sample(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .map(|v| v.parse().expect("a number"))
    }

    #[test]
    fn checkpoint_gauges_appear_once_set_and_the_age_is_computed_when_scraped() {
        let m = Metrics::new();
        let before = m.encode().expect("encodes");
        assert_eq!(
            sample(&before, "clickpulse_last_checkpoint_batch"),
            Some(0.0)
        );
        assert!(
            !before.contains("last_checkpoint_age"),
            "no age before the first checkpoint:\n{before}"
        );

        let written_at = now_ms() - 90_000;
        m.set_last_checkpoint(17, 123_456, Duration::from_millis(1500), written_at);
        let text = m.encode().expect("encodes");
        assert_eq!(
            sample(&text, "clickpulse_last_checkpoint_batch"),
            Some(17.0)
        );
        assert_eq!(
            sample(&text, "clickpulse_last_checkpoint_bytes"),
            Some(123_456.0)
        );
        assert_eq!(
            sample(&text, "clickpulse_last_checkpoint_duration_seconds"),
            Some(1.5)
        );
        let age = sample(&text, "clickpulse_last_checkpoint_age_seconds").expect("an age");
        assert!(age >= 90.0, "{age}");
        assert!(
            text.contains("# TYPE clickpulse_last_checkpoint_age_seconds gauge"),
            "{text}"
        );
    }

    #[test]
    fn age_is_seconds_since_written_and_never_negative() {
        assert_eq!(age_seconds(1_000, 3_500), 2.5);
        assert_eq!(age_seconds(5_000, 5_000), 0.0);
        assert_eq!(
            age_seconds(9_000, 5_000),
            0.0,
            "a clock behind the writer's"
        );
    }

    #[test]
    fn client_guard_decrements_on_drop() {
        let m = Metrics::new();
        let a = m.sse_client();
        let b = m.sse_client();
        assert_eq!(m.clients(), (0, 2));
        drop(a);
        drop(b);
        assert_eq!(m.clients(), (0, 0));
    }
}
