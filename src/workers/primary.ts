/*
 * workers/primary - the primary's side of `[server] workers` > 1: starts the
 * worker processes (node:cluster; the primary opens the listening
 * sockets and shares them, each worker accepts for itself: see start()), commits the messages they
 * hand over into the one store, counts their connections against the
 * server's limits (conns), hands them SMTP delivery jobs and takes the
 * results back (workers/outbound), sums their counters for /metrics, forwards
 * reloads, restarts a worker that dies, and stops them first on SIGTERM
 * (docs/architecture.md, "Processes").
 *
 * Invariants:
 * - one durable commit path: every message goes through this process's
 *   QueueStore.insert (group commit; the embedded store keeps one writer);
 *   the worker's session answers 250 only after the answer sent from here
 *   once insert resolved;
 * - no accepted message depends on a worker: the queue, its claims and the
 *   record of every delivery live here; a worker holds only messages not yet
 *   answered 250 and deliveries whose claims are this process's (a dead
 *   worker's are deferred here: workers/outbound);
 * - a worker that dies is started again (after STEADY_MS of backoff when it
 *   keeps dying); once the inserts it had asked for have ended, its tmp
 *   folder (bodies it was still receiving) is removed;
 * - memory is bounded: a body over IPC is at most INLINE_BODY_MAX octets, and
 *   each worker's sessions are bounded by its own connection limits;
 * - answers are batched: the inserts that end together (one fsync) are
 *   answered in one message, sent as soon as they end.
 *
 * Untrusted input: the workers' messages are this server's own processes; a
 * body file path is accepted only inside that worker's tmp folder.
 */
import cluster, { type Worker } from 'node:cluster';
import { createReadStream } from 'node:fs';
import { rm, unlink } from 'node:fs/promises';
import type { Config } from '../config/schema.js';
import { idRange } from '../core/ids.js';
import { storageStatus } from '../core/storage-status.js';
import type { BoundListener } from '../inbound/server.js';
import type { Trace } from '../log/trace.js';
import type { Petrel } from '../petrel.js';
import { StorageFull } from '../queue/backend.js';
import { SpoolWriter } from '../queue/spool.js';
import { AUTH_WAIT_UNKNOWN_MS, isMessage, type AdmitAnswer, type ConnOp, type InsertAnswer, type InsertRequest, type ToPrimary, type ToWorker } from './messages.js';
import { workerTmpDir } from './remote-store.js';
import { OutboundJobs, WorkerDelivery } from './outbound.js';
import type { DeliveryAgent } from '../delivery/agent.js';
import type { SmtpAgent } from '../delivery/smtp/smtp-agent.js';

/** A worker that dies sooner than this after its start is started again only after this long (no fork loop). */
const STEADY_MS = 1000;
/** How long start() and a reload wait for the workers. */
const ANSWER_MS = 20_000;
/** How long admits wait for the workers' kept slots (a worker that does not answer is not waited for longer). */
const RECLAIM_MS = 2000;
/** At most one reclaim in this long (workers/worker keeps no slot for as long after one). */
const RECLAIM_QUIET_MS = 1000;

interface Slot {
  worker: Worker;
  /** 1..255: its share of the queue id counter; a worker started again takes the dead one's. */
  index: number;
  pid: number;
  startedAt: number;
  connections: number;
  /** Inserts asked for by this worker and not ended yet. */
  inflight: Set<Promise<void>>;
  answers: InsertAnswer[];
  ready: boolean;
  /** It said hello: it waits for "start". */
  hello: boolean;
  /** Its admitted connections by client address (given back when it dies). */
  clients: Map<string, number>;
}

export interface WorkerPoolOptions {
  count: number;
  trace: Trace;
}

/**
 * The old generation a worker's V8 heap may fill before its first full
 * collection (node --initial-old-space-size). A worker allocates array
 * buffers of about four times a message's size (socket reads, the body, the
 * IPC message's serialization and framing), and V8 counts them against the
 * old generation's limit: with a 100 KB message that limit, set from a live
 * heap of ~13 MB, was reached every ~35 messages, and the workers spent
 * ~0.4 ms of main thread and ~0.5 ms of V8's helper threads per message in
 * full collections (--trace-gc). With 64 MB they collect 4-5 times less
 * often: about 11 % less CPU per 100 KB message (median of 6 alternated
 * pairs), 10-20 MB more memory per worker, no change with small messages
 * (BENCHMARKS.md, "Issue 17, sixth round").
 */
