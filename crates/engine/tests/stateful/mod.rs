//! A job with every stateful operator, its outputs tagged with the operator, and random inputs
//! for it: the job the recovery and cluster tests compare runs of.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clickpulse_engine::checkpoint::{CheckpointStore, MemoryStore};
use clickpulse_engine::event_time::Count;
use clickpulse_engine::source::PartitionedSource;
use clickpulse_engine::{EventTime, Job, State, Windows};
use proptest::prelude::*;

/// A key and an event time (ms).
pub type Event = (u8, u64);
/// Rows by batch.
pub type Outputs = Arc<Mutex<BTreeMap<u64, Vec<String>>>>;

/// Every stateful operator over `source`, each output row as text tagged with its operator.
pub fn build<S: PartitionedSource<Item = Event> + Clone>(
    job: &mut Job<'_>,
    source: &S,
    sink: Outputs,
) -> clickpulse_engine::Result<()> {
    let et = EventTime::new(|e: &Event| e.1).idle_timeout(Duration::from_secs(3600));
    let events = job.source_with_event_time(source, et)?;
    let keyed = events.map(|e| (e.0, e));
    let ts = |e: &Event| e.1;
    let secs = Duration::from_secs;
    let tumbling = keyed.count_by_key_in_window(Windows::tumbling(secs(1))?, ts)?;
    let sliding = keyed.count_by_key_in_window(Windows::sliding(secs(3), secs(1))?, ts)?;
    let sessions = keyed.session_by_key(Duration::from_millis(1500), ts, Count)?;
    let distinct = keyed.distinct_count_in_window(Windows::tumbling(secs(2))?, ts)?;
    let approx = keyed.approx_distinct_count_in_window(Windows::tumbling(secs(2))?, ts, 10)?;
    let running =
        keyed
            .map(|(k, _)| (k, 1u64))
            .update_state_by_key(|vals: Vec<u64>, old: Option<u64>| {
                Some(old.unwrap_or(0) + vals.len() as u64)
            });
    // Counts a key's records until it has been idle for 2 batches (order-free within a batch).
    let last_seen = keyed.map(|(k, e)| (k, e.1)).map_with_state(
        Some(secs(2)),
        |k: &u8, v: Option<u64>, st: &mut State<u64>| match v {
            Some(_) => {
                st.update(st.get().copied().unwrap_or(0) + 1);
                None
            }
            None => Some(format!("{k} timed out after {:?}", st.get())),
        },
    )?;
    let by_value = keyed
        .map(|(k, _)| k)
        .count_by_value_and_window(secs(2), secs(1))?;
    let by_value_plain = keyed
        .map(|(k, _)| k)
        .count_by_value_and_window_plain(secs(3), secs(1))?;
    let windowed = events.map(|e| e.0).window(secs(2), secs(1))?;
    let tagged = [
        tumbling.output.map(|r| format!("tumbling {r:?}")),
        tumbling.late.map(|r| format!("tumbling late {r:?}")),
        sliding.output.map(|r| format!("sliding {r:?}")),
        sessions.output.map(|r| format!("session {r:?}")),
        sessions.late.map(|r| format!("session late {r:?}")),
        distinct.output.map(|r| format!("distinct {r:?}")),
        approx.output.map(|r| format!("approx {r:?}")),
        running.map(|r| format!("running {r:?}")),
        last_seen.map(|r| format!("last seen {r}")),
        by_value.map(|r| format!("by value {r:?}")),
        by_value_plain.map(|r| format!("by value plain {r:?}")),
        windowed.map(|r| format!("window {r}")),
    ];
    job.union_all(tagged.to_vec())?
        .foreach_batch(move |info, rows| {
            let mut all = sink.lock().unwrap_or_else(|p| p.into_inner());
            let batch = all.entry(info.batch).or_default();
            batch.extend(rows);
            batch.sort();
        });
    Ok(())
}

/// Up to three partitions of up to 40 events whose time moves on with the offset and jitters
/// back (some come late).
pub fn events() -> impl Strategy<Value = Vec<Vec<Event>>> {
    let partition = prop::collection::vec((0u8..5, 0u64..900), 0..40).prop_map(|evs| {
        // Time moves on with the offset and jitters back, so that some events come late.
        evs.into_iter()
            .enumerate()
            .map(|(i, (k, jitter))| (k, 300 * i as u64 + jitter))
            .collect()
    });
    prop::collection::vec(partition, 1..4)
}

/// A copy of `store` as a crash after batch `crash` would have left it, restarting from the
/// checkpoint of batch `checkpoint` (newer checkpoints and later log records are gone).
pub fn crashed_copy(
    store: &MemoryStore,
    checkpoint: Option<u64>,
    crash: Option<u64>,
) -> MemoryStore {
    let copy = MemoryStore::default();
    for path in store.list("").expect("memory lists") {
        let batch_in = |dir: &str| -> Option<u64> {
            let rest = path.split(dir).nth(1)?;
            rest.get(..20)?.parse().ok()
        };
        if let Some(b) = batch_in("/checkpoints/")
            && checkpoint.is_none_or(|c| b > c)
        {
            continue;
        }
        if let Some(b) = batch_in("/wal/")
            && crash.is_none_or(|c| b > c)
        {
            continue;
        }
        let bytes = store.get(&path).expect("memory reads").expect("listed");
        copy.put(&path, bytes).expect("memory writes");
    }
    copy
}

/// Checkpoint batches in `store`, oldest first.
pub fn checkpoints(store: &MemoryStore) -> Vec<u64> {
    store
        .list("")
        .expect("memory lists")
        .iter()
        .filter(|p| p.ends_with("/MANIFEST"))
        .filter_map(|p| p.rsplit('/').nth(1)?.parse().ok())
        .collect()
}
