// The connection logic of HomeroomClient, against a fake WebSocket: resume with since/epoch, de-duplication of
// replayed events, the offline queue (same rid on every retry), close codes, token refresh, request timeouts.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, test } from 'node:test';
import { chatEvent, clientMaker, FakeSocket, participant, socketNumber, until, welcome } from './fake-socket.mjs';

const clients = clientMaker({ requestTimeoutMs: 200 });
const makeClient = clients.make;
beforeEach(() => FakeSocket.reset());
afterEach(() => clients.closeAll());

/** A client whose first socket is open and welcomed with `fields`. */
async function openClient(fields) {
  const client = makeClient();
  client.connect();
  const first = await socketNumber(1);
  first.accept();
  first.deliver(welcome(fields));
  await until(() => client.isOpen);
  return { client, first };
}

test('resumes with since/epoch after a drop and applies replayed events exactly once', async () => {
  const client = makeClient();
  const duplicates = [];
  client.on('duplicate', (e) => duplicates.push(e.seq));
  const connected = client.connect();
  const first = await socketNumber(1);
  assert.equal(first.url.searchParams.get('since'), null, 'the first connection does not resume');
  first.accept();
  first.deliver(welcome({ seq: 2 }));
  await connected;
  first.deliver(chatEvent('e1', 3, 'one'));
  first.drop(1006);
  assert.equal(client.status.status, 'reconnecting');

  const second = await socketNumber(2);
  assert.equal(second.url.searchParams.get('since'), '3');
  assert.equal(second.url.searchParams.get('epoch'), 'e1');
  second.accept();
  second.deliver(welcome({ seq: 5, resumed: true }));
  for (const seq of [3, 4, 5]) second.deliver(chatEvent('e1', seq, ['one', 'two', 'three'][seq - 3]));
  second.deliver(chatEvent('e1', 4, 'two')); // a stray repeat
  assert.deepEqual(client.state.messages.map((m) => m.text), ['one', 'two', 'three']);
  assert.deepEqual(duplicates, [3, 4]);
  assert.equal(client.status.status, 'open');
});

test('chat sent while offline is queued and sent on reconnect, keeping its rid until acked', async () => {
  const { client, first } = await openClient({ seq: 1 });
  first.drop(1006);

  const a = client.sendChat('queued a');
  const b = client.sendChat('queued b');
  assert.deepEqual(client.outbox.list().map((e) => e.status), ['queued', 'queued']);

  const second = await socketNumber(2);
  assert.deepEqual(second.requests(), [], 'nothing is written before the welcome');
  second.accept();
  second.deliver(welcome({ seq: 1, resumed: true }));
  const sent = second.requests().filter((r) => r.type === 'chat.send');
  assert.deepEqual(sent.map((r) => r.text), ['queued a', 'queued b']);
  const rids = sent.map((r) => r.rid);

  // The connection dies before any ack: the third connection sends the same rids again.
  second.deliver({ type: 'ack', rid: rids[0], seq: 2, id: 'e1-2' });
  second.drop(1006);
  const third = await socketNumber(3);
  third.accept();
  third.deliver(welcome({ seq: 2, resumed: true }));
  const resent = third.requests().filter((r) => r.type === 'chat.send');
  assert.deepEqual(resent.map((r) => r.rid), [rids[1]], 'only the unacknowledged message, with its original rid');
  third.deliver({ type: 'ack', rid: rids[1], seq: 3, id: 'e1-3' });
  assert.deepEqual(await a, { type: 'ack', rid: rids[0], seq: 2, id: 'e1-2' });
  assert.equal((await b).id, 'e1-3');
  assert.equal(client.outbox.size, 0);
});

