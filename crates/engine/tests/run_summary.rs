//! What a bounded run reports: the `RunSummary`, the listener's per-batch events (input rows,
//! offsets, dead letters, late events), dead letters delivered on their own stream, and the
//! per-partition chunk size.

mod common;
mod model;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clickpulse_engine::listener::{BatchCompleted, BatchSubmitted, StreamingListener};
use clickpulse_engine::source::{
    DeadLetter, PartitionId, PartitionProgress, PartitionReader, PartitionedSource, PollContext,
    Polled, ReadStatus, SourceError,
};
use clickpulse_engine::testing::TEST_BATCH_INTERVAL;
use clickpulse_engine::{
    EventTime, Job, QueueSource, RunMode, RunSummary, StreamingContext, Window, Windows,
};
use common::{Ev, Rec};
use model::event_time::{self as m, WindowSpec};

/// Keeps every listener event.
#[derive(Default)]
struct Recorder {
    submitted: Mutex<Vec<BatchSubmitted>>,
    completed: Mutex<Vec<BatchCompleted>>,
}

impl StreamingListener for Recorder {
    fn on_batch_submitted(&self, event: &BatchSubmitted) {
        self.submitted
            .lock()
            .expect("a panicking thread poisoned the lock")
            .push(event.clone());
    }

    fn on_batch_completed(&self, event: &BatchCompleted) {
        self.completed
            .lock()
            .expect("a panicking thread poisoned the lock")
            .push(event.clone());
    }
}

