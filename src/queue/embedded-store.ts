/*
 * queue/embedded-store - the queue layer over the embedded SQLite backend
 * (queue/backends/sqlite), as one object: what the server opens by default
 * ([queue] backend = "embedded") and what tests of the embedded queue make.
 * It adds nothing to either but the seams tests reach through (the group
 * commit, the spool, the database handle).
 */
import type { Database } from 'better-sqlite3';
import { SqliteBackend } from './backends/sqlite.js';
import type { GroupCommit } from './group-commit.js';
import { Queue, type QueueOptions } from './queue.js';
import type { Spool } from './spool.js';

export interface EmbeddedStoreOptions extends Omit<QueueOptions, 'node'> {
  dataDir: string;
  /** Bodies up to this size are stored inside the database (one sync for many). */
  inlineMax?: number;
}

export class EmbeddedStore extends Queue {
  readonly sqlite: SqliteBackend;

  constructor(options: EmbeddedStoreOptions) {
    const backend = new SqliteBackend({ dataDir: options.dataDir, ...(options.inlineMax !== undefined ? { inlineMax: options.inlineMax } : {}) });
    super(backend, { ...options, node: 'local' });
    this.sqlite = backend;
  }

  /** Test seam: make commits fail (storage failure). */
  get groupCommit(): GroupCommit {
    return this.sqlite.groupCommit;
  }

  get spool(): Spool {
    return this.sqlite.spool;
  }

  /** The database handle, for tests that look at rows directly. */
  get database(): Database {
    return this.sqlite.database;
  }
}
