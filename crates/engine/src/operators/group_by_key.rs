//! `group_by_key`: all values of each key in each batch.

use rustc_hash::FxHashMap;
use timely::dataflow::channels::pact::Exchange;

use crate::dstream::{DStream, Data, Key, batch_unary, route};

impl<'s, K: Key, V: Data> DStream<'s, (K, V)> {
    /// Each key of a batch with all its values. The order of values within a group is the order
    /// they reached the key's worker (with several workers, not deterministic: sort if it matters).
    ///
    /// # Examples
    /// ```
    /// use clickpulse_engine::testing::collect;
    /// let out = collect(1, vec![vec![('a', 1), ('b', 2), ('a', 3)]], |s| s.group_by_key()).unwrap();
    /// assert_eq!(out, vec![vec![('a', vec![1, 3]), ('b', vec![2])]]);
    /// ```
    pub fn group_by_key(&self) -> DStream<'s, (K, Vec<V>)> {
        let mut groups: FxHashMap<K, Vec<V>> = FxHashMap::default();
        let stream = batch_unary(
            &self.stream,
            Exchange::new(|kv: &(K, V)| route(&kv.0)),
            "GroupByKey",
            move |_b, data, out| {
                for (k, v) in data {
                    groups.entry(k).or_default().push(v);
                }
                out.extend(groups.drain());
            },
        );
        self.derive(stream)
    }
}
