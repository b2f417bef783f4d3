/*
 * scheduler/scheduler - the queue manager: claims recipients that are due,
 * groups them by message and next hop into jobs, hands jobs to delivery
 * agents, and writes every result back (with its event) before anything else
 * happens to that recipient. When a message has nothing left in flight and
 * nothing due, its pending reports are made (one per kind per pass).
 *
 * Invariants:
 * - every attempt counts: each result increments the recipient's attempts and
 *   writes exactly one outcome event (delivered, deferred, failed, expired)
 *   carrying that attempt number (invariant 4, seed 003);
 * - a recipient an agent did not attempt because traffic shaping held it
 *   back (a suspended provider: `heldUntil`) is put back, deferred until
 *   then, without counting an attempt (its event carries no attempt number
 *   and says so); past the queue lifetime it is handled as an attempt
 *   would be (expired), so nothing waits forever;
 * - every claimed recipient gets an outcome: an agent that throws, or forgets
 *   one, has it recorded as deferred (never lost); a message whose body cannot
 *   be read is quarantined, never deleted (invariant 7);
 * - in-flight work is bounded (`maxInflight` recipients), and the pass table
 *   holds only messages with work in flight;
 * - after stop() no new claim is made; results of jobs still running are
 *   recorded if they arrive before the deadline, otherwise the claims stay
 *   "delivering" and open() turns them back into due recipients.
 */
import { Readable, Transform } from 'node:stream';
import type { Config } from '../config/schema.js';
import { BodyUnreadable, WholeBody, type DeliveryAgent, type DeliveryJob, type NextHop, type RecipientResult } from '../delivery/agent.js';
import { EVENT_IDS, isoTime, type AttemptTls, type MailEvent } from '../log/events.js';
import type { Trace } from '../log/trace.js';
import type { Claim, MessageRecord, Outcome, QueueStore, RecipientRecord, ReportKind } from '../queue/store.js';
import { afterTemporaryFailure } from './retry.js';
import { reportWanted } from '../dsn/policy.js';
import type { Router } from '../routing/router.js';

export interface SchedulerDeps {
  config: Config;
  store: QueueStore;
  router: Router;
  agents: Partial<Record<NextHop['kind'], DeliveryAgent>>;
  /** Makes the reports a message is waiting for (dsn/reporter). */
  report: (queueId: string) => Promise<void>;
  trace: Trace;
  /** Observer for metrics. */
  onResult?: (result: RecipientResult, message: MessageRecord, hop: NextHop) => void;
  /** Most recipients in flight at once. */
  maxInflight?: number;
  random?: () => number;
}

interface Pass {
  inflight: number;
  /** Some outcome of this pass asked for a report. */
  reports: boolean;
  /** Octets of the message body kept in memory for this pass (counted in the budget). */
  bodyBytes: number;
}

/** How often reports left pending (a crash, a dead node) are looked for. */
const REPORT_SWEEP_MS = 60_000;
/** How often the scheduler looks for due work without being woken (a lost wake-up costs at most this). */
const POLL_MS = 5000;

/** Most octets of message bodies kept in memory for messages in flight (the rest are read back). */
const BODY_BUDGET = 64 * 1024 * 1024;

export class Scheduler {
  private running = false;
  private claiming = false;
  /** The claim loop stopped because maxInflight was reached. */
  private starved = false;
  /** Octets of bodies kept for messages in flight (BODY_BUDGET). */
  private bodyBytes = 0;
  private again = false;
  private timer: NodeJS.Timeout | null = null;
  /** The sweep for reports left pending (REPORT_SWEEP_MS), and whether one is running. */
  private leftovers: NodeJS.Timeout | null = null;
  private poll: NodeJS.Timeout | null = null;
  /** After a failed claim: no claim before this time (ms), and the current pause. */
  private claimBackoffUntil = 0;
  private claimBackoffMs = 0;
  private sweeping = false;
  private timerAt = Infinity;
  private inflight = 0;
  private readonly passes = new Map<string, Pass>();
  private readonly jobs = new Set<Promise<void>>();
  private readonly maxInflight: number;
  private readonly random: () => number;
  /** Called when the pass over a message ends: no job of it is in progress any more (workers/outbound: a held body is released). */
  onPassEnd: ((queueId: string) => void) | null = null;

  constructor(private readonly deps: SchedulerDeps) {
    this.maxInflight = deps.maxInflight ?? 20_000;
    this.random = deps.random ?? Math.random;
    deps.store.onDue(() => this.wake());
  }