/// Runs `job` until the end of input with a recording listener.
fn run_recorded<F>(
    workers: usize,
    max_records: Option<usize>,
    job: F,
) -> (RunSummary, Arc<Recorder>)
where
    F: Fn(&mut Job<'_>) -> clickpulse_engine::Result<()> + Send + Sync + 'static,
{
    let recorder = Arc::new(Recorder::default());
    let mut ctx = StreamingContext::new(TEST_BATCH_INTERVAL)
        .expect("a valid batch interval")
        .workers(workers)
        .expect("a valid worker count")
        .mode(RunMode::UntilEnd);
    if let Some(n) = max_records {
        ctx = ctx
            .max_records_per_partition(n)
            .expect("a valid chunk size");
    }
    ctx.add_listener(Arc::clone(&recorder) as Arc<dyn StreamingListener>);
    let summary = ctx.run(job).expect("the run succeeds");
    (summary, recorder)
}

/// `n` records for partition `p`, batch `b`.
fn recs(p: usize, b: usize, n: usize) -> Vec<Rec> {
    (0..n)
        .map(|i| (char::from(b'a' + p as u8), (b * 100 + i) as i32))
        .collect()
}

/// Batch sizes per partition → the queued batches.
fn queued(sizes: &[Vec<usize>]) -> Vec<Vec<Vec<Rec>>> {
    sizes
        .iter()
        .enumerate()
        .map(|(p, bs)| bs.iter().enumerate().map(|(b, &n)| recs(p, b, n)).collect())
        .collect()
}

/// The offsets a queue source reports per batch: `[from, to)` for every partition that served
/// records, its offsets counting records.
fn expected_offsets(name: &str, sizes: &[Vec<usize>], batch: usize) -> Vec<PartitionProgress> {
    sizes
        .iter()
        .enumerate()
        .filter_map(|(p, bs)| {
            let n = *bs.get(batch)?;
            let from: usize = bs[..batch].iter().sum();
            (n > 0).then(|| PartitionProgress {
                source: name.to_string(),
                partition: p as PartitionId,
                from: from as u64,
                to: (from + n) as u64,
            })
        })
        .collect()
}

fn sorted_offsets(mut offsets: Vec<PartitionProgress>) -> Vec<PartitionProgress> {
    offsets.sort_by_key(|o| (o.source.clone(), o.partition));
    offsets
}

/// Runs a pass-through job over a queue source with these batch sizes and checks the summary and
/// every listener event against them.
fn check_bounded_run(workers: usize, sizes: &[Vec<usize>]) {
    let source = QueueSource::partitioned("clicks", queued(sizes));
    let rows_seen: Arc<Mutex<BTreeMap<u64, usize>>> = Arc::default();
    let sink = Arc::clone(&rows_seen);
    let (summary, recorder) = run_recorded(workers, None, move |job| {
        let sink = Arc::clone(&sink);
        job.source(&source)?.foreach_batch(move |info, rows| {
            sink.lock()
                .expect("a panicking thread poisoned the lock")
                .insert(info.batch, rows.len());
        });
        Ok(())
    });
    let batches = sizes.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let per_batch: Vec<usize> = (0..batches)
        .map(|b| sizes.iter().filter_map(|p| p.get(b)).sum())
        .collect();
    let context = format!("{workers} workers, sizes {sizes:?}");
    assert_eq!(
        summary,
        RunSummary {
            batches: batches as u64,
            input_rows: per_batch.iter().sum::<usize>() as u64,
            dead_letters: 0,
            late_events: 0,
            ..RunSummary::default()
        },
        "{context}"
    );
    let outputs: Vec<usize> = rows_seen
        .lock()
        .expect("a panicking thread poisoned the lock")
        .values()
        .copied()
        .collect();
    assert_eq!(outputs, per_batch, "{context}");

    let submitted: Vec<u64> = recorder
        .submitted
        .lock()
        .expect("a panicking thread poisoned the lock")
        .iter()
        .map(|e| e.batch)
        .collect();
    assert_eq!(
        submitted,
        (0..batches as u64).collect::<Vec<_>>(),
        "{context}"
    );
    let completed = recorder
        .completed
        .lock()
        .expect("a panicking thread poisoned the lock");
    let ids: Vec<u64> = completed.iter().map(|e| e.batch).collect();
    assert_eq!(ids, (0..batches as u64).collect::<Vec<_>>(), "{context}");
    for (b, event) in completed.iter().enumerate() {
        assert_eq!(
            event.input_rows, per_batch[b] as u64,
            "{context}, batch {b}"
        );
        assert_eq!(event.dead_letters, 0, "{context}, batch {b}");
        assert_eq!(
            sorted_offsets(event.offsets.clone()),
            expected_offsets("clicks", sizes, b),
            "{context}, batch {b}"
        );
    }
}

/// Worker 0 reads the longest partition, so it runs every batch itself.
#[test]
fn bounded_run_reports_every_batch_when_worker_0_reads_longest() {
    let sizes = vec![vec![2, 0, 3, 1, 4], vec![5, 1], vec![0, 2, 2]];
    for workers in [1, 2, 3] {
        check_bounded_run(workers, &sizes);
    }
}

/// Worker 1 reads the longest partition and still has batches to run after worker 0's
/// partitions have ended. Every batch must still be reported once, with its rows and offsets.
#[test]
fn bounded_run_reports_every_batch_when_another_worker_reads_longest() {
    let sizes = vec![vec![2, 0, 3], vec![5, 1, 1, 0, 4], vec![0, 2]];
    for workers in [2, 3] {
        check_bounded_run(workers, &sizes);
    }
}

/// The summary alone (no listener) is right whichever worker reads the longest partition.
#[test]
fn bounded_run_summary_counts_all_workers() {
    let sizes = vec![vec![2, 0, 3], vec![5, 1, 1, 0, 4], vec![0, 2], vec![]];
    for workers in [1, 2, 4] {
        let source = QueueSource::partitioned("clicks", queued(&sizes));
        let summary = StreamingContext::new(TEST_BATCH_INTERVAL)
            .unwrap()
            .workers(workers)
            .unwrap()
            .mode(RunMode::UntilEnd)
            .run(move |job| {
                job.source(&source)?.foreach_batch(|_, _| {});
                Ok(())
            })
            .unwrap();
        assert_eq!(summary.batches, 5, "{workers} workers");
        assert_eq!(summary.input_rows, 18, "{workers} workers");
        assert_eq!(summary.dead_letters, 0, "{workers} workers");
    }
}

/// Lines of text per partition, one queued batch per engine batch; lines that are not integers
/// become dead letters at their offset.
#[derive(Clone)]
struct LinesSource {
    partitions: Vec<Vec<Vec<&'static str>>>,
}

struct LinesReader {
    partition: PartitionId,
    batches: Vec<Vec<&'static str>>,
    next: usize,
    served: Option<u64>,
    position: u64,
}

impl PartitionReader<i32> for LinesReader {
    fn poll(
        &mut self,
        ctx: &PollContext,
        out: &mut Polled<i32>,
    ) -> Result<ReadStatus, SourceError> {
        if self.served != Some(ctx.batch)
            && let Some(lines) = self.batches.get(self.next)
        {
            self.served = Some(ctx.batch);
            self.next += 1;
            for line in lines {
                match line.parse::<i32>() {
                    Ok(v) => out.items.push(v),
                    Err(e) => out.dead_letters.push(DeadLetter {
                        source: "lines".into(),
                        partition: self.partition,
                        offset: self.position,
                        reason: e.to_string(),
                        raw: line.as_bytes().to_vec(),
                    }),
                }
                self.position += 1;
            }
        }
        Ok(if self.next == self.batches.len() {
            ReadStatus::Ended
        } else {
            ReadStatus::More
        })
    }

    fn position(&self) -> u64 {
        self.position
    }
}

impl PartitionedSource for LinesSource {
    type Item = i32;

    fn name(&self) -> &str {
        "lines"
    }

    fn partitions(&self) -> Result<u32, SourceError> {
        Ok(self.partitions.len() as u32)
    }

    fn open(
        &self,
        partition: PartitionId,
        _from: Option<u64>,
    ) -> Result<Box<dyn PartitionReader<i32>>, SourceError> {
        Ok(Box::new(LinesReader {
            partition,
            batches: self.partitions[partition as usize].clone(),
            next: 0,
            served: None,
            position: 0,
        }))
    }
}

type Collected<T> = Arc<Mutex<BTreeMap<u64, Vec<T>>>>;

#[test]
fn dead_letters_are_counted_and_delivered_beside_the_good_records() {
    for workers in [1, 2, 3] {
        let source = LinesSource {
            partitions: lines(),
        };
        check_lines(workers, source, 1);
    }
}

#[test]
fn a_mapped_source_maps_the_records_and_keeps_dead_letters_and_offsets() {
    for workers in [1, 2] {
        let source = LinesSource {
            partitions: lines(),
        };
        check_lines(workers, source.map_items(|v| v * 10), 10);
    }
}

fn lines() -> Vec<Vec<Vec<&'static str>>> {
    vec![
        vec![vec!["1", "x", "2"], vec!["3"], vec!["", "4", "5q"]],
        vec![vec!["10"], vec!["eleven", "12"]],
    ]
}

