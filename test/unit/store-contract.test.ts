// The QueueStore contract, run against every backend (embedded SQLite +
// spool, and memory): insert, claim, outcomes, reports, finishing, recovery,
// quarantine, events, and "nothing kept" when an insert fails.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EmbeddedStore } from '../../src/queue/embedded-store.js';
import { MemoryStore } from '../../src/queue/memory-store.js';
import type { NewMessage, Outcome, QueueStore, RecipientRecord } from '../../src/queue/store.js';
import { makeEvent } from '../../src/log/events.js';
import { newQueueId } from '../../src/core/ids.js';

interface Backend {
  name: string;
  make(): { store: QueueStore; reopen(): QueueStore; dispose(): void };
}

const backends: Backend[] = [
  {
    name: 'embedded',
    make() {
      const dir = mkdtempSync(join(tmpdir(), 'petrel-store-'));
      return {
        store: new EmbeddedStore({ dataDir: dir, inlineMax: 1024 }),
        reopen: () => new EmbeddedStore({ dataDir: dir, inlineMax: 1024 }),
        dispose: () => rmSync(dir, { recursive: true, force: true }),
      };
    },
  },
  {
    name: 'memory',
    make() {
      const store = new MemoryStore();
      return { store, reopen: () => store, dispose: () => undefined };
    },
  },
];

function message(n: number, body = 'Subject: t\r\n\r\nhello\r\n'): { m: NewMessage; body: string } {
  const queueId = newQueueId();
  return {
    m: {
      queueId,
      messageId: `<m${queueId}@test>`,
      sender: 'alice@example.com',
      envid: null,
      ret: null,
      size: Buffer.byteLength(body),
      receivedAt: Date.now(),
      smtputf8: false,
      eightBit: false,
      isReport: false,
      client: 'test [127.0.0.1]',
      subject: 't',
      recipients: Array.from({ length: n }, (_, i) => ({ address: `r${i}@example.net`, orcpt: null, notify: null, destination: 'example.net' })),
    },
    body,
  };
}

async function insert(store: QueueStore, n: number, body?: string): Promise<NewMessage> {
  const { m, body: text } = message(n, body);
  const w = store.createBody(m.queueId);
  const buf = Buffer.from(text);
  for (let i = 0; i < buf.length; i += 700) await w.write(buf.subarray(i, i + 700));
  await store.insert(m, w);
  return m;
}

function outcome(r: RecipientRecord, state: Outcome['state'], extra: Partial<Outcome> = {}): Outcome {
  return {
    recipientId: r.id,
    queueId: r.queueId,
    state,
    attempts: r.attempts + 1,
    lastAttemptAt: Date.now(),
    lastReply: `${state} reply`,
    lastStatus: state === 'delivered' ? '2.0.0' : state === 'failed' ? '5.1.1' : '4.0.0',
    event: makeEvent(state === 'queued' ? 'resumed' : (state as 'delivered'), { queue_id: r.queueId, message_id: '', sender: '', recipient: r.address, attempt: r.attempts + 1, state }),
    ...extra,
  };
}

async function readAll(store: QueueStore, qid: string): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of (await store.readBody(qid)) as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks).toString();
}

