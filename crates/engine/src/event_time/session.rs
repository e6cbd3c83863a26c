//! Session windows: per key, clicks closer than a gap belong to one session.

use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use timely::dataflow::channels::pact::{Exchange, Pipeline};

use super::close_queue::CloseQueue;
use super::{Aggregator, EventTimeOutput, Routed};
use crate::checkpoint::state::StateHandle;
use crate::dstream::{DStream, Data, Key, Piece, batch_binary_eager, route};
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

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Open<A> {
    start: u64,
    end: u64,
    acc: A,
}

/// One key's open sessions (disjoint, unordered) and when it is next looked at for closing.
/// Nearly every key has one open session at a time, which is kept inline (no allocation per key).
#[derive(Debug)]
struct KeySessions<A> {
    sessions: SmallVec<[Open<A>; 1]>,
    registered_at: Option<u64>,
}

impl<A> Default for KeySessions<A> {
    fn default() -> Self {
        KeySessions {
            sessions: SmallVec::new(),
            registered_at: None,
        }
    }
}

/// Adds a click at `t` to the key's sessions: into the session it falls in (merging sessions it
/// bridges), or as a new one. Returns (sessions created, sessions merged away).
fn insert_click<V, A: Aggregator<V>>(
    state: &mut KeySessions<A::Acc>,
    t: u64,
    v: V,
    gap: u64,
    agg: &A,
) -> (u64, u64) {
    let overlaps =
        |s: &Open<A::Acc>| s.start < t.saturating_add(gap) && t < s.end.saturating_add(gap);
    let Some(first) = state.sessions.iter().position(overlaps) else {
        let mut acc = agg.init();
        agg.add(&mut acc, v);
        state.sessions.push(Open {
            start: t,
            end: t,
            acc,
        });
        return (1, 0);
    };
    // The click may bridge this session and later ones: fold those into it (rare; sessions are
    // few per key, so removing by index is cheap).
    let mut bridged: SmallVec<[Open<A::Acc>; 1]> = SmallVec::new();
    let mut i = first + 1;
    while i < state.sessions.len() {
        if state.sessions.get(i).is_some_and(overlaps) {
            bridged.push(state.sessions.remove(i));
        } else {
            i += 1;
        }
    }
    let merged = bridged.len() as u64;
    if let Some(target) = state.sessions.get_mut(first) {
        target.start = target.start.min(t);
        target.end = target.end.max(t);
        agg.add(&mut target.acc, v);
        for other in bridged {
            target.start = target.start.min(other.start);
            target.end = target.end.max(other.end);
            agg.merge(&mut target.acc, other.acc);
        }
    }
    (0, merged)
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
        let report = self.shared.state_report("session_by_key");
        let ckpt = self.shared.stateful("session_by_key");
        let groups = self.shared.key_groups();
        let mut open: FxHashMap<K, KeySessions<A::Acc>> = FxHashMap::default();
        // (close time, key) of keys that may have a session closing then (checked when due), in
        // slots of a second (of the gap, when shorter): close times come roughly in order.
        let mut closing: CloseQueue<K> = CloseQueue::new(gap.min(1000));
        let (mut tracker, mut sessions) = restore_sessions(&ckpt, &mut open, &mut closing)?;
        let mut due = Vec::new();
        let routed = batch_binary_eager(
            &self.stream,
            &wm,
            Exchange::new(move |kv: &(K, V)| route(&kv.0) % groups),
            Pipeline,
            "SessionByKey",
            move |b, piece, out| match piece {
                Piece::Data(data) => {
                    let before = tracker.current();
                    let mut late = 0;
                    for (k, v) in data.drain(..) {
                        let t = ts(&v);
                        if t < before {
                            late += 1;
                            out.push(Routed::Late((k, v)));
                            continue;
                        }
                        let state = match open.get_mut(&k) {
                            Some(state) => state,
                            None => open.entry(k.clone()).or_default(),
                        };
                        let created = insert_click(state, t, v, gap, &agg);
                        sessions = sessions + created.0 - created.1;
                        // One closing entry per key at a time, at its earliest close (re-filed
                        // when due); a session only ever closes later when clicks extend it.
                        let close = t.saturating_add(gap);
                        if state.registered_at.is_none_or(|r| close < r) {
                            state.registered_at = Some(close);
                            closing.push(close, k);
                        }
                    }
                    metrics.add_late(late);
                }
                Piece::End(reports) => {
                    let now = tracker.advance(&reports);
                    closing.take_due(now, &mut due);
                    close_sessions(
                        now,
                        gap,
                        &mut due,
                        &mut open,
                        &mut closing,
                        &mut sessions,
                        out,
                    );
                    if ckpt.due(b) {
                        // The queue is rebuilt from each key's next close time on restore.
                        let entries = open
                            .iter()
                            .map(|(k, s)| (route(k), (k, &s.sessions, s.registered_at)));
                        ckpt.save(b, &tracker, entries);
                    }
                    let size = StateSize {
                        keys: sessions,
                        bytes: table_bytes::<K, KeySessions<A::Acc>>(open.capacity())
                            + (closing.capacity() + due.capacity()) as u64
                                * std::mem::size_of::<(u64, K)>() as u64,
                    };
                    report.set(size);
                }
            },
        );
        let (output, late) = self.split_routed(routed);
        Ok(EventTimeOutput {
            output: self.derive(output),
            late: self.derive(late),
        })
    }
}

