// End to end: no backscatter (issue 15). For a routed domain with
// verify_recipients = true, Petrel asks the next hop (a scriptable test peer)
// about each recipient at RCPT: a known one is accepted, an unknown one gets
// 550 5.1.1 then and there (never a bounce later), and when the next hop
// cannot be asked the client gets 450 4.1.1. Answers are cached; the probe
// never sends DATA; a route without verify_recipients is not probed.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { SmtpTalk, replyLine } from '../helpers/smtp-talk.js';
import { startPeer, type TestPeer } from '../helpers/test-peer.js';
import { cleanup, freePort, startPetrel, type InProcess } from '../helpers/petrel-harness.js';

describe('verify_recipients: unknown recipients refused at RCPT', () => {
  let peer: TestPeer;
  let p: InProcess;
  let deadPort: number;

  before(async () => {
    peer = await startPeer({ rcptReply: (address) => (address.startsWith('nobody@') ? '550 5.1.1 <nobody@legacy.test>: No such user' : address.startsWith('busy@') ? '451 4.3.0 Try later' : undefined) });
    deadPort = await freePort();
    p = await startPetrel(`[smtp]
listen = ["127.0.0.1:0"]
[checks]
verify_timeout = "2s"
[[routes]]
domain = "legacy.test"
via = "smtp:127.0.0.1:${peer.port}"
verify_recipients = true
[[routes]]
domain = "gone.test"
via = "smtp:127.0.0.1:${deadPort}"
verify_recipients = true
[[routes]]
domain = "plain.test"
via = "smtp:127.0.0.1:${peer.port}"
`);
  });
  after(async () => {
    await p.stop();
    await peer.close();
    cleanup(p.dir);
  });

  async function rcpts(addresses: string[]): Promise<string[]> {
    const t = await SmtpTalk.open(p.port);
    await t.read();
    await t.cmd('EHLO client.test');
    await t.cmd('MAIL FROM:<someone@sender.test>');
    const out: string[] = [];
    for (const a of addresses) out.push(replyLine(await t.cmd(`RCPT TO:<${a}>`)));
    await t.cmd('QUIT');
    t.close();
    return out;
  }

  test('known recipient accepted, unknown refused 550 5.1.1 with the next hop\'s words, a 4xx from the next hop is 450 4.1.1', async () => {
    const [known, unknown, busy] = await rcpts(['alice@legacy.test', 'nobody@legacy.test', 'busy@legacy.test']);
    assert.match(known!, /^250 2\.1\.5/);
    assert.equal(unknown, '550 5.1.1 <nobody@legacy.test>: Recipient address rejected by its next hop: 550 5.1.1 <nobody@legacy.test>: No such user');
    assert.match(busy!, /^450 4\.1\.1 /);
    // The probes carried no mail.
    assert.ok(peer.transactions.length >= 3);
    assert.ok(peer.transactions.every((tx) => tx.sender === '' && !tx.completed));
  });

  test('answers are cached: asking again does not probe again', async () => {
    const before = peer.connections.length;
    const [known, unknown] = await rcpts(['alice@legacy.test', 'nobody@legacy.test']);
    assert.match(known!, /^250 /);
    assert.match(unknown!, /^550 5\.1\.1 /);
    assert.equal(peer.connections.length, before);
  });

  test('a next hop that cannot be reached: 450 4.1.1, never a 5xx', async () => {
    const [r] = await rcpts(['bob@gone.test']);
    assert.match(r!, /^450 4\.1\.1 <bob@gone\.test>: Recipient address verification failed/);
  });

  test('a route without verify_recipients is not probed', async () => {
    const before = peer.connections.length;
    const [r] = await rcpts(['nobody@plain.test']);
    assert.match(r!, /^250 /);
    assert.equal(peer.connections.length, before);
  });
});
