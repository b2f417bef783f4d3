/*
 * log/event-log - writes the mail event log, data_dir/log/events.jsonl, one
 * JSON object a line (CONTRACT.md, "Event log").
 *
 * Events are first written by the queue store inside the same transaction as
 * the state change they record, so a state change and its event are durable
 * together. This module copies them, in `seq` order, to the JSON-lines file
 * that operators and tools read. (Not pino: its buffered asynchronous writes
 * would lose the last events at a crash, and a crash is exactly when the
 * record matters; here the store is the source and the file catches up.)
 *
 * Invariants: each event appears in the file once, in order; after a crash
 * the file is completed from the store on start (a torn last line is cut off
 * first); a failure to write the file never affects mail: it is retried.
 *
 * The copy writes with write(2) on the main thread (writeAllSync), not through
 * the thread pool: a batch of lines is a buffered write to the page cache,
 * like the WAL frames SQLite writes on this thread at every commit, and a
 * thread-pool write costs the main thread several times the write itself
 * (request, wake-up, completion, promise). The file is synced only where it
 * was before (rotation, retention), so what is durable, and when, is as it was.
 *
 * Rotation (size-based, `[log] rotate_size`, keeping `rotate_keep` old files
 * events.jsonl.1 .. .N, .1 the newest): between two copies, the file is
 * synced and closed, older files shift up, events.jsonl becomes .1, the
 * directory is synced, and a new events.jsonl is opened. On start the last
 * seq is read from events.jsonl, or from events.jsonl.1 when the new file is
 * still empty — so a crash anywhere in a rotation neither repeats nor skips
 * an event.
 *
 * Retention (`[log] retention`): events older than it are deleted from the
 * store's table (which serves tracking) once an hour, only up to the last seq
 * written to this file and synced, and never those of a message still queued.
 */
