//! `update_state_by_key`: a state per key, updated every batch.

use rustc_hash::FxHashMap;
use timely::dataflow::channels::pact::Exchange;

use crate::dstream::{DStream, Data, Key, batch_unary, route};
use crate::metrics::{StateSize, table_bytes};

impl<'s, K: Key, V: Data> DStream<'s, (K, V)> {
    /// Keeps a state per key. Every batch, `update(values, state)` is called for every key that
    /// has a state or new values (values in arrival order, empty when the key had none this
    /// batch); returning `None` removes the key. Emits every key's state after each batch, as
    /// Spark's `updateStateByKey` does.
    ///
    /// State size is reported to the engine's metrics under `update_state_by_key`.
    ///
    /// # Examples
    /// ```
    /// use clickpulse_engine::testing::collect;
    /// // A running count per key, dropped once a batch brings nothing for it.
    /// let out = collect(2, vec![vec![('a', 1), ('a', 1)], vec![('b', 1)]], |s| {
    ///     s.update_state_by_key(|vals: Vec<i32>, old: Option<i32>| {
    ///         if vals.is_empty() { None } else { Some(old.unwrap_or(0) + vals.iter().sum::<i32>()) }
    ///     })
    /// })
    /// .unwrap();
    /// assert_eq!(out, vec![vec![('a', 2)], vec![('b', 1)]]);
    /// ```
    pub fn update_state_by_key<S: Data>(
        &self,
        update: impl Fn(Vec<V>, Option<S>) -> Option<S> + 'static,
    ) -> DStream<'s, (K, S)> {
        let report = self.shared.state_report("update_state_by_key");
        let ckpt = self.shared.stateful("update_state_by_key");
        let groups = self.shared.key_groups();
        let mut state: FxHashMap<K, Option<S>> = FxHashMap::default();
        match ckpt.restore::<(), (K, S)>() {
            Ok(restored) => {
                let entries = restored.map(|r| r.1).unwrap_or_default();
                state.extend(entries.into_iter().map(|(k, s)| (k, Some(s))));
            }
            Err(e) => self.shared.defer_error(e),
        }
        let stream = batch_unary(
            &self.stream,
            Exchange::new(move |kv: &(K, V)| route(&kv.0) % groups),
            "UpdateStateByKey",
            move |b, data, out| {
                // A fresh map per batch: a kept one would hold its largest batch's capacity forever.
                let mut groups: FxHashMap<K, Vec<V>> = FxHashMap::default();
                for (k, v) in data {
                    groups.entry(k).or_default().push(v);
                }
                state.retain(|k, s| {
                    let vals = groups.remove(k).unwrap_or_default();
                    *s = update(vals, s.take());
                    s.is_some()
                });
                for (k, vals) in groups.drain() {
                    if let Some(s) = update(vals, None) {
                        state.insert(k, Some(s));
                    }
                }
                out.extend(
                    state
                        .iter()
                        .filter_map(|(k, s)| Some((k.clone(), s.clone()?))),
                );
                let size = StateSize {
                    keys: state.len() as u64,
                    bytes: table_bytes::<K, Option<S>>(state.capacity()),
                };
                report.set(size);
                if ckpt.due(b) {
                    let entries = state
                        .iter()
                        .filter_map(|(k, s)| Some((route(k), (k, s.as_ref()?))));
                    ckpt.save(b, &(), entries);
                }
            },
        );
        self.derive(stream)
    }
}
