// The dashboard's model: what the panels show, folded from batch messages. Pure functions
// over plain data (no DOM, no sockets) so that it is unit-tested under node.
//
// Two kinds of stream:
// - "latest window" streams (page_views_30s, top_pages, segments, trending, the headline of
//   active_visitors): a batch carries the full result of a window, so the newest message is
//   all a panel needs. The panel shows the newest window *of the newest message*, which makes
//   what is on screen a function of one batch id — the e2e test relies on that.
// - accumulating streams (page_views, active_visitors' trend, sessions, batches): every batch
//   adds points to a series. Points are keyed (window, url), (window), (minute), (batch id) and
//   a re-emitted key replaces the old value, so a replayed or repeated batch never counts twice.

/** Every stream the dashboard shows, in subscription order. */
export const STREAMS = [
  'page_views',
  'page_views_30s',
  'top_pages',
  'active_visitors',
  'sessions',
  'segments',
  'trending',
  'batches',
];

/** Event time the page-views-per-second chart spans. */
export const PAGE_VIEWS_SPAN_MS = 120_000;
/** Event time the sessions panel spans (its chart and its means). */
export const SESSIONS_SPAN_MS = 30 * 60_000;
/** Windows of active_visitors kept for the trend. */
export const ACTIVE_TREND_WINDOWS = 30;
/** Batches the streaming panel keeps. */
export const BATCHES_KEPT = 120;
/** A snapshot of page_views this far behind the clock means the server started a new run. */
export const NEW_RUN_LAG_MS = 5 * 60_000;

const MINUTE_MS = 60_000;

/** An empty model. */
export function createState() {
  return {
    /** Largest event time the results have reached (the end of the newest window), ms. */
    eventTimeMs: null,
    /** Batch id of the newest batch message of any stream. */
    lastBatch: null,
    /** Batch messages received since the page loaded (survives resets). */
    messages: 0,
    /** Times the data was dropped because the server started a new run. */
    resets: 0,
    /** Per stream: last batch id, messages, skipped (conflated) batches, resyncs. */
    streams: Object.fromEntries(STREAMS.map((s) => [s, emptyStreamStats()])),
    /** page_views: window_start_ms → (url → count). */
    pageViews: new Map(),
    /** page_views_30s, top_pages, segments, trending: `{batch, start, end, rows}` or null. */
    pageViews30s: null,
    topPages: null,
    segments: null,
    trending: null,
    /** active_visitors: window_start_ms → unique visitors, and the newest message's window. */
    activeVisitors: new Map(),
    activeLatest: null,
    /** sessions: minute of session end (ms) → `{sessions, clicks, durationMs}`. */
    sessionMinutes: new Map(),
    /** batches: batch id → row. */
    batches: new Map(),
  };
}

function emptyStreamStats() {
  return { batch: null, messages: 0, skipped: 0, resyncs: 0 };
}

/** Clears the data of every stream but keeps the page-lifetime counters. */
export function resetData(state) {
  const fresh = createState();
  fresh.messages = state.messages;
  fresh.resets = state.resets + 1;
  for (const s of STREAMS) fresh.streams[s].resyncs = state.streams[s].resyncs;
  return fresh;
}

/**
 * True when `msg`, a snapshot of page_views, lies far behind what the page has shown: the
 * server was restarted and replays from the start, and the old series must go.
 */
export function isNewRun(state, msg) {
  if (msg.stream !== 'page_views' || !msg.snapshot || state.eventTimeMs === null) return false;
  const end = maxWindowEnd(msg);
  return end !== null && end < state.eventTimeMs - NEW_RUN_LAG_MS;
}

/** Folds one server message into `state` (mutating it). Non-batch messages are ignored. */
export function applyMessage(state, msg) {
  if (!msg || msg.type !== 'batch' || !Array.isArray(msg.rows)) return;
  const stats = state.streams[msg.stream];
  if (!stats) return;
  stats.batch = msg.batch;
  stats.messages += 1;
  stats.skipped += msg.skipped || 0;
  if (msg.resync) stats.resyncs += 1;
  state.messages += 1;
  state.lastBatch = msg.batch;
  APPLY[msg.stream](state, msg);
  advanceClock(state, maxWindowEnd(msg));
}

