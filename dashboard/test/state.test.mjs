import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  applyMessage,
  batchesSummary,
  createState,
  isNewRun,
  latestWindow,
  pageViewsSeries,
  resetData,
  sessionsSummary,
} from '../src/state.js';

const T0 = 938_476_800_000; // 1999-09-28 00:00 UTC, the MSNBC day

function batch(stream, id, rows, extra = {}) {
  return { type: 'batch', stream, batch: id, window_start_ms: null, window_end_ms: null, rows, snapshot: false, resync: false, skipped: 0, ...extra };
}
const pv = (s, url, count) => ({ window_start_ms: T0 + s * 1000, window_end_ms: T0 + s * 1000 + 1000, url, count });
const top = (startS, rank, url, count) => ({ window_start_ms: T0 + startS * 1000, window_end_ms: T0 + startS * 1000 + 30_000, rank, url, count });

test('a batch that closes several windows shows its newest one', () => {
  const msg = batch('top_pages', 7, [top(0, 1, '/news', 9), top(5, 2, '/tech', 4), top(5, 1, '/news', 11), top(0, 2, '/tech', 3)]);
  const w = latestWindow(msg);
  assert.equal(w.batch, 7);
  assert.equal(w.start, T0 + 5000);
  assert.equal(w.end, T0 + 35_000);
  const s = createState();
  applyMessage(s, msg);
  assert.deepEqual(s.topPages.rows.map((r) => [r.rank, r.url, r.count]), [[1, '/news', 11], [2, '/tech', 4]]);
  assert.equal(s.eventTimeMs, T0 + 35_000, 'the clock is the end of the newest window');
});

test('rows without window fields take the message window', () => {
  const msg = batch('active_visitors', 3, [{ unique_visitors: 42 }], { window_start_ms: T0, window_end_ms: T0 + 60_000 });
  const s = createState();
  applyMessage(s, msg);
  assert.deepEqual(s.activeLatest, { batch: 3, start: T0, end: T0 + 60_000, rows: [{ unique_visitors: 42 }], value: 42 });
  assert.equal(s.activeVisitors.get(T0), 42);
});

test('page views are summed per second, with zeros for silent seconds, and never double-counted', () => {
  const s = createState();
  applyMessage(s, batch('page_views', 1, [pv(0, '/a', 2), pv(0, '/b', 3), pv(2, '/a', 1)]));
  applyMessage(s, batch('page_views', 2, [pv(2, '/a', 1), pv(3, '/b', 5)])); // (2, /a) re-emitted
  assert.deepEqual(pageViewsSeries(s).map((p) => [(p.t - T0) / 1000, p.views]), [[0, 5], [1, 0], [2, 1], [3, 5]]);
});

test('the page views series spans the last two minutes of event time', () => {
  const s = createState();
  applyMessage(s, batch('page_views', 1, Array.from({ length: 300 }, (_, i) => pv(i, '/a', 1))));
  const series = pageViewsSeries(s);
  assert.equal(series.length, 120);
  assert.equal(series.at(-1).t, T0 + 299_000);
  assert.equal(series[0].t, T0 + 180_000);
});

test('sessions: closed per minute of session end, means over the span', () => {
  const s = createState();
  const session = (endS, clicks, durS) => ({ visitor_id: 'v1', session_start_ms: T0 + (endS - durS) * 1000, session_end_ms: T0 + endS * 1000, clicks, distinct_urls: 1 });
  applyMessage(s, batch('sessions', 1, [session(10, 2, 20), session(50, 4, 40), session(70, 6, 60), session(130, 1, 0)]));
  const sum = sessionsSummary(s);
  assert.deepEqual(sum.series.map((p) => [(p.t - T0) / 60_000, p.sessions]), [[0, 2], [1, 1], [2, 1]]);
  assert.equal(sum.sessions, 4);
  assert.equal(sum.meanClicks, 13 / 4);
  assert.equal(sum.meanDurationMs, 30_000);
  assert.equal(sum.perMinute, 1.5, 'the newest minute is still filling and does not count');
});

test('batches: input rate over the interval, averages, newest 120 kept', () => {
  const s = createState();
  const row = (b) => ({ batch: b, input_rows: 500, processing_ms: 100 + b, scheduling_delay_ms: 2, total_delay_ms: 102 + b, batch_interval_ms: 500 });
  for (let b = 0; b < 130; b++) applyMessage(s, batch('batches', b, [row(b)]));
  const sum = batchesSummary(s);
  assert.equal(sum.rows.length, 120);
  assert.equal(sum.rows[0].batch, 10);
  assert.equal(sum.rows[0].inputRate, 1000);
  assert.equal(sum.intervalMs, 500);
  assert.equal(sum.meanProcessingMs, 100 + (10 + 129) / 2);
});

test('trending by score, segments by sessions, page_views_30s by count', () => {
  const s = createState();
  const w = { window_start_ms: T0, window_end_ms: T0 + 60_000 };
  applyMessage(s, batch('trending', 1, [{ ...w, kind: 'page', item: '/a', count: 5, previous_count: 4, score: 0.2 }, { ...w, kind: 'search', item: 'q', count: 9, previous_count: 1, score: 4 }]));
  applyMessage(s, batch('segments', 1, [{ ...w, segment: 'new', sessions: 3, clicks: 9 }, { ...w, segment: 'loyal', sessions: 8, clicks: 40 }]));
  applyMessage(s, batch('page_views_30s', 1, [{ ...w, url: '/b', count: 2 }, { ...w, url: '/a', count: 2 }, { ...w, url: '/c', count: 7 }]));
  assert.deepEqual(s.trending.rows.map((r) => r.item), ['q', '/a']);
  assert.deepEqual(s.segments.rows.map((r) => r.segment), ['loyal', 'new']);
  assert.deepEqual(s.pageViews30s.rows.map((r) => r.url), ['/c', '/a', '/b']);
});

test('per-stream counters: last batch, skipped, resyncs; non-batch messages ignored', () => {
  const s = createState();
  applyMessage(s, { type: 'subscribed', streams: ['top_pages'], from_batch: null });
  applyMessage(s, batch('top_pages', 4, [top(0, 1, '/a', 1)], { skipped: 2 }));
  applyMessage(s, batch('top_pages', 9, [top(5, 1, '/a', 1)], { snapshot: true, resync: true }));
  applyMessage(s, batch('no_such_stream', 10, []));
  assert.deepEqual(s.streams.top_pages, { batch: 9, messages: 2, skipped: 2, resyncs: 1 });
  assert.equal(s.messages, 2);
  assert.equal(s.lastBatch, 9);
  const fresh = resetData(s);
  assert.equal(fresh.topPages, null);
  assert.equal(fresh.messages, 2, 'the page-lifetime message count survives a reset');
  assert.equal(fresh.resets, 1);
});

test('a page_views snapshot far behind the clock is a new server run', () => {
  const s = createState();
  applyMessage(s, batch('page_views', 50, [pv(3600, '/a', 1)]));
  assert.ok(isNewRun(s, batch('page_views', 3, [pv(5, '/a', 1)], { snapshot: true })));
  assert.ok(!isNewRun(s, batch('page_views', 3, [pv(5, '/a', 1)])), 'only snapshots');
  assert.ok(!isNewRun(s, batch('page_views', 60, [pv(3590, '/a', 1)], { snapshot: true })), 'a little behind is fine');
});
