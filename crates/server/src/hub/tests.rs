//! Hub semantics without sockets: snapshot, resume, resync, conflation.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::json;

use super::*;

pub(super) fn hub_with(history_len: usize) -> (Hub, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let hub = Hub::new(HubConfig { history_len }, metrics.clone());
    hub.register_stream("s", vec!["n".into()]);
    hub.register_stream("t", vec!["n".into()]);
    (hub, metrics)
}

pub(super) fn publish(hub: &Hub, stream: &str, batch: u64) {
    hub.publish(StreamUpdate::new(
        stream,
        batch,
        vec![json!({ "n": batch }).into()],
    ))
    .expect("publish");
}

pub(super) fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Everything waiting, as (batch, snapshot, resync, skipped).
pub(super) fn drain(sub: &Subscription) -> Vec<(u64, bool, bool, u64)> {
    std::iter::from_fn(|| sub.try_recv())
        .map(|d| (d.batch, d.snapshot, d.resync, d.skipped))
        .collect()
}

pub(super) fn batches(sub: &Subscription) -> Vec<u64> {
    drain(sub).into_iter().map(|d| d.0).collect()
}

#[test]
fn subscribe_sends_latest_as_snapshot_then_live() {
    let (hub, _) = hub_with(10);
    publish(&hub, "s", 1);
    publish(&hub, "s", 2);
    let sub = hub.subscription();
    sub.subscribe(&names(&["s"]), None).expect("subscribe");
    assert_eq!(drain(&sub), vec![(2, true, false, 0)]);
    publish(&hub, "s", 3);
    assert_eq!(drain(&sub), vec![(3, false, false, 0)]);
    publish(&hub, "s", 5);
    assert_eq!(drain(&sub), vec![(5, false, false, 0)]);
    assert_eq!(hub.streams()[0].subscribers, 1);
}

#[test]
fn subscribe_to_empty_stream_sends_nothing_until_publish() {
    let (hub, _) = hub_with(10);
    let sub = hub.subscription();
    sub.subscribe(&names(&["s"]), None).expect("subscribe");
    assert!(sub.try_recv().is_none());
    publish(&hub, "s", 4);
    assert_eq!(drain(&sub), vec![(4, false, false, 0)]);
}

#[test]
fn wire_json_carries_the_client_flags() {
    let (hub, _) = hub_with(10);
    publish(&hub, "s", 1);
    let sub = hub.subscription();
    sub.subscribe(&names(&["s"]), None).expect("subscribe");
    let d = sub.try_recv().expect("snapshot");
    let v: serde_json::Value = serde_json::from_slice(&d.to_json()).expect("json");
    assert_eq!(v["type"], "batch");
    assert_eq!(v["stream"], "s");
    assert_eq!(v["batch"], 1);
    assert_eq!(v["snapshot"], true);
    assert_eq!(v["rows"], json!([{ "n": 1 }]));
}

#[test]
fn resume_sends_exactly_the_missed_batches_then_live() {
    let (hub, _) = hub_with(10);
    for b in 1..=6 {
        publish(&hub, "s", b);
    }
    let sub = hub.subscription();
    sub.subscribe(&names(&["s"]), Some(4)).expect("subscribe");
    publish(&hub, "s", 7);
    assert_eq!(batches(&sub), vec![4, 5, 6, 7]);
    assert!(drain(&sub).is_empty());
}

#[test]
fn resume_point_between_sparse_batches_starts_at_the_next_published_one() {
    let (hub, _) = hub_with(10);
    for b in [2, 5, 9] {
        publish(&hub, "s", b);
    }
    let sub = hub.subscription();
    sub.subscribe(&names(&["s"]), Some(3)).expect("subscribe");
    assert_eq!(batches(&sub), vec![5, 9]);
}

#[test]
fn resume_older_than_history_gets_a_resync_snapshot() {
    let (hub, _) = hub_with(3);
    for b in 1..=10 {
        publish(&hub, "s", b);
    }
    let sub = hub.subscription();
    sub.subscribe(&names(&["s"]), Some(7)).expect("subscribe");
    assert_eq!(drain(&sub), vec![(10, true, true, 0)]);
    publish(&hub, "s", 11);
    assert_eq!(drain(&sub), vec![(11, false, false, 0)]);
}

#[test]
fn resume_in_an_unpublished_gap_after_eviction_is_exact() {
    let (hub, _) = hub_with(2);
    for b in [1, 2, 10, 11] {
        publish(&hub, "s", b);
    }
    // 1 and 2 are evicted; 3..=9 were never published, so nothing from 5 on is missing.
    let sub = hub.subscription();
    sub.subscribe(&names(&["s"]), Some(5)).expect("subscribe");
    assert_eq!(
        drain(&sub),
        vec![(10, false, false, 0), (11, false, false, 0)]
    );
}

