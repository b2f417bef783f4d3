// The directory connector end to end (seed 003: a connector that never
// counted a retry while its share was unreachable, so senders never got a
// report). A missing share is a counted, deferred attempt every time; at
// max_lifetime the sender gets the 4.4.7 expiry report; a share that appears
// half-way gets the message, with no report; the file is checked byte for
// byte; one file per message, never two.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SmtpTalk, replyLine } from '../helpers/smtp-talk.js';
import { cleanup, startPetrel, tempDir, waitFor, type InProcess } from '../helpers/petrel-harness.js';
import { tmpfsOrSkip } from '../helpers/mounts.js';
import type { MailEvent } from '../../src/log/events.js';

function config(share: string, lifetime = '3s'): string {
  return `[queue]
retry_intervals = ["200ms"]
max_lifetime = "${lifetime}"
delay_warning = "1h"
[local]
domains = ["localhost"]
[[routes]]
domain = "legacy.example"
via = "directory:${share}"
`;
}

async function send(port: number, rcpts: string[], message: string): Promise<string> {
  const t = await SmtpTalk.open(port);
  await t.read();
  await t.cmd('EHLO client.test');
  const r = await t.send('alice@localhost', rcpts, message);
  t.close();
  const line = replyLine(r);
  const m = /queued as ([0-9A-Z]{16})/.exec(line);
  assert.ok(m, line);
  return m[1]!;
}

const of = (events: MailEvent[], qid: string, event: string, recipient?: string): MailEvent[] =>
  events.filter((e) => e.queue_id === qid && e.event === event && (recipient === undefined || e.recipient === recipient));

async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream as AsyncIterable<Buffer>) parts.push(c);
  return Buffer.concat(parts);
}

function mailbox(p: InProcess, user: string): string[] {
  const d = join(p.dir, 'var', 'mail', 'localhost', user, 'new');
  return existsSync(d) ? readdirSync(d).map((f) => readFileSync(join(d, f), 'utf8')) : [];
}

test('share missing for the whole lifetime: every attempt counted, then expired 4.4.7 and one report', async () => {
  const dir = tempDir();
  const share = join(dir, 'share');
  const p = await startPetrel(config(share), {}, dir);
  try {
    const qid = await send(p.port, ['bob@legacy.example', 'carol@legacy.example'], 'Subject: never\r\n\r\nnobody home\r\n');
    const events = await waitFor(() => {
      const ev = p.events();
      return of(ev, qid, 'expired').length === 2 && of(ev, qid, 'dsn_queued').length >= 1 ? ev : null;
    }, 15_000, 'both recipients to expire and the report to be queued');
    for (const rcpt of ['bob@legacy.example', 'carol@legacy.example']) {
      const deferred = of(events, qid, 'deferred', rcpt);
      // 3 s of 200 ms retries: many attempts, numbered 1, 2, 3, ... with none skipped.
      assert.ok(deferred.length >= 5, `${rcpt}: only ${deferred.length} deferred attempts`);
      assert.deepEqual(deferred.map((e) => e.attempt), deferred.map((_, i) => i + 1));
      for (const e of deferred) {
        assert.equal(e.status, '4.3.0');
        assert.match(e.error!, /does not exist .*Petrel never creates it/);
        assert.equal(e.remote, `directory ${share}`);
      }
      const expired = of(events, qid, 'expired', rcpt);
      assert.equal(expired.length, 1);
      assert.equal(expired[0]!.status, '4.4.7');
      assert.equal(expired[0]!.attempt, deferred.length + 1, 'the expiring attempt counts too');
      assert.match(expired[0]!.detail!, /queue lifetime exceeded; last error: 4\.3\.0 .*does not exist/);
    }
    // Both recipients were always in one job (one jitter per job): the same attempts.
    assert.equal(of(events, qid, 'deferred', 'bob@legacy.example').length, of(events, qid, 'deferred', 'carol@legacy.example').length);
    assert.equal(of(events, qid, 'dsn_queued').length, 1, 'one report for both recipients');
    assert.match(of(events, qid, 'dsn_queued')[0]!.detail!, /expired report .* to <alice@localhost> about 2 recipient/);
    assert.equal(existsSync(share), false, 'Petrel never creates the share');
    // The report reaches the sender (a local mailbox) and says 4.4.7 for each recipient.
    const reports = await waitFor(() => {
      const r = mailbox(p, 'alice').filter((m) => m.includes('message/delivery-status'));
      return r.length ? r : null;
    }, 10_000, 'the report in alice\'s mailbox');
    assert.equal(reports.length, 1);
    const report = reports[0]!;
    for (const rcpt of ['bob@legacy.example', 'carol@legacy.example']) {
      assert.match(report, new RegExp(`Final-Recipient: rfc822; ${rcpt.replace('.', '\\.')}\\nAction: failed\\nStatus: 4\\.4\\.7\\n`));
    }
    assert.match(report, /Diagnostic-Code: X-Petrel; .*does not exist/);
  } finally {
    await p.stop();
    cleanup(dir);
  }
});

