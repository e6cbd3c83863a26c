// The page: one StreamClient feeding the model in state.js; a render per animation frame
// when something changed. Every value the e2e test reads has a data-testid.

import './style.css';

import {
  barChart,
  batchLineChart,
  COLORS,
  horizontalBarChart,
  setSeries,
  sparkline,
  timeLineChart,
} from './charts.js';
import { State, StreamClient } from './connection.js';
import {
  formatClock,
  formatCount,
  formatDate,
  formatDuration,
  formatNumber,
  formatWindow,
} from './format.js';
import { checkStreams, openSessionsFromMetrics } from './server.js';
import {
  activeVisitorsSeries,
  applyMessage,
  batchesSummary,
  createState,
  isNewRun,
  PAGE_VIEWS_SPAN_MS,
  pageViewsSeries,
  resetData,
  sessionsSummary,
  STREAMS,
} from './state.js';

/** How often the page polls /api/streams (new server run?) and /metrics (open sessions). */
const POLL_MS = 5000;

const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);

let state = createState();
/** Streams the server publishes (null until /api/streams answered). */
let available = null;
/** Open sessions from /metrics, or null when the server does not publish it. */
let openSessions = null;
let dirty = true;

const charts = {
  active: sparkline(document.getElementById('chart-active'), COLORS.indigo),
  pageViewsSpark: sparkline(document.getElementById('chart-page-views-spark'), COLORS.indigo),
  sessionsSpark: sparkline(document.getElementById('chart-sessions-spark'), COLORS.amber, COLORS.amberFill),
  processingSpark: sparkline(document.getElementById('chart-processing-spark'), COLORS.rose, COLORS.roseFill),
  pageViews: timeLineChart(document.getElementById('chart-page-views'), {
    label: 'page views',
    color: COLORS.indigo,
    fill: COLORS.indigoFill,
  }),
  pageViews30s: horizontalBarChart(document.getElementById('chart-page-views-30s'), {
    label: 'page views',
    color: COLORS.teal,
  }),
  sessions: barChart(document.getElementById('chart-sessions'), { label: 'sessions closed', color: COLORS.amber }),
  inputRate: batchLineChart(
    document.getElementById('chart-input-rate'),
    [{ label: 'input rate', color: COLORS.teal, fill: COLORS.tealFill }],
    'events/s',
  ),
  batchTimes: batchLineChart(
    document.getElementById('chart-batch-times'),
    [
      { label: 'processing time', color: COLORS.indigo },
      { label: 'scheduling delay', color: COLORS.rose },
      { label: 'batch interval', color: COLORS.slate, dash: [6, 4] },
    ],
    'ms',
  ),
};

const client = new StreamClient({
  url: new URL('ws', document.baseURI).href.replace(/^http/, 'ws'),
  streams: STREAMS,
  onMessage,
  onState: showConnection,
  beforeSubscribe,
});
client.start();
setInterval(poll, POLL_MS);
poll();
requestAnimationFrame(frame);

function onMessage(msg) {
  if (msg.type !== 'batch') return;
  if (isNewRun(state, msg)) startOver();
  applyMessage(state, msg);
  dirty = true;
}

/** The server was restarted and numbers its batches afresh: drop everything, subscribe anew. */
function startOver() {
  state = resetData(state);
  client.resubscribeFresh();
  dirty = true;
}

/** On every (re)connection: learn which streams exist and whether this is a new server run. */
async function beforeSubscribe(c) {
  const { info, startedOver } = await checkStreams(() => fetchJson('api/streams'), c.lastBatch);
  if (!info) return null;
  noteAvailable(info);
  if (startedOver) {
    state = resetData(state);
    c.lastBatch.clear();
  }
  return STREAMS.filter((s) => available.has(s));
}

async function poll() {
  const [{ info, startedOver }, metrics] = await Promise.all([
    checkStreams(() => fetchJson('api/streams'), client.lastBatch),
    fetchText('metrics'),
  ]);
  if (info) {
    noteAvailable(info);
    if (client.state === State.CONNECTED && startedOver) startOver();
  }
  if (metrics !== null) openSessions = openSessionsFromMetrics(metrics);
  dirty = true;
}

function noteAvailable(info) {
  available = new Set(info.map((s) => s.name));
}

async function fetchJson(path) {
  const text = await fetchText(path);
  try {
    return text === null ? null : JSON.parse(text);
  } catch {
    return null;
  }
}

async function fetchText(path) {
  try {
    const res = await fetch(new URL(path, document.baseURI), { cache: 'no-store', signal: AbortSignal.timeout(3000) });
    return res.ok ? await res.text() : null;
  } catch {
    return null;
  }
}

// ---- rendering ----------------------------------------------------------------------------

function frame() {
  if (dirty) {
    dirty = false;
    render();
  }
  requestAnimationFrame(frame);
}

function render() {
  renderHeader();
  renderEmptyStates();
  renderActiveVisitors();
  renderPageViews();
  renderPageViews30s();
  renderTopPages();
  renderSessions();
  renderTrending();
  renderSegments();
  renderStreaming();
  renderStreamStatus();
}

