// shaping (issue 18): traffic shaping per provider through a whole Petrel,
// with scriptable peers on 127.0.0.x and the loopback DNS server.
// - a peer that answers 421 4.7.28 beyond 20 messages in a (short) window:
//   Petrel slows down (a `throttled` event with that reply), recovers
//   (`unthrottled` events) and delivers everything, never a bounce;
// - 200 domains whose MX hosts (five different host sets) share one suffix
//   are one provider: its connection limit holds across all of them;
// - a peer that answers 554 5.7.1 ... blocked: the provider is suspended (one
//   event), its recipients wait without bounce, `petrel queue resume
//   --destination <provider>` sends them.
// - a backlog for a slow provider does not starve other destinations: jobs
//   its rate cannot take within ~2 s are put back (no attempt counted) and
//   give their in-flight room back;
// - a suspension survives a restart (data_dir/shaping.json); a reload
//   changes a provider's limits and keeps its state.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { SmtpTalk } from '../helpers/smtp-talk.js';
import { startPetrel, waitFor, cleanup, freePort, tempDir, baseConfig, type InProcess } from '../helpers/petrel-harness.js';
import { parseConfigText } from '../../src/config/load.js';
import { startPeer } from '../helpers/test-peer.js';
import { startDnsServer } from '../helpers/dns-server.js';
import { runCli } from '../helpers/run-cli.js';

async function sendAll(p: InProcess, rcpts: string[]): Promise<void> {
  const t = await SmtpTalk.open(p.port);
  await t.read();
  await t.cmd('EHLO client.test');
  for (const [i, r] of rcpts.entries()) assert.equal((await t.send('alice@home.test', [r], `Subject: ${i}\r\n\r\nbody ${i}\r\n`)).code, 250);
  t.close();
}

const count = (p: InProcess, name: string): number => p.events().filter((e) => e.event === name).length;

test('421 4.7.28 beyond 20 messages in a window: Petrel slows down, recovers, delivers all without a bounce', async () => {
  const WINDOW_MS = 2000;
  const N = 120;
  const port = await freePort('127.0.0.2');
  const accepted: number[] = [];
  const peer = await startPeer({
    host: '127.0.0.2',
    port,
    finalReply: () => {
      const now = Date.now();
      while (accepted.length && accepted[0]! < now - WINDOW_MS) accepted.shift();
      if (accepted.length >= 20) return '421 4.7.28 [127.0.0.1] Our system has detected an unusual rate of unsolicited mail';
      accepted.push(now);
      return '250 2.0.0 ok';
    },
  });
  const dns = await startDnsServer({ '*.fast.test': { MX: [[10, 'mx.throttle.test']] }, 'mx.throttle.test': { A: ['127.0.0.2'] } });
  const p = await startPetrel(
    `[queue]\nretry_intervals = ["1s"]\n[delivery]\nsmtp_port = ${port}\ndns_servers = ["${dns.address}"]\nthrottle_hold = "500ms"\nthrottle_recovery_messages = 3\n` +
      `[[shaping]]\nmatch = "*.throttle.test"\nmax_connections = 2\nmessage_rate = "900/m"\n[local]\ndomains = ["home.test"]\n`,
  );
  try {
    await sendAll(
      p,
      Array.from({ length: N }, (_, i) => `user@d${i}.fast.test`),
    );
    await waitFor(() => new Set(peer.delivered()).size === N, 120_000, 'every message delivered');
    await waitFor(() => count(p, 'delivered') === N, 10_000, 'delivered events');
    assert.equal(peer.delivered().length, N, 'each once');
    assert.equal(count(p, 'failed') + count(p, 'expired'), 0, 'never a bounce');
    const throttled = p.events().filter((e) => e.event === 'throttled');
    assert.ok(throttled.length >= 1, 'the slow-down is an event');
    assert.match(throttled[0]!.reply ?? '', /^421 4\.7\.28/, 'with the reply that caused it');
    assert.equal(throttled[0]!.state, 'provider');
    assert.match(throttled[0]!.detail ?? '', /provider throttle\.test slowed/);
    const up = p.events().filter((e) => e.event === 'unthrottled');
    assert.ok(up.length >= 1, 'the recovery is an event');
    assert.ok(up[0]!.seq! > throttled[0]!.seq!, 'recovery after the slow-down');
    // Deferred by 421: each was a real, counted attempt, and went later. The others
    // deferred were put back unattempted (held longer than the pool keeps a job waiting).
    for (const d of p.events().filter((e) => e.event === 'deferred')) {
      if (d.attempt !== undefined) assert.match(d.reply ?? '', /^421 4\.7\.28/);
      else assert.match(d.error ?? '', /^not attempted: provider throttle\.test is at its limits/);
    }
  } finally {
    await p.stop();
    await peer.close();
    await dns.close();
    cleanup(p.dir);
  }
});

