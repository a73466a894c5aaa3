// The participant list: roles, presence, hands, media, and the moderator's controls (mute, permissions, role,
// kick) for participants the room lets this user moderate.

import { h, ROLE_RANK } from './dom.js';

const STATUS_LABEL = { active: 'Active', idle: 'Idle', away: 'Away' };
const PERM_LABELS = [
  ['chat', 'Chat'],
  ['stream', 'Camera & mic'],
  ['screen_share', 'Screen share'],
];

export class ParticipantList {
  /**
   * @param {HTMLElement} list  the <ul>
   * @param {HTMLElement} count the element showing the number of people
   * @param {import('../client/homeroom.js').HomeroomClient} client
   * @param {(message: string, kind?: string) => void} notify
   */
  constructor(list, count, client, notify) {
    this.list = list;
    this.count = count;
    this.client = client;
    this.notify = notify;
    /** The participant whose moderation menu is open, kept across re-renders. */
    this.openMenu = null;
  }

  render() {
    const { state } = this.client;
    const me = state.you;
    const people = [...state.participants.values()].sort(
      (a, b) => (ROLE_RANK[b.role] ?? 0) - (ROLE_RANK[a.role] ?? 0) || a.name.localeCompare(b.name),
    );
    this.count.textContent = String(people.length);
    this.list.replaceChildren(...people.map((p) => this.item(p, me)));
  }

  /** @param {import('../client/room-state.js').Participant} p @param {any} me */
  item(p, me) {
    const isMe = p.id === me?.id;
    const muted = p.muted ?? { audio: false, video: false, screen: false };
    const media = h(
      'span',
      { class: 'media-icons', dataset: { testid: 'participant-media' } },
      mediaIcon('🎤', 'microphone', p.media.audio, muted.audio),
      mediaIcon('📷', 'camera', p.media.video, muted.video),
      mediaIcon('🖥️', 'screen share', p.media.screen, muted.screen),
    );
    const canModerate =
      me?.perms.moderate && !isMe && (ROLE_RANK[p.role] ?? 0) <= (ROLE_RANK[me.role] ?? 0);
    return h(
      'li',
      {
        class: `participant status-${p.status}${isMe ? ' me' : ''}`,
        dataset: { testid: 'participant', id: p.id, role: p.role, status: p.status, hand: p.hand_raised },
      },
      h('span', { class: 'presence', title: STATUS_LABEL[p.status] ?? p.status, dataset: { testid: 'participant-presence' } }),
      h(
        'span',
        { class: 'who' },
        h('span', { class: 'name', dataset: { testid: 'participant-name' }, text: p.name }),
        isMe ? h('span', { class: 'you', text: ' (you)' }) : null,
      ),
      h('span', { class: `role role-${p.role}`, dataset: { testid: 'participant-role' }, text: p.role }),
      p.hand_raised ? h('span', { class: 'hand', title: 'Hand raised', dataset: { testid: 'participant-hand' }, text: '✋' }) : null,
      media,
      canModerate ? this.menuToggle(p) : null,
      canModerate && this.openMenu === p.id ? this.moderationMenu(p) : null,
    );
  }

  /** @param {import('../client/room-state.js').Participant} p */
  moderationMenu(p) {
    const client = this.client;
    const act = (label, fn) => async () => {
      try {
        await fn();
      } catch (error) {
        this.notify(`${label} failed: ${error.message}`, 'error');
      }
    };
    const muted = p.muted ?? { audio: false, video: false, screen: false };
    const muteButton = (kind, noun) =>
      h('button', {
        type: 'button',
        dataset: { testid: `mod-mute-${kind}` },
        text: muted[kind] ? `Allow ${noun}` : `Mute ${noun}`,
        on: { click: act(`Muting ${p.name}`, () => client.mute(p.id, kind, !muted[kind])) },
      });
    const perms = PERM_LABELS.map(([key, label]) =>
      h(
        'label',
        { class: 'perm' },
        h('input', {
          type: 'checkbox',
          checked: p.perms[key] ? true : null,
          dataset: { testid: `perm-${key}` },
          on: {
            change: (event) =>
              act(`Changing ${p.name}'s permissions`, () =>
                client.updateParticipant(p.id, { perms: { [key]: event.target.checked } }),
              )(),
          },
        }),
        ` ${label}`,
      ),
    );
    const promote = p.role === 'student' ? 'teacher' : 'student';
    return h(
      'div',
      { class: 'mod-actions', dataset: { testid: 'mod-menu' } },
      muteButton('audio', 'mic'),
      muteButton('video', 'camera'),
      muteButton('screen', 'screen'),
      h('fieldset', {}, h('legend', { text: 'May use' }), ...perms),
      h('button', {
        type: 'button',
        dataset: { testid: 'mod-role' },
        text: `Make ${promote}`,
        on: { click: act(`Changing ${p.name}'s role`, () => client.updateParticipant(p.id, { role: promote })) },
      }),
      h('button', {
        type: 'button',
        class: 'danger',
        dataset: { testid: 'mod-kick' },
        text: 'Remove from room',
        on: {
          click: act(`Removing ${p.name}`, async () => {
            await client.kick(p.id);
            this.notify(`${p.name} was removed from the room.`);
          }),
        },
      }),
    );
  }

  /** The "⋯" button that opens a participant's moderation actions (shown inline, below the row). */
  menuToggle(p) {
    const open = this.openMenu === p.id;
    return h('button', {
      type: 'button',
      class: 'mod-toggle',
      title: `Manage ${p.name}`,
      'aria-expanded': String(open),
      dataset: { testid: 'mod-menu-toggle' },
      text: '⋯',
      on: {
        click: () => {
          this.openMenu = open ? null : p.id;
          this.render();
        },
      },
    });
  }
}

function mediaIcon(symbol, noun, on, mutedByModerator) {
  const state = mutedByModerator ? 'muted' : on ? 'on' : 'off';
  const title = mutedByModerator ? `${noun} muted by a moderator` : `${noun} ${on ? 'on' : 'off'}`;
  return h('span', { class: `media-icon ${state}`, title, dataset: { kind: noun.split(' ')[0], state } }, symbol);
}
