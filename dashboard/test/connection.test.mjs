import assert from 'node:assert/strict';
import { test } from 'node:test';

import { backoffDelay, DEFAULTS, State, StreamClient, subscribeRequests } from '../src/connection.js';

test('backoff doubles from the base up to the cap, with ±25 % jitter', () => {
  const o = { baseDelayMs: 500, maxDelayMs: 5000 };
  assert.deepEqual([0, 1, 2, 3, 4, 10].map((a) => backoffDelay(a, o, () => 0.5)), [500, 1000, 2000, 4000, 5000, 5000]);
  assert.equal(backoffDelay(0, o, () => 0), 375);
  assert.equal(backoffDelay(10, o, () => 0.999999), 6250);
});

test('one subscribe per stream, resuming after the last batch seen', () => {
  assert.deepEqual(subscribeRequests(['a', 'b'], new Map([['b', 41]])), [
    { op: 'subscribe', streams: ['a'] },
    { op: 'subscribe', streams: ['b'], from_batch: 42 },
  ]);
});

/** A fake WebSocket and clock: sockets open when the test says so. */
function harness(options = {}) {
  const sockets = [];
  const timers = [];
  let now = 0;
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.sent = [];
      this.readyState = 0;
      sockets.push(this);
    }
    send(data) {
      this.sent.push(JSON.parse(data));
    }
    close() {
      this.readyState = 3;
    }
    open() {
      this.readyState = 1;
      this.onopen();
    }
    drop() {
      this.readyState = 3;
      this.onclose();
    }
    deliver(msg) {
      this.onmessage({ data: JSON.stringify(msg) });
    }
  }
  const states = [];
  const messages = [];
  const client = new StreamClient({
    url: 'ws://x/ws',
    streams: ['top_pages', 'sessions'],
    onMessage: (m) => messages.push(m),
    onState: (s, info) => states.push([s, info]),
    options,
    env: {
      WebSocket: FakeWebSocket,
      setTimeout: (f, ms) => timers.push({ f, at: now + ms }) - 1,
      clearTimeout: (i) => {
        if (timers[i]) timers[i].f = null;
      },
      now: () => now,
      random: () => 0.5,
    },
  });
  /** Advances the clock by `ms`, firing due timers in order. */
  const advance = (ms) => {
    const end = now + ms;
    for (;;) {
      const due = timers.filter((t) => t.f && t.at <= end).sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      now = due.at;
      const f = due.f;
      due.f = null;
      f();
    }
    now = end;
  };
  const tick = () => new Promise((r) => setImmediate(r)); // lets the async onopen finish
  return { client, sockets, states, messages, advance, tick };
}

test('subscribes on open, resumes after a drop, and reports each state', async () => {
  const h = harness();
  h.client.start();
  h.sockets[0].open();
  await h.tick();
  assert.deepEqual(h.sockets[0].sent, [
    { op: 'subscribe', streams: ['top_pages'] },
    { op: 'subscribe', streams: ['sessions'] },
  ]);
  assert.equal(h.client.state, State.CONNECTED);
  h.sockets[0].deliver({ type: 'batch', stream: 'top_pages', batch: 17, rows: [] });
  assert.equal(h.messages.length, 1);

  h.sockets[0].drop();
  assert.equal(h.client.state, State.RECONNECTING);
  assert.deepEqual(h.states.at(-1), [State.RECONNECTING, { retryInMs: 500, attempt: 1 }]);
  h.advance(500);
  assert.equal(h.sockets.length, 2, 'retried after the backoff');
  h.sockets[1].open();
  await h.tick();
  assert.deepEqual(h.sockets[1].sent, [
    { op: 'subscribe', streams: ['top_pages'], from_batch: 18 },
    { op: 'subscribe', streams: ['sessions'] },
  ]);
  assert.equal(h.client.state, State.CONNECTED);
});

test('retries back off, and a long outage reads "disconnected"', () => {
  const h = harness();
  h.client.start();
  h.client.state = State.CONNECTED; // as if it had connected once
  h.sockets[0].drop();
  const delays = [];
  for (let i = 0; i < 8; i++) {
    delays.push(h.states.at(-1)[1].retryInMs);
    h.advance(h.states.at(-1)[1].retryInMs);
    h.sockets.at(-1).drop();
  }
  assert.deepEqual(delays, [500, 1000, 2000, 4000, 5000, 5000, 5000, 5000]);
  assert.ok(h.states.some(([s]) => s === State.RECONNECTING));
  assert.equal(h.client.state, State.DISCONNECTED, `after ${DEFAULTS.giveUpMs} ms without a connection`);
});

test('a silent connection is pinged, then dropped and replaced', async () => {
  const h = harness({ pingEveryMs: 1000, staleAfterMs: 2500 });
  h.client.start();
  h.sockets[0].open();
  await h.tick();
  h.advance(1000);
  assert.deepEqual(h.sockets[0].sent.at(-1), { op: 'ping' });
  h.sockets[0].deliver({ type: 'pong' });
  h.advance(2000);
  assert.equal(h.client.state, State.CONNECTED, 'the pong kept it alive');
  h.advance(2000);
  assert.equal(h.client.state, State.RECONNECTING, 'nothing heard for 2.5 s');
  h.advance(500);
  assert.equal(h.sockets.length, 2);
});

test('the streams the server has are the ones subscribed; a new run forgets resume points', async () => {
  const h = harness();
  h.client.beforeSubscribe = async (c) => {
    c.lastBatch.clear();
    return ['sessions'];
  };
  h.client.lastBatch.set('sessions', 99);
  h.client.start();
  h.sockets[0].open();
  await h.tick();
  assert.deepEqual(h.sockets[0].sent, [{ op: 'subscribe', streams: ['sessions'] }]);
  h.sockets[0].deliver({ type: 'batch', stream: 'sessions', batch: 5, rows: [] });
  h.client.resubscribeFresh();
  assert.deepEqual(h.sockets[0].sent.at(-1), { op: 'subscribe', streams: ['sessions'] }, 'afresh, and only what the server has');
  assert.equal(h.sockets[0].sent.length, 2);
});
