import assert from 'node:assert/strict';
import { test } from 'node:test';

import { openSessionsFromMetrics, serverStartedOver } from '../src/server.js';

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
