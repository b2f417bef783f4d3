/*
 * queue/memory-store - a QueueStore held in memory, for fast unit tests of the
 * scheduler, agents and reports. It keeps the same invariants as the embedded
 * store (the contract suite runs against both) except durability, which it
 * cannot have; `failNext` injects a storage failure for tests.
 */
import { Readable } from 'node:stream';
import { FINAL_STATES, makeEvent, operatorDetail, type MailEvent, type RecipientState } from '../log/events.js';
import { newRecipientRecord } from './store.js';
import type {
  ActionResult,
  DestinationOverride,
  MessageStates,
  Operator,
  Target,
  TrackQuery,
  TrackResult,
  BodyWriter,
  Claim,
  ClaimOptions,
  DestinationSummary,
  InsertOptions,
  ListFilter,
  MessageRecord,
  NewMessage,
  Outcome,
  QueueStore,
  RecipientRecord,
} from './store.js';

class MemoryBody implements BodyWriter {
  chunks: Buffer[] = [];
  size = 0;
  aborted = false;
  constructor(readonly queueId: string) {}
  async write(chunk: Buffer): Promise<void> {
    if (this.aborted) throw new Error('body writer already aborted');
    this.chunks.push(chunk);
    this.size += chunk.length;
  }
  async abort(): Promise<void> {
    this.aborted = true;
    this.chunks = [];
  }
}

interface Entry {
  message: MessageRecord;
  body: Buffer;
  recipients: RecipientRecord[];
}

export class MemoryStore implements QueueStore {
  private messages = new Map<string, Entry>();
  private recipients = new Map<number, RecipientRecord>();
  private events: MailEvent[] = [];
  private nextId = 1;
  private seq = 0;
  private listeners: Array<() => void> = [];
  private overrideMap = new Map<string, DestinationOverride>();
  /** Test seam: the next write fails with this error. */
  failNext: Error | null = null;

  async open(): Promise<void> {
    for (const r of this.recipients.values()) {
      if (r.state === 'delivering') {
        r.state = r.attempts === 0 ? 'queued' : 'deferred';
        r.nextAttemptAt = Date.now();
      }
    }
  }
  async close(): Promise<void> {}

  private fault(): void {
    const e = this.failNext;
    if (e) {
      this.failNext = null;
      throw e;
    }
  }

  createBody(queueId: string): BodyWriter {
    return new MemoryBody(queueId);
  }

  async insert(message: NewMessage, body: BodyWriter, options: InsertOptions = {}): Promise<Claim | null> {
    if (!(body instanceof MemoryBody) || body.aborted) throw new Error('body writer does not belong to this store');
    this.fault();
    const { recipients, ...meta } = message;
    const entry: Entry = { message: { ...meta, recipientCount: recipients.length, quarantine: '' }, body: Buffer.concat(body.chunks), recipients: [] };
    let claim: Claim | null = null;
    for (const r of recipients) {
      const claimed = options.claimLeaseMs !== undefined && !this.overrideMap.has(`hold ${r.destination}`);
      const rec = newRecipientRecord(this.nextId++, message.queueId, r, claimed ? 'delivering' : 'queued', message.receivedAt);
      entry.recipients.push(rec);
      this.recipients.set(rec.id, rec);
      if (claimed) {
        claim ??= { message: { ...entry.message }, recipients: [], body: entry.body };
        claim.recipients.push({ ...rec });
      }
      this.pushEvent({
        ts: new Date(message.receivedAt).toISOString(),
        id: 1000,
        event: 'received',
        queue_id: message.queueId,
        message_id: message.messageId,
        sender: message.sender,
        recipient: r.address,
        state: 'queued',
        remote: message.client,
      });
    }
    this.messages.set(message.queueId, entry);
    for (const e of options.events ?? []) this.pushEvent(e);
    const touched = new Set<string>();
    for (const id of options.clearReports ?? []) {
      const r = this.recipients.get(id);
      if (r) {
        r.report = null;
        touched.add(r.queueId);
      }
    }
    for (const q of touched) this.finishIfDone(q);
    if (!claim || claim.recipients.length < recipients.length) this.emit();
    return claim;
  }

  private pushEvent(e: MailEvent): void {
    const withSeq = { ...e, seq: ++this.seq };
    this.events.push(withSeq);
    for (const l of this.eventListeners) l([withSeq]);
  }

  private readonly eventListeners: Array<(events: MailEvent[]) => void> = [];

  onEvents(listener: (events: MailEvent[]) => void): void {
    this.eventListeners.push(listener);
  }

