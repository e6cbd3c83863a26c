//! Golden tests of the standard job: for slices of the canonical MSNBC stream (and a small
//! hand-made stream with carts and searches), every row of every stream the job emits in
//! until-end mode is compared with rows computed here by a plain reference model — loops and
//! `BTreeMap`s over the events, never the engine — with 1 and with 2 workers.
//!
//! The model lives in `golden/model.rs`; how the job is run and its rows read back, in
//! `golden/run.rs`.

#[path = "golden/model.rs"]
mod model;
#[path = "golden/run.rs"]
mod run;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use clickpulse_events::ClickEvent;
use clickpulse_events::msnbc::{self, MsnbcStream};
use clickpulse_job::rows::{ActiveVisitorsRow, LateRow, SessionRow, TrendingRow};

use model::Golden;
use run::{Actual, Run, assert_same_rows};

/// The canonical MSNBC stream, loaded once per test binary.
fn msnbc_stream() -> &'static MsnbcStream {
    static STREAM: OnceLock<MsnbcStream> = OnceLock::new();
    STREAM.get_or_init(|| {
        msnbc::load(msnbc::default_msnbc_path()).expect("the MSNBC data set is in data/")
    })
}

/// Events `from..to` of the canonical stream.
fn slice(from: usize, to: usize) -> Vec<ClickEvent> {
    msnbc_stream().iter_from(from).take(to - from).collect()
}

/// Compares all seven streams of `actual` with the model's rows.
fn assert_matches_golden(label: &str, golden: &Golden, actual: &Actual) {
    assert_eq!(actual.summary.late_events, 0, "{label}: late events");
    assert_eq!(actual.summary.dead_letters, 0, "{label}: dead letters");
    assert_eq!(
        actual.summary.input_rows, golden.input_rows,
        "{label}: input rows"
    );
    assert!(
        actual.late_rows.is_empty(),
        "{label}: late_events stream is not empty: {:?}",
        &actual.late_rows[..actual.late_rows.len().min(5)]
    );
    assert_same_rows(
        &format!("{label}: page_views"),
        &golden.page_views,
        &actual.page_views,
    );
    assert_matches_golden_but_page_views(label, golden, actual);
}

/// Compares every stream of `actual` but `page_views` with the model's rows.
fn assert_matches_golden_but_page_views(label: &str, golden: &Golden, actual: &Actual) {
    let l = |s: &str| format!("{label}: {s}");
    assert_same_rows(
        &l("page_views_30s"),
        &golden.page_views_30s,
        &actual.page_views_30s,
    );
    assert_same_rows(&l("top_pages"), &golden.top_pages, &actual.top_pages);
    assert_same_rows(&l("sessions"), &golden.sessions, &actual.sessions);
    assert_same_rows(
        &l("active_visitors"),
        &golden.active_visitors,
        &actual.active_visitors,
    );
    assert_same_rows(&l("segments"), &golden.segments, &actual.segments);
    assert_same_rows(&l("trending"), &golden.trending, &actual.trending);
}

/// Runs the job over `events` with 1 and with 2 workers; both must equal the model, and carry the
/// same rows in the same batches.
fn check(label: &str, events: &[ClickEvent], chunk: usize) -> (Golden, Actual) {
    let golden = model::expected(events);
    golden.assert_every_stream_has_rows(label);
    let one = Run::new(events, chunk).workers(1).memory();
    assert_matches_golden(&format!("{label}, 1 worker"), &golden, &one);
    let two = Run::new(events, chunk).workers(2).memory();
    assert_matches_golden(&format!("{label}, 2 workers"), &golden, &two);
    // Windows must close while the input runs, not only at its end.
    let page_view_batches = batches_of(&one, "page_views");
    assert!(
        page_view_batches.len() > 2,
        "{label}: page_views rows only in batches {page_view_batches:?}"
    );
    assert_eq!(
        one.batches, two.batches,
        "{label}: 1 and 2 workers put different rows in the same (stream, batch)"
    );
    (golden, one)
}

/// The batch ids in which `stream` had rows.
fn batches_of(actual: &Actual, stream: &str) -> Vec<u64> {
    actual
        .batches
        .keys()
        .filter(|(s, _)| s == stream)
        .map(|(_, b)| *b)
        .collect()
}

