// @homeroom/client: the browser (and Node) client of a Homeroom room. Plain ES module, no build step.
//
//   import { HomeroomClient } from '/client/homeroom.js';
//   const client = new HomeroomClient({ room: 'math-101', getToken: async () => myBackend.token() });
//   client.on('change', () => render(client.state));
//   client.on('status', (s) => showStatus(s));
//   await client.connect();
//   await client.sendChat('Good morning!');
//
// Layout:
// - room-state.js: the room as the client knows it, and the rules for applying frames (pure, unit-tested);
// - outbox.js:     the offline queue of chat messages, idempotent by rid (pure, unit-tested);
// - backoff.js:    reconnect delays (pure);
// - errors.js:     error type, close-code plans, token expiry;
// - media.js:      WebRTC with the room's media node (publish camera/mic/screen, subscribe, renegotiate);
// - this file:     the connection: socket, resume, requests and acks, token refresh, reconnects.
//
// Connection lifecycle (status events): idle → connecting → open ⇄ reconnecting → closed. "open" means the
// room's welcome arrived. A dropped connection reconnects with backoff and resumes with `since`/`epoch`; the
// replayed events are de-duplicated by seq. Close codes decide whether to reconnect (see errors.js).

import { backoffDelay } from './backoff.js';
import { Emitter } from './emitter.js';
import { closePlan, HomeroomError, tokenExpiry } from './errors.js';
import { MediaController } from './media.js';
import { Outbox, RETRYABLE_CODES } from './outbox.js';
import { isLoggedEvent, RoomState } from './room-state.js';

export { backoffDelay, DEFAULT_BACKOFF } from './backoff.js';
export { Emitter } from './emitter.js';
export { closePlan, HomeroomError, tokenExpiry } from './errors.js';
export { MediaController, MediaSession } from './media.js';
export { Outbox, RETRYABLE_CODES } from './outbox.js';
export { isLoggedEvent, LOGGED_EVENT_TYPES, RoomState } from './room-state.js';

/** @typedef {import('./room-state.js').Participant} Participant */
/** @typedef {import('./room-state.js').ChatMessage} ChatMessage */
/** @typedef {import('./backoff.js').BackoffOptions} BackoffOptions */

/**
 * @typedef {'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed'} ConnectionStatus
 * @typedef {object} StatusInfo
 * @property {ConnectionStatus} status
 * @property {string} [reason]   why (e.g. `kicked`, `room_cleared`, `token_expired`, `offline`, `network`, `left`)
 * @property {number} [code]     the WebSocket close code, when a close caused it
 * @property {string} [message]  a sentence for the user
 * @property {number} [attempt]  reconnect attempt number
 * @property {number} [retryAt]  when the next attempt starts (ms since the epoch)
 */

/**
 * @typedef {object} ClientOptions
 * @property {string} room                       room id (1–64 of A-Z a-z 0-9 _ -)
 * @property {string} [baseUrl]                  the edge, e.g. `https://edge.example.com`; default: this page's origin
 * @property {string} [token]                    a JWT; or give `getToken`
 * @property {(ctx: {reason: string}) => Promise<string | {token: string}>} [getToken]
 *           returns a fresh token; called when there is none, before `exp`, on `auth.expiring` and after 4001
 * @property {BackoffOptions} [backoff]          reconnect delays
 * @property {number} [requestTimeoutMs]         per request, default 10 s
 * @property {number} [pongTimeoutMs]            a connection that answers nothing this long after a ping is dead, default 10 s
 * @property {number} [pingIntervalMs]           default: the room's `ping_interval_ms` × 0.8
 * @property {number} [refreshLeadMs]            refresh the token this long before `exp`, default 120 s
 * @property {number} [welcomeTimeoutMs]         a socket that brings no `welcome` this long after it was opened is dead, default 15 s
 * @property {number} [stableAfterMs]            a connection up this long resets the reconnect backoff, default 10 s
 * @property {number} [rateLimitRetryMs]         a rate-limited chat message waits this long before it is written again, default 1 s
 * @property {boolean} [watchNetwork]            react to the browser's online/offline events, default true
 * @property {boolean} [reportPresence]          send `presence` away/active when the page is hidden/shown, default true
 * @property {any} [WebSocket]                   WebSocket constructor (tests inject a fake)
 * @property {typeof fetch} [fetch]
 * @property {(level: 'debug' | 'info' | 'warn' | 'error', message: string, data?: any) => void} [log]
 */

/** Replies that answer a request (they carry its `rid`). */
const REPLY_TYPES = new Set(['ack', 'error', 'history', 'media.assigned']);
/** Ephemeral events that change the room state. */
const STATEFUL_EPHEMERAL = new Set(['typing', 'presence', 'read']);
/** Retryable refusals (rate_limited, unavailable, …) of one chat message before it is marked failed. */
const MAX_CHAT_RETRIES = 10;
/** Frames the outbox leaves in the rate budget for what the user does meanwhile (typing, reactions). */
const RATE_RESERVE = 2;

