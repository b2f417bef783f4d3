/*
 * workers/outbox - everything a worker says to the primary in one turn of its
 * event loop leaves as one IPC message: the inserts of its sessions
 * (workers/remote-store), their connection counts (workers/primary-gate) and
 * the outcomes of its deliveries (workers/outbound-worker) each gather their
 * items during the turn and are collected once, at its end (setImmediate), so
 * that a busy worker writes to the channel, and wakes the primary, once per
 * turn instead of once per kind (measured: BENCHMARKS.md, "Issue 17, sixth
 * round"). Several messages go wrapped in one `{ t: 'many' }`, in order.
 *
 * Invariants:
 * - order is kept: a message sent with `now` (or queued with `post`) goes
 *   after everything a part had gathered before it and before what the part
 *   gathers later (the primary reads a 'many' in order);
 * - every message is written, or its `done(false)` says it could not be (the
 *   channel is gone), exactly once;
 * - `now` writes at once (start-up, failures, reconfiguration answers, the
 *   gate's "reclaimed" and failed logins): what must not wait for the end of
 *   the turn does not.
 */
import type { ToPrimary } from './messages.js';

/** One source of messages: it gathers items during a turn and hands them over when asked. */
export interface OutboxPart {
  /** The messages gathered since the last call (none: nothing to say after all). */
  gathered(): ToPrimary[];
  /** Its messages were written to the channel (true) or could not be (false: the primary is gone). */
  sent?(ok: boolean): void;
}

/** Writes one message to the primary; `written` (if given) is called once it is on the channel, or failed. False: the channel is gone. */
export type WriteToPrimary = (m: ToPrimary, written?: (ok: boolean) => void) => boolean;

interface Queued {
  m: ToPrimary;
  done: ((ok: boolean) => void) | undefined;
}

export class Outbox {
  /** Parts with something gathered this turn, in the order they first said so. */
  private readonly parts: OutboxPart[] = [];
  /** Parts whose news can wait for a message that leaves anyway (`later`); the timer bounds the wait. */
  private readonly riders: OutboxPart[] = [];
  private riderTimer: NodeJS.Timeout | null = null;
  private queue: Queued[] = [];
  private scheduled = false;

  constructor(private readonly write: WriteToPrimary) {}

  /** soon - `part` has gathered something: it is collected at the end of this turn. */
  soon(part: OutboxPart): void {
    if (!this.parts.includes(part)) this.parts.push(part);
    this.schedule();
  }

  /**
   * later - `part` has gathered something that can wait up to `maxMs` for a
   * message that leaves anyway (a part's `soon`, `post` or `now`), to ride
   * with it: one IPC message fewer.
   */
  later(part: OutboxPart, maxMs: number): void {
    if (this.parts.includes(part) || this.riders.includes(part)) return;
    this.riders.push(part);
    this.riderTimer ??= setTimeout(() => {
      this.riderTimer = null;
      this.now();
    }, maxMs);
  }

  /** post - `m` leaves at the end of this turn, after what the parts gathered before it. */
  post(m: ToPrimary, done?: (ok: boolean) => void): void {
    this.collect();
    this.queue.push({ m, done });
    this.schedule();
  }

  /** now - write everything gathered so far and then `m` (if any), at once. */
  now(m?: ToPrimary, done?: (ok: boolean) => void): boolean {
    this.collect();
    if (m) this.queue.push({ m, done });
    return this.flush();
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.now();
    });
  }

  /** collect - the parts' messages join the queue, in the order the parts spoke. */
  private collect(): void {
    if (this.parts.length === 0 && this.riders.length === 0) return;
    const parts = this.parts.splice(0);
    if (this.riders.length) {
      for (const r of this.riders.splice(0)) if (!parts.includes(r)) parts.push(r);
      if (this.riderTimer) clearTimeout(this.riderTimer);
      this.riderTimer = null;
    }
    for (const p of parts) {
      const ms = p.gathered();
      for (let i = 0; i < ms.length; i++) this.queue.push({ m: ms[i]!, done: i === ms.length - 1 && p.sent ? (ok) => p.sent!(ok) : undefined });
    }
  }

  /** flush - write the queue as one message; false when the channel is gone. */
  private flush(): boolean {
    const queue = this.queue;
    if (queue.length === 0) return true;
    this.queue = [];
    const m: ToPrimary = queue.length === 1 ? queue[0]!.m : { t: 'many', items: queue.map((q) => q.m) };
    let called = !queue.some((q) => q.done);
    const written = (ok: boolean): void => {
      if (called) return;
      called = true;
      for (const q of queue) q.done?.(ok);
    };
    if (this.write(m, called ? undefined : written)) return true;
    written(false);
    return false;
  }
}
