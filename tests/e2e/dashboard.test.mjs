// Browser end-to-end test of the dashboard against the real `clickpulse demo`:
//
// 1. start `target/release/clickpulse demo --port P --speed S` and open http://127.0.0.1:P/ in
//    headless Chromium (Debian's /usr/bin/chromium through playwright-core);
// 2. wait until the page is connected and its panels are filled;
// 3. open our own WebSocket to the same server, subscribed to top_pages and active_visitors,
//    and check that what the page shows for a batch id (top-10 table, active visitors) is what
//    the server sent for that batch id — several times, as batches go by;
// 4. kill the server: the page must say it lost the connection; restart the server on the same
//    port: the page must reconnect by itself and show new batches that again match the server.
//
// Screenshots go to tests/e2e/screenshots/. Environment:
//   CLICKPULSE_BIN          the binary (default target/release/clickpulse)
//   CLICKPULSE_E2E_SPEED    replay speed passed as --speed (default 120: sessions close
//                           after 30 min of event time, 15 s at 120x)
//   CLICKPULSE_E2E_FILL_S   how long the panels may take to fill (default 90 s)
//   CLICKPULSE_E2E_ARGS     replaces the arguments entirely; `{port}` is substituted
//   CLICKPULSE_E2E_SERVER   `mock`: drive mock-server.mjs instead (developing the page only)
//   CHROMIUM                the browser (default /usr/bin/chromium)

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

import { chromium } from 'playwright-core';
import WebSocket from 'ws';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const ROOT = resolve(HERE, '../..');
const SCREENSHOTS = join(HERE, 'screenshots');
const BIN = process.env.CLICKPULSE_BIN ?? join(ROOT, 'target/release/clickpulse');
const SPEED = process.env.CLICKPULSE_E2E_SPEED ?? '120';
const FILL_MS = Number(process.env.CLICKPULSE_E2E_FILL_S ?? 90) * 1000;
const USE_MOCK = process.env.CLICKPULSE_E2E_SERVER === 'mock';
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

/** Every stream the dashboard has a panel for. */
const DASHBOARD_STREAMS = ['page_views', 'page_views_30s', 'top_pages', 'active_visitors', 'sessions', 'segments', 'trending', 'batches'];

let port;
let server;
let browser;
let page;
const pageErrors = [];

