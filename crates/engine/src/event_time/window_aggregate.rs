//! Keyed aggregation over event-time tumbling and sliding windows.

use std::collections::BTreeMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use timely::dataflow::channels::pact::{Exchange, Pipeline};

use super::EventTimeOutput;
use super::pane_tables::PaneTables;
use crate::checkpoint::state::StateHandle;
use crate::dstream::{DStream, Data, Key, Piece, batch_binary_eager, route};
use crate::error::Result;
use crate::metrics::{StateSize, table_bytes};
use crate::time::{BatchId, Window, Windows};
use crate::watermark::WatermarkTracker;

/// How values are folded into a window's accumulator. `merge` must agree with `add`
/// (folding `a` then `b` into one accumulator equals merging two accumulators that folded them
/// separately), because values are pre-aggregated on each worker before the exchange.
pub trait Aggregator<V>: Clone + 'static {
    /// The accumulator.
    type Acc: Data;
    /// An empty accumulator.
    fn init(&self) -> Self::Acc;
    /// Folds one value in.
    fn add(&self, acc: &mut Self::Acc, value: V);
    /// Merges another accumulator in.
    fn merge(&self, acc: &mut Self::Acc, other: Self::Acc);
}

/// Counts values.
#[derive(Debug, Clone, Copy, Default)]
pub struct Count;

impl<V> Aggregator<V> for Count {
    type Acc = u64;
    fn init(&self) -> u64 {
        0
    }
    fn add(&self, acc: &mut u64, _value: V) {
        *acc += 1;
    }
    fn merge(&self, acc: &mut u64, other: u64) {
        *acc += other;
    }
}

/// Combines values with an associative, commutative function.
#[derive(Clone)]
pub struct Reduce<V>(pub Arc<dyn Fn(&V, &V) -> V + Send + Sync>);

impl<V: Data> Aggregator<V> for Reduce<V> {
    type Acc = Option<V>;
    fn init(&self) -> Option<V> {
        None
    }
    fn add(&self, acc: &mut Option<V>, value: V) {
        *acc = Some(match acc.take() {
            Some(a) => (self.0)(&a, &value),
            None => value,
        });
    }
    fn merge(&self, acc: &mut Option<V>, other: Option<V>) {
        if let Some(v) = other {
            self.add(acc, v);
        }
    }
}

/// A key's accumulators per pane (a slide-long slice of time, keyed by its start), and the end of
/// the last window emitted.
struct Panes<K, A> {
    size_ms: u64,
    slide_ms: u64,
    panes: BTreeMap<u64, FxHashMap<K, A>>,
    closed_upto: u64,
}

impl<K: Key, A: Data> Panes<K, A> {
    fn new(size_ms: u64, slide_ms: u64) -> Self {
        Panes {
            size_ms,
            slide_ms,
            panes: BTreeMap::new(),
            closed_upto: 0,
        }
    }

    /// Merges partial accumulators `(key, pane, acc)` in. Partials come pane by pane (each
    /// worker's pre-aggregation drains one pane's table at a time), so a pane's table is looked
    /// up once per run of partials, not once per partial.
    fn merge_all<V>(
        &mut self,
        agg: &impl Aggregator<V, Acc = A>,
        partials: impl Iterator<Item = (K, u64, A)>,
    ) {
        let mut partials = partials.peekable();
        while let Some((k, pane, acc)) = partials.next() {
            let table = self.panes.entry(pane).or_default();
            let mut merge = |k: K, acc: A| match table.entry(k) {
                // One probe whether the key is new to the pane or not.
                Entry::Occupied(mut existing) => agg.merge(existing.get_mut(), acc),
                Entry::Vacant(slot) => {
                    slot.insert(acc);
                }
            };
            merge(k, acc);
            while let Some((k, _, acc)) = partials.next_if(|p| p.1 == pane) {
                merge(k, acc);
            }
        }
    }