export const WORKER_INITIAL_OLD_SPACE_MB = 64;

/** Node options that size V8's heap: an operator who gives one (command line or NODE_OPTIONS) decides the workers' heap too. */
const HEAP_SIZE_OPTION = /(^|\s)--(initial|max)[-_](old[-_]space|heap)[-_]size(=|\s|$)/;

/** workerExecArgv - the Node options a worker starts with: the primary's own, and the larger old generation unless the operator sized the heap. */
export function workerExecArgv(execArgv: readonly string[], nodeOptions: string): string[] {
  if (HEAP_SIZE_OPTION.test(nodeOptions) || execArgv.some((a) => HEAP_SIZE_OPTION.test(a))) return [...execArgv];
  return [...execArgv, `--initial-old-space-size=${WORKER_INITIAL_OLD_SPACE_MB}`];
}

export class WorkerPool {
  private readonly slots = new Map<number, Slot>();
  private stopping = false;
  private config!: Config;
  /** The queue side (set by start(); before it, workers only load). */
  private petrel: Petrel | null = null;
  private reloadSeq = 0;
  private readonly reloads = new Map<number, { waiting: Set<number>; errors: string[]; done: () => void }>();
  private readyWaiters: Array<() => void> = [];
  /** Why a worker could not start while start() waits (the server does not start); later ones are restarted. */
  private failure: string | null = null;
  private started = false;
  bound: BoundListener[] = [];
  /** Connections admitted in all the workers: [smtp] max_connections and max_connections_per_client are the server's. */
  private readonly open = { total: 0, perClient: new Map<string, number>() };
  /** A reclaim of the workers' kept slots in progress, and the admits waiting for it (see conns). */
  private reclaiming: { waiting: Set<number>; timer: NodeJS.Timeout } | null = null;
  private readonly held: Array<{ slot: Slot; n: number; ip: string }> = [];
  private lastReclaim = 0;
  /** Workers started again after dying (for tests and metrics). */
  restarts = 0;
  /** SMTP delivery jobs handed to the workers (workers/outbound). */
  readonly outbound = new OutboundJobs((id, jobs, release) => {
    const slot = this.slots.get(id);
    return slot ? this.tell(slot, release ? { t: 'deliver', jobs, release } : { t: 'deliver', jobs }) : false;
  });

  constructor(private readonly options: WorkerPoolOptions) {}

  /** smtpAgent - the scheduler's smtp agent: hands jobs to the workers, keeps the rest with `local` (workers/outbound). */
  smtpAgent(local: SmtpAgent): DeliveryAgent {
    return new WorkerDelivery(local, this.outbound, () => (this.petrel?.pool.sharedBy ?? 1) * this.options.count);
  }

  /** Open SMTP connections in all the workers (their last reports). */
  get connections(): number {
    let n = 0;
    for (const s of this.slots.values()) n += s.connections;
    return n;
  }

  /** The workers' process ids now. */
  get pids(): number[] {
    return [...this.slots.values()].map((s) => s.pid);
  }

  /**
   * launch - fork the workers now, before the queue side starts: they load
   * their code while this process opens the queue (both cores busy at start
   * instead of one after the other), and wait for start().
   */
  launch(config: Config): void {
    this.config = config;
    // Round-robin (cluster's default on Linux) has this process accept every connection and pass it
    // on: measured, that costs the primary, the one commit path, more per message than the whole SMTP
    // session saves it (docs/architecture.md, "Processes"). Shared listening sockets cost it nothing:
    // the kernel wakes the workers, and the one that accepts first (the least busy) takes it.
    cluster.schedulingPolicy = cluster.SCHED_NONE;
    cluster.setupPrimary({ serialization: 'advanced', execArgv: workerExecArgv(process.execArgv, process.env.NODE_OPTIONS ?? '') });
    cluster.on('exit', (worker, code, signal) => this.exited(worker, code, signal));
    idRange(0);
    for (let i = 1; i <= this.options.count; i++) this.fork(i);
  }

