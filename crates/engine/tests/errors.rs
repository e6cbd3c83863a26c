//! Every error the engine reports for a bad configuration, a bad job or a failing source: the
//! variant, the setting it names, and the message.

mod common;

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Duration;

use clickpulse_engine::event_time::Count;
use clickpulse_engine::source::{
    PartitionId, PartitionReader, PartitionedSource, PollContext, Polled, ReadStatus, SourceError,
};
use clickpulse_engine::testing::TEST_BATCH_INTERVAL;
use clickpulse_engine::{
    Cluster, DStream, EngineError, EventTime, Job, QueueSource, RunMode, RunSummary,
    StreamingContext, Windows,
};
use common::Rec;

/// Guards against a hang only; nothing asserts on how long a run takes.
const HANG_GUARD: Duration = Duration::from_secs(60);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn records() -> QueueSource<Rec> {
    QueueSource::from_batches("records", vec![vec![('a', 1), ('b', 2)], vec![('a', 3)]])
}

/// Runs `job` until the end of input on `workers` workers, on another thread so that a hang
/// fails the test instead of stalling the suite.
fn run<F>(workers: usize, job: F) -> clickpulse_engine::Result<RunSummary>
where
    F: Fn(&mut Job<'_>) -> clickpulse_engine::Result<()> + Send + Sync + 'static,
{
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let result = StreamingContext::new(TEST_BATCH_INTERVAL)
            .and_then(|c| c.workers(workers))
            .and_then(|c| c.mode(RunMode::UntilEnd).run(job));
        let _ = tx.send(result);
    });
    rx.recv_timeout(HANG_GUARD)
        .unwrap_or_else(|_| panic!("the run did not end within {HANG_GUARD:?}"))
}

/// Builds `build` over the record source and outputs it; returns the run's error.
fn job_error<F>(workers: usize, build: F) -> EngineError
where
    F: for<'s> Fn(DStream<'s, Rec>) -> clickpulse_engine::Result<()> + Send + Sync + 'static,
{
    let source = records();
    match run(workers, move |job| build(job.source(&source)?)) {
        Ok(summary) => panic!("the run succeeded: {summary:?}"),
        Err(e) => e,
    }
}

fn assert_not_batch_multiple(err: EngineError, setting: &str, value: Duration, text: &str) {
    let message = err.to_string();
    match err {
        EngineError::NotBatchMultiple {
            what,
            value: v,
            batch_interval,
        } => {
            assert_eq!(what, setting);
            assert_eq!(v, value);
            assert_eq!(batch_interval, TEST_BATCH_INTERVAL);
        }
        other => panic!("expected NotBatchMultiple, got {other:?}"),
    }
    assert!(
        message.contains(setting) && message.contains(text),
        "{message}"
    );
}

fn assert_invalid_config(err: EngineError, setting: &str, reason_has: &str) {
    let message = err.to_string();
    match err {
        EngineError::InvalidConfig { key, reason } => {
            assert_eq!(key, setting, "{reason}");
            assert!(reason.contains(reason_has), "{reason}");
        }
        other => panic!("expected InvalidConfig({setting}), got {other:?}"),
    }
    assert!(message.contains(setting), "{message}");
}

#[test]
fn window_length_not_a_batch_multiple_names_the_value() {
    let err = job_error(1, |s| {
        s.window(ms(1_500), secs(1))?.foreach_batch(|_, _| {});
        Ok(())
    });
    assert_not_batch_multiple(err, "window length", ms(1_500), "1.5s");
}

#[test]
fn slide_not_a_batch_multiple_names_the_value() {
    let err = job_error(2, |s| {
        s.window(secs(2), ms(500))?.foreach_batch(|_, _| {});
        Ok(())
    });
    assert_not_batch_multiple(err, "slide duration", ms(500), "500ms");
}

#[test]
fn zero_window_length_is_not_a_batch_multiple() {
    let err = job_error(1, |s| {
        s.window(Duration::ZERO, secs(1))?.foreach_batch(|_, _| {});
        Ok(())
    });
    assert_not_batch_multiple(err, "window length", Duration::ZERO, "0ns");
}

