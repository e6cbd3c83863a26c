//! Per-pane hash tables for pre-aggregating a batch on the worker that read it.
//!
//! One table keyed by `(key, pane)` spreads a batch's entries over one large table: with the
//! hour or so of event time a full batch of a replay spans, every update is a cache miss. Events
//! of a partition arrive roughly in time order, so here each pane (slice of time) has its own
//! small table and the table of the pane last used is found without a lookup. Emptied tables
//! keep their memory for the next batch.

use std::hash::Hash;

use rustc_hash::FxHashMap;

/// Tables of `K -> A`, one per pane.
pub(crate) struct PaneTables<K, A> {
    /// Where each pane's table is in `tables`.
    index: FxHashMap<u64, usize>,
    /// The tables in use, in the order their panes were first seen.
    tables: Vec<(u64, FxHashMap<K, A>)>,
    /// The pane last asked for and its position in `tables`.
    last: Option<(u64, usize)>,
    /// Emptied tables, kept with their capacity.
    spare: Vec<FxHashMap<K, A>>,
}

impl<K, A> Default for PaneTables<K, A> {
    fn default() -> Self {
        PaneTables {
            index: FxHashMap::default(),
            tables: Vec::new(),
            last: None,
            spare: Vec::new(),
        }
    }
}

impl<K: Hash + Eq, A> PaneTables<K, A> {
    /// The table of `pane`, created empty if the pane has none yet.
    pub(crate) fn table(&mut self, pane: u64) -> &mut FxHashMap<K, A> {
        let at = match self.last {
            Some((p, at)) if p == pane => at,
            _ => {
                let tables = &mut self.tables;
                let spare = &mut self.spare;
                let at = *self.index.entry(pane).or_insert_with(|| {
                    tables.push((pane, spare.pop().unwrap_or_default()));
                    tables.len() - 1
                });
                self.last = Some((pane, at));
                at
            }
        };
        &mut self.tables[at].1
    }

    /// Hands every entry to `f` as `(pane, key, value)`, pane by pane, and empties the tables.
    pub(crate) fn drain(&mut self, mut f: impl FnMut(u64, K, A)) {
        for (pane, mut table) in self.tables.drain(..) {
            for (k, a) in table.drain() {
                f(pane, k, a);
            }
            self.spare.push(table);
        }
        self.index.clear();
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::PaneTables;

    proptest! {
        /// Counting `(pane, key)` pairs through the tables, over several drains, gives what a
        /// plain map gives.
        #[test]
        fn pane_tables_count_like_one_map(
            rounds in prop::collection::vec(prop::collection::vec((0u64..20, 0u8..8), 0..200), 1..4)
        ) {
            let mut tables: PaneTables<u8, u64> = PaneTables::default();
            for pairs in rounds {
                let mut model: BTreeMap<(u64, u8), u64> = BTreeMap::new();
                for &(pane, k) in &pairs {
                    *tables.table(pane).entry(k).or_default() += 1;
                    *model.entry((pane, k)).or_default() += 1;
                }
                let mut got = BTreeMap::new();
                tables.drain(|pane, k, n| {
                    assert!(got.insert((pane, k), n).is_none(), "({pane}, {k}) drained twice");
                });
                prop_assert_eq!(got, model);
            }
        }
    }
}
