// Realtime client for the tornado-app API: WebSocket, then Server-Sent Events, then long-poll,
// with gap-free resume. No dependencies: runs in browsers and in Node (global WebSocket on
// Node 22+, or pass one in, such as the `ws` package's).
//
// The cursor model (docs/realtime.md): every event has a deployment-wide `seq`. The client keeps
// `seq`, a position such that every event up to it on every subscribed channel has been handed to
// the app, and resumes from it after any drop. Each channel also keeps the last seq it delivered,
// so events that come twice (a replay overlapping live ones) are dropped, never delivered twice.

const TRANSPORTS = ['websocket', 'sse', 'poll'];
const API = '/api/v1';
const SILENCE_MS = 45000; // no byte for this long on an open stream or socket: it is dead
const HEARTBEAT_MS = 20000; // a WebSocket ping op this often, so silence means a dead link

export function connect(options) {
  return new RealtimeClient(options);
}

export class RealtimeClient {
  constructor(options = {}) {
    const origin = typeof location !== 'undefined' ? location.origin : undefined;
    this.url = String(options.url || origin || '').replace(/\/+$/, '');
    if (!this.url) throw new TypeError('connect(): url is required outside a browser');
    this._staticToken = options.token || null;
    this._getToken = options.getToken || null;
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
    this._fetch = options.fetch || globalThis.fetch.bind(globalThis);
    this._transports = (options.transports || TRANSPORTS).filter(
      (t) => t !== 'websocket' || this._WebSocket);
    this._backoff = { base: 500, max: 15000, ...(options.backoff || {}) };
    this._pollTimeout = options.pollTimeout ?? 25;
    this._connectTimeout = options.connectTimeout ?? 10000;
    this._onReset = options.onReset || null;
    this._onError = options.onError || ((error) => console.error('realtime:', error));
    this._statusListeners = new Set();
    if (options.onStatus) this._statusListeners.add(options.onStatus);

    this.seq = Number.isInteger(options.since) ? options.since : null;
    this.epoch = options.epoch || null;
    this._handlers = new Map(); // channel -> Set of callbacks
    this._cursors = new Map(); // channel -> last seq delivered (or its starting point)
    this._preferred = 0; // index into _transports of the transport to try first
    this._closed = false;
    this._token = null;
    this._tokenExp = null;
    this._tokenPromise = null;
    this._refreshTimer = null;
    this._live = null; // the running transport: {kind, changed(), stop()}
    this._wakeUp = null;
    this.status = { state: 'connecting', attempt: 0, transport: null };
    this._loop();
  }

  // --- public API ----------------------------------------------------------------------------

  subscribe(channels, onEvent, { since } = {}) {
    if (this._closed) throw new Error('client is closed');
    const list = [].concat(channels);
    if (Number.isInteger(since) && (this.seq === null || since < this.seq)) this.seq = since;
    const added = [];
    for (const channel of list) {
      if (!this._handlers.has(channel)) {
        this._handlers.set(channel, new Set());
        added.push(channel);
      }
      this._handlers.get(channel).add(onEvent);
      if (Number.isInteger(since)) this._cursors.set(channel, since);
      else if (this.seq !== null && !this._cursors.has(channel)) this._cursors.set(channel, this.seq);
    }
    if (added.length) this._changed(added, []);
    return { unsubscribe: () => this.unsubscribe(list, onEvent) };
  }

  unsubscribe(channels, onEvent) {
    const removed = [];
    for (const channel of [].concat(channels)) {
      const set = this._handlers.get(channel);
      if (!set) continue;
      if (onEvent) set.delete(onEvent); else set.clear();
      if (set.size === 0) {
        this._handlers.delete(channel);
        this._cursors.delete(channel);
        removed.push(channel);
      }
    }
    if (removed.length) this._changed([], removed);
  }

  onStatus(listener) {
    this._statusListeners.add(listener);
    return () => this._statusListeners.delete(listener);
  }

  close() {
    this._closed = true;
    clearTimeout(this._refreshTimer);
    if (this._live) this._live.stop();
    this._wake();
    this._setStatus('closed');
  }

  // --- the connection loop -------------------------------------------------------------------

