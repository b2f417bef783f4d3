// workers/outbound: which SMTP jobs the primary hands to its workers and
// which it keeps (shaped providers, failed look-ups, large bodies, no worker,
// stopping), and the bookkeeping of the jobs handed out: results reach the
// scheduler once, a worker's end defers what it did not report, jobs go
// round the workers, and the bodies in flight stay bounded; a body held by
// the worker that received the message (workers/held-bodies) sends the job
// back there without it, and is released once, at the end of the pass.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WholeBody, type DeliveryJob, type RecipientResult } from '../../src/delivery/agent.js';
import type { SmtpAgent, SmtpPlan } from '../../src/delivery/smtp/smtp-agent.js';
import type { Provider } from '../../src/delivery/smtp/shaping.js';
import type { MessageRecord, RecipientRecord } from '../../src/queue/store.js';
import { packRecipients, unpackRecipients, type OutboundJob } from '../../src/workers/messages.js';
import { rcptParams } from '../../src/delivery/smtp/envelope.js';
import { serialize, deserialize } from 'node:v8';
import { HeldBodies } from '../../src/workers/held-bodies.js';
import { RemoteStore } from '../../src/workers/remote-store.js';
import { Outbox } from '../../src/workers/outbox.js';
import type { InsertRequest } from '../../src/workers/messages.js';
import type { NewMessage } from '../../src/queue/store.js';
import { MAX_BYTES_IN_FLIGHT, OUTBOUND_BODY_MAX, OutboundJobs, RELEASE_MS, WorkerDelivery } from '../../src/workers/outbound.js';

const BODY = Buffer.from('Subject: t\r\n\r\nhello\r\n');

function job(size = BODY.length, ids = [1, 2]): DeliveryJob {
  const message = { queueId: 'Q1', messageId: '<m@x>', sender: 'a@a.test', size } as MessageRecord;
  const recipients = ids.map((id) => ({ id, queueId: 'Q1', address: `r${id}@b.test` }) as RecipientRecord);
  return { message, recipients, hop: { kind: 'smtp', key: 'mx:b.test', hosts: 'mx', domain: 'b.test', port: 25, tls: 'opportunistic' }, openBody: () => Promise.resolve(new WholeBody(BODY)) };
}

/** A stand-in for the primary's SmtpAgent: plans as told, and counts what it delivers itself. */
function localAgent(plan: SmtpPlan): { agent: SmtpAgent; delivered: Array<SmtpPlan | undefined> } {
  const delivered: Array<SmtpPlan | undefined> = [];
  const agent = {
    plan: () => Promise.resolve(plan),
    deliver: (j: DeliveryJob, report: (r: RecipientResult[]) => void, given?: SmtpPlan) => {
      delivered.push(given);
      report(j.recipients.map((r) => ({ recipientId: r.id, kind: 'delivered', status: '2.0.0', reply: '250 local', remote: 'here', remoteReply: true })));
      return Promise.resolve();
    },
    close: () => Promise.resolve(),
  } as unknown as SmtpAgent;
  return { agent, delivered };
}

const ok = (id: number): RecipientResult => ({ recipientId: id, kind: 'delivered', status: '2.0.0', reply: '250 ok', remote: 'mx [127.0.0.1]', remoteReply: true });
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

test('an unshaped job goes to a worker with its body and MX hosts; its results come back once, then it ends', async () => {
  const sent: Array<{ w: number; jobs: OutboundJob[] }> = [];
  const jobs = new OutboundJobs((w, batch) => (sent.push({ w, jobs: batch }), true));
  jobs.ready(7);
  const hosts = [{ name: 'mx.b.test', preference: 10, addresses: ['127.0.0.2'] }];
  const local = localAgent({ hosts, provider: null });
  const agent = new WorkerDelivery(local.agent, jobs, () => 2);
  const results: RecipientResult[] = [];
  let ended = false;
  const p = agent.deliver(job(), (r) => results.push(...r)).then(() => (ended = true));
  await tick();
  await tick();
  assert.equal(sent.length, 1);
  const j = sent[0]!.jobs[0]!;
  assert.equal(sent[0]!.w, 7);
  assert.deepEqual(Buffer.from(j.body!), BODY);
  assert.deepEqual(j.hosts, hosts);
  assert.equal(j.share, 2);
  assert.equal(local.delivered.length, 0, 'not delivered here');
  jobs.outcomes(7, [{ id: j.id, results: [ok(1)] }]);
  jobs.outcomes(7, [{ id: j.id, results: [ok(1), ok(2)] }]);
  jobs.outcomes(8, [{ id: j.id, results: [{ ...ok(2), kind: 'failed' }] }]);
  assert.deepEqual(results.map((r) => [r.recipientId, r.kind]), [[1, 'delivered'], [2, 'delivered']], 'each recipient once; another worker cannot report it');
  assert.equal(ended, false);
  jobs.outcomes(7, [{ id: j.id, done: { error: null } }]);
  await p;
  assert.equal(ended, true);
  assert.equal(jobs.inProgress, 0);
});