export class HomeroomClient extends Emitter {
  /** @param {ClientOptions} options */
  constructor(options) {
    super();
    if (!options?.room) throw new HomeroomError('bad_request', 'HomeroomClient needs a room id');
    if (!options.token && !options.getToken) {
      throw new HomeroomError('unauthorized', 'HomeroomClient needs a token or a getToken function');
    }
    this.options = {
      requestTimeoutMs: 10_000,
      pongTimeoutMs: 10_000,
      refreshLeadMs: 120_000,
      welcomeTimeoutMs: 15_000,
      stableAfterMs: 10_000,
      rateLimitRetryMs: 1000,
      watchNetwork: true,
      reportPresence: true,
      ...options,
    };
    this.room = options.room;
    this.baseUrl = (options.baseUrl ?? globalThis.location?.origin ?? '').replace(/\/+$/, '');
    /** The room as last seen; render from it. */
    this.state = new RoomState();
    /** Chat messages waiting for their ack (render them as "sending…" / "queued" / "failed"). */
    this.outbox = new Outbox();
    /** @type {StatusInfo} */
    this.status = { status: 'idle' };
    /** Media through the room's media node. */
    this.media = new MediaController(this);

    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this._fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    this._token = options.token ?? null;
    this._tokenExp = this._token ? tokenExpiry(this._token) : null;
    /** @type {any} */
    this._ws = null;
    /** Number of the current socket; frames of older sockets are ignored. */
    this._connection = 0;
    this._attempt = 0;
    this._ridPrefix = randomId(8);
    this._ridCounter = 0;
    /** rid → an in-flight request. */
    this._pending = new Map();
    /** rid → the promise callbacks of a queued chat message. */
    this._outboxWaiters = new Map();
    /** rid → ack timer of a chat message written to the current socket. */
    this._outboxTimers = new Map();
    this._timers = {
      reconnect: null,
      ping: null,
      pong: null,
      welcome: null,
      stable: null,
      refresh: null,
      typingStop: null,
      flush: null,
    };
    /** The room's per-connection token bucket as this client has spent it (see `_spendRate`). */
    this._rate = new RateBudget();
    /** Whether a welcome ever arrived: later sign-in failures are worth retrying, the first one is shown. */
    this._everOpen = false;
    this._closedByUser = false;
    this._refreshing = null;
    this._typingSentAt = 0;
    this._lastReadSent = 0;
    /** Token refusals (401, 4001) since the last welcome: the second one in a row stops the client. */
    this._tokenRefusals = 0;
    /** This connection received `room.cleared` (its close, whatever its code, is the clear's). */
    this._sawRoomCleared = false;
    this._installBrowserHooks();
  }

  // ---- connection ------------------------------------------------------------------------------------------

  /** Whether the room's welcome arrived on the current socket. */
  get isOpen() {
    return this.status.status === 'open';
  }

  /** My participant id (after the first welcome). */
  get userId() {
    return this.state.you?.id ?? null;
  }

  /**
   * Connects (or reconnects now, if waiting for a retry). Resolves at the first welcome; rejects if the client
   * closes for good before that (e.g. the token was refused).
   * @returns {Promise<void>}
   */
  connect() {
    this._closedByUser = false;
    this._installBrowserHooks();
    const opened = new Promise((resolve, reject) => {
      const off = this.on('status', (s) => {
        if (s.status === 'open') {
          off();
          resolve();
        } else if (s.status === 'closed') {
          off();
          reject(new HomeroomError(s.reason ?? 'closed', s.message ?? 'the connection closed'));
        }
      });
    });
    if (this.status.status !== 'open' && this.status.status !== 'connecting') {
      this._openSocket(this.status.status === 'reconnecting' ? 'reconnecting' : 'connecting');
    }
    return opened;
  }

  /** Leaves the room: closes the socket and the media session, and stops reconnecting. */
  close(message = 'You left the room.') {
    this._closedByUser = true;
    // An open still waiting for its token (getToken) must not go on to connect after this.
    this._connection += 1;
    this.media.leave().catch(() => {});
    const ws = this._ws;
    this._detachSocket();
    try {
      ws?.close(1000, 'left');
    } catch {
      // already closing
    }
    this._failPending('closed', 'the client was closed');
    for (const entry of this.outbox.clear()) {
      this._outboxWaiters.get(entry.rid)?.reject(new HomeroomError('closed', 'the client was closed before this message was sent'));
      this._outboxWaiters.delete(entry.rid);
    }
    this._clearSessionTimers();
    this._setStatus({ status: 'closed', reason: 'left', message });
    this._uninstallBrowserHooks();
  }

  /**
   * Drops the current connection as if the network failed (for tests and a "reconnect now" button); the client
   * reconnects and resumes on its own.
   */
  dropConnection(reason = 'dropped by the application') {
    if (!this._ws) return;
    this._abandonSocket('network', `Connection dropped (${reason}); reconnecting.`);
  }

  /** Reconnects now: after a close for good (kicked ban over, policy) or to skip a backoff wait. */
  reconnect() {
    this._closedByUser = false;
    this._attempt = 0;
    this._tokenRefusals = 0;
    clearTimeout(this._timers.reconnect);
    if (this._ws) this._abandonSocket('network', 'Reconnecting now.');
    else this._openSocket('connecting');
  }

  /** @param {{since: number, epoch: string} | null} resume */
  _socketUrl(resume) {
    const base = this.baseUrl.replace(/^http/, 'ws');
    // batch=1: a busy room may send several frames as one JSON array (see docs/protocol.md, "Coalescing").
    const params = new URLSearchParams({ token: this._token ?? '', batch: '1' });
    if (resume) {
      params.set('since', String(resume.since));
      params.set('epoch', resume.epoch);
    }
    return `${base}/v1/rooms/${encodeURIComponent(this.room)}/ws?${params}`;
  }

