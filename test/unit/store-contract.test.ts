// The QueueStore contract, run unchanged against every backend through the
// queue layer (queue/queue): memory, embedded SQLite + spool, and PostgreSQL
// (a throw-away cluster started here). Insert, claim, outcomes, claim tokens
// and leases, reports, finishing, recovery, quarantine, operator actions,
// events, and "nothing kept" when an insert fails.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { EmbeddedStore } from '../../src/queue/embedded-store.js';
import { MemoryStore } from '../../src/queue/memory-store.js';
import { Queue } from '../../src/queue/queue.js';
import { ReportAlreadyMade } from '../../src/queue/backend.js';
import { PostgresBackend } from '../../src/queue/backends/postgres.js';
import type { NewMessage, Outcome, QueueStore, RecipientRecord } from '../../src/queue/store.js';
import { makeEvent, type MailEvent } from '../../src/log/events.js';
import { newQueueId } from '../../src/core/ids.js';
import { startPostgres } from '../helpers/postgres.js';

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

interface Made {
  store: QueueStore;
  /** The same queue opened again, as after a crash of this node (fresh objects where the backend has state on disk). */
  reopen(): QueueStore;
  /** Make the next write fail, as a storage failure would. */
  failNext(store: QueueStore, e: Error): void;
  /** The same queue seen by a node of this name (shared backends only). */
  node?(name: string, leaseMs?: number): Queue;
  dispose(): Promise<void> | void;
}

interface Backend {
  name: string;
  make(): Promise<Made>;
}

let cluster: Awaited<ReturnType<typeof startPostgres>> | null = null;
let databases = 0;
before(async () => {
  cluster = await startPostgres();
});
after(async () => {
  await cluster?.stop();
});

