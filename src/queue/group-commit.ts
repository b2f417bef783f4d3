/*
 * queue/group-commit - many writers, one transaction, one sync.
 *
 * Writers from concurrent SMTP sessions and delivery tasks queue an operation;
 * at the next turn of the event loop all queued operations run in a single
 * SQLite transaction and share one fsync of the WAL. The disk's sync rate is
 * the physical limit of accepted messages per second; batching is how Petrel
 * goes past it (DESIGN.md, "Embedded queue").
 *
 * Invariants:
 * - an operation's promise resolves only after the COMMIT that contains it has
 *   returned (with synchronous=FULL when any operation in the batch asked for
 *   durability); it rejects if its own work failed, and then none of its
 *   writes are kept (each runs in its own SAVEPOINT);
 * - directories named by durable operations (body files renamed into the
 *   spool) are fsync'd before the transaction commits, so no row can point at
 *   a body whose directory entry could vanish;
 * - operations run in the order they were queued.
 */
import type { Database } from 'better-sqlite3';

interface Pending {
  op: (db: Database) => unknown;
  durable: boolean;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

export class GroupCommit {
  private queue: Pending[] = [];
  private dirs = new Set<string>();
  private scheduled = false;
  private closed = false;
  /** Statistics for benchmarks and metrics. */
  readonly stats = { batches: 0, operations: 0, durableBatches: 0 };
  /** Fault-injection seam for tests: throw to make the next commit fail. */
  fault: (() => void) | null = null;

  constructor(
    private readonly db: Database,
    private readonly syncDirs: (dirs: Set<string>) => void,
  ) {}

  /**
   * run - queue an operation. `durable` ops need the batch synced; `dirs` are
   * directories (with renamed files) to fsync before the commit.
   */
  run<T>(op: (db: Database) => T, durable: boolean, dirs?: Iterable<string>): Promise<T> {
    if (this.closed) return Promise.reject(new Error('queue store is closed'));
    if (dirs) for (const d of dirs) this.dirs.add(d);
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ op, durable, resolve: resolve as (v: unknown) => void, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /** flush - run everything queued so far in one transaction. */
  flush(): void {
    this.scheduled = false;
    const batch = this.queue;
    if (batch.length === 0) return;
    this.queue = [];
    const dirs = this.dirs;
    this.dirs = new Set();
    const durable = batch.some((p) => p.durable);
    const results: Array<{ ok: true; value: unknown } | { ok: false; error: unknown }> = [];
    try {
      if (dirs.size) this.syncDirs(dirs);
      this.db.pragma(`synchronous = ${durable ? 'FULL' : 'NORMAL'}`);
      this.db.exec('BEGIN IMMEDIATE');
      try {
        for (const p of batch) {
          this.db.exec('SAVEPOINT op');
          try {
            results.push({ ok: true, value: p.op(this.db) });
            this.db.exec('RELEASE op');
          } catch (error) {
            this.db.exec('ROLLBACK TO op');
            this.db.exec('RELEASE op');
            results.push({ ok: false, error });
          }
        }
        this.fault?.();
        this.db.exec('COMMIT');
      } catch (e) {
        if (this.db.inTransaction) this.db.exec('ROLLBACK');
        throw e;
      }
    } catch (error) {
      // The whole batch failed to commit: nothing of it is kept, every writer hears.
      for (const p of batch) p.reject(error);
      return;
    }
    this.stats.batches++;
    this.stats.operations += batch.length;
    if (durable) this.stats.durableBatches++;
    batch.forEach((p, i) => {
      const r = results[i]!;
      if (r.ok) p.resolve(r.value);
      else p.reject(r.error);
    });
  }

  /** close - commit what is queued, then refuse new work. */
  close(): void {
    this.flush();
    this.closed = true;
  }
}
