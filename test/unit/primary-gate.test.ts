// workers/primary-gate: a worker's kept connection slots. The slot of an
// ended connection is kept KEEP_MS for the next connection from the same
// address; a busy address whose slots are taken as fast as they are kept
// loses none to expiry (before, every keeping's expiry gave back a slot of
// its address, taken or not: ~30 % of connections asked the primary again);
// a slot nobody takes goes back after KEEP_MS; a reclaim gives back every
// kept slot, and none is kept for QUIET_MS. Time is mocked (no wall clock).
import { afterEach, beforeEach, mock, test } from 'node:test';
import assert from 'node:assert/strict';
import { KEEP_MS, PrimaryGate, QUIET_MS } from '../../src/workers/primary-gate.js';
import type { ConnOp, ToPrimary } from '../../src/workers/messages.js';
import { Outbox } from '../../src/workers/outbox.js';

/** A gate whose messages to the primary are collected: the ops it sent, in order. */
function gate(): { g: PrimaryGate; ops: ConnOp[]; sent: ToPrimary[] } {
  const sent: ToPrimary[] = [];
  const ops: ConnOp[] = [];
  const got = (m: ToPrimary): void => {
    if (m.t === 'many') return m.items.forEach(got);
    sent.push(m);
    if (m.t === 'conns') ops.push(...m.ops);
  };
  const g = new PrimaryGate(
    new Outbox((m) => (got(m), true)),
    () => true,
  );
  return { g, ops, sent };
}

/** flush - the gate sends its ops at the end of the turn (setImmediate is not mocked). */
const flush = (): Promise<void> => new Promise((r) => setImmediate(r));
const IP = '192.0.2.7';

beforeEach(() => mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_000_000 }));
afterEach(() => mock.timers.reset());

/** admitted - admit IP, answering the primary's question if one is asked; resolves whether it asked. */
async function admit(g: PrimaryGate, ops: ConnOp[]): Promise<boolean> {
  const before = ops.length;
  const p = g.admit(IP);
  await flush();
  const asked = ops.length > before;
  if (asked) g.answered([{ n: (ops.at(-1) as { n: number }).n, refusal: null }]);
  assert.equal(await p, null);
  return asked;
}

test('a busy address: slots taken as fast as they are kept are never given back by expiry, and no connection asks again', async () => {
  const { g, ops } = gate();
  assert.equal(await admit(g, ops), true, 'the first connection asks');
  let asked = 0;
  // Twenty connections one after the other, 30 ms apart: 600 ms, more than twice KEEP_MS.
  for (let i = 0; i < 20; i++) {
    g.release(IP);
    mock.timers.tick(30);
    if (await admit(g, ops)) asked++;
  }
  await flush();
  assert.equal(asked, 0, 'every connection took a kept slot');
  assert.deepEqual(ops.filter((o) => 'release' in o), [], 'no slot went back while in use');
});

test('a kept slot nobody takes goes back after KEEP_MS, once; the next connection asks', async () => {
  const { g, ops } = gate();
  await admit(g, ops);
  g.release(IP);
  mock.timers.tick(KEEP_MS - 1);
  await flush();
  assert.equal(ops.filter((o) => 'release' in o).length, 0, 'still kept');
  mock.timers.tick(1);
  await flush();
  assert.deepEqual(ops.filter((o) => 'release' in o), [{ release: IP }]);
  mock.timers.tick(KEEP_MS * 4);
  await flush();
  assert.equal(ops.filter((o) => 'release' in o).length, 1, 'given back once');
  assert.equal(await admit(g, ops), true);
});

test('of two kept slots the older goes first and the fresher stays its full time', async () => {
  const { g, ops } = gate();
  await admit(g, ops);
  await admit(g, ops);
  g.release(IP);
  mock.timers.tick(200);
  g.release(IP);
  mock.timers.tick(50);
  await flush();
  assert.equal(ops.filter((o) => 'release' in o).length, 1, 'the first, at KEEP_MS');
  mock.timers.tick(KEEP_MS - 51);
  await flush();
  assert.equal(ops.filter((o) => 'release' in o).length, 1, 'the second not before its own KEEP_MS');
  mock.timers.tick(1);
  await flush();
  assert.equal(ops.filter((o) => 'release' in o).length, 2);
});

test('a reclaim gives every kept slot back at once and says so; for QUIET_MS an ended connection gives its slot back at once', async () => {
  const { g, ops, sent } = gate();
  for (let i = 0; i < 3; i++) await admit(g, ops);
  for (let i = 0; i < 3; i++) g.release(IP);
  g.reclaim();
  await flush();
  assert.equal(ops.filter((o) => 'release' in o).length, 3);
  assert.equal(sent.at(-1)?.t, 'reclaimed', 'the releases are sent before "reclaimed"');
  assert.equal(await admit(g, ops), true, 'nothing kept any more');
  g.release(IP);
  await flush();
  assert.equal(ops.filter((o) => 'release' in o).length, 4, 'given back at once while quiet');
  mock.timers.tick(QUIET_MS);
  await admit(g, ops);
  g.release(IP);
  await flush();
  assert.equal(ops.filter((o) => 'release' in o).length, 4, 'kept again after QUIET_MS');
  mock.timers.tick(KEEP_MS);
  await flush();
});
