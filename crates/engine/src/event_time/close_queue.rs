//! When the sessions of which keys may close: a queue of `(time, key)` ordered by time, built for
//! times that arrive roughly in order (an event's time plus the session gap).
//!
//! A binary heap of `(time, key)` costs a sift through `log n` entries scattered over memory for
//! every pop, and with tens of thousands of open sessions per worker that is a cache miss per
//! level. Here entries go into slots of `slot_ms` of time, each a vector appended to in arrival
//! order; the slots due are taken whole, each sorted on its own (a slot's entries are few), and
//! handed out in order. Memory is touched sequentially on both sides.

use std::collections::BTreeMap;

/// `(time, key)` entries handed out in `(time, key)` order once a watermark reaches their time.
pub(crate) struct CloseQueue<K> {
    slot_ms: u64,
    /// Entries by slot (`time / slot_ms`).
    slots: BTreeMap<u64, Vec<(u64, K)>>,
    /// Emptied slot vectors, kept with their capacity.
    spare: Vec<Vec<(u64, K)>>,
}

impl<K: Ord> CloseQueue<K> {
    /// A queue with slots `slot_ms` wide (at least 1 ms).
    pub(crate) fn new(slot_ms: u64) -> Self {
        CloseQueue {
            slot_ms: slot_ms.max(1),
            slots: BTreeMap::new(),
            spare: Vec::new(),
        }
    }

    /// Queues `key` at `time`.
    pub(crate) fn push(&mut self, time: u64, key: K) {
        let spare = &mut self.spare;
        self.slots
            .entry(time / self.slot_ms)
            .or_insert_with(|| spare.pop().unwrap_or_default())
            .push((time, key));
    }

    /// Takes every entry whose time is at most `now` into `due`, in `(time, key)` order
    /// (`due` is cleared first).
    pub(crate) fn take_due(&mut self, now: u64, due: &mut Vec<(u64, K)>) {
        due.clear();
        while let Some(mut slot) = self.slots.first_entry() {
            // The slot holds times from `start` up to `last` (the last slot may end short of its
            // width, at `u64::MAX`).
            let start = slot.key() * self.slot_ms;
            let last = start.saturating_add(self.slot_ms - 1);
            if start > now {
                break;
            }
            // Slots hold disjoint times and are taken in order: sorting each one's entries as they
            // are taken leaves `due` sorted, for a sort of a slot's few entries at a time instead
            // of one of the whole batch (whose arrivals, interleaved from several partitions and
            // re-filed keys, form runs too short to merge cheaply).
            let from = due.len();
            let entries = slot.get_mut();
            if last > now {
                // The slot `now` falls in: take what is due, keep the rest.
                let mut i = 0;
                while i < entries.len() {
                    if entries.get(i).is_some_and(|e| e.0 <= now) {
                        due.push(entries.swap_remove(i));
                    } else {
                        i += 1;
                    }
                }
                if entries.is_empty() {
                    self.spare.push(slot.remove());
                }
                sort_from(due, from);
                break;
            }
            let mut entries = slot.remove();
            due.append(&mut entries);
            self.spare.push(entries);
            sort_from(due, from);
        }
    }

    /// How many entries are queued.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.values().map(Vec::len).sum()
    }

    /// Room for entries this queue holds (for the state size).
    pub(crate) fn capacity(&self) -> usize {
        self.slots
            .values()
            .chain(&self.spare)
            .map(Vec::capacity)
            .sum()
    }
}

/// Sorts `due` from `from` on (equal entries are interchangeable, so the unstable sort will do).
fn sort_from<K: Ord>(due: &mut [(u64, K)], from: usize) {
    if let Some(taken) = due.get_mut(from..) {
        taken.sort_unstable();
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    use proptest::prelude::*;

    use super::CloseQueue;

    proptest! {
        /// Pushes and takes in any interleaving hand out what a binary heap (the model) pops,
        /// in the same order, for slots narrower and wider than the times' spread.
        /// Times and watermarks near `u64::MAX` too, where the last slot is cut short.
        #[test]
        fn hands_out_what_a_heap_pops(
            slot_ms in prop_oneof![1u64..50, Just(1000)],
            near_max in any::<bool>(),
            rounds in prop::collection::vec(
                (prop::collection::vec((0u64..200, 0u8..5), 0..40), 0u64..220), 1..8,
            ),
        ) {
            // Near the end, the largest times and watermarks saturate at `u64::MAX`.
            let base = if near_max { u64::MAX - 190 } else { 0 };
            let rounds: Vec<(Vec<(u64, u8)>, u64)> = rounds
                .into_iter()
                .map(|(pushes, now)| {
                    let pushes = pushes.into_iter().map(|(t, k)| (base.saturating_add(t), k));
                    (pushes.collect(), base.saturating_add(now))
                })
                .collect();
            let mut queue = CloseQueue::new(slot_ms);
            let mut heap = BinaryHeap::new();
            let mut due = Vec::new();
            for (pushes, now) in rounds {
                for (time, key) in pushes {
                    queue.push(time, key);
                    heap.push(Reverse((time, key)));
                }
                queue.take_due(now, &mut due);
                let mut model = Vec::new();
                while heap.peek().is_some_and(|Reverse((t, _))| *t <= now) {
                    if let Some(Reverse(e)) = heap.pop() {
                        model.push(e);
                    }
                }
                prop_assert_eq!(&due, &model);
                prop_assert_eq!(queue.len(), heap.len());
            }
        }
    }
}
