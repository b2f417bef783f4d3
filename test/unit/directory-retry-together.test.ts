// Recipients of one message that a directory job defers together are due
// together again (one jitter per job, scheduler/scheduler), so the retry is
// again one job and one file for all of them — with a random source that
// would give every recipient a different wait if it were drawn per recipient.
// Also: recipients enqueue decided to fail (alias-loop, unknown-user) are
// routed to reject hops and end `failed` with their status.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfigText } from '../../src/config/load.js';
import { MemoryStore } from '../../src/queue/memory-store.js';
import { Router } from '../../src/routing/router.js';
import { Scheduler } from '../../src/scheduler/scheduler.js';
import { Enqueuer } from '../../src/enqueue/enqueue.js';
import { trace } from '../../src/log/trace.js';
import type { DeliveryAgent, DeliveryJob, RecipientResult } from '../../src/delivery/agent.js';

class DeferringAgent implements DeliveryAgent {
  jobs: DeliveryJob[] = [];
  async deliver(job: DeliveryJob, report: (r: RecipientResult[]) => void): Promise<void> {
    this.jobs.push(job);
    report(job.recipients.map((r) => ({ recipientId: r.id, kind: 'deferred', status: '4.3.0', reply: 'share missing', remote: 'directory /x', remoteReply: false })));
  }
  async close(): Promise<void> {}
}

test('recipients deferred in one job get one next-attempt time', async () => {
  const config = parseConfigText('hostname = "petrel.test"\n[queue]\nretry_intervals = ["1h"]\n[[routes]]\ndomain = "legacy.example"\nvia = "directory:/nonexistent"\n', 'x', '/tmp');
  const store = new MemoryStore();
  const router = new Router(config);
  const agent = new DeferringAgent();
  let n = 0;
  const random = (): number => [0.0, 0.5, 0.99, 0.25][n++ % 4]!;
  const scheduler = new Scheduler({ config, store, router, agents: { directory: agent }, report: async () => undefined, trace: trace('test'), random });
  const enqueuer = new Enqueuer({ hostname: 'petrel.test', store, router });
  await store.open();
  scheduler.start();
  try {
    const inc = enqueuer.begin({
      sender: 'a@x.test',
      recipients: ['b@legacy.example', 'c@legacy.example', 'd@legacy.example'].map((address) => ({ address, orcpt: null, notify: null })),
      smtputf8: false,
      eightBit: false,
      ret: null,
      envid: null,
      client: 'test',
      received: null,
      isReport: false,
      maxSize: 0,
      maxReceived: 0,
    });
    await inc.write(Buffer.from('Subject: t\r\n\r\nx\r\n'));
    const { queueId } = await inc.commit();
    const deadline = Date.now() + 5000;
    let rs = await store.getRecipients(queueId);
    while (rs.some((r) => r.state !== 'deferred') && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
      rs = await store.getRecipients(queueId);
    }
    assert.equal(agent.jobs.length, 1);
    assert.deepEqual(rs.map((r) => r.state), ['deferred', 'deferred', 'deferred']);
    assert.equal(new Set(rs.map((r) => r.nextAttemptAt)).size, 1, 'one next-attempt time for the whole job');
  } finally {
    await scheduler.stop();
  }
});

test('decided recipients are routed to reject hops: alias-loop 5.4.6, unknown-user 5.1.1; others route normally', () => {
  const config = parseConfigText('hostname = "petrel.test"\n[local]\ndomains = ["l.test"]\n', 'x', '/tmp');
  const router = new Router(config);
  const loop = router.routeRecipient({ address: 'a@l.test', destination: 'alias-loop' });
  assert.deepEqual(loop.hop, { kind: 'reject', key: 'reject:alias-loop', status: '5.4.6', text: '550 5.4.6 <a@l.test>: alias expansion loop (or nested too deep); see the aliases file' });
  const unknown = router.routeRecipient({ address: 'x@l.test', destination: 'unknown-user' });
  assert.equal(unknown.hop.kind, 'reject');
  assert.equal((unknown.hop as { status: string }).status, '5.1.1');
  assert.equal(router.routeRecipient({ address: 'b@l.test', destination: 'l.test' }).hop.kind, 'maildir');
  assert.equal(router.routeRecipient({ address: 'b@l.test', destination: 'toString' }).hop.kind, 'maildir', 'only the known names are decisions');
});
