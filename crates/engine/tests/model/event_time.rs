//! Event time: the watermark of every batch, and the windows, sessions and distinct counts it
//! closes.
//!
//! The rules, from `event_time/mod.rs`, `watermark.rs` and the source driver, for an until-end
//! run over a queue source (idle timeout long enough never to matter):
//!
//! - Per partition, the highest event time it has served so far (0 while it has served none).
//! - A partition is finished at the end of the batch in which it served its last queued batch
//!   (batch 0 if it had none).
//! - At the end of batch `b`: `wm_b = max(wm_{b-1}, min over unfinished partitions of
//!   (highest seen − lateness))`, saturating at 0; `u64::MAX` once every partition is finished.
//! - Events of batch `b` are judged against `wm_{b-1}` (0 before batch 0). A window event is late
//!   when the earliest window containing it ends at or before that watermark; a session event
//!   when its time is below it. Late events go to the late stream in their batch.
//! - Windows with `end <= wm_b` are emitted in batch `b`; a session when its last event plus the
//!   gap is `<= wm_b`.

use std::collections::{BTreeMap, BTreeSet};

use clickpulse_engine::{Session, Window};

use super::batch_count;

/// An until-end run over a partitioned source: each batch's events and the watermark at its end.
#[derive(Debug, Clone)]
pub struct Timeline<T> {
    /// Events of every batch, partition by partition.
    pub batches: Vec<Vec<T>>,
    /// `wm_b` for every batch `b`.
    pub watermarks: Vec<u64>,
}

impl<T> Timeline<T> {
    /// The watermark events of batch `b` are judged against.
    pub fn before(&self, b: usize) -> u64 {
        if b == 0 { 0 } else { self.watermarks[b - 1] }
    }
}

pub fn timeline<T: Clone>(
    partitions: &[Vec<Vec<T>>],
    ts: impl Fn(&T) -> u64,
    lateness_ms: u64,
) -> Timeline<T> {
    let mut highest: Vec<Option<u64>> = vec![None; partitions.len()];
    let mut wm = 0u64;
    let mut out = Timeline {
        batches: Vec::new(),
        watermarks: Vec::new(),
    };
    for b in 0..batch_count(partitions) {
        let mut events = Vec::new();
        for (p, queued) in partitions.iter().enumerate() {
            for e in queued.get(b).into_iter().flatten() {
                highest[p] = highest[p].max(Some(ts(e)));
                events.push(e.clone());
            }
        }
        let candidate = (0..partitions.len())
            .filter(|&p| b + 1 < partitions[p].len())
            .map(|p| highest[p].unwrap_or(0).saturating_sub(lateness_ms))
            .min()
            .unwrap_or(u64::MAX);
        wm = wm.max(candidate);
        out.batches.push(events);
        out.watermarks.push(wm);
    }
    out
}

/// Window length and slide in ms (tumbling: slide = size).
#[derive(Debug, Clone, Copy)]
pub struct WindowSpec {
    pub size_ms: u64,
    pub slide_ms: u64,
}

impl WindowSpec {
    /// Every window `[start, start + size)` with `start` a non-negative multiple of the slide
    /// that contains `t`.
    pub fn containing(&self, t: u64) -> Vec<Window> {
        let mut out = Vec::new();
        let mut start = t / self.slide_ms * self.slide_ms;
        while start + self.size_ms > t {
            out.push(Window {
                start_ms: start,
                end_ms: start + self.size_ms,
            });
            match start.checked_sub(self.slide_ms) {
                Some(s) => start = s,
                None => break,
            }
        }
        out
    }
}

/// What an event-time operator emits per batch: results and late events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted<R, L> {
    pub output: Vec<Vec<R>>,
    pub late: Vec<Vec<L>>,
}

fn sort_all<R: Ord, L: Ord>(mut e: Emitted<R, L>) -> Emitted<R, L> {
    e.output.iter_mut().for_each(|b| b.sort());
    e.late.iter_mut().for_each(|b| b.sort());
    e
}

