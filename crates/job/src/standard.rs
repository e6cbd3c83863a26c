//! The standard clickstream job: seven streams over event time (see the crate docs).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use clickpulse_connectors::ResultBatch;
use clickpulse_engine::event_time::{Aggregator, Session};
use clickpulse_engine::source::{DeadLetter, PartitionedSource};
use clickpulse_engine::{DStream, Data, EngineError, EventTime, Job, Window, Windows};
use clickpulse_events::JsonRow;
use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::click::{Click, IntoClick, SmolStr, TrendKind};
use crate::config::{DistinctCount, JobConfig};
use crate::hashed::HashedStr;
use crate::history::History;
use crate::outputs::Outputs;
use crate::rows::{
    ActiveVisitorsRow, DeadLetterRow, LateRow, PageViewRow, SegmentRow, SessionRow, ToJson,
    TopPageRow, TrendingRow,
};

/// The names of the standard streams, in the order the dashboard lists them.
pub const STREAMS: [&str; 7] = [
    "page_views",
    "page_views_30s",
    "top_pages",
    "sessions",
    "active_visitors",
    "segments",
    "trending",
];

/// The fields of each standard stream's rows (for `/api/streams`).
pub fn stream_fields(stream: &str) -> &'static [&'static str] {
    match stream {
        "page_views" | "page_views_30s" => &["window_start_ms", "window_end_ms", "url", "count"],
        "top_pages" => &["window_start_ms", "window_end_ms", "rank", "url", "count"],
        "sessions" => &[
            "visitor_id",
            "session_start_ms",
            "session_end_ms",
            "clicks",
            "distinct_urls",
        ],
        "active_visitors" => &["window_start_ms", "window_end_ms", "unique_visitors"],
        "segments" => &[
            "window_start_ms",
            "window_end_ms",
            "segment",
            "sessions",
            "clicks",
        ],
        "trending" => &[
            "window_start_ms",
            "window_end_ms",
            "kind",
            "item",
            "count",
            "previous_count",
            "score",
        ],
        "late_events" => &["stream", "visitor_id", "ts_ms"],
        "dead_letters" => &["source", "partition", "offset", "reason", "raw"],
        _ => &[],
    }
}

/// What the job function captures: configuration, outputs, the history table.
#[derive(Debug, Clone)]
pub struct StandardJob {
    /// The configuration.
    pub config: JobConfig,
    /// Where results go.
    pub outputs: Outputs,
    /// The table `segments` joins with.
    pub history: Arc<History>,
}

/// A string as the streams carry it (see [`crate::click`]).
type Str = HashedStr;

/// An event time and a string: the visitor (keyed by url or item) or the url (keyed by visitor).
type Timed = (u64, Str);

/// Clicks and distinct urls of a session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStats {
    clicks: u64,
    urls: UrlSet,
}

/// A session's distinct urls. Most sessions visit a handful, which a short list finds faster than
/// any tree or table (and without an allocation per url); past [`UrlSet::LIST_MAX`] they move
/// to a hash set, so a session of many distinct urls stays linear. The first
/// [`UrlSet::INLINE`] sit in the session's own state: most sessions visit one or two urls, and
/// then their state takes no allocation and no second cache line elsewhere.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum UrlSet {
    /// Up to `LIST_MAX` urls, unordered.
    List(SmallVec<[Str; UrlSet::INLINE]>),
    /// More.
    Set(FxHashSet<Str>),
}

impl Default for UrlSet {
    fn default() -> Self {
        UrlSet::List(SmallVec::new())
    }
}

/// Equal when they hold the same urls, in whatever order or form.
impl PartialEq for UrlSet {
    fn eq(&self, other: &UrlSet) -> bool {
        self.len() == other.len() && self.iter().all(|u| other.contains(u))
    }
}

impl Eq for UrlSet {}

impl UrlSet {
    /// The most urls kept as a list.
    const LIST_MAX: usize = 16;
    /// The most urls kept inline.
    const INLINE: usize = 2;

    /// Adds `url` (once).
    fn insert(&mut self, url: Str) {
        match self {
            UrlSet::List(list) => {
                if list.contains(&url) {
                    return;
                }
                if list.len() < Self::LIST_MAX {
                    list.push(url);
                } else {
                    let mut set: FxHashSet<Str> = list.drain(..).collect();
                    set.insert(url);
                    *self = UrlSet::Set(set);
                }
            }
            UrlSet::Set(set) => {
                set.insert(url);
            }
        }
    }

