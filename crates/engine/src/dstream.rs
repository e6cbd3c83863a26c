//! The discretised stream: a sequence of micro-batches, and the per-batch operator helpers every
//! operator in this crate is built from.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::rc::Rc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::ParallelizationContract;
use timely::dataflow::operators::generic::{InputHandleCore, OutputBuilderSession};
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::{Scope, StreamVec};
use timely::progress::frontier::MutableAntichain;

use crate::checkpoint::state::{StateHandle, WorkerCheckpoint};
use crate::metrics::EngineMetrics;
use crate::time::{BatchClock, BatchId};
use crate::watermark::WatermarkReport;

/// What a stream may carry: cloneable, sendable between workers and (for cluster mode and
/// checkpoints) serialisable with serde.
pub trait Data: Clone + Send + Serialize + DeserializeOwned + 'static {}
impl<T: Clone + Send + Serialize + DeserializeOwned + 'static> Data for T {}

/// What a key must be in addition to [`Data`]: hashable (for the exchange between workers and the
/// state tables) and comparable (for deterministic ordering).
pub trait Key: Data + Hash + Eq + Ord {}
impl<T: Data + Hash + Eq + Ord> Key for T {}

/// The stable hash the engine uses to route a key to a worker. It does not depend on the process,
/// so every worker and every process agrees on where a key lives.
pub fn route<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    key.hash(&mut h);
    // Fx hashes cluster in the low bits, which the exchange uses: finish with a mixer.
    let mut x = h.finish();
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

/// Per-worker facts shared by every stream of a job.
pub(crate) struct JobShared {
    pub clock: BatchClock,
    pub probe: ProbeHandle<BatchId>,
    pub metrics: std::sync::Arc<EngineMetrics>,
    pub worker: usize,
    /// How many workers the job runs on.
    pub peers: usize,
    /// The workers output operations run on: those of process 0 (`0..output_workers`), where
    /// the sinks and the hub are.
    pub output_workers: usize,
    pub outputs: RefCell<usize>,
    /// The batch this worker is working on and when it started it.
    pub current_batch: std::cell::Cell<(BatchId, Option<std::time::Instant>)>,
    /// How many stateful operators of each kind the job has built so far.
    pub state_ops: RefCell<std::collections::BTreeMap<&'static str, usize>>,
    /// Errors of operators whose builder returns no `Result` (a checkpoint's state that does not
    /// decode, say); the job fails with the first when it is built.
    pub build_errors: RefCell<Vec<crate::error::EngineError>>,
    /// Outputs of a batch wait here until the batch is in the offset log (checkpointed jobs).
    pub wal: Option<std::sync::Arc<crate::checkpoint::wal::WalWriter>>,
    /// The first failure of an output operation on this worker; the job stops with it.
    pub output_error: RefCell<Option<crate::error::EngineError>>,
    /// Checkpoint bookkeeping: key groups, batches to save at, state to restore.
    pub ckpt: Rc<WorkerCheckpoint>,
}

impl JobShared {
    /// The name a stateful operator reports its state size under: its kind, numbered from the
    /// second instance on (`window_aggregate`, `window_aggregate#2`, …) in build order, which is
    /// the same on every worker.
    pub fn state_name(&self, kind: &'static str) -> String {
        numbered(&mut self.state_ops.borrow_mut(), kind)
    }

    /// Where a stateful operator of `kind` reports its state size on this worker, under its
    /// [`state_name`](Self::state_name).
    pub fn state_report(&self, kind: &'static str) -> crate::metrics::StateReport {
        crate::metrics::StateReport {
            metrics: std::sync::Arc::clone(&self.metrics),
            name: self.state_name(kind),
            worker: self.worker,
        }
    }

    /// A stateful operator's link to checkpoints, named after its `kind` (numbered from the
    /// second instance on, in build order).
    pub fn stateful(&self, kind: &'static str) -> StateHandle {
        StateHandle::new(&self.ckpt, kind)
    }

