//! The per-worker side of a source: opens this worker's partitions, fills batches, tracks event
//! time per partition and turns it into watermark reports.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use timely::dataflow::InputHandleVec;

use super::{
    DeadLetter, EventTime, PartitionId, PartitionProgress, PartitionReader, PartitionedSource,
    PollContext, Polled, ReadStatus, SourceError,
};
use crate::checkpoint::{PartitionPosition, PartitionRange};
use crate::dstream::Data;
use crate::error::{EngineError, RecoveryError, Result};
use crate::metrics::EngineMetrics;
use crate::time::BatchId;
use crate::watermark::WatermarkReport;

/// How often a continuous source looks for partitions added since it started.
const PARTITION_RECHECK: Duration = Duration::from_secs(10);
/// How long a partition rests after a retryable error.
const ERROR_BACKOFF: Duration = Duration::from_millis(500);
/// The most records one poll reads: a batch arrives as several containers of this size instead
/// of one container of the whole batch, whose growth from empty on every poll (the input hands
/// its buffer on) dominated reading. The worker steps the dataflow between polls, so operators
/// take each container while the next is read.
const POLL_CHUNK: usize = 4096;
/// How long a re-run batch waits for logged records that do not come before it gives up: the
/// input must have lost them.
const REPLAY_PATIENCE: Duration = Duration::from_secs(30);

/// What every source driver on a worker needs to know.
#[derive(Debug, Clone)]
pub(crate) struct SourceSettings {
    pub worker: usize,
    pub peers: usize,
    pub bounded: bool,
    pub max_records_per_partition: usize,
    pub start_offsets: HashMap<PartitionId, u64>,
    /// The highest event time read from each partition before the restored checkpoint.
    pub start_max_ts: HashMap<PartitionId, u64>,
    /// Batches to re-run exactly as logged, for this source.
    pub replay: BTreeMap<BatchId, ReplayBatch>,
}

/// What a re-run batch reads from one source: each partition's logged range, and the watermark
/// reports every worker sent (worker 0 sends them all again, the others none, so each
/// event-time operator combines the same reports as the first time, whatever the worker count).
#[derive(Debug, Clone, Default)]
pub(crate) struct ReplayBatch {
    pub ranges: HashMap<PartitionId, (u64, u64)>,
    pub watermarks: Vec<WatermarkReport>,
}

/// What one source did in one batch on one worker.
#[derive(Debug, Default)]
pub(crate) struct SourceBatch {
    pub rows: u64,
    pub dead_letters: u64,
    pub offsets: Vec<PartitionProgress>,
    /// Every partition's range in the batch (empty ones too), for the offset log.
    pub ranges: Vec<PartitionRange>,
    /// Where every partition stands after the batch.
    pub positions: Vec<PartitionPosition>,
    /// The watermark reports sent for the batch (event-time sources).
    pub watermarks: Vec<WatermarkReport>,
}

/// The type-erased interface the worker loop drives.
pub(crate) trait SourceDriver {
    /// Polls every partition once; returns whether any partition may have more right now.
    fn poll_once(&mut self, batch: BatchId) -> Result<bool>;
    /// Ends the batch: sends the watermark report, returns the batch's offsets and counts.
    fn end_batch(&mut self, now: Instant) -> SourceBatch;
    /// Moves the inputs on to `next`.
    fn advance(&mut self, next: BatchId);
    /// Tells readers which offsets are processed (after a batch completed everywhere).
    fn processed(&mut self, offsets: &[PartitionProgress]);
    /// Whether every partition of this worker has ended (bounded mode).
    fn finished(&self) -> bool;
    /// Closes the inputs: this worker will send nothing more.
    fn close(&mut self);
    /// The source's name.
    fn name(&self) -> &str;
    /// Where each of this worker's partitions stands (next offset and, when known, end).
    fn status(&mut self) -> Vec<crate::source::PartitionStatus>;
}

struct PartitionState<T> {
    id: PartitionId,
    reader: Box<dyn PartitionReader<T>>,
    max_ts: Option<u64>,
    last_data: Instant,
    ended: bool,
    batch_from: u64,
    taken: usize,
    resting_until: Option<Instant>,
    /// Since when a re-run batch has been waiting for records of this partition that do not come.
    stalled_since: Option<Instant>,
}

