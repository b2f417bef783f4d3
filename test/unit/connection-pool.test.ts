// Unit tests for delivery/smtp/pool with fake clients (no sockets): the
// total cap (issue 17, "40 msg/s": a connection parked idle must free its
// slot at once for a job of another destination waiting at maxTotal, not
// after the idle timer) and the bounded tables that go with it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConnectionPool, type Lease } from '../../src/delivery/smtp/pool.js';
import type { SmtpClient } from '../../src/delivery/smtp/client.js';

interface Fake {
  usable: boolean;
  onClose: (() => void) | null;
  quits: number;
  quit(): Promise<void>;
  destroy(): void;
}

function fake(): Fake {
  return {
    usable: true,
    onClose: null,
    quits: 0,
    async quit() {
      this.quits++;
      this.usable = false;
    },
    destroy() {
      this.usable = false;
    },
  };
}

/** opener - an open() that hands out fresh fakes and remembers them. */
function opener(): { open: () => Promise<SmtpClient>; made: Fake[] } {
  const made: Fake[] = [];
  return {
    made,
    // The pool only uses usable/onClose/quit/destroy of a client: a fake stands in for it.
    open: async () => {
      const f = fake();
      made.push(f);
      return f as unknown as SmtpClient;
    },
  };
}

/** settled - let promise callbacks run (no timers: a wait for an idle timer would show as "not yet"). */
const settled = (): Promise<void> => new Promise((r) => setImmediate(r));

test('issue 17: a connection parked idle at maxTotal goes at once to a job of another destination waiting at the cap', async () => {
  // A 60 s idle timeout: before the fix, the waiter got its slot only when that timer fired.
  const pool = new ConnectionPool({ maxTotal: 2, maxPerDestination: 5, idleTimeoutMs: 60_000 });
  const o = opener();
  const a1 = await pool.acquire('a', o.open);
  const a2 = await pool.acquire('a', o.open);
  const box: { got: Lease | null } = { got: null };
  const got = (): Lease | null => box.got;
  const waiting = pool.acquire('b', o.open).then((l) => (box.got = l));
  await settled();
  assert.equal(got(), null, 'b waits: the cap is reached');
  pool.release(a1, true); // parked idle: nobody waits for "a"
  await settled();
  await settled();
  assert.ok(got(), 'b got a connection without waiting for the idle timer');
  await waiting;
  assert.equal(got()!.key, 'b');
  assert.equal(o.made[0]!.quits, 1, 'the idle connection of "a" was closed to make room');
  assert.equal(pool.size, 2, 'never more than maxTotal');
  pool.release(a2, false);
  pool.release(got()!, false);
  await pool.close();
  assert.equal(pool.destinations, 0);
});

test('issue 17: waiters of many destinations at the cap are served oldest first as slots free', async () => {
  const pool = new ConnectionPool({ maxTotal: 1, maxPerDestination: 5, idleTimeoutMs: 60_000 });
  const o = opener();
  const first = await pool.acquire('d0', o.open);
  const order: string[] = [];
  const leases: Promise<Lease>[] = [];
  for (let i = 1; i <= 5; i++) {
    leases.push(
      pool.acquire(`d${i}`, o.open).then((l) => {
        order.push(l.key);
        return l;
      }),
    );
  }
  await settled();
  assert.deepEqual(order, []);
  let lease = first;
  for (let i = 1; i <= 5; i++) {
    pool.release(lease, true);
    lease = await leases[i - 1]!;
    assert.ok(pool.size <= 1);
  }
  assert.deepEqual(order, ['d1', 'd2', 'd3', 'd4', 'd5']);
  pool.release(lease, true);
  await pool.close();
  assert.equal(pool.destinations, 0);
});

test('a released connection still goes first to a waiter of its own destination', async () => {
  const pool = new ConnectionPool({ maxTotal: 1, maxPerDestination: 5, idleTimeoutMs: 60_000 });
  const o = opener();
  const a = await pool.acquire('a', o.open);
  const b = pool.acquire('b', o.open);
  const a2 = pool.acquire('a', o.open);
  await settled();
  pool.release(a, true);
  const l = await a2;
  assert.equal(l.client, a.client, 'reused for the same destination');
  pool.release(l, false);
  const lb = await b;
  assert.equal(lb.key, 'b');
  pool.release(lb, false);
  await pool.close();
});

