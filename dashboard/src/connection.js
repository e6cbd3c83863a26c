// The WebSocket client: subscribes to every stream, resumes each from the batch after the
// last one it saw (docs/protocol.md, "Resuming after a disconnect"), reconnects with capped
// exponential backoff, and notices a dead connection by pinging. No DOM: the WebSocket
// constructor, the timers and the random source are injected so it is unit-tested in node.

/** Connection states, as shown on the page. */
export const State = Object.freeze({
  CONNECTING: 'connecting', // first attempt, never connected yet
  CONNECTED: 'connected',
  RECONNECTING: 'reconnecting', // lost, retrying
  DISCONNECTED: 'disconnected', // lost for longer than `giveUpMs`; still retrying, slowly
});

export const DEFAULTS = Object.freeze({
  baseDelayMs: 500, // first retry after ~0.5 s …
  maxDelayMs: 5000, // … doubling up to 5 s
  giveUpMs: 15_000, // after 15 s without a connection, show "disconnected"
  pingEveryMs: 10_000, // an idle connection sends {"op":"ping"} this often …
  staleAfterMs: 25_000, // … and is dropped when nothing at all arrived for this long
});

/** Delay before retry number `attempt` (0-based): base·2^attempt capped, with ±25 % jitter. */
export function backoffDelay(attempt, { baseDelayMs, maxDelayMs }, random = Math.random) {
  const d = Math.min(maxDelayMs, baseDelayMs * 2 ** Math.min(attempt, 30));
  return Math.round(d * (0.75 + random() * 0.5));
}

/** The subscribe requests for a (re)connection: one per stream, each with its resume point. */
export function subscribeRequests(streams, lastBatch) {
  return streams.map((s) => {
    const req = { op: 'subscribe', streams: [s] };
    if (lastBatch.has(s)) req.from_batch = lastBatch.get(s) + 1;
    return req;
  });
}

export class StreamClient {
  /**
   * @param {object} o
   * @param {string} o.url           the ws:// or wss:// URL of /ws
   * @param {string[]} o.streams     streams to subscribe to
   * @param {(msg: object) => void} o.onMessage   every parsed server message
   * @param {(state: string, info: object) => void} o.onState   state changes
   * @param {(client: StreamClient) => Promise<string[]|null>} [o.beforeSubscribe]
   *        called on every open, before subscribing: returns the streams the server has (null:
   *        unknown, subscribe to all); may clear `client.lastBatch` to start afresh
   */
  constructor({ url, streams, onMessage, onState, beforeSubscribe, options = {}, env = {} }) {
    this.url = url;
    this.streams = streams;
    this.onMessage = onMessage;
    this.onState = onState;
    this.beforeSubscribe = beforeSubscribe ?? (async () => null);
    this.options = { ...DEFAULTS, ...options };
    this.WebSocket = env.WebSocket ?? globalThis.WebSocket;
    this.setTimeout = env.setTimeout ?? globalThis.setTimeout.bind(globalThis);
    this.clearTimeout = env.clearTimeout ?? globalThis.clearTimeout.bind(globalThis);
    this.now = env.now ?? Date.now;
    this.random = env.random ?? Math.random;
    /** stream → batch id of the last batch message processed. */
    this.lastBatch = new Map();
    /** The streams of the current connection's subscriptions. */
    this.subscribed = [];
    this.state = State.CONNECTING;
    this.attempt = 0;
    this.lostAt = null;
    this.ws = null;
    this.retryTimer = null;
    this.pingTimer = null;
    this.lastHeard = 0;
    this.stopped = false;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    this.clearTimeout(this.retryTimer);
    this.clearTimeout(this.pingTimer);
    this.ws?.close();
  }

  /** Forgets the resume points and subscribes afresh (used when the server started a new run). */
  resubscribeFresh() {
    this.lastBatch.clear();
    if (this.state === State.CONNECTED) this.subscribe(this.subscribed);
  }

  connect() {
    if (this.stopped) return;
    let ws;
    try {
      ws = new this.WebSocket(this.url);
    } catch {
      this.lost();
      return;
    }
    this.ws = ws;
    ws.onopen = () => this.opened(ws);
    ws.onmessage = (e) => this.received(ws, e.data);
    ws.onclose = () => this.closed(ws);
    ws.onerror = () => {}; // always followed by close
  }

  async opened(ws) {
    if (ws !== this.ws) return;
    this.attempt = 0;
    this.lostAt = null;
    this.lastHeard = this.now();
    let available = null;
    try {
      available = await this.beforeSubscribe(this);
    } catch {
      available = null;
    }
    if (ws !== this.ws || ws.readyState !== 1) return;
    this.subscribe(available ?? this.streams);
    this.setState(State.CONNECTED);
    this.schedulePing(ws);
  }

  subscribe(streams) {
    this.subscribed = streams;
    for (const req of subscribeRequests(streams, this.lastBatch)) this.ws.send(JSON.stringify(req));
  }

  received(ws, data) {
    if (ws !== this.ws) return;
    this.lastHeard = this.now();
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (msg.type === 'batch') this.lastBatch.set(msg.stream, msg.batch);
    this.onMessage(msg);
  }

  closed(ws) {
    if (ws !== this.ws) return;
    this.ws = null;
    this.clearTimeout(this.pingTimer);
    this.lost();
  }

  lost() {
    if (this.stopped) return;
    const now = this.now();
    if (this.lostAt === null) this.lostAt = now;
    const delay = backoffDelay(this.attempt, this.options, this.random);
    this.attempt += 1;
    let next = this.state === State.CONNECTING ? State.CONNECTING : State.RECONNECTING;
    if (now - this.lostAt >= this.options.giveUpMs) next = State.DISCONNECTED;
    this.setState(next, { retryInMs: delay, attempt: this.attempt });
    this.retryTimer = this.setTimeout(() => this.connect(), delay);
  }

  schedulePing(ws) {
    this.pingTimer = this.setTimeout(() => {
      if (ws !== this.ws) return;
      if (this.now() - this.lastHeard >= this.options.staleAfterMs) {
        ws.close(); // its close event reconnects
        this.closed(ws);
        return;
      }
      ws.send(JSON.stringify({ op: 'ping' }));
      this.schedulePing(ws);
    }, this.options.pingEveryMs);
  }

  setState(state, info = {}) {
    this.state = state;
    this.onState(state, info);
  }
}
