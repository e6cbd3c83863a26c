//! Jobs on a KafkaSource through a broker outage, a broker restart and a partition added later,
//! against a real broker (tansu).
//!
//! # Why the running job's outage is a cut-off, not a process restart
//! tansu here stores in memory, so a restarted tansu has lost its topics, and a topic made
//! again gets a new topic id. librdkafka (2.12.1) keeps fetching with the old id; tansu 0.6
//! answers an unknown topic with a zero topic id plus leader tags, and librdkafka's leader
//! update from a fetch then looks the topic up by a null name and crashes (SIGSEGV in
//! `rd_kafka_metadata_cache_find`). Real Kafka answers `UNKNOWN_TOPIC_ID` without leader tags,
//! and a durable broker keeps its topics and ids. So the test cuts every client off (a proxy
//! closes their connections and refuses new ones) while the broker keeps its data, produces
//! during the outage, and lets clients back in: what clients see of a durable broker's restart.
//! The real process restart is tested between two jobs: the second resumes from the first's
//! offsets with a fresh consumer.

#![allow(clippy::unwrap_used)]

mod kafka_common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clickpulse_connectors::kafka::{KafkaClickWriter, KafkaSource};
use clickpulse_engine::listener::{BatchCompleted, StreamingListener};
use clickpulse_engine::{RunMode, RunSummary, ShutdownHandle, StreamingContext};
use clickpulse_events::ClickEvent;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use kafka_common::{Broker, clicks, create_topic, url_count_job, url_counts};

/// A continuous job counting urls of a source, on a thread of its own.
struct Counting {
    counts: Arc<Mutex<HashMap<String, u64>>>,
    stop: ShutdownHandle,
    job: JoinHandle<RunSummary>,
}

impl Counting {
    fn start(source: KafkaSource) -> Counting {
        let (counts, job_fn) = url_count_job(source);
        let context = StreamingContext::new(Duration::from_millis(100))
            .unwrap()
            .workers(2)
            .unwrap()
            .mode(RunMode::Continuous);
        let stop = context.shutdown_handle();
        let job = std::thread::spawn(move || context.run(job_fn).unwrap());
        Counting { counts, stop, job }
    }

    fn total(&self) -> u64 {
        self.counts.lock().unwrap().values().sum()
    }

    /// Waits until `n` clicks are counted (or `timeout` passes); returns the total.
    fn wait_for(&self, n: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        while self.total() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.total()
    }

    /// Lets duplicates show up if there were any, then stops the job.
    fn finish(self) -> (HashMap<String, u64>, RunSummary) {
        std::thread::sleep(Duration::from_secs(2));
        self.stop.stop();
        let summary = self.job.join().unwrap();
        let counts = self.counts.lock().unwrap().clone();
        (counts, summary)
    }
}

fn write(brokers: &str, topic: &str, events: &[ClickEvent]) {
    let mut writer = KafkaClickWriter::new(brokers, topic).unwrap();
    assert_eq!(writer.write(events).unwrap(), events.len());
}

#[test]
fn source_rides_out_a_broker_outage_without_loss_or_duplicates() {
    let Some(broker) = Broker::start_behind_proxy("source_rides_out_a_broker_outage") else {
        return;
    };
    let brokers = broker.brokers();
    let events = clicks(8_000, 300, 23);
    let (first, second) = events.split_at(3_000);
    create_topic(&brokers, "clicks", 2);
    write(&brokers, "clicks", first);

    let source = KafkaSource::new(&brokers, "clicks", "outage-test").unwrap();
    let job = Counting::start(source.clone());
    assert_eq!(
        job.wait_for(first.len() as u64, Duration::from_secs(30)),
        3_000
    );

    // The broker goes away under the running job; the second half is produced meanwhile (the
    // writer holds it until the broker is back); then the broker comes back, data intact.
    broker.cut_off();
    let writer = {
        let brokers = brokers.clone();
        let second = second.to_vec();
        std::thread::spawn(move || {
            let mut writer = KafkaClickWriter::builder(&brokers, "clicks")
                .metadata_timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            writer.write(&second).unwrap()
        })
    };
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(job.total(), 3_000);
    let errors_while_down = source.stats().retryable_errors;
    broker.reconnect();
    assert_eq!(writer.join().unwrap(), second.len());

    let total = job.wait_for(events.len() as u64, Duration::from_secs(60));
    assert_eq!(total, events.len() as u64, "{}", broker.log_text());
    let (counts, summary) = job.finish();
    assert_eq!(counts, url_counts(&events));
    assert_eq!(summary.input_rows, events.len() as u64);
    assert_eq!(source.stats().records, events.len() as u64);
    assert!(
        errors_while_down > 0,
        "no retryable error while the broker was away"
    );
}

/// Remembers, per partition, the next offset to read after the last completed batch: what a
/// checkpoint would hold.
#[derive(Default)]
struct Offsets(Mutex<HashMap<u32, u64>>);

impl StreamingListener for Offsets {
    fn on_batch_completed(&self, event: &BatchCompleted) {
        let mut offsets = self.0.lock().unwrap();
        for o in &event.offsets {
            offsets.insert(o.partition, o.to);
        }
    }
}

/// Runs count_by_value over urls until the source's end, starting at `start` when given; returns
/// the counts and the offsets the listener saw per partition.
fn count_until_end(
    source: KafkaSource,
    start: Option<HashMap<u32, u64>>,
) -> (HashMap<String, u64>, HashMap<u32, u64>) {
    let offsets = Arc::new(Offsets::default());
    let (counts, job) = url_count_job(source);
    let mut context = StreamingContext::new(Duration::from_millis(50))
        .unwrap()
        .mode(RunMode::UntilEnd);
    if let Some(start) = start {
        context = context.start_offsets("clicks", start);
    }
    context.add_listener(Arc::clone(&offsets) as Arc<dyn StreamingListener>);
    context.run(job).unwrap();
    let counts = counts.lock().unwrap().clone();
    let offsets = offsets.0.lock().unwrap().clone();
    (counts, offsets)
}

