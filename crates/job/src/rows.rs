//! The rows of the standard streams, with exactly the field names the outputs carry.

use clickpulse_events::{JsonObject, JsonRows};
use serde::{Deserialize, Serialize};

/// A row that writes its own JSON text with a [`JsonObject`]: the text `serde_json` gives the
/// row (field for field, in declaration order; tested against it), without serde's per-field
/// work. The job publishes every row this way, into its batch's [`JsonRows`].
pub trait ToJson {
    /// Writes the row's fields.
    fn fields(&self, o: &mut JsonObject<'_>);

    /// Appends the row to `rows`.
    #[inline]
    fn write_to(&self, rows: &mut JsonRows) {
        rows.object(|o| self.fields(o));
    }
}

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

impl<S: AsRef<str>> ToJson for PageViewRow<S> {
    fn fields(&self, o: &mut JsonObject<'_>) {
        o.u64("window_start_ms", self.window_start_ms)
            .u64("window_end_ms", self.window_end_ms)
            .str("url", self.url.as_ref())
            .u64("count", self.count);
    }
}

impl<S: AsRef<str>> ToJson for TopPageRow<S> {
    fn fields(&self, o: &mut JsonObject<'_>) {
        o.u64("window_start_ms", self.window_start_ms)
            .u64("window_end_ms", self.window_end_ms)
            .u64("rank", u64::from(self.rank))
            .str("url", self.url.as_ref())
            .u64("count", self.count);
    }
}

impl<S: AsRef<str>> ToJson for SessionRow<S> {
    fn fields(&self, o: &mut JsonObject<'_>) {
        o.str("visitor_id", self.visitor_id.as_ref())
            .u64("session_start_ms", self.session_start_ms)
            .u64("session_end_ms", self.session_end_ms)
            .u64("clicks", self.clicks)
            .u64("distinct_urls", self.distinct_urls);
    }
}

impl ToJson for ActiveVisitorsRow {
    fn fields(&self, o: &mut JsonObject<'_>) {
        o.u64("window_start_ms", self.window_start_ms)
            .u64("window_end_ms", self.window_end_ms)
            .u64("unique_visitors", self.unique_visitors);
    }
}

impl ToJson for SegmentRow {
    fn fields(&self, o: &mut JsonObject<'_>) {
        o.u64("window_start_ms", self.window_start_ms)
            .u64("window_end_ms", self.window_end_ms)
            .str("segment", &self.segment)
            .u64("sessions", self.sessions)
            .u64("clicks", self.clicks);
    }
}

impl ToJson for TrendingRow {
    fn fields(&self, o: &mut JsonObject<'_>) {
        o.u64("window_start_ms", self.window_start_ms)
            .u64("window_end_ms", self.window_end_ms)
            .str("kind", &self.kind)
            .str("item", &self.item)
            .u64("count", self.count)
            .u64("previous_count", self.previous_count)
            .i64("score", self.score);
    }
}

impl ToJson for LateRow {
    fn fields(&self, o: &mut JsonObject<'_>) {
        o.str("stream", &self.stream)
            .str("visitor_id", &self.visitor_id)
            .u64("ts_ms", self.ts_ms);
    }
}

impl ToJson for DeadLetterRow {
    fn fields(&self, o: &mut JsonObject<'_>) {
        o.str("source", &self.source)
            .u64("partition", u64::from(self.partition))
            .u64("offset", self.offset)
            .str("reason", &self.reason)
            .str("raw", &self.raw);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::Serialize;

    use super::*;

    /// The model: what serde_json writes for the row. The row is written as the job writes it,
    /// into a batch's rows, after another row (so its first field gets no comma from that one).
    fn same_as_serde(row: &(impl ToJson + Serialize)) -> Result<(), TestCaseError> {
        let serde = serde_json::to_string(row).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut rows = JsonRows::new();
        rows.object(|o| {
            o.u64("before", 1);
        });
        row.write_to(&mut rows);
        prop_assert_eq!(rows.get(1), Some(serde.as_str()));
        Ok(())
    }

    proptest! {
        /// Every row type writes the text serde_json gives it, for any field values (strings with
        /// quotes, backslashes, control and non-ASCII characters; numbers at their extremes).
        #[test]
        fn rows_write_what_serde_writes(
            s in "\\PC{0,10}|[\"\\\\\u{0}-\u{1f}/aé]{0,6}",
            t in "\\PC{0,10}",
            (a, b, c) in any::<(u64, u64, u64)>(),
            (r, p) in any::<(u32, u32)>(),
            i in any::<i64>(),
        ) {
            same_as_serde(&PageViewRow { window_start_ms: a, window_end_ms: b, url: s.clone(), count: c })?;
            same_as_serde(&TopPageRow { window_start_ms: a, window_end_ms: b, rank: r, url: s.clone(), count: c })?;
            same_as_serde(&SessionRow { visitor_id: s.clone(), session_start_ms: a, session_end_ms: b, clicks: c, distinct_urls: a ^ c })?;
            same_as_serde(&ActiveVisitorsRow { window_start_ms: a, window_end_ms: b, unique_visitors: c })?;
            same_as_serde(&SegmentRow { window_start_ms: a, window_end_ms: b, segment: s.clone(), sessions: c, clicks: a ^ b })?;
            same_as_serde(&TrendingRow {
                window_start_ms: a, window_end_ms: b, kind: t.clone(), item: s.clone(), count: c, previous_count: a ^ c, score: i,
            })?;
            same_as_serde(&LateRow { stream: t.clone(), visitor_id: s.clone(), ts_ms: a })?;
            same_as_serde(&DeadLetterRow { source: t, partition: p, offset: a, reason: s.clone(), raw: s })?;
        }
    }
}
