// A stand-in for `clickpulse demo` while developing the dashboard: serves dashboard/dist at /,
// /api/streams, /metrics and /ws with the protocol of docs/protocol.md (snapshot, from_batch
// resume, resync), and publishes synthetic results of the standard clickstream job every batch
// interval. Not what the e2e test checks against — that is the real binary (dashboard.test.mjs
// uses this only with CLICKPULSE_E2E_SERVER=mock).
//
//   node mock-server.mjs --port 8080 [--interval-ms 250] [--event-ms-per-batch 2000] [--dist DIR]

import { createReadStream, existsSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { extname, join, normalize, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { WebSocketServer } from 'ws';

const here = fileURLToPath(new URL('.', import.meta.url));
const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '8080' },
    'interval-ms': { type: 'string', default: '250' },
    'event-ms-per-batch': { type: 'string', default: '2000' },
    dist: { type: 'string', default: resolve(here, '../../dashboard/dist') },
  },
});
const PORT = Number(args.port);
const INTERVAL_MS = Number(args['interval-ms']);
const EVENT_MS_PER_BATCH = Number(args['event-ms-per-batch']);
const DIST = args.dist;
const HISTORY_LEN = 600;

const FIELDS = {
  page_views: ['window_start_ms', 'window_end_ms', 'url', 'count'],
  page_views_30s: ['window_start_ms', 'window_end_ms', 'url', 'count'],
  top_pages: ['window_start_ms', 'window_end_ms', 'rank', 'url', 'count'],
  sessions: ['visitor_id', 'session_start_ms', 'session_end_ms', 'clicks', 'distinct_urls'],
  active_visitors: ['window_start_ms', 'window_end_ms', 'unique_visitors'],
  segments: ['window_start_ms', 'window_end_ms', 'segment', 'sessions', 'clicks'],
  trending: ['window_start_ms', 'window_end_ms', 'kind', 'item', 'count', 'previous_count', 'score'],
  batches: ['batch', 'input_rows', 'processing_ms', 'scheduling_delay_ms', 'total_delay_ms', 'batch_interval_ms'],
};

// ---- the hub: history per stream, subscriptions with snapshot / resume ----------------------

const history = new Map(Object.keys(FIELDS).map((s) => [s, []])); // stream → [{batch, json}]
const clients = new Set();

function render(m, snapshot, resync) {
  return m.json.replace(/,"snapshot":false,"resync":false,"skipped":0}$/, `,"snapshot":${snapshot},"resync":${resync},"skipped":0}`);
}

function subscribe(client, stream, fromBatch) {
  client.subs.set(stream, true);
  const h = history.get(stream);
  if (fromBatch === null || fromBatch === undefined) {
    if (h.length) client.ws.send(render(h.at(-1), true, false));
    return;
  }
  if (h.length === 0 || fromBatch > h.at(-1).batch) return; // live batches ≥ N follow
  if (fromBatch < h[0].batch) {
    client.ws.send(render(h.at(-1), true, true));
    return;
  }
  for (const m of h) if (m.batch >= fromBatch) client.ws.send(m.json);
}

function publish(stream, batch, rows, windowStart = null, windowEnd = null) {
  if (rows.length === 0) return;
  const json = JSON.stringify({
    type: 'batch', stream, batch, window_start_ms: windowStart, window_end_ms: windowEnd, rows,
    snapshot: false, resync: false, skipped: 0,
  });
  const h = history.get(stream);
  h.push({ batch, json });
  if (h.length > HISTORY_LEN) h.shift();
  for (const c of clients) if (c.subs.has(stream)) c.ws.send(json);
}

