/*
 * queue/queue - the queue layer: the policy of the queue, written once, over
 * any backend (queue/backend: memory, embedded SQLite, PostgreSQL).
 *
 * It owns:
 * - what every change writes to the record: the `received` events of an
 *   insert, the event of each operator action (with who and why), the
 *   quarantine events (invariant 8);
 * - which states each operator action may touch (the guards of its patches:
 *   a recipient that changed meanwhile is left alone, never overwritten);
 * - claims and leases: every claim has a token and a lease; outcomes are
 *   recorded only while their claim holds (a recipient another claim has
 *   taken since is refused, logged, and left to its new holder); the leases
 *   of claims in flight are renewed on a timer; on a shared backend a node
 *   whose renewals fail stops starting deliveries before its leases can run
 *   out (mayDeliver(): it fences itself), so a partition alone never makes
 *   two nodes deliver one recipient;
 * - crash recovery: at open, this node's claims (on a single-node backend:
 *   every claim) become due again; messages the backend found damaged are
 *   quarantined (invariant 7);
 * - the destination summary with holds and redirects merged in.
 * The backend only stores, fetches and changes rows atomically.
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { FINAL_STATES, isoTime, makeEvent, operatorDetail, type MailEvent, type RecipientState } from '../log/events.js';
import type { Trace } from '../log/trace.js';
import { verdictFields } from '../checks/verdict-fields.js';
import type { Change, NodeInfo, QueueBackend, RecipientFields, RecipientPatch, RecipientQuery } from './backend.js';
import type {
  ActionResult,
  BodyWriter,
  Claim,
  ClaimOptions,
  DestinationOverride,
  DestinationSummary,
  InsertOptions,
  ListFilter,
  MessageRecord,
  MessageStates,
  NewMessage,
  Operator,
  Outcome,
  QueueStore,
  RecipientRecord,
  Target,
  TrackQuery,
  TrackResult,
} from './store.js';

/** Recipients read or changed per page by operator actions and recovery (memory stays bounded). */
const PAGE = 2000;
/** States an operator's retry, suspend and resume apply to. */
const WAITING: readonly RecipientState[] = ['queued', 'deferred'];
const OPEN: readonly RecipientState[] = ['queued', 'deferred', 'delivering'];
/** States an operator may remove a recipient from (never one in flight: its attempt decides). */
const REMOVABLE: readonly RecipientState[] = ['queued', 'deferred', 'quarantined'];

export interface QueueOptions {
  /** This node's name: the prefix of its claim tokens ("local" on a single node). */
  node?: string;
  /** How long a claim lasts unless renewed (ms). */
  leaseMs?: number;
  /** Crash recovery at open (false for the CLI opening the queue beside a running server). */
  recover?: boolean;
  trace?: Pick<Trace, 'warn' | 'error'>;
}

export class Queue implements QueueStore {
  readonly node: string;
  readonly leaseMs: number;
  private readonly recover: boolean;
  private readonly trace: Pick<Trace, 'warn' | 'error'> | null;
  /** Claims this process holds (their leases are renewed). */
  private readonly live = new Set<string>();
  private claimSeq = 0;
  private readonly tokenBase = randomBytes(4).toString('hex');
  private timer: NodeJS.Timeout | null = null;
  /** When the last renewal that succeeded started (its leases run from then at the latest). */
  private renewedAt = Date.now();
  private readonly startedAt = Date.now();
  private refusedCount = 0;

  constructor(
    readonly backend: QueueBackend,
    options: QueueOptions = {},
  ) {
    this.node = options.node ?? 'local';
    this.leaseMs = options.leaseMs ?? 120_000;
    this.recover = options.recover ?? true;
    this.trace = options.trace ?? null;
  }