test('a refused chat message fails its promise and stays in the outbox as failed; rate limits retry', async () => {
  const client = makeClient();
  client.connect();
  const socket = await socketNumber(1);
  socket.accept();
  socket.deliver(welcome({ seq: 1 }));
  await until(() => client.isOpen);
  const refused = client.sendChat('not allowed');
  const [request] = socket.requests();
  socket.deliver({ type: 'error', rid: request.rid, code: 'forbidden', message: 'no chat permission' });
  await assert.rejects(refused, { code: 'forbidden' });
  assert.equal(client.outbox.get(request.rid).status, 'failed');

  const limited = client.sendChat('slow down');
  const second = socket.requests()[1];
  socket.deliver({ type: 'error', rid: second.rid, code: 'rate_limited', message: 'too fast' });
  await until(() => socket.requests().filter((r) => r.rid === second.rid).length === 2, 3000, 'the retry');
  socket.deliver({ type: 'ack', rid: second.rid, seq: 2, id: 'e1-2' });
  assert.equal((await limited).id, 'e1-2');
});

test('kicked (4003) stays closed with the reason; policy (4008) too', async () => {
  const client = makeClient();
  client.connect();
  const socket = await socketNumber(1);
  socket.accept();
  socket.deliver(welcome({ seq: 1 }));
  await until(() => client.isOpen);
  socket.drop(4003, 'removed by a moderator');
  assert.equal(client.status.status, 'closed');
  assert.equal(client.status.reason, 'kicked');
  assert.equal(client.status.code, 4003);
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(FakeSocket.instances.length, 1, 'no reconnect after a kick');

  const other = makeClient();
  other.connect();
  const s2 = await socketNumber(2);
  s2.accept();
  s2.deliver(welcome({ seq: 1 }));
  await until(() => other.isOpen);
  s2.drop(4008, 'policy');
  assert.equal(other.status.reason, 'policy');
});

test('room cleared (4004): reconnects fresh (no resume) and drops the queued messages', async () => {
  const { client, first } = await openClient({ seq: 3 });
  const unacked = client.sendChat('for the old room');
  first.deliver({ type: 'room.cleared', epoch: 'e2' });
  first.drop(4004, 'room cleared');
  await assert.rejects(unacked, { code: 'room_cleared' });
  assert.equal(client.outbox.size, 0);
  const second = await socketNumber(2);
  assert.equal(second.url.searchParams.get('since'), null);
  second.accept();
  second.deliver(welcome({ epoch: 'e2', seq: 1 }));
  assert.equal(client.state.epoch, 'e2');
  assert.deepEqual(client.state.messages, []);
});

test('room cleared, then the connection drops without its 4004: still a fresh start, not a resume', { timeout: 5000 }, async () => {
  const { client, first } = await openClient({ seq: 3 });
  let left = 0;
  client.media.leave = async () => {
    left += 1;
  };
  const unacked = client.sendChat('for the old room');
  first.deliver({ type: 'room.cleared', epoch: 'e2' });
  first.drop(1006); // the 4004 close frame was lost with the network
  await assert.rejects(unacked, { code: 'room_cleared' });
  assert.equal(left, 1, 'media left, as on 4004');
  const second = await socketNumber(2);
  assert.equal(second.url.searchParams.get('since'), null, 'no resume into the cleared epoch');
});

test('an expired token (4001) is replaced through getToken before reconnecting', async () => {
  const reasons = [];
  let n = 0;
  const client = makeClient({
    token: undefined,
    getToken: async ({ reason }) => {
      reasons.push(reason);
      n += 1;
      return `tok${n}.e30.sig`;
    },
  });
  client.connect();
  const first = await socketNumber(1);
  assert.equal(first.url.searchParams.get('token'), 'tok1.e30.sig');
  first.accept();
  first.deliver(welcome({ seq: 1 }));
  await until(() => client.isOpen);
  first.drop(4001, 'token expired');
  const second = await socketNumber(2);
  assert.equal(second.url.searchParams.get('token'), 'tok2.e30.sig');
  assert.deepEqual(reasons, ['connect', 'connect']);

  // auth.expiring: a new token is fetched and sent with auth.refresh on the open connection.
  second.accept();
  second.deliver(welcome({ seq: 1, resumed: true }));
  await until(() => client.isOpen);
  second.deliver({ type: 'auth.expiring', exp: 99 });
  await until(() => second.requests().some((r) => r.type === 'auth.refresh'), 2000, 'auth.refresh');
  const refresh = second.requests().find((r) => r.type === 'auth.refresh');
  assert.equal(refresh.token, 'tok3.e30.sig');
  second.deliver({ type: 'ack', rid: refresh.rid, exp: 200 });
});