    /// Keeps `e` to fail the job with once it is built (for operators that return no `Result`).
    pub fn defer_error(&self, e: crate::error::EngineError) {
        self.build_errors.borrow_mut().push(e);
    }

    /// How many key groups. Exchanges of keyed state route by key group (`route(key) % groups`),
    /// so that state saved by key group lands on the worker that owns it after a restore.
    pub fn key_groups(&self) -> u64 {
        u64::from(self.ckpt.key_groups)
    }

    /// Time since this worker started batch `b` (zero when unknown).
    pub fn batch_elapsed(&self, b: BatchId) -> std::time::Duration {
        match self.current_batch.get() {
            (current, Some(at)) if current == b => at.elapsed(),
            _ => std::time::Duration::ZERO,
        }
    }
}

/// The name of the next operator of `kind`, counted in `built`: the kind, numbered from the
/// second instance on (`window_aggregate`, `window_aggregate#2`, …). Operators are built in the
/// same order on every worker and every run of a job, so the names are stable.
pub(crate) fn numbered(
    built: &mut std::collections::BTreeMap<&'static str, usize>,
    kind: &'static str,
) -> String {
    let n = built.entry(kind).or_default();
    *n += 1;
    if *n == 1 {
        kind.to_string()
    } else {
        format!("{kind}#{n}")
    }
}

/// A DStream: a sequence of batches of `T`, one per batch id, distributed over the workers.
///
/// Build one from a source on a [`Job`](crate::Job), transform it with the operators (each in its
/// own module of [`operators`](crate::operators) and [`event_time`](crate::event_time)), and end
/// it with an output operation ([`DStream::foreach_batch`], [`DStream::print`],
/// [`DStream::save_as_text_files`]). A DStream is cheap to clone; a clone is a second consumer of
/// the same batches.
pub struct DStream<'s, T: Data> {
    pub(crate) stream: StreamVec<'s, BatchId, T>,
    /// Watermark reports of the sources this stream derives from (event time), if any.
    pub(crate) watermarks: Option<StreamVec<'s, BatchId, WatermarkReport>>,
    /// For a DStream (batch-count) window: its length in batches.
    pub(crate) window_batches: Option<u64>,
    pub(crate) shared: Rc<JobShared>,
}

impl<T: Data> Clone for DStream<'_, T> {
    fn clone(&self) -> Self {
        DStream {
            stream: self.stream.clone(),
            watermarks: self.watermarks.clone(),
            window_batches: self.window_batches,
            shared: Rc::clone(&self.shared),
        }
    }
}

impl<'s, T: Data> DStream<'s, T> {
    /// A stream with the same lineage (watermarks, job) as `self` but other batches.
    pub(crate) fn derive<U: Data>(&self, stream: StreamVec<'s, BatchId, U>) -> DStream<'s, U> {
        DStream {
            stream,
            watermarks: self.watermarks.clone(),
            window_batches: None,
            shared: Rc::clone(&self.shared),
        }
    }

    /// The batch clock of the job this stream belongs to.
    pub fn clock(&self) -> BatchClock {
        self.shared.clock
    }

    /// The timely scope, for callers that mix in raw timely operators.
    pub fn scope(&self) -> Scope<'s, BatchId> {
        self.stream.scope()
    }
}

