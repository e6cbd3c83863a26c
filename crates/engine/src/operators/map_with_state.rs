//! `map_with_state`: a state per key, touched only by the key's own records and by its timeout.

use std::collections::BTreeMap;
use std::time::Duration;

use rustc_hash::FxHashMap;
use timely::dataflow::channels::pact::Exchange;

use crate::dstream::{DStream, Data, Key, batch_unary, route};
use crate::error::{EngineError, Result};
use crate::metrics::{StateSize, table_bytes};
use crate::time::BatchId;

/// A key's state as the mapping function sees it.
#[derive(Debug)]
pub struct State<S> {
    value: Option<S>,
    timing_out: bool,
}

impl<S> State<S> {
    /// The current state, if the key has one.
    pub fn get(&self) -> Option<&S> {
        self.value.as_ref()
    }

    /// Whether the key has a state.
    pub fn exists(&self) -> bool {
        self.value.is_some()
    }

    /// Replaces the state.
    pub fn update(&mut self, value: S) {
        self.value = Some(value);
    }

    /// Removes the key's state.
    pub fn remove(&mut self) {
        self.value = None;
    }

    /// Whether this call is the key's timeout (no value comes with it, and the state is removed
    /// after the call whatever the function does).
    pub fn is_timing_out(&self) -> bool {
        self.timing_out
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Entry<S> {
    value: S,
    last_batch: BatchId,
}

impl<'s, K: Key, V: Data> DStream<'s, (K, V)> {
    /// Calls `f(key, Some(value), state)` for every record, in arrival order per key, letting it
    /// read and change the key's state and emit at most one output. With `idle_timeout`, a key
    /// that receives no record for that long (processing time, counted in batches, so it fires
    /// when time passes even if no record ever comes) gets one last call `f(key, None, state)`
    /// with [`State::is_timing_out`] true, and its state is then removed.
    ///
    /// State size is reported to the engine's metrics under `map_with_state`.
    ///
    /// # Errors
    /// [`EngineError::InvalidConfig`] (`idle_timeout`) when the timeout is under one batch interval.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use clickpulse_engine::testing::collect;
    /// // Running sums that say goodbye after 2 idle batches (the helper's interval is 1 s).
    /// let out = collect(1, vec![vec![('a', 1)], vec![('a', 2)], vec![], vec![], vec![]], |s| {
    ///     s.map_with_state(Some(Duration::from_secs(2)), |k: &char, v: Option<i32>, st| {
    ///         if st.is_timing_out() {
    ///             return Some(format!("{k} idle at {}", st.get().unwrap()));
    ///         }
    ///         let sum = st.get().copied().unwrap_or(0) + v.unwrap_or(0);
    ///         st.update(sum);
    ///         Some(format!("{k}={sum}"))
    ///     })
    ///     .unwrap()
    /// })
    /// .unwrap();
    /// assert_eq!(out[0], vec!["a=1".to_string()]);
    /// assert_eq!(out[1], vec!["a=3".to_string()]);
    /// assert_eq!(out[3], vec!["a idle at 3".to_string()]);
    /// ```
    pub fn map_with_state<S: Data, O: Data>(
        &self,
        idle_timeout: Option<Duration>,
        f: impl Fn(&K, Option<V>, &mut State<S>) -> Option<O> + 'static,
    ) -> Result<DStream<'s, O>> {
        let interval = self.clock().interval_ms;
        let timeout_batches = match idle_timeout {
            None => None,
            Some(t) => {
                let ms = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
                if ms < interval {
                    return Err(EngineError::InvalidConfig {
                        key: "idle_timeout",
                        reason: format!("{t:?} is shorter than the batch interval {interval} ms"),
                    });
                }
                Some(ms.div_ceil(interval))
            }
        };
        let report = self.shared.state_report("map_with_state");
        let ckpt = self.shared.stateful("map_with_state");
        let groups = self.shared.key_groups();
        let mut state: FxHashMap<K, Entry<S>> = FxHashMap::default();
        // Deadline batch -> keys that may time out then (checked against last_batch when popped).
        let mut deadlines: BTreeMap<BatchId, Vec<K>> = BTreeMap::new();
        if let Some((_, entries)) = ckpt.restore::<(), (K, Entry<S>)>()? {
            for (k, e) in entries {
                if let Some(t) = timeout_batches {
                    // Re-filed when popped early, as a key whose clicks moved its deadline.
                    deadlines
                        .entry(e.last_batch + t)
                        .or_default()
                        .push(k.clone());
                }
                state.insert(k, e);
            }
        }
        let stream = batch_unary(
            &self.stream,
            Exchange::new(move |kv: &(K, V)| route(&kv.0) % groups),
            "MapWithState",
            move |b, data, out| {
                for (k, v) in data {
                    let old = state.remove(&k);
                    let is_new = old.is_none();
                    let mut st = State {
                        value: old.map(|e| e.value),
                        timing_out: false,
                    };
                    out.extend(f(&k, Some(v), &mut st));
                    if let Some(value) = st.value {
                        if let (true, Some(t)) = (is_new, timeout_batches) {
                            deadlines.entry(b + t).or_default().push(k.clone());
                        }
                        state.insert(
                            k,
                            Entry {
                                value,
                                last_batch: b,
                            },
                        );
                    }
                }
                if let Some(t) = timeout_batches {
                    expire(b, t, &mut state, &mut deadlines, &f, out);
                }
                let size = StateSize {
                    keys: state.len() as u64,
                    bytes: table_bytes::<K, Entry<S>>(state.capacity()),
                };
                report.set(size);
                if ckpt.due(b) {
                    ckpt.save(b, &(), state.iter().map(|(k, e)| (route(k), (k, e))));
                }
            },
        );
        Ok(self.derive(stream))
    }
}

/// Times out the keys whose deadline has come at batch `b`; re-files keys touched since.
fn expire<K: Key, V, S, O>(
    b: BatchId,
    timeout: u64,
    state: &mut FxHashMap<K, Entry<S>>,
    deadlines: &mut BTreeMap<BatchId, Vec<K>>,
    f: &impl Fn(&K, Option<V>, &mut State<S>) -> Option<O>,
    out: &mut Vec<O>,
) {
    while let Some(entry) = deadlines.first_entry() {
        if *entry.key() > b {
            break;
        }
        for k in entry.remove() {
            let Some(e) = state.get(&k) else { continue };
            let due = e.last_batch + timeout;
            if due > b {
                deadlines.entry(due).or_default().push(k);
                continue;
            }
            let Some(e) = state.remove(&k) else { continue };
            let mut st = State {
                value: Some(e.value),
                timing_out: true,
            };
            out.extend(f(&k, None, &mut st));
        }
    }
}
