// Losing the connection: the page resumes with since/epoch, shows every message exactly once, and sends what was
// typed while offline exactly once.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { assertNoPageErrors, launchBrowser, Participant, sleep, uniqueRoom, waitFor } from './harness.mjs';

/** @type {import('playwright-core').Browser} */
let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/** Every message exactly once, in seq order, and both pages agree. */
async function assertSameChat(a, b, expectedTexts) {
  const [left, right] = [await a.messages(), await b.messages()];
  assert.deepEqual(left, right, `${a.name} and ${b.name} show different chats`);
  const ids = left.map((m) => m.id);
  assert.equal(new Set(ids).size, ids.length, `duplicate messages: ${JSON.stringify(left)}`);
  const seqs = left.map((m) => m.seq);
  assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y), 'messages out of seq order');
  const texts = left.map((m) => m.text);
  for (const text of expectedTexts) {
    assert.equal(texts.filter((t) => t === text).length, 1, `"${text}" should appear exactly once; chat: ${JSON.stringify(texts)}`);
  }
}

/** Counts welcomes on the page's client (resumed or not), from now on. */
async function watchWelcomes(participant) {
  await participant.page.evaluate(() => {
    window.__welcomes = [];
    window.__duplicates = 0;
    window.__homeroom.client.on('welcome', ({ resumed }) => window.__welcomes.push(resumed));
    window.__homeroom.client.on('duplicate', () => {
      window.__duplicates += 1;
    });
  });
}

test('a page that goes offline resumes with no duplicate or missing messages', { timeout: 90_000 }, async () => {
  const room = uniqueRoom('offline');
  const teacher = await Participant.join(browser, { name: 'Tess', room, role: 'teacher' });
  const student = await Participant.join(browser, { name: 'Sam', room, role: 'student' });
  try {
    await teacher.sendChat('before 1');
    await student.sendChat('before 2');
    await student.waitForMessages(['before 1', 'before 2']);
    await watchWelcomes(student);

    await student.context.setOffline(true);
    await student.waitForStatus('reconnecting');
    // While the student is away: the teacher talks, and the student types two messages that must wait.
    await teacher.sendChat('while away 1');
    await teacher.sendChat('while away 2');
    await student.sendChat('typed offline 1');
    await student.sendChat('typed offline 2');
    const pending = student.page.locator('[data-testid="pending-message"]');
    await waitFor(async () => (await pending.count()) === 2, { what: 'two queued messages on the offline page' });
    assert.match(await pending.first().textContent(), /Waiting for the connection/);
    await student.screenshot('10-offline-queued');
    await sleep(1500); // long enough for a few failed reconnect attempts

    await student.context.setOffline(false);
    await student.waitForStatus('open', 30_000);
    const expected = ['before 1', 'before 2', 'while away 1', 'while away 2', 'typed offline 1', 'typed offline 2'];
    await student.waitForMessages(expected);
    await teacher.waitForMessages(expected);
    await waitFor(async () => (await pending.count()) === 0, { what: 'the queue to drain' });
    const welcomes = await student.page.evaluate(() => window.__welcomes);
    assert.ok(welcomes.length >= 1, 'the student reconnected');
    assert.equal(welcomes[welcomes.length - 1], true, 'the reconnect resumed (since/epoch) instead of starting fresh');
    await sleep(500); // anything late (a duplicate send) would show up now
    await assertSameChat(teacher, student, expected);
    await student.screenshot('11-resumed');
    assertNoPageErrors(teacher, student);
  } finally {
    await teacher.close();
    await student.close();
  }
});

test('a socket that dies under the page (before its acks arrive) loses and duplicates nothing', { timeout: 90_000 }, async () => {
  const room = uniqueRoom('drop');
  const teacher = await Participant.join(browser, { name: 'Tom', room, role: 'teacher' });
  const student = await Participant.join(browser, { name: 'Sia', room, role: 'student' });
  try {
    await teacher.sendChat('hello');
    await student.waitForMessages(['hello']);
    await watchWelcomes(student);

    // Send three messages and kill the socket in the same task, before any ack can arrive: the client resends
    // all three with their original rids on the next connection, and the room posts each once.
    await student.page.evaluate(() => {
      const c = window.__homeroom.client;
      for (const text of ['burst 1', 'burst 2', 'burst 3']) c.sendChat(text);
      c.dropConnection('test: socket killed right after sending');
    });
    // Meanwhile the teacher keeps talking.
    await teacher.sendChat('during the drop');
    await student.waitForStatus('open', 30_000);
    const expected = ['hello', 'burst 1', 'burst 2', 'burst 3', 'during the drop'];
    await student.waitForMessages(expected);
    await teacher.waitForMessages(expected);
    await sleep(500);
    await assertSameChat(teacher, student, expected);
    const welcomes = await student.page.evaluate(() => window.__welcomes);
    assert.deepEqual(welcomes.slice(-1), [true], 'the reconnect resumed');
    assertNoPageErrors(teacher, student);
  } finally {
    await teacher.close();
    await student.close();
  }
});
