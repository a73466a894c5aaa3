// A tiny typed-event emitter. EventTarget would work in browsers, but this one also runs unchanged in Node
// (for the unit tests) and lets listeners receive plain objects instead of Event wrappers.

/** @template {Record<string, any>} Events */
export class Emitter {
  constructor() {
    /** @type {Map<string, Set<(payload: any) => void>>} */
    this._listeners = new Map();
  }

  /**
   * Subscribes to `type` ("*" receives every event as `{type, payload}`). Returns a function that unsubscribes.
   * @param {string} type
   * @param {(payload: any) => void} listener
   * @returns {() => void}
   */
  on(type, listener) {
    let set = this._listeners.get(type);
    if (!set) {
      set = new Set();
      this._listeners.set(type, set);
    }
    set.add(listener);
    return () => this.off(type, listener);
  }

  /**
   * Like `on`, but the listener runs at most once.
   * @param {string} type
   * @param {(payload: any) => void} listener
   */
  once(type, listener) {
    const off = this.on(type, (payload) => {
      off();
      listener(payload);
    });
    return off;
  }

  /** @param {string} type @param {(payload: any) => void} listener */
  off(type, listener) {
    this._listeners.get(type)?.delete(listener);
  }

  /**
   * Calls every listener of `type`, then the "*" listeners. A throwing listener is reported and does not stop
   * the others: one broken UI handler must not break the connection logic that emits.
   * @param {string} type
   * @param {any} [payload]
   */
  emit(type, payload) {
    for (const listener of [...(this._listeners.get(type) ?? [])]) {
      try {
        listener(payload);
      } catch (error) {
        console.error(`[homeroom] a "${type}" listener threw:`, error);
      }
    }
    if (type === '*') return;
    for (const listener of [...(this._listeners.get('*') ?? [])]) {
      try {
        listener({ type, payload });
      } catch (error) {
        console.error('[homeroom] a "*" listener threw:', error);
      }
    }
  }
}