/// Runs `source` (the partitions of [`lines`], values multiplied by `scale`) and checks the good
/// values, the dead letters and the per-batch counts.
fn check_lines<S>(workers: usize, source: S, scale: i32)
where
    S: PartitionedSource<Item = i32> + Clone,
{
    // (batch, partition, offset, raw) of every bad line, and the good values per batch.
    let bad: Vec<(u64, PartitionId, u64, &str)> = vec![
        (0, 0, 1, "x"),
        (1, 1, 1, "eleven"),
        (2, 0, 4, ""),
        (2, 0, 6, "5q"),
    ];
    let good: Vec<Vec<i32>> = vec![vec![1, 2, 10], vec![3, 12], vec![4]];
    let good: Vec<Vec<i32>> = good
        .into_iter()
        .map(|b| b.into_iter().map(|v| v * scale).collect())
        .collect();
    {
        let values: Collected<i32> = Arc::default();
        let dead: Collected<(PartitionId, u64, Vec<u8>, bool)> = Arc::default();
        let (values_sink, dead_sink) = (Arc::clone(&values), Arc::clone(&dead));
        let (summary, recorder) = run_recorded(workers, None, move |job| {
            let (records, dead_letters) = job.source_with_dead_letters(&source, None)?;
            let values_sink = Arc::clone(&values_sink);
            records.foreach_batch(move |info, mut rows| {
                rows.sort();
                values_sink
                    .lock()
                    .expect("a panicking thread poisoned the lock")
                    .insert(info.batch, rows);
            });
            let dead_sink = Arc::clone(&dead_sink);
            dead_letters.foreach_batch(move |info, rows: Vec<DeadLetter>| {
                let mut rows: Vec<_> = rows
                    .into_iter()
                    .map(|d| {
                        let named = d.source == "lines" && !d.reason.is_empty();
                        (d.partition, d.offset, d.raw, named)
                    })
                    .collect();
                rows.sort();
                dead_sink
                    .lock()
                    .expect("a panicking thread poisoned the lock")
                    .insert(info.batch, rows);
            });
            Ok(())
        });
        let context = format!("{workers} workers");
        assert_eq!(summary.dead_letters, bad.len() as u64, "{context}");
        assert_eq!(summary.input_rows, 6, "{context}");
        assert_eq!(summary.batches, 3, "{context}");

        let values: Vec<Vec<i32>> = values
            .lock()
            .expect("a panicking thread poisoned the lock")
            .values()
            .cloned()
            .collect();
        assert_eq!(values, good, "{context}");
        let dead = dead.lock().expect("a panicking thread poisoned the lock");
        for b in 0..3u64 {
            let expected: Vec<_> = bad
                .iter()
                .filter(|d| d.0 == b)
                .map(|&(_, p, o, raw)| (p, o, raw.as_bytes().to_vec(), true))
                .collect();
            assert_eq!(
                dead.get(&b).cloned().unwrap_or_default(),
                expected,
                "{context}, batch {b}"
            );
        }
        // Worker 0 reads partition 0, which runs as long as any partition here.
        let per_batch: Vec<u64> = recorder
            .completed
            .lock()
            .expect("a panicking thread poisoned the lock")
            .iter()
            .map(|e| e.dead_letters)
            .collect();
        assert_eq!(per_batch, vec![1, 1, 2], "{context}");
    }
}

