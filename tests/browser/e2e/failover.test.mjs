// Media failover: the node carrying a room dies; the edge's lease runs out, the room sends `media.moved`, and
// both pages join again through the surviving node and see each other's video again.
//
// This test starts a second media node itself and kills whichever node the room landed on (the one the suite
// script started, or its own), so it runs last. Needs HOMEROOM_MEDIA_BIN, HOMEROOM_MEDIA_PID and
// HOMEROOM_NODE_SECRET (set by scripts/test-browser.sh, which also shortens the edge's lease to 3 s).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { ARTIFACTS, assertNoPageErrors, EDGE_URL, launchBrowser, MEDIA_URL, Participant, uniqueRoom, waitFor } from './harness.mjs';

const { HOMEROOM_MEDIA_BIN: BIN, HOMEROOM_MEDIA_PID: FIRST_PID, HOMEROOM_NODE_SECRET: SECRET } = process.env;
const skip = MEDIA_URL && BIN && FIRST_PID && SECRET ? false : 'needs a media node started by scripts/test-browser.sh';

/** @type {import('playwright-core').Browser} */
let browser;
/** @type {import('node:child_process').ChildProcess | null} */
let second = null;

/** Starts a second node registered with the edge; resolves with its URL once the edge accepted a heartbeat. */
function startSecondNode() {
  return new Promise((resolve, reject) => {
    const log = createWriteStream(path.join(ARTIFACTS, 'failover-node-2.log'));
    const child = spawn(
      BIN,
      [
        '--http-addr', '127.0.0.1:0',
        '--udp-addr', '127.0.0.1:0',
        '--node-id', 'browser-media-2',
        '--region', 'local',
        '--edge-url', EDGE_URL,
        '--heartbeat-ms', '1000',
        '--idle-timeout-secs', '5',
        '--log', 'info,homeroom_media_node::heartbeat=debug',
      ],
      { env: { ...process.env, NODE_SECRET: SECRET }, stdio: ['ignore', 'pipe', 'pipe'], detached: true },
    );
    second = child;
    let url = null;
    const timer = setTimeout(() => reject(new Error('the second media node did not register within 20 s; see failover-node-2.log')), 20_000);
    child.stdout.on('data', (chunk) => {
      log.write(chunk);
      const match = /listening http=(\S+)/.exec(String(chunk));
      if (match) url = `http://${match[1]}`;
    });
    child.stderr.on('data', (chunk) => {
      log.write(chunk);
      if (url && String(chunk).includes('heartbeat accepted')) {
        clearTimeout(timer);
        resolve(url);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (!url) reject(new Error(`the second media node exited (${code}) before listening; see failover-node-2.log`));
    });
  });
}

function killGroup(pid) {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

before(async () => {
  if (skip) return;
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  if (second?.pid) killGroup(second.pid);
});

test('when the media node dies, both pages move to another node and see each other again', { skip, timeout: 150_000 }, async () => {
  const secondUrl = await startSecondNode();
  const room = uniqueRoom('failover');
  const teacher = await Participant.join(browser, { name: 'Fay Teacher', room, role: 'teacher' });
  const student = await Participant.join(browser, { name: 'Gus Student', room, role: 'student' });
  try {
    for (const p of [teacher, student]) {
      await p.page.evaluate(() => {
        window.__moved = 0;
        window.__homeroom.client.on('media.moved', () => {
          window.__moved += 1;
        });
      });
      await p.page.getByTestId('media-join').click();
      await p.page.locator('[data-testid="media-status"][data-status="connected"]').waitFor({ state: 'attached', timeout: 30_000 });
    }
    const nodeUrl = () => teacher.page.evaluate(() => window.__homeroom.client.media.session?.url ?? null);
    const decodes = (viewer, publisher) =>
      waitFor(
        () =>
          viewer.page.evaluate(async (id) => {
            const rows = await window.__homeroom.client.media.inboundStats();
            return rows.some((r) => r.participant === id && r.kind === 'video' && r.framesDecoded > 5);
          }, publisher.id),
        { timeoutMs: 30_000, what: `${viewer.name} to decode ${publisher.name}'s video` },
      );
    await decodes(teacher, student);
    await decodes(student, teacher);

    const first = await nodeUrl();
    const survivor = first === secondUrl ? MEDIA_URL : secondUrl;
    console.log(`# the room is on ${first}; killing it, expecting a move to ${survivor}`);
    const started = Date.now();
    if (first === secondUrl) killGroup(second.pid);
    else killGroup(Number(FIRST_PID));

    for (const p of [teacher, student]) {
      await waitFor(
        () => p.page.evaluate(() => window.__homeroom.client.media.status === 'connected' && window.__homeroom.client.media.session?.url),
        { timeoutMs: 60_000, intervalMs: 250, what: `${p.name} to reconnect media` },
      ).then(async (url) => {
        if (url !== survivor) {
          // The first rejoin may race the lease: wait for the move to the survivor.
          await waitFor(
            () => p.page.evaluate((want) => window.__homeroom.client.media.session?.url === want && window.__homeroom.client.media.status === 'connected', survivor),
            { timeoutMs: 60_000, intervalMs: 250, what: `${p.name} to land on ${survivor}` },
          );
        }
      });
    }
    await decodes(teacher, student);
    await decodes(student, teacher);
    const moved = await teacher.page.evaluate(() => window.__moved);
    console.log(`# media back after ${((Date.now() - started) / 1000).toFixed(1)} s; media.moved seen by the teacher: ${moved}`);
    assert.ok(moved >= 1, 'the room told the page that its media moved');
    await teacher.screenshot('30-after-failover-teacher');
    assertNoPageErrors(teacher, student);
  } finally {
    await teacher.close();
    await student.close();
  }
});