  private finishIfDone(queueId: string): void {
    const entry = this.messages.get(queueId);
    if (!entry) return;
    if (entry.recipients.every((r) => FINAL_STATES.has(r.state) && r.report === null)) {
      this.messages.delete(queueId);
      for (const r of entry.recipients) this.recipients.delete(r.id);
    }
  }

  async readBodyBuffer(queueId: string): Promise<Buffer | null> {
    const entry = this.messages.get(queueId);
    if (!entry) throw new Error(`no message ${queueId} in the queue`);
    return entry.body;
  }

  async readBody(queueId: string): Promise<Readable> {
    const entry = this.messages.get(queueId);
    if (!entry) throw new Error(`no message ${queueId} in the queue`);
    return Readable.from([entry.body]);
  }

  async claimDue(now: number, options: ClaimOptions): Promise<Claim[]> {
    const due = [...this.recipients.values()]
      .filter((r) => (r.state === 'queued' || r.state === 'deferred') && !r.suspended && r.nextAttemptAt <= now && !this.held(r.destination))
      .sort((a, b) => a.nextAttemptAt - b.nextAttemptAt || a.id - b.id)
      .slice(0, options.maxRecipients);
    const claims = new Map<string, Claim>();
    for (const r of due) {
      r.state = 'delivering';
      const entry = this.messages.get(r.queueId)!;
      let c = claims.get(r.queueId);
      if (!c) claims.set(r.queueId, (c = { message: { ...entry.message }, recipients: [] }));
      c.recipients.push({ ...r });
    }
    return [...claims.values()];
  }

  async nextDueAt(): Promise<number | null> {
    let min: number | null = null;
    for (const r of this.recipients.values()) {
      if ((r.state === 'queued' || r.state === 'deferred') && !r.suspended && !this.held(r.destination) && (min === null || r.nextAttemptAt < min)) min = r.nextAttemptAt;
    }
    return min;
  }

  async countDue(queueId: string, now: number): Promise<number> {
    const entry = this.messages.get(queueId);
    if (!entry) return 0;
    return entry.recipients.filter((r) => (r.state === 'queued' || r.state === 'deferred') && !r.suspended && r.nextAttemptAt <= now && !this.held(r.destination)).length;
  }

  async recordOutcomes(outcomes: Outcome[]): Promise<void> {
    this.fault();
    for (const o of outcomes) {
      if (!this.recipients.has(o.recipientId)) throw new Error(`recipient ${o.recipientId} of ${o.queueId} is not in the queue`);
    }
    const touched = new Set<string>();
    let due = false;
    for (const o of outcomes) {
      const r = this.recipients.get(o.recipientId)!;
      r.state = o.state;
      r.attempts = o.attempts;
      if (o.nextAttemptAt !== undefined) r.nextAttemptAt = o.nextAttemptAt;
      if (o.lastAttemptAt !== undefined) r.lastAttemptAt = o.lastAttemptAt;
      if (o.lastReply !== undefined) r.lastReply = o.lastReply;
      if (o.lastStatus !== undefined) r.lastStatus = o.lastStatus;
      if (o.remote !== undefined) r.remote = o.remote;
      if (o.report !== undefined) r.report = o.report;
      if (o.delayNotified !== undefined) r.delayNotified = o.delayNotified;
      if (o.suspended !== undefined) r.suspended = o.suspended;
      this.pushEvent(o.event);
      touched.add(r.queueId);
      if (o.state === 'queued' || o.state === 'deferred') due = true;
    }
    for (const q of touched) this.finishIfDone(q);
    if (due) this.emit();
  }

  async getMessage(queueId: string): Promise<MessageRecord | null> {
    const e = this.messages.get(queueId);
    return e ? { ...e.message } : null;
  }

  async getRecipients(queueId: string): Promise<RecipientRecord[]> {
    return (this.messages.get(queueId)?.recipients ?? []).map((r) => ({ ...r }));
  }

  async pendingReports(limit: number): Promise<string[]> {
    const out: string[] = [];
    for (const [qid, e] of this.messages) {
      if (out.length >= limit) break;
      if (e.recipients.some((r) => r.report !== null) && !e.recipients.some((r) => r.state === 'delivering')) out.push(qid);
    }
    return out;
  }

  async *reportRecipients(queueId: string): AsyncIterable<RecipientRecord> {
    for (const r of this.messages.get(queueId)?.recipients ?? []) if (r.report !== null) yield { ...r };
  }

