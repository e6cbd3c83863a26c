//! `reduce_by_key_and_window`: per-key values over a DStream window, plain or incremental.

use std::time::Duration;

use rustc_hash::FxHashMap;
use timely::dataflow::channels::pact::Pipeline;

use crate::dstream::{DStream, Data, Key, batch_unary, route};
use crate::error::Result;
use crate::metrics::{StateSize, table_bytes};
use crate::operators::window::{Kept, restore_kept, save_kept};

impl<'s, K: Key, V: Data> DStream<'s, (K, V)> {
    /// Each key's values over the last `len` of batches combined with `f`, every `slide`. Each
    /// window output recombines every batch in the window: O(window length) per slide. See
    /// [`DStream::reduce_by_key_and_window_inv`] for the incremental form.
    ///
    /// # Errors
    /// As [`DStream::window`].
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use clickpulse_engine::testing::collect;
    /// let out = collect(2, vec![vec![('a', 1)], vec![('a', 2), ('b', 1)], vec![('b', 1)]], |s| {
    ///     s.reduce_by_key_and_window(|x, y| x + y, Duration::from_secs(2), Duration::from_secs(1))
    ///         .unwrap()
    /// })
    /// .unwrap();
    /// assert_eq!(out, vec![vec![('a', 1)], vec![('a', 3), ('b', 1)], vec![('a', 2), ('b', 2)]]);
    /// ```
    pub fn reduce_by_key_and_window(
        &self,
        f: impl Fn(V, V) -> V + Clone + 'static,
        len: Duration,
        slide: Duration,
    ) -> Result<DStream<'s, (K, V)>> {
        let w = self.batch_window(len, slide)?;
        let per_batch = self.reduce_by_key(f.clone());
        let ckpt = self.shared.stateful("reduce_by_key_and_window");
        let mut kept: Kept<(K, V)> = restore_kept(&ckpt)?;
        let stream = batch_unary(
            &per_batch.stream,
            Pipeline,
            "ReduceByKeyAndWindow",
            move |b, data, out| {
                kept.push_back((b, data));
                while kept.front().is_some_and(|(first, _)| first + w.len <= b) {
                    kept.pop_front();
                }
                if ckpt.due(b) {
                    save_kept(&ckpt, b, &kept, |kv| route(&kv.0));
                }
                if !w.emits_at(b) {
                    return;
                }
                let mut acc: FxHashMap<K, V> = FxHashMap::default();
                for (k, v) in kept.iter().flat_map(|(_, rows)| rows.iter()) {
                    let merged = match acc.remove(k) {
                        Some(prev) => f(prev, v.clone()),
                        None => v.clone(),
                    };
                    acc.insert(k.clone(), merged);
                }
                out.extend(acc);
            },
        );
        let mut out = per_batch.derive(stream);
        out.window_batches = Some(w.len);
        Ok(out)
    }

    /// The incremental form of [`DStream::reduce_by_key_and_window`]: keeps each key's window
    /// value and updates it with the batch entering (`f`) and the batch leaving (`inv`, the inverse
    /// of `f`), so a slide costs O(entering + leaving batches), not O(window length). Keys for
    /// which `keep` is false after an update are dropped (for counts: `|c| *c > 0`).
    ///
    /// # Errors
    /// As [`DStream::window`].
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use clickpulse_engine::testing::collect;
    /// let out = collect(2, vec![vec![('a', 1)], vec![('a', 2), ('b', 1)], vec![('b', 1)]], |s| {
    ///     s.reduce_by_key_and_window_inv(
    ///         |x, y| x + y,
    ///         |x, y| x - y,
    ///         |v: &i32| *v != 0,
    ///         Duration::from_secs(2),
    ///         Duration::from_secs(1),
    ///     )
    ///     .unwrap()
    /// })
    /// .unwrap();
    /// assert_eq!(out, vec![vec![('a', 1)], vec![('a', 3), ('b', 1)], vec![('a', 2), ('b', 2)]]);
    /// ```
    pub fn reduce_by_key_and_window_inv(
        &self,
        f: impl Fn(V, V) -> V + Clone + 'static,
        inv: impl Fn(V, V) -> V + 'static,
        keep: impl Fn(&V) -> bool + 'static,
        len: Duration,
        slide: Duration,
    ) -> Result<DStream<'s, (K, V)>> {
        let w = self.batch_window(len, slide)?;
        let per_batch = self.reduce_by_key(f.clone());
        // The window's running values are recomputed from its batches on restore.
        let ckpt = self.shared.stateful("reduce_by_key_and_window_inv");
        let mut kept: Kept<(K, V)> = restore_kept(&ckpt)?;
        let mut current: FxHashMap<K, V> = FxHashMap::default();
        for (k, v) in kept.iter().flat_map(|(_, rows)| rows.iter()) {
            let merged = match current.remove(k) {
                Some(prev) => f(prev, v.clone()),
                None => v.clone(),
            };
            if keep(&merged) {
                current.insert(k.clone(), merged);
            }
        }
        let report = self.shared.state_report("reduce_by_key_and_window");
        let stream = batch_unary(
            &per_batch.stream,
            Pipeline,
            "ReduceByKeyAndWindowInv",
            move |b, data, out| {
                for (k, v) in &data {
                    let merged = match current.remove(k) {
                        Some(prev) => f(prev, v.clone()),
                        None => v.clone(),
                    };
                    if keep(&merged) {
                        current.insert(k.clone(), merged);
                    }
                }
                kept.push_back((b, data));
                while kept.front().is_some_and(|(first, _)| first + w.len <= b) {
                    if let Some((_, leaving)) = kept.pop_front() {
                        for (k, v) in leaving {
                            if let Some(prev) = current.remove(&k) {
                                let left = inv(prev, v);
                                if keep(&left) {
                                    current.insert(k, left);
                                }
                            }
                        }
                    }
                }
                if w.emits_at(b) {
                    out.extend(current.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                if ckpt.due(b) {
                    save_kept(&ckpt, b, &kept, |kv| route(&kv.0));
                }
                let keys = current.len() as u64;
                let batch_rows: usize = kept.iter().map(|(_, r)| r.len()).sum();
                let bytes = table_bytes::<K, V>(current.capacity())
                    + (batch_rows * std::mem::size_of::<(K, V)>()) as u64;
                report.set(StateSize { keys, bytes });
            },
        );
        let mut out = per_batch.derive(stream);
        out.window_batches = Some(w.len);
        Ok(out)
    }
}
