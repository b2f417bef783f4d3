// outbound-pool: connection reuse across messages (RSET between them), the
// per-connection message limit, idle close, a peer closing an idle connection
// (transparent reconnect), per-destination concurrency and dead-destination
// back-off (one probe connection at a time while it lasts; an operator's retry
// ends it), all through the SMTP agent against real sockets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SmtpAgent } from '../../src/delivery/smtp/smtp-agent.js';
import { startPeer } from '../helpers/test-peer.js';
import { collect, fixedHop, makeJob, rcpts } from '../helpers/jobs.js';
import type { PoolOptions } from '../../src/delivery/smtp/pool.js';

const T = { connect: 1500, greeting: 1500, helo: 1500, mail: 1500, rcpt: 1500, data: 1500, dataBlock: 1500, dataEnd: 1500, rset: 1500, quit: 500 };
const agent = (pool: Partial<PoolOptions> = {}): SmtpAgent =>
  new SmtpAgent({ heloName: 'petrel.test', maxRecipientsPerTransaction: 100, timeouts: T, poolOptions: { idleTimeoutMs: 5000, ...pool } });
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** waitUntil - poll a condition (a test that fails waits for the runner's own time-out). */
async function waitUntil(ok: () => boolean): Promise<void> {
  while (!ok()) await sleep(20);
}

test('messages to one next hop share one connection, RSET between them', async (t) => {
  const peer = await startPeer();
  const a = agent();
  t.after(async () => {
    await a.close();
    await peer.close();
  });
  for (let i = 0; i < 5; i++) {
    const job = makeJob([`m${i}@example.net`], fixedHop(peer.port));
    const c = collect(job);
    await a.deliver(job, c.report);
    assert.equal(c.count('delivered'), 1);
  }
  assert.equal(peer.connections.length, 1);
  assert.equal(peer.connections[0]!.transactions, 5);
  assert.equal(peer.connections[0]!.commands.filter((l) => l === 'RSET').length, 4);
  // The RSET goes in the same write as the next MAIL (pipelining).
  const rsetChunk = peer.connections[0]!.chunks.find((ch) => ch[0] === 'RSET')!;
  assert.ok(rsetChunk[1]!.startsWith('MAIL FROM:'));
  assert.equal(a.pool.size, 1);
});

test('a connection carries at most max_messages_per_connection messages', async (t) => {
  const peer = await startPeer();
  const a = agent({ maxMessagesPerConnection: 2 });
  t.after(async () => {
    await a.close();
    await peer.close();
  });
  for (let i = 0; i < 5; i++) {
    const job = makeJob([`m${i}@example.net`], fixedHop(peer.port));
    await a.deliver(job, collect(job).report);
  }
  assert.deepEqual(peer.connections.map((c) => c.transactions), [2, 2, 1]);
});

test('idle connections close after the idle timeout; the destination entry is removed', async (t) => {
  const peer = await startPeer();
  const a = agent({ idleTimeoutMs: 100 });
  t.after(async () => {
    await a.close();
    await peer.close();
  });
  const job = makeJob(['x@example.net'], fixedHop(peer.port));
  await a.deliver(job, collect(job).report);
  assert.equal(a.pool.size, 1);
  assert.equal(a.pool.destinations, 1);
  await sleep(400);
  assert.equal(a.pool.size, 0);
  assert.equal(a.pool.destinations, 0);
  assert.equal(peer.connections[0]!.closed, true);
  assert.ok(peer.connections[0]!.commands.includes('QUIT'));
});

test('a reused connection the peer closed while idle: the next message reconnects, nothing deferred', async (t) => {
  const peer = await startPeer();
  const a = agent();
  t.after(async () => {
    await a.close();
    await peer.close();
  });
  const j1 = makeJob(['a@example.net'], fixedHop(peer.port));
  await a.deliver(j1, collect(j1).report);
  // Close the peer side without the pool noticing first: destroy and immediately send.
  peer.dropConnections();
  const j2 = makeJob(['b@example.net'], fixedHop(peer.port));
  const c2 = collect(j2);
  await a.deliver(j2, c2.report);
  assert.equal(c2.count('delivered'), 1);
  assert.equal(peer.connections.length, 2);
});

test('per-destination concurrency: 10 jobs at once, limit 3 -> never more than 3 connections, all delivered', async (t) => {
  const peer = await startPeer({ delayMs: 10 });
  const a = agent({ maxPerDestination: 3 });
  t.after(async () => {
    await a.close();
    await peer.close();
  });
  const jobs = Array.from({ length: 10 }, (_, i) => makeJob(rcpts(2, `d${i}.test`), fixedHop(peer.port)));
  const cs = jobs.map((j) => collect(j));
  await Promise.all(jobs.map((j, i) => a.deliver(j, cs[i]!.report)));
  for (const c of cs) assert.equal(c.count('delivered'), 2);
  assert.equal(peer.maxConcurrent, 3);
  assert.equal(peer.connections.length, 3);
  assert.equal(peer.transactions.length, 10);
});

test('global limit: two destinations, max_connections 2 -> at most 2 connections in all', async (t) => {
  const p1 = await startPeer({ delayMs: 5 });
  const p2 = await startPeer({ delayMs: 5 });
  const a = agent({ maxPerDestination: 5, maxTotal: 2 });
  t.after(async () => {
    await a.close();
    await p1.close();
    await p2.close();
  });
  const jobs = Array.from({ length: 8 }, (_, i) => makeJob([`r${i}@example.net`], fixedHop(i % 2 ? p1.port : p2.port)));
  const cs = jobs.map((j) => collect(j));
  let peak = 0;
  const timer = setInterval(() => (peak = Math.max(peak, a.pool.size)), 1);
  await Promise.all(jobs.map((j, i) => a.deliver(j, cs[i]!.report)));
  clearInterval(timer);
  for (const c of cs) assert.equal(c.count('delivered'), 1);
  assert.ok(peak <= 2, `peak ${peak}`);
  assert.ok(p1.maxConcurrent + p2.maxConcurrent <= 3); // one may close as the other opens
});

test('dead-destination back-off: jobs waiting for a destination that failed are deferred at once with the same error', async (t) => {
  const probe = await startPeer();
  const port = probe.port;
  await probe.close();
  const a = agent({ maxPerDestination: 1, deadBackoffMs: 300 });
  t.after(() => a.close());
  const jobs = Array.from({ length: 5 }, (_, i) => makeJob([`r${i}@example.net`], fixedHop(port)));
  const cs = jobs.map((j) => collect(j));
  await Promise.all(jobs.map((j, i) => a.deliver(j, cs[i]!.report)));
  const replies = new Set(cs.map((c) => c.byAddress.values().next().value!.reply));
  for (const c of cs) assert.equal(c.count('deferred'), 1);
  assert.equal(replies.size, 1, 'the same error for all');
  // During the back-off a new job is not answered "down" without trying: it
  // probes with one connection; the peer is back, so it is delivered and the
  // back-off ends.
  const peer = await startPeer({ port });
  t.after(() => peer.close());
  const j2 = makeJob(['late@example.net'], fixedHop(port));
  const c2 = collect(j2);
  await a.deliver(j2, c2.report);
  assert.equal(c2.count('delivered'), 1);
  assert.equal(peer.connections.length, 1);
  const j3 = makeJob(['later@example.net'], fixedHop(port));
  const c3 = collect(j3);
  await a.deliver(j3, c3.report);
  assert.equal(c3.count('delivered'), 1);
  assert.equal(a.pool.destinations, 1);
});

test('during a back-off, jobs share one probe connection and take its result; clearBackOff ends the back-off', async (t) => {
  // A peer that answers every connection with 421: opening fails after a real connection.
  const peer = await startPeer({ greeting: '421 4.3.2 not now' });
  t.after(() => peer.close());
  const a = agent({ maxPerDestination: 5, deadBackoffMs: 60_000 });
  t.after(() => a.close());
  const first = makeJob(['first@example.net'], fixedHop(peer.port));
  const c1 = collect(first);
  await a.deliver(first, c1.report);
  assert.equal(c1.count('deferred'), 1);
  assert.equal(peer.connections.length, 1);
  // Backed off: five jobs due together make one connection between them, and each is deferred with its error.
  const jobs = Array.from({ length: 5 }, (_, i) => makeJob([`r${i}@example.net`], fixedHop(peer.port)));
  const cs = jobs.map((j) => collect(j));
  await Promise.all(jobs.map((j, i) => a.deliver(j, cs[i]!.report)));
  for (const c of cs) {
    assert.equal(c.count('deferred'), 1);
    assert.match(c.byAddress.values().next().value!.reply, /421/);
  }
  assert.equal(peer.connections.length, 2, 'one probe for the five jobs');
  // An operator's retry ends the back-off of the hop: the next jobs open connections as usual, in parallel.
  assert.deepEqual(a.pool.clearBackOff(fixedHop(peer.port).key).length, 1);
  assert.deepEqual(a.pool.clearBackOff(fixedHop(peer.port).key), [], 'nothing left to end');
  const more = Array.from({ length: 3 }, (_, i) => makeJob([`m${i}@example.net`], fixedHop(peer.port)));
  await Promise.all(more.map((j) => a.deliver(j, collect(j).report)));
  assert.equal(peer.connections.length, 5, 'three connections opened at once: no probe-at-a-time after the back-off ended');
});

test('close(): a connection still in use after the grace period is cut, its recipients deferred, nothing lost', async (t) => {
  const peer = await startPeer({ delayMs: 400 });
  const a = new SmtpAgent({ heloName: 'petrel.test', maxRecipientsPerTransaction: 100, timeouts: T, poolOptions: { shutdownGraceMs: 100 } });
  t.after(() => peer.close());
  const job = makeJob(rcpts(3), fixedHop(peer.port));
  const c = collect(job);
  const delivering = a.deliver(job, c.report);
  await sleep(1000); // greeting and EHLO (400 ms each) done: the connection is in use, waiting for MAIL's reply
  await a.close();
  await delivering;
  assert.equal(peer.transactions.length, 1, 'the transaction had begun');
  // Cut, not waited for: the peer (400 ms a reply) would have taken the message had close()
  // let the transaction run; it never saw its end, and every recipient is deferred.
  assert.equal(peer.transactions[0]!.completed, false, 'the transaction never ended');
  assert.equal(c.count('deferred'), 3);
  assert.equal(c.count('delivered'), 0);
  await waitUntil(() => peer.connections[0]!.closed);
  assert.equal(a.pool.size, 0);
});

test('close(): a connection still being opened is not used; its job is deferred', async (t) => {
  const peer = await startPeer({ delayMs: 300 });
  const a = new SmtpAgent({ heloName: 'petrel.test', maxRecipientsPerTransaction: 100, timeouts: T, poolOptions: { shutdownGraceMs: 100 } });
  t.after(() => peer.close());
  const job = makeJob(rcpts(2), fixedHop(peer.port));
  const c = collect(job);
  const delivering = a.deliver(job, c.report);
  await sleep(50);
  await a.close();
  await delivering;
  assert.equal(c.count('deferred'), 2);
  assert.match(c.byAddress.get('u1@example.net')!.reply, /stopping/);
  assert.equal(peer.transactions.length, 0);
  assert.equal(a.pool.size, 0);
});
