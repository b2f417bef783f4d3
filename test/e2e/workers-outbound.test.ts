// `[server] workers = 2`, deliveries (issue 17, phase 2): SMTP delivery jobs
// run in the worker processes, not in the primary — the test finds which
// process holds each outbound connection through /proc — and go round both
// workers; every message reaches the peer once. A fresh message is delivered
// by the worker that received it (its body stays there: workers/held-bodies),
// small or 100 KB. A worker killed while the
// peer holds its message (before the worker has the final reply) loses
// nothing: the primary defers the recipient ("the delivery worker ended"),
// retries it, and it is delivered (at least once: the peer may see it twice,
// as after any crash). SIGTERM with deliveries in progress in the workers:
// a restart on the same data_dir delivers every message.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { baseConfig, cleanup, exitedWithin, freePort, readEvents, startChild, tempDir, waitFor, type Child } from '../helpers/petrel-harness.js';
import { childPids, clientOf, holderOf } from '../helpers/processes.js';
import { SmtpTalk } from '../helpers/smtp-talk.js';
import { startPeer, type PeerTransaction, type TestPeer } from '../helpers/test-peer.js';

function config(dir: string, port: number, peerPort: number): string {
  return baseConfig(
    dir,
    `[smtp]\nlisten = ["127.0.0.1:${port}"]\n[server]\nworkers = 2\n[queue]\nretry_intervals = ["1s"]\n[delivery]\nsmarthost = "127.0.0.1:${peerPort}"\n[log]\nlevel = "error"\n`,
  );
}

const subjectOf = (tx: PeerTransaction): string => /^Subject: (.*)$/m.exec(tx.body.toString('latin1'))?.[1]?.trim() ?? '';

/** send - one message; resolves with the pid of the process that held the inbound connection (when `pids` are given). */
async function send(port: number, to: string, subject: string, pids: readonly number[] = [], text = `body of ${subject}\r\n`): Promise<number | null> {
  const t = await SmtpTalk.open(port);
  try {
    assert.equal((await t.read())?.code, 220);
    assert.equal((await t.cmd('EHLO client.test')).code, 250);
    const receiver = pids.length ? await waitFor(() => holderOf(port, t.localPort, pids), 5000, 'the worker holding the connection') : null;
    const r = await t.send('sender@example.com', [to], `Subject: ${subject}\r\n\r\n${text}`);
    assert.equal(r.code, 250, r.lines.join(' '));
    return receiver;
  } finally {
    t.close();
  }
}

