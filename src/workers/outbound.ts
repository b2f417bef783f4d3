/*
 * workers/outbound - the primary's side of outbound delivery with
 * `[server] workers` > 1: SMTP jobs the scheduler claims are delivered by the
 * worker processes (workers/outbound-worker), so the SMTP client work (TLS,
 * writes, reply parsing) leaves the primary, the one commit path.
 *
 * WorkerDelivery is the scheduler's `smtp` agent. A job goes to a worker
 * unless one of these keeps it here, with the primary's own SmtpAgent:
 * - its next hop has a traffic-shaping provider (delivery/smtp/shaping):
 *   the provider's limits, throttle feedback, suspension, saved state and
 *   cluster marks live in the primary's Shaper and pool, exact;
 * - its MX look-up failed (the local agent reports it as always);
 * - its body is over OUTBOUND_BODY_MAX (16 KB), or bodies in flight to the workers
 *   are over MAX_BYTES_IN_FLIGHT (memory stays bounded), or it cannot be read
 *   here (the local agent reports that as always);
 * - no worker is ready, or the server is stopping.
 *
 * A message a worker received and still holds (workers/held-bodies: the
 * primary answered its insert "held") goes back to that worker without its
 * body, whatever its size up to the inline limit: the first delivery of a
 * fresh message costs one body crossing of the channel, not two. Its body
 * is released when the scheduler's pass over the message ends; a worker that
 * is gone or no longer ready is not chosen, and the job takes the usual way.
 *
 * Fewer IPC messages: the jobs and releases waiting for a worker leave with
 * the next insert answer the primary sends it (`take`, workers/primary), else
 * at the end of the event-loop turn; releases are not urgent and wait up to
 * RELEASE_MS for another message to ride on.
 *
 * OutboundJobs keeps the jobs handed out. Invariants:
 * - a job's promise resolves once, when its worker says "done" or is gone;
 *   each recipient gets at most one result from here (a late or repeated
 *   one is dropped), and a recipient still without one when its worker is
 *   gone is deferred ("the delivery worker ended during the attempt"): the
 *   scheduler records it and retries it on schedule. Nothing is lost; a
 *   message the worker had sent before dying may be sent again (at least
 *   once, as after a crash of one process);
 * - jobs go to the worker that holds the body, else to the ready worker with
 *   the fewest in progress, equals in turn;
 * - every held body is released exactly once: at the end of its pass, or
 *   with its worker's end (the worker drops what it holds when the channel
 *   closes).
 */
import type { DeliveryAgent, DeliveryJob, RecipientResult } from '../delivery/agent.js';
import { WholeBody } from '../delivery/agent.js';
import type { SmtpAgent } from '../delivery/smtp/smtp-agent.js';
import { packRecipients, type OutboundJob, type OutboundReport } from './messages.js';
import type { RecipientRecord } from '../queue/store.js';

/** A job to hand out, as the scheduler has it (its recipients are packed for the channel: JobRecipient). */
export type JobSpec = Omit<OutboundJob, 'id' | 'recipients'> & { recipients: readonly RecipientRecord[] };

/**
 * Larger bodies are delivered here: crossing the IPC channel costs about what
 * sending them over SMTP does, so above a few kilobytes a worker saves the
 * primary nothing (bench/relay, workers = 2: 32 KB bodies 483-499 msgs/s
 * through the workers against 554-667 delivered here, 100 KB 285-340
 * against 404; 4 KB bodies halve the primary's main-thread CPU per message).
 */
export const OUTBOUND_BODY_MAX = 16 * 1024;

/** How long a release may wait for another message to the same worker before it goes alone. */
export const RELEASE_MS = 100;

/** Bodies in flight to the workers at most (beyond it jobs are delivered here): 64 MiB. */
export const MAX_BYTES_IN_FLIGHT = 64 * 1024 * 1024;

interface Pending {
  worker: number;
  label: string;
  bytes: number;
  open: Set<number>;
  report: (results: RecipientResult[]) => void;
  resolve: () => void;
}

/** OutboundJobs - the jobs handed to the workers, by id, and the bodies they hold for first deliveries. */
export class OutboundJobs {
  private next = 0;
  private readonly pending = new Map<number, Pending>();
  /** Ready workers (by cluster id) and their jobs in progress. */
  private readonly load = new Map<number, number>();
  private readonly outbox = new Map<number, OutboundJob[]>();
  /** Bodies held by the worker that received the message: queue id -> worker. */
  private readonly holders = new Map<string, number>();
  private readonly releases = new Map<number, string[]>();
  private flushing = false;
  private bytes = 0;
  private turn = 0;
  stopping = false;
  /** Jobs handed out since the start (metrics, tests). */
  handedOut = 0;

