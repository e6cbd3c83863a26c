//! Crash recovery through Kafka in and out, on a real tansu broker: MSNBC clicks replayed into
//! a 4-partition topic are read by `clickpulse run --until-end --input-kafka …`, which writes
//! its results to files and to Kafka (`--output-kafka`) and is killed with SIGKILL at 8 or more
//! random moments, restarted each time, then run to its end. Afterwards:
//!
//! - every result topic, read record by record to its end, holds every row of every batch
//!   exactly once (stream, batch and row index from the headers), batches in order and each
//!   naming the one before it, and batch for batch the rows the run's own result files hold;
//! - the files, and so the topics, hold per stream the rows an uninterrupted files-only run
//!   writes (compared without batch ids: a Kafka-fed run's batch boundaries are not
//!   reproducible, see below);
//! - the last restart resumed from the newest checkpoint and read only the input after it.
//!
//! Why not batch for batch against the uninterrupted run, as `crash_recovery.rs` does with the
//! embedded log: in an `--until-end` run a batch ends as soon as no partition has a record at
//! hand, and a Kafka partition whose first fetch has not arrived within the source's poll wait
//! (10 ms) has none. Two uninterrupted runs over the same topic cut their first batches
//! differently (batch 0 with 2,000, 4,000 or 8,000 records), and so does every restart once it
//! has re-run the logged batches. Within one (restarted) run the batch ids are stable, which is
//! what the topics are compared with.
//!
//! The random moments come from a seed printed at the start; `CLICKPULSE_CRASH_SEED=N` repeats
//! a run. Skipped (and says so) without tansu, except under `CI=true`.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use clickpulse_events::msnbc;
use clickpulse_job::STREAMS;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

use common::{
    Broker, Moments, all_streams, batchless_sorted, clickpulse, newest_checkpoint,
    run_checkpointed, run_ok, summary, without_batch,
};

/// How many canonical MSNBC events go into the input topic.
const EVENTS: u64 = 300_000;
/// Partitions of the input topic.
const PARTITIONS: &str = "4";
/// Kills that must land while the job runs (half of them or more in runs resumed from a
/// checkpoint).
const KILLS: usize = 8;
/// Records per partition per batch: dozens of batches.
const CHUNK: &str = "2000";

/// When a run is killed.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// This long after it started: in its start-up, the result topics' tail scans or the
    /// re-run of the batches after its checkpoint.
    At(Duration),
    /// This long after the results of this batch (or a later one) appeared: in the middle of
    /// new batches, often while one is being written.
    AfterBatch(u64, Duration),
}

impl Kill {
    /// One run in three is killed early, the others once the results have moved on by a
    /// random share of what is left for the kills still to come (`newest` is the newest batch
    /// with results so far, `batches` about how many the job has): the job does not get to its
    /// end before the last kill, and the kills spread over its whole length.
    fn choose(moments: &mut Moments, newest: Option<u64>, batches: u64, left: usize) -> Kill {
        let ms = Duration::from_millis;
        if moments.next_below(3) == 0 {
            return Kill::At(ms(moments.next_below(5000)));
        }
        let from = newest.map_or(0, |b| b + 1);
        let stride = batches.saturating_sub(from) / (left as u64 + 1);
        let batch = from + moments.next_below(stride.max(1));
        Kill::AfterBatch(batch, ms(moments.next_below(500)))
    }
}

/// The newest batch with a result file under `dir`, if any.
fn newest_result_batch(dir: &Path) -> Option<u64> {
    let streams = std::fs::read_dir(dir).ok()?;
    streams
        .filter_map(|s| std::fs::read_dir(s.ok()?.path()).ok())
        .flatten()
        .filter_map(|f| {
            let name = f.ok()?.file_name().to_string_lossy().into_owned();
            name.strip_prefix("batch-")?
                .strip_suffix(".jsonl")?
                .parse()
                .ok()
        })
        .max()
}