  /**
   * Opens a socket. `fresh`: do not resume (after a room clear).
   * @param {'connecting' | 'reconnecting'} status
   */
  async _openSocket(status, { fresh = false } = {}) {
    clearTimeout(this._timers.reconnect);
    // A socket still connecting (or open) is closed, not just forgotten: it would hold one of the user's
    // connections at the room (and receive all its traffic) until the server noticed.
    const previous = this._ws;
    this._detachSocket();
    closeQuietly(previous, 4000, 'replaced');
    const connection = ++this._connection;
    this._setStatus({ ...this.status, status, retryAt: undefined });
    const expired = this._tokenExp !== null && this._tokenExp * 1000 <= Date.now();
    if (expired && this.options.getToken) this._token = null;
    if (!this._token) {
      try {
        await this._obtainToken('connect');
      } catch (error) {
        if (connection !== this._connection) return;
        if (this._everOpen && isTransientTokenFailure(error)) {
          // A laptop waking up: the network may not be back yet. The first sign-in's failure is shown instead.
          this._scheduleReconnect({ reason: 'token_unavailable', message: `Could not get a sign-in token (${error.message}); retrying.` });
          return;
        }
        this._closeForGood('unauthorized', `Could not get a sign-in token: ${error.message}`);
        return;
      }
      if (connection !== this._connection) return;
    }
    if (fresh) this.state.reset();
    const url = this._socketUrl(this.state.resumePoint());
    let ws;
    try {
      ws = new this._WebSocket(url);
    } catch (error) {
      this._closeForGood('bad_request', `Cannot open a WebSocket to ${this.baseUrl || 'this page'}: ${error.message}`);
      return;
    }
    this._ws = ws;
    this._timers.welcome = setTimeout(() => {
      if (connection !== this._connection) return;
      this._abandonSocket('stalled', `The room sent no welcome within ${this.options.welcomeTimeoutMs / 1000} s; reconnecting.`);
    }, this.options.welcomeTimeoutMs);
    let opened = false;
    ws.onopen = () => {
      if (connection !== this._connection) return;
      opened = true;
      this._log('debug', `socket ${connection} open`);
    };
    ws.onmessage = (event) => {
      if (connection !== this._connection) return;
      this._onText(typeof event.data === 'string' ? event.data : String(event.data));
    };
    ws.onerror = () => {
      // A close event always follows; its code says more than this event.
    };
    ws.onclose = (event) => {
      if (connection !== this._connection) return;
      this._onSocketClosed(event.code, event.reason ?? '', opened);
    };
  }

  /** Forgets the current socket: its later events are ignored. */
  _detachSocket() {
    const ws = this._ws;
    this._ws = null;
    this._connection += ws ? 1 : 0;
    for (const name of ['ping', 'pong', 'welcome', 'stable']) {
      clearInterval(this._timers[name]);
      clearTimeout(this._timers[name]);
    }
    if (ws) {
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    }
  }

  /**
   * Treats the current socket as dead without waiting for its close event (which can take minutes when the
   * network is gone), and reconnects.
   */
  _abandonSocket(reason, message) {
    const ws = this._ws;
    this._detachSocket();
    try {
      ws?.close(4000, reason.slice(0, 100));
    } catch {
      // ignore
    }
    this._afterDisconnect();
    this._scheduleReconnect({ reason, message });
  }

  /** Shared clean-up after any disconnect. */
  _afterDisconnect() {
    this._failPending('disconnected', 'the connection closed before the reply arrived; retry');
    for (const timer of this._outboxTimers.values()) clearTimeout(timer);
    this._outboxTimers.clear();
    this.outbox.requeueAll();
    this.emit('outbox', this.outbox.list());
  }

  async _onSocketClosed(code, serverReason, opened) {
    this._ws = null;
    this._detachSocket();
    this._afterDisconnect();
    if (this._closedByUser) return;
    // After `room.cleared` the room closes with 4004; a close that arrives as anything else (the close frame
    // lost with the network) still means the room was cleared: same plan, not a resume into the old epoch.
    const cleared = this._sawRoomCleared;
    this._sawRoomCleared = false;
    const plan = closePlan(cleared ? 4004 : code, serverReason);
    this._log(code >= 4000 ? 'warn' : 'info', `socket closed ${code} ${serverReason}`.trim());

    if (plan.retry === false) {
      this._closeForGood(plan.reason, plan.message, code);
      return;
    }
    if (plan.retry === 'fresh') {
      this.media.leave().catch(() => {});
      this.state.reset();
      this.emit('change', { type: 'reset' });
      this._dropOutbox('room_cleared', 'the room was cleared before this message was sent');
      this._scheduleReconnect({ reason: plan.reason, message: plan.message, code, immediate: true, fresh: true });
      return;
    }
    if (plan.retry === 'token') {
      await this._retryWithNewToken(plan.message, code);
      return;
    }
    if (!opened) {
      // Browsers hide the HTTP status of a refused upgrade (the close code is 1006). Ask again with a plain GET and
      // probe=1: the edge and the room run the same checks without joining and answer with the refusal (or 204).
      const refusal = await this._diagnoseRefusal();
      if (this._closedByUser || this._ws) return;
      if (refusal?.status === 401) {
        await this._retryWithNewToken(`The room refused the token: ${refusal.message}`, code);
        return;
      }
      if (refusal && (refusal.status === 400 || refusal.status === 403 || refusal.status === 404)) {
        this._closeForGood(refusal.code, `The room refused the connection: ${refusal.message}`, code);
        return;
      }
      if (refusal && (refusal.status === 409 || refusal.status === 429)) {
        // Room full, or too many tabs of this user: worth retrying later (not before the room's retry_after),
        // and worth saying why.
        const notBeforeMs = (refusal.retryAfter ?? 0) * 1000;
        this._scheduleReconnect({ reason: 'refused', code, message: `${refusal.message} Retrying.`, notBeforeMs });
        return;
      }
      const offline = globalThis.navigator?.onLine === false;
      this._scheduleReconnect({
        reason: offline ? 'offline' : 'refused',
        code,
        message: offline
          ? 'You are offline; reconnecting when the network is back.'
          : refusal?.status === 426
            ? 'The room did not accept the connection (possibly full, too many tabs of this user, or you were ' +
              'removed recently); retrying.'
            : `Cannot reach the room at ${this.baseUrl || 'this server'}${refusal ? '' : ' (no answer)'}; retrying.`,
      });
      return;
    }
    this._scheduleReconnect({ reason: plan.reason, message: plan.message, code });
  }

