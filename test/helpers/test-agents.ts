/*
 * test/helpers/test-agents - delivery agents for admin tests, passed through
 * `new Petrel(config, { agents })`:
 * - DirectoryStandIn: a stand-in for the directory connector: writes
 *   <queue id>.eml into the route's PATH when PATH exists, and defers every
 *   recipient (a counted attempt) when it does not — a "dead destination"
 *   that a test makes live by creating the folder;
 * - RecordingAgent: answers every recipient with a fixed result and records
 *   the hops it was given (to see where a redirect sent mail).
 */
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { DeliveryAgent, DeliveryJob, NextHop, RecipientResult } from '../../src/delivery/agent.js';

export class DirectoryStandIn implements DeliveryAgent {
  attempts = 0;
  async deliver(job: DeliveryJob, report: (r: RecipientResult[]) => void): Promise<void> {
    this.attempts++;
    const hop = job.hop as Extract<NextHop, { kind: 'directory' }>;
    if (!existsSync(hop.path)) {
      report(job.recipients.map((r) => ({ recipientId: r.id, kind: 'deferred', status: '4.3.0', reply: `directory ${hop.path} does not exist`, remote: 'directory', remoteReply: false })));
      return;
    }
    const chunks: Buffer[] = [];
    for await (const c of await job.openBody()) chunks.push(c as Buffer);
    writeFileSync(join(hop.path, `${job.message.queueId}.eml`), Buffer.concat(chunks));
    report(job.recipients.map((r) => ({ recipientId: r.id, kind: 'delivered', status: '2.0.0', reply: `written to ${hop.path}`, remote: 'directory', remoteReply: false })));
  }
  async close(): Promise<void> {}
}

export class RecordingAgent implements DeliveryAgent {
  hops: NextHop[] = [];
  constructor(private readonly kind: RecipientResult['kind'] = 'delivered') {}
  async deliver(job: DeliveryJob, report: (r: RecipientResult[]) => void): Promise<void> {
    this.hops.push(job.hop);
    report(job.recipients.map((r) => ({ recipientId: r.id, kind: this.kind, status: this.kind === 'delivered' ? '2.0.0' : '4.4.1', reply: `${this.kind} by test agent`, remote: 'test', remoteReply: true })));
  }
  async close(): Promise<void> {}
}