/// A stream's result files under `dir`, batch by batch (rows with their `batch` field, in file
/// order); temporary files of an interrupted write are not results.
fn file_batches(dir: &Path, stream: &str) -> BTreeMap<u64, Vec<Value>> {
    let mut batches: BTreeMap<u64, Vec<Value>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir.join(stream)) else {
        return batches;
    };
    for file in entries.map(|e| e.unwrap().path()) {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines() {
            let row: Value = serde_json::from_str(line).unwrap();
            let batch = row["batch"].as_u64().unwrap();
            batches.entry(batch).or_default().push(row);
        }
    }
    batches
}

/// Every row of a stream's result files under `dir`.
fn file_rows(dir: &Path, stream: &str) -> Vec<Value> {
    file_batches(dir, stream).into_values().flatten().collect()
}

/// The last lines of a run's log, for a failure message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[test]
fn killed_kafka_runs_resume_and_every_result_row_is_in_its_topic_once() {
    let Some(broker) = Broker::start("kafka_crash") else {
        return;
    };
    let mut moments = Moments::seeded();
    let dir = tempfile::tempdir().unwrap();
    let input = format!("{}/clicks", broker.url());
    let replayed = run_ok(
        clickpulse()
            .args(["replay", "--limit", &EVENTS.to_string(), "--input"])
            .arg(msnbc::default_msnbc_path())
            .args(["--to", &input, "--partitions", PARTITIONS])
            .current_dir(dir.path()),
    );
    let said = String::from_utf8_lossy(&replayed.stdout);
    assert!(
        said.contains(&format!("replayed {EVENTS} events")),
        "{said}"
    );

    // The model: an uninterrupted run, results to files only.
    let reference = dir.path().join("reference");
    let started = Instant::now();
    let out = run_ok(
        clickpulse()
            .args(["run", "--until-end", "--json", "--input-kafka", &input])
            .arg("--output-dir")
            .arg(&reference)
            .env("CLICKPULSE__ENGINE__MAX_RECORDS_PER_PARTITION", CHUNK)
            .current_dir(dir.path()),
    );
    let whole = started.elapsed();
    let reference_summary = summary(&out.stdout);
    assert_eq!(reference_summary["events"], EVENTS, "{reference_summary}");
    let batches = reference_summary["batches"].as_u64().unwrap();
    assert!(batches >= 30, "{batches} batches: too few to kill between");
    eprintln!("uninterrupted files-only run: {batches} batches in {whole:?}");

    let ckpt = dir.path().join("checkpoints");
    let results = dir.path().join("results");
    let job = || {
        let mut cmd = run_checkpointed(&ckpt);
        cmd.args(["--until-end", "--json", "--input-kafka", &input])
            .args(["--output-kafka", &broker.url()])
            .arg("--output-dir")
            .arg(&results)
            .args(["--checkpoint-interval", "5"])
            .env("CLICKPULSE__ENGINE__MAX_RECORDS_PER_PARTITION", CHUNK)
            // The sink says when it skips rows a topic already holds.
            .env("RUST_LOG", "warn,clickpulse_connectors::kafka::sink=info")
            .current_dir(dir.path());
        cmd
    };
    let mut kills = 0;
    let mut attempts = 0;
    let mut resumed_kills = 0;
    while kills < KILLS || resumed_kills < KILLS / 2 {
        attempts += 1;
        assert!(
            attempts <= 4 * KILLS,
            "only {kills} kills landed in {attempts} runs"
        );
        let before = newest_checkpoint(&ckpt);
        let kill = Kill::choose(
            &mut moments,
            newest_result_batch(&results),
            batches,
            KILLS.saturating_sub(kills).max(1),
        );
        let log = dir.path().join(format!("run-{attempts}.log"));
        let mut child = job()
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let spawned = Instant::now();
        let mut reached: Option<Instant> = None;
        while child.try_wait().unwrap().is_none() {
            let due = match kill {
                Kill::At(at) => spawned.elapsed() >= at,
                Kill::AfterBatch(batch, delay) => {
                    if reached.is_none() && newest_result_batch(&results) >= Some(batch) {
                        reached = Some(Instant::now());
                    }
                    reached.is_some_and(|t| t.elapsed() >= delay)
                }
            };
            if due {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill(); // SIGKILL; an error when the job has exited already
        let status = child.wait().unwrap();
        // Only a kill that found the job running counts.
        let landed = status.signal() == Some(libc::SIGKILL);
        assert!(
            landed || status.success(),
            "run {attempts} failed by itself ({status}):\n{}",
            log_tail(&log)
        );
        kills += usize::from(landed);
        let after = newest_checkpoint(&ckpt);
        if let Some((batch, _)) = before {
            resumed_kills += usize::from(landed);
            // A restart never goes back before a checkpoint it found.
            let newest = after.map(|c| c.0);
            assert!(newest >= Some(batch), "checkpoint {batch} lost: {newest:?}");
        }
        eprintln!(
            "run {attempts}: kill {kill:?} after {:?} {} ({status}); checkpoint before {:?}, \
             after {:?}",
            spawned.elapsed(),
            if landed {
                "landed"
            } else {
                "came after the end"
            },
            before.map(|c| c.0),
            after.map(|c| c.0)
        );
    }
    // The last run goes to the end, from the newest checkpoint, reading only what follows it.
    let (checkpoint, offsets) = newest_checkpoint(&ckpt).expect("a checkpoint after the kills");
    let log = dir.path().join("run-last.log");
    let out = job()
        .stderr(std::fs::File::create(&log).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}:\n{}", out.status, log_tail(&log));
    let last = summary(&out.stdout);
    eprintln!("last run: {last}");
    assert_eq!(
        last["resumed_from_batch"].as_u64(),
        Some(checkpoint),
        "{last}"
    );
    assert_eq!(last["first_batch"].as_u64(), Some(checkpoint + 1), "{last}");
    assert_eq!(last["events"].as_u64(), Some(EVENTS - offsets), "{last}");
    let skipping = (1..=attempts)
        .map(|n| dir.path().join(format!("run-{n}.log")))
        .chain([log])
        .map(|l| std::fs::read_to_string(l).unwrap_or_default())
        .map(|t| t.matches("skipping rows the topic already holds").count())
        .sum::<usize>();
    eprintln!("result topics that skipped rows already there, over all restarts: {skipping}");

    // The files hold what the uninterrupted run wrote, stream by stream.
    for stream in all_streams() {
        let expected = file_rows(&reference, stream);
        if STREAMS.contains(&stream) {
            assert!(!expected.is_empty(), "{stream}: no rows at all");
        }
        assert!(
            batchless_sorted(&file_rows(&results, stream)) == batchless_sorted(&expected),
            "{stream}: the killed runs' files differ from the uninterrupted run's"
        );
    }

    // And every topic holds, once, batch for batch, what the files hold (topics read at once).
    let brokers = broker.brokers();
    std::thread::scope(|scope| {
        let readers: Vec<_> = all_streams()
            .into_iter()
            .map(|stream| {
                let files = file_batches(&results, stream);
                let expected = files.values().map(Vec::len).sum();
                let brokers = &brokers;
                let reader = scope.spawn(move || read_result_topic(brokers, stream, expected));
                (stream, files, reader)
            })
            .collect();
        for (stream, files, reader) in readers {
            let records = reader.join().unwrap();
            eprintln!(
                "{stream}: {} records, {} batches in files",
                records.len(),
                files.len()
            );
            each_row_once_as_the_files_hold_it(stream, &records, &files);
        }
    });
}

/// One record of a result topic, with the headers that identify its row.
#[derive(Debug)]
struct Record {
    offset: i64,
    stream: String,
    batch: u64,
    batch_rows: u64,
    row: u64,
    prev_batch: Option<u64>,
    value: Value,
}

impl Record {
    fn read(message: &impl Message) -> Record {
        let mut headers: BTreeMap<&str, String> = BTreeMap::new();
        if let Some(h) = message.headers() {
            for header in h.iter() {
                let value = header
                    .value
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                headers.insert(header.key, value.into_owned());
            }
        }
        let number = |key: &str| headers.get(key).map(|v| v.parse::<u64>().unwrap());
        let what = format!(
            "{} [{}] @{}",
            message.topic(),
            message.partition(),
            message.offset()
        );
        Record {
            offset: message.offset(),
            stream: headers.get("stream").cloned().unwrap_or_default(),
            batch: number("batch").unwrap_or_else(|| panic!("{what}: no batch header")),
            batch_rows: number("batch_rows").unwrap_or_else(|| panic!("{what}: no batch_rows")),
            row: number("row").unwrap_or_else(|| panic!("{what}: no row header")),
            prev_batch: number("prev_batch"),
            value: serde_json::from_slice(message.payload().unwrap_or_default()).unwrap(),
        }
    }
}

/// Every record of `clickpulse.<stream>`, with its partition, partition by partition in offset
/// order, read to the real end: until at least `expected` records are in, every partition
/// reported its end after its last record, and nothing came for 1.5 s (tansu reports partition
/// ends too early; anything beyond the expected records comes within that time).
fn read_result_topic(brokers: &str, stream: &str, expected: usize) -> Vec<(i32, Record)> {
    let topic = format!("clickpulse.{stream}");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("kafka-crash-check-{topic}"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(&topic), Duration::from_secs(10))
        .unwrap();
    let partitions = i32::try_from(metadata.topics()[0].partitions().len()).unwrap();
    assert!(partitions > 0, "{topic} has no partitions");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(&topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let mut at_end: BTreeMap<i32, bool> = (0..partitions).map(|p| (p, false)).collect();
    let mut records = Vec::new();
    let mut last_record = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                at_end.insert(message.partition(), false);
                records.push((message.partition(), Record::read(&message)));
                last_record = Instant::now();
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p, true);
            }
            Some(Err(e)) => eprintln!("reading {topic}: {e}"),
            None => {}
        }
        let quiet = last_record.elapsed() >= Duration::from_millis(1500);
        if records.len() >= expected && quiet && at_end.values().all(|&e| e) {
            break;
        }
    }
    records
}

