// `petrel audit` end to end: after real traffic (delivered, failed with a
// report, deferred, quarantined) it finds no exception and counts each state;
// after a recipient row is deleted behind Petrel's back it reports it lost
// and exits 1.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { SmtpTalk } from '../helpers/smtp-talk.js';
import { startPetrel, waitFor, cleanup, spawnPetrel, freePort } from '../helpers/petrel-harness.js';
import { startPeer } from '../helpers/test-peer.js';
import type { AuditResult } from '../../src/log/audit.js';

test('petrel audit: real traffic audits clean; a recipient deleted behind Petrel\'s back is "lost"', async () => {
  const peer = await startPeer({ rcptReply: (a) => (a.startsWith('bad') ? '550 5.1.1 No such user' : undefined) });
  const down = await freePort();
  const p = await startPetrel(
    `[delivery]\nsmarthost = "127.0.0.1:${peer.port}"\n[[routes]]\ndomain = "down.example"\nvia = "smtp:127.0.0.1:${down}"\n[local]\ndomains = ["home.test"]\n[queue]\nretry_intervals = ["1h"]\n`,
  );
  const file = join(p.dir, 'petrel.toml');
  try {
    const t = await SmtpTalk.open(p.port);
    await t.read();
    await t.cmd('EHLO client.test');
    for (let i = 0; i < 5; i++) {
      const r = await t.send('alice@home.test', [`ok${i}@far.example`, `bad${i}@far.example`, `w${i}@down.example`, `local${i}@home.test`], `Subject: audit ${i}\r\n\r\nbody\r\n`);
      assert.equal(r.code, 250);
    }
    t.close();
    // 5 delivered remote + 5 local + 5 failed + 5 deferred, and one failure report per message delivered locally.
    await waitFor(() => p.events().filter((e) => e.event === 'dsn_queued').length === 5 && p.events().filter((e) => e.event === 'delivered').length === 15, 15_000, 'traffic to settle');
    const run = spawnPetrel(['audit', '--json', '--config', file], p.dir);
    assert.equal(await run.exited, 0, run.stderr());
    const r = JSON.parse(run.stdout()) as { exceptions: unknown[]; by_state: Record<string, number>; reports: AuditResult['reports'] };
    assert.deepEqual(r.exceptions, []);
    assert.equal(r.by_state.delivered, 15);
    assert.equal(r.by_state.failed, 5);
    assert.equal(r.by_state.deferred, 5);
    assert.deepEqual(r.reports, { owed: 5, queued: 5, pending: 0 });

    // Behind Petrel's back: one deferred recipient disappears from the store.
    const db = new Database(join(p.dir, 'var', 'queue', 'queue.db'));
    db.prepare(`DELETE FROM recipients WHERE address = 'w3@down.example'`).run();
    db.close();
    const again = spawnPetrel(['audit', '--config', file], p.dir);
    assert.equal(await again.exited, 1);
    assert.match(again.stdout(), /exceptions: 1\n {2}lost +[0-9A-Z]{16} <w3@down\.example> accepted, last seen deferred in the log, and not in the queue/);
  } finally {
    await p.stop();
    await peer.close();
    cleanup(p.dir);
  }
});