  /** @returns {Promise<{status: number, code: string, message: string, retryAfter?: number} | null>} */
  async _diagnoseRefusal() {
    if (!this._fetch) return null;
    try {
      // The token goes in the Authorization header, not in the URL of a plain GET (which logs keep).
      const query = new URLSearchParams({ probe: '1' });
      const url = `${this.baseUrl}/v1/rooms/${encodeURIComponent(this.room)}/ws?${query}`;
      const headers = { authorization: `Bearer ${this._token ?? ''}` };
      const response = await this._fetch(url, { method: 'GET', cache: 'no-store', headers });
      if (response.status === 204) return { status: 204, code: 'ok', message: 'admitted' };
      let body = {};
      try {
        body = await response.json();
      } catch {
        // not JSON
      }
      const retryAfter = Number(body.retry_after ?? response.headers?.get?.('retry-after'));
      return {
        status: response.status,
        code: body.code ?? `http_${response.status}`,
        message: body.message ?? `HTTP ${response.status}`,
        ...(Number.isFinite(retryAfter) && retryAfter > 0 ? { retryAfter: Math.min(retryAfter, 60) } : {}),
      };
    } catch {
      return null;
    }
  }

  async _retryWithNewToken(message, code) {
    if (!this.options.getToken) {
      this._closeForGood('unauthorized', `${message} No getToken function was given, so the client stops.`, code);
      return;
    }
    // An expired or revoked token is worth replacing once; a token fresh from getToken refused as well means
    // the sign-in itself is wrong (another secret, bad claims), and retrying forever would only hide that.
    this._tokenRefusals += 1;
    if (this._tokenRefusals > 1) {
      this._closeForGood('unauthorized', `${message} A new token from getToken was refused too, so the client stops.`, code);
      return;
    }
    this._token = null;
    this._scheduleReconnect({ reason: 'token_expired', message, code });
  }

  /**
   * @param {{reason: string, message: string, code?: number, immediate?: boolean, fresh?: boolean}} why
   */
  _scheduleReconnect({ reason, message, code, immediate = false, fresh = false, notBeforeMs = 0 }) {
    if (this._closedByUser) return;
    clearTimeout(this._timers.reconnect);
    // "Immediate" still spreads a whole class over the first backoff step (after a room clear every client
    // reconnects at once otherwise).
    const delay = Math.max(notBeforeMs, backoffDelay(immediate ? 0 : this._attempt, this.options.backoff));
    this._attempt += 1;
    this._setStatus({ status: 'reconnecting', reason, message, code, attempt: this._attempt, retryAt: Date.now() + delay });
    this._timers.reconnect = setTimeout(() => this._openSocket('reconnecting', { fresh }), delay);
  }

  _closeForGood(reason, message, code) {
    clearTimeout(this._timers.reconnect);
    this._detachSocket();
    // Whatever closed the room connection for good (kick, policy close, refused token), the camera and
    // microphone must not keep reaching the class through the media node.
    this.media.leave().catch(() => {});
    this._clearSessionTimers();
    this._setStatus({ status: 'closed', reason, message, code });
  }

  /** Stops the timers that outlive a socket (token refresh, outbox retry, typing). */
  _clearSessionTimers() {
    for (const name of ['reconnect', 'refresh', 'flush', 'typingStop']) clearTimeout(this._timers[name]);
  }

  /** @param {StatusInfo} status */
  _setStatus(status) {
    this.status = status;
    this.emit('status', status);
  }

  // ---- incoming frames --------------------------------------------------------------------------------------

  /** @param {string} text */
  _onText(text) {
    this._sawTraffic();
    if (text === 'pong') return;
    let parsed;
    try {
      parsed = JSON.parse(text);
    } catch {
      this._log('warn', `ignoring a frame that is not JSON: ${text.slice(0, 80)}`);
      return;
    }
    // A batch (JSON array) carries several frames, in order. A frame that gives up the socket (a seq gap)
    // ends the batch: the rest would be gaps too, each one abandoning again and growing the backoff.
    const connection = this._connection;
    for (const frame of Array.isArray(parsed) ? parsed : [parsed]) {
      if (connection !== this._connection) break;
      if (frame && typeof frame === 'object') this._onFrame(frame);
    }
  }

  /** @param {any} frame */
  _onFrame(frame) {
    this.emit('frame', frame);
    if (frame.type === 'welcome') {
      this._onWelcome(frame);
    } else if (isLoggedEvent(frame)) {
      this._onLoggedEvent(frame);
    } else if (REPLY_TYPES.has(frame.type) && frame.rid) {
      this._onReply(frame);
    } else if (STATEFUL_EPHEMERAL.has(frame.type)) {
      if (this.state.applyEphemeral(frame, Date.now())) this.emit('change', { type: frame.type, frame });
      this.emit(frame.type, frame);
    } else if (frame.type === 'auth.expiring') {
      this.emit('auth.expiring', frame);
      this.refreshToken('auth.expiring').catch(() => {});
    } else if (frame.type === 'error') {
      // An error without rid: a refused frame that had none (typing, …) or a room notice.
      this._log('warn', `room error ${frame.code}: ${frame.message}`);
      this.emit('server-error', frame);
    } else {
      // reaction, cursor, room.cleared, media.moved, and anything newer than this client.
      if (frame.type === 'room.cleared') this._sawRoomCleared = true;
      this.emit(frame.type, frame);
    }
  }