test('kept in the primary: a shaped provider, a failed look-up, a large body, no worker ready, stopping', async () => {
  const sent: OutboundJob[] = [];
  const make = (): OutboundJobs => {
    const j = new OutboundJobs((_w, batch) => (sent.push(...batch), true));
    j.ready(1);
    return j;
  };
  const cases: Array<[string, SmtpPlan, OutboundJobs, DeliveryJob]> = [
    ['provider', { hosts: [], provider: { name: 'google' } as Provider }, make(), job()],
    ['look-up failed', { hosts: null, provider: null, error: new Error('SERVFAIL') }, make(), job()],
    ['large body', { hosts: [], provider: null }, make(), job(OUTBOUND_BODY_MAX + 1)],
    ['no worker', { hosts: [], provider: null }, new OutboundJobs(() => true), job()],
    ['stopping', { hosts: [], provider: null }, Object.assign(make(), { stopping: true }), job()],
  ];
  for (const [what, plan, jobs, j] of cases) {
    const local = localAgent(plan);
    const results: RecipientResult[] = [];
    await new WorkerDelivery(local.agent, jobs, () => 1).deliver(j, (r) => results.push(...r));
    assert.equal(local.delivered.length, 1, `${what}: delivered here`);
    assert.equal(results.length, 2, `${what}: every recipient has its result`);
  }
  await tick();
  assert.equal(sent.length, 0, 'none handed out');
});

test('a worker gone: what it did not report is deferred, once; a late report is dropped', async () => {
  const jobs = new OutboundJobs(() => true);
  jobs.ready(3);
  const results: RecipientResult[] = [];
  const p = jobs.dispatch({ message: job().message, recipients: job(0, [1, 2, 3]).recipients, hop: job().hop as OutboundJob['hop'], hosts: null, body: BODY, share: 1 }, 'b.test', (r) => results.push(...r))!;
  assert.ok(p);
  jobs.outcomes(3, [{ id: 1, results: [ok(2)] }]);
  jobs.gone(3, 4242);
  await p;
  jobs.outcomes(3, [{ id: 1, results: [ok(1)] }]);
  assert.deepEqual(results.map((r) => [r.recipientId, r.kind]), [[2, 'delivered'], [1, 'deferred'], [3, 'deferred']]);
  assert.match(results[1]!.reply, /delivery worker \(pid 4242\) ended during the attempt/);
  assert.equal(results[1]!.status, '4.3.0');
  assert.equal(jobs.inProgress, 0);
  assert.equal(jobs.room(10), false, 'no worker left to take a job');
});