#[test]
fn every_windowed_operator_checks_length_and_slide() {
    let e = job_error(1, |s| {
        s.count_by_window(ms(2_500), secs(1))?
            .foreach_batch(|_, _| {});
        Ok(())
    });
    assert_not_batch_multiple(e, "window length", ms(2_500), "2.5s");
    let e = job_error(1, |s| {
        s.reduce_by_window(|a, _| a, secs(2), ms(1_200))?
            .foreach_batch(|_, _| {});
        Ok(())
    });
    assert_not_batch_multiple(e, "slide duration", ms(1_200), "1.2s");
    let e = job_error(1, |s| {
        s.reduce_by_key_and_window(|a, b| a + b, ms(300), secs(1))?
            .foreach_batch(|_, _| {});
        Ok(())
    });
    assert_not_batch_multiple(e, "window length", ms(300), "300ms");
    let e = job_error(1, |s| {
        s.reduce_by_key_and_window_inv(|a, b| a + b, |a, b| a - b, |v| *v > 0, secs(3), ms(1_001))?
            .foreach_batch(|_, _| {});
        Ok(())
    });
    assert_not_batch_multiple(e, "slide duration", ms(1_001), "1.001s");
    let e = job_error(1, |s| {
        s.count_by_value_and_window(ms(4_400), secs(2))?
            .foreach_batch(|_, _| {});
        Ok(())
    });
    assert_not_batch_multiple(e, "window length", ms(4_400), "4.4s");
}

#[test]
fn zero_workers_is_rejected() {
    let ctx = StreamingContext::new(secs(1)).unwrap();
    assert_invalid_config(ctx.workers(0).err().unwrap(), "workers", "0");
    let ctx = StreamingContext::new(secs(1)).unwrap();
    assert_invalid_config(ctx.workers(1_025).err().unwrap(), "workers", "1025");
    assert!(
        StreamingContext::new(secs(1))
            .unwrap()
            .workers(1_024)
            .is_ok()
    );
}

#[test]
fn zero_and_out_of_range_batch_intervals_are_rejected() {
    for bad in [Duration::ZERO, Duration::from_micros(999), secs(3_601)] {
        let err = StreamingContext::new(bad).err().unwrap();
        assert_invalid_config(err, "batch_interval", &format!("{bad:?}"));
    }
    assert!(StreamingContext::new(ms(1)).is_ok());
    assert!(StreamingContext::new(secs(3_600)).is_ok());
}

#[test]
fn zero_max_records_per_partition_is_rejected() {
    let ctx = StreamingContext::new(secs(1)).unwrap();
    let err = ctx.max_records_per_partition(0).err().unwrap();
    assert_invalid_config(err, "max_records_per_partition", "at least 1");
    assert!(
        StreamingContext::new(secs(1))
            .unwrap()
            .max_records_per_partition(1)
            .is_ok()
    );
}

#[test]
fn cluster_process_index_must_be_one_of_the_addresses() {
    let ctx = StreamingContext::new(secs(1)).unwrap();
    let cluster = Cluster::Processes {
        addresses: vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
        process: 2,
    };
    assert_invalid_config(ctx.cluster(cluster).err().unwrap(), "cluster", "process 2");
}

fn assert_needs_event_time(err: EngineError, op: &str) {
    assert_invalid_config(err, "event_time", op);
}

#[test]
fn event_time_operators_on_a_stream_without_event_time_are_rejected() {
    let windows = Windows::tumbling(secs(1)).unwrap();
    let e = job_error(1, move |s| {
        let o = s.count_by_key_in_window(windows, |v| *v as u64)?;
        o.output.foreach_batch(|_, _| {});
        Ok(())
    });
    assert_needs_event_time(e, "aggregate_by_key_in_window");
    let e = job_error(1, move |s| {
        let o = s.aggregate_by_key_in_window(windows, |v| *v as u64, Count)?;
        o.output.foreach_batch(|_, _| {});
        Ok(())
    });
    assert_needs_event_time(e, "aggregate_by_key_in_window");
    let e = job_error(1, move |s| {
        let o = s.reduce_by_key_in_window(windows, |v| *v as u64, |a, b| a + b)?;
        o.output.foreach_batch(|_, _| {});
        Ok(())
    });
    assert_needs_event_time(e, "aggregate_by_key_in_window");
    let e = job_error(2, |s| {
        let o = s.session_by_key(secs(1), |v| *v as u64, Count)?;
        o.output.foreach_batch(|_, _| {});
        Ok(())
    });
    assert_needs_event_time(e, "session_by_key");
    let e = job_error(1, move |s| {
        let o = s.distinct_count_in_window(windows, |v| *v as u64)?;
        o.output.foreach_batch(|_, _| {});
        Ok(())
    });
    assert_needs_event_time(e, "distinct_count_in_window");
    let e = job_error(1, move |s| {
        let o = s.approx_distinct_count_in_window(windows, |v| *v as u64, 14)?;
        o.output.foreach_batch(|_, _| {});
        Ok(())
    });
    assert_needs_event_time(e, "approx_distinct_count_in_window");
}

