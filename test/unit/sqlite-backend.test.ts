// SqliteBackend (queue/backends/sqlite) through the QueueBackend interface:
// insert with a claim, claims with tokens and leases, guarded patches (a late
// outcome refused once another claim took its recipient, accepted when none
// did, also after a restart), a finished message deleted with its spool file,
// a queue.db made by the old EmbeddedStore schema, StorageFull for a full
// disk, the damage report at open, and a WAL kept bounded under a steady
// stream of writes.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { SqliteBackend } from '../../src/queue/backends/sqlite.js';
import { StorageFull, type RecipientPatch } from '../../src/queue/backend.js';
import type { NewMessage, RecipientRecord } from '../../src/queue/store.js';
import { isoTime, makeEvent, type MailEvent } from '../../src/log/events.js';
import { newQueueId } from '../../src/core/ids.js';

const INLINE_MAX = 1024;
const BIG = 'Subject: big\r\n\r\n' + 'x'.repeat(5000) + '\r\n';

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'petrel-sqlite-'));
}

function message(n: number, body: string, destination = 'example.net'): NewMessage {
  const queueId = newQueueId();
  return {
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
    recipients: Array.from({ length: n }, (_, i) => ({ address: `r${i}@${destination}`, orcpt: null, notify: null, destination })),
  };
}

function received(m: NewMessage): MailEvent[] {
  return m.recipients.map((r) => ({
    ts: isoTime(m.receivedAt),
    id: 1000,
    event: 'received' as const,
    queue_id: m.queueId,
    message_id: m.messageId,
    sender: m.sender,
    recipient: r.address,
    state: 'queued',
    remote: m.client,
  }));
}

async function insert(b: SqliteBackend, n: number, opts: { body?: string; claim?: { token: string; leaseMs: number }; destination?: string } = {}) {
  const body = opts.body ?? 'Subject: t\r\n\r\nhello\r\n';
  const m = message(n, body, opts.destination);
  const w = b.createBody(m.queueId);
  const buf = Buffer.from(body);
  for (let i = 0; i < buf.length; i += 700) await w.write(buf.subarray(i, i + 700));
  const res = await b.insert(m, w, { events: received(m), ...(opts.claim ? { claim: opts.claim } : {}) });
  return { m, res };
}

function delivered(r: RecipientRecord, claim?: string, withPrev = true): RecipientPatch {
  const p: RecipientPatch = {
    id: r.id,
    queueId: r.queueId,
    set: { state: 'delivered', attempts: r.attempts + 1, lastAttemptAt: Date.now(), lastReply: '250 ok', lastStatus: '2.0.0' },
    event: makeEvent('delivered', { queue_id: r.queueId, message_id: '', sender: '', recipient: r.address, attempt: r.attempts + 1, state: 'delivered', detail: claim ?? '' }),
  };
  if (claim !== undefined) p.claim = claim;
  if (claim !== undefined && withPrev) p.prev = { state: 'delivering', report: null };
  return p;
}