  _onWelcome(welcome) {
    const { resumed } = this.state.applyWelcome(welcome);
    clearTimeout(this._timers.welcome);
    // The backoff resets once the connection has stayed up, not at every welcome: a room that accepts and then
    // closes at once must not be hammered every few hundred milliseconds.
    const connection = this._connection;
    clearTimeout(this._timers.stable);
    this._timers.stable = setTimeout(() => {
      if (connection === this._connection) this._attempt = 0;
    }, this.options.stableAfterMs);
    this._everOpen = true;
    this._tokenRefusals = 0;
    if (!resumed) this._lastReadSent = 0; // a fresh snapshot (or a new epoch): read positions start over
    this._rate.configure(welcome.config);
    this._log('info', `welcome epoch=${welcome.epoch} seq=${welcome.seq} resumed=${resumed}`);
    this._setStatus({ status: 'open', reason: resumed ? 'resumed' : 'joined' });
    this.emit('welcome', { resumed, welcome });
    this.emit('change', { type: 'welcome', resumed });
    this._startPing(welcome.config?.ping_interval_ms);
    this._scheduleTokenRefresh();
    this._flushOutbox();
  }

  _onLoggedEvent(event) {
    const result = this.state.applyEvent(event);
    if (result === 'duplicate') {
      this.emit('duplicate', event);
      return;
    }
    if (result === 'gap') {
      // Cannot happen on a healthy connection (seq is contiguous); resuming from what we have repairs it.
      this._log('warn', `missed events: have seq ${this.state.seq}, got ${event.seq}; resuming`);
      this._abandonSocket('gap', `Missed room events (${this.state.seq + 1}–${event.seq - 1}); catching up.`);
      return;
    }
    this.emit(event.type, event);
    this.emit('change', { type: event.type, event });
  }

  _onReply(frame) {
    const pending = this._pending.get(frame.rid);
    if (pending) {
      this._pending.delete(frame.rid);
      clearTimeout(pending.timer);
      if (frame.type === 'error') pending.reject(new HomeroomError(frame.code, frame.message, { rid: frame.rid, type: pending.type }));
      else pending.resolve(frame);
      return;
    }
    if (this.outbox.get(frame.rid)) {
      this._onOutboxReply(frame);
      return;
    }
    this._log('debug', `reply for an unknown rid ${frame.rid} (timed out earlier?)`);
  }

  // ---- requests ---------------------------------------------------------------------------------------------

  _newRid() {
    this._ridCounter += 1;
    return `${this._ridPrefix}-${this._ridCounter}`;
  }

  /** Writes a frame to the socket. Returns false when there is no open socket. */
  _write(frame) {
    if (!this._ws || this._ws.readyState !== 1) return false;
    this._ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
    if (frame !== 'ping') this._rate.spend(Date.now());
    return true;
  }

