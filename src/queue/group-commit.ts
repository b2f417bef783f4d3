/*
 * queue/group-commit - many writers, one transaction, one sync, and the event
 * loop never waits for the disk.
 *
 * Writers from concurrent SMTP sessions and delivery tasks queue operations;
 * at the next turn of the event loop all queued operations run in a single
 * SQLite transaction (WAL, synchronous=NORMAL: the commit itself does not
 * sync). Durability then comes from an fsync of the WAL file issued by us, on
 * the thread pool: while one fsync is in flight, later commits gather and
 * share the next one. So the disk's sync rate bounds the number of *batches*
 * per second, not the number of messages, and the main thread keeps serving
 * sessions while the disk works (DESIGN.md, "Embedded queue").
 *
 * Why this is as safe as synchronous=FULL: in WAL mode SQLite writes a
 * transaction's pages to the -wal file at COMMIT; FULL only adds an fsync of
 * that file. We fsync the same file (fsync acts on the inode) before telling
 * anyone the write is durable. NORMAL keeps SQLite's own ordering of syncs
 * around checkpoints, so the database cannot be corrupted by a power loss.
 *
 * Invariants:
 * - a durable operation's promise resolves only after an fsync of the WAL
 *   that *started after* its COMMIT returned; it rejects if its own work
 *   failed (then none of its writes are kept: the batch is rolled back and
 *   the others run again, each alone) or if the commit failed (nothing of
 *   the batch is kept);
 * - operations run in the order they were queued.
 * Note: a committed write is visible to readers before it is durable; what
 * is not yet durable is never *acknowledged* (no 250, no outcome reported).
 */
import { open, type FileHandle } from 'node:fs/promises';
import type { Database, Statement } from 'better-sqlite3';

interface Pending {
  op: (db: Database) => unknown;
  durable: boolean;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

interface Waiter {
  value: unknown;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

export class GroupCommit {
  private queue: Pending[] = [];
  private scheduled = false;
  private closed = false;
  private waiting: Waiter[] = [];
  private syncing: Promise<void> | null = null;
  /** Durable writes are gathering until the fsync in flight ends. */
  private flushAfterSync = false;
  private wal: FileHandle | null = null;
  /** Set while the checkpointer has asked for a pause (see hold): no transaction starts. */
  private held: NodeJS.Timeout | null = null;
  /** Statistics for benchmarks and metrics. */
  readonly stats = { batches: 0, operations: 0, syncs: 0, holds: 0 };
  /** Fault-injection seam for tests: throw to make the next commit fail. */
  fault: (() => void) | null = null;

  private readonly beginStmt: Statement;
  private readonly commitStmt: Statement;
  private readonly rollbackStmt: Statement;
  /**
   * Hooks for what the operations leave beside the database (the store's
   * event sequence): told when a transaction commits or rolls back, and when
   * an fsync starts (the returned function runs once it has succeeded: all
   * that was committed before it started is then durable).
   */
  /**
   * The store's hooks. afterOperation runs inside the transaction after each
   * operation, as part of it (the store writes the rows it batched there; if
   * it throws, that operation failed like any other).
   */
  hooks: { afterOperation?(): void; committed(): void; rolledBack(): void; syncStarting(): () => void } | null = null;

  constructor(
    private readonly db: Database,
    private readonly walPath: string,
  ) {
    this.db.pragma('synchronous = NORMAL');
    this.beginStmt = db.prepare('BEGIN IMMEDIATE');
    this.commitStmt = db.prepare('COMMIT');
    this.rollbackStmt = db.prepare('ROLLBACK');
  }