async function recipients(b: SqliteBackend, queueId: string): Promise<RecipientRecord[]> {
  return b.selectRecipients({ queueId, afterId: 0, limit: 1000 });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** The schema EmbeddedStore wrote before claims had tokens (recipients without `claim`). */
const OLD_SCHEMA = `
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE messages (qid TEXT PRIMARY KEY, message_id TEXT NOT NULL, sender TEXT NOT NULL, envid TEXT, ret TEXT, size INTEGER NOT NULL,
  received_at INTEGER NOT NULL, smtputf8 INTEGER NOT NULL, eight_bit INTEGER NOT NULL, is_report INTEGER NOT NULL, client TEXT NOT NULL,
  subject TEXT NOT NULL, body BLOB, rcpt_count INTEGER NOT NULL, open_count INTEGER NOT NULL, quarantine TEXT NOT NULL DEFAULT '');
CREATE TABLE recipients (id INTEGER PRIMARY KEY, qid TEXT NOT NULL, address TEXT NOT NULL, orcpt TEXT, notify TEXT, destination TEXT NOT NULL,
  state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL, last_at INTEGER, last_reply TEXT NOT NULL DEFAULT '',
  last_status TEXT NOT NULL DEFAULT '', remote TEXT NOT NULL DEFAULT '', report TEXT, delay_notified INTEGER NOT NULL DEFAULT 0,
  suspended INTEGER NOT NULL DEFAULT 0, lease_until INTEGER NOT NULL DEFAULT 0);
CREATE INDEX recipients_qid ON recipients(qid);
CREATE INDEX recipients_due ON recipients(next_at) WHERE state IN ('queued','deferred') AND suspended = 0;
CREATE INDEX recipients_report ON recipients(qid) WHERE report IS NOT NULL;
CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL, id INTEGER NOT NULL, event TEXT NOT NULL, qid TEXT NOT NULL,
  message_id TEXT NOT NULL, sender TEXT NOT NULL, recipient TEXT, attempt INTEGER, state TEXT, remote TEXT, reply TEXT, error TEXT, status TEXT,
  detail TEXT, report TEXT);
CREATE INDEX events_qid ON events(qid);
CREATE INDEX recipients_dest ON recipients(destination);
CREATE INDEX messages_quarantine ON messages(qid) WHERE quarantine != '';
CREATE TABLE overrides (destination TEXT NOT NULL, kind TEXT NOT NULL, target TEXT NOT NULL DEFAULT '', by TEXT NOT NULL DEFAULT '',
  reason TEXT NOT NULL DEFAULT '', at INTEGER NOT NULL, PRIMARY KEY (destination, kind));
`;

describe('SqliteBackend', () => {
  test('insert with a claim: recipients claimed with the token (held destinations stay queued), body and events kept', async () => {
    const dir = tmp();
    const b = new SqliteBackend({ dataDir: dir, inlineMax: INLINE_MAX, node: 'n1' });
    try {
      assert.deepEqual(await b.open({ recover: true }), { damaged: [] });
      await b.apply({ overrides: [{ put: { destination: 'held.example', kind: 'hold', to: '', by: 'op', reason: 'test', at: Date.now() } }] });
      let woken = 0;
      b.onWake(() => woken++);
      const { m, res } = await insert(b, 2, { claim: { token: 'n1:c1', leaseMs: 60_000 } });
      assert.deepEqual(res.claimed.map((r) => [r.address, r.state, r.claimedBy]), [['r0@example.net', 'delivering', 'n1'], ['r1@example.net', 'delivering', 'n1']]);
      assert.equal(res.body?.toString(), 'Subject: t\r\n\r\nhello\r\n');
      assert.equal(woken, 0, 'nothing left for the scheduler to find');
      const rows = await recipients(b, m.queueId);
      assert.deepEqual(rows.map((r) => [r.state, r.claimedBy]), [['delivering', 'n1'], ['delivering', 'n1']]);
      assert.equal(await b.countRecipients({ claimPrefix: 'n1:' }), 2);
      assert.equal(await b.countRecipients({ claimPrefix: 'n2:' }), 0);

      const held = await insert(b, 1, { claim: { token: 'n1:c2', leaseMs: 60_000 }, destination: 'held.example' });
      assert.deepEqual(held.res.claimed, []);
      assert.equal(woken, 1, 'an insert leaving a recipient unclaimed wakes the scheduler');
      assert.deepEqual((await recipients(b, held.m.queueId)).map((r) => r.state), ['queued']);
      assert.deepEqual(await b.claimDue(Date.now() + 1000, 10, { token: 'n1:c3', leaseMs: 60_000 }), [], 'a held destination is not claimed');
      assert.equal(await b.countDue(held.m.queueId, Date.now() + 1000), 0);
      // Holds are not merged into the summary here (the queue layer does it).
      assert.ok((await b.summary()).every((d) => d.held === undefined && d.redirect === undefined));
      // Other kinds of override neither hold nor change kind.
      const down = { destination: 'down.example', kind: 'down' as const, to: '', by: 'n2', reason: 'connection refused', at: Date.now() + 60_000 };
      const redirect = { destination: 'example.net', kind: 'redirect' as const, to: '127.0.0.1:2525', by: 'op', reason: 'r', at: Date.now() };
      await b.apply({ overrides: [{ put: down }, { put: redirect }] }, { durable: false });
      assert.deepEqual((await b.overrides()).filter((o) => o.kind !== 'hold'), [down, redirect]);
      await b.apply({ overrides: [{ remove: { destination: 'held.example', kind: 'hold' } }, { remove: { destination: 'down.example', kind: 'down' } }, { remove: { destination: 'example.net', kind: 'redirect' } }], wake: true });
      assert.equal(woken, 2);
      assert.deepEqual(await b.overrides(), []);
      const claims = await b.claimDue(Date.now() + 1000, 10, { token: 'n1:c4', leaseMs: 60_000 });
      assert.deepEqual(claims.map((c) => [c.token, c.message.queueId, c.recipients.map((r) => r.state)]), [['n1:c4', held.m.queueId, ['delivering']]]);

      const ev = await b.eventsAfter(0, 100);
      assert.equal(ev.filter((e) => e.event === 'received').length, 3, 'the events given to insert, nothing more');
      await b.close();
    } finally {
      await b.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a body written in one piece is kept as it is, not copied; one written in pieces is joined', async () => {
    const dir = tmp();
    const b = new SqliteBackend({ dataDir: dir, inlineMax: INLINE_MAX, node: 'n1' });
    try {
      await b.open({ recover: true });
      const text = 'Subject: one piece\r\n\r\nhello\r\n';
      const m = message(1, text);
      const w = b.createBody(m.queueId);
      const piece = Buffer.from(text);
      await w.write(piece);
      const res = await b.insert(m, w, { events: received(m), claim: { token: 'n1:c1', leaseMs: 60_000 } });
      // The same buffer (a worker's message in the primary): no second copy of each body.
      assert.equal(res.body, piece);
      assert.equal((await b.readBodyBuffer(m.queueId))?.toString(), text);
      // Two pieces of 700 and 300 (the helper writes 700 at a time), within INLINE_MAX.
      const { res: joined } = await insert(b, 1, { body: 'x'.repeat(1000), claim: { token: 'n1:c2', leaseMs: 60_000 } });
      assert.equal(joined.body?.toString(), 'x'.repeat(1000));
    } finally {
      await b.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('guarded patches: refused once another claim took the recipient after its lease ran out; accepted late when none did', async () => {
    const dir = tmp();
    const b = new SqliteBackend({ dataDir: dir, inlineMax: INLINE_MAX });
    try {
      await b.open({ recover: true });
      const { m } = await insert(b, 2);
      const now = Date.now();
      const [c1] = await b.claimDue(now, 10, { token: 'local:1', leaseMs: 20 });
      assert.equal(c1!.recipients.length, 2);
      assert.deepEqual(await b.claimDue(now, 10, { token: 'local:x', leaseMs: 20 }), [], 'claimed: not claimable while the lease holds');
      assert.equal(await b.countDue(m.queueId, now + 5), 0);
      // The lease runs out; only the first recipient is claimed again (max 1).
      await sleep(30);
      assert.equal(await b.countDue(m.queueId, Date.now()), 2, 'a claim whose lease ran out is due');
      const next = await b.nextDueAt();
      assert.ok(next !== null && next <= Date.now(), 'nextDueAt counts the run-out lease');
      const [c2] = await b.claimDue(Date.now(), 1, { token: 'local:2', leaseMs: 60_000 });
      assert.equal(c2!.recipients.length, 1);
      const [r0, r1] = c1!.recipients;
      assert.equal(c2!.recipients[0]!.id, r0!.id);

      // The late outcome of claim 1 for r0 is refused (its event not written); for r1 (not re-claimed) accepted.
      const res = await b.apply({ patches: [delivered(r0!, 'local:1'), delivered(r1!, 'local:1')], events: [makeEvent('delay_notice', { queue_id: m.queueId, message_id: '', sender: '', detail: 'change event' })] });
      assert.deepEqual(res.refused, [r0!.id]);
      const rows = await recipients(b, m.queueId);
      assert.deepEqual(rows.map((r) => [r.state, r.claimedBy ?? null]), [['delivering', 'local'], ['delivered', null]]);
      const ev = await b.eventsOf(m.queueId, 0, 100);
      assert.deepEqual(ev.filter((e) => e.event === 'delivered').map((e) => e.recipient), ['r1@example.net']);
      assert.equal(ev.filter((e) => e.event === 'delay_notice').length, 1, "the change's own events are written whatever the guards say");

      // The same within one transaction (group commit): a re-claim and a late outcome of the claim before it.
      const { m: m2 } = await insert(b, 1);
      const [d1] = await b.claimDue(Date.now(), 10, { token: 'local:3', leaseMs: 10 });
      await sleep(20);
      const [d2, late] = await Promise.all([
        b.claimDue(Date.now(), 10, { token: 'local:4', leaseMs: 60_000 }),
        b.apply({ patches: [delivered(d1!.recipients[0]!, 'local:3')] }),
      ]);
      assert.equal(d2[0]!.message.queueId, m2.queueId);
      assert.deepEqual(late.refused, [d1!.recipients[0]!.id], 'refused: the claim made earlier in the same transaction counts');
      assert.deepEqual((await b.apply({ patches: [delivered(d1!.recipients[0]!, 'local:4')] })).refused, []);

      // A state guard: refused when the recipient is not in one of the states.
      const g = await b.apply({ patches: [{ id: r1!.id, queueId: m.queueId, states: ['queued', 'deferred'], set: { state: 'removed' } }] });
      assert.deepEqual(g.refused, [r1!.id]);

      // The holder of claim 2 finishes r0: the message is done and goes.
      assert.deepEqual((await b.apply({ patches: [delivered(r0!, 'local:2')] })).refused, []);
      assert.equal(await b.getMessage(m.queueId), null);
      assert.deepEqual(await recipients(b, m.queueId), []);
    } finally {
      await b.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("leases are judged by the backend's clock, not the caller's `now`; a suspended or held claim is not taken over", async () => {
    const dir = tmp();
    const b = new SqliteBackend({ dataDir: dir, inlineMax: INLINE_MAX });
    try {
      await b.open({ recover: true });
      const { m } = await insert(b, 1, { claim: { token: 'local:1', leaseMs: 60_000 } });
      const later = Date.now() + 3_600_000;
      assert.deepEqual(await b.claimDue(later, 10, { token: 'local:2', leaseMs: 60_000 }), [], 'a live lease is not ended by a `now` ahead');
      assert.equal(await b.countDue(m.queueId, later), 0);
      const { m: s } = await insert(b, 1, { claim: { token: 'local:3', leaseMs: 10 } });
      const { m: h } = await insert(b, 1, { claim: { token: 'local:4', leaseMs: 10 }, destination: 'held.example' });
      const [rs] = await recipients(b, s.queueId);
      await b.apply({ patches: [{ id: rs!.id, queueId: s.queueId, states: ['delivering'], set: { suspended: true } }] });
      await b.apply({ overrides: [{ put: { destination: 'held.example', kind: 'hold', to: '', by: 'op', reason: '', at: Date.now() } }] });
      assert.equal((await recipients(b, s.queueId))[0]!.claimedBy, 'local', 'a patch that sets no state keeps the claim');
      await sleep(20);
      assert.deepEqual(await b.claimDue(Date.now(), 10, { token: 'local:5', leaseMs: 60_000 }), []);
      await b.apply({ patches: [{ id: rs!.id, queueId: s.queueId, set: { suspended: false } }], overrides: [{ remove: { destination: 'held.example', kind: 'hold' } }] });
      const taken = await b.claimDue(Date.now(), 10, { token: 'local:6', leaseMs: 60_000 });
      assert.deepEqual(taken.map((c) => c.message.queueId).sort(), [s.queueId, h.queueId].sort());
    } finally {
      await b.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('renew keeps a claim from being taken; the claim column decides after a restart', async () => {
    const dir = tmp();
    let b = new SqliteBackend({ dataDir: dir, inlineMax: INLINE_MAX });
    try {
      await b.open({ recover: true });
      const { m } = await insert(b, 1);
      const [c] = await b.claimDue(Date.now(), 10, { token: 'local:a', leaseMs: 40 });
      for (let i = 0; i < 4; i++) {
        await sleep(15);
        await b.renew(['local:a', 'local:unknown'], 40);
      }
      assert.deepEqual(await b.claimDue(Date.now(), 10, { token: 'local:b', leaseMs: 60_000 }), [], 'renewed: not taken');
      const r = c!.recipients[0]!;
      // A restart: nothing in memory, the row's claim decides (the queue layer would recover it first; here it is left).
      await b.close();
      b = new SqliteBackend({ dataDir: dir, inlineMax: INLINE_MAX });
      await b.open({ recover: true });
      assert.deepEqual((await b.apply({ patches: [delivered(r, 'local:other')] })).refused, [r.id]);
      assert.equal((await recipients(b, m.queueId))[0]!.state, 'delivering');
      // Without prev: the row is read; the right claim holds.
      assert.deepEqual((await b.apply({ patches: [delivered(r, 'local:a', false)] })).refused, []);
      assert.equal(await b.getMessage(m.queueId), null);
    } finally {
      await b.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('recovery-style patches end a claim: the old claim is refused afterwards', async () => {
    const dir = tmp();
    const b = new SqliteBackend({ dataDir: dir, inlineMax: INLINE_MAX });
    try {
      await b.open({ recover: true });
      const { m } = await insert(b, 1, { claim: { token: 'local:1', leaseMs: 60_000 } });
      const rows = await b.selectRecipients({ states: ['delivering'], claimPrefix: 'local:', afterId: 0, limit: 10 });
      assert.equal(rows.length, 1);
      const now = Date.now();
      await b.apply({ patches: rows.map((r) => ({ id: r.id, queueId: r.queueId, states: ['delivering'], set: { state: 'queued', nextAttemptAt: now } })), wake: true });
      const [r] = await recipients(b, m.queueId);
      assert.equal(r!.state, 'queued');
      assert.equal(r!.claimedBy, undefined);
      assert.equal((b.database.prepare(`SELECT claim, lease_until FROM recipients WHERE id = ?`).get(r!.id) as { claim: string | null }).claim, null);
      assert.deepEqual((await b.apply({ patches: [delivered(r!, 'local:1')] })).refused, [r!.id]);
      assert.equal(await b.countDue(m.queueId, now), 1);
    } finally {
      await b.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a finished message is deleted with its spool file; a report owed keeps it', async () => {
    const dir = tmp();
    const b = new SqliteBackend({ dataDir: dir, inlineMax: INLINE_MAX });
    try {
      await b.open({ recover: true });
      const { m, res } = await insert(b, 2, { body: BIG, claim: { token: 'local:1', leaseMs: 60_000 } });
      assert.equal(res.body, undefined, 'a large body is not held in one piece');
      const file = b.spool.pathOf(m.queueId);
      assert.ok(existsSync(file));
      const [r0, r1] = res.claimed;
      const failed: RecipientPatch = { ...delivered(r1!, 'local:1'), set: { state: 'failed', attempts: 1, report: 'failed' } };
      await b.apply({ patches: [delivered(r0!, 'local:1'), failed] });
      assert.ok(await b.getMessage(m.queueId), 'a report is still owed');
      assert.deepEqual(await b.pendingReports(10), [m.queueId]);
      assert.equal(await b.countRecipients({ withReport: true }), 1);
      assert.ok(existsSync(file));
      // The report is made: its message clears the report in its own insert.
      const report = message(1, 'report');
      const w = b.createBody(report.queueId);
      await w.write(Buffer.from('report'));
      await b.insert(report, w, { events: received(report), clearReports: { kind: 'failed', ids: [r1!.id] } });
      assert.equal(await b.getMessage(m.queueId), null);
      assert.ok(!existsSync(file), 'body file removed');
      assert.deepEqual(await b.countByState(), { queued: 1 });
    } finally {
      await b.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a queue.db made by the old EmbeddedStore schema opens and keeps working', async () => {
    const dir = tmp();
    mkdirSync(join(dir, 'queue'), { recursive: true });
    const qid = newQueueId();
    const old = new Database(join(dir, 'queue', 'queue.db'));
    old.pragma('journal_mode = WAL');
    old.exec(OLD_SCHEMA);
    old
      .prepare(
        `INSERT INTO messages (qid, message_id, sender, envid, ret, size, received_at, smtputf8, eight_bit, is_report, client, subject, body, rcpt_count, open_count)
         VALUES (?, '<old@test>', 'a@example.com', NULL, NULL, 5, ?, 0, 0, 0, 'test', 's', ?, 2, 2)`,
      )
      .run(qid, Date.now() - 1000, Buffer.from('hello'));
    old.prepare(`INSERT INTO recipients (qid, address, destination, state, next_at, lease_until) VALUES (?, 'x@example.net', 'example.net', 'queued', ?, 0)`).run(qid, Date.now() - 1000);
    old.prepare(`INSERT INTO recipients (qid, address, destination, state, next_at, lease_until) VALUES (?, 'y@example.net', 'example.net', 'delivering', ?, ?)`).run(qid, Date.now() - 1000, Date.now() + 3_600_000);
    old.prepare(`INSERT INTO events (ts, id, event, qid, message_id, sender) VALUES (?, 1000, 'received', ?, '<old@test>', 'a@example.com')`).run(isoTime(), qid);
    old.close();

    const b = new SqliteBackend({ dataDir: dir, inlineMax: INLINE_MAX });
    try {
      assert.deepEqual(await b.open({ recover: true }), { damaged: [] });
      const rows = await recipients(b, qid);
      assert.deepEqual(rows.map((r) => [r.state, r.claimedBy]), [['queued', undefined], ['delivering', undefined]]);
      // The queue layer's recovery finds the old claim (no token) and makes it due.
      const delivering = await b.selectRecipients({ states: ['delivering'], afterId: 0, limit: 10 });
      assert.equal(delivering.length, 1);
      await b.apply({ patches: [{ id: delivering[0]!.id, queueId: qid, states: ['delivering'], set: { state: 'queued', nextAttemptAt: Date.now() } }] });
      const [c] = await b.claimDue(Date.now(), 10, { token: 'local:1', leaseMs: 60_000 });
      assert.equal(c!.recipients.length, 2);
      assert.equal(c!.message.messageId, '<old@test>');
      // RFC 8689 flags (issue 14): columns added to the old messages table, false for its messages.
      assert.deepEqual([c!.message.requireTls, c!.message.tlsRequiredNo], [false, false]);
      assert.equal((await b.readBodyBuffer(qid))?.toString(), 'hello');
      await b.apply({ patches: c!.recipients.map((r) => delivered(r, 'local:1')) });
      assert.equal(await b.getMessage(qid), null);
      assert.equal((await b.eventsAfter(0, 10)).length, 3, 'old events kept, new ones after them');
      // New inserts into the migrated file work too.
      const { res } = await insert(b, 1, { claim: { token: 'local:2', leaseMs: 60_000 } });
      assert.equal(res.claimed[0]!.claimedBy, 'local');
    } finally {
      await b.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a full disk is StorageFull (spool write, spool fsync, database commit), and nothing is kept', async () => {
    const dir = tmp();
    const b = new SqliteBackend({ dataDir: dir, inlineMax: INLINE_MAX });
    try {
      await b.open({ recover: true });
      const enospc = () => {
        throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
      };
      b.spool.fault = (step) => (step === 'write' ? enospc() : undefined);
      const m1 = message(1, BIG);
      const w1 = b.createBody(m1.queueId);
      await assert.rejects(w1.write(Buffer.from(BIG)), StorageFull);
      await w1.abort();

      b.spool.fault = (step) => {
        if (step === 'fsync') throw Object.assign(new Error('EDQUOT: quota exceeded'), { code: 'EDQUOT' });
      };
      const m2 = message(1, BIG);
      const w2 = b.createBody(m2.queueId);
      await w2.write(Buffer.from(BIG));
      await assert.rejects(b.insert(m2, w2, { events: received(m2) }), StorageFull);
      b.spool.fault = null;

      b.groupCommit.fault = () => {
        throw Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' });
      };
      const m3 = message(1, BIG);
      const w3 = b.createBody(m3.queueId);
      await w3.write(Buffer.from(BIG));
      await assert.rejects(b.insert(m3, w3, { events: received(m3) }), (e: unknown) => e instanceof StorageFull && /disk is full/.test((e as Error).message));
      await assert.rejects(b.apply({ events: received(m3) }), StorageFull);
      b.groupCommit.fault = null;

      for (const m of [m1, m2, m3]) {
        assert.equal(await b.getMessage(m.queueId), null);
        assert.ok(!existsSync(b.spool.pathOf(m.queueId)), 'no body file kept');
      }
      assert.deepEqual(await b.eventsAfter(0, 10), []);
      // Other errors pass as they are.
      b.groupCommit.fault = () => {
        throw Object.assign(new Error('disk I/O error'), { code: 'SQLITE_IOERR' });
      };
      await assert.rejects(b.apply({ events: received(m3) }), (e: unknown) => !(e instanceof StorageFull) && (e as { code?: string }).code === 'SQLITE_IOERR');
      b.groupCommit.fault = null;
    } finally {
      await b.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('damage found at open is reported (not repaired by quarantine here); a reader (recover false) reports none', async () => {
    const dir = tmp();
    let b = new SqliteBackend({ dataDir: dir, inlineMax: INLINE_MAX });
    try {
      await b.open({ recover: true });
      const { m: damagedMsg } = await insert(b, 1, { body: BIG });
      const { m: fine } = await insert(b, 1, { body: BIG });
      await b.close();
      truncateSync(b.spool.pathOf(damagedMsg.queueId), 100);
      // A stray body file (its message gone) and orphan recipients (their message row gone).
      const orphanQid = newQueueId();
      const strayQid = newQueueId();
      writeFileSync(b.spool.pathOf(strayQid), 'a body whose message is gone');
      writeFileSync(b.spool.pathOf(orphanQid), 'the body of recipients whose message row is gone');
      const db = new Database(join(dir, 'queue', 'queue.db'));
      db.prepare(`INSERT INTO recipients (qid, address, destination, state, next_at) VALUES (?, 'o@example.net', 'example.net', 'deferred', 0)`).run(orphanQid);
      db.close();

      // A body being received by a running server, in spool/tmp/.
      const receiving = join(b.spool.tmpDir, newQueueId());
      writeFileSync(receiving, 'partial');
      b = new SqliteBackend({ dataDir: dir, inlineMax: INLINE_MAX });
      const reader = await b.open({ recover: false });
      assert.ok(existsSync(receiving), "a reader leaves a running server's bodies in progress alone");
      assert.deepEqual(reader, { damaged: [] });
      assert.ok(existsSync(b.spool.pathOf(strayQid)), 'a reader sweeps nothing');
      await b.close();

      b = new SqliteBackend({ dataDir: dir, inlineMax: INLINE_MAX });
      const report = await b.open({ recover: true });
      const by = new Map(report.damaged.map((d) => [d.queueId, d.reason]));
      assert.match(by.get(damagedMsg.queueId) ?? '', /100 octets, \d+ were accepted/);
      assert.match(by.get(orphanQid) ?? '', /message row missing/);
      assert.ok(!by.has(fine.queueId));
      assert.ok(!existsSync(b.spool.pathOf(strayQid)), 'orphan body file swept');
      assert.ok(existsSync(b.spool.pathOf(orphanQid)), 'the body of recipients without their message row is kept');
      assert.ok(existsSync(b.spool.pathOf(fine.queueId)));
      // Storage repair only: the placeholder message exists, nothing is quarantined by the backend.
      const placeholder = await b.getMessage(orphanQid);
      assert.ok(placeholder);
      assert.deepEqual((await recipients(b, damagedMsg.queueId)).map((r) => r.state), ['queued']);
      assert.deepEqual((await b.eventsAfter(0, 100)).filter((e) => e.event === 'quarantined'), []);
      // The queue layer quarantines: the mark is set by apply.
      await b.apply({ quarantine: { queueId: damagedMsg.queueId, reason: by.get(damagedMsg.queueId)! } });
      assert.match((await b.getMessage(damagedMsg.queueId))!.quarantine, /truncated/);
      assert.deepEqual((await b.list({ quarantined: true, limit: 10 })).map((x) => x.queueId).includes(damagedMsg.queueId), true);
      await b.apply({ quarantine: { queueId: damagedMsg.queueId, reason: '' } });
      assert.equal((await b.getMessage(damagedMsg.queueId))!.quarantine, '');
    } finally {
      await b.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('tracking index: the store worker copies every event once, in order, also past one batch of 5000', async () => {
    const dir = tmp();
    const b = new SqliteBackend({ dataDir: dir, inlineMax: INLINE_MAX });
    try {
      await b.open({ recover: true });
      await insert(b, 7000);
      const { m } = await insert(b, 3);
      const last = b.durableEventSeq();
      assert.equal(last, 7003);
      const file = join(dir, 'queue', 'track.db');
      const indexed = (): { n: number; max: number | null } => {
        if (!existsSync(file)) return { n: 0, max: null };
        const db = new Database(file, { readonly: true });
        try {
          return db.prepare('SELECT COUNT(*) AS n, MAX(seq) AS max FROM track').get() as { n: number; max: number | null };
        } catch {
          return { n: 0, max: null }; // the table is being made
        } finally {
          db.close();
        }
      };
      await waitFor(() => indexed().max === last, 10_000, 'the tracking index to catch up');
      assert.deepEqual(indexed(), { n: 7003, max: 7003 });
      const db = new Database(file, { readonly: true });
      try {
        const rows = db.prepare('SELECT seq, qid, recipient FROM track WHERE qid = ? ORDER BY seq').all(m.queueId) as Array<{ seq: number; qid: string; recipient: string }>;
        assert.deepEqual(
          rows.map((r) => [r.seq, r.recipient]),
          [7001, 7002, 7003].map((seq, i) => [seq, `r${i}@example.net`]),
        );
      } finally {
        db.close();
      }
    } finally {
      await b.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a steady stream of writes does not grow the WAL without end: the checkpointer pauses the writer and the WAL starts again', async () => {
    const dir = tmp();
    // Checkpoints every 20 ms, a pause once 200 frames (~800 KB) were left behind.
    const b = new SqliteBackend({ dataDir: dir, checkpointIntervalMs: 20, walRestartFrames: 200 });
    const wal = join(dir, 'queue', 'queue.db-wal');
    const body = 'Subject: t\r\n\r\n' + 'y'.repeat(12_000) + '\r\n';
    try {
      await b.open({ recover: true });
      let written = 0;
      let maxWal = 0;
      // 16 writers back to back, so the writer never rests long enough for a
      // checkpoint to catch up by chance: ~77 MB of bodies in all. Without the
      // pauses the WAL is never started again and ends larger than all of
      // them (68 MB for 48 MB, measured); with them it peaked at 3.6 MB.
      await Promise.all(
        Array.from({ length: 16 }, async () => {
          for (let i = 0; i < 400; i++) {
            await insert(b, 1, { body });
            written += body.length;
            maxWal = Math.max(maxWal, statSync(wal).size);
          }
        }),
      );
      assert.ok(b.groupCommit.stats.holds > 0, 'the checkpointer asked for pauses');
      assert.ok(maxWal < written / 2, `the WAL peaked at ${maxWal} octets for ${written} written`);
    } finally {
      await b.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('events: durable seq and listeners; tracking and pruning', async () => {
    const dir = tmp();
    const b = new SqliteBackend({ dataDir: dir, inlineMax: INLINE_MAX });
    try {
      await b.open({ recover: true });
      const heard: MailEvent[] = [];
      b.onEvents((es) => heard.push(...es));
      const { m } = await insert(b, 40);
      await waitFor(() => existsSync(join(dir, 'queue', 'track.db')), 5000, 'the store worker');
      assert.equal(heard.length, 40, 'heard once durable (insert resolves after the sync)');
      assert.equal(b.durableEventSeq(), heard[39]!.seq);
      const t = await b.track({ recipient: 'r39@example.net', limit: 10 });
      assert.deepEqual(t.messages.map((x) => [x.queueId, x.events.length]), [[m.queueId, 40]]);
      const states = await b.messageStates([m.queueId]);
      assert.deepEqual(states[0]!.states, { queued: 40 });
      const [c] = await b.claimDue(Date.now(), 100, { token: 'local:1', leaseMs: 60_000 });
      await b.apply({ patches: c!.recipients.map((r) => delivered(r, 'local:1')) });
      assert.equal(await b.pruneEvents(new Date(Date.now() + 60_000).toISOString(), b.durableEventSeq(), 1000), 80);
    } finally {
      await b.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
