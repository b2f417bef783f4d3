/*
 * queue/backends/memory - a queue backend held in memory, for fast unit tests
 * of the scheduler, agents and reports. It keeps the backend rules of
 * queue/backend (the contract suite runs against it) except durability, which
 * it cannot have; `failNext` injects a storage failure for tests. Its clock
 * for leases is the process's.
 */
import { Readable } from 'node:stream';
import type { MailEvent, RecipientState } from '../../log/events.js';
import { CLAIMABLE_STATES, ReportAlreadyMade, isOpen, type ApplyResult, type Change, type ClaimSpec, type InsertResult, type InsertSpec, type OpenReport, type QueueBackend, type RecipientFields, type RecipientQuery } from '../backend.js';
import { newRecipientRecord } from '../store.js';
import type {
  BodyWriter,
  Claim,
  DestinationOverride,
  DestinationSummary,
  ListFilter,
  MessageRecord,
  MessageStates,
  NewMessage,
  RecipientRecord,
  TrackQuery,
  TrackResult,
} from '../store.js';

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

/** A recipient row as this backend keeps it: the record plus its claim. */
type Row = RecipientRecord & { claim: string | null; leaseUntil: number };

export class MemoryBackend implements QueueBackend {
  readonly kind = 'memory';
  readonly shared = false;
  private messages = new Map<string, Entry>();
  private rows = new Map<number, Row>();
  private events: MailEvent[] = [];
  private nextId = 1;
  private seq = 0;
  private wakeListeners: Array<() => void> = [];
  private eventListeners: Array<(events: MailEvent[]) => void> = [];
  private overrideMap = new Map<string, DestinationOverride>();
  /** Test seam: the next write fails with this error. */
  failNext: Error | null = null;

