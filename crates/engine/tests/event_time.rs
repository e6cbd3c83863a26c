//! Event-time operators — windows, sessions, distinct counts and their late side streams — with
//! 1, 2 and 4 workers against the reference model, over random multi-partition streams with
//! out-of-order and late events and allowed lateness; and hand-computed cases that pin the
//! model's watermark rules down.

mod common;
mod model;

use std::time::Duration;

use clickpulse_engine::event_time::{Aggregator, Count};
use clickpulse_engine::testing::collect_event_time;
use clickpulse_engine::{DStream, Session, Window, Windows};
use common::{Ev, Out, event_partitions, event_time_matches, lateness};
use model::event_time::{self as m, Emitted, WindowSpec};
use proptest::prelude::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn ts(e: &Ev) -> u64 {
    e.1
}

fn keyed(e: Ev) -> (char, Ev) {
    (e.0, e)
}

/// Every `(event time, value)` of a window or session, sorted: the strictest accumulator, since
/// it shows exactly which events were counted.
#[derive(Debug, Clone, Copy)]
struct Members;

impl Aggregator<Ev> for Members {
    type Acc = Vec<(u64, u32)>;
    fn init(&self) -> Self::Acc {
        Vec::new()
    }
    fn add(&self, acc: &mut Self::Acc, e: Ev) {
        acc.push((e.1, e.2));
        acc.sort_unstable();
    }
    fn merge(&self, acc: &mut Self::Acc, other: Self::Acc) {
        acc.extend(other);
        acc.sort_unstable();
    }
}

fn members(events: Vec<Ev>) -> Vec<(u64, u32)> {
    let mut all: Vec<(u64, u32)> = events.iter().map(|e| (e.1, e.2)).collect();
    all.sort_unstable();
    all
}

/// Associative and commutative over whole events.
fn combine(a: Ev, b: Ev) -> Ev {
    (a.0.max(b.0), a.1.max(b.1), a.2 + b.2)
}

/// Results and late events of the model, as the engine's `Out` stream carries them.
fn merged<R: Ord + Clone, L: Ord + Clone>(e: &Emitted<R, L>) -> Vec<Vec<Out<R, L>>> {
    e.output
        .iter()
        .zip(&e.late)
        .map(|(rs, ls)| {
            let mut all: Vec<Out<R, L>> = rs.iter().cloned().map(Out::Result).collect();
            all.extend(ls.iter().cloned().map(Out::Late));
            all.sort();
            all
        })
        .collect()
}

/// Tumbling windows of 1–3 s, or sliding windows of 2–4 slides of 0.5 or 1 s.
fn window_shapes() -> impl Strategy<Value = (Windows, WindowSpec)> {
    prop_oneof![
        prop::sample::select(vec![1_000u64, 2_000, 3_000]).prop_map(|size| {
            let spec = WindowSpec {
                size_ms: size,
                slide_ms: size,
            };
            (
                Windows::tumbling(ms(size)).expect("a valid window shape"),
                spec,
            )
        }),
        (prop::sample::select(vec![500u64, 1_000]), 2..=4u64).prop_map(|(slide, n)| {
            let spec = WindowSpec {
                size_ms: slide * n,
                slide_ms: slide,
            };
            (
                Windows::sliding(ms(slide * n), ms(slide)).expect("a valid window shape"),
                spec,
            )
        }),
    ]
}

/// The model's timeline of the keyed events `s.map(keyed)` gives the operators.
fn keyed_timeline(parts: &[Vec<Vec<Ev>>], lateness: u64) -> m::Timeline<(char, Ev)> {
    let keyed_parts: Vec<Vec<Vec<(char, Ev)>>> = parts
        .iter()
        .map(|p| {
            p.iter()
                .map(|b| b.iter().copied().map(keyed).collect())
                .collect()
        })
        .collect();
    m::timeline(&keyed_parts, |(_, e)| e.1, lateness)
}

