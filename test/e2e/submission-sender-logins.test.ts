// Submission sender logins (issue 16; CONTRACT.md "SMTP replies"): with
// `[smtp] sender_logins`, an authenticated user may use in MAIL FROM only
// the addresses the file gives its login (exact address, then @domain), as
// Postfix's reject_sender_login_mismatch; any other gets 553 5.7.1. The file
// is re-read by reload().
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SmtpTalk, replyLine } from '../helpers/smtp-talk.js';
import { startPetrel, waitFor, cleanup, tempDir } from '../helpers/petrel-harness.js';
import { startPeer } from '../helpers/test-peer.js';
import { setUser } from '../../src/inbound/submission-users.js';

const plain = (user: string, pw: string): string => Buffer.from(`\u0000${user}\u0000${pw}`).toString('base64');

async function loggedIn(port: number, user: string): Promise<SmtpTalk> {
  const t = await SmtpTalk.open(port);
  await t.read();
  await t.cmd('EHLO client.test');
  await t.startTls();
  await t.cmd('EHLO client.test');
  assert.match(replyLine(await t.cmd(`AUTH PLAIN ${plain(user, `pw of ${user}`)}`)), /^235 /);
  return t;
}

test('sender_logins: an authenticated user sends only as the addresses it owns; 553 5.7.1 otherwise', async () => {
  const dir = tempDir();
  for (const u of ['alice', 'bob', 'carol']) await setUser(join(dir, 'users'), u, `pw of ${u}`);
  writeFileSync(join(dir, 'senders'), '# who may send as whom\nalice@example.com: alice\nsales@example.com: alice, bob\n@example.net: carol\nboss@example.net: bob\n');
  const sink = await startPeer();
  const p = await startPetrel(
    `[smtp]\nlisten = ["127.0.0.1:0"]\nsubmission_listen = ["127.0.0.1:0"]\nusers_file = "users"\nsender_logins = "senders"\nrelay_networks = []\n[delivery]\nsmarthost = "127.0.0.1:${sink.port}"\n`,
    {},
    dir,
  );
  const sub = p.petrel.inbound!.bound.find((b) => b.kind === 'submission')!.port;
  try {
    const mail = async (t: SmtpTalk, from: string): Promise<string> => {
      const r = replyLine(await t.cmd(`MAIL FROM:<${from}>`));
      if (r.startsWith('250')) await t.cmd('RSET');
      return r;
    };
    const alice = await loggedIn(sub, 'alice');
    assert.match(await mail(alice, 'alice@example.com'), /^250 /);
    assert.match(await mail(alice, 'Alice@EXAMPLE.com'), /^250 /, 'addresses compared without regard to case');
    assert.match(await mail(alice, 'sales@example.com'), /^250 /);
    assert.equal(await mail(alice, 'bob@example.com'), '553 5.7.1 <bob@example.com>: Sender address rejected: not owned by user alice');
    assert.match(await mail(alice, 'someone@example.net'), /^553 5\.7\.1 /, 'the @domain entry is carol\'s');
    assert.match(await mail(alice, ''), /^250 /, 'the null sender is owned by nobody and allowed');
    const r = await alice.send('sales@example.com', ['x@remote.example'], 'Subject: as sales\r\n\r\nhi\r\n');
    assert.equal(r.code, 250);
    alice.close();
    await waitFor(() => sink.delivered().length === 1, 10_000, 'the allowed message relayed');

    const carol = await loggedIn(sub, 'carol');
    assert.match(await mail(carol, 'anyone@example.net'), /^250 /, '@domain');
    assert.match(await mail(carol, 'boss@example.net'), /^553 5\.7\.1 /, 'an exact entry wins over the @domain one');
    carol.close();

    // Re-read on reload: bob is given alice's address.
    writeFileSync(join(dir, 'senders'), 'alice@example.com: alice, bob\n');
    p.petrel.reload();
    const bob = await loggedIn(sub, 'bob');
    assert.match(await mail(bob, 'alice@example.com'), /^250 /);
    assert.match(await mail(bob, 'sales@example.com'), /^553 5\.7\.1 /, 'no longer in the file: owned by nobody');
    bob.close();
  } finally {
    await p.stop();
    await sink.close();
    cleanup(dir);
  }
});
