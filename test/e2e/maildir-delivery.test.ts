// Local delivery to Maildir end to end: Return-Path and Delivered-To, LF line
// ends, spec file names, nothing left in tmp/; a full disk, a quota, a
// read-only file system or a name collision is a deferral that is retried
// and then delivered, never a loss (injected faults, and real tmpfs mounts
// where mounting is permitted); addresses that would name a path outside
// the Maildir root are refused or failed and never touch the file system.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SmtpTalk, replyLine } from '../helpers/smtp-talk.js';
import { cleanup, startPetrel, tempDir, waitFor, type InProcess } from '../helpers/petrel-harness.js';
import { tmpfsOrSkip } from '../helpers/mounts.js';
import type { MaildirAgent } from '../../src/delivery/maildir.js';
import type { MailEvent } from '../../src/log/events.js';

const CONFIG = `[queue]
retry_intervals = ["200ms"]
max_lifetime = "30s"
delay_warning = "1h"
[local]
domains = ["localhost"]
`;

async function send(port: number, rcpts: string[], message: string, from = 'sender@example.com'): Promise<string> {
  const t = await SmtpTalk.open(port);
  await t.read();
  await t.cmd('EHLO client.test');
  const r = await t.send(from, rcpts, message);
  t.close();
  const m = /queued as ([0-9A-Z]{16})/.exec(replyLine(r));
  assert.ok(m, replyLine(r));
  return m[1]!;
}

const of = (events: MailEvent[], qid: string, event: string): MailEvent[] => events.filter((e) => e.queue_id === qid && e.event === event);

function files(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir) : [];
}

test('delivered with Return-Path and Delivered-To, LF line ends, a spec file name, tmp/ empty', async () => {
  const p = await startPetrel(CONFIG);
  try {
    const qid = await send(p.port, ['Bob@localhost', 'carol@localhost'], 'Subject: hi\r\n\r\nline 1\r\n.dot\r\n');
    await waitFor(() => of(p.events(), qid, 'delivered').length === 2, 10_000, 'two deliveries');
    for (const user of ['bob', 'carol']) {
      const box = join(p.dir, 'var', 'mail', 'localhost', user);
      assert.deepEqual(readdirSync(box).sort(), ['cur', 'new', 'tmp']);
      assert.deepEqual(files(join(box, 'tmp')), []);
      const names = files(join(box, 'new'));
      assert.equal(names.length, 1);
      assert.match(names[0]!, /^\d+\.M\d+P\d+Q\d+R[0-9a-f]{8}\.[^/:]+$/);
      const text = readFileSync(join(box, 'new', names[0]!), 'utf8');
      const rcpt = user === 'bob' ? 'Bob@localhost' : 'carol@localhost';
      assert.match(text, new RegExp(`^Return-Path: <sender@example\\.com>\\nDelivered-To: ${rcpt}\\nReceived: from client\\.test`));
      assert.ok(!text.includes('\r'), 'LF line ends');
      assert.match(text, /\nSubject: hi\n(?:.*\n)*\nline 1\n\.dot\n$/);
    }
  } finally {
    await p.stop();
    cleanup(p.dir);
  }
});

test('disk full, quota, permission, a failed fsync: deferred (counted), retried, delivered once, nothing lost', async () => {
  const p = await startPetrel(CONFIG);
  try {
    const agent = p.petrel.agents.maildir as MaildirAgent;
    const faults: Array<[string, string, string]> = [
      ['write', 'ENOSPC', '4.3.1'],
      ['write', 'EDQUOT', '4.2.2'],
      ['open', 'EACCES', '4.3.0'],
      ['mkdir', 'EROFS', '4.3.0'],
      ['fsync', 'EIO', '4.3.0'],
    ];
    for (const [step, code, status] of faults) {
      let failures = 0;
      agent.fault = (s) => {
        if (s === step && failures < 2) {
          failures++;
          throw Object.assign(new Error(`${code}: injected`), { code });
        }
      };
      const user = `u-${code.toLowerCase()}`;
      const qid = await send(p.port, [`${user}@localhost`], `Subject: ${code}\r\n\r\nbody\r\n`);
      const events = await waitFor(() => {
        const ev = p.events();
        return of(ev, qid, 'delivered').length === 1 ? ev : null;
      }, 10_000, `delivery after ${code}`);
      const deferred = of(events, qid, 'deferred');
      assert.deepEqual(deferred.map((e) => [e.attempt, e.status]), [[1, status], [2, status]], code);
      assert.match(deferred[0]!.error!, new RegExp(`cannot write to maildir .*${user}: ${code}`));
      assert.equal(of(events, qid, 'delivered')[0]!.attempt, 3);
      const box = join(p.dir, 'var', 'mail', 'localhost', user);
      assert.equal(files(join(box, 'new')).length, 1, `${code}: exactly one copy`);
      assert.deepEqual(files(join(box, 'tmp')), [], `${code}: no half-written file`);
    }
  } finally {
    await p.stop();
    cleanup(p.dir);
  }
});

