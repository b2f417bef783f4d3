/*
 * log/audit - the fate audit: reconciles the event log with the queue store
 * and shows, for every message accepted, that each recipient is at an end
 * (delivered; failed or expired with its report queued; removed by an
 * operator) or still in the queue (queued, deferred, quarantined, held).
 * Everything else is an exception, listed: a recipient accepted and then
 * neither finished nor in the store (lost), a store row no event explains, a
 * report owed but never queued.
 *
 * Reads the event log files in order (rotated ones first) and then the
 * store's own events after the files' last one (the file trails the store by
 * a fraction of a second), scans the store's recipients, then reads the
 * events once more, so a server that keeps working during the audit does not
 * produce false exceptions. Memory: one small record per recipient seen.
 */
import { createReadStream, existsSync, readdirSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { FINAL_STATES, type MailEvent, type RecipientState } from './events.js';
import type { QueueStore, RecipientRecord } from '../queue/store.js';

export type ExceptionKind = 'lost' | 'unrecorded' | 'report-missing' | 'bad-line';

export interface AuditException {
  kind: ExceptionKind;
  queueId: string;
  recipient?: string;
  detail: string;
}

export interface AuditResult {
  events: number;
  firstSeq: number | null;
  lastSeq: number | null;
  messages: number;
  recipients: number;
  /** Recipients by where they stand now. */
  byState: Record<string, number>;
  reports: { owed: number; queued: number; pending: number };
  /** Recipients whose early history is no longer in the log (rotated away or pruned). */
  historyIncomplete: number;
  exceptions: AuditException[];
  seconds: number;
}

interface Fate {
  state: string;
  received: boolean;
  /** The report the final outcome owes (null: none). */
  owed: string | null;
  /** Seq of the last event about it. */
  seq: number;
}

interface MessageFate {
  reported: Map<string, number>;
}

const REPORT_KINDS = new Set(['failed', 'expired', 'delivered', 'relayed', 'expanded']);

/** eventFiles - the event log files oldest first: events.jsonl.N ... .1, then events.jsonl. */
export function eventFiles(path: string): string[] {
  const dir = dirname(path);
  const base = basename(path);
  if (!existsSync(dir)) return [];
  const rotated = readdirSync(dir)
    .map((f) => ({ f, n: f.startsWith(`${base}.`) ? Number(f.slice(base.length + 1)) : NaN }))
    .filter((x) => Number.isInteger(x.n) && x.n > 0)
    .sort((a, b) => b.n - a.n)
    .map((x) => join(dir, x.f));
  return existsSync(path) ? [...rotated, path] : rotated;
}

/** readEventFiles - every complete event line of the log files, in order. */
export async function* readEventFiles(path: string, onBadLine: (file: string, line: number) => void): AsyncIterable<MailEvent> {
  for (const file of eventFiles(path)) {
    const rl = createInterface({ input: createReadStream(file, { encoding: 'utf8' }), crlfDelay: Infinity });
    let n = 0;
    for await (const line of rl) {
      n++;
      if (!line.trim()) continue;
      try {
        yield JSON.parse(line) as MailEvent;
      } catch {
        onBadLine(file, n);
      }
    }
  }
}

export class Auditor {
  private readonly fates = new Map<string, Fate>();
  private readonly messages = new Map<string, MessageFate>();
  private lastSeq = 0;
  private firstSeq: number | null = null;
  private count = 0;
  readonly exceptions: AuditException[] = [];

  private key(queueId: string, recipient: string): string {
    return `${queueId}\u0000${recipient}`;
  }

  /** apply - one event, in seq order; events already seen (by seq) are ignored. */
  apply(e: MailEvent): void {
    if (typeof e.seq === 'number') {
      if (e.seq <= this.lastSeq) return;
      this.lastSeq = e.seq;
      this.firstSeq ??= e.seq;
    }
    this.count++;
    if (!e.queue_id) return; // destination-level operator events
    if (e.event === 'dsn_queued') {
      const m = this.message(e.queue_id);
      const n = Number(/about (\d+) recipient/.exec(e.detail ?? '')?.[1] ?? 0);
      const kind = String(e.state ?? '');
      m.reported.set(kind, (m.reported.get(kind) ?? 0) + n);
      return;
    }
    if (e.recipient === undefined) return;
    this.message(e.queue_id);
    const k = this.key(e.queue_id, e.recipient);
    let f = this.fates.get(k);
    if (!f) this.fates.set(k, (f = { state: 'unknown', received: false, owed: null, seq: 0 }));
    f.seq = e.seq ?? this.lastSeq;
    switch (e.event) {
      case 'received':
        f.received = true;
        f.state = 'queued';
        break;
      case 'delivered':
      case 'failed':
      case 'expired':
      case 'removed':
        f.state = e.event;
        f.owed = e.report && REPORT_KINDS.has(e.report) ? e.report : null;
        break;
      case 'deferred':
        f.state = 'deferred';
        break;
      case 'quarantined':
        f.state = 'quarantined';
        break;
      case 'released':
        f.state = 'queued';
        break;
      default:
        // suspended, resumed, delay_notice, retry_requested: where it stands does not change.
        break;
    }
  }

  private message(queueId: string): MessageFate {
    let m = this.messages.get(queueId);
    if (!m) this.messages.set(queueId, (m = { reported: new Map() }));
    return m;
  }

  get seq(): number {
    return this.lastSeq;
  }

  /**
   * finish - compare with the store's recipients and produce the result.
   * `scanSeq` is the last event seen before the store was read: a recipient
   * whose events all came later arrived during the audit and is not expected
   * in the snapshot.
   */
  finish(stored: Map<string, RecipientRecord>, seconds: number, scanSeq = Infinity): AuditResult {
    const byState: Record<string, number> = {};
    let historyIncomplete = 0;
    const inStore = new Set<string>();
    for (const r of stored.values()) inStore.add(r.queueId);
    const owed = new Map<string, Map<string, number>>();
    for (const [k, f] of this.fates) {
      const [queueId, recipient] = k.split('\u0000') as [string, string];
      if (!f.received) historyIncomplete++;
      const s = stored.get(k);
      const final = FINAL_STATES.has(f.state as RecipientState);
      if (final) {
        byState[f.state] = (byState[f.state] ?? 0) + 1;
        if (f.owed) {
          let m = owed.get(queueId);
          if (!m) owed.set(queueId, (m = new Map()));
          m.set(f.owed, (m.get(f.owed) ?? 0) + 1);
        }
        continue;
      }
      if (!s) {
        if (f.seq > scanSeq) {
          byState[f.state] = (byState[f.state] ?? 0) + 1;
          continue;
        }
        if (f.received) this.exceptions.push({ kind: 'lost', queueId, recipient, detail: `accepted, last seen ${f.state} in the log, and not in the queue` });
        continue;
      }
      if (FINAL_STATES.has(s.state)) {
        this.exceptions.push({ kind: 'unrecorded', queueId, recipient, detail: `the queue says ${s.state}, the log says ${f.state}` });
        continue;
      }
      const now = s.suspended ? 'held' : s.state === 'delivering' ? 'delivering' : s.state;
      byState[now] = (byState[now] ?? 0) + 1;
    }
    for (const [k, r] of stored) {
      if (this.fates.has(k)) continue;
      if (this.firstSeq !== null && this.firstSeq > 1) {
        historyIncomplete++;
        byState[r.state] = (byState[r.state] ?? 0) + 1;
      } else this.exceptions.push({ kind: 'unrecorded', queueId: r.queueId, recipient: r.address, detail: `in the queue (${r.state}) with no event in the log` });
    }
    let owedTotal = 0;
    let queuedTotal = 0;
    let pending = 0;
    for (const [queueId, kinds] of owed) {
      const reported = this.messages.get(queueId)?.reported ?? new Map<string, number>();
      for (const [kind, n] of kinds) {
        const q = reported.get(kind) ?? 0;
        owedTotal += n;
        queuedTotal += Math.min(q, n);
        if (q >= n) continue;
        if (inStore.has(queueId)) pending += n - q;
        else this.exceptions.push({ kind: 'report-missing', queueId, detail: `${n} recipient(s) owed a ${kind} report, ${q} covered by queued reports` });
      }
    }
    return {
      events: this.count,
      firstSeq: this.firstSeq,
      lastSeq: this.lastSeq || null,
      messages: this.messages.size,
      recipients: this.fates.size,
      byState,
      reports: { owed: owedTotal, queued: queuedTotal, pending },
      historyIncomplete,
      exceptions: this.exceptions,
      seconds,
    };
  }
}

/**
 * runAudit - the whole audit against one store and its event log file; with
 * no file (a cluster: each node's file holds only its own events), against
 * every node's events in the shared store.
 */
export async function runAudit(store: QueueStore, eventLogPath: string | null): Promise<AuditResult> {
  const t0 = Date.now();
  const a = new Auditor();
  if (eventLogPath !== null) {
    for await (const e of readEventFiles(eventLogPath, (file, line) => a.exceptions.push({ kind: 'bad-line', queueId: '', detail: `${file}:${line}: not a JSON event` }))) a.apply(e);
  }
  const scope = eventLogPath === null ? 'all' : 'node';
  const tail = async (): Promise<void> => {
    for (;;) {
      const more = await store.eventsAfter(a.seq, 5000, scope);
      if (more.length === 0) return;
      for (const e of more) a.apply(e);
    }
  };
  await tail();
  const scanSeq = a.seq;
  const stored = new Map<string, RecipientRecord>();
  for (let after = 0; ; ) {
    const page = await store.scanRecipients(after, 5000);
    if (page.length === 0) break;
    for (const r of page) stored.set(`${r.queueId}\u0000${r.address}`, r);
    after = page[page.length - 1]!.id;
  }
  // Changes made while the store was read: their events are in the store now.
  await tail();
  return a.finish(stored, (Date.now() - t0) / 1000, scanSeq);
}