function onClientMessage(client, data) {
  let req;
  try {
    req = JSON.parse(data);
  } catch {
    client.ws.send(JSON.stringify({ type: 'error', reason: 'invalid JSON' }));
    return;
  }
  if (req.op === 'ping') return client.ws.send('{"type":"pong"}');
  const streams = req.streams;
  const unknown = Array.isArray(streams) ? streams.find((s) => !FIELDS[s]) : 'streams';
  if (!Array.isArray(streams) || streams.length === 0 || unknown) {
    client.ws.send(JSON.stringify({ type: 'error', reason: `unknown stream "${unknown}"` }));
    return;
  }
  if (req.op === 'subscribe') {
    const from = req.from_batch ?? null;
    client.ws.send(JSON.stringify({ type: 'subscribed', streams, from_batch: from }));
    for (const s of streams) subscribe(client, s, from);
  } else if (req.op === 'unsubscribe') {
    for (const s of streams) client.subs.delete(s);
    client.ws.send(JSON.stringify({ type: 'unsubscribed', streams }));
  } else {
    client.ws.send(JSON.stringify({ type: 'error', reason: `unknown op "${req.op}"` }));
  }
}

// ---- the synthetic job ---------------------------------------------------------------------

const URLS = ['frontpage', 'news', 'tech', 'local', 'opinion', 'on-air', 'misc', 'weather', 'msn-news',
  'health', 'living', 'business', 'msn-sports', 'sports', 'summary', 'bbs', 'travel'].map((c) => `/${c}`);
const WEIGHTS = URLS.map((_, i) => 1 / (i + 1) ** 0.9);

let seed = 42;
const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);

let batch = 0;
let eventTime = 938476800000 + 8 * 3600_000; // 08:00 UTC on the MSNBC day
const perSecond = new Map(); // window start → Map(url → count)
let previousTrend = new Map();

function viewsAt(t) {
  const load = 40 + 25 * Math.sin(t / 90_000) + 10 * rand();
  const m = new Map();
  URLS.forEach((u, i) => {
    const c = Math.round(load * WEIGHTS[i] * (0.7 + 0.6 * rand()));
    if (c > 0) m.set(u, c);
  });
  return m;
}

function tick() {
  const started = Date.now();
  const from = eventTime;
  eventTime += EVENT_MS_PER_BATCH;
  let inputRows = 0;
  const pv = [];
  for (let t = Math.ceil(from / 1000) * 1000; t + 1000 <= eventTime; t += 1000) {
    const m = viewsAt(t);
    perSecond.set(t, m);
    for (const [url, count] of m) {
      pv.push({ window_start_ms: t, window_end_ms: t + 1000, url, count });
      inputRows += count;
    }
  }
  for (const t of perSecond.keys()) if (t < eventTime - 120_000) perSecond.delete(t);
  const last = pv.at(-1);
  publish('page_views', batch, pv, last?.window_start_ms, last?.window_end_ms);

  // 30-s windows sliding every 5 s, closed in this batch
  for (let end = Math.ceil(from / 5000) * 5000; end <= eventTime; end += 5000) {
    if (end === from) continue;
    const totals = new Map();
    for (let t = end - 30_000; t < end; t += 1000) {
      for (const [u, c] of perSecond.get(t) ?? []) totals.set(u, (totals.get(u) ?? 0) + c);
    }
    const rows = [...totals].map(([url, count]) => ({ window_start_ms: end - 30_000, window_end_ms: end, url, count }));
    publish('page_views_30s', batch, rows, end - 30_000, end);
    const top = [...rows].sort((a, b) => b.count - a.count || (a.url < b.url ? -1 : 1)).slice(0, 10)
      .map((r, i) => ({ window_start_ms: r.window_start_ms, window_end_ms: r.window_end_ms, rank: i + 1, url: r.url, count: r.count }));
    publish('top_pages', batch, top, end - 30_000, end);
  }

  // 1-min windows: active visitors, segments, trending
  for (let end = Math.ceil(from / 60_000) * 60_000; end <= eventTime; end += 60_000) {
    if (end === from) continue;
    const w = { window_start_ms: end - 60_000, window_end_ms: end };
    publish('active_visitors', batch, [{ ...w, unique_visitors: Math.round(900 + 300 * Math.sin(end / 600_000) + 100 * rand()) }], w.window_start_ms, end);
    publish('segments', batch, ['new', 'returning', 'loyal', 'unknown'].map((segment, i) => {
      const sessions = Math.round((120 / (i + 1)) * (0.8 + 0.4 * rand()));
      return { ...w, segment, sessions, clicks: Math.round(sessions * (2 + i + rand() * 2)) };
    }), w.window_start_ms, end);
    const items = [...URLS.slice(0, 6).map((u) => ['page', u]), ['product', 'p-1742'], ['product', 'p-0031'], ['search', 'weather radar'], ['search', 'nfl scores']];
    const now = new Map(items.map(([k, i]) => [`${k}\t${i}`, Math.round(20 + 200 * rand())]));
    const trend = [...now].map(([key, count]) => {
      const [kind, item] = key.split('\t');
      const prev = previousTrend.get(key) ?? 0;
      return { ...w, kind, item, count, previous_count: prev, score: Math.round(((count - prev) / Math.sqrt(prev + 1)) * 100) / 100 };
    }).filter((r) => r.count > r.previous_count).sort((a, b) => b.score - a.score).slice(0, 8);
    previousTrend = now;
    publish('trending', batch, trend, w.window_start_ms, end);
  }

  // sessions that closed: last click 30 min before the watermark
  const sessions = [];
  const n = Math.round(EVENT_MS_PER_BATCH / 1000 * (8 + 4 * rand()));
  for (let i = 0; i < n; i++) {
    const end = eventTime - 30 * 60_000 - Math.round(rand() * EVENT_MS_PER_BATCH);
    const clicks = 1 + Math.floor(rand() * rand() * 12);
    sessions.push({ visitor_id: `v${Math.floor(rand() * 250000)}`, session_start_ms: end - (clicks - 1) * 10_000 - Math.round(rand() * 60_000), session_end_ms: end, clicks, distinct_urls: Math.min(clicks, 1 + Math.floor(rand() * 4)) });
  }
  publish('sessions', batch, sessions);

  const processing = Math.round(20 + 60 * rand() + (inputRows / 100));
  const delay = Math.round(rand() * 8);
  publish('batches', batch, [{ batch, input_rows: inputRows, processing_ms: processing, scheduling_delay_ms: delay, total_delay_ms: processing + delay, batch_interval_ms: INTERVAL_MS }]);
  batch += 1;
  lastProcessing = Date.now() - started;
}
let lastProcessing = 0;

