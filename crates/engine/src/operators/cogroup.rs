//! `cogroup`: both streams' values of each key, batch by batch. The joins build on it.

use rustc_hash::FxHashMap;
use timely::dataflow::channels::pact::Exchange;

use crate::dstream::{DStream, Data, Key, batch_binary, route};

impl<'s, K: Key, V: Data> DStream<'s, (K, V)> {
    /// Each key present in either stream's batch, with its values from this stream and from
    /// `other`.
    ///
    /// # Examples
    /// ```
    /// use clickpulse_engine::testing::collect;
    /// let out = collect(2, vec![vec![('a', 1), ('b', 2)]], |s| {
    ///     s.cogroup(&s.filter(|kv| kv.0 == 'a').map_values(|v| v * 10))
    /// })
    /// .unwrap();
    /// assert_eq!(out, vec![vec![('a', (vec![1], vec![10])), ('b', (vec![2], vec![]))]]);
    /// ```
    pub fn cogroup<W: Data>(
        &self,
        other: &DStream<'s, (K, W)>,
    ) -> DStream<'s, (K, (Vec<V>, Vec<W>))> {
        self.cogroup_with(other, "Cogroup", |k, vs, ws, out| out.push((k, (vs, ws))))
    }

    /// Cogroups by key and lets `emit` turn each key's groups into output records.
    pub(crate) fn cogroup_with<W: Data, O: Data>(
        &self,
        other: &DStream<'s, (K, W)>,
        name: &str,
        emit: impl Fn(K, Vec<V>, Vec<W>, &mut Vec<O>) + 'static,
    ) -> DStream<'s, O> {
        let mut groups: FxHashMap<K, (Vec<V>, Vec<W>)> = FxHashMap::default();
        let stream = batch_binary(
            &self.stream,
            &other.stream,
            Exchange::new(|kv: &(K, V)| route(&kv.0)),
            Exchange::new(|kw: &(K, W)| route(&kw.0)),
            name,
            move |_b, left, right, out| {
                for (k, v) in left {
                    groups.entry(k).or_default().0.push(v);
                }
                for (k, w) in right {
                    groups.entry(k).or_default().1.push(w);
                }
                for (k, (vs, ws)) in groups.drain() {
                    emit(k, vs, ws, out);
                }
            },
        );
        self.derive(stream)
    }
}
