//! Checkpoint, restore, continue: a job restored from any checkpoint, with the offset log cut at
//! any later batch (a crash there), and restarted with any worker count produces, batch by batch,
//! what the uninterrupted run produced, for every stateful operator.

mod stateful;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use clickpulse_engine::checkpoint::{
    CheckpointInterval, CheckpointStore, Checkpointing, MemoryStore,
};
use clickpulse_engine::source::{PartitionId, PartitionReader, PartitionedSource, SourceError};
use clickpulse_engine::testing::VecSource;
use clickpulse_engine::{EngineError, Job, RecoveryError, RunMode, RunSummary, StreamingContext};
use proptest::prelude::*;
use stateful::{Event, Outputs, build, checkpoints, crashed_copy, events};

/// Runs the job until the end of `source` on `workers` workers, `chunk` records per partition per
/// batch, checkpointing every batch into `store` when given.
fn run(
    workers: usize,
    chunk: usize,
    source: &VecSource<Event>,
    store: Option<MemoryStore>,
) -> Result<(BTreeMap<u64, Vec<String>>, RunSummary), EngineError> {
    let outputs: Outputs = Arc::default();
    let mut ctx = StreamingContext::new(Duration::from_secs(1))?
        .workers(workers)?
        .max_records_per_partition(chunk)?
        .mode(RunMode::UntilEnd);
    if let Some(store) = store {
        let settings = Checkpointing::new(Arc::new(store))
            .interval(CheckpointInterval::Batches(1))
            .keep(100_000);
        ctx = ctx.checkpointing(settings)?;
    }
    let sink = Arc::clone(&outputs);
    let source = source.clone();
    let summary = ctx.run(move |job| build(job, &source, Arc::clone(&sink)))?;
    let out = std::mem::take(&mut *outputs.lock().unwrap_or_else(|p| p.into_inner()));
    Ok((out, summary))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Snapshot at any checkpoint, crash at any later batch, restore with another worker count:
    /// every batch after the checkpoint equals the uninterrupted run's.
    #[test]
    fn restored_runs_continue_like_the_uninterrupted_run(
        parts in events(),
        chunk in 1usize..6,
        workers_before in prop::sample::select(vec![1usize, 2, 3]),
        workers_after in prop::sample::select(vec![1usize, 2, 4]),
        pick in any::<prop::sample::Index>(),
        crash_after in 0u64..6,
    ) {
        let source = VecSource::new("events", parts);
        let (plain, _) = run(workers_before, chunk, &source, None).expect("plain run");
        let store = MemoryStore::default();
        let (full, summary) = run(workers_before, chunk, &source, Some(store.clone()))
            .expect("checkpointed run");
        prop_assert_eq!(&full, &plain, "checkpoints change no result");
        let batches = summary.batches;
        let mut candidates: Vec<Option<u64>> = vec![None];
        candidates.extend(checkpoints(&store).into_iter().map(Some));
        let checkpoint = *pick.get(&candidates);
        let crash = checkpoint.map_or(crash_after, |c| c + crash_after).min(batches.saturating_sub(1));
        let crashed = crashed_copy(&store, checkpoint, Some(crash));
        let (restored, after) = run(workers_after, chunk, &source, Some(crashed))
            .expect("restored run");
        prop_assert_eq!(after.resumed_from_batch, checkpoint);
        let first = checkpoint.map_or(0, |c| c + 1);
        prop_assert_eq!(after.first_batch, first);
        prop_assert_eq!(after.replayed_batches, (crash + 1).saturating_sub(first));
        let expected: BTreeMap<u64, Vec<String>> =
            full.range(first..).map(|(b, r)| (*b, r.clone())).collect();
        let got: BTreeMap<u64, Vec<String>> = restored
            .into_iter()
            .filter(|(b, _)| *b < batches)
            .collect();
        prop_assert_eq!(got, expected);
    }
}