/// A reader over one queued list of records that honours `max_records`.
#[derive(Clone)]
struct Numbers(Vec<Vec<i32>>);

struct NumbersReader {
    rest: std::collections::VecDeque<i32>,
    position: u64,
}

impl PartitionReader<i32> for NumbersReader {
    fn poll(
        &mut self,
        ctx: &PollContext,
        out: &mut Polled<i32>,
    ) -> Result<ReadStatus, SourceError> {
        for _ in 0..ctx.max_records {
            let Some(x) = self.rest.pop_front() else {
                break;
            };
            out.items.push(x);
            self.position += 1;
        }
        Ok(if self.rest.is_empty() {
            ReadStatus::Ended
        } else {
            ReadStatus::More
        })
    }

    fn position(&self) -> u64 {
        self.position
    }
}

impl PartitionedSource for Numbers {
    type Item = i32;

    fn name(&self) -> &str {
        "numbers"
    }

    fn partitions(&self) -> Result<u32, SourceError> {
        Ok(self.0.len() as u32)
    }

    fn open(
        &self,
        partition: PartitionId,
        _from: Option<u64>,
    ) -> Result<Box<dyn PartitionReader<i32>>, SourceError> {
        Ok(Box::new(NumbersReader {
            rest: self.0[partition as usize].iter().copied().collect(),
            position: 0,
        }))
    }
}

/// Collects what each batch of a pass-through job holds.
fn batches_of<S>(source: S, max_records: usize) -> (RunSummary, Vec<Vec<i32>>)
where
    S: PartitionedSource<Item = i32> + Clone,
{
    let seen: Collected<i32> = Arc::default();
    let sink = Arc::clone(&seen);
    let (summary, _) = run_recorded(1, Some(max_records), move |job| {
        let sink = Arc::clone(&sink);
        job.source(&source)?.foreach_batch(move |info, mut rows| {
            rows.sort();
            sink.lock()
                .expect("a panicking thread poisoned the lock")
                .insert(info.batch, rows);
        });
        Ok(())
    });
    let seen = seen
        .lock()
        .expect("a panicking thread poisoned the lock")
        .values()
        .cloned()
        .collect();
    (summary, seen)
}

/// Until-end mode reads a chunk of at most `max_records_per_partition` per partition per batch.
#[test]
fn until_end_reads_chunks_of_max_records_per_partition() {
    let source = Numbers(vec![vec![1, 2, 3, 4, 5], vec![10, 11]]);
    let (summary, batches) = batches_of(source, 2);
    assert_eq!(summary.batches, 3);
    assert_eq!(summary.input_rows, 7);
    assert_eq!(batches, vec![vec![1, 2, 10, 11], vec![3, 4], vec![5]]);
}

/// The same limit applies to the queue source: `PartitionReader::poll` reads "up to
/// `ctx.max_records`" records, and the setting is "the most records one batch takes from one
/// partition".
#[test]
fn queue_source_honours_max_records_per_partition() {
    let source = QueueSource::from_batches("numbers", vec![vec![1, 2, 3, 4, 5]]);
    let (summary, batches) = batches_of(source, 2);
    assert_eq!(summary.input_rows, 5);
    assert!(
        batches.iter().all(|b| b.len() <= 2),
        "batches larger than 2 records: {batches:?}"
    );
    assert_eq!(batches.concat(), vec![1, 2, 3, 4, 5]);
}

