//! KafkaSink → result topics → ResultConsumer, against a real broker (tansu).

#![allow(clippy::unwrap_used)]

mod kafka_common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clickpulse_connectors::kafka::{KafkaSink, KeySpec, ResultConsumer, StartFrom, record};
use clickpulse_connectors::{ResultBatch, ResultSink, SinkError};
use clickpulse_events::JsonRow;
use serde_json::json;

use kafka_common::{Broker, create_topic, read_all};

fn page_views(batch: u64, urls: &[(&str, u64)]) -> ResultBatch {
    ResultBatch {
        stream: "page_views".into(),
        batch,
        window_start_ms: Some(batch * 1000),
        window_end_ms: Some(batch * 1000 + 1000),
        rows: urls
            .iter()
            .map(|(url, count)| JsonRow::from(json!({"url": url, "count": count})))
            .collect(),
    }
}

fn segments(batch: u64) -> ResultBatch {
    ResultBatch {
        stream: "segments".into(),
        batch,
        window_start_ms: None,
        window_end_ms: None,
        rows: vec![
            json!({"segment": "new", "tenant": "t1", "sessions": 3}),
            json!({"segment": "loyal", "tenant": "t2", "sessions": 5}),
        ]
        .into(),
    }
}

/// The idle timeout of consumers whose batches must all come whole and in order: long enough
/// that a partition fetched late on a busy machine does not cut a batch.
const PATIENT: Duration = Duration::from_secs(5);

/// Collects what a consumer (with `idle` as its idle timeout) hands over, until `n` batches are
/// in (or 20 s pass) and then for `settle` more.
fn collect(
    brokers: &str,
    stream: &str,
    topic: &str,
    (from, idle): (StartFrom, Duration),
    n: usize,
    settle: Duration,
) -> Vec<ResultBatch> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&got);
    let consumer =
        ResultConsumer::start_with_idle_timeout(brokers, stream, topic, from, idle, move |b| {
            sink.lock().unwrap().push(b);
        })
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.lock().unwrap().len() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(settle);
    consumer.stop();
    got.lock().unwrap().clone()
}

#[test]
fn sink_writes_rows_with_keys_and_headers() {
    let Some(broker) = Broker::start("sink_writes_rows_with_keys_and_headers") else {
        return;
    };
    let brokers = broker.brokers();
    create_topic(&brokers, "clickpulse.page_views", 3);
    create_topic(&brokers, "segments.out", 1);
    let mut sink = KafkaSink::builder(&brokers)
        .topic("segments", "segments.out")
        .key(
            "segments",
            KeySpec::Fields(vec!["tenant".into(), "segment".into()]),
        )
        .build()
        .unwrap();
    sink.write(&page_views(
        4,
        &[("/news", 3), ("/sports", 1), ("/weather", 2)],
    ))
    .unwrap();
    sink.write(&segments(4)).unwrap();
    // Empty batches write nothing: the next batch names batch 4 as the one before it.
    sink.write(&page_views(5, &[])).unwrap();
    sink.write(&page_views(6, &[("/later", 1)])).unwrap();

    let mut rows = read_all(
        &brokers,
        "clickpulse.page_views",
        4,
        Duration::from_secs(20),
    );
    assert_eq!(rows.len(), 4);
    rows.sort_by_key(|r| {
        let number = |name: &str| r.headers[name].parse::<u64>().unwrap();
        (number(record::BATCH_HEADER), number(record::ROW_HEADER))
    });
    let later = rows.pop().unwrap();
    assert_eq!(later.headers[record::BATCH_HEADER], "6");
    assert_eq!(later.headers[record::PREV_BATCH_HEADER], "4");
    for (i, (row, url)) in rows
        .iter()
        .zip(["/news", "/sports", "/weather"])
        .enumerate()
    {
        assert_eq!(row.key_text().as_deref(), Some(url));
        assert_eq!(row.json()["url"], url);
        let h = &row.headers;
        assert_eq!(h[record::STREAM_HEADER], "page_views");
        assert_eq!(h[record::BATCH_HEADER], "4");
        assert_eq!(h[record::WINDOW_START_HEADER], "4000");
        assert_eq!(h[record::WINDOW_END_HEADER], "5000");
        assert_eq!(h[record::BATCH_ROWS_HEADER], "3");
        assert_eq!(h[record::ROW_HEADER], i.to_string());
        assert!(
            !h.contains_key(record::PREV_BATCH_HEADER),
            "the stream's first batch"
        );
    }

    let segs = read_all(&brokers, "segments.out", 2, Duration::from_secs(20));
    let keys: Vec<Option<String>> = segs.iter().map(|r| r.key_text()).collect();
    assert_eq!(keys, [Some("t1|new".into()), Some("t2|loyal".into())]);
    assert!(!segs[0].headers.contains_key(record::WINDOW_START_HEADER));
    assert_eq!(segs[1].json(), segments(4).rows.to_values()[1]);
}

