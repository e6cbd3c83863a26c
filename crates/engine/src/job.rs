//! The job builder a job function receives on every worker.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Operator;
use timely::dataflow::operators::probe::Probe;
use timely::dataflow::operators::vec::{Broadcast, Input};
use timely::dataflow::{InputHandleVec, Scope, StreamVec};

use crate::checkpoint::PartitionPosition;
use crate::dstream::{DStream, Data, JobShared, batch_unary};
use crate::error::{EngineError, Result};
use crate::source::driver::ReplayBatch;
use crate::source::{
    DeadLetter, EventTime, PartitionId, PartitionProgress, PartitionedSource, SourceDriver,
    SourceSettings, TypedSourceDriver,
};
use crate::time::{BatchClock, BatchId};

/// What one worker read in one batch and where it stands. Every worker receives every report,
/// so all workers take the same decision (stop, fail, finish) after the same batch.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct WorkerReport {
    pub offsets: Vec<PartitionProgress>,
    /// Where each of this worker's partitions stands after the batch.
    pub positions: Vec<PartitionPosition>,
    /// Worker 0 wants a checkpoint (the interval has passed, or one was asked for).
    pub checkpoint_wanted: bool,
    /// Every partition of this worker has ended (until-end mode).
    pub finished: bool,
    /// A stop was asked for.
    pub stop: bool,
    /// This worker failed (its error is returned by `run`).
    pub failed: bool,
    /// Who sent it, its rows and dead letters in the batch, and the rest of its progress.
    pub progress: crate::listener::WorkerProgress,
}

/// One batch's reports combined over all workers.
#[derive(Debug, Clone, Default)]
pub(crate) struct BatchTotals {
    pub rows: u64,
    pub dead_letters: u64,
    pub offsets: Vec<PartitionProgress>,
    pub positions: Vec<PartitionPosition>,
    pub checkpoint_wanted: bool,
    pub reports: usize,
    pub finished: usize,
    pub stop: bool,
    pub failed: bool,
    pub workers: Vec<crate::listener::WorkerProgress>,
}

/// Per-batch totals over all workers, kept on every worker until the loop has read them.
pub(crate) type Totals = Rc<RefCell<BTreeMap<BatchId, BatchTotals>>>;

/// Builds a job's dataflow on one worker. The job function runs once per worker with its own
/// `Job`; every worker must build the same dataflow (the engine relies on it), so the function
/// should depend only on its captured configuration, not on the worker index.
pub struct Job<'s> {
    scope: Scope<'s, BatchId>,
    shared: Rc<JobShared>,
    settings: SourceSettings,
    start: HashMap<String, SourceStart>,
    drivers: Vec<Box<dyn SourceDriver>>,
    reports: InputHandleVec<BatchId, WorkerReport>,
    totals: Totals,
}

/// Where one source starts on this worker: offsets and event-time maxima per partition from a
/// restored checkpoint (or given by the caller), and the logged batches to re-run.
#[derive(Debug, Clone, Default)]
pub(crate) struct SourceStart {
    pub offsets: HashMap<PartitionId, u64>,
    pub max_ts: HashMap<PartitionId, u64>,
    pub replay: BTreeMap<BatchId, ReplayBatch>,
}

/// The parts of a built job that the worker loop drives.
pub(crate) struct BuiltJob {
    pub drivers: Vec<Box<dyn SourceDriver>>,
    pub reports: Option<InputHandleVec<BatchId, WorkerReport>>,
    pub totals: Totals,
}

/// `stream` handed on unchanged through an operator of its own, so that no input feeds an exchange
/// directly. The worker steps the dataflow while it is still reading a batch; an exchange fed
/// straight by an input keeps records back in its buffers until the input's end-of-batch signal,
/// and timely passes that signal on only when the input has counts not yet reported — which a
/// step in the middle of the batch may already have reported, leaving the records (and the batch)
/// stuck. Behind an operator, every exchange is flushed at the end of each of its runs.
fn handed_on<'s, T: Data>(stream: &StreamVec<'s, BatchId, T>) -> StreamVec<'s, BatchId, T> {
    stream.clone().unary(Pipeline, "Input", |_cap, _info| {
        move |input, output| {
            input.for_each_time(|time, data| {
                let mut session = output.session(&time);
                for container in data {
                    session.give_container(container);
                }
            });
        }
    })
}

impl<'s> Job<'s> {
    pub(crate) fn new(
        scope: Scope<'s, BatchId>,
        shared: Rc<JobShared>,
        settings: SourceSettings,
        start: HashMap<String, SourceStart>,
    ) -> Self {
        let (reports, stream) = scope.new_input::<WorkerReport>();
        let totals: Totals = Rc::default();
        let sink = Rc::clone(&totals);
        batch_unary::<_, (), _, _>(
            &stream.broadcast(),
            Pipeline,
            "BatchReports",
            move |batch, reports, _out| {
                let mut total = BatchTotals::default();
                for r in reports {
                    total.rows += r.progress.rows;
                    total.dead_letters += r.progress.dead_letters;
                    total.offsets.extend(r.offsets);
                    total.positions.extend(r.positions);
                    total.checkpoint_wanted |= r.checkpoint_wanted;
                    total.reports += 1;
                    total.finished += usize::from(r.finished);
                    total.stop |= r.stop;
                    total.failed |= r.failed;
                    total.workers.push(r.progress);
                }
                total.workers.sort_by_key(|w| w.worker);
                sink.borrow_mut().insert(batch, total);
            },
        )
        .probe_with(&shared.probe);
        Job {
            scope,
            shared,
            settings,
            start,
            drivers: Vec::new(),
            reports,
            totals,
        }
    }