test('a refused upgrade is diagnosed over HTTP: 401 without getToken closes with the server message', async () => {
  const client = makeClient({
    fetch: async () => new Response(JSON.stringify({ code: 'unauthorized', message: 'token expired at 5' }), { status: 401 }),
  });
  const connecting = client.connect();
  const socket = await socketNumber(1);
  socket.drop(1006);
  await assert.rejects(connecting, /token expired at 5/);
  assert.equal(client.status.status, 'closed');
  assert.equal(client.status.reason, 'unauthorized');
});

test('a gap in seq triggers a resume from the last applied event', async () => {
  const { client, first } = await openClient({ seq: 1 });
  first.deliver(chatEvent('e1', 2, 'ok'));
  first.deliver(chatEvent('e1', 4, 'after a hole'));
  assert.ok(first.closedByClient, 'the broken connection is closed');
  const second = await socketNumber(2);
  assert.equal(second.url.searchParams.get('since'), '2');
});

test('requests resolve with their ack, reject with the room error, and time out', async () => {
  const client = makeClient();
  client.connect();
  const socket = await socketNumber(1);
  socket.accept();
  socket.deliver(welcome({ seq: 1, you: participant('me', 'teacher') }));
  await until(() => client.isOpen);
  const hand = client.setHand(true);
  const kick = client.kick('bob');
  const silent = client.react('👍');
  const [h, k] = socket.requests();
  socket.deliver({ type: 'ack', rid: h.rid, seq: 2 });
  socket.deliver({ type: 'error', rid: k.rid, code: 'forbidden', message: 'not a moderator' });
  assert.deepEqual(await hand, { type: 'ack', rid: h.rid, seq: 2 });
  await assert.rejects(kick, { code: 'forbidden', message: 'not a moderator' });
  await assert.rejects(silent, { code: 'timeout' });
  socket.drop(1006);
  await assert.rejects(client.setHand(false), { code: 'offline' });
});

test('asks for batches and applies a batched frame (a JSON array) in order', async () => {
  const client = makeClient();
  const connected = client.connect();
  const socket = await socketNumber(1);
  assert.equal(socket.url.searchParams.get('batch'), '1');
  socket.accept();
  socket.deliver(welcome({ seq: 2 }));
  await connected;
  socket.deliver(JSON.stringify([chatEvent('e1', 3, 'one'), chatEvent('e1', 4, 'two'), chatEvent('e1', 5, 'three')]));
  assert.deepEqual(client.state.messages.map((m) => m.text), ['one', 'two', 'three']);
});

test('a refusal the room explains (probe=1) is shown: a full room retries with the reason', async () => {
  const asked = [];
  const fetch = async (url) => {
    asked.push(String(url));
    return new Response(JSON.stringify({ code: 'room_full', message: 'the room is full (2 participants); try again later' }), {
      status: 409,
    });
  };
  const client = makeClient({ fetch });
  const statuses = [];
  client.on('status', (s) => statuses.push(s));
  client.connect().catch(() => {});
  const socket = await socketNumber(1);
  socket.drop(1006);
  await until(() => statuses.some((s) => s.message?.includes('the room is full')), 2000, 'the reason is shown');
  assert.ok(asked[0].includes('probe=1'), asked[0]);
  assert.equal(client.status.status, 'reconnecting');
});
