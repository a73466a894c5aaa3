// The room as this client knows it, and the rules for changing it. Pure: no sockets, timers or DOM, so the
// rules (de-duplication by seq, resume, snapshots) are unit-tested in Node (tests/browser/unit/).
//
// Invariants, from docs/protocol.md:
// - Logged events carry `seq`, which grows by exactly 1 per event within an epoch. This state has applied every
//   logged event up to `seq` and none after it; an event at or below `seq` is a duplicate (dropped), one past
//   `seq + 1` means events were missed (the caller must resume from `seq`).
// - A resumed welcome (same epoch) keeps messages and `seq`: the replayed events `(since, welcome.seq]` follow.
//   Its `participants` is the current list; replayed `participant.*` events are idempotent upserts/removals.
// - A non-resumed welcome is a fresh snapshot: everything is replaced.
// - Ephemeral events (typing, presence, read, reaction, cursor) have no seq and are never replayed.

/**
 * @typedef {'teacher' | 'student' | 'admin'} Role
 * @typedef {{chat: boolean, stream: boolean, screen_share: boolean, moderate: boolean}} Perms
 * @typedef {{audio: boolean, video: boolean, screen: boolean}} MediaFlags
 * @typedef {object} Participant
 * @property {string} id
 * @property {string} name
 * @property {Role} role
 * @property {number} joined_at
 * @property {Perms} perms
 * @property {'active' | 'idle' | 'away'} status
 * @property {number} last_seen
 * @property {boolean} hand_raised
 * @property {MediaFlags} media
 * @property {MediaFlags} [muted]
 * @property {number} [last_read]
 * @typedef {object} ChatMessage
 * @property {string} id
 * @property {number} seq
 * @property {{id: string, name: string, role: Role}} from
 * @property {string} text
 * @property {string | null} reply_to
 * @property {number} ts
 * @property {number | null} edited_at
 * @typedef {object} Welcome
 * @property {'welcome'} type
 * @property {number} protocol
 * @property {string} room
 * @property {string} epoch
 * @property {number} seq
 * @property {boolean} resumed
 * @property {Participant} you
 * @property {Participant[]} participants
 * @property {ChatMessage[]} history
 * @property {Record<string, any>} config
 */

/** Types of the logged events (the ones with `seq`). */
export const LOGGED_EVENT_TYPES = Object.freeze([
  'participant.joined',
  'participant.left',
  'participant.updated',
  'chat.message',
  'chat.edited',
  'chat.deleted',
]);
const LOGGED = new Set(LOGGED_EVENT_TYPES);

/** Whether a server frame is a logged event (has a `seq` and is replayed on resume). */
export function isLoggedEvent(frame) {
  return LOGGED.has(frame?.type) && Number.isInteger(frame.seq);
}

/** Messages in a fresh welcome (the edge's WELCOME_HISTORY default; the welcome does not state it). */
export const WELCOME_HISTORY = 50;

/** Most messages kept in memory; older ones can be paged in again with a `history` request. */
export const MAX_MESSAGES = 1000;

export class RoomState {
  constructor() {
    this.reset();
  }

  /** Forgets everything (a new room, a cleared room, or a non-resumed welcome). */
  reset() {
    /** @type {string | null} */
    this.room = null;
    /** @type {string | null} */
    this.epoch = null;
    /** Highest logged seq applied. */
    this.seq = 0;
    /** While replaying after a resumed welcome: the welcome's seq; 0 otherwise. */
    this.replayUntil = 0;
    /** @type {Participant | null} */
    this.you = null;
    /** @type {Map<string, Participant>} */
    this.participants = new Map();
    /** Chat messages, oldest first (ordered by seq). @type {ChatMessage[]} */
    this.messages = [];
    /** Ids of messages deleted since the snapshot, so a reply can say what it replied to. @type {Set<string>} */
    this.deleted = new Set();
    /** Whether older messages exist before `messages[0]` (from `history` replies). */
    this.hasOlder = false;
    /** Participant id → when their typing indicator lapses (ms), as a fallback to the server's expiry. */
    this.typing = new Map();
    /** @type {Record<string, any> | null} */
    this.config = null;
  }

  /** The resume parameters for the next connection, or null when there is nothing to resume. */
  resumePoint() {
    return this.epoch ? { since: this.seq, epoch: this.epoch } : null;
  }

  /** My own last read seq. */
  get lastRead() {
    return this.you?.last_read ?? 0;
  }

  /**
   * Applies a `welcome`. Returns `{resumed}`: `true` when the state was kept and replayed events follow.
   * @param {Welcome} welcome
   */
  applyWelcome(welcome) {
    const resumed = Boolean(welcome.resumed) && welcome.epoch === this.epoch && this.epoch !== null;
    if (!resumed) {
      this.reset();
      this.epoch = welcome.epoch;
      this.seq = welcome.seq;
      this.messages = [...(welcome.history ?? [])].sort((a, b) => a.seq - b.seq);
      // The welcome carries the last WELCOME_HISTORY (default 50) messages and does not say whether there are
      // more: a full page suggests there may be (a `history` request then answers `has_more` exactly).
      this.hasOlder = this.messages.length >= Math.min(WELCOME_HISTORY, welcome.config?.history_limit ?? WELCOME_HISTORY);
    } else {
      this.replayUntil = welcome.seq > this.seq ? welcome.seq : 0;
    }
    this.room = welcome.room;
    this.config = welcome.config ?? this.config;
    this.you = welcome.you;
    this.participants = new Map((welcome.participants ?? []).map((p) => [p.id, p]));
    this.participants.set(welcome.you.id, welcome.you);
    // Ephemeral state is never replayed: anything we believed before the gap may be stale.
    this.typing.clear();
    return { resumed };
  }