const backends: Backend[] = [
  {
    name: 'embedded',
    async make() {
      const dir = mkdtempSync(join(tmpdir(), 'petrel-store-'));
      return {
        store: new EmbeddedStore({ dataDir: dir, inlineMax: 1024 }),
        reopen: () => new EmbeddedStore({ dataDir: dir, inlineMax: 1024 }),
        failNext: (store, e) => {
          const gc = (store as EmbeddedStore).groupCommit;
          gc.fault = () => {
            gc.fault = null;
            throw e;
          };
        },
        dispose: () => rmSync(dir, { recursive: true, force: true }),
      };
    },
  },
  {
    name: 'memory',
    async make() {
      const store = new MemoryStore();
      return { store, reopen: () => store, failNext: (s, e) => ((s as MemoryStore).failNext = e), dispose: () => undefined };
    },
  },
  {
    name: 'postgres',
    async make() {
      // A database of its own for each test.
      const name = `contract${++databases}`;
      const admin = new pg.Client({ connectionString: cluster!.url });
      await admin.connect();
      await admin.query(`CREATE DATABASE ${name}`);
      await admin.end();
      const url = cluster!.url.replace(/\/[^/?]*(\?|$)/, `/${name}$1`);
      const open = (node: string, leaseMs = 60_000): Queue => new Queue(new PostgresBackend({ url, node, leaseMs }), { node, leaseMs });
      return {
        store: open('a'),
        reopen: () => open('a'),
        node: open,
        failNext: (s, e) => (((s as Queue).backend as PostgresBackend).failNext = e),
        dispose: () => undefined,
      };
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
      const b = await backend.make();
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
        await b.dispose();
      }
    });

    test('RFC 8689 flags (REQUIRETLS, TLS-Required: No) are kept, read back everywhere, and false when absent (issue 14)', async () => {
      const b = await backend.make();
      let store = b.store;
      try {
        await store.open();
        const plain = await insert(store, 1);
        const made = [message(1), message(1)];
        made[0]!.m.requireTls = true;
        made[1]!.m.tlsRequiredNo = true;
        for (const { m, body } of made) {
          const w = store.createBody(m.queueId);
          await w.write(Buffer.from(body));
          await store.insert(m, w);
        }
        const flags = (r: { requireTls?: boolean; tlsRequiredNo?: boolean } | null | undefined) => [r?.requireTls, r?.tlsRequiredNo];
        const expect = new Map([
          [plain.queueId, [false, false]],
          [made[0]!.m.queueId, [true, false]],
          [made[1]!.m.queueId, [false, true]],
        ]);
        for (const [qid, f] of expect) assert.deepEqual(flags(await store.getMessage(qid)), f, `getMessage ${qid}`);
        for (const m of await store.list({ limit: 10 })) assert.deepEqual(flags(m), expect.get(m.queueId), `list ${m.queueId}`);
        const claims = await store.claimDue(Date.now() + 1, { maxRecipients: 10, leaseMs: 60_000 });
        assert.equal(claims.length, 3);
        for (const c of claims) assert.deepEqual(flags(c.message), expect.get(c.message.queueId), `claim ${c.message.queueId}`);
        await store.close();
        store = b.reopen();
        await store.open();
        for (const [qid, f] of expect) assert.deepEqual(flags(await store.getMessage(qid)), f, `after reopen ${qid}`);
      } finally {
        await store.close();
        await b.dispose();
      }
    });

    test('events of one operation and of operations committed together keep their order, seqs and fields', async () => {
      const b = await backend.make();
      try {
        await b.store.open();
        const heard: MailEvent[] = [];
        b.store.onEvents((es) => heard.push(...es));
        // 70 recipients: more events in one operation than one multi-row INSERT writes.
        const m = await insert(b.store, 70);
        const extra = Array.from({ length: 5 }, (_, i) =>
          makeEvent('delay_notice', { queue_id: m.queueId, message_id: m.messageId, sender: m.sender, recipient: `r${i}@example.net`, state: 'deferred', detail: `note ${i}`, attempt: i + 1 }),
        );
        // Several operations in one group commit, each with its own events.
        await Promise.all([b.store.appendEvents(extra.slice(0, 2)), b.store.appendEvents(extra.slice(2)), insert(b.store, 1)]);
        const ev = await b.store.eventsAfter(0, 1000);
        assert.equal(ev.length, 76);
        assert.ok(ev.every((e, i) => i === 0 || e.seq! > ev[i - 1]!.seq!), 'strictly increasing seqs');
        assert.deepEqual(
          ev.filter((e) => e.queue_id === m.queueId && e.event === 'received').map((e) => e.recipient),
          Array.from({ length: 70 }, (_, i) => `r${i}@example.net`),
          'received events in recipient order',
        );
        const notes = ev.filter((e) => e.event === 'delay_notice');
        assert.deepEqual(notes.map((e) => [e.recipient, e.detail, e.attempt, e.state]).sort(), extra.map((e) => [e.recipient, e.detail, e.attempt, e.state]).sort());
        await waitFor(() => heard.length === 76, 5000, 'the listener hears every event once durable');
        assert.deepEqual(
          heard.map((e) => e.seq).sort((a, b) => a! - b!),
          ev.map((e) => e.seq),
          'the listener hears the stored seqs',
        );
      } finally {
        await b.store.close();
        await b.dispose();
      }
    });

    test('claims are exclusive; outcomes are kept; finished messages disappear', async () => {
      const b = await backend.make();
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
        await b.store.insert({ ...dsn, sender: '', isReport: true }, w, { clearReports: { kind: 'failed', ids: pending.map((r) => r.id) } });
        // The same report made a second time (another node raced this one) is refused and keeps nothing.
        const { m: again, body: againBody } = message(1, 'report again');
        const w2 = b.store.createBody(again.queueId);
        await w2.write(Buffer.from(againBody));
        await assert.rejects(() => b.store.insert({ ...again, sender: '', isReport: true }, w2, { clearReports: { kind: 'failed', ids: pending.map((r) => r.id) } }), ReportAlreadyMade);
        assert.equal(await b.store.getMessage(again.queueId), null, 'the second report is not kept');
        assert.equal(await b.store.getMessage(m.queueId), null);
        assert.deepEqual(await b.store.getRecipients(m.queueId), []);
        await assert.rejects(() => b.store.readBody(m.queueId));
      } finally {
        await b.store.close();
        await b.dispose();
      }
    });

    test('a failed insert keeps nothing', async () => {
      const b = await backend.make();
      try {
        await b.store.open();
        const before = (await b.store.eventsAfter(0, 1000)).length;
        const { m } = message(2, 'x'.repeat(5000));
        const w = b.store.createBody(m.queueId);
        await w.write(Buffer.from('x'.repeat(5000)));
        b.failNext(b.store, new Error('disk on fire'));
        await assert.rejects(() => b.store.insert(m, w), /disk on fire/);
        if (b.store instanceof EmbeddedStore) {
          const bodies = readdirSync(join(b.store.spool.root, m.queueId.slice(-1)));
          assert.deepEqual(bodies, [], 'no body file left behind');
        }
        assert.equal(await b.store.getMessage(m.queueId), null);
        assert.equal((await b.store.eventsAfter(0, 1000)).length, before);
      } finally {
        await b.store.close();
        await b.dispose();
      }
    });

    test('fast path: insert returns the claim; held destinations stay queued; a crash makes the claim due again', async () => {
      const b = await backend.make();
      let store = b.store;
      try {
        await store.open();
        await store.suspend({ destination: 'held.example' }, { who: 'test', reason: 'hold' });
        const { m, body } = message(3);
        m.recipients[2] = { ...m.recipients[2]!, address: 'h@held.example', destination: 'held.example' };
        const w = store.createBody(m.queueId);
        await w.write(Buffer.from(body));
        const claim = await store.insert(m, w, { claimLeaseMs: 60_000 });
        assert.ok(claim);
        assert.equal(claim.message.queueId, m.queueId);
        assert.deepEqual(claim.recipients.map((r) => [r.address, r.state, r.attempts]), [['r0@example.net', 'delivering', 0], ['r1@example.net', 'delivering', 0]]);
        assert.deepEqual((await store.getRecipients(m.queueId)).map((r) => r.state), ['delivering', 'delivering', 'queued']);
        assert.deepEqual(await store.claimDue(Date.now() + 1, { maxRecipients: 10, leaseMs: 1000 }), [], 'claimed ones are not found again; the held one is not due');
        const ev = await store.eventsAfter(0, 100);
        assert.equal(ev.filter((e) => e.event === 'received').length, 3, 'received events as usual');
        await store.close();
        store = b.reopen();
        await store.open();
        assert.deepEqual((await store.getRecipients(m.queueId)).map((r) => r.state), ['queued', 'queued', 'queued']);
      } finally {
        await store.close();
        await b.dispose();
      }
    });

    test('reopening after a crash makes claimed recipients due again', async () => {
      const b = await backend.make();
      let store = b.store;
      try {
        await store.open();
        const m = await insert(store, 2);
        await store.claimDue(Date.now() + 1, { maxRecipients: 10, leaseMs: 60_000 });
        await store.close();
        store = b.reopen();
        await store.open();
        const rs = await store.getRecipients(m.queueId);
        assert.deepEqual(rs.map((r) => r.state), ['queued', 'queued']);
        const again = await store.claimDue(Date.now() + 1, { maxRecipients: 10, leaseMs: 60_000 });
        assert.equal(again[0]?.recipients.length, 2);
      } finally {
        await store.close();
        await b.dispose();
      }
    });

    test('quarantine sets unfinished recipients aside with an event, and deletes nothing', async () => {
      const b = await backend.make();
      try {
        await b.store.open();
        const m = await insert(b.store, 2);
        const [c] = await b.store.claimDue(Date.now() + 1, { maxRecipients: 10, leaseMs: 60_000 });
        await b.store.recordOutcomes([outcome(c!.recipients[0]!, 'delivered')]);
        await b.store.quarantine(m.queueId, 'unreadable');
        const rs = await b.store.getRecipients(m.queueId);
        assert.deepEqual(rs.map((r) => r.state), ['delivered', 'quarantined']);
        assert.equal((await b.store.getMessage(m.queueId))?.quarantine, 'unreadable');
        assert.equal(await readAll(b.store, m.queueId), 'Subject: t\r\n\r\nhello\r\n');
        assert.equal(await b.store.nextDueAt(), null, 'quarantined recipients are not due');
        const ev = await b.store.eventsAfter(0, 100);
        assert.equal(ev.filter((e) => e.event === 'quarantined').length, 1);
      } finally {
        await b.store.close();
        await b.dispose();
      }
    });

    test('summary and list show the queue by destination', async () => {
      const b = await backend.make();
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
        await b.dispose();
      }
    });

    const op = { who: 'alice', reason: 'testing' };

    test('operator: retry now, per message and per destination, makes deferred recipients due with an event', async () => {
      const b = await backend.make();
      try {
        await b.store.open();
        const m = await insert(b.store, 2);
        const other = await insert(b.store, 1);
        const later = Date.now() + 3_600_000;
        const [c1, c2] = await b.store.claimDue(Date.now() + 1, { maxRecipients: 10, leaseMs: 60_000 });
        await b.store.recordOutcomes([...c1!.recipients, ...c2!.recipients].map((r) => outcome(r, 'deferred', { nextAttemptAt: later })));
        assert.equal(await b.store.nextDueAt(), later);
        let woke = 0;
        b.store.onDue(() => woke++);
        const res = await b.store.retryNow({ queueId: m.queueId }, op);
        assert.equal(res.changed, 2);
        assert.deepEqual(res.queueIds, [m.queueId]);
        assert.ok(woke > 0, 'the scheduler is woken');
        assert.ok((await b.store.nextDueAt())! <= Date.now());
        const ev = (await b.store.eventsOf(m.queueId, 0, 100)).filter((e) => e.event === 'retry_requested');
        assert.equal(ev.length, 2);
        assert.match(ev[0]!.detail!, /by alice: testing/);
        assert.equal(ev[0]!.id, 7300);
        const claimed = await b.store.claimDue(Date.now() + 1, { maxRecipients: 10, leaseMs: 60_000 });
        assert.deepEqual(claimed.map((c) => c.message.queueId), [m.queueId]);
        const d = await b.store.retryNow({ destination: 'example.net' }, op);
        assert.equal(d.changed, 1, 'only the other message was still waiting');
        assert.equal(d.inFlight, 2);
        const all = await b.store.eventsAfter(0, 1000);
        const destEvent = all.find((e) => e.event === 'retry_requested' && e.queue_id === '');
        assert.match(destEvent!.detail!, /^destination example\.net retried .*by alice: testing/);
        assert.equal((await b.store.claimDue(Date.now() + 1, { maxRecipients: 10, leaseMs: 60_000 }))[0]?.message.queueId, other.queueId);
        assert.equal((await b.store.retryNow({ queueId: 'NOSUCHQUEUEID000' }, op)).changed, 0);
      } finally {
        await b.store.close();
        await b.dispose();
      }
    });

    test('operator: suspend and resume a message; hold and release a whole destination without rewriting it', async () => {
      const b = await backend.make();
      try {
        await b.store.open();
        const m = await insert(b.store, 2);
        const s = await b.store.suspend({ queueId: m.queueId }, op);
        assert.equal(s.changed, 2);
        assert.ok((await b.store.getRecipients(m.queueId)).every((r) => r.suspended));
        assert.deepEqual(await b.store.claimDue(Date.now() + 1, { maxRecipients: 10, leaseMs: 60_000 }), [], 'suspended recipients are not claimed');
        assert.equal(await b.store.nextDueAt(), null);
        assert.equal((await b.store.suspend({ queueId: m.queueId }, op)).changed, 0, 'suspending twice changes nothing');
        const r = await b.store.resume({ queueId: m.queueId }, op);
        assert.equal(r.changed, 2);
        const names = (await b.store.eventsOf(m.queueId, 0, 100)).map((e) => e.event);
        assert.deepEqual(names, ['received', 'received', 'suspended', 'suspended', 'resumed', 'resumed']);
        // Destination hold.
        const h = await b.store.suspend({ destination: 'example.net' }, op);
        assert.equal(h.changed, 2);
        assert.deepEqual(await b.store.claimDue(Date.now() + 1, { maxRecipients: 10, leaseMs: 60_000 }), [], 'a held destination is not claimed');
        assert.equal(await b.store.nextDueAt(), null, 'a held destination is not due (the scheduler does not spin)');
        assert.equal(await b.store.countDue(m.queueId, Date.now() + 1), 0);
        assert.ok((await b.store.getRecipients(m.queueId)).every((x) => !x.suspended && x.state === 'queued'), 'rows are not rewritten');
        const sum = await b.store.summary();
        assert.equal(sum.find((x) => x.destination === 'example.net')?.held, true);
        assert.deepEqual((await b.store.overrides()).map((o) => [o.destination, o.kind, o.by]), [['example.net', 'hold', 'alice']]);
        // A held destination that empties stays listed, so it can be resumed.
        await b.store.suspend({ destination: 'empty.example' }, op);
        assert.equal((await b.store.summary()).find((x) => x.destination === 'empty.example')?.held, true);
        await b.store.resume({ destination: 'empty.example' }, op);
        await b.store.resume({ destination: 'example.net' }, op);
        assert.equal((await b.store.claimDue(Date.now() + 1, { maxRecipients: 10, leaseMs: 60_000 }))[0]?.recipients.length, 2);
        const dest = (await b.store.eventsAfter(0, 1000)).filter((e) => e.queue_id === '');
        assert.deepEqual(dest.map((e) => e.event), ['suspended', 'suspended', 'resumed', 'resumed']);
        assert.ok(dest.every((e) => /by alice: testing/.test(e.detail ?? '')));
      } finally {
        await b.store.close();
        await b.dispose();
      }
    });

    test('operator: remove silently, or with a failure report; never a recipient in flight', async () => {
      const b = await backend.make();
      try {
        await b.store.open();
        const silent = await insert(b.store, 2);
        const res = await b.store.remove(silent.queueId, op, false);
        assert.equal(res.changed, 2);
        assert.equal(await b.store.getMessage(silent.queueId), null, 'a message with nothing left goes away');
        const ev = (await b.store.eventsAfter(0, 1000)).filter((e) => e.queue_id === silent.queueId && e.event === 'removed');
        assert.equal(ev.length, 2);
        assert.match(ev[0]!.detail!, /without report by alice: testing/);
        assert.equal(ev[0]!.state, 'removed');
        // With a report: kept until the report is queued.
        const ndr = await insert(b.store, 3);
        const [c] = await b.store.claimDue(Date.now() + 1, { maxRecipients: 1, leaseMs: 60_000 });
        assert.equal(c!.message.queueId, ndr.queueId);
        const r2 = await b.store.remove(ndr.queueId, op, (_m, r) => r.address !== 'r2@example.net');
        assert.equal(r2.changed, 2);
        assert.equal(r2.inFlight, 1, 'the recipient being delivered is left to its attempt');
        const rs = await b.store.getRecipients(ndr.queueId);
        assert.deepEqual(rs.map((r) => [r.state, r.report]), [['delivering', null], ['removed', 'failed'], ['removed', null]]);
        assert.match(rs[1]!.lastReply, /removed from the queue by the postmaster \(alice\): testing/);
        assert.ok(await b.store.getMessage(ndr.queueId));
        await b.store.recordOutcomes([outcome(c!.recipients[0]!, 'delivered')]);
        assert.deepEqual(await b.store.pendingReports(10), [ndr.queueId]);
        const pending: RecipientRecord[] = [];
        for await (const r of b.store.reportRecipients(ndr.queueId)) pending.push(r);
        const { m: dsn, body } = message(1, 'report');
        const w = b.store.createBody(dsn.queueId);
        await w.write(Buffer.from(body));
        await b.store.insert({ ...dsn, sender: '', isReport: true }, w, { clearReports: { kind: 'failed', ids: pending.map((r) => r.id) } });
        assert.equal(await b.store.getMessage(ndr.queueId), null);
      } finally {
        await b.store.close();
        await b.dispose();
      }
    });

    test('operator: quarantine list, release (back to queued, due now) and delete (removed events)', async () => {
      const b = await backend.make();
      try {
        await b.store.open();
        const q1 = await insert(b.store, 2);
        const q2 = await insert(b.store, 1);
        await insert(b.store, 1);
        await b.store.quarantine(q1.queueId, 'unreadable');
        await b.store.quarantine(q2.queueId, 'unreadable');
        const listed = await b.store.list({ quarantined: true, limit: 10 });
        assert.deepEqual(listed.map((m) => m.queueId), [q1.queueId, q2.queueId]);
        assert.deepEqual((await b.store.list({ quarantined: true, limit: 1, after: q1.queueId })).map((m) => m.queueId), [q2.queueId]);
        const rel = await b.store.release(q1.queueId, op);
        assert.equal(rel.changed, 2);
        assert.equal((await b.store.getMessage(q1.queueId))?.quarantine, '');
        assert.deepEqual((await b.store.getRecipients(q1.queueId)).map((r) => r.state), ['queued', 'queued']);
        const released = (await b.store.eventsOf(q1.queueId, 0, 100)).filter((e) => e.event === 'released');
        assert.equal(released.length, 2);
        assert.equal(released[0]!.id, 6100);
        const del = await b.store.remove(q2.queueId, op, false);
        assert.equal(del.changed, 1);
        assert.equal(await b.store.getMessage(q2.queueId), null);
        assert.equal((await b.store.eventsOf(q2.queueId, 0, 100)).filter((e) => e.event === 'removed').length, 1);
        assert.deepEqual(await b.store.list({ quarantined: true, limit: 10 }), []);
      } finally {
        await b.store.close();
        await b.dispose();
      }
    });

    test('operator: redirect is stored (and survives reopening) with an event; removed again with null', async () => {
      const b = await backend.make();
      let store = b.store;
      try {
        await store.open();
        await store.redirect('example.net', '127.0.0.1:2600', op);
        if (store instanceof EmbeddedStore) {
          await store.close();
          store = b.reopen();
          await store.open();
        }
        assert.deepEqual((await store.overrides()).map((o) => [o.destination, o.kind, o.to]), [['example.net', 'redirect', '127.0.0.1:2600']]);
        assert.equal((await store.summary()).find((d) => d.destination === 'example.net')?.redirect, '127.0.0.1:2600');
        await store.redirect('example.net', null, op);
        assert.deepEqual(await store.overrides(), []);
        const ev = (await store.eventsAfter(0, 100)).filter((e) => e.event === 'redirected');
        assert.equal(ev.length, 2);
        assert.match(ev[0]!.detail!, /destination example\.net redirected to 127\.0\.0\.1:2600 by alice: testing/);
      } finally {
        await store.close();
        await b.dispose();
      }
    });

    test('listing helpers: recipient pages, per-message states, counts by state, a message\'s events', async () => {
      const b = await backend.make();
      try {
        await b.store.open();
        const m = await insert(b.store, 5);
        const p1 = await b.store.recipientPage(m.queueId, 0, 2);
        const p2 = await b.store.recipientPage(m.queueId, p1[1]!.id, 10);
        assert.deepEqual([...p1, ...p2].map((r) => r.address), ['r0@example.net', 'r1@example.net', 'r2@example.net', 'r3@example.net', 'r4@example.net']);
        const [c] = await b.store.claimDue(Date.now() + 1, { maxRecipients: 2, leaseMs: 60_000 });
        await b.store.recordOutcomes([outcome(c!.recipients[0]!, 'deferred', { nextAttemptAt: Date.now() + 5000 })]);
        const [st] = await b.store.messageStates([m.queueId]);
        assert.deepEqual(st!.states, { queued: 3, delivering: 1, deferred: 1 });
        assert.deepEqual(st!.destinations, ['example.net']);
        assert.equal(st!.lastReply, 'deferred reply');
        assert.deepEqual(await b.store.countByState(), { queued: 3, delivering: 1, deferred: 1 });
        const ev = await b.store.eventsOf(m.queueId, 0, 3);
        assert.equal(ev.length, 3);
        assert.equal((await b.store.eventsOf(m.queueId, ev[2]!.seq!, 100)).length, 3);
      } finally {
        await b.store.close();
        await b.dispose();
      }
    });

    test('track: by message id (with or without <>), sender and recipient (any case), since, with a cursor', async () => {
      const b = await backend.make();
      try {
        await b.store.open();
        const a = await insert(b.store, 2);
        const c = await insert(b.store, 1);
        const byId = await b.store.track({ messageId: a.messageId.slice(1, -1), limit: 10 });
        assert.deepEqual(byId.messages.map((x) => x.queueId), [a.queueId]);
        assert.equal(byId.messages[0]!.events.length, 2);
        assert.deepEqual((await b.store.track({ messageId: a.messageId, limit: 10 })).messages.map((x) => x.queueId), [a.queueId]);
        const bySender = await b.store.track({ sender: 'ALICE@example.com', limit: 10 });
        assert.deepEqual(bySender.messages.map((x) => x.queueId), [a.queueId, c.queueId], 'oldest first');
        assert.equal(bySender.next, null);
        const page = await b.store.track({ sender: 'alice@example.com', limit: 1 });
        assert.deepEqual(page.messages.map((x) => x.queueId), [c.queueId], 'the newest match first');
        assert.ok(page.next !== null);
        const rest = await b.store.track({ sender: 'alice@example.com', limit: 1, beforeSeq: page.next! });
        assert.deepEqual(rest.messages.map((x) => x.queueId), [a.queueId]);
        assert.deepEqual((await b.store.track({ recipient: 'R1@example.net', limit: 10 })).messages.map((x) => x.queueId), [a.queueId]);
        assert.deepEqual((await b.store.track({ sender: 'alice@example.com', since: new Date(Date.now() + 60_000).toISOString(), limit: 10 })).messages, []);
        assert.deepEqual((await b.store.track({ queueId: c.queueId, limit: 10 })).messages.map((x) => x.events.length), [1]);
        assert.deepEqual((await b.store.track({ sender: 'nobody@example.com', limit: 10 })).messages, []);
      } finally {
        await b.store.close();
        await b.dispose();
      }
    });

    test('pruneEvents: only old events already copied, never those of a message still queued', async () => {
      const b = await backend.make();
      try {
        await b.store.open();
        const gone = await insert(b.store, 1);
        const kept = await insert(b.store, 1);
        await b.store.remove(gone.queueId, op, false);
        const all = await b.store.eventsAfter(0, 100);
        const future = new Date(Date.now() + 60_000).toISOString();
        assert.equal(await b.store.pruneEvents(future, 0, 100), 0, 'nothing past maxSeq');
        const n = await b.store.pruneEvents(future, all[all.length - 1]!.seq!, 100);
        assert.equal(n, 2, 'received + removed of the finished message');
        const left = await b.store.eventsAfter(0, 100);
        assert.deepEqual(left.map((e) => e.queue_id), [kept.queueId]);
        assert.equal(await b.store.pruneEvents(new Date(0).toISOString(), 1e9, 100), 0, 'nothing newer than `before`');
      } finally {
        await b.store.close();
        await b.dispose();
      }
    });

    test('an outcome is recorded only while its claim holds: refused once another claim took the recipient over, recorded late when none did', async () => {
      const b = await backend.make();
      try {
        await b.store.open();
        const m = await insert(b.store, 2);
        const [first] = await b.store.claimDue(Date.now() + 1, { maxRecipients: 10, leaseMs: 150 });
        assert.ok(first?.token);
        assert.deepEqual(await b.store.claimDue(Date.now() + 1, { maxRecipients: 10, leaseMs: 150 }), [], 'a live lease is not claimed again');
        await new Promise((r) => setTimeout(r, 400));
        // The lease ran out: another claim takes the recipients over.
        const [second] = await b.store.claimDue(Date.now() + 1, { maxRecipients: 1, leaseMs: 60_000 });
        assert.equal(second?.recipients.length, 1);
        assert.notEqual(second!.token, first!.token);
        const taken = second!.recipients[0]!;
        const untaken = first!.recipients.find((r) => r.id !== taken.id)!;
        const late = await b.store.recordOutcomes([
          outcome(taken, 'delivered', { claim: first!.token }),
          outcome(untaken, 'deferred', { claim: first!.token, nextAttemptAt: Date.now() + 60_000 }),
        ]);
        assert.deepEqual(late.refused, [taken.id], 'the outcome for the recipient re-claimed since is refused');
        let rs = await b.store.getRecipients(m.queueId);
        assert.equal(rs.find((r) => r.id === taken.id)!.state, 'delivering', 'the new holder keeps it');
        assert.equal(rs.find((r) => r.id === untaken.id)!.state, 'deferred', 'a late outcome nobody re-claimed is recorded');
        const ev = await b.store.eventsOf(m.queueId, 0, 100);
        assert.equal(ev.filter((e) => e.event === 'delivered').length, 0, 'no event for the refused outcome');
        assert.deepEqual((await b.store.recordOutcomes([outcome(taken, 'delivered', { claim: second!.token })])).refused, []);
        rs = await b.store.getRecipients(m.queueId);
        assert.equal(rs.find((r) => r.id === taken.id)!.state, 'delivered');
      } finally {
        await b.store.close();
        await b.dispose();
      }
    });

    test('renewing a claim keeps it from being taken over', async () => {
      const b = await backend.make();
      try {
        await b.store.open();
        await insert(b.store, 1);
        const [c] = await b.store.claimDue(Date.now() + 1, { maxRecipients: 10, leaseMs: 300 });
        assert.ok(c);
        await (b.store as Queue).renewNow();
        await new Promise((r) => setTimeout(r, 500));
        assert.deepEqual(await b.store.claimDue(Date.now() + 1, { maxRecipients: 10, leaseMs: 300 }), [], 'renewed: still held');
        b.store.endClaim(c.token);
        assert.ok(b.store.mayDeliver());
      } finally {
        await b.store.close();
        await b.dispose();
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

test('embedded: tracking finds events both in the worker-built index and newer than it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'petrel-store-'));
  const store = new EmbeddedStore({ dataDir: dir });
  try {
    await store.open();
    const older = await insert(store, 1);
    const { default: Database } = await import('better-sqlite3');
    const indexed = (): number => {
      try {
        const t = new Database(join(dir, 'queue', 'track.db'), { readonly: true, fileMustExist: true });
        const s = (t.prepare('SELECT MAX(seq) AS s FROM track').get() as { s: number | null }).s ?? 0;
        t.close();
        return s;
      } catch {
        return 0;
      }
    };
    const deadline = Date.now() + 10_000;
    while (indexed() < 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.ok(indexed() >= 1, 'the worker indexed the first message');
    const newer = await insert(store, 1); // probably not indexed yet
    const found = await store.track({ sender: 'alice@example.com', limit: 10 });
    assert.deepEqual(found.messages.map((m) => m.queueId), [older.queueId, newer.queueId]);
    const byId = await store.track({ messageId: older.messageId, limit: 10 });
    assert.deepEqual(byId.messages.map((m) => m.queueId), [older.queueId]);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

describe('QueueStore contract, shared: two nodes on one PostgreSQL queue', () => {
  test('two nodes claiming at once never claim the same recipient', async () => {
    const b = await backends.find((x) => x.name === 'postgres')!.make();
    const other = b.node!('b');
    try {
      await b.store.open();
      await other.open();
      for (let i = 0; i < 40; i++) await insert(b.store, 3);
      const seen = new Map<number, string>();
      const take = async (s: QueueStore, who: string): Promise<void> => {
        for (let k = 0; k < 100; k++) {
          const claims = await s.claimDue(Date.now() + 1, { maxRecipients: 7 });
          if (claims.length === 0) return;
          for (const c of claims) for (const r of c.recipients) {
            assert.ok(!seen.has(r.id), `recipient ${r.id} claimed by ${seen.get(r.id)} and ${who}`);
            seen.set(r.id, who);
          }
        }
      };
      await Promise.all([take(b.store, 'a'), take(other, 'b'), take(b.store, 'a2'), take(other, 'b2')]);
      assert.equal(seen.size, 120, 'every recipient claimed once');
      assert.ok(new Set(seen.values()).size >= 2, 'both nodes took work');
      const rs = await b.store.scanRecipients(0, 1000);
      assert.ok(rs.every((r) => r.state === 'delivering' && (r.claimedBy === 'a' || r.claimedBy === 'b')), 'the holder of each claim is shown');
    } finally {
      await other.close();
      await b.store.close();
      await b.dispose();
    }
  });

  test('a node restarting recovers its own claims only; the other node\'s stay theirs; a live twin is refused', async () => {
    const b = await backends.find((x) => x.name === 'postgres')!.make();
    const lease = 1000;
    const other = b.node!('b', lease);
    let store: Queue = b.node!('a', lease);
    try {
      await store.open();
      await other.open();
      const m = await insert(store, 2);
      await store.claimDue(Date.now() + 1, { maxRecipients: 1 });
      await other.claimDue(Date.now() + 1, { maxRecipients: 1 });
      assert.deepEqual((await other.nodes()).map((n) => [n.name, n.inFlight, n.alive]).sort(), [['a', 1, true], ['b', 1, true]]);
      const twin = b.node!('a', lease);
      await assert.rejects(() => twin.open(), /another node named "a" is alive/);
      await store.close();
      await new Promise((r) => setTimeout(r, lease + 300));
      // Node a comes back after its heartbeat aged past the lease: its claim is due again, b's is still b's.
      store = b.node!('a', lease);
      await store.open();
      const rs = await store.getRecipients(m.queueId);
      assert.deepEqual(rs.map((r) => [r.state, r.claimedBy ?? '']).sort(), [['delivering', 'b'], ['queued', '']]);
    } finally {
      await other.close();
      await store.close().catch(() => undefined);
      await b.dispose();
    }
  });
});
