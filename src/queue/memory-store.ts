/*
 * queue/memory-store - a QueueStore held in memory, for fast unit tests of the
 * scheduler, agents and reports. It keeps the same invariants as the embedded
 * store (the contract suite runs against both) except durability, which it
 * cannot have; `failNext` injects a storage failure for tests.
 */
import { Readable } from 'node:stream';
import { FINAL_STATES, type MailEvent } from '../log/events.js';
import type {
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

  async insert(message: NewMessage, body: BodyWriter, options: InsertOptions = {}): Promise<void> {
    if (!(body instanceof MemoryBody) || body.aborted) throw new Error('body writer does not belong to this store');
    this.fault();
    const { recipients, ...meta } = message;
    const entry: Entry = { message: { ...meta, recipientCount: recipients.length, quarantine: '' }, body: Buffer.concat(body.chunks), recipients: [] };
    for (const r of recipients) {
      const rec: RecipientRecord = {
        id: this.nextId++,
        queueId: message.queueId,
        ...r,
        state: 'queued',
        attempts: 0,
        nextAttemptAt: message.receivedAt,
        lastAttemptAt: null,
        lastReply: '',
        lastStatus: '',
        remote: '',
        report: null,
        delayNotified: false,
        suspended: false,
      };
      entry.recipients.push(rec);
      this.recipients.set(rec.id, rec);
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
    this.emit();
  }

  private pushEvent(e: MailEvent): void {
    this.events.push({ ...e, seq: ++this.seq });
  }

  private finishIfDone(queueId: string): void {
    const entry = this.messages.get(queueId);
    if (!entry) return;
    if (entry.recipients.every((r) => FINAL_STATES.has(r.state) && r.report === null)) {
      this.messages.delete(queueId);
      for (const r of entry.recipients) this.recipients.delete(r.id);
    }
  }

  async readBody(queueId: string): Promise<Readable> {
    const entry = this.messages.get(queueId);
    if (!entry) throw new Error(`no message ${queueId} in the queue`);
    return Readable.from([entry.body]);
  }

  async claimDue(now: number, options: ClaimOptions): Promise<Claim[]> {
    const due = [...this.recipients.values()]
      .filter((r) => (r.state === 'queued' || r.state === 'deferred') && !r.suspended && r.nextAttemptAt <= now)
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
      if ((r.state === 'queued' || r.state === 'deferred') && !r.suspended && (min === null || r.nextAttemptAt < min)) min = r.nextAttemptAt;
    }
    return min;
  }

  async countDue(queueId: string, now: number): Promise<number> {
    const entry = this.messages.get(queueId);
    if (!entry) return 0;
    return entry.recipients.filter((r) => (r.state === 'queued' || r.state === 'deferred') && !r.suspended && r.nextAttemptAt <= now).length;
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
    return [...by.values()]
      .map(({ qids, lastAt: _lastAt, ...s }) => ({ ...s, messages: qids.size }))
      .sort((a, b) => b.recipients - a.recipients);
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

  async eventsAfter(seq: number, limit: number): Promise<MailEvent[]> {
    return this.events.filter((e) => (e.seq ?? 0) > seq).slice(0, limit);
  }

  async appendEvents(events: MailEvent[]): Promise<void> {
    this.fault();
    for (const e of events) this.pushEvent(e);
  }

  onDue(listener: () => void): void {
    this.listeners.push(listener);
  }

  private emit(): void {
    for (const l of this.listeners) l();
  }
}