#[test]
fn result_consumer_gives_back_the_batches_the_sink_wrote() {
    let Some(broker) = Broker::start("result_consumer_gives_back_the_batches") else {
        return;
    };
    let brokers = broker.brokers();
    create_topic(&brokers, "clickpulse.page_views", 3);
    let written: Vec<ResultBatch> = (0..20)
        .map(|b| {
            let urls: Vec<(String, u64)> = (0..(b % 7 + 1))
                .map(|i| (format!("/p{}", (b * 13 + i) % 17), b + i))
                .collect();
            let urls: Vec<(&str, u64)> = urls.iter().map(|(u, c)| (u.as_str(), *c)).collect();
            page_views(b, &urls)
        })
        .collect();
    let mut sink = KafkaSink::builder(&brokers).build().unwrap();

    // A consumer started before anything is written sees every batch, whole and in order,
    // though each batch's rows went to three partitions by their keys.
    let got = Arc::new(Mutex::new(Vec::new()));
    let got_sink = Arc::clone(&got);
    let live = ResultConsumer::start_with_idle_timeout(
        &brokers,
        "page_views",
        "clickpulse.page_views",
        StartFrom::End,
        PATIENT,
        move |b| got_sink.lock().unwrap().push(b),
    )
    .unwrap();
    assert!(live.is_running());
    // Let it assign its partitions at the (empty) end before writing.
    std::thread::sleep(Duration::from_secs(2));
    for batch in &written {
        sink.write(batch).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.lock().unwrap().len() < written.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    live.stop();
    // Every batch whole, rows in order, batches in order: a batch whose rows were fetched from one
    // partition before any row of the batch before it from another waits for that batch (its
    // `prev_batch` header names it).
    let live_batches = got.lock().unwrap().clone();
    assert_eq!(live_batches, written);

    // From the beginning, later: the same batches again, in order.
    let again = collect(
        &brokers,
        "page_views",
        "clickpulse.page_views",
        (StartFrom::Beginning, PATIENT),
        written.len(),
        Duration::ZERO,
    );
    assert_eq!(again, written);

    // A bounded history: from the last record of each partition on, handed over in batch order
    // (a cut batch after the idle timeout). tansu 0.6 puts a partition's end at its last record
    // batch's base offset + 1, so "the last record" is the whole last record batch there.
    let recent = collect(
        &brokers,
        "page_views",
        "clickpulse.page_views",
        (StartFrom::Recent(1), Duration::from_secs(1)),
        1,
        Duration::from_millis(1500),
    );
    assert!(recent.windows(2).all(|w| w[0].batch < w[1].batch));
    assert_eq!(recent.last().map(|b| b.batch), Some(19), "{recent:?}");
    let rows: usize = recent.iter().map(|b| b.rows.len()).sum();
    assert!(rows < 20, "{recent:?}");
    for batch in &recent {
        let original = &written[batch.batch as usize];
        assert!(
            batch
                .rows
                .iter()
                .all(|r| original.rows.iter().any(|o| o == r)),
            "{batch:?}"
        );
        assert_eq!(batch.window_end_ms, original.window_end_ms);
    }
}

#[test]
fn sink_fails_after_its_flush_timeout_when_the_broker_is_gone() {
    let Some(mut broker) = Broker::start("sink_fails_after_its_flush_timeout") else {
        return;
    };
    let brokers = broker.brokers();
    create_topic(&brokers, "clickpulse.page_views", 1);
    let mut sink = KafkaSink::builder(&brokers)
        .flush_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    sink.write(&page_views(1, &[("/a", 1)])).unwrap();
    broker.kill();
    let started = Instant::now();
    let err = sink.write(&page_views(2, &[("/b", 1)])).unwrap_err();
    let took = started.elapsed();
    let SinkError::Write {
        sink: name,
        message,
    } = &err;
    assert!(name.contains("clickpulse.page_views"), "{err}");
    assert!(message.contains("undelivered after 2s"), "{err}");
    assert!(took < Duration::from_secs(10), "blocked for {took:?}");
}
