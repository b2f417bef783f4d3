// The PostgreSQL queue backend, driven directly through the QueueBackend
// interface against a real throw-away cluster (test/helpers/postgres): chunked
// bodies, claims between two nodes (SKIP LOCKED, leases by the database's
// clock, claim guards, renewals, holds), finishing, NOTIFY between nodes,
// schema versions, outages and reconnection, event scopes, heartbeats, group
// commit with a failing operation, StorageFull.
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { PostgresBackend, BODY_CHUNK, SCHEMA_VERSION } from '../../src/queue/backends/postgres.js';
import { StorageFull, type RecipientPatch } from '../../src/queue/backend.js';
import type { NewMessage, RecipientRecord } from '../../src/queue/store.js';
import { makeEvent, type MailEvent } from '../../src/log/events.js';
import { startPostgres, type Postgres } from '../helpers/postgres.js';

let cluster: Postgres | null = null;
let databases = 0;
let seq = 0;
const opened: PostgresBackend[] = [];

before(async () => {
  cluster = await startPostgres();
});
/** closeAll - every backend a test opened (also those an assertion left open). */
async function closeAll(): Promise<void> {
  for (const b of opened.splice(0)) await b.close().catch(() => undefined);
}
afterEach(closeAll);
after(async () => {
  await closeAll();
  await cluster?.stop();
});

/** freshDatabase - an empty database of its own for one test; its URL. */
async function freshDatabase(): Promise<string> {
  const name = `pgtest${++databases}`;
  await sql(cluster!.url, `CREATE DATABASE ${name}`);
  return cluster!.url.replace(/\/[^/?]*(\?|$)/, `/${name}$1`);
}

async function sql<R extends pg.QueryResultRow = pg.QueryResultRow>(url: string, text: string, params: unknown[] = []): Promise<R[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query<R>(text, params)).rows;
  } finally {
    await c.end();
  }
}

async function backend(url: string, node: string, leaseMs = 60_000): Promise<PostgresBackend> {
  const b = new PostgresBackend({ url, node, leaseMs, pool: 4 });
  opened.push(b);
  await b.open({ recover: true });
  return b;
}

