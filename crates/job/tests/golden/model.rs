//! The reference model: what the standard job must emit in until-end mode for a list of events
//! in event-time order, computed with plain loops and `BTreeMap`s (no engine code).
//!
//! Windows are half-open and aligned to multiples of their slide from the Unix epoch. Until-end
//! mode closes every window and session, so the model emits all of them.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use clickpulse_events::ClickEvent;
use clickpulse_job::history::demo_history;
use clickpulse_job::rows::{
    ActiveVisitorsRow, PageViewRow, SegmentRow, SessionRow, TopPageRow, TrendingRow,
};

/// `page_views` tumbling window (the job's default).
pub const PAGE_VIEWS_MS: u64 = 1_000;
/// `page_views_30s` window length and slide.
pub const SLIDING_SIZE_MS: u64 = 30_000;
/// `page_views_30s` slide.
pub const SLIDING_SLIDE_MS: u64 = 5_000;
/// Urls per `top_pages` window.
pub const TOP_N: usize = 10;
/// A session ends after this long without a click.
pub const SESSION_GAP_MS: u64 = 30 * 60 * 1_000;
/// `active_visitors` window.
pub const ACTIVE_MS: u64 = 60_000;
/// `segments` window (by the session's last click).
pub const SEGMENTS_MS: u64 = 60_000;
/// `trending` window, compared with the one before.
pub const TRENDING_MS: u64 = 60_000;
/// Items per kind and `trending` window.
pub const TRENDING_TOP: usize = 10;

/// Every stream's complete expected rows, each sorted.
#[derive(Debug, Default, Clone)]
pub struct Golden {
    pub input_rows: u64,
    pub page_views: Vec<PageViewRow>,
    pub page_views_30s: Vec<PageViewRow>,
    pub top_pages: Vec<TopPageRow>,
    pub sessions: Vec<SessionRow>,
    pub active_visitors: Vec<ActiveVisitorsRow>,
    pub segments: Vec<SegmentRow>,
    pub trending: Vec<TrendingRow>,
    /// `page_views_30s` windows with more urls than `top_pages` lists.
    pub top_pages_truncated: usize,
    /// `trending` windows and kinds with more rising items than are listed.
    pub trending_truncated: usize,
    /// `trending` windows and kinds where the last listed item ties on score with the first
    /// left out (the item order decides).
    pub trending_tie_cut: usize,
}

impl Golden {
    /// A golden test over streams without rows would compare nothing.
    pub fn assert_every_stream_has_rows(&self, label: &str) {
        for (stream, n) in [
            ("page_views", self.page_views.len()),
            ("page_views_30s", self.page_views_30s.len()),
            ("top_pages", self.top_pages.len()),
            ("sessions", self.sessions.len()),
            ("active_visitors", self.active_visitors.len()),
            ("segments", self.segments.len()),
            ("trending", self.trending.len()),
        ] {
            assert!(n > 0, "{label}: the model expects no {stream} rows");
        }
    }
}

/// The model's rows for `events` (which must be in event-time order).
pub fn expected(events: &[ClickEvent]) -> Golden {
    assert!(
        events.windows(2).all(|p| p[0].ts_ms <= p[1].ts_ms),
        "the model expects events in event-time order"
    );
    let page_views = views_per_window(events, PAGE_VIEWS_MS, PAGE_VIEWS_MS);
    let page_views_30s = views_per_window(events, SLIDING_SIZE_MS, SLIDING_SLIDE_MS);
    let (top_pages, top_pages_truncated) = top_pages(&page_views_30s);
    let sessions = sessions(events);
    let segments = segments(&sessions);
    let (trending, trending_truncated, trending_tie_cut) = trending(events);
    let mut g = Golden {
        input_rows: events.len() as u64,
        page_views,
        page_views_30s,
        top_pages,
        sessions,
        active_visitors: active_visitors(events),
        segments,
        trending,
        top_pages_truncated,
        trending_truncated,
        trending_tie_cut,
    };
    g.page_views.sort();
    g.page_views_30s.sort();
    g.top_pages.sort();
    g.sessions.sort();
    g.active_visitors.sort();
    g.segments.sort();
    g.trending.sort();
    g
}

/// Page views per url in windows of `size` starting every `slide`.
fn views_per_window(events: &[ClickEvent], size: u64, slide: u64) -> Vec<PageViewRow> {
    let mut counts: BTreeMap<(u64, &str), u64> = BTreeMap::new();
    for e in events.iter().filter(|e| is_page_view(e)) {
        // Every window start s (a multiple of the slide) with s <= ts < s + size.
        let mut start = e.ts_ms - e.ts_ms % slide;
        loop {
            if e.ts_ms < start + size {
                *counts.entry((start, &e.url)).or_default() += 1;
            } else {
                break;
            }
            match start.checked_sub(slide) {
                Some(s) => start = s,
                None => break,
            }
        }
    }
    counts
        .into_iter()
        .map(|((start, url), count)| PageViewRow {
            window_start_ms: start,
            window_end_ms: start + size,
            url: url.to_string(),
            count,
        })
        .collect()
}

