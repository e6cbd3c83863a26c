//! `top_n`: the best `n` records of each batch, or of each key's values.

use std::cmp::Reverse;

use rustc_hash::FxHashMap;
use timely::dataflow::channels::pact::{Exchange, Pipeline};

use crate::dstream::{DStream, Data, Key, batch_unary, route};

/// The largest vector (in values) `top_n_by_key` keeps for reuse by the next batch.
const MAX_REUSED: usize = 1024;

/// Keeps in `rows` the `n` records with the greatest `by`, ties broken by the record's own order
/// (ascending), best first.
fn best<T: Ord, O: Ord>(rows: &mut Vec<T>, n: usize, by: &impl Fn(&T) -> O) {
    let cmp = |a: &T, b: &T| (Reverse(by(a)), a).cmp(&(Reverse(by(b)), b));
    if rows.len() > n && n > 0 {
        rows.select_nth_unstable_by(n - 1, cmp);
        rows.truncate(n);
    } else if n == 0 {
        rows.clear();
    }
    rows.sort_unstable_by(cmp);
}

impl<'s, T: Data + Ord> DStream<'s, T> {
    /// The `n` records of each batch with the greatest `by(record)`, as `(rank, record)` with rank
    /// 1 for the best; ties go to the smaller record. Each worker keeps its own top `n` and worker
    /// 0 merges them, so only `n × workers` records cross between workers.
    ///
    /// # Examples
    /// ```
    /// use clickpulse_engine::testing::collect;
    /// let out = collect(2, vec![vec![('b', 5), ('a', 5), ('c', 9), ('d', 1)]], |s| {
    ///     s.top_n(3, |row: &(char, i32)| row.1)
    /// })
    /// .unwrap();
    /// assert_eq!(out, vec![vec![(1, ('c', 9)), (2, ('a', 5)), (3, ('b', 5))]]);
    /// ```
    pub fn top_n<O: Ord>(
        &self,
        n: usize,
        by: impl Fn(&T) -> O + Clone + 'static,
    ) -> DStream<'s, (u32, T)> {
        let local_by = by.clone();
        let local = batch_unary(
            &self.stream,
            Pipeline,
            "TopNLocal",
            move |_b, mut data, out| {
                best(&mut data, n, &local_by);
                out.extend(data);
            },
        );
        let global = batch_unary(
            &local,
            Exchange::new(|_: &T| 0),
            "TopN",
            move |_b, mut data, out| {
                best(&mut data, n, &by);
                out.extend(data.into_iter().zip(1u32..).map(|(t, r)| (r, t)));
            },
        );
        self.derive(global)
    }
}

impl<'s, K: Key, V: Data + Ord> DStream<'s, (K, V)> {
    /// For each key of each batch, its `n` values with the greatest `by(value)`, as
    /// `(key, (rank, value))`; ties go to the smaller value. Values are ranked per worker first,
    /// then on the key's worker, which emits its keys in order, each key's values by rank.
    ///
    /// # Examples
    /// ```
    /// use clickpulse_engine::testing::collect;
    /// let rows = vec![('x', ('a', 3)), ('x', ('b', 7)), ('y', ('a', 1))];
    /// let out = collect(2, vec![rows], |s| s.top_n_by_key(1, |v: &(char, i32)| v.1)).unwrap();
    /// assert_eq!(out, vec![vec![('x', (1, ('b', 7))), ('y', (1, ('a', 1)))]]);
    /// ```
    pub fn top_n_by_key<O: Ord>(
        &self,
        n: usize,
        by: impl Fn(&V) -> O + Clone + 'static,
    ) -> DStream<'s, (K, (u32, V))> {
        let local_by = by.clone();
        // Each key's values of a batch, in vectors emptied and reused by the next batch's keys:
        // a key's vector would otherwise grow from nothing, a reallocation and a copy at a time.
        // Only as many as the batch had keys are kept, and none larger than `MAX_REUSED`, so the
        // pool never holds much more than a batch's own values.
        let mut groups: FxHashMap<K, Vec<V>> = FxHashMap::default();
        let mut spare: Vec<Vec<V>> = Vec::new();
        let local = batch_unary(
            &self.stream,
            Pipeline,
            "TopNByKeyLocal",
            move |_b, data, out| {
                for (k, v) in data {
                    let values = groups
                        .entry(k)
                        .or_insert_with(|| spare.pop().unwrap_or_default());
                    values.push(v);
                }
                let keys = groups.len();
                for (k, mut vs) in groups.drain() {
                    best(&mut vs, n, &local_by);
                    out.extend(vs.drain(..).map(|v| (k.clone(), v)));
                    if vs.capacity() <= MAX_REUSED {
                        spare.push(vs);
                    }
                }
                spare.truncate(keys);
            },
        );
        // The same for the merge of the workers' best (at most `n` a worker per key).
        let mut merged: FxHashMap<K, Vec<V>> = FxHashMap::default();
        let mut merged_spare: Vec<Vec<V>> = Vec::new();
        let global = batch_unary(
            &local,
            Exchange::new(|kv: &(K, V)| route(&kv.0)),
            "TopNByKey",
            move |_b, data, out| {
                for (k, v) in data {
                    let values = merged
                        .entry(k)
                        .or_insert_with(|| merged_spare.pop().unwrap_or_default());
                    values.push(v);
                }
                // Keys in order: a batch's keys are few (windows, say), and its ranked rows then
                // come sorted by key and rank.
                let mut keys: Vec<(K, Vec<V>)> = merged.drain().collect();
                keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                let count = keys.len();
                for (k, mut vs) in keys {
                    best(&mut vs, n, &by);
                    let ranked = vs.drain(..).zip(1u32..);
                    out.extend(ranked.map(|(v, r)| (k.clone(), (r, v))));
                    if vs.capacity() <= MAX_REUSED {
                        merged_spare.push(vs);
                    }
                }
                merged_spare.truncate(count);
            },
        );
        self.derive(global)
    }
}
