// Real clients a user would point at Petrel: swaks (with STARTTLS and
// pipelining), Postfix's smtp-source (20 parallel sessions), and Python's
// smtplib. Each message must arrive in the local Maildir with its event trail.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startPetrel, waitFor, cleanup } from '../helpers/petrel-harness.js';

const run = promisify(execFile);

function mailbox(dir: string, user: string): string[] {
  const box = join(dir, 'var', 'mail', 'localhost', user, 'new');
  return existsSync(box) ? readdirSync(box).map((f) => readFileSync(join(box, f), 'utf8')) : [];
}

test('swaks with STARTTLS and PIPELINING', async () => {
  const p = await startPetrel();
  try {
    const { stdout } = await run('swaks', ['--server', `127.0.0.1:${p.port}`, '--from', 'alice@example.com', '--to', 'bob@localhost,carol@localhost', '--tls', '--pipeline', '--header', 'Subject: via swaks', '--header', 'Message-Id: <swaks-1@example.com>'], { timeout: 30_000 });
    assert.match(stdout, /<~ +250 2\.0\.0 Ok: queued as [0-9A-Z]{16}/);
    await waitFor(() => mailbox(p.dir, 'bob').length === 1 && mailbox(p.dir, 'carol').length === 1, 10_000, 'delivery');
    const msg = mailbox(p.dir, 'bob')[0]!;
    assert.match(msg, /^Return-Path: <alice@example\.com>\nDelivered-To: bob@localhost\nReceived: from [^\n]+\n\tby petrel\.test \(Petrel\) with ESMTPS id/);
    assert.match(msg, /Subject: via swaks/);
    const delivered = await waitFor(() => {
      const d = p.events().filter((e) => e.event === 'delivered' && e.message_id === '<swaks-1@example.com>');
      return d.length === 2 && d;
    }, 5000, 'delivered events');
    assert.deepEqual(delivered.map((e) => e.recipient).sort(), ['bob@localhost', 'carol@localhost']);
  } finally {
    await p.stop();
    cleanup(p.dir);
  }
});

test("Postfix's smtp-source: 200 messages over 20 sessions, every one delivered once", async () => {
  const p = await startPetrel();
  try {
    await run('smtp-source', ['-s', '20', '-m', '200', '-l', '4096', '-f', 'load@example.com', '-t', 'sink@localhost', `127.0.0.1:${p.port}`], { timeout: 60_000 });
    await waitFor(() => mailbox(p.dir, 'sink').length === 200, 30_000, '200 deliveries');
    const ev = await waitFor(() => {
      const e = p.events();
      return e.filter((x) => x.event === 'delivered').length >= 200 && e;
    }, 5000, 'delivered events');
    assert.equal(ev.filter((e) => e.event === 'received').length, 200);
    assert.equal(ev.filter((e) => e.event === 'delivered').length, 200);
    assert.equal(new Set(ev.filter((e) => e.event === 'delivered').map((e) => e.queue_id)).size, 200);
  } finally {
    await p.stop();
    cleanup(p.dir);
  }
});

test("Python's smtplib (SMTPUTF8 and 8BITMIME)", async () => {
  const p = await startPetrel();
  try {
    const script = `
import smtplib, sys
s = smtplib.SMTP('127.0.0.1', ${p.port}, timeout=20)
s.ehlo('py.test')
assert s.has_extn('smtputf8') and s.has_extn('8bitmime')
msg = 'Subject: caf\\u00e9\\r\\nMessage-ID: <py-1@example.com>\\r\\n\\r\\nna\\u00efve body\\r\\n'.encode('utf-8')
s.sendmail('j\\u00f6rg@example.com', ['dana@localhost'], msg, mail_options=['SMTPUTF8', 'BODY=8BITMIME'])
s.quit()
print('sent')
`;
    const { stdout } = await run('python3', ['-c', script], { timeout: 30_000 });
    assert.match(stdout, /sent/);
    await waitFor(() => mailbox(p.dir, 'dana').length === 1, 10_000, 'delivery');
    const msg = mailbox(p.dir, 'dana')[0]!;
    assert.match(msg, /Return-Path: <jörg@example\.com>/);
    assert.match(msg, /Subject: café/);
    assert.match(msg, /with UTF8SMTP id/);
  } finally {
    await p.stop();
    cleanup(p.dir);
  }
});
