// Seed 004 made into a test: damaged queue files are never deleted and never
// stop the rest. A truncated body file, a missing body, a recipient row with
// garbage in its state, and recipients whose message row is gone: each
// message goes to quarantine with an event at start; the undamaged message is
// delivered; a repaired message is released and delivered.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, truncateSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { SmtpTalk } from '../helpers/smtp-talk.js';
import { startPetrel, waitFor, cleanup, freePort, tempDir } from '../helpers/petrel-harness.js';
import { startPeer } from '../helpers/test-peer.js';
import { EmbeddedStore } from '../../src/queue/embedded-store.js';

test('damaged messages are quarantined with events, the rest is delivered, a repaired one is released', async () => {
  const dir = tempDir();
  const port = await freePort();
  const config = `[delivery]\nsmarthost = "127.0.0.1:${port}"\n[local]\ndomains = []\n[queue]\nretry_intervals = ["200ms"]\n`;
  let p = await startPetrel(config, {}, dir);
  const ids: Record<string, string> = {};
  try {
    const t = await SmtpTalk.open(p.port);
    await t.read();
    await t.cmd('EHLO client.test');
    const big = 'x'.repeat(300_000);
    for (const name of ['truncated', 'missing', 'garbage', 'orphan', 'healthy']) {
      const body = `Subject: ${name}\r\nMessage-ID: <${name}@example.com>\r\n\r\n${name === 'truncated' || name === 'missing' ? big : name}\r\n`;
      const r = await t.send('alice@example.com', [`${name}@remote.example`], body);
      assert.equal(r.code, 250);
      ids[name] = /queued as ([0-9A-Z]{16})/.exec(r.lines[0]!)![1]!;
    }
    t.close();
    await waitFor(() => p.events().filter((e) => e.event === 'deferred').length >= 5, 10_000, 'first attempts');
  } finally {
    await p.stop();
  }
  // Damage the queue while Petrel is down.
  const spool = (qid: string): string => join(dir, 'var', 'spool', qid.slice(-1), qid);
  copyFileSync(spool(ids.truncated!), join(dir, 'saved-body'));
  truncateSync(spool(ids.truncated!), 1000);
  unlinkSync(spool(ids.missing!));
  const db = new Database(join(dir, 'var', 'queue', 'queue.db'));
  db.prepare(`UPDATE recipients SET state = 'zzz-garbage' WHERE qid = ?`).run(ids.garbage);
  db.prepare(`DELETE FROM messages WHERE qid = ?`).run(ids.orphan);
  db.close();

  const sink = await startPeer({ port });
  p = await startPetrel(config, {}, dir);
  try {
    await waitFor(() => sink.delivered().length === 1, 10_000, 'the healthy message');
    assert.deepEqual(sink.delivered(), ['healthy@remote.example']);
    await waitFor(() => p.events().filter((e) => e.event === 'quarantined').length === 4, 5000, 'quarantine events');
    const q = p.events().filter((e) => e.event === 'quarantined');
    const why = Object.fromEntries(q.map((e) => [e.queue_id, e.error]));
    assert.match(why[ids.truncated!]!, /300\d+ were accepted|truncated/);
    assert.match(why[ids.missing!]!, /missing/);
    assert.match(why[ids.garbage!]!, /damaged recipient row/);
    assert.match(why[ids.orphan!]!, /message row missing/);
    const quarantined = await p.petrel.store.list({ limit: 10, quarantined: true });
    assert.deepEqual(quarantined.map((m) => m.queueId).sort(), [ids.truncated, ids.missing, ids.garbage, ids.orphan].sort());
    // Nothing was deleted: the truncated body is still there, as damaged as it was.
    assert.equal((await p.petrel.store.getRecipients(ids.orphan!)).length, 1);

    // The operator repairs the truncated body and releases the message.
    copyFileSync(join(dir, 'saved-body'), spool(ids.truncated!));
    const released = await (p.petrel.store as EmbeddedStore).release(ids.truncated!, { who: 'test', reason: 'body restored from backup' });
    assert.equal(released.changed, 1);
    await waitFor(() => sink.delivered().length === 2, 10_000, 'the released message');
    assert.equal(sink.delivered()[1], 'truncated@remote.example');
    await waitFor(() => p.events().some((e) => e.event === 'released'), 5000, 'released event');
    assert.match(p.events().find((e) => e.event === 'released')!.detail!, /test: body restored from backup/);
  } finally {
    await p.stop();
    await sink.close();
    cleanup(dir);
  }
});

test('a body truncated while Petrel runs is caught at delivery: no partial message leaves, the message is quarantined', async () => {
  const dir = tempDir();
  const port = await freePort();
  const p = await startPetrel(`[delivery]\nsmarthost = "127.0.0.1:${port}"\ndead_destination_backoff = "0ms"\n[local]\ndomains = []\n[queue]\nretry_intervals = ["200ms"]\n`, {}, dir);
  let sink: Awaited<ReturnType<typeof startPeer>> | null = null;
  try {
    const t = await SmtpTalk.open(p.port);
    await t.read();
    await t.cmd('EHLO client.test');
    const r = await t.send('alice@example.com', ['bob@remote.example'], `Subject: big\r\nMessage-ID: <cut@example.com>\r\n\r\n${`${'y'.repeat(98)}\r\n`.repeat(4000)}`);
    const qid = /queued as ([0-9A-Z]{16})/.exec(r.lines[0]!)![1]!;
    t.close();
    await waitFor(() => p.events().some((e) => e.event === 'deferred'), 10_000, 'a first failed attempt');
    truncateSync(join(dir, 'var', 'spool', qid.slice(-1), qid), 200_000);
    sink = await startPeer({ port });
    await waitFor(() => p.events().some((e) => e.event === 'quarantined'), 10_000, 'quarantine at delivery');
    assert.equal(sink.delivered().length, 0, 'the truncated message was not delivered');
    assert.ok(sink.transactions.every((x) => !x.completed), 'no transaction was completed with a partial body');
    const m = await p.petrel.store.getMessage(qid);
    assert.match(m!.quarantine, /stored body is 200\d+ octets, 400\d+ were accepted/);
  } finally {
    await p.stop();
    await sink?.close();
    cleanup(dir);
  }
});
