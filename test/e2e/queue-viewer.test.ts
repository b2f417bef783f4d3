// The web queue viewer in a real browser (Debian's chromium driven by
// playwright-core): log in with the token (session cookie HttpOnly,
// SameSite=Strict), see mail to a dead destination in the queue, open the
// message and its timeline, retry with a click (confirmation dialog, reason
// in the event log), make the destination live, retry again, and watch the
// message delivered — without reloading: the page follows the server-sent
// event stream (no polling), and catches up after the stream is cut.
// PETREL_SCREENSHOT=docs/queue-viewer.png
// saves the screenshot kept in docs/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { startPetrel, tempDir, cleanup, waitFor, ROOT } from '../helpers/petrel-harness.js';
import { SmtpTalk } from '../helpers/smtp-talk.js';
import { DirectoryStandIn } from '../helpers/test-agents.js';

const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

async function confirmWith(page: Page, reason: string): Promise<void> {
  await page.waitForSelector('#confirm[open]');
  await page.fill('#confirm-reason', reason);
  await page.click('#confirm-ok');
}

test('queue viewer: log in, find the stuck message, retry it with a click, see it delivered', async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is needed (apt-get install chromium; .ci/run installs it)`);
  const dir = tempDir();
  const share = join(dir, 'share');
  const agent = new DirectoryStandIn();
  const p = await startPetrel(
    `[queue]\nretry_intervals = ["1h"]\n[[routes]]\ndomain = "dead.example"\nvia = "directory:${share}"\n[admin]\nlisten = "127.0.0.1:0"\ntoken = "viewer-token"\n`,
    { agents: { directory: agent } },
    dir,
  );
  let context: BrowserContext | null = null;
  try {
    const base = `http://127.0.0.1:${p.petrel.admin!.bound!.port}`;
    const t = await SmtpTalk.open(p.port);
    await t.read();
    await t.cmd('EHLO client.test');
    const r = await t.send('alice@example.com', ['bob@dead.example', 'carol@dead.example'], 'Subject: quarterly report\r\nMessage-ID: <viewer-1@client.test>\r\n\r\nnumbers\r\n');
    await t.cmd('QUIT');
    t.close();
    assert.equal(r.code, 250);
    const qid = /queued as (\S+)/.exec(r.lines.join(' '))![1]!;
    await waitFor(async () => (await p.petrel.store.getRecipients(qid)).every((x) => x.state === 'deferred'), 10_000, 'deferred');

    context = await chromium.launchPersistentContext(tempDir('petrel-chromium-'), { executablePath: CHROMIUM, args: ARGS, headless: true, viewport: { width: 1280, height: 900 } });
    const page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(15_000);

    // Login: the viewer needs the token; the form sets an HttpOnly, SameSite=Strict session cookie.
    await page.goto(`${base}/`);
    assert.match(page.url(), /\/login$/);
    await page.fill('input[name=token]', 'wrong');
    await page.click('button[type=submit]');
    await page.waitForSelector('text=That token is not right.');
    await page.fill('input[name=token]', 'viewer-token');
    await page.click('button[type=submit]');
    await page.waitForSelector('#queues');
    const cookie = (await context.cookies()).find((c) => c.name === 'petrel_session');
    assert.ok(cookie, 'session cookie set');
    assert.equal(cookie.httpOnly, true);
    assert.equal(cookie.sameSite, 'Strict');

    // The queues page: the dead destination with its two recipients and last error.
    const row = page.locator('tr[data-destination="dead.example"]');
    assert.equal(await row.locator('[data-col=recipients]').innerText(), '2');
    assert.match(await row.innerText(), /does not exist/);
    assert.match(await page.locator('#totals').innerText(), /2 recipient\(s\) in 1 message\(s\)/);

    // Live without polling: the page holds an event stream and asks for nothing while nothing happens.
    await page.waitForSelector('#live[data-state=on]');
    await new Promise((r) => setTimeout(r, 6500)); // the redraws that follow the stream's opening (the last 6 s after)
    const asked: string[] = [];
    page.on('request', (q) => asked.push(new URL(q.url()).pathname));
    await new Promise((r) => setTimeout(r, 3500));
    assert.equal(asked.length, 0, `no request in 3.5 s of quiet (the old viewer polled every 3 s): ${asked.join(' ')}`);
    // A new message moves the counts, without a reload.
    const t2 = await SmtpTalk.open(p.port);
    await t2.read();
    await t2.cmd('EHLO client.test');
    const r2 = await t2.send('alice@example.com', ['dave@dead.example'], 'Subject: another\r\n\r\nmore\r\n');
    await t2.cmd('QUIT');
    t2.close();
    const qid2 = /queued as (\S+)/.exec(r2.lines.join(' '))![1]!;
    await waitFor(async () => (await row.locator('[data-col=recipients]').innerText()) === '3', 10_000, 'the count moved to 3');
    // The stream is cut (as a network drop would); the message is removed meanwhile; the page catches up.
    p.petrel.admin!.stream.disconnectAll();
    await p.petrel.actions.remove(qid2, { who: 'test', reason: 'not needed' }, false);
    await waitFor(async () => (await row.locator('[data-col=recipients]').innerText()) === '2', 10_000, 'the count back to 2 after the reconnect');
    await page.waitForSelector('#live[data-state=on]');
    assert.ok(asked.includes('/api/events/stream'), 'the stream was opened again');
    assert.ok(!asked.includes('/'), 'never reloaded');

    // Into the message list for the destination, then the message.
    await row.locator('a').first().click();
    await page.waitForSelector(`tr[data-queue-id="${qid}"]`);
    await page.click(`a[href="#/message/${qid}"]`);
    await page.waitForSelector('#timeline-svg');
    assert.equal(await page.locator('#timeline-svg circle[data-event=deferred]').count(), 2);

    // Retry while the destination is still dead: a second counted attempt, drawn on the timeline.
    const attempts = agent.attempts;
    await page.click('button[data-action=retry]');
    await confirmWith(page, 'checking the share');
    await waitFor(() => agent.attempts > attempts, 10_000, 'second attempt');
    // (Polled from here: the page's CSP rightly forbids the eval that waitForFunction would need.)
    await waitFor(async () => (await page.locator('#timeline-svg circle[data-event=deferred]').count()) === 4, 10_000, 'four deferred dots');

    // Cancelling a confirmation does nothing.
    await page.click('button[data-action=delete-silent]');
    await page.waitForSelector('#confirm[open]');
    await page.click('#confirm-cancel');
    assert.ok(await p.petrel.store.getMessage(qid), 'cancel kept the message');

    // Make the destination live, retry with a click, and see the message delivered without reloading.
    mkdirSync(share);
    await page.click('button[data-action=retry]');
    await confirmWith(page, 'share is back');
    await page.waitForSelector('#finished', { timeout: 15_000 });
    const states = await page.locator('#recipients .rstate').allInnerTexts();
    assert.deepEqual(states, ['delivered', 'delivered']);
    assert.ok(existsSync(join(share, `${qid}.eml`)));
    assert.equal(await page.locator('#timeline-svg circle[data-event=delivered]').count(), 2);

    // The operator's reason is on the record.
    const ev = await p.petrel.store.eventsOf(qid, 0, 100);
    assert.ok(ev.some((e) => e.event === 'retry_requested' && /by web viewer: share is back/.test(e.detail ?? '')));

    // The live counts went to zero without a reload.
    await waitFor(async () => /^0 recipient\(s\) in 0 message\(s\)/.test(await page.locator('#totals').innerText()), 10_000, 'live totals at zero');

    const shot = process.env.PETREL_SCREENSHOT ? join(ROOT, process.env.PETREL_SCREENSHOT) : join(dir, 'viewer.png');
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok(statSync(shot).size > 10_000, 'a real screenshot');

    // Event search finds the message by its Message-ID.
    await page.goto(`${base}/#/events?message_id=viewer-1@client.test`);
    await page.waitForSelector(`a[href="#/message/${qid}"]`);
  } finally {
    await context?.close();
    await p.stop();
    cleanup(dir);
  }
});