    /// Emits every window that holds data and ends at or before `now`, in order of their ends and
    /// each window's keys in order, and forgets the panes no open window needs.
    fn close<V>(
        &mut self,
        agg: &impl Aggregator<V, Acc = A>,
        now: u64,
        out: &mut Vec<(K, Window, A)>,
    ) {
        while let Some(&first) = self.panes.keys().next() {
            // The earliest window not yet emitted that holds the first pane: windows end on
            // multiples of the slide, and none starts before the epoch.
            let end = first
                .saturating_add(self.slide_ms)
                .max(self.closed_upto.saturating_add(self.slide_ms))
                .max(self.size_ms);
            if end > now {
                break;
            }
            let start = end - self.size_ms;
            // The pane starting the window ends with it: move its accumulators, copy the rest.
            let mut window = self.panes.remove(&start).unwrap_or_default();
            for pane in self.panes.range(start..end).map(|(_, p)| p) {
                for (k, acc) in pane {
                    match window.get_mut(k) {
                        Some(existing) => agg.merge(existing, acc.clone()),
                        None => {
                            window.insert(k.clone(), acc.clone());
                        }
                    }
                }
            }
            while let Some(entry) = self.panes.first_entry() {
                if *entry.key() > start {
                    break;
                }
                entry.remove();
            }
            let w = Window {
                start_ms: start,
                end_ms: end,
            };
            let first = out.len();
            out.extend(window.into_iter().map(|(k, acc)| (k, w, acc)));
            // Keys are unique within a window. Sorting a window's few keys here is cheaper than
            // sorting a whole batch's results later, which then finds them in order.
            if let Some(keys) = out.get_mut(first..) {
                keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            }
            self.closed_upto = end;
        }
    }

    /// Saves the state after `batch`: the watermark and the last window end as global state,
    /// every `(key, pane start, accumulator)` in the key group `route` gives it.
    fn save(
        &self,
        ckpt: &StateHandle,
        batch: BatchId,
        tracker: &WatermarkTracker,
        route: impl Fn(&K, u64) -> u64,
    ) {
        let entries = self.panes.iter().flat_map(|(pane, table)| {
            let route = &route;
            table
                .iter()
                .map(move |(k, acc)| (route(k, *pane), (k, *pane, acc)))
        });
        ckpt.save(batch, &(tracker, self.closed_upto), entries);
    }

    /// The state saved by [`Panes::save`], for the key groups this worker owns; every window
    /// ending at or before the highest last window end of any worker was emitted.
    fn restore(&mut self, ckpt: &StateHandle) -> Result<WatermarkTracker> {
        let Some((globals, entries)) = ckpt.restore::<(WatermarkTracker, u64), (K, u64, A)>()?
        else {
            return Ok(WatermarkTracker::default());
        };
        let mut tracker = WatermarkTracker::default();
        for (t, closed) in globals {
            if t.current() >= tracker.current() {
                tracker = t;
            }
            self.closed_upto = self.closed_upto.max(closed);
        }
        for (k, pane, acc) in entries {
            self.panes.entry(pane).or_default().insert(k, acc);
        }
        Ok(tracker)
    }

    fn keys(&self) -> usize {
        self.panes.values().map(|m| m.len()).sum()
    }

    fn capacity(&self) -> usize {
        self.panes.values().map(|m| m.capacity()).sum()
    }
}