/// Each key's values per window, `summarize`d when the window closes: `(key, window, summary)`.
pub fn aggregate_by_key_in_window<K: Clone + Ord, V: Clone + Ord, A: Ord>(
    tl: &Timeline<(K, V)>,
    spec: WindowSpec,
    ts: impl Fn(&V) -> u64,
    summarize: impl Fn(Vec<V>) -> A,
) -> Emitted<(K, Window, A), (K, V)> {
    let mut open: BTreeMap<Window, BTreeMap<K, Vec<V>>> = BTreeMap::new();
    let mut out = Emitted {
        output: Vec::new(),
        late: Vec::new(),
    };
    for (b, batch) in tl.batches.iter().enumerate() {
        let (before, now) = (tl.before(b), tl.watermarks[b]);
        let mut late = Vec::new();
        for (k, v) in batch {
            let windows = spec.containing(ts(v));
            let first_end = windows.iter().map(|w| w.end_ms).min().unwrap_or(0);
            if first_end <= before {
                late.push((k.clone(), v.clone()));
                continue;
            }
            for w in windows {
                let values = open.entry(w).or_default().entry(k.clone()).or_default();
                values.push(v.clone());
            }
        }
        let closing: Vec<Window> = open.keys().filter(|w| w.end_ms <= now).copied().collect();
        let mut rows = Vec::new();
        for w in closing {
            for (k, values) in open.remove(&w).unwrap_or_default() {
                rows.push((k, w, summarize(values)));
            }
        }
        out.output.push(rows);
        out.late.push(late);
    }
    sort_all(out)
}

/// The number of distinct keys per window, when it closes: `(window, count)`.
pub fn distinct_count_in_window<K: Clone + Ord, V: Clone + Ord>(
    tl: &Timeline<(K, V)>,
    spec: WindowSpec,
    ts: impl Fn(&V) -> u64,
) -> Emitted<(Window, u64), (K, V)> {
    let per_key = aggregate_by_key_in_window(tl, spec, ts, |_| ());
    let output = per_key
        .output
        .iter()
        .map(|rows| {
            let mut keys: BTreeMap<Window, BTreeSet<K>> = BTreeMap::new();
            for (k, w, ()) in rows {
                keys.entry(*w).or_default().insert(k.clone());
            }
            keys.into_iter()
                .map(|(w, ks)| (w, ks.len() as u64))
                .collect()
        })
        .collect();
    sort_all(Emitted {
        output,
        late: per_key.late,
    })
}

/// An open session of the model: first and last event time, and its events.
struct OpenSession<V> {
    start: u64,
    end: u64,
    values: Vec<V>,
}

/// Per key, events less than `gap` apart (directly or through other events) form one session;
/// `(key, session, summary)` once the watermark reaches the last event plus the gap.
pub fn session_by_key<K: Clone + Ord, V: Clone + Ord, A: Ord>(
    tl: &Timeline<(K, V)>,
    gap: u64,
    ts: impl Fn(&V) -> u64,
    summarize: impl Fn(Vec<V>) -> A,
) -> Emitted<(K, Session, A), (K, V)> {
    let mut open: BTreeMap<K, Vec<OpenSession<V>>> = BTreeMap::new();
    let mut out = Emitted {
        output: Vec::new(),
        late: Vec::new(),
    };
    for (b, batch) in tl.batches.iter().enumerate() {
        let (before, now) = (tl.before(b), tl.watermarks[b]);
        let mut late = Vec::new();
        for (k, v) in batch {
            let t = ts(v);
            if t < before {
                late.push((k.clone(), v.clone()));
                continue;
            }
            let sessions = open.entry(k.clone()).or_default();
            // The sessions `t` is within `gap` of (distance to [start, end] below the gap).
            let (near, far): (Vec<_>, Vec<_>) = std::mem::take(sessions)
                .into_iter()
                .partition(|s| t + gap > s.start && t < s.end + gap);
            let mut merged = OpenSession {
                start: t,
                end: t,
                values: vec![v.clone()],
            };
            for s in near {
                merged.start = merged.start.min(s.start);
                merged.end = merged.end.max(s.end);
                merged.values.extend(s.values);
            }
            *sessions = far;
            sessions.push(merged);
        }
        let mut rows = Vec::new();
        for (k, sessions) in &mut open {
            let (done, still): (Vec<_>, Vec<_>) = std::mem::take(sessions)
                .into_iter()
                .partition(|s| s.end.saturating_add(gap) <= now);
            *sessions = still;
            for s in done {
                let session = Session {
                    start_ms: s.start,
                    end_ms: s.end,
                };
                rows.push((k.clone(), session, summarize(s.values)));
            }
        }
        open.retain(|_, s| !s.is_empty());
        out.output.push(rows);
        out.late.push(late);
    }
    sort_all(out)
}