pub(crate) struct TypedSourceDriver<T: Data> {
    source: Arc<dyn PartitionedSource<Item = T>>,
    name: String,
    settings: SourceSettings,
    event_time: Option<EventTime<T>>,
    input: Option<InputHandleVec<BatchId, T>>,
    dead: Option<InputHandleVec<BatchId, DeadLetter>>,
    watermarks: Option<InputHandleVec<BatchId, WatermarkReport>>,
    partitions: Vec<PartitionState<T>>,
    known_partitions: u32,
    /// Partitions are opened on the first poll, so that a failure to open one surfaces inside
    /// the batch protocol that every worker follows, not while the dataflow is being built.
    opened: bool,
    last_check: Instant,
    metrics: Arc<EngineMetrics>,
    polled: Polled<T>,
    batch: SourceBatch,
    /// The batch being re-run, while one is.
    replaying: Option<(BatchId, ReplayBatch)>,
}

impl<T: Data> TypedSourceDriver<T> {
    pub fn new(
        source: Arc<dyn PartitionedSource<Item = T>>,
        settings: SourceSettings,
        event_time: Option<EventTime<T>>,
        input: InputHandleVec<BatchId, T>,
        dead: InputHandleVec<BatchId, DeadLetter>,
        watermarks: Option<InputHandleVec<BatchId, WatermarkReport>>,
        metrics: Arc<EngineMetrics>,
    ) -> Result<Self> {
        let name = source.name().to_string();
        let driver = TypedSourceDriver {
            source,
            name,
            settings,
            event_time,
            input: Some(input),
            dead: Some(dead),
            watermarks,
            partitions: Vec::new(),
            known_partitions: 0,
            opened: false,
            last_check: Instant::now(),
            metrics,
            polled: Polled::default(),
            batch: SourceBatch::default(),
            replaying: None,
        };
        Ok(driver)
    }

    fn source_error(&self, e: SourceError) -> EngineError {
        EngineError::Source {
            source_name: self.name.clone(),
            message: e.message,
            retryable: e.retryable,
            cause: e.cause,
        }
    }

    fn open_new_partitions(&mut self) -> Result<()> {
        let count = self.source.partitions().map_err(|e| self.source_error(e))?;
        let peers = self.settings.peers.max(1) as u32;
        for p in self.known_partitions..count {
            if p % peers != self.settings.worker as u32 {
                continue;
            }
            let from = self.settings.start_offsets.get(&p).copied();
            let reader = self
                .source
                .open(p, from)
                .map_err(|e| self.source_error(e))?;
            let position = reader.position();
            self.partitions.push(PartitionState {
                id: p,
                reader,
                max_ts: self.settings.start_max_ts.get(&p).copied(),
                last_data: Instant::now(),
                ended: false,
                batch_from: position,
                taken: 0,
                resting_until: None,
                stalled_since: None,
            });
        }
        self.known_partitions = self.known_partitions.max(count);
        Ok(())
    }

