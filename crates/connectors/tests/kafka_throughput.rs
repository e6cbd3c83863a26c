//! Throughput of replaying MSNBC clicks into Kafka and of reading them back through the engine,
//! against a real broker (tansu, memory storage), with the CPU the broker and this process spent
//! in each phase. Ignored by default: run it in release mode,
//!
//! ```text
//! cargo test --release -p clickpulse-connectors --test kafka_throughput -- --ignored --nocapture
//! ```
//!
//! The phases, each timed on its own:
//!
//! 1. **replay**: [`KafkaClickWriter`] produces the events.
//! 2. **fetch**: a bare consumer with the source's librdkafka settings
//!    ([`KafkaSource::CONSUMER_SETTINGS`]) reads every record and copies its value into memory,
//!    decoding nothing: what the broker and the client deliver. librdkafka's statistics give the
//!    fetch requests it took, hence records and bytes per fetch.
//! 3. **memory**: the engine runs the job over those values, held in memory, decoded as the
//!    source decodes them ([`kafka::decode_click`]): the job alone, on records already fetched.
//! 4. **source**: the engine runs the same job over [`KafkaSource`]: the whole path.
//!
//! The job counts urls (`count_by_value`), a light job, so that the source's share shows.
//! `KAFKA_BENCH_EVENTS` sets how many events (default 1,000,000, the first of the canonical
//! MSNBC replay order), `KAFKA_BENCH_PARTITIONS` the topic's partitions (default 4),
//! `KAFKA_BENCH_WORKERS` the engine's workers (default 2) and `KAFKA_BENCH_VALUES` the record
//! values the replay writes (`json`, the default, or `binary`). It prints events/s and CPU
//! seconds; `KAFKA_BENCH_OPTIONS=key=value,…` adds librdkafka settings to the fetch phase's
//! consumer and to the source. It asserts only that every event came back and counts the same, never a speed.

#![allow(clippy::unwrap_used)]

mod kafka_common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clickpulse_connectors::kafka::{self, KafkaClickWriter, KafkaSink, KafkaSource, ValueFormat};
use clickpulse_connectors::{ResultBatch, ResultSink};
use clickpulse_engine::source::{
    PartitionId, PartitionReader, PartitionedSource, PollContext, Polled, ReadStatus, SourceError,
};
use clickpulse_engine::{RunMode, StreamingContext};
use clickpulse_events::{ClickEvent, JsonRow, JsonRows, msnbc};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use kafka_common::{Broker, create_topic, url_count_job, url_counts};

/// Extra librdkafka settings for the fetch phase's consumer and the source:
/// `KAFKA_BENCH_OPTIONS=key=value,key=value`.
fn extra_options() -> Vec<(String, String)> {
    std::env::var("KAFKA_BENCH_OPTIONS")
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) a process has used, from `/proc/PID/stat`.
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) in parentheses; utime and stime are
    // the 14th and 15th fields, in clock ticks (100 a second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// The broker this test started: the `tansu` process whose parent is this process.
fn broker_pid() -> Option<String> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid = entry.file_name().into_string().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (name, rest) = stat.split_once(" (")?.1.rsplit_once(')')?;
            let ppid = rest.split_whitespace().nth(1)?;
            (name == "tansu" && ppid == me).then_some(pid)
        })
}

/// Wall time and CPU of this process and of the broker over one phase.
struct Phase {
    started: Instant,
    job_cpu: f64,
    broker_cpu: f64,
    broker: Option<String>,
}

impl Phase {
    fn start(broker: &Option<String>) -> Phase {
        Phase {
            started: Instant::now(),
            job_cpu: cpu_seconds("self"),
            broker_cpu: broker.as_deref().map_or(0.0, cpu_seconds),
            broker: broker.clone(),
        }
    }

    fn report(&self, name: &str, events: usize, what: &str) -> f64 {
        let wall = self.started.elapsed().as_secs_f64();
        let job = cpu_seconds("self") - self.job_cpu;
        let broker = self.broker.as_deref().map_or(0.0, cpu_seconds) - self.broker_cpu;
        println!(
            "{name:7} {events} events in {wall:.2} s: {:.0} events/s; CPU: this process {job:.2} s \
             ({:.0} ns/event), broker {broker:.2} s ({:.0} ns/event); {what}",
            events as f64 / wall,
            job * 1e9 / events as f64,
            broker * 1e9 / events as f64,
        );
        wall
    }
}