  /** open - open the backend; recover this node's claims and quarantine damaged messages. */
  async open(): Promise<void> {
    const report = await this.backend.open({ recover: this.recover });
    if (!this.recover) return;
    if (this.backend.shared && this.backend.nodes) {
      const twin = (await this.backend.nodes(this.leaseMs)).find((n) => n.name === this.node && n.alive);
      if (twin) {
        await this.backend.close();
        throw new Error(
          `another node named "${this.node}" is alive (heartbeat ${new Date(twin.heartbeatAt).toISOString()}); set a unique [queue] node_name, or wait ${Math.ceil(this.leaseMs / 1000)} s after it stopped`,
        );
      }
    }
    await this.recoverClaims();
    for (const d of report.damaged) await this.quarantine(d.queueId, d.reason);
    await this.renewNow();
    if (this.timer) clearInterval(this.timer);
    this.timer = setInterval(() => void this.renewNow(), Math.max(50, Math.floor(this.leaseMs / 4)));
    this.timer.unref();
  }

  async close(): Promise<void> {
    const opened = this.timer !== null;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    // A clean stop ends this node's heartbeat: its claims were given back or are due again at its next start.
    if (opened && this.backend.leave) await this.backend.leave(this.node).catch((e) => this.trace?.warn({ err: (e as Error).message }, 'cannot end the heartbeat'));
    await this.backend.close();
  }

  /**
   * recoverClaims - claims held when this node last stopped are due again now
   * (a lost claim is exactly a due recipient). On a shared backend only this
   * node's: the others' claims end with their leases.
   */
  private async recoverClaims(): Promise<void> {
    const now = Date.now();
    const claimPrefix = this.backend.shared ? `${this.node}:` : undefined;
    for (let after = 0; ; ) {
      const rows = await this.backend.selectRecipients({ states: ['delivering'], ...(claimPrefix ? { claimPrefix } : {}), afterId: after, limit: PAGE });
      if (rows.length === 0) return;
      await this.backend.apply({
        patches: rows.map((r) => ({ id: r.id, queueId: r.queueId, states: ['delivering'], set: { state: r.attempts === 0 ? 'queued' : 'deferred', nextAttemptAt: now } })),
        wake: true,
      });
      after = rows[rows.length - 1]!.id;
    }
  }

  /** renewNow - heartbeat and lease renewal (on a timer, every quarter lease); a success moves the fence forward. */
  async renewNow(): Promise<void> {
    const started = Date.now();
    try {
      await this.backend.heartbeat?.(this.node, this.startedAt);
      if (this.live.size) await this.backend.renew([...this.live], this.leaseMs);
      this.renewedAt = started;
    } catch (e) {
      this.trace?.warn({ err: (e as Error).message, live: this.live.size }, 'cannot renew claims');
    }
  }

  /**
   * mayDeliver - may a delivery start now? On a shared backend, only while
   * the last renewal is recent enough that this node's leases still have a
   * quarter of their time left (a node cut off from the database stops
   * before another node may take its recipients over).
   */
  mayDeliver(): boolean {
    return !this.backend.shared || Date.now() < this.renewedAt + (this.leaseMs * 3) / 4;
  }

  /** endClaim - every job of a claim has ended: its lease need not be renewed any more. */
  endClaim(token: string): void {
    this.live.delete(token);
  }

  /** Outcomes refused because another claim had taken their recipient (for metrics and tests). */
  get refusedOutcomes(): number {
    return this.refusedCount;
  }

  private newToken(): string {
    return `${this.node}:${this.tokenBase}.${(++this.claimSeq).toString(36)}`;
  }

  createBody(queueId: string): BodyWriter {
    return this.backend.createBody(queueId);
  }

  async insert(message: NewMessage, body: BodyWriter, options: InsertOptions = {}): Promise<Claim | null> {
    const ts = isoTime(message.receivedAt);
    const events: MailEvent[] = [];
    // The inbound checks' verdict, as fields (read from the client text, as rows.toEvent does when reading back).
    const verdict = verdictFields(message.client);
    for (const r of message.recipients) {
      events.push({ ts, id: 1000, event: 'received', queue_id: message.queueId, message_id: message.messageId, sender: message.sender, recipient: r.address, state: 'queued', remote: message.client, ...verdict });
    }
    if (options.events) for (const e of options.events) events.push(e);
    const token = options.claimLeaseMs === undefined ? null : this.newToken();
    const res = await this.backend.insert(message, body, {
      events,
      ...(token ? { claim: { token, leaseMs: options.claimLeaseMs! } } : {}),
      ...(options.clearReports ? { clearReports: options.clearReports } : {}),
    });
    if (!token || res.claimed.length === 0) return null;
    this.live.add(token);
    const { recipients: _r, ...meta } = message;
    const claim: Claim = { token, message: { ...meta, recipientCount: message.recipients.length, quarantine: '' }, recipients: res.claimed };
    if (res.body) claim.body = res.body;
    return claim;
  }