    /// Polls one partition; returns whether it may have more right now.
    fn poll_partition(&mut self, index: usize, batch: BatchId) -> Result<bool> {
        let cap = self.settings.max_records_per_partition;
        let bounded = self.settings.bounded;
        let Some(part) = self.partitions.get_mut(index) else {
            return Ok(false);
        };
        let now = Instant::now();
        // A re-run batch reads exactly its logged range, whatever the cap or the end says.
        let range = self
            .replaying
            .as_ref()
            .map(|(_, r)| r.ranges.get(&part.id).copied());
        // A re-run batch starts where it started the first time, or its input changed.
        if let Some(Some((from, _))) = range
            && part.batch_from != from
        {
            return Err(EngineError::Recovery(RecoveryError::InputChanged {
                batch,
                source_name: self.name.clone(),
                partition: part.id,
                expected: from,
                got: part.batch_from,
            }));
        }
        let target = range.map(|r| r.map_or(0, |range| range.1));
        let room = match target {
            Some(to) => {
                usize::try_from(to.saturating_sub(part.reader.position())).unwrap_or(usize::MAX)
            }
            None if part.ended || part.taken >= cap => 0,
            None => cap - part.taken,
        };
        if room == 0 || part.resting_until.is_some_and(|t| now < t) {
            return Ok(false);
        }
        let ctx = PollContext {
            batch,
            max_records: room.min(POLL_CHUNK),
        };
        self.polled.items.reserve(ctx.max_records);
        let status = match part.reader.poll(&ctx, &mut self.polled) {
            Ok(status) => status,
            Err(e) if e.retryable => {
                tracing::warn!(source = %self.name, partition = part.id, error = %e.message,
                    "source read failed; retrying after a pause");
                part.resting_until = Some(now + ERROR_BACKOFF);
                return Ok(false);
            }
            Err(e) => {
                return Err(EngineError::Source {
                    source_name: self.name.clone(),
                    message: format!("partition {}: {}", part.id, e.message),
                    retryable: false,
                    cause: e.cause,
                });
            }
        };
        part.resting_until = None;
        let got = self.polled.items.len();
        part.taken += got;
        if got > 0 {
            part.last_data = now;
            if let Some(et) = &self.event_time {
                let seen = self.polled.items.iter().map(|x| (et.extract)(x)).max();
                part.max_ts = part.max_ts.max(seen);
            }
        }
        if let Some(to) = target
            && part.reader.position() > to
        {
            return Err(EngineError::Recovery(RecoveryError::InputChanged {
                batch,
                source_name: self.name.clone(),
                partition: part.id,
                expected: to,
                got: part.reader.position(),
            }));
        }
        if let Some(to) = target {
            // Short of the logged range: the records may still be on their way (a broker's
            // fetch), unless the partition has ended (or is at its end in until-end mode) or
            // nothing came for a long while.
            let at = part.reader.position();
            let stalled = got == 0 && !matches!(status, ReadStatus::More | ReadStatus::Pending);
            let since = *part.stalled_since.get_or_insert(now);
            if !stalled {
                part.stalled_since = None;
            } else if status == ReadStatus::Ended
                || (bounded && status == ReadStatus::CaughtUp)
                || now.duration_since(since) > REPLAY_PATIENCE
            {
                return Err(EngineError::Recovery(RecoveryError::InputTruncated {
                    batch,
                    source_name: self.name.clone(),
                    partition: part.id,
                    expected: to,
                    got: at,
                }));
            }
        } else {
            match status {
                ReadStatus::Ended => part.ended = true,
                ReadStatus::CaughtUp if bounded => part.ended = true,
                _ => {}
            }
        }
        self.batch.rows += got as u64;
        if let Some(input) = self.input.as_mut() {
            input.send_batch(&mut self.polled.items);
        }
        self.polled.items.clear();
        let more = match target {
            Some(to) => part.reader.position() < to,
            None => {
                let waits = bounded && status == ReadStatus::Pending;
                (waits || status == ReadStatus::More && got > 0) && part.taken < cap && !part.ended
            }
        };
        self.forward_dead_letters();
        Ok(more)
    }

    fn forward_dead_letters(&mut self) {
        if self.polled.dead_letters.is_empty() {
            return;
        }
        for d in &self.polled.dead_letters {
            tracing::warn!(source = %d.source, partition = d.partition, offset = d.offset,
                reason = %d.reason, "dead letter: record could not be decoded");
        }
        let n = self.polled.dead_letters.len() as u64;
        self.batch.dead_letters += n;
        self.metrics.add_dead_letters(n);
        if let Some(dead) = self.dead.as_mut() {
            dead.send_batch(&mut self.polled.dead_letters);
        }
        self.polled.dead_letters.clear();
    }