#[test]
#[ignore = "a benchmark: run with --release -- --ignored --nocapture"]
fn replay_into_kafka_and_read_back_through_the_engine() {
    let Some(broker) = Broker::start("kafka_throughput") else {
        return;
    };
    let brokers = broker.brokers();
    let broker_pid = broker_pid();
    let n = env_or("KAFKA_BENCH_EVENTS", 1_000_000);
    let partitions = env_or("KAFKA_BENCH_PARTITIONS", 4);
    let workers = env_or("KAFKA_BENCH_WORKERS", 2);
    let format = match std::env::var("KAFKA_BENCH_VALUES").as_deref() {
        Ok("binary") => ValueFormat::Binary,
        _ => ValueFormat::Json,
    };
    let stream = msnbc::load(msnbc::default_msnbc_path()).unwrap();
    let events: Vec<_> = stream.iter().take(n).collect();
    let n = events.len();
    create_topic(&brokers, "clicks", partitions as u32);

    let phase = Phase::start(&broker_pid);
    let mut writer = KafkaClickWriter::builder(&brokers, "clicks")
        .value_format(format)
        .build()
        .unwrap();
    for event in &events {
        writer.send(event).unwrap();
    }
    let delivered = writer.flush().unwrap();
    assert_eq!(delivered, n as u64);
    phase.report(
        "replay",
        n,
        &format!("{format:?} values, {partitions} partitions"),
    );

    let expected = url_counts(&events);
    if runs("fetch") || runs("memory") {
        let values = fetch_phase(&brokers, partitions as i32, n, &broker_pid);
        if runs("memory") {
            run_in_memory(values, workers, &broker_pid, &expected);
        }
    }
    if !runs("source") {
        return;
    }
    let source = extra_options()
        .into_iter()
        .fold(
            KafkaSource::builder(&brokers, "clicks", "bench"),
            |builder, (key, value)| builder.option(key, value),
        )
        .build()
        .unwrap();
    let phase = Phase::start(&broker_pid);
    let (counts, job) = url_count_job(source.clone());
    let summary = run_until_end(workers, job);
    let stats = source.stats();
    phase.report(
        "source",
        n,
        &format!(
            "count_by_value on {workers} workers, {} batches; {} polls, {} of them waited \
             {:.0} ms in all for a first record",
            summary.batches,
            stats.polls,
            stats.waits,
            stats.wait_time.as_secs_f64() * 1e3
        ),
    );
    assert_eq!(summary.input_rows, n as u64);
    assert_eq!(*counts.lock().unwrap(), expected);
}

/// Reads every record of `clicks` into memory with the source's settings, and reports how.
fn fetch_phase(
    brokers: &str,
    partitions: i32,
    n: usize,
    broker_pid: &Option<String>,
) -> Vec<Vec<Vec<u8>>> {
    let phase = Phase::start(broker_pid);
    let (values, fetch) = fetch_all(brokers, "clicks", partitions, n);
    assert_eq!(values.iter().map(Vec::len).sum::<usize>(), n);
    let bytes: usize = values.iter().flatten().map(Vec::len).sum();
    phase.report(
        "fetch",
        n,
        &format!(
            "{:.1} MB of values, {} fetch requests: {:.0} records and {:.0} kB per fetch",
            bytes as f64 / 1e6,
            fetch.requests,
            n as f64 / fetch.requests.max(1) as f64,
            fetch.bytes as f64 / 1e3 / fetch.requests.max(1) as f64
        ),
    );
    values
}

/// Runs the job over `values` held in memory (the job alone, on records already fetched).
fn run_in_memory(
    values: Vec<Vec<Vec<u8>>>,
    workers: usize,
    broker_pid: &Option<String>,
    expected: &HashMap<String, u64>,
) {
    let n: usize = values.iter().map(Vec::len).sum();
    let phase = Phase::start(broker_pid);
    let (counts, job) = url_count_job(MemorySource::new(values));
    let summary = run_until_end(workers, job);
    phase.report(
        "memory",
        n,
        &format!(
            "count_by_value on {workers} workers, {} batches",
            summary.batches
        ),
    );
    assert_eq!(summary.input_rows, n as u64);
    assert_eq!(*counts.lock().unwrap(), *expected);
}