test('shaping: a provider limit holds across destinations; a suspended provider rejects at once with ProviderSuspended', async () => {
  const { Provider, ProviderSuspended } = await import('../../src/delivery/smtp/shaping.js');
  const pool = new ConnectionPool({ maxTotal: 10, maxPerDestination: 5, idleTimeoutMs: 60_000 });
  const p = new Provider({ match: '*.p.test', max_connections: 2 });
  const o = opener();
  const a = await pool.acquire('a', o.open, p);
  const b = await pool.acquire('b', o.open, p);
  const order: string[] = [];
  const c = pool.acquire('c', o.open, p).then((l) => (order.push('c'), l));
  await settled();
  assert.deepEqual(order, [], 'a third destination of the provider waits: 2 connections at once');
  assert.equal(p.open, 2);
  pool.release(a, false); // closed: once its QUIT is over, "c" may open
  const lc = await c;
  assert.equal(lc.key, 'c');
  assert.ok(p.open <= 2);
  // Suspended: a new job is not started, it learns when to come back.
  p.suspendedUntil = Date.now() + 60_000;
  p.suspendReply = '554 5.7.1 blocked';
  await assert.rejects(pool.acquire('d', o.open, p), (e: unknown) => e instanceof ProviderSuspended && e.until === p.suspendedUntil);
  pool.release(b, false);
  pool.release(lc, false);
  await pool.close();
});

test('shaping: a job without a message token waits for one timer, then goes (nothing spins)', async () => {
  const { Provider } = await import('../../src/delivery/smtp/shaping.js');
  const pool = new ConnectionPool({ maxTotal: 50, maxPerDestination: 50, idleTimeoutMs: 60_000 });
  const p = new Provider({ match: '*.p.test', message_rate: { count: 20, perMs: 1000 } }); // 20/s: a burst of 20, then one each 50 ms
  const o = opener();
  const leases: Lease[] = [];
  for (let i = 0; i < 20; i++) leases.push(await pool.acquire('a', o.open, p));
  let got = false;
  const next = pool.acquire('a', o.open, p).then((l) => ((got = true), l));
  await settled();
  assert.equal(got, false, 'the 21st waits for a token');
  leases.push(await next);
  assert.equal(p.sentLastMinute(), 21);
  for (const l of leases) pool.release(l, false);
  await pool.close();
});

test('shaping (issue 18): jobs a provider cannot take within holdMaxMs are put back with ProviderBusy, spread at its pace; others go on', async () => {
  const { Provider, ProviderBusy } = await import('../../src/delivery/smtp/shaping.js');
  const pool = new ConnectionPool({ maxTotal: 50, maxPerDestination: 50, idleTimeoutMs: 60_000, holdMaxMs: 100 });
  const p = new Provider({ match: '*.p.test', message_rate: { count: 12, perMs: 60_000 } }); // 12/m: one at once, then one each 5 s
  const o = opener();
  const leases: Lease[] = [await pool.acquire('a', o.open, p)];
  const t0 = Date.now();
  const waiting = Array.from({ length: 5 }, () => pool.acquire('a', o.open, p));
  const outcomes = await Promise.allSettled(waiting);
  const busy = outcomes.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as InstanceType<typeof ProviderBusy>);
  assert.equal(busy.length, 5, 'no token within 100 ms for any of them: all five put back');
  for (const e of busy) assert.ok(e instanceof ProviderBusy, String(e));
  const until = busy.map((e) => e.until);
  assert.ok(until[0]! >= t0 + 4000, 'not due again before the provider has a token for it');
  for (let i = 1; i < until.length; i++) assert.ok(until[i]! - until[i - 1]! >= 4999, `spread at the provider's pace (5 s apart): ${until.join(', ')}`);
  assert.match(busy[0]!.message, /not attempted: provider p\.test is at its limits \(12\/m messages\)/);
  // Another destination, unshaped, was never held up, and the pool's tables are empty again.
  const other = await pool.acquire('plain', o.open);
  pool.release(other, false);
  for (const l of leases) pool.release(l, false);
  await pool.close();
  assert.equal(pool.destinations, 0);
});
