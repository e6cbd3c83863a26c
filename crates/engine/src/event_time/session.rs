//! Session windows: per key, clicks closer than a gap belong to one session.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::{Exchange, Pipeline};

use super::{Aggregator, EventTimeOutput, Routed};
use crate::dstream::{DStream, Data, Key, batch_binary, route};
use crate::error::{EngineError, Result};
use crate::metrics::{StateSize, table_bytes};
use crate::watermark::WatermarkTracker;

/// A closed session's bounds: its first and last event times (both inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Session {
    /// Event time of the first event.
    pub start_ms: u64,
    /// Event time of the last event.
    pub end_ms: u64,
}

#[derive(Debug, Clone)]
struct Open<A> {
    start: u64,
    end: u64,
    acc: A,
}

impl<'s, K: Key, V: Data> DStream<'s, (K, V)> {
    /// Session windows per key: events of a key whose times are less than `gap` apart belong to
    /// one session (out-of-order events may join or merge sessions). A session is emitted as
    /// `(key, session, accumulator)` once the watermark reaches its last event plus `gap`, i.e.
    /// when no event that is not late could still extend it. Events below the watermark are late.
    ///
    /// State size is reported under `session_by_key` (open sessions).
    ///
    /// # Errors
    /// [`EngineError::InvalidConfig`] for a zero `gap` or a stream without event time.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use clickpulse_engine::testing::collect_event_time;
    /// use clickpulse_engine::event_time::{Count, Session};
    /// let parts = vec![vec![vec![('1', 0u64), ('1', 500), ('1', 5_000)]]];
    /// let out = collect_event_time(2, parts, |e: &(char, u64)| e.1, |s| {
    ///     s.map(|e| (e.0, e))
    ///         .session_by_key(Duration::from_secs(1), |e| e.1, Count)
    ///         .unwrap()
    ///         .output
    /// })
    /// .unwrap();
    /// assert_eq!(out.concat(), vec![
    ///     ('1', Session { start_ms: 0, end_ms: 500 }, 2),
    ///     ('1', Session { start_ms: 5_000, end_ms: 5_000 }, 1),
    /// ]);
    /// ```
    pub fn session_by_key<A: Aggregator<V>>(
        &self,
        gap: Duration,
        ts: impl Fn(&V) -> u64 + 'static,
        agg: A,
    ) -> Result<EventTimeOutput<'s, (K, Session, A::Acc), (K, V)>> {
        let gap = u64::try_from(gap.as_millis()).unwrap_or(u64::MAX);
        if gap == 0 {
            return Err(EngineError::InvalidConfig {
                key: "session gap",
                reason: "must be at least 1 ms".into(),
            });
        }
        let wm = self.require_watermarks("session_by_key")?;
        let metrics = Arc::clone(&self.shared.metrics);
        let worker = self.shared.worker;
        let mut tracker = WatermarkTracker::default();
        let mut open: FxHashMap<K, Vec<Open<A::Acc>>> = FxHashMap::default();
        // Close time -> keys that may have a session closing then (checked when popped).
        let mut closing: BTreeMap<u64, Vec<K>> = BTreeMap::new();
        let mut sessions = 0u64;
        let routed = batch_binary(
            &self.stream,
            &wm,
            Exchange::new(|kv: &(K, V)| route(&kv.0)),
            Pipeline,
            "SessionByKey",
            move |_b, data, reports, out| {
                let before = tracker.current();
                let mut late = 0;
                for (k, v) in data {
                    let t = ts(&v);
                    if t < before {
                        late += 1;
                        out.push(Routed::Late((k, v)));
                        continue;
                    }
                    let list = open.entry(k.clone()).or_default();
                    let mut acc = agg.init();
                    agg.add(&mut acc, v);
                    let mut merged = Open {
                        start: t,
                        end: t,
                        acc,
                    };
                    let before_len = list.len();
                    list.retain_mut(|s| {
                        let overlaps =
                            s.start < t.saturating_add(gap) && t < s.end.saturating_add(gap);
                        if overlaps {
                            merged.start = merged.start.min(s.start);
                            merged.end = merged.end.max(s.end);
                            let acc = std::mem::replace(&mut s.acc, agg.init());
                            agg.merge(&mut merged.acc, acc);
                        }
                        !overlaps
                    });
                    sessions = sessions + 1 + list.len() as u64 - before_len as u64;
                    closing
                        .entry(merged.end.saturating_add(gap))
                        .or_default()
                        .push(k);
                    list.push(merged);
                }
                metrics.add_late(late);
                let now = tracker.advance(&reports);
                close_sessions(now, gap, &mut open, &mut closing, &mut sessions, out);
                let size = StateSize {
                    keys: sessions,
                    bytes: table_bytes::<K, Vec<Open<A::Acc>>>(open.capacity())
                        + sessions * std::mem::size_of::<Open<A::Acc>>() as u64,
                };
                metrics.set_state("session_by_key", worker, size);
            },
        );
        let (output, late) = self.split_routed(routed);
        Ok(EventTimeOutput {
            output: self.derive(output),
            late: self.derive(late),
        })
    }
}

/// Emits and forgets every session whose last event plus `gap` the watermark `now` has reached.
fn close_sessions<K: Key, A: Data, L>(
    now: u64,
    gap: u64,
    open: &mut FxHashMap<K, Vec<Open<A>>>,
    closing: &mut BTreeMap<u64, Vec<K>>,
    sessions: &mut u64,
    out: &mut Vec<Routed<(K, Session, A), L>>,
) {
    while let Some(entry) = closing.first_entry() {
        if *entry.key() > now {
            break;
        }
        for k in entry.remove() {
            let Some(list) = open.get_mut(&k) else {
                continue;
            };
            let mut done = Vec::new();
            list.retain_mut(|s| {
                let closes = s.end.saturating_add(gap) <= now;
                if closes {
                    done.push(s.clone());
                }
                !closes
            });
            if list.is_empty() {
                open.remove(&k);
            }
            done.sort_by_key(|s| s.start);
            for s in done {
                *sessions -= 1;
                let session = Session {
                    start_ms: s.start,
                    end_ms: s.end,
                };
                out.push(Routed::Out((k.clone(), session, s.acc)));
            }
        }
    }
}
