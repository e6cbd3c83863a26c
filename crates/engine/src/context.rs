//! The streaming context: configuration, and the worker loop that cuts micro-batches, feeds them
//! to the dataflow and waits for them to complete.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::worker::Worker;

use crate::checkpoint::format::Layout;
use crate::checkpoint::recovery::{self, Recovered};
use crate::checkpoint::state::WorkerCheckpoint;
use crate::checkpoint::wal::WalWriter;
use crate::checkpoint::writer::{Msg, Writer, WriterConfig};
use crate::checkpoint::{CheckpointInterval, Checkpointing, PartitionPosition, WalRecord};
use crate::dstream::{JobShared, building_from};
use crate::error::{EngineError, RecoveryError, Result};
use crate::job::{BatchTotals, BuiltJob, Job, SourceStart, WorkerReport};
use crate::listener::{BatchCompleted, BatchSubmitted, StreamingListener};
use crate::metrics::EngineMetrics;
use crate::source::driver::SourceBatch;
use crate::source::{PartitionId, PartitionProgress, SourceSettings};
use crate::time::{BatchClock, BatchId, now_ms};

/// Whether a job runs until told to stop or until its input's current end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// Batches are cut every batch interval until [`ShutdownHandle::stop`] (the DStream model).
    Continuous,
    /// Read as fast as possible, a chunk of at most `max_records_per_partition` records per
    /// partition per batch, until every partition is at its current end; then close every open
    /// window and session, emit them, and stop. For replays, tests and benchmarks.
    UntilEnd,
}

/// Where the workers run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cluster {
    /// All workers are threads of this process.
    Local,
    /// This process is one of several: `addresses` lists every process's `host:port`, `process`
    /// is this one's index. Every process runs the same job.
    Processes {
        /// Every process's address, in process order.
        addresses: Vec<String>,
        /// This process's index.
        process: usize,
    },
}

/// Runs jobs: holds the batch interval, the worker count and the run mode.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use std::sync::{Arc, Mutex};
/// use clickpulse_engine::{QueueSource, RunMode, StreamingContext};
///
/// let words = |ws: &[&str]| ws.iter().map(|w| w.to_string()).collect::<Vec<_>>();
/// let source = QueueSource::from_batches("words", vec![words(&["a", "b", "a"]), words(&["b"])]);
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let sink = Arc::clone(&seen);
/// StreamingContext::new(Duration::from_millis(100))
///     .unwrap()
///     .workers(2)
///     .unwrap()
///     .mode(RunMode::UntilEnd)
///     .run(move |job| {
///         let sink = Arc::clone(&sink);
///         job.source(&source)?
///             .count_by_value()
///             .foreach_batch(move |info, mut rows| {
///                 rows.sort();
///                 sink.lock().unwrap().push((info.batch, rows));
///             });
///         Ok(())
///     })
///     .unwrap();
/// let seen = seen.lock().unwrap();
/// assert_eq!(seen[0], (0, vec![("a".to_string(), 2), ("b".to_string(), 1)]));
/// assert_eq!(seen[1], (1, vec![("b".to_string(), 1)]));
/// ```
pub struct StreamingContext {
    batch_interval: Duration,
    workers: usize,
    mode: RunMode,
    max_records_per_partition: usize,
    cluster: Cluster,
    listeners: Vec<Arc<dyn StreamingListener>>,
    metrics: Arc<EngineMetrics>,
    stop: Arc<AtomicBool>,
    start_offsets: HashMap<String, HashMap<PartitionId, u64>>,
    key_groups: u32,
    checkpointing: Option<(Checkpointing, Recovered)>,
    connect_timeout: Duration,
}

/// Asks a running job to stop after the batch in progress.
#[derive(Debug, Clone)]
pub struct ShutdownHandle(Arc<AtomicBool>);

impl ShutdownHandle {
    /// Stops the job gracefully: the batch in progress completes, then the workers exit.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub fn is_stopping(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What a finished run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Batches run.
    pub batches: u64,
    /// Records read by all sources.
    pub input_rows: u64,
    /// Records that could not be decoded.
    pub dead_letters: u64,
    /// Events too late for their event-time window or session.
    pub late_events: u64,
    /// The batch of the checkpoint the run restored, if it restored one.
    pub resumed_from_batch: Option<BatchId>,
    /// The first batch the run processed.
    pub first_batch: BatchId,
    /// Batches logged before the restart that the run re-ran.
    pub replayed_batches: u64,
    /// In a job of several processes: bytes this process sent to the others.
    pub exchange_bytes_sent: u64,
}

