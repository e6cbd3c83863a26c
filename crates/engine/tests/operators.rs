//! Processing-time operators: the engine with 1, 2 and 4 workers against the reference model,
//! over random multi-partition streams whose keys collide.

mod common;
mod model;

use std::sync::Arc;
use std::time::Duration;

use clickpulse_engine::testing::collect;
use std::sync::Mutex;

use clickpulse_engine::testing::TEST_BATCH_INTERVAL;
use clickpulse_engine::{DStream, QueueSource, RunMode, State, StreamingContext};
use common::{Rec, WORKERS, batches, collect_partitioned, engine_matches, partitions};
use model::dstream as m;
use model::merge_partitions;
use proptest::prelude::*;

fn secs(n: usize) -> Duration {
    Duration::from_secs(n as u64)
}

fn add(a: i32, b: i32) -> i32 {
    a + b
}

fn sub(a: i32, b: i32) -> i32 {
    a - b
}

/// Associative and commutative over whole records.
fn max_key_sum_value(a: Rec, b: Rec) -> Rec {
    (a.0.max(b.0), a.1 + b.1)
}

fn odd(r: &Rec) -> bool {
    r.1 % 2 == 1
}

fn third(r: &Rec) -> bool {
    r.1 % 3 == 0
}

fn tenfold(v: i32) -> i64 {
    i64::from(v) * 10
}

/// A running sum per key that is dropped when it hits a multiple of 7 or after two batches
/// without values. Does not depend on the order of the values.
fn running_sum(values: Vec<i32>, old: Option<(i64, u8)>) -> Option<(i64, u8)> {
    match (values.is_empty(), old) {
        (true, None) => None,
        (true, Some((sum, idle))) => (idle < 1).then_some((sum, idle + 1)),
        (false, old) => {
            let sum = old.map_or(0, |s| s.0) + values.iter().map(|&v| i64::from(v)).sum::<i64>();
            (sum % 7 != 0).then_some((sum, 0))
        }
    }
}

/// A running sum per key: emits every new sum except multiples of 5, starts over past 20, and
/// says goodbye (with its last sum) when it times out.
fn capped_sum(
    k: &char,
    v: Option<i32>,
    old: Option<i64>,
    timing_out: bool,
) -> (Option<i64>, Option<(char, i64, bool)>) {
    if timing_out {
        return (None, Some((*k, old.unwrap_or(-1), true)));
    }
    let sum = old.unwrap_or(0) + i64::from(v.unwrap_or(0));
    if sum > 20 {
        (None, Some((*k, sum, false)))
    } else if sum % 5 == 0 {
        (Some(sum), None)
    } else {
        (Some(sum), Some((*k, sum, false)))
    }
}

/// `capped_sum` driving the engine's `State`.
fn capped_sum_engine(k: &char, v: Option<i32>, st: &mut State<i64>) -> Option<(char, i64, bool)> {
    let (new, out) = capped_sum(k, v, st.get().copied(), st.is_timing_out());
    match new {
        Some(s) => st.update(s),
        None => st.remove(),
    }
    out
}

/// A whole-batch function that shows what it saw: the batch, its size and its three smallest
/// records. Nothing for an empty batch (see `transform_runs_once_per_batch` for why).
fn batch_summary(b: u64, mut rows: Vec<Rec>) -> Vec<(u64, usize, Vec<Rec>)> {
    if rows.is_empty() {
        return Vec::new();
    }
    rows.sort();
    let len = rows.len();
    rows.truncate(3);
    vec![(b, len, rows)]
}

/// The two sides the join tests join: the odd records, and the multiples of 3 with their values
/// scaled (so the sides overlap on some records only and their value types differ).
fn model_sides(parts: &[Vec<Vec<Rec>>]) -> (Vec<Vec<Rec>>, Vec<Vec<(char, i64)>>) {
    let input = merge_partitions(parts);
    let right = m::map_values(&m::filter(&input, third), tenfold);
    (m::filter(&input, odd), right)
}