before(async () => {
  assert.ok(existsSync(join(ROOT, 'dashboard/dist/index.html')), 'dashboard/dist is not built: run scripts/build-dashboard.sh');
  if (!USE_MOCK) assert.ok(existsSync(BIN), `${BIN} does not exist: cargo build --release -p clickpulse`);
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} does not exist: apt-get install -y chromium`);
  mkdirSync(SCREENSHOTS, { recursive: true });
  port = await freePort();
  server = await startServer(port);
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
  page.on('pageerror', (e) => pageErrors.push(e.message));
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('the dashboard shows the live streams, matches the server, and survives a restart', { timeout: 300_000 }, async (t) => {
  await page.goto(`http://127.0.0.1:${port}/`);
  assert.equal(await page.title(), 'clickpulse · live', 'the built dashboard is served at /');

  await t.test('connects and fills its panels', async () => {
    await waitForConnection(['connected'], 30_000);
    // Every panel whose stream the server publishes must fill; the per-second chart must
    // span its full two minutes.
    const published = (await (await fetch(`http://127.0.0.1:${port}/api/streams`)).json()).map((s) => s.name);
    const expected = DASHBOARD_STREAMS.filter((s) => published.includes(s));
    t.diagnostic(`server publishes ${expected.length} of the dashboard's streams; missing: ${DASHBOARD_STREAMS.filter((s) => !published.includes(s)).join(', ') || 'none'}`);
    let v;
    try {
      await waitFor('every panel to fill', FILL_MS, async () => {
        v = await readPage();
        return expected.every((s) => v.filled.includes(s)) && v.pageViewsPoints >= 120 && v.top[0] && v.activeBatch !== null;
      });
    } finally {
      t.diagnostic(`panels filled: ${v?.filled.join(', ')}; still empty: ${v?.empty.join(', ') || 'none'}; page-views points: ${v?.pageViewsPoints}`);
    }
    assert.equal(v.top.length, 10, 'top pages shows 10 rows');
    assert.match(v.eventTime, /^\d\d:\d\d:\d\d$/, 'event-time clock shows a time');
    assert.match(v.eventDate, /^\d{4}-\d\d-\d\d$/, 'event-time clock shows a date');
    assert.ok(Number.isInteger(v.lastBatch), 'last batch id shown');
    if (expected.includes('batches')) assert.ok(v.batchPoints > 0, 'streaming panel charts batches');
    if (expected.includes('sessions')) t.diagnostic(`sessions open now: ${v.sessionsOpen ?? 'not published (closed sessions only)'}`);
  });

  await t.test('shows what the server sent for the same batch', async () => {
    const matched = await compareWithServer(3, 60_000);
    t.diagnostic(`matched top_pages batches ${matched.top.join(', ')}; active_visitors batches ${matched.active.join(', ')}`);
    assert.equal((await readPage()).resets, 0, 'the page kept its data: it never mistook the running server for a new one');
    await settleCharts();
    await page.screenshot({ path: join(SCREENSHOTS, 'dashboard.png'), fullPage: true });
  });

  await t.test('shows the lost connection when the server dies', async () => {
    const killed = await server.stop();
    t.diagnostic(`server stopped by ${killed}`);
    const state = await waitForConnection(['reconnecting', 'disconnected'], 15_000);
    t.diagnostic(`page says: ${state}`);
    const before = (await readPage()).messages;
    await sleep(2000);
    const v = await readPage();
    assert.notEqual(v.connection, 'connected', 'still not connected while the server is down');
    assert.equal(v.messages, before, 'no messages while the server is down');
    await page.screenshot({ path: join(SCREENSHOTS, 'dashboard-disconnected.png') });
  });

  await t.test('reconnects by itself when the server is back, and shows new batches', async () => {
    const before = await readPage();
    server = await startServer(port);
    await waitForConnection(['connected'], 30_000);
    // Soon, not eventually: a page that resumed from the old run's batch ids would wait
    // until the new run reached them.
    await waitFor('new batches after the restart', 10_000, async () => (await readPage()).messages >= before.messages + 5);
    const matched = await compareWithServer(1, 60_000);
    t.diagnostic(`after restart: matched top_pages batches ${matched.top.join(', ')}`);
    const latest = Math.max(...(await (await fetch(`http://127.0.0.1:${port}/api/streams`)).json()).map((s) => s.latest_batch ?? 0));
    const v = await readPage();
    assert.ok(v.lastBatch <= latest, 'the page follows the new run, not the old batch ids');
    assert.ok(v.resets >= 1, 'the page dropped the old run\'s data');
    await settleCharts();
    await page.screenshot({ path: join(SCREENSHOTS, 'dashboard-reconnected.png'), fullPage: true });
  });

  assert.deepEqual(pageErrors, [], 'no uncaught errors on the page');
});

// ---- the page ----------------------------------------------------------------------------

/** Everything the test reads from the page, in one synchronous pass (one consistent render). */
function readPage() {
  return page.evaluate(() => {
    const q = (id) => document.querySelector(`[data-testid="${id}"]`);
    const text = (id) => q(id)?.textContent ?? null;
    const num = (id) => {
      const v = q(id)?.dataset.value;
      return v === undefined || v === '' ? null : Number(v);
    };
    const top = [];
    for (let rank = 1; q(`top-page-${rank}-url`); rank++) {
      top.push({ rank, url: text(`top-page-${rank}-url`), count: num(`top-page-${rank}-count`), countText: text(`top-page-${rank}-count`) });
    }
    const cards = [...document.querySelectorAll('.card[data-stream]')];
    const streamsOf = (pred) => [...new Set(cards.filter(pred).map((c) => c.dataset.stream))];
    return {
      connection: q('connection-state').dataset.state,
      connectionText: text('connection-state'),
      lastBatch: num('last-batch'),
      messages: num('messages-received'),
      eventTime: text('event-time'),
      eventDate: text('event-date'),
      topBatch: num('top-pages-batch'),
      top,
      activeBatch: num('active-visitors-batch'),
      active: num('active-visitors-value'),
      activeText: text('active-visitors-value'),
      pageViewsPoints: Number(document.getElementById('chart-page-views').dataset.points ?? 0),
      pageViews30sPoints: Number(document.getElementById('chart-page-views-30s').dataset.points ?? 0),
      batchPoints: Number(document.getElementById('chart-batch-times').dataset.points ?? 0),
      sessionsOpen: num('sessions-open'),
      resets: Number(document.body.dataset.resets ?? 0),
      filled: streamsOf((c) => c.dataset.empty === undefined),
      empty: streamsOf((c) => c.dataset.empty !== undefined),
    };
  });
}

async function waitForConnection(states, timeoutMs) {
  let seen;
  await waitFor(`connection state ${states.join(' or ')}`, timeoutMs, async () => {
    seen = (await readPage()).connection;
    return states.includes(seen);
  });
  return seen;
}

