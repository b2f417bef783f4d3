// The admin HTTP API on a running Petrel: bearer token on every path, no
// CSRF (actions are POST + JSON + same origin), no DNS rebinding without a
// token, no path traversal; and every action taking effect at once on the
// running server — retry, destination hold/resume, delete with and without a
// report, quarantine release/delete, redirect — each with its event and the
// operator's reason; paged lists; tracking; metrics.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { startPetrel, tempDir, cleanup, waitFor, type InProcess } from '../helpers/petrel-harness.js';
import { SmtpTalk } from '../helpers/smtp-talk.js';
import { AdminClient, raw } from '../helpers/admin-http.js';
import { DirectoryStandIn, RecordingAgent } from '../helpers/test-agents.js';
import type { MailEvent } from '../../src/log/events.js';

async function send(p: InProcess, from: string, to: string[], subject: string): Promise<string> {
  const t = await SmtpTalk.open(p.port);
  await t.read();
  await t.cmd('EHLO client.test');
  const r = await t.send(from, to, `Subject: ${subject}\r\nMessage-ID: <${subject}@client.test>\r\n\r\nbody\r\n`);
  await t.cmd('QUIT');
  t.close();
  assert.equal(r.code, 250, r.lines.join(' '));
  return /queued as (\S+)/.exec(r.lines.join(' '))![1]!;
}

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

/** assertConvention - every key snake_case; every time-like key (`*_at`, `next_attempt`, `last_attempt`, `ts`, `oldest`) ISO text or null. */
function assertConvention(v: unknown, where: string): void {
  if (Array.isArray(v)) return v.forEach((x) => assertConvention(x, where));
  if (typeof v !== 'object' || v === null) return;
  for (const [k, x] of Object.entries(v)) {
    assert.match(k, /^[a-z0-9_]+$/, `${where}: key ${k}`);
    if (/(_at|^next_attempt|^last_attempt|^ts|^oldest)$/.test(k) && x !== null) assert.match(String(x), ISO, `${where}: ${k} = ${String(x)}`);
    assertConvention(x, where);
  }
}

