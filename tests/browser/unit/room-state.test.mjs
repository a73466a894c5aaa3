// The pure room state: seq de-duplication, gaps, resume vs fresh snapshots, chat edits and deletes, typing.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RoomState } from '../../../web/client/room-state.js';
import { chatEvent, message, participant, welcome } from './fake-socket.mjs';

test('a fresh welcome sets the snapshot; events apply once, in seq order', () => {
  const state = new RoomState();
  const result = state.applyWelcome(welcome({ seq: 2, others: [participant('ada', 'teacher')], history: [message('e1', 2, 'old')] }));
  assert.deepEqual(result, { resumed: false });
  assert.equal(state.seq, 2);
  assert.deepEqual([...state.participants.keys()].sort(), ['ada', 'me']);

  assert.equal(state.applyEvent(chatEvent('e1', 3, 'hello')), 'applied');
  assert.equal(state.applyEvent(chatEvent('e1', 3, 'hello')), 'duplicate');
  assert.equal(state.applyEvent(chatEvent('e1', 2, 'older')), 'duplicate');
  assert.equal(state.applyEvent(chatEvent('e1', 5, 'skipped one')), 'gap');
  assert.equal(state.seq, 3, 'a gap applies nothing');
  assert.deepEqual(state.messages.map((m) => m.text), ['old', 'hello']);
});

test('a resumed welcome keeps messages and seq; replayed events fill the gap exactly once', () => {
  const state = new RoomState();
  state.applyWelcome(welcome({ seq: 1 }));
  state.applyEvent(chatEvent('e1', 2, 'a'));
  assert.deepEqual(state.resumePoint(), { since: 2, epoch: 'e1' });

  const resumed = state.applyWelcome(welcome({ seq: 4, resumed: true, others: [participant('bob')] }));
  assert.deepEqual(resumed, { resumed: true });
  assert.equal(state.seq, 2, 'seq advances only with the replayed events');
  assert.ok(state.replaying);
  for (const event of [chatEvent('e1', 2, 'a'), chatEvent('e1', 3, 'b'), chatEvent('e1', 3, 'b'), chatEvent('e1', 4, 'c')]) {
    state.applyEvent(event);
  }
  assert.equal(state.replaying, false);
  assert.deepEqual(state.messages.map((m) => m.text), ['a', 'b', 'c']);
  assert.ok(state.participants.has('bob'), 'participants come from the resumed snapshot');
});

test('a welcome that is not resumed (or from another epoch) resets everything', () => {
  const state = new RoomState();
  state.applyWelcome(welcome({ seq: 1 }));
  state.applyEvent(chatEvent('e1', 2, 'gone'));
  state.applyEphemeral({ type: 'typing', id: 'me', active: true }, 0);
  const result = state.applyWelcome(welcome({ epoch: 'e2', seq: 7, resumed: true, history: [message('e2', 6, 'kept')] }));
  assert.deepEqual(result, { resumed: false }, 'resumed:true with another epoch is not a resume');
  assert.equal(state.epoch, 'e2');
  assert.equal(state.seq, 7);
  assert.deepEqual(state.messages.map((m) => m.text), ['kept']);
  assert.equal(state.typing.size, 0);
});

test('participants: replayed joins/updates/leaves are idempotent on the snapshot', () => {
  const state = new RoomState();
  state.applyWelcome(welcome({ seq: 1 }));
  state.applyWelcome(welcome({ seq: 4, resumed: true, others: [participant('bob', 'student', { hand_raised: true })] }));
  state.applyEvent({ type: 'participant.joined', seq: 2, ts: 2, participant: participant('bob') });
  state.applyEvent({ type: 'participant.updated', seq: 3, ts: 3, participant: participant('bob', 'student', { hand_raised: true }) });
  state.applyEvent({ type: 'participant.joined', seq: 4, ts: 4, participant: participant('cy') });
  assert.equal(state.participants.get('bob').hand_raised, true);
  assert.ok(state.participants.has('cy'));
  state.applyEphemeral({ type: 'typing', id: 'cy', active: true }, 0);
  state.applyEvent({ type: 'participant.left', seq: 5, ts: 5, id: 'cy', reason: 'left' });
  assert.ok(!state.participants.has('cy'));
  assert.deepEqual(state.typingIds(0), [], 'typing ends when the participant leaves');
});

test('edits replace, deletes remove, and my own updates refresh `you`', () => {
  const state = new RoomState();
  state.applyWelcome(welcome({ seq: 1 }));
  state.applyEvent(chatEvent('e1', 2, 'first'));
  state.applyEvent(chatEvent('e1', 3, 'second'));
  state.applyEvent({ type: 'chat.edited', seq: 4, ts: 4, message: { ...message('e1', 2, 'first, edited'), edited_at: 4 } });
  state.applyEvent({ type: 'chat.deleted', seq: 5, ts: 5, id: 'e1-3' });
  assert.deepEqual(state.messages.map((m) => [m.text, m.edited_at]), [['first, edited', 4]]);
  assert.ok(state.deleted.has('e1-3'));
  state.applyEvent({ type: 'participant.updated', seq: 6, ts: 6, participant: participant('me', 'student', { muted: { audio: true, video: false, screen: false } }) });
  assert.equal(state.you.muted.audio, true);
});

test('typing lapses locally if the "stop" was lost; read positions only grow', () => {
  const state = new RoomState();
  state.applyWelcome(welcome({ seq: 1, others: [participant('bob')] }));
  state.applyEphemeral({ type: 'typing', id: 'bob', active: true }, 1000);
  assert.deepEqual(state.typingIds(2000), ['bob']);
  assert.deepEqual(state.typingIds(1000 + 10_001), [], 'twice the typing TTL later it is gone');
  assert.equal(state.applyEphemeral({ type: 'read', id: 'bob', seq: 5 }, 0), true);
  assert.equal(state.applyEphemeral({ type: 'read', id: 'bob', seq: 3 }, 0), false);
  assert.equal(state.participants.get('bob').last_read, 5);
});

test('older history pages merge in front without duplicates', () => {
  const state = new RoomState();
  state.applyWelcome(welcome({ seq: 10, history: [message('e1', 8, 'h8'), message('e1', 9, 'h9')] }));
  assert.equal(state.hasOlder, false, 'a short welcome history is the whole history');
  const full = Array.from({ length: 50 }, (_, i) => message('e1', 100 + i, `m${i}`));
  const paged = new RoomState();
  paged.applyWelcome(welcome({ seq: 150, history: full }));
  assert.equal(paged.hasOlder, true, 'a full welcome page may have older messages');
  state.prependHistory([message('e1', 5, 'h5'), message('e1', 8, 'h8')], false);
  assert.deepEqual(state.messages.map((m) => m.seq), [5, 8, 9]);
  assert.equal(state.hasOlder, false);
});
