// The submission listener (RFC 6409, RFC 4954): AUTH only after STARTTLS,
// MAIL refused until authenticated, relay allowed once authenticated, failed
// logins slowed per client address (across sessions), counted in /metrics,
// and the session closed after three, Date:/Message-ID: added,
// and `petrel passwd` writing scrypt hashes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SmtpTalk, replyLine } from '../helpers/smtp-talk.js';
import { startPetrel, waitFor, cleanup, tempDir, BIN, type InProcess } from '../helpers/petrel-harness.js';
import { startPeer } from '../helpers/test-peer.js';
import { setUser, verifyPassword } from '../../src/inbound/submission-users.js';

async function setup(): Promise<{ p: InProcess; sub: number; sink: Awaited<ReturnType<typeof startPeer>> }> {
  const dir = tempDir();
  await setUser(join(dir, 'users'), 'alice', 'correct horse battery');
  const sink = await startPeer();
  const p = await startPetrel(
    `[smtp]\nlisten = ["127.0.0.1:0"]\nsubmission_listen = ["127.0.0.1:0"]\nusers_file = "users"\nrelay_networks = []\n[delivery]\nsmarthost = "127.0.0.1:${sink.port}"\n`,
    {},
    dir,
  );
  const sub = p.petrel.inbound!.bound.find((b) => b.kind === 'submission')!.port;
  return { p, sub, sink };
}

const plain = (user: string, pw: string): string => Buffer.from(`\u0000${user}\u0000${pw}`).toString('base64');

test('AUTH is offered only after STARTTLS; MAIL needs authentication; then relaying works', async () => {
  const { p, sub, sink } = await setup();
  try {
    const t = await SmtpTalk.open(sub);
    await t.read();
    let ehlo = await t.cmd('EHLO client.test');
    assert.ok(!ehlo.lines.some((l) => l.startsWith('AUTH')), 'no AUTH before TLS');
    assert.match(replyLine(await t.cmd('MAIL FROM:<alice@example.com>')), /^530 5\.7\.0 /);
    assert.match(replyLine(await t.cmd(`AUTH PLAIN ${plain('alice', 'correct horse battery')}`)), /^538 5\.7\.11 /);
    await t.startTls();
    ehlo = await t.cmd('EHLO client.test');
    assert.ok(ehlo.lines.includes('AUTH PLAIN LOGIN'));
    assert.match(replyLine(await t.cmd('MAIL FROM:<alice@example.com>')), /^530 5\.7\.0 Authentication required/);
    assert.match(replyLine(await t.cmd(`AUTH PLAIN ${plain('alice', 'correct horse battery')}`)), /^235 2\.7\.0 /);
    const r = await t.send('alice@example.com', ['bob@remote.example'], 'Subject: submitted\r\n\r\nno Date, no Message-ID\r\n');
    assert.equal(r.code, 250);
    t.close();
    await waitFor(() => sink.delivered().length === 1, 10_000, 'relay after auth');
    const body = sink.transactions.find((x) => x.completed)!.body.toString();
    assert.match(body, /with ESMTPSA id/);
    assert.match(body, /\r\nDate: [A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} /);
    assert.match(body, /\r\nMessage-ID: <[^>]+@petrel\.test>\r\n/);
    // The MX port does not offer AUTH, and with relay_networks empty it does not relay.
    const mx = await SmtpTalk.open(p.port);
    await mx.read();
    assert.ok(!(await mx.cmd('EHLO c.test')).lines.some((l) => l.startsWith('AUTH')));
    await mx.cmd('MAIL FROM:<alice@example.com>');
    assert.match(replyLine(await mx.cmd('RCPT TO:<bob@remote.example>')), /^554 5\.7\.1 /);
    mx.close();
  } finally {
    await p.stop();
    await sink.close();
    cleanup(p.dir);
  }
});

test('AUTH LOGIN works; wrong passwords are slowed (per address, across sessions), the session closed after three', async () => {
  const { p, sub, sink } = await setup();
  try {
    const t = await SmtpTalk.open(sub);
    await t.read();
    await t.cmd('EHLO client.test');
    await t.startTls();
    await t.cmd('EHLO client.test');
    const times: number[] = [];
    for (let i = 0; i < 2; i++) {
      const t0 = Date.now();
      assert.match(replyLine(await t.cmd(`AUTH PLAIN ${plain('alice', 'wrong')}`)), /^535 5\.7\.8 /);
      times.push(Date.now() - t0);
    }
    assert.ok(times[0]! >= 900 && times[1]! >= 1900, `failures are slowed: ${times.join(', ')} ms`);
    // Unknown user: the same answer.
    const r3 = await t.cmd(`AUTH PLAIN ${plain('mallory', 'x')}`);
    assert.match(replyLine(r3), /^421 4\.7\.0 /);
    assert.equal(await t.read(), null);

    const u = await SmtpTalk.open(sub);
    await u.read();
    await u.cmd('EHLO client.test');
    await u.startTls();
    await u.cmd('EHLO client.test');
    // Reconnecting does not reset the count: the address's fourth failure waits 4 s.
    const t4 = Date.now();
    assert.match(replyLine(await u.cmd(`AUTH PLAIN ${plain('alice', 'guess')}`)), /^535 5\.7\.8 /);
    assert.ok(Date.now() - t4 >= 3900, `the fourth failure from the address, in a new session, waited ${Date.now() - t4} ms`);
    assert.match(await p.petrel.metrics.text(), /^petrel_smtp_auth_failures_total 4$/m);
    assert.equal(replyLine(await u.cmd('AUTH LOGIN')), `334 ${Buffer.from('Username:').toString('base64')}`);
    assert.equal(replyLine(await u.cmd(Buffer.from('alice').toString('base64'))), `334 ${Buffer.from('Password:').toString('base64')}`);
    assert.match(replyLine(await u.cmd(Buffer.from('correct horse battery').toString('base64'))), /^235 2\.7\.0 /);
    assert.match(replyLine(await u.cmd('AUTH PLAIN x')), /^503 5\.5\.1 Already authenticated/);
    u.close();
  } finally {
    await p.stop();
    await sink.close();
    cleanup(p.dir);
  }
});

test('petrel passwd writes an scrypt hash (never the password) and changes an existing user', async () => {
  const dir = tempDir();
  try {
    const { writeFileSync } = await import('node:fs');
    writeFileSync(join(dir, 'petrel.toml'), `data_dir = "var"\n[smtp]\nusers_file = "${join(dir, 'users')}"\n`);
    // The password comes on standard input, as a script would give it.
    const { execFileSync } = await import('node:child_process');
    const bin = BIN;
    const out1 = execFileSync('sh', ['-c', `echo 'first password' | ${process.execPath} ${bin} passwd bob --config ${join(dir, 'petrel.toml')}`], { encoding: 'utf8' });
    assert.match(out1, /bob added in /);
    const out2 = execFileSync('sh', ['-c', `echo 'second password' | ${process.execPath} ${bin} passwd bob --config ${join(dir, 'petrel.toml')}`], { encoding: 'utf8' });
    assert.match(out2, /bob changed in /);
    const text = readFileSync(join(dir, 'users'), 'utf8');
    assert.ok(!text.includes('password'), 'no clear text');
    const lines = text.split('\n').filter((l) => l.startsWith('bob:'));
    assert.equal(lines.length, 1);
    assert.equal(await verifyPassword('second password', lines[0]!.slice(4)), true);
    assert.equal(await verifyPassword('first password', lines[0]!.slice(4)), false);
  } finally {
    cleanup(dir);
  }
});
