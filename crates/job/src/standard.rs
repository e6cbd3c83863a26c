//! The standard clickstream job: seven streams over event time (see the crate docs).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use clickpulse_connectors::ResultBatch;
use clickpulse_engine::event_time::{Aggregator, EventTimeOutput, Session};
use clickpulse_engine::source::{DeadLetter, PartitionedSource};
use clickpulse_engine::{DStream, Data, EngineError, EventTime, Job, Key, Window, Windows};
use clickpulse_events::JsonRows;
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

impl Aggregator<Tally> for PaneCounts {
    type Acc = BTreeMap<u64, u64>;
    fn init(&self) -> BTreeMap<u64, u64> {
        BTreeMap::new()
    }
    fn add(&self, acc: &mut BTreeMap<u64, u64>, t: Tally) {
        *acc.entry(t.ts_ms / self.pane_ms).or_default() += t.count;
    }
    fn merge(&self, acc: &mut BTreeMap<u64, u64>, other: BTreeMap<u64, u64>) {
        for (pane, n) in other {
            *acc.entry(pane).or_default() += n;
        }
    }
}

/// Clicks at an event time, as the streams counted from `page_views`' finer windows take them:
/// either a closed `page_views` window's count (at the window's start) or one click that window
/// refused as late, with its visitor, so that a coarser window refusing it too can report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Tally {
    ts_ms: u64,
    count: u64,
    /// The visitor of a single click; `None` for a window's count.
    visitor: Option<Str>,
}

impl Tally {
    /// One click.
    fn click(ts_ms: u64, visitor: Str) -> Tally {
        Tally {
            ts_ms,
            count: 1,
            visitor: Some(visitor),
        }
    }

    /// As a late row's (visitor, time). A window's count is never late: `page_views` emits it in
    /// the batch whose watermark passes the window's end, which is before the end of every
    /// coarser window holding it (see [`StandardJob::page_views`]); the empty visitor is there
    /// only so that the types close.
    fn late(self) -> (Str, u64) {
        debug_assert!(
            self.visitor.is_some(),
            "a window's count came late: {self:?}"
        );
        (self.visitor.unwrap_or_else(|| Str::new("")), self.ts_ms)
    }
}

/// Sums tallies.
#[derive(Debug, Clone, Copy)]
struct SumTally;

impl Aggregator<Tally> for SumTally {
    type Acc = u64;
    fn init(&self) -> u64 {
        0
    }
    fn add(&self, acc: &mut u64, t: Tally) {
        *acc += t.count;
    }
    fn merge(&self, acc: &mut u64, other: u64) {
        *acc += other;
    }
}

/// A window count's closed windows, each as a [`Tally`] at its start, and the clicks it refused as
/// late, one by one, keyed as they were.
fn tallies<'s, K: Key>(
    counts: &EventTimeOutput<'s, (K, Window, u64), (K, Timed)>,
) -> DStream<'s, (K, Tally)> {
    let windows = counts.output.map(|(key, w, count)| {
        let tally = Tally {
            ts_ms: w.start_ms,
            count,
            visitor: None,
        };
        (key, tally)
    });
    let late = counts
        .late
        .map(|(key, (t, visitor))| (key, Tally::click(t, visitor)));
    windows.union(&late)
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

/// The most text reserved per row ahead of a batch (see [`StandardJob::publish`]).
const MAX_ROW_BYTES: usize = 512;

/// One worker's rows of a stream in a batch: their texts, the keys they are published in the
/// order of, and the earliest window start and latest window end among them.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Run<K> {
    keys: Vec<K>,
    rows: JsonRows,
    bounds: Option<(u64, u64)>,
}

impl<K: Ord> Run<K> {
    /// Room for `rows` rows of about `row_bytes` bytes of text each.
    fn with_capacity(rows: usize, row_bytes: usize) -> Self {
        Run {
            keys: Vec::with_capacity(rows),
            rows: JsonRows::with_capacity(rows, rows.saturating_mul(row_bytes)),
            bounds: None,
        }
    }

    /// The rows in the order of their keys. Most streams' operators emit them in order already,
    /// which is only checked; the others are sorted by key, with each row's text copied once.
    fn sorted(self) -> Self {
        if self.keys.is_sorted() {
            return self;
        }
        let mut order: Vec<(K, usize)> = self.keys.into_iter().zip(0..).collect();
        // By key, and rows of equal keys (equal rows, as every stream's key is unique to its row
        // or the row itself) in the order they were written: the unstable sort on (key, index)
        // is as cheap as on the key and gives one order.
        order.sort_unstable();
        let rows = self.rows.reordered(order.iter().map(|o| o.1));
        Run {
            keys: order.into_iter().map(|o| o.0).collect(),
            rows,
            bounds: self.bounds,
        }
    }
}

