import assert from 'node:assert/strict';
import { test } from 'node:test';

import { formatClock, formatCount, formatDate, formatDuration, formatNumber, formatWindow } from '../src/format.js';

test('numbers', () => {
  assert.equal(formatCount(1234567), '1,234,567');
  assert.equal(formatCount(null), '—');
  assert.equal(formatNumber(3.14), '3.1');
  assert.equal(formatNumber(1234.5), '1,235');
});

test('durations', () => {
  assert.equal(formatDuration(850), '850 ms');
  assert.equal(formatDuration(12.34), '12.3 ms');
  assert.equal(formatDuration(1500), '1.5 s');
  assert.equal(formatDuration(95_000), '1m 35s');
  assert.equal(formatDuration(3_900_000), '1h 5m');
  assert.equal(formatDuration(undefined), '—');
});

test('event times are UTC', () => {
  const t = 938_476_800_000 + 14 * 3600_000 + 32 * 60_000 + 5000;
  assert.equal(formatClock(t), '14:32:05');
  assert.equal(formatDate(t), '1999-09-28');
  assert.equal(formatWindow(t, t + 30_000), '14:32:05 – 14:32:35');
});