  async quarantine(queueId: string, reason: string, event: (r: RecipientRecord) => MailEvent): Promise<void> {
    const e = this.messages.get(queueId);
    if (!e) return;
    e.message.quarantine = reason;
    for (const r of e.recipients) {
      if (FINAL_STATES.has(r.state) || r.state === 'quarantined') continue;
      r.state = 'quarantined';
      this.pushEvent(event({ ...r }));
    }
  }

  async summary(): Promise<DestinationSummary[]> {
    const by = new Map<string, DestinationSummary & { qids: Set<string>; lastAt: number }>();
    for (const e of this.messages.values()) {
      for (const r of e.recipients) {
        if (FINAL_STATES.has(r.state)) continue;
        let s = by.get(r.destination);
        if (!s) by.set(r.destination, (s = { destination: r.destination, recipients: 0, messages: 0, oldest: Infinity, deferred: 0, suspended: 0, lastReply: '', qids: new Set(), lastAt: -1 }));
        s.recipients++;
        s.qids.add(r.queueId);
        s.oldest = Math.min(s.oldest, e.message.receivedAt);
        if (r.state === 'deferred') s.deferred++;
        if (r.suspended) s.suspended++;
        if (r.lastReply && (r.lastAttemptAt ?? 0) > s.lastAt) {
          s.lastAt = r.lastAttemptAt ?? 0;
          s.lastReply = r.lastReply;
        }
      }
    }
    const out: DestinationSummary[] = [...by.values()]
      .map(({ qids, lastAt: _lastAt, ...s }) => ({ ...s, messages: qids.size }))
      .sort((a, b) => b.recipients - a.recipients);
    const index = new Map(out.map((d) => [d.destination, d]));
    for (const o of this.overrideMap.values()) {
      let d = index.get(o.destination);
      if (!d) {
        d = { destination: o.destination, recipients: 0, messages: 0, oldest: 0, deferred: 0, suspended: 0, lastReply: '' };
        index.set(o.destination, d);
        out.push(d);
      }
      if (o.kind === 'hold') d.held = true;
      else d.redirect = o.to;
    }
    return out;
  }

  async list(filter: ListFilter): Promise<MessageRecord[]> {
    const out: MessageRecord[] = [];
    const ids = [...this.messages.keys()].sort();
    for (const qid of ids) {
      if (filter.after && qid <= filter.after) continue;
      const e = this.messages.get(qid)!;
      const m = e.message;
      if (filter.sender !== undefined && m.sender !== filter.sender) continue;
      if (filter.messageId && m.messageId.replace(/^<|>$/g, '') !== filter.messageId.replace(/^<|>$/g, '')) continue;
      if (filter.olderThan !== undefined && m.receivedAt > Date.now() - filter.olderThan) continue;
      if (filter.quarantined && !m.quarantine) continue;
      if (
        (filter.destination || filter.state || filter.recipient) &&
        !e.recipients.some(
          (r) =>
            (!filter.destination || r.destination === filter.destination) &&
            (!filter.state || r.state === filter.state) &&
            (!filter.recipient || r.address === filter.recipient),
        )
      )
        continue;
      out.push({ ...m });
      if (out.length >= filter.limit) break;
    }
    return out;
  }

  durableEventSeq(): number {
    return this.seq;
  }

  async eventsAfter(seq: number, limit: number): Promise<MailEvent[]> {
    return this.events.filter((e) => (e.seq ?? 0) > seq).slice(0, limit);
  }

  async appendEvents(events: MailEvent[]): Promise<void> {
    this.fault();
    for (const e of events) this.pushEvent(e);
  }

  private destinationEvent(event: 'retry_requested' | 'suspended' | 'resumed' | 'redirected', destination: string, op: Operator, what: string): void {
    this.pushEvent(makeEvent(event, { queue_id: '', message_id: '', sender: '', detail: operatorDetail(op, `destination ${destination} ${what}`) }));
  }

  /** onMessage - apply `change` to the recipients of one message that `pick` selects. */
  private onMessage(queueId: string, pick: (r: RecipientRecord) => boolean, change: (r: RecipientRecord, m: MessageRecord) => MailEvent): ActionResult {
    this.fault();
    const e = this.messages.get(queueId);
    const res: ActionResult = { changed: 0, inFlight: 0, queueIds: [] };
    if (!e) return res;
    for (const r of e.recipients) {
      if (!pick(r)) continue;
      this.pushEvent(change(r, e.message));
      res.changed++;
    }
    res.inFlight = e.recipients.filter((r) => r.state === 'delivering').length;
    if (res.changed) res.queueIds.push(queueId);
    return res;
  }

  private static head(r: RecipientRecord, m: MessageRecord, op: Operator, state: string, what = '') {
    return { queue_id: r.queueId, message_id: m.messageId, sender: m.sender, recipient: r.address, state, detail: operatorDetail(op, what) };
  }

