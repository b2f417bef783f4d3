// outbound-recipient-limit: recipients refused with 452, or 552 at RCPT, are
// sent again in the next transaction on the same connection, never bounced
// (seeds/001). Exact counts: deliveries, transactions, connections, failures.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SmtpAgent } from '../../src/delivery/smtp/smtp-agent.js';
import { startPeer, type TestPeer } from '../helpers/test-peer.js';
import { collect, fixedHop, makeJob, rcpts } from '../helpers/jobs.js';

function agent(maxRecipients: number): SmtpAgent {
  return new SmtpAgent({ heloName: 'petrel.test', maxRecipientsPerTransaction: maxRecipients, timeouts: { connect: 2000, greeting: 5000, rcpt: 5000, dataEnd: 5000 } });
}

/** deliveredOnce - every address delivered exactly once by the peer, in completed transactions. */
function assertDeliveredOnce(peer: TestPeer, addresses: string[]): void {
  const seen = new Map<string, number>();
  for (const a of peer.delivered()) seen.set(a, (seen.get(a) ?? 0) + 1);
  assert.equal(seen.size, addresses.length);
  for (const a of addresses) assert.equal(seen.get(a), 1, `${a} delivered ${seen.get(a) ?? 0} times`);
}

for (const code of [452, 552] as const) {
  test(`5,000 recipients, peer refuses RCPT after 100 with ${code}: all delivered once, 50 transactions, 0 failures`, async (t) => {
    const reply = code === 452 ? '452 4.5.3 Too many recipients' : '552 5.5.3 Too many recipients';
    const peer = await startPeer({ rcptLimit: { after: 100, reply } });
    const a = agent(1000);
    t.after(async () => {
      await a.close();
      await peer.close();
    });
    const addresses = rcpts(5000);
    const job = makeJob(addresses, fixedHop(peer.port));
    const c = collect(job);
    await a.deliver(job, c.report);
    assert.equal(c.byAddress.size, 5000);
    assert.equal(c.count('delivered'), 5000);
    assert.equal(c.count('failed'), 0);
    assert.equal(c.count('deferred'), 0);
    assertDeliveredOnce(peer, addresses);
    assert.equal(peer.transactions.length, 50);
    assert.equal(peer.connections.length, 1, 'one connection carries every transaction');
    assert.equal(peer.connections[0]!.transactions, 50);
    for (const tx of peer.transactions) assert.equal(tx.accepted.length, 100);
    // 1000 RCPTs in the first transaction, then the refused ones first plus unsent ones.
    assert.equal(peer.transactions[0]!.rcpts.length, 1000);
    assert.ok(c.calls >= 50, 'results reported transaction by transaction');
  });
}