  readBody(queueId: string): Promise<Readable> {
    return this.backend.readBody(queueId);
  }

  readBodyBuffer(queueId: string): Promise<Buffer | null> {
    return this.backend.readBodyBuffer(queueId);
  }

  async claimDue(now: number, options: ClaimOptions): Promise<Claim[]> {
    const token = this.newToken();
    const claims = await this.backend.claimDue(now, options.maxRecipients, { token, leaseMs: options.leaseMs ?? this.leaseMs });
    if (claims.length) this.live.add(token);
    return claims;
  }

  nextDueAt(): Promise<number | null> {
    return this.backend.nextDueAt();
  }

  countDue(queueId: string, now: number): Promise<number> {
    return this.backend.countDue(queueId, now);
  }

  /**
   * recordOutcomes - write each recipient's new state and its event, in one
   * transaction. An outcome whose claim another claim has since taken over is
   * refused (its recipient belongs to the new holder): logged, not written.
   */
  async recordOutcomes(outcomes: Outcome[]): Promise<{ refused: number[] }> {
    if (outcomes.length === 0) return { refused: [] };
    let wake = false;
    const patches: RecipientPatch[] = new Array(outcomes.length);
    for (let i = 0; i < outcomes.length; i++) {
      const o = outcomes[i]!;
      const set: RecipientFields = { state: o.state, attempts: o.attempts };
      if (o.nextAttemptAt !== undefined) set.nextAttemptAt = o.nextAttemptAt;
      if (o.lastAttemptAt !== undefined) set.lastAttemptAt = o.lastAttemptAt;
      if (o.lastReply !== undefined) set.lastReply = o.lastReply;
      if (o.lastStatus !== undefined) set.lastStatus = o.lastStatus;
      if (o.remote !== undefined) set.remote = o.remote;
      if (o.lastTls !== undefined) set.lastTls = o.lastTls;
      if (o.report !== undefined) set.report = o.report;
      if (o.delayNotified !== undefined) set.delayNotified = o.delayNotified;
      if (o.suspended !== undefined) set.suspended = o.suspended;
      const p: RecipientPatch = { id: o.recipientId, queueId: o.queueId, set, event: o.event };
      if (o.claim !== undefined) p.claim = o.claim;
      if (o.prev !== undefined) p.prev = o.prev;
      patches[i] = p;
      if (o.state === 'queued' || o.state === 'deferred') wake = true;
    }
    const res = await this.backend.apply({ patches, wake });
    if (res.refused.length) {
      this.refusedCount += res.refused.length;
      const ids = new Set(res.refused);
      for (const o of outcomes) {
        if (!ids.has(o.recipientId)) continue;
        this.trace?.warn({ qid: o.queueId, rcpt: o.event.recipient, claim: o.claim, outcome: o.state }, 'late outcome refused: another claim holds the recipient now');
      }
    }
    return res;
  }

  getMessage(queueId: string): Promise<MessageRecord | null> {
    return this.backend.getMessage(queueId);
  }

  /** pages - every recipient matching `q`, a page at a time. */
  private async *pages(q: Omit<RecipientQuery, 'afterId' | 'limit'>): AsyncIterable<RecipientRecord[]> {
    for (let after = 0; ; ) {
      const rows = await this.backend.selectRecipients({ ...q, afterId: after, limit: PAGE });
      if (rows.length === 0) return;
      yield rows;
      after = rows[rows.length - 1]!.id;
      if (rows.length < PAGE) return;
    }
  }