    /// This worker's index, `0..workers()`.
    pub fn worker(&self) -> usize {
        self.scope.index()
    }

    /// How many workers run the job (over all processes).
    pub fn workers(&self) -> usize {
        self.scope.peers()
    }

    /// The batch clock.
    pub fn clock(&self) -> BatchClock {
        self.shared.clock
    }

    /// A DStream of `source`'s records, in processing time only (no event-time operators).
    /// Records that cannot be decoded are counted and logged; use
    /// [`Job::source_with_dead_letters`] to keep them too.
    ///
    /// # Errors
    /// [`EngineError::Source`] when the source cannot list or open its partitions.
    pub fn source<S: PartitionedSource + Clone>(
        &mut self,
        source: &S,
    ) -> Result<DStream<'s, S::Item>> {
        Ok(self.add_source(source, None)?.0)
    }

    /// A DStream of `source`'s records with event time, so that event-time operators
    /// ([`event_time`](crate::event_time)) can be used downstream.
    ///
    /// # Errors
    /// [`EngineError::Source`] when the source cannot list or open its partitions.
    pub fn source_with_event_time<S: PartitionedSource + Clone>(
        &mut self,
        source: &S,
        event_time: EventTime<S::Item>,
    ) -> Result<DStream<'s, S::Item>> {
        Ok(self.add_source(source, Some(event_time))?.0)
    }

    /// Like [`Job::source_with_event_time`] (or [`Job::source`] when `event_time` is `None`), and
    /// also the stream of records that could not be decoded.
    ///
    /// # Errors
    /// [`EngineError::Source`] when the source cannot list or open its partitions.
    pub fn source_with_dead_letters<S: PartitionedSource + Clone>(
        &mut self,
        source: &S,
        event_time: Option<EventTime<S::Item>>,
    ) -> Result<(DStream<'s, S::Item>, DStream<'s, DeadLetter>)> {
        self.add_source(source, event_time)
    }

    fn add_source<S: PartitionedSource + Clone>(
        &mut self,
        source: &S,
        event_time: Option<EventTime<S::Item>>,
    ) -> Result<(DStream<'s, S::Item>, DStream<'s, DeadLetter>)> {
        let (input, stream) = self.scope.new_input::<S::Item>();
        let stream = handed_on(&stream);
        let (dead_input, dead_stream) = self.scope.new_input::<DeadLetter>();
        let dead_stream = handed_on(&dead_stream);
        let (wm_input, watermarks) = match event_time {
            Some(_) => {
                let (h, s) = self.scope.new_input();
                (Some(h), Some(handed_on(&s).broadcast()))
            }
            None => (None, None),
        };
        let mut settings = self.settings.clone();
        if let Some(start) = self.start.remove(source.name()) {
            settings.start_offsets = start.offsets;
            settings.start_max_ts = start.max_ts;
            settings.replay = start.replay;
        }
        let driver = TypedSourceDriver::new(
            Arc::new(source.clone()),
            settings,
            event_time,
            input,
            dead_input,
            wm_input,
            Arc::clone(&self.shared.metrics),
        )?;
        self.drivers.push(Box::new(driver));
        let events = DStream {
            stream,
            watermarks,
            window_batches: None,
            shared: Rc::clone(&self.shared),
        };
        let dead = DStream {
            stream: dead_stream,
            watermarks: None,
            window_batches: None,
            shared: Rc::clone(&self.shared),
        };
        Ok((events, dead))
    }

    /// A DStream built from the union of `streams` (all must come from this job).
    ///
    /// # Errors
    /// [`EngineError::InvalidConfig`] when `streams` is empty.
    pub fn union_all<T: Data>(&self, streams: Vec<DStream<'s, T>>) -> Result<DStream<'s, T>> {
        let mut iter = streams.into_iter();
        let first = iter.next().ok_or_else(|| EngineError::InvalidConfig {
            key: "union_all",
            reason: "no streams given".into(),
        })?;
        Ok(iter.fold(first, |acc, s| acc.union(&s)))
    }

    pub(crate) fn finish(self) -> Result<BuiltJob> {
        if let Some(e) = self.shared.build_errors.borrow_mut().drain(..).next() {
            return Err(e);
        }
        if *self.shared.outputs.borrow() == 0 {
            return Err(EngineError::NoOutput);
        }
        Ok(BuiltJob {
            drivers: self.drivers,
            reports: Some(self.reports),
            totals: self.totals,
        })
    }
}
