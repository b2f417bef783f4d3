// Unit tests for scheduler/scheduler with the memory store and scripted
// agents: every attempt counts, nothing claimed is ever lost, unreadable
// messages are quarantined, and reports are one per message per pass.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfigText } from '../../src/config/load.js';
import { MemoryStore } from '../../src/queue/memory-store.js';
import { Router } from '../../src/routing/router.js';
import { Scheduler } from '../../src/scheduler/scheduler.js';
import { Reporter } from '../../src/dsn/reporter.js';
import { Enqueuer } from '../../src/enqueue/enqueue.js';
import { trace } from '../../src/log/trace.js';
import { BodyUnreadable, type DeliveryAgent, type DeliveryJob, type RecipientResult } from '../../src/delivery/agent.js';
import type { MailEvent } from '../../src/log/events.js';

type Script = (job: DeliveryJob) => Array<Omit<RecipientResult, 'recipientId'> | null> | 'throw' | 'unreadable';

class ScriptedAgent implements DeliveryAgent {
  jobs: DeliveryJob[] = [];
  constructor(private script: Script) {}
  async deliver(job: DeliveryJob, report: (r: RecipientResult[]) => void): Promise<void> {
    this.jobs.push(job);
    const out = this.script(job);
    if (out === 'throw') throw new Error('agent bug');
    if (out === 'unreadable') throw new BodyUnreadable(job.message.queueId, new Error('ENOENT'));
    const results: RecipientResult[] = [];
    job.recipients.forEach((r, i) => {
      const res = out[i];
      if (res) results.push({ ...res, recipientId: r.id });
    });
    report(results);
  }
  async close(): Promise<void> {}
}

const ok = { kind: 'delivered' as const, status: '2.0.0', reply: '250 2.0.0 ok', remote: 'peer', remoteReply: true };
const soft = { kind: 'deferred' as const, status: '4.4.1', reply: 'connection refused', remote: 'peer', remoteReply: false };
const hard = { kind: 'failed' as const, status: '5.1.1', reply: '550 5.1.1 no such user', remote: 'peer', remoteReply: true };

function setup(smtp: Script, extra = '') {
  const config = parseConfigText(`hostname = "petrel.test"\n[queue]\nretry_intervals = ["40ms"]\nmax_lifetime = "2s"\ndelay_warning = "5s"\n[local]\ndomains = ["local.test"]\n${extra}`, 'x', '/tmp');
  const store = new MemoryStore();
  const router = new Router(config);
  const agent = new ScriptedAgent(smtp);
  const local = new ScriptedAgent((job) => job.recipients.map(() => ok));
  const enqueuer = new Enqueuer({ hostname: 'petrel.test', store, router });
  const reporter = new Reporter({ config, store, enqueuer, trace: trace('test') });
  const scheduler = new Scheduler({ config, store, router, agents: { smtp: agent, maildir: local }, report: (q) => reporter.report(q), trace: trace('test') });
  return { config, store, agent, local, scheduler, enqueuer };
}

async function enqueue(e: Enqueuer, sender: string, rcpts: Array<string | { address: string; notify: string }>, isReport = false): Promise<string> {
  const inc = e.begin({
    sender,
    recipients: rcpts.map((r) => (typeof r === 'string' ? { address: r, orcpt: null, notify: null } : { ...r, orcpt: null })),
    smtputf8: false,
    eightBit: false,
    ret: null,
    envid: null,
    client: isReport ? 'dsn' : 'test',
    received: null,
    isReport,
    maxSize: 0,
    maxReceived: 0,
  });
  await inc.write(Buffer.from('Subject: test\r\nMessage-ID: <t@test>\r\n\r\nbody\r\n'));
  return (await inc.commit()).queueId;
}

async function events(store: MemoryStore): Promise<MailEvent[]> {
  return store.eventsAfter(0, 1_000_000);
}

