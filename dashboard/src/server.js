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

/**
 * Fetches `/api/streams` (through `fetchStreams`) and tells whether the server started over
 * since the page saw `lastBatch`. The resume points are copied *before* the request: batches
 * that arrive over the WebSocket while the request is in flight may be newer than the answer,
 * and comparing against those would mistake a slow answer for a restarted server.
 *
 * @returns {Promise<{info: object[]|null, startedOver: boolean}>}
 */
export async function checkStreams(fetchStreams, lastBatch) {
  const seen = new Map(lastBatch);
  const info = await fetchStreams();
  if (!Array.isArray(info)) return { info: null, startedOver: false };
  return { info, startedOver: serverStartedOver(info, seen) };
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
