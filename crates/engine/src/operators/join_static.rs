//! `join_static`: a stream joined with a keyed table loaded once.

use std::sync::Arc;

use rustc_hash::FxHashMap;
use timely::dataflow::channels::pact::Exchange;

use crate::dstream::{DStream, Data, Key, batch_unary, route};

impl<'s, K: Key, V: Data> DStream<'s, (K, V)> {
    /// Pairs each record with the table's value for its key (`None` when the table has no entry).
    /// `table` is shared by the job; each worker keeps only the keys routed to it, and records
    /// are exchanged by the same route, so each lookup is local.
    ///
    /// # Examples
    /// ```
    /// use std::sync::Arc;
    /// use clickpulse_engine::testing::collect;
    /// let table = Arc::new(vec![('a', 'V')]);
    /// let out = collect(2, vec![vec![('a', 1), ('b', 2)]], move |s| s.join_static(&table)).unwrap();
    /// assert_eq!(out, vec![vec![('a', (1, Some('V'))), ('b', (2, None))]]);
    /// ```
    pub fn join_static<W: Data>(
        &self,
        table: &Arc<Vec<(K, W)>>,
    ) -> DStream<'s, (K, (V, Option<W>))> {
        let (worker, peers) = (self.shared.worker as u64, self.scope().peers() as u64);
        let local: FxHashMap<K, W> = table
            .iter()
            .filter(|(k, _)| route(k) % peers == worker)
            .cloned()
            .collect();
        let stream = batch_unary(
            &self.stream,
            Exchange::new(|kv: &(K, V)| route(&kv.0)),
            "JoinStatic",
            move |_b, data, out| {
                out.extend(data.into_iter().map(|(k, v)| {
                    let w = local.get(&k).cloned();
                    (k, (v, w))
                }));
            },
        );
        self.derive(stream)
    }
}