impl StreamingContext {
    /// A context cutting a batch every `batch_interval` (DStream default: 1 s), with 1 worker,
    /// in [`RunMode::Continuous`].
    ///
    /// # Errors
    /// [`EngineError::InvalidConfig`] (`batch_interval`) when the interval is under 1 ms or over
    /// one hour.
    pub fn new(batch_interval: Duration) -> Result<Self> {
        if batch_interval < Duration::from_millis(1) || batch_interval > Duration::from_secs(3600) {
            return Err(EngineError::InvalidConfig {
                key: "batch_interval",
                reason: format!("{batch_interval:?} is outside 1 ms ..= 1 h"),
            });
        }
        Ok(StreamingContext {
            batch_interval,
            workers: 1,
            mode: RunMode::Continuous,
            max_records_per_partition: 100_000,
            cluster: Cluster::Local,
            listeners: Vec::new(),
            metrics: Arc::default(),
            stop: Arc::default(),
            start_offsets: HashMap::new(),
            key_groups: DEFAULT_KEY_GROUPS,
            checkpointing: None,
            connect_timeout: crate::cluster::DEFAULT_CONNECT_TIMEOUT,
        })
    }

    /// Worker threads in this process. Default = 1.
    ///
    /// # Errors
    /// [`EngineError::InvalidConfig`] (`workers`) for 0 or more than 1024.
    pub fn workers(mut self, workers: usize) -> Result<Self> {
        if workers == 0 || workers > 1024 {
            return Err(EngineError::InvalidConfig {
                key: "workers",
                reason: format!("{workers} is outside 1 ..= 1024"),
            });
        }
        self.workers = workers;
        Ok(self)
    }

    /// Continuous or until-end. Default = [`RunMode::Continuous`].
    pub fn mode(mut self, mode: RunMode) -> Self {
        self.mode = mode;
        self
    }

    /// The most records one batch takes from one partition (a rate limit in continuous mode, the
    /// chunk size in until-end mode). Default = 100,000.
    ///
    /// # Errors
    /// [`EngineError::InvalidConfig`] (`max_records_per_partition`) for 0.
    pub fn max_records_per_partition(mut self, n: usize) -> Result<Self> {
        if n == 0 {
            return Err(EngineError::InvalidConfig {
                key: "max_records_per_partition",
                reason: "must be at least 1".into(),
            });
        }
        self.max_records_per_partition = n;
        Ok(self)
    }

    /// Runs as one process of several. Default = [`Cluster::Local`].
    ///
    /// # Errors
    /// [`EngineError::InvalidConfig`] (`cluster`) when `process` is not an index into `addresses`.
    pub fn cluster(mut self, cluster: Cluster) -> Result<Self> {
        if let Cluster::Processes { addresses, process } = &cluster
            && *process >= addresses.len()
        {
            return Err(EngineError::InvalidConfig {
                key: "cluster",
                reason: format!(
                    "process {process} is not one of {} addresses",
                    addresses.len()
                ),
            });
        }
        self.cluster = cluster;
        Ok(self)
    }

    /// How long the processes of a job wait for each other to connect before giving up with
    /// [`EngineError::ClusterStart`] naming the missing ones. Default = 60 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Starts `source`'s partitions at these offsets (the next offset to read) instead of the
    /// source's default start.
    pub fn start_offsets(mut self, source: &str, offsets: HashMap<PartitionId, u64>) -> Self {
        self.start_offsets.insert(source.to_string(), offsets);
        self
    }

    /// How many key groups keyed state is split into. Keyed exchanges route by key group, and
    /// checkpoints save state by key group, so a checkpoint restores with any worker count up to
    /// this many. Default = 256.
    ///
    /// # Errors
    /// [`EngineError::InvalidConfig`] (`key_groups`) for 0 or more than 65,536.
    pub fn key_groups(mut self, groups: u32) -> Result<Self> {
        if groups == 0 || groups > 65_536 {
            return Err(EngineError::InvalidConfig {
                key: "key_groups",
                reason: format!("{groups} is outside 1 ..= 65536"),
            });
        }
        self.key_groups = groups;
        Ok(self)
    }

    /// Checkpoints the job (see [`checkpoint`](crate::checkpoint)) and, unless `settings` say
    /// [`from_scratch`](Checkpointing::from_scratch), restores it from its newest readable
    /// checkpoint right now: [`StreamingContext::recovered`] says what was found. Default = no
    /// checkpoints.
    ///
    /// # Errors
    /// [`EngineError::Recovery`] when the storage cannot be read or the newest checkpoint was
    /// taken by another job.
    pub fn checkpointing(mut self, settings: Checkpointing) -> Result<Self> {
        let recovered = recovery::recover(&settings, self.key_groups)?;
        for (batch, why) in recovered.skipped() {
            tracing::warn!(batch, why = %why, "checkpoint skipped: unreadable");
        }
        self.checkpointing = Some((settings, recovered));
        Ok(self)
    }

    /// What [`StreamingContext::checkpointing`] found to restore, when checkpointing is on.
    pub fn recovered(&self) -> Option<&Recovered> {
        self.checkpointing.as_ref().map(|(_, r)| r)
    }

    /// Adds a listener for batch events.
    pub fn add_listener(&mut self, listener: Arc<dyn StreamingListener>) {
        self.listeners.push(listener);
    }