  async getRecipients(queueId: string): Promise<RecipientRecord[]> {
    const out: RecipientRecord[] = [];
    for await (const page of this.pages({ queueId })) for (const r of page) out.push(r);
    return out;
  }

  pendingReports(limit: number): Promise<string[]> {
    return this.backend.pendingReports(limit);
  }

  async *reportRecipients(queueId: string): AsyncIterable<RecipientRecord> {
    for await (const page of this.pages({ queueId, withReport: true })) yield* page;
  }

  /** quarantine - set aside a message that cannot be read: every unfinished recipient -> quarantined, with an event each. */
  async quarantine(queueId: string, reason: string): Promise<void> {
    const m = await this.backend.getMessage(queueId);
    const head = { message_id: m?.messageId ?? '', sender: m?.sender ?? '' };
    let first = true;
    // Every unfinished recipient, whatever its state says (a damaged row's state may be no known one).
    for await (const page of this.pages({ queueId })) {
      await this.backend.apply({
        ...(first ? { quarantine: { queueId, reason } } : {}),
        patches: page.filter((r) => !FINAL_STATES.has(r.state) && r.state !== 'quarantined').map((r) => ({
          id: r.id,
          queueId,
          set: { state: 'quarantined' },
          event: makeEvent('quarantined', { queue_id: queueId, ...head, recipient: r.address, state: 'quarantined', error: reason }),
        })),
      });
      first = false;
    }
    if (first) await this.backend.apply({ quarantine: { queueId, reason } });
  }

  /** summary - the queue by destination, with holds and redirects merged in. */
  async summary(): Promise<DestinationSummary[]> {
    const out = await this.backend.summary();
    const by = new Map(out.map((d) => [d.destination, d]));
    for (const o of await this.backend.overrides()) {
      if (o.kind === 'down') continue; // a next hop's back-off, not a destination's setting
      let d = by.get(o.destination);
      if (!d) {
        d = { destination: o.destination, recipients: 0, messages: 0, oldest: 0, deferred: 0, suspended: 0, lastReply: '' };
        by.set(o.destination, d);
        out.push(d);
      }
      if (o.kind === 'hold') d.held = true;
      else d.redirect = o.to;
    }
    return out;
  }

  list(filter: ListFilter): Promise<MessageRecord[]> {
    return this.backend.list(filter);
  }

  durableEventSeq(): number {
    return this.backend.durableEventSeq();
  }

  onEvents(listener: (events: MailEvent[]) => void): void {
    this.backend.onEvents(listener);
  }

  eventsAfter(seq: number, limit: number, scope: 'node' | 'all' = 'node'): Promise<MailEvent[]> {
    return this.backend.eventsAfter(seq, limit, scope);
  }

  async appendEvents(events: MailEvent[]): Promise<void> {
    if (events.length) await this.backend.apply({ events });
  }

  onDue(listener: () => void): void {
    this.backend.onWake(listener);
  }

  /* Operator actions: each recipient's change and its event in one transaction per page. */

  /** destinationEvent - the one event of an action on a whole destination. */
  private destinationEvent(event: 'retry_requested' | 'suspended' | 'resumed' | 'redirected', destination: string, op: Operator, what: string): MailEvent {
    return makeEvent(event, { queue_id: '', message_id: '', sender: '', detail: operatorDetail(op, `destination ${destination} ${what}`) });
  }

  /**
   * onMessage - apply `change` to the recipients of one message in `states`
   * (and `suspended`, when given): `change` returns the new fields and the event.
   */
  private async onMessage(
    queueId: string,
    states: readonly RecipientState[],
    suspended: boolean | undefined,
    change: (r: RecipientRecord, m: MessageRecord) => { set: RecipientFields; event: MailEvent },
    extra: Omit<Change, 'patches'> = {},
  ): Promise<ActionResult> {
    const res: ActionResult = { changed: 0, inFlight: 0, queueIds: [] };
    const m = await this.backend.getMessage(queueId);
    if (!m) return res;
    let first = true;
    for await (const page of this.pages({ queueId, states, ...(suspended === undefined ? {} : { suspended }) })) {
      const patches = page.map((r): RecipientPatch => ({ id: r.id, queueId, states, ...change(r, m) }));
      const done = await this.backend.apply({ ...(first ? extra : {}), patches, ...(extra.wake ? { wake: true } : {}) });
      res.changed += patches.length - done.refused.length;
      first = false;
    }
    if (first && (extra.quarantine || extra.events)) await this.backend.apply(extra);
    res.inFlight = await this.backend.countRecipients({ queueId, states: ['delivering'] });
    if (res.changed) res.queueIds.push(queueId);
    return res;
  }