  /** `send` writes jobs (possibly none) and held bodies to release to worker `w` in one message; false: it is gone. */
  constructor(private readonly send: (worker: number, jobs: OutboundJob[], release?: string[]) => boolean) {}

  private releaseTimer: NodeJS.Timeout | null = null;

  /** ready - worker `w` takes jobs from now on. */
  ready(w: number): void {
    if (!this.load.has(w)) this.load.set(w, 0);
  }

  /** room - whether a job of `size` octets can be handed out now. */
  room(size: number): boolean {
    return !this.stopping && this.load.size > 0 && size <= OUTBOUND_BODY_MAX && this.bytes + size <= MAX_BYTES_IN_FLIGHT;
  }

  /** hold - worker `w` holds the body of message `queueId` (its insert was answered "held"). */
  hold(queueId: string, w: number): void {
    this.holders.set(queueId, w);
  }

  /** holder - the ready worker that holds the message's body, if any (not while stopping: the primary delivers then). */
  holder(queueId: string): number | undefined {
    const w = this.holders.get(queueId);
    return w !== undefined && !this.stopping && this.load.has(w) ? w : undefined;
  }

  /** passEnded - no job of the message is in progress any more: its held body, if any, is released. */
  passEnded(queueId: string): void {
    const w = this.holders.get(queueId);
    if (w === undefined) return;
    this.holders.delete(queueId);
    let ids = this.releases.get(w);
    if (!ids) this.releases.set(w, (ids = []));
    ids.push(queueId);
    if (this.releaseTimer) return;
    this.releaseTimer = setTimeout(() => {
      this.releaseTimer = null;
      this.soon();
    }, RELEASE_MS);
    this.releaseTimer.unref();
  }

  /** take - what waits to go to worker `w` (it leaves now with another message: the caller sends it). */
  take(w: number): { jobs?: OutboundJob[]; release?: string[] } {
    const out: { jobs?: OutboundJob[]; release?: string[] } = {};
    const jobs = this.outbox.get(w);
    if (jobs) {
      this.outbox.delete(w);
      out.jobs = jobs;
    }
    const ids = this.releases.get(w);
    if (ids) {
      this.releases.delete(w);
      out.release = ids;
    }
    return out;
  }

  /** Bodies held by the workers now (tests, metrics). */
  get holding(): number {
    return this.holders.size;
  }

  /**
   * dispatch - hand the job to the worker that holds its body (`job.body`
   * null), else to the least busy one; resolves when it ended (or the worker
   * is gone); null when none can take it.
   */
  dispatch(job: JobSpec, label: string, report: (results: RecipientResult[]) => void): Promise<void> | null {
    const size = job.body?.byteLength ?? 0;
    let worker = -1;
    if (job.body === null) {
      worker = this.holder(job.message.queueId) ?? -1;
      if (worker < 0) return null;
    } else {
      if (!this.room(size)) return null;
      worker = this.leastBusy();
    }
    const id = ++this.next;
    this.load.set(worker, this.load.get(worker)! + 1);
    this.bytes += size;
    this.handedOut++;
    const done = new Promise<void>((resolve) => {
      this.pending.set(id, { worker, label, bytes: size, open: new Set(job.recipients.map((r) => r.id)), report, resolve });
    });
    let batch = this.outbox.get(worker);
    if (!batch) this.outbox.set(worker, (batch = []));
    batch.push({ ...job, recipients: packRecipients(job.recipients), id });
    this.soon();
    return done;
  }

  /** leastBusy - the ready worker with the fewest jobs; among equals, the one after the last chosen (a trickle goes round them all). */
  private leastBusy(): number {
    const ids = [...this.load.keys()];
    let worker = -1;
    let least = Infinity;
    let at = 0;
    for (let i = 1; i <= ids.length; i++) {
      const w = ids[(this.turn + i) % ids.length]!;
      const n = this.load.get(w)!;
      if (n < least) {
        least = n;
        worker = w;
        at = (this.turn + i) % ids.length;
      }
    }
    this.turn = at;
    return worker;
  }

  private soon(): void {
    if (this.flushing) return;
    this.flushing = true;
    setImmediate(() => this.flush());
  }