/// The first 50,000 events: the first 16 minutes of the day.
#[test]
fn first_50k_msnbc_events_match_the_reference_model_with_1_and_2_workers() {
    let events = slice(0, 50_000);
    let (golden, _) = check("events 0..50000", &events, 1_000);
    // The slice is rich enough to exercise truncation to the top 10.
    assert!(
        golden.top_pages_truncated > 0,
        "no window with over 10 urls"
    );
    assert!(
        golden.trending_truncated > 0,
        "no minute with over 10 rising urls"
    );
}

/// `page_views_30s` and `trending` count their pages from `page_views`' closed windows when those
/// fit in their panes, and from every view when they do not: with 7 s windows (which fit in
/// neither 5 s slides nor 1 min windows), and with 4 s and 10 s windows (which fit in 1 min
/// windows only; 10 s ones would fit in 30 s windows, but not in their 5 s slides), every stream
/// but `page_views` still equals the model.
#[test]
fn streams_equal_the_model_whether_or_not_page_views_windows_fit_theirs() {
    let events = slice(0, 50_000);
    let golden = model::expected(&events);
    for window_ms in [7_000, 4_000, 10_000] {
        let window = std::time::Duration::from_millis(window_ms);
        let actual = Run::new(&events, 1_000)
            .workers(2)
            .page_views_window(window)
            .memory();
        let label = format!("page_views windows of {window_ms} ms");
        assert!(actual.late_rows.is_empty(), "{label}: late rows");
        assert!(
            actual
                .page_views
                .iter()
                .all(|r| r.window_end_ms - r.window_start_ms == window_ms),
            "{label}: page_views windows"
        );
        assert_matches_golden_but_page_views(&label, &golden, &actual);
    }
}

/// A click late for its one-second `page_views` window, but not for the 5 s panes of
/// `page_views_30s` nor for `trending`'s minute: `page_views` and `sessions` refuse it (one
/// `late_events` row each), and the streams counted from `page_views`' windows still count it,
/// as they would counting every view.
#[test]
fn a_click_late_for_page_views_only_still_counts_in_coarser_windows() {
    let t = model::HAND_MADE_START_MS;
    // One visitor, one event per batch: the second click is checked against the watermark
    // t + 2.5 s, past its window's end (t + 2 s), before its 5 s pane's end (t + 5 s).
    let events = vec![
        ClickEvent::page_view(t + 2_500, "v1", "/a"),
        ClickEvent::page_view(t + 1_200, "v1", "/b"),
    ];
    let actual = Run::new(&events, 1).workers(2).memory();
    let late = |stream: &str| LateRow {
        stream: stream.into(),
        visitor_id: "v1".into(),
        ts_ms: t + 1_200,
    };
    let mut expected = vec![late("page_views"), late("sessions")];
    expected.sort();
    assert_same_rows("late_events", &expected, &actual.late_rows);
    let urls = |rows: &[(&str, u64)]| -> Vec<(String, u64)> {
        rows.iter().map(|(u, c)| ((*u).to_string(), *c)).collect()
    };
    let page_views: Vec<_> = actual
        .page_views
        .iter()
        .map(|r| (r.url.to_string(), r.count))
        .collect();
    assert_eq!(
        page_views,
        urls(&[("/a", 1)]),
        "the late click is in no 1 s window"
    );
    // Both clicks fall in the 5 s pane [t, t + 5 s), so in the six 30 s windows holding it.
    let thirty: Vec<_> = actual
        .page_views_30s
        .iter()
        .filter(|r| r.url.as_str() == "/b")
        .map(|r| (r.window_start_ms, r.count))
        .collect();
    let expected_30s: Vec<(u64, u64)> = (0..6)
        .map(|i| (t + 5_000 - 30_000 + i * 5_000, 1))
        .collect();
    assert_eq!(thirty, expected_30s, "page_views_30s counts the late click");
    let trending: Vec<_> = actual
        .trending
        .iter()
        .map(|r| (r.item.as_str(), r.count, r.window_start_ms))
        .collect();
    assert!(
        trending.contains(&("/b", 1, t)),
        "trending counts the late click: {trending:?}"
    );
    assert_eq!(
        actual
            .active_visitors
            .iter()
            .map(|r| r.unique_visitors)
            .sum::<u64>(),
        1
    );
}

