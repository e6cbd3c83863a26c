//! The rows of the standard streams, with exactly the field names the outputs carry.

use serde::{Deserialize, Serialize};

/// `page_views` and `page_views_30s`: page views per url and window. The url's type is a
/// parameter so that the job can serialise rows without copying each url into a `String`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PageViewRow<S = String> {
    /// Window start, ms since the epoch.
    pub window_start_ms: u64,
    /// Window end (exclusive).
    pub window_end_ms: u64,
    /// The page.
    pub url: S,
    /// Page views in the window.
    pub count: u64,
}

/// `top_pages`: the most viewed urls of each `page_views_30s` window.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TopPageRow<S = String> {
    /// Window start.
    pub window_start_ms: u64,
    /// Window end (exclusive).
    pub window_end_ms: u64,
    /// 1 for the most viewed; ties ordered by url.
    pub rank: u32,
    /// The page.
    pub url: S,
    /// Page views in the window.
    pub count: u64,
}

/// `sessions`: a visitor's session, emitted when it closes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionRow<S = String> {
    /// The visitor.
    pub visitor_id: S,
    /// Time of the first click.
    pub session_start_ms: u64,
    /// Time of the last click.
    pub session_end_ms: u64,
    /// Clicks in the session.
    pub clicks: u64,
    /// Distinct urls clicked.
    pub distinct_urls: u64,
}

/// `active_visitors`: unique visitors per window.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ActiveVisitorsRow {
    /// Window start.
    pub window_start_ms: u64,
    /// Window end (exclusive).
    pub window_end_ms: u64,
    /// Distinct visitors with at least one click in the window (exact).
    pub unique_visitors: u64,
}

/// `segments`: closed sessions per visitor segment, by the window of their last click.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SegmentRow {
    /// Window start.
    pub window_start_ms: u64,
    /// Window end (exclusive).
    pub window_end_ms: u64,
    /// The visitor's segment from the history table, `unknown` when the visitor has none.
    pub segment: String,
    /// Sessions that ended (last click) in the window.
    pub sessions: u64,
    /// Their clicks.
    pub clicks: u64,
}

/// `trending`: items whose count rose most against the previous window.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TrendingRow {
    /// Window start (the current window).
    pub window_start_ms: u64,
    /// Window end (exclusive).
    pub window_end_ms: u64,
    /// `page` (page views by url), `product` (add_to_cart by product) or `search` (by query).
    pub kind: String,
    /// The url, product or query.
    pub item: String,
    /// Count in the current window.
    pub count: u64,
    /// Count in the window before.
    pub previous_count: u64,
    /// `count - previous_count` (only rising items are listed).
    pub score: i64,
}

/// `late_events`: clicks that came too late for a stream's window or session.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LateRow {
    /// Which stream refused it.
    pub stream: String,
    /// The click's visitor.
    pub visitor_id: String,
    /// The click's event time.
    pub ts_ms: u64,
}

/// `dead_letters`: input records that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeadLetterRow {
    /// The source.
    pub source: String,
    /// Its partition.
    pub partition: u32,
    /// Its offset.
    pub offset: u64,
    /// Why it was rejected.
    pub reason: String,
    /// The raw record, as (lossy) UTF-8.
    pub raw: String,
}
