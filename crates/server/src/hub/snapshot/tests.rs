//! Snapshot and restore without sockets: a restarted hub against a plain model of an
//! uninterrupted one, malformed snapshots, early subscribers and the history bound.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::super::tests::{batches, drain, hub_with, names, publish};
use super::super::{Delivery, Hub, HubConfig, HubError, StreamUpdate, Subscription};
use crate::metrics::Metrics;

/// Every message waiting.
fn drain_all(sub: &Subscription) -> Vec<Delivery> {
    std::iter::from_fn(|| sub.try_recv()).collect()
}

fn wire(d: &Delivery) -> String {
    String::from_utf8(d.to_json().to_vec()).expect("UTF-8")
}

#[test]
fn snapshot_holds_the_batches_up_to_the_checkpoint_and_restores_them_byte_for_byte() {
    let (hub, _) = hub_with(10);
    for b in [1, 2, 4, 7] {
        hub.publish(
            StreamUpdate::new("s", b, vec![json!({"n": b, "url": "/a \"q\""}).into()])
                .with_window(b * 1000, b * 1000 + 1000),
        )
        .expect("publish");
    }
    publish(&hub, "t", 3);
    let saved = hub.snapshot(4).expect("snapshot");

    let (restarted, _) = hub_with(10);
    restarted.restore(&saved).expect("restore");
    let before = hub.subscription();
    let after = restarted.subscription();
    for sub in [&before, &after] {
        sub.subscribe(&names(&["s"]), Some(1)).expect("subscribe");
        sub.subscribe(&names(&["t"]), Some(3)).expect("subscribe");
    }
    let old: Vec<String> = drain_all(&before).iter().map(wire).collect();
    let new: Vec<String> = drain_all(&after).iter().map(wire).collect();
    assert_eq!(old.len(), 5, "s: 1, 2, 4, 7 and t: 3");
    assert_eq!(new.len(), 4, "batch 7 is after the checkpoint");
    let old_up_to_4: Vec<&String> = old.iter().filter(|m| !m.contains(r#""batch":7"#)).collect();
    assert_eq!(new.iter().collect::<Vec<_>>(), old_up_to_4);
    let latest: Vec<Option<u64>> = restarted.streams().iter().map(|s| s.latest_batch).collect();
    assert_eq!(latest, vec![Some(4), Some(3)]);
}

#[test]
fn the_snapshot_text_is_the_documented_format() {
    let (hub, _) = hub_with(2);
    for b in 1..=3 {
        publish(&hub, "s", b);
    }
    let saved: Value = serde_json::from_str(&hub.snapshot(3).expect("snapshot")).expect("JSON");
    assert_eq!(
        saved,
        json!({"format": 1, "up_to_batch": 3, "streams": [
            {"name": "s", "fields": ["n"], "evicted_up_to": 1, "batches": [
                {"type": "batch", "stream": "s", "batch": 2, "window_start_ms": null,
                 "window_end_ms": null, "rows": [{"n": 2}]},
                {"type": "batch", "stream": "s", "batch": 3, "window_start_ms": null,
                 "window_end_ms": null, "rows": [{"n": 3}]}]},
            {"name": "t", "fields": ["n"], "evicted_up_to": null, "batches": []}]})
    );
}

#[test]
fn a_restarted_job_re_running_batches_delivers_each_once() {
    let (hub, _) = hub_with(10);
    for b in 1..=6 {
        publish(&hub, "s", b);
    }
    // A client saw everything up to 6 before the crash; the checkpoint is of batch 4.
    let saved = hub.snapshot(4).expect("snapshot");
    let (restarted, _) = hub_with(10);
    restarted.restore(&saved).expect("restore");
    let reconnected = restarted.subscription();
    reconnected
        .subscribe(&names(&["s"]), Some(7))
        .expect("subscribe");
    let from_the_checkpoint = restarted.subscription();
    from_the_checkpoint
        .subscribe(&names(&["s"]), Some(3))
        .expect("subscribe");
    let mut got = [batches(&reconnected), batches(&from_the_checkpoint)];
    // The job re-runs 5 and 6 (and, say, 4 again), then goes on; the clients keep up.
    for b in 4..=8 {
        publish(&restarted, "s", b);
        got[0].extend(batches(&reconnected));
        got[1].extend(batches(&from_the_checkpoint));
    }
    assert_eq!(got, [vec![7, 8], vec![3, 4, 5, 6, 7, 8]]);
}

#[test]
fn restore_gives_clients_that_subscribed_before_it_what_they_asked_for() {
    let (hub, _) = hub_with(10);
    for b in 1..=5 {
        publish(&hub, "s", b);
    }
    let saved = hub.snapshot(5).expect("snapshot");
    let (restarted, _) = hub_with(10);
    let resuming = restarted.subscription();
    resuming
        .subscribe(&names(&["s"]), Some(3))
        .expect("subscribe");
    let fresh = restarted.subscription();
    fresh.subscribe(&names(&["s"]), None).expect("subscribe");
    let gone = restarted.subscription();
    gone.subscribe(&names(&["s"]), None).expect("subscribe");
    gone.unsubscribe(&names(&["s"]));
    assert!(drain(&resuming).is_empty() && drain(&fresh).is_empty());

    restarted.restore(&saved).expect("restore");
    publish(&restarted, "s", 6);
    assert_eq!(batches(&resuming), vec![3, 4, 5, 6]);
    assert_eq!(
        drain(&fresh),
        vec![(5, true, false, 0), (6, false, false, 0)]
    );
    assert!(
        drain(&gone).is_empty(),
        "an unsubscribed client gets nothing"
    );
}

/// Every batch up to the checkpoint had left the history when the snapshot was written: a
/// client resuming from before the checkpoint cannot be served exactly, and learns it from the
/// first batch the restarted job publishes.
#[test]
fn a_stream_whose_retained_batches_were_all_evicted_resyncs_at_its_first_live_batch() {
    let (hub, _) = hub_with(2);
    for b in 1..=10 {
        publish(&hub, "s", b);
    }
    let saved = hub.snapshot(5).expect("snapshot");
    let (restarted, _) = hub_with(2);
    restarted.restore(&saved).expect("restore");
    let behind = restarted.subscription();
    behind
        .subscribe(&names(&["s"]), Some(3))
        .expect("subscribe");
    let exact = restarted.subscription();
    exact.subscribe(&names(&["s"]), Some(6)).expect("subscribe");
    let (mut behind_got, mut exact_got) = (Vec::new(), Vec::new());
    for b in [5, 6, 7] {
        publish(&restarted, "s", b);
        behind_got.extend(drain(&behind));
        exact_got.extend(batches(&exact));
    }
    assert_eq!(behind_got, vec![(6, true, true, 0), (7, false, false, 0)]);
    assert_eq!(exact_got, vec![6, 7]);
}

#[test]
fn restore_keeps_the_newest_batches_within_the_history_bound() {
    let (hub, _) = hub_with(10);
    for b in 1..=8 {
        publish(&hub, "s", b);
    }
    let saved = hub.snapshot(8).expect("snapshot");
    let (small, _) = hub_with(3);
    small.restore(&saved).expect("restore");
    let exact = small.subscription();
    exact.subscribe(&names(&["s"]), Some(6)).expect("subscribe");
    assert_eq!(batches(&exact), vec![6, 7, 8]);
    let too_old = small.subscription();
    too_old
        .subscribe(&names(&["s"]), Some(5))
        .expect("subscribe");
    assert_eq!(drain(&too_old), vec![(8, true, true, 0)]);
}

#[test]
fn restore_registers_the_streams_it_does_not_know_and_keeps_the_fields_of_those_it_does() {
    let (hub, _) = hub_with(10);
    hub.register_stream("u", vec!["url".into()]);
    publish(&hub, "u", 1);
    let saved = hub.snapshot(1).expect("snapshot");
    let restarted = Hub::new(HubConfig { history_len: 10 }, Arc::new(Metrics::new()));
    restarted.register_stream("s", vec!["renamed".into()]);
    restarted.restore(&saved).expect("restore");
    let streams: Vec<(String, Vec<String>, Option<u64>)> = restarted
        .streams()
        .into_iter()
        .map(|s| (s.name, s.fields, s.latest_batch))
        .collect();
    assert_eq!(
        streams,
        vec![
            ("s".into(), vec!["renamed".into()], None),
            ("t".into(), vec!["n".into()], None),
            ("u".into(), vec!["url".into()], Some(1)),
        ]
    );
}

#[test]
fn restore_after_a_publish_is_refused_and_changes_nothing() {
    let (hub, _) = hub_with(10);
    publish(&hub, "s", 1);
    publish(&hub, "t", 1);
    let saved = hub.snapshot(1).expect("snapshot");
    let (restarted, _) = hub_with(10);
    publish(&restarted, "t", 9);
    let err = restarted.restore(&saved).expect_err("refused");
    assert!(
        matches!(&err, HubError::RestoreAfterPublish(s) if s == "t"),
        "{err}"
    );
    let latest: Vec<Option<u64>> = restarted.streams().iter().map(|s| s.latest_batch).collect();
    assert_eq!(latest, vec![None, Some(9)], "s was not restored either");
}

/// A valid snapshot with `edit` applied to its JSON.
fn edited(edit: impl FnOnce(&mut Value)) -> String {
    let (hub, _) = hub_with(10);
    for b in [2, 3] {
        publish(&hub, "s", b);
    }
    let mut v: Value = serde_json::from_str(&hub.snapshot(3).expect("snapshot")).expect("JSON");
    edit(&mut v);
    v.to_string()
}

#[test]
fn malformed_snapshots_are_errors_that_say_what_is_wrong_and_change_nothing() {
    let cases: Vec<(&str, String)> = vec![
        ("unreadable", "{\"format\":1,".into()),
        ("unreadable", "42".into()),
        (
            "`format` field is missing",
            edited(|v| {
                v.as_object_mut().expect("object").remove("format");
            }),
        ),
        (
            "format 2 is not one this version reads",
            edited(|v| v["format"] = json!(2)),
        ),
        ("unknown field `extra`", edited(|v| v["extra"] = json!(1))),
        (
            "missing field `fields`",
            edited(|v| {
                v["streams"][0]
                    .as_object_mut()
                    .expect("object")
                    .remove("fields");
            }),
        ),
        (
            "stream \"s\" appears twice",
            edited(|v| {
                let s = v["streams"][0].clone();
                v["streams"].as_array_mut().expect("array").push(s);
            }),
        ),
        (
            "stream \"s\": batch 3 is after up_to_batch 2",
            edited(|v| v["up_to_batch"] = json!(2)),
        ),
        (
            "stream \"s\": batch 2 is not after 3",
            edited(|v| {
                v["streams"][0]["batches"]
                    .as_array_mut()
                    .expect("array")
                    .reverse();
            }),
        ),
        (
            "stream \"s\": batch 2 is not after 2",
            edited(|v| {
                v["streams"][0]["evicted_up_to"] = json!(2);
            }),
        ),
        (
            "stream \"s\": evicted_up_to 9 is after up_to_batch 3",
            edited(|v| {
                v["streams"][0]["evicted_up_to"] = json!(9);
            }),
        ),
        (
            "stream \"s\": batch 2 names the stream \"t\"",
            edited(|v| {
                v["streams"][0]["batches"][0]["stream"] = json!("t");
            }),
        ),
        (
            "stream \"s\": batch 2 has type \"error\"",
            edited(|v| {
                v["streams"][0]["batches"][0]["type"] = json!("error");
            }),
        ),
        (
            "invalid type: string \"x\", expected u64",
            edited(|v| {
                v["streams"][0]["batches"][0]["batch"] = json!("x");
            }),
        ),
    ];
    for (expected, text) in cases {
        let (restarted, _) = hub_with(10);
        let err = restarted.restore(&text).expect_err(expected);
        assert!(matches!(err, HubError::BadSnapshot(_)), "{err}");
        let message = err.to_string();
        assert!(message.starts_with("malformed hub snapshot: "), "{message}");
        assert!(
            message.contains(expected),
            "{message:?} should say {expected:?}"
        );
        assert!(
            restarted.streams().iter().all(|s| s.latest_batch.is_none()),
            "{expected}: nothing restored"
        );
    }
}

/// When a subscriber of the restarted hub subscribes, relative to the restart.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// Before the restore (a browser reconnecting as soon as the server is up).
    BeforeRestore,
    /// After the restore and this many publishes of the restarted job.
    AfterPublishes(usize),
}

/// A run, a checkpoint, a crash and a restart.
#[derive(Debug, Clone)]
struct Restart {
    history_len: usize,
    /// For batch ids 1, 2, …: whether `s` (bit 0) and `t` (bit 1) publish that batch.
    plan: Vec<u8>,
    /// The checkpoint's batch.
    checkpoint: u64,
    /// Batches the first process published after the checkpoint before the snapshot was
    /// taken (the manifest hook runs on a background thread).
    lag: u64,
    /// The restarted job publishes every batch after this one (≤ the checkpoint: re-running
    /// batches the snapshot holds too must not deliver them twice).
    rerun_after: u64,
    subscribe: Moment,
    from: u64,
}

impl Restart {
    fn last_batch(&self) -> u64 {
        self.plan.len() as u64
    }

    /// Batch ids `stream` publishes in (after, up_to], in order.
    fn published(&self, stream: usize, after: u64, up_to: u64) -> Vec<u64> {
        (1..=self.last_batch())
            .filter(|&b| b > after && b <= up_to)
            .filter(|&b| {
                self.plan
                    .get((b - 1) as usize)
                    .is_some_and(|m| m & (1 << stream) != 0)
            })
            .collect()
    }

    /// (stream, batch) of every publish in (after, up_to], in order.
    fn publishes(&self, after: u64, up_to: u64) -> Vec<(&'static str, u64)> {
        (after + 1..=up_to)
            .flat_map(|b| {
                let m = self.plan.get((b - 1) as usize).copied().unwrap_or(0);
                [("s", 1), ("t", 2)]
                    .into_iter()
                    .filter(move |(_, bit)| m & bit != 0)
                    .map(move |(name, _)| (name, b))
            })
            .collect()
    }
}

fn restarts() -> impl Strategy<Value = Restart> {
    (1usize..6, prop::collection::vec(0u8..4, 0..30)).prop_flat_map(|(history_len, plan)| {
        let n = plan.len() as u64;
        (0..=n).prop_flat_map(move |checkpoint| {
            let plan = plan.clone();
            // Up to two publishes per batch, and one moment after the last.
            let restarted_publishes = 2 * plan.len() + 1;
            (
                0..=n - checkpoint,
                0..=checkpoint,
                prop_oneof![
                    Just(Moment::BeforeRestore),
                    (0..=restarted_publishes).prop_map(Moment::AfterPublishes),
                ],
                0..n + 3,
            )
                .prop_map(move |(lag, rerun_after, subscribe, from)| Restart {
                    history_len,
                    plan: plan.clone(),
                    checkpoint,
                    lag,
                    rerun_after,
                    subscribe,
                    from,
                })
        })
    })
}

/// The plain model: whether an uninterrupted hub keeping `history_len` batches, having
/// published `published`, serves a resume from `from` exactly (docs/protocol.md: every batch
/// ≥ `from` it published is still held; before its first batch it cannot know).
fn model_exact(published: &[u64], history_len: usize, from: u64) -> bool {
    let (evicted, held) = published.split_at(published.len().saturating_sub(history_len));
    match (held.first(), evicted.last()) {
        (None, _) => true,
        (Some(&first), _) if from >= first => true,
        (_, Some(&last_evicted)) => from > last_evicted,
        (Some(_), None) => false,
    }
}

/// Runs `r` and returns what the restarted hub's subscriber got, per stream.
fn run(r: &Restart) -> [Vec<Delivery>; 2] {
    let (first, _) = hub_with(r.history_len);
    let taken_at = (r.checkpoint + r.lag).min(r.last_batch());
    for (stream, b) in r.publishes(0, taken_at) {
        publish(&first, stream, b);
    }
    let saved = first.snapshot(r.checkpoint).expect("snapshot");

    let (restarted, _) = hub_with(r.history_len);
    let sub = restarted.subscription();
    let mut got = Vec::new();
    let subscribe = |got: &mut Vec<Delivery>| {
        sub.subscribe(&names(&["s", "t"]), Some(r.from))
            .expect("subscribe");
        got.extend(drain_all(&sub));
    };
    if matches!(r.subscribe, Moment::BeforeRestore) {
        subscribe(&mut got);
    }
    restarted.restore(&saved).expect("restore");
    got.extend(drain_all(&sub));
    let rerun = r.publishes(r.rerun_after, r.last_batch());
    for (i, (stream, b)) in rerun.iter().enumerate() {
        if matches!(r.subscribe, Moment::AfterPublishes(k) if k == i) {
            subscribe(&mut got);
        }
        publish(&restarted, stream, *b);
        // Taking everything after every publish: nothing is conflated.
        got.extend(drain_all(&sub));
    }
    if matches!(r.subscribe, Moment::AfterPublishes(k) if k >= rerun.len()) {
        subscribe(&mut got);
    }
    let of = |name: &str| got.iter().filter(|d| &*d.stream == name).cloned().collect();
    [of("s"), of("t")]
}

proptest! {
    /// A client resuming from any batch id at any moment of a restart gets every batch it
    /// asked for once, in order, as an uninterrupted hub would have sent it; or a flagged
    /// resync, only where a batch it wants is gone, followed by everything after it.
    #[test]
    fn a_restarted_hub_serves_resumes_like_an_uninterrupted_one(r in restarts()) {
        let got = run(&r);
        let taken_at = (r.checkpoint + r.lag).min(r.last_batch());
        for (stream, got) in got.iter().enumerate() {
            let published = r.published(stream, 0, r.last_batch());
            let ids: Vec<u64> = got.iter().map(|d| d.batch).collect();
            prop_assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order, no repeat: {:?}", ids);
            prop_assert!(got.iter().skip(1).all(|d| !d.snapshot && !d.resync && d.skipped == 0));
            let wanted: Vec<u64> = published.iter().copied().filter(|&b| b >= r.from).collect();
            let resync = got.first().is_some_and(|d| d.resync);
            if resync {
                let first = &got[0];
                prop_assert!(first.snapshot && first.skipped == 0);
                prop_assert!(published.contains(&first.batch));
                let after: Vec<u64> = published.iter().copied().filter(|&b| b > first.batch).collect();
                prop_assert_eq!(&ids[1..], &after[..], "no gap after the resync");
                // Only where a wanted batch is gone: before the checkpoint (the first process's
                // history), or evicted here as in an uninterrupted hub.
                prop_assert!(
                    r.from <= r.checkpoint || !model_exact(&published, r.history_len, r.from),
                    "needless resync"
                );
            } else {
                prop_assert!(got.iter().all(|d| !d.snapshot && d.skipped == 0));
                prop_assert_eq!(&ids, &wanted, "no gap");
            }
            // Subscribing after the restart is over, the client is served exactly as by a hub
            // that never restarted; unless the snapshot came so late that the first process had
            // already evicted batches after the checkpoint: then it cannot tell which batches up
            // to the checkpoint it lacks, and resyncs resumes from there.
            let at_end = matches!(r.subscribe, Moment::AfterPublishes(k) if k >= r.publishes(r.rerun_after, r.last_batch()).len());
            let before_snapshot = r.published(stream, 0, taken_at);
            let (evicted, _) =
                before_snapshot.split_at(before_snapshot.len().saturating_sub(r.history_len));
            let late = evicted.last().is_some_and(|&e| e > r.checkpoint);
            if at_end && !(late && r.from <= r.checkpoint) {
                prop_assert_eq!(resync, !model_exact(&published, r.history_len, r.from));
            }
        }
    }
}
