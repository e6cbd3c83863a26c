//! The processing-time operators: each output batch is a function of the input batches up to it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

/// Applies `f` to every batch (with its index) and sorts the result.
fn each<T, U: Ord>(input: &[Vec<T>], mut f: impl FnMut(usize, &[T]) -> Vec<U>) -> Vec<Vec<U>> {
    input
        .iter()
        .enumerate()
        .map(|(b, batch)| {
            let mut out = f(b, batch);
            out.sort();
            out
        })
        .collect()
}

/// The values of each key in one batch, in batch order.
fn group<K: Ord + Clone, V: Clone>(rows: &[(K, V)]) -> BTreeMap<K, Vec<V>> {
    let mut groups: BTreeMap<K, Vec<V>> = BTreeMap::new();
    for (k, v) in rows {
        groups.entry(k.clone()).or_default().push(v.clone());
    }
    groups
}

pub fn map<T: Clone, U: Ord>(input: &[Vec<T>], f: impl Fn(T) -> U) -> Vec<Vec<U>> {
    each(input, |_, batch| batch.iter().cloned().map(&f).collect())
}

pub fn flat_map<T: Clone, U: Ord, I: IntoIterator<Item = U>>(
    input: &[Vec<T>],
    f: impl Fn(T) -> I,
) -> Vec<Vec<U>> {
    each(input, |_, batch| {
        batch.iter().cloned().flat_map(&f).collect()
    })
}

pub fn filter<T: Clone + Ord>(input: &[Vec<T>], pred: impl Fn(&T) -> bool) -> Vec<Vec<T>> {
    each(input, |_, batch| {
        batch.iter().filter(|x| pred(x)).cloned().collect()
    })
}

pub fn map_values<K: Clone + Ord, V: Clone, U: Ord>(
    input: &[Vec<(K, V)>],
    f: impl Fn(V) -> U,
) -> Vec<Vec<(K, U)>> {
    each(input, |_, batch| {
        batch
            .iter()
            .map(|(k, v)| (k.clone(), f(v.clone())))
            .collect()
    })
}

/// Batch `b` holds batch `b` of both inputs (which have the same number of batches).
pub fn union<T: Clone + Ord>(a: &[Vec<T>], b: &[Vec<T>]) -> Vec<Vec<T>> {
    each(a, |i, batch| batch.iter().chain(&b[i]).cloned().collect())
}

/// One record per batch, also for an empty batch.
pub fn count<T>(input: &[Vec<T>]) -> Vec<Vec<u64>> {
    each(input, |_, batch| vec![batch.len() as u64])
}

pub fn count_by_value<T: Clone + Ord>(input: &[Vec<T>]) -> Vec<Vec<(T, u64)>> {
    each(input, |_, batch| {
        let mut counts: BTreeMap<T, u64> = BTreeMap::new();
        for x in batch {
            *counts.entry(x.clone()).or_default() += 1;
        }
        counts.into_iter().collect()
    })
}

/// One record per non-empty batch.
pub fn reduce<T: Clone + Ord>(input: &[Vec<T>], f: impl Fn(T, T) -> T) -> Vec<Vec<T>> {
    each(input, |_, batch| {
        batch.iter().cloned().reduce(&f).into_iter().collect()
    })
}

pub fn reduce_by_key<K: Clone + Ord, V: Clone + Ord>(
    input: &[Vec<(K, V)>],
    f: impl Fn(V, V) -> V,
) -> Vec<Vec<(K, V)>> {
    each(input, |_, batch| reduce_groups(group(batch), &f))
}

fn reduce_groups<K, V>(groups: BTreeMap<K, Vec<V>>, f: impl Fn(V, V) -> V) -> Vec<(K, V)> {
    groups
        .into_iter()
        .filter_map(|(k, vs)| Some((k, vs.into_iter().reduce(&f)?)))
        .collect()
}

/// Each key's values, sorted (the engine does not promise their order).
pub fn group_by_key<K: Clone + Ord, V: Clone + Ord>(
    input: &[Vec<(K, V)>],
) -> Vec<Vec<(K, Vec<V>)>> {
    each(input, |_, batch| {
        group(batch)
            .into_iter()
            .map(|(k, mut vs)| {
                vs.sort();
                (k, vs)
            })
            .collect()
    })
}

