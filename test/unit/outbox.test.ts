// workers/outbox: what a worker says to the primary in one turn of its event
// loop leaves as one IPC message, in order; `now` writes at once after what
// was gathered before it; a channel gone is told to every part exactly once.
// The real parts (RemoteStore, PrimaryGate) share one outbox, as in a worker.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Outbox, type OutboxPart } from '../../src/workers/outbox.js';
import type { ToPrimary } from '../../src/workers/messages.js';
import { RemoteStore } from '../../src/workers/remote-store.js';
import { PrimaryGate } from '../../src/workers/primary-gate.js';
import type { NewMessage } from '../../src/queue/store.js';

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

/** A part that says `stats` messages with the numbers it was given. */
class Counter implements OutboxPart {
  items: number[] = [];
  sentAs: boolean[] = [];
  constructor(private readonly outbox: Outbox) {}
  add(n: number): void {
    this.items.push(n);
    this.outbox.soon(this);
  }
  /** addLater - news that can wait up to `ms` for a message to ride with. */
  addLater(n: number, ms: number): void {
    this.items.push(n);
    this.outbox.later(this, ms);
  }
  gathered(): ToPrimary[] {
    if (!this.items.length) return [];
    const got = this.items.splice(0);
    return got.map((n) => ({ t: 'stats', stats: { connections: n, connects: 0, authFailures: 0, accepted: 0, acceptedOctets: 0, replies: {} } }));
  }
  sent(ok: boolean): void {
    this.sentAs.push(ok);
  }
}

/** The numbers said, in the order the primary reads them ('many' unwrapped), one array per IPC message. */
function recorder(ok = true): { outbox: Outbox; writes: number[][]; callbacks: Array<((ok: boolean) => void) | undefined> } {
  const writes: number[][] = [];
  const callbacks: Array<((ok: boolean) => void) | undefined> = [];
  const flat = (m: ToPrimary): number[] => (m.t === 'many' ? m.items.flatMap(flat) : m.t === 'stats' ? [m.stats.connections] : [-1]);
  const outbox = new Outbox((m, written) => {
    if (!ok) return false;
    writes.push(flat(m));
    callbacks.push(written);
    return true;
  });
  return { outbox, writes, callbacks };
}

test('everything the parts gather in one turn leaves at its end as one message, in the order they spoke', async () => {
  const { outbox, writes } = recorder();
  const a = new Counter(outbox);
  const b = new Counter(outbox);
  b.add(1);
  a.add(2);
  b.add(3);
  a.add(4);
  assert.equal(writes.length, 0, 'nothing written before the end of the turn');
  await turn();
  assert.deepEqual(writes, [[1, 3, 2, 4]], 'one message: b spoke first, then a');
  a.add(5);
  await turn();
  assert.deepEqual(writes[1], [5], 'a lone message in a later turn');
});

test('a lone message is not wrapped; several are one "many" in order', async () => {
  const raw: ToPrimary[] = [];
  const outbox = new Outbox((m) => (raw.push(m), true));
  const a = new Counter(outbox);
  a.add(1);
  await turn();
  assert.equal(raw[0]!.t, 'stats');
  a.add(2);
  a.add(3);
  await turn();
  assert.equal(raw[1]!.t, 'many');
  assert.equal(raw.length, 2);
});

test('now writes at once, after what was gathered before it and before what is gathered later; post waits for the end of the turn', async () => {
  const { outbox, writes } = recorder();
  const a = new Counter(outbox);
  a.add(1);
  assert.equal(outbox.now({ t: 'hello' }), true);
  assert.deepEqual(writes, [[1, -1]], 'written at once, the gathered message first');
  a.add(2);
  outbox.post({ t: 'reclaimed' });
  a.add(3);
  assert.equal(writes.length, 1);
  await turn();
  assert.deepEqual(writes[1], [2, -1, 3], 'post keeps its place between what was gathered before and after');
  await turn();
  assert.equal(writes.length, 2, 'nothing left to write');
});

