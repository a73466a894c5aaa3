// The offline queue of outgoing chat messages.
//
// A message gets its `rid` once, when the user sends it, and keeps it across every retry and reconnect. The
// room stores its reply under (user, rid): sending the same rid again, after an ack that was lost with the
// connection, returns the same ack and posts nothing twice. So the rule is simple: send everything that was
// not acknowledged on every new connection, in order, until it is acknowledged or refused for good.
//
// Pure bookkeeping (no sockets, no timers): the client decides when to send; this decides what.

/**
 * @typedef {object} OutboxEntry
 * @property {string} rid
 * @property {Record<string, any>} frame  the request without `rid` ({type, text, reply_to?})
 * @property {number} queuedAt           ms
 * @property {number} attempts           how many times it was written to a socket
 * @property {number} retries            how many retryable refusals (rate_limited, …) the room answered it with
 * @property {number | null} sentOn      the connection number it was last written to, null if not yet
 * @property {'queued' | 'sending' | 'failed'} status
 * @property {{code: string, message: string} | null} error  why it failed (status "failed")
 */

/** Error codes after which resending the same request can succeed. */
export const RETRYABLE_CODES = new Set(['rate_limited', 'unavailable', 'internal', 'timeout', 'disconnected']);

export class Outbox {
  /** @param {{maxEntries?: number}} [options] */
  constructor({ maxEntries = 200 } = {}) {
    this.maxEntries = maxEntries;
    /** Insertion order = send order. @type {Map<string, OutboxEntry>} */
    this.entries = new Map();
  }

  get size() {
    return this.entries.size;
  }

  /** Entries in send order. */
  list() {
    return [...this.entries.values()];
  }

  /** @param {string} rid */
  get(rid) {
    return this.entries.get(rid) ?? null;
  }

  /**
   * Queues a request. Returns the entry, or throws when the queue is full (the user should wait for the
   * connection rather than type into a void).
   * @param {string} rid
   * @param {Record<string, any>} frame
   * @param {number} now
   */
  add(rid, frame, now) {
    const existing = this.entries.get(rid);
    if (existing) {
      // A manual retry of a failed message: same rid, so the room can recognise it if it did arrive.
      existing.status = 'queued';
      existing.error = null;
      existing.sentOn = null;
      existing.retries = 0;
      return existing;
    }
    if (this.entries.size >= this.maxEntries) {
      throw new Error(
        `${this.entries.size} messages are already waiting to be sent; wait for the connection to come back`,
      );
    }
    /** @type {OutboxEntry} */
    const entry = { rid, frame, queuedAt: now, attempts: 0, retries: 0, sentOn: null, status: 'queued', error: null };
    this.entries.set(rid, entry);
    return entry;
  }

  /**
   * What to write on connection `connection` now: queued entries not yet written to it, in order.
   * @param {number} connection
   */
  due(connection) {
    return this.list().filter((e) => e.status !== 'failed' && e.sentOn !== connection);
  }

  /** Records that the entry was written to connection `connection`. */
  markSent(rid, connection) {
    const entry = this.entries.get(rid);
    if (!entry) return;
    entry.sentOn = connection;
    entry.attempts += 1;
    entry.status = 'sending';
  }

  /** The connection closed: everything unacknowledged goes back to "queued" for the next one. */
  requeueAll() {
    for (const entry of this.entries.values()) {
      if (entry.status === 'sending') {
        entry.status = 'queued';
        entry.sentOn = null;
      }
    }
  }

  /** Marks one entry to be written again on the current connection (ack timeout, rate limit). */
  requeue(rid) {
    const entry = this.entries.get(rid);
    if (entry && entry.status !== 'failed') {
      entry.status = 'queued';
      entry.sentOn = null;
    }
  }

  /** The room answered the entry with a retryable refusal; returns how many it has had. */
  noteRetry(rid) {
    const entry = this.entries.get(rid);
    if (!entry) return 0;
    entry.retries += 1;
    return entry.retries;
  }

  /** The room acknowledged the entry: it leaves the queue. Returns it (or null if unknown). */
  acknowledge(rid) {
    const entry = this.entries.get(rid) ?? null;
    this.entries.delete(rid);
    return entry;
  }

  /**
   * The room refused the entry, or it ran out of attempts. It stays visible as "failed" so the user can
   * retry (same rid) or discard it.
   */
  fail(rid, error) {
    const entry = this.entries.get(rid);
    if (!entry) return null;
    entry.status = 'failed';
    entry.error = error;
    entry.sentOn = null;
    return entry;
  }

  /** Drops an entry (discarded by the user, or the room it was meant for was cleared). */
  remove(rid) {
    const entry = this.entries.get(rid) ?? null;
    this.entries.delete(rid);
    return entry;
  }

  /** Drops everything; returns what was dropped. */
  clear() {
    const dropped = this.list();
    this.entries.clear();
    return dropped;
  }
}
