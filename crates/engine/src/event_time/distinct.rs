//! Distinct keys per event-time window (for example unique visitors per minute): exact, or
//! estimated with HyperLogLog sketches.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use hyperloglockless::HyperLogLogPlus;
use rustc_hash::{FxHashMap, FxHashSet};
use timely::dataflow::channels::pact::{Exchange, Pipeline};

use super::EventTimeOutput;
use super::pane_tables::PaneTables;
use crate::dstream::{DStream, Data, Key, Piece, batch_binary_eager, batch_unary, route};
use crate::error::{EngineError, Result};
use crate::metrics::{StateSize, table_bytes};
use crate::time::{Window, Windows};
use crate::watermark::WatermarkTracker;

impl<'s, K: Key, V: Data> DStream<'s, (K, V)> {
    /// The exact number of distinct keys per event-time window: `(window, count)`, emitted when
    /// the watermark passes the window's end (windows with no key are not emitted). Each key's
    /// worker counts its own keys; the per-worker counts are then summed per window.
    ///
    /// State size is reported under `distinct_count_in_window` (one entry per open key and window).
    ///
    /// # Errors
    /// As [`DStream::aggregate_by_key_in_window`].
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use clickpulse_engine::testing::collect_event_time;
    /// use clickpulse_engine::{Window, Windows};
    /// let parts = vec![vec![vec![('1', 10u64), ('2', 20), ('1', 30), ('3', 1_500)]]];
    /// let out = collect_event_time(2, parts, |e: &(char, u64)| e.1, |s| {
    ///     let w = Windows::tumbling(Duration::from_secs(1)).unwrap();
    ///     s.map(|e| (e.0, e)).distinct_count_in_window(w, |e| e.1).unwrap().output
    /// })
    /// .unwrap();
    /// assert_eq!(out.concat(), vec![
    ///     (Window { start_ms: 0, end_ms: 1000 }, 2),
    ///     (Window { start_ms: 1000, end_ms: 2000 }, 1),
    /// ]);
    /// ```
    pub fn distinct_count_in_window(
        &self,
        windows: Windows,
        ts: impl Fn(&V) -> u64 + 'static,
    ) -> Result<EventTimeOutput<'s, (Window, u64), (K, V)>> {
        let wm = self.require_watermarks("distinct_count_in_window")?;
        let report = self.shared.state_report("distinct_count_in_window");
        let size_ms = windows.size_ms();

        let (keys, late) = self.pre_aggregate(
            "DistinctPre",
            windows,
            ts,
            PaneTables::<K, ()>::default(),
            move |seen, k, _v, t| {
                for w in windows.assign(t) {
                    seen.table(w.start_ms).insert(k.clone(), ());
                }
            },
            |seen, out| seen.drain(|start, k, ()| out((k, start))),
        )?;

