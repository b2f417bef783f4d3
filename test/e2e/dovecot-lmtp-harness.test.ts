// The Dovecot LMTP test harness (test/helpers/dovecot.ts) proves itself: a
// private Dovecot started on a loopback port accepts mail over LMTP from a
// real client (swaks --protocol LMTP), answers per recipient (RFC 2033),
// refuses unknown users, delivers into its Maildir, and stop() leaves no
// process and no files behind. The LMTP delivery agent's own tests use it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dovecotAvailable, startDovecot } from '../helpers/dovecot.js';
import { portOpen } from '../helpers/petrel-harness.js';

function swaks(args: string[]): { code: number | null; out: string } {
  const r = spawnSync('swaks', args, { encoding: 'utf8', timeout: 30_000 });
  if (r.error) throw new Error(`swaks could not run: ${r.error.message} (apt-get install swaks)`);
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

test('a private Dovecot accepts mail over LMTP (swaks) and it lands in the Maildir; stop() cleans up', async (t) => {
  // Dovecot is a required test peer (.ci/run installs it): missing, the test fails and says why.
  const missing = dovecotAvailable();
  if (missing) assert.fail(missing);
  const dovecot = await startDovecot(['alice@example.test', 'bob@example.test']);
  let stopped = false;
  try {
    const token = `harness-${process.pid}-${Date.now()}`;
    const r = swaks([
      '--protocol', 'LMTP',
      '--server', `${dovecot.host}:${dovecot.port}`,
      '--from', 'sender@petrel.test',
      '--to', 'alice@example.test,bob@example.test,nobody@example.test',
      '--header', `Subject: ${token}`,
      '--body', `body of ${token}`,
    ]);
    // LMTP answers each recipient after DATA: two saved; the unknown one refused at RCPT.
    assert.match(r.out, /<\*\* +550 5\.1\.1 <nobody@example\.test> User doesn't exist/);
    assert.match(r.out, /<- +250 2\.0\.0 <alice@example\.test> \S+ Saved/);
    assert.match(r.out, /<- +250 2\.0\.0 <bob@example\.test> \S+ Saved/);
    for (const user of ['alice@example.test', 'bob@example.test']) {
      const files = dovecot.newMessages(user);
      assert.equal(files.length, 1, `${user}: one message in new/ (${dovecot.log()})`);
      const text = readFileSync(files[0]!, 'utf8');
      assert.match(text, new RegExp(`Subject: ${token}`));
      assert.match(text, new RegExp(`body of ${token}`));
      assert.match(text, /^Return-Path: <sender@petrel\.test>/m);
      assert.match(text, /^Received: from \S+ \(\[127\.0\.0\.1\]\)\n\tby \S+ with LMTP/m, 'Dovecot received it over LMTP');
    }
    assert.deepEqual(dovecot.newMessages('nobody@example.test'), []);
    assert.match(dovecot.log(), /saved mail to INBOX/);
    const { host, port, dir } = dovecot;
    await dovecot.stop();
    stopped = true;
    assert.equal(await portOpen(host, port), false, 'the port is closed');
    assert.equal(existsSync(dir), false, 'its directory is removed');
    const left = spawnSync('pgrep', ['-f', dir], { encoding: 'utf8' });
    assert.equal(left.stdout.trim(), '', 'no Dovecot process of this instance is left');
  } finally {
    if (!stopped) await dovecot.stop();
  }
});