describe('[server] workers = 2: deliveries run in the workers', () => {
  const dir = tempDir();
  let port = 0;
  let child: Child;
  let peer: TestPeer;
  let primary = 0;
  /** Subject -> the pids that held the connection its transactions came over. */
  const holders = new Map<string, number[]>();
  /** Subject whose final dot kills the worker holding the connection. */
  const doomed = new Set<string>();

  before(async () => {
    port = await freePort();
    peer = await startPeer({
      finalReply: (tx) => {
        const conn = peer.connections.find((c) => c.id === tx.connection);
        const pids = [primary, ...childPids(primary)];
        const holder = conn ? clientOf(peer.port, conn.remotePort, pids) : null;
        const subject = subjectOf(tx);
        holders.set(subject, [...(holders.get(subject) ?? []), holder ?? -1]);
        if (holder !== null && doomed.delete(subject)) process.kill(holder, 'SIGKILL');
        return '250 2.0.0 queued';
      },
    });
    child = await startChild(dir, config(dir, port, peer.port));
    primary = child.proc.pid!;
  });
  after(async () => {
    child.kill('SIGKILL');
    await exitedWithin(child, 5000);
    await peer.close();
    cleanup(dir);
  });

  test('SMTP deliveries are made by the workers, both of them, each message once', async () => {
    const workers = childPids(primary);
    assert.equal(workers.length, 2);
    for (let i = 0; i < 12; i++) await send(port, `out${i}@remote.test`, `out ${i}`);
    await waitFor(() => Array.from({ length: 12 }, (_, i) => holders.has(`out ${i}`)).every(Boolean), 20_000, 'all 12 at the peer');
    await new Promise((r) => setTimeout(r, 300));
    const used = new Set<number>();
    for (let i = 0; i < 12; i++) {
      const h = holders.get(`out ${i}`)!;
      assert.equal(h.length, 1, `out ${i} delivered once`);
      assert.ok(workers.includes(h[0]!), `out ${i} was sent by a worker (${h[0]}), not by the primary (${primary})`);
      used.add(h[0]!);
    }
    assert.equal(used.size, 2, 'both workers delivered');
    const events = readEvents(join(dir, 'var', 'log', 'events.jsonl'));
    assert.equal(events.filter((e) => e.event === 'delivered' && e.recipient?.startsWith('out')).length, 12, 'the primary recorded every outcome');
  });

  test('a fresh message is delivered by the worker that received it, a 100 KB one too (the body does not go back and forth)', async () => {
    const workers = childPids(primary);
    const line = 'x'.repeat(98) + '\r\n';
    const received = new Map<string, number>();
    for (let i = 0; i < 8; i++) {
      const subject = `same ${i}`;
      const big = i % 2 === 1;
      received.set(subject, (await send(port, `same${i}@remote.test`, subject, workers, big ? line.repeat(1000) : undefined))!);
    }
    await waitFor(() => [...received.keys()].every((s) => holders.has(s)), 20_000, 'all 8 at the peer');
    for (const [subject, receiver] of received) {
      assert.ok(workers.includes(receiver), `${subject}: received by a worker`);
      assert.deepEqual(holders.get(subject), [receiver], `${subject}: delivered once, by the worker that received it`);
    }
    const big = peer.transactions.find((tx) => subjectOf(tx) === 'same 1')!;
    assert.ok(big.body.length > 100_000, 'the 100 KB body arrived whole');
  });

  test('a worker killed before it has the final reply: the recipient is deferred, retried and delivered', async () => {
    doomed.add('doomed');
    await send(port, 'doomed@remote.test', 'doomed');
    const h = await waitFor(() => (holders.get('doomed')?.length ?? 0) >= 2 && holders.get('doomed'), 20_000, 'a second attempt at the peer');
    assert.notEqual(h[0], h[1], 'the second attempt came from another process');
    const events = await waitFor(() => {
      const all = readEvents(join(dir, 'var', 'log', 'events.jsonl')).filter((e) => e.recipient === 'doomed@remote.test');
      return all.some((e) => e.event === 'delivered') && all;
    }, 20_000, 'the delivered event');
    const deferred = events.filter((e) => e.event === 'deferred');
    assert.equal(deferred.length, 1, JSON.stringify(events));
    assert.match(deferred[0]!.error ?? '', /delivery worker \(pid \d+\) ended during the attempt/);
    assert.equal(events.filter((e) => e.event === 'delivered').length, 1);
    await waitFor(() => childPids(primary).length === 2 && !childPids(primary).includes(h[0]!), 20_000, 'the dead worker replaced');
  });

  test('SIGTERM with deliveries in progress in the workers: after a restart every message is delivered', async () => {
    const slow = await startPeer({ delayMs: 150 });
    try {
      // The same data_dir, now relaying to a slow peer: deliveries are in progress when SIGTERM comes.
      child.kill('SIGKILL');
      await exitedWithin(child, 5000);
      child = await startChild(dir, config(dir, port, slow.port));
      primary = child.proc.pid!;
      for (let i = 0; i < 8; i++) await send(port, `late${i}@remote.test`, `late ${i}`);
      child.kill('SIGTERM');
      await exitedWithin(child, 30_000);
      assert.match(child.stdout(), /petrel: stopped/);
      child = await startChild(dir, config(dir, port, slow.port));
      primary = child.proc.pid!;
      const subjects = (): string[] => slow.transactions.filter((tx) => tx.completed).map(subjectOf);
      await waitFor(() => Array.from({ length: 8 }, (_, i) => subjects().includes(`late ${i}`)).every(Boolean), 30_000, 'all 8 at the peer');
      const events = readEvents(join(dir, 'var', 'log', 'events.jsonl'));
      for (let i = 0; i < 8; i++) assert.ok(events.some((e) => e.event === 'delivered' && e.recipient === `late${i}@remote.test`), `late${i} recorded delivered`);
    } finally {
      await slow.close();
    }
  });
});