/// Whether `phase` runs: `KAFKA_BENCH_PHASES=fetch,memory,source` (default: all three; the
/// replay always runs, and the memory phase needs the fetch phase).
fn runs(phase: &str) -> bool {
    std::env::var("KAFKA_BENCH_PHASES").map_or(true, |p| p.split(',').any(|x| x == phase))
}

fn run_until_end(
    workers: usize,
    job: impl Fn(&mut clickpulse_engine::Job<'_>) -> clickpulse_engine::Result<()>
    + Send
    + Sync
    + 'static,
) -> clickpulse_engine::RunSummary {
    StreamingContext::new(Duration::from_millis(100))
        .unwrap()
        .workers(workers)
        .unwrap()
        .mode(RunMode::UntilEnd)
        .run(job)
        .unwrap()
}

/// What librdkafka's statistics say the fetches took.
#[derive(Debug, Default, Clone, Copy)]
struct FetchStats {
    /// Fetch requests sent.
    requests: i64,
    /// Bytes received from the brokers (all responses).
    bytes: u64,
}

struct StatsContext {
    last: Arc<Mutex<FetchStats>>,
}

impl ClientContext for StatsContext {
    fn stats(&self, statistics: Statistics) {
        let brokers = statistics.brokers.values();
        let requests = brokers
            .clone()
            .map(|b| b.req.get("Fetch").copied().unwrap_or(0))
            .sum();
        let bytes = brokers.map(|b| b.rxbytes).sum();
        *self.last.lock().unwrap() = FetchStats { requests, bytes };
    }
}

impl ConsumerContext for StatsContext {}

/// Reads every record of `topic` from its beginning with the source's settings, each value
/// copied into memory, partition by partition; stops at `expected` records (the broker's end
/// offsets are not trusted: tansu under-reports them).
fn fetch_all(
    brokers: &str,
    topic: &str,
    partitions: i32,
    expected: usize,
) -> (Vec<Vec<Vec<u8>>>, FetchStats) {
    let mut config = ClientConfig::new();
    for (key, value) in KafkaSource::CONSUMER_SETTINGS {
        config.set(*key, *value);
    }
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-fetch")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("statistics.interval.ms", "100");
    for (key, value) in extra_options() {
        config.set(key, value);
    }
    let last = Arc::new(Mutex::new(FetchStats::default()));
    let context = StatsContext {
        last: Arc::clone(&last),
    };
    let consumer: BaseConsumer<StatsContext> = config.create_with_context(context).unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let mut values = vec![Vec::new(); usize::try_from(partitions).unwrap()];
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut read = 0;
    while read < expected && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let slot = &mut values[usize::try_from(m.partition()).unwrap()];
                slot.push(m.payload().unwrap_or_default().to_vec());
                read += 1;
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => panic!("fetch: {e}"),
        }
    }
    // One more statistics round, so that the last fetches are counted.
    let until = Instant::now() + Duration::from_millis(250);
    while Instant::now() < until {
        consumer.poll(Duration::from_millis(50));
    }
    let stats = *last.lock().unwrap();
    (values, stats)
}

/// Record values held in memory, partition by partition, decoded as [`KafkaSource`] decodes
/// them.
#[derive(Clone)]
struct MemorySource {
    values: Arc<Vec<Vec<Vec<u8>>>>,
}

impl MemorySource {
    fn new(values: Vec<Vec<Vec<u8>>>) -> Self {
        MemorySource {
            values: Arc::new(values),
        }
    }
}

impl PartitionedSource for MemorySource {
    type Item = ClickEvent;

    fn name(&self) -> &str {
        "memory"
    }

    fn partitions(&self) -> Result<u32, SourceError> {
        Ok(u32::try_from(self.values.len()).unwrap())
    }

    fn open(
        &self,
        partition: PartitionId,
        from: Option<u64>,
    ) -> Result<Box<dyn PartitionReader<ClickEvent>>, SourceError> {
        Ok(Box::new(MemoryReader {
            values: Arc::clone(&self.values),
            partition: partition as usize,
            next: from.unwrap_or(0) as usize,
        }))
    }
}