function setText(testid, text) {
  const el = $(testid);
  if (el && el.textContent !== String(text)) el.textContent = text;
}

/** Sets a number's text (formatted) and its raw value in `data-value`. */
function setValue(testid, value, format = formatCount) {
  const el = $(testid);
  if (!el) return;
  el.textContent = format(value);
  el.dataset.value = value ?? '';
}

const STATE_TEXT = {
  [State.CONNECTING]: 'connecting',
  [State.CONNECTED]: 'connected',
  [State.RECONNECTING]: 'reconnecting',
  [State.DISCONNECTED]: 'disconnected',
};

const BANNER_TEXT = {
  [State.CONNECTED]: null,
  [State.CONNECTING]: 'Connecting to the server…',
  [State.RECONNECTING]: 'Connection lost. The panels show the last data received; reconnecting…',
  [State.DISCONNECTED]: 'The server is unreachable. The panels show the last data received; still retrying.',
};

function showConnection(connState, info) {
  document.body.dataset.connection = connState;
  const pill = $('connection-state');
  pill.dataset.state = connState;
  pill.textContent = STATE_TEXT[connState];
  const retry = info.retryInMs !== undefined ? `retry ${info.attempt} in ${formatDuration(info.retryInMs)}` : '';
  setText('connection-detail', connState === State.CONNECTED ? 'live' : retry);
  const banner = $('connection-banner');
  banner.hidden = BANNER_TEXT[connState] === null;
  banner.dataset.state = connState;
  banner.textContent = BANNER_TEXT[connState] ?? '';
}

function renderHeader() {
  setText('event-time', state.eventTimeMs === null ? '--:--:--' : formatClock(state.eventTimeMs));
  setText('event-date', state.eventTimeMs === null ? 'waiting for data' : formatDate(state.eventTimeMs));
  setValue('last-batch', state.lastBatch, (v) => (v === null ? '—' : `#${v}`));
  setValue('messages-received', state.messages);
  // Times the page dropped its data for a restarted server (read by the e2e test).
  document.body.dataset.resets = state.resets;
}

function renderEmptyStates() {
  for (const card of document.querySelectorAll('.card[data-stream]')) {
    const stream = card.dataset.stream;
    if (state.streams[stream].messages > 0) delete card.dataset.empty;
    else if (available && !available.has(stream)) card.dataset.empty = `this server does not publish “${stream}”`;
    else card.dataset.empty = `waiting for ${stream}…`;
  }
}

function renderActiveVisitors() {
  const latest = state.activeLatest;
  setValue('active-visitors-value', latest?.value);
  setText('active-visitors-window', latest ? formatWindow(latest.start, latest.end) : '—');
  setValue('active-visitors-batch', latest?.batch, (v) => (v == null ? '—' : `#${v}`));
  setSeries(charts.active, [activeVisitorsSeries(state).map((p) => ({ x: p.t, y: p.visitors }))]);
}

function renderPageViews() {
  const series = pageViewsSeries(state);
  const last = series.at(-1);
  setValue('page-views-latest', last?.views);
  setValue('page-views-peak', series.length ? Math.max(...series.map((p) => p.views)) : null);
  const xMax = last ? last.t : undefined;
  const points = series.map((p) => ({ x: p.t, y: p.views }));
  setSeries(charts.pageViews, [points], {
    xMin: xMax === undefined ? undefined : xMax - PAGE_VIEWS_SPAN_MS + 1000,
    xMax,
  });
  setSeries(charts.pageViewsSpark, [points]);
}

function renderPageViews30s() {
  const w = state.pageViews30s;
  setText('page-views-30s-window', w ? formatWindow(w.start, w.end) : '—');
  setValue('page-views-30s-batch', w?.batch, (v) => (v == null ? '—' : `#${v}`));
  const rows = w ? w.rows.slice(0, 20) : [];
  setSeries(charts.pageViews30s, [rows.map((r) => r.count)], { labels: rows.map((r) => r.url) });
}

function renderTopPages() {
  const w = state.topPages;
  setText('top-pages-window', w ? formatWindow(w.start, w.end) : '—');
  setValue('top-pages-batch', w?.batch, (v) => (v == null ? '—' : `#${v}`));
  const max = w?.rows[0]?.count || 1;
  renderRows('top-pages-rows', w?.rows ?? [], (r) => [
    cell(formatCount(r.rank), 'num rank'),
    cell(r.url, 'url', { testid: `top-page-${r.rank}-url`, bar: r.count / max }),
    cell(formatCount(r.count), 'num', { testid: `top-page-${r.rank}-count`, value: r.count }),
  ]);
}