  async _loop() {
    while (!this._closed) {
      if (this._handlers.size === 0) {
        await new Promise((resolve) => { this._wakeUp = resolve; });
        continue;
      }
      let result = { kind: 'refused' };
      for (const kind of this._transports.slice(this._preferred)) {
        if (this._closed) return;
        result = await this._attempt(kind);
        if (result.kind === 'refused' && kind === 'websocket' && kind !== this._transports.at(-1)) {
          // A browser's WebSocket says nothing of why it failed. A server that is down (or
          // restarting) refuses every transport: no reason to fall back, and one that came up
          // just after the attempt would otherwise keep this client on a lesser transport for
          // as long as that works. So fall back only once the server answers HTTP and a
          // second WebSocket attempt fails too.
          if (!(await this._reachable())) break;
          if (this._closed) return;
          result = await this._attempt(kind);
        }
        if (result.kind !== 'refused') break;
      }
      if (this._closed) return;
      if (result.kind === 'changed') continue;
      if (result.kind === 'reset' && this._resets < 2) continue; // else back off: a reset loop
      if (result.kind === 'auth' && this._getToken && !this._authRetried) {
        this._authRetried = true; // one immediate retry with a fresh token, then back off
        this._token = null;
        continue;
      }
      if (result.kind === 'fatal') this._onError(result.error);
      if (result.kind === 'auth') this._onError(new Error('the access token was refused (401)'));
      // A transport that worked and dropped: the next cycle starts from the first transport
      // again, so a fallback forced by a passing failure does not last forever.
      if (result.kind === 'dropped') this._preferred = 0;
      this.status.attempt += 1;
      this._setStatus('reconnecting');
      await this._sleep(this._delay(result.retryAfter));
    }
  }

  // Exponential backoff with full jitter (a random delay up to the exponential bound), never
  // sooner than the server's Retry-After.
  _delay(retryAfter) {
    const bound = Math.min(this._backoff.max, this._backoff.base * 2 ** (this.status.attempt - 1));
    return Math.max(Math.random() * bound, retryAfter || 0);
  }