#[test]
fn hll_precision_outside_4_to_18_is_rejected() {
    let windows = Windows::tumbling(secs(1)).unwrap();
    for (precision, valid) in [(3, false), (4, true), (18, true), (19, false)] {
        let source = records();
        let result = run(1, move |job| {
            let s = job.source_with_event_time(&source, EventTime::new(|r: &Rec| r.1 as u64))?;
            s.approx_distinct_count_in_window(windows, |v| *v as u64, precision)?
                .output
                .foreach_batch(|_, _| {});
            Ok(())
        });
        match result {
            Ok(_) => assert!(valid, "precision {precision} was accepted"),
            Err(e) => {
                assert!(!valid, "precision {precision} was refused: {e}");
                assert_invalid_config(e, "hll precision", &format!("{precision} is outside"));
            }
        }
    }
}

#[test]
fn session_gap_under_one_millisecond_is_rejected() {
    for gap in [Duration::ZERO, Duration::from_micros(999)] {
        let source = records();
        let result = run(1, move |job| {
            let s = job.source_with_event_time(&source, EventTime::new(|r: &Rec| r.1 as u64))?;
            s.session_by_key(gap, |v| *v as u64, Count)?
                .output
                .foreach_batch(|_, _| {});
            Ok(())
        });
        assert_invalid_config(result.err().unwrap(), "session gap", "1 ms");
    }
}

#[test]
fn map_with_state_timeout_shorter_than_the_interval_is_rejected() {
    let step = |_: &char, v: Option<i32>, _: &mut clickpulse_engine::State<i32>| v;
    let err = job_error(1, move |s| {
        s.map_with_state(Some(ms(999)), step)?
            .foreach_batch(|_, _| {});
        Ok(())
    });
    assert_invalid_config(err, "idle_timeout", "999ms");
    // One interval exactly is enough.
    let source = records();
    let summary = run(1, move |job| {
        job.source(&source)?
            .map_with_state(Some(secs(1)), step)?
            .foreach_batch(|_, _| {});
        Ok(())
    })
    .unwrap();
    assert_eq!(summary.input_rows, 3);
}

#[test]
fn a_job_without_output_is_rejected() {
    for workers in [1, 2] {
        let source = records();
        let result = run(workers, move |job| {
            job.source(&source)?.map(|r| r.1).count();
            Ok(())
        });
        assert!(
            matches!(result, Err(EngineError::NoOutput)),
            "{workers} workers: {result:?}"
        );
    }
}

#[test]
fn union_all_of_no_streams_is_rejected() {
    let err = run(1, |job| {
        job.union_all::<Rec>(Vec::new())?.foreach_batch(|_, _| {});
        Ok(())
    })
    .err()
    .unwrap();
    assert_invalid_config(err, "union_all", "no streams");
}

#[test]
fn sliding_windows_size_must_be_a_multiple_of_the_slide() {
    assert_invalid_config(
        Windows::sliding(secs(7), secs(5)).err().unwrap(),
        "window size",
        "7000 ms is not a multiple of the slide 5000 ms",
    );
    assert_invalid_config(
        Windows::tumbling(Duration::ZERO).err().unwrap(),
        "window size",
        "",
    );
    assert_invalid_config(
        Windows::sliding(secs(2), Duration::ZERO).err().unwrap(),
        "window slide",
        "",
    );
    assert_eq!(
        Windows::sliding(secs(6), secs(2)).unwrap(),
        Windows::Sliding {
            size_ms: 6_000,
            slide_ms: 2_000
        }
    );
}

/// How the broken source fails.
#[derive(Clone, Copy, Debug)]
enum Failure {
    /// `partitions` fails, retryably.
    Listing,
    /// `open` fails fatally.
    Open,
    /// The reader's second poll fails fatally.
    Poll,
}

