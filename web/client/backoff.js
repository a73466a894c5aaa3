// Reconnect delays: exponential, capped, with jitter so that a whole classroom that lost the edge at the same
// moment does not come back in one synchronized wave.

/**
 * @typedef {object} BackoffOptions
 * @property {number} [baseMs]   first delay (attempt 0), default 500
 * @property {number} [maxMs]    cap, default 15000
 * @property {number} [factor]   growth per attempt, default 2
 * @property {number} [jitter]   fraction of the delay that is random, 0..1, default 0.5
 */

export const DEFAULT_BACKOFF = Object.freeze({ baseMs: 500, maxMs: 15_000, factor: 2, jitter: 0.5 });

/**
 * The delay before reconnect attempt `attempt` (0-based): `min(maxMs, baseMs * factor^attempt)`, of which the
 * `jitter` fraction is random. The result lies in `[d * (1 - jitter), d]`.
 * @param {number} attempt
 * @param {BackoffOptions} [options]
 * @param {() => number} [random] a source in [0, 1), injectable for tests
 * @returns {number} milliseconds
 */
export function backoffDelay(attempt, options = {}, random = Math.random) {
  const { baseMs, maxMs, factor, jitter } = { ...DEFAULT_BACKOFF, ...options };
  const exponent = Math.max(0, Math.min(attempt, 30)); // 2^30 overflows nothing but is far past any cap
  const capped = Math.min(maxMs, baseMs * factor ** exponent);
  const spread = Math.min(1, Math.max(0, jitter));
  return Math.round(capped * (1 - spread) + capped * spread * random());
}