        let ckpt = self.shared.stateful("distinct_count_in_window");
        let groups = self.shared.key_groups();
        let mut open: BTreeMap<u64, FxHashSet<K>> = BTreeMap::new();
        let mut tracker = match ckpt.restore::<WatermarkTracker, (K, u64)>()? {
            Some((globals, entries)) => {
                for (k, end) in entries {
                    open.entry(end).or_default().insert(k);
                }
                globals
                    .into_iter()
                    .max_by_key(|t| t.current())
                    .unwrap_or_default()
            }
            None => WatermarkTracker::default(),
        };
        let partial_counts = batch_binary_eager(
            &keys,
            &wm,
            Exchange::new(move |p: &(K, u64)| route(&p.0) % groups),
            Pipeline,
            "DistinctCount",
            move |b, piece, out| match piece {
                Piece::Data(data) => {
                    for (k, start) in data.drain(..) {
                        open.entry(start + size_ms).or_default().insert(k);
                    }
                }
                Piece::End(reports) => {
                    let now = tracker.advance(&reports);
                    while let Some(entry) = open.first_entry() {
                        if *entry.key() > now {
                            break;
                        }
                        let end = *entry.key();
                        let n = entry.remove().len() as u64;
                        out.push((
                            Window {
                                start_ms: end - size_ms,
                                end_ms: end,
                            },
                            n,
                        ));
                    }
                    if ckpt.due(b) {
                        let entries = open
                            .iter()
                            .flat_map(|(end, ks)| ks.iter().map(move |k| (route(k), (k, *end))));
                        ckpt.save(b, &tracker, entries);
                    }
                    let keys: usize = open.values().map(|s| s.len()).sum();
                    let cap: usize = open.values().map(|s| s.capacity()).sum();
                    let size = StateSize {
                        keys: keys as u64,
                        bytes: table_bytes::<K, ()>(cap),
                    };
                    report.set(size);
                }
            },
        );
        let mut sums: FxHashMap<Window, u64> = FxHashMap::default();
        let totals = batch_unary(
            &partial_counts,
            Exchange::new(|p: &(Window, u64)| route(&p.0)),
            "DistinctSum",
            move |_b, data, out| {
                for (w, n) in data {
                    *sums.entry(w).or_default() += n;
                }
                out.extend(sums.drain());
            },
        );
        Ok(EventTimeOutput {
            output: self.derive(totals),
            late: self.derive(late),
        })
    }

    /// Like [`DStream::distinct_count_in_window`], but each window's count is a HyperLogLog
    /// estimate with `2^precision` registers (standard error about `1.04 / sqrt(2^precision)`:
    /// 0.8% at 14). Keys never leave their worker: each worker folds its keys into one sketch per
    /// window and batch (sparse while small), and the sketches are merged on the window's worker.
    /// Memory per open window is at most `2^precision` bytes, however many keys it holds.
    ///
    /// Every worker and process hashes keys with the same seeded hash, so the estimate does not
    /// depend on the number of workers or on the batching. State size is reported under
    /// `approx_distinct_count_in_window` (one entry per open window).
    ///
    /// # Errors
    /// [`EngineError::InvalidConfig`] (`hll precision`) for a precision outside 4..=18; otherwise as
    /// [`DStream::aggregate_by_key_in_window`].
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use clickpulse_engine::testing::collect_event_time;
    /// use clickpulse_engine::{Window, Windows};
    /// let parts = vec![vec![vec![('1', 10u64), ('2', 20), ('1', 30), ('3', 1_500)]]];
    /// let out = collect_event_time(2, parts, |e: &(char, u64)| e.1, |s| {
    ///     let w = Windows::tumbling(Duration::from_secs(1)).unwrap();
    ///     s.map(|e| (e.0, e)).approx_distinct_count_in_window(w, |e| e.1, 12).unwrap().output
    /// })
    /// .unwrap();
    /// // Small counts are exact in practice (the sketch is sparse).
    /// assert_eq!(out.concat(), vec![
    ///     (Window { start_ms: 0, end_ms: 1000 }, 2),
    ///     (Window { start_ms: 1000, end_ms: 2000 }, 1),
    /// ]);
    /// ```
    pub fn approx_distinct_count_in_window(
        &self,
        windows: Windows,
        ts: impl Fn(&V) -> u64 + 'static,
        precision: u8,
    ) -> Result<EventTimeOutput<'s, (Window, u64), (K, V)>> {
        if !(4..=18).contains(&precision) {
            return Err(EngineError::InvalidConfig {
                key: "hll precision",
                reason: format!("{precision} is outside 4..=18"),
            });
        }
        let wm = self.require_watermarks("approx_distinct_count_in_window")?;
        let report = self.shared.state_report("approx_distinct_count_in_window");
        let size_ms = windows.size_ms();

        // Stage 1, on the worker that read the event: one sketch per window this batch touches.
        let (partials, late) = self.pre_aggregate(
            "SketchPre",
            windows,
            ts,
            BTreeMap::<u64, HyperLogLogPlus>::new(),
            move |sketches, k, _v, t| {
                for w in windows.assign(t) {
                    sketches
                        .entry(w.start_ms)
                        .or_insert_with(|| HyperLogLogPlus::seeded(precision, SKETCH_SEED))
                        .insert(&k);
                }
            },
            |sketches, out| std::mem::take(sketches).into_iter().for_each(out),
        )?;

        // Stage 2, on the window's worker: merge the sketches, estimate when the window closes.
        let ckpt = self.shared.stateful("approx_distinct_count_in_window");
        let groups = self.shared.key_groups();
        let mut open: BTreeMap<u64, HyperLogLogPlus> = BTreeMap::new();
        let mut tracker = match ckpt.restore::<WatermarkTracker, (u64, HyperLogLogPlus)>()? {
            Some((globals, entries)) => {
                open.extend(entries);
                globals
                    .into_iter()
                    .max_by_key(|t| t.current())
                    .unwrap_or_default()
            }
            None => WatermarkTracker::default(),
        };
        let totals = batch_binary_eager(
            &partials,
            &wm,
            Exchange::new(move |p: &(u64, HyperLogLogPlus)| route(&p.0) % groups),
            Pipeline,
            "SketchMerge",
            move |b, piece, out| match piece {
                Piece::Data(data) => {
                    for (start, sketch) in data.drain(..) {
                        match open.entry(start + size_ms) {
                            Entry::Vacant(e) => {
                                e.insert(sketch);
                            }
                            Entry::Occupied(mut e) => {
                                // Every sketch has the same precision, so they always merge.
                                if let Err(error) = e.get_mut().union(&sketch) {
                                    tracing::error!(?error, "HyperLogLog sketches did not merge");
                                }
                            }
                        }
                    }
                }
                Piece::End(reports) => {
                    let now = tracker.advance(&reports);
                    while let Some(mut entry) = open.first_entry() {
                        let end = *entry.key();
                        if end > now {
                            break;
                        }
                        // Rounded: the sketch's own `count` truncates, so 0.99… would be 0.
                        let n = entry.get_mut().raw_count().round() as u64;
                        entry.remove();
                        let w = Window {
                            start_ms: end - size_ms,
                            end_ms: end,
                        };
                        out.push((w, n));
                    }
                    if ckpt.due(b) {
                        // Keyed by window end; routed by window start, as the exchange does.
                        let entries = open
                            .iter()
                            .map(|(end, sketch)| (route(&(end - size_ms)), (*end, sketch)));
                        ckpt.save(b, &tracker, entries);
                    }
                    let size = StateSize {
                        keys: open.len() as u64,
                        bytes: open.len() as u64 * (1u64 << precision),
                    };
                    report.set(size);
                }
            },
        );
        Ok(EventTimeOutput {
            output: self.derive(totals),
            late: self.derive(late),
        })
    }
}

/// The seed of the hash keys are sketched with: fixed, so that sketches built by different
/// workers and processes merge.
const SKETCH_SEED: u128 = 0x0000_636c_6963_6b70_756c_7365_5f68_6c6c;
