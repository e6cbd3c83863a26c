//! Keyed aggregation over event-time tumbling and sliding windows.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use timely::dataflow::channels::pact::{Exchange, Pipeline};

use super::{EventTimeOutput, Routed, route_late};
use crate::dstream::{DStream, Data, Key, batch_binary, route};
use crate::error::Result;
use crate::metrics::{StateSize, table_bytes};
use crate::time::{Window, Windows};
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

impl<'s, K: Key, V: Data> DStream<'s, (K, V)> {
    /// Aggregates each key's values per event-time window (`ts` gives a value's event time in ms),
    /// emitting `(key, window, accumulator)` when the watermark passes the window's end.
    ///
    /// Values are pre-aggregated per worker and batch, then merged on the key's worker. State
    /// size is reported under `window_aggregate` (one entry per open key and window).
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
        let metrics = Arc::clone(&self.shared.metrics);
        let worker = self.shared.worker;
        let state_name = self.shared.state_name("window_aggregate");
        let size_ms = windows.size_ms();

        // Stage 1, on the worker that read the event: late check and pre-aggregation.
        let pre_agg = agg.clone();
        let mut tracker = WatermarkTracker::default();
        let mut partial: FxHashMap<(K, u64), A::Acc> = FxHashMap::default();
        let late_metrics = Arc::clone(&metrics);
        let routed = batch_binary(
            &self.stream,
            &wm,
            Pipeline,
            Pipeline,
            "WindowPreAggregate",
            move |_b, data, reports, out| {
                let late = route_late(data, &windows, &ts, tracker.current(), out, |k, v, t| {
                    let mut starts = windows.assign(t).map(|w| w.start_ms).peekable();
                    while let Some(start) = starts.next() {
                        let acc = partial
                            .entry((k.clone(), start))
                            .or_insert_with(|| pre_agg.init());
                        if starts.peek().is_some() {
                            pre_agg.add(acc, v.clone());
                        } else {
                            pre_agg.add(acc, v);
                            break;
                        }
                    }
                });
                late_metrics.add_late(late);
                out.extend(
                    partial
                        .drain()
                        .map(|((k, start), acc)| Routed::Out((k, start, acc))),
                );
                tracker.advance(&reports);
            },
        );
        let (partials, late) = self.split_routed(routed);

        // Stage 2, on the key's worker: merge partials, close windows the watermark passed.
        let mut tracker = WatermarkTracker::default();
        let mut open: BTreeMap<u64, FxHashMap<K, A::Acc>> = BTreeMap::new();
        let results = batch_binary(
            &partials,
            &wm,
            Exchange::new(|p: &(K, u64, A::Acc)| route(&p.0)),
            Pipeline,
            "WindowAggregate",
            move |_b, data, reports, out| {
                for (k, start, acc) in data {
                    let slot = open.entry(start + size_ms).or_default();
                    match slot.get_mut(&k) {
                        Some(existing) => agg.merge(existing, acc),
                        None => {
                            slot.insert(k, acc);
                        }
                    }
                }
                let now = tracker.advance(&reports);
                while let Some(entry) = open.first_entry() {
                    if *entry.key() > now {
                        break;
                    }
                    let end = *entry.key();
                    let window = Window {
                        start_ms: end - size_ms,
                        end_ms: end,
                    };
                    out.extend(entry.remove().into_iter().map(|(k, acc)| (k, window, acc)));
                }
                let keys: usize = open.values().map(|m| m.len()).sum();
                let cap: usize = open.values().map(|m| m.capacity()).sum();
                let size = StateSize {
                    keys: keys as u64,
                    bytes: table_bytes::<K, A::Acc>(cap),
                };
                metrics.set_state(&state_name, worker, size);
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