#[test]
fn resume_below_the_first_batch_this_hub_saw_resyncs() {
    let (hub, _) = hub_with(10);
    for b in 100..=102 {
        publish(&hub, "s", b);
    }
    // The hub cannot know what an earlier server published before batch 100.
    let sub = hub.subscription();
    sub.subscribe(&names(&["s"]), Some(50)).expect("subscribe");
    assert_eq!(drain(&sub), vec![(102, true, true, 0)]);
}

#[test]
fn resume_ahead_of_the_hub_skips_older_live_batches() {
    let (hub, _) = hub_with(10);
    publish(&hub, "s", 1);
    let sub = hub.subscription();
    sub.subscribe(&names(&["s"]), Some(5)).expect("subscribe");
    for b in 2..=6 {
        publish(&hub, "s", b);
        // Taking after every publish: nothing conflated, only the filter acts.
        let got = batches(&sub);
        assert_eq!(got, if b >= 5 { vec![b] } else { vec![] });
    }
}

#[test]
fn slow_client_is_conflated_and_fast_client_gets_everything() {
    let (hub, metrics) = hub_with(100);
    let slow = hub.subscription();
    let fast = hub.subscription();
    slow.subscribe(&names(&["s"]), None).expect("subscribe");
    fast.subscribe(&names(&["s"]), None).expect("subscribe");
    let mut fast_got = Vec::new();
    for b in 1..=20 {
        publish(&hub, "s", b);
        fast_got.extend(batches(&fast));
    }
    assert_eq!(fast_got, (1..=20).collect::<Vec<_>>());
    assert_eq!(drain(&slow), vec![(20, false, false, 19)]);
    assert_eq!(metrics.conflated(), 19);
    // The skipped count is reset once carried.
    publish(&hub, "s", 21);
    assert_eq!(drain(&slow), vec![(21, false, false, 0)]);
}

#[test]
fn replay_backlog_is_never_conflated_but_live_batches_behind_it_are() {
    let (hub, _) = hub_with(100);
    for b in 1..=5 {
        publish(&hub, "s", b);
    }
    let sub = hub.subscription();
    sub.subscribe(&names(&["s"]), Some(2)).expect("subscribe");
    for b in 6..=9 {
        publish(&hub, "s", b);
    }
    assert_eq!(
        drain(&sub),
        vec![
            (2, false, false, 0),
            (3, false, false, 0),
            (4, false, false, 0),
            (5, false, false, 0),
            (9, false, false, 3),
        ]
    );
}

#[test]
fn streams_are_served_round_robin() {
    let (hub, _) = hub_with(100);
    for b in 1..=3 {
        publish(&hub, "s", b);
        publish(&hub, "t", b);
    }
    let sub = hub.subscription();
    sub.subscribe(&names(&["s"]), Some(1)).expect("subscribe");
    sub.subscribe(&names(&["t"]), Some(1)).expect("subscribe");
    let order: Vec<(String, u64)> = std::iter::from_fn(|| sub.try_recv())
        .map(|d| (d.stream.to_string(), d.batch))
        .collect();
    let expect: Vec<(String, u64)> = [("s", 1), ("t", 1), ("s", 2), ("t", 2), ("s", 3), ("t", 3)]
        .iter()
        .map(|(s, b)| (s.to_string(), *b))
        .collect();
    assert_eq!(order, expect);
}

#[test]
fn a_batch_published_again_is_ignored_and_unknown_streams_are_refused() {
    let (hub, _) = hub_with(10);
    let live = hub.subscription();
    live.subscribe(&names(&["s"]), None).expect("subscribe");
    publish(&hub, "s", 4);
    assert_eq!(batches(&live), vec![4]);
    publish(&hub, "s", 5);
    assert_eq!(batches(&live), vec![5]);
    for again in [5, 4, 1] {
        let other_rows = vec![json!({ "n": "different" }).into()];
        hub.publish(StreamUpdate::new("s", again, other_rows))
            .expect("a batch published again is not an error");
    }
    assert!(drain(&live).is_empty(), "not delivered twice");
    let unknown = hub.publish(StreamUpdate::new("nope", 1, vec![]));
    assert!(matches!(unknown, Err(HubError::UnknownStream(name)) if name == "nope"));
    assert_eq!(hub.streams()[0].latest_batch, Some(5));
    // The history kept the first version of each batch.
    let resumed = hub.subscription();
    resumed
        .subscribe(&names(&["s"]), Some(4))
        .expect("subscribe");
    let rows: Vec<serde_json::Value> = std::iter::from_fn(|| resumed.try_recv())
        .map(|d| {
            serde_json::from_slice::<serde_json::Value>(&d.to_json()).expect("JSON")["rows"].clone()
        })
        .collect();
    assert_eq!(rows, vec![json!([{ "n": 4 }]), json!([{ "n": 5 }])]);
}

#[test]
fn subscribe_is_all_or_nothing() {
    let (hub, _) = hub_with(10);
    let sub = hub.subscription();
    let err = sub.subscribe(&names(&["s", "nope"]), None);
    assert!(matches!(err, Err(HubError::UnknownStream(name)) if name == "nope"));
    assert!(hub.streams().iter().all(|s| s.subscribers == 0));
}