    fn watermark_report(&self, now: Instant) -> WatermarkReport {
        let Some(et) = &self.event_time else {
            return WatermarkReport::Neutral;
        };
        if self.partitions.is_empty() {
            return if self.settings.bounded {
                WatermarkReport::Finished
            } else {
                WatermarkReport::Neutral
            };
        }
        let mut active: Option<u64> = None;
        let mut idle: Option<u64> = None;
        for p in self.partitions.iter().filter(|p| !p.ended) {
            let idle_for = now.saturating_duration_since(p.last_data);
            if idle_for < et.idle_timeout {
                let t = p.max_ts.unwrap_or(0).saturating_sub(et.lateness_ms);
                active = Some(active.map_or(t, |a| a.min(t)));
            } else if let Some(max) = p.max_ts {
                let idle_ms = u64::try_from(idle_for.as_millis()).unwrap_or(u64::MAX);
                let t = max.saturating_add(idle_ms).saturating_sub(et.lateness_ms);
                idle = Some(idle.map_or(t, |a| a.min(t)));
            }
        }
        match (active, idle) {
            (Some(t), _) => WatermarkReport::Active(t),
            (None, Some(t)) => WatermarkReport::Idle(t),
            (None, None) if self.finished() => WatermarkReport::Finished,
            (None, None) => WatermarkReport::Neutral,
        }
    }
}

impl<T: Data> SourceDriver for TypedSourceDriver<T> {
    fn poll_once(&mut self, batch: BatchId) -> Result<bool> {
        if !self.opened {
            self.opened = true;
            self.open_new_partitions()?;
        }
        if self.replaying.as_ref().is_none_or(|(b, _)| *b != batch)
            && let Some(r) = self.settings.replay.remove(&batch)
        {
            self.replaying = Some((batch, r));
        }
        if !self.settings.bounded && self.last_check.elapsed() >= PARTITION_RECHECK {
            self.last_check = Instant::now();
            if let Err(e) = self.open_new_partitions() {
                tracing::warn!(source = %self.name, error = %e, "could not look for new partitions");
            }
        }
        let mut more = false;
        for i in 0..self.partitions.len() {
            more |= self.poll_partition(i, batch)?;
        }
        Ok(more)
    }

    fn end_batch(&mut self, now: Instant) -> SourceBatch {
        let mut batch = std::mem::take(&mut self.batch);
        let reports = match self.replaying.take() {
            Some((_, replay)) => replay.watermarks,
            None => vec![self.watermark_report(now)],
        };
        if let Some(wm) = self.watermarks.as_mut() {
            for r in &reports {
                wm.send(*r);
            }
            batch.watermarks = reports;
        }
        for p in &mut self.partitions {
            let to = p.reader.position();
            batch.ranges.push(PartitionRange {
                source: self.name.clone(),
                partition: p.id,
                from: p.batch_from,
                to,
            });
            batch.positions.push(PartitionPosition {
                source: self.name.clone(),
                partition: p.id,
                next_offset: to,
                max_ts: p.max_ts,
            });
            if to != p.batch_from {
                batch.offsets.push(PartitionProgress {
                    source: self.name.clone(),
                    partition: p.id,
                    from: p.batch_from,
                    to,
                });
            }
            p.batch_from = to;
            p.taken = 0;
        }
        batch
    }

    fn advance(&mut self, next: BatchId) {
        if let Some(i) = self.input.as_mut() {
            i.advance_to(next);
        }
        if let Some(d) = self.dead.as_mut() {
            d.advance_to(next);
        }
        if let Some(w) = self.watermarks.as_mut() {
            w.advance_to(next);
        }
    }

    fn processed(&mut self, offsets: &[PartitionProgress]) {
        for o in offsets.iter().filter(|o| o.source == self.name) {
            if let Some(p) = self.partitions.iter_mut().find(|p| p.id == o.partition) {
                p.reader.processed(o.to);
            }
        }
    }

    fn finished(&self) -> bool {
        self.opened && self.partitions.iter().all(|p| p.ended)
    }

    fn close(&mut self) {
        self.input = None;
        self.dead = None;
        self.watermarks = None;
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn status(&mut self) -> Vec<crate::source::PartitionStatus> {
        let name = &self.name;
        self.partitions
            .iter_mut()
            .map(|p| crate::source::PartitionStatus {
                source: name.clone(),
                partition: p.id,
                next: p.reader.position(),
                end: p.reader.end(),
            })
            .collect()
    }
}
