/*
 * workers/outbound-worker - the worker's side of outbound delivery with
 * `[server] workers` > 1: runs the SMTP delivery jobs the primary hands over
 * (workers/outbound) with an SmtpAgent of its own, and sends their results
 * back as they become known.
 *
 * Invariants:
 * - every job ends with a "done" report after all its results; a result is
 *   never recorded here: the primary records it (its scheduler holds the
 *   claim), so a worker that dies loses no outcome it had not sent, and what
 *   it had not sent is deferred by the primary;
 * - results leave batched with the rest of what the worker says (workers/outbox),
 *   waiting at most RIDE_MS for a message to ride with, and stop() resolves
 *   only once the last of them is written to the channel;
 * - the worker's connection limits are its share: [delivery] max_connections
 *   divided by the workers, the per-destination limit by the workers times
 *   the cluster's nodes (the job says how many); destinations it backs off
 *   are told to the primary, which tells the other workers;
 * - the body comes whole with the job (at most OUTBOUND_BODY_MAX octets,
 *   workers/outbound), or is the one this worker holds since it received the
 *   message (workers/held-bodies); a job whose held body is missing ends at
 *   once with an error, so the primary defers its recipients (never a bounce).
 *
 * Untrusted input: the peers' replies, as in one process (client.ts).
 */
import type { Config } from '../config/schema.js';
import { WholeBody, type DeliveryJob, type RecipientResult } from '../delivery/agent.js';
import { SmtpAgent, poolOptionsFrom, type TlsAttemptResult } from '../delivery/smtp/smtp-agent.js';
import type { HeldBodies } from './held-bodies.js';
import { unpackRecipients, type BackOffMark, type OutboundJob, type OutboundReport, type ToPrimary } from './messages.js';
import type { Outbox, OutboxPart } from './outbox.js';

/**
 * How long results may wait for a message to the primary that leaves anyway
 * (the worker's next insert, usually a few ms away under load): one IPC
 * message and one wake-up of the primary fewer per delivery. A result waiting
 * is not lost by a crash any more than one in flight: its recipients are
 * still claimed, and come back when the claim does (at-least-once).
 */
export const RIDE_MS = 20;

export class OutboundWorker implements OutboxPart {
  private readonly agent: SmtpAgent;
  private readonly running = new Set<Promise<void>>();
  private reports: OutboundReport[] = [];
  private tls: TlsAttemptResult[] = [];
  private marks: BackOffMark[] = [];
  /** Writes not yet on the channel (stop waits for them). */
  private unsent = 0;
  private drained: (() => void) | null = null;

  constructor(
    config: Config,
    workers: number,
    /** Where the reports leave (one IPC message per turn with the worker's other messages). */
    private readonly outbox: Outbox,
    private readonly held: HeldBodies,
  ) {
    const pool = poolOptionsFrom(config);
    this.agent = SmtpAgent.fromConfig(config, {
      poolOptions: { ...pool, maxTotal: Math.max(1, Math.ceil((pool.maxTotal ?? 200) / workers)) },
      onTlsResult: (r) => {
        this.tls.push(r);
        this.soon();
      },
    });
    this.agent.pool.shareAmong(workers);
    this.agent.pool.onDead = (key, until, error) => {
      this.marks.push({ key, until, error });
      // At the end of the turn: the other workers stop trying it as soon as they can.
      this.outbox.soon(this);
    };
  }

  /** jobs - in progress now. */
  get size(): number {
    return this.running.size;
  }

  /** take - start the jobs the primary sent. */
  take(jobs: readonly OutboundJob[]): void {
    for (const j of jobs) {
      if (this.agent.pool.sharedBy !== j.share) this.agent.pool.shareAmong(j.share);
      const body = j.body ? Buffer.from(j.body.buffer, j.body.byteOffset, j.body.byteLength) : this.held.get(j.message.queueId);
      if (!body) {
        this.reports.push({ id: j.id, done: { error: `the body of ${j.message.queueId} is not held by this worker` } });
        this.soon();
        continue;
      }
      const job: DeliveryJob = { message: j.message, recipients: unpackRecipients(j.message.queueId, j.recipients), hop: j.hop, openBody: () => Promise.resolve(new WholeBody(body)) };
      const report = (results: RecipientResult[]): void => {
        this.reports.push({ id: j.id, results });
        this.soon();
      };
      const p = this.agent
        .deliver(job, report, { hosts: j.hosts, provider: null })
        .then(
          () => null,
          (e: unknown) => (e as Error)?.message ?? String(e),
        )
        .then((error) => {
          this.running.delete(p);
          this.reports.push({ id: j.id, done: { error } });
          this.soon();
        });
      this.running.add(p);
    }
  }

  /** backOff - destinations backed off elsewhere (the primary, another worker, another node). */
  backOff(marks: readonly BackOffMark[]): void {
    for (const m of marks) this.agent.pool.markDead(m.key, m.until, new Error(m.error));
  }

  /** clearBackOff - an operator's retry of these next hops. */
  clearBackOff(hops: readonly string[]): void {
    for (const h of hops) this.agent.pool.clearBackOff(h);
  }

  /**
   * stop - the jobs in progress finish (connections still in use are cut
   * after graceMs: their recipients are reported deferred), then the last
   * reports are written to the channel.
   */
  async stop(graceMs: number): Promise<void> {
    const late = new Promise<void>((r) => setTimeout(r, graceMs).unref());
    await Promise.race([Promise.allSettled([...this.running]), late]);
    await this.agent.close();
    await Promise.allSettled([...this.running]);
    this.outbox.now();
    if (this.unsent > 0) await new Promise<void>((r) => (this.drained = r));
  }

  /** soon - results and TLS records ride with the worker's next message (an insert, usually), within RIDE_MS. */
  private soon(): void {
    this.outbox.later(this, RIDE_MS);
  }

  /** gathered - the TLS results, back-offs and reports of this turn, for the outbox. */
  gathered(): ToPrimary[] {
    const out: ToPrimary[] = [];
    if (this.tls.length) out.push({ t: 'tlsResults', items: this.tls.splice(0) });
    if (this.marks.length) out.push({ t: 'backOff', marks: this.marks.splice(0) });
    if (this.reports.length) out.push({ t: 'outcomes', items: this.reports.splice(0) });
    if (out.length) this.unsent++;
    return out;
  }

  /** sent - written, or the primary is gone: nothing more can be said (its claims come back when their leases end). */
  sent(): void {
    if (--this.unsent === 0) this.drained?.();
  }
}