for (const backend of backends) {
  describe(`QueueStore contract: ${backend.name}`, () => {
    test('insert keeps message, body (small and large), recipients and received events', async () => {
      const b = backend.make();
      try {
        await b.store.open();
        const small = await insert(b.store, 3);
        const big = 'Subject: big\r\n\r\n' + 'x'.repeat(5000) + '\r\n';
        const large = await insert(b.store, 1, big);
        assert.equal(await readAll(b.store, small.queueId), 'Subject: t\r\n\r\nhello\r\n');
        assert.equal(await readAll(b.store, large.queueId), big);
        const rs = await b.store.getRecipients(small.queueId);
        assert.deepEqual(rs.map((r) => [r.address, r.state, r.attempts]), [['r0@example.net', 'queued', 0], ['r1@example.net', 'queued', 0], ['r2@example.net', 'queued', 0]]);
        const ev = await b.store.eventsAfter(0, 100);
        assert.equal(ev.filter((e) => e.event === 'received').length, 4);
        assert.ok(ev.every((e, i) => i === 0 || (e.seq ?? 0) > (ev[i - 1]!.seq ?? 0)), 'events are ordered by seq');
      } finally {
        await b.store.close();
        b.dispose();
      }
    });

    test('claims are exclusive; outcomes are kept; finished messages disappear', async () => {
      const b = backend.make();
      try {
        await b.store.open();
        const m = await insert(b.store, 2);
        const now = Date.now() + 1;
        const claims = await b.store.claimDue(now, { maxRecipients: 100, leaseMs: 60_000 });
        assert.equal(claims.length, 1);
        assert.equal(claims[0]!.recipients.length, 2);
        assert.equal(claims[0]!.message.messageId, m.messageId);
        assert.deepEqual(await b.store.claimDue(now, { maxRecipients: 100, leaseMs: 60_000 }), [], 'claimed recipients are not claimed twice');
        const [r0, r1] = claims[0]!.recipients as [RecipientRecord, RecipientRecord];
        await b.store.recordOutcomes([outcome(r0, 'delivered'), outcome(r1, 'deferred', { nextAttemptAt: now + 60_000 })]);
        const after = await b.store.getRecipients(m.queueId);
        assert.deepEqual(after.map((r) => [r.state, r.attempts]), [['delivered', 1], ['deferred', 1]]);
        assert.equal(await b.store.nextDueAt(), now + 60_000);
        assert.deepEqual(await b.store.claimDue(now, { maxRecipients: 100, leaseMs: 60_000 }), []);
        const later = await b.store.claimDue(now + 60_000, { maxRecipients: 100, leaseMs: 60_000 });
        assert.equal(later[0]!.recipients.length, 1);
        await b.store.recordOutcomes([outcome(later[0]!.recipients[0]!, 'failed', { report: 'failed' })]);
        assert.ok(await b.store.getMessage(m.queueId), 'kept while a report is pending');
        assert.deepEqual(await b.store.pendingReports(10), [m.queueId]);
        const pending: RecipientRecord[] = [];
        for await (const r of b.store.reportRecipients(m.queueId)) pending.push(r);
        assert.deepEqual(pending.map((r) => r.address), ['r1@example.net']);
        // The report is queued: the original is finished and goes away with its body.
        const { m: dsn, body } = message(1, 'report');
        const w = b.store.createBody(dsn.queueId);
        await w.write(Buffer.from(body));
        await b.store.insert({ ...dsn, sender: '', isReport: true }, w, { clearReports: pending.map((r) => r.id) });
        assert.equal(await b.store.getMessage(m.queueId), null);
        assert.deepEqual(await b.store.getRecipients(m.queueId), []);
        await assert.rejects(() => b.store.readBody(m.queueId));
      } finally {
        await b.store.close();
        b.dispose();
      }
    });

    test('a failed insert keeps nothing', async () => {
      const b = backend.make();
      try {
        await b.store.open();
        const before = (await b.store.eventsAfter(0, 1000)).length;
        const { m } = message(2, 'x'.repeat(5000));
        const w = b.store.createBody(m.queueId);
        await w.write(Buffer.from('x'.repeat(5000)));
        if (b.store instanceof EmbeddedStore) b.store.groupCommit.fault = () => { throw new Error('disk on fire'); };
        else (b.store as MemoryStore).failNext = new Error('disk on fire');
        await assert.rejects(() => b.store.insert(m, w), /disk on fire/);
        if (b.store instanceof EmbeddedStore) {
          b.store.groupCommit.fault = null;
          const bodies = readdirSync(join(b.store.spool.root, m.queueId.slice(-1)));
          assert.deepEqual(bodies, [], 'no body file left behind');
        }
        assert.equal(await b.store.getMessage(m.queueId), null);
        assert.equal((await b.store.eventsAfter(0, 1000)).length, before);
      } finally {
        await b.store.close();
        b.dispose();
      }
    });

    test('reopening after a crash makes claimed recipients due again', async () => {
      const b = backend.make();
      let store = b.store;
      try {
        await store.open();
        const m = await insert(store, 2);
        await store.claimDue(Date.now() + 1, { maxRecipients: 10, leaseMs: 60_000 });
        if (store instanceof EmbeddedStore) {
          await store.close();
          store = b.reopen();
        }
        await store.open();
        const rs = await store.getRecipients(m.queueId);
        assert.deepEqual(rs.map((r) => r.state), ['queued', 'queued']);
        const again = await store.claimDue(Date.now() + 1, { maxRecipients: 10, leaseMs: 60_000 });
        assert.equal(again[0]?.recipients.length, 2);
      } finally {
        await store.close();
        b.dispose();
      }
    });

    test('quarantine sets unfinished recipients aside with an event, and deletes nothing', async () => {
      const b = backend.make();
      try {
        await b.store.open();
        const m = await insert(b.store, 2);
        const [c] = await b.store.claimDue(Date.now() + 1, { maxRecipients: 10, leaseMs: 60_000 });
        await b.store.recordOutcomes([outcome(c!.recipients[0]!, 'delivered')]);
        await b.store.quarantine(m.queueId, 'unreadable', (r) => makeEvent('quarantined', { queue_id: m.queueId, message_id: m.messageId, sender: m.sender, recipient: r.address, state: 'quarantined' }));
        const rs = await b.store.getRecipients(m.queueId);
        assert.deepEqual(rs.map((r) => r.state), ['delivered', 'quarantined']);
        assert.equal((await b.store.getMessage(m.queueId))?.quarantine, 'unreadable');
        assert.equal(await readAll(b.store, m.queueId), 'Subject: t\r\n\r\nhello\r\n');
        assert.equal(await b.store.nextDueAt(), null, 'quarantined recipients are not due');
        const ev = await b.store.eventsAfter(0, 100);
        assert.equal(ev.filter((e) => e.event === 'quarantined').length, 1);
      } finally {
        await b.store.close();
        b.dispose();
      }
    });

    test('summary and list show the queue by destination', async () => {
      const b = backend.make();
      try {
        await b.store.open();
        const m1 = await insert(b.store, 3);
        await insert(b.store, 1);
        const s = await b.store.summary();
        assert.equal(s.length, 1);
        assert.equal(s[0]!.destination, 'example.net');
        assert.equal(s[0]!.recipients, 4);
        assert.equal(s[0]!.messages, 2);
        const page1 = await b.store.list({ limit: 1 });
        assert.equal(page1[0]!.queueId, m1.queueId);
        const page2 = await b.store.list({ limit: 1, after: page1[0]!.queueId });
        assert.equal(page2.length, 1);
        assert.notEqual(page2[0]!.queueId, m1.queueId);
        assert.equal((await b.store.list({ limit: 10, recipient: 'r2@example.net' })).length, 1);
      } finally {
        await b.store.close();
        b.dispose();
      }
    });
  });
}

test('embedded: a body file is only in the spool while its message is', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'petrel-store-'));
  const store = new EmbeddedStore({ dataDir: dir, inlineMax: 100 });
  try {
    await store.open();
    const m = await insert(store, 1, 'y'.repeat(1000));
    const file = store.spool.pathOf(m.queueId);
    assert.ok(existsSync(file));
    const [c] = await store.claimDue(Date.now() + 1, { maxRecipients: 1, leaseMs: 1000 });
    await store.recordOutcomes([outcome(c!.recipients[0]!, 'delivered')]);
    assert.ok(!existsSync(file));
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