fn is_page_view(e: &ClickEvent) -> bool {
    e.event_type.as_deref().is_none_or(|t| t == "page_view")
}

/// The top urls of every sliding window, and how many windows had more than `TOP_N` urls.
fn top_pages(sliding: &[PageViewRow]) -> (Vec<TopPageRow>, usize) {
    let mut per_window: BTreeMap<(u64, u64), Vec<(Reverse<u64>, &str)>> = BTreeMap::new();
    for r in sliding {
        per_window
            .entry((r.window_start_ms, r.window_end_ms))
            .or_default()
            .push((Reverse(r.count), &r.url));
    }
    let mut rows = Vec::new();
    let mut truncated = 0;
    for ((start, end), mut urls) in per_window {
        urls.sort();
        truncated += usize::from(urls.len() > TOP_N);
        for (rank, (Reverse(count), url)) in urls.into_iter().take(TOP_N).enumerate() {
            rows.push(TopPageRow {
                window_start_ms: start,
                window_end_ms: end,
                rank: rank as u32 + 1,
                url: url.to_string(),
                count,
            });
        }
    }
    (rows, truncated)
}

/// A session being built.
struct Open<'a> {
    start: u64,
    end: u64,
    clicks: u64,
    urls: BTreeSet<&'a str>,
}

/// Per visitor, clicks less than the gap apart form one session (events are in time order).
fn sessions(events: &[ClickEvent]) -> Vec<SessionRow> {
    let mut per_visitor: BTreeMap<&str, Vec<Open<'_>>> = BTreeMap::new();
    for e in events {
        let list = per_visitor.entry(&e.visitor_id).or_default();
        match list.last_mut() {
            Some(s) if e.ts_ms - s.end < SESSION_GAP_MS => {
                s.end = e.ts_ms;
                s.clicks += 1;
                s.urls.insert(&e.url);
            }
            _ => list.push(Open {
                start: e.ts_ms,
                end: e.ts_ms,
                clicks: 1,
                urls: BTreeSet::from([e.url.as_str()]),
            }),
        }
    }
    per_visitor
        .into_iter()
        .flat_map(|(visitor, list)| {
            list.into_iter().map(move |s| SessionRow {
                visitor_id: visitor.to_string(),
                session_start_ms: s.start,
                session_end_ms: s.end,
                clicks: s.clicks,
                distinct_urls: s.urls.len() as u64,
            })
        })
        .collect()
}

/// Distinct visitors per tumbling minute.
fn active_visitors(events: &[ClickEvent]) -> Vec<ActiveVisitorsRow> {
    let mut visitors: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
    for e in events {
        visitors
            .entry(e.ts_ms - e.ts_ms % ACTIVE_MS)
            .or_default()
            .insert(&e.visitor_id);
    }
    visitors
        .into_iter()
        .map(|(start, v)| ActiveVisitorsRow {
            window_start_ms: start,
            window_end_ms: start + ACTIVE_MS,
            unique_visitors: v.len() as u64,
        })
        .collect()
}

/// The demo history table as a plain map: visitor -> segment.
fn history() -> HashMap<String, String> {
    demo_history().map(|(v, row)| (v, row.segment)).collect()
}

/// Sessions and their clicks per segment and window of the session's last click.
fn segments(sessions: &[SessionRow]) -> Vec<SegmentRow> {
    let history = history();
    let mut per: BTreeMap<(u64, &str), (u64, u64)> = BTreeMap::new();
    for s in sessions {
        let segment = history.get(&s.visitor_id).map_or("unknown", String::as_str);
        let start = s.session_end_ms - s.session_end_ms % SEGMENTS_MS;
        let slot = per.entry((start, segment)).or_default();
        slot.0 += 1;
        slot.1 += s.clicks;
    }
    per.into_iter()
        .map(|((start, segment), (sessions, clicks))| SegmentRow {
            window_start_ms: start,
            window_end_ms: start + SEGMENTS_MS,
            segment: segment.to_string(),
            sessions,
            clicks,
        })
        .collect()
}

/// The trending kind and item of an event: page views by url, carts by product, searches by query.
fn trending_key(e: &ClickEvent) -> Option<(&'static str, &str)> {
    match e.event_type.as_deref().unwrap_or("page_view") {
        "page_view" => Some(("page", &e.url)),
        "add_to_cart" => e.product.as_deref().map(|p| ("product", p)),
        "search" => e.query.as_deref().map(|q| ("search", q)),
        _ => None,
    }
}