import { closeSync, existsSync, ftruncateSync, mkdirSync, openSync, readSync, fstatSync, renameSync, fsyncSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { MailEvent } from './events.js';
import { writeAllSync } from '../core/durable-fs.js';
import type { QueueStore } from '../queue/store.js';
import type { Trace } from './trace.js';

/** lastSeqInFile - the seq of the last complete line, after cutting off a torn one. */
export function lastSeqInFile(path: string): number {
  if (!existsSync(path)) return 0;
  const fd = openSync(path, 'r+');
  try {
    const size = fstatSync(fd).size;
    if (size === 0) return 0;
    const window = Math.min(size, 1024 * 1024);
    const buf = Buffer.alloc(window);
    readSync(fd, buf, 0, window, size - window);
    let end = buf.length;
    if (buf[end - 1] !== 10) {
      // A torn last line (crash mid-write): cut it; its event is written again.
      const lf = buf.lastIndexOf(10);
      const keep = lf < 0 ? size - window : size - window + lf + 1;
      ftruncateSync(fd, keep);
      end = lf + 1;
    }
    const text = buf.subarray(0, end).toString('utf8');
    const lines = text.split('\n').filter((l) => l.trim() !== '');
    for (let i = lines.length - 1; i >= 0; i--) {
      try {
        const seq = (JSON.parse(lines[i]!) as MailEvent).seq;
        if (typeof seq === 'number') return seq;
      } catch {
        // a line that is not JSON (should not happen): look further back
      }
    }
    return 0;
  } finally {
    closeSync(fd);
  }
}

/**
 * JsonText - JSON.stringify of the last string it was given, remembered: the
 * events of one message (or one delivery) repeat their time, queue id,
 * Message-ID, sender, remote and reply, so most fields are quoted once.
 */
class JsonText {
  private last: string | undefined = undefined;
  private json = '';

  of(s: string): string {
    if (s !== this.last) {
      this.last = s;
      this.json = JSON.stringify(s);
    }
    return this.json;
  }
}

const quoted = {
  ts: new JsonText(),
  event: new JsonText(),
  queue_id: new JsonText(),
  message_id: new JsonText(),
  sender: new JsonText(),
  state: new JsonText(),
  remote: new JsonText(),
  reply: new JsonText(),
  error: new JsonText(),
  status: new JsonText(),
  detail: new JsonText(),
  report: new JsonText(),
};

/**
 * formatEvent - one line: fields in the contract's order, empty ones left
 * out; exactly what JSON.stringify gives for the same fields (a test checks).
 */
export function formatEvent(e: MailEvent): string {
  let s = `{"ts":${quoted.ts.of(e.ts)}`;
  if (e.seq !== undefined) s += `,"seq":${JSON.stringify(e.seq)}`;
  s += `,"id":${JSON.stringify(e.id)},"event":${quoted.event.of(e.event)},"queue_id":${quoted.queue_id.of(e.queue_id)}`;
  s += `,"message_id":${quoted.message_id.of(e.message_id)},"sender":${quoted.sender.of(e.sender)}`;
  if (e.recipient !== undefined) s += `,"recipient":${JSON.stringify(e.recipient)}`;
  if (e.attempt !== undefined) s += `,"attempt":${JSON.stringify(e.attempt)}`;
  if (e.state !== undefined) s += `,"state":${quoted.state.of(e.state)}`;
  if (e.remote !== undefined) s += `,"remote":${quoted.remote.of(e.remote)}`;
  if (e.reply !== undefined) s += `,"reply":${quoted.reply.of(e.reply)}`;
  if (e.error !== undefined) s += `,"error":${quoted.error.of(e.error)}`;
  if (e.status !== undefined) s += `,"status":${quoted.status.of(e.status)}`;
  if (e.auth !== undefined) s += `,"auth":${JSON.stringify(e.auth)}`;
  if (e.filter !== undefined) s += `,"filter":${JSON.stringify(e.filter)}`;
  if (e.detail !== undefined) s += `,"detail":${quoted.detail.of(e.detail)}`;
  if (e.report !== undefined) s += `,"report":${quoted.report.of(e.report)}`;
  if (e.tls !== undefined) s += `,"tls":${JSON.stringify(e.tls)}`;
  if (e.tls_failure !== undefined) s += `,"tls_failure":${JSON.stringify(e.tls_failure)}`;
  return `${s}}\n`;
}

/** Retention and rotation policy ([log] retention, rotate_size, rotate_keep). */
export interface LogPolicy {
  /** Events older than this leave the store (ms); 0 keeps them. */
  retentionMs: number;
  /** Rotate events.jsonl when it reaches this size (octets); 0 never. */
  rotateSize: number;
  /** Old files kept: events.jsonl.1 .. .N. */
  keep: number;
}

/** Most handed-over events held in memory while the file is written; past it they are read back instead. */
const MAX_PENDING = 200_000;

/** How often retention runs. */
const PRUNE_EVERY_MS = 3_600_000;
/** Events deleted per transaction (a short write lock each). */
const PRUNE_BATCH = 2_000;

export class EventLog {
  private file: FileHandle | null = null;
  private seq = 0;
  private size = 0;
  private pruneTimer: NodeJS.Timeout | null = null;
  /** Set before open(): retention and rotation (null: neither). */
  policy: LogPolicy | null = null;
  /** Observer (metrics): events just written, in order. */
  onWritten: ((events: readonly MailEvent[]) => void) | null = null;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private closed = false;
  /** Durable events handed over by the store, not yet written (in seq order). */
  private pending: MailEvent[] = [];
  private soon = false;

  constructor(
    private readonly store: QueueStore,
    readonly path: string,
    private readonly trace: Trace,
    private readonly intervalMs = 100,
  ) {}

  async open(): Promise<void> {
    mkdirSync(dirname(this.path), { recursive: true });
    // After a rotation the new file may still be empty: the last event is in .1.
    this.seq = lastSeqInFile(this.path) || lastSeqInFile(`${this.path}.1`);
    this.file = await open(this.path, 'a', 0o640);
    this.size = (await this.file.stat()).size;
    this.store.onEvents((events) => this.take(events));
    await this.flush();
    this.timer = setInterval(() => void this.flush(), this.intervalMs);
    this.timer.unref();
    if (this.policy?.retentionMs) {
      this.pruneTimer = setInterval(() => void this.prune(), PRUNE_EVERY_MS);
      this.pruneTimer.unref();
      setImmediate(() => void this.prune());
    }
  }

  /** rotate - events.jsonl -> .1 (older ones shift up, the oldest beyond `keep` is dropped). */
  private async rotate(keep: number): Promise<void> {
    if (!this.file) return;
    await this.file.sync();
    await this.file.close();
    this.file = null;
    for (let i = keep - 1; i >= 1; i--) {
      if (existsSync(`${this.path}.${i}`)) renameSync(`${this.path}.${i}`, `${this.path}.${i + 1}`);
    }
    renameSync(this.path, `${this.path}.1`);
    const dir = openSync(dirname(this.path), 'r');
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
    this.file = await open(this.path, 'a', 0o640);
    this.size = 0;
    this.trace.info({ path: this.path }, 'event log rotated');
  }

  /** prune - retention: delete old events the file already holds (synced first). */
  async prune(now = Date.now()): Promise<number> {
    const p = this.policy;
    if (!p?.retentionMs || !this.file) return 0;
    let total = 0;
    try {
      await this.flush();
      await this.file.sync();
      const before = new Date(now - p.retentionMs).toISOString();
      for (let i = 0; i < 1000; i++) {
        const n = await this.store.pruneEvents(before, this.seq, PRUNE_BATCH);
        total += n;
        if (n < PRUNE_BATCH) break;
      }
      if (total) this.trace.info({ n: total, before }, 'old events removed (retention)');
    } catch (e) {
      if (!this.closed) this.trace.error({ err: (e as Error).message }, 'event retention failed; will retry');
    }
    return total;
  }

  /** take - durable events from the store: written at the next turn, no read-back. */
  private take(events: MailEvent[]): void {
    if (this.pending.length + events.length > MAX_PENDING) {
      // The file is not keeping up: let go; the store still has them (copy reads them back).
      this.pending = [];
      return;
    }
    for (const e of events) this.pending.push(e);
    if (!this.soon) {
      this.soon = true;
      setImmediate(() => {
        this.soon = false;
        void this.flush();
      });
    }
  }

  /** nextBatch - the handed-over events that follow the last one written (null: there is a gap, read back). */
  private nextBatch(durable: number): MailEvent[] | null {
    let i = 0;
    while (i < this.pending.length && (this.pending[i]!.seq ?? 0) <= this.seq) i++;
    if (i) this.pending = this.pending.slice(i);
    if (this.pending.length === 0 || this.pending[0]!.seq !== this.seq + 1) return null;
    if ((this.pending[0]!.seq ?? 0) > durable) return null;
    let n = 1;
    while (n < this.pending.length && n < 5000 && this.pending[n]!.seq === this.pending[n - 1]!.seq! + 1 && this.pending[n]!.seq! <= durable) n++;
    const batch = this.pending.slice(0, n);
    this.pending = this.pending.slice(n);
    return batch;
  }

  /** flush - copy every event the store has after the last one written. */
  flush(): Promise<void> {
    if (!this.running) {
      this.running = this.copy().finally(() => {
        this.running = null;
      });
    }
    return this.running;
  }

  private async copy(): Promise<void> {
    if (!this.file) return;
    try {
      for (;;) {
        // Only what is on stable storage: never record a change a power loss could undo.
        const durable = this.store.durableEventSeq();
        if (durable <= this.seq) return;
        const events = this.nextBatch(durable) ?? (await this.store.eventsAfter(this.seq, 5000)).filter((e) => (e.seq ?? 0) <= durable);
        if (events.length === 0) return;
        const text = Buffer.from(events.map(formatEvent).join(''));
        writeAllSync(this.file.fd, text);
        this.seq = events[events.length - 1]!.seq ?? this.seq;
        this.size += text.length;
        this.onWritten?.(events);
        const p = this.policy;
        if (p && p.rotateSize > 0 && this.size >= p.rotateSize) await this.rotate(Math.max(1, p.keep));
        if (events.length < 5000 && this.pending.length === 0) return;
      }
    } catch (e) {
      if (!this.closed) this.trace.error({ err: (e as Error).message }, 'cannot write the event log; will retry');
    }
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    await this.flush();
    this.closed = true;
    await this.file?.close();
    this.file = null;
  }
}
