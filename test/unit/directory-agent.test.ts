// The directory agent on its own, with real files and injected faults: a
// repeated attempt never makes a second copy; a file of the same message
// that does not cover the job is left alone; every failure (missing PATH,
// a file in its place, not a mount point, no permission, disk full, a failed
// fsync, a hung write) is a deferral that leaves no temporary file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { DirectoryAgent, envelopeBlock, readEnvelope } from '../../src/delivery/directory.js';
import type { DeliveryJob, RecipientResult } from '../../src/delivery/agent.js';
import type { MessageRecord, RecipientRecord } from '../../src/queue/store.js';
import { cleanup, tempDir, waitFor } from '../helpers/petrel-harness.js';

const BODY = 'Subject: hello\r\n\r\nbody\r\n';

function job(path: string, addresses: string[], queueId = '1M7YZRKW60M0GRV1'): DeliveryJob {
  const message = { queueId, messageId: '<m@x>', sender: 'alice@a.test', receivedAt: Date.UTC(2026, 10, 21, 12, 0, 0), size: BODY.length } as MessageRecord;
  const recipients = addresses.map((address, i) => ({ id: i + 1, queueId, address }) as RecipientRecord);
  return { message, recipients, hop: { kind: 'directory', key: `directory:${path}`, path }, openBody: async () => Readable.from([Buffer.from(BODY)]) };
}

async function run(agent: DirectoryAgent, j: DeliveryJob): Promise<RecipientResult[]> {
  const out: RecipientResult[] = [];
  await agent.deliver(j, (r) => out.push(...r));
  assert.equal(out.length, j.recipients.length, 'one result per recipient');
  return out;
}

const errnoError = (code: string): Error => Object.assign(new Error(`${code}: injected`), { code });

test('envelope block: written and read back', () => {
  const block = envelopeBlock({ queueId: 'Q1', receivedAt: Date.UTC(2026, 10, 21, 12, 0, 0), sender: '' }, ['a@b.test', 'c@d.test']);
  assert.equal(block, 'X-Petrel-Envelope-Queue-Id: Q1\r\nX-Petrel-Envelope-Received: Sat, 21 Nov 2026 12:00:00 +0000\r\nX-Petrel-Envelope-Sender: <>\r\nX-Petrel-Envelope-Recipient: <a@b.test>\r\nX-Petrel-Envelope-Recipient: <c@d.test>\r\n');
  assert.deepEqual(readEnvelope(block + 'Subject: x\r\n'), { queueId: 'Q1', recipients: ['a@b.test', 'c@d.test'] });
});

test('a repeated attempt (a crash after the file was published) does not write a second file', async () => {
  const dir = tempDir();
  try {
    const agent = new DirectoryAgent();
    const first = await run(agent, job(dir, ['x@l.test', 'y@l.test']));
    assert.deepEqual(first.map((r) => r.kind), ['delivered', 'delivered']);
    const again = await run(agent, job(dir, ['x@l.test', 'y@l.test']));
    assert.deepEqual(again.map((r) => r.kind), ['delivered', 'delivered']);
    assert.match(again[0]!.reply, /already written to .*1M7YZRKW60M0GRV1\.eml by an earlier attempt/);
    // A subset of what the file covers is covered too.
    assert.equal((await run(agent, job(dir, ['y@l.test'])))[0]!.kind, 'delivered');
    assert.deepEqual(readdirSync(dir), ['1M7YZRKW60M0GRV1.eml']);
  } finally {
    cleanup(dir);
  }
});

test('a file of the same message that does not cover the job is left alone: the job goes to <qid>.1.eml', async () => {
  const dir = tempDir();
  try {
    const agent = new DirectoryAgent();
    await run(agent, job(dir, ['x@l.test']));
    const before = readFileSync(join(dir, '1M7YZRKW60M0GRV1.eml'));
    const r = await run(agent, job(dir, ['y@l.test']));
    assert.equal(r[0]!.kind, 'delivered');
    assert.equal(r[0]!.reply, `written to ${join(dir, '1M7YZRKW60M0GRV1.1.eml')}`);
    assert.deepEqual(readFileSync(join(dir, '1M7YZRKW60M0GRV1.eml')), before, 'never replaced');
    assert.match(readFileSync(join(dir, '1M7YZRKW60M0GRV1.1.eml'), 'utf8'), /X-Petrel-Envelope-Recipient: <y@l\.test>\r\nSubject: hello/);
    // A foreign file that happens to have the name is not taken for ours either.
    writeFileSync(join(dir, '2222222222222222.eml'), 'Subject: not ours\r\n\r\n');
    const other = await run(agent, job(dir, ['z@l.test'], '2222222222222222'));
    assert.equal(other[0]!.reply, `written to ${join(dir, '2222222222222222.1.eml')}`);
  } finally {
    cleanup(dir);
  }
});