/// The open sessions of the key groups this worker owns, from the checkpoint being restored
/// (with their close queue rebuilt), and the watermark and number of open sessions to go on with.
///
/// # Errors
/// [`EngineError::Recovery`] when the saved state does not decode.
fn restore_sessions<K: Key, A: Data>(
    ckpt: &StateHandle,
    open: &mut FxHashMap<K, KeySessions<A>>,
    closing: &mut CloseQueue<K>,
) -> Result<(WatermarkTracker, u64)> {
    type Saved<K, A> = (K, SmallVec<[Open<A>; 1]>, Option<u64>);
    let Some((globals, entries)) = ckpt.restore::<WatermarkTracker, Saved<K, A>>()? else {
        return Ok((WatermarkTracker::default(), 0));
    };
    let tracker = globals
        .into_iter()
        .max_by_key(|t| t.current())
        .unwrap_or_default();
    let mut count = 0;
    for (k, sessions, registered_at) in entries {
        count += sessions.len() as u64;
        if let Some(at) = registered_at {
            closing.push(at, k.clone());
        }
        open.insert(
            k,
            KeySessions {
                sessions,
                registered_at,
            },
        );
    }
    Ok((tracker, count))
}

/// Emits and forgets every session whose last event plus `gap` the watermark `now` has reached:
/// `due` holds the queue's entries up to `now`, in order, and is left empty.
fn close_sessions<K: Key, A: Data, L>(
    now: u64,
    gap: u64,
    due: &mut Vec<(u64, K)>,
    open: &mut FxHashMap<K, KeySessions<A>>,
    closing: &mut CloseQueue<K>,
    sessions: &mut u64,
    out: &mut Vec<Routed<(K, Session, A), L>>,
) {
    let closes = |s: &Open<A>| s.end.saturating_add(gap) <= now;
    for (at, k) in due.drain(..) {
        let Some(state) = open.get_mut(&k) else {
            continue;
        };
        if state.registered_at != Some(at) {
            continue; // a stale entry: the key was re-filed earlier
        }
        let mut done: SmallVec<[Open<A>; 1]> = SmallVec::new();
        if state.sessions.iter().all(closes) {
            done = std::mem::take(&mut state.sessions);
        } else {
            let mut i = 0;
            while i < state.sessions.len() {
                if state.sessions.get(i).is_some_and(closes) {
                    done.push(state.sessions.remove(i));
                } else {
                    i += 1;
                }
            }
        }
        let next = state
            .sessions
            .iter()
            .map(|s| s.end.saturating_add(gap))
            .min();
        state.registered_at = next;
        let k = match next {
            Some(n) => {
                closing.push(n, k.clone());
                k
            }
            None => open.remove_entry(&k).map_or(k, |(key, _)| key),
        };
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
