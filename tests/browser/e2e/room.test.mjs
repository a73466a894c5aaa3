// The classroom page against a real edge (wrangler dev): joining, participants and roles, chat both ways with
// replies/edits/deletes, typing, hands and reactions, teacher moderation, kick, and the phone layout.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import path from 'node:path';
import { ARTIFACTS, assertNoPageErrors, EDGE_URL, launchBrowser, Participant, uniqueRoom, waitFor } from './harness.mjs';

/** @type {import('playwright-core').Browser} */
let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

describe('a classroom with a teacher and a student', { timeout: 120_000 }, () => {
  /** @type {Participant} */ let teacher;
  /** @type {Participant} */ let student;
  const room = uniqueRoom('class');

  before(async () => {
    teacher = await Participant.join(browser, { name: 'Ada Teacher', room, role: 'teacher' });
    student = await Participant.join(browser, { name: 'Bob Student', room, role: 'student' });
  });
  after(async () => {
    await teacher?.close();
    await student?.close();
  });

  test('each sees the other in the participant list with the right role', async () => {
    for (const [viewer, other, role] of [
      [teacher, student, 'student'],
      [student, teacher, 'teacher'],
    ]) {
      const item = viewer.participantItem(other.id);
      await item.waitFor({ timeout: 10_000 });
      assert.equal(await item.getAttribute('data-role'), role);
      assert.equal(await item.getByTestId('participant-role').textContent(), role);
      assert.equal(await item.getAttribute('data-status'), 'active');
    }
    assert.equal(await teacher.page.getByTestId('participant-count').textContent(), '2');
    await teacher.screenshot('01-joined-teacher');
    await student.screenshot('01-joined-student');
    assertNoPageErrors(teacher, student);
  });

  test('chat goes both ways, in the same order on both pages', async () => {
    await teacher.sendChat('Good morning, class!');
    await student.waitForMessages(['Good morning, class!']);
    await student.sendChat('Good morning!');
    await teacher.waitForMessages(['Good morning, class!', 'Good morning!']);
    await student.waitForMessages(['Good morning!']);
    assert.deepEqual(await teacher.messages(), await student.messages());
    assertNoPageErrors(teacher, student);
  });

  test('typing shows up on the other page and goes away after sending', async () => {
    await student.page.getByTestId('chat-input').pressSequentially('I have a quest', { delay: 20 });
    const indicator = teacher.page.getByTestId('typing-indicator');
    await waitFor(async () => (await indicator.textContent()).includes('Bob Student is typing'), {
      what: 'the teacher to see "Bob Student is typing…"',
    });
    await teacher.screenshot('02-typing');
    await student.page.getByTestId('chat-input').pressSequentially('ion', { delay: 20 });
    await student.page.getByTestId('chat-send').click();
    await teacher.waitForMessages(['I have a question']);
    await waitFor(async () => (await indicator.getAttribute('data-active')) === 'false', {
      what: 'the typing indicator to clear after the message was sent',
    });
  });

  test('replies, edits and deletes reach the other page', async () => {
    const question = (await teacher.messages()).find((m) => m.text === 'I have a question');
    const item = teacher.page.locator(`[data-testid="message"][data-id="${question.id}"]`);
    await item.hover();
    await item.getByTestId('message-reply').click();
    await teacher.sendChat('Go ahead, Bob.');
    const reply = student.page.locator('[data-testid="message"]', { hasText: 'Go ahead, Bob.' });
    await reply.getByTestId('message-reply-quote').waitFor({ timeout: 10_000 });
    assert.match(await reply.getByTestId('message-reply-quote').textContent(), /Bob Student.*I have a question/);

    // The student edits their own message.
    await student.sendChat('What is 2+2?');
    const mine = student.page.locator('[data-testid="message"]', { hasText: 'What is 2+2?' });
    await mine.waitFor();
    await mine.hover();
    await mine.getByTestId('message-edit').click();
    await student.page.getByTestId('chat-input').fill('What is 2 + 2?');
    await student.page.getByTestId('chat-send').click();
    const edited = teacher.page.locator('[data-testid="message"]', { hasText: 'What is 2 + 2?' });
    await edited.getByTestId('message-edited').waitFor({ timeout: 10_000 });

    // The teacher (a moderator) deletes it.
    await edited.hover();
    await edited.getByTestId('message-delete').click();
    await waitFor(async () => !(await student.messages()).some((m) => m.text.startsWith('What is 2')), {
      what: 'the deleted message to disappear from the student page',
    });
    await teacher.screenshot('03-chat');
    assert.deepEqual(await teacher.messages(), await student.messages());
    assertNoPageErrors(teacher, student);
  });

  test('a raised hand and a reaction show on the teacher page', async () => {
    await student.page.getByTestId('hand-toggle').click();
    await teacher.participantItem(student.id).getByTestId('participant-hand').waitFor({ timeout: 10_000 });
    await student.page.locator('[data-testid="reactions"] button[data-emoji="👏"]').click();
    const bubble = teacher.page.locator(`[data-testid="reaction-bubble"][data-participant="${student.id}"]`);
    await bubble.waitFor({ timeout: 10_000 });
    assert.match(await bubble.textContent(), /👏/);
    await teacher.screenshot('04-hand-and-reaction');
    await student.page.getByTestId('hand-toggle').click();
    await teacher.participantItem(student.id).getByTestId('participant-hand').waitFor({ state: 'detached', timeout: 10_000 });
  });

  test("the teacher turns off a student's chat permission, and on again", async () => {
    const item = teacher.participantItem(student.id);
    await item.getByTestId('mod-menu-toggle').click();
    await item.getByTestId('perm-chat').uncheck();
    await waitFor(() => student.page.getByTestId('chat-input').isDisabled(), {
      what: "the student's chat input to be disabled",
    });
    await teacher.screenshot('05-moderation-menu');
    // The room refuses chat even if the page tried (the client library reports the refusal).
    const refusal = await student.page.evaluate(() =>
      window.__homeroom.client.sendChat('sneaky').then(() => 'sent', (e) => e.code),
    );
    assert.equal(refusal, 'forbidden');
    await student.page.evaluate(() => {
      const c = window.__homeroom.client;
      for (const e of c.outbox.list()) c.discardChat(e.rid);
    });
    await teacher.participantItem(student.id).getByTestId('perm-chat').check();
    await waitFor(async () => !(await student.page.getByTestId('chat-input').isDisabled()), {
      what: "the student's chat input to be enabled again",
    });
  });

  test('the page renews its token on the open connection (auth.refresh)', async () => {
    const result = await student.page.evaluate(async () => {
      const client = window.__homeroom.client;
      const renewed = new Promise((resolve) => client.once('token', resolve));
      await client.refreshToken('test');
      return { ...(await renewed), status: client.status.status };
    });
    assert.equal(result.status, 'open', 'the connection stays open');
    assert.ok(result.exp > Date.now() / 1000, `the room acknowledged a new expiry (${result.exp})`);
  });

  test('the teacher kicks the student, and the student page says so', async () => {
    const item = teacher.participantItem(student.id);
    if (!(await item.getByTestId('mod-kick').isVisible())) await item.getByTestId('mod-menu-toggle').click();
    await item.getByTestId('mod-kick').click();
    await student.waitForStatus('closed');
    const overlay = student.page.getByTestId('closed-overlay');
    await overlay.waitFor({ state: 'visible', timeout: 10_000 });
    assert.equal(await overlay.getAttribute('data-reason'), 'kicked');
    assert.match(await student.page.getByTestId('closed-title').textContent(), /removed from the room/);
    assert.match(await student.page.getByTestId('closed-reason').textContent(), /moderator removed you/);
    await teacher.participantItem(student.id).waitFor({ state: 'detached', timeout: 10_000 });
    await student.screenshot('06-kicked-student');
    await teacher.screenshot('06-after-kick-teacher');
    // A kicked client stays closed: no reconnect attempts.
    const status = await student.page.evaluate(() => window.__homeroom.client.status);
    assert.equal(status.status, 'closed');
    assert.equal(status.code, 4003);
    assertNoPageErrors(teacher, student);
  });
});