test('jobs go to the least busy worker, equals in turn; bodies in flight are bounded', async () => {
  const to: number[] = [];
  const jobs = new OutboundJobs((w, batch) => (to.push(...batch.map(() => w)), true));
  jobs.ready(1);
  jobs.ready(2);
  const spec = { message: job().message, recipients: job().recipients, hop: job().hop as OutboundJob['hop'], hosts: null, share: 1 };
  // One at a time, each ended before the next: they alternate.
  for (let i = 0; i < 4; i++) {
    const p = jobs.dispatch({ ...spec, body: BODY }, 'b.test', () => undefined)!;
    await tick();
    jobs.outcomes(to.at(-1)!, [{ id: i + 1, done: { error: null } }]);
    await p;
  }
  assert.deepEqual(to, [2, 1, 2, 1]);
  // Three at once: spread, never two more on one than on the other.
  to.length = 0;
  jobs.dispatch({ ...spec, body: BODY }, 'b.test', () => undefined);
  jobs.dispatch({ ...spec, body: BODY }, 'b.test', () => undefined);
  jobs.dispatch({ ...spec, body: BODY }, 'b.test', () => undefined);
  await tick();
  assert.deepEqual(to.sort(), [1, 2, 2]);
  // The bound on bodies in flight.
  const big = Buffer.alloc(OUTBOUND_BODY_MAX);
  let n = 0;
  while (jobs.dispatch({ ...spec, body: big }, 'b.test', () => undefined)) n++;
  assert.equal(n, Math.floor((MAX_BYTES_IN_FLIGHT - 3 * BODY.length) / OUTBOUND_BODY_MAX));
  assert.equal(jobs.room(OUTBOUND_BODY_MAX), false);
  assert.equal(jobs.room(1), true, 'a small one still fits');
  jobs.gone(1, 1);
  jobs.gone(2, 2);
  assert.equal(jobs.inProgress, 0);
});

test('a worker leaving takes no new job; its job in progress still ends when it is gone', async () => {
  const to: number[] = [];
  const jobs = new OutboundJobs((w, batch) => (to.push(...batch.map(() => w)), true));
  jobs.ready(1);
  jobs.ready(2);
  const spec = { message: job().message, recipients: job().recipients, hop: job().hop as OutboundJob['hop'], hosts: null, body: BODY, share: 1 };
  const results: RecipientResult[] = [];
  const first = jobs.dispatch(spec, 'b.test', (r) => results.push(...r))!;
  await tick();
  const dying = to[0]!;
  jobs.leaving(dying);
  for (let i = 0; i < 3; i++) jobs.dispatch(spec, 'b.test', () => undefined);
  await tick();
  assert.deepEqual(to.slice(1), [3 - dying, 3 - dying, 3 - dying], 'the new jobs go to the other worker');
  jobs.gone(dying, 99);
  await first;
  assert.deepEqual(results.map((r) => r.kind), ['deferred', 'deferred']);
});

/** twoWorkers - jobs for workers 1 and 2, recording what is sent to each and what is released. */
function twoWorkers(): { to: Array<{ w: number; job: OutboundJob }>; released: Array<[number, string[]]>; jobs: OutboundJobs } {
  const to: Array<{ w: number; job: OutboundJob }> = [];
  const released: Array<[number, string[]]> = [];
  const jobs = new OutboundJobs((w, batch, release) => {
    to.push(...batch.map((job) => ({ w, job })));
    if (release) released.push([w, release]);
    return true;
  });
  jobs.ready(1);
  jobs.ready(2);
  return { to, released, jobs };
}

/** afterRelease - past RELEASE_MS, and past the end of the turn in which the release timer's flush runs. */
async function afterRelease(): Promise<void> {
  await new Promise((r) => setTimeout(r, RELEASE_MS + 20));
  await tick();
}

test('a held body: the job goes back to the worker that holds it, without the body, whatever its load and size; released once at the end of the pass', async () => {
  const { to, released, jobs } = twoWorkers();
  // One worker is busier, and the body is larger than what travels with a job: it still goes to that one, which holds it.
  jobs.dispatch({ message: job().message, recipients: job().recipients, hop: job().hop as OutboundJob['hop'], hosts: null, body: BODY, share: 1 }, 'b.test', () => undefined);
  await tick();
  const busy = to[0]!.w;
  const other = 3 - busy;
  to.length = 0;
  jobs.hold('Q1', busy);
  const local = localAgent({ hosts: [], provider: null });
  const agent = new WorkerDelivery(local.agent, jobs, () => 1);
  const p = agent.deliver(job(OUTBOUND_BODY_MAX * 4), () => undefined);
  await tick();
  await tick();
  assert.equal(local.delivered.length, 0, 'not delivered here');
  assert.equal(to.length, 1);
  assert.equal(to[0]!.w, busy, 'to the holder, not the less busy worker');
  assert.equal(to[0]!.job.body, null, 'no body on the channel');
  jobs.outcomes(busy, [{ id: to[0]!.job.id, results: [ok(1), ok(2)], done: { error: null } }]);
  await p;
  assert.equal(jobs.holding, 1, 'held until the pass ends');
  jobs.passEnded('Q1');
  jobs.passEnded('Q1');
  await tick();
  assert.deepEqual(released, [], 'a release waits a little for another message to ride on');
  await afterRelease();
  assert.deepEqual(released, [[busy, ['Q1']]], 'released once, to the worker that holds it');
  assert.equal(jobs.holding, 0);
  // Released: the next job of Q1 (a retry) brings its body again, to the least busy worker.
  to.length = 0;
  void agent.deliver(job(), () => undefined);
  await tick();
  await tick();
  assert.equal(to[0]!.w, other);
  assert.deepEqual(Buffer.from(to[0]!.job.body!), BODY);
});