  /**
   * Applies a logged event. Returns what happened:
   * - `"applied"`: the event was new and changed the state;
   * - `"duplicate"`: already applied (seq ≤ state.seq), dropped;
   * - `"gap"`: events between state.seq and this one are missing; nothing applied, resume from `seq`.
   * @param {{type: string, seq: number, [key: string]: any}} event
   * @returns {'applied' | 'duplicate' | 'gap'}
   */
  applyEvent(event) {
    if (event.seq <= this.seq) return 'duplicate';
    if (event.seq !== this.seq + 1) return 'gap';
    const replayed = this.replayUntil > 0 && event.seq <= this.replayUntil;
    this.seq = event.seq;
    if (this.replayUntil && this.seq >= this.replayUntil) this.replayUntil = 0;
    switch (event.type) {
      case 'participant.joined':
      case 'participant.updated':
        this._upsertParticipant(replayed ? this._keepLiveFields(event.participant) : event.participant);
        break;
      case 'participant.left':
        this.participants.delete(event.id);
        this.typing.delete(event.id);
        break;
      case 'chat.message':
        this._upsertMessage(event.message);
        break;
      case 'chat.edited':
        this._replaceMessage(event.message);
        break;
      case 'chat.deleted':
        this.messages = this.messages.filter((m) => m.id !== event.id);
        this.deleted.add(event.id);
        break;
      default:
        break;
    }
    return 'applied';
  }

  /** Whether replayed events of a resume are still expected. */
  get replaying() {
    return this.replayUntil > 0;
  }

  /**
   * Applies an ephemeral event (`typing`, `presence`, `read`). Returns whether it changed the state.
   * @param {{type: string, [key: string]: any}} event
   * @param {number} now milliseconds
   */
  applyEphemeral(event, now) {
    switch (event.type) {
      case 'typing': {
        if (event.active && this.participants.has(event.id)) {
          // The server ends typing after typing_ttl_ms without a refresh and tells us; the local lapse (twice
          // as long) only covers a lost "active: false" (e.g. across a reconnect).
          const ttl = (this.config?.typing_ttl_ms ?? 5000) * 2;
          this.typing.set(event.id, now + ttl);
        } else {
          this.typing.delete(event.id);
        }
        return true;
      }
      case 'presence': {
        const p = this.participants.get(event.id);
        if (!p) return false;
        this._upsertParticipant({ ...p, status: event.status, last_seen: event.last_seen });
        return true;
      }
      case 'read': {
        const p = this.participants.get(event.id);
        if (!p || (p.last_read ?? 0) >= event.seq) return false;
        this._upsertParticipant({ ...p, last_read: event.seq });
        return true;
      }
      default:
        return false;
    }
  }

  /** Records my own read position after a successful `chat.read`. */
  markRead(seq) {
    if (!this.you || seq <= this.lastRead) return false;
    this._upsertParticipant({ ...this.you, last_read: seq });
    return true;
  }

  /**
   * Ids of participants typing at `now`, me excluded.
   * @param {number} now
   * @returns {string[]}
   */
  typingIds(now) {
    const ids = [];
    for (const [id, until] of this.typing) {
      if (until <= now) this.typing.delete(id);
      else if (id !== this.you?.id) ids.push(id);
    }
    return ids;
  }

  /**
   * Merges an older page of messages (a `history` reply) in front of the list.
   * @param {ChatMessage[]} page oldest first
   * @param {boolean} hasMore
   */
  prependHistory(page, hasMore) {
    const known = new Set(this.messages.map((m) => m.id));
    const older = page.filter((m) => !known.has(m.id) && !this.deleted.has(m.id));
    this.messages = [...older, ...this.messages].sort((a, b) => a.seq - b.seq);
    this.hasOlder = hasMore;
  }

  /** @param {string} id */
  message(id) {
    return this.messages.find((m) => m.id === id) ?? null;
  }

  /** The latest chat message's seq (what "read up to here" means), or 0. */
  latestMessageSeq() {
    return this.messages.length ? this.messages[this.messages.length - 1].seq : 0;
  }

  /** @param {Participant} participant */
  /**
   * A replayed participant event is older than the welcome's participant list. Its logged fields (role, perms,
   * hand, media, mutes) are replayed in order and end current, but `status`, `last_seen` and `last_read` change
   * without logged events: for those the welcome's value is newer and is kept.
   * @param {Participant} participant
   */
  _keepLiveFields(participant) {
    const current = this.participants.get(participant.id);
    if (!current) return participant;
    return {
      ...participant,
      status: current.status,
      last_seen: Math.max(current.last_seen ?? 0, participant.last_seen ?? 0),
      last_read: Math.max(current.last_read ?? 0, participant.last_read ?? 0),
    };
  }

  _upsertParticipant(participant) {
    this.participants.set(participant.id, participant);
    if (this.you && participant.id === this.you.id) this.you = participant;
  }

  /** @param {ChatMessage} message */
  _upsertMessage(message) {
    const index = this.messages.findIndex((m) => m.id === message.id);
    if (index >= 0) {
      this.messages[index] = message;
      return;
    }
    // Almost always appended at the end; a message older than the last one (should not happen) is inserted.
    let at = this.messages.length;
    while (at > 0 && this.messages[at - 1].seq > message.seq) at -= 1;
    this.messages.splice(at, 0, message);
    if (this.messages.length > MAX_MESSAGES) {
      this.messages.splice(0, this.messages.length - MAX_MESSAGES);
      this.hasOlder = true;
    }
  }

  /** @param {ChatMessage} message */
  _replaceMessage(message) {
    const index = this.messages.findIndex((m) => m.id === message.id);
    if (index >= 0) this.messages[index] = message;
  }
}
