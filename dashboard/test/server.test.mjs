import assert from 'node:assert/strict';
import { test } from 'node:test';

import { checkStreams, openSessionsFromMetrics, serverStartedOver } from '../src/server.js';

test('a stream whose latest batch went backwards means a new server run', () => {
  const last = new Map([['top_pages', 120]]);
  assert.ok(serverStartedOver([{ name: 'top_pages', latest_batch: 3 }], last));
  assert.ok(!serverStartedOver([{ name: 'top_pages', latest_batch: 120 }], last));
  assert.ok(!serverStartedOver([{ name: 'top_pages', latest_batch: null }], last));
  assert.ok(!serverStartedOver([{ name: 'sessions', latest_batch: 3 }], last));
});

test('open sessions are the sessions operator state keys', () => {
  const text = [
    '# TYPE clickpulse_operator_state_keys gauge',
    'clickpulse_operator_state_keys{operator="page_views_30s"} 120',
    'clickpulse_operator_state_keys{operator="sessions"} 4711',
    '# EOF',
  ].join('\n');
  assert.equal(openSessionsFromMetrics(text), 4711);
  assert.equal(openSessionsFromMetrics('clickpulse_operator_state_keys{operator="live_sessions"} 5\n'), 5);
  assert.equal(openSessionsFromMetrics('clickpulse_batches_total 3\n'), null);
});

test('batches that arrive while /api/streams is in flight do not look like a restart', async () => {
  const last = new Map([['top_pages', 29]]);
  const slow = async () => {
    last.set('top_pages', 30); // a WebSocket message lands before the answer
    return [{ name: 'top_pages', latest_batch: 29 }];
  };
  assert.deepEqual(await checkStreams(slow, last), { info: [{ name: 'top_pages', latest_batch: 29 }], startedOver: false });
  const restarted = async () => [{ name: 'top_pages', latest_batch: 2 }];
  assert.equal((await checkStreams(restarted, last)).startedOver, true);
  assert.deepEqual(await checkStreams(async () => null, last), { info: null, startedOver: false });
});