/// Runs `logic` once for every batch id, in order, with all of that batch's records from the
/// input (after `pact` routed them), once the input frontier has passed the batch. `logic` may
/// push outputs for that batch. Empty batches are visited too, so window and timeout logic runs
/// even when no data arrives.
pub(crate) fn batch_unary<'s, T, O, P, L>(
    stream: &StreamVec<'s, BatchId, T>,
    pact: P,
    name: &str,
    mut logic: L,
) -> StreamVec<'s, BatchId, O>
where
    T: Data,
    O: Data,
    P: ParallelizationContract<BatchId, Vec<T>>,
    L: FnMut(BatchId, Vec<T>, &mut Vec<O>) + 'static,
{
    let first = first_batch(stream);
    stream
        .clone()
        .unary_frontier(pact, name, move |cap, _info| {
            let mut cursor = BatchCursor::new(cap, first);
            let mut pending: BTreeMap<BatchId, Vec<Vec<T>>> = BTreeMap::new();
            let mut out = Vec::new();
            move |(input, frontier), output| {
                input.for_each(|time, data| {
                    pending
                        .entry(*time.time())
                        .or_default()
                        .push(std::mem::take(data))
                });
                let limit = frontier.frontier().first().copied();
                let last = last_pending(&pending);
                cursor.advance(
                    limit,
                    last,
                    &mut out,
                    |b, out| logic(b, gather(pending.remove(&b)), out),
                    |at, out| output.session(at).give_container(out),
                );
            }
        })
        .container::<Vec<O>>()
}

/// [`batch_unary`] for two inputs: `logic` sees both inputs' records of each batch.
pub(crate) fn batch_binary<'s, A, B, O, PA, PB, L>(
    left: &StreamVec<'s, BatchId, A>,
    right: &StreamVec<'s, BatchId, B>,
    pact_left: PA,
    pact_right: PB,
    name: &str,
    mut logic: L,
) -> StreamVec<'s, BatchId, O>
where
    A: Data,
    B: Data,
    O: Data,
    PA: ParallelizationContract<BatchId, Vec<A>>,
    PB: ParallelizationContract<BatchId, Vec<B>>,
    L: FnMut(BatchId, Vec<A>, Vec<B>, &mut Vec<O>) + 'static,
{
    let first = first_batch(left);
    let constructor = move |cap, _info| {
        let mut cursor = BatchCursor::new(cap, first);
        let mut pending_a: BTreeMap<BatchId, Vec<Vec<A>>> = BTreeMap::new();
        let mut pending_b: BTreeMap<BatchId, Vec<Vec<B>>> = BTreeMap::new();
        let mut out = Vec::new();
        move |(in_a, frontier_a): (&mut InputHandleCore<BatchId, Vec<A>, PA::Puller>, &MutableAntichain<BatchId>),
              (in_b, frontier_b): (&mut InputHandleCore<BatchId, Vec<B>, PB::Puller>, &MutableAntichain<BatchId>),
              output: &mut OutputBuilderSession<'_, BatchId, CapacityContainerBuilder<Vec<O>>>| {
            in_a.for_each(|t, d| pending_a.entry(*t.time()).or_default().push(std::mem::take(d)));
            in_b.for_each(|t, d| pending_b.entry(*t.time()).or_default().push(std::mem::take(d)));
            let limit = earliest(frontier_a, frontier_b);
            let last = last_pending(&pending_a).max(last_pending(&pending_b));
            cursor.advance(
                limit,
                last,
                &mut out,
                |b, out| {
                    let a = gather(pending_a.remove(&b));
                    let bb = gather(pending_b.remove(&b));
                    logic(b, a, bb, out);
                },
                |at, out| output.session(at).give_container(out),
            );
        }
    };
    left.clone()
        .binary_frontier(right.clone(), pact_left, pact_right, name, constructor)
        .container::<Vec<O>>()
}

/// What [`batch_binary_eager`] hands its logic.
pub(crate) enum Piece<'a, A, B> {
    /// A container of the left input's records of the batch (take what you need from it).
    Data(&'a mut Vec<A>),
    /// The batch has ended: all of the right input's records for it.
    End(Vec<B>),
}

