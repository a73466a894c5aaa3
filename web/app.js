// The demo classroom: join form → HomeroomClient → panels that render from `client.state`.
// Each panel lives in web/ui/; this file wires them to the client's events and owns the page-level bits
// (connection status, notices, reactions, hand, teacher tools, the "you were removed" screen).

import { fetchDevToken, HomeroomClient } from './client/homeroom.js';
import { ChatPanel } from './ui/chat.js';
import { batched, byTestId, h } from './ui/dom.js';
import { ParticipantList } from './ui/participants.js';
import { MediaBar, VideoGrid } from './ui/video.js';

const ROOM_ID = /^[A-Za-z0-9_-]{1,64}$/;
const STORAGE = { name: 'homeroom.name', room: 'homeroom.room', role: 'homeroom.role', users: 'homeroom.users' };

// ---- join -----------------------------------------------------------------------------------------------------

function setupJoinForm() {
  const form = byTestId('join-form');
  const params = new URLSearchParams(location.search);
  const name = params.get('name') ?? load(STORAGE.name) ?? '';
  const room = params.get('room') ?? load(STORAGE.room) ?? 'math-101';
  const role = params.get('role') ?? load(STORAGE.role) ?? 'student';
  form.elements.name.value = name;
  form.elements.room.value = room;
  const roleInput = form.querySelector(`input[name=role][value="${role === 'teacher' ? 'teacher' : 'student'}"]`);
  roleInput.checked = true;

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const values = {
      name: form.elements.name.value.trim(),
      room: form.elements.room.value.trim(),
      role: form.querySelector('input[name=role]:checked').value,
    };
    const problem = !values.name
      ? 'Enter your name.'
      : !ROOM_ID.test(values.room)
        ? 'A room name is 1–64 letters, digits, "-" or "_" (no spaces).'
        : null;
    if (problem) return showJoinError(problem);
    const submit = byTestId('join-submit');
    submit.disabled = true;
    submit.textContent = 'Joining…';
    try {
      await enterRoom(values);
    } catch (error) {
      showJoinError(error.message);
      submit.disabled = false;
      submit.textContent = 'Join room';
    }
  });
  if (params.get('autojoin') === '1' && name && ROOM_ID.test(room)) form.requestSubmit();
}

function showJoinError(message) {
  const el = byTestId('join-error');
  el.textContent = message;
  el.hidden = false;
}

/** @param {{name: string, room: string, role: 'teacher' | 'student'}} who */
async function enterRoom(who) {
  const baseUrl = location.origin;
  // One user id per display name and browser, so a reload (or a second tab) is the same participant.
  const users = JSON.parse(load(STORAGE.users) ?? '{}');
  const key = who.name.toLowerCase();
  const first = await fetchDevToken(baseUrl, { name: who.name, role: who.role, ...(users[key] ? { user: users[key] } : {}) });
  users[key] = first.user;
  save(STORAGE.users, JSON.stringify(users));
  save(STORAGE.name, who.name);
  save(STORAGE.room, who.room);
  save(STORAGE.role, who.role);

  const client = new HomeroomClient({
    room: who.room,
    baseUrl,
    token: first.token,
    // Called before the token expires, on auth.expiring, and after a 4001 close.
    getToken: async () => (await fetchDevToken(baseUrl, { name: who.name, role: who.role, user: first.user })).token,
    log: (level, message) => (level === 'debug' ? null : console[level === 'info' ? 'log' : level](`[homeroom] ${message}`)),
  });
  // For the browser tests and for poking around in the console.
  window.__homeroom = { client };
  const app = new ClassroomApp(client);
  byTestId('join-view').hidden = true;
  byTestId('room-view').hidden = false;
  history.replaceState(null, '', `?room=${encodeURIComponent(who.room)}`);
  app.start();
}

// ---- the room -------------------------------------------------------------------------------------------------

class ClassroomApp {
  /** @param {HomeroomClient} client */
  constructor(client) {
    this.client = client;
    const notify = (message, kind) => this.notify(message, kind);
    this.people = new ParticipantList(byTestId('participants'), byTestId('participant-count'), client, notify);
    this.chat = new ChatPanel(
      {
        list: byTestId('messages'),
        typing: byTestId('typing-indicator'),
        form: byTestId('chat-form'),
        input: byTestId('chat-input'),
        context: byTestId('composer-context'),
        older: byTestId('load-older'),
      },
      client,
      notify,
    );
    this.grid = new VideoGrid(byTestId('video-grid'), document.querySelector('.audio-sink'), client);
    this.mediaBar = new MediaBar(byTestId('media-bar'), client, notify);
    this.render = batched(() => this.renderAll());
    this.renderVideo = batched(() => {
      this.grid.render();
      this.mediaBar.render();
    });
    this.markRead = debounce(() => {
      if (document.visibilityState === 'visible') client.markRead().catch(() => {});
    }, 800);
  }