    /// A handle that stops the job gracefully from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(Arc::clone(&self.stop))
    }

    /// The engine's counters (late events, dead letters, state sizes).
    pub fn metrics(&self) -> Arc<EngineMetrics> {
        Arc::clone(&self.metrics)
    }

    /// The batch interval.
    pub fn batch_interval(&self) -> Duration {
        self.batch_interval
    }

    /// Runs `job` on every worker until the input ends ([`RunMode::UntilEnd`]) or the job is
    /// stopped ([`RunMode::Continuous`]).
    ///
    /// # Errors
    /// Whatever the job function returns, [`EngineError::NoOutput`] when it defines no output,
    /// a source's fatal error, or [`EngineError::Runtime`] when a worker could not run.
    pub fn run<F>(self, job: F) -> Result<RunSummary>
    where
        F: Fn(&mut Job<'_>) -> Result<()> + Send + Sync + 'static,
    {
        let peers = match &self.cluster {
            Cluster::Local => self.workers,
            Cluster::Processes { addresses, .. } => self.workers * addresses.len(),
        };
        if peers > self.key_groups as usize {
            return Err(EngineError::InvalidConfig {
                key: "key_groups",
                reason: format!(
                    "{} key groups for {peers} workers: use at least as many groups as workers",
                    self.key_groups
                ),
            });
        }
        let interval_ms = u64::try_from(self.batch_interval.as_millis())
            .unwrap_or(1)
            .max(1);
        let process = match &self.cluster {
            Cluster::Local => 0,
            Cluster::Processes { process, .. } => *process,
        };
        let local = process * self.workers..(process + 1) * self.workers;
        // The processes check they run the same job: same checkpoint fingerprint.
        let job_id = self
            .checkpointing
            .as_ref()
            .map_or(0, |(s, _)| crate::dstream::route(&s.fingerprint));
        let (ckpt, first_batch) = match self.checkpointing {
            Some((settings, recovered)) => {
                let first = recovered.first_batch();
                let run = RunCheckpoint::start(
                    settings,
                    recovered,
                    peers,
                    local.clone(),
                    self.key_groups,
                    &self.metrics,
                )?;
                (Some(run), first)
            }
            None => (None, 0),
        };
        let run = Arc::new(RunShared {
            clock: BatchClock {
                // Batch ids continue after a restart; their times continue from now.
                start_ms: now_ms().saturating_sub(first_batch.saturating_mul(interval_ms)),
                interval_ms,
            },
            first_batch,
            key_groups: self.key_groups,
            ckpt,
            started: Instant::now(),
            interval: self.batch_interval,
            mode: self.mode,
            max_records_per_partition: self.max_records_per_partition,
            listeners: self.listeners,
            metrics: Arc::clone(&self.metrics),
            stop: Arc::clone(&self.stop),
            start_offsets: self.start_offsets,
            process,
            workers_per_process: self.workers,
            clustered: matches!(self.cluster, Cluster::Processes { .. }),
        });
        let shared = Arc::clone(&run);
        let work = move |worker: &mut Worker| worker_main(worker, &shared, &job);
        let (guards, cluster) = match &self.cluster {
            Cluster::Local => (
                timely::execute(timely::Config::process(self.workers), work)
                    .map_err(EngineError::Runtime)?,
                None,
            ),
            Cluster::Processes { addresses, process } => {
                let c = crate::cluster::connect(
                    addresses,
                    *process,
                    self.workers,
                    job_id,
                    self.connect_timeout,
                )?;
                self.metrics.set_cluster(Arc::clone(&c.stats));
                let guards = timely::execute::execute_from(
                    c.builders,
                    Box::new(c.guard),
                    timely::WorkerConfig::default(),
                    work,
                )
                .map_err(EngineError::Runtime)?;
                (guards, Some(c.stats))
            }
        };
        let mut summary = RunSummary {
            first_batch,
            ..RunSummary::default()
        };
        let mut first_error: Option<EngineError> = None;
        // A lost peer makes timely's communication threads panic, the workers' with them, and
        // joining them panics too: the lost peer is named instead. (Failures the workers
        // report themselves end the run gracefully everywhere and are returned as they are.)
        let joined = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| guards.join()));
        let panicked = joined
            .as_ref()
            .map_or(true, |results| results.iter().any(Result::is_err));
        let failed = panicked
            || joined
                .as_ref()
                .is_ok_and(|results| results.iter().any(|r| matches!(r, Ok(Err(_)))));
        if let Some(ckpt) = &run.ckpt {
            if failed {
                ckpt.writer.abort();
            }
            ckpt.wal.finish();
            ckpt.writer.finish();
            summary.resumed_from_batch = ckpt.recovered.resumed_from();
            summary.replayed_batches = ckpt.recovered.replay_batches();
        }
        if let Some(c) = &cluster {
            summary.exchange_bytes_sent = c.sent_bytes();
            if panicked && let Some(lost) = c.lost_peer() {
                return Err(lost);
            }
        }
        let results =
            joined.map_err(|_| EngineError::Runtime("a communication thread panicked".into()))?;
        for result in results {
            match result.map_err(EngineError::Runtime).and_then(|r| r) {
                Ok(worker) => {
                    summary.batches = summary.batches.max(worker.batches);
                    // Every worker counts the rows of all (from the reports): the same totals.
                    summary.input_rows = summary.input_rows.max(worker.input_rows);
                    summary.dead_letters = summary.dead_letters.max(worker.dead_letters);
                }
                // The worker that failed says why; the others only say that one did.
                Err(e)
                    if first_error
                        .as_ref()
                        .is_none_or(|f| matches!(f, EngineError::PeerFailed)) =>
                {
                    first_error = Some(e)
                }
                Err(_) => {}
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        summary.late_events = self.metrics.late_events();
        Ok(summary)
    }
}