  /** outcomes - what worker `w` reported. */
  outcomes(w: number, items: readonly OutboundReport[]): void {
    for (const item of items) {
      const p = this.pending.get(item.id);
      if (!p || p.worker !== w) continue;
      if (item.results) {
        const fresh = item.results.filter((r) => p.open.delete(r.recipientId));
        if (fresh.length) p.report(fresh);
      }
      if (item.done) this.end(item.id, p, item.done.error === null ? null : `delivery worker: ${item.done.error}`);
    }
  }

  /** leaving - worker `w` is ending: it takes no new job (its jobs end with gone(), once its last reports are read). */
  leaving(w: number): void {
    this.load.delete(w);
  }

  /** gone - worker `w` ended: its jobs end, their recipients without a result deferred. */
  gone(w: number, pid: number): void {
    this.load.delete(w);
    this.outbox.delete(w);
    // What it held died with it.
    this.releases.delete(w);
    for (const [queueId, holder] of this.holders) if (holder === w) this.holders.delete(queueId);
    for (const [id, p] of this.pending) if (p.worker === w) this.end(id, p, `the delivery worker (pid ${pid}) ended during the attempt; the message may have reached the next hop`);
  }

  /** inProgress - jobs handed out and not ended. */
  get inProgress(): number {
    return this.pending.size;
  }

  private end(id: number, p: Pending, error: string | null): void {
    this.pending.delete(id);
    this.bytes -= p.bytes;
    const n = this.load.get(p.worker);
    if (n !== undefined) this.load.set(p.worker, n - 1);
    if (p.open.size) {
      const reply = `local error: ${error ?? 'delivery ended without a result for this recipient'}`;
      p.report([...p.open].map((recipientId) => ({ recipientId, kind: 'deferred', status: '4.3.0', reply, remote: p.label, remoteReply: false })));
      p.open.clear();
    }
    p.resolve();
  }

  private flush(): void {
    this.flushing = false;
    // A worker gone before its exit was seen refuses the batch: gone() ends those jobs when it is seen.
    for (const [w, jobs] of this.outbox) {
      this.outbox.delete(w);
      // The releases for this worker go with its jobs.
      const ids = this.releases.get(w);
      this.releases.delete(w);
      this.send(w, jobs, ids);
    }
    if (this.releaseTimer !== null) return;
    for (const [w, ids] of this.releases) {
      this.releases.delete(w);
      this.send(w, [], ids);
    }
  }
}

/** WorkerDelivery - the scheduler's smtp agent with workers: see the file comment. */
export class WorkerDelivery implements DeliveryAgent {
  constructor(
    private readonly local: SmtpAgent,
    private readonly jobs: OutboundJobs,
    /** How many share the per-destination connection limit now: the cluster's nodes times the workers. */
    private readonly share: () => number,
  ) {}

  async deliver(job: DeliveryJob, report: (results: RecipientResult[]) => void): Promise<void> {
    const hop = job.hop;
    const held = this.jobs.holder(job.message.queueId) !== undefined;
    if (hop.kind !== 'smtp' || !(held || this.jobs.room(job.message.size))) return this.local.deliver(job, report);
    const plan = await this.local.plan(hop);
    if (plan.error !== undefined || plan.provider) return this.local.deliver(job, report, plan);
    let body: Buffer | null = null;
    // Still held after the look-up: the job goes without its body (else, rarely, it is read here after all).
    if (!held || this.jobs.holder(job.message.queueId) === undefined) {
      if (!this.jobs.room(job.message.size)) return this.local.deliver(job, report, plan);
      try {
        body = await wholeBody(job);
      } catch {
        // The local agent meets the same failure and reports it the usual way (the message is quarantined).
        return this.local.deliver(job, report, plan);
      }
    }
    const label = hop.hosts === 'mx' ? hop.domain : hop.host;
    const handed = this.jobs.dispatch({ message: job.message, recipients: job.recipients, hop, hosts: plan.hosts, body, share: this.share() }, label, report);
    if (!handed) return this.local.deliver(job, report, plan);
    await handed;
  }

  close(): Promise<void> {
    return this.local.close();
  }
}

/** wholeBody - the stored body as one Buffer (the caller checked its size). */
async function wholeBody(job: DeliveryJob): Promise<Buffer> {
  const stream = await job.openBody();
  if (stream instanceof WholeBody) return stream.whole;
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer));
  return Buffer.concat(chunks);
}