  /**
   * Sends a request and resolves with its reply (`ack`, `history`, `media.assigned`), or rejects with a
   * HomeroomError (the room's `error`, `timeout`, `offline`, `disconnected`).
   * @param {string} type
   * @param {Record<string, any>} [fields]
   * @param {{timeoutMs?: number}} [options]
   * @returns {Promise<any>}
   */
  request(type, fields = {}, { timeoutMs = this.options.requestTimeoutMs } = {}) {
    if (!this.isOpen) {
      return Promise.reject(
        new HomeroomError('offline', `Cannot ${type} right now: not connected to the room (${this.status.status}).`),
      );
    }
    const rid = this._newRid();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(rid);
        reject(new HomeroomError('timeout', `The room did not answer ${type} within ${timeoutMs} ms.`, { rid, type }));
      }, timeoutMs);
      this._pending.set(rid, { type, resolve, reject, timer });
      this._write({ ...fields, type, rid });
    });
  }

  /** Sends a frame that needs no reply (no rid: the room sends no ack; errors still come back). */
  notify(type, fields = {}) {
    return this._write({ ...fields, type });
  }

  _failPending(code, message) {
    for (const [rid, pending] of this._pending) {
      clearTimeout(pending.timer);
      pending.reject(new HomeroomError(code, `${pending.type}: ${message}`, { rid, type: pending.type }));
    }
    this._pending.clear();
  }

  // ---- chat with the offline queue --------------------------------------------------------------------------

  /**
   * Sends a chat message. Works offline: the message waits in `client.outbox` and is sent when the connection is
   * back, with the same rid every time, so it is posted exactly once. Resolves with the ack `{seq, id}`; rejects
   * when the room refuses it for good (the entry then stays in the outbox as "failed": `retryChat`/`discardChat`).
   * @param {string} text
   * @param {{replyTo?: string | null}} [options]
   */
  sendChat(text, { replyTo = null } = {}) {
    const trimmed = String(text ?? '').trim();
    if (!trimmed) return Promise.reject(new HomeroomError('bad_request', 'A chat message cannot be empty.'));
    const max = this.state.config?.max_chat_chars ?? 4000;
    if ([...trimmed].length > max) {
      return Promise.reject(new HomeroomError('too_large', `A chat message can have at most ${max} characters.`));
    }
    const frame = { type: 'chat.send', text: trimmed, ...(replyTo ? { reply_to: replyTo } : {}) };
    const rid = this._newRid();
    const maxBytes = this.state.config?.max_frame_bytes ?? 16_384;
    const bytes = new TextEncoder().encode(JSON.stringify({ ...frame, rid })).length;
    if (bytes > maxBytes) {
      // The room would refuse it (`too_large`, without a rid to say which), and resending would loop.
      return Promise.reject(
        new HomeroomError('too_large', `This message is ${bytes} bytes as a frame; the room takes at most ${maxBytes}.`),
      );
    }
    return this._enqueue(rid, frame);
  }

  /** Sends a failed chat message again, with its original rid. */
  retryChat(rid) {
    const entry = this.outbox.get(rid);
    if (!entry) return Promise.reject(new HomeroomError('not_found', `No queued message ${rid}.`));
    return this._enqueue(rid, entry.frame);
  }

  /** Forgets a failed or queued chat message. */
  discardChat(rid) {
    this.outbox.remove(rid);
    clearTimeout(this._outboxTimers.get(rid));
    this._outboxTimers.delete(rid);
    this._outboxWaiters.get(rid)?.reject(new HomeroomError('closed', 'discarded'));
    this._outboxWaiters.delete(rid);
    this.emit('outbox', this.outbox.list());
  }

  _enqueue(rid, frame) {
    let entry;
    try {
      entry = this.outbox.add(rid, frame, Date.now());
    } catch (error) {
      return Promise.reject(new HomeroomError('too_large', error.message));
    }
    const done = new Promise((resolve, reject) => this._outboxWaiters.set(entry.rid, { resolve, reject }));
    done.catch(() => {}); // callers that ignore the promise must not cause unhandled rejections
    this.emit('outbox', this.outbox.list());
    this._flushOutbox();
    return done;
  }

  /**
   * Writes due chat messages to the open socket, within the room's rate budget: a long offline queue goes out
   * at the room's pace instead of in one burst that the room would refuse (and count as abuse, 4008).
   */
  _flushOutbox() {
    clearTimeout(this._timers.flush);
    if (!this.isOpen) return;
    const connection = this._connection;
    const due = this.outbox.due(connection);
    let written = 0;
    for (const entry of due) {
      if (this._rate.available(Date.now()) < 1 + RATE_RESERVE) break;
      if (!this._write({ ...entry.frame, rid: entry.rid })) break;
      this.outbox.markSent(entry.rid, connection);
      this._armOutboxTimer(entry.rid, connection);
      written += 1;
    }
    if (written < due.length) {
      const wait = this._rate.msUntil(1 + RATE_RESERVE, Date.now());
      this._timers.flush = setTimeout(() => this._flushOutbox(), Math.max(wait, 10));
    }
    this.emit('outbox', this.outbox.list());
  }

  _armOutboxTimer(rid, connection) {
    clearTimeout(this._outboxTimers.get(rid));
    const timeoutMs = this.options.requestTimeoutMs;
    this._outboxTimers.set(
      rid,
      setTimeout(() => {
        this._outboxTimers.delete(rid);
        if (connection !== this._connection || !this.outbox.get(rid)) return;
        // A healthy room acks in milliseconds: the connection is most likely dead without having closed.
        // Reconnecting resends the message with the same rid, which the room de-duplicates.
        this._abandonSocket('stalled', `No reply from the room for ${timeoutMs / 1000} s; reconnecting.`);
      }, timeoutMs),
    );
  }

  _onOutboxReply(frame) {
    const rid = frame.rid;
    clearTimeout(this._outboxTimers.get(rid));
    this._outboxTimers.delete(rid);
    const waiter = this._outboxWaiters.get(rid);
    if (frame.type === 'ack') {
      this.outbox.acknowledge(rid);
      this._outboxWaiters.delete(rid);
      waiter?.resolve(frame);
    } else if (RETRYABLE_CODES.has(frame.code) && this.outbox.noteRetry(rid) <= MAX_CHAT_RETRIES) {
      this._log('info', `chat message ${rid}: ${frame.code}; retrying`);
      this.outbox.requeue(rid);
      // The room's bucket is emptier than ours (another tab, a reload): wait before writing anything more.
      if (frame.code === 'rate_limited') this._rate.drain(Date.now());
      clearTimeout(this._timers.flush);
      this._timers.flush = setTimeout(() => this._flushOutbox(), this.options.rateLimitRetryMs);
    } else {
      this.outbox.fail(rid, { code: frame.code, message: frame.message });
      this._outboxWaiters.delete(rid);
      waiter?.reject(new HomeroomError(frame.code, frame.message, { rid }));
    }
    this.emit('outbox', this.outbox.list());
  }

  _dropOutbox(code, message) {
    for (const entry of this.outbox.clear()) {
      this._outboxWaiters.get(entry.rid)?.reject(new HomeroomError(code, message, { rid: entry.rid }));
      this._outboxWaiters.delete(entry.rid);
    }
    this.emit('outbox', []);
  }

  // ---- room actions -----------------------------------------------------------------------------------------

  /** @param {string} id @param {string} text */
  editMessage(id, text) {
    return this.request('chat.edit', { id, text: String(text).trim() });
  }

  /** @param {string} id */
  deleteMessage(id) {
    return this.request('chat.delete', { id });
  }

  /**
   * Call on every keystroke: sends `typing {active: true}` at most every half `typing_ttl_ms`, and
   * `typing {active: false}` after `idleMs` without a call (or call `stopTyping`).
   */
  typing(idleMs = 3000) {
    if (!this.isOpen || !this.state.you?.perms.chat) return;
    const now = Date.now();
    const refreshEvery = (this.state.config?.typing_ttl_ms ?? 5000) / 2;
    if (now - this._typingSentAt > refreshEvery) {
      this._typingSentAt = now;
      this.notify('typing', { active: true });
    }
    clearTimeout(this._timers.typingStop);
    this._timers.typingStop = setTimeout(() => this.stopTyping(), idleMs);
  }

  stopTyping() {
    clearTimeout(this._timers.typingStop);
    if (!this._typingSentAt) return;
    this._typingSentAt = 0;
    this.notify('typing', { active: false });
  }

  /** @param {boolean} raised */
  setHand(raised) {
    return this.request('hand', { raised });
  }

  /** @param {string} emoji */
  react(emoji) {
    return this.request('reaction', { emoji });
  }

  /** @param {'active' | 'idle' | 'away'} status */
  setPresence(status) {
    return this.request('presence', { status });
  }

  /**
   * Reports that I read up to `seq` (default: the latest message). Skips when it would not advance.
   * @param {number} [seq]
   */
  async markRead(seq = this.state.latestMessageSeq()) {
    if (!this.isOpen || !seq || seq <= Math.max(this.state.lastRead, this._lastReadSent)) return;
    const before = this._lastReadSent;
    this._lastReadSent = seq;
    try {
      await this.request('chat.read', { seq });
    } catch (error) {
      // Not reported after all (a drop, a timeout): a later markRead() may send it again.
      if (this._lastReadSent === seq) this._lastReadSent = before;
      throw error;
    }
    if (this.state.markRead(seq)) this.emit('change', { type: 'read' });
  }

  /** Loads the page of messages before the oldest one held. Resolves with whether more exist. */
  async loadOlder(limit = 50) {
    const before = this.state.messages[0]?.seq;
    const reply = await this.request('history', before ? { before, limit } : { limit });
    this.state.prependHistory(reply.messages, reply.has_more);
    this.emit('change', { type: 'history' });
    return reply.has_more;
  }

  // Moderation (needs perms.moderate; the room answers `forbidden` otherwise).

  /** @param {string} id */
  kick(id) {
    return this.request('participant.kick', { id });
  }

  /** @param {string} id @param {'audio' | 'video' | 'screen'} kind @param {boolean} [muted] */
  mute(id, kind, muted = true) {
    return this.request('participant.mute', { id, kind, muted });
  }

  /**
   * @param {string} id
   * @param {{role?: 'teacher' | 'student' | 'admin', perms?: Partial<import('./room-state.js').Perms>}} change
   */
  updateParticipant(id, change) {
    return this.request('participant.update', { id, ...change });
  }

  clearRoom() {
    return this.request('room.clear');
  }

  // ---- tokens -----------------------------------------------------------------------------------------------

  async _obtainToken(reason) {
    if (!this.options.getToken) throw new HomeroomError('unauthorized', 'no getToken function to renew the token');
    const result = await this.options.getToken({ reason });
    const token = typeof result === 'string' ? result : result?.token;
    if (!token) throw new HomeroomError('unauthorized', 'getToken returned no token');
    this._token = token;
    this._tokenExp = tokenExpiry(token);
    return token;
  }

  /**
   * Gets a fresh token from `getToken` and hands it to the room (`auth.refresh`), so the connection outlives
   * the old token's `exp`. Called on its own before `exp` and on `auth.expiring`.
   */
  refreshToken(reason = 'manual') {
    if (this.status.status === 'closed') {
      return Promise.reject(new HomeroomError('closed', 'the client is closed; connect() first'));
    }
    if (this._refreshing) return this._refreshing;
    this._refreshing = (async () => {
      try {
        const token = await this._obtainToken(reason);
        if (this.isOpen) {
          let ack;
          try {
            ack = await this.request('auth.refresh', { token });
          } catch (error) {
            if (error.code !== 'internal') throw error;
            // A room that does not know its own address cannot check the token's room scope and answers
            // `internal`: the new token (already ours) goes in by reconnecting, which resumes.
            this._log('info', `the room could not take the token in place (${error.message}); reconnecting with it`);
            this.dropConnection('token refresh by reconnecting');
            this._scheduleTokenRefresh();
            return;
          }
          this._log('info', `token refreshed (${reason}); expires at ${ack.exp}`);
          this.emit('token', { exp: ack.exp, reason });
        }
        this._scheduleTokenRefresh();
      } catch (error) {
        this._log('warn', `token refresh failed (${reason}): ${error.message}`);
        this.emit('server-error', { code: error.code ?? 'unauthorized', message: `Token refresh failed: ${error.message}` });
        throw error;
      } finally {
        this._refreshing = null;
      }
    })();
    return this._refreshing;
  }

  _scheduleTokenRefresh() {
    clearTimeout(this._timers.refresh);
    if (!this.options.getToken || !this._tokenExp) return;
    const lifetimeLeft = this._tokenExp * 1000 - Date.now();
    // Refresh `refreshLeadMs` before exp, but never in the first half of a short token's life.
    const delay = Math.max(lifetimeLeft - this.options.refreshLeadMs, lifetimeLeft / 2, 1000);
    // setTimeout overflows beyond ~24.8 days.
    this._timers.refresh = setTimeout(() => this.refreshToken('expiring-soon').catch(() => {}), Math.min(delay, 2 ** 31 - 1));
  }

  // ---- liveness ---------------------------------------------------------------------------------------------

  _startPing(roomInterval = 30_000) {
    clearInterval(this._timers.ping);
    const every = this.options.pingIntervalMs ?? Math.max(1000, roomInterval * 0.8);
    const connection = this._connection;
    this._timers.ping = setInterval(() => {
      if (connection !== this._connection) return;
      if (this._write('ping')) {
        clearTimeout(this._timers.pong);
        this._timers.pong = setTimeout(() => {
          if (connection !== this._connection) return;
          this._abandonSocket('stalled', `The room did not answer a ping within ${this.options.pongTimeoutMs / 1000} s; reconnecting.`);
        }, this.options.pongTimeoutMs);
      }
    }, every);
  }

  _sawTraffic() {
    clearTimeout(this._timers.pong);
  }

  // ---- browser integration ----------------------------------------------------------------------------------

  _installBrowserHooks() {
    const target = globalThis.window;
    if (!target?.addEventListener || this._hooksInstalled) return;
    this._hooksInstalled = true;
    this._onOffline = () => {
      if (!this.options.watchNetwork || this._closedByUser) return;
      // Sockets of a vanished network often stay "open" for minutes; give up on it now.
      if (this._ws) this._abandonSocket('offline', 'You are offline; reconnecting when the network is back.');
    };
    this._onOnline = () => {
      if (!this.options.watchNetwork || this._closedByUser) return;
      // Only while waiting for a retry: a socket already connecting is left to finish.
      if (this.status.status === 'reconnecting' && !this._ws) {
        this._attempt = 0;
        this._openSocket('reconnecting');
      }
    };
    this._onVisibility = () => {
      if (!this.options.reportPresence || !this.isOpen) return;
      const status = globalThis.document?.visibilityState === 'hidden' ? 'away' : 'active';
      this.setPresence(status).catch(() => {});
    };
    target.addEventListener('offline', this._onOffline);
    target.addEventListener('online', this._onOnline);
    globalThis.document?.addEventListener?.('visibilitychange', this._onVisibility);
  }

  _uninstallBrowserHooks() {
    const target = globalThis.window;
    if (!target?.removeEventListener || !this._hooksInstalled) return;
    this._hooksInstalled = false;
    target.removeEventListener('offline', this._onOffline);
    target.removeEventListener('online', this._onOnline);
    globalThis.document?.removeEventListener?.('visibilitychange', this._onVisibility);
  }

  _log(level, message, data) {
    if (this.options.log) this.options.log(level, message, data);
    else if (level === 'warn' || level === 'error') console[level](`[homeroom ${this.room}] ${message}`);
  }
}