  async retryNow(target: Target, op: Operator): Promise<ActionResult> {
    const now = Date.now();
    let res: ActionResult;
    if ('destination' in target) {
      this.fault();
      res = { changed: 0, inFlight: 0, queueIds: [] };
      for (const r of this.recipients.values()) {
        if (r.destination !== target.destination) continue;
        if (r.state === 'delivering') res.inFlight++;
        if ((r.state === 'queued' || r.state === 'deferred') && r.nextAttemptAt > now) {
          r.nextAttemptAt = now;
          res.changed++;
        }
      }
      this.destinationEvent('retry_requested', target.destination, op, `retried (${res.changed} recipient(s))`);
    } else {
      res = this.onMessage(
        target.queueId,
        (r) => r.state === 'queued' || r.state === 'deferred',
        (r, m) => {
          r.nextAttemptAt = now;
          return makeEvent('retry_requested', MemoryStore.head(r, m, op, r.state));
        },
      );
    }
    if (res.changed) this.emit();
    return res;
  }

  async suspend(target: Target, op: Operator): Promise<ActionResult> {
    if ('destination' in target) return this.hold(target.destination, op, true);
    return this.onMessage(
      target.queueId,
      (r) => !r.suspended && (r.state === 'queued' || r.state === 'deferred' || r.state === 'delivering'),
      (r, m) => {
        r.suspended = true;
        return makeEvent('suspended', MemoryStore.head(r, m, op, r.state));
      },
    );
  }

  async resume(target: Target, op: Operator): Promise<ActionResult> {
    const res =
      'destination' in target
        ? this.hold(target.destination, op, false)
        : this.onMessage(
            target.queueId,
            (r) => r.suspended && (r.state === 'queued' || r.state === 'deferred' || r.state === 'delivering'),
            (r, m) => {
              r.suspended = false;
              return makeEvent('resumed', MemoryStore.head(r, m, op, r.state));
            },
          );
    if (res.changed) this.emit();
    return res;
  }

  private hold(destination: string, op: Operator, on: boolean): ActionResult {
    this.fault();
    const key = `hold ${destination}`;
    if (this.overrideMap.has(key) === on) return { changed: 0, inFlight: 0, queueIds: [] };
    let open = 0;
    for (const r of this.recipients.values()) if (r.destination === destination && (r.state === 'queued' || r.state === 'deferred' || r.state === 'delivering')) open++;
    if (on) this.overrideMap.set(key, { destination, kind: 'hold', to: '', by: op.who, reason: op.reason, at: Date.now() });
    else this.overrideMap.delete(key);
    this.destinationEvent(on ? 'suspended' : 'resumed', destination, op, on ? `held (${open} recipient(s))` : `released from hold (${open} recipient(s))`);
    return { changed: Math.max(open, 1), inFlight: 0, queueIds: [] };
  }

  private held(destination: string): boolean {
    return this.overrideMap.has(`hold ${destination}`);
  }

  async remove(queueId: string, op: Operator, report: false | ((m: MessageRecord, r: RecipientRecord) => boolean)): Promise<ActionResult> {
    const text = `removed from the queue by the postmaster (${op.who}): ${op.reason || 'no reason given'}`.slice(0, 1000);
    const res = this.onMessage(
      queueId,
      (r) => r.state === 'queued' || r.state === 'deferred' || r.state === 'quarantined',
      (r, m) => {
        const wanted = report !== false && report(m, { ...r });
        r.state = 'removed';
        if (wanted) {
          r.report = 'failed';
          r.lastReply = text;
          r.lastStatus = '5.0.0';
        }
        return { ...makeEvent('removed', MemoryStore.head(r, m, op, 'removed', wanted ? 'with a failure report to the sender' : 'without report')), report: wanted ? 'failed' : 'none' };
      },
    );
    this.finishIfDone(queueId);
    return res;
  }

  async release(queueId: string, op: Operator): Promise<ActionResult> {
    const now = Date.now();
    const res = this.onMessage(
      queueId,
      (r) => r.state === 'quarantined',
      (r, m) => {
        r.state = 'queued';
        r.nextAttemptAt = now;
        return makeEvent('released', MemoryStore.head(r, m, op, 'queued'));
      },
    );
    const e = this.messages.get(queueId);
    if (e) e.message.quarantine = '';
    if (res.changed) this.emit();
    return res;
  }