/// Sliding windows of 2 s every 1 s with [`Members`], results and late events together.
fn sliding_members(
    s: DStream<'_, Ev>,
) -> DStream<'_, Out<(char, Window, Vec<(u64, u32)>), (char, Ev)>> {
    let windows = Windows::sliding(ms(2_000), ms(1_000)).expect("a valid window shape");
    let o = s
        .map(keyed)
        .aggregate_by_key_in_window(windows, ts, Members)
        .expect("a valid operator configuration");
    o.output.map(Out::Result).union(&o.late.map(Out::Late))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn count_by_key_in_window_matches_model(
        parts in event_partitions(),
        lateness in lateness(),
        (windows, spec) in window_shapes(),
    ) {
        let tl = keyed_timeline(&parts, lateness);
        let expected = merged(&m::aggregate_by_key_in_window(&tl, spec, ts, |vs| vs.len() as u64));
        event_time_matches(&parts, lateness, &expected, move |s| {
            let o = s.map(keyed).count_by_key_in_window(windows, ts).unwrap();
            o.output.map(Out::Result).union(&o.late.map(Out::Late))
        })?;
    }

    #[test]
    fn aggregate_by_key_in_window_matches_model(
        parts in event_partitions(),
        lateness in lateness(),
        (windows, spec) in window_shapes(),
    ) {
        let tl = keyed_timeline(&parts, lateness);
        let expected = merged(&m::aggregate_by_key_in_window(&tl, spec, ts, members));
        event_time_matches(&parts, lateness, &expected, move |s| {
            let o = s.map(keyed).aggregate_by_key_in_window(windows, ts, Members).unwrap();
            o.output.map(Out::Result).union(&o.late.map(Out::Late))
        })?;
    }

    /// Each worker emits its windows in order of their ends and a window's keys in order (what
    /// the harness compares is sorted, so this looks at each worker's records as they come).
    #[test]
    fn window_results_come_in_window_and_key_order_on_each_worker(
        parts in event_partitions(),
        (windows, _spec) in window_shapes(),
    ) {
        for workers in [1, 2, 4] {
            let sorted = collect_event_time(workers, parts.clone(), ts, move |s| {
                let o = s.map(keyed).count_by_key_in_window(windows, ts).unwrap();
                o.output.map_partitions(|_b, rows| {
                    let order = |r: &(char, Window, u64)| (r.1.end_ms, r.0);
                    vec![rows.windows(2).all(|p| order(&p[0]) < order(&p[1]))]
                })
            });
            prop_assert!(sorted.unwrap().concat().into_iter().all(|s| s), "{workers} workers");
        }
    }

    #[test]
    fn reduce_by_key_in_window_matches_model(
        parts in event_partitions(),
        lateness in lateness(),
        (windows, spec) in window_shapes(),
    ) {
        let tl = keyed_timeline(&parts, lateness);
        let reduced = |vs: Vec<Ev>| vs.into_iter().reduce(combine).expect("a window has events");
        let expected = merged(&m::aggregate_by_key_in_window(&tl, spec, ts, reduced));
        event_time_matches(&parts, lateness, &expected, move |s| {
            let o = s.map(keyed).reduce_by_key_in_window(windows, ts, combine).unwrap();
            o.output.map(Out::Result).union(&o.late.map(Out::Late))
        })?;
    }

    #[test]
    fn distinct_count_in_window_matches_model(
        parts in event_partitions(),
        lateness in lateness(),
        (windows, spec) in window_shapes(),
    ) {
        let tl = keyed_timeline(&parts, lateness);
        let expected = merged(&m::distinct_count_in_window(&tl, spec, ts));
        event_time_matches(&parts, lateness, &expected, move |s| {
            let o = s.map(keyed).distinct_count_in_window(windows, ts).unwrap();
            o.output.map(Out::Result).union(&o.late.map(Out::Late))
        })?;
    }

    #[test]
    fn approx_distinct_count_in_window_matches_the_exact_model_for_few_keys(
        parts in event_partitions(),
        lateness in lateness(),
        (windows, spec) in window_shapes(),
    ) {
        // A handful of keys stays in the sketch's sparse form, whose estimate is exact unless two
        // keys' hashes collide in 25 bits (the seed is fixed: these keys do not).
        let tl = keyed_timeline(&parts, lateness);
        let expected = merged(&m::distinct_count_in_window(&tl, spec, ts));
        event_time_matches(&parts, lateness, &expected, move |s| {
            let o = s.map(keyed).approx_distinct_count_in_window(windows, ts, 14).unwrap();
            o.output.map(Out::Result).union(&o.late.map(Out::Late))
        })?;
    }

    #[test]
    fn session_by_key_matches_model(
        parts in event_partitions(),
        lateness in lateness(),
        gap in prop::sample::select(vec![300u64, 1_000, 2_500]),
    ) {
        let tl = keyed_timeline(&parts, lateness);
        let expected = merged(&m::session_by_key(&tl, gap, ts, members));
        event_time_matches(&parts, lateness, &expected, move |s| {
            let o = s.map(keyed).session_by_key(ms(gap), ts, Members).unwrap();
            o.output.map(Out::Result).union(&o.late.map(Out::Late))
        })?;
    }

    #[test]
    fn session_count_matches_model(
        parts in event_partitions(),
        lateness in lateness(),
        gap in prop::sample::select(vec![300u64, 1_000, 2_500]),
    ) {
        let tl = keyed_timeline(&parts, lateness);
        let expected = merged(&m::session_by_key(&tl, gap, ts, |vs| vs.len() as u64));
        event_time_matches(&parts, lateness, &expected, move |s| {
            let o = s.map(keyed).session_by_key(ms(gap), ts, Count).unwrap();
            o.output.map(Out::Result).union(&o.late.map(Out::Late))
        })?;
    }

    /// The same events in one partition, in order, cut into batches differently: the results
    /// (all of them, as nothing is late) do not depend on the batching.
    #[test]
    fn in_order_results_do_not_depend_on_batching(
        mut events in prop::collection::vec(
            (prop::sample::select(common::KEYS.to_vec()), 0..20_000u64, 0..100u32),
            0..60,
        ),
        cut in 1..=20usize,
    ) {
        events.sort_by_key(|e| e.1);
        let one = collect_event_time(2, vec![vec![events.clone()]], ts, sliding_members)
            .unwrap()
            .concat();
        let chunks: Vec<Vec<Ev>> = events.chunks(cut).map(<[Ev]>::to_vec).collect();
        let mut many = collect_event_time(2, vec![chunks], ts, sliding_members).unwrap().concat();
        many.sort();
        prop_assert!(many.iter().all(|o| matches!(o, Out::Result(_))), "{:?}", many);
        prop_assert_eq!(many, one);
    }
}

