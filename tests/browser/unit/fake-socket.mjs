// A scriptable stand-in for the browser WebSocket, so the client's connection logic runs in Node, and the
// helpers the client tests share (a client on the fake socket, waiting for the client's n-th socket).

import { HomeroomClient } from '../../../web/client/homeroom.js';

export class FakeSocket {
  /** Every socket the client opened, in order. */
  static instances = [];

  static reset() {
    FakeSocket.instances = [];
  }

  static latest() {
    return FakeSocket.instances[FakeSocket.instances.length - 1];
  }

  constructor(url) {
    this.url = new URL(url);
    this.readyState = 0;
    this.sent = [];
    this.closedByClient = null;
    FakeSocket.instances.push(this);
  }

  /** The server accepted the upgrade. */
  accept() {
    this.readyState = 1;
    this.onopen?.({});
  }

  /** The server sends a frame (an object is sent as JSON). */
  deliver(frame) {
    this.onmessage?.({ data: typeof frame === 'string' ? frame : JSON.stringify(frame) });
  }

  /** The server (or the network) closes the connection. */
  drop(code = 1006, reason = '') {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  send(text) {
    this.sent.push(text);
  }

  close(code, reason) {
    this.readyState = 3;
    this.closedByClient = { code, reason };
  }

  /** Frames the client sent, parsed (pings excluded). */
  requests() {
    return this.sent.filter((t) => t !== 'ping').map((t) => JSON.parse(t));
  }
}

/** Polls `predicate` every 2 ms until it holds, for at most `ms`. */
export async function until(predicate, ms = 2000, what = 'condition') {
  const start = Date.now();
  while (Date.now() - start < ms) {
    if (predicate()) return;
    await new Promise((r) => setTimeout(r, 2));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

export function participant(id, role = 'student', extra = {}) {
  return {
    id,
    name: id.toUpperCase(),
    role,
    joined_at: 1,
    perms: { chat: true, stream: true, screen_share: role !== 'student', moderate: role !== 'student' },
    status: 'active',
    last_seen: 1,
    hand_raised: false,
    media: { audio: false, video: false, screen: false },
    muted: { audio: false, video: false, screen: false },
    last_read: 0,
    ...extra,
  };
}

export function message(epoch, seq, text, from = 'ada') {
  return {
    id: `${epoch}-${seq}`,
    seq,
    from: { id: from, name: from.toUpperCase(), role: 'teacher' },
    text,
    reply_to: null,
    ts: seq * 1000,
    edited_at: null,
  };
}

export function welcome({ epoch = 'e1', seq, resumed = false, you = participant('me'), others = [], history = [] }) {
  return {
    type: 'welcome',
    protocol: 1,
    room: 'unit',
    epoch,
    seq,
    resumed,
    you,
    participants: [you, ...others],
    history,
    config: { typing_ttl_ms: 5000, max_chat_chars: 4000, ping_interval_ms: 30000 },
  };
}

export function chatEvent(epoch, seq, text, from = 'ada') {
  return { type: 'chat.message', seq, ts: seq * 1000, message: message(epoch, seq, text, from) };
}

/** A fake fetch for the client's refusal diagnosis: answers like the edge does for a valid token (426). */
export const edgeFetch = async () =>
  new Response(JSON.stringify({ code: 'bad_request', message: 'needs upgrade' }), { status: 426 });

/**
 * Makes clients on the fake socket with fast backoff; `closeAll()` (in afterEach) closes every one made.
 * @param {Record<string, any>} defaults options every client of the test file gets
 */
export function clientMaker(defaults = {}) {
  let made = [];
  return {
    make(options = {}) {
      const client = new HomeroomClient({
        room: 'unit',
        baseUrl: 'http://edge.test',
        token: 'header.e30.sig',
        WebSocket: FakeSocket,
        fetch: edgeFetch,
        backoff: { baseMs: 1, maxMs: 5 },
        log: () => {},
        ...defaults,
        ...options,
      });
      made.push(client);
      return client;
    },
    closeAll() {
      for (const client of made) client.close();
      made = [];
    },
  };
}

/** The client's n-th socket (1-based), once it exists. */
export async function socketNumber(n, ms = 2000) {
  await until(() => FakeSocket.instances.length >= n, ms, `socket #${n}`);
  return FakeSocket.instances[n - 1];
}