/// The run's late-event count is the number of events the model judges late, and the last
/// batch's listener event carries the same total.
#[test]
fn late_events_are_counted_in_the_summary_and_the_listener() {
    // Partition 0 (worker 0's) is the longest, so worker 0 reports every batch.
    let parts: Vec<Vec<Vec<Ev>>> = vec![
        vec![
            vec![('c', 0, 8)],
            vec![('b', 1_800, 9)],
            vec![],
            vec![('c', 100, 10)],
        ],
        vec![
            vec![('a', 2_600, 1), ('b', 5_000, 2)],
            vec![('a', 400, 3), ('a', 4_000, 4)],
            vec![('a', 1_500, 5), ('b', 200, 6), ('a', 3_999, 7)],
        ],
    ];
    let spec = WindowSpec {
        size_ms: 1_000,
        slide_ms: 1_000,
    };
    let keyed: Vec<Vec<Vec<(char, Ev)>>> = parts
        .iter()
        .map(|p| {
            p.iter()
                .map(|b| b.iter().map(|&e| (e.0, e)).collect())
                .collect()
        })
        .collect();
    let tl = m::timeline(&keyed, |(_, e)| e.1, 500);
    let model = m::aggregate_by_key_in_window(&tl, spec, |e: &Ev| e.1, |vs| vs.len());
    let late: usize = model.late.iter().map(Vec::len).sum();
    assert!(
        late >= 2,
        "the case should have late events: {:?}",
        model.late
    );
    for workers in [1, 2, 3] {
        let source = QueueSource::partitioned("events", parts.clone());
        let (summary, recorder) = run_recorded(workers, None, move |job| {
            let event_time = EventTime::new(|e: &Ev| e.1)
                .allowed_lateness(Duration::from_millis(500))
                .idle_timeout(Duration::from_secs(3600));
            let s = job.source_with_event_time(&source, event_time)?;
            let windows = Windows::tumbling(Duration::from_secs(1)).unwrap();
            let o = s
                .map(|e| (e.0, e))
                .count_by_key_in_window(windows, |e| e.1)?;
            o.output.foreach_batch(|_, _: Vec<(char, Window, u64)>| {});
            o.late.foreach_batch(|_, _| {});
            Ok(())
        });
        assert_eq!(summary.late_events, late as u64, "{workers} workers");
        let completed = recorder
            .completed
            .lock()
            .expect("a panicking thread poisoned the lock");
        assert_eq!(completed.len() as u64, summary.batches, "{workers} workers");
        let last = completed.last().expect("batches completed");
        assert_eq!(last.late_events_total, late as u64, "{workers} workers");
    }
}

/// Like [`Numbers`], with a fetch in flight before every record: every other poll returns
/// nothing and [`ReadStatus::Pending`], as a Kafka reader does while its next fetch is on its way.
#[derive(Clone)]
struct Slow(Numbers);

struct SlowReader {
    inner: NumbersReader,
    wait: bool,
}

impl PartitionReader<i32> for SlowReader {
    fn poll(
        &mut self,
        ctx: &PollContext,
        out: &mut Polled<i32>,
    ) -> Result<ReadStatus, SourceError> {
        self.wait = !self.wait;
        if self.wait && !self.inner.rest.is_empty() {
            return Ok(ReadStatus::Pending);
        }
        let one = PollContext {
            max_records: 1,
            ..*ctx
        };
        self.inner.poll(&one, out)
    }

    fn position(&self) -> u64 {
        self.inner.position
    }
}

impl PartitionedSource for Slow {
    type Item = i32;

    fn name(&self) -> &str {
        "numbers"
    }

    fn partitions(&self) -> Result<u32, SourceError> {
        self.0.partitions()
    }

    fn open(
        &self,
        partition: PartitionId,
        _from: Option<u64>,
    ) -> Result<Box<dyn PartitionReader<i32>>, SourceError> {
        Ok(Box::new(SlowReader {
            inner: NumbersReader {
                rest: self.0.0[partition as usize].iter().copied().collect(),
                position: 0,
            },
            wait: false,
        }))
    }
}

/// In until-end mode a batch waits for records on their way (`Pending`): every batch holds its
/// whole chunk of each partition, as when every record is there at once, so two runs over the
/// same input cut the same batches whatever the fetches' timing.
#[test]
fn until_end_batches_wait_for_records_on_their_way() {
    let parts = vec![vec![1, 2, 3, 4, 5], vec![10, 11]];
    let (summary, batches) = batches_of(Slow(Numbers(parts.clone())), 2);
    let (_, at_once) = batches_of(Numbers(parts), 2);
    assert_eq!(summary.batches, 3);
    assert_eq!(summary.input_rows, 7);
    assert_eq!(batches, at_once);
    assert_eq!(batches, vec![vec![1, 2, 10, 11], vec![3, 4], vec![5]]);
}