/// `active_visitors_count = "hll"` over the first 50,000 events (about 3,000 visitors a minute):
/// the windows are the model's and each estimate is near its exact count, with 1 and with 2
/// workers alike; every other stream still equals the model. At precision 14 the sketches stay
/// sparse (25-bit hashes: exact in practice); at 8 they turn dense (256 registers, a standard
/// error of 6.5%) and the estimates visibly differ from the exact counts.
#[test]
fn hll_active_visitors_stay_near_the_exact_counts_with_1_and_2_workers() {
    let events = slice(0, 50_000);
    let golden = model::expected(&events);
    for (precision, tolerance) in [(14, 0.02), (8, 0.3)] {
        let label = format!("hll precision {precision}");
        let one = Run::new(&events, 1_000).workers(1).hll(precision).memory();
        let two = Run::new(&events, 1_000).workers(2).hll(precision).memory();
        assert_eq!(
            one.active_visitors, two.active_visitors,
            "{label}: 1 and 2 workers"
        );
        assert_eq!(
            one.active_visitors.len(),
            golden.active_visitors.len(),
            "{label}"
        );
        let mut worst: f64 = 0.0;
        for (estimate, exact) in one.active_visitors.iter().zip(&golden.active_visitors) {
            let window = |r: &ActiveVisitorsRow| (r.window_start_ms, r.window_end_ms);
            assert_eq!(window(estimate), window(exact), "{label}");
            let (e, x) = (
                estimate.unique_visitors as f64,
                exact.unique_visitors as f64,
            );
            worst = worst.max((e - x).abs() / x);
        }
        assert!(
            worst < tolerance,
            "{label}: an estimate is {:.1}% off",
            worst * 100.0
        );
        if precision == 8 {
            assert!(worst > 0.0, "{label}: every estimate is exact");
        }
        for actual in [&one, &two] {
            // The model with the estimates in place of its exact counts, checked above.
            let rest = Golden {
                active_visitors: actual.active_visitors.clone(),
                ..golden.clone()
            };
            assert_matches_golden(&label, &rest, actual);
        }
    }
}

/// Events 1,000,000..1,040,000: a slice starting in the middle of windows and sessions.
#[test]
fn msnbc_events_from_1m_match_the_reference_model_with_1_and_2_workers() {
    let events = slice(1_000_000, 1_040_000);
    let first = events.first().expect("slice is not empty").ts_ms;
    assert_ne!(first % 60_000, 0, "the slice should start mid-minute");
    let (golden, _) = check("events 1000000..1040000", &events, 1_000);
    // The first trending window's previous minute precedes the data: its rows have
    // previous_count 0 and score = count.
    let first_minute = first - first % 60_000;
    let opening: Vec<&TrendingRow> = golden
        .trending
        .iter()
        .filter(|r| r.window_start_ms == first_minute)
        .collect();
    assert!(!opening.is_empty(), "no trending row for the first minute");
    assert!(
        opening
            .iter()
            .all(|r| r.previous_count == 0 && r.score == r.count as i64)
    );
}

/// The visitors whose number is a multiple of 64, over the first 1,500,000 events (about 7.7 h):
/// MSNBC visitors come back about every 6 h, so visitors have several sessions, sessions and
/// segment windows close while the input still runs, not only at its end.
#[test]
fn sparse_msnbc_visitors_over_7_hours_match_the_reference_model_with_1_and_2_workers() {
    let events: Vec<ClickEvent> = msnbc_stream()
        .iter()
        .take(1_500_000)
        .filter(|e| visitor_number(&e.visitor_id).is_multiple_of(64))
        .collect();
    let (golden, one) = check("visitors ≡ 0 mod 64 in events 0..1500000", &events, 400);
    for stream in ["sessions", "segments"] {
        let batches = batches_of(&one, stream);
        assert!(
            batches.len() > 2,
            "{stream} rows only in batches {batches:?}: nothing closed before the end"
        );
    }
    let mut per_visitor: BTreeMap<&str, Vec<&SessionRow>> = BTreeMap::new();
    for s in &golden.sessions {
        per_visitor.entry(&s.visitor_id).or_default().push(s);
    }
    assert!(
        golden.trending_tie_cut > 0,
        "no trending list cut between equal scores (item order untested)"
    );
    let returning = per_visitor.values().filter(|v| v.len() > 1).count();
    assert!(
        returning > 100,
        "only {returning} visitors with several sessions"
    );
}