const APPLY = {
  page_views: applyPageViews,
  page_views_30s: (state, msg) => {
    state.pageViews30s = sortedWindow(msg, (a, b) => b.count - a.count || cmp(a.url, b.url));
  },
  top_pages: (state, msg) => {
    state.topPages = sortedWindow(msg, (a, b) => a.rank - b.rank);
  },
  segments: (state, msg) => {
    state.segments = sortedWindow(msg, (a, b) => b.sessions - a.sessions || cmp(a.segment, b.segment));
  },
  trending: (state, msg) => {
    state.trending = sortedWindow(msg, (a, b) => b.score - a.score || b.count - a.count);
  },
  active_visitors: applyActiveVisitors,
  sessions: applySessions,
  batches: applyBatches,
};

function applyPageViews(state, msg) {
  for (const row of msg.rows) {
    const start = rowStart(row, msg);
    if (start === null) continue;
    let urls = state.pageViews.get(start);
    if (!urls) state.pageViews.set(start, (urls = new Map()));
    urls.set(row.url, row.count);
  }
  pruneBelow(state.pageViews, maxKey(state.pageViews) - PAGE_VIEWS_SPAN_MS);
}

function applyActiveVisitors(state, msg) {
  for (const row of msg.rows) {
    const start = rowStart(row, msg);
    if (start !== null) state.activeVisitors.set(start, row.unique_visitors);
  }
  keepNewest(state.activeVisitors, ACTIVE_TREND_WINDOWS);
  const latest = latestWindow(msg);
  if (latest) state.activeLatest = { ...latest, value: latest.rows[0].unique_visitors };
}

function applySessions(state, msg) {
  for (const row of msg.rows) {
    if (!Number.isFinite(row.session_end_ms)) continue;
    const minute = Math.floor(row.session_end_ms / MINUTE_MS) * MINUTE_MS;
    const bucket = state.sessionMinutes.get(minute) ?? { sessions: 0, clicks: 0, durationMs: 0 };
    bucket.sessions += 1;
    bucket.clicks += row.clicks;
    bucket.durationMs += Math.max(0, row.session_end_ms - row.session_start_ms);
    state.sessionMinutes.set(minute, bucket);
    advanceClock(state, row.session_end_ms);
  }
  pruneBelow(state.sessionMinutes, maxKey(state.sessionMinutes) - SESSIONS_SPAN_MS);
}

function applyBatches(state, msg) {
  for (const row of msg.rows) state.batches.set(row.batch ?? msg.batch, row);
  keepNewest(state.batches, BATCHES_KEPT);
}

// ---- derived views the panels draw ------------------------------------------------------

/**
 * Page views per 1-s window, summed over urls, for the last PAGE_VIEWS_SPAN_MS of event time:
 * `[{t, views}]` ascending, every second from the first known window on (a second without a
 * row had no views: the engine publishes only windows that have rows).
 */
export function pageViewsSeries(state) {
  if (state.pageViews.size === 0) return [];
  const last = maxKey(state.pageViews);
  const first = Math.max(minKey(state.pageViews), last - PAGE_VIEWS_SPAN_MS + 1000);
  const points = [];
  for (let t = first; t <= last; t += 1000) {
    let views = 0;
    for (const count of state.pageViews.get(t)?.values() ?? []) views += count;
    points.push({ t, views });
  }
  return points;
}

/** Active visitors per window, ascending: `[{t, visitors}]`. */
export function activeVisitorsSeries(state) {
  return [...state.activeVisitors.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([t, visitors]) => ({ t, visitors }));
}

/**
 * Closed sessions per minute of session end, ascending, plus the means over the span.
 * `perMinute` averages the complete minutes (all but the newest, which is still filling)
 * of the last ten.
 */
