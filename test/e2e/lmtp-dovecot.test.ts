// Petrel's LMTP agent against a real Dovecot (RFC 2033): a route
// `lmtp:HOST:PORT` delivers each recipient into Dovecot's Maildir, Dovecot's
// per-recipient answers become per-recipient outcomes, and an unknown user
// refused by Dovecot fails with a report to the sender.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SmtpTalk } from '../helpers/smtp-talk.js';
import { startPetrel, waitFor, cleanup } from '../helpers/petrel-harness.js';
import { dovecotAvailable, startDovecot } from '../helpers/dovecot.js';

test('LMTP to a real Dovecot: delivered per recipient; an unknown user fails with a report', async () => {
  const missing = dovecotAvailable();
  if (missing) assert.fail(missing);
  const dovecot = await startDovecot(['ann@dove.test', 'ben@dove.test']);
  const p = await startPetrel(`[[routes]]\ndomain = "dove.test"\nvia = "lmtp:${dovecot.host}:${dovecot.port}"\n[local]\ndomains = ["home.test"]\n`);
  try {
    const t = await SmtpTalk.open(p.port);
    await t.read();
    await t.cmd('EHLO client.test');
    const r = await t.send('sender@home.test', ['ann@dove.test', 'ben@dove.test', 'nobody@dove.test'], 'Subject: via LMTP\r\nMessage-ID: <lmtp-1@home.test>\r\n\r\nhello Dovecot\r\n');
    assert.equal(r.code, 250);
    t.close();
    await waitFor(() => dovecot.newMessages('ann@dove.test').length === 1 && dovecot.newMessages('ben@dove.test').length === 1, 15_000, 'Dovecot delivery');
    for (const u of ['ann@dove.test', 'ben@dove.test']) {
      const text = readFileSync(dovecot.newMessages(u)[0]!, 'utf8');
      assert.match(text, /Subject: via LMTP/);
      assert.match(text, /hello Dovecot/);
      assert.match(text, /by petrel\.test \(Petrel\)/);
    }
    await waitFor(() => p.events().filter((e) => e.attempt && e.sender === 'sender@home.test').length === 3, 10_000, 'three outcomes');
    const out = Object.fromEntries(p.events().filter((e) => e.attempt && e.sender === 'sender@home.test').map((e) => [e.recipient, [e.event, e.status]]));
    assert.deepEqual(out['ann@dove.test'], ['delivered', '2.0.0']);
    assert.deepEqual(out['ben@dove.test'], ['delivered', '2.0.0']);
    assert.equal(out['nobody@dove.test']![0], 'failed');
    assert.equal(out['nobody@dove.test']![1], '5.1.1');
    const box = join(p.dir, 'var', 'mail', 'home.test', 'sender', 'new');
    await waitFor(() => existsSync(box) && readdirSync(box).length === 1, 10_000, 'failure report to the sender');
    assert.match(readFileSync(join(box, readdirSync(box)[0]!), 'utf8'), /Final-Recipient: rfc822; nobody@dove\.test/);
  } finally {
    await p.stop();
    await dovecot.stop();
    cleanup(p.dir);
  }
});