  async open(): Promise<OpenReport> {
    return { damaged: [] };
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

  private held(destination: string): boolean {
    return this.overrideMap.has(`hold ${destination}`);
  }

  private claimable(r: Row, now: number): boolean {
    if (r.suspended || this.held(r.destination)) return false;
    return (CLAIMABLE_STATES.includes(r.state) && r.nextAttemptAt <= now) || (r.state === 'delivering' && r.leaseUntil < Date.now());
  }

  private static record(r: Row): RecipientRecord {
    const { claim, leaseUntil: _l, ...rec } = r;
    if (r.state === 'delivering' && claim) rec.claimedBy = claim.slice(0, claim.indexOf(':'));
    return rec;
  }

  async insert(message: NewMessage, body: BodyWriter, spec: InsertSpec): Promise<InsertResult> {
    if (!(body instanceof MemoryBody) || body.aborted) throw new Error('body writer does not belong to this store');
    this.fault();
    if (spec.clearReports && spec.clearReports.ids.some((id) => this.rows.get(id)?.report !== spec.clearReports!.kind)) throw new ReportAlreadyMade(message.queueId);
    const { recipients, ...meta } = message;
    const entry: Entry = { message: { ...meta, requireTls: meta.requireTls === true, tlsRequiredNo: meta.tlsRequiredNo === true, recipientCount: recipients.length, quarantine: '' }, body: Buffer.concat(body.chunks), recipients: [] };
    const claimed: RecipientRecord[] = [];
    for (const r of recipients) {
      const c = spec.claim !== undefined && !this.held(r.destination);
      const rec = newRecipientRecord(this.nextId++, message.queueId, r, c ? 'delivering' : 'queued', message.receivedAt);
      const row: Row = Object.assign(rec, { claim: c ? spec.claim!.token : null, leaseUntil: c ? Date.now() + spec.claim!.leaseMs : 0 });
      entry.recipients.push(row);
      this.rows.set(row.id, row);
      if (c) claimed.push(MemoryBackend.record(row));
    }
    this.messages.set(message.queueId, entry);
    this.pushEvents(spec.events);
    const touched = new Set<string>();
    for (const id of spec.clearReports?.ids ?? []) {
      const r = this.rows.get(id);
      if (r) {
        r.report = null;
        touched.add(r.queueId);
      }
    }
    for (const q of touched) this.finishIfDone(q);
    if (claimed.length < recipients.length) this.wake();
    return { claimed, body: entry.body };
  }

  private pushEvents(events: readonly MailEvent[]): void {
    if (events.length === 0) return;
    const out = events.map((e) => ({ ...e, seq: ++this.seq }));
    for (const e of out) this.events.push(e);
    for (const l of this.eventListeners) l(out);
  }

  onEvents(listener: (events: MailEvent[]) => void): void {
    this.eventListeners.push(listener);
  }

  private finishIfDone(queueId: string): void {
    const entry = this.messages.get(queueId);
    if (!entry) return;
    if (entry.recipients.every((r) => !isOpen(r.state, r.report))) {
      this.messages.delete(queueId);
      for (const r of entry.recipients) this.rows.delete(r.id);
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

  async claimDue(now: number, max: number, claim: ClaimSpec): Promise<Claim[]> {
    const due = [...this.rows.values()]
      .filter((r) => this.claimable(r, now))
      .sort((a, b) => a.nextAttemptAt - b.nextAttemptAt || a.id - b.id)
      .slice(0, max);
    const claims = new Map<string, Claim>();
    for (const r of due) {
      r.state = 'delivering';
      r.claim = claim.token;
      r.leaseUntil = Date.now() + claim.leaseMs;
      const entry = this.messages.get(r.queueId)!;
      let c = claims.get(r.queueId);
      if (!c) claims.set(r.queueId, (c = { token: claim.token, message: { ...entry.message }, recipients: [] }));
      c.recipients.push(MemoryBackend.record(r));
    }
    return [...claims.values()];
  }

  async renew(tokens: string[], leaseMs: number): Promise<void> {
    const set = new Set(tokens);
    const until = Date.now() + leaseMs;
    for (const r of this.rows.values()) if (r.state === 'delivering' && r.claim !== null && set.has(r.claim)) r.leaseUntil = until;
  }

  async nextDueAt(): Promise<number | null> {
    let min: number | null = null;
    for (const r of this.rows.values()) {
      if (CLAIMABLE_STATES.includes(r.state) && !r.suspended && !this.held(r.destination) && (min === null || r.nextAttemptAt < min)) min = r.nextAttemptAt;
    }
    return min;
  }

  async countDue(queueId: string, now: number): Promise<number> {
    const entry = this.messages.get(queueId);
    if (!entry) return 0;
    return (entry.recipients as Row[]).filter((r) => CLAIMABLE_STATES.includes(r.state) && this.claimable(r, now)).length;
  }

  async apply(change: Change): Promise<ApplyResult> {
    this.fault();
    const refused: number[] = [];
    const touched = new Set<string>();
    const events: MailEvent[] = [];
    for (const p of change.patches ?? []) {
      const r = this.rows.get(p.id);
      if (!r || (p.claim !== undefined && r.claim !== p.claim) || (p.states && !p.states.includes(r.state))) {
        refused.push(p.id);
        continue;
      }
      MemoryBackend.set(r, p.set);
      if (p.event) events.push(p.event);
      touched.add(r.queueId);
    }
    for (const e of change.events ?? []) events.push(e);
    if (change.quarantine) {
      const e = this.messages.get(change.quarantine.queueId);
      if (e) e.message.quarantine = change.quarantine.reason;
    }
    for (const o of change.overrides ?? []) {
      if ('put' in o) this.overrideMap.set(`${o.put.kind} ${o.put.destination}`, { ...o.put });
      else this.overrideMap.delete(`${o.remove.kind} ${o.remove.destination}`);
    }
    this.pushEvents(events);
    for (const q of touched) this.finishIfDone(q);
    if (change.wake) this.wake();
    return { refused };
  }

  private static set(r: Row, f: RecipientFields): void {
    if (f.state !== undefined) {
      r.state = f.state;
      if (f.state !== 'delivering') {
        r.claim = null;
        r.leaseUntil = 0;
      }
    }
    if (f.attempts !== undefined) r.attempts = f.attempts;
    if (f.nextAttemptAt !== undefined) r.nextAttemptAt = f.nextAttemptAt;
    if (f.lastAttemptAt !== undefined) r.lastAttemptAt = f.lastAttemptAt;
    if (f.lastReply !== undefined) r.lastReply = f.lastReply;
    if (f.lastStatus !== undefined) r.lastStatus = f.lastStatus;
    if (f.remote !== undefined) r.remote = f.remote;
    if (f.lastTls !== undefined) r.lastTls = f.lastTls;
    if (f.report !== undefined) r.report = f.report;
    if (f.delayNotified !== undefined) r.delayNotified = f.delayNotified;
    if (f.suspended !== undefined) r.suspended = f.suspended;
  }

  async getMessage(queueId: string): Promise<MessageRecord | null> {
    const e = this.messages.get(queueId);
    return e ? { ...e.message } : null;
  }

  private matching(q: Omit<RecipientQuery, 'afterId' | 'limit'>): Row[] {
    const source = q.queueId !== undefined ? ((this.messages.get(q.queueId)?.recipients ?? []) as Row[]) : [...this.rows.values()].sort((a, b) => a.id - b.id);
    return source.filter(
      (r) =>
        (q.destination === undefined || r.destination === q.destination) &&
        (q.states === undefined || q.states.includes(r.state)) &&
        (q.suspended === undefined || r.suspended === q.suspended) &&
        (!q.withReport || r.report !== null) &&
        (q.claimPrefix === undefined || (r.state === 'delivering' && (r.claim ?? '').startsWith(q.claimPrefix))),
    );
  }

  async selectRecipients(q: RecipientQuery): Promise<RecipientRecord[]> {
    return this.matching(q)
      .filter((r) => r.id > q.afterId)
      .slice(0, q.limit)
      .map(MemoryBackend.record);
  }

  async countRecipients(q: Omit<RecipientQuery, 'afterId' | 'limit'>): Promise<number> {
    return this.matching(q).length;
  }

  async pendingReports(limit: number): Promise<string[]> {
    const out: string[] = [];
    for (const [qid, e] of this.messages) {
      if (out.length >= limit) break;
      if (e.recipients.some((r) => r.report !== null) && !e.recipients.some((r) => r.state === 'delivering')) out.push(qid);
    }
    return out;
  }

  async summary(): Promise<DestinationSummary[]> {
    const by = new Map<string, DestinationSummary & { qids: Set<string>; lastAt: number }>();
    for (const e of this.messages.values()) {
      for (const r of e.recipients) {
        if (!isOpen(r.state, null)) continue;
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
    return [...by.values()].map(({ qids, lastAt: _lastAt, ...s }) => ({ ...s, messages: qids.size })).sort((a, b) => b.recipients - a.recipients);
  }

  async list(filter: ListFilter): Promise<MessageRecord[]> {
    const out: MessageRecord[] = [];
    for (const qid of [...this.messages.keys()].sort()) {
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
          (r) => (!filter.destination || r.destination === filter.destination) && (!filter.state || r.state === filter.state) && (!filter.recipient || r.address === filter.recipient),
        )
      )
        continue;
      out.push({ ...m });
      if (out.length >= filter.limit) break;
    }
    return out;
  }

  async messageStates(queueIds: string[]): Promise<MessageStates[]> {
    return queueIds.map((qid) => {
      const out: MessageStates = { queueId: qid, states: {}, destinations: [], suspended: 0, nextAttemptAt: null, lastReply: '' };
      let lastAt = -1;
      for (const r of this.messages.get(qid)?.recipients ?? []) {
        out.states[r.state] = (out.states[r.state] ?? 0) + 1;
        if (!out.destinations.includes(r.destination) && out.destinations.length < 10) out.destinations.push(r.destination);
        if (r.suspended) out.suspended++;
        if (CLAIMABLE_STATES.includes(r.state) && (out.nextAttemptAt === null || r.nextAttemptAt < out.nextAttemptAt)) out.nextAttemptAt = r.nextAttemptAt;
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
    for (const r of this.rows.values()) out[r.state] = (out[r.state] ?? 0) + 1;
    return out;
  }

  async overrides(): Promise<DestinationOverride[]> {
    return [...this.overrideMap.values()].map((o) => ({ ...o })).sort((a, b) => a.destination.localeCompare(b.destination) || a.kind.localeCompare(b.kind));
  }

  durableEventSeq(): number {
    return this.seq;
  }

  async eventsAfter(seq: number, limit: number): Promise<MailEvent[]> {
    return this.events.filter((e) => (e.seq ?? 0) > seq).slice(0, limit);
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

  onWake(listener: () => void): void {
    this.wakeListeners.push(listener);
  }

  private wake(): void {
    for (const l of this.wakeListeners) l();
  }
}