  _sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this._wakeUp = () => { clearTimeout(timer); resolve(); };
    });
  }

  _wake() {
    const wake = this._wakeUp;
    this._wakeUp = null;
    if (wake) wake();
  }

  _changed(added, removed) {
    if (this._live) this._live.changed(added, removed);
    else this._wake();
  }

  async _attempt(kind) {
    try {
      if (this.seq === null) await this._fetchHead();
      if (this._closed) return { kind: 'closed' };
      const run = { websocket: this._runWebSocket, sse: this._runSse, poll: this._runPoll }[kind];
      return await run.call(this);
    } catch (error) {
      if (error && error.result) return error.result;
      return { kind: 'refused', error };
    } finally {
      this._live = null;
    }
  }

  _opened(kind) {
    this._preferred = this._transports.indexOf(kind);
    this._authRetried = false;
    this.status.attempt = 0;
    this.status.transport = kind;
    this._setStatus('open');
  }

  _setStatus(state) {
    this.status = { ...this.status, state };
    for (const listener of this._statusListeners) {
      try { listener({ ...this.status }); } catch (error) { this._onError(error); }
    }
  }

  // --- cursor and delivery -------------------------------------------------------------------

  _channels() {
    return [...this._handlers.keys()];
  }

  _startAt(seq) {
    this.seq = seq;
    for (const channel of this._handlers.keys()) {
      if (!this._cursors.has(channel)) this._cursors.set(channel, seq);
    }
  }

  // Whether the server answers HTTP at all (any status): a poll that answers at once.
  async _reachable() {
    const query = new URLSearchParams({ channels: this._channels().join(','), timeout: '0' });
    const headers = { Accept: 'application/json' };
    try {
      const token = await this._accessToken();
      if (token) headers.Authorization = `Bearer ${token}`;
      const response = await this._fetch(`${this.url}${API}/poll?${query}`, { headers });
      if (response.body && response.body.cancel) response.body.cancel().catch(() => {});
      return true;
    } catch (_) {
      return false;
    }
  }

  // Where the log is now, when the client has no cursor yet: a poll that answers at once.
  async _fetchHead() {
    const response = await this._http('/poll', { channels: this._channels().join(','), timeout: 0 });
    const body = await response.json();
    if (body.epoch) this.epoch = body.epoch;
    this._startAt(body.cursor);
  }

  _deliver(event, settled) {
    const last = this._cursors.get(event.channel);
    const handlers = this._handlers.get(event.channel);
    if (settled && (this.seq === null || event.seq > this.seq)) this.seq = event.seq;
    this._resets = 0;
    if (!handlers || (last !== undefined && event.seq <= last)) return; // unsubscribed, or a repeat
    this._cursors.set(event.channel, event.seq);
    for (const handler of [...handlers]) {
      try { handler(event); } catch (error) { this._onError(error); }
    }
  }

  // cursor_expired: the events after our cursor are gone (retention) or the log was replaced
  // (another epoch). The app reloads its state; onReset may answer the Event-Seq of that reload.
  async _reset(info) {
    this._setStatus('connecting'); // open again once resubscribed from the new cursor
    this.seq = null;
    this._cursors.clear();
    this.epoch = info.epoch || null;
    let since;
    if (this._onReset) {
      try { since = await this._onReset(info); } catch (error) { this._onError(error); }
    }
    // A position the server has just said is gone would only expire again.
    const gone = Number.isInteger(info.oldest_seq) && since < info.oldest_seq - 1;
    if (Number.isInteger(since) && !gone) this._startAt(since);
    this._resets = (this._resets || 0) + 1;
    return { kind: 'reset' };
  }

  _learnEpoch(epoch) {
    if (epoch) this.epoch = epoch;
  }

  // --- access token --------------------------------------------------------------------------

  async _accessToken() {
    if (!this._getToken) return this._staticToken;
    if (this._token && !(this._tokenExp && Date.now() >= this._tokenExp)) return this._token;
    if (!this._tokenPromise) {
      this._tokenPromise = Promise.resolve(this._getToken()).then((token) => {
        this._token = token;
        this._scheduleRefresh(token);
        return token;
      }).finally(() => { this._tokenPromise = null; });
    }
    return this._tokenPromise;
  }

  // Refreshed before it expires (at 80% of its life, at most a minute early), so no request
  // ever goes out with an expired token; an open WebSocket is told the new one.
  _scheduleRefresh(token) {
    clearTimeout(this._refreshTimer);
    const claims = jwtClaims(token);
    if (!claims || !claims.exp) { this._tokenExp = null; return; }
    const life = claims.iat ? (claims.exp - claims.iat) * 1000 : 300000;
    const early = Math.min(60000, life * 0.2);
    this._tokenExp = claims.exp * 1000 - early;
    this._refreshTimer = setTimeout(async () => {
      this._token = null;
      try {
        const fresh = await this._accessToken();
        if (this._live && this._live.auth) this._live.auth(fresh);
      } catch (error) { this._onError(error); }
    }, Math.max(0, this._tokenExp - Date.now()));
    if (this._refreshTimer.unref) this._refreshTimer.unref();
  }

  // --- HTTP (long-poll, SSE, the head cursor) ------------------------------------------------

  async _http(path, params, { signal, accept } = {}) {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) {
      if (value !== null && value !== undefined) query.set(key, String(value));
    }
    const headers = { Accept: accept || 'application/json' };
    const token = await this._accessToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    let response;
    try {
      response = await this._fetch(`${this.url}${API}${path}?${query}`, { headers, signal });
    } catch (error) {
      throw withResult(error, { kind: 'refused', error });
    }
    if (response.ok) return response;
    throw withResult(new Error(`HTTP ${response.status}`), await this._httpFailure(response));
  }

  async _httpFailure(response) {
    let error = {};
    try { error = (await response.json()).error || {}; } catch (_) { /* not our JSON */ }
    const retryAfter = Number(response.headers.get('Retry-After')) * 1000 || 0;
    if (response.status === 410 && error.code === 'cursor_expired') {
      const detail = (error.details && error.details[0]) || {};
      return this._reset({ code: error.code, message: error.message, oldest_seq: detail.oldest_seq,
        epoch: detail.epoch });
    }
    // Not our error shape: a proxy or something else in the way refused this transport.
    if (!error.code) return { kind: 'refused' };
    if (response.status === 401) return { kind: 'auth' };
    if (response.status === 429 || response.status >= 500) return { kind: 'retry', retryAfter };
    if (response.status === 403 || response.status === 422) {
      return { kind: 'fatal', error: Object.assign(new Error(error.message), error) };
    }
    return { kind: 'refused' }; // 404, 405...: something in the way does not speak this transport
  }

  _resumeParams() {
    const params = { channels: this._channels().join(','), since: this.seq };
    if (this.epoch) params.epoch = this.epoch;
    return params;
  }

  // Long-poll: one request at a time; the answer's cursor covers every channel asked for.
  async _runPoll() {
    let abort = null;
    let outcome = null;
    this._live = {
      kind: 'poll',
      changed: () => { outcome = { kind: 'changed' }; abort.abort(); },
      stop: () => { outcome = { kind: 'closed' }; abort.abort(); },
    };
    let opened = false;
    while (!outcome) {
      abort = new AbortController();
      const timer = setTimeout(() => abort.abort(), (this._pollTimeout + 15) * 1000);
      try {
        // The first request answers at once, so a working long-poll shows as open at once.
        const params = { ...this._resumeParams(), timeout: opened ? this._pollTimeout : 0 };
        const response = await this._http('/poll', params, { signal: abort.signal });
        const body = await response.json();
        if (outcome) break; // channels changed while it was in flight: its cursor is not ours
        if (!opened) { opened = true; this._opened('poll'); }
        this._learnEpoch(body.epoch);
        for (const event of body.events) this._deliver(event, true);
        if (body.cursor > this.seq) this.seq = body.cursor;
      } catch (error) {
        if (outcome) break;
        const result = error.result || { kind: 'refused', error };
        return opened && result.kind === 'refused' ? { kind: 'dropped' } : result;
      } finally {
        clearTimeout(timer);
      }
    }
    return outcome;
  }

  // Server-Sent Events read with fetch, not EventSource: it can send the Authorization header,
  // sees every named event (`event: <type>`) and sees the status and Retry-After of a refusal.
  async _runSse() {
    const abort = new AbortController();
    let outcome = null;
    this._live = {
      kind: 'sse',
      changed: () => { outcome = { kind: 'changed' }; abort.abort(); },
      stop: () => { outcome = { kind: 'closed' }; abort.abort(); },
    };
    let timer = setTimeout(() => abort.abort(), this._connectTimeout);
    let response;
    try {
      response = await this._http('/stream', this._resumeParams(),
        { signal: abort.signal, accept: 'text/event-stream' });
    } catch (error) {
      if (outcome) return outcome;
      throw error;
    } finally {
      clearTimeout(timer);
    }
    if (!(response.headers.get('Content-Type') || '').startsWith('text/event-stream') ||
        !response.body) {
      abort.abort();
      return { kind: 'refused' };
    }
    this._opened('sse');
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    let message = { event: 'message', data: [] };
    try {
      for (;;) {
        // The server sends a comment every 15 s: silence for much longer means a dead link.
        clearTimeout(timer);
        timer = setTimeout(() => abort.abort(), SILENCE_MS);
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        const lines = buffer.split(/\r\n|\r|\n/);
        buffer = lines.pop();
        for (const line of lines) {
          if (line === '') {
            if (message.data.length) {
              const result = await this._sseMessage(message.event, message.data.join('\n'));
              if (result) { abort.abort(); return result; }
            }
            message = { event: 'message', data: [] };
          } else if (!line.startsWith(':')) {
            const colon = line.indexOf(':');
            const field = colon < 0 ? line : line.slice(0, colon);
            const text = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
            if (field === 'event') message.event = text;
            else if (field === 'data') message.data.push(text);
          }
        }
      }
    } catch (error) {
      if (!outcome) return { kind: 'dropped', error };
    } finally {
      clearTimeout(timer);
    }
    return outcome || { kind: 'dropped' };
  }

  async _sseMessage(name, data) {
    const payload = JSON.parse(data);
    if (name === 'epoch') {
      this._learnEpoch(payload.epoch);
      if (Number.isInteger(payload.cursor) && this.seq === null) this._startAt(payload.cursor);
      return null;
    }
    if (name === 'error') {
      if (payload.code === 'cursor_expired') return this._reset(payload);
      return { kind: 'retry' };
    }
    this._deliver(payload, true);
    return null;
  }

  // WebSocket: authenticates with an `auth` op (a browser cannot set headers on the upgrade,
  // and a token in the URL ends up in logs), subscribes from the cursor, then sends a ping: the
  // server answers ops in order, so its pong means the replay is done and the cursor may move.
  _runWebSocket() {
    return new Promise((resolve) => {
      let opened = false;
      let settled = false; // no subscribe waiting for its replay to end
      let pingRef = 0;
      let highest = this.seq;
      let outcome = null;
      const url = this.url.replace(/^http/, 'ws') + API + '/ws';
      let ws;
      try {
        ws = new this._WebSocket(url);
      } catch (error) {
        resolve({ kind: 'refused', error });
        return;
      }
      let heartbeat = null;
      let heard = Date.now();
      const finish = (result) => {
        if (outcome) return;
        outcome = result;
        clearTimeout(timer);
        clearInterval(heartbeat);
        try { ws.close(1000); } catch (_) { /* already closed */ }
        resolve(result);
      };
      const timer = setTimeout(() => finish({ kind: 'refused' }), this._connectTimeout);
      const send = (message) => ws.send(JSON.stringify(message));
      const subscribe = (channels) => {
        if (!channels.length) return;
        const op = { op: 'subscribe', channels, since: this.seq, ref: 'sub' };
        if (this.epoch) op.epoch = this.epoch;
        send(op);
        settled = false;
        send({ op: 'ping', ref: ++pingRef });
      };
      this._live = {
        kind: 'websocket',
        changed: (added, removed) => {
          if (!opened) return;
          if (removed.length) send({ op: 'unsubscribe', channels: removed, ref: 'unsub' });
          subscribe(added);
        },
        stop: () => finish({ kind: 'closed' }),
        auth: (token) => { if (opened && token) send({ op: 'auth', token, ref: 'auth' }); },
      };
      ws.onopen = async () => {
        clearTimeout(timer);
        try {
          const token = await this._accessToken();
          if (outcome) return;
          opened = true;
          if (token) send({ op: 'auth', token, ref: 'auth' });
          subscribe(this._channels());
          this._opened('websocket');
          heartbeat = setInterval(() => {
            if (Date.now() - heard > SILENCE_MS) finish({ kind: 'dropped' });
            else send({ op: 'ping', ref: 'heartbeat' });
          }, HEARTBEAT_MS);
        } catch (error) {
          finish({ kind: 'fatal', error });
        }
      };
      let ending = false;
      ws.onmessage = async (message) => {
        if (outcome || ending) return;
        heard = Date.now();
        const frame = JSON.parse(typeof message.data === 'string' ? message.data
          : new TextDecoder().decode(message.data));
        if (frame.type === 'event') {
          const event = frame.event;
          if (highest === null || event.seq > highest) highest = event.seq;
          this._deliver(event, settled);
        } else if (frame.type === 'subscribed') {
          this._learnEpoch(frame.epoch);
        } else if (frame.type === 'pong' && frame.ref === pingRef) {
          settled = true;
          if (highest !== null && (this.seq === null || highest > this.seq)) this.seq = highest;
        } else if (frame.type === 'error') {
          const code = frame.code;
          if (code === 'cursor_expired') {
            ending = true; // nothing more from this socket may move the cursor
            finish(await this._reset(frame));
          }
          else if (code === 'unauthorized') finish({ kind: 'auth' });
          else if (code === 'service_unavailable' || code === 'rate_limited') {
            finish({ kind: 'retry' });
          } else this._onError(Object.assign(new Error(frame.message), frame));
        }
      };
      ws.onerror = () => {}; // onclose follows and says what it means
      ws.onclose = () => finish(opened ? { kind: 'dropped' } : { kind: 'refused' });
    });
  }
}

function withResult(error, result) {
  error.result = result;
  return error;
}

function jwtClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4)));
  } catch (_) {
    return null;
  }
}
