// Retry means now (issue 16): a destination that refused connections a moment
// ago is backed off (dead_destination_backoff, here 10 minutes); it comes
// back, the operator runs `petrel queue retry --destination`, and the mail is
// delivered at once — not after the back-off, not at the next scheduled retry
// (1 hour). And while a destination is backed off, a due recipient is not
// answered "down" without a connection tried for it: its attempt is a real one
// (the probe of a dead destination, as Postfix makes).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startPetrel, tempDir, cleanup, freePort, waitFor } from '../helpers/petrel-harness.js';
import { SmtpTalk } from '../helpers/smtp-talk.js';
import { startPeer } from '../helpers/test-peer.js';
import { runCli } from '../helpers/run-cli.js';

async function send(port: number, to: string, id: string): Promise<string> {
  const t = await SmtpTalk.open(port);
  await t.read();
  await t.cmd('EHLO client.test');
  const r = await t.send('alice@example.com', [to], `Subject: ${id}\r\nMessage-ID: <${id}@client.test>\r\n\r\nhello\r\n`);
  await t.cmd('QUIT');
  t.close();
  assert.equal(r.code, 250, r.lines.join(' '));
  return /queued as (\S+)/.exec(r.lines.join(' '))![1]!;
}

test('queue retry QUEUE_ID / --destination on a destination backed off after turned-away connections: delivered at once', async (t) => {
  const dir = tempDir();
  const deadPort = await freePort();
  const adminPort = await freePort();
  const p = await startPetrel(
    `[queue]\nretry_intervals = ["1h"]\n[delivery]\nsmarthost = "127.0.0.1:${deadPort}"\ndead_destination_backoff = "10m"\n[admin]\nlisten = "127.0.0.1:${adminPort}"\n`,
    {},
    dir,
  );
  t.after(async () => {
    await p.stop();
    cleanup(dir);
  });
  const dest = `[127.0.0.1]:${deadPort}`;
  // The destination turns every connection away (421 at greeting): each is counted.
  const down = await startPeer({ port: deadPort, greeting: '421 4.3.2 down for maintenance' });
  const q1 = await send(p.port, 'bob@far.example', 'first');
  await waitFor(async () => (await p.petrel.store.getRecipients(q1))[0]?.state === 'deferred', 10_000, 'the first deferred');
  // A second message while the back-off is in force: deferred too, after a real connection attempt (refused).
  const q2 = await send(p.port, 'carol@far.example', 'second');
  await waitFor(async () => (await p.petrel.store.getRecipients(q2))[0]?.state === 'deferred', 10_000, 'the second deferred');
  for (const q of [q1, q2]) {
    const [r] = await p.petrel.store.getRecipients(q);
    assert.equal(r!.attempts, 1);
    assert.match(r!.lastReply, /421 4\.3\.2 down for maintenance/);
  }
  assert.equal(down.connections.length, 2, 'the second attempt, during the back-off, was a real connection');
  await down.close();

  // The destination comes back; the operator retries it.
  const peer = await startPeer({ port: deadPort });
  t.after(() => peer.close());
  // Watch the pool: the retry must end the back-off of the hop, not wait it out.
  const ended: string[] = [];
  const pool = p.petrel.pool;
  const clear = pool.clearBackOff.bind(pool);
  pool.clearBackOff = (hopKey: string) => {
    const keys = clear(hopKey);
    ended.push(...keys);
    return keys;
  };
  const t0 = Date.now();
  const cfg = join(dir, 'petrel.toml');
  // One message by its queue id, then the rest of the destination.
  const one = await runCli(['queue', 'retry', q1, '--reason', 'peer is back?', '--config', cfg], '', { cwd: dir });
  assert.equal(one.code, 0, one.stderr);
  assert.match(one.stdout, /retry: 1 recipient\(s\) changed/);
  assert.equal(ended.length, 1, 'the back-off of the smarthost hop ended with the retry');
  assert.match(ended[0]!, new RegExp(`:127\\.0\\.0\\.1:${deadPort}:`));
  await waitFor(async () => (await p.petrel.store.getMessage(q1)) === null, 30_000, 'the first delivered');
  assert.ok((await p.petrel.store.getMessage(q2)) !== null, 'the second waits for its own retry (1 hour)');
  const retry = await runCli(['queue', 'retry', '--destination', dest, '--reason', 'peer is back', '--config', cfg], '', { cwd: dir });
  assert.equal(retry.code, 0, retry.stderr);
  assert.match(retry.stdout, /retry: 1 recipient\(s\) changed/);
  await waitFor(async () => (await p.petrel.store.getMessage(q2)) === null, 30_000, 'the second delivered');
  assert.ok(Date.now() - t0 < 60_000, 'at once, not after the 10-minute back-off (nor the 1-hour retry)');
  assert.deepEqual(peer.transactions.flatMap((x) => x.rcpts.map((r) => r.address)).sort(), ['bob@far.example', 'carol@far.example']);
  for (const q of [q1, q2]) {
    const delivered = (await p.petrel.store.eventsOf(q, 0, 100)).filter((e) => e.event === 'delivered');
    assert.deepEqual(delivered.map((e) => e.attempt), [2], 'one more attempt each');
  }
});