  /** start - the queue side is up: the workers listen; resolves once each does (with what they listen on), or rejects when one cannot. */
  async start(petrel: Petrel): Promise<BoundListener[]> {
    this.petrel = petrel;
    // Back-offs found here (or told by another node) and an operator's retry reach every worker's pool.
    petrel.pool.onMarked = (key, until, error) => this.toAll({ t: 'backOff', marks: [{ key, until, error }] });
    petrel.pool.onCleared = (hop) => this.toAll({ t: 'clearBackOff', hops: [hop] });
    // A body a worker held for a message's first delivery is released when the pass over that message ends.
    petrel.scheduler.onPassEnd = (queueId) => this.outbound.passEnded(queueId);
    for (const s of this.slots.values()) if (s.hello) this.tell(s, { t: 'start', config: this.config, slot: s.index, workers: this.options.count });
    const deadline = Date.now() + ANSWER_MS;
    while (!this.failure && [...this.slots.values()].some((s) => !s.ready)) {
      if (Date.now() > deadline) throw new Error('inbound workers did not start in time');
      await new Promise<void>((r) => {
        this.readyWaiters.push(r);
        setTimeout(r, 200).unref();
      });
    }
    if (this.failure) throw new Error(this.failure);
    this.started = true;
    return this.bound;
  }

  private fork(index: number): void {
    const worker = cluster.fork({ PETREL_WORKER: '1' });
    const slot: Slot = { worker, index, pid: worker.process.pid ?? 0, startedAt: Date.now(), connections: 0, inflight: new Set(), answers: [], ready: false, hello: false, clients: new Map() };
    this.slots.set(worker.id, slot);
    worker.on('message', (m: unknown) => this.received(slot, m));
    // A send to a worker that is going away fails: its exit is handled by exited().
    worker.on('error', () => undefined);
  }

  private tell(slot: Slot, m: ToWorker): boolean {
    if (!slot.worker.isConnected()) return false;
    try {
      slot.worker.send(m);
      return true;
    } catch {
      // Gone: exited() takes over.
      return false;
    }
  }

  private toAll(m: ToWorker): void {
    for (const s of this.slots.values()) if (s.ready) this.tell(s, m);
  }

  private received(slot: Slot, m: unknown): void {
    if (!isMessage<ToPrimary>(m)) return;
    switch (m.t) {
      case 'many':
        // Everything the worker said in one turn (workers/outbox), in its order.
        for (const item of m.items) this.received(slot, item);
        break;
      case 'hello':
        // Its message listener is in place: once the queue side is up, it can be told what to run.
        slot.hello = true;
        if (this.petrel) this.tell(slot, { t: 'start', config: this.config, slot: slot.index, workers: this.options.count });
        break;
      case 'ready':
        slot.ready = true;
        this.outbound.ready(slot.worker.id);
        if (!this.bound.length) this.bound = m.bound;
        for (const w of this.readyWaiters.splice(0)) w();
        break;
      case 'failed':
        if (!this.started) this.failure ??= m.message;
        this.options.trace.error({ pid: slot.pid, err: m.message }, 'inbound worker cannot start');
        for (const w of this.readyWaiters.splice(0)) w();
        break;
      case 'insert':
        for (const req of m.items) this.insert(slot, req);
        break;
      case 'conns':
        this.conns(slot, m.ops);
        break;
      case 'reclaimed':
        this.reclaimed(slot.worker.id);
        break;
      case 'authFailed':
        // One throttle for every worker: a guesser gains nothing by landing on another process.
        this.tell(slot, { t: 'authWait', n: m.n, waitMs: this.petrel ? this.petrel.authThrottle.failed(m.ip, m.user) : AUTH_WAIT_UNKNOWN_MS });
        break;
      case 'stats': {
        if (!this.petrel) break;
        const metrics = this.petrel.metrics;
        slot.connections = m.stats.connections;
        for (let i = 0; i < m.stats.connects; i++) metrics.onConnect();
        for (let i = 0; i < m.stats.authFailures; i++) metrics.onAuthFailure();
        if (m.stats.accepted) {
          // The octets go with the first one: the counters are sums.
          metrics.onAccepted(m.stats.acceptedOctets);
          for (let i = 1; i < m.stats.accepted; i++) metrics.onAccepted(0);
        }
        for (const [code, n] of Object.entries(m.stats.replies)) for (let i = 0; i < n; i++) metrics.onReply(Number(code));
        break;
      }
      case 'outcomes':
        this.outbound.outcomes(slot.worker.id, m.items);
        break;
      case 'tlsResults':
        for (const r of m.items) this.petrel?.tlsRecorder.record(r);
        break;
      case 'backOff':
        // As if this process had found it: the other workers are told (onMarked), and the cluster's other nodes (onDead).
        for (const b of m.marks) {
          this.petrel?.pool.markDead(b.key, b.until, new Error(b.error));
          this.petrel?.pool.onDead?.(b.key, b.until, b.error);
        }
        break;
      case 'reconfigured': {
        const r = this.reloads.get(m.id);
        if (!r) break;
        if (m.error) r.errors.push(`worker ${slot.pid}: ${m.error}`);
        r.waiting.delete(slot.worker.id);
        if (r.waiting.size === 0) r.done();
        break;
      }
    }
  }