fn visitor_number(visitor_id: &str) -> u64 {
    visitor_id
        .strip_prefix('v')
        .and_then(|n| n.parse().ok())
        .expect("MSNBC visitor ids are v<number>")
}

/// A small hand-made stream with the event types MSNBC lacks (`add_to_cart`, `search`), clicks
/// exactly one gap apart and one millisecond less, and visitors with and without history.
#[test]
fn hand_made_stream_with_carts_searches_and_gap_edges_matches_the_model() {
    let events = model::hand_made_events();
    let golden = model::expected(&events);
    // The model itself, checked by hand on the edges it must get right.
    let v3: Vec<&SessionRow> = golden
        .sessions
        .iter()
        .filter(|s| s.visitor_id == "v3")
        .collect();
    let gap = model::SESSION_GAP_MS;
    let t0 = model::HAND_MADE_START_MS;
    assert_eq!(
        v3.iter()
            .map(|s| (s.session_start_ms, s.session_end_ms, s.clicks))
            .collect::<Vec<_>>(),
        vec![
            (t0, t0 + gap - 1, 2),
            (t0 + 2 * gap - 1, t0 + 2 * gap - 1, 1)
        ],
        "clicks less than the gap apart share a session; exactly the gap apart do not"
    );
    assert!(golden.trending_truncated > 0 && golden.trending_tie_cut > 0);
    let kinds: std::collections::BTreeSet<&str> =
        golden.trending.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        vec!["page", "product", "search"]
    );
    for workers in [1, 2] {
        let actual = Run::new(&events, 7).workers(workers).memory();
        assert_matches_golden(&format!("hand-made, {workers} workers"), &golden, &actual);
    }
}

/// The file sink writes the same rows as the memory sink: one file per stream and batch, each
/// line a row with its `batch` id.
#[test]
fn jsonl_files_hold_the_same_rows_as_the_memory_sink() {
    let events = slice(0, 20_000);
    let dir = tempfile::tempdir().expect("temporary directory");
    let actual = Run::new(&events, 1_000)
        .workers(2)
        .memory_and_files(dir.path());
    let files = run::read_jsonl_dir(dir.path());
    // The memory sink's non-empty batches, keyed like the files.
    assert!(!actual.batches.is_empty());
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        actual.batches.keys().collect::<Vec<_>>(),
        "one file per stream and non-empty batch"
    );
    for (key, rows) in &actual.batches {
        assert_eq!(
            &files[key], rows,
            "{key:?}: file rows (without `batch`) differ from the memory sink's"
        );
    }
    // And the rows are the golden ones.
    let golden = model::expected(&events);
    assert_matches_golden("events 0..20000 via files", &golden, &actual);
}

/// One click ten minutes behind the watermark is late for every stream: each refusal is one
/// `late_events` row, all in one batch of that stream, and the files hold them all.
#[test]
fn a_late_click_is_reported_by_every_stream_that_refuses_it() {
    let t = model::HAND_MADE_START_MS;
    // One visitor, so one partition; chunks of one event, so two batches: the second click is
    // checked against the watermark t + 10 min.
    let events = vec![
        ClickEvent::page_view(t + 600_000, "v1", "/a"),
        ClickEvent::page_view(t, "v1", "/b"),
    ];
    let dir = tempfile::tempdir().expect("temporary directory");
    let actual = Run::new(&events, 1).memory_and_files(dir.path());
    let late = |stream: &str| LateRow {
        stream: stream.into(),
        visitor_id: "v1".into(),
        ts_ms: t,
    };
    let mut expected = vec![
        late("page_views"),
        late("page_views_30s"),
        late("sessions"),
        late("active_visitors"),
        late("trending"),
    ];
    expected.sort();
    assert_same_rows("late_events", &expected, &actual.late_rows);
    assert_eq!(
        actual
            .page_views
            .iter()
            .map(|r| r.url.as_str())
            .collect::<Vec<_>>(),
        vec!["/a"],
        "the late click is counted in no window"
    );
    assert_eq!(run::read_jsonl_dir(dir.path()), actual.batches);
}