/// Checks one stream's records: each (batch, row) once, every row of each batch there, batches
/// in order in each partition and each naming the one before it, and batch for batch the rows
/// of the run's files (in row order), no batch more or less.
fn each_row_once_as_the_files_hold_it(
    stream: &str,
    records: &[(i32, Record)],
    files: &BTreeMap<u64, Vec<Value>>,
) {
    let mut batches: BTreeMap<u64, BTreeMap<u64, &Record>> = BTreeMap::new();
    let mut newest_in: BTreeMap<i32, u64> = BTreeMap::new();
    for (partition, record) in records {
        assert_eq!(
            record.stream, stream,
            "{stream}: a record of another stream"
        );
        // A partition holding batch b + 1 must hold all of b: what a restarted sink relies on.
        let newest = newest_in.entry(*partition).or_insert(record.batch);
        assert!(
            record.batch >= *newest,
            "{stream} [{partition}] @{}: batch {} after batch {newest}",
            record.offset,
            record.batch
        );
        *newest = record.batch;
        let rows = batches.entry(record.batch).or_default();
        if let Some(first) = rows.insert(record.row, record) {
            panic!(
                "{stream}: row {} of batch {} twice, at offsets {} and {}",
                record.row, record.batch, first.offset, record.offset
            );
        }
    }
    let in_topic: BTreeSet<u64> = batches.keys().copied().collect();
    let in_files: BTreeSet<u64> = files.keys().copied().collect();
    let missing: Vec<_> = in_files.difference(&in_topic).collect();
    let extra: Vec<_> = in_topic.difference(&in_files).collect();
    assert!(
        missing.is_empty(),
        "{stream}: batches not in the topic: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "{stream}: batches with no file: {extra:?}"
    );
    let mut previous = None;
    for (batch, rows) in &batches {
        let file = &files[batch];
        let indexes: Vec<u64> = rows.keys().copied().collect();
        let whole: Vec<u64> = (0..file.len() as u64).collect();
        assert_eq!(indexes, whole, "{stream} batch {batch}: rows in the topic");
        for record in rows.values() {
            assert_eq!(
                record.batch_rows,
                file.len() as u64,
                "{stream} batch {batch}: batch_rows"
            );
            assert_eq!(
                record.prev_batch, previous,
                "{stream} batch {batch} row {}: prev_batch",
                record.row
            );
        }
        let got: Vec<String> = rows.values().map(|r| r.value.to_string()).collect();
        let want: Vec<String> = file.iter().map(|r| without_batch(r).to_string()).collect();
        assert!(
            got == want,
            "{stream} batch {batch}: the topic's rows differ from the file's"
        );
        previous = Some(*batch);
    }
}