test('200 domains behind five MX host sets with one suffix are one provider: its connection limit holds across them', async () => {
  const N = 200;
  const port = await freePort('127.0.0.2');
  const peer = await startPeer({ host: '127.0.0.2', port, delayMs: 5 });
  const table: Parameters<typeof startDnsServer>[0] = {};
  for (let h = 0; h < 5; h++) table[`mx${h}.prov.test`] = { A: ['127.0.0.2'] };
  for (let i = 0; i < N; i++) table[`d${i}.many.test`] = { MX: [[10, `mx${i % 5}.prov.test`]] };
  const dns = await startDnsServer(table);
  const p = await startPetrel(
    `[delivery]\nsmtp_port = ${port}\ndns_servers = ["${dns.address}"]\nmax_connections_per_destination = 20\n[[shaping]]\nmatch = "*.prov.test"\nmax_connections = 2\n[local]\ndomains = ["home.test"]\n`,
  );
  try {
    await sendAll(
      p,
      Array.from({ length: N }, (_, i) => `user@d${i}.many.test`),
    );
    await waitFor(() => peer.delivered().length >= N, 60_000, 'every message delivered');
    assert.equal(new Set(peer.delivered()).size, N);
    assert.equal(peer.delivered().length, N, 'each once');
    // Sessions in use at once (a connection past QUIT, being torn down while its successor opens, is not one).
    assert.ok(peer.maxActive <= 2, `the provider's 2 connections held across 5 host sets and ${N} domains (saw ${peer.maxActive})`);
    assert.ok(peer.maxActive >= 1);
  } finally {
    await p.stop();
    await peer.close();
    await dns.close();
    cleanup(p.dir);
  }
});

