// Unit test for scheduler/shared-limits with traffic shaping: two "nodes"
// (a Shaper, a pool and a SharedLimits each) on one queue store. A provider
// suspended by a "blocked" reply on one node is suspended on the other too
// (one `suspended` event in all); an operator's resume on either ends it on
// both, and the other node makes the destinations it had put back due.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryStore } from '../../src/queue/memory-store.js';
import { ConnectionPool } from '../../src/delivery/smtp/pool.js';
import { Shaper } from '../../src/delivery/smtp/shaping.js';
import { SharedLimits } from '../../src/scheduler/shared-limits.js';
import type { MailEvent } from '../../src/log/events.js';

const quiet = { warn: () => undefined };

async function until(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500 && !check(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(check(), what);
}

function node(store: MemoryStore, name: string) {
  const events: MailEvent[] = [];
  const retried: string[][] = [];
  const shaper = new Shaper({ rules: [{ match: '*.p.test' }], feedback: { blockSuspendMs: 600_000 }, onEvent: (e) => events.push(e) });
  const pool = new ConnectionPool();
  const shared = new SharedLimits({ store, pool, node: name, trace: quiet, intervalMs: 10, shaper, retryHeld: async (d) => void retried.push(d) });
  shared.start();
  return { shaper, pool, shared, events, retried, provider: () => shaper.providerFor('d.test', ['mx.p.test'])! };
}

test('a suspension is shared by the nodes of a cluster; a resume on any node ends it everywhere', async () => {
  const store = new MemoryStore();
  await store.open();
  const a = node(store, 'a');
  const b = node(store, 'b');
  try {
    const pa = a.provider();
    a.shaper.blocked(pa, '554 5.7.1 blocked using zen.example', 'mx.p.test');
    await until(() => b.shaper.get('p.test')?.suspended === true, 'node b suspends the provider too');
    const pb = b.shaper.get('p.test')!;
    assert.equal(pb.suspendedUntil, pa.suspendedUntil, 'until the same time');
    assert.equal(pb.suspendReply, '554 5.7.1 blocked using zen.example');
    assert.deepEqual([...a.events, ...b.events].map((e) => e.event), ['suspended'], 'one event in the cluster');

    // Node b put some recipients back meanwhile; the operator resumes on node a.
    pb.noteHeld('d.test');
    assert.ok(a.shaper.resume(pa, 'operator'));
    await until(() => !pb.suspended, 'node b resumes too');
    await until(() => b.retried.length === 1, 'node b makes its put-back recipients due');
    assert.deepEqual(b.retried, [['d.test']]);
    assert.deepEqual([...a.events, ...b.events].map((e) => e.event), ['suspended', 'resumed'], 'one resumed event in the cluster');

    // The other way round, and a node never re-adopts its own mark after resuming.
    b.shaper.blocked(pb, '554 5.7.1 blocked again', 'mx.p.test');
    await until(() => pa.suspended, 'node a follows node b');
    b.shaper.resume(pb, 'operator');
    await until(() => !pa.suspended, 'node a resumes after node b');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(pb.suspended, false, 'node b did not take its own old mark back');
    assert.equal(pa.suspended, false);
    assert.deepEqual((await store.overrides()).filter((o) => o.destination.startsWith('shaping:')), [], 'no mark left');
  } finally {
    for (const n of [a, b]) {
      n.shared.stop();
      n.shaper.close();
      await n.pool.close();
    }
    await store.close();
  }
});
