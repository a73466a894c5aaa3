// The connection lifecycle's edges, against a fake WebSocket: what happens to media, timers, stray sockets,
// the offline queue's pace, sign-in failures and glare when things go wrong. Each test fails on the client
// before these rules existed (see the commit that added this file).
import assert from 'node:assert/strict';
import { afterEach, beforeEach, test } from 'node:test';
import { MediaSession, RateBudget } from '../../../web/client/homeroom.js';
import { clientMaker, FakeSocket, participant, socketNumber, until, welcome } from './fake-socket.mjs';

const clients = clientMaker({ requestTimeoutMs: 2000 });
const makeClient = clients.make;
beforeEach(() => FakeSocket.reset());
afterEach(() => {
  clients.closeAll(); // before the window goes: closing unhooks the client from it
  delete globalThis.window;
});

async function openClient(options = {}, welcomeFields = {}) {
  const client = makeClient(options);
  const number = FakeSocket.instances.length + 1;
  client.connect().catch(() => {});
  const socket = await socketNumber(number);
  socket.accept();
  socket.deliver({ ...welcome({ seq: 1, ...welcomeFields }), ...(welcomeFields.config ? { config: welcomeFields.config } : {}) });
  await until(() => client.isOpen);
  return { client, socket };
}

/** A JWT-shaped string with the given payload (the client only reads `exp`). */
function tokenWith(payload) {
  return `header.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.sig`;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test('a policy close (4008) leaves media too, not only a kick', async () => {
  const { client, socket } = await openClient();
  let left = 0;
  client.media.leave = async () => {
    left += 1;
  };
  socket.drop(4008, 'policy');
  assert.equal(client.status.reason, 'policy');
  assert.equal(left, 1, 'the media session ends with the room connection');
});

test('a socket still connecting is closed, not orphaned, when another one is opened', async () => {
  globalThis.window = new EventTarget();
  const client = makeClient();
  client.connect().catch(() => {});
  const first = await socketNumber(1);
  first.accept();
  first.deliver(welcome({ seq: 1 }));
  await until(() => client.isOpen);
  first.drop(1006);
  const second = await socketNumber(2); // the retry: connecting, not accepted yet
  assert.equal(client.status.status, 'reconnecting');

  // The browser says the network is back while that socket is still connecting: it is left to finish.
  globalThis.window.dispatchEvent(new Event('online'));
  await sleep(20);
  assert.equal(FakeSocket.instances.length, 2, 'no second socket beside one that is connecting');

  // connect() while reconnecting opens a new socket; the one still connecting is closed.
  client.connect().catch(() => {});
  const third = await socketNumber(3);
  assert.ok(second.closedByClient, 'the replaced socket was closed');
  assert.equal(third.closedByClient, null);
});

test('a socket that opens but never brings a welcome is given up and retried', async () => {
  const client = makeClient({ welcomeTimeoutMs: 50 });
  client.connect().catch(() => {});
  const first = await socketNumber(1);
  first.accept(); // upgraded, then silence
  const second = await socketNumber(2, 1000);
  assert.ok(first.closedByClient, 'the stalled socket was closed');
  second.accept();
  second.deliver(welcome({ seq: 1 }));
  await until(() => client.isOpen);
  await sleep(80);
  assert.equal(FakeSocket.instances.length, 2, 'a socket that got its welcome is kept');
});

test('a long offline queue goes out at the room rate, not in one burst', async () => {
  const config = { rate_burst: 10, rate_per_sec: 50, max_chat_chars: 4000, ping_interval_ms: 30000 };
  const client = makeClient();
  client.connect().catch(() => {});
  const first = await socketNumber(1);
  first.accept();
  first.deliver({ ...welcome({ seq: 1 }), config });
  await until(() => client.isOpen);
  first.drop(1006);
  const sends = Array.from({ length: 30 }, (_, i) => client.sendChat(`queued ${i}`));
  const second = await socketNumber(2);
  second.accept();
  second.deliver({ ...welcome({ seq: 1, resumed: true }), config });
  await until(() => client.isOpen);
  const atOnce = second.requests().length;
  assert.ok(atOnce <= 10, `the first burst stays within rate_burst: ${atOnce}`);
  assert.ok(atOnce >= 5, `but it uses the budget: ${atOnce}`);
  // The rest follows at ≈ 50/s; ack each as it arrives.
  const acked = new Set();
  await until(
    () => {
      for (const r of second.requests()) {
        if (!acked.has(r.rid)) {
          acked.add(r.rid);
          second.deliver({ type: 'ack', rid: r.rid, seq: 1 + acked.size, id: `e1-${1 + acked.size}` });
        }
      }
      return acked.size === 30;
    },
    3000,
    'the whole queue',
  );
  await Promise.all(sends);
  assert.equal(client.outbox.size, 0);
});

test('a message the room keeps rate-limiting fails after bounded retries instead of looping', async () => {
  const { client, socket } = await openClient(
    { rateLimitRetryMs: 5 },
    { config: { rate_burst: 30, rate_per_sec: 10_000, max_chat_chars: 4000, ping_interval_ms: 30000 } },
  );
  const sent = client.sendChat('again and again');
  const limited = (async () => {
    const start = Date.now();
    let answered = 0;
    while (Date.now() - start < 3000) {
      const requests = socket.requests();
      for (; answered < requests.length; answered += 1) {
        socket.deliver({ type: 'error', rid: requests[answered].rid, code: 'rate_limited', message: 'too fast' });
      }
      if (client.outbox.list()[0]?.status === 'failed') return answered;
      await sleep(20);
    }
    return -answered; // still retrying after 3 s
  })();
  const attempts = await limited;
  await assert.rejects(sent, { code: 'rate_limited' });
  assert.ok(attempts >= 10 && attempts <= 12, `bounded: ${attempts} attempts`);
});

test('RateBudget refills at the room rate and never above the burst', () => {
  const budget = new RateBudget({ burst: 3, perSec: 10 });
  for (let i = 0; i < 3; i += 1) budget.spend(0);
  assert.equal(budget.available(0), 0);
  assert.equal(budget.msUntil(1, 0), 100);
  assert.equal(budget.available(150), 1.5);
  assert.equal(budget.available(10_000), 3);
  budget.drain(10_000);
  assert.equal(budget.available(10_000), 0);
});

test('after a welcome, a sign-in that fails on the network is retried; the first one is shown', async () => {
  let calls = 0;
  let fail = true;
  const client = makeClient({
    token: undefined,
    getToken: async () => {
      calls += 1;
      if (fail) throw new TypeError('Failed to fetch');
      return tokenWith({ n: calls });
    },
  });
  await assert.rejects(client.connect(), /Failed to fetch/);
  assert.equal(client.status.status, 'closed', 'the first sign-in failure is final (the user is at the form)');

  fail = false;
  client.reconnect();
  const first = await socketNumber(1);
  first.accept();
  first.deliver(welcome({ seq: 1 }));
  await until(() => client.isOpen);
  fail = true;
  first.drop(4001, 'token expired'); // needs a new token, and the network is not back yet
  await until(() => calls >= 4, 2000, 'retries of getToken');
  assert.equal(client.status.status, 'reconnecting', 'still trying, not closed for good');
  fail = false;
  const second = await socketNumber(2);
  second.accept();
  second.deliver(welcome({ seq: 1, resumed: true }));
  await until(() => client.isOpen);
});

test('a refusal from getToken is final even after a welcome', async () => {
  const { HomeroomError } = await import('../../../web/client/errors.js');
  let refuse = false;
  const client = makeClient({
    token: undefined,
    getToken: async () => {
      if (refuse) throw new HomeroomError('forbidden', 'your account was suspended');
      return tokenWith({});
    },
  });
  client.connect().catch(() => {});
  const first = await socketNumber(1);
  first.accept();
  first.deliver(welcome({ seq: 1 }));
  await until(() => client.isOpen);
  refuse = true;
  first.drop(4001, 'token expired');
  await until(() => client.status.status === 'closed', 2000, 'closed for good');
  assert.match(client.status.message, /suspended/);
});

test('an expired token is replaced before reconnecting, not presented again', async () => {
  let calls = 0;
  const client = makeClient({
    token: tokenWith({ exp: Math.floor(Date.now() / 1000) + 1 }),
    getToken: async () => {
      calls += 1;
      return tokenWith({ exp: Math.floor(Date.now() / 1000) + 3600, n: calls });
    },
  });
  client.connect().catch(() => {});
  const first = await socketNumber(1);
  first.accept();
  first.deliver(welcome({ seq: 1 }));
  await until(() => client.isOpen);
  client._scheduleTokenRefresh = () => {}; // keep the refresh timer out of this test
  clearTimeout(client._timers.refresh);
  await sleep(1100); // the token expires while connected
  first.drop(1006);
  const second = await socketNumber(2);
  assert.equal(calls, 1, 'a fresh token was fetched for the reconnect');
  assert.notEqual(second.url.searchParams.get('token'), first.url.searchParams.get('token'));
});

test('a token the room refuses again right after getToken renewed it stops the client', async () => {
  let calls = 0;
  const refused = async () =>
    new Response(JSON.stringify({ code: 'unauthorized', message: 'bad signature' }), { status: 401 });
  const client = makeClient({
    fetch: refused,
    backoff: { baseMs: 10, maxMs: 50, jitter: 0 },
    getToken: async () => {
      calls += 1;
      return tokenWith({ n: calls });
    },
  });
  client.connect().catch(() => {});
  (await socketNumber(1)).drop(1006); // refused upgrade; the probe says 401
  (await socketNumber(2)).drop(1006); // with a token fresh from getToken: 401 again
  await until(() => client.status.status === 'closed', 2000, 'closed for good');
  assert.equal(client.status.reason, 'unauthorized');
  assert.match(client.status.message, /refused too/);
  await sleep(100);
  assert.equal(FakeSocket.instances.length, 2, 'no third attempt');
});

test('close() while the token is being fetched does not connect afterwards', async () => {
  let release;
  const client = makeClient({ token: undefined, getToken: () => new Promise((resolve) => { release = resolve; }) });
  client.connect().catch(() => {});
  await until(() => release, 1000, 'getToken called');
  client.close();
  release(tokenWith({}));
  await sleep(30);
  assert.equal(FakeSocket.instances.length, 0, 'the user left: no socket');
  assert.equal(client.status.status, 'closed');
});

test('a seq gap inside a batch abandons the socket once, not once per later event', async () => {
  const { client, socket } = await openClient({ backoff: { baseMs: 200, maxMs: 60_000, jitter: 0 } });
  const { chatEvent } = await import('./fake-socket.mjs');
  // seq 1 is the welcome's; the batch skips 2 and carries eight later events.
  socket.deliver(JSON.stringify([3, 4, 5, 6, 7, 8, 9, 10].map((seq) => chatEvent('e1', seq, `m${seq}`))));
  await until(() => client.status.status === 'reconnecting', 1000, 'reconnecting');
  assert.equal(client.status.attempt, 1, 'one abandon, so the first backoff step');
  assert.ok(client.status.retryAt - Date.now() <= 400, 'the first step of the backoff, not the eighth');
});

test('a read receipt that failed is sent again by the next markRead', async () => {
  const { client, socket } = await openClient({ requestTimeoutMs: 50 });
  const first = client.markRead(1);
  await assert.rejects(first); // no reply: timed out
  const second = client.markRead(1);
  await until(() => socket.requests().filter((f) => f.type === 'chat.read').length === 2, 1000, 'a second chat.read');
  second.catch(() => {});
});

test('a token refresh the room cannot take in place is applied by reconnecting with the new token', async () => {
  let calls = 0;
  const getToken = async () => {
    calls += 1;
    return tokenWith({ n: calls, exp: Math.floor(Date.now() / 1000) + 3600 });
  };
  const { client, socket } = await openClient({ getToken });
  const refreshing = client.refreshToken('manual');
  await until(() => socket.requests().some((f) => f.type === 'auth.refresh'), 1000, 'auth.refresh sent');
  const asked = socket.requests().find((f) => f.type === 'auth.refresh');
  socket.deliver({ type: 'error', rid: asked.rid, code: 'internal', message: 'this room does not know its address' });
  await refreshing;
  const second = await socketNumber(2);
  assert.equal(second.url.searchParams.get('token'), asked.token, 'the new token, not the old one');
  assert.equal(second.url.searchParams.get('since'), '1', 'a resume');
  assert.equal(calls, 1, 'no second token fetched');
});

test('the backoff grows against a room that accepts and closes at once', async () => {
  const client = makeClient({ backoff: { baseMs: 20, maxMs: 1000, jitter: 0 }, stableAfterMs: 10_000 });
  client.connect().catch(() => {});
  const delays = [];
  for (let n = 1; n <= 4; n += 1) {
    const socket = await socketNumber(n);
    socket.accept();
    socket.deliver(welcome({ seq: 1 }));
    const droppedAt = Date.now();
    socket.drop(1011, 'internal');
    await until(() => client.status.status === 'reconnecting');
    delays.push(client.status.retryAt - droppedAt);
  }
  assert.ok(client.status.attempt >= 4, `attempts keep counting: ${client.status.attempt}`);
  // A welcome does not reset the backoff until the connection has been stable: 20, 40, 80, 160 ms.
  for (let i = 1; i < delays.length; i += 1) {
    assert.ok(delays[i] >= delays[i - 1] * 1.5, `each wait longer than the last: ${delays.join(', ')} ms`);
  }
});

test('the refusal probe sends the token as a header, not in its URL, and honours retry_after', async () => {
  const asked = [];
  const fetch = async (url, init) => {
    asked.push({ url: String(url), auth: init?.headers?.authorization });
    return new Response(JSON.stringify({ code: 'rate_limited', message: 'too many connections', retry_after: 1 }), {
      status: 429,
    });
  };
  const client = makeClient({ fetch });
  client.connect().catch(() => {});
  const socket = await socketNumber(1);
  socket.drop(1006);
  await until(() => client.status.message?.includes('too many connections'), 2000, 'the reason');
  assert.ok(!asked[0].url.includes('token='), asked[0].url);
  assert.ok(asked[0].url.includes('probe=1'));
  assert.equal(asked[0].auth, 'Bearer header.e30.sig');
  assert.ok(client.status.retryAt - Date.now() > 800, 'not before the room said');
});

test('timers stop with the client: no token refresh after a close for good', async () => {
  let calls = 0;
  const { client, socket } = await openClient({
    token: tokenWith({ exp: Math.floor(Date.now() / 1000) + 2 }),
    getToken: async () => {
      calls += 1;
      return tokenWith({ exp: Math.floor(Date.now() / 1000) + 2 });
    },
    refreshLeadMs: 1900, // the refresh would be due at once (its floor is 1 s)
  });
  socket.drop(4003, 'removed by a moderator');
  await sleep(1200);
  assert.equal(calls, 0, 'a kicked client does not keep asking for tokens');
  await assert.rejects(client.refreshToken(), { code: 'closed' });
});

test('read receipts start over after a fresh welcome (a cleared room counts seq from 1 again)', async () => {
  const { client, socket } = await openClient({}, { seq: 40 });
  const seen = [];
  const originalRequest = client.request.bind(client);
  client.request = (type, fields, options) => {
    if (type === 'chat.read') seen.push(fields.seq);
    return originalRequest(type, fields, options);
  };
  const read = client.markRead(40);
  const [req] = socket.requests().filter((r) => r.type === 'chat.read');
  socket.deliver({ type: 'ack', rid: req.rid });
  await read;
  socket.drop(4004, 'room cleared');
  const second = await socketNumber(2);
  second.accept();
  second.deliver(welcome({ epoch: 'e2', seq: 3 }));
  await until(() => client.isOpen);
  const again = client.markRead(3);
  const [req2] = second.requests().filter((r) => r.type === 'chat.read');
  assert.ok(req2, 'seq 3 of the new epoch is reported although 40 was reported in the old one');
  second.deliver({ type: 'ack', rid: req2.rid });
  await again;
  assert.deepEqual(seen, [40, 3]);
});

test('a chat message too large as a frame is refused locally instead of looping on the room', async () => {
  const { client, socket } = await openClient({}, { config: { max_chat_chars: 4000, max_frame_bytes: 1024, ping_interval_ms: 30000 } });
  const text = '\u0001'.repeat(400); // 400 characters, 2,400 bytes once JSON escapes them
  await assert.rejects(client.sendChat(text), { code: 'too_large' });
  assert.equal(socket.requests().length, 0);
  assert.equal(client.outbox.size, 0);
});

test('a resume keeps the welcome presence of participants whose old events are replayed', async () => {
  const { client, socket } = await openClient({}, { seq: 1, others: [participant('bo')] });
  socket.drop(1006);
  const second = await socketNumber(2);
  second.accept();
  const now = participant('bo', 'student', { status: 'away', last_seen: 9000, last_read: 7, hand_raised: true });
  second.deliver(welcome({ seq: 2, resumed: true, others: [now] }));
  // Replayed: bo raised a hand at seq 2, when bo was still active and had read nothing.
  const then = participant('bo', 'student', { status: 'active', last_seen: 5000, last_read: 0, hand_raised: true });
  second.deliver({ type: 'participant.updated', seq: 2, ts: 5000, participant: then });
  const bo = client.state.participants.get('bo');
  assert.equal(bo.status, 'away');
  assert.equal(bo.last_seen, 9000);
  assert.equal(bo.last_read, 7);
  assert.equal(bo.hand_raised, true);
  // After the replay, live events apply as they come.
  second.deliver({ type: 'participant.updated', seq: 3, ts: 9500, participant: { ...now, status: 'active' } });
  assert.equal(client.state.participants.get('bo').status, 'active');
});

/** A peer connection and data channel that record what the session does with them. */
function fakePeer() {
  const channel = { readyState: 'open', sent: [], send(text) { this.sent.push(JSON.parse(text)); }, close() {} };
  const pc = {
    signalingState: 'stable',
    localDescription: null,
    async createOffer() { return { type: 'offer', sdp: 'v=0 ours' }; },
    async createAnswer() { return { type: 'answer', sdp: 'v=0 our answer' }; },
    async setLocalDescription(d) {
      this.localDescription = d;
      this.signalingState = d.type === 'offer' ? 'have-local-offer' : 'stable';
    },
    async setRemoteDescription(d) {
      this.signalingState = d.type === 'offer' ? 'have-remote-offer' : 'stable';
    },
    getTransceivers() { return []; },
    close() {},
  };
  return { pc, channel };
}

/** A media session wired to a fake peer connection and data channel. */
function sessionOnFakePeer() {
  const session = new MediaSession({ url: 'http://node.test', token: 't', log: () => {} });
  const { pc, channel } = fakePeer();
  session.pc = pc;
  session.channel = channel;
  return { session, pc, channel };
}

test('glare: a node offer that crosses ours is ignored on arrival, never answered later', async () => {
  const { session, pc, channel } = sessionOnFakePeer();
  const ours = session.renegotiate();
  await until(() => channel.sent.some((m) => m.type === 'offer'), 1000, 'our offer');
  // The node's offer crosses ours; the node drops it when ours arrives and answers ours.
  session._onSignal(JSON.stringify({ type: 'offer', sdp: 'v=0 node', tracks: [] }));
  session._onSignal(JSON.stringify({ type: 'answer', sdp: 'v=0 node answer', tracks: [] }));
  await ours;
  await session._negotiation;
  await sleep(10);
  assert.deepEqual(
    channel.sent.map((m) => m.type),
    ['offer'],
    'no answer to the offer the node dropped (it would be taken as the answer to its next one)',
  );
  // A node offer when nothing of ours is outstanding is answered.
  session._onSignal(JSON.stringify({ type: 'offer', sdp: 'v=0 node again', tracks: [] }));
  await until(() => channel.sent.length === 2, 1000, 'the answer');
  assert.equal(channel.sent[1].type, 'answer');
});

test('the node offer that follows its answer to ours is answered, not taken for glare', async () => {
  const { session, pc, channel } = sessionOnFakePeer();
  const ours = session.renegotiate();
  await until(() => channel.sent.some((m) => m.type === 'offer'), 1000, 'our offer');
  // The node answers ours and offers its waiting change right after, before our answer is applied.
  session._onSignal(JSON.stringify({ type: 'answer', sdp: 'v=0 node answer', tracks: [] }));
  session._onSignal(JSON.stringify({ type: 'offer', sdp: 'v=0 node next', tracks: [] }));
  await ours;
  await until(() => channel.sent.length === 2, 1000, 'the answer to the node offer');
  assert.deepEqual(channel.sent.map((m) => m.type), ['offer', 'answer']);
});

test('a node offer sent again unchanged is answered once', async () => {
  const { session, pc, channel } = sessionOnFakePeer();
  session._onSignal(JSON.stringify({ type: 'offer', sdp: 'v=0 node 1', tracks: [] }));
  session._onSignal(JSON.stringify({ type: 'offer', sdp: 'v=0 node 1', tracks: [] })); // the node's re-send
  await session._negotiation;
  session._onSignal(JSON.stringify({ type: 'offer', sdp: 'v=0 node 2', tracks: [] }));
  await session._negotiation;
  assert.deepEqual(channel.sent.map((m) => m.type), ['answer', 'answer'], 'one answer per distinct offer');
});

test('an offer the node refuses is rolled back at once, and the node offers are answered again', async () => {
  const { session, pc, channel } = sessionOnFakePeer();
  const ours = session.renegotiate();
  await until(() => channel.sent.some((m) => m.type === 'offer'), 1000, 'our offer');
  const refusal = { type: 'error', code: 'bad_request', message: 'offer refused: no', refused: 'offer' };
  session._onSignal(JSON.stringify(refusal));
  await assert.rejects(ours, /refused our offer/);
  assert.equal(pc.signalingState, 'stable', 'rolled back, not stuck in have-local-offer');
  assert.equal(session.closed, false, 'the session stays up');
  session._onSignal(JSON.stringify({ type: 'offer', sdp: 'v=0 node', tracks: [] }));
  await until(() => channel.sent.length === 2, 1000, 'the answer');
  assert.equal(channel.sent[1].type, 'answer');
});

test('a camera that opens after media was left is stopped at once', async () => {
  let release;
  const stopped = [];
  const track = { kind: 'video', enabled: true, stop: () => stopped.push('video') };
  const descriptor = Object.getOwnPropertyDescriptor(globalThis, 'navigator');
  Object.defineProperty(globalThis, 'navigator', {
    configurable: true,
    value: {
      mediaDevices: {
        getUserMedia: () => new Promise((resolve) => {
          release = () => resolve({ getVideoTracks: () => [track], getAudioTracks: () => [] });
        }),
      },
    },
  });
  try {
    const { client } = await openClient();
    const opening = client.media.setCamera(true); // the permission prompt is open
    await until(() => release, 1000, 'getUserMedia');
    await client.media.leave();
    release();
    await assert.rejects(opening, { code: 'media' });
    assert.deepEqual(stopped, ['video'], 'the camera is not left running unseen');
    assert.equal(client.media.local.video, null);
  } finally {
    if (descriptor) Object.defineProperty(globalThis, 'navigator', descriptor);
    else delete globalThis.navigator;
  }
});

test('two rejoins in flight: the older one gives up instead of closing the newer session', async () => {
  // A session start that takes a moment and fails if the session is closed meanwhile, like a real one.
  const started = [];
  const realStart = MediaSession.prototype.start;
  MediaSession.prototype.start = async function start() {
    started.push(this.url);
    await sleep(20);
    if (this.closed) throw new Error('closed while starting');
  };
  try {
    const { client, socket } = await openClient();
    const joins = () => socket.requests().filter((r) => r.type === 'media.join');
    const assign = (request, node) =>
      socket.deliver({
        type: 'media.assigned',
        rid: request.rid,
        node: { id: node, region: 'local', url: `http://${node}.test` },
        token: `token-${node}`,
        expires_at: Date.now() + 60_000,
      });
    const joined = client.media.join({ audio: false, video: false });
    await until(() => joins().length === 1, 1000, 'the first media.join');
    assign(joins()[0], 'n1');
    await joined;
    assert.equal(client.media.status, 'connected');

    // The room's media moves twice in a row: the second rejoin starts while the first waits for its node.
    socket.deliver({ type: 'media.moved', reason: 'node_lost' });
    await until(() => joins().length === 2, 1000, 'the first rejoin');
    socket.deliver({ type: 'media.moved', reason: 'node_lost' });
    await until(() => joins().length === 3, 1000, 'the second rejoin');
    assign(joins()[1], 'n2'); // the older attempt's answer arrives first
    assign(joins()[2], 'n3');
    await until(() => client.media.status === 'connected', 1000, 'media connected again');
    await sleep(60); // any start still running settles

    assert.deepEqual(started, ['http://n1.test', 'http://n3.test'], 'the superseded attempt opens no session');
    assert.equal(client.media.status, 'connected');
    assert.equal(client.media.session?.url, 'http://n3.test');
    assert.equal(client.media.session?.closed, false, 'the newest session stays up');
  } finally {
    MediaSession.prototype.start = realStart;
  }
});