#[test]
fn unsubscribe_and_drop_detach_the_client() {
    let (hub, _) = hub_with(10);
    let sub = hub.subscription();
    sub.subscribe(&names(&["s", "t"]), None).expect("subscribe");
    publish(&hub, "s", 1);
    sub.unsubscribe(&names(&["s", "never-subscribed"]));
    assert!(sub.try_recv().is_none(), "pending message of s dropped");
    publish(&hub, "s", 2);
    assert!(sub.try_recv().is_none());
    let counts = |hub: &Hub| {
        hub.streams()
            .iter()
            .map(|s| s.subscribers)
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(&hub), vec![0, 1]);
    drop(sub);
    assert_eq!(counts(&hub), vec![0, 0]);
}

#[test]
fn history_is_bounded() {
    let (hub, _) = hub_with(4);
    for b in 1..=50 {
        publish(&hub, "s", b);
    }
    let sub = hub.subscription();
    sub.subscribe(&names(&["s"]), Some(47)).expect("subscribe");
    assert_eq!(batches(&sub), vec![47, 48, 49, 50]);
    let sub = hub.subscription();
    sub.subscribe(&names(&["s"]), Some(46)).expect("subscribe");
    assert_eq!(drain(&sub), vec![(50, true, true, 0)]);
}

#[test]
fn reregistering_keeps_history_and_updates_fields() {
    let (hub, _) = hub_with(10);
    publish(&hub, "s", 3);
    hub.register_stream("s", vec!["url".into(), "count".into()]);
    let info = &hub.streams()[0];
    assert_eq!(info.fields, vec!["url".to_string(), "count".to_string()]);
    assert_eq!(info.latest_batch, Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recv_wakes_on_a_publish_from_another_thread() {
    let (hub, _) = hub_with(10);
    let sub = hub.subscription();
    sub.subscribe(&names(&["s"]), None).expect("subscribe");
    let publisher = hub.clone();
    let thread = std::thread::spawn(move || {
        for b in 1..=3 {
            publish(&publisher, "s", b);
        }
    });
    let mut last = 0;
    let mut seen = 0;
    while last < 3 {
        let d = sub.recv().await;
        assert!(d.batch > last);
        seen += 1 + d.skipped;
        last = d.batch;
    }
    thread.join().expect("publisher thread");
    assert_eq!(seen, 3, "every batch delivered or counted as skipped");
}

/// One step of the model test.
#[derive(Debug, Clone)]
enum Step {
    /// Publish the next batch, `gap` ids after the previous one.
    Publish { gap: u64 },
    /// The client takes up to `n` waiting messages.
    Take { n: usize },
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        3 => (1u64..4).prop_map(|gap| Step::Publish { gap }),
        1 => (0usize..4).prop_map(|n| Step::Take { n }),
    ];
    prop::collection::vec(step, 0..60)
}

proptest! {
    /// Whatever the publish/take interleaving, a client that resumes from `from` sees
    /// strictly increasing batches, and every published batch ≥ `from` (or after the resync
    /// snapshot) is either delivered or counted in exactly one `skipped`.
    #[test]
    fn resume_and_conflation_account_for_every_batch(
        before in 0usize..20,
        history_len in 1usize..8,
        from in 0u64..30,
        plan in steps(),
    ) {
        let (hub, _) = hub_with(history_len);
        let mut published = Vec::new();
        let mut next = 1;
        for _ in 0..before {
            publish(&hub, "s", next);
            published.push(next);
            next += 2;
        }
        let sub = hub.subscription();
        sub.subscribe(&names(&["s"]), Some(from)).expect("subscribe");
        let mut got = Vec::new();
        for step in plan {
            match step {
                Step::Publish { gap } => {
                    next += gap;
                    publish(&hub, "s", next);
                    published.push(next);
                }
                Step::Take { n } => got.extend(std::iter::from_fn(|| sub.try_recv()).take(n)),
            }
        }
        got.extend(std::iter::from_fn(|| sub.try_recv()));

        prop_assert!(got.windows(2).all(|w| w[0].batch < w[1].batch));
        let Some(first) = got.first() else {
            // Nothing delivered: nothing was published at or after `from`.
            prop_assert!(published.iter().all(|&b| b < from));
            return Ok(());
        };
        let start = if first.resync {
            prop_assert!(first.snapshot);
            first.batch
        } else {
            from
        };
        let expected: Vec<u64> = published.iter().copied().filter(|&b| b >= start).collect();
        let mut idx = 0;
        for d in &got {
            idx += usize::try_from(d.skipped).expect("small");
            prop_assert_eq!(Some(&d.batch), expected.get(idx), "at {:?}", d);
            idx += 1;
        }
        prop_assert_eq!(idx, expected.len(), "the latest batch is always delivered");
    }
}