test('share appears half-way: delivered in one file for both recipients, no report', async () => {
  const dir = tempDir();
  const share = join(dir, 'share');
  const p = await startPetrel(config(share, '20s'), {}, dir);
  try {
    const qid = await send(p.port, ['bob@legacy.example', 'carol@legacy.example'], 'Subject: later\r\n\r\nwait for it\r\n');
    await waitFor(() => of(p.events(), qid, 'deferred', 'carol@legacy.example').length >= 3, 10_000, 'three deferred attempts');
    mkdirSync(share);
    const events = await waitFor(() => {
      const ev = p.events();
      return of(ev, qid, 'delivered').length === 2 ? ev : null;
    }, 10_000, 'delivery once the share exists');
    const attempts = of(events, qid, 'deferred', 'bob@legacy.example').length;
    for (const d of of(events, qid, 'delivered')) {
      assert.equal(d.attempt, attempts + 1);
      assert.equal(d.reply, `written to ${join(share, `${qid}.eml`)}`);
    }
    assert.deepEqual(readdirSync(share), [`${qid}.eml`], 'one file, no temporary files left');
    const file = readFileSync(join(share, `${qid}.eml`), 'utf8');
    assert.match(file, /^X-Petrel-Envelope-Queue-Id: .*\r\nX-Petrel-Envelope-Received: .*\r\nX-Petrel-Envelope-Sender: <alice@localhost>\r\nX-Petrel-Envelope-Recipient: <bob@legacy\.example>\r\nX-Petrel-Envelope-Recipient: <carol@legacy\.example>\r\nReceived: /);
    await new Promise((r) => setTimeout(r, 500));
    const after = p.events();
    assert.equal(of(after, qid, 'dsn_queued').length, 0, 'no report');
    assert.equal(of(after, qid, 'expired').length + of(after, qid, 'failed').length, 0);
  } finally {
    await p.stop();
    cleanup(dir);
  }
});

test('the file, byte for byte: envelope block, then the message exactly as stored', async () => {
  const dir = tempDir();
  const share = join(dir, 'share');
  const p = await startPetrel(config(share, '20s'), {}, dir);
  try {
    const original = 'From: Alice <alice@localhost>\r\nTo: Bob <bob@legacy.example>\r\nSubject: format\r\nMessage-ID: <fmt-1@client.test>\r\n\r\nline one\r\n.leading dot\r\n\r\nlast line\r\n';
    const qid = await send(p.port, ['bob@legacy.example', 'dave@legacy.example'], original);
    // Hold delivery (no share yet) to read what the queue stored.
    await waitFor(() => of(p.events(), qid, 'deferred').length >= 1, 10_000, 'a first deferred attempt');
    const m = (await p.petrel.store.getMessage(qid))!;
    const stored = await readAll(await p.petrel.store.readBody(qid));
    // What the queue stored is the message with Petrel's Received: in front.
    const received = /^Received: from client\.test \(\[127\.0\.0\.1\]\)\r\n\tby petrel\.test \(Petrel\) with ESMTP id [0-9A-Z]{16};\r\n\t[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d \+0000\r\n/.exec(stored.toString('utf8'));
    assert.ok(received, stored.toString('utf8').slice(0, 300));
    assert.equal(stored.subarray(received[0].length).toString('utf8'), original);
    mkdirSync(share);
    await waitFor(() => of(p.events(), qid, 'delivered').length === 2, 10_000, 'delivery');
    const expected = Buffer.concat([
      Buffer.from(
        `X-Petrel-Envelope-Queue-Id: ${qid}\r\n` +
          `X-Petrel-Envelope-Received: ${new Date(m.receivedAt).toUTCString().replace(/GMT$/, '+0000')}\r\n` +
          'X-Petrel-Envelope-Sender: <alice@localhost>\r\n' +
          'X-Petrel-Envelope-Recipient: <bob@legacy.example>\r\n' +
          'X-Petrel-Envelope-Recipient: <dave@legacy.example>\r\n',
      ),
      stored,
    ]);
    assert.deepEqual(readFileSync(join(share, `${qid}.eml`)), expected);
  } finally {
    await p.stop();
    cleanup(dir);
  }
});

test('a read-only share (a real mount) defers every attempt; made writable, it gets the message', async (t) => {
  const dir = tempDir();
  const share = join(dir, 'share');
  const mount = tmpfsOrSkip(t, dir, 'share', '1m');
  if (!mount) return;
  let p: InProcess | null = null;
  try {
    mount.remount('ro');
    p = await startPetrel(config(share, '20s').replace('delay_warning = "1h"', 'delay_warning = "1h"\n[delivery]\ndirectory_require_mount = true'), {}, dir);
    const qid = await send(p.port, ['bob@legacy.example'], 'Subject: ro\r\n\r\nread-only\r\n');
    const deferred = await waitFor(() => {
      const d = of(p!.events(), qid, 'deferred');
      return d.length >= 3 ? d : null;
    }, 10_000, 'deferred attempts on the read-only share');
    assert.deepEqual(deferred.map((e) => e.attempt), deferred.map((_, i) => i + 1));
    assert.match(deferred[0]!.error!, /cannot write to .*: EROFS/);
    mount.remount('rw');
    await waitFor(() => of(p!.events(), qid, 'delivered').length === 1, 10_000, 'delivery after remount rw');
    assert.deepEqual(readdirSync(share), [`${qid}.eml`]);
  } finally {
    await p?.stop();
    mount.unmount();
    cleanup(dir);
  }
});