struct MemoryReader {
    values: Arc<Vec<Vec<Vec<u8>>>>,
    partition: usize,
    next: usize,
}

impl PartitionReader<ClickEvent> for MemoryReader {
    fn poll(
        &mut self,
        ctx: &PollContext,
        out: &mut Polled<ClickEvent>,
    ) -> Result<ReadStatus, SourceError> {
        let values = &self.values[self.partition];
        let end = values.len().min(self.next + ctx.max_records);
        for value in &values[self.next..end] {
            out.items
                .push(kafka::decode_click(Some(value)).map_err(SourceError::fatal)?);
        }
        self.next = end;
        Ok(if end == values.len() {
            ReadStatus::CaughtUp
        } else {
            ReadStatus::More
        })
    }

    fn position(&self) -> u64 {
        self.next as u64
    }
}

/// Result batches as a job writes them: every `DIR/<stream>/batch-<id>.jsonl` file of a
/// `clickpulse run --output-dir DIR` (`KAFKA_BENCH_RESULTS=DIR`), in batch order; without one,
/// 200 batches of 5,000 `page_views`-shaped rows.
fn result_batches() -> Vec<ResultBatch> {
    let Ok(dir) = std::env::var("KAFKA_BENCH_RESULTS") else {
        return (0..200)
            .map(|batch| ResultBatch {
                stream: "page_views".into(),
                batch,
                window_start_ms: None,
                window_end_ms: None,
                rows: (0..5_000)
                    .map(|i| {
                        JsonRow::object(|o| {
                            o.str("url", &format!("/page{i}")).u64("count", batch + i);
                        })
                    })
                    .collect(),
            })
            .collect();
    };
    let mut batches = Vec::new();
    for stream in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = stream.file_name().into_string().unwrap();
        for file in std::fs::read_dir(stream.path()).unwrap().flatten() {
            let file_name = file.file_name().into_string().unwrap();
            let Some(id) = file_name
                .strip_prefix("batch-")
                .and_then(|f| f.strip_suffix(".jsonl"))
            else {
                continue;
            };
            let text = std::fs::read_to_string(file.path()).unwrap();
            let mut rows = JsonRows::new();
            for line in text.lines() {
                rows.push(line).unwrap();
            }
            batches.push(ResultBatch {
                stream: name.clone(),
                batch: id.parse().unwrap(),
                window_start_ms: None,
                window_end_ms: None,
                rows,
            });
        }
    }
    batches.sort_by(|a, b| (a.batch, &a.stream).cmp(&(b.batch, &b.stream)));
    batches
}

#[test]
#[ignore = "a benchmark: run with --release -- --ignored --nocapture"]
fn result_batches_into_kafka() {
    let Some(broker) = Broker::start("kafka_throughput_sink") else {
        return;
    };
    let brokers = broker.brokers();
    let broker_pid = broker_pid();
    let batches = result_batches();
    let rows: usize = batches.iter().map(|b| b.rows.len()).sum();
    let mut streams: Vec<&str> = batches.iter().map(|b| b.stream.as_str()).collect();
    streams.sort_unstable();
    streams.dedup();
    for stream in &streams {
        create_topic(&brokers, &format!("bench.{stream}"), 1);
    }
    let mut sink = KafkaSink::builder(&brokers)
        .topic_prefix("bench.")
        .build()
        .unwrap();
    let phase = Phase::start(&broker_pid);
    let mut first = None;
    for batch in &batches {
        sink.write(batch).unwrap();
        first.get_or_insert_with(|| phase.started.elapsed());
    }
    sink.flush().unwrap();
    let first = first.unwrap_or_default();
    phase.report(
        "sink",
        rows,
        &format!(
            "rows (not events) of {} batches into {} topics; the first write (with the topic's \
             tail read) took {:.0} ms",
            batches.len(),
            streams.len(),
            first.as_secs_f64() * 1e3
        ),
    );
    let phase = Phase::start(&broker_pid);
    let mut written = 0;
    for stream in &streams {
        written += kafka_common::count_all(&brokers, &format!("bench.{stream}"));
    }
    phase.report("check", written, "rows read back");
    assert_eq!(written, rows);
}