  /**
   * conns - count a worker's connections against the server's limits, in
   * the order it sent them; answers the admits at once (one message). An
   * admit that would be refused first has every worker give back the slots
   * it keeps for reuse (workers/worker PrimaryGate): the admits wait, in
   * order, until each has answered (at most RECLAIM_MS), then are decided.
   * One reclaim at most per RECLAIM_QUIET_MS (the workers keep no slot meanwhile).
   */
  private conns(slot: Slot, ops: readonly ConnOp[]): void {
    const answers: AdmitAnswer[] = [];
    for (const op of ops) {
      if ('release' in op) {
        this.count(slot, op.release, -1);
        continue;
      }
      if (this.reclaiming) {
        this.held.push({ slot, n: op.n, ip: op.ip });
        continue;
      }
      const refusal = this.judge(op.ip);
      if (refusal && Date.now() >= this.lastReclaim + RECLAIM_QUIET_MS && this.startReclaim()) {
        this.held.push({ slot, n: op.n, ip: op.ip });
        continue;
      }
      if (!refusal) this.count(slot, op.ip, 1);
      answers.push({ n: op.n, refusal });
    }
    if (answers.length) this.tell(slot, { t: 'admitted', answers });
  }

  /** judge - the refusal a new connection from `ip` gets now, or null. */
  private judge(ip: string): AdmitAnswer['refusal'] {
    const limits = this.config.smtp;
    if (this.open.total >= limits.max_connections) return 'tooManyConnections';
    if ((this.open.perClient.get(ip) ?? 0) >= limits.max_connections_per_client) return 'tooManyFromClient';
    return null;
  }

  /** startReclaim - ask every ready worker for its kept slots; false when there is none to ask. */
  private startReclaim(): boolean {
    const asked = [...this.slots.values()].filter((s) => s.ready && s.worker.isConnected());
    if (!asked.length) return false;
    this.lastReclaim = Date.now();
    const timer = setTimeout(() => this.endReclaim(), RECLAIM_MS);
    this.reclaiming = { waiting: new Set(asked.map((s) => s.worker.id)), timer };
    for (const s of asked) this.tell(s, { t: 'reclaim' });
    return true;
  }

  /** reclaimed - worker `id` gave its kept slots back (or is gone). */
  private reclaimed(id: number): void {
    if (!this.reclaiming) return;
    this.reclaiming.waiting.delete(id);
    if (this.reclaiming.waiting.size === 0) this.endReclaim();
  }