async function until(check: () => Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('every attempt counts until expiry, then one expiry report (4.4.7) goes to the sender', async () => {
  const s = setup((job) => (job.message.isReport ? job.recipients.map(() => ok) : job.recipients.map(() => soft)));
  await s.store.open();
  s.scheduler.start();
  const qid = await enqueue(s.enqueuer, 'alice@example.com', ['bob@down.example', 'carol@down.example']);
  await until(async () => (await events(s.store)).some((e) => e.event === 'dsn_queued'), 8000);
  await s.scheduler.stop();
  const ev = (await events(s.store)).filter((e) => e.queue_id === qid);
  for (const rcpt of ['bob@down.example', 'carol@down.example']) {
    const mine = ev.filter((e) => e.recipient === rcpt && e.event !== 'received');
    const attempts = mine.map((e) => e.attempt);
    assert.deepEqual(attempts, attempts.map((_, i) => i + 1), 'attempt numbers count up by one, one event per attempt');
    assert.ok(mine.length >= 5, `several attempts within the lifetime (${mine.length})`);
    assert.equal(mine.at(-1)!.event, 'expired');
    assert.equal(mine.at(-1)!.status, '4.4.7');
    assert.ok(mine.slice(0, -1).every((e) => e.event === 'deferred'));
  }
  const reports = ev.filter((e) => e.event === 'dsn_queued');
  assert.equal(reports.length, 1, 'one report for both recipients');
  assert.match(reports[0]!.detail!, /expired report .* to <alice@example\.com> about 2 recipient/);
  assert.equal(await s.store.getMessage(qid), null, 'the message is finished and gone');
});

test('one failure report per message per pass, across next hops', async () => {
  const s = setup((job) => (job.message.isReport ? job.recipients.map(() => ok) : job.recipients.map(() => hard)));
  await s.store.open();
  s.scheduler.start();
  const qid = await enqueue(s.enqueuer, 'alice@example.com', ['a@one.example', 'b@two.example', 'c@two.example', 'd@local.test']);
  await until(async () => (await s.store.getMessage(qid)) === null && s.agent.jobs.some((j) => j.message.isReport));
  await s.scheduler.stop();
  const ev = (await events(s.store)).filter((e) => e.queue_id === qid);
  assert.deepEqual(ev.filter((e) => e.event === 'failed').map((e) => e.recipient).sort(), ['a@one.example', 'b@two.example', 'c@two.example']);
  assert.equal(ev.filter((e) => e.event === 'delivered').length, 1);
  const reports = ev.filter((e) => e.event === 'dsn_queued');
  assert.equal(reports.length, 1);
  assert.match(reports[0]!.detail!, /failed report .* about 3 recipient/);
  const dsnJobs = s.agent.jobs.filter((j) => j.message.isReport);
  assert.equal(dsnJobs.length, 1);
  assert.equal(dsnJobs[0]!.recipients[0]!.address, 'alice@example.com');
  assert.equal(dsnJobs[0]!.message.sender, '');
});

test('no report to <>; a failed report goes to the postmaster; a failed postmaster notice goes nowhere', async () => {
  const s = setup((job) => job.recipients.map(() => hard));
  await s.store.open();
  s.scheduler.start();
  const nullSender = await enqueue(s.enqueuer, '', ['x@gone.example']);
  await until(async () => (await s.store.getMessage(nullSender)) === null);
  assert.equal((await events(s.store)).filter((e) => e.event === 'dsn_queued').length, 0);
  const original = await enqueue(s.enqueuer, 'alice@example.com', ['x@gone.example']);
  // original fails -> report to alice fails -> notice to postmaster (local.test? no: hostname) fails -> nothing more
  await until(async () => (await s.store.list({ limit: 10 })).length === 0 && (await events(s.store)).filter((e) => e.event === 'dsn_queued').length === 2, 5000).catch(async (e) => {
    console.log(JSON.stringify(await events(s.store), null, 1), await s.store.list({ limit: 10 }));
    throw e;
  });
  await new Promise((r) => setTimeout(r, 200));
  await s.scheduler.stop();
  const ev = await events(s.store);
  const dsn = ev.filter((e) => e.event === 'dsn_queued');
  assert.equal(dsn.length, 2, 'report to the sender, then one postmaster notice, then nothing');
  assert.equal(dsn[0]!.queue_id, original);
  assert.match(dsn[1]!.detail!, /to <postmaster@petrel\.test>/);
  assert.deepEqual(await s.store.list({ limit: 10 }), []);
});

test('an agent that throws or forgets a recipient gets it deferred, never lost', async () => {
  let calls = 0;
  let forgotten = false;
  const s = setup((job) => {
    if (++calls === 1) return 'throw';
    return job.recipients.map((r) => (r.address === 'b@x.example' && !forgotten ? ((forgotten = true), null) : ok));
  });
  await s.store.open();
  s.scheduler.start();
  const qid = await enqueue(s.enqueuer, 'alice@example.com', ['a@x.example', 'b@x.example']);
  await until(async () => (await s.store.getMessage(qid)) === null);
  await s.scheduler.stop();
  const ev = (await events(s.store)).filter((e) => e.queue_id === qid && e.event !== 'received');
  const trail = (rcpt: string): unknown[] => ev.filter((e) => e.recipient === rcpt).map((e) => [e.event, e.attempt, e.event === 'deferred' ? e.error : undefined]);
  assert.deepEqual(trail('a@x.example'), [['deferred', 1, 'internal error during delivery; will retry'], ['delivered', 2, undefined]]);
  assert.deepEqual(trail('b@x.example'), [
    ['deferred', 1, 'internal error during delivery; will retry'],
    ['deferred', 2, 'internal error during delivery; will retry'],
    ['delivered', 3, undefined],
  ]);
});

test('a message whose body cannot be read is quarantined, not deleted', async () => {
  const s = setup(() => 'unreadable');
  await s.store.open();
  s.scheduler.start();
  const qid = await enqueue(s.enqueuer, 'alice@example.com', ['a@x.example']);
  await until(async () => (await events(s.store)).some((e) => e.event === 'quarantined'));
  await s.scheduler.stop();
  const m = await s.store.getMessage(qid);
  assert.match(m!.quarantine, /cannot be read/);
  assert.deepEqual((await s.store.getRecipients(qid)).map((r) => r.state), ['quarantined']);
  assert.equal(await s.store.nextDueAt(), null);
});

test('NOTIFY=SUCCESS on final delivery makes a "delivered" report; NOTIFY=NEVER suppresses failures', async () => {
  const s = setup((job) => (job.message.isReport ? job.recipients.map(() => ok) : job.recipients.map(() => hard)));
  await s.store.open();
  s.scheduler.start();
  const q1 = await enqueue(s.enqueuer, 'alice@example.com', [{ address: 'z@local.test', notify: 'SUCCESS' }, { address: 'n@far.example', notify: 'NEVER' }]);
  await until(async () => (await s.store.getMessage(q1)) === null);
  await s.scheduler.stop();
  const dsn = (await events(s.store)).filter((e) => e.event === 'dsn_queued');
  assert.equal(dsn.length, 1);
  assert.match(dsn[0]!.detail!, /^delivered report/);
});
