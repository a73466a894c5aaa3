// Shared pieces of the browser suite: Chromium (Debian's, driven by playwright-core), joining the demo page as a
// teacher or student, bounded waits, screenshots, and the media node's metrics.
//
// Environment (set by scripts/test-browser.sh):
//   HOMEROOM_EDGE_URL   the edge under test, e.g. http://127.0.0.1:41234 (required)
//   HOMEROOM_MEDIA_URL  the media node's HTTP API (media tests are skipped without it)
//   HOMEROOM_MEDIA_BIN, HOMEROOM_MEDIA_PID, HOMEROOM_NODE_SECRET  for the failover test
//   HOMEROOM_ARTIFACTS  where screenshots go (default target/browser-artifacts)
//   CHROMIUM            the browser binary (default /usr/bin/chromium)

import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

export const EDGE_URL = process.env.HOMEROOM_EDGE_URL ?? '';
export const MEDIA_URL = process.env.HOMEROOM_MEDIA_URL ?? '';
export const ARTIFACTS = process.env.HOMEROOM_ARTIFACTS ?? path.resolve('target/browser-artifacts');

if (!EDGE_URL) {
  throw new Error('HOMEROOM_EDGE_URL is not set: run the browser suite through scripts/test-browser.sh');
}
mkdirSync(ARTIFACTS, { recursive: true });

/** Flags from the machine notes: no network chatter (the sandbox refuses it), no GPU, fake camera/mic. */
const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  // Camera, microphone and getDisplayMedia are granted without prompts and fed by synthetic devices.
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
];

/**
 * Launches Chromium. playwright-core gives every launch a fresh temporary profile (--user-data-dir).
 * @returns {Promise<import('playwright-core').Browser>}
 */
export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: CHROMIUM_FLAGS,
    timeout: 30_000,
  });
}

let roomCounter = 0;
/** A room id no other test uses. */
export function uniqueRoom(prefix) {
  roomCounter += 1;
  return `${prefix}-${Date.now().toString(36)}-${roomCounter}`;
}

/**
 * Polls `probe` until it returns a truthy value (returned), for at most `timeoutMs`. The error names `what`
 * and the last value seen, so a failure says what was expected and what was there.
 * @template T
 * @param {() => Promise<T> | T} probe
 * @param {{timeoutMs?: number, intervalMs?: number, what: string}} options
 * @returns {Promise<T>}
 */
export async function waitFor(probe, { timeoutMs = 15_000, intervalMs = 100, what }) {
  const start = Date.now();
  let last;
  while (Date.now() - start < timeoutMs) {
    last = await probe();
    if (last) return last;
    await sleep(intervalMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last value: ${JSON.stringify(last)}`);
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** One person on the demo page, in their own browser context (own storage = own user). */
export class Participant {
  /**
   * @param {import('playwright-core').BrowserContext} context
   * @param {import('playwright-core').Page} page
   * @param {string} name
   */
  constructor(context, page, name) {
    this.context = context;
    this.page = page;
    this.name = name;
    /** Uncaught exceptions on the page: the suite fails a test that has any. */
    this.pageErrors = [];
    /** The console, for diagnosing failures. */
    this.console = [];
    page.on('pageerror', (error) => this.pageErrors.push(error.message));
    page.on('console', (message) => this.console.push(`${message.type()}: ${message.text()}`));
    // Dialogs (the "clear room?" confirm) are accepted.
    page.on('dialog', (dialog) => dialog.accept());
  }

  /**
   * Opens the page, fills the join form and waits until connected.
   * @param {import('playwright-core').Browser} browser
   * @param {{name: string, room: string, role: 'teacher' | 'student', viewport?: {width: number, height: number}}} who
   */
  static async join(browser, { name, room, role, viewport = { width: 1280, height: 800 } }) {
    const context = await browser.newContext({ viewport });
    const page = await context.newPage();
    const participant = new Participant(context, page, name);
    await page.goto(`${EDGE_URL}/`);
    await page.getByTestId('join-name').fill(name);
    await page.getByTestId('join-room').fill(room);
    await page.getByTestId(`join-role-${role}`).check();
    await page.getByTestId('join-submit').click();
    await participant.waitForStatus('open');
    participant.id = await page.evaluate(() => window.__homeroom.client.userId);
    return participant;
  }

  /** @param {'open' | 'reconnecting' | 'closed' | 'connecting'} status */
  async waitForStatus(status, timeoutMs = 15_000) {
    await this.page
      .locator(`[data-testid="connection-status"][data-status="${status}"]`)
      .waitFor({ state: 'attached', timeout: timeoutMs });
  }

  async sendChat(text) {
    await this.page.getByTestId('chat-input').fill(text);
    await this.page.getByTestId('chat-send').click();
  }

  /** The chat as rendered: [{id, seq, author, text}] (pending messages excluded). */
  messages() {
    return this.page.$$eval('[data-testid="message"]', (items) =>
      items.map((li) => ({
        id: li.dataset.id,
        seq: Number(li.dataset.seq),
        author: li.dataset.author,
        text: li.querySelector('[data-testid="message-text"]').textContent,
      })),
    );
  }

  /** Waits until the rendered chat contains every text of `texts`. */
  async waitForMessages(texts, timeoutMs = 15_000) {
    return waitFor(
      async () => {
        const shown = (await this.messages()).map((m) => m.text);
        return texts.every((t) => shown.includes(t)) ? shown : null;
      },
      { timeoutMs, what: `${this.name} to show messages ${JSON.stringify(texts)}` },
    );
  }

  /** Evaluates `fn(client)` in the page (the HomeroomClient behind the UI). */
  client(fn, arg) {
    return this.page.evaluate(
      // eslint-disable-next-line no-new-func
      ([source, argument]) => new Function('client', 'arg', `return (${source})(client, arg);`)(window.__homeroom.client, argument),
      [fn.toString(), arg],
    );
  }

  /** The participant list item of participant `id`. */
  participantItem(id) {
    return this.page.locator(`[data-testid="participant"][data-id="${id}"]`);
  }

  async screenshot(name) {
    await this.page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`) });
  }

  async close() {
    await this.context.close().catch(() => {});
  }
}

/** Fails with the page errors and the tail of the console of each participant that had uncaught exceptions. */
export function assertNoPageErrors(...participants) {
  const problems = participants
    .filter((p) => p.pageErrors.length)
    .map((p) => `${p.name}: ${p.pageErrors.join(' | ')}\n  console: ${p.console.slice(-10).join('\n  ')}`);
  if (problems.length) throw new Error(`uncaught exceptions on the page:\n${problems.join('\n')}`);
}

/**
 * The media node's metrics (OpenMetrics text) as a map `name{labels}` → value.
 * @param {string} [base]
 */
export async function nodeMetrics(base = MEDIA_URL) {
  const response = await fetch(`${base}/metrics`);
  if (!response.ok) throw new Error(`GET ${base}/metrics answered ${response.status}`);
  const values = new Map();
  for (const line of (await response.text()).split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    values.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return values;
}