    /// Adds every url of `other`.
    fn extend(&mut self, other: UrlSet) {
        match other {
            UrlSet::List(list) => list.into_iter().for_each(|u| self.insert(u)),
            UrlSet::Set(set) => set.into_iter().for_each(|u| self.insert(u)),
        }
    }

    /// How many distinct urls.
    fn len(&self) -> usize {
        match self {
            UrlSet::List(list) => list.len(),
            UrlSet::Set(set) => set.len(),
        }
    }

    /// Whether `url` is one of them.
    fn contains(&self, url: &Str) -> bool {
        match self {
            UrlSet::List(list) => list.contains(url),
            UrlSet::Set(set) => set.contains(url),
        }
    }

    /// The urls, in no particular order.
    fn iter(&self) -> impl Iterator<Item = &Str> {
        let (list, set) = match self {
            UrlSet::List(list) => (Some(list.iter()), None),
            UrlSet::Set(set) => (None, Some(set.iter())),
        };
        list.into_iter().flatten().chain(set.into_iter().flatten())
    }
}

#[derive(Debug, Clone, Copy)]
struct SessionAgg;

impl Aggregator<(u64, Str)> for SessionAgg {
    type Acc = SessionStats;
    fn init(&self) -> SessionStats {
        SessionStats::default()
    }
    fn add(&self, acc: &mut SessionStats, (_, url): (u64, Str)) {
        acc.clicks += 1;
        acc.urls.insert(url);
    }
    fn merge(&self, acc: &mut SessionStats, other: SessionStats) {
        acc.clicks += other.clicks;
        acc.urls.extend(other.urls);
    }
}

/// Sessions and clicks, summed.
#[derive(Debug, Clone, Copy)]
struct SegmentAgg;

impl Aggregator<(u64, u64)> for SegmentAgg {
    type Acc = (u64, u64);
    fn init(&self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&self, acc: &mut (u64, u64), (_, clicks): (u64, u64)) {
        acc.0 += 1;
        acc.1 += clicks;
    }
    fn merge(&self, acc: &mut (u64, u64), other: (u64, u64)) {
        acc.0 += other.0;
        acc.1 += other.1;
    }
}

/// Counts per pane (window-sized slice of time), for comparing a window with the one before.
#[derive(Debug, Clone, Copy)]
struct PaneCounts {
    pane_ms: u64,
}

impl Aggregator<(u64, Str)> for PaneCounts {
    type Acc = BTreeMap<u64, u64>;
    fn init(&self) -> BTreeMap<u64, u64> {
        BTreeMap::new()
    }
    fn add(&self, acc: &mut BTreeMap<u64, u64>, (ts, _visitor): (u64, Str)) {
        *acc.entry(ts / self.pane_ms).or_default() += 1;
    }
    fn merge(&self, acc: &mut BTreeMap<u64, u64>, other: BTreeMap<u64, u64>) {
        for (pane, n) in other {
            *acc.entry(pane).or_default() += n;
        }
    }
}