/// The default number of key groups.
pub const DEFAULT_KEY_GROUPS: u32 = 256;

/// A run's checkpointing: settings, what was restored, the background writer.
struct RunCheckpoint {
    settings: Checkpointing,
    recovered: Recovered,
    writer: Writer,
    wal: Arc<WalWriter>,
    peers: u32,
}

impl RunCheckpoint {
    fn start(
        settings: Checkpointing,
        recovered: Recovered,
        peers: usize,
        local: std::ops::Range<usize>,
        key_groups: u32,
        metrics: &Arc<EngineMetrics>,
    ) -> Result<Self> {
        let layout = Layout::new(recovered.generation());
        let peers = u32::try_from(peers).unwrap_or(u32::MAX);
        let as_u32 = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
        let writer = Writer::start(WriterConfig {
            store: Arc::clone(&settings.store),
            layout: layout.clone(),
            workers: peers,
            local: as_u32(local.start)..as_u32(local.end),
            key_groups,
            keep: settings.keep,
            fingerprint: settings.fingerprint.clone(),
            hooks: settings.hooks.clone(),
            metrics: Arc::clone(metrics),
        })
        .map_err(|e| EngineError::Runtime(format!("starting the checkpoint writer: {e}")))?;
        let wal = WalWriter::start(
            Arc::clone(&settings.store),
            layout,
            local,
            recovered.first_batch(),
        )
        .map_err(|e| EngineError::Runtime(format!("starting the offset-log writer: {e}")))?;
        match recovered.resumed_from() {
            Some(b) => tracing::info!(batch = b, replay = recovered.replay_batches(),
                store = %settings.store.describe(), "resuming from checkpoint"),
            None if recovered.replay_batches() > 0 => tracing::info!(
                replay = recovered.replay_batches(),
                "no checkpoint yet: re-running the logged batches"
            ),
            None => {
                tracing::info!(store = %settings.store.describe(), "no checkpoint: starting anew")
            }
        }
        Ok(RunCheckpoint {
            settings,
            recovered,
            writer,
            wal: Arc::new(wal),
            peers,
        })
    }

    /// Where each source starts on worker `worker` of `peers`, from the restored checkpoint and
    /// the logged batches.
    fn source_starts(&self, worker: usize, peers: usize) -> HashMap<String, SourceStart> {
        let mut starts: HashMap<String, SourceStart> = HashMap::new();
        for p in self
            .recovered
            .manifest()
            .map(|m| m.positions.as_slice())
            .unwrap_or_default()
        {
            let s = starts.entry(p.source.clone()).or_default();
            s.offsets.insert(p.partition, p.next_offset);
            if let Some(t) = p.max_ts {
                s.max_ts.insert(p.partition, t);
            }
        }
        let mine = |p: PartitionId| p as usize % peers.max(1) == worker;
        for (batch, records) in &self.recovered.replay {
            for r in records {
                for range in r.partitions.iter().filter(|x| mine(x.partition)) {
                    let s = starts.entry(range.source.clone()).or_default();
                    let b = s.replay.entry(*batch).or_default();
                    b.ranges.insert(range.partition, (range.from, range.to));
                    // A partition first read after the checkpoint starts where its range does.
                    s.offsets.entry(range.partition).or_insert(range.from);
                }
                for (source, report) in &r.watermarks {
                    let s = starts.entry(source.clone()).or_default();
                    let b = s.replay.entry(*batch).or_default();
                    if worker == 0 {
                        b.watermarks.push(*report);
                    }
                }
            }
        }
        starts
    }

    /// Hands the offset log what this worker read in `batch`; the batch's outputs wait until
    /// every worker's record of it is durable.
    fn log_batch(&self, batch: BatchId, worker: usize, sources: &[(String, SourceBatch)]) {
        let record = WalRecord {
            batch,
            epoch: self.recovered.epoch,
            worker: worker as u32,
            workers: self.peers,
            partitions: sources
                .iter()
                .flat_map(|(_, s)| s.ranges.iter().cloned())
                .collect(),
            watermarks: sources
                .iter()
                .flat_map(|(name, s)| s.watermarks.iter().map(|w| (name.clone(), *w)))
                .collect(),
        };
        self.wal.submit(record);
    }
}

