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
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const quiet = { warn: () => undefined };

async function until(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500 && !check(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(check(), what);
}

function node(store: MemoryStore, name: string, statePath?: string) {
  const events: MailEvent[] = [];
  const retried: string[][] = [];
  const shaper = new Shaper({ rules: [{ match: '*.p.test' }], feedback: { blockSuspendMs: 600_000 }, onEvent: (e) => events.push(e), ...(statePath ? { statePath } : {}) });
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

test('a node restarted with a suspension in its state file follows the queue: the mark kept, it stays; the mark gone (resumed elsewhere meanwhile), it resumes', async () => {
  const store = new MemoryStore();
  await store.open();
  const dir = mkdtempSync(join(tmpdir(), 'petrel-shared-suspension-'));
  const statePath = join(dir, 'shaping.json');
  let a = node(store, 'a', statePath);
  try {
    a.shaper.blocked(a.provider(), '554 5.7.1 blocked', 'mx.p.test');
    await until(() => a.provider().sharedMark, 'the mark written');
    a.shared.stop();
    a.shaper.close(); // writes the state file
    await a.pool.close();
    a = node(store, 'a', statePath); // the restart
    const p = a.shaper.get('p.test')!;
    assert.ok(p.suspended, 'restored from the state file');
    await new Promise((r) => setTimeout(r, 100)); // several reads of the marks
    assert.ok(p.suspended, 'its own mark is still in the queue: still suspended');
    await store.markDown('shaping:p.test', null, 'b', ''); // another node's resume while it was down (or now)
    await until(() => !p.suspended, 'resumed once the mark is gone');
    assert.deepEqual(a.events.map((e) => e.event), [], 'no event of its own for the resume (the resuming node wrote it)');
  } finally {
    a.shared.stop();
    a.shaper.close();
    await a.pool.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
