// Reading the server's small HTTP endpoints: /api/streams and /metrics (docs/protocol.md).

/**
 * True when `/api/streams` shows a stream whose latest batch is *below* the last batch the
 * page received from it: batch ids of one stream only grow within a server run, so the
 * server was restarted and numbers its batches afresh. Resuming from the old ids would wait
 * until the new run reached them.
 *
 * @param {{name: string, latest_batch: number|null}[]} streams  the /api/streams answer
 * @param {Map<string, number>} lastBatch  stream → last batch id received
 */
export function serverStartedOver(streams, lastBatch) {
  return streams.some(
    (s) => s.latest_batch !== null && lastBatch.has(s.name) && s.latest_batch < lastBatch.get(s.name),
  );
}

const STATE_KEYS = /^clickpulse_operator_state_keys\{([^}]*)\}\s+([0-9.eE+-]+)\s*$/gm;

/**
 * Sessions open right now, from the `/metrics` text: the keys held by the sessions operator
 * (`clickpulse_operator_state_keys{operator="sessions"}`, one key per visitor with an open
 * session). Null when the metric is absent.
 */
export function openSessionsFromMetrics(text) {
  let best = null;
  for (const [, labels, value] of text.matchAll(STATE_KEYS)) {
    const op = /operator="([^"]*)"/.exec(labels)?.[1];
    if (op === undefined || !op.includes('session')) continue;
    const n = Number(value);
    if (!Number.isFinite(n)) continue;
    if (op === 'sessions') return n;
    best ??= n;
  }
  return best;
}