test('554 5.7.1 ... blocked: the provider is suspended (one event), recipients wait unbounced, petrel queue resume sends them', async () => {
  const N = 6;
  const port = await freePort('127.0.0.3');
  const adminPort = await freePort();
  let blocked = true;
  const peer = await startPeer({
    host: '127.0.0.3',
    port,
    rcptReply: () => (blocked ? '554 5.7.1 Service unavailable; client [127.0.0.1] blocked using zen.example' : undefined),
  });
  const dns = await startDnsServer({ '*.blocked.test': { MX: [[10, 'mx.block.test']] }, 'mx.block.test': { A: ['127.0.0.3'] } });
  const dir = tempDir();
  const p = await startPetrel(
    `[queue]\nretry_intervals = ["300ms"]\n[delivery]\nsmtp_port = ${port}\ndns_servers = ["${dns.address}"]\nblock_suspend = "10m"\n` +
      `[[shaping]]\nmatch = "*.block.test"\nmax_connections = 1\n[local]\ndomains = ["home.test"]\n[admin]\nlisten = "127.0.0.1:${adminPort}"\n`,
    {},
    dir,
  );
  try {
    await sendAll(
      p,
      Array.from({ length: N }, (_, i) => `user@d${i}.blocked.test`),
    );
    await waitFor(() => count(p, 'suspended') >= 1, 20_000, 'the suspension');
    // Let the retries come due while suspended: they wait, no new attempt reaches the peer.
    await new Promise((r) => setTimeout(r, 1500));
    const suspended = p.events().filter((e) => e.event === 'suspended');
    assert.equal(suspended.length, 1, 'one event');
    assert.equal(suspended[0]!.state, 'provider');
    assert.match(suspended[0]!.reply ?? '', /^554 5\.7\.1 .*blocked/);
    assert.match(suspended[0]!.detail ?? '', /provider block\.test suspended/);
    assert.equal(count(p, 'failed') + count(p, 'expired'), 0, 'nothing bounced');
    const refused = peer.transactions.flatMap((t) => t.rcpts).map((r) => r.address);
    const attempted = p.events().filter((e) => e.event === 'deferred' && e.attempt !== undefined);
    assert.deepEqual(attempted.map((e) => e.recipient).sort(), [...refused].sort(), 'only the recipients that met the block were attempted (one attempt each)');
    assert.ok(attempted.length < N, `the others waited without an attempt (${attempted.length} of ${N} attempted)`);
    // The others were put back in the queue, not attempted: an event each, no attempt number, attempts still 0.
    const putBack = p.events().filter((e) => e.event === 'deferred' && e.attempt === undefined);
    assert.ok(putBack.length >= N - attempted.length);
    for (const e of putBack) assert.match(e.detail ?? '', /not attempted: held back by traffic shaping/);

    const cfg = join(dir, 'petrel.toml');
    // The operator sees it: `petrel queue` and /metrics.
    const q = await runCli(['queue', '--config', cfg], '', { cwd: dir });
    assert.match(q.stdout, /PROVIDER/);
    assert.match(q.stdout, /block\.test .*until .*554 5\.7\.1/);
    const metrics = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
    assert.match(metrics, /petrel_shaping_suspended\{provider="block\.test"\} 1/);
    blocked = false;
    const r = await runCli(['queue', 'resume', '--destination', 'block.test', '--reason', 'delisted', '--config', cfg], '', { cwd: dir });
    assert.equal(r.code, 0, r.stderr + r.stdout);
    await waitFor(() => count(p, 'delivered') === N, 20_000, 'all delivered after the resume');
    for (const d of p.events().filter((e) => e.event === 'delivered')) {
      assert.equal(d.attempt, refused.includes(d.recipient!) ? 2 : 1, `${d.recipient}: only real attempts counted`);
    }
    assert.equal(p.events().filter((e) => e.event === 'resumed' && e.state === 'provider').length, 1);
    assert.equal(count(p, 'failed') + count(p, 'expired'), 0);
    assert.equal(new Set(peer.delivered()).size, N);
  } finally {
    await p.stop();
    await peer.close();
    await dns.close();
    cleanup(dir);
  }
});