/**
 * Asks a development edge for a token (`POST /v1/dev/token`; only when the edge runs with DEV_TOKENS="true").
 * @param {string} baseUrl
 * @param {{name: string, role?: 'teacher' | 'student', user?: string}} who
 * @param {typeof fetch} [fetchImpl]
 * @returns {Promise<{token: string, user: string, name: string, role: string, exp: number}>}
 */
export async function fetchDevToken(baseUrl, who, fetchImpl = globalThis.fetch) {
  const url = `${(baseUrl ?? '').replace(/\/+$/, '')}/v1/dev/token`;
  let response;
  try {
    response = await fetchImpl(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(who),
    });
  } catch (error) {
    throw new HomeroomError('unavailable', `Cannot reach ${url}: ${error.message}. Is the edge running?`);
  }
  let body = {};
  try {
    body = await response.json();
  } catch {
    // not JSON
  }
  if (!response.ok) {
    const hint =
      response.status === 404
        ? ' Development tokens are off: run the edge with DEV_TOKENS="true" in .dev.vars (local wrangler dev only).'
        : '';
    throw new HomeroomError(body.code ?? `http_${response.status}`, `${body.message ?? `HTTP ${response.status}`}.${hint}`);
  }
  return body;
}

/** A random [a-z0-9] string (rid prefixes, ids). */
export function randomId(length = 12) {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  const bytes = new Uint8Array(length);
  if (globalThis.crypto?.getRandomValues) globalThis.crypto.getRandomValues(bytes);
  else for (let i = 0; i < length; i += 1) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join('');
}