/// Each key of either batch with both sides' values, each side sorted.
fn cogroup_batch<K: Clone + Ord, V: Clone + Ord, W: Clone + Ord>(
    left: &[(K, V)],
    right: &[(K, W)],
) -> BTreeMap<K, (Vec<V>, Vec<W>)> {
    let mut groups: BTreeMap<K, (Vec<V>, Vec<W>)> = BTreeMap::new();
    for (k, v) in left {
        groups.entry(k.clone()).or_default().0.push(v.clone());
    }
    for (k, w) in right {
        groups.entry(k.clone()).or_default().1.push(w.clone());
    }
    for (vs, ws) in groups.values_mut() {
        vs.sort();
        ws.sort();
    }
    groups
}

pub fn cogroup<K: Clone + Ord, V: Clone + Ord, W: Clone + Ord>(
    left: &[Vec<(K, V)>],
    right: &[Vec<(K, W)>],
) -> Vec<Vec<(K, (Vec<V>, Vec<W>))>> {
    each(left, |b, batch| {
        cogroup_batch(batch, &right[b]).into_iter().collect()
    })
}

/// The cross product of `xs` and `ys`, with `None` standing in for an empty side where
/// `pad_x` / `pad_y` allow it.
fn pairs<X: Clone, Y: Clone>(
    xs: &[X],
    ys: &[Y],
    pad_x: bool,
    pad_y: bool,
) -> Vec<(Option<X>, Option<Y>)> {
    let xs: Vec<Option<X>> = if xs.is_empty() && pad_x {
        vec![None]
    } else {
        xs.iter().cloned().map(Some).collect()
    };
    let ys: Vec<Option<Y>> = if ys.is_empty() && pad_y {
        vec![None]
    } else {
        ys.iter().cloned().map(Some).collect()
    };
    xs.iter()
        .flat_map(|x| ys.iter().map(move |y| (x.clone(), y.clone())))
        .collect()
}

fn join_with<K: Clone + Ord, V: Clone + Ord, W: Clone + Ord, O: Ord>(
    left: &[Vec<(K, V)>],
    right: &[Vec<(K, W)>],
    pad_left: bool,
    pad_right: bool,
    out: impl Fn(Option<V>, Option<W>) -> O,
) -> Vec<Vec<(K, O)>> {
    each(left, |b, batch| {
        let mut rows = Vec::new();
        for (k, (vs, ws)) in cogroup_batch(batch, &right[b]) {
            for (v, w) in pairs(&vs, &ws, pad_left, pad_right) {
                rows.push((k.clone(), out(v, w)));
            }
        }
        rows
    })
}

pub fn join<K: Clone + Ord, V: Clone + Ord, W: Clone + Ord>(
    left: &[Vec<(K, V)>],
    right: &[Vec<(K, W)>],
) -> Vec<Vec<(K, (V, W))>> {
    let both = |v: Option<V>, w: Option<W>| (v.expect("inner"), w.expect("inner"));
    join_with(left, right, false, false, both)
}

pub fn left_outer_join<K: Clone + Ord, V: Clone + Ord, W: Clone + Ord>(
    left: &[Vec<(K, V)>],
    right: &[Vec<(K, W)>],
) -> Vec<Vec<(K, (V, Option<W>))>> {
    let out = |v: Option<V>, w: Option<W>| (v.expect("left side"), w);
    join_with(left, right, false, true, out)
}

pub fn right_outer_join<K: Clone + Ord, V: Clone + Ord, W: Clone + Ord>(
    left: &[Vec<(K, V)>],
    right: &[Vec<(K, W)>],
) -> Vec<Vec<(K, (Option<V>, W))>> {
    let out = |v: Option<V>, w: Option<W>| (v, w.expect("right side"));
    join_with(left, right, true, false, out)
}

pub fn full_outer_join<K: Clone + Ord, V: Clone + Ord, W: Clone + Ord>(
    left: &[Vec<(K, V)>],
    right: &[Vec<(K, W)>],
) -> Vec<Vec<(K, (Option<V>, Option<W>))>> {
    join_with(left, right, true, true, |v, w| (v, w))
}