/** Lets the page draw the frame after the newest message before a screenshot. */
async function settleCharts() {
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
}

// ---- comparing with the server -----------------------------------------------------------

/**
 * Subscribes to top_pages and active_visitors on the server and compares, until `wanted`
 * distinct top_pages batches (and at least one active_visitors batch) matched, what the page
 * shows for a batch id with what the server sent for it. Fails on the first mismatch.
 */
async function compareWithServer(wanted, timeoutMs) {
  const sent = { top_pages: new Map(), active_visitors: new Map() };
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
  ws.on('message', (data) => {
    const m = JSON.parse(String(data));
    if (m.type === 'batch' && sent[m.stream]) sent[m.stream].set(m.batch, m);
  });
  await new Promise((ok, fail) => {
    ws.once('open', ok);
    ws.once('error', fail);
  });
  ws.send(JSON.stringify({ op: 'subscribe', streams: ['top_pages', 'active_visitors'] }));
  const matched = { top: new Set(), active: new Set() };
  try {
    await waitFor(`${wanted} top_pages batches to match the server`, timeoutMs, async () => {
      const v = await readPage();
      const topMsg = sent.top_pages.get(v.topBatch);
      if (topMsg) {
        assert.deepEqual(
          v.top.map(({ rank, url, count }) => ({ rank, url, count })),
          expectedTop(topMsg),
          `top pages of batch ${v.topBatch} as the server sent them`,
        );
        assert.equal(v.top[0].countText, v.top[0].count.toLocaleString('en-US'), 'count formatted with separators');
        matched.top.add(v.topBatch);
      }
      const activeMsg = sent.active_visitors.get(v.activeBatch);
      if (activeMsg) {
        assert.equal(v.active, newestWindow(activeMsg)[0].unique_visitors, `active visitors of batch ${v.activeBatch}`);
        matched.active.add(v.activeBatch);
      }
      return matched.top.size >= wanted && matched.active.size >= 1;
    });
  } finally {
    ws.close();
  }
  return { top: [...matched.top], active: [...matched.active] };
}

/** The rows of the newest window of a batch message (a batch may close several windows). */
function newestWindow(msg) {
  const start = (r) => r.window_start_ms ?? msg.window_start_ms;
  const newest = Math.max(...msg.rows.map(start));
  return msg.rows.filter((r) => start(r) === newest);
}

function expectedTop(msg) {
  return newestWindow(msg)
    .sort((a, b) => a.rank - b.rank)
    .map(({ rank, url, count }) => ({ rank, url, count }));
}

// ---- the server --------------------------------------------------------------------------

function serverCommand(p) {
  if (USE_MOCK) return [process.execPath, [join(HERE, 'mock-server.mjs'), '--port', String(p)]];
  const custom = process.env.CLICKPULSE_E2E_ARGS;
  const args = custom
    ? custom.split(/\s+/).filter(Boolean).map((a) => a.replaceAll('{port}', String(p)))
    : ['demo', '--port', String(p), '--speed', SPEED];
  return [BIN, args];
}

/** Starts the server on `p` and waits until it answers /api/streams. */
async function startServer(p) {
  const [cmd, args] = serverCommand(p);
  const child = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const log = [];
  const keep = (chunk) => {
    log.push(...String(chunk).split('\n'));
    log.splice(0, Math.max(0, log.length - 200));
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
  let status = null;
  exited.then((s) => (status = s));
  try {
    await waitFor(`${cmd} ${args.join(' ')} to answer on port ${p}`, 120_000, async () => {
      if (status) throw new Error(`server exited (${JSON.stringify(status)})`);
      try {
        const res = await fetch(`http://127.0.0.1:${p}/api/streams`);
        return res.ok;
      } catch {
        return false;
      }
    });
  } catch (e) {
    child.kill('SIGKILL');
    throw new Error(`${e.message}\n--- server output ---\n${log.join('\n')}`);
  }
  return {
    log,
    /** Stops the server: SIGTERM, then SIGKILL if it has not exited after 10 s. */
    async stop() {
      if (status) return 'itself';
      child.kill('SIGTERM');
      const r = await Promise.race([exited, sleep(10_000).then(() => null)]);
      if (r) return 'SIGTERM';
      child.kill('SIGKILL');
      await exited;
      return 'SIGKILL (it ignored SIGTERM for 10 s)';
    },
  };
}

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port: p } = s.address();
      s.close(() => ok(p));
    });
  });
}

/** Polls `check` every 250 ms until it returns true; throws after `timeoutMs`. */
async function waitFor(what, timeoutMs, check) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(250);
  }
}