  start(): void {
    this.running = true;
    this.wake();
    // Reports left pending: by a previous run (a crash between outcome and
    // report) and, on a shared queue, by a node that died. Looked for at start
    // and every minute (an indexed query); a report two nodes race to make is
    // kept once (ReportAlreadyMade).
    void this.reportLeftovers();
    this.leftovers = setInterval(() => void this.reportLeftovers(), REPORT_SWEEP_MS);
    this.leftovers.unref();
    // The safety net under the store's wake-ups: on a shared queue a lost
    // notification (another node's new mail, retry, release) costs at most this.
    this.poll = setInterval(() => this.wake(), POLL_MS);
    this.poll.unref();
  }

  /**
   * fresh - the sink for the fresh-message fast path (enqueue/enqueue): a
   * message inserted already claimed is dispatched at once, with no claim
   * query, when there is room in flight. `take` says whether it dispatched
   * the claim (a pass over the message began, and onPassEnd will end it).
   */
  readonly fresh = {
    room: (recipients: number): boolean => this.running && this.inflight + recipients <= this.maxInflight,
    take: (claim: Claim): boolean => {
      if (!this.running) return false; // stopping: the claim stays "delivering" and is due again at the next start
      // Bodies kept in memory for in-flight messages are bounded; past the budget they are read back when needed.
      if (claim.body && this.bodyBytes + claim.body.length > BODY_BUDGET) delete claim.body;
      this.dispatch(claim);
      return true;
    },
  };

  /** wake - something may be due: claim soon (after a failed claim, not before its back-off ends). */
  wake(): void {
    if (!this.running) return;
    if (Date.now() < this.claimBackoffUntil) {
      this.setTimer(this.claimBackoffUntil);
      return;
    }
    if (this.claiming) {
      this.again = true;
      return;
    }
    this.claiming = true;
    setImmediate(() => void this.claimLoop());
  }

  private async claimLoop(): Promise<void> {
    try {
      do {
        this.again = false;
        while (this.running && this.inflight < this.maxInflight) {
          const claims = await this.deps.store.claimDue(Date.now(), { maxRecipients: Math.min(5000, this.maxInflight - this.inflight) });
          if (claims.length === 0) break;
          for (const c of claims) this.dispatch(c);
        }
        // Full: a finishing job wakes us again (and only then is a claim worth making).
        if (this.inflight >= this.maxInflight) this.starved = true;
      } while (this.again && this.running);
      this.claimBackoffMs = 0;
    } catch (e) {
      // The store cannot claim (full disk, database away): wait, doubling up to 10 s,
      // instead of trying again at every wake-up or due time.
      this.claimBackoffMs = Math.min(10_000, Math.max(1000, this.claimBackoffMs * 2));
      this.claimBackoffUntil = Date.now() + this.claimBackoffMs;
      this.deps.trace.error({ err: (e as Error).message, retryInMs: this.claimBackoffMs }, 'claim failed; retrying after a pause');
      this.setTimer(this.claimBackoffUntil);
      return;
    } finally {
      this.claiming = false;
    }
    if (this.running) await this.armTimer();
  }

  private async armTimer(): Promise<void> {
    if (this.inflight >= this.maxInflight) return; // a finishing job wakes us
    const next = await this.deps.store.nextDueAt().catch(() => Date.now() + 1000);
    if (next !== null) this.setTimer(next);
  }