test('a held body whose worker is leaving or gone: the job brings its body (or stays here when too large); nothing is released to the dead', async () => {
  const { to, released, jobs } = twoWorkers();
  jobs.hold('Q1', 1);
  jobs.leaving(1);
  const local = localAgent({ hosts: [], provider: null });
  const agent = new WorkerDelivery(local.agent, jobs, () => 1);
  void agent.deliver(job(), () => undefined);
  await tick();
  await tick();
  assert.equal(to[0]!.w, 2, 'not to the leaving worker');
  assert.deepEqual(Buffer.from(to[0]!.job.body!), BODY, 'with its body');
  await agent.deliver(job(OUTBOUND_BODY_MAX + 1), () => undefined);
  assert.equal(local.delivered.length, 1, 'a large body not held by a ready worker: delivered here');
  jobs.gone(1, 11);
  jobs.passEnded('Q1');
  await tick();
  assert.deepEqual(released, [], 'what a dead worker held died with it');
  assert.equal(jobs.holding, 0);
});

test('HeldBodies: bounded, counted exactly, dropped once', () => {
  const held = new HeldBodies(10);
  assert.equal(held.keep('A', Buffer.alloc(6)), true);
  assert.equal(held.keep('B', Buffer.alloc(6)), false, 'over the bound: not held');
  assert.equal(held.keep('A', Buffer.alloc(1)), false, 'one body per message');
  assert.equal(held.keep('C', Buffer.alloc(4)), true);
  assert.equal(held.bytes, 10);
  held.drop(['A', 'A', 'nope']);
  assert.equal(held.bytes, 4);
  assert.equal(held.get('A'), undefined);
  assert.equal(held.get('C')?.length, 4);
  held.clear();
  assert.equal(held.size, 0);
  assert.equal(held.bytes, 0);
});

test('RemoteStore holds a small body from the moment it sends the insert; dropped unless the answer says "held", and when the primary is gone', async () => {
  const held = new HeldBodies();
  const sent: InsertRequest[] = [];
  const store = new RemoteStore('/nonexistent', new Outbox((m) => (m.t === 'insert' && sent.push(...m.items), true)), held);
  // Wrapped: awaiting the set-up must not await the insert itself (it waits for an answer).
  const insert = async (queueId: string): Promise<{ done: Promise<unknown> }> => {
    const body = store.createBody(queueId);
    await body.write(BODY);
    const message = { queueId, sender: 'a@a.test', recipients: [], size: BODY.length } as unknown as NewMessage;
    const before = sent.length;
    const done = store.insert(message, body).catch((e: Error) => e);
    for (let i = 0; i < 100 && sent.length === before; i++) await tick();
    return { done };
  };
  const a = await insert('QA');
  const b = await insert('QB');
  const c = await insert('QC');
  assert.deepEqual(sent.map((r) => [r.message.queueId, r.hold]), [['QA', true], ['QB', true], ['QC', true]]);
  assert.equal(held.size, 3, 'held before any answer (a job may come first)');
  store.answered([
    { n: 1, ok: true, held: true },
    { n: 2, ok: true },
    { n: 3, ok: false, full: false, message: 'no' },
  ]);
  await Promise.all([a.done, b.done, c.done]);
  assert.ok(held.get('QA'), 'kept: the primary will send its job here');
  assert.equal(held.get('QB'), undefined, 'not taken for delivery here: dropped');
  assert.equal(held.get('QC'), undefined, 'not committed: dropped');
  const d = await insert('QD');
  assert.equal(held.size, 2);
  store.lost();
  assert.ok((await d.done) instanceof Error);
  assert.equal(held.size, 0, 'the primary gone: nothing held');
});