test('admin API: auth, CSRF and traversal guards; every action on the running server', async () => {
  const dir = tempDir();
  const dead = join(dir, 'share');
  const agent = new DirectoryStandIn();
  const smtp = new RecordingAgent('deferred');
  const p = await startPetrel(
    `[queue]\nretry_intervals = ["1h"]\n[[routes]]\ndomain = "dead.example"\nvia = "directory:${dead}"\n[[routes]]\ndomain = "other.example"\nvia = "directory:${dead}"\n[admin]\nlisten = "127.0.0.1:0"\ntoken = "s3cret-token"\n`,
    { agents: { directory: agent, smtp } },
    dir,
  );
  try {
    const port = p.petrel.admin!.bound!.port;
    const api = new AdminClient(port, 's3cret-token');

    // --- auth: every path needs the token.
    for (const path of ['/api/queue', '/metrics', '/api/messages', '/']) {
      const r = await raw(port, 'GET', path);
      assert.ok(r.status === 401 || r.status === 303, `${path} without a token: ${r.status}`);
    }
    assert.equal((await raw(port, 'GET', '/api/queue', { Authorization: 'Bearer wrong' })).status, 401);
    assert.equal((await api.get('/api/queue')).status, 200);

    // --- mail to a dead destination.
    const q1 = await send(p, 'alice@localhost', ['bob@dead.example', 'carol@dead.example'], 'first');
    const q2 = await send(p, 'alice@localhost', ['dave@dead.example'], 'second');
    const q3 = await send(p, 'alice@localhost', ['erin@other.example'], 'third');
    await waitFor(async () => (await api.get('/api/queue')).json().destinations.find((d: { destination: string; deferred: number }) => d.destination === 'dead.example')?.deferred === 3, 10_000, 'deferred');
    const summary = (await api.get('/api/queue')).json();
    const deadRow = summary.destinations.find((d: { destination: string }) => d.destination === 'dead.example');
    assert.equal(deadRow.recipients, 3);
    assert.equal(deadRow.messages, 2);
    assert.match(deadRow.last_reply, /does not exist/);

    // --- paged list with a cursor and filters.
    const page1 = (await api.get('/api/messages?destination=dead.example&limit=1')).json();
    assert.equal(page1.messages.length, 1);
    assert.equal(page1.messages[0].queue_id, q1);
    assert.deepEqual(page1.messages[0].states, { deferred: 2 });
    // Each message carries its recipients (address, state, attempts, next attempt, last reply).
    const listed = page1.messages[0];
    assert.deepEqual(listed.recipients.map((r: { address: string }) => r.address), ['bob@dead.example', 'carol@dead.example']);
    for (const r of listed.recipients) {
      assert.equal(r.state, 'deferred');
      assert.equal(r.attempts, 1);
      assert.match(r.next_attempt, ISO);
      assert.match(r.last_reply, /does not exist/);
      assert.equal(r.node, null);
    }
    assert.equal(listed.recipients_more, 0);
    assert.match(listed.received_at, ISO);
    assert.match(listed.next_attempt, ISO);
    const folded = (await api.get('/api/messages?destination=dead.example&limit=1&recipients=1')).json().messages[0];
    assert.equal(folded.recipients.length, 1);
    assert.equal(folded.recipients_more, 1);
    assert.equal(typeof folded.recipients_next, 'number');
    // One convention for every answer: snake_case keys, ISO 8601 UTC times.
    for (const path of ['/api/queue', '/api/queue/ages', '/api/messages', `/api/messages/${q1}`, '/api/overrides', '/api/track?sender=alice@localhost', '/api/cluster']) {
      assertConvention((await api.get(path)).json(), path);
    }
    const dq = (await api.get('/api/queue')).json().destinations.find((d: { destination: string }) => d.destination === 'dead.example');
    assert.match(dq.oldest, ISO);
    // Ages by qshape's buckets: the three recipients arrived seconds ago.
    const ages = (await api.get('/api/queue/ages')).json();
    assert.deepEqual(ages.buckets, ['5m', '10m', '20m', '40m', '80m', '160m', '320m', '640m', '1280m', '1280m+']);
    const deadAges = ages.destinations.find((d: { destination: string }) => d.destination === 'dead.example');
    assert.deepEqual(deadAges.counts, [3, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert.equal(deadAges.total, 3);
    const page2 = (await api.get(`/api/messages?destination=dead.example&limit=1&after=${page1.next}`)).json();
    assert.deepEqual(page2.messages.map((m: { queue_id: string }) => m.queue_id), [q2]);
    assert.equal(page2.next, null);
    assert.equal((await api.get('/api/messages?limit=100000')).status, 200, 'a huge limit is bounded, not refused');
    assert.equal((await api.get('/api/messages?state=bogus')).status, 400);
    assert.equal((await api.get('/api/messages?older_than=forever')).status, 400);

    // --- show.
    const shown = (await api.get(`/api/messages/${q1}`)).json();
    assert.equal(shown.message.message_id, '<first@client.test>');
    assert.deepEqual(shown.recipients.map((r: { state: string; attempts: number }) => [r.state, r.attempts]), [['deferred', 1], ['deferred', 1]]);
    assert.deepEqual(shown.events.map((e: MailEvent) => e.event), ['received', 'received', 'deferred', 'deferred']);
    assert.equal((await api.get('/api/messages/0000000000000000')).status, 404);
    assert.equal((await api.get('/api/messages/not-a-queue-id')).status, 404, 'no route for a malformed id');

    // --- CSRF guards: GET cannot act; a form post cannot act; another origin cannot act.
    assert.equal((await api.get(`/api/messages/${q1}/retry`)).status, 405);
    assert.equal((await raw(port, 'POST', `/api/messages/${q1}/retry`, { Authorization: 'Bearer s3cret-token', 'Content-Type': 'application/x-www-form-urlencoded' }, 'reason=x')).status, 403);
    assert.equal(
      (await raw(port, 'POST', `/api/messages/${q1}/retry`, { Authorization: 'Bearer s3cret-token', 'Content-Type': 'application/json', Origin: 'http://evil.example' }, '{}')).status,
      403,
    );
    assert.equal((await raw(port, 'POST', `/api/messages/${q1}/retry`, { 'Content-Type': 'application/json' }, '{}')).status, 401, 'actions need the token');

    // --- no path traversal into the repository or data_dir.
    for (const path of ['/static/../../package.json', '/static/%2e%2e%2fpackage.json', '/static/..%2f..%2fvar%2fqueue%2fqueue.db', '/../var/log/events.jsonl', '/static/']) {
      const r = await api.get(path);
      assert.equal(r.status, 404, `${path}: ${r.status}`);
      assert.doesNotMatch(r.text, /"name": "petrel"|SQLite/);
    }

    // --- hold the destination: nothing is attempted, even when retried; resume + live destination: delivered.
    const attempts = agent.attempts;
    const held = await api.post('/api/destinations/dead.example/suspend', { reason: 'share is being moved', operator: 'ops-test' });
    assert.equal(held.status, 200);
    assert.equal(held.json().changed, 3);
    assert.equal((await api.get('/api/queue')).json().destinations.find((d: { destination: string }) => d.destination === 'dead.example').held, true);
    mkdirSync(dead);
    await api.post(`/api/messages/${q1}/retry`, { reason: 'share is back' });
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(agent.attempts, attempts, 'a held destination is not attempted');
    const resumed = (await api.post('/api/destinations/dead.example/resume', { reason: 'move done', operator: 'ops-test' })).json();
    assert.equal(resumed.changed, 3);
    await waitFor(() => existsSync(join(dead, `${q1}.eml`)), 10_000, 'q1 delivered after resume');
    // The file is written a moment before the outcome is committed: the message leaves the queue then.
    await waitFor(async () => (await api.get(`/api/messages/${q1}`)).json().message === null, 10_000, 'the finished message has left the queue');
    const history = (await api.get(`/api/messages/${q1}`)).json().events.map((e: MailEvent) => e.event);
    assert.deepEqual(history, ['received', 'received', 'deferred', 'deferred', 'retry_requested', 'retry_requested', 'delivered', 'delivered']);

    // --- delete with a report: removed + failure report to the sender (delivered to alice@localhost's maildir).
    // Resuming is not retrying: q2 waits for its next attempt (1h) until the destination is retried.
    assert.ok(!existsSync(join(dead, `${q2}.eml`)));
    assert.equal((await api.post('/api/destinations/dead.example/retry', { reason: 'share is back' })).json().changed, 1);
    await waitFor(() => existsSync(join(dead, `${q2}.eml`)), 10_000, 'q2 delivered after the destination retry');
    rmdir(dead);
    const q4 = await send(p, 'alice@localhost', ['frank@other.example'], 'fourth');
    await waitFor(async () => (await api.get(`/api/messages/${q4}`)).json().recipients[0]?.state === 'deferred', 10_000, 'q4 deferred');
    const del = await api.post(`/api/messages/${q4}/delete`, { ndr: true, reason: 'customer asked', operator: 'ops-test' });
    assert.equal(del.status, 200);
    assert.equal(del.json().changed, 1);
    const box = join(dir, 'var', 'mail', 'localhost', 'alice', 'new');
    await waitFor(() => existsSync(box) && readdirSync(box).length === 1, 10_000, 'failure report delivered to the sender');
    const q4ev = (await api.get(`/api/messages/${q4}`)).json().events as MailEvent[];
    const removed = q4ev.find((e) => e.event === 'removed')!;
    assert.match(removed.detail!, /with a failure report to the sender by ops-test: customer asked/);
    assert.ok(q4ev.some((e) => e.event === 'dsn_queued'));
    // Silent delete: no report.
    const silent = await api.post(`/api/messages/${q3}/delete`, { silent: true, reason: 'spam' });
    assert.equal(silent.json().changed, 1);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(readdirSync(box).length, 1, 'no report for a silent delete');
    assert.equal((await api.post(`/api/messages/${q3}/delete`, { ndr: true, silent: true })).status, 400, 'ndr and silent exclude each other');
    assert.equal((await api.post(`/api/messages/${q3}/delete`, { reason: 'again' })).status, 404, 'gone already');

    // --- quarantine: list, show, release, delete.
    const q5 = await send(p, 'alice@localhost', ['gina@other.example'], 'fifth');
    const q6 = await send(p, 'alice@localhost', ['hank@other.example'], 'sixth');
    await waitFor(async () => (await api.get(`/api/messages/${q6}`)).json().recipients[0]?.state === 'deferred', 10_000, 'q6 deferred');
    for (const q of [q5, q6]) await p.petrel.store.quarantine(q, 'test: unreadable');
    const ql = (await api.get('/api/quarantine?limit=1')).json();
    assert.deepEqual(ql.messages.map((m: { queue_id: string }) => m.queue_id), [q5]);
    assert.equal(ql.next, q5);
    assert.equal((await api.get(`/api/quarantine/${q6}`)).json().message.quarantine, 'test: unreadable');
    assert.equal((await api.post(`/api/quarantine/${q5}/release`, { reason: 'false alarm' })).json().changed, 1);
    assert.equal((await api.post(`/api/quarantine/${q5}/release`, {})).status, 409, 'not quarantined any more');
    assert.equal((await api.post(`/api/quarantine/${q6}/delete`, { reason: 'really broken' })).json().changed, 1);
    assert.equal((await api.get(`/api/messages/${q6}`)).json().message, null);
    assert.deepEqual((await api.get('/api/quarantine')).json().messages, []);

    // --- redirect: other.example's mail goes to the given host:port from now on, at once.
    const red = await api.post('/api/destinations/other.example/redirect', { to: '127.0.0.1:2600', reason: 'maintenance' });
    assert.equal(red.status, 200);
    await waitFor(() => smtp.hops.some((h) => h.kind === 'smtp' && 'host' in h && h.host === '127.0.0.1' && h.port === 2600), 10_000, 'redirected attempt');
    assert.equal((await api.get('/api/queue')).json().destinations.find((d: { destination: string }) => d.destination === 'other.example').redirect, '127.0.0.1:2600');
    assert.equal((await api.post('/api/destinations/other.example/redirect', { to: 'nonsense' })).status, 400);
    await api.post('/api/destinations/other.example/redirect', { to: null, reason: 'done' });
    assert.deepEqual((await api.get('/api/overrides')).json().overrides, []);

    // --- tracking: every event of a message, by Message-ID with or without <>.
    const tr = (await api.get('/api/track?message_id=first@client.test')).json();
    assert.deepEqual(tr.messages.map((m: { queue_id: string }) => m.queue_id), [q1]);
    assert.equal((await api.get(`/api/track?message_id=${encodeURIComponent('<fourth@client.test>')}`)).json().messages[0].queue_id, q4);
    assert.equal((await api.get('/api/track?sender=ALICE@localhost&limit=2')).json().messages.length, 2);
    assert.equal((await api.get('/api/track')).status, 400);

    // --- metrics.
    await p.petrel.eventLog.flush();
    const metrics = (await api.get('/metrics')).text;
    assert.match(metrics, /^petrel_messages_received_total 6$/m);
    assert.match(metrics, /^petrel_recipients_delivered_total [1-9]/m);
    assert.match(metrics, /^petrel_recipients_removed_total 3$/m);
    assert.match(metrics, /^petrel_recipients_quarantined_total 2$/m);
    assert.match(metrics, /^petrel_dsn_sent_total\{kind="failed"\} 1$/m);
    assert.match(metrics, /^petrel_smtp_replies_total\{code="250"\} \d+$/m);
    assert.match(metrics, /^petrel_smtp_sessions_total [6-9]$/m);
    assert.match(metrics, /^petrel_recipients\{state="deferred"\} \d+$/m);
    assert.match(metrics, /^petrel_delivery_latency_seconds_count\{transport="directory"\} 3$/m);
    assert.match(metrics, /^petrel_queue_recipients\{destination="other.example"\} \d+$/m);

    // --- the operator's name and reason are on the record in events.jsonl.
    await p.petrel.eventLog.flush();
    const logged = p.events().filter((e) => e.event === 'suspended' && e.queue_id === '');
    assert.equal(logged.length, 1);
    assert.match(logged[0]!.detail!, /^destination dead\.example held \(3 recipient\(s\)\) by ops-test: share is being moved$/);
  } finally {
    await p.stop();
    cleanup(dir);
  }
});

/** rmdir - make the destination dead again: move the share away (its delivered files go with it). */
function rmdir(path: string): void {
  renameSync(path, `${path}.gone`);
}

test('admin API without a token: open on loopback, but only to a loopback Host name (no DNS rebinding)', async () => {
  const p = await startPetrel();
  try {
    const port = p.petrel.admin!.bound!.port;
    assert.equal((await raw(port, 'GET', '/api/queue')).status, 200);
    assert.equal((await raw(port, 'GET', '/api/queue', { Host: `localhost:${port}` })).status, 200);
    assert.equal((await raw(port, 'GET', '/api/queue', { Host: 'attacker.example' })).status, 403);
    assert.equal((await raw(port, 'GET', '/metrics', { Host: 'attacker.example' })).status, 403);
    assert.equal((await raw(port, 'GET', '/login')).status, 303, 'no login without a token');
    const r = await raw(port, 'POST', '/api/destinations/x.example/suspend', { 'Content-Type': 'text/plain' }, '{}');
    assert.equal(r.status, 403, 'a cross-site form (text/plain) cannot act');
  } finally {
    await p.stop();
    cleanup(p.dir);
  }
});

test('admin listener: "" turns it off', async () => {
  const dir = tempDir();
  const p = await startPetrel('[admin]\nlisten = ""\n', {}, dir);
  try {
    assert.equal(p.petrel.admin, null);
  } finally {
    await p.stop();
    cleanup(dir);
  }
});