  /** run - queue an operation; `durable` ones resolve only once on stable storage. */
  run<T>(op: (db: Database) => T, durable: boolean): Promise<T> {
    if (this.closed) return Promise.reject(new Error('queue store is closed'));
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ op, durable, resolve: resolve as (v: unknown) => void, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /**
   * flush - run everything queued so far in one transaction. Optimistic: the
   * operations run back to back; only if one of them throws is the batch
   * rolled back and each operation run again in a transaction of its own, so
   * a failing operation keeps nothing and fails alone (cheaper than a
   * savepoint around every operation, since failures are rare).
   */
  flush(): void {
    this.scheduled = false;
    if (this.queue.length === 0 || this.held) return;
    // While an fsync is in flight, durable writes gain nothing by committing
    // now (they would wait for the next fsync anyway): let them gather and go
    // in one transaction the moment it ends. Fewer commits, fewer fsyncs.
    if (this.syncing && this.queue.every((p) => p.durable)) {
      this.flushAfterSync = true;
      return;
    }
    const batch = this.queue;
    this.queue = [];
    this.commitBatch(batch);
    if (this.waitingSync && !this.syncing) this.syncing = this.syncLoop();
  }

  /** commitBatch - one transaction for the batch; durable writes join the waiters of the next fsync. */
  private commitBatch(batch: Pending[]): void {
    let results: Array<{ ok: true; value: unknown } | { ok: false; error: unknown }>;
    try {
      results = this.runBatch(batch);
    } catch (error) {
      // The batch could not be committed at all: nothing of it is kept, every writer hears.
      for (const p of batch) p.reject(error);
      return;
    }
    this.stats.batches++;
    this.stats.operations += batch.length;
    batch.forEach((p, i) => {
      const r = results[i]!;
      if (!r.ok) p.reject(r.error);
      else if (p.durable) this.waiting.push({ value: r.value, resolve: p.resolve, reject: p.reject });
      else p.resolve(r.value);
    });
  }

  private get waitingSync(): boolean {
    return this.waiting.length > 0;
  }

  private begin(): void {
    this.beginStmt.run();
  }

  private commitTx(): void {
    this.fault?.();
    this.commitStmt.run();
    this.hooks?.committed();
  }

  private rollback(): void {
    if (this.db.inTransaction) this.rollbackStmt.run();
    this.hooks?.rolledBack();
  }

  /** runBatch - all operations in one transaction; on an operation's failure, one transaction each. */
  private runBatch(batch: Pending[]): Array<{ ok: true; value: unknown } | { ok: false; error: unknown }> {
    this.begin();
    let failed = false;
    const results: Array<{ ok: true; value: unknown } | { ok: false; error: unknown }> = [];
    try {
      for (const p of batch) {
        const value = p.op(this.db);
        this.hooks?.afterOperation?.();
        results.push({ ok: true, value });
      }
    } catch {
      failed = true;
    }
    if (!failed) {
      try {
        this.commitTx();
        return results;
      } catch (e) {
        this.rollback();
        throw e;
      }
    }
    this.rollback();
    if (batch.length === 1) {
      // Run it once more alone to learn its error (the state is as before it).
      return [this.runOne(batch[0]!)];
    }
    return batch.map((p) => this.runOne(p));
  }

  private runOne(p: Pending): { ok: true; value: unknown } | { ok: false; error: unknown } {
    this.begin();
    let value: unknown;
    try {
      value = p.op(this.db);
      this.hooks?.afterOperation?.();
    } catch (error) {
      this.rollback();
      return { ok: false, error };
    }
    try {
      this.commitTx();
    } catch (error) {
      this.rollback();
      return { ok: false, error };
    }
    return { ok: true, value };
  }

  /** syncLoop - fsync the WAL until no committed durable write is left waiting. */
  private async syncLoop(): Promise<void> {
    try {
      while (this.waiting.length) {
        const batch = this.waiting;
        this.waiting = [];
        try {
          const made = this.hooks?.syncStarting();
          if (!this.wal) this.wal = await open(this.walPath, 'r');
          await this.wal.sync();
          this.stats.syncs++;
          made?.();
          for (const w of batch) w.resolve(w.value);
        } catch (e) {
          for (const w of batch) w.reject(e);
        }
        if (this.flushAfterSync) {
          this.flushAfterSync = false;
          this.commitQueued();
        }
      }
    } finally {
      this.syncing = null;
    }
    // Writes that gathered while the last fsync ran, if the loop ended before taking them.
    if (this.flushAfterSync) {
      this.flushAfterSync = false;
      this.flush();
    }
  }

  /** commitQueued - commit what gathered during an fsync (its waiters join the sync loop). */
  private commitQueued(): void {
    const batch = this.queue;
    // Held: what gathered waits for release(), which flushes it.
    if (batch.length === 0 || this.held) return;
    this.queue = [];
    this.commitBatch(batch);
  }

  /**
   * hold - start no transaction until release(), or until maxMs have passed
   * whatever happens to the one who asked. The checkpointer (queue/store-worker)
   * asks for it when writes keep outrunning its checkpoints: with nothing
   * appended meanwhile a checkpoint takes in the whole WAL, and the next
   * transaction then writes the WAL from its start again instead of growing
   * it (SQLite restarts a WAL only once all of it is checkpointed). Nothing is
   * in a transaction when this runs (transactions are synchronous on this
   * thread); operations queued meanwhile wait, in order, and commit at release.
   */
  hold(maxMs: number): void {
    if (this.closed) return;
    this.stats.holds++;
    if (this.held) clearTimeout(this.held);
    // Not unref'd: writes waiting on the hold keep the process alive until it ends.
    this.held = setTimeout(() => this.release(), maxMs);
  }

  /** release - end a hold: what gathered during it commits at the next turn. */
  release(): void {
    if (!this.held) return;
    clearTimeout(this.held);
    this.held = null;
    if (this.queue.length && !this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Whether a hold is in force (for tests and statistics). */
  get holding(): boolean {
    return this.held !== null;
  }

  /** close - commit and sync what is queued, then refuse new work. */
  async close(): Promise<void> {
    this.release();
    this.flush();
    while (this.syncing) await this.syncing;
    this.closed = true;
    await this.wal?.close();
    this.wal = null;
  }
}