/// The engine's right side of the join tests (see [`model_sides`]).
fn right_side<'s>(s: &DStream<'s, Rec>) -> DStream<'s, (char, i64)> {
    s.filter(third).map_values(tenfold)
}

/// DStream window lengths and slides in batches (= seconds).
fn window_shape() -> impl Strategy<Value = (usize, usize)> {
    (1..=4usize, 1..=3usize)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn map_matches_model(parts in partitions()) {
        let expected = m::map(&merge_partitions(&parts), |(k, v)| (v, k));
        engine_matches(&parts, &expected, |s| s.map(|(k, v): Rec| (v, k)))?;
    }

    #[test]
    fn flat_map_matches_model(parts in partitions()) {
        let f = |(k, v): Rec| (0..v % 4).map(move |i| (k, i));
        let expected = m::flat_map(&merge_partitions(&parts), f);
        engine_matches(&parts, &expected, move |s| s.flat_map(f))?;
    }

    #[test]
    fn filter_matches_model(parts in partitions()) {
        let expected = m::filter(&merge_partitions(&parts), odd);
        engine_matches(&parts, &expected, |s| s.filter(odd))?;
    }

    #[test]
    fn map_partitions_sees_every_record_once(parts in partitions()) {
        // Each worker passes its share on and adds its size: the shares together are the batch,
        // and the sizes add up to the batch's size.
        let input = merge_partitions(&parts);
        let expected = m::map(&input, |r| r);
        let sizes: Vec<i32> = input.iter().map(|b| b.len() as i32).collect();
        for workers in WORKERS {
            let out = collect_partitioned(workers, parts.clone(), |s| {
                s.map_partitions(|_b, rows: Vec<Rec>| {
                    let size = ('#', rows.len() as i32);
                    rows.into_iter().chain(std::iter::once(size)).collect()
                })
            })
            .map_err(|e| TestCaseError::fail(format!("{workers} workers: {e}")))?;
            let records: Vec<Vec<Rec>> = out
                .iter()
                .map(|b| b.iter().filter(|r| r.0 != '#').copied().collect())
                .collect();
            let got_sizes: Vec<i32> = out
                .iter()
                .map(|b| b.iter().filter(|r| r.0 == '#').map(|r| r.1).sum())
                .collect();
            prop_assert_eq!(&records, &expected, "{} workers", workers);
            prop_assert_eq!(&got_sizes, &sizes, "{} workers", workers);
        }
    }

    #[test]
    fn fan_outs_match_the_model_of_each_stream(parts in partitions()) {
        // Each output gets something else: odd records, every record tenfold, records divisible
        // by three twice, and the keys of even records. The outputs are tagged and unioned.
        let input = merge_partitions(&parts);
        let tag = |t: u8| move |(k, v): (char, i64)| (t, k, v);
        let odd_model = m::map(&m::filter(&input, odd), |(k, v)| (0, k, i64::from(v)));
        let tenfold_model = m::map(&m::map_values(&input, tenfold), tag(1));
        let thirds_model = m::flat_map(&input, |(k, v)| {
            let twice = (v % 3 == 0).then_some((2, k, i64::from(v)));
            twice.into_iter().chain(twice)
        });
        let even_model = m::flat_map(&input, |(k, v)| (v % 2 == 0).then_some((3, k, 0)));
        let two = m::union(&odd_model, &tenfold_model);
        engine_matches(&parts, &two, move |s| {
            let (odds, tens) = s.fan_out2(|r: Rec, a: &mut Vec<Rec>, b: &mut Vec<(char, i64)>| {
                if odd(&r) {
                    a.push(r);
                }
                b.push((r.0, tenfold(r.1)));
            });
            odds.map(|(k, v)| (0, k, i64::from(v))).union(&tens.map(tag(1)))
        })?;
        let three = m::union(&two, &thirds_model);
        engine_matches(&parts, &three, move |s| {
            let (odds, tens, thirds) = s.fan_out3(
                |r: Rec, a: &mut Vec<Rec>, b: &mut Vec<(char, i64)>, c: &mut Vec<(char, u32)>| {
                    if odd(&r) {
                        a.push(r);
                    }
                    b.push((r.0, tenfold(r.1)));
                    if third(&r) {
                        let v = u32::try_from(r.1).expect("values are small and positive");
                        c.extend([(r.0, v), (r.0, v)]);
                    }
                },
            );
            odds.map(|(k, v)| (0, k, i64::from(v)))
                .union(&tens.map(tag(1)))
                .union(&thirds.map(|(k, v)| (2, k, i64::from(v))))
        })?;
        let four = m::union(&three, &even_model);
        engine_matches(&parts, &four, move |s| {
            let (odds, tens, thirds, evens) = s.fan_out4(
                |r: Rec,
                 a: &mut Vec<Rec>,
                 b: &mut Vec<(char, i64)>,
                 c: &mut Vec<Rec>,
                 d: &mut Vec<char>| {
                    if odd(&r) {
                        a.push(r);
                    }
                    b.push((r.0, tenfold(r.1)));
                    if third(&r) {
                        c.extend([r, r]);
                    }
                    if r.1 % 2 == 0 {
                        d.push(r.0);
                    }
                },
            );
            odds.map(|(k, v)| (0, k, i64::from(v)))
                .union(&tens.map(tag(1)))
                .union(&thirds.map(|(k, v)| (2, k, i64::from(v))))
                .union(&evens.map(|k| (3, k, 0)))
        })?;
    }

    #[test]
    fn foreach_batch_on_hands_every_batch_over_once_on_the_chosen_worker(
        parts in partitions(),
        target in 0usize..5,
    ) {
        let expected: Vec<Vec<Rec>> = merge_partitions(&parts)
            .into_iter()
            .map(|mut rows| {
                rows.sort();
                rows
            })
            .collect();
        for workers in WORKERS {
            let source = QueueSource::partitioned("test", parts.clone());
            let seen: Arc<Mutex<Vec<(u64, Vec<Rec>, Option<String>)>>> = Arc::default();
            let sink = Arc::clone(&seen);
            StreamingContext::new(TEST_BATCH_INTERVAL)
                .and_then(|c| c.workers(workers))
                .map(|c| c.mode(RunMode::UntilEnd))
                .and_then(|c| {
                    c.run(move |job| {
                        let sink = Arc::clone(&sink);
                        job.source(&source)?.foreach_batch_on(target, move |info, mut rows| {
                            rows.sort();
                            let thread = std::thread::current().name().map(String::from);
                            sink.lock().expect("not poisoned").push((info.batch, rows, thread));
                        });
                        Ok(())
                    })
                })
                .map_err(|e| TestCaseError::fail(format!("{workers} workers: {e}")))?;
            let seen = std::mem::take(&mut *seen.lock().expect("not poisoned"));
            let worker = format!("timely:work-{}", target % workers);
            for (b, (batch, _, thread)) in seen.iter().enumerate() {
                prop_assert_eq!(*batch, b as u64, "{} workers: batches in order, once", workers);
                prop_assert_eq!(thread.as_deref(), Some(worker.as_str()), "{} workers", workers);
            }
            let got: Vec<Vec<Rec>> = seen.into_iter().map(|(_, rows, _)| rows).collect();
            prop_assert_eq!(&got[..expected.len()], &expected[..], "{} workers", workers);
            prop_assert!(got[expected.len()..].iter().all(Vec::is_empty), "{} workers", workers);
        }
    }

    #[test]
    fn map_values_matches_model(parts in partitions()) {
        let expected = m::map_values(&merge_partitions(&parts), tenfold);
        engine_matches(&parts, &expected, |s| s.map_values(tenfold))?;
    }

    #[test]
    fn repartition_keeps_every_record(parts in partitions()) {
        let expected = m::map(&merge_partitions(&parts), |r| r);
        engine_matches(&parts, &expected, |s| s.repartition())?;
    }

    #[test]
    fn union_matches_model(parts in partitions()) {
        let input = merge_partitions(&parts);
        let shifted = m::map_values(&input, |v| v + 100);
        let expected = m::union(&input, &shifted);
        engine_matches(&parts, &expected, |s| s.union(&s.map_values(|v| v + 100)))?;
    }

    #[test]
    fn count_matches_model(parts in partitions()) {
        let expected = m::count(&merge_partitions(&parts));
        engine_matches(&parts, &expected, |s| s.count())?;
    }

    #[test]
    fn count_by_value_matches_model(parts in partitions()) {
        let expected = m::count_by_value(&merge_partitions(&parts));
        engine_matches(&parts, &expected, |s| s.count_by_value())?;
    }

    #[test]
    fn reduce_matches_model(parts in partitions()) {
        let expected = m::reduce(&merge_partitions(&parts), max_key_sum_value);
        engine_matches(&parts, &expected, |s| s.reduce(max_key_sum_value))?;
    }

    #[test]
    fn reduce_by_key_matches_model(parts in partitions()) {
        let expected = m::reduce_by_key(&merge_partitions(&parts), add);
        engine_matches(&parts, &expected, |s| s.reduce_by_key(add))?;
    }

    #[test]
    fn group_by_key_matches_model(parts in partitions()) {
        let expected = m::group_by_key(&merge_partitions(&parts));
        engine_matches(&parts, &expected, |s| {
            s.group_by_key().map(|(k, mut vs)| {
                vs.sort();
                (k, vs)
            })
        })?;
    }

    #[test]
    fn join_matches_model(parts in partitions()) {
        let (left, right) = model_sides(&parts);
        let expected = m::join(&left, &right);
        engine_matches(&parts, &expected, |s| s.filter(odd).join(&right_side(&s)))?;
    }

    #[test]
    fn left_outer_join_matches_model(parts in partitions()) {
        let (left, right) = model_sides(&parts);
        let expected = m::left_outer_join(&left, &right);
        engine_matches(&parts, &expected, |s| {
            s.filter(odd).left_outer_join(&right_side(&s))
        })?;
    }

    #[test]
    fn right_outer_join_matches_model(parts in partitions()) {
        let (left, right) = model_sides(&parts);
        let expected = m::right_outer_join(&left, &right);
        engine_matches(&parts, &expected, |s| {
            s.filter(odd).right_outer_join(&right_side(&s))
        })?;
    }

    #[test]
    fn full_outer_join_matches_model(parts in partitions()) {
        let (left, right) = model_sides(&parts);
        let expected = m::full_outer_join(&left, &right);
        engine_matches(&parts, &expected, |s| {
            s.filter(odd).full_outer_join(&right_side(&s))
        })?;
    }

    #[test]
    fn cogroup_matches_model(parts in partitions()) {
        let (left, right) = model_sides(&parts);
        let expected = m::cogroup(&left, &right);
        engine_matches(&parts, &expected, |s| {
            s.filter(odd)
                .cogroup(&right_side(&s))
                .map(|(k, (mut vs, mut ws))| {
                    vs.sort();
                    ws.sort();
                    (k, (vs, ws))
                })
        })?;
    }

    #[test]
    fn transform_sees_each_whole_batch(parts in partitions()) {
        let expected = m::transform(&merge_partitions(&parts), batch_summary);
        engine_matches(&parts, &expected, |s| s.transform(batch_summary))?;
    }

    #[test]
    fn join_static_matches_model(
        parts in partitions(),
        table in prop::sample::subsequence(common::KEYS.to_vec(), 0..=5)
            .prop_map(|ks| ks.into_iter().zip(100..).collect::<Vec<(char, u32)>>()),
    ) {
        let expected = m::join_static(&merge_partitions(&parts), &table);
        let table = Arc::new(table);
        engine_matches(&parts, &expected, move |s| s.join_static(&table))?;
    }

    #[test]
    fn window_matches_model(parts in partitions(), (len, slide) in window_shape()) {
        let expected = m::window(&merge_partitions(&parts), len, slide);
        engine_matches(&parts, &expected, move |s| {
            s.window(secs(len), secs(slide)).unwrap()
        })?;
    }

    #[test]
    fn count_by_window_matches_model(
        parts in partitions(),
        (len, slide) in window_shape(),
    ) {
        let expected = m::count_by_window(&merge_partitions(&parts), len, slide);
        engine_matches(&parts, &expected, move |s| {
            s.count_by_window(secs(len), secs(slide)).unwrap()
        })?;
    }

    #[test]
    fn reduce_by_window_matches_model(
        parts in partitions(),
        (len, slide) in window_shape(),
    ) {
        let input = merge_partitions(&parts);
        let expected = m::reduce_by_window(&input, max_key_sum_value, len, slide);
        engine_matches(&parts, &expected, move |s| {
            s.reduce_by_window(max_key_sum_value, secs(len), secs(slide)).unwrap()
        })?;
    }

    #[test]
    fn reduce_by_key_and_window_matches_model(
        parts in partitions(),
        (len, slide) in window_shape(),
    ) {
        let expected = m::reduce_by_key_and_window(&merge_partitions(&parts), add, len, slide);
        engine_matches(&parts, &expected, move |s| {
            s.reduce_by_key_and_window(add, secs(len), secs(slide)).unwrap()
        })?;
    }

    #[test]
    fn reduce_by_key_and_window_inv_matches_model(
        parts in partitions(),
        (len, slide) in window_shape(),
    ) {
        // Values are 1..=9, so "positive" is exactly "has values in the window".
        let positive = |v: &i32| *v > 0;
        let input = merge_partitions(&parts);
        let expected = m::reduce_by_key_and_window_inv(&input, add, positive, len, slide);
        engine_matches(&parts, &expected, move |s| {
            s.reduce_by_key_and_window_inv(add, sub, positive, secs(len), secs(slide))
                .unwrap()
        })?;
    }

    #[test]
    fn count_by_value_and_window_matches_model(
        parts in partitions(),
        (len, slide) in window_shape(),
    ) {
        let keys = m::map(&merge_partitions(&parts), |r: Rec| r.0);
        let expected = m::count_by_value_and_window(&keys, len, slide);
        engine_matches(&parts, &expected, move |s| {
            s.map(|r| r.0).count_by_value_and_window(secs(len), secs(slide)).unwrap()
        })?;
        engine_matches(&parts, &expected, move |s| {
            s.map(|r| r.0).count_by_value_and_window_plain(secs(len), secs(slide)).unwrap()
        })?;
    }

    #[test]
    fn update_state_by_key_matches_model(parts in partitions()) {
        let expected = m::update_state_by_key(&merge_partitions(&parts), running_sum);
        engine_matches(&parts, &expected, |s| s.update_state_by_key(running_sum))?;
    }

    #[test]
    fn top_n_matches_model(parts in partitions(), n in 0..=4usize) {
        let by = |r: &Rec| r.1;
        let expected = m::top_n(&merge_partitions(&parts), n, by);
        engine_matches(&parts, &expected, move |s| s.top_n(n, by))?;
    }

    #[test]
    fn top_n_by_key_matches_model(parts in partitions(), n in 0..=3usize) {
        // Values (v mod 3, v) ranked by v mod 3 alone: many ties, broken by the whole value.
        let input = m::map_values(&merge_partitions(&parts), |v| (v % 3, v));
        let by = |v: &(i32, i32)| v.0;
        let expected = m::top_n_by_key(&input, n, by);
        engine_matches(&parts, &expected, move |s| {
            s.map_values(|v| (v % 3, v)).top_n_by_key(n, by)
        })?;
    }

    /// Each worker emits its keys in order and each key's values by rank, so whoever sorts a
    /// batch's results by key and rank later finds them sorted (`collect` sorts, so this looks
    /// at each worker's records as they come).
    #[test]
    fn top_n_by_key_emits_keys_in_order_on_each_worker(parts in partitions(), n in 1..=3usize) {
        for workers in WORKERS {
            let sorted = collect_partitioned(workers, parts.clone(), move |s| {
                s.map_values(|v| (v % 3, v))
                    .top_n_by_key(n, |v: &(i32, i32)| v.0)
                    .map_partitions(|_b, records| {
                        vec![records.windows(2).all(|p| (p[0].0, p[0].1.0) < (p[1].0, p[1].1.0))]
                    })
            })
            .unwrap();
            prop_assert!(sorted.concat().into_iter().all(|s| s), "{workers} workers");
        }
    }

    /// One partition, so each key's records arrive in source order and the running sums are
    /// deterministic.
    #[test]
    fn map_with_state_matches_model(
        input in batches(),
        timeout_ms in prop::option::of(prop::sample::select(vec![1_000u64, 1_500, 2_000, 3_000])),
    ) {
        let timeout_batches = timeout_ms.map(|ms| ms.div_ceil(1_000) as usize);
        let expected = m::map_with_state(&input, timeout_batches, capped_sum);
        for workers in common::WORKERS {
            let got = collect(workers, input.clone(), move |s| {
                s.map_with_state(timeout_ms.map(Duration::from_millis), capped_sum_engine).unwrap()
            })
            .unwrap();
            prop_assert_eq!(&got, &expected, "{} workers", workers);
        }
    }
}