/// [`batch_binary`] for operators that can take a batch's records a container at a time: `logic`
/// sees each container of the left input as [`Piece::Data`] as it arrives, provided every earlier
/// batch has ended (otherwise the container waits until they have), and then [`Piece::End`] once
/// the frontier has passed the batch, with the right input's records for it (watermark reports,
/// say).
///
/// Batches are visited in order, every piece of batch `b` comes after the end of every batch
/// before `b`, and a batch's containers come in the order they arrived, so an operator sees what
/// [`batch_binary`] would show it, split into pieces. What it saves is gathering a large batch into
/// one vector before any work starts: containers are used while still in cache, and their memory
/// is reused.
pub(crate) fn batch_binary_eager<'s, A, B, O, PA, PB, L>(
    left: &StreamVec<'s, BatchId, A>,
    right: &StreamVec<'s, BatchId, B>,
    pact_left: PA,
    pact_right: PB,
    name: &str,
    mut logic: L,
) -> StreamVec<'s, BatchId, O>
where
    A: Data,
    B: Data,
    O: Data,
    PA: ParallelizationContract<BatchId, Vec<A>>,
    PB: ParallelizationContract<BatchId, Vec<B>>,
    L: FnMut(BatchId, Piece<'_, A, B>, &mut Vec<O>) + 'static,
{
    let first = first_batch(left);
    let constructor = move |cap, _info| {
        let mut cursor = BatchCursor::new(cap, first);
        // Containers that came before their batch opened, kept whole (not appended into one vector).
        let mut pending_a: BTreeMap<BatchId, Vec<Vec<A>>> = BTreeMap::new();
        let mut pending_b: BTreeMap<BatchId, Vec<B>> = BTreeMap::new();
        let mut out = Vec::new();
        move |(in_a, frontier_a): (&mut InputHandleCore<BatchId, Vec<A>, PA::Puller>, &MutableAntichain<BatchId>),
              (in_b, frontier_b): (&mut InputHandleCore<BatchId, Vec<B>, PB::Puller>, &MutableAntichain<BatchId>),
              output: &mut OutputBuilderSession<'_, BatchId, CapacityContainerBuilder<Vec<O>>>| {
            in_b.for_each(|t, d| pending_b.entry(*t.time()).or_default().append(d));
            let limit = earliest(frontier_a, frontier_b);
            // End every batch the frontiers have passed before taking new containers: a container
            // of a passed batch cannot still be waiting (the frontier counts it until it is
            // taken), so what arrives next belongs to the first open batch or a later one.
            let last = last_pending(&pending_a).max(last_pending(&pending_b));
            cursor.advance(
                limit,
                last,
                &mut out,
                |b, out| {
                    for mut data in pending_a.remove(&b).unwrap_or_default() {
                        logic(b, Piece::Data(&mut data), out);
                    }
                    logic(b, Piece::End(pending_b.remove(&b).unwrap_or_default()), out);
                },
                |at, out| output.session(at).give_container(out),
            );
            let open = cursor.open();
            // Containers that came early for the batch now open go first, in arrival order.
            if let Some((b, _)) = open {
                for mut data in pending_a.remove(&b).unwrap_or_default() {
                    logic(b, Piece::Data(&mut data), &mut out);
                }
            }
            in_a.for_each(|t, d| {
                let b = *t.time();
                match open {
                    Some((now, _)) if now == b => logic(b, Piece::Data(d), &mut out),
                    _ => pending_a.entry(b).or_default().push(std::mem::take(d)),
                }
            });
            // Everything produced here belongs to the open batch.
            if let Some((b, held)) = open
                && !out.is_empty()
            {
                output.session(&held.delayed(&b)).give_container(&mut out);
                out.clear();
            }
        }
    };
    left.clone()
        .binary_frontier(right.clone(), pact_left, pact_right, name, constructor)
        .container::<Vec<O>>()
}

/// Walks batch ids in order as the input frontier passes them, holding the capability that lets
/// an operator emit at each of them; drops it when the input is closed, so progress never stalls.
struct BatchCursor {
    cap: Option<Capability<BatchId>>,
    next: BatchId,
    /// How many records the last batch's visit produced.
    emitted: usize,
}

