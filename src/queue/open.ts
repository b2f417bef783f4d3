/*
 * queue/open - the one place the queue backend is chosen ([queue] backend):
 * the server, the admin commands' offline path and the audit all open the
 * queue through here, so they all see the same queue.
 *
 * - embedded: SQLite + spool files under data_dir (the default; no server);
 * - postgres: the shared queue of a cluster at [queue] postgres_url, this
 *   node named [queue] node_name, claims lasting [queue] lease.
 * A CLI reader (recover: false) never recovers claims and never creates an
 * embedded queue where none exists (QueueUnavailable).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import type { Trace } from '../log/trace.js';
import { PostgresBackend } from './backends/postgres.js';
import { EmbeddedStore } from './embedded-store.js';
import { Queue } from './queue.js';

/** QueueUnavailable - the queue cannot be opened (no embedded queue yet, database unreachable): exit 69. */
export class QueueUnavailable extends Error {
  constructor(message: string, cause?: unknown) {
    super(message, { cause });
    this.name = 'QueueUnavailable';
  }
}

/** redactUrl - a database URL fit to print: the password replaced by "***". */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return url.replace(/\/\/([^:/@]*):[^@]*@/, '//$1:***@');
  }
}

export interface OpenQueueOptions {
  /** Crash recovery and background work: true for the server, false for CLI readers. */
  recover: boolean;
  trace?: Pick<Trace, 'warn' | 'error'>;
}

/** makeQueue - the queue the configuration names, not yet opened (the server opens it in start()). */
export function makeQueue(config: Config, options: OpenQueueOptions): Queue {
  const q = config.queue;
  const common = { leaseMs: q.lease, recover: options.recover, ...(options.trace ? { trace: options.trace } : {}) };
  if (q.backend === 'postgres') {
    if (!q.postgres_url) throw new QueueUnavailable('[queue] backend = "postgres" needs [queue] postgres_url');
    return new Queue(new PostgresBackend({ url: q.postgres_url, node: q.node_name, leaseMs: q.lease }), { ...common, node: q.node_name });
  }
  return new EmbeddedStore({ dataDir: config.data_dir, ...common });
}

/**
 * openQueue - open the configured queue; a database that cannot be reached
 * is a QueueUnavailable naming the URL without its password.
 */
export async function openQueue(config: Config, options: OpenQueueOptions): Promise<Queue> {
  if (config.queue.backend === 'embedded' && !options.recover && !existsSync(join(config.data_dir, 'queue', 'queue.db'))) {
    throw new QueueUnavailable(`no queue in ${config.data_dir}`);
  }
  const queue = makeQueue(config, options);
  try {
    await queue.open();
  } catch (e) {
    throw describeOpenFailure(config, e);
  }
  return queue;
}

/** describeOpenFailure - the error to show when the queue does not open. */
export function describeOpenFailure(config: Config, e: unknown): Error {
  if (config.queue.backend !== 'postgres' || e instanceof QueueUnavailable) return e as Error;
  const err = e as NodeJS.ErrnoException;
  const netCodes = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ETIMEDOUT', 'ECONNRESET', 'EAI_AGAIN', '57P03', '3D000', '28P01', '28000']);
  if (err?.code && netCodes.has(err.code)) {
    return new QueueUnavailable(`cannot reach the queue database ${redactUrl(config.queue.postgres_url)}: ${err.message}`, e);
  }
  return e as Error;
}