struct RunShared {
    clock: BatchClock,
    first_batch: BatchId,
    key_groups: u32,
    ckpt: Option<RunCheckpoint>,
    started: Instant,
    interval: Duration,
    mode: RunMode,
    max_records_per_partition: usize,
    listeners: Vec<Arc<dyn StreamingListener>>,
    metrics: Arc<EngineMetrics>,
    stop: Arc<AtomicBool>,
    start_offsets: HashMap<String, HashMap<PartitionId, u64>>,
    /// This process's index (0 when it is the only one).
    process: usize,
    workers_per_process: usize,
    /// Whether the job runs on several processes.
    clustered: bool,
}

/// Timings worker 0 keeps for a batch until it completes.
struct InFlight {
    batch: BatchId,
    read_done: Instant,
    scheduling_delay: Duration,
    local_offsets: Vec<PartitionProgress>,
}

fn worker_main<F>(worker: &mut Worker, run: &RunShared, job_fn: &F) -> Result<RunSummary>
where
    F: Fn(&mut Job<'_>) -> Result<()>,
{
    let span = tracing::info_span!("worker", process = run.process, worker = worker.index());
    let _entered = span.enter();
    let probe = ProbeHandle::new();
    let shared = Rc::new(JobShared {
        clock: run.clock,
        probe: probe.clone(),
        metrics: Arc::clone(&run.metrics),
        worker: worker.index(),
        peers: worker.peers(),
        output_workers: run.workers_per_process,
        outputs: Default::default(),
        current_batch: Default::default(),
        state_ops: Default::default(),
        build_errors: Default::default(),
        output_error: Default::default(),
        wal: run.ckpt.as_ref().map(|c| Arc::clone(&c.wal)),
        ckpt: Rc::new(WorkerCheckpoint::new(
            run.key_groups,
            worker.index(),
            worker.peers(),
            run.ckpt.as_ref().map(|c| Arc::clone(&c.recovered.parts)),
        )),
    });
    let settings = SourceSettings {
        worker: worker.index(),
        peers: worker.peers(),
        bounded: run.mode == RunMode::UntilEnd,
        max_records_per_partition: run.max_records_per_partition,
        start_offsets: HashMap::new(),
        start_max_ts: HashMap::new(),
        replay: Default::default(),
    };
    let mut starts: HashMap<String, SourceStart> = run
        .start_offsets
        .iter()
        .map(|(name, offsets)| {
            let start = SourceStart {
                offsets: offsets.clone(),
                ..SourceStart::default()
            };
            (name.clone(), start)
        })
        .collect();
    if let Some(ckpt) = &run.ckpt {
        starts.extend(ckpt.source_starts(worker.index(), worker.peers()));
    }
    let mut built = building_from(run.first_batch, || {
        worker.dataflow::<BatchId, _, _>(|scope| {
            let mut job = Job::new(scope, Rc::clone(&shared), settings, starts);
            job_fn(&mut job)?;
            job.finish()
        })
    })?;
    if run
        .ckpt
        .as_ref()
        .is_some_and(|c| c.recovered.resumed_from().is_some())
    {
        check_operators(&shared.ckpt, run)?;
    }
    // Batch ids continue after a restart: no earlier batch exists.
    for d in &mut built.drivers {
        d.advance(run.first_batch);
    }
    if let Some(r) = built.reports.as_mut() {
        r.advance_to(run.first_batch);
    }
    let mut driver = WorkerLoop {
        shared,
        run,
        probe,
        built,
        in_flight: std::collections::VecDeque::new(),
        summary: RunSummary::default(),
        is_reporter: worker.index() == 0,
        error: None,
        failed_seen: false,
        final_batch: None,
        positions: BTreeMap::new(),
        last_marked: (run.first_batch, Instant::now()),
        asked: false,
    };
    if let Some(m) = run.ckpt.as_ref().and_then(|c| c.recovered.manifest()) {
        for p in &m.positions {
            driver
                .positions
                .insert((p.source.clone(), p.partition), p.clone());
        }
    }
    driver.run(worker)
}

/// Refuses a checkpoint holding state of operators this job does not build, or missing state
/// of operators it does.
fn check_operators(ckpt: &WorkerCheckpoint, run: &RunShared) -> Result<()> {
    let unclaimed = ckpt.unclaimed();
    let built = ckpt.names();
    let restored: std::collections::BTreeSet<String> = run
        .ckpt
        .iter()
        .flat_map(|c| c.recovered.parts.iter())
        .flat_map(|p| p.operators.keys().cloned())
        .collect();
    let missing: Vec<&String> = built.iter().filter(|n| !restored.contains(*n)).collect();
    if unclaimed.is_empty() && missing.is_empty() {
        return Ok(());
    }
    let mut differences = Vec::new();
    if !unclaimed.is_empty() {
        differences.push(format!(
            "the checkpoint holds state of operators this job does not have: {}",
            unclaimed.join(", ")
        ));
    }
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        differences.push(format!(
            "this job has stateful operators the checkpoint has no state for: {}",
            names.join(", ")
        ));
    }
    let (store, batch) = run
        .ckpt
        .as_ref()
        .map(|c| {
            (
                c.settings.store.describe(),
                c.recovered.first_batch().saturating_sub(1),
            )
        })
        .unwrap_or_default();
    Err(EngineError::Recovery(RecoveryError::JobChanged {
        store,
        batch,
        differences,
    }))
}