/// The workers' sorted runs merged into one batch of rows, in key order.
fn merge<K: Ord>(mut runs: Vec<Run<K>>) -> JsonRows {
    runs.retain(|r| !r.keys.is_empty());
    if runs.len() <= 1 {
        return runs.pop().map(|r| r.rows).unwrap_or_default();
    }
    let rows = runs.iter().map(|r| r.rows.len()).sum();
    let bytes = runs.iter().map(|r| r.rows.text_len()).sum();
    let mut merged = JsonRows::with_capacity(rows, bytes);
    // The next row of each run; a run is done when it reaches its end. Runs are as many as the
    // workers: finding the least head by a scan is cheaper than a heap.
    let mut next = vec![0; runs.len()];
    loop {
        let mut least: Option<(usize, &K)> = None;
        for (r, run) in runs.iter().enumerate() {
            if let Some(key) = next.get(r).and_then(|&i| run.keys.get(i))
                && least.is_none_or(|(_, k)| key < k)
            {
                least = Some((r, key));
            }
        }
        let Some((r, _)) = least else {
            break;
        };
        if let (Some(run), Some(i)) = (runs.get(r), next.get_mut(r)) {
            merged.push_from(&run.rows, *i);
            *i += 1;
        }
    }
    merged
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
        let (clicks, dead) = S::Item::read_clicks(job, source, event_time)?;
        self.dead_letters(&dead);
        // One pass over the clicks gives each group of streams only the fields it reads.
        // Pages trend by the counts `page_views` closes, when its windows fit in trending's.
        let pages_trend_by_window = cfg.streams.trending_window_fits_page_views();
        let (views, visits, visitors, trends) = clicks.fan_out4(
            move |c: Click,
                  views: &mut Vec<(Str, Timed)>,
                  visits: &mut Vec<(Str, Timed)>,
                  visitors: &mut Vec<(Str, u64)>,
                  trends: &mut Vec<((TrendKind, Str), Tally)>| {
                if c.page_view {
                    views.push((c.url.clone(), (c.ts_ms, c.visitor.clone())));
                }
                if let Some(item) = c.trend
                    && !(pages_trend_by_window && item.0 == TrendKind::Page)
                {
                    trends.push((item, Tally::click(c.ts_ms, c.visitor.clone())));
                }
                visitors.push((c.visitor.clone(), c.ts_ms));
                visits.push((c.visitor, (c.ts_ms, c.url)));
            },
        );
        let (mut late, page_tallies) = self.page_views(&views)?;
        late.push(self.sessions_and_segments(&visits)?);
        late.push(self.active_visitors(&visitors)?);
        let trends = match page_tallies {
            Some(pages) => trends.union(&pages.map(|(url, t)| ((TrendKind::Page, url), t))),
            None => trends,
        };
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
        // Text to reserve per row: the last batch's mean row, a little over, but no more than
        // `MAX_ROW_BYTES` (a batch of one large dead letter must not make the next batch reserve
        // its size for every row; longer rows simply grow the text).
        let row_bytes = std::cell::Cell::new(128);
        let runs = records.map_partitions(move |_batch, records| {
            let mut run = Run::with_capacity(records.len(), row_bytes.get());
            for record in records {
                let (key, row) = row(record);
                if let Some((start, end)) = window(&row) {
                    let (s, e) = run.bounds.get_or_insert((start, end));
                    (*s, *e) = ((*s).min(start), (*e).max(end));
                }
                row.write_to(&mut run.rows);
                run.keys.push(key);
            }
            if run.keys.is_empty() {
                return Vec::new();
            }
            row_bytes.set((run.rows.text_len() / run.rows.len() + 8).min(MAX_ROW_BYTES));
            vec![run.sorted()]
        });
        let out = self.outputs.clone();
        runs.try_foreach_batch_on(output_worker(stream), stream, move |info, runs| {
            let start = runs.iter().filter_map(|r| r.bounds.map(|b| b.0)).min();
            let end = runs.iter().filter_map(|r| r.bounds.map(|b| b.1)).max();
            let rows = merge(runs);
            if rows.is_empty() {
                return Ok(());
            }
            out.write(ResultBatch {
                stream: stream.to_string(),
                batch: info.batch,
                window_start_ms: start,
                window_end_ms: end,
                rows,
            })
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
    /// rides along for the late stream). When `trending` counts pages from `page_views`' windows,
    /// also returns those closed windows and refused clicks as [`Tally`]s by url.
    ///
    /// When `page_views`' windows fit in `page_views_30s`' slide, `page_views_30s` counts the
    /// closed `page_views` windows (each at its start) and the clicks they refused as late, instead
    /// of every view again; the same for `trending`'s pages. That gives the same rows and late
    /// events as counting every view:
    /// - every window of `page_views` lies in one pane of the coarser windows, so a view that is
    ///   not late for `page_views` is not late for them (an event is late when the first window
    ///   holding it ends at or before the watermark), and one it refuses goes on to them as a
    ///   single click, to be counted or refused by their own rule;
    /// - a `page_views` window is emitted in the batch whose watermark first reaches its end, so
    ///   its count reaches the coarser windows, whose panes end no earlier, before the watermark
    ///   did (never late), and in time for every window holding it, which closes in that batch
    ///   or later.
    fn page_views<'s>(
        &self,
        views: &DStream<'s, (Str, Timed)>,
    ) -> Result<(Vec<DStream<'s, LateRow>>, Option<DStream<'s, (Str, Tally)>>), EngineError> {
        let s = &self.config.streams;
        let ts = |v: &(u64, Str)| v.0;
        let per_second =
            views.count_by_key_in_window(Windows::tumbling(s.page_views_window)?, ts)?;
        self.publish_page_views("page_views", &per_second.output);
        let from_tallies = s.page_views_30s_slide_fits_page_views();
        let for_trending = s.trending_window_fits_page_views();
        let tallies = (from_tallies || for_trending).then(|| tallies(&per_second));
        let sliding = Windows::sliding(s.page_views_30s_window, s.page_views_30s_slide)?;
        let (per_30s, late_30s) = match &tallies {
            Some(tallies) if from_tallies => {
                let counts = tallies.aggregate_by_key_in_window(sliding, |t| t.ts_ms, SumTally)?;
                let late = Self::late("page_views_30s", &counts.late, |_url, t: Tally| t.late());
                (counts.output, late)
            }
            _ => {
                let counts = views.count_by_key_in_window(sliding, ts)?;
                let late = Self::late("page_views_30s", &counts.late, |_url, (t, v)| (v, t));
                (counts.output, late)
            }
        };
        self.publish_page_views("page_views_30s", &per_30s);
        let url_late = |_url: Str, (t, v): (u64, Str)| (v, t);
        let late = vec![
            Self::late("page_views", &per_second.late, url_late),
            late_30s,
        ];

        let top = per_30s
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
        Ok((late, tallies.filter(|_| for_trending)))
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
        // One pass hands each closed session to its row and to `segments`, moving the session
        // (its url set may be on the heap) instead of copying it for a second reader.
        let mut history = self.history.reader();
        let (closed, by_segment) = sessions.output.fan_out2(
            move |(visitor, session, stats): (Str, Session, SessionStats),
                  closed: &mut Vec<(Str, Session, u64, u64)>,
                  by_segment: &mut Vec<(SmolStr, (u64, u64))>| {
                let segment = history.segment_of(&visitor);
                by_segment.push((segment, (session.end_ms, stats.clicks)));
                closed.push((visitor, session, stats.clicks, stats.urls.len() as u64));
            },
        );
        let row = |(visitor, session, clicks, distinct_urls): (Str, Session, u64, u64)| {
            let row = SessionRow {
                visitor_id: visitor.clone(),
                session_start_ms: session.start_ms,
                session_end_ms: session.end_ms,
                clicks,
                distinct_urls,
            };
            ((session.end_ms, visitor), row)
        };
        self.publish("sessions", &closed, row, |r| {
            Some((r.session_start_ms, r.session_end_ms))
        });

        // A session closes once the watermark passes its last click plus the gap: windows over the
        // last click must wait that long too, or every session would be late for them.
        let by_segment = by_segment.delay_watermark(s.session_gap)?;
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
    /// the late stream), and, when [`StandardJob::page_views`] says they fit, from `page_views`'
    /// windows in place of single page views.
    fn trending<'s>(
        &self,
        trends: &DStream<'s, ((TrendKind, Str), Tally)>,
    ) -> Result<DStream<'s, LateRow>, EngineError> {
        let s = &self.config.streams;
        let pane_ms = ms(s.trending_window);
        // A window of two panes sliding by one: it closes exactly when its second pane (the
        // current window) closes, holding the previous window's count beside the current one.
        let pairs = Windows::sliding(s.trending_window * 2, s.trending_window)?;
        let counts = trends.aggregate_by_key_in_window(
            pairs,
            |t: &Tally| t.ts_ms,
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
        Ok(Self::late("trending", &counts.late, |_item, t: Tally| {
            t.late()
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use clickpulse_engine::testing::collect_event_time;
    use clickpulse_engine::{DStream, Window, Windows};
    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    use clickpulse_events::JsonRows;

    use super::{PaneCounts, Run, Str, SumTally, Tally, Timed, UrlSet, merge, tallies};

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

    /// What [`both_ways`] sees, from counting every click (`false`) or from the finer windows'
    /// tallies (`true`).
    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
    enum Seen {
        Count(Str, Window, u64),
        Panes(Str, Window, BTreeMap<u64, u64>),
        /// A late click of the coarse count (0) or of the pane counts (1): visitor and time.
        Late(u8, Str, u64),
    }

    /// Counts `views` over `coarse` windows and over pairs of `pane_ms` panes (as `trending`
    /// does) both from every view and from the tallies of a `fine` count.
    fn both_ways<'s>(
        views: &DStream<'s, (Str, Timed)>,
        fine: Windows,
        coarse: Windows,
        pane_ms: u64,
    ) -> DStream<'s, (bool, Seen)> {
        let ts = |v: &(u64, Str)| v.0;
        let tally_ts = |t: &Tally| t.ts_ms;
        let tallied = tallies(&views.count_by_key_in_window(fine, ts).unwrap());
        let clicks = views.map(|(url, (t, visitor))| (url, Tally::click(t, visitor)));
        let pairs = Windows::sliding(
            std::time::Duration::from_millis(2 * pane_ms),
            std::time::Duration::from_millis(pane_ms),
        )
        .unwrap();
        let panes = PaneCounts { pane_ms };
        let mut seen = Vec::new();
        for (derived, input) in [(false, &clicks), (true, &tallied)] {
            let counts = input
                .aggregate_by_key_in_window(coarse, tally_ts, SumTally)
                .unwrap();
            let pane_counts = input
                .aggregate_by_key_in_window(pairs, tally_ts, panes)
                .unwrap();
            seen.push(
                counts
                    .output
                    .map(move |(u, w, n)| (derived, Seen::Count(u, w, n))),
            );
            seen.push(
                pane_counts
                    .output
                    .map(move |(u, w, p)| (derived, Seen::Panes(u, w, p))),
            );
            for (which, late) in [(0, counts.late), (1, pane_counts.late)] {
                seen.push(late.map(move |(_url, t): (Str, Tally)| {
                    let (visitor, ts) = t.late();
                    (derived, Seen::Late(which, visitor, ts))
                }));
            }
        }
        let first = seen.remove(0);
        seen.iter().fold(first, |all, s| all.union(s))
    }

    /// Clicks `(url, visitor, ts)` per batch per partition: times wander forward with the
    /// batches and back within them, so that some clicks are late for the finer windows only,
    /// some for the coarser ones too.
    fn partitions() -> impl Strategy<Value = Vec<Vec<Vec<(Str, Timed)>>>> {
        let click = (0u8..3, 0u8..4, 0u64..12_000);
        let batch = prop::collection::vec(click, 0..10);
        let partition = prop::collection::vec(batch, 1..7);
        prop::collection::vec(partition, 1..3).prop_map(|parts| {
            parts
                .into_iter()
                .map(|batches| {
                    batches
                        .into_iter()
                        .enumerate()
                        .map(|(b, clicks)| {
                            clicks
                                .into_iter()
                                .map(|(u, v, dt)| {
                                    let t = 3_000 * b as u64 + dt;
                                    (Str::new(&format!("/u{u}")), (t, Str::new(&format!("v{v}"))))
                                })
                                .collect()
                        })
                        .collect()
                })
                .collect()
        })
    }

    proptest! {
        /// Runs of rows in any order, sorted each and merged, give every row once, in key order
        /// (the model: all the rows sorted), whether each run came in order or not.
        #[test]
        fn sorted_runs_merge_into_key_order(
            runs in prop::collection::vec(
                (prop::collection::vec((0u32..50, any::<bool>()), 0..30), any::<bool>()), 0..4,
            ),
        ) {
            let mut model: Vec<(u32, bool)> = Vec::new();
            let made: Vec<Run<(u32, bool)>> = runs
                .into_iter()
                .map(|(mut keys, sort_first)| {
                    if sort_first {
                        keys.sort_unstable();
                    }
                    model.extend(keys.iter().copied());
                    let mut run = Run::with_capacity(keys.len(), 8);
                    for (n, flag) in &keys {
                        run.rows.object(|o| {
                            o.u64("n", u64::from(*n)).str("flag", if *flag { "y" } else { "n" });
                        });
                    }
                    run.keys = keys;
                    run.sorted()
                })
                .collect();
            for run in &made {
                prop_assert!(run.keys.is_sorted());
                prop_assert_eq!(run.keys.len(), run.rows.len());
            }
            model.sort_unstable();
            let expected: Vec<serde_json::Value> = model
                .iter()
                .map(|(n, flag)| serde_json::json!({"n": n, "flag": if *flag { "y" } else { "n" }}))
                .collect();
            let merged: JsonRows = merge(made);
            prop_assert_eq!(merged.to_values(), expected);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Coarser windows counted from a finer count's closed windows and refused clicks have
        /// the same rows, in the same batches, and the same late clicks as counted from every
        /// click, with 1 and 2 workers (the rule `page_views_30s` and `trending` rely on).
        #[test]
        fn coarser_windows_from_finer_counts_equal_counting_every_click(
            parts in partitions(),
            fine_s in 1u64..3,
            slide_panes in 1u64..4,
            size_slides in 1u64..4,
            trend_panes in 1u64..4,
        ) {
            let ms = std::time::Duration::from_millis;
            let fine = Windows::tumbling(ms(fine_s * 1000)).unwrap();
            let slide = fine_s * 1000 * slide_panes;
            let coarse = Windows::sliding(ms(slide * size_slides), ms(slide)).unwrap();
            let pane_ms = fine_s * 1000 * trend_panes;
            let mut by_workers = Vec::new();
            for workers in [1, 2] {
                let batches = collect_event_time(
                    workers,
                    parts.clone(),
                    |c: &(Str, Timed)| c.1.0,
                    move |views| both_ways(&views, fine, coarse, pane_ms),
                )
                .unwrap();
                let mut late = 0;
                for (b, seen) in batches.iter().enumerate() {
                    let side = |derived: bool| -> Vec<&Seen> {
                        seen.iter().filter(|s| s.0 == derived).map(|s| &s.1).collect()
                    };
                    prop_assert_eq!(side(false), side(true), "batch {}", b);
                    late += side(false).iter().filter(|s| matches!(s, Seen::Late(..))).count();
                }
                by_workers.push((batches, late));
            }
            prop_assert_eq!(&by_workers[0], &by_workers[1]);
        }
    }

    /// The generated clicks do make some clicks late for the coarse windows and others late for
    /// the finer ones only (or the property above would hold trivially).
    #[test]
    fn generated_clicks_are_late_for_finer_windows_only_often_enough() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let fine = Windows::tumbling(std::time::Duration::from_secs(1)).unwrap();
        let coarse = Windows::sliding(
            std::time::Duration::from_secs(6),
            std::time::Duration::from_secs(3),
        )
        .unwrap();
        let mut runner = TestRunner::deterministic();
        let (mut fine_only, mut coarse_too) = (0, 0);
        for _ in 0..20 {
            let parts = partitions().new_tree(&mut runner).unwrap().current();
            let batches = collect_event_time(
                1,
                parts,
                |c: &(Str, Timed)| c.1.0,
                move |views| {
                    let ts = |v: &(u64, Str)| v.0;
                    let fine_late = views.count_by_key_in_window(fine, ts).unwrap().late;
                    let coarse_late = views.count_by_key_in_window(coarse, ts).unwrap().late;
                    fine_late
                        .map(|c| (false, c))
                        .union(&coarse_late.map(|c| (true, c)))
                },
            )
            .unwrap();
            for seen in batches {
                let coarse: Vec<_> = seen.iter().filter(|s| s.0).collect();
                coarse_too += coarse.len();
                fine_only += seen.iter().filter(|s| !s.0).count() - coarse.len();
            }
        }
        assert!(
            fine_only >= 10 && coarse_too >= 10,
            "{fine_only} {coarse_too}"
        );
    }
}