impl<'s, K: Key, V: Data> DStream<'s, (K, V)> {
    /// Aggregates each key's values per event-time window (`ts` gives a value's event time in ms),
    /// emitting `(key, window, accumulator)` when the watermark passes the window's end. Each
    /// worker emits its windows in order of their ends, and a window's keys in order.
    ///
    /// Windows are computed from panes, slide-long slices of time: each value is folded into its
    /// one pane (not into every window it belongs to), pre-aggregated per worker and batch, then
    /// merged on the key's worker (for tumbling windows, the key and pane's worker); a closing
    /// window merges its `size / slide` panes. State size is
    /// reported under `window_aggregate` (one entry per open key and pane).
    ///
    /// # Errors
    /// [`EngineError::InvalidConfig`](crate::EngineError::InvalidConfig) (`event_time`) when the
    /// stream has no event time.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use clickpulse_engine::testing::collect_event_time;
    /// use clickpulse_engine::{Window, Windows, event_time::Count};
    /// // Events are (url, ts_ms); one partition, two batches.
    /// let parts = vec![vec![vec![('a', 100), ('a', 900)], vec![('a', 1200)]]];
    /// let out = collect_event_time(2, parts, |e: &(char, u64)| e.1, |s| {
    ///     let w = Windows::tumbling(Duration::from_secs(1)).unwrap();
    ///     s.map(|e| (e.0, e)).aggregate_by_key_in_window(w, |e| e.1, Count).unwrap().output
    /// })
    /// .unwrap();
    /// let flat: Vec<_> = out.into_iter().flatten().collect();
    /// assert_eq!(flat, vec![
    ///     ('a', Window { start_ms: 0, end_ms: 1000 }, 2),
    ///     ('a', Window { start_ms: 1000, end_ms: 2000 }, 1),
    /// ]);
    /// ```
    pub fn aggregate_by_key_in_window<A: Aggregator<V>>(
        &self,
        windows: Windows,
        ts: impl Fn(&V) -> u64 + Clone + 'static,
        agg: A,
    ) -> Result<EventTimeOutput<'s, (K, Window, A::Acc), (K, V)>> {
        let wm = self.require_watermarks("aggregate_by_key_in_window")?;
        let report = self.shared.state_report("window_aggregate");
        let size_ms = windows.size_ms();
        let slide_ms = windows.slide_ms();

        // Stage 1, on the worker that read the event: late check and pre-aggregation.
        let pre_agg = agg.clone();
        let (partials, late) = self.pre_aggregate(
            "WindowPreAggregate",
            windows,
            ts,
            PaneTables::<K, A::Acc>::default(),
            move |partial, k, v, t| {
                let pane = t - t % slide_ms;
                let acc = partial
                    .table(pane)
                    .entry(k)
                    .or_insert_with(|| pre_agg.init());
                pre_agg.add(acc, v);
            },
            |partial, out| partial.drain(|pane, k, acc| out((k, pane, acc))),
        )?;

