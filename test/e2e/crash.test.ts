// kill -9 under load (invariant 1 and 3): while 2,000+ messages are being
// sent, Petrel is killed without warning and started again; every message
// that got 250 must reach the next hop (matched by Message-ID). Duplicates
// (at most the messages in flight at the kill) are reported, not hidden.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sendLoad } from '../helpers/load.js';
import { join } from 'node:path';
import { startChild, waitFor, cleanup, freePort, tempDir, baseConfig, spawnPetrel, type Child } from '../helpers/petrel-harness.js';
import { startPeer } from '../helpers/test-peer.js';

const TOTAL = 2400;
const CLIENTS = 12;

test(`kill -9 while ${TOTAL} messages are sent: every acknowledged message arrives`, async (t) => {
  const dir = tempDir();
  const sink = await startPeer({});
  const port = await freePort();
  const config = baseConfig(dir, `[smtp]\nlisten = ["127.0.0.1:${port}"]\nmax_connections_per_client = 100\n[delivery]\nsmarthost = "127.0.0.1:${sink.port}"\n[local]\ndomains = []\n[queue]\nretry_intervals = ["500ms"]\n[log]\nlevel = "error"\n`);
  let child: Child | null = null;
  try {
    child = await startChild(dir, config);
    const acked = new Set<string>();
    const next = { i: 0, to: TOTAL };
    const running = sendLoad(port, next, acked, { clients: CLIENTS, prefix: 'crash' });
    await waitFor(() => acked.size >= 800, 60_000, '800 acknowledged before the kill');
    child.kill('SIGKILL');
    await child.exited;
    await running;
    const atKill = acked.size;
    const sentAtKill = next.i;
    child = await startChild(dir, config);
    next.to = TOTAL;
    await sendLoad(port, next, acked, { clients: CLIENTS, prefix: 'crash' });
    assert.ok(next.i >= TOTAL, 'the whole load was offered');
    const arrived = (): string[] =>
      sink.transactions.filter((x) => x.completed && x.finalReplies[0]?.startsWith('2')).map((x) => /^Message-ID: (.*)$/m.exec(x.body.toString('latin1'))?.[1]?.trim() ?? '');
    await waitFor(() => [...acked].every((id) => arrived().includes(id)), 60_000, 'every acknowledged message at the sink');
    await new Promise((r) => setTimeout(r, 1000));
    const all = arrived();
    const unique = new Set(all);
    const lost = [...acked].filter((id) => !unique.has(id));
    const duplicates = all.length - unique.size;
    t.diagnostic(`acknowledged=${acked.size} (before kill ${atKill}, offered ${sentAtKill}) arrived=${all.length} unique=${unique.size} lost=${lost.length} duplicates=${duplicates}`);
    assert.deepEqual(lost, [], 'no acknowledged message lost');
    assert.ok(acked.size >= TOTAL - CLIENTS * 2, `nearly all ${TOTAL} acknowledged (${acked.size})`);
    // Only what was in flight at the kill can be repeated: at most one message per client connection
    // being delivered, plus what the scheduler had claimed; far below the total.
    assert.ok(duplicates <= 200, `duplicates ${duplicates} bounded by what was in flight`);
    // The fate audit agrees: every accepted recipient is at an end, nothing unexplained.
    const audit = spawnPetrel(['audit', '--config', join(dir, 'petrel.toml')], dir);
    assert.equal(await audit.exited, 0, audit.stdout() + audit.stderr());
    assert.match(audit.stdout(), /exceptions: 0/);
  } finally {
    child?.kill('SIGKILL');
    await child?.exited;
    await sink.close();
    cleanup(dir);
  }
});
