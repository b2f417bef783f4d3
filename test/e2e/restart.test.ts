// Stop Petrel with work queued (next hop down), start it again on the same
// data directory, bring the next hop up: every recipient is delivered exactly
// once (invariant 3: a restart never repeats a finished delivery and never
// forgets an accepted recipient).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SmtpTalk } from '../helpers/smtp-talk.js';
import { startPetrel, waitFor, cleanup, freePort, tempDir, readEvents } from '../helpers/petrel-harness.js';
import { startPeer } from '../helpers/test-peer.js';
import { join } from 'node:path';

test('restart with a queue: each recipient delivered exactly once', async () => {
  const dir = tempDir();
  const port = await freePort();
  const config = `[delivery]\nsmarthost = "127.0.0.1:${port}"\ndead_destination_backoff = "100ms"\n[local]\ndomains = ["here.test"]\n[queue]\nretry_intervals = ["300ms"]\n`;
  let p = await startPetrel(config, {}, dir);
  const expected: string[] = [];
  try {
    const t = await SmtpTalk.open(p.port);
    await t.read();
    await t.cmd('EHLO client.test');
    for (let i = 0; i < 10; i++) {
      const rcpts = [`a${i}@remote.example`, `b${i}@remote.example`, `c${i}@here.test`];
      const r = await t.send('sender@example.com', rcpts, `Subject: restart ${i}\r\nMessage-ID: <restart-${i}@example.com>\r\n\r\nbody ${i}\r\n`);
      assert.equal(r.code, 250);
      expected.push(rcpts[0]!, rcpts[1]!);
    }
    t.close();
    // The local recipients are delivered at once; the remote ones are deferred (next hop down).
    await waitFor(() => p.events().filter((e) => e.event === 'deferred').length >= 20, 10_000, 'deferrals');
    await waitFor(() => p.events().filter((e) => e.event === 'delivered').length === 10, 10_000, 'local deliveries');
    await p.stop();

    p = await startPetrel(config, {}, dir);
    const sink = await startPeer({ port });
    try {
      await waitFor(() => sink.delivered().length >= 20, 15_000, 'delivery after restart');
      await new Promise((r) => setTimeout(r, 1000)); // time for any duplicate to show
      assert.deepEqual([...sink.delivered()].sort(), expected.sort(), 'each remote recipient exactly once');
      await waitFor(() => p.events().filter((e) => e.event === 'delivered').length === 30, 5000, 'delivered events');
      const events = readEvents(join(dir, 'var', 'log', 'events.jsonl'));
      const delivered = events.filter((e) => e.event === 'delivered').map((e) => e.recipient);
      assert.equal(new Set(delivered).size, 30, 'no recipient delivered twice');
      assert.deepEqual(await p.petrel.store.list({ limit: 100 }), [], 'queue empty');
    } finally {
      await sink.close();
    }
  } finally {
    await p.stop();
    cleanup(dir);
  }
});