fn tumbling_counts(s: DStream<'_, Ev>) -> DStream<'_, Out<(char, Window, u64), (char, Ev)>> {
    let windows = Windows::tumbling(ms(1_000)).expect("a valid window shape");
    let o = s
        .map(keyed)
        .count_by_key_in_window(windows, ts)
        .expect("a valid operator configuration");
    o.output.map(Out::Result).union(&o.late.map(Out::Late))
}

fn tumbling_distinct(s: DStream<'_, Ev>) -> DStream<'_, Out<(Window, u64), (char, Ev)>> {
    let windows = Windows::tumbling(ms(1_000)).expect("a valid window shape");
    let o = s
        .map(keyed)
        .distinct_count_in_window(windows, ts)
        .expect("a valid operator configuration");
    o.output.map(Out::Result).union(&o.late.map(Out::Late))
}

fn window(start_ms: u64, end_ms: u64) -> Window {
    Window { start_ms, end_ms }
}

/// Runs `build` with 1, 2 and 4 workers and asserts each gives `expected`.
fn assert_engine_gives<O, F>(parts: &[Vec<Vec<Ev>>], lateness: u64, expected: &[Vec<O>], build: F)
where
    O: clickpulse_engine::Data + Ord + std::fmt::Debug,
    F: for<'s> Fn(DStream<'s, Ev>) -> DStream<'s, O> + Clone + Send + Sync + 'static,
{
    event_time_matches(parts, lateness, expected, build).expect("a valid operator configuration");
}

/// Two partitions, allowed lateness 0.5 s, tumbling 1 s windows. Partition 1 serves nothing in
/// batch 0 and so holds the watermark at 0 (which keeps a@400 on time in batch 1); it finishes in
/// batch 1, releasing the watermark to partition 0's 2600 − 500; a@1500 in batch 2 is then late
/// (its window ended at 2000 ≤ 2100); partition 0 finishing in batch 2 closes everything.
#[test]
fn hand_computed_windows_watermarks_and_late_events() {
    let parts: Vec<Vec<Vec<Ev>>> = vec![
        vec![
            vec![('a', 2_600, 1)],
            vec![('a', 400, 2)],
            vec![('a', 3_100, 3), ('a', 1_500, 4)],
        ],
        vec![vec![], vec![('b', 1_800, 5)]],
    ];
    let tl = keyed_timeline(&parts, 500);
    assert_eq!(tl.watermarks, vec![0, 2_100, u64::MAX]);

    let expected = vec![
        vec![],
        vec![
            Out::Result(('a', window(0, 1_000), 1)),
            Out::Result(('b', window(1_000, 2_000), 1)),
        ],
        vec![
            Out::Result(('a', window(2_000, 3_000), 1)),
            Out::Result(('a', window(3_000, 4_000), 1)),
            Out::Late(('a', ('a', 1_500, 4))),
        ],
    ];
    let spec = WindowSpec {
        size_ms: 1_000,
        slide_ms: 1_000,
    };
    let counts = |vs: Vec<Ev>| vs.len() as u64;
    assert_eq!(
        merged(&m::aggregate_by_key_in_window(&tl, spec, ts, counts)),
        expected
    );
    assert_engine_gives(&parts, 500, &expected, tumbling_counts);

    let distinct = vec![
        vec![],
        vec![
            Out::Result((window(0, 1_000), 1)),
            Out::Result((window(1_000, 2_000), 1)),
        ],
        vec![
            Out::Result((window(2_000, 3_000), 1)),
            Out::Result((window(3_000, 4_000), 1)),
            Out::Late(('a', ('a', 1_500, 4))),
        ],
    ];
    assert_eq!(
        merged(&m::distinct_count_in_window(&tl, spec, ts)),
        distinct
    );
    assert_engine_gives(&parts, 500, &distinct, tumbling_distinct);
}

/// Sliding 2 s windows every 1 s: an event is late as soon as the earliest window containing it
/// has closed, even though a later one is still open.
#[test]
fn hand_computed_sliding_late_rule_uses_the_earliest_window() {
    let parts: Vec<Vec<Vec<Ev>>> = vec![vec![
        vec![('a', 2_500, 1)],
        vec![('a', 1_200, 2), ('a', 2_400, 3)],
    ]];
    let tl = keyed_timeline(&parts, 0);
    assert_eq!(tl.watermarks, vec![2_500, u64::MAX]);
    let expected = vec![
        vec![],
        vec![
            Out::Result(('a', window(1_000, 3_000), vec![(2_400, 3), (2_500, 1)])),
            Out::Result(('a', window(2_000, 4_000), vec![(2_400, 3), (2_500, 1)])),
            Out::Late(('a', ('a', 1_200, 2))),
        ],
    ];
    let spec = WindowSpec {
        size_ms: 2_000,
        slide_ms: 1_000,
    };
    assert_eq!(
        merged(&m::aggregate_by_key_in_window(&tl, spec, ts, members)),
        expected
    );
    assert_engine_gives(&parts, 0, &expected, sliding_members);
}

fn sessions_1s(s: DStream<'_, Ev>) -> DStream<'_, Out<(char, Session, u64), (char, Ev)>> {
    let o = s
        .map(keyed)
        .session_by_key(ms(1_000), ts, Count)
        .expect("a valid operator configuration");
    o.output.map(Out::Result).union(&o.late.map(Out::Late))
}

/// Sessions with a 1 s gap: a@1400 extends a's first session; sessions close once the watermark
/// reaches their last event plus the gap; events below the watermark are late.
#[test]
fn hand_computed_sessions_close_and_late_events() {
    let parts: Vec<Vec<Vec<Ev>>> = vec![vec![
        vec![('a', 0, 1), ('a', 500, 2), ('b', 100, 3)],
        vec![('a', 1_400, 4), ('a', 5_000, 5)],
        vec![('a', 200, 6), ('b', 3_000, 7)],
    ]];
    let tl = keyed_timeline(&parts, 0);
    assert_eq!(tl.watermarks, vec![500, 5_000, u64::MAX]);
    let session = |start_ms, end_ms| Session { start_ms, end_ms };
    let expected = vec![
        vec![],
        vec![
            Out::Result(('a', session(0, 1_400), 3)),
            Out::Result(('b', session(100, 100), 1)),
        ],
        vec![
            Out::Result(('a', session(5_000, 5_000), 1)),
            Out::Late(('a', ('a', 200, 6))),
            Out::Late(('b', ('b', 3_000, 7))),
        ],
    ];
    let counts = |vs: Vec<Ev>| vs.len() as u64;
    assert_eq!(merged(&m::session_by_key(&tl, 1_000, ts, counts)), expected);
    assert_engine_gives(&parts, 0, &expected, sessions_1s);
}

/// An out-of-order event between two sessions of the same key merges them into one.
#[test]
fn hand_computed_out_of_order_event_merges_two_sessions() {
    let parts: Vec<Vec<Vec<Ev>>> = vec![vec![
        vec![('a', 0, 1), ('a', 1_500, 2)],
        vec![('a', 800, 3)],
    ]];
    let tl = keyed_timeline(&parts, 1_000);
    assert_eq!(tl.watermarks, vec![500, u64::MAX]);
    let expected = vec![
        vec![],
        vec![Out::Result((
            'a',
            Session {
                start_ms: 0,
                end_ms: 1_500,
            },
            3,
        ))],
    ];
    let counts = |vs: Vec<Ev>| vs.len() as u64;
    assert_eq!(merged(&m::session_by_key(&tl, 1_000, ts, counts)), expected);
    assert_engine_gives(&parts, 1_000, &expected, sessions_1s);
}

/// The random event streams are only a good test if they produce late events and windows that
/// close before the end of input; this checks the generator does, on a fixed seed.
#[test]
fn random_event_streams_have_late_events_and_early_closes() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let spec = WindowSpec {
        size_ms: 1_000,
        slide_ms: 1_000,
    };
    let (mut with_late, mut with_early_close, cases) = (0, 0, 200);
    for _ in 0..cases {
        let parts = event_partitions().new_tree(&mut runner).unwrap().current();
        let tl = keyed_timeline(&parts, 0);
        let out = m::aggregate_by_key_in_window(&tl, spec, ts, |vs| vs.len());
        if out.late.iter().any(|b| !b.is_empty()) {
            with_late += 1;
        }
        let last = out.output.len() - 1;
        if out.output[..last].iter().any(|b| !b.is_empty()) {
            with_early_close += 1;
        }
    }
    assert!(
        with_late * 4 > cases,
        "{with_late} of {cases} cases have late events"
    );
    assert!(
        with_early_close * 4 > cases,
        "{with_early_close} of {cases} cases close a window before the end"
    );
}

/// 60,000 distinct keys (each seen twice) over three 1 s windows and two partitions: every worker
/// count gives the same estimates, each within 3% of the exact count (precision 14: a standard
/// error of 0.8%, so 3% is nearly four of them).
#[test]
fn approx_distinct_counts_of_many_keys_agree_across_workers_and_stay_near_the_exact_count() {
    type Visit = (u32, u64);
    fn visit_ts(v: &Visit) -> u64 {
        v.1
    }
    fn sketched(s: DStream<'_, Visit>) -> DStream<'_, (Window, u64)> {
        let windows = Windows::tumbling(ms(1_000)).expect("a valid window shape");
        s.map(|v| (v.0, v))
            .approx_distinct_count_in_window(windows, visit_ts, 14)
            .expect("a valid precision")
            .output
    }
    // Window w holds keys w*20_000 .. w*20_000 + 20_000 + w*5_000 (overlapping ranges).
    let mut exact = Vec::new();
    let mut parts: Vec<Vec<Vec<Visit>>> = vec![Vec::new(), Vec::new()];
    for w in 0..3u64 {
        let keys: Vec<u32> = (0..20_000 + w as u32 * 5_000)
            .map(|i| w as u32 * 20_000 + i)
            .collect();
        exact.push((window(w * 1_000, (w + 1) * 1_000), keys.len() as u64));
        for (p, part) in parts.iter_mut().enumerate() {
            let batch: Vec<Visit> = keys.iter().map(|&k| (k, w * 1_000 + p as u64)).collect();
            part.push(batch);
        }
    }
    let mut runs = Vec::new();
    for workers in [1, 2, 4] {
        let out =
            collect_event_time(workers, parts.clone(), visit_ts, sketched).expect("the job runs");
        let mut all: Vec<(Window, u64)> = out.concat();
        all.sort();
        runs.push(all);
    }
    assert_eq!(runs[0], runs[1], "1 and 2 workers");
    assert_eq!(runs[0], runs[2], "1 and 4 workers");
    assert_eq!(runs[0].len(), exact.len());
    for ((w, estimate), (exact_w, n)) in runs[0].iter().zip(&exact) {
        assert_eq!(w, exact_w);
        let error = (*estimate as f64 - *n as f64).abs() / *n as f64;
        assert!(error < 0.03, "{w:?}: estimate {estimate}, exact {n}");
    }
}