#[test]
fn job_restarted_from_its_offsets_after_a_broker_restart_reads_only_the_new_clicks() {
    let Some(mut broker) = Broker::start("job_restarted_from_its_offsets") else {
        return;
    };
    let brokers = broker.brokers();
    let events = clicks(6_000, 250, 19);
    let (first, second) = events.split_at(2_500);
    create_topic(&brokers, "clicks", 2);
    write(&brokers, "clicks", first);
    let (counts, offsets) =
        count_until_end(KafkaSource::new(&brokers, "clicks", "g").unwrap(), None);
    assert_eq!(counts, url_counts(first));
    assert_eq!(offsets.values().sum::<u64>(), first.len() as u64);

    // The broker process is killed and started again on the same port. Its storage is memory:
    // the topic is made again and refilled with what it held (same records, same offsets, as a
    // durable broker keeps them), and the second half appended.
    broker.kill();
    broker.restart();
    create_topic(&brokers, "clicks", 2);
    write(&brokers, "clicks", first);
    write(&brokers, "clicks", second);

    // A new job resumes from the first job's offsets (its checkpoint): only the second half.
    let source = KafkaSource::new(&brokers, "clicks", "g").unwrap();
    let (counts, offsets) = count_until_end(source, Some(offsets));
    assert_eq!(counts, url_counts(second));
    assert_eq!(offsets.values().sum::<u64>(), events.len() as u64);
}

/// A job started from offsets inside a record batch (where a checkpoint's offsets usually fall)
/// reads every record from them on. tansu 0.6 serves a fetch from the first record batch that
/// starts at or after the offset asked for, not from the one holding it: the source must neither
/// lose the rest of that batch nor, inside a partition's last batch (where such fetches return
/// nothing at all), wait for ever.
#[test]
fn a_job_started_inside_a_record_batch_reads_every_record_from_its_offsets() {
    let Some(broker) = Broker::start("a_job_started_inside_a_record_batch") else {
        return;
    };
    let brokers = broker.brokers();
    let events = clicks(6_000, 250, 19);
    create_topic(&brokers, "clicks", 2);
    // Two writes: each partition's records in a few large record batches, the second write's
    // last.
    let (first, second) = events.split_at(3_000);
    write(&brokers, "clicks", first);
    write(&brokers, "clicks", second);
    // Offsets count each partition's records from 0 (no gaps).
    let mut by_partition: HashMap<u32, Vec<ClickEvent>> = HashMap::new();
    for e in &events {
        let p = clickpulse_events::partition_for(&e.visitor_id, 2);
        by_partition.entry(p).or_default().push(e.clone());
    }
    // Inside the first write's records, then inside the second's.
    for sixths in [1, 4] {
        let start: HashMap<u32, u64> = by_partition
            .iter()
            .map(|(&p, es)| (p, (es.len() * sixths / 6 + 7) as u64))
            .collect();
        let after: Vec<ClickEvent> = by_partition
            .iter()
            .flat_map(|(p, es)| es[start[p] as usize..].iter().cloned())
            .collect();
        let source = KafkaSource::new(&brokers, "clicks", "g").unwrap();
        let (counts, offsets) = count_until_end(source, Some(start.clone()));
        let read = counts.values().sum::<u64>();
        assert_eq!(read, after.len() as u64, "from {start:?}");
        assert_eq!(counts, url_counts(&after), "from {start:?}");
        assert_eq!(offsets.values().sum::<u64>(), events.len() as u64);
    }
}

/// Grows topic `clicks` to three partitions; `false` when the broker cannot (tansu 0.6 has no
/// CreatePartitions, and re-creating the topic instead crashes librdkafka: see the module docs).
fn grow_to_three_partitions(brokers: &str) -> bool {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let grown = futures_executor::block_on(
        admin.create_partitions(&[NewPartitions::new("clicks", 3)], &AdminOptions::new()),
    );
    match grown {
        Ok(results) => {
            assert!(results.iter().all(Result::is_ok), "{results:?}");
            true
        }
        Err(KafkaError::AdminOp(RDKafkaErrorCode::UnsupportedFeature)) => false,
        Err(e) => panic!("adding partitions: {e}"),
    }
}

#[test]
fn source_picks_up_partitions_added_later() {
    let Some(broker) = Broker::start("source_picks_up_partitions_added_later") else {
        return;
    };
    let brokers = broker.brokers();
    let events = clicks(4_000, 200, 11);
    let (first, second) = events.split_at(1_000);
    create_topic(&brokers, "clicks", 1);
    write(&brokers, "clicks", first);
    let job = Counting::start(KafkaSource::new(&brokers, "clicks", "grow-test").unwrap());
    assert_eq!(job.wait_for(1_000, Duration::from_secs(30)), 1_000);

    if !grow_to_three_partitions(&brokers) {
        clickpulse_testkit::skipped(
            "source_picks_up_partitions_added_later",
            "the broker cannot add partitions (no CreatePartitions: tansu 0.6)",
        );
        job.finish();
        return;
    }
    // A new writer spreads visitors over the three partitions.
    let mut writer = KafkaClickWriter::new(&brokers, "clicks").unwrap();
    assert_eq!(writer.partitions(), 3);
    writer.write(second).unwrap();

    // The engine looks for new partitions every 10 s.
    let total = job.wait_for(events.len() as u64, Duration::from_secs(40));
    assert_eq!(total, events.len() as u64);
    let (counts, _) = job.finish();
    assert_eq!(counts, url_counts(&events));
}