  async redirect(destination: string, to: string | null, op: Operator): Promise<void> {
    this.fault();
    const key = `redirect ${destination}`;
    if (to === null) {
      if (this.overrideMap.delete(key)) this.destinationEvent('redirected', destination, op, 'no longer redirected');
    } else {
      this.overrideMap.set(key, { destination, kind: 'redirect', to, by: op.who, reason: op.reason, at: Date.now() });
      this.destinationEvent('redirected', destination, op, `redirected to ${to}`);
    }
  }

  async overrides(): Promise<DestinationOverride[]> {
    return [...this.overrideMap.values()].map((o) => ({ ...o })).sort((a, b) => a.destination.localeCompare(b.destination) || a.kind.localeCompare(b.kind));
  }

  async scanRecipients(afterId: number, limit: number): Promise<RecipientRecord[]> {
    return [...this.recipients.values()].filter((r) => r.id > afterId).sort((a, b) => a.id - b.id).slice(0, limit).map((r) => ({ ...r }));
  }

  async recipientPage(queueId: string, afterId: number, limit: number): Promise<RecipientRecord[]> {
    return (this.messages.get(queueId)?.recipients ?? []).filter((r) => r.id > afterId).slice(0, limit).map((r) => ({ ...r }));
  }

  async messageStates(queueIds: string[]): Promise<MessageStates[]> {
    return queueIds.map((qid) => {
      const out: MessageStates = { queueId: qid, states: {}, destinations: [], suspended: 0, nextAttemptAt: null, lastReply: '' };
      let lastAt = -1;
      for (const r of this.messages.get(qid)?.recipients ?? []) {
        out.states[r.state] = (out.states[r.state] ?? 0) + 1;
        if (!out.destinations.includes(r.destination) && out.destinations.length < 10) out.destinations.push(r.destination);
        if (r.suspended) out.suspended++;
        if ((r.state === 'queued' || r.state === 'deferred') && (out.nextAttemptAt === null || r.nextAttemptAt < out.nextAttemptAt)) out.nextAttemptAt = r.nextAttemptAt;
        if (r.lastReply && (r.lastAttemptAt ?? 0) > lastAt) {
          lastAt = r.lastAttemptAt ?? 0;
          out.lastReply = r.lastReply;
        }
      }
      return out;
    });
  }

  async countByState(): Promise<Partial<Record<RecipientState, number>>> {
    const out: Partial<Record<RecipientState, number>> = {};
    for (const r of this.recipients.values()) out[r.state] = (out[r.state] ?? 0) + 1;
    return out;
  }

  async eventsOf(queueId: string, afterSeq: number, limit: number): Promise<MailEvent[]> {
    return this.events.filter((e) => e.queue_id === queueId && (e.seq ?? 0) > afterSeq).slice(0, limit);
  }

  async track(q: TrackQuery): Promise<TrackResult> {
    const strip = (s: string): string => s.trim().replace(/^<(.*)>$/, '$1');
    if (q.messageId === undefined && q.sender === undefined && q.recipient === undefined && q.queueId === undefined) {
      throw new Error('track needs a message id, sender, recipient or queue id');
    }
    const match = (e: MailEvent): boolean =>
      (q.messageId === undefined || strip(e.message_id) === strip(q.messageId)) &&
      (q.sender === undefined || e.sender.toLowerCase() === strip(q.sender).toLowerCase()) &&
      (q.recipient === undefined || (e.recipient ?? '').toLowerCase() === strip(q.recipient).toLowerCase()) &&
      (q.queueId === undefined || e.queue_id === q.queueId) &&
      (q.since === undefined || e.ts >= q.since) &&
      (q.beforeSeq === undefined || (e.seq ?? 0) < q.beforeSeq);
    const qids: string[] = [];
    let next: number | null = null;
    for (let i = this.events.length - 1; i >= 0; i--) {
      const e = this.events[i]!;
      if (!match(e) || qids.includes(e.queue_id)) continue;
      if (qids.length >= q.limit) {
        next = (e.seq ?? 0) + 1;
        break;
      }
      qids.push(e.queue_id);
    }
    return { messages: qids.reverse().map((qid) => ({ queueId: qid, events: this.events.filter((e) => e.queue_id === qid).slice(0, 10000) })), next };
  }

  async pruneEvents(before: string, maxSeq: number, limit: number): Promise<number> {
    let n = 0;
    this.events = this.events.filter((e) => {
      const drop = n < limit && (e.seq ?? 0) <= maxSeq && e.ts < before && !this.messages.has(e.queue_id);
      if (drop) n++;
      return !drop;
    });
    return n;
  }

  onDue(listener: () => void): void {
    this.listeners.push(listener);
  }

  private emit(): void {
    for (const l of this.listeners) l();
  }
}
