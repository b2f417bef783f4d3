// outbound-lmtp: the LMTP agent (RFC 2033) - one reply per accepted recipient
// after the data, each deciding that recipient alone; 452 re-sent; TCP and
// unix socket; connection lost among the per-recipient replies.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LmtpAgent } from '../../src/delivery/lmtp/lmtp-agent.js';
import type { NextHop } from '../../src/delivery/agent.js';
import { startPeer } from '../helpers/test-peer.js';
import { collect, makeJob, rcpts } from '../helpers/jobs.js';

const T = { connect: 1500, greeting: 1500, helo: 1500, mail: 1500, rcpt: 1500, data: 1500, dataBlock: 1500, dataEnd: 1500, rset: 1500, quit: 500 };
const tcpHop = (port: number): NextHop => ({ kind: 'lmtp', key: `lmtp:127.0.0.1:${port}`, host: '127.0.0.1', port });

test('LMTP: per-recipient replies after the data decide each recipient; 452 at RCPT is re-sent', async (t) => {
  const after: Record<string, string> = {
    'u1@example.net': '250 2.1.5 Saved',
    'u2@example.net': '452 4.2.2 Mailbox full',
    'u3@example.net': '550 5.1.1 Gone',
    'u4@example.net': '250 2.1.5 Saved',
  };
  const peer = await startPeer({
    lmtp: true,
    rcptLimit: { after: 3, reply: '452 4.5.3 Too many recipients' },
    rcptReply: (a) => (a === 'u6@example.net' ? '550 5.1.1 No such user' : undefined),
    lmtpReply: (a) => after[a] ?? '250 2.1.5 Saved',
  });
  const a = new LmtpAgent({ heloName: 'petrel.test', maxRecipientsPerTransaction: 100, timeouts: T });
  t.after(async () => {
    await a.close();
    await peer.close();
  });
  const job = makeJob(rcpts(7), tcpHop(peer.port));
  const c = collect(job);
  await a.deliver(job, c.report);
  const k = (n: number): string => `${c.byAddress.get(`u${n}@example.net`)!.kind} ${c.byAddress.get(`u${n}@example.net`)!.status}`;
  assert.equal(k(1), 'delivered 2.1.5');
  assert.equal(k(2), 'deferred 4.2.2');
  assert.equal(k(3), 'failed 5.1.1');
  assert.equal(k(4), 'delivered 2.1.5');
  assert.equal(k(5), 'delivered 2.1.5');
  assert.equal(k(6), 'failed 5.1.1');
  assert.equal(k(7), 'delivered 2.1.5');
  assert.equal(c.byAddress.get('u1@example.net')!.relayed, undefined, 'LMTP is final delivery, not relay');
  assert.equal(peer.connections[0]!.commands[0], 'LHLO petrel.test');
  assert.equal(peer.transactions.length, 3);
  assert.deepEqual(peer.transactions[0]!.accepted, ['u1@example.net', 'u2@example.net', 'u3@example.net']);
  assert.equal(peer.transactions[0]!.finalReplies.length, 3);
});

test('LMTP over a unix socket', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'petrel-lmtp-'));
  const path = join(dir, 'lmtp.sock');
  const peer = await startPeer({ lmtp: true, path });
  const a = new LmtpAgent({ heloName: 'petrel.test', maxRecipientsPerTransaction: 100, timeouts: T });
  t.after(async () => {
    await a.close();
    await peer.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const job = makeJob(rcpts(3), { kind: 'lmtp', key: `lmtp:${path}`, socket: path });
  const c = collect(job);
  await a.deliver(job, c.report);
  assert.equal(c.count('delivered'), 3);
  assert.equal(c.byAddress.get('u1@example.net')!.remote, `lmtp:${path}`);
  assert.deepEqual(peer.delivered(), rcpts(3));
});

test('LMTP: connection lost after the dot -> every accepted recipient deferred with possibleDuplicate', async (t) => {
  const peer = await startPeer({ lmtp: true, drop: 'dot' });
  const a = new LmtpAgent({ heloName: 'petrel.test', maxRecipientsPerTransaction: 100, timeouts: T });
  t.after(async () => {
    await a.close();
    await peer.close();
  });
  const job = makeJob(rcpts(2), tcpHop(peer.port));
  const c = collect(job);
  await a.deliver(job, c.report);
  assert.equal(c.count('deferred'), 2);
  for (const r of c.byAddress.values()) assert.equal(r.possibleDuplicate, true);
});

test('LMTP: server refuses to connect -> deferred for all', async (t) => {
  const peer = await startPeer({ lmtp: true });
  const port = peer.port;
  await peer.close();
  const a = new LmtpAgent({ heloName: 'petrel.test', maxRecipientsPerTransaction: 100, timeouts: T });
  t.after(() => a.close());
  const job = makeJob(rcpts(2), tcpHop(port));
  const c = collect(job);
  await a.deliver(job, c.report);
  assert.equal(c.count('deferred'), 2);
  assert.equal(c.byAddress.get('u1@example.net')!.status, '4.4.1');
});