test('written: each part hears once per message of its own; no callback is asked for when none listens', async () => {
  const { outbox, writes, callbacks } = recorder();
  const a = new Counter(outbox);
  const b = new Counter(outbox);
  a.add(1);
  a.add(2);
  b.add(3);
  await turn();
  assert.equal(writes.length, 1);
  callbacks[0]!(true);
  callbacks[0]!(true);
  assert.deepEqual(a.sentAs, [true], 'once for its two items');
  assert.deepEqual(b.sentAs, [true]);
  outbox.now({ t: 'hello' });
  assert.equal(callbacks[1], undefined, 'nobody waits for it');
});

test('a channel gone: every part with something in the message hears false, once; now says false', async () => {
  const { outbox } = recorder(false);
  const a = new Counter(outbox);
  const b = new Counter(outbox);
  a.add(1);
  b.add(2);
  let posted: boolean | null = null;
  outbox.post({ t: 'reclaimed' }, (ok) => (posted = ok));
  await turn();
  assert.deepEqual(a.sentAs, [false]);
  assert.deepEqual(b.sentAs, [false]);
  assert.equal(posted, false);
  assert.equal(outbox.now({ t: 'hello' }), false);
});

test('in a worker: a session\'s admit and another\'s insert of the same turn go to the primary as one message; a lost channel fails the insert', async () => {
  const raw: ToPrimary[] = [];
  let ok = true;
  const outbox = new Outbox((m) => ok && (raw.push(m), true));
  const gate = new PrimaryGate(outbox, () => true);
  const store = new RemoteStore('/nonexistent', outbox, null);
  const body = store.createBody('QA');
  await body.write(Buffer.from('Subject: x\r\n\r\nhi\r\n'));
  const admitted = gate.admit('192.0.2.1');
  const inserted = store.insert({ queueId: 'QA', sender: 'a@a.test', recipients: [], size: 18 } as unknown as NewMessage, body).catch((e: Error) => e);
  // insert awaits the body's finish before it gathers: let it.
  for (let i = 0; i < 20 && raw.length === 0; i++) await turn();
  assert.equal(raw.length, 1, 'one IPC message');
  const m = raw[0]!;
  assert.equal(m.t, 'many');
  assert.deepEqual(m.t === 'many' && m.items.map((x) => x.t), ['conns', 'insert']);
  gate.answered([{ n: 1, refusal: null }]);
  assert.equal(await admitted, null);
  store.answered([{ n: 1, ok: true }]);
  assert.equal(await inserted, null);
  // The primary gone: the next insert is refused, never left waiting.
  ok = false;
  const body2 = store.createBody('QB');
  await body2.write(Buffer.from('x\r\n'));
  const lost = await store.insert({ queueId: 'QB', sender: 'a@a.test', recipients: [], size: 3 } as unknown as NewMessage, body2).catch((e: Error) => e);
  assert.ok(lost instanceof Error);
});

test('later: news that can wait rides with the next message that leaves anyway, or leaves alone after its wait', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const { outbox, writes } = recorder();
  const results = new Counter(outbox);
  const inserts = new Counter(outbox);
  results.addLater(1, 20);
  await turn();
  assert.equal(writes.length, 0, 'not alone at the end of the turn');
  results.addLater(2, 20);
  inserts.add(3);
  await turn();
  assert.deepEqual(writes, [[3, 1, 2]], 'rode with the insert: one message');
  t.mock.timers.tick(20);
  assert.equal(writes.length, 1, 'nothing left for the timer once it rode');
  results.addLater(4, 20);
  t.mock.timers.tick(19);
  assert.equal(writes.length, 1);
  t.mock.timers.tick(1);
  assert.deepEqual(writes[1], [4], 'alone, once its wait is over');
  results.addLater(5, 20);
  assert.equal(outbox.now({ t: 'hello' }), true);
  assert.deepEqual(writes[2], [5, -1], 'now takes it, before its own message');
});
