//! `top_n`: the best `n` records of each batch, or of each key's values.

use std::cmp::Reverse;

use rustc_hash::FxHashMap;
use timely::dataflow::channels::pact::{Exchange, Pipeline};

use crate::dstream::{DStream, Data, Key, batch_unary, route};

/// A batch's values grouped by key, in vectors emptied and reused by the next batch's keys: a
/// key's vector would otherwise grow from nothing, a reallocation and a copy at a time. Only as
/// many vectors as the batch had keys are kept, and none larger than [`Groups::MAX_REUSED`]
/// values, so the pool never holds much more than a batch's own values.
struct Groups<K, V> {
    groups: FxHashMap<K, Vec<V>>,
    spare: Vec<Vec<V>>,
}

impl<K, V> Default for Groups<K, V> {
    fn default() -> Self {
        Groups {
            groups: FxHashMap::default(),
            spare: Vec::new(),
        }
    }
}

impl<K: Key, V> Groups<K, V> {
    /// The largest vector (in values) kept for reuse.
    const MAX_REUSED: usize = 1024;

    /// Adds each value to its key's group.
    fn extend(&mut self, data: impl IntoIterator<Item = (K, V)>) {
        for (k, v) in data {
            let spare = &mut self.spare;
            let values = self
                .groups
                .entry(k)
                .or_insert_with(|| spare.pop().unwrap_or_default());
            values.push(v);
        }
    }

    /// Hands each key and its values to `f` (in key order when `sorted`), which is to take the
    /// values it keeps out of the vector; the vectors are then kept for the next batch.
    fn drain(&mut self, sorted: bool, mut f: impl FnMut(K, &mut Vec<V>)) {
        let mut keys: Vec<(K, Vec<V>)> = self.groups.drain().collect();
        if sorted {
            keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        let count = keys.len();
        for (k, mut values) in keys {
            f(k, &mut values);
            values.clear();
            if values.capacity() <= Self::MAX_REUSED {
                self.spare.push(values);
            }
        }
        self.spare.truncate(count);
    }
}

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
        let mut groups = Groups::default();
        let local = batch_unary(
            &self.stream,
            Pipeline,
            "TopNByKeyLocal",
            move |_b, data, out| {
                groups.extend(data);
                groups.drain(false, |k, vs| {
                    best(vs, n, &local_by);
                    out.extend(vs.drain(..).map(|v| (k.clone(), v)));
                });
            },
        );
        // The merge of the workers' best (at most `n` a worker per key). Keys in order: a batch's
        // keys are few (windows, say), and its ranked rows then come sorted by key and rank.
        let mut merged = Groups::default();
        let global = batch_unary(
            &local,
            Exchange::new(|kv: &(K, V)| route(&kv.0)),
            "TopNByKey",
            move |_b, data, out| {
                merged.extend(data);
                merged.drain(true, |k, vs| {
                    best(vs, n, &by);
                    let ranked = vs.drain(..).zip(1u32..);
                    out.extend(ranked.map(|(v, r)| (k.clone(), (r, v))));
                });
            },
        );
        self.derive(global)
    }
}