  private setTimer(at: number): void {
    if (this.timer && at >= this.timerAt) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.timerAt = Infinity;
      this.wake();
    }, Math.max(0, Math.min(at - Date.now(), 2 ** 31 - 1)));
    this.timer.unref();
  }

  /** dispatch - split one claim into jobs by next hop and start them. */
  private dispatch(claim: Claim): void {
    const byHop = new Map<string, { hop: NextHop; recipients: RecipientRecord[] }>();
    for (const r of claim.recipients) {
      const { hop } = this.deps.router.routeRecipient(r);
      let g = byHop.get(hop.key);
      if (!g) byHop.set(hop.key, (g = { hop, recipients: [] }));
      g.recipients.push(r);
    }
    const qid = claim.message.queueId;
    let pass = this.passes.get(qid);
    if (!pass) this.passes.set(qid, (pass = { inflight: 0, reports: false, bodyBytes: 0 }));
    if (claim.body && pass.bodyBytes === 0) {
      pass.bodyBytes = claim.body.length;
      this.bodyBytes += claim.body.length;
    }
    pass.inflight += claim.recipients.length;
    this.inflight += claim.recipients.length;
    // The claim's lease is renewed until the last of its jobs ends.
    let jobsLeft = byHop.size;
    for (const { hop, recipients } of byHop.values()) {
      const p = this.runJob(claim.message, hop, recipients, claim.token, claim.body).finally(() => {
        this.jobs.delete(p);
        if (--jobsLeft === 0) this.deps.store.endClaim(claim.token);
      });
      this.jobs.add(p);
    }
  }

  private openBody(message: MessageRecord, kept?: Buffer): () => Promise<Readable> {
    return async () => {
      let stream: Readable;
      try {
        // A small body comes in one piece: its size is checked at once, no stream stage needed.
        const whole = kept ?? (await this.deps.store.readBodyBuffer(message.queueId));
        if (whole) {
          if (whole.length !== message.size) throw new Error(`stored body is ${whole.length} octets, ${message.size} were accepted`);
          return new WholeBody(whole);
        }
        stream = await this.deps.store.readBody(message.queueId);
      } catch (e) {
        throw new BodyUnreadable(message.queueId, e);
      }
      const check = sizeCheck(message);
      stream.on('error', (e) => check.destroy(new BodyUnreadable(message.queueId, e)));
      return stream.pipe(check);
    };
  }

  private async runJob(message: MessageRecord, hop: NextHop, recipients: RecipientRecord[], token: string, body?: Buffer): Promise<void> {
    if (!this.deps.store.mayDeliver()) {
      // This node cannot renew its claims: it starts nothing (another node may
      // take these recipients over when the lease ends). No outcome: the claim
      // stays, and its lease decides who tries next.
      this.deps.trace.warn({ qid: message.queueId, hop: hop.key, n: recipients.length }, 'claims not renewed: delivery not started');
      this.finish(message.queueId, recipients.length);
      return;
    }
    const pending = new Map(recipients.map((r) => [r.id, r]));
    const writes: Promise<void>[] = [];
    const job: DeliveryJob = { message, recipients, hop, openBody: this.openBody(message, body) };
    // One jitter per job, one clock reading per batch of results: recipients
    // that failed together are due together again, so the retry is again one
    // job (one transaction, one file).
    const jitter = this.random();
    const record = (results: RecipientResult[]): void => {
      const outcomes: Outcome[] = [];
      const now = Date.now();
      for (const res of results) {
        const r = pending.get(res.recipientId);
        if (!r) continue; // a duplicate or unknown result: the first one stands
        pending.delete(res.recipientId);
        const o = this.outcome(message, r, hop, res, () => jitter, now);
        o.claim = token;
        if (o.report) this.passes.get(message.queueId)!.reports = true;
        outcomes.push(o);
        this.deps.onResult?.(res, message, hop);
      }
      if (outcomes.length) writes.push(this.write(outcomes));
    };
    let unreadable: BodyUnreadable | null = null;
    try {
      const agent = this.deps.agents[hop.kind];
      if (hop.kind === 'reject') {
        const kind = hop.status.startsWith('5') ? 'failed' : hop.status.startsWith('2') ? 'delivered' : 'deferred';
        record(recipients.map((r) => ({ recipientId: r.id, kind, status: hop.status, reply: hop.text, remote: '', remoteReply: false })));
      } else if (!agent) {
        record(recipients.map((r) => ({ recipientId: r.id, kind: 'deferred', status: '4.3.5', reply: `no delivery agent for ${hop.kind} is configured`, remote: '', remoteReply: false })));
      } else {
        await agent.deliver(job, record);
      }
    } catch (e) {
      if (e instanceof BodyUnreadable || (e as Error)?.name === 'BodyUnreadable') unreadable = e as BodyUnreadable;
      else this.deps.trace.error({ qid: message.queueId, hop: hop.key, err: (e as Error)?.stack ?? String(e) }, 'delivery agent failed');
    }
    if (unreadable) {
      await Promise.allSettled(writes);
      await this.quarantine(message, unreadable.message);
    } else if (pending.size) {
      // Every claimed recipient gets an outcome: what the agent did not report is deferred.
      record(
        [...pending.values()].map((r) => ({
          recipientId: r.id,
          kind: 'deferred',
          status: '4.3.0',
          reply: 'internal error during delivery; will retry',
          remote: '',
          remoteReply: false,
        })),
      );
    }
    await Promise.allSettled(writes);
    this.finish(message.queueId, recipients.length);
  }

  /** write - record outcomes; on a storage failure, keep retrying (the claims stay held meanwhile). */
  private async write(outcomes: Outcome[]): Promise<void> {
    for (let delay = 100; ; delay = Math.min(delay * 2, 10_000)) {
      try {
        await this.deps.store.recordOutcomes(outcomes);
        return;
      } catch (e) {
        this.deps.trace.error({ err: (e as Error).message, n: outcomes.length }, 'cannot record outcomes; retrying');
        if (!this.running) return; // open() on restart repeats these attempts: none is lost
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  private async quarantine(message: MessageRecord, reason: string): Promise<void> {
    this.deps.trace.error({ qid: message.queueId, reason }, 'message quarantined');
    await this.deps.store
      .quarantine(message.queueId, reason)
      .catch((e) => this.deps.trace.error({ qid: message.queueId, err: (e as Error).message }, 'cannot quarantine'));
  }

  /**
   * outcome - the new state of one recipient after one attempt. Runs once per
   * recipient of every delivery: the outcome and its event are built field by
   * field, in one shape, without spreading objects.
   */
  private outcome(m: MessageRecord, r: RecipientRecord, hop: NextHop, res: RecipientResult, random: () => number = this.random, now = Date.now()): Outcome {
    if (res.heldUntil !== undefined && res.kind === 'deferred' && now < m.receivedAt + this.deps.config.queue.max_lifetime) return this.putBack(m, r, res, now);
    const attempts = r.attempts + 1;
    const tls = attemptTls(hop, res);
    const wants = (kind: 'SUCCESS' | 'FAILURE' | 'DELAY'): boolean => reportWanted(m, r, kind);
    const done = (state: Outcome['state'], report: ReportKind | null | undefined, event: MailEvent): Outcome => ({
      recipientId: r.id,
      queueId: m.queueId,
      prev: { state: r.state, report: r.report },
      attempts,
      lastAttemptAt: now,
      lastReply: res.reply,
      lastStatus: event.status ?? res.status,
      remote: res.remote,
      lastTls: tls,
      state,
      report,
      event,
    });
    // The event: what happened to this recipient on this attempt.
    const event = (name: 'delivered' | 'failed' | 'expired' | 'deferred', report: string | undefined, status = res.status, detail?: string): MailEvent => {
      const e: MailEvent = {
        ts: isoTime(now),
        id: EVENT_IDS[name],
        event: name,
        queue_id: m.queueId,
        message_id: m.messageId,
        sender: m.sender,
        recipient: r.address,
        attempt: attempts,
        state: name,
        remote: res.remote,
        status,
      };
      if (res.remoteReply || res.kind === 'delivered') e.reply = res.reply;
      else e.error = res.reply;
      detail ??= res.possibleDuplicate ? 'possible duplicate: the connection was lost after the message was sent' : undefined;
      if (detail !== undefined) e.detail = detail;
      if (report !== undefined) e.report = report;
      if (hop.kind === 'smtp' || res.tls !== undefined) e.tls = tls?.tls ?? null;
      if (tls?.tls_failure) e.tls_failure = tls.tls_failure;
      return e;
    };
    if (res.kind === 'delivered') {
      let report: ReportKind | null = null;
      if (wants('SUCCESS')) {
        if (hop.kind === 'reject') report = hop.report ?? 'delivered';
        else if (hop.kind !== 'smtp') report = 'delivered';
        else if (res.relayed) report = 'relayed';
      }
      return done('delivered', report, event('delivered', report ?? 'none'));
    }
    if (res.kind === 'failed') {
      const report = wants('FAILURE') ? 'failed' : null;
      return done('failed', report, event('failed', report ?? 'none'));
    }
    const d = afterTemporaryFailure(this.deps.config.queue, m, { attempts, delayNotified: r.delayNotified }, now, random);
    if (d.state === 'expired') {
      const report = wants('FAILURE') ? 'expired' : null;
      const detail = `queue lifetime exceeded; last error: ${res.status} ${res.reply}`.slice(0, 2000);
      return done('expired', report, event('expired', report ?? 'none', '4.4.7', detail));
    }
    const delay = d.delayNotice && wants('DELAY');
    const o = done('deferred', delay ? 'delayed' : undefined, event('deferred', delay ? 'delayed' : undefined));
    o.nextAttemptAt = res.notBefore === undefined ? d.nextAttemptAt : Math.max(d.nextAttemptAt, Math.min(res.notBefore, m.receivedAt + this.deps.config.queue.max_lifetime));
    if (d.delayNotice) o.delayNotified = true;
    return o;
  }

  /**
   * putBack - not attempted (held back by traffic shaping): deferred until
   * `heldUntil` (at most the expiry time), the attempt count unchanged, one
   * `deferred` event without an attempt number.
   */
  private putBack(m: MessageRecord, r: RecipientRecord, res: RecipientResult, now: number): Outcome {
    const e: MailEvent = {
      ts: isoTime(now),
      id: EVENT_IDS.deferred,
      event: 'deferred',
      queue_id: m.queueId,
      message_id: m.messageId,
      sender: m.sender,
      recipient: r.address,
      state: 'deferred',
      remote: res.remote,
      status: res.status,
      error: res.reply,
      detail: 'not attempted: held back by traffic shaping; the attempt count is unchanged',
    };
    return {
      recipientId: r.id,
      queueId: m.queueId,
      prev: { state: r.state, report: r.report },
      attempts: r.attempts,
      lastReply: res.reply,
      lastStatus: res.status,
      remote: res.remote,
      state: 'deferred',
      nextAttemptAt: Math.min(res.heldUntil!, m.receivedAt + this.deps.config.queue.max_lifetime),
      event: e,
    };
  }

  /** finish - a job ended: free its capacity; at the end of a message's pass, make its reports. */
  private finish(queueId: string, n: number): void {
    this.inflight -= n;
    const pass = this.passes.get(queueId);
    if (pass) {
      pass.inflight -= n;
      if (pass.inflight <= 0) {
        this.passes.delete(queueId);
        this.bodyBytes -= pass.bodyBytes;
        this.onPassEnd?.(queueId);
        if (pass.reports) void this.endOfPass(queueId);
      }
    }
    // Due work is announced by the store (onDue) and by the timer; a job's end
    // only matters when the claim loop stopped for want of room.
    if (this.starved && this.inflight < this.maxInflight) {
      this.starved = false;
      this.wake();
    }
  }

  private async endOfPass(queueId: string): Promise<void> {
    try {
      // More of this message is due right now: the pass goes on with the next claim
      // (which carries the reports flag on: what this pass marked is still pending).
      if ((await this.deps.store.countDue(queueId, Date.now())) > 0 || this.passes.has(queueId)) {
        const next = this.passes.get(queueId);
        if (next) next.reports = true;
        else setTimeout(() => void this.endOfPass(queueId), 1000).unref();
        return;
      }
      await this.deps.report(queueId);
    } catch (e) {
      this.deps.trace.error({ qid: queueId, err: (e as Error).stack }, 'report failed; will retry');
      setTimeout(() => void this.endOfPass(queueId), 5000).unref();
    }
  }

  private async reportLeftovers(): Promise<void> {
    if (!this.running || this.sweeping) return;
    this.sweeping = true;
    try {
      for (const qid of await this.deps.store.pendingReports(1000)) {
        if (!this.passes.has(qid)) await this.deps.report(qid);
      }
    } catch (e) {
      this.deps.trace.error({ err: (e as Error).stack }, 'pending reports failed');
    } finally {
      this.sweeping = false;
    }
  }

  /** busy - recipients in flight now (tests and shutdown use it). */
  get busy(): number {
    return this.inflight;
  }

  /** tableSizes - sizes of the in-memory tables, to show they drain (docs/reliability.md). */
  get tableSizes(): { passes: number; jobs: number } {
    return { passes: this.passes.size, jobs: this.jobs.size };
  }

  /** stop - claim nothing more; wait for running jobs until the deadline. */
  async stop(deadlineMs = 20_000): Promise<void> {
    this.running = false;
    if (this.leftovers) clearInterval(this.leftovers);
    this.leftovers = null;
    if (this.poll) clearInterval(this.poll);
    this.poll = null;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const all = Promise.allSettled([...this.jobs]);
    await Promise.race([all, new Promise((r) => setTimeout(r, deadlineMs).unref())]);
  }
}

/** sizeCheck - passes a stored body through and fails it if it is not the size recorded (a truncated file). */
function sizeCheck(message: MessageRecord): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      seen += chunk.length;
      cb(null, chunk);
    },
    flush(cb) {
      if (seen !== message.size) cb(new BodyUnreadable(message.queueId, new Error(`stored body is ${seen} octets, ${message.size} were accepted`)));
      else cb();
    },
  });
}

/**
 * attemptTls - the TLS of one attempt as the event and the recipient record
 * keep it (snake_case, as written); null when nothing is known (no connection
 * was made, or the agent has no TLS: maildir, directory).
 */
export function attemptTls(hop: NextHop, res: RecipientResult): AttemptTls | null {
  if (res.tls === undefined && res.tlsFailure === undefined) return null;
  if (hop.kind !== 'smtp' && hop.kind !== 'lmtp') return null;
  const t = res.tls ?? null;
  const out: AttemptTls = {
    tls: t && { version: t.version, cipher: t.cipher, verified: t.verified, policy: t.policy, policy_domain: t.policyDomain },
  };
  const f = res.tlsFailure;
  if (f) out.tls_failure = { policy: f.policy, policy_domain: f.policyDomain, type: f.type, detail: f.detail.slice(0, 500) };
  return out;
}