test('missing PATH, a file in its place, not a mount point: deferred, nothing created', async () => {
  const dir = tempDir();
  try {
    const agent = new DirectoryAgent();
    const missing = await run(agent, job(join(dir, 'nope'), ['x@l.test']));
    assert.equal(missing[0]!.kind, 'deferred');
    assert.match(missing[0]!.reply, /does not exist/);
    writeFileSync(join(dir, 'afile'), '');
    const notDir = await run(agent, job(join(dir, 'afile'), ['x@l.test']));
    assert.equal(notDir[0]!.kind, 'deferred');
    assert.match(notDir[0]!.reply, /is not a directory/);
    mkdirSync(join(dir, 'plain'));
    const unmounted = await run(new DirectoryAgent({ requireMount: true }), job(join(dir, 'plain'), ['x@l.test']));
    assert.equal(unmounted[0]!.kind, 'deferred');
    assert.match(unmounted[0]!.reply, /is not a mount point \(share not mounted\?\)/);
    assert.deepEqual(readdirSync(dir).sort(), ['afile', 'plain']);
    assert.deepEqual(readdirSync(join(dir, 'plain')), []);
  } finally {
    cleanup(dir);
  }
});

test('no permission, disk full, a failed fsync: deferred with the right status, no temporary file left', async () => {
  const dir = tempDir();
  try {
    const agent = new DirectoryAgent();
    const cases: Array<[string, string, string, RegExp]> = [
      ['open', 'EACCES', '4.3.0', /EACCES/],
      ['write', 'ENOSPC', '4.3.1', /ENOSPC/],
      ['write', 'EDQUOT', '4.2.2', /EDQUOT/],
      ['fsync', 'EIO', '4.3.0', /EIO/],
      ['link', 'EROFS', '4.3.0', /EROFS/],
    ];
    for (const [step, code, status, text] of cases) {
      agent.fault = (s) => {
        if (s === step) throw errnoError(code);
      };
      const r = await run(agent, job(dir, ['x@l.test']));
      assert.equal(r[0]!.kind, 'deferred', `${step} ${code}`);
      assert.equal(r[0]!.status, status, `${step} ${code}`);
      assert.match(r[0]!.reply, text);
      assert.deepEqual(readdirSync(dir), [], `${step} ${code}: nothing left behind`);
    }
    // The directory fsync after publishing fails: the file is taken back (not known durable).
    agent.fault = (s, p) => {
      if (s === 'fsync' && p === dir) throw errnoError('EIO');
    };
    assert.equal((await run(agent, job(dir, ['x@l.test'])))[0]!.kind, 'deferred');
    assert.deepEqual(readdirSync(dir), []);
    agent.fault = null;
    assert.equal((await run(agent, job(dir, ['x@l.test'])))[0]!.kind, 'delivered');
    assert.deepEqual(readdirSync(dir), ['1M7YZRKW60M0GRV1.eml']);
  } finally {
    cleanup(dir);
  }
});

test('a hung write is deferred after the timeout; later jobs for that PATH are deferred at once; the late write is not repeated', async () => {
  const dir = tempDir();
  try {
    const agent = new DirectoryAgent({ timeoutMs: 200 });
    let release!: () => void;
    const hang = new Promise<void>((r) => (release = r));
    // Every step is counted; only the first write hangs (until released).
    const steps: string[] = [];
    agent.fault = (s) => {
      steps.push(s);
      return s === 'write' && steps.filter((x) => x === 'write').length === 1 ? hang : undefined;
    };
    const r1 = await run(agent, job(dir, ['x@l.test']));
    // The write never returned: this outcome is the timeout's (a run without it would never end).
    assert.equal(r1[0]!.kind, 'deferred');
    assert.equal(r1[0]!.status, '4.4.2');
    assert.match(r1[0]!.reply, /did not finish within 200 ms/);
    assert.equal(steps.filter((x) => x === 'write').length, 1, 'one write, still hung');
    const before = steps.length;
    const r2 = await run(agent, job(dir, ['other@l.test'], '3333333333333333'));
    assert.equal(r2[0]!.kind, 'deferred');
    assert.match(r2[0]!.reply, /has not returned \(hung file system\?\)/);
    assert.equal(steps.length, before, 'deferred at once: not a step taken on the hung PATH');
    // The share comes back: the hung write finishes and publishes its file.
    release();
    await waitFor(() => readdirSync(dir).join() === '1M7YZRKW60M0GRV1.eml', 5000, 'the late write to publish its file and remove its temporary name');
    // The retry of the timed-out job finds it and does not write again.
    const writesBefore = steps.filter((x) => x === 'write').length;
    const r3 = await run(agent, job(dir, ['x@l.test']));
    assert.equal(r3[0]!.kind, 'delivered');
    assert.match(r3[0]!.reply, /by an earlier attempt/);
    assert.equal(steps.filter((x) => x === 'write').length, writesBefore, 'the retry wrote nothing');
    assert.equal((await run(agent, job(dir, ['other@l.test'], '3333333333333333')))[0]!.kind, 'delivered');
    assert.deepEqual(readdirSync(dir).sort(), ['1M7YZRKW60M0GRV1.eml', '3333333333333333.eml']);
  } finally {
    cleanup(dir);
  }
});

test('an unreadable stored body is not a delivery result: the scheduler quarantines it (no file left)', async () => {
  const dir = tempDir();
  try {
    const agent = new DirectoryAgent();
    const j = job(dir, ['x@l.test']);
    j.openBody = async () => {
      const e = new Error('stored message cannot be read');
      e.name = 'BodyUnreadable';
      throw e;
    };
    await assert.rejects(agent.deliver(j, () => undefined), { name: 'BodyUnreadable' });
    assert.deepEqual(readdirSync(dir), []);
  } finally {
    cleanup(dir);
  }
});
