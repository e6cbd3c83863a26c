//! `reduce_by_key`: one value per key per batch, combined on each worker before the exchange.

use rustc_hash::FxHashMap;
use timely::dataflow::channels::pact::{Exchange, Pipeline};

use crate::dstream::{DStream, Data, Key, batch_unary, route};

impl<'s, K: Key, V: Data> DStream<'s, (K, V)> {
    /// Combines the values of each key within each batch with `f` (associative and commutative).
    /// Values are combined on each worker first, so only one partial value per key and worker
    /// crosses between workers.
    ///
    /// # Examples
    /// ```
    /// use clickpulse_engine::testing::collect;
    /// let out = collect(2, vec![vec![('a', 1), ('b', 5), ('a', 2)]], |s| {
    ///     s.reduce_by_key(|x, y| x + y)
    /// })
    /// .unwrap();
    /// assert_eq!(out, vec![vec![('a', 3), ('b', 5)]]);
    /// ```
    pub fn reduce_by_key(&self, f: impl Fn(V, V) -> V + Clone + 'static) -> DStream<'s, (K, V)> {
        let local = combine(&self.stream, Pipeline, "ReduceByKeyLocal", f.clone());
        // By key group, as every keyed exchange: windows over these results keep keyed state.
        let groups = self.shared.key_groups();
        let global = combine(
            &local,
            Exchange::new(move |kv: &(K, V)| route(&kv.0) % groups),
            "ReduceByKey",
            f,
        );
        self.derive(global)
    }
}

fn combine<'s, K: Key, V: Data, P>(
    stream: &timely::dataflow::StreamVec<'s, crate::BatchId, (K, V)>,
    pact: P,
    name: &str,
    f: impl Fn(V, V) -> V + 'static,
) -> timely::dataflow::StreamVec<'s, crate::BatchId, (K, V)>
where
    P: timely::dataflow::channels::pact::ParallelizationContract<crate::BatchId, Vec<(K, V)>>,
{
    let mut acc: FxHashMap<K, V> = FxHashMap::default();
    batch_unary(stream, pact, name, move |_batch, data, out| {
        for (k, v) in data {
            match acc.remove(&k) {
                Some(prev) => acc.insert(k, f(prev, v)),
                None => acc.insert(k, v),
            };
        }
        out.extend(acc.drain());
    })
}