/// The helper `collect` over one partition gives what the strict multi-partition runner gives.
#[test]
fn collect_helper_agrees_with_the_partitioned_runner() {
    let input: Vec<Vec<Rec>> = vec![vec![('a', 1), ('b', 2), ('a', 3)], vec![], vec![('c', 4)]];
    let expected = vec![vec![('a', 4), ('b', 2)], vec![], vec![('c', 4)]];
    for workers in common::WORKERS {
        let got = collect(workers, input.clone(), |s| s.reduce_by_key(add)).unwrap();
        assert_eq!(got, expected, "{workers} workers");
        let strict =
            common::collect_partitioned(workers, vec![input.clone()], |s| s.reduce_by_key(add))
                .unwrap();
        assert_eq!(strict, expected, "{workers} workers");
    }
    assert_eq!(m::reduce_by_key(&input, add), expected);
}

/// `transform` documents that `f` sees each whole batch, gathered on worker 0, and is also called
/// for empty batches: so once per batch, whatever the number of workers.
#[test]
fn transform_runs_once_per_batch() {
    let input: Vec<Vec<i32>> = vec![vec![1, 2, 3], vec![]];
    let expected = vec![vec![(0, 3)], vec![(1, 0)]];
    assert_eq!(
        m::transform(&input, |b, rows| vec![(b, rows.len())]),
        expected
    );
    for workers in common::WORKERS {
        let got = collect(workers, input.clone(), |s| {
            s.transform(|b, rows: Vec<i32>| vec![(b, rows.len())])
        })
        .unwrap();
        assert_eq!(got, expected, "{workers} workers");
    }
}

/// `reduce_by_key_and_window_inv` documents "keys for which `keep` is false after an update are
/// dropped"; adding the entering batch is an update too. (With counts, the documented use, the
/// two readings agree; they differ once a value can fail `keep` on entry.)
#[test]
fn reduce_by_key_and_window_inv_applies_keep_after_every_update() {
    let input: Vec<Vec<Rec>> = vec![vec![('a', 0), ('b', 1)], vec![('b', -1)], vec![]];
    let positive = |v: &i32| *v > 0;
    let expected: Vec<Vec<Rec>> = vec![vec![('b', 1)], vec![], vec![]];
    assert_eq!(
        m::reduce_by_key_and_window_inv(&input, add, positive, 2, 1),
        expected
    );
    for workers in common::WORKERS {
        let got = collect(workers, input.clone(), move |s| {
            s.reduce_by_key_and_window_inv(add, sub, positive, secs(2), secs(1))
                .unwrap()
        })
        .unwrap();
        assert_eq!(got, expected, "{workers} workers");
    }
}