/// `f` sees every batch whole, also the empty ones.
pub fn transform<T: Clone, U: Ord>(
    input: &[Vec<T>],
    f: impl Fn(u64, Vec<T>) -> Vec<U>,
) -> Vec<Vec<U>> {
    each(input, |b, batch| f(b as u64, batch.to_vec()))
}

/// `table` has unique keys.
pub fn join_static<K: Clone + Ord, V: Clone + Ord, W: Clone + Ord>(
    input: &[Vec<(K, V)>],
    table: &[(K, W)],
) -> Vec<Vec<(K, (V, Option<W>))>> {
    let table: BTreeMap<K, W> = table.iter().cloned().collect();
    each(input, |_, batch| {
        batch
            .iter()
            .map(|(k, v)| (k.clone(), (v.clone(), table.get(k).cloned())))
            .collect()
    })
}

/// The batches a DStream window of `len` batches sliding every `slide` batches covers when it is
/// emitted at batch `b`, or `None` when no window is emitted at `b`.
pub fn window_range(b: usize, len: usize, slide: usize) -> Option<Range<usize>> {
    (b + 1)
        .is_multiple_of(slide)
        .then(|| (b + 1).saturating_sub(len)..b + 1)
}

/// For every batch: the records of the window emitted there, or `None`.
fn windows<T: Clone>(input: &[Vec<T>], len: usize, slide: usize) -> Vec<Option<Vec<T>>> {
    (0..input.len())
        .map(|b| window_range(b, len, slide).map(|r| input[r].concat()))
        .collect()
}

pub fn window<T: Clone + Ord>(input: &[Vec<T>], len: usize, slide: usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = windows(input, len, slide)
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect();
    out.iter_mut().for_each(|b| b.sort());
    out
}

/// At every window: how many records it holds (also 0).
pub fn count_by_window<T: Clone>(input: &[Vec<T>], len: usize, slide: usize) -> Vec<Vec<u64>> {
    windows(input, len, slide)
        .into_iter()
        .map(|w| w.map(|rows| vec![rows.len() as u64]).unwrap_or_default())
        .collect()
}

/// At every non-empty window: its records combined.
pub fn reduce_by_window<T: Clone + Ord>(
    input: &[Vec<T>],
    f: impl Fn(T, T) -> T,
    len: usize,
    slide: usize,
) -> Vec<Vec<T>> {
    windows(input, len, slide)
        .into_iter()
        .map(|w| {
            w.and_then(|rows| rows.into_iter().reduce(&f))
                .into_iter()
                .collect()
        })
        .collect()
}

/// At every window: each key's values in it combined.
pub fn reduce_by_key_and_window<K: Clone + Ord, V: Clone + Ord>(
    input: &[Vec<(K, V)>],
    f: impl Fn(V, V) -> V,
    len: usize,
    slide: usize,
) -> Vec<Vec<(K, V)>> {
    windows(input, len, slide)
        .into_iter()
        .map(|w| {
            w.map(|rows| reduce_groups(group(&rows), &f))
                .unwrap_or_default()
        })
        .collect()
}

/// The window value of every key that has values in the window, kept where `keep` holds. (With
/// `inv` a true inverse of `f` and `keep` false exactly for the value of no values, this is what
/// the incremental form computes.)
pub fn reduce_by_key_and_window_inv<K: Clone + Ord, V: Clone + Ord>(
    input: &[Vec<(K, V)>],
    f: impl Fn(V, V) -> V,
    keep: impl Fn(&V) -> bool,
    len: usize,
    slide: usize,
) -> Vec<Vec<(K, V)>> {
    reduce_by_key_and_window(input, f, len, slide)
        .into_iter()
        .map(|rows| rows.into_iter().filter(|(_, v)| keep(v)).collect())
        .collect()
}

