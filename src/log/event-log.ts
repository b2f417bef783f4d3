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
 */
import { closeSync, existsSync, ftruncateSync, mkdirSync, openSync, readSync, fstatSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { MailEvent } from './events.js';
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

/** formatEvent - one line: fields in the contract's order, empty ones left out. */
export function formatEvent(e: MailEvent): string {
  const o: Record<string, unknown> = {
    ts: e.ts,
    seq: e.seq,
    id: e.id,
    event: e.event,
    queue_id: e.queue_id,
    message_id: e.message_id,
    sender: e.sender,
  };
  if (e.recipient !== undefined) o.recipient = e.recipient;
  if (e.attempt !== undefined) o.attempt = e.attempt;
  if (e.state !== undefined) o.state = e.state;
  if (e.remote !== undefined) o.remote = e.remote;
  if (e.reply !== undefined) o.reply = e.reply;
  if (e.error !== undefined) o.error = e.error;
  if (e.status !== undefined) o.status = e.status;
  if (e.detail !== undefined) o.detail = e.detail;
  return JSON.stringify(o) + '\n';
}

export class EventLog {
  private file: FileHandle | null = null;
  private seq = 0;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private closed = false;

  constructor(
    private readonly store: QueueStore,
    readonly path: string,
    private readonly trace: Trace,
    private readonly intervalMs = 100,
  ) {}

  async open(): Promise<void> {
    mkdirSync(dirname(this.path), { recursive: true });
    this.seq = lastSeqInFile(this.path);
    this.file = await open(this.path, 'a', 0o640);
    await this.flush();
    this.timer = setInterval(() => void this.flush(), this.intervalMs);
    this.timer.unref();
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
        const events = await this.store.eventsAfter(this.seq, 5000);
        if (events.length === 0) return;
        await this.file.write(events.map(formatEvent).join(''));
        this.seq = events[events.length - 1]!.seq ?? this.seq;
        if (events.length < 5000) return;
      }
    } catch (e) {
      if (!this.closed) this.trace.error({ err: (e as Error).message }, 'cannot write the event log; will retry');
    }
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.flush();
    this.closed = true;
    await this.file?.close();
    this.file = null;
  }
}