  private static head(r: RecipientRecord, m: MessageRecord, op: Operator, state: string, what = '') {
    return { queue_id: r.queueId, message_id: m.messageId, sender: m.sender, recipient: r.address, state, detail: operatorDetail(op, what) };
  }

  /** retryNow - make queued/deferred recipients due now (an event each; one event for a whole destination). */
  async retryNow(target: Target, op: Operator): Promise<ActionResult> {
    const now = Date.now();
    if ('queueId' in target) {
      return this.onMessage(target.queueId, WAITING, undefined, (r, m) => ({ set: { nextAttemptAt: now }, event: makeEvent('retry_requested', Queue.head(r, m, op, r.state)) }), { wake: true });
    }
    const destination = target.destination;
    let changed = 0;
    for await (const page of this.pages({ destination, states: WAITING })) {
      const patches = page.filter((r) => r.nextAttemptAt > now).map((r): RecipientPatch => ({ id: r.id, queueId: r.queueId, states: WAITING, set: { nextAttemptAt: now } }));
      if (patches.length) changed += patches.length - (await this.backend.apply({ patches, wake: true })).refused.length;
    }
    await this.backend.apply({ events: [this.destinationEvent('retry_requested', destination, op, `retried (${changed} recipient(s))`)], wake: changed > 0 });
    const inFlight = await this.backend.countRecipients({ destination, states: ['delivering'] });
    return { changed, inFlight, queueIds: [] };
  }

  /** suspend - hold a message's recipients (an event each), or a whole destination (one overrides row, one event). */
  async suspend(target: Target, op: Operator): Promise<ActionResult> {
    if ('destination' in target) return this.hold(target.destination, op, true);
    return this.onMessage(target.queueId, OPEN, false, (r, m) => ({ set: { suspended: true }, event: makeEvent('suspended', Queue.head(r, m, op, r.state)) }));
  }

  /** resume - release a hold made by suspend(). */
  async resume(target: Target, op: Operator): Promise<ActionResult> {
    if ('destination' in target) return this.hold(target.destination, op, false);
    return this.onMessage(target.queueId, OPEN, true, (r, m) => ({ set: { suspended: false }, event: makeEvent('resumed', Queue.head(r, m, op, r.state)) }), { wake: true });
  }

  /** hold - put a whole destination on hold or take it off: one row, never a rewrite of its recipients. */
  private async hold(destination: string, op: Operator, on: boolean): Promise<ActionResult> {
    const exists = (await this.backend.overrides()).some((o) => o.destination === destination && o.kind === 'hold');
    if (exists === on) return { changed: 0, inFlight: 0, queueIds: [] };
    const open = await this.backend.countRecipients({ destination, states: OPEN });
    const row: DestinationOverride = { destination, kind: 'hold', to: '', by: op.who, reason: op.reason, at: Date.now() };
    await this.backend.apply({
      overrides: [on ? { put: row } : { remove: { destination, kind: 'hold' } }],
      events: [this.destinationEvent(on ? 'suspended' : 'resumed', destination, op, on ? `held (${open} recipient(s))` : `released from hold (${open} recipient(s))`)],
      wake: !on,
    });
    // A hold is a change even for an empty destination: count at least 1.
    return { changed: Math.max(open, 1), inFlight: 0, queueIds: [] };
  }