test('a name already taken in new/ is never overwritten: another name is used', async () => {
  const p = await startPetrel(CONFIG);
  try {
    const agent = p.petrel.agents.maildir as MaildirAgent;
    const box = join(p.dir, 'var', 'mail', 'localhost', 'dora');
    mkdirSync(join(box, 'new'), { recursive: true });
    let taken = '';
    agent.fault = (s, path) => {
      if (s === 'link' && !taken) {
        // Someone else's message arrives under exactly the name we are about to use.
        taken = path;
        writeFileSync(path, 'Subject: the other message\n\n');
      }
    };
    const qid = await send(p.port, ['dora@localhost'], 'Subject: mine\r\n\r\nbody\r\n');
    await waitFor(() => of(p.events(), qid, 'delivered').length === 1, 10_000, 'delivery');
    const names = files(join(box, 'new'));
    assert.equal(names.length, 2);
    assert.equal(readFileSync(taken, 'utf8'), 'Subject: the other message\n\n', 'the existing file is untouched');
    const mine = names.map((n) => join(box, 'new', n)).find((f) => f !== taken)!;
    assert.match(readFileSync(mine, 'utf8'), /Subject: mine/);
  } finally {
    await p.stop();
    cleanup(p.dir);
  }
});

test('a real full disk (tiny tmpfs) and a real read-only file system: deferred, then delivered when space returns', async (t) => {
  const dir = tempDir();
  const mail = join(dir, 'mail');
  const mount = tmpfsOrSkip(t, dir, 'mail', '64k');
  if (!mount) return;
  let p: InProcess | null = null;
  try {
    p = await startPetrel(CONFIG.replace('[local]', `[local]\nmaildir = "${mail}"`), {}, dir);
    const big = 'Subject: big\r\n\r\n' + 'x'.repeat(76).concat('\r\n').repeat(3000);
    const qid = await send(p.port, ['erin@localhost'], big);
    const deferred = await waitFor(() => {
      const d = of(p!.events(), qid, 'deferred');
      return d.length >= 2 ? d : null;
    }, 10_000, 'deferrals on the full disk');
    assert.equal(deferred[0]!.status, '4.3.1');
    assert.match(deferred[0]!.error!, /ENOSPC/);
    assert.deepEqual(files(join(mail, 'localhost', 'erin', 'tmp')), [], 'the partial file is removed');
    assert.deepEqual(files(join(mail, 'localhost', 'erin', 'new')), []);
    mount.remount('size=4m');
    await waitFor(() => of(p!.events(), qid, 'delivered').length === 1, 10_000, 'delivery with space');
    assert.equal(files(join(mail, 'localhost', 'erin', 'new')).length, 1);
    // Read-only: every attempt deferred with EROFS until it is writable again.
    mount.remount('ro');
    const qid2 = await send(p.port, ['frank@localhost'], 'Subject: ro\r\n\r\nbody\r\n');
    const ro = await waitFor(() => {
      const d = of(p!.events(), qid2, 'deferred');
      return d.length >= 2 ? d : null;
    }, 10_000, 'deferrals on the read-only file system');
    assert.match(ro[0]!.error!, /EROFS/);
    mount.remount('rw');
    await waitFor(() => of(p!.events(), qid2, 'delivered').length === 1, 10_000, 'delivery after remount rw');
  } finally {
    await p?.stop();
    mount.unmount();
    cleanup(dir);
  }
});

test('path traversal: refused at RCPT over SMTP; failed 5.1.3 from pickup; nothing outside the root', async () => {
  const p = await startPetrel(CONFIG);
  try {
    const t = await SmtpTalk.open(p.port);
    await t.read();
    await t.cmd('EHLO client.test');
    await t.cmd('MAIL FROM:<a@example.com>');
    for (const rcpt of ['"../../escaped"@localhost', '".hidden"@localhost', '"a/b"@localhost', '"..\\\\x"@localhost']) {
      assert.match(replyLine(await t.cmd(`RCPT TO:<${rcpt}>`)), /^550 5\.1\.1 /, rcpt);
    }
    t.close();
    // Pickup has no RCPT to refuse at: the recipient fails with 5.1.3 and the sender gets a report.
    writeFileSync(join(p.dir, 'var', 'pickup', 'evil'), 'From: sender@localhost\nTo: "../../escaped"@localhost\nSubject: evil\n\nx\n');
    const failed = await waitFor(() => p.events().find((e) => e.event === 'failed'), 10_000, 'the failure');
    assert.equal(failed.status, '5.1.3');
    assert.match(failed.error!, /does not name a valid mailbox/);
    await waitFor(() => files(join(p.dir, 'var', 'mail', 'localhost', 'sender', 'new')).length === 1, 10_000, 'the report to the sender');
    assert.deepEqual(readdirSync(join(p.dir, 'var')).sort(), ['log', 'mail', 'pickup', 'queue', 'spool', 'tls'].filter((d) => existsSync(join(p.dir, 'var', d))).sort());
    assert.equal(existsSync(join(p.dir, 'escaped')), false);
    assert.equal(existsSync(join(p.dir, 'var', 'escaped')), false);
    assert.deepEqual(readdirSync(join(p.dir, 'var', 'mail', 'localhost')), ['sender']);
  } finally {
    await p.stop();
    cleanup(p.dir);
  }
});