export function sessionsSummary(state) {
  const minutes = [...state.sessionMinutes.entries()].sort((a, b) => a[0] - b[0]);
  let sessions = 0;
  let clicks = 0;
  let durationMs = 0;
  for (const [, b] of minutes) {
    sessions += b.sessions;
    clicks += b.clicks;
    durationMs += b.durationMs;
  }
  const complete = minutes.length > 1 ? minutes.slice(-11, -1) : minutes;
  const perMinute = complete.length
    ? complete.reduce((n, [, b]) => n + b.sessions, 0) / complete.length
    : null;
  return {
    series: minutes.map(([t, b]) => ({ t, sessions: b.sessions })),
    sessions,
    perMinute,
    meanClicks: sessions ? clicks / sessions : null,
    meanDurationMs: sessions ? durationMs / sessions : null,
  };
}

/**
 * The streaming statistics of the kept batches, like Spark's Streaming tab: per batch the
 * input rate (rows/s over the batch interval), processing time, scheduling delay and total
 * delay, and their averages.
 */
export function batchesSummary(state) {
  const rows = [...state.batches.entries()].sort((a, b) => a[0] - b[0]).map(([batch, r]) => ({
    batch,
    inputRate: r.batch_interval_ms > 0 ? (r.input_rows * 1000) / r.batch_interval_ms : null,
    inputRows: r.input_rows,
    processingMs: r.processing_ms,
    schedulingDelayMs: r.scheduling_delay_ms,
    totalDelayMs: r.total_delay_ms,
    intervalMs: r.batch_interval_ms,
  }));
  const mean = (f) => (rows.length ? rows.reduce((n, r) => n + (r[f] ?? 0), 0) / rows.length : null);
  return {
    rows,
    intervalMs: rows.length ? rows[rows.length - 1].intervalMs : null,
    meanInputRate: mean('inputRate'),
    meanProcessingMs: mean('processingMs'),
    meanSchedulingDelayMs: mean('schedulingDelayMs'),
    meanTotalDelayMs: mean('totalDelayMs'),
  };
}

// ---- helpers ------------------------------------------------------------------------------

/** A row's window start: its own field, else the message's. */
function rowStart(row, msg) {
  const s = row.window_start_ms ?? msg.window_start_ms;
  return Number.isFinite(s) ? s : null;
}

function rowEnd(row, msg) {
  const e = row.window_end_ms ?? msg.window_end_ms;
  return Number.isFinite(e) ? e : null;
}

/**
 * The rows of the newest window in `msg` (a batch may close several windows):
 * `{batch, start, end, rows}`, or null when the message has no rows.
 */
export function latestWindow(msg) {
  let start = null;
  for (const row of msg.rows) {
    const s = rowStart(row, msg);
    if (s !== null && (start === null || s > start)) start = s;
  }
  const rows = msg.rows.filter((row) => rowStart(row, msg) === start);
  if (rows.length === 0) return null;
  return { batch: msg.batch, start, end: rowEnd(rows[0], msg), rows };
}

function sortedWindow(msg, compare) {
  const w = latestWindow(msg);
  if (w) w.rows = [...w.rows].sort(compare);
  return w;
}

function maxWindowEnd(msg) {
  let end = Number.isFinite(msg.window_end_ms) ? msg.window_end_ms : null;
  for (const row of msg.rows) {
    const e = row.window_end_ms;
    if (Number.isFinite(e) && (end === null || e > end)) end = e;
  }
  return end;
}

function advanceClock(state, ms) {
  if (Number.isFinite(ms) && (state.eventTimeMs === null || ms > state.eventTimeMs)) {
    state.eventTimeMs = ms;
  }
}

const cmp = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

function maxKey(map) {
  let m = -Infinity;
  for (const k of map.keys()) if (k > m) m = k;
  return m;
}

function minKey(map) {
  let m = Infinity;
  for (const k of map.keys()) if (k < m) m = k;
  return m;
}

function pruneBelow(map, floor) {
  for (const k of map.keys()) if (k <= floor) map.delete(k);
}

function keepNewest(map, n) {
  if (map.size <= n) return;
  const keys = [...map.keys()].sort((a, b) => a - b);
  for (const k of keys.slice(0, keys.length - n)) map.delete(k);
}