impl BatchCursor {
    /// A cursor whose first batch is `first` (after a restored checkpoint's batch; the inputs
    /// start there too, so no earlier batch exists).
    fn new(mut cap: Capability<BatchId>, first: BatchId) -> Self {
        cap.downgrade(&first);
        BatchCursor {
            cap: Some(cap),
            next: first,
            emitted: 0,
        }
    }

    /// The first batch not yet visited (every earlier one has ended, so its records can be taken
    /// as they come) and the held capability, while the input is open.
    fn open(&self) -> Option<(BatchId, &Capability<BatchId>)> {
        self.cap.as_ref().map(|cap| (self.next, cap))
    }

    /// Visits every batch below `limit` (all up to `last_pending` once the input is closed, when
    /// `limit` is `None`) and emits what each visit produced at that batch.
    fn advance<O>(
        &mut self,
        limit: Option<BatchId>,
        last_pending: BatchId,
        out: &mut Vec<O>,
        mut visit: impl FnMut(BatchId, &mut Vec<O>),
        mut emit: impl FnMut(&Capability<BatchId>, &mut Vec<O>),
    ) {
        let Some(held) = self.cap.as_mut() else {
            return;
        };
        let upto = limit.unwrap_or_else(|| last_pending.max(self.next));
        while self.next < upto {
            // Emitting hands the vector on and leaves an empty one: size it like the last
            // batch's output instead of growing it (and copying it) record by record.
            out.reserve(self.emitted);
            visit(self.next, out);
            self.emitted = out.len();
            if !out.is_empty() {
                emit(&held.delayed(&self.next), out);
                out.clear();
            }
            self.next += 1;
        }
        match limit {
            // Before the inputs have moved to a restored job's first batch, the frontier is
            // still behind the cursor.
            Some(l) if l > *held.time() => held.downgrade(&l),
            Some(_) => {}
            None => self.cap = None,
        }
    }
}

/// A batch's records from the containers they came in: the one container itself when there is
/// one, else one vector of exactly their total size (containers are kept whole as they come, so a
/// large batch is not copied again every time its vector would have grown).
fn gather<T>(parts: Option<Vec<Vec<T>>>) -> Vec<T> {
    let mut parts = parts.unwrap_or_default();
    if parts.len() <= 1 {
        return parts.pop().unwrap_or_default();
    }
    let mut all = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    for mut part in parts {
        all.append(&mut part);
    }
    all
}

/// The earlier of two input frontiers (`None` once both inputs are closed).
fn earliest(a: &MutableAntichain<BatchId>, b: &MutableAntichain<BatchId>) -> Option<BatchId> {
    match (a.frontier().first().copied(), b.frontier().first().copied()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The first batch of the job `stream` belongs to: every input is advanced to it before the
/// first record is sent, so operators start their batch walk there.
/// The worker sets it (in [`building_from`]) while it builds a job's dataflow on its own thread:
/// operators are built deep inside the job function, which has no other way to pass it down.
fn first_batch<T: Data>(_stream: &StreamVec<'_, BatchId, T>) -> BatchId {
    FIRST_BATCH.with(|f| f.get())
}

thread_local! {
    static FIRST_BATCH: std::cell::Cell<BatchId> = const { std::cell::Cell::new(0) };
}

/// Runs `build` (which builds a job's dataflow on this worker thread) with `first` as the first
/// batch every operator built meanwhile starts at.
pub(crate) fn building_from<R>(first: BatchId, build: impl FnOnce() -> R) -> R {
    let before = FIRST_BATCH.with(|f| f.replace(first));
    let out = build();
    FIRST_BATCH.with(|f| f.set(before));
    out
}

fn last_pending<T>(pending: &BTreeMap<BatchId, T>) -> BatchId {
    pending.keys().next_back().map_or(0, |&k| k + 1)
}
