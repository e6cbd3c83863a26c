//! Distinct keys per event-time window (for example unique visitors per minute).

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};
use timely::dataflow::channels::pact::{Exchange, Pipeline};

use super::pane_tables::PaneTables;
use super::{EventTimeOutput, Routed, route_late};
use crate::dstream::{DStream, Data, Key, Piece, batch_binary_eager, batch_unary, route};
use crate::error::Result;
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
        let metrics = Arc::clone(&self.shared.metrics);
        let worker = self.shared.worker;
        let state_name = self.shared.state_name("distinct_count_in_window");
        let size_ms = windows.size_ms();

        let mut tracker = WatermarkTracker::default();
        let mut seen: PaneTables<K, ()> = PaneTables::default();
        let late_metrics = Arc::clone(&metrics);
        let routed = batch_binary_eager(
            &self.stream,
            &wm,
            Pipeline,
            Pipeline,
            "DistinctPre",
            move |_b, piece, out| match piece {
                Piece::Data(data) => {
                    let before = tracker.current();
                    let late =
                        route_late(data.drain(..), &windows, &ts, before, out, |k, _v, t| {
                            for w in windows.assign(t) {
                                seen.table(w.start_ms).insert(k.clone(), ());
                            }
                        });
                    late_metrics.add_late(late);
                }
                Piece::End(reports) => {
                    seen.drain(|start, k, ()| out.push(Routed::Out((k, start))));
                    tracker.advance(&reports);
                }
            },
        );
        let (keys, late) = self.split_routed(routed);

        let mut tracker = WatermarkTracker::default();
        let mut open: BTreeMap<u64, FxHashSet<K>> = BTreeMap::new();
        let partial_counts = batch_binary_eager(
            &keys,
            &wm,
            Exchange::new(|p: &(K, u64)| route(&p.0)),
            Pipeline,
            "DistinctCount",
            move |_b, piece, out| match piece {
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
                    let keys: usize = open.values().map(|s| s.len()).sum();
                    let cap: usize = open.values().map(|s| s.capacity()).sum();
                    let size = StateSize {
                        keys: keys as u64,
                        bytes: table_bytes::<K, ()>(cap),
                    };
                    metrics.set_state(&state_name, worker, size);
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
}