struct WorkerLoop<'a> {
    shared: Rc<JobShared>,
    run: &'a RunShared,
    probe: ProbeHandle<BatchId>,
    built: BuiltJob,
    in_flight: std::collections::VecDeque<InFlight>,
    summary: RunSummary,
    is_reporter: bool,
    error: Option<EngineError>,
    failed_seen: bool,
    /// The last batch, once a stop was decided (it is checkpointed).
    final_batch: Option<BatchId>,
    /// Where every partition stands after the last completed batch (kept by worker 0, which
    /// hands it to the checkpoint writer).
    positions: BTreeMap<(String, PartitionId), PartitionPosition>,
    /// The last batch marked for a checkpoint and when (worker 0 decides when the next is due).
    last_marked: (BatchId, Instant),
    /// Worker 0 asked for a checkpoint that is not marked yet (it is, two batches later).
    asked: bool,
}

impl WorkerLoop<'_> {
    fn run(&mut self, worker: &mut Worker) -> Result<RunSummary> {
        let first = self.run.first_batch;
        let mut batch: BatchId = first;
        let bounded = self.run.mode == RunMode::UntilEnd;
        loop {
            let waited_for_all = self.one_batch(worker, batch, bounded);
            // Every worker reads the same reports, so all leave after the same batch. A stop or a
            // failure is decided on the previous batch's reports (complete everywhere by now).
            // The end of input is decided on this batch's reports, by workers whose own input has
            // ended and who therefore waited for it: if every worker has ended, every worker
            // waited and sees it; if one has not, it knows the input is not over everywhere.
            let previous = batch
                .checked_sub(1)
                .map(|p| self.take_totals(p))
                .unwrap_or_default();
            let all_finished = waited_for_all && {
                let totals = self.built.totals.borrow();
                totals.get(&batch).is_some_and(|t| t.finished == t.reports)
            };
            let done = batch;
            batch += 1;
            self.summary.batches = batch - first;
            if all_finished || previous.failed || self.final_batch == Some(done) {
                break;
            }
            if previous.checkpoint_wanted || previous.stop {
                self.mark_checkpoint(batch);
            }
            if previous.stop {
                if self.run.ckpt.is_none() {
                    break;
                }
                // One more batch (cut short: the stop ends its reading), checkpointed, then out.
                self.final_batch = Some(batch);
            }
        }
        self.close();
        while !self.probe.done() {
            worker.step_or_park(Some(Duration::from_millis(1)));
            self.report_completed();
        }
        self.report_completed();
        match self.error.take() {
            Some(e) => Err(e),
            None if self.peer_failed() => Err(EngineError::PeerFailed),
            None => Ok(self.summary.clone()),
        }
    }

    /// Marks `batch` as a checkpoint batch on this worker (every worker marks the same batch,
    /// decided on the same reports, before any input moves past it).
    fn mark_checkpoint(&mut self, batch: BatchId) {
        let Some(ckpt) = &self.run.ckpt else {
            return;
        };
        self.shared.ckpt.mark_due(batch);
        self.last_marked = (batch, Instant::now());
        self.asked = false;
        if self.is_reporter {
            ckpt.writer.begin();
        }
    }

    /// Whether worker 0 asks for a checkpoint in its report for `batch`.
    fn wants_checkpoint(&mut self, batch: BatchId) -> bool {
        let Some(ckpt) = self.run.ckpt.as_ref().filter(|_| self.is_reporter) else {
            return false;
        };
        // One at a time: the next waits until the last is visible.
        if self.asked || ckpt.writer.in_flight() > 0 {
            return false;
        }
        let due = ckpt.settings.request_handle().take()
            || match ckpt.settings.interval {
                CheckpointInterval::Batches(n) => batch + 2 >= self.last_marked.0 + n,
                CheckpointInterval::Every(d) => self.last_marked.1.elapsed() >= d,
            };
        self.asked = due;
        due
    }

    fn take_totals(&mut self, batch: BatchId) -> BatchTotals {
        self.built
            .totals
            .borrow_mut()
            .remove(&batch)
            .unwrap_or_default()
    }

    fn peer_failed(&self) -> bool {
        self.failed_seen
    }

    fn close(&mut self) {
        for d in &mut self.built.drivers {
            d.close();
        }
        self.built.reports = None;
    }

    /// Runs one batch through the protocol every worker follows: read, report, advance, wait
    /// until it completed everywhere. A failure is recorded and reported, not returned early, so
    /// that the other workers learn of it and stop after the same batch.
    /// Returns whether it waited for `batch` itself to complete (see `run`).
    fn one_batch(&mut self, worker: &mut Worker, batch: BatchId, bounded: bool) -> bool {
        let span = tracing::info_span!("batch", batch);
        let _entered = span.enter();
        let started = Instant::now();
        self.shared.current_batch.set((batch, Some(started)));
        let nth = batch - self.run.first_batch;
        let nominal = self.run.started + self.run.interval * u32::try_from(nth).unwrap_or(u32::MAX);
        let scheduling_delay = if self.run.mode == RunMode::Continuous {
            started.saturating_duration_since(nominal)
        } else {
            Duration::ZERO
        };
        if self.error.is_none()
            && let Err(e) = self.fill(worker, batch, nominal + self.run.interval)
        {
            tracing::error!(worker = self.shared.worker, error = %e, "worker failed; stopping the job");
            self.error = Some(e);
        }
        let read_done = Instant::now();
        if let Some(e) = self.shared.output_error.borrow_mut().take() {
            self.error.get_or_insert(e);
        }
        let finished = self.built.drivers.iter().all(|d| d.finished());
        let sources: Vec<(String, SourceBatch)> = self
            .built
            .drivers
            .iter_mut()
            .map(|d| (d.name().to_string(), d.end_batch(read_done)))
            .collect();
        // The offset log, before the input moves past the batch (and so before any of its
        // output can exist anywhere).
        if let Some(ckpt) = &self.run.ckpt {
            ckpt.log_batch(batch, self.shared.worker, &sources);
            if let Some(message) = ckpt.wal.failure()
                && self.error.is_none()
            {
                self.error = Some(EngineError::Recovery(RecoveryError::OffsetLog { message }));
            }
        }
        let state = self.run.metrics.worker_state(self.shared.worker);
        let first_local = self
            .shared
            .worker
            .is_multiple_of(self.run.workers_per_process.max(1));
        let mut report = WorkerReport {
            finished,
            stop: self.run.stop.load(Ordering::SeqCst),
            failed: self.error.is_some(),
            checkpoint_wanted: self.wants_checkpoint(batch),
            progress: crate::listener::WorkerProgress {
                worker: u32::try_from(self.shared.worker).unwrap_or(u32::MAX),
                process: u32::try_from(self.run.process).unwrap_or(u32::MAX),
                state_keys: state.keys,
                state_bytes: state.bytes,
                late_events_total: if first_local {
                    self.run.metrics.late_events()
                } else {
                    0
                },
                exchange_sent_bytes: match self.run.metrics.cluster() {
                    Some(c) if first_local => c.sent_bytes(),
                    _ => 0,
                },
                ..Default::default()
            },
            ..WorkerReport::default()
        };
        for (_, b) in sources {
            report.progress.rows += b.rows;
            report.progress.dead_letters += b.dead_letters;
            report.offsets.extend(b.offsets);
            // Positions travel only for checkpoints (worker 0 keeps them for the manifest).
            if self.run.ckpt.is_some() {
                report.positions.extend(b.positions);
            }
        }
        for d in &mut self.built.drivers {
            report.progress.partitions.extend(d.status());
        }
        let local_offsets = report.offsets.clone();
        if let Some(r) = self.built.reports.as_mut() {
            r.send(report);
        }
        self.await_logged(worker, batch);
        for d in &mut self.built.drivers {
            d.advance(batch + 1);
        }
        if let Some(r) = self.built.reports.as_mut() {
            r.advance_to(batch + 1);
        }
        if self.is_reporter {
            let event = BatchSubmitted {
                batch,
                batch_time_ms: self.run.clock.batch_start_ms(batch),
                scheduling_delay,
            };
            for l in &self.run.listeners {
                l.on_batch_submitted(&event);
            }
        }
        self.in_flight.push_back(InFlight {
            batch,
            read_done,
            scheduling_delay,
            local_offsets,
        });
        // Two batches in flight: while batch b completes elsewhere, this worker already reads
        // b + 1 instead of idling at every batch boundary for the slowest worker. A worker whose
        // input has ended waits for b itself, to take part in the end-of-input decision.
        let wait_for_all = bounded && finished;
        let until = if wait_for_all { batch + 1 } else { batch };
        while self.probe.less_than(&until) {
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
        self.report_completed();
        wait_for_all
    }

    /// In a job of several processes, the batch's outputs run on process 0, which cannot see
    /// the other processes' offset-log writers: so every worker's input moves past a batch only
    /// once its own record of the batch is durable (stepping the dataflow meanwhile), and an
    /// output, which runs only after every input moved past its batch, never runs first.
    fn await_logged(&mut self, worker: &mut Worker, batch: BatchId) {
        let Some(ckpt) = self.run.ckpt.as_ref().filter(|_| self.run.clustered) else {
            return;
        };
        loop {
            match ckpt.wal.worker_durable(batch, self.shared.worker) {
                Ok(true) => return,
                Ok(false) => {
                    worker.step_or_park(Some(Duration::from_millis(1)));
                }
                Err(message) => {
                    self.error
                        .get_or_insert(EngineError::Recovery(RecoveryError::OffsetLog { message }));
                    return;
                }
            }
        }
    }

    /// Reads this batch's records: in until-end mode a chunk as fast as possible, in continuous
    /// mode whatever arrives until the batch's deadline.
    fn fill(&mut self, worker: &mut Worker, batch: BatchId, deadline: Instant) -> Result<()> {
        // A logged batch is read to its logged end, whatever the clock or a stop says.
        let replaying = self
            .run
            .ckpt
            .as_ref()
            .is_some_and(|c| c.recovered.replay.contains_key(&batch));
        loop {
            let mut more = false;
            for d in &mut self.built.drivers {
                more |= d.poll_once(batch)?;
            }
            match self.run.mode {
                _ if replaying && !more => return Ok(()),
                RunMode::UntilEnd if !more => return Ok(()),
                _ if replaying => {
                    worker.step();
                    self.report_completed();
                }
                RunMode::UntilEnd => {
                    // Let operators take each chunk while it is in cache, as the next is read.
                    worker.step();
                    self.report_completed();
                }
                RunMode::Continuous => {
                    let now = Instant::now();
                    if now >= deadline || self.run.stop.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                    // Keep the previous batch moving while this one is read: step on every
                    // round, and rest briefly only when no input is waiting.
                    if more {
                        worker.step();
                    } else {
                        let nap = (deadline - now).min(Duration::from_millis(2));
                        worker.step_or_park(Some(nap));
                    }
                    self.report_completed();
                }
            }
        }
    }

    /// Reports every batch the probe has passed (listeners on worker 0; processed offsets on all).
    fn report_completed(&mut self) {
        while let Some(front) = self.in_flight.front() {
            if self.probe.less_than(&(front.batch + 1)) {
                return;
            }
            let Some(done) = self.in_flight.pop_front() else {
                return;
            };
            for d in &mut self.built.drivers {
                d.processed(&done.local_offsets);
            }
            let totals = self
                .built
                .totals
                .borrow()
                .get(&done.batch)
                .cloned()
                .unwrap_or_default();
            self.failed_seen |= totals.failed;
            // Rows of every worker (all workers see the same totals).
            self.summary.input_rows += totals.rows;
            self.summary.dead_letters += totals.dead_letters;
            self.checkpoint_completed(done.batch, &totals);
            if self.is_reporter {
                self.notify_completed(&done, totals);
            }
        }
    }

    /// After `batch` completed everywhere: notes where the partitions stand and, when the batch
    /// was a checkpoint batch, hands this worker's saved state (and, on worker 0, the positions)
    /// to the writer.
    fn checkpoint_completed(&mut self, batch: BatchId, totals: &BatchTotals) {
        let Some(ckpt) = &self.run.ckpt else {
            return;
        };
        if self.is_reporter {
            for p in &totals.positions {
                self.positions
                    .insert((p.source.clone(), p.partition), p.clone());
            }
        }
        let Some(operators) = self.shared.ckpt.take(batch) else {
            return;
        };
        // Every input had ended by this batch, so the watermark is past every event and every
        // window is closed: a restart from here would find every later event late. The
        // checkpoint before it is the one to resume from.
        if self.run.mode == RunMode::UntilEnd && totals.finished == totals.reports {
            if self.is_reporter {
                ckpt.writer.send(Msg::Abandon { batch });
            }
            return;
        }
        ckpt.writer.send(Msg::Part {
            batch,
            worker: self.shared.worker as u32,
            workers: ckpt.peers,
            operators,
        });
        if self.is_reporter {
            let positions = self.positions.values().cloned().collect();
            ckpt.writer.send(Msg::Positions { batch, positions });
        }
    }

    fn notify_completed(&self, done: &InFlight, totals: BatchTotals) {
        let now = Instant::now();
        let event = BatchCompleted {
            batch: done.batch,
            batch_time_ms: self.run.clock.batch_start_ms(done.batch),
            input_rows: totals.rows,
            dead_letters: totals.dead_letters,
            scheduling_delay: done.scheduling_delay,
            processing_time: now.saturating_duration_since(done.read_done),
            total_delay: done.scheduling_delay + now.saturating_duration_since(done.read_done),
            offsets: totals.offsets,
            state: self.run.metrics.state_sizes(),
            late_events_total: self.run.metrics.late_events()
                + totals
                    .workers
                    .iter()
                    .filter(|w| w.process as usize != self.run.process)
                    .map(|w| w.late_events_total)
                    .sum::<u64>(),
            last_checkpoint: self.run.metrics.last_checkpoint(),
            workers: totals.workers,
        };
        tracing::debug!(
            batch = event.batch,
            rows = event.input_rows,
            processing_ms = event.processing_time.as_millis() as u64,
            "batch completed"
        );
        for l in &self.run.listeners {
            l.on_batch_completed(&event);
        }
    }
}
