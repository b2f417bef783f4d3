// DESIGN.md invariant 6 and seed 002: no table in Petrel can fill. The ones
// with a fixed bound evict (and a full one changes nothing about mail); the
// others hold only what is in use and drain when it is done.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { AdminAuth, MAX_SESSIONS } from '../../src/admin/auth.js';
import { AuthThrottle } from '../../src/inbound/auth-throttle.js';
import { RelayNetworks, REMEMBERED_ADDRESSES } from '../../src/inbound/policy.js';
import { SmtpTalk } from '../helpers/smtp-talk.js';
import { startPetrel, waitFor, cleanup } from '../helpers/petrel-harness.js';

function request(headers: Record<string, string>): IncomingMessage {
  return { headers: { host: '127.0.0.1:8025', ...headers } } as unknown as IncomingMessage;
}

test('admin sessions: a full table evicts the oldest; the newest and the bearer token still work', () => {
  const auth = new AdminAuth('s3cret');
  const first = auth.login('s3cret')!;
  const ids = [first];
  for (let i = 0; i < MAX_SESSIONS + 10; i++) ids.push(auth.login('s3cret')!);
  assert.equal(auth.allowed(request({ cookie: `petrel_session=${first}` })), false, 'the oldest session was evicted');
  assert.equal(auth.allowed(request({ cookie: `petrel_session=${ids.at(-1)!}` })), true);
  assert.equal(auth.allowed(request({ authorization: 'Bearer s3cret' })), true);
  assert.equal(auth.login('wrong'), null);
});

test('relay_networks answers per client address: remembered up to a bound, right before and after the table starts afresh', () => {
  const nets = new RelayNetworks(['10.1.0.0/16', '127.0.0.0/8', '2001:db8::/32']);
  const expect = (ip: string): boolean => ip.startsWith('10.1.') || ip.startsWith('127.') || ip.startsWith('::ffff:127.') || ip.startsWith('2001:db8:');
  const sample = ['10.1.2.3', '10.2.2.3', '127.0.0.1', '::ffff:127.0.0.9', '2001:db8::25', '2001:db9::25', 'not an address', ''];
  for (let round = 0; round < 3; round++) {
    for (const ip of sample) assert.equal(nets.contains(ip), expect(ip), `${ip} (round ${round})`);
    // A flood of distinct addresses, half inside: the table never passes its bound.
    for (let i = 0; i < REMEMBERED_ADDRESSES * 1.5; i++) {
      const ip = `10.${1 + (i % 2)}.${(i >> 8) & 255}.${i & 255}`;
      assert.equal(nets.contains(ip), i % 2 === 0, ip);
      assert.ok(nets.remembered <= REMEMBERED_ADDRESSES);
    }
  }
});

test('failed logins per address: delays grow and fade; a full table forgets the least recent address, nothing else', () => {
  let now = 1_000_000;
  const t = new AuthThrottle({ stepMs: 1000, maxDelayMs: 5000, forgetMs: 60_000, maxEntries: 100, now: () => now });
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7].map(() => t.failed('192.0.2.1')), [1000, 2000, 3000, 4000, 5000, 5000, 5000]);
  assert.equal(t.failed('192.0.2.2'), 1000, 'another address starts at one');
  now += 61_000;
  assert.equal(t.failed('192.0.2.1'), 1000, 'a count fades after forgetMs of quiet');
  // Fill the table with a flood of addresses: it stays at its bound.
  for (let i = 0; i < 1000; i++) t.failed(`198.51.100.${i % 250}-${i}`);
  assert.equal(t.size, 100);
  assert.equal(t.failures('192.0.2.1'), 0, 'the least recent address was forgotten');
  assert.equal(t.failed('192.0.2.1'), 1000, 'a forgotten address is slowed again from one');
  assert.equal(t.total, 1010);
});

test('per-client connection counts, scheduler passes and jobs drain to nothing after the work is done', async () => {
  const p = await startPetrel('[local]\ndomains = ["localhost"]\n');
  try {
    const talks: SmtpTalk[] = [];
    for (let i = 0; i < 20; i++) {
      const t = await SmtpTalk.open(p.port);
      await t.read();
      await t.cmd('EHLO c.test');
      assert.equal((await t.send('a@example.com', [`u${i}@localhost`], 'Subject: x\r\n\r\ny\r\n')).code, 250);
      talks.push(t);
    }
    for (const t of talks) t.close();
    await waitFor(() => p.petrel.inbound!.connectionCount === 0, 5000, 'sessions to end');
    await waitFor(() => p.events().filter((e) => e.event === 'delivered').length === 20, 10_000, 'deliveries');
    await waitFor(() => p.petrel.scheduler.tableSizes.passes === 0 && p.petrel.scheduler.tableSizes.jobs === 0, 5000, 'scheduler tables to drain');
    assert.equal(p.petrel.scheduler.busy, 0);
    assert.equal((p.petrel.inbound as unknown as { perClient: Map<string, number> }).perClient.size, 0, 'no per-client entry left behind');
  } finally {
    await p.stop();
    cleanup(p.dir);
  }
});