/// The generated inputs do exercise restored state: some runs have checkpoints with open
/// sessions and windows, and late events (or the property above would hold trivially).
#[test]
fn checkpoints_hold_open_state() {
    let parts = vec![
        (0..60)
            .map(|i| ((i % 5) as u8, 300 * i + (i * 37) % 900))
            .collect::<Vec<_>>(),
        (0..40).map(|i| ((i % 3) as u8, 400 * i)).collect(),
    ];
    let source = VecSource::new("events", parts);
    let store = MemoryStore::default();
    let (full, summary) = run(2, 3, &source, Some(store.clone())).expect("run");
    assert!(summary.batches > 10, "{summary:?}");
    let late = full
        .values()
        .flatten()
        .filter(|r| r.contains("late"))
        .count();
    assert!(late > 0, "no late events");
    let found = clickpulse_engine::checkpoint::inspect(&store)
        .expect("readable")
        .expect("a checkpoint");
    let keyed_entries: u64 = found
        .1
        .iter()
        .flat_map(|p| p.operators.values())
        .flat_map(|o| o.entries.values())
        .sum();
    // The last checkpoint is taken before the end of input closes every window and session.
    assert!(keyed_entries > 0, "the newest checkpoint holds no state");
}

/// A newest checkpoint whose part or manifest is damaged is skipped for the one before; the
/// restored run still equals the uninterrupted one.
#[test]
fn damaged_newest_checkpoint_falls_back_to_the_previous_one() {
    let parts = vec![
        (0..50)
            .map(|i| ((i % 4) as u8, 250 * i))
            .collect::<Vec<_>>(),
    ];
    let source = VecSource::new("events", parts);
    let store = MemoryStore::default();
    let (full, _) = run(2, 2, &source, Some(store.clone())).expect("run");
    let all = checkpoints(&store);
    assert!(all.len() >= 3, "{all:?}");
    let (older, newest) = (all[all.len() - 3], all[all.len() - 2]);
    for damage in ["part", "manifest"] {
        let crashed = crashed_copy(&store, Some(newest), Some(newest + 1));
        let target = crashed
            .list("")
            .unwrap()
            .into_iter()
            .find(|p| {
                p.contains(&format!("/checkpoints/{newest:020}/"))
                    && (damage == "manifest") == p.ends_with("MANIFEST")
            })
            .expect("an object to damage");
        let mut bytes = crashed.get(&target).unwrap().unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        crashed.put(&target, bytes).unwrap();
        let (restored, summary) = run(1, 2, &source, Some(crashed)).expect("restored run");
        assert_eq!(summary.resumed_from_batch, Some(older), "{damage}");
        for (b, rows) in restored.range(older + 1..) {
            assert_eq!(Some(rows), full.get(b), "{damage}: batch {b}");
        }
    }
}

/// A checkpoint of another job is refused, naming what differs; `from_scratch` starts anew and
/// leaves the old checkpoints where they are.
#[test]
fn a_changed_job_is_refused_and_from_scratch_starts_anew() {
    let source = VecSource::new("events", vec![(0..30).map(|i| (1, 100 * i)).collect()]);
    let store = MemoryStore::default();
    let settings = |fp: &str| {
        Checkpointing::new(Arc::new(store.clone()))
            .interval(CheckpointInterval::Batches(1))
            .fingerprint(BTreeMap::from([("windows".to_string(), fp.to_string())]))
    };
    let job =
        |source: VecSource<Event>| move |job: &mut Job<'_>| build(job, &source, Arc::default());
    let ctx = StreamingContext::new(Duration::from_secs(1))
        .unwrap()
        .max_records_per_partition(3)
        .unwrap()
        .mode(RunMode::UntilEnd)
        .checkpointing(settings("1s"))
        .unwrap();
    ctx.run(job(source.clone())).unwrap();
    let before = store.list("").unwrap();
    let refused = StreamingContext::new(Duration::from_secs(1))
        .unwrap()
        .checkpointing(settings("2s"));
    match refused {
        Err(EngineError::Recovery(RecoveryError::JobChanged { differences, .. })) => {
            assert_eq!(
                differences,
                vec!["windows: checkpoint `1s`, job `2s`".to_string()]
            );
        }
        Err(e) => panic!("refused for the wrong reason: {e}"),
        Ok(_) => panic!("a changed job was not refused"),
    }
    let fresh = StreamingContext::new(Duration::from_secs(1))
        .unwrap()
        .max_records_per_partition(3)
        .unwrap()
        .mode(RunMode::UntilEnd)
        .checkpointing(settings("2s").from_scratch(true))
        .unwrap();
    assert_eq!(fresh.recovered().and_then(|r| r.resumed_from()), None);
    let summary = fresh.run(job(source)).unwrap();
    assert_eq!(summary.first_batch, 0);
    let after = store.list("").unwrap();
    assert!(
        before.iter().all(|p| after.contains(p)),
        "old checkpoints kept"
    );
    assert!(
        after.iter().any(|p| p.starts_with("g0001/")),
        "a new generation"
    );
}