test('the join form says what is wrong', { timeout: 30_000 }, async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  try {
    await page.goto(`${EDGE_URL}/`);
    await page.getByTestId('join-name').fill('Zed');
    await page.getByTestId('join-room').fill('room with spaces');
    await page.getByTestId('join-submit').click();
    const error = page.getByTestId('join-error');
    await error.waitFor({ state: 'visible', timeout: 5000 });
    assert.match(await error.textContent(), /letters, digits/);
    await page.getByTestId('join-room').fill('fine-room');
    await page.getByTestId('join-name').fill('   ');
    await page.getByTestId('join-submit').click();
    await waitFor(async () => (await error.textContent()) === 'Enter your name.', { what: 'the missing-name message' });
  } finally {
    await context.close();
  }
});

test('a teacher clears the room: everyone rejoins a fresh room', { timeout: 60_000 }, async () => {
  const room = uniqueRoom('clear');
  const teacher = await Participant.join(browser, { name: 'Cleo', room, role: 'teacher' });
  const student = await Participant.join(browser, { name: 'Dan', room, role: 'student' });
  try {
    await teacher.sendChat('This will be wiped');
    await student.waitForMessages(['This will be wiped']);
    const epoch = await student.page.evaluate(() => window.__homeroom.client.state.epoch);
    await teacher.page.getByTestId('clear-room').click();
    await waitFor(
      () => student.page.evaluate((old) => {
        const c = window.__homeroom.client;
        return c.isOpen && c.state.epoch !== old ? c.state.epoch : null;
      }, epoch),
      { what: 'the student to be back in a new epoch' },
    );
    await waitFor(async () => (await student.messages()).length === 0 && (await teacher.messages()).length === 0, {
      what: 'both chats to be empty after the clear',
    });
    assertNoPageErrors(teacher, student);
  } finally {
    await teacher.close();
    await student.close();
  }
});

test('the page works in a phone-sized window', { timeout: 60_000 }, async () => {
  const room = uniqueRoom('phone');
  const phone = await Participant.join(browser, { name: 'Eve Phone', room, role: 'student', viewport: { width: 390, height: 844 } });
  try {
    await phone.sendChat('Hello from a phone');
    await phone.waitForMessages(['Hello from a phone']);
    const overflow = await phone.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow}px wider than the phone screen`);
    await phone.page.evaluate(() => window.scrollTo(0, 0));
    await phone.page.screenshot({ path: path.join(ARTIFACTS, '07-phone-top.png') });
    await phone.page.evaluate(() => window.scrollTo(0, document.documentElement.scrollHeight));
    await phone.page.screenshot({ path: path.join(ARTIFACTS, '07-phone-chat.png') });
    assertNoPageErrors(phone);
  } finally {
    await phone.close();
  }
});
