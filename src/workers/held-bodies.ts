/*
 * workers/held-bodies - the bodies a worker keeps after handing a message to
 * the primary, so that the message's first delivery runs in the worker that
 * received it without the body crossing the IPC channel twice (in with the
 * insert, out again with the delivery job).
 *
 * The life of one held body:
 * - the worker's store (workers/remote-store) offers it when it sends the
 *   insert; `keep` says yes only within HELD_MAX_BYTES (memory stays bounded:
 *   past it the insert goes as before and the job brings the body back);
 * - the primary answers whether it took the message on the fresh-message fast
 *   path and means to use the held body ("held"); if not — or the insert
 *   failed, or the primary is gone — the body is dropped at once;
 * - otherwise it is dropped when the primary says "release": after the end of
 *   the scheduler's pass over that message, so after every job that could
 *   use it has ended. A retry later reads the body from the store as always.
 *
 * Invariants: the bytes held are counted exactly (kept minus dropped) and
 * never exceed HELD_MAX_BYTES; nothing here is durable or needed for safety —
 * a job that finds no body (it cannot happen by the protocol above) ends with
 * an error and its recipients are deferred by the primary, never bounced.
 */

/** Most octets one worker holds for first deliveries (beyond it bodies travel with the job). */
export const HELD_MAX_BYTES = 64 * 1024 * 1024;

export class HeldBodies {
  private readonly bodies = new Map<string, Buffer>();
  private total = 0;

  constructor(private readonly max = HELD_MAX_BYTES) {}

  /** keep - hold `body` for message `queueId`; false (nothing held) when it does not fit. */
  keep(queueId: string, body: Buffer): boolean {
    if (this.bodies.has(queueId) || this.total + body.length > this.max) return false;
    this.bodies.set(queueId, body);
    this.total += body.length;
    return true;
  }

  /** get - the held body, if any (a message with several next hops uses it for each job). */
  get(queueId: string): Buffer | undefined {
    return this.bodies.get(queueId);
  }

  /** drop - forget these bodies (released by the primary, or not taken by it). */
  drop(queueIds: Iterable<string>): void {
    for (const id of queueIds) {
      const body = this.bodies.get(id);
      if (!body) continue;
      this.bodies.delete(id);
      this.total -= body.length;
    }
  }

  /** clear - the primary is gone: no job will come. */
  clear(): void {
    this.bodies.clear();
    this.total = 0;
  }

  /** Octets held now. */
  get bytes(): number {
    return this.total;
  }

  /** Bodies held now. */
  get size(): number {
    return this.bodies.size;
  }
}