/// A source whose readers, opened anywhere but at the start, skip one record: what a broker
/// that serves a fetch from past the offset asked for does.
#[derive(Clone)]
struct Skipping(VecSource<Event>);

impl PartitionedSource for Skipping {
    type Item = Event;

    fn name(&self) -> &str {
        self.0.name()
    }

    fn partitions(&self) -> Result<u32, SourceError> {
        self.0.partitions()
    }

    fn open(
        &self,
        partition: PartitionId,
        from: Option<u64>,
    ) -> Result<Box<dyn PartitionReader<Event>>, SourceError> {
        self.0
            .open(partition, from.map(|f| if f > 0 { f + 1 } else { f }))
    }
}

/// A restart whose input no longer starts a logged batch where it started is refused: its
/// results would differ under the same batch ids.
#[test]
fn a_rerun_batch_whose_input_moved_is_refused() {
    let parts = vec![
        (0..40)
            .map(|i| ((i % 4) as u8, 250 * i))
            .collect::<Vec<_>>(),
    ];
    let source = VecSource::new("events", parts);
    let store = MemoryStore::default();
    let (_, summary) = run(1, 2, &source, Some(store.clone())).expect("run");
    let all = checkpoints(&store);
    let checkpoint = all[all.len() / 2];
    let crashed = crashed_copy(&store, Some(checkpoint), Some(summary.batches - 1));
    let skipping = Skipping(source);
    let result = StreamingContext::new(Duration::from_secs(1))
        .and_then(|c| c.max_records_per_partition(2))
        .map(|c| c.mode(RunMode::UntilEnd))
        .and_then(|c| {
            c.checkpointing(
                Checkpointing::new(Arc::new(crashed))
                    .interval(CheckpointInterval::Batches(1))
                    .keep(100_000),
            )
        })
        .and_then(|c| c.run(move |job| build(job, &skipping.0, Arc::default())));
    // The unskipped source restores fine; the skipping one must not.
    assert!(result.is_ok(), "{result:?}");
    let skipping = Skipping(VecSource::new(
        "events",
        vec![
            (0..40)
                .map(|i| ((i % 4) as u8, 250 * i))
                .collect::<Vec<_>>(),
        ],
    ));
    let crashed = crashed_copy(&store, Some(checkpoint), Some(summary.batches - 1));
    let refused = StreamingContext::new(Duration::from_secs(1))
        .and_then(|c| c.max_records_per_partition(2))
        .map(|c| c.mode(RunMode::UntilEnd))
        .and_then(|c| c.checkpointing(Checkpointing::new(Arc::new(crashed))))
        .and_then(|c| c.run(move |job| build(job, &skipping, Arc::default())));
    match refused {
        Err(EngineError::Recovery(RecoveryError::InputChanged { expected, got, .. })) => {
            assert_eq!(got, expected + 1);
        }
        other => panic!("a moved input was not refused: {other:?}"),
    }
}