// ---- HTTP ----------------------------------------------------------------------------------

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.css': 'text/css', '.map': 'application/json', '.txt': 'text/plain', '.png': 'image/png' };

const server = createServer((req, res) => {
  const path = new URL(req.url, 'http://x').pathname;
  if (path === '/api/streams') {
    const body = Object.entries(FIELDS).map(([name, fields]) => ({
      name, fields, latest_batch: history.get(name).at(-1)?.batch ?? null,
      subscribers: [...clients].filter((c) => c.subs.has(name)).length,
    })).sort((a, b) => (a.name < b.name ? -1 : 1));
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end(JSON.stringify(body));
  }
  if (path === '/metrics') {
    res.writeHead(200, { 'content-type': 'application/openmetrics-text; version=1.0.0; charset=utf-8' });
    return res.end(`# TYPE clickpulse_operator_state_keys gauge\nclickpulse_operator_state_keys{operator="sessions"} ${4200 + Math.round(rand() * 300)}\nclickpulse_batches_total ${batch}\nclickpulse_last_batch_processing_seconds ${lastProcessing / 1000}\n# EOF\n`);
  }
  let file = normalize(join(DIST, path));
  if (!file.startsWith(DIST)) return res.writeHead(403).end();
  if (existsSync(file) && statSync(file).isDirectory()) file = join(file, 'index.html');
  if (!existsSync(file)) return res.writeHead(404).end(`no such file: ${path}\n`);
  res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' });
  createReadStream(file).pipe(res);
});

const wss = new WebSocketServer({ server, path: '/ws' });
wss.on('connection', (ws) => {
  const client = { ws, subs: new Map() };
  clients.add(client);
  ws.on('message', (data) => onClientMessage(client, String(data)));
  ws.on('close', () => clients.delete(client));
});

server.listen(PORT, '127.0.0.1', () => {
  console.log(`mock clickpulse on http://127.0.0.1:${server.address().port}/ (dist ${DIST})`);
});
setInterval(tick, INTERVAL_MS);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