function renderSessions() {
  const s = sessionsSummary(state);
  setValue('sessions-per-minute', s.perMinute, formatNumber);
  setValue('sessions-closed-per-min', s.perMinute, formatNumber);
  setValue('sessions-mean-clicks', s.meanClicks, formatNumber);
  setValue('sessions-mean-duration', s.meanDurationMs, formatDuration);
  setValue('sessions-open', openSessions, formatCount);
  setText(
    'sessions-note',
    openSessions === null
      ? `${formatCount(s.sessions)} closed sessions in view. Open sessions: this server does not publish them, so the panel shows closed sessions only.`
      : `${formatCount(s.sessions)} closed sessions in view; “open now” is the sessions operator’s state (visitors with an open session).`,
  );
  // The newest minute is still filling (its sessions close as the watermark passes): lighter.
  setSeries(charts.sessions, [s.series.map((p) => p.sessions)], {
    labels: s.series.map((p) => formatClock(p.t).slice(0, 5)),
    colors: s.series.map((_, i) => (i === s.series.length - 1 ? COLORS.amberLight : COLORS.amber)),
  });
  setSeries(charts.sessionsSpark, [s.series.slice(0, -1).map((p) => ({ x: p.t, y: p.sessions }))]);
}

function renderTrending() {
  const w = state.trending;
  setText('trending-window', w ? formatWindow(w.start, w.end) : '—');
  renderRows('trending-rows', w?.rows.slice(0, 12) ?? [], (r) => {
    const delta = r.count - r.previous_count;
    return [
      cell(r.kind, 'kind', { badge: true }),
      cell(r.item, 'url'),
      cell(formatCount(r.count), 'num'),
      cell(formatCount(r.previous_count), 'num muted'),
      cell(`${delta > 0 ? '▲' : delta < 0 ? '▼' : '•'} ${formatNumber(r.score)}`, `num ${delta > 0 ? 'up' : delta < 0 ? 'down' : ''}`),
    ];
  });
}

function renderSegments() {
  const w = state.segments;
  setText('segments-window', w ? formatWindow(w.start, w.end) : '—');
  renderRows('segments-rows', w?.rows ?? [], (r) => [
    cell(r.segment, 'url'),
    cell(formatCount(r.sessions), 'num'),
    cell(formatCount(r.clicks), 'num'),
    cell(formatNumber(r.sessions ? r.clicks / r.sessions : null), 'num muted'),
  ]);
}

function renderStreaming() {
  const b = batchesSummary(state);
  setValue('batch-processing-kpi', b.meanProcessingMs, formatDuration);
  setValue('batch-interval', b.intervalMs, formatDuration);
  setValue('streaming-input-rate', b.meanInputRate, (v) => (v == null ? '—' : `${formatNumber(v)} /s`));
  setValue('streaming-processing', b.meanProcessingMs, formatDuration);
  setValue('streaming-scheduling-delay', b.meanSchedulingDelayMs, formatDuration);
  setValue('streaming-total-delay', b.meanTotalDelayMs, formatDuration);
  setValue('streaming-interval', b.intervalMs, formatDuration);
  setValue('streaming-last-batch', b.rows.at(-1)?.batch, (v) => (v == null ? '—' : `#${v}`));
  const xy = (f) => b.rows.map((r) => ({ x: r.batch, y: r[f] }));
  const range = { xMin: b.rows[0]?.batch, xMax: b.rows.at(-1)?.batch };
  setSeries(charts.inputRate, [xy('inputRate')], range);
  setSeries(charts.batchTimes, [xy('processingMs'), xy('schedulingDelayMs'), xy('intervalMs')], range);
  setSeries(charts.processingSpark, [xy('processingMs')]);
}

function renderStreamStatus() {
  const parts = STREAMS.map((s) => {
    const st = state.streams[s];
    const missing = available && !available.has(s);
    const batch = st.batch === null ? '—' : `#${st.batch}`;
    const skipped = st.skipped ? ` · ${formatCount(st.skipped)} skipped` : '';
    return `<span class="stream${missing ? ' missing' : ''}"><code>${s}</code> ${missing ? 'not published' : batch + skipped}</span>`;
  });
  const el = $('stream-status');
  const html = parts.join('');
  if (el.innerHTML !== html) el.innerHTML = html;
}

/** A table cell description for `renderRows`. */
function cell(text, className, extra = {}) {
  return { text, className, ...extra };
}

/** Rebuilds the rows of a table body from `rows` and a row → cells function. */
function renderRows(testid, rows, cells) {
  const body = $(testid);
  const frag = document.createDocumentFragment();
  for (const row of rows) {
    const tr = document.createElement('tr');
    for (const c of cells(row)) {
      const td = document.createElement('td');
      td.className = c.className;
      const inner = document.createElement('span');
      inner.textContent = c.text ?? '—';
      if (c.badge) inner.className = `badge badge-${String(c.text).replace(/[^a-z0-9_-]/gi, '')}`;
      if (c.testid) inner.dataset.testid = c.testid;
      if (c.value !== undefined) inner.dataset.value = c.value;
      if (c.bar !== undefined) td.style.setProperty('--bar', `${Math.round(c.bar * 100)}%`);
      td.append(inner);
      tr.append(td);
    }
    frag.append(tr);
  }
  body.replaceChildren(frag);
}