/// The worker (modulo the number of workers) that merges and writes `stream`'s batches: the
/// streams alternate in [`STREAMS`] order, so the two largest (`page_views` and `sessions`) fall
/// to different workers of two.
fn output_worker(stream: &str) -> usize {
    let known = STREAMS.iter().position(|s| *s == stream);
    // `late_events` and `dead_letters` after the seven.
    known.unwrap_or(STREAMS.len() + usize::from(stream == "dead_letters"))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl StandardJob {
    /// Builds the seven standard streams over `source` on one worker, with their outputs.
    /// `source` gives whole [`ClickEvent`](clickpulse_events::ClickEvent)s (projected to
    /// [`Click`]s as they are read) or clicks already (the embedded log decodes its records
    /// straight into them with [`Click::decode`]).
    ///
    /// # Errors
    /// [`EngineError`] for an invalid window setting or a source that cannot be opened.
    pub fn build<'s, S>(&self, job: &mut Job<'s>, source: &S) -> Result<(), EngineError>
    where
        S: PartitionedSource + Clone,
        S::Item: IntoClick,
    {
        let cfg = &self.config;
        let event_time = EventTime::new(|c: &Click| c.ts_ms)
            .allowed_lateness(cfg.input.allowed_lateness)
            .idle_timeout(cfg.input.idle_timeout);
        // Projected as it is read: only the narrow click is ever buffered or copied.
        let clicks_source = source.clone().map_items(IntoClick::into_click);
        let (clicks, dead) = job.source_with_dead_letters(&clicks_source, Some(event_time))?;
        self.dead_letters(&dead);
        // One pass over the clicks gives each group of streams only the fields it reads.
        let (views, visits, visitors, trends) = clicks.fan_out4(
            |c: Click,
             views: &mut Vec<(Str, Timed)>,
             visits: &mut Vec<(Str, Timed)>,
             visitors: &mut Vec<(Str, u64)>,
             trends: &mut Vec<((TrendKind, Str), Timed)>| {
                if c.page_view {
                    views.push((c.url.clone(), (c.ts_ms, c.visitor.clone())));
                }
                if let Some(item) = c.trend {
                    trends.push((item, (c.ts_ms, c.visitor.clone())));
                }
                visitors.push((c.visitor.clone(), c.ts_ms));
                visits.push((c.visitor, (c.ts_ms, c.url)));
            },
        );
        let mut late = self.page_views(&views)?;
        late.push(self.sessions_and_segments(&visits)?);
        late.push(self.active_visitors(&visitors)?);
        late.push(self.trending(&trends)?);
        // One `late_events` batch per engine batch, whichever streams refused the clicks.
        self.publish(
            "late_events",
            &job.union_all(late)?,
            |r: LateRow| (r.clone(), r),
            |_| None,
        );
        Ok(())
    }

    /// A stream's refused clicks as `late_events` rows.
    fn late<'s, K: Data, V: Data>(
        stream: &'static str,
        late: &DStream<'s, (K, V)>,
        row: fn(K, V) -> (Str, u64),
    ) -> DStream<'s, LateRow> {
        late.map(move |(k, v)| {
            let (visitor, ts_ms) = row(k, v);
            LateRow {
                stream: stream.to_string(),
                visitor_id: visitor.to_string(),
                ts_ms,
            }
        })
    }

    /// Publishes `stream`'s records to the outputs, in the order of the keys `row` gives them.
    ///
    /// Each worker turns its own records into rows, serialises and sorts them, and hands the
    /// stream's output worker ([`output_worker`]) one sorted run; that worker only merges the runs
    /// and hands the rows to the sinks.
    fn publish<T: Data, K: Data + Ord, R: ToJson>(
        &self,
        stream: &'static str,
        records: &DStream<'_, T>,
        row: impl Fn(T) -> (K, R) + 'static,
        window: impl Fn(&R) -> Option<(u64, u64)> + 'static,
    ) {
        let runs = records.map_partitions(move |_batch, records| {
            let mut rows: Vec<(K, Option<(u64, u64)>, JsonRow)> = records
                .into_iter()
                .map(|record| {
                    let (key, row) = row(record);
                    (key, window(&row), row.to_json())
                })
                .collect();
            if rows.is_empty() {
                return Vec::new();
            }
            // In place, without the stable sort's buffer: rows with equal keys are equal rows
            // (every stream's key is unique to its row, or the row itself).
            rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            vec![rows]
        });
        let out = self.outputs.clone();
        runs.foreach_batch_on(output_worker(stream), move |info, runs| {
            let mut rows: Vec<_> = runs.into_iter().flatten().collect();
            if rows.is_empty() {
                return;
            }
            // The runs are sorted: the stable sort finds them and merges them in linear time.
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            let bounds = rows.iter().filter_map(|r| r.1);
            let start = bounds.clone().map(|b| b.0).min();
            let end = bounds.map(|b| b.1).max();
            out.write(ResultBatch {
                stream: stream.to_string(),
                batch: info.batch,
                window_start_ms: start,
                window_end_ms: end,
                rows: rows.into_iter().map(|r| r.2).collect(),
            });
        });
    }

    fn dead_letters(&self, dead: &DStream<'_, DeadLetter>) {
        let row = |d: DeadLetter| {
            let key = (d.source.clone(), d.partition, d.offset);
            let row = DeadLetterRow {
                source: d.source,
                partition: d.partition,
                offset: d.offset,
                reason: d.reason,
                raw: String::from_utf8_lossy(&d.raw).into_owned(),
            };
            (key, row)
        };
        self.publish("dead_letters", dead, row, |_| None);
    }

    /// `page_views`, `page_views_30s` and `top_pages` from page views keyed by url (the visitor
    /// rides along for the late stream).
    fn page_views<'s>(
        &self,
        views: &DStream<'s, (Str, Timed)>,
    ) -> Result<Vec<DStream<'s, LateRow>>, EngineError> {
        let s = &self.config.streams;
        let ts = |v: &(u64, Str)| v.0;
        let per_second =
            views.count_by_key_in_window(Windows::tumbling(s.page_views_window)?, ts)?;
        self.publish_page_views("page_views", &per_second.output);
        let sliding = Windows::sliding(s.page_views_30s_window, s.page_views_30s_slide)?;
        let per_30s = views.count_by_key_in_window(sliding, ts)?;
        self.publish_page_views("page_views_30s", &per_30s.output);
        let url_late = |_url: Str, (t, v): (u64, Str)| (v, t);
        let late = vec![
            Self::late("page_views", &per_second.late, url_late),
            Self::late("page_views_30s", &per_30s.late, url_late),
        ];

        let top = per_30s
            .output
            .map(|(url, w, count)| (w, (url, count)))
            .top_n_by_key(s.top_n, |v: &(Str, u64)| v.1);
        let row = |(w, (rank, (url, count))): (Window, (u32, (Str, u64)))| {
            let row = TopPageRow {
                window_start_ms: w.start_ms,
                window_end_ms: w.end_ms,
                rank,
                url,
                count,
            };
            ((w.start_ms, rank), row)
        };
        self.publish("top_pages", &top, row, |r| {
            Some((r.window_start_ms, r.window_end_ms))
        });
        Ok(late)
    }

    fn publish_page_views(&self, stream: &'static str, counts: &DStream<'_, (Str, Window, u64)>) {
        let row = |(url, w, count): (Str, Window, u64)| {
            let row = PageViewRow {
                window_start_ms: w.start_ms,
                window_end_ms: w.end_ms,
                url: url.clone(),
                count,
            };
            ((w, url), row)
        };
        self.publish(stream, counts, row, |r| {
            Some((r.window_start_ms, r.window_end_ms))
        });
    }

    /// `sessions` and `segments` from clicks keyed by visitor, with their urls.
    fn sessions_and_segments<'s>(
        &self,
        visits: &DStream<'s, (Str, Timed)>,
    ) -> Result<DStream<'s, LateRow>, EngineError> {
        let s = &self.config.streams;
        let sessions = visits.session_by_key(s.session_gap, |v: &(u64, Str)| v.0, SessionAgg)?;
        let late = Self::late("sessions", &sessions.late, |v, (t, _url)| (v, t));
        let row = |(visitor, session, stats): (Str, Session, SessionStats)| {
            let row = SessionRow {
                visitor_id: visitor.clone(),
                session_start_ms: session.start_ms,
                session_end_ms: session.end_ms,
                clicks: stats.clicks,
                distinct_urls: stats.urls.len() as u64,
            };
            ((session.end_ms, visitor), row)
        };
        self.publish("sessions", &sessions.output, row, |r| {
            Some((r.session_start_ms, r.session_end_ms))
        });

        // A session closes once the watermark passes its last click plus the gap: windows over the
        // last click must wait that long too, or every session would be late for them.
        let mut history = self.history.reader();
        let by_segment = sessions.output.delay_watermark(s.session_gap)?.map(
            move |(visitor, session, stats)| {
                (history.segment_of(&visitor), (session.end_ms, stats.clicks))
            },
        );
        let segments = by_segment.aggregate_by_key_in_window(
            Windows::tumbling(s.segments_window)?,
            |v: &(u64, u64)| v.0,
            SegmentAgg,
        )?;
        let row = |(segment, w, (sessions, clicks)): (SmolStr, Window, (u64, u64))| {
            let row = SegmentRow {
                window_start_ms: w.start_ms,
                window_end_ms: w.end_ms,
                segment: segment.to_string(),
                sessions,
                clicks,
            };
            ((w, segment), row)
        };
        self.publish("segments", &segments.output, row, |r| {
            Some((r.window_start_ms, r.window_end_ms))
        });
        Ok(late)
    }

    /// `active_visitors` from each click's visitor and time.
    fn active_visitors<'s>(
        &self,
        visitors: &DStream<'s, (Str, u64)>,
    ) -> Result<DStream<'s, LateRow>, EngineError> {
        let s = &self.config.streams;
        let window = Windows::tumbling(s.active_visitors_window)?;
        let active = match s.active_visitors_count {
            DistinctCount::Exact => visitors.distinct_count_in_window(window, |t: &u64| *t)?,
            DistinctCount::Hll => visitors.approx_distinct_count_in_window(
                window,
                |t: &u64| *t,
                s.active_visitors_hll_precision,
            )?,
        };
        let late = Self::late("active_visitors", &active.late, |v, t| (v, t));
        let row = |(w, n): (Window, u64)| {
            let row = ActiveVisitorsRow {
                window_start_ms: w.start_ms,
                window_end_ms: w.end_ms,
                unique_visitors: n,
            };
            (w, row)
        };
        self.publish("active_visitors", &active.output, row, |r| {
            Some((r.window_start_ms, r.window_end_ms))
        });
        Ok(late)
    }

    /// `trending` from the clicks that count for it, keyed by item (the visitor rides along for
    /// the late stream).
    fn trending<'s>(
        &self,
        trends: &DStream<'s, ((TrendKind, Str), Timed)>,
    ) -> Result<DStream<'s, LateRow>, EngineError> {
        let s = &self.config.streams;
        let pane_ms = ms(s.trending_window);
        // A window of two panes sliding by one: it closes exactly when its second pane (the
        // current window) closes, holding the previous window's count beside the current one.
        let pairs = Windows::sliding(s.trending_window * 2, s.trending_window)?;
        let counts = trends.aggregate_by_key_in_window(
            pairs,
            |v: &(u64, Str)| v.0,
            PaneCounts { pane_ms },
        )?;
        let top = counts
            .output
            .flat_map(move |((kind, item), w, panes)| {
                let first = w.start_ms / pane_ms;
                let previous = panes.get(&first).copied().unwrap_or(0);
                let count = panes.get(&(first + 1)).copied().unwrap_or(0);
                let score = i64::try_from(count).unwrap_or(i64::MAX)
                    - i64::try_from(previous).unwrap_or(i64::MAX);
                let current = Window {
                    start_ms: w.start_ms + pane_ms,
                    end_ms: w.end_ms,
                };
                (score > 0).then_some(((current, kind), (item, count, previous, score)))
            })
            .top_n_by_key(s.trending_top, |v: &(Str, u64, u64, i64)| v.3);
        let row = |((w, kind), (_rank, (item, count, previous_count, score))): (
            (Window, TrendKind),
            (u32, (Str, u64, u64, i64)),
        )| {
            let row = TrendingRow {
                window_start_ms: w.start_ms,
                window_end_ms: w.end_ms,
                kind: kind.name().to_string(),
                item: item.to_string(),
                count,
                previous_count,
                score,
            };
            ((w.start_ms, kind, std::cmp::Reverse(score), item), row)
        };
        self.publish("trending", &top, row, |r| {
            Some((r.window_start_ms, r.window_end_ms))
        });
        Ok(Self::late("trending", &counts.late, |_item, (t, v)| (v, t)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::{Str, UrlSet};

    /// Inserts `urls` into a set and into a plain `BTreeSet` (the model) and compares them.
    fn check(urls: &[String]) -> UrlSet {
        let mut set = UrlSet::default();
        let mut model = BTreeSet::new();
        for u in urls {
            set.insert(Str::new(u));
            model.insert(u.as_str());
            assert_eq!(set.len(), model.len());
        }
        let got: BTreeSet<&str> = set.iter().map(Str::as_str).collect();
        assert_eq!(got, model);
        assert!(model.iter().all(|u| set.contains(&Str::new(u))));
        set
    }

    #[test]
    fn url_sets_count_distinct_urls_as_lists_and_past_the_list_limit() {
        // Repeats within the list, at its limit, and after it has become a hash set.
        for n in [
            0,
            1,
            UrlSet::LIST_MAX - 1,
            UrlSet::LIST_MAX,
            3 * UrlSet::LIST_MAX,
        ] {
            let urls: Vec<String> = (0..2 * n)
                .map(|i| format!("/u{}", (i * 7) % n.max(1)))
                .collect();
            let set = check(&urls);
            let is_list = matches!(set, UrlSet::List(_));
            assert_eq!(is_list, n <= UrlSet::LIST_MAX, "{n} urls");
        }
    }

    #[test]
    fn merged_url_sets_hold_the_union_and_compare_by_content() {
        let a: Vec<String> = (0..30).map(|i| format!("/a{i}")).collect();
        let b: Vec<String> = (20..25)
            .map(|i| format!("/a{i}"))
            .chain(["/b".into()])
            .collect();
        for (x, y) in [(&a, &b), (&b, &a)] {
            let mut merged = check(x);
            merged.extend(check(y));
            let all: Vec<String> = x.iter().chain(y.iter()).cloned().collect();
            assert_eq!(merged, check(&all));
            assert_eq!(merged.len(), 31);
        }
        let forward = check(&b);
        let backward = check(&b.iter().rev().cloned().collect::<Vec<_>>());
        assert_eq!(forward, backward);
        assert_ne!(forward, check(&b[1..]));
    }
}