/// At every window: each distinct record in it with its count.
pub fn count_by_value_and_window<T: Clone + Ord>(
    input: &[Vec<T>],
    len: usize,
    slide: usize,
) -> Vec<Vec<(T, u64)>> {
    let pairs: Vec<Vec<(T, u64)>> = input
        .iter()
        .map(|b| b.iter().map(|x| (x.clone(), 1)).collect())
        .collect();
    reduce_by_key_and_window(&pairs, |a, b| a + b, len, slide)
}

/// Every batch: `update(values, old)` for every key with a state or values (values in batch
/// order), `None` removing the key; then every key's state.
pub fn update_state_by_key<K: Clone + Ord, V: Clone, S: Clone + Ord>(
    input: &[Vec<(K, V)>],
    update: impl Fn(Vec<V>, Option<S>) -> Option<S>,
) -> Vec<Vec<(K, S)>> {
    let mut state: BTreeMap<K, S> = BTreeMap::new();
    each(input, |_, batch| {
        let mut groups = group(batch);
        let keys: BTreeSet<K> = state.keys().chain(groups.keys()).cloned().collect();
        for k in keys {
            let values = groups.remove(&k).unwrap_or_default();
            match update(values, state.remove(&k)) {
                Some(s) => state.insert(k, s),
                None => None,
            };
        }
        state.iter().map(|(k, s)| (k.clone(), s.clone())).collect()
    })
}

/// What a `map_with_state` function does with one call: `(key, value, old state, timing out)` to
/// `(new state, output)`.
pub type StateStep<K, V, S, O> = fn(&K, Option<V>, Option<S>, bool) -> (Option<S>, Option<O>);

/// Every record in batch order calls `step` with its key's state; after the batch's records, every
/// key whose last record is `timeout` batches old gets a last call with no value (in key order)
/// and loses its state.
pub fn map_with_state<K: Clone + Ord, V: Clone, S, O: Ord>(
    input: &[Vec<(K, V)>],
    timeout: Option<usize>,
    step: StateStep<K, V, S, O>,
) -> Vec<Vec<O>> {
    let mut state: BTreeMap<K, (S, usize)> = BTreeMap::new();
    let mut out = Vec::new();
    for (b, batch) in input.iter().enumerate() {
        let mut rows = Vec::new();
        for (k, v) in batch {
            let old = state.remove(k).map(|(s, _)| s);
            let (new, o) = step(k, Some(v.clone()), old, false);
            rows.extend(o);
            if let Some(s) = new {
                state.insert(k.clone(), (s, b));
            }
        }
        if let Some(t) = timeout {
            let due: Vec<K> = state
                .iter()
                .filter(|(_, (_, last))| last + t <= b)
                .map(|(k, _)| k.clone())
                .collect();
            for k in due {
                let old = state.remove(&k).map(|(s, _)| s);
                rows.extend(step(&k, None, old, true).1);
            }
        }
        rows.sort();
        out.push(rows);
    }
    out
}

/// The `n` best of `rows` by `by` descending, ties to the smaller record, ranked from 1.
fn ranked<T: Clone + Ord, O: Ord>(rows: &[T], n: usize, by: &impl Fn(&T) -> O) -> Vec<(u32, T)> {
    let mut rows = rows.to_vec();
    rows.sort_by(|a, b| (Reverse(by(a)), a).cmp(&(Reverse(by(b)), b)));
    rows.into_iter()
        .take(n)
        .zip(1u32..)
        .map(|(r, i)| (i, r))
        .collect()
}

pub fn top_n<T: Clone + Ord, O: Ord>(
    input: &[Vec<T>],
    n: usize,
    by: impl Fn(&T) -> O,
) -> Vec<Vec<(u32, T)>> {
    each(input, |_, batch| ranked(batch, n, &by))
}

pub fn top_n_by_key<K: Clone + Ord, V: Clone + Ord, O: Ord>(
    input: &[Vec<(K, V)>],
    n: usize,
    by: impl Fn(&V) -> O,
) -> Vec<Vec<(K, (u32, V))>> {
    each(input, |_, batch| {
        group(batch)
            .into_iter()
            .flat_map(|(k, vs)| {
                ranked(&vs, n, &by)
                    .into_iter()
                    .map(move |rv| (k.clone(), rv))
                    .collect::<Vec<_>>()
            })
            .collect()
    })
}
