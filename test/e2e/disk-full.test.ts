// A full disk (issue 7): on a small dedicated filesystem (a tmpfs the test
// mounts; where mounting is not permitted, the store's fault seams stand in
// and the test says so), inbound answers 452 4.3.1, nothing is half-stored,
// mail already queued is still delivered, and acceptance resumes by itself
// once space returns.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { SmtpTalk, replyLine } from '../helpers/smtp-talk.js';
import { startPetrel, waitFor, cleanup, freePort, tempDir } from '../helpers/petrel-harness.js';
import { startPeer } from '../helpers/test-peer.js';
import { EmbeddedStore } from '../../src/queue/embedded-store.js';

function tryMount(dir: string, size: string): boolean {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}

async function sendOne(port: number, n: number, size: number): Promise<string> {
  const t = await SmtpTalk.open(port);
  try {
    await t.read();
    await t.cmd('EHLO client.test');
    const r = await t.send('alice@example.com', [`r${n}@remote.example`], `Subject: fill ${n}\r\nMessage-ID: <fill-${n}@example.com>\r\n\r\n${'z'.repeat(size)}\r\n`);
    return replyLine(r);
  } finally {
    t.close();
  }
}

test('disk full: 452 4.3.1, nothing half-stored, queued mail still goes, acceptance resumes by itself', async (t) => {
  const dir = tempDir();
  const data = join(dir, 'var');
  mkdirSync(data);
  // PETREL_TEST_NO_MOUNT=1 exercises the seam path on a machine where mounting works.
  const mounted = process.env.PETREL_TEST_NO_MOUNT ? false : tryMount(data, "6m");
  t.diagnostic(mounted ? 'on a 6 MB tmpfs mounted by the test' : 'mount not permitted here: using the store fault seams instead');
  const port = await freePort();
  const p = await startPetrel(`[queue]\nmin_free_space = "2MB"\nretry_intervals = ["300ms"]\n[delivery]\nsmarthost = "127.0.0.1:${port}"\ndead_destination_backoff = "0ms"\n[local]\ndomains = []\n`, {}, dir);
  let sink: Awaited<ReturnType<typeof startPeer>> | null = null;
  try {
    const store = p.petrel.store as EmbeddedStore;
    const accepted: number[] = [];
    let refusal = '';
    if (!mounted) {
      // The seams: free space reads as low once 6 messages are in; writes fail with ENOSPC.
      const real = p.petrel.lowOnSpace.bind(p.petrel);
      p.petrel.lowOnSpace = () => accepted.length >= 6 || real();
    }
    for (let n = 0; n < 40 && !refusal; n++) {
      const r = await sendOne(p.port, n, 400_000);
      if (r.startsWith('250')) accepted.push(n);
      else refusal = r;
    }
    assert.match(refusal, /^452 4\.3\.1 /, `refused with 452 4.3.1 once the disk was full (${accepted.length} accepted first)`);
    assert.ok(accepted.length >= 2, `some mail was accepted first (${accepted.length})`);
    // Nothing half-stored: no temporary bodies, and exactly the accepted messages are queued.
    assert.deepEqual(readdirSync(join(data, 'spool', 'tmp')), []);
    assert.equal((await store.list({ limit: 100 })).length, accepted.length);
    // Mail already queued still goes out, which frees space...
    sink = await startPeer({ port });
    await waitFor(() => sink!.delivered().length === accepted.length, 20_000, 'queued mail delivered');
    if (!mounted) p.petrel.lowOnSpace = () => false;
    // ...and acceptance resumes by itself (free space is looked at again within a second).
    await waitFor(async () => (await sendOne(p.port, 99, 1000)).startsWith('250'), 10_000, 'acceptance to resume');
  } finally {
    await p.stop();
    await sink?.close();
    if (mounted) execFileSync('umount', [data]);
    cleanup(dir);
  }
});