  start() {
    const { client } = this;
    byTestId('room-name').textContent = client.room;
    document.title = `${client.room} · Homeroom`;

    client.on('change', ({ type }) => {
      this.render();
      if (type === 'chat.message' || type === 'welcome') this.markRead();
    });
    client.on('outbox', () => this.render());
    client.on('status', (status) => this.renderStatus(status));
    client.on('typing', () => this.chat.renderTyping());
    client.on('reaction', ({ id, emoji }) => this.showReaction(id, emoji));
    client.on('server-error', ({ message }) => this.notify(message, 'error'));
    client.on('room.cleared', () => this.notify('A moderator cleared the room: chat and participants start fresh.'));
    client.on('participant.left', ({ id, reason }) => {
      if (reason === 'kicked' && id !== client.userId) this.notify(`${this.nameOf(id)} was removed by a moderator.`);
    });
    client.on('welcome', ({ resumed }) => {
      if (resumed) this.notify('Reconnected: caught up on everything you missed.', 'ok');
    });
    client.media.on('status', () => this.renderVideo());
    client.media.on('local', () => this.renderVideo());
    client.media.on('remote', () => this.renderVideo());
    client.media.on('error', (error) => this.notify(error.message, 'error'));
    client.media.on('limited', () => this.notify('A moderator changed what you may share; your devices were adjusted.'));

    byTestId('hand-toggle').addEventListener('click', () => {
      const raised = !client.state.you?.hand_raised;
      client.setHand(raised).catch((error) => this.notify(`Hand: ${error.message}`, 'error'));
    });
    byTestId('reactions').addEventListener('click', (event) => {
      const emoji = event.target.closest('button[data-emoji]')?.dataset.emoji;
      if (!emoji) return;
      this.showReaction(client.userId, emoji);
      client.react(emoji).catch((error) => this.notify(`Reaction: ${error.message}`, 'error'));
    });
    byTestId('clear-room').addEventListener('click', async () => {
      if (!confirm('Clear the room? Everyone is disconnected, and chat history and settings for participants are wiped.')) return;
      try {
        await client.clearRoom();
      } catch (error) {
        this.notify(`Clear room failed: ${error.message}`, 'error');
      }
    });
    const leave = () => {
      client.close();
      location.href = `${location.pathname}?room=${encodeURIComponent(client.room)}`;
    };
    byTestId('leave').addEventListener('click', leave);
    byTestId('closed-home').addEventListener('click', leave);
    byTestId('closed-retry').addEventListener('click', () => {
      byTestId('closed-overlay').hidden = true;
      client.reconnect();
    });
    // Typing indicators lapse locally too; the reconnect countdown ticks.
    setInterval(() => {
      this.chat.renderTyping();
      if (client.status.status === 'reconnecting') this.renderStatus(client.status);
    }, 1000);
    document.addEventListener('visibilitychange', () => this.markRead());

    this.renderStatus(client.status);
    this.renderAll();
    client.connect().catch(() => {
      // The status handler shows why.
    });
  }

  renderAll() {
    const { client } = this;
    const you = client.state.you;
    this.people.render();
    this.chat.render();
    this.chat.renderTyping();
    this.grid.render();
    this.mediaBar.render();
    byTestId('me').textContent = you ? `${you.name} · ${you.role}` : '';
    byTestId('clear-room').hidden = !you?.perms.moderate;
    const hand = byTestId('hand-toggle');
    hand.setAttribute('aria-pressed', String(Boolean(you?.hand_raised)));
    hand.textContent = you?.hand_raised ? '✋ Lower hand' : '✋ Raise hand';
  }

  /** @param {import('./client/homeroom.js').StatusInfo} status */
  renderStatus(status) {
    const el = byTestId('connection-status');
    el.dataset.status = status.status;
    el.dataset.reason = status.reason ?? '';
    let text;
    switch (status.status) {
      case 'open':
        text = 'Connected';
        break;
      case 'connecting':
        text = 'Connecting…';
        break;
      case 'reconnecting': {
        const seconds = Math.max(0, Math.ceil(((status.retryAt ?? Date.now()) - Date.now()) / 1000));
        const when = seconds > 0 ? ` in ${seconds} s` : '…';
        text = status.reason === 'offline' ? `Offline — reconnecting${when}` : `Reconnecting${when}`;
        break;
      }
      case 'closed':
        text = 'Disconnected';
        break;
      default:
        text = 'Not connected';
    }
    byTestId('connection-status-text').textContent = text;
    el.title = status.message ?? '';

    const overlay = byTestId('closed-overlay');
    if (status.status === 'closed' && status.reason !== 'left') {
      const titles = {
        kicked: 'You were removed from the room',
        policy: 'Disconnected by the room',
        too_large: 'Disconnected by the room',
        unauthorized: 'Could not sign in',
        forbidden: 'Not allowed in this room',
      };
      byTestId('closed-title').textContent = titles[status.reason] ?? 'Disconnected';
      byTestId('closed-reason').textContent = status.message ?? 'The connection closed.';
      overlay.dataset.reason = status.reason ?? '';
      overlay.hidden = false;
    } else if (status.status === 'open') {
      overlay.hidden = true;
    }
    this.render();
  }

  nameOf(id) {
    return this.client.state.participants.get(id)?.name ?? id;
  }

  /** A toast; errors stay longer. */
  notify(message, kind = 'info') {
    const toast = h('div', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status', dataset: { testid: 'notice', kind } }, message);
    byTestId('notices').append(toast);
    setTimeout(() => toast.remove(), kind === 'error' ? 9000 : 5000);
  }

  showReaction(id, emoji) {
    const bubble = h(
      'div',
      { class: 'reaction-bubble', dataset: { testid: 'reaction-bubble', participant: id ?? '' }, style: `--x: ${10 + Math.random() * 70}%` },
      h('span', { class: 'emoji', text: emoji }),
      h('span', { class: 'who', text: id === this.client.userId ? 'You' : this.nameOf(id) }),
    );
    byTestId('reaction-layer').append(bubble);
    setTimeout(() => bubble.remove(), 3500);
  }
}

// ---- helpers --------------------------------------------------------------------------------------------------

function load(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null; // storage can be disabled (private mode, policies)
  }
}

function save(key, value) {
  try {
    localStorage.setItem(key, value);
  } catch {
    // not fatal: only convenience
  }
}

function debounce(fn, ms) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}

setupJoinForm();