async function waitFor(cond: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function newMessage(n: number, size: number, destination = 'example.net'): NewMessage {
  const queueId = `Q${process.pid}x${++seq}x${Date.now().toString(36)}`;
  return {
    queueId,
    messageId: `<m${queueId}@test>`,
    sender: 'alice@example.com',
    envid: null,
    ret: null,
    size,
    receivedAt: Date.now() - 1000,
    smtputf8: false,
    eightBit: false,
    isReport: false,
    client: 'test [127.0.0.1]',
    subject: 't',
    recipients: Array.from({ length: n }, (_, i) => ({ address: `r${i}@${destination}`, orcpt: null, notify: null, destination })),
  };
}

function received(m: NewMessage): MailEvent[] {
  return m.recipients.map((r) =>
    makeEvent('received', { queue_id: m.queueId, message_id: m.messageId, sender: m.sender, recipient: r.address, state: 'queued', remote: m.client }),
  );
}

/** bodyOf - a body of `size` octets whose every position is recognisable (a shifted chunk would not compare equal). */
function bodyOf(size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (i * 7 + (i >> 11)) & 0xff;
  return b;
}

async function put(b: PostgresBackend, n: number, opts: { size?: number; destination?: string; claim?: { token: string; leaseMs: number } } = {}) {
  const body = bodyOf(opts.size ?? 40);
  const m = newMessage(n, body.length, opts.destination);
  const w = b.createBody(m.queueId);
  for (let i = 0; i < body.length; i += 64 * 1024 + 3) await w.write(body.subarray(i, i + 64 * 1024 + 3));
  const res = await b.insert(m, w, { events: received(m), ...(opts.claim ? { claim: opts.claim } : {}) });
  return { m, body, res };
}

async function readAll(b: PostgresBackend, qid: string): Promise<{ data: Buffer; pieces: number; largest: number }> {
  const parts: Buffer[] = [];
  let largest = 0;
  for await (const c of (await b.readBody(qid)) as AsyncIterable<Buffer>) {
    parts.push(c);
    largest = Math.max(largest, c.length);
  }
  return { data: Buffer.concat(parts), pieces: parts.length, largest };
}

function outcome(r: RecipientRecord, token: string | undefined, state: 'delivered' | 'deferred' | 'failed', extra: Partial<RecipientPatch['set']> = {}): RecipientPatch {
  return {
    id: r.id,
    queueId: r.queueId,
    ...(token ? { claim: token } : {}),
    set: { state, attempts: r.attempts + 1, lastAttemptAt: Date.now(), lastReply: `${state} reply`, ...extra },
    event: makeEvent(state, { queue_id: r.queueId, message_id: '', sender: '', recipient: r.address, attempt: r.attempts + 1, state }),
  };
}

describe('PostgresBackend', { timeout: 120_000 }, () => {
  test('insert and read back: a small body in one piece, a 3 MB body in 256 KB chunks streamed chunk by chunk', async () => {
    const url = await freshDatabase();
    const b = await backend(url, 'a');
    const small = await put(b, 2, { size: 300 });
    assert.deepEqual(await b.readBodyBuffer(small.m.queueId), small.body);
    assert.deepEqual(small.res.body, small.body, 'insert hands back a small body');
    assert.deepEqual((await readAll(b, small.m.queueId)).data, small.body);

    const big = await put(b, 1, { size: 3 * 1024 * 1024 + 5 });
    assert.equal(big.res.body, undefined);
    assert.equal(await b.readBodyBuffer(big.m.queueId), null, 'a chunked body is not handed back whole');
    const read = await readAll(b, big.m.queueId);
    assert.ok(read.data.equals(big.body), '3 MB body read back intact');
    assert.ok(read.largest <= BODY_CHUNK, `streamed in pieces of at most one chunk (largest ${read.largest})`);
    const chunks = await sql<{ n: number; len: number }>(url, `SELECT n, length(data) AS len FROM bodies WHERE qid = $1 ORDER BY n`, [big.m.queueId]);
    assert.equal(chunks.length, 13);
    assert.ok(chunks.slice(0, -1).every((c) => c.len === BODY_CHUNK));
    assert.equal((await sql(url, `SELECT 1 FROM body_uploads`)).length, 0, 'no unfinished upload left');

    const m = await b.getMessage(big.m.queueId);
    assert.equal(m?.size, big.body.length);
    const rs = await b.selectRecipients({ queueId: small.m.queueId, afterId: 0, limit: 10 });
    assert.deepEqual(rs.map((r) => [r.address, r.state, r.attempts]), [['r0@example.net', 'queued', 0], ['r1@example.net', 'queued', 0]]);
    await assert.rejects(() => b.readBody('nonexistent'), /no message/);

    // An aborted upload leaves no chunk behind.
    const w = b.createBody('ABORTED1');
    await w.write(bodyOf(BODY_CHUNK * 2 + 10));
    assert.equal((await sql(url, `SELECT 1 FROM bodies WHERE qid = 'ABORTED1'`)).length, 2);
    await w.abort();
    assert.equal((await sql(url, `SELECT 1 FROM bodies WHERE qid = 'ABORTED1'`)).length, 0);
    assert.equal((await sql(url, `SELECT 1 FROM body_uploads`)).length, 0);
  });

  test('two instances (nodes a and b) claiming at once never claim the same recipient', async () => {
    const url = await freshDatabase();
    const a = await backend(url, 'a');
    const b = await backend(url, 'b');
    for (let i = 0; i < 30; i++) await put(a, 4);
    const seen = new Map<number, string>();
    let k = 0;
    const take = async (s: PostgresBackend, who: string): Promise<void> => {
      for (;;) {
        const claims = await s.claimDue(Date.now() + 1, 5, { token: `${who}:${++k}`, leaseMs: 60_000 });
        if (claims.length === 0) return;
        for (const c of claims) {
          assert.ok(c.token.startsWith(`${who}:`));
          assert.equal(c.message.queueId, c.recipients[0]!.queueId);
          for (const r of c.recipients) {
            assert.ok(!seen.has(r.id), `recipient ${r.id} claimed by ${seen.get(r.id)} and ${who}`);
            assert.equal(r.state, 'delivering');
            assert.equal(r.claimedBy, who);
            seen.set(r.id, who);
          }
        }
      }
    };
    await Promise.all([take(a, 'a'), take(b, 'b'), take(a, 'a'), take(b, 'b')]);
    assert.equal(seen.size, 120, 'every recipient claimed exactly once');
    assert.ok(new Set(seen.values()).size === 2, 'both nodes took work');
    const byNode = await a.countRecipients({ states: ['delivering'], claimPrefix: 'b:' });
    assert.equal(byNode, [...seen.values()].filter((w) => w === 'b').length, 'claimPrefix selects one node\'s claims');
    // A node opening again leaves the other's claims alone.
    const again = new PostgresBackend({ url, node: 'a' });
    opened.push(again);
    assert.deepEqual((await again.open({ recover: true })).damaged, []);
    assert.equal(await a.countRecipients({ states: ['delivering'] }), 120);
  });

  test('claim guard: an old token is refused after its lease ran out and another claim took over; a late outcome nobody re-claimed is recorded', async () => {
    const url = await freshDatabase();
    const a = await backend(url, 'a');
    const b = await backend(url, 'b');
    const { m } = await put(a, 2);
    const t0 = Date.now();
    const [first] = await a.claimDue(Date.now() + 1, 10, { token: 'a:1', leaseMs: 300 });
    assert.equal(first!.recipients.length, 2);
    const meanwhile = await b.claimDue(Date.now() + 1, 10, { token: 'b:1', leaseMs: 300 });
    // (Only meaningful while the lease surely runs: a machine stalled for 300 ms proves nothing here.)
    if (Date.now() - t0 < 280) assert.deepEqual(meanwhile, [], 'claimed recipients are not claimable while leased');
    await new Promise((r) => setTimeout(r, 450));
    // Lease over: b takes over only the first recipient.
    const [taken] = await b.claimDue(Date.now() + 1.5, 1, { token: 'b:2', leaseMs: 60_000 });
    assert.equal(taken!.recipients.length, 1);
    const [r0, r1] = first!.recipients as [RecipientRecord, RecipientRecord];
    const stolen = taken!.recipients[0]!.id === r0.id ? r0 : r1;
    const late = stolen === r0 ? r1 : r0;
    const res = await a.apply({ patches: [outcome(stolen, 'a:1', 'delivered'), outcome(late, 'a:1', 'deferred', { nextAttemptAt: Date.now() + 60_000.4 /* a computed time may carry a fraction */ })] });
    assert.deepEqual(res.refused, [stolen.id], 'the outcome under the old claim is refused');
    const rs = await a.selectRecipients({ queueId: m.queueId, afterId: 0, limit: 10 });
    const byId = new Map(rs.map((r) => [r.id, r]));
    assert.equal(byId.get(stolen.id)!.state, 'delivering');
    assert.equal(byId.get(stolen.id)!.claimedBy, 'b');
    assert.equal(byId.get(late.id)!.state, 'deferred', 'the late outcome nobody re-claimed is recorded');
    assert.equal(byId.get(late.id)!.claimedBy, undefined);
    const ev = await a.eventsOf(m.queueId, 0, 100);
    assert.deepEqual(ev.filter((e) => e.event !== 'received').map((e) => [e.event, e.recipient]), [['deferred', late.address]], 'the refused patch wrote no event');
    const claim = await sql<{ claim: string | null; lease_until: Date | null }>(url, `SELECT claim, lease_until FROM recipients WHERE id = $1`, [late.id]);
    assert.deepEqual(claim[0], { claim: null, lease_until: null }, 'leaving "delivering" drops claim and lease');
    // The states guard.
    const guarded = await a.apply({ patches: [{ id: late.id, queueId: m.queueId, states: ['queued'], set: { suspended: true } }] });
    assert.deepEqual(guarded.refused, [late.id]);
  });

  test('renew keeps a claim from being re-claimed', async () => {
    const url = await freshDatabase();
    const a = await backend(url, 'a');
    const b = await backend(url, 'b');
    await put(a, 1);
    const claims = await a.claimDue(Date.now() + 1, 10, { token: 'a:7', leaseMs: 1000 });
    assert.equal(claims.length, 1);
    // Renewed every 250 ms for twice the lease: never claimable meanwhile.
    for (let i = 0; i < 8; i++) {
      await new Promise((r) => setTimeout(r, 250));
      await a.renew(['a:7'], 1000);
      assert.deepEqual(await b.claimDue(Date.now() + 1, 10, { token: `b:${i}`, leaseMs: 1000 }), [], 'renewed: not claimable');
    }
    await new Promise((r) => setTimeout(r, 1200));
    const taken = await b.claimDue(Date.now() + 1, 10, { token: 'b:9', leaseMs: 60_000 });
    assert.equal(taken.length, 1, 'not renewed: claimable once the lease ran out');
    assert.equal(taken[0]!.recipients[0]!.claimedBy, 'b');
  });

  test('a held destination is not claimed, neither by claimDue nor at insert', async () => {
    const url = await freshDatabase();
    const a = await backend(url, 'a');
    await a.apply({ overrides: [{ put: { destination: 'held.example', kind: 'hold', to: '', by: 'op', reason: 'maintenance', at: Date.now() } }] });
    const held = await put(a, 2, { destination: 'held.example' });
    const free = await put(a, 1, { destination: 'free.example', claim: { token: 'a:1', leaseMs: 60_000 } });
    assert.equal(free.res.claimed.length, 1, 'insert claims recipients of destinations not held');
    assert.equal(free.res.claimed[0]!.claimedBy, 'a');
    const heldClaim = await put(a, 1, { destination: 'held.example', claim: { token: 'a:2', leaseMs: 60_000 } });
    assert.deepEqual(heldClaim.res.claimed, [], 'insert leaves held recipients queued');
    assert.deepEqual(await a.claimDue(Date.now() + 1, 10, { token: 'a:3', leaseMs: 60_000 }), []);
    assert.equal(await a.countDue(held.m.queueId, Date.now() + 1), 0);
    assert.deepEqual(
      (await a.overrides()).map((o) => [o.destination, o.kind, o.reason]),
      [['held.example', 'hold', 'maintenance']],
    );
    await a.apply({ overrides: [{ remove: { destination: 'held.example', kind: 'hold' } }] });
    assert.equal(await a.countDue(held.m.queueId, Date.now() + 1), 2);
    const claims = await a.claimDue(Date.now() + 1, 10, { token: 'a:4', leaseMs: 60_000 });
    assert.equal(claims.reduce((n, c) => n + c.recipients.length, 0), 3, 'released: claimable again');
  });

  test('a finished message is deleted with its recipients and body chunks; a report owed keeps it', async () => {
    const url = await freshDatabase();
    const a = await backend(url, 'a');
    const { m } = await put(a, 2, { size: BODY_CHUNK * 2 + 100 });
    const [c] = await a.claimDue(Date.now() + 1, 10, { token: 'a:1', leaseMs: 60_000 });
    const [r0, r1] = c!.recipients as [RecipientRecord, RecipientRecord];
    await a.apply({ patches: [outcome(r0, 'a:1', 'delivered'), outcome(r1, 'a:1', 'failed', { report: 'failed' })] });
    assert.ok(await a.getMessage(m.queueId), 'kept while a report is owed');
    assert.deepEqual(await a.pendingReports(10), [m.queueId]);
    // The report is queued: its insert clears the owed report, and the original goes, body and all.
    const dsn = newMessage(1, 10);
    const w = a.createBody(dsn.queueId);
    await w.write(Buffer.from('a report'));
    await a.insert({ ...dsn, sender: '', isReport: true }, w, { events: received(dsn), clearReports: { kind: 'failed', ids: [r1.id] } });
    assert.equal(await a.getMessage(m.queueId), null);
    assert.equal(await a.countRecipients({ queueId: m.queueId }), 0);
    assert.equal((await sql(url, `SELECT 1 FROM bodies WHERE qid = $1`, [m.queueId])).length, 0, 'body chunks deleted');
    await assert.rejects(() => a.readBody(m.queueId), /no message/);
    assert.deepEqual(await a.pendingReports(10), []);
    assert.ok((await a.eventsOf(m.queueId, 0, 10)).length > 0, 'its events stay (the event log and tracking need them)');
  });

  test('NOTIFY wakes the other instance; this one is woken at commit, once; a change without wake does not', async () => {
    const url = await freshDatabase();
    const a = await backend(url, 'a');
    const b = await backend(url, 'b');
    let woke = { a: 0, b: 0 };
    a.onWake(() => woke.a++);
    b.onWake(() => woke.b++);
    await put(a, 1);
    await waitFor(() => woke.b > 0 && woke.a > 0, 5000, 'both nodes woken by an insert with unclaimed recipients');
    await new Promise((r) => setTimeout(r, 100));
    woke = { a: 0, b: 0 };
    await a.apply({ events: [makeEvent('delay_notice', { queue_id: 'x', message_id: '', sender: '' })] });
    await put(a, 1, { claim: { token: 'a:1', leaseMs: 60_000 } });
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(woke, { a: 0, b: 0 }, 'no wake for changes that make nothing due');
    await a.apply({ wake: true });
    assert.equal(woke.a, 1, 'this node is woken before apply() resolves');
    await waitFor(() => woke.b > 0, 5000, 'b woken by apply({ wake })');
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(woke, { a: 1, b: 1 }, 'once each: this node\'s own NOTIFY is not passed on again');
  });

  test('a schema newer than this Petrel makes open() reject with a clear message; two nodes migrating at once agree', async () => {
    const url = await freshDatabase();
    const nodes = [new PostgresBackend({ url, node: 'a' }), new PostgresBackend({ url, node: 'b' }), new PostgresBackend({ url, node: 'c' })];
    opened.push(...nodes);
    await Promise.all(nodes.map((n) => n.open({ recover: true })));
    assert.deepEqual(await sql(url, `SELECT value FROM petrel_meta WHERE key = 'schema_version'`), [{ value: String(SCHEMA_VERSION) }]);
    for (const n of nodes) await n.close();
    await sql(url, `UPDATE petrel_meta SET value = $1 WHERE key = 'schema_version'`, [String(SCHEMA_VERSION + 5)]);
    const late = new PostgresBackend({ url, node: 'a' });
    opened.push(late);
    await assert.rejects(
      () => late.open({ recover: true }),
      (e: Error) => e.message === `queue schema version ${SCHEMA_VERSION + 5} is newer than this Petrel knows (${SCHEMA_VERSION}); upgrade Petrel`,
    );
  });

  test('eventsAfter: this node\'s events by default, every node\'s with scope "all"; listeners and durableEventSeq follow commits', async () => {
    const url = await freshDatabase();
    const a = await backend(url, 'a');
    const b = await backend(url, 'b');
    const heard: MailEvent[] = [];
    a.onEvents((es) => heard.push(...es));
    const ma = await put(a, 3);
    const mb = await put(b, 2);
    await put(a, 1);
    const mine = await a.eventsAfter(0, 100);
    assert.equal(mine.length, 4);
    assert.ok(mine.every((e) => e.queue_id !== mb.m.queueId));
    assert.deepEqual((await b.eventsAfter(0, 100)).map((e) => e.queue_id), [mb.m.queueId, mb.m.queueId]);
    const all = await a.eventsAfter(0, 100, 'all');
    assert.equal(all.length, 6);
    assert.ok(all.every((e, i) => i === 0 || e.seq! > all[i - 1]!.seq!));
    assert.deepEqual(heard.map((e) => e.seq), mine.map((e) => e.seq), 'listeners hear this node\'s events, with their seqs');
    assert.equal(a.durableEventSeq(), mine[mine.length - 1]!.seq);
    assert.deepEqual((await b.eventsOf(ma.m.queueId, 0, 100)).map((e) => e.recipient), ['r0@example.net', 'r1@example.net', 'r2@example.net'], 'eventsOf sees every node\'s events');
    const tracked = await b.track({ messageId: ma.m.messageId, limit: 10 });
    assert.deepEqual(tracked.messages.map((m) => [m.queueId, m.events.length]), [[ma.m.queueId, 3]]);
    const bySender = await b.track({ sender: 'ALICE@example.com', limit: 2 });
    assert.equal(bySender.messages.length, 2);
    assert.notEqual(bySender.next, null);
    // Prune: only this node's events, only those copied (<= maxSeq), never of a message still queued.
    await a.apply({ events: [makeEvent('delay_notice', { queue_id: 'gone', message_id: '', sender: '', ts: '2000-01-01T00:00:00.000Z' })] });
    assert.equal(await b.pruneEvents('2100-01-01T00:00:00.000Z', Number.MAX_SAFE_INTEGER, 100), 0);
    assert.equal(await a.pruneEvents('2100-01-01T00:00:00.000Z', a.durableEventSeq(), 100), 1);
    // A reopened node starts from its own newest seq.
    const again = await backend(url, 'b');
    assert.equal(again.durableEventSeq(), (await b.eventsAfter(0, 100)).at(-1)!.seq);
  });

  test('heartbeat and nodes: the database\'s clock, claims in flight, alive within the lease', async () => {
    const url = await freshDatabase();
    const a = await backend(url, 'a');
    const b = await backend(url, 'b');
    await a.heartbeat('a', 1000);
    await b.heartbeat('b', 2000);
    await put(a, 3);
    await a.claimDue(Date.now() + 1, 2, { token: 'a:1', leaseMs: 60_000 });
    await b.claimDue(Date.now() + 1, 1, { token: 'b:1', leaseMs: 60_000 });
    const list = await a.nodes(60_000);
    assert.deepEqual(list.map((n) => [n.name, n.startedAt, n.inFlight, n.alive]), [['a', 1000, 2, true], ['b', 2000, 1, true]]);
    assert.ok(Math.abs(list[0]!.heartbeatAt - Date.now()) < 5000);
    await new Promise((r) => setTimeout(r, 700));
    await a.heartbeat('a', 1000);
    assert.deepEqual((await b.nodes(600)).map((n) => [n.name, n.alive]), [['a', true], ['b', false]], 'a heartbeat older than the lease: not alive');
    await a.close();
    assert.deepEqual((await b.nodes(60_000)).map((n) => [n.name, n.alive]), [['a', false], ['b', true]], 'a node that stopped cleanly is not alive (it may start again at once)');
    const again = await backend(url, 'a');
    await again.heartbeat('a', 3000);
    assert.deepEqual((await b.nodes(60_000)).map((n) => [n.name, n.startedAt, n.alive]), [['a', 3000, true], ['b', 2000, true]]);
  });

  test('group commit: concurrent writes share transactions; a failing one fails alone; StorageFull for a full disk', async () => {
    const url = await freshDatabase();
    const a = await backend(url, 'a');
    const ms = Array.from({ length: 20 }, () => newMessage(1, 5));
    const writers = ms.map((m) => a.createBody(m.queueId));
    a.failNext = new Error('disk on fire');
    const results = await Promise.allSettled(
      ms.map(async (m, i) => {
        await writers[i]!.write(Buffer.from('hello'));
        return a.insert(m, writers[i]!, { events: received(m) });
      }),
    );
    const failed = results.filter((r) => r.status === 'rejected');
    assert.equal(failed.length, 1);
    assert.match(String((failed[0] as PromiseRejectedResult).reason), /disk on fire/);
    assert.equal((await a.list({ limit: 100 })).length, 19, 'the others committed');
    assert.ok(a.stats.batches < a.stats.ops, `concurrent writes shared transactions (${a.stats.ops} operations in ${a.stats.batches} commits)`);
    assert.equal((await a.eventsAfter(0, 100)).length, 19, 'no event of the failed insert');
    // A failed insert of a chunked body leaves no chunk behind.
    const big = newMessage(1, BODY_CHUNK * 2 + 1);
    const bw = a.createBody(big.queueId);
    await bw.write(bodyOf(BODY_CHUNK * 2 + 1));
    a.failNext = new Error('disk on fire again');
    await assert.rejects(() => a.insert(big, bw, { events: received(big) }), /disk on fire again/);
    assert.equal((await sql(url, `SELECT 1 FROM bodies WHERE qid = $1 UNION ALL SELECT 1 FROM body_uploads WHERE qid = $1`, [big.queueId])).length, 0);
    // A disk-full error from the server (SQLSTATE 53100) is StorageFull.
    await sql(
      url,
      `CREATE FUNCTION full_disk() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = '53100'; END $$;
       CREATE TRIGGER full_disk BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION full_disk();`,
    );
    const m = newMessage(1, 5);
    const w = a.createBody(m.queueId);
    await w.write(Buffer.from('hello'));
    await assert.rejects(() => a.insert(m, w, { events: received(m) }), (e: unknown) => e instanceof StorageFull);
    assert.equal(await a.getMessage(m.queueId), null);
  });

  test('two nodes delivering the recipients of the same messages at once, in many small transactions: no deadlock, every message finished once', async () => {
    const url = await freshDatabase();
    const a = await backend(url, 'a');
    const b = await backend(url, 'b');
    const qids: string[] = [];
    for (let i = 0; i < 12; i++) qids.push((await put(a, 6, { size: BODY_CHUNK + 1 })).m.queueId);
    // Each node claims every other recipient of each message.
    const mine: Array<{ node: PostgresBackend; token: string; r: RecipientRecord }> = [];
    for (const qid of qids) {
      const rs = await a.selectRecipients({ queueId: qid, afterId: 0, limit: 10 });
      for (const [i, r] of rs.entries()) {
        const [node, token] = i % 2 ? [a, `a:${r.id}`] : [b, `b:${r.id}`];
        await sql(url, `UPDATE recipients SET state = 'delivering', claim = $2, claim_node = $3, lease_until = now() + interval '1 minute' WHERE id = $1`, [r.id, token, token[0]]);
        mine.push({ node, token, r });
      }
    }
    // Outcomes one recipient at a time, messages interleaved in opposite orders on the two nodes.
    const order = (list: typeof mine, rev: boolean) => (rev ? [...list].reverse() : list);
    const deliver = (x: (typeof mine)[number]) => x.node.apply({ patches: [outcome(x.r, x.token, 'delivered')] });
    const results = await Promise.allSettled([
      ...order(mine.filter((x) => x.node === a), false).map(deliver),
      ...order(mine.filter((x) => x.node === b), true).map(deliver),
    ]);
    const failed = results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason));
    assert.deepEqual(failed, [], 'no outcome failed');
    assert.ok(results.every((r) => r.status === 'fulfilled' && r.value.refused.length === 0), 'no outcome refused');
    assert.deepEqual(await a.list({ limit: 100 }), [], 'every message finished and deleted');
    assert.equal((await sql(url, `SELECT 1 FROM bodies`)).length, 0, 'with its body');
    const delivered = [...(await a.eventsAfter(0, 10_000)), ...(await b.eventsAfter(0, 10_000))].filter((e) => e.event === 'delivered');
    assert.equal(delivered.length, 72, 'every outcome wrote its event');
  });

  test('hot paths use indexes: claim, countDue, nextDueAt, pendingReports, renew, a node\'s claims, track (no scan of recipients, events or messages)', async () => {
    const url = await freshDatabase();
    const a = await backend(url, 'a');
    const { m } = await put(a, 3);
    await sql(
      url,
      `INSERT INTO messages (qid, message_id, sender, size, received_at, smtputf8, eight_bit, is_report, client, subject, body_chunks, rcpt_count, open_count)
         SELECT 'F' || g, '<f' || g || '@x>', 's' || (g % 50) || '@x', 10, 0, false, false, false, 'c', 's', 1, 2, 2 FROM generate_series(1, 20000) g;
       INSERT INTO recipients (qid, address, destination, state, next_at, report)
         SELECT 'F' || (g / 2), 'r' || g || '@x', 'd' || (g % 100) || '.example', CASE WHEN g % 10 = 0 THEN 'deferred' ELSE 'delivered' END, g,
                CASE WHEN g % 97 = 0 THEN 'failed' END
         FROM generate_series(2, 40001) g;
       INSERT INTO events (node, ts, id, event, qid, message_id, sender, recipient)
         SELECT 'n' || (g % 3), '2026-01-01T00:00:00.000Z', 1000, 'received', 'F' || (g / 2), '<f' || (g / 2) || '@x>', 's' || (g % 50) || '@x', 'r' || g || '@x'
         FROM generate_series(2, 40001) g;
       ANALYZE`,
    );
    // Every statement the backend sends to its pool, to EXPLAIN afterwards.
    const pool = (a as unknown as { pool: pg.Pool }).pool;
    const sent: Array<{ text: string; values: unknown[] }> = [];
    type Q = string | { text: string; values?: unknown[] };
    const query = pool.query.bind(pool) as (q: Q, values?: unknown[]) => Promise<pg.QueryResult>;
    (pool as unknown as { query: typeof query }).query = (q: Q, values?: unknown[]) => {
      sent.push(typeof q === 'string' ? { text: q, values: values ?? [] } : { text: q.text, values: q.values ?? [] });
      return query(q, values);
    };
    const plans = new Map<string, string>();
    const check = async (what: string, run: () => Promise<unknown>): Promise<void> => {
      sent.length = 0;
      await run();
      assert.ok(sent.length > 0, `${what} sent a statement`);
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      try {
        // With sequential scans priced out, a plan that still has one found no usable index.
        await c.query('SET enable_seqscan = off');
        for (const q of sent) {
          const plan = (await c.query<{ 'QUERY PLAN': string }>(`EXPLAIN ${q.text}`, q.values)).rows.map((r) => r['QUERY PLAN']).join('\n');
          plans.set(what, plan);
          assert.doesNotMatch(plan, /Seq Scan on (recipients|events|messages|bodies)\b/, `${what} scans a whole table:\n${q.text}\n${plan}`);
        }
      } finally {
        await c.end();
      }
    };
    await check('claimDue', () => a.claimDue(Date.now() + 1, 10, { token: 'a:1', leaseMs: 60_000 }));
    await check('countDue', () => a.countDue(m.queueId, Date.now()));
    await check('nextDueAt', () => a.nextDueAt());
    await check('pendingReports', () => a.pendingReports(10));
    await check('renew', () => a.renew(['a:1'], 60_000));
    await check('selectRecipients by claim prefix', () => a.selectRecipients({ states: ['delivering'], claimPrefix: 'a:', afterId: 0, limit: 100 }));
    await check('selectRecipients of a message', () => a.selectRecipients({ queueId: m.queueId, afterId: 0, limit: 100 }));
    await check('eventsAfter', () => a.eventsAfter(0, 100));
    await check('eventsOf', () => a.eventsOf(m.queueId, 0, 100));
    await check('selectRecipients by state', () => a.selectRecipients({ states: ['quarantined'], afterId: 0, limit: 100 }));
    await check('countRecipients of a destination', () => a.countRecipients({ destination: 'd7.example', states: ['queued', 'deferred'] }));
    await check('messageStates', () => a.messageStates([m.queueId, 'F77']));
    await check('track by sender', () => a.track({ sender: 's7@x', limit: 5 }));
    await check('track by recipient', () => a.track({ recipient: 'R77@x', limit: 5 }));
    await check('track by message id', () => a.track({ messageId: '<f77@x>', limit: 5 }));
    await check('readBody', () => a.readBodyBuffer(m.queueId));
  });

  test('an upload left unfinished by a node that died is swept at open once it is old; a message\'s own chunks never are', async () => {
    const url = await freshDatabase();
    const a = await backend(url, 'a');
    const kept = await put(a, 1, { size: BODY_CHUNK + 10 });
    const w = a.createBody('DIED1');
    await w.write(bodyOf(BODY_CHUNK + 1));
    // The node dies here: no abort, no insert.
    assert.equal((await sql(url, `SELECT 1 FROM bodies WHERE qid = 'DIED1'`)).length, 1);
    await a.close();
    const fresh = await backend(url, 'b');
    assert.equal((await sql(url, `SELECT 1 FROM bodies WHERE qid = 'DIED1'`)).length, 1, 'a recent upload may still be under way: kept');
    await fresh.close();
    await sql(url, `UPDATE body_uploads SET touched_at = now() - interval '2 hours'`);
    await sql(url, `INSERT INTO body_uploads (qid, node, touched_at) VALUES ($1, 'a', now() - interval '2 hours')`, [kept.m.queueId]);
    await backend(url, 'b');
    assert.equal((await sql(url, `SELECT 1 FROM bodies WHERE qid = 'DIED1'`)).length, 0, 'swept');
    assert.equal((await sql(url, `SELECT 1 FROM bodies WHERE qid = $1`, [kept.m.queueId])).length, 2, 'a message\'s chunks are never swept');
  });

  test('a database that stops answering fails operations after the timeout; they succeed again once it answers', async () => {
    const url = await freshDatabase();
    const a = new PostgresBackend({ url, node: 'a', timeoutMs: 1000, pool: 4 });
    opened.push(a);
    await a.open({ recover: true });
    await put(a, 1);
    cluster!.freeze();
    try {
      const started = Date.now();
      await assert.rejects(() => put(a, 1), 'insert fails');
      await assert.rejects(() => a.getMessage('x'), 'a read fails');
      await assert.rejects(() => a.renew(['a:1'], 60_000), 'renew fails');
      assert.ok(Date.now() - started < 15_000, `failed in bounded time (${Date.now() - started} ms)`);
      // A node shutting down while the database does not answer still stops.
      const b = new PostgresBackend({ url, node: 'b', timeoutMs: 1000, pool: 4 });
      opened.push(b);
      const closing = Date.now();
      await a.close();
      assert.ok(Date.now() - closing < 10_000, `close() ended in bounded time (${Date.now() - closing} ms)`);
      await assert.rejects(() => b.open({ recover: true }), 'open fails too');
    } finally {
      cluster!.thaw();
    }
    const again = await backend(url, 'a');
    await waitFor(async () => put(again, 1).then(() => true, () => false), 10_000, 'an insert to succeed again');
    assert.equal((await again.list({ limit: 10 })).length >= 2, true);
  });

  test('database outage: operations reject while it is down and succeed after, with no manual step (pool, writer and LISTEN reconnect)', async () => {
    const url = await freshDatabase();
    const a = await backend(url, 'a');
    const b = await backend(url, 'b');
    let woke = 0;
    b.onWake(() => woke++);
    await put(a, 1);
    await a.claimDue(Date.now() + 1, 10, { token: 'a:1', leaseMs: 60_000 });

    await cluster!.restart();
    // Right after a restart every old connection is gone: the very next operations connect again.
    assert.equal(await a.getMessage('none'), null);
    await put(a, 1);
    await a.renew(['a:1'], 60_000);
    assert.equal((await b.claimDue(Date.now() + 1, 10, { token: 'b:1', leaseMs: 60_000 })).length, 1);

    await cluster!.pause();
    try {
      await assert.rejects(() => put(a, 1), 'insert during the outage rejects');
      await assert.rejects(() => a.apply({ events: [makeEvent('delay_notice', { queue_id: 'x', message_id: '', sender: '' })] }));
      await assert.rejects(() => a.renew(['a:1'], 60_000), 'renew rejects when the database cannot be reached');
      await assert.rejects(() => a.claimDue(Date.now(), 10, { token: 'a:2', leaseMs: 60_000 }));
    } finally {
      await cluster!.resume();
    }
    const after = await put(a, 2);
    assert.equal((await a.selectRecipients({ queueId: after.m.queueId, afterId: 0, limit: 10 })).length, 2);
    await a.renew(['a:1'], 60_000);
    await waitFor(() => b.listening, 15_000, 'the LISTEN connection to come back');
    woke = 0;
    await a.apply({ wake: true });
    await waitFor(() => woke > 0, 5000, 'a NOTIFY after the outage');
    assert.ok(a.durableEventSeq() > 0);
  });
});
