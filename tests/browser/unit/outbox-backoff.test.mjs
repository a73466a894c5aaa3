// The offline queue's bookkeeping and the reconnect delays.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { backoffDelay } from '../../../web/client/backoff.js';
import { closePlan, tokenExpiry } from '../../../web/client/errors.js';
import { Outbox } from '../../../web/client/outbox.js';

test('entries keep their rid and order across connections until acknowledged', () => {
  const outbox = new Outbox();
  outbox.add('r1', { type: 'chat.send', text: 'a' }, 0);
  outbox.add('r2', { type: 'chat.send', text: 'b' }, 0);
  assert.deepEqual(outbox.due(1).map((e) => e.rid), ['r1', 'r2']);
  outbox.markSent('r1', 1);
  outbox.markSent('r2', 1);
  assert.deepEqual(outbox.due(1), [], 'nothing is written twice on one connection');
  outbox.acknowledge('r1');
  outbox.requeueAll(); // connection 1 dropped before r2's ack
  assert.deepEqual(outbox.due(2).map((e) => [e.rid, e.attempts]), [['r2', 1]]);
  outbox.markSent('r2', 2);
  assert.equal(outbox.get('r2').attempts, 2);
  outbox.acknowledge('r2');
  assert.equal(outbox.size, 0);
});

test('a refused entry stays visible as failed; a retry reuses its rid', () => {
  const outbox = new Outbox();
  outbox.add('r1', { type: 'chat.send', text: 'x' }, 0);
  outbox.markSent('r1', 1);
  outbox.fail('r1', { code: 'forbidden', message: 'no chat' });
  assert.equal(outbox.get('r1').status, 'failed');
  assert.deepEqual(outbox.due(2), [], 'failed entries are not resent on their own');
  outbox.add('r1', { type: 'chat.send', text: 'x' }, 1);
  assert.deepEqual(outbox.due(2).map((e) => [e.rid, e.status]), [['r1', 'queued']]);
});

test('the queue is bounded', () => {
  const outbox = new Outbox({ maxEntries: 2 });
  outbox.add('a', {}, 0);
  outbox.add('b', {}, 0);
  assert.throws(() => outbox.add('c', {}, 0), /already waiting/);
});

test('backoff grows exponentially, is capped, and jitters within bounds', () => {
  const options = { baseMs: 100, maxMs: 1000, factor: 2, jitter: 0.5 };
  assert.equal(backoffDelay(0, options, () => 0), 50);
  assert.equal(backoffDelay(0, options, () => 0.999999), 100);
  assert.equal(backoffDelay(3, options, () => 1), 800);
  assert.equal(backoffDelay(10, options, () => 1), 1000);
  assert.equal(backoffDelay(1000, options, () => 0), 500);
  for (let i = 0; i < 100; i += 1) {
    const d = backoffDelay(4, options);
    assert.ok(d >= 500 && d <= 1000, `delay ${d} within [500, 1000]`);
  }
});

test('close codes map to plans', () => {
  assert.equal(closePlan(4003).retry, false);
  assert.equal(closePlan(4003).reason, 'kicked');
  assert.equal(closePlan(4004).retry, 'fresh');
  assert.equal(closePlan(4001).retry, 'token');
  assert.equal(closePlan(4008).retry, false);
  assert.equal(closePlan(4009).retry, false);
  assert.equal(closePlan(1011).retry, 'backoff');
  assert.equal(closePlan(1006).retry, 'backoff');
});

test('token expiry is read from the JWT payload', () => {
  const payload = Buffer.from(JSON.stringify({ sub: 'u', exp: 1234 })).toString('base64url');
  assert.equal(tokenExpiry(`x.${payload}.y`), 1234);
  assert.equal(tokenExpiry('not a jwt'), null);
});