  /** endReclaim - decide the admits held meanwhile, in order. */
  private endReclaim(): void {
    if (!this.reclaiming) return;
    clearTimeout(this.reclaiming.timer);
    this.reclaiming = null;
    const bySlot = new Map<Slot, AdmitAnswer[]>();
    for (const h of this.held.splice(0)) {
      // A worker gone meanwhile: its connection is gone with it, nothing to count.
      if (this.slots.get(h.slot.worker.id) !== h.slot) continue;
      const refusal = this.judge(h.ip);
      if (!refusal) this.count(h.slot, h.ip, 1);
      let list = bySlot.get(h.slot);
      if (!list) bySlot.set(h.slot, (list = []));
      list.push({ n: h.n, refusal });
    }
    for (const [s, answers] of bySlot) this.tell(s, { t: 'admitted', answers });
  }

  /** count - one more (or fewer) admitted connection from `ip` in `slot`; entries at 0 are dropped (the tables stay bounded). */
  private count(slot: Slot, ip: string, delta: 1 | -1): void {
    const mine = (slot.clients.get(ip) ?? 0) + delta;
    if (mine < 0) return;
    if (mine === 0) slot.clients.delete(ip);
    else slot.clients.set(ip, mine);
    this.open.total += delta;
    const all = (this.open.perClient.get(ip) ?? 0) + delta;
    if (all <= 0) this.open.perClient.delete(ip);
    else this.open.perClient.set(ip, all);
  }

  /** insert - commit one message a worker hands over, then queue its answer. */
  private insert(slot: Slot, req: InsertRequest): void {
    const p = this.commit(slot, req).then(
      (held): InsertAnswer => (held ? { n: req.n, ok: true, held } : { n: req.n, ok: true }),
      (e: unknown): InsertAnswer => ({ n: req.n, ok: false, full: e instanceof StorageFull || storageStatus(e, 'spool') === '4.3.1', message: (e as Error)?.message ?? String(e) }),
    );
    const tracked = p.then((answer) => {
      slot.inflight.delete(tracked);
      // nextTick, not setImmediate: the commits one fsync made durable resolve in the same run of
      // microtasks, so they still go in one message, and it leaves now instead of after every other
      // I/O callback of this loop turn (the deliveries' socket reads): measured, the worker's insert
      // round trip beyond the commit fell from 5.8-6.9 to 5.0-5.2 ms at 10 recipients (BENCHMARKS.md).
      if (slot.answers.length === 0) process.nextTick(() => this.answer(slot));
      slot.answers.push(answer);
    });
    slot.inflight.add(tracked);
  }

  private answer(slot: Slot): void {
    const answers = slot.answers;
    slot.answers = [];
    if (!answers.length) return;
    // Delivery jobs (of the fresh messages just answered, often) and releases waiting for this worker ride along.
    this.tell(slot, { t: 'done', answers, ...this.outbound.take(slot.worker.id) });
  }

  /** commit - store the message; true when the worker is to keep holding its body for the first delivery (workers/held-bodies). */
  private async commit(slot: Slot, req: InsertRequest): Promise<true | undefined> {
    const { store, scheduler } = this.petrel!;
    const message = req.message;
    const body = store.createBody(message.queueId);
    try {
      if (req.file !== null) {
        if (req.file !== `${workerTmpDir(this.config.data_dir, slot.pid)}/${message.queueId}`) throw new Error(`body file outside the worker's folder: ${req.file}`);
        if (body instanceof SpoolWriter) await body.adopt(req.file, message.size);
        else {
          // A store that keeps bodies elsewhere (PostgreSQL): copy the file into it.
          for await (const chunk of createReadStream(req.file, { highWaterMark: 64 * 1024 })) await body.write(chunk as Buffer);
          await unlink(req.file).catch(() => undefined);
        }
      } else if (req.body) {
        await body.write(Buffer.from(req.body.buffer, req.body.byteOffset, req.body.byteLength));
      }
      // The fresh-message fast path, as enqueue takes it in one process.
      const lease = scheduler.fresh.room(message.recipients.length) ? store.leaseMs : undefined;
      const claim = await store.insert(message, body, {
        ...(lease === undefined ? {} : { claimLeaseMs: lease }),
        ...(req.events?.length ? { events: req.events } : {}),
      });
      if (!claim) return undefined;
      // Registered before the scheduler starts the jobs (the first of them asks at once who holds the body).
      const hold = req.hold === true && req.body !== null && claim.recipients.length > 0 && slot.ready;
      if (hold) {
        this.outbound.hold(message.queueId, slot.worker.id);
        // The worker delivers from its copy; one kept here would live as long as the delivery (tens of ms) for
        // nothing. One large buffer fewer per message (its effect on CPU was within the noise: BENCHMARKS.md,
        // "Issue 17, eighth round"). A job that does not go to the holder after all reads the body from the store.
        delete claim.body;
      }
      if (scheduler.fresh.take(claim) && hold) return true;
      if (hold) this.outbound.passEnded(message.queueId);
      return undefined;
    } catch (e) {
      await body.abort().catch(() => undefined);
      if (req.file) await unlink(req.file).catch(() => undefined);
      throw e;
    }
  }

