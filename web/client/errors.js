// Errors and close codes of the room protocol (docs/protocol.md, "Errors" and "Close codes"), turned into
// messages a person can act on.

/** An error from the room (an `error` frame), from the client itself, or from the media node. */
export class HomeroomError extends Error {
  /**
   * @param {string} code  a protocol code (`forbidden`, `rate_limited`, …) or a client one (`offline`,
   *                       `timeout`, `disconnected`, `closed`, `room_cleared`, `media`)
   * @param {string} message
   * @param {Record<string, any>} [details]
   */
  constructor(code, message, details = {}) {
    super(message);
    this.name = 'HomeroomError';
    this.code = code;
    this.details = details;
  }
}

/**
 * What a close code means for the client.
 * `retry`: "backoff" (reconnect with backoff and resume), "fresh" (reconnect now without resuming),
 * "token" (get a new token, then reconnect), or false (stay closed; the user decides).
 * @typedef {{reason: string, retry: 'backoff' | 'fresh' | 'token' | false, message: string}} ClosePlan
 */

/** @type {Record<number, ClosePlan>} */
const CLOSE_PLANS = {
  4001: {
    reason: 'token_expired',
    retry: 'token',
    message: 'Your sign-in token expired or became invalid; getting a new one.',
  },
  4003: {
    reason: 'kicked',
    retry: false,
    message: 'A moderator removed you from the room. You cannot rejoin for a while.',
  },
  4004: {
    reason: 'room_cleared',
    retry: 'fresh',
    message: 'The room was cleared by a moderator; rejoining the fresh room.',
  },
  4008: {
    reason: 'policy',
    retry: false,
    message:
      'The room closed the connection because too many messages were refused (rate limit or malformed frames). ' +
      'Slow down, then reconnect.',
  },
  4009: {
    reason: 'too_large',
    retry: false,
    message: 'The room closed the connection because a message was larger than 256 KiB. Reconnect to continue.',
  },
  1011: {
    reason: 'server_error',
    retry: 'backoff',
    message: 'The room hit an internal error and closed the connection; reconnecting.',
  },
};

/**
 * The plan for a close code (unknown codes: reconnect with backoff).
 * @param {number} code
 * @param {string} [serverReason] the close frame's reason text, shown when the room sent one
 * @returns {ClosePlan}
 */
export function closePlan(code, serverReason = '') {
  const plan = CLOSE_PLANS[code];
  if (plan) return plan;
  const detail = serverReason ? ` (${serverReason})` : '';
  return {
    reason: 'network',
    retry: 'backoff',
    message: `The connection to the room was lost (code ${code}${detail}); reconnecting.`,
  };
}

/**
 * Reads `exp` (seconds) from a JWT without verifying it (the server verifies; the client only needs to know
 * when to refresh). Returns null for anything that is not a readable JWT.
 * @param {string} token
 * @returns {number | null}
 */
export function tokenExpiry(token) {
  try {
    const payload = token.split('.')[1];
    if (!payload) return null;
    const base64 = payload.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(payload.length / 4) * 4, '=');
    const json = typeof atob === 'function' ? atob(base64) : Buffer.from(base64, 'base64').toString('binary');
    const exp = JSON.parse(json).exp;
    return Number.isFinite(exp) ? exp : null;
  } catch {
    return null;
  }
}