/// A two-partition source that fails as told.
#[derive(Clone)]
struct BrokenSource(Failure);

struct BrokenReader {
    fail: bool,
    polls: u32,
}

impl PartitionReader<i32> for BrokenReader {
    fn poll(
        &mut self,
        ctx: &PollContext,
        out: &mut Polled<i32>,
    ) -> Result<ReadStatus, SourceError> {
        self.polls += 1;
        if self.fail && ctx.batch > 0 {
            return Err(SourceError::fatal("checksum mismatch"));
        }
        if self.polls == 1 {
            out.items.push(1);
        }
        Ok(if self.fail {
            ReadStatus::More
        } else {
            ReadStatus::Ended
        })
    }

    fn position(&self) -> u64 {
        u64::from(self.polls.min(1))
    }
}

impl PartitionedSource for BrokenSource {
    type Item = i32;

    fn name(&self) -> &str {
        "broken"
    }

    fn partitions(&self) -> Result<u32, SourceError> {
        match self.0 {
            Failure::Listing => Err(SourceError::retryable("broker unreachable")),
            _ => Ok(2),
        }
    }

    fn open(
        &self,
        partition: PartitionId,
        _from: Option<u64>,
    ) -> Result<Box<dyn PartitionReader<i32>>, SourceError> {
        match self.0 {
            Failure::Open if partition == 1 => Err(SourceError::fatal("no such partition file")),
            _ => Ok(Box::new(BrokenReader {
                fail: matches!(self.0, Failure::Poll) && partition == 0,
                polls: 0,
            })),
        }
    }
}

fn broken_run(workers: usize, failure: Failure) -> EngineError {
    let source = BrokenSource(failure);
    let result = run(workers, move |job| {
        job.source(&source)?.foreach_batch(|_, _| {});
        Ok(())
    });
    match result {
        Ok(summary) => panic!("{failure:?}: the run succeeded: {summary:?}"),
        Err(e) => e,
    }
}

fn assert_source_error(err: EngineError, message_has: &str, retryable_expected: bool) {
    let text = err.to_string();
    match err {
        EngineError::Source {
            source_name,
            message,
            retryable,
            ..
        } => {
            assert_eq!(source_name, "broken");
            assert!(message.contains(message_has), "{message}");
            assert_eq!(retryable, retryable_expected, "{message}");
        }
        other => panic!("expected a source error, got {other:?}"),
    }
    assert!(text.contains("source `broken` failed"), "{text}");
}

#[test]
fn a_source_whose_open_fails_fails_the_run() {
    assert_source_error(
        broken_run(1, Failure::Open),
        "no such partition file",
        false,
    );
}

/// With two workers partition 1 is opened by worker 1 only: its job function fails while worker
/// 0 builds its dataflow and runs. The run must still end with the error.
#[test]
fn a_source_whose_open_fails_on_one_worker_fails_the_run() {
    assert_source_error(
        broken_run(2, Failure::Open),
        "no such partition file",
        false,
    );
}

#[test]
fn a_source_that_cannot_list_its_partitions_fails_the_run() {
    for workers in [1, 2] {
        assert_source_error(
            broken_run(workers, Failure::Listing),
            "broker unreachable",
            true,
        );
    }
}

#[test]
fn a_fatal_read_error_fails_the_run_naming_the_partition() {
    for workers in [1, 2] {
        assert_source_error(
            broken_run(workers, Failure::Poll),
            "partition 0: checksum mismatch",
            false,
        );
    }
}

#[test]
fn a_queue_source_cannot_start_at_an_offset() {
    let source = records();
    let result = std::thread::spawn(move || {
        StreamingContext::new(TEST_BATCH_INTERVAL)
            .unwrap()
            .mode(RunMode::UntilEnd)
            .start_offsets("records", HashMap::from([(0, 1)]))
            .run(move |job| {
                job.source(&source)?.foreach_batch(|_, _| {});
                Ok(())
            })
    })
    .join()
    .unwrap();
    match result {
        Err(EngineError::Source {
            source_name,
            message,
            retryable: false,
            ..
        }) => {
            assert_eq!(source_name, "records");
            assert!(message.contains("offset"), "{message}");
        }
        other => panic!("expected a fatal source error, got {other:?}"),
    }
}
