// Invariant 1 end to end: when storage fails while accepting, the client gets
// 451 4.3.0 (452 4.3.1 for a full disk) and nothing is half-kept; the next
// message after the fault is accepted normally.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { SmtpTalk, replyLine } from '../helpers/smtp-talk.js';
import { startPetrel, cleanup } from '../helpers/petrel-harness.js';
import { EmbeddedStore } from '../../src/queue/embedded-store.js';

async function sendOne(port: number, body: string): Promise<string> {
  const t = await SmtpTalk.open(port);
  await t.read();
  await t.cmd('EHLO client.test');
  const r = await t.send('a@example.com', ['x@localhost'], body);
  t.close();
  return replyLine(r);
}

function spoolFiles(dir: string): string[] {
  const root = join(dir, 'var', 'spool');
  return readdirSync(root).flatMap((d) => readdirSync(join(root, d)).map((f) => `${d}/${f}`));
}

test('a commit failure answers 451 4.3.0 and keeps nothing; acceptance resumes', async () => {
  const p = await startPetrel('[smtp]\nlisten = ["127.0.0.1:0"]\n[delivery]\nsmarthost = "127.0.0.1:9"\n[local]\ndomains = []\n');
  try {
    const store = p.petrel.store as EmbeddedStore;
    store.groupCommit.fault = () => {
      throw new Error('injected: I/O error');
    };
    assert.match(await sendOne(p.port, 'Subject: small\r\n\r\nx\r\n'), /^451 4\.3\.0 /);
    // A large body (a spool file) too: the file is removed again.
    assert.match(await sendOne(p.port, 'Subject: large\r\n\r\n' + 'z'.repeat(300_000) + '\r\n'), /^451 4\.3\.0 /);
    assert.deepEqual(spoolFiles(p.dir), []);
    assert.equal((await store.list({ limit: 10 })).length, 0);
    store.groupCommit.fault = null;
    assert.match(await sendOne(p.port, 'Subject: ok\r\n\r\nx\r\n'), /^250 2\.0\.0 /);
    assert.equal((await store.list({ limit: 10 })).length, 1);
  } finally {
    await p.stop();
    cleanup(p.dir);
  }
});

test('a full disk answers 452 4.3.1; a failing fsync of a spool file answers 451 4.3.0', async () => {
  const p = await startPetrel('[smtp]\nlisten = ["127.0.0.1:0"]\n[delivery]\nsmarthost = "127.0.0.1:9"\n[local]\ndomains = []\n');
  try {
    const store = p.petrel.store as EmbeddedStore;
    store.spool.fault = (step) => {
      if (step === 'write') throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
    };
    assert.match(await sendOne(p.port, 'Subject: large\r\n\r\n' + 'z'.repeat(300_000) + '\r\n'), /^452 4\.3\.1 /);
    store.spool.fault = (step) => {
      if (step === 'fsync') throw Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' });
    };
    assert.match(await sendOne(p.port, 'Subject: large\r\n\r\n' + 'z'.repeat(300_000) + '\r\n'), /^451 4\.3\.0 /);
    store.spool.fault = null;
    assert.deepEqual(spoolFiles(p.dir), []);
    assert.equal((await store.list({ limit: 10 })).length, 0);
  } finally {
    await p.stop();
    cleanup(p.dir);
  }
});
