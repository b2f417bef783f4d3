/*
 * workers/remote-store - the queue as an inbound worker process sees it: the
 * two calls enqueue makes (createBody, insert), both ending in the primary,
 * which owns the one real store (docs/architecture.md, "Processes").
 *
 * - createBody: a WorkerBody keeps the body in memory up to INLINE_BODY_MAX
 *   octets, past that in its own file under data_dir/spool/tmp/w<pid>/ (so
 *   memory per session stays bounded, as in one process).
 * - insert: a file body is fsync'd and closed here (the costly sync of a large
 *   body is spent in the worker); then the envelope, the small body or the
 *   file's path, and the extra events go to the primary, batched with the
 *   other sessions' inserts of the same event-loop turn (and with the rest of
 *   what the worker says in that turn: workers/outbox). It resolves only when
 *   the primary answers that its store committed the message: only then may
 *   the session say 250 (invariant 1, unchanged). A small body is also held
 *   here for the message's first delivery when there is room
 *   (workers/held-bodies): dropped again unless the primary answers "held".
 *
 * Invariants: nothing here is durable by itself; a worker that dies before
 * the answer leaves at most a file under its own tmp folder, which the
 * primary removes (workers/primary) and a start sweeps (queue/spool). A lost
 * primary (the IPC channel closed) fails every pending insert: the client
 * gets 451 or a dropped connection, never 250.
 *
 * Every other QueueStore call is the primary's business: here it throws.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { StorageFull } from '../queue/backend.js';
import { SpillingBody } from '../queue/spool.js';
import type { BodyWriter, Claim, InsertOptions, NewMessage, QueueStore } from '../queue/store.js';
import type { HeldBodies } from './held-bodies.js';
import type { Outbox, OutboxPart } from './outbox.js';
import { INLINE_BODY_MAX, type InsertAnswer, type InsertRequest, type ToPrimary } from './messages.js';

/** The folder of this worker's large bodies while they arrive. */
export function workerTmpDir(dataDir: string, pid: number): string {
  return join(dataDir, 'spool', 'tmp', `w${pid}`);
}

/** WorkerBody - one body being received in a worker: memory while small, then a file in the worker's own folder. */
export class WorkerBody extends SpillingBody {
  constructor(
    queueId: string,
    private readonly dir: string,
  ) {
    super(queueId, INLINE_BODY_MAX);
  }

  /** The file's path ('' while the body is in memory). */
  get path(): string {
    return this.filePath;
  }

  protected async filePathFor(): Promise<string> {
    await mkdir(this.dir, { recursive: true });
    return join(this.dir, this.queueId);
  }

  /** finish - the inline body, or null once a file body is fsync'd and closed (its path is `path`). */
  async finish(): Promise<Buffer | null> {
    if (this.failure) throw this.failure;
    const inline = this.inline();
    if (inline) return inline;
    await this.syncFile();
    return null;
  }
}

const notHere = (what: string) => (): never => {
  throw new Error(`${what}: not available in an inbound worker process (the primary owns the queue)`);
};

export class RemoteStore implements QueueStore, OutboxPart {
  private next = 0;
  private readonly waiting = new Map<number, { resolve: () => void; reject: (e: Error) => void; queueId: string; held: boolean }>();
  private batch: InsertRequest[] = [];
  private closed = false;
  readonly leaseMs = 0;
  private readonly tmpDir: string;

  constructor(
    dataDir: string,
    /** Where the batches of inserts leave (one IPC message per turn with the worker's other messages). */
    private readonly outbox: Outbox,
    /** Where small bodies are held for their first delivery from this worker (none: never held). */
    private readonly held: HeldBodies | null = null,
  ) {
    this.tmpDir = workerTmpDir(dataDir, process.pid);
  }

  /** How many inserts wait for the primary's answer. */
  get pending(): number {
    return this.waiting.size;
  }

  async open(): Promise<void> {}
  async close(): Promise<void> {}

  createBody(queueId: string): BodyWriter {
    return new WorkerBody(queueId, this.tmpDir);
  }

  async insert(message: NewMessage, body: BodyWriter, options: InsertOptions = {}): Promise<Claim | null> {
    if (!(body instanceof WorkerBody)) throw new Error('body writer does not belong to this store');
    if (this.closed) throw new Error('the queue process is gone');
    const inline = await body.finish();
    const n = ++this.next;
    const req: InsertRequest = { n, message, body: inline, file: inline ? null : body.path };
    if (options.events?.length) req.events = options.events;
    // Held from now on: the primary's delivery job may reach this worker before the answer does.
    const held = inline !== null && this.held !== null && this.held.keep(message.queueId, inline);
    if (held) req.hold = true;
    const done = new Promise<void>((resolve, reject) => this.waiting.set(n, { resolve, reject, queueId: message.queueId, held }));
    this.batch.push(req);
    this.outbox.soon(this);
    await done;
    // The claim of the fresh-message fast path is the primary's: it hands it to its scheduler.
    return null;
  }

  /** gathered - the inserts of this turn, for the outbox. */
  gathered(): ToPrimary[] {
    if (this.batch.length === 0) return [];
    const items = this.batch;
    this.batch = [];
    return [{ t: 'insert', items }];
  }

  /** sent - the channel is gone: nothing pending can be confirmed. */
  sent(ok: boolean): void {
    if (!ok) this.lost();
  }

  /** answered - the primary's answers to earlier inserts. */
  answered(answers: readonly InsertAnswer[]): void {
    for (const a of answers) {
      const w = this.waiting.get(a.n);
      if (!w) continue;
      this.waiting.delete(a.n);
      if (w.held && !(a.ok && a.held)) this.held?.drop([w.queueId]);
      if (a.ok) w.resolve();
      else w.reject(a.full ? new StorageFull(new Error(a.message)) : new Error(a.message));
    }
  }

  /** lost - the primary is gone: nothing pending can be confirmed any more. */
  lost(): void {
    this.closed = true;
    this.held?.clear();
    for (const [n, w] of this.waiting) {
      this.waiting.delete(n);
      w.reject(new Error('the queue process is gone: not committed'));
    }
  }

  readBody = notHere('readBody') as (queueId: string) => Promise<Readable>;
  readBodyBuffer = notHere('readBodyBuffer');
  claimDue = notHere('claimDue');
  nextDueAt = notHere('nextDueAt');
  countDue = notHere('countDue');
  recordOutcomes = notHere('recordOutcomes');
  mayDeliver(): boolean {
    return false;
  }
  endClaim(): void {}
  nodes = notHere('nodes');
  getMessage = notHere('getMessage');
  getRecipients = notHere('getRecipients');
  pendingReports = notHere('pendingReports');
  reportRecipients = notHere('reportRecipients');
  quarantine = notHere('quarantine');
  summary = notHere('summary');
  list = notHere('list');
  durableEventSeq(): number {
    return 0;
  }
  onEvents(): void {}
  eventsAfter = notHere('eventsAfter');
  appendEvents = notHere('appendEvents');
  onDue(): void {}
  retryNow = notHere('retryNow');
  suspend = notHere('suspend');
  resume = notHere('resume');
  remove = notHere('remove');
  release = notHere('release');
  redirect = notHere('redirect');
  overrides = notHere('overrides');
  markDown = notHere('markDown');
  recipientPage = notHere('recipientPage');
  scanRecipients = notHere('scanRecipients');
  messageStates = notHere('messageStates');
  countByState = notHere('countByState');
  eventsOf = notHere('eventsOf');
  track = notHere('track');
  pruneEvents = notHere('pruneEvents');
}
