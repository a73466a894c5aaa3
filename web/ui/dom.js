// DOM helpers for the demo page. User-provided text only ever goes through text nodes (never innerHTML).

/**
 * Creates an element. `props`: `class`, `text`, `dataset` ({testid: 'x'} → data-testid="x"), `on` ({click: fn}),
 * any other key is set as an attribute (false/null/undefined skip it, true sets it empty).
 * @param {string} tag
 * @param {Record<string, any>} [props]
 * @param {...(Node | string | null | undefined | false)} children
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key === 'dataset') for (const [k, v] of Object.entries(value)) el.dataset[k] = String(v);
    else if (key === 'on') for (const [event, fn] of Object.entries(value)) el.addEventListener(event, fn);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** The element with `data-testid` = `id` (the page uses test ids as its stable hooks too). */
export function byTestId(id, root = document) {
  return root.querySelector(`[data-testid="${id}"]`);
}

/** "14:05" */
export function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

/** Initials for an avatar: "Ada Lovelace" → "AL". */
export function initials(name) {
  const parts = String(name).trim().split(/\s+/).filter(Boolean);
  return (parts.length > 1 ? parts[0][0] + parts[parts.length - 1][0] : (parts[0] ?? '?')[0]).toUpperCase();
}

/** A stable hue (0–359) for a participant id, for avatar colours. */
export function hue(id) {
  let n = 0;
  for (const ch of String(id)) n = (n * 31 + ch.codePointAt(0)) % 360;
  return n;
}

/** Runs `fn` once per animation-free microtask burst: many state events → one render. */
export function batched(fn) {
  let scheduled = false;
  return () => {
    if (scheduled) return;
    scheduled = true;
    queueMicrotask(() => {
      scheduled = false;
      fn();
    });
  };
}

export const ROLE_RANK = { student: 0, teacher: 1, admin: 2 };