test('a backlog for a slow provider does not hold the in-flight room: other mail goes, the backlog waits in the queue unattempted', async () => {
  const SLOW = 30;
  const slowPort = await freePort('127.0.0.2');
  const slow = await startPeer({ host: '127.0.0.2', port: slowPort });
  const fast = await startPeer({ host: '127.0.0.3', port: slowPort }); // MX delivery uses one port: the same on both addresses
  const dns = await startDnsServer({ '*.slow.test': { MX: [[10, 'mx.slowprov.test']] }, 'mx.slowprov.test': { A: ['127.0.0.2'] }, 'fast.test': { MX: [[10, 'mx.fast.test']] }, 'mx.fast.test': { A: ['127.0.0.3'] } });
  // 6 messages a minute for the provider; at most 10 recipients in flight: without the put-back,
  // ten jobs waiting for tokens (one each 10 s) would keep fast.test's mail out for minutes.
  const p = await startPetrel(
    `[queue]\nmax_in_flight = 10\n[delivery]\nsmtp_port = ${slowPort}\ndns_servers = ["${dns.address}"]\n` +
      `[[shaping]]\nmatch = "*.slowprov.test"\nmessage_rate = "6/m"\n[local]\ndomains = ["home.test"]\n`,
  );
  try {
    await sendAll(
      p,
      Array.from({ length: SLOW }, (_, i) => `user@d${i}.slow.test`),
    );
    await sendAll(p, ['a@fast.test', 'b@fast.test', 'c@fast.test']);
    await waitFor(() => fast.delivered().length >= 3, 60_000, "fast.test's mail delivered while the slow provider's backlog waits");
    assert.ok(slow.delivered().length < SLOW, 'the slow provider got mail at its pace, not all of it');
    const putBack = p.events().filter((e) => e.event === 'deferred' && e.attempt === undefined);
    assert.ok(putBack.length >= 1, 'jobs of the slow provider were put back');
    for (const e of putBack) {
      assert.match(e.recipient ?? '', /@d\d+\.slow\.test$/);
      assert.match(e.error ?? '', /not attempted: provider slowprov\.test is at its limits \(6\/m messages\); next try at /);
      assert.match(e.detail ?? '', /held back by traffic shaping; the attempt count is unchanged/);
    }
    assert.equal(p.events().filter((e) => e.event === 'deferred' && e.attempt !== undefined).length, 0, 'no attempt was charged for waiting');
    assert.equal(count(p, 'failed') + count(p, 'expired'), 0, 'nothing bounced');
    const delivered = p.events().filter((e) => e.event === 'delivered');
    for (const d of delivered) assert.equal(d.attempt, 1, `${d.recipient}: delivered at its first attempt`);
  } finally {
    await p.stop();
    await slow.close();
    await fast.close();
    await dns.close();
    cleanup(p.dir);
  }
});

test('a suspension survives a restart; a reload changes a provider’s limits and keeps its state', async () => {
  const port = await freePort('127.0.0.3');
  const peer = await startPeer({ host: '127.0.0.3', port, rcptReply: () => '554 5.7.1 Service unavailable; client [127.0.0.1] blocked using zen.example' });
  const dns = await startDnsServer({ '*.blocked.test': { MX: [[10, 'mx.block.test']] }, 'mx.block.test': { A: ['127.0.0.3'] } });
  const dir = tempDir();
  const adminPort = await freePort();
  const conf = (maxConns: number): string =>
    `[delivery]\nsmtp_port = ${port}\ndns_servers = ["${dns.address}"]\nblock_suspend = "10m"\n[[shaping]]\nmatch = "*.block.test"\nmax_connections = ${maxConns}\n[local]\ndomains = ["home.test"]\n[admin]\nlisten = "127.0.0.1:${adminPort}"\n`;
  let p = await startPetrel(conf(3), {}, dir);
  try {
    await sendAll(p, ['user@d1.blocked.test']);
    await waitFor(() => count(p, 'suspended') >= 1, 20_000, 'the suspension');
    const until = p.petrel.shaper!.get('block.test')!.suspendedUntil;
    await p.stop();
    p = await startPetrel(conf(3), {}, dir);
    const again = p.petrel.shaper!.get('block.test');
    assert.ok(again?.suspended, 'still suspended after the restart');
    assert.equal(again.suspendedUntil, until, 'until the same time');
    const q = await runCli(['queue', '--config', join(dir, 'petrel.toml')], '', { cwd: dir });
    assert.match(q.stdout, /block\.test .*until .*554 5\.7\.1/);
    assert.equal(peer.transactions.length, 1, 'the restart did not try the blocked provider again');
    // A reload with another limit: the same provider, still suspended, with the new limit.
    const next = parseConfigText(baseConfig(dir, conf(7)), join(dir, 'petrel.toml'), dir);
    await p.petrel.reconfigure(next);
    const reloaded = p.petrel.shaper!.get('block.test')!;
    assert.equal(reloaded, again);
    assert.equal(reloaded.maxConnections, 7);
    assert.ok(reloaded.suspended);
    assert.equal(count(p, 'failed') + count(p, 'expired'), 0, 'nothing bounced');
  } finally {
    await p.stop();
    await peer.close();
    await dns.close();
    cleanup(dir);
  }
});
