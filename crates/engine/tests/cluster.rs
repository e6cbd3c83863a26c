//! Cluster mode: the same job on several processes (here: several engines in one test process,
//! each with its own timely communication over loopback TCP, exactly as separate processes
//! connect) gives, batch by batch, what one process gives, with and without checkpoints; a
//! checkpoint taken with N processes restores with M; a process that never comes is named.

mod stateful;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use clickpulse_engine::checkpoint::{CheckpointInterval, Checkpointing, MemoryStore};
use clickpulse_engine::testing::VecSource;
use clickpulse_engine::{Cluster, EngineError, RunMode, RunSummary, StreamingContext};
use proptest::prelude::*;
use stateful::{Event, Outputs, build, checkpoints, crashed_copy, events};

fn free_ports(n: usize) -> Vec<String> {
    // Hold every listener until all ports are picked, so that no two are the same.
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("bound").to_string())
        .collect()
}

type Run = Result<(BTreeMap<u64, Vec<String>>, RunSummary), EngineError>;

/// Runs the job until the end of `source` as `processes` processes of `workers` workers each,
/// every one checkpointing every batch into `store` when given. Returns what each process's
/// output received (only process 0's may receive anything) and its summary.
fn run_processes(
    processes: usize,
    workers: usize,
    chunk: usize,
    source: &VecSource<Event>,
    store: Option<&MemoryStore>,
) -> Vec<Run> {
    let addresses = free_ports(processes);
    let handles: Vec<_> = (0..processes)
        .map(|process| {
            let addresses = addresses.clone();
            let source = source.clone();
            let store = store.cloned();
            std::thread::spawn(move || -> Run {
                let outputs: Outputs = Arc::default();
                let mut ctx = StreamingContext::new(Duration::from_secs(1))?
                    .workers(workers)?
                    .max_records_per_partition(chunk)?
                    .mode(RunMode::UntilEnd)
                    .connect_timeout(Duration::from_secs(20));
                if processes > 1 {
                    ctx = ctx.cluster(Cluster::Processes { addresses, process })?;
                }
                if let Some(store) = store {
                    let settings = Checkpointing::new(Arc::new(store))
                        .interval(CheckpointInterval::Batches(1))
                        .keep(100_000);
                    ctx = ctx.checkpointing(settings)?;
                }
                let sink = Arc::clone(&outputs);
                let summary = ctx.run(move |job| build(job, &source, Arc::clone(&sink)))?;
                let out = std::mem::take(&mut *outputs.lock().unwrap_or_else(|p| p.into_inner()));
                Ok((out, summary))
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("a process thread"))
        .collect()
}

/// Process 0's outputs and summary, after checking that no other process output anything and
/// that all agree on the batches and rows.
fn gathered(runs: Vec<Run>) -> Result<(BTreeMap<u64, Vec<String>>, RunSummary), TestCaseError> {
    let mut runs = runs.into_iter();
    let (out, summary) = runs.next().expect("process 0").map_err(fail)?;
    for (i, r) in runs.enumerate() {
        let (other, s) = r.map_err(fail)?;
        prop_assert!(other.is_empty(), "process {} wrote outputs", i + 1);
        prop_assert_eq!(s.batches, summary.batches);
        prop_assert_eq!(s.input_rows, summary.input_rows);
    }
    Ok((out, summary))
}

fn fail(e: EngineError) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// 3 processes of 1 worker and 2 processes of 2 workers give, batch by batch, what 1
    /// process of 2 workers gives, for every stateful operator; with checkpoints too (each
    /// process writes its workers' parts, process 0 the manifest), and a checkpoint of the
    /// 3-process run restores with 2 processes and with 1, continuing like the uninterrupted run.
    #[test]
    fn processes_give_what_one_process_gives(
        parts in events(),
        chunk in 1usize..6,
        pick in any::<prop::sample::Index>(),
    ) {
        let source = VecSource::new("events", parts);
        let (one, one_summary) = gathered(run_processes(1, 2, chunk, &source, None))?;
        let (three, _) = gathered(run_processes(3, 1, chunk, &source, None))?;
        prop_assert_eq!(&three, &one);
        let (two_by_two, _) = gathered(run_processes(2, 2, chunk, &source, None))?;
        prop_assert_eq!(&two_by_two, &one);

        let store = MemoryStore::default();
        let (checkpointed, summary) = gathered(run_processes(3, 1, chunk, &source, Some(&store)))?;
        prop_assert_eq!(&checkpointed, &one);
        prop_assert_eq!(summary.input_rows, one_summary.input_rows);
        let taken = checkpoints(&store);
        prop_assume!(!taken.is_empty());
        let checkpoint = *pick.get(&taken);
        let expected: BTreeMap<u64, Vec<String>> =
            one.range(checkpoint + 1..).map(|(b, r)| (*b, r.clone())).collect();
        for (processes, workers) in [(2, 1), (1, 1)] {
            let (restored, after) =
                gathered(run_processes(processes, workers, chunk, &source, Some(&crashed_copy(&store, Some(checkpoint), Some(checkpoint)))))?;
            prop_assert_eq!(after.resumed_from_batch, Some(checkpoint));
            let got: BTreeMap<u64, Vec<String>> = restored
                .into_iter()
                .filter(|(b, _)| *b < one_summary.batches)
                .collect();
            prop_assert_eq!(&got, &expected, "restored with {} processes", processes);
        }
    }
}

/// A checkpoint of a 3-process run is complete: one part per worker of every process, and a
/// manifest written by process 0 naming them all.
#[test]
fn every_process_writes_its_parts_and_process_0_the_manifest() {
    let parts = vec![
        (0..60)
            .map(|i| ((i % 5) as u8, 300 * i + (i * 37) % 900))
            .collect::<Vec<_>>(),
        (0..40).map(|i| ((i % 3) as u8, 400 * i)).collect(),
        (0..30).map(|i| ((i % 4) as u8, 500 * i)).collect(),
    ];
    let source = VecSource::new("events", parts);
    let store = MemoryStore::default();
    let runs = run_processes(3, 1, 3, &source, Some(&store));
    for r in &runs {
        assert!(r.is_ok(), "{:?}", r.as_ref().err());
    }
    let found = clickpulse_engine::checkpoint::inspect(&store)
        .expect("readable")
        .expect("a checkpoint");
    assert_eq!(found.0.workers, 3);
    assert_eq!(found.1.len(), 3);
    let sent: Vec<u64> = runs
        .iter()
        .map(|r| r.as_ref().map_or(0, |(_, s)| s.exchange_bytes_sent))
        .collect();
    assert!(
        sent.iter().all(|b| *b > 0),
        "bytes sent per process: {sent:?}"
    );
}

/// A process that never starts is named by the others once the connect timeout passes.
#[test]
fn a_process_that_never_starts_is_named() {
    let addresses = free_ports(3);
    let source = VecSource::new("events", vec![vec![(1u8, 1u64)]]);
    let ctx = StreamingContext::new(Duration::from_secs(1))
        .unwrap()
        .mode(RunMode::UntilEnd)
        .connect_timeout(Duration::from_millis(500))
        .cluster(Cluster::Processes {
            addresses: addresses.clone(),
            process: 0,
        })
        .unwrap();
    let outputs: Outputs = Arc::default();
    let err = ctx
        .run(move |job| build(job, &source, Arc::clone(&outputs)))
        .expect_err("no peer came");
    let text = err.to_string();
    assert!(matches!(err, EngineError::ClusterStart { .. }), "{text}");
    assert!(
        text.contains("process 1") && text.contains("process 2"),
        "{text}"
    );
    assert!(text.contains(&addresses[2]), "{text}");
}