        // Stage 2, on the key's worker: merge partials into panes, close windows the watermark
        // passed. A tumbling window is one pane, so there the pane's worker will do: a few hot
        // keys (urls, say) then spread over the workers instead of loading one.
        let tumbling = size_ms == slide_ms;
        let groups = self.shared.key_groups();
        let hash = move |k: &K, pane: u64| {
            let h = if tumbling {
                route(&(k, pane))
            } else {
                route(k)
            };
            h % groups
        };
        let ckpt = self.shared.stateful("window_aggregate");
        let mut panes: Panes<K, A::Acc> = Panes::new(size_ms, slide_ms);
        let mut tracker = panes.restore(&ckpt)?;
        let results = batch_binary_eager(
            &partials,
            &wm,
            Exchange::new(move |p: &(K, u64, A::Acc)| hash(&p.0, p.1)),
            Pipeline,
            "WindowAggregate",
            move |b, piece, out| match piece {
                Piece::Data(data) => panes.merge_all(&agg, data.drain(..)),
                Piece::End(reports) => {
                    let now = tracker.advance(&reports);
                    panes.close(&agg, now, out);
                    if ckpt.due(b) {
                        panes.save(&ckpt, b, &tracker, hash);
                    }
                    let size = StateSize {
                        keys: panes.keys() as u64,
                        bytes: table_bytes::<K, A::Acc>(panes.capacity()),
                    };
                    report.set(size);
                }
            },
        );
        Ok(EventTimeOutput {
            output: self.derive(results),
            late: self.derive(late),
        })
    }

    /// The number of values per key and event-time window: `(key, window, count)`.
    ///
    /// # Errors
    /// As [`DStream::aggregate_by_key_in_window`].
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use clickpulse_engine::testing::collect_event_time;
    /// use clickpulse_engine::{Window, Windows};
    /// let parts = vec![vec![vec![('a', 100), ('b', 200), ('a', 1500)]]];
    /// let out = collect_event_time(1, parts, |e: &(char, u64)| e.1, |s| {
    ///     let w = Windows::sliding(Duration::from_secs(2), Duration::from_secs(1)).unwrap();
    ///     s.map(|e| (e.0, e)).count_by_key_in_window(w, |e| e.1).unwrap().output
    /// })
    /// .unwrap();
    /// let flat: Vec<_> = out.into_iter().flatten().collect();
    /// assert!(flat.contains(&('a', Window { start_ms: 0, end_ms: 2000 }, 2)));
    /// assert!(flat.contains(&('a', Window { start_ms: 1000, end_ms: 3000 }, 1)));
    /// ```
    pub fn count_by_key_in_window(
        &self,
        windows: Windows,
        ts: impl Fn(&V) -> u64 + Clone + 'static,
    ) -> Result<EventTimeOutput<'s, (K, Window, u64), (K, V)>> {
        self.aggregate_by_key_in_window(windows, ts, Count)
    }

    /// Each key's values per event-time window combined with `f`: `(key, window, value)`.
    ///
    /// # Errors
    /// As [`DStream::aggregate_by_key_in_window`].
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use clickpulse_engine::testing::collect_event_time;
    /// use clickpulse_engine::{Window, Windows};
    /// let parts = vec![vec![vec![('k', 100u64), ('k', 700)]]];
    /// let out = collect_event_time(1, parts, |e: &(char, u64)| e.1, |s| {
    ///     let w = Windows::tumbling(Duration::from_secs(1)).unwrap();
    ///     s.reduce_by_key_in_window(w, |v| *v, |a, b| a.max(b)).unwrap().output
    /// })
    /// .unwrap();
    /// assert_eq!(out.concat(), vec![('k', Window { start_ms: 0, end_ms: 1000 }, 700)]);
    /// ```
    pub fn reduce_by_key_in_window(
        &self,
        windows: Windows,
        ts: impl Fn(&V) -> u64 + Clone + 'static,
        f: impl Fn(V, V) -> V + Send + Sync + 'static,
    ) -> Result<EventTimeOutput<'s, (K, Window, V), (K, V)>> {
        let agg = Reduce(Arc::new(move |a: &V, b: &V| f(a.clone(), b.clone())));
        let out = self.aggregate_by_key_in_window(windows, ts, agg)?;
        let output = out.output.flat_map(|(k, w, v)| v.map(|v| (k, w, v)));
        Ok(EventTimeOutput {
            output,
            late: out.late,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{Count, Panes};
    use crate::time::Window;

    /// Partials whose panes come back after another pane's run merge into their own pane.
    #[test]
    fn merges_runs_of_interleaved_panes() {
        let mut panes: Panes<char, u64> = Panes::new(1000, 1000);
        let partials = [
            ('a', 0, 1),
            ('b', 0, 2),
            ('a', 1000, 4),
            ('a', 0, 8),
            ('b', 1000, 16),
        ];
        panes.merge_all::<()>(&Count, partials.into_iter());
        panes.merge_all::<()>(&Count, [('b', 0, 32)].into_iter());
        let mut out = Vec::new();
        panes.close::<()>(&Count, 2000, &mut out);
        let w = |start_ms| Window {
            start_ms,
            end_ms: start_ms + 1000,
        };
        // Windows in order of their ends, each window's keys in order.
        assert_eq!(
            out,
            vec![
                ('a', w(0), 9),
                ('b', w(0), 34),
                ('a', w(1000), 4),
                ('b', w(1000), 16)
            ]
        );
    }
}