test('jobs and releases waiting for a worker ride with the next insert answer (take), or go at the end of the turn', async () => {
  const sent: Array<[number, number, string[] | undefined]> = [];
  const jobs = new OutboundJobs((w, batch, release) => (sent.push([w, batch.length, release]), true));
  jobs.ready(1);
  jobs.hold('Q1', 1);
  jobs.hold('Q2', 1);
  const spec = { message: job().message, recipients: job().recipients, hop: job().hop as OutboundJob['hop'], hosts: null, share: 1 };
  jobs.dispatch({ ...spec, body: null }, 'b.test', () => undefined);
  jobs.passEnded('Q2');
  // The answer to an insert leaves now: it takes both with it.
  const riding = jobs.take(1);
  assert.equal(riding.jobs?.length, 1);
  assert.equal(riding.jobs?.[0]?.body, null);
  assert.deepEqual(riding.release, ['Q2']);
  assert.deepEqual(jobs.take(1), {}, 'taken once');
  await afterRelease();
  assert.deepEqual(sent, [], 'nothing sent twice');
  // Without an answer to ride on: the job leaves at the end of the turn, with the release waiting for it.
  jobs.passEnded('Q1');
  jobs.dispatch({ ...spec, body: BODY }, 'b.test', () => undefined);
  await tick();
  assert.deepEqual(sent, [[1, 1, ['Q1']]]);
  await afterRelease();
  assert.deepEqual(sent, [[1, 1, ['Q1']]], 'released once');
  jobs.gone(1, 1);
});

test('a job\'s recipients travel as tuples: the worker\'s delivery sees the same ids, addresses, DSN parameters, destination and attempts', () => {
  const full = job(BODY.length, [11, 12]).recipients.map(
    (r, i): RecipientRecord => ({
      ...r,
      orcpt: i === 0 ? 'rfc822;Ünïcode+x@b.test' : null,
      notify: i === 0 ? 'SUCCESS,FAILURE' : null,
      destination: 'b.test',
      state: 'delivering',
      attempts: 3 + i,
      nextAttemptAt: 5,
      lastAttemptAt: 4,
      lastReply: '451 4.7.1 greylisted, try again in 5 minutes',
      lastStatus: '4.7.1',
      remote: 'mx.b.test [192.0.2.9]',
      report: null,
      delayNotified: true,
      suspended: false,
    }),
  );
  // Through the channel's own serialization, as a worker receives it.
  const packed = deserialize(serialize(packRecipients(full))) as ReturnType<typeof packRecipients>;
  const seen = unpackRecipients('Q1', packed);
  const caps = { dsn: true } as Parameters<typeof rcptParams>[1];
  for (let i = 0; i < full.length; i++) {
    const [a, b] = [full[i]!, seen[i]!];
    assert.deepEqual([b.id, b.queueId, b.address, b.orcpt, b.notify, b.destination, b.attempts, b.state], [a.id, a.queueId, a.address, a.orcpt, a.notify, a.destination, a.attempts, 'delivering']);
    assert.equal(rcptParams(b, caps), rcptParams(a, caps));
  }
  assert.equal(rcptParams(seen[0]!, caps), ' NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;+C3+9Cn+C3+AFcode+2Bx@b.test');
  assert.ok(serialize(packed).length * 2 < serialize(full).length, 'less than half the octets of the records');
});

test('a job handed to a worker carries its recipients packed', async () => {
  const sent: OutboundJob[] = [];
  const jobs = new OutboundJobs((_w, batch) => (sent.push(...batch), true));
  jobs.ready(1);
  jobs.dispatch({ message: job().message, recipients: job(0, [5, 6]).recipients, hop: job().hop as OutboundJob['hop'], hosts: null, body: BODY, share: 1 }, 'b.test', () => undefined);
  await tick();
  assert.deepEqual(
    sent[0]!.recipients.map((r) => [r[0], r[1]]),
    [
      [5, 'r5@b.test'],
      [6, 'r6@b.test'],
    ],
  );
});
