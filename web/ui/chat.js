// The chat panel: messages (with replies, edits, deletes), messages still waiting to be sent, the typing
// indicator, "seen by", and the composer (which also edits and replies).

import { clock, h } from './dom.js';

export class ChatPanel {
  /**
   * @param {{list: HTMLElement, typing: HTMLElement, form: HTMLFormElement, input: HTMLTextAreaElement,
   *   context: HTMLElement, older: HTMLButtonElement}} els
   * @param {import('../client/homeroom.js').HomeroomClient} client
   * @param {(message: string, kind?: string) => void} notify
   */
  constructor(els, client, notify) {
    this.els = els;
    this.client = client;
    this.notify = notify;
    /** What the composer does: a new message, a reply to `id`, or an edit of `id`. */
    this.mode = { kind: 'new', id: null };
    this.lastRenderedCount = 0;

    els.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.submit();
    });
    els.input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey) {
        event.preventDefault();
        this.submit();
      } else if (event.key === 'Escape') {
        this.setMode({ kind: 'new', id: null });
      }
    });
    els.input.addEventListener('input', () => {
      if (els.input.value.trim()) client.typing();
      else client.stopTyping();
    });
    els.context.querySelector('button').addEventListener('click', () => this.setMode({ kind: 'new', id: null }));
    els.older.addEventListener('click', async () => {
      try {
        await client.loadOlder();
      } catch (error) {
        this.notify(`Could not load older messages: ${error.message}`, 'error');
      }
    });
  }

  async submit() {
    const text = this.els.input.value.trim();
    if (!text) return;
    const { kind, id } = this.mode;
    this.els.input.value = '';
    this.client.stopTyping();
    this.setMode({ kind: 'new', id: null });
    try {
      if (kind === 'edit') await this.client.editMessage(id, text);
      else await this.client.sendChat(text, { replyTo: kind === 'reply' ? id : null });
    } catch (error) {
      // Queued messages never land here for connection problems; only refusals (and edit failures) do.
      this.notify(`${kind === 'edit' ? 'Edit' : 'Message'} not sent: ${error.message}`, 'error');
      if (kind === 'edit') this.els.input.value = text;
    }
  }

  /** @param {{kind: 'new' | 'reply' | 'edit', id: string | null}} mode */
  setMode(mode) {
    this.mode = mode;
    const label = this.els.context.querySelector('span');
    if (mode.kind === 'new') {
      this.els.context.hidden = true;
      return;
    }
    const message = this.client.state.message(mode.id);
    label.textContent =
      mode.kind === 'reply'
        ? `Replying to ${message?.from.name ?? 'a message'}: “${preview(message?.text ?? '')}”`
        : 'Editing your message';
    this.els.context.hidden = false;
    this.els.context.dataset.mode = mode.kind;
    if (mode.kind === 'edit' && message) this.els.input.value = message.text;
    this.els.input.focus();
  }

  render() {
    const { state, outbox } = this.client;
    const list = this.els.list;
    const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 60;
    const me = state.you;
    const items = state.messages.map((m) => this.messageItem(m, me));
    const pending = outbox.list().map((entry) => this.pendingItem(entry));
    const seen = this.seenBy();
    list.replaceChildren(...items, ...pending, ...(seen ? [seen] : []));
    if (!items.length && !pending.length) {
      list.append(h('li', { class: 'empty', text: 'No messages yet. Say hello!' }));
    }
    this.els.older.hidden = !state.hasOlder;
    const count = items.length + pending.length;
    if (nearBottom || count !== this.lastRenderedCount) list.scrollTop = list.scrollHeight;
    this.lastRenderedCount = count;
    if (!me?.perms.chat) {
      this.els.input.disabled = true;
      this.els.input.placeholder = 'A moderator turned off chat for you.';
    } else {
      this.els.input.disabled = false;
      this.els.input.placeholder = 'Message the class…';
    }
  }

  /** @param {import('../client/room-state.js').ChatMessage} m @param {any} me */
  messageItem(m, me) {
    const mine = m.from.id === me?.id;
    const mayChange = mine || me?.perms.moderate;
    const original = m.reply_to ? this.client.state.message(m.reply_to) : null;
    const quote = m.reply_to
      ? h(
          'blockquote',
          { class: 'reply-quote', dataset: { testid: 'message-reply-quote', replyTo: m.reply_to } },
          original
            ? [h('strong', { text: original.from.name }), ` ${preview(original.text)}`]
            : this.client.state.deleted.has(m.reply_to)
              ? 'a deleted message'
              : 'an earlier message',
        )
      : null;
    const action = (label, testid, fn) =>
      h('button', { type: 'button', class: 'link', dataset: { testid }, text: label, on: { click: fn } });
    return h(
      'li',
      {
        class: `message${mine ? ' mine' : ''}${m.from.role !== 'student' ? ' staff' : ''}`,
        dataset: { testid: 'message', id: m.id, seq: m.seq, author: m.from.id },
      },
      h(
        'div',
        { class: 'meta' },
        h('span', { class: 'author', dataset: { testid: 'message-author' }, text: m.from.name }),
        m.from.role !== 'student' ? h('span', { class: `role role-${m.from.role}`, text: m.from.role }) : null,
        h('time', { text: clock(m.ts) }),
        m.edited_at ? h('span', { class: 'edited', dataset: { testid: 'message-edited' }, text: 'edited' }) : null,
      ),
      quote,
      h('div', { class: 'text', dataset: { testid: 'message-text' }, text: m.text }),
      h(
        'div',
        { class: 'actions' },
        me?.perms.chat ? action('Reply', 'message-reply', () => this.setMode({ kind: 'reply', id: m.id })) : null,
        mine ? action('Edit', 'message-edit', () => this.setMode({ kind: 'edit', id: m.id })) : null,
        mayChange
          ? action('Delete', 'message-delete', async () => {
              try {
                await this.client.deleteMessage(m.id);
              } catch (error) {
                this.notify(`Could not delete: ${error.message}`, 'error');
              }
            })
          : null,
      ),
    );
  }

  /** @param {import('../client/outbox.js').OutboxEntry} entry */
  pendingItem(entry) {
    const label =
      entry.status === 'failed'
        ? `Not sent: ${entry.error?.message ?? 'refused'}`
        : this.client.isOpen
          ? 'Sending…'
          : 'Waiting for the connection…';
    return h(
      'li',
      { class: `message mine pending ${entry.status}`, dataset: { testid: 'pending-message', status: entry.status, rid: entry.rid } },
      h('div', { class: 'meta' }, h('span', { class: 'author', text: this.client.state.you?.name ?? 'You' }), h('span', { class: 'pending-label', text: label })),
      h('div', { class: 'text', text: entry.frame.text }),
      entry.status === 'failed'
        ? h(
            'div',
            { class: 'actions' },
            h('button', { type: 'button', class: 'link', dataset: { testid: 'pending-retry' }, text: 'Retry', on: { click: () => this.client.retryChat(entry.rid).catch((e) => this.notify(e.message, 'error')) } }),
            h('button', { type: 'button', class: 'link', dataset: { testid: 'pending-discard' }, text: 'Discard', on: { click: () => this.client.discardChat(entry.rid) } }),
          )
        : null,
    );
  }

  /** "Seen by …" under the latest message: who read up to it (me and its author excluded). */
  seenBy() {
    const { state } = this.client;
    const last = state.messages[state.messages.length - 1];
    if (!last) return null;
    const readers = [...state.participants.values()]
      .filter((p) => p.id !== state.you?.id && p.id !== last.from.id && (p.last_read ?? 0) >= last.seq)
      .map((p) => p.name);
    if (!readers.length) return null;
    return h('li', { class: 'seen', dataset: { testid: 'seen-by' }, text: `Seen by ${readers.join(', ')}` });
  }

  renderTyping() {
    const { state } = this.client;
    const names = state.typingIds(Date.now()).map((id) => state.participants.get(id)?.name ?? id);
    const text =
      names.length === 0
        ? ''
        : names.length === 1
          ? `${names[0]} is typing…`
          : names.length === 2
            ? `${names[0]} and ${names[1]} are typing…`
            : `${names.length} people are typing…`;
    this.els.typing.textContent = text;
    this.els.typing.dataset.active = String(names.length > 0);
  }
}

function preview(text, max = 60) {
  const flat = text.replace(/\s+/g, ' ');
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}