test('pipelined replies mixing 250/452/450/550/552 in one batch: exact outcome for each recipient', async (t) => {
  const plan: Record<string, string> = {
    'a1@x.test': '250 2.1.5 Ok',
    'a2@x.test': '452 4.5.3 Too many recipients',
    'a3@x.test': '450 4.2.1 Mailbox busy',
    'a4@x.test': '550 5.1.1 No such user',
    'a5@x.test': '552 5.5.3 Too many recipients',
    'a6@x.test': '250 2.1.5 Ok',
    'a7@x.test': '553 5.1.3 Bad address',
    'a8@x.test': '451 4.3.0 Local error',
  };
  // A re-sent recipient is accepted the second time it is offered.
  const offered = new Map<string, number>();
  const peer = await startPeer({
    rcptReply: (addr) => {
      const n = (offered.get(addr) ?? 0) + 1;
      offered.set(addr, n);
      return n === 1 ? plan[addr] : '250 2.1.5 Ok';
    },
  });
  const a = agent(100);
  t.after(async () => {
    await a.close();
    await peer.close();
  });
  const job = makeJob(Object.keys(plan), fixedHop(peer.port));
  const c = collect(job);
  await a.deliver(job, c.report);
  const kind = (x: string): string => `${c.byAddress.get(x)!.kind} ${c.byAddress.get(x)!.status}`;
  assert.equal(kind('a1@x.test'), 'delivered 2.0.0');
  assert.equal(kind('a6@x.test'), 'delivered 2.0.0');
  assert.equal(kind('a2@x.test'), 'delivered 2.0.0');
  assert.equal(kind('a5@x.test'), 'delivered 2.0.0');
  assert.equal(kind('a3@x.test'), 'deferred 4.2.1');
  assert.equal(kind('a8@x.test'), 'deferred 4.3.0');
  assert.equal(kind('a4@x.test'), 'failed 5.1.1');
  assert.equal(kind('a7@x.test'), 'failed 5.1.3');
  assert.equal(c.byAddress.get('a4@x.test')!.reply, '550 5.1.1 No such user');
  assert.equal(c.byAddress.get('a4@x.test')!.remoteReply, true);
  assert.equal(peer.transactions.length, 2);
  assert.deepEqual(peer.transactions[0]!.accepted, ['a1@x.test', 'a6@x.test']);
  assert.deepEqual(peer.transactions[1]!.rcpts.map((r) => r.address), ['a2@x.test', 'a5@x.test']);
  assert.equal(peer.connections.length, 1);
  // Pipelined: MAIL, all 8 RCPTs and DATA arrived in one read.
  const first = peer.connections[0]!.chunks.find((ch) => ch.some((l) => l.startsWith('MAIL')))!;
  assert.equal(first.length, 10);
  assert.ok(first[0]!.startsWith('MAIL FROM:'));
  assert.equal(first[9], 'DATA');
});

test('LIMITS RCPTMAX=7: no transaction carries more than 7 recipients', async (t) => {
  const peer = await startPeer({ rcptMax: 7 });
  const a = agent(100);
  t.after(async () => {
    await a.close();
    await peer.close();
  });
  const addresses = rcpts(50);
  const job = makeJob(addresses, fixedHop(peer.port));
  const c = collect(job);
  await a.deliver(job, c.report);
  assert.equal(c.count('delivered'), 50);
  assert.equal(peer.transactions.length, 8);
  for (const tx of peer.transactions) assert.ok(tx.rcpts.length <= 7, `transaction with ${tx.rcpts.length}`);
  assertDeliveredOnce(peer, addresses);
});

test('a transaction that accepts nobody, all refused with 452: deferred, no loop', async (t) => {
  const peer = await startPeer({ rcptReply: () => '452 4.3.1 Insufficient system storage' });
  const a = agent(100);
  t.after(async () => {
    await a.close();
    await peer.close();
  });
  const job = makeJob(rcpts(250), fixedHop(peer.port));
  const c = collect(job);
  await a.deliver(job, c.report);
  assert.equal(c.count('deferred'), 250);
  assert.equal(c.byAddress.get('u1@example.net')!.status, '4.3.1');
  assert.equal(c.byAddress.get('u250@example.net')!.reply, '452 4.3.1 Insufficient system storage');
  assert.equal(peer.transactions.length, 1, 'one transaction, then stop');
});

test('without PIPELINING: one command at a time, same exact outcomes with 452 after 3', async (t) => {
  const peer = await startPeer({ pipelining: false, rcptLimit: { after: 3, reply: '452 4.5.3 Too many recipients' } });
  const a = agent(10);
  t.after(async () => {
    await a.close();
    await peer.close();
  });
  const addresses = rcpts(10);
  const job = makeJob(addresses, fixedHop(peer.port));
  const c = collect(job);
  await a.deliver(job, c.report);
  assert.equal(c.count('delivered'), 10);
  assert.equal(peer.transactions.length, 4);
  for (const ch of peer.connections[0]!.chunks) assert.equal(ch.length, 1, 'one command per read');
  assertDeliveredOnce(peer, addresses);
});
