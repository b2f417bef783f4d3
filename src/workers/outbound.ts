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
 * OutboundJobs keeps the jobs handed out. Invariants:
 * - a job's promise resolves once, when its worker says "done" or is gone;
 *   each recipient gets at most one result from here (a late or repeated
 *   one is dropped), and a recipient still without one when its worker is
 *   gone is deferred ("the delivery worker ended during the attempt"): the
 *   scheduler records it and retries it on schedule. Nothing is lost; a
 *   message the worker had sent before dying may be sent again (at least
 *   once, as after a crash of one process);
 * - jobs go to the ready worker with the fewest in progress, equals in turn.
 */
import type { DeliveryAgent, DeliveryJob, RecipientResult } from '../delivery/agent.js';
import { WholeBody } from '../delivery/agent.js';
import type { SmtpAgent } from '../delivery/smtp/smtp-agent.js';
import type { OutboundJob, OutboundReport } from './messages.js';

/**
 * Larger bodies are delivered here: crossing the IPC channel costs about what
 * sending them over SMTP does, so above a few kilobytes a worker saves the
 * primary nothing (bench/relay, workers = 2: 32 KB bodies 483-499 msgs/s
 * through the workers against 554-667 delivered here, 100 KB 285-340
 * against 404; 4 KB bodies halve the primary's main-thread CPU per message).
 */
export const OUTBOUND_BODY_MAX = 16 * 1024;

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

/** OutboundJobs - the jobs handed to the workers, by id; `send` writes one batch to worker `w` (false: it is gone). */
export class OutboundJobs {
  private next = 0;
  private readonly pending = new Map<number, Pending>();
  /** Ready workers (by cluster id) and their jobs in progress. */
  private readonly load = new Map<number, number>();
  private readonly outbox = new Map<number, OutboundJob[]>();
  private flushing = false;
  private bytes = 0;
  private turn = 0;
  stopping = false;
  /** Jobs handed out since the start (metrics, tests). */
  handedOut = 0;

  constructor(private readonly send: (worker: number, jobs: OutboundJob[]) => boolean) {}

  /** ready - worker `w` takes jobs from now on. */
  ready(w: number): void {
    if (!this.load.has(w)) this.load.set(w, 0);
  }

  /** room - whether a job of `size` octets can be handed out now. */
  room(size: number): boolean {
    return !this.stopping && this.load.size > 0 && size <= OUTBOUND_BODY_MAX && this.bytes + size <= MAX_BYTES_IN_FLIGHT;
  }

  /** dispatch - hand the job to the least busy worker; resolves when it ended (or the worker is gone); null when none can take it. */
  dispatch(job: Omit<OutboundJob, 'id'>, label: string, report: (results: RecipientResult[]) => void): Promise<void> | null {
    if (!this.room(job.body.byteLength)) return null;
    // The least busy; among equals, the one after the last chosen (a trickle of jobs goes round them all).
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
    const id = ++this.next;
    this.load.set(worker, least + 1);
    this.bytes += job.body.byteLength;
    this.handedOut++;
    const done = new Promise<void>((resolve) => {
      this.pending.set(id, { worker, label, bytes: job.body.byteLength, open: new Set(job.recipients.map((r) => r.id)), report, resolve });
    });
    let batch = this.outbox.get(worker);
    if (!batch) this.outbox.set(worker, (batch = []));
    batch.push({ ...job, id });
    if (!this.flushing) {
      this.flushing = true;
      setImmediate(() => this.flush());
    }
    return done;
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
      this.send(w, jobs);
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
    if (hop.kind !== 'smtp' || !this.jobs.room(job.message.size)) return this.local.deliver(job, report);
    const plan = await this.local.plan(hop);
    if (plan.error !== undefined || plan.provider) return this.local.deliver(job, report, plan);
    let body: Buffer;
    try {
      body = await wholeBody(job);
    } catch {
      // The local agent meets the same failure and reports it the usual way (the message is quarantined).
      return this.local.deliver(job, report, plan);
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