  /**
   * remove - an operator removes a message's unfinished recipients (never
   * one in flight): state removed, an event each; `report` says per recipient
   * whether its sender gets a failure report.
   */
  async remove(queueId: string, op: Operator, report: false | ((m: MessageRecord, r: RecipientRecord) => boolean)): Promise<ActionResult> {
    const text = `removed from the queue by the postmaster (${op.who}): ${op.reason || 'no reason given'}`.slice(0, 1000);
    return this.onMessage(queueId, REMOVABLE, undefined, (r, m) => {
      const wanted = report !== false && report(m, r);
      const set: RecipientFields = { state: 'removed' };
      if (wanted) Object.assign(set, { report: 'failed', lastReply: text, lastStatus: '5.0.0' });
      const event = makeEvent('removed', Queue.head(r, m, op, 'removed', wanted ? 'with a failure report to the sender' : 'without report'));
      event.report = wanted ? 'failed' : 'none';
      return { set, event };
    });
  }

  /** release - a quarantined message back into the queue: its quarantined recipients -> queued, due now. */
  async release(queueId: string, op: Operator): Promise<ActionResult> {
    const now = Date.now();
    return this.onMessage(queueId, ['quarantined'], undefined, (r, m) => ({ set: { state: 'queued', nextAttemptAt: now }, event: makeEvent('released', Queue.head(r, m, op, 'queued')) }), {
      quarantine: { queueId, reason: '' },
      wake: true,
    });
  }

  /** redirect - send a destination's mail to host:port from now on (`to` null removes the redirect). */
  async redirect(destination: string, to: string | null, op: Operator): Promise<void> {
    if (to === null) {
      const exists = (await this.backend.overrides()).some((o) => o.destination === destination && o.kind === 'redirect');
      if (!exists) return;
      await this.backend.apply({ overrides: [{ remove: { destination, kind: 'redirect' } }], events: [this.destinationEvent('redirected', destination, op, 'no longer redirected')] });
      return;
    }
    const row: DestinationOverride = { destination, kind: 'redirect', to, by: op.who, reason: op.reason, at: Date.now() };
    await this.backend.apply({ overrides: [{ put: row }], events: [this.destinationEvent('redirected', destination, op, `redirected to ${to}`)] });
  }

  overrides(): Promise<DestinationOverride[]> {
    return this.backend.overrides();
  }

  /** markDown - a dead-destination back-off for every node of the cluster (no event: no recipient changes). */
  async markDown(destination: string, until: number | null, by: string, error: string): Promise<void> {
    if (until === null) {
      await this.backend.apply({ overrides: [{ remove: { destination, kind: 'down' } }] }, { durable: false });
      return;
    }
    await this.backend.apply({ overrides: [{ put: { destination, kind: 'down', to: '', by, reason: error.slice(0, 500), at: until } }] }, { durable: false });
  }

  recipientPage(queueId: string, afterId: number, limit: number): Promise<RecipientRecord[]> {
    return this.backend.selectRecipients({ queueId, afterId, limit });
  }

  scanRecipients(afterId: number, limit: number): Promise<RecipientRecord[]> {
    return this.backend.selectRecipients({ afterId, limit });
  }

  messageStates(queueIds: string[]): Promise<MessageStates[]> {
    return this.backend.messageStates(queueIds);
  }

  countByState(): Promise<Partial<Record<RecipientState, number>>> {
    return this.backend.countByState();
  }

  eventsOf(queueId: string, afterSeq: number, limit: number): Promise<MailEvent[]> {
    return this.backend.eventsOf(queueId, afterSeq, limit);
  }

  track(query: TrackQuery): Promise<TrackResult> {
    return this.backend.track(query);
  }

  pruneEvents(before: string, maxSeq: number, limit: number): Promise<number> {
    return this.backend.pruneEvents(before, maxSeq, limit);
  }

  /** nodes - the nodes sharing this queue (a single node: this one). */
  async nodes(): Promise<NodeInfo[]> {
    if (this.backend.nodes) return this.backend.nodes(this.leaseMs);
    const counts = await this.backend.countByState();
    return [{ name: this.node, heartbeatAt: Date.now(), startedAt: this.startedAt, inFlight: counts.delivering ?? 0, alive: true }];
  }
}