/** Closes a socket, ignoring one that is already closing. */
function closeQuietly(ws, code, reason) {
  try {
    ws?.close(code, reason);
  } catch {
    // already closing
  }
}

/**
 * Whether a failed `getToken` may succeed when tried again: a network error (not a HomeroomError, e.g. fetch's
 * TypeError) or a HomeroomError whose code says "try later". A refusal (unauthorized, forbidden, bad_request…)
 * is final.
 */
export function isTransientTokenFailure(error) {
  if (!(error instanceof HomeroomError)) return true;
  return error.code === 'unavailable' || RETRYABLE_CODES.has(error.code) || /^http_5\d\d$/.test(error.code);
}

/**
 * The room's per-connection token bucket (`rate_burst` frames, refilled at `rate_per_sec`), as this client
 * spends it. The room carries a user's bucket across reconnects, and so does this; it can only be fuller than
 * the room's (another tab of the user), which a `rate_limited` reply corrects (`drain`).
 */
export class RateBudget {
  constructor({ burst = 30, perSec = 10 } = {}) {
    this.burst = burst;
    this.perSec = perSec;
    this.tokens = burst;
    this.at = 0;
  }

  /** Takes the room's limits from a welcome's `config`. */
  configure(config) {
    const burst = Number(config?.rate_burst);
    const perSec = Number(config?.rate_per_sec);
    if (burst > 0) this.burst = burst;
    if (perSec > 0) this.perSec = perSec;
    this.tokens = Math.min(this.tokens, this.burst);
  }

  /** Frames that can be written at `now` (ms). */
  available(now) {
    const elapsed = Math.max(0, now - this.at) / 1000;
    return Math.min(this.burst, this.tokens + elapsed * this.perSec);
  }

  /** One frame was written at `now`. */
  spend(now) {
    this.tokens = Math.max(0, this.available(now) - 1);
    this.at = now;
  }

  /** The room refused a frame for its rate: assume its bucket is empty. */
  drain(now) {
    this.tokens = 0;
    this.at = now;
  }

  /** Milliseconds until `n` frames are available. */
  msUntil(n, now) {
    const missing = Math.min(n, this.burst) - this.available(now);
    return missing <= 0 ? 0 : Math.ceil((missing / this.perSec) * 1000);
  }
}