  private exited(worker: Worker, code: number | null, signal: string | null): void {
    const slot = this.slots.get(worker.id);
    if (!slot) return;
    this.slots.delete(worker.id);
    if (!this.stopping) this.options.trace.error({ pid: slot.pid, code, signal }, 'worker died: starting another');
    // Its delivery jobs end (what it did not report is deferred) once every message it sent has been read:
    // the channel closes after the last one.
    this.outbound.leaving(worker.id);
    const ended = (): void => this.outbound.gone(worker.id, slot.pid);
    if (worker.isConnected()) {
      const timer = setTimeout(ended, 2000);
      worker.once('disconnect', () => {
        clearTimeout(timer);
        ended();
      });
    } else ended();
    // Its connections are gone with it.
    for (const [ip, n] of slot.clients) for (let i = 0; i < n; i++) this.count(slot, ip, -1);
    // Its pending reloads and a reclaim count as answered: it is gone.
    this.reclaimed(worker.id);
    for (const r of this.reloads.values()) {
      r.waiting.delete(worker.id);
      if (r.waiting.size === 0) r.done();
    }
    // The bodies it was still receiving: removed once the inserts it asked for have ended.
    void Promise.allSettled([...slot.inflight]).then(() => rm(workerTmpDir(this.config.data_dir, slot.pid), { recursive: true, force: true }).catch(() => undefined));
    if (this.stopping || this.failure) return;
    this.restarts++;
    const soon = Date.now() - slot.startedAt < STEADY_MS;
    if (soon) setTimeout(() => !this.stopping && this.fork(slot.index), STEADY_MS).unref();
    else this.fork(slot.index);
  }

  /** reconfigure - every worker takes `config` (after the primary has); rejects naming the workers that refused it. */
  async reconfigure(config: Config): Promise<void> {
    this.config = config;
    const slots = [...this.slots.values()];
    if (!slots.length) return;
    const id = ++this.reloadSeq;
    const errors: string[] = [];
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        errors.push('a worker did not answer in time');
        resolve();
      }, ANSWER_MS);
      this.reloads.set(id, {
        waiting: new Set(slots.map((s) => s.worker.id)),
        errors,
        done: () => {
          clearTimeout(timer);
          resolve();
        },
      });
      for (const s of slots) this.tell(s, { t: 'reconfigure', id, config });
    });
    this.reloads.delete(id);
    if (errors.length) throw new Error(errors.join('; '));
  }

  /** stop - the workers stop accepting, finish their replies (within graceMs) and exit; the commits they wait for are made meanwhile. */
  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    // From now on this process delivers what the scheduler still starts; the workers finish theirs.
    this.outbound.stopping = true;
    const slots = [...this.slots.values()];
    const gone = slots.map((s) => new Promise<void>((r) => (s.worker.isDead() ? r() : s.worker.once('exit', () => r()))));
    for (const s of slots) this.tell(s, { t: 'stop', graceMs });
    const hard = setTimeout(() => {
      for (const s of slots) if (!s.worker.isDead()) s.worker.process.kill('SIGKILL');
    }, graceMs + 2000);
    await Promise.all(gone);
    clearTimeout(hard);
    await Promise.allSettled(slots.flatMap((s) => [...s.inflight]));
  }
}