/// Per minute and kind, the items whose count rose against the minute before (a minute without
/// the item — including one before the data — counts 0), best 10 by score, then item.
/// Also returns how many (window, kind) lists were cut, and how many were cut between equal scores.
fn trending(events: &[ClickEvent]) -> (Vec<TrendingRow>, usize, usize) {
    let mut counts: BTreeMap<(u64, &str, &str), u64> = BTreeMap::new();
    for e in events {
        if let Some((kind, item)) = trending_key(e) {
            *counts
                .entry((e.ts_ms - e.ts_ms % TRENDING_MS, kind, item))
                .or_default() += 1;
        }
    }
    let mut rising: BTreeMap<(u64, &str), Vec<(Reverse<i64>, &str, u64, u64)>> = BTreeMap::new();
    for (&(minute, kind, item), &count) in &counts {
        let previous = minute
            .checked_sub(TRENDING_MS)
            .and_then(|p| counts.get(&(p, kind, item)))
            .copied()
            .unwrap_or(0);
        if count > previous {
            let score = count as i64 - previous as i64;
            rising
                .entry((minute, kind))
                .or_default()
                .push((Reverse(score), item, count, previous));
        }
    }
    let mut rows = Vec::new();
    let (mut truncated, mut tie_cut) = (0, 0);
    for ((minute, kind), mut items) in rising {
        items.sort();
        if let (Some(last), Some(first_out)) =
            (items.get(TRENDING_TOP - 1), items.get(TRENDING_TOP))
        {
            truncated += 1;
            tie_cut += usize::from(last.0 == first_out.0);
        }
        for (Reverse(score), item, count, previous_count) in items.into_iter().take(TRENDING_TOP) {
            rows.push(TrendingRow {
                window_start_ms: minute,
                window_end_ms: minute + TRENDING_MS,
                kind: kind.to_string(),
                item: item.to_string(),
                count,
                previous_count,
                score,
            });
        }
    }
    (rows, truncated, tie_cut)
}

/// Start of the hand-made stream: a whole minute, so the edges below are easy to read.
pub const HAND_MADE_START_MS: u64 = 1_700_000_040_000;

/// A small stream in time order: page views, carts and searches over five minutes, visitors
/// `v0`..`v5` (`v0` and `v3` have history), and `v3`'s clicks at the session-gap edges.
pub fn hand_made_events() -> Vec<ClickEvent> {
    let t0 = HAND_MADE_START_MS;
    let mut events = Vec::new();
    let typed = |ts: u64, visitor: &str, kind: &str, item: &str| {
        let mut e = ClickEvent::page_view(ts, visitor, "/shop");
        e.event_type = Some(kind.to_string());
        match kind {
            "add_to_cart" => e.product = Some(item.to_string()),
            "search" => e.query = Some(item.to_string()),
            _ => e.url = item.to_string(),
        }
        e
    };
    for minute in 0..5u64 {
        for i in 0..40u64 {
            let ts = t0 + minute * 60_000 + i * 1_400;
            let visitor = format!("v{}", i % 6);
            // Item popularity shifts each minute, so some items rise and some fall.
            let page = format!("/p{}", (i * (minute + 1)) % 13);
            events.push(typed(ts, &visitor, "page_view", &page));
            if i % 3 == 0 {
                let product = format!("sku{}", (i + minute) % 4);
                events.push(typed(ts + 1, &visitor, "add_to_cart", &product));
            }
            if i % 4 == minute % 4 {
                let query = format!("q{}", i % (minute + 2));
                events.push(typed(ts + 2, &visitor, "search", &query));
            }
        }
    }
    // A cart without a product and an unknown event type: no trending item, still clicks.
    let mut bare = ClickEvent::page_view(t0 + 5 * 60_000, "v4", "/cart");
    bare.event_type = Some("add_to_cart".into());
    events.push(bare);
    let mut other = ClickEvent::page_view(t0 + 5 * 60_000 + 10, "v5", "/x");
    other.event_type = Some("scroll".into());
    events.push(other);
    // v3 clicks only at the gap's edges: t0, t0 + gap − 1 (same session), t0 + 2·gap − 1
    // (exactly one gap after the previous click: a new session).
    let gap = SESSION_GAP_MS;
    events.retain(|e| e.visitor_id != "v3");
    events.push(ClickEvent::page_view(t0, "v3", "/a"));
    events.push(ClickEvent::page_view(t0 + gap - 1, "v3", "/b"));
    events.push(ClickEvent::page_view(t0 + 2 * gap - 1, "v3", "/b"));
    events.sort_by_key(|e| e.ts_ms);
    events
}
