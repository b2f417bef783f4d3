// Client -> Petrel -> next hop, end to end on loopback: the envelope and the
// exact octets that arrive, routing by [[routes]] then smarthost, DSN
// parameters passed on, and each recipient's fate in the event log.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SmtpTalk } from '../helpers/smtp-talk.js';
import { startPetrel, waitFor, cleanup } from '../helpers/petrel-harness.js';
import { startPeer } from '../helpers/test-peer.js';

test('relay to the smarthost: envelope, DSN parameters and octets arrive as sent, plus one Received:', async () => {
  const sink = await startPeer({ dsn: true, pipelining: true });
  const p = await startPetrel(`[delivery]\nsmarthost = "127.0.0.1:${sink.port}"\n[local]\ndomains = []\n`);
  try {
    const t = await SmtpTalk.open(p.port);
    await t.read();
    await t.cmd('EHLO client.test');
    assert.equal((await t.cmd('MAIL FROM:<alice@example.com> RET=HDRS ENVID=env+2B1')).code, 250);
    assert.equal((await t.cmd('RCPT TO:<bob@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.net')).code, 250);
    assert.equal((await t.cmd('RCPT TO:<carol@example.org>')).code, 250);
    assert.equal((await t.cmd('DATA')).code, 354);
    const body =
      'From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: relay test\r\nMessage-ID: <relay-1@example.com>\r\n\r\n' +
      'line one\r\n..starts with a dot\r\n' + 'x'.repeat(1200) + '\r\nbare\nLF\r\nlast\r\n';
    t.write(body + '.\r\n');
    assert.equal((await t.read())!.code, 250);
    await t.cmd('QUIT');
    t.close();
    await waitFor(() => sink.delivered().length === 2, 10_000, 'relay');
    const tx = sink.transactions.find((x) => x.completed)!;
    assert.equal(tx.sender, 'alice@example.com');
    assert.deepEqual(tx.mailParams.filter((x) => !x.startsWith('SIZE=')), ['RET=HDRS', 'ENVID=env+2B1']);
    assert.deepEqual(tx.rcpts.map((r) => [r.address, r.params]), [
      ['bob@example.net', ['NOTIFY=SUCCESS,FAILURE', 'ORCPT=rfc822;bob@example.net']],
      ['carol@example.org', []],
    ]);
    const got = tx.body.toString('latin1');
    const received = /^Received: from client\.test \(\[127\.0\.0\.1\]\)\r\n\tby petrel\.test \(Petrel\) with ESMTP id [0-9A-Z]{16};\r\n\t[^\r]+\r\n/.exec(got);
    assert.ok(received, got.slice(0, 300));
    // Everything after our Received: is the client's message, with the bare LF made CRLF
    // and the 1,200-octet line wrapped (no line over 1,000 octets leaves Petrel).
    const rest = got.slice(received[0].length);
    assert.equal(rest.replace('\r\n ', ''), body.replace('..starts', '.starts').replace('bare\nLF', 'bare\r\nLF'));
    assert.ok(rest.split('\r\n').every((l) => l.length <= 998));
    await waitFor(() => p.events().filter((e) => e.event === 'delivered').length === 2, 5000, 'events');
    const delivered = p.events().filter((e) => e.event === 'delivered');
    assert.ok(delivered.every((e) => e.attempt === 1 && /^250/.test(e.reply ?? '') && e.remote?.includes('127.0.0.1')));
  } finally {
    await p.stop();
    await sink.close();
    cleanup(p.dir);
  }
});

test('[[routes]] are checked before the smarthost; local domains before both', async () => {
  const legacy = await startPeer();
  const smart = await startPeer();
  const p = await startPetrel(`[delivery]\nsmarthost = "127.0.0.1:${smart.port}"\n[[routes]]\ndomain = "legacy.example"\nvia = "smtp:127.0.0.1:${legacy.port}"\n[local]\ndomains = ["here.test"]\n`);
  try {
    const t = await SmtpTalk.open(p.port);
    await t.read();
    await t.cmd('EHLO client.test');
    const r = await t.send('a@example.com', ['x@legacy.example', 'y@other.example', 'z@here.test'], 'Subject: routes\r\n\r\nhi\r\n');
    assert.equal(r.code, 250);
    t.close();
    await waitFor(() => legacy.delivered().length === 1 && smart.delivered().length === 1, 10_000, 'both hops');
    assert.deepEqual(legacy.delivered(), ['x@legacy.example']);
    assert.deepEqual(smart.delivered(), ['y@other.example']);
    await waitFor(() => p.events().filter((e) => e.event === 'delivered').length === 3, 5000, 'local delivery too');
  } finally {
    await p.stop();
    await legacy.close();
    await smart.close();
    cleanup(p.dir);
  }
});

test('per-recipient fate: 250, 450 and 550 from the next hop become delivered, deferred and failed', async () => {
  const sink = await startPeer({
    rcptReply: (a) => (a.startsWith('soft') ? '450 4.2.1 Mailbox busy' : a.startsWith('hard') ? '550 5.1.1 No such user' : undefined),
  });
  const p = await startPetrel(`[delivery]\nsmarthost = "127.0.0.1:${sink.port}"\n[local]\ndomains = []\n[queue]\nretry_intervals = ["1h"]\n`);
  try {
    const t = await SmtpTalk.open(p.port);
    await t.read();
    await t.cmd('EHLO client.test');
    assert.equal((await t.send('a@example.com', ['ok@x.example', 'soft@x.example', 'hard@x.example'], 'Subject: fate\r\n\r\nhi\r\n')).code, 250);
    t.close();
    const mine = (): ReturnType<typeof p.events> => p.events().filter((e) => e.attempt && e.sender === 'a@example.com');
    await waitFor(() => mine().length === 3, 10_000, 'outcomes');
    const byRcpt = Object.fromEntries(mine().map((e) => [e.recipient, [e.event, e.status, e.reply]]));
    assert.deepEqual(byRcpt['ok@x.example']!.slice(0, 2), ['delivered', '2.0.0']);
    assert.deepEqual(byRcpt['soft@x.example'], ['deferred', '4.2.1', '450 4.2.1 Mailbox busy']);
    assert.deepEqual(byRcpt['hard@x.example'], ['failed', '5.1.1', '550 5.1.1 No such user']);
    // The failure is reported to the sender; the report itself goes to the smarthost too.
    await waitFor(() => sink.transactions.some((x) => x.completed && x.sender === '' && x.accepted[0] === 'a@example.com'), 10_000, 'failure report');
  } finally {
    await p.stop();
    await sink.close();
    cleanup(p.dir);
  }
});
