/*
 * workers/worker - one inbound worker process of `petrel start` with
 * `[server] workers` > 1: runs the SMTP and submission listeners and
 * sessions (parsing, policy, header work, line wrapping, DKIM signing) with a
 * Petrel in the "inbound" role, whose store is a RemoteStore: each message is
 * committed by the primary before its 250; and the SMTP delivery jobs the
 * primary hands over (workers/outbound-worker), whose results the primary
 * records (docs/architecture.md, "Processes").
 *
 * Life: says "hello", waits for the primary's "start" (the configuration in force, so a
 * worker started again after a reload runs what the others run), listens
 * (cluster: the primary opens the sockets and shares them, this process
 * accepts for itself), says "ready"; takes "reconfigure" and "stop". When the
 * primary is gone (the IPC channel closes) Node's cluster ends this process
 * at once: nothing it had not been told was committed was answered 250.
 *
 * Metrics: the session counters are summed here and sent to the primary at
 * most every STATS_MS; the primary adds them to its /metrics.
 *
 * Untrusted input: the SMTP clients, exactly as in one process.
 */
import { initTrace } from '../log/trace.js';
import { idRange } from '../core/ids.js';
import { Petrel } from '../petrel.js';
import type { Config } from '../config/schema.js';
import { RemoteStore } from './remote-store.js';
import { OutboundWorker } from './outbound-worker.js';
import { HeldBodies } from './held-bodies.js';
import type { ConnectionGate } from '../inbound/server.js';
import { AUTH_WAIT_UNKNOWN_MS, isMessage, type AdmitAnswer, type ConnOp, type InsertRequest, type ToPrimary, type ToWorker, type WorkerStats } from './messages.js';

/** How often at most a worker reports its counters. */
const STATS_MS = 250;

function send(m: ToPrimary, written?: () => void): boolean {
  if (!process.connected || !process.send) return false;
  try {
    return process.send(m, undefined, {}, written ? () => written() : undefined) || true;
  } catch {
    return false;
  }
}

/** How long a slot of an ended connection is kept for the next connection from the same address (no IPC for it). */
const KEEP_MS = 250;
/** Most slots kept at once by one worker. */
const MAX_KEPT = 64;
/** After a reclaim (a limit near), slots are given back at once for this long. */
const QUIET_MS = 1000;

/**
 * PrimaryGate - the connection limits and the failed-login throttle
 * counted by the primary for all the workers: each admit and release goes
 * to it, in order, batched per event-loop turn, and each failed login asks
 * it how long to wait; a lost primary refuses what is still asked (and a
 * failed login then waits the longest).
 *
 * Kept slots: the slot of an ended connection is kept for KEEP_MS (at most
 * MAX_KEPT of them), still counted by the primary, and the next connection
 * from the same address takes it without asking (a client that opens a
 * connection per message costs no round trip). The limits stay exact: a
 * kept slot counts as open, and when the primary would refuse a connection,
 * it first has every worker give its kept slots back ("reclaim") and then
 * decides; after a reclaim this worker keeps none for QUIET_MS.
 */
class PrimaryGate implements ConnectionGate {
  private next = 0;
  private ops: ConnOp[] = [];
  private readonly asking = new Map<number, { resolve: (r: AdmitAnswer['refusal']) => void; reject: (e: Error) => void }>();
  /** Failed logins waiting for the primary's count. */
  private readonly waits = new Map<number, (ms: number) => void>();
  /** Kept slots by address, and when each was kept (oldest first; an entry whose slot was taken meanwhile gives back a later one of its address early, which only frees it sooner). */
  private readonly kept = new Map<string, number>();
  private keptSize = 0;
  private readonly keptAt: Array<{ ip: string; at: number }> = [];
  private keepTimer: NodeJS.Timeout | null = null;
  private quietUntil = 0;

  admit(ip: string): Promise<AdmitAnswer['refusal']> {
    const k = this.kept.get(ip);
    if (k) {
      this.take(ip, k);
      return Promise.resolve(null);
    }
    const n = ++this.next;
    return new Promise((resolve, reject) => {
      this.asking.set(n, { resolve, reject });
      this.push({ n, ip });
    });
  }

  release(ip: string): void {
    if (this.keptSize >= MAX_KEPT || Date.now() < this.quietUntil || !process.connected) {
      this.push({ release: ip });
      return;
    }
    this.kept.set(ip, (this.kept.get(ip) ?? 0) + 1);
    this.keptSize++;
    this.keptAt.push({ ip, at: Date.now() });
    this.keepTimer ??= setTimeout(() => this.expire(), KEEP_MS);
  }

  /** reclaim - the primary is near a limit: every kept slot goes back now, and none is kept for a while. */
  reclaim(): void {
    this.quietUntil = Date.now() + QUIET_MS;
    for (const [ip, n] of this.kept) for (let i = 0; i < n; i++) this.push({ release: ip });
    this.kept.clear();
    this.keptSize = 0;
    this.keptAt.length = 0;
    this.flush();
    if (!send({ t: 'reclaimed' })) this.lost();
  }

  private take(ip: string, k: number): void {
    if (k > 1) this.kept.set(ip, k - 1);
    else this.kept.delete(ip);
    this.keptSize--;
  }

  /** expire - kept slots older than KEEP_MS go back to the primary. */
  private expire(): void {
    this.keepTimer = null;
    const old = Date.now() - KEEP_MS;
    while (this.keptAt.length && this.keptAt[0]!.at <= old) {
      const { ip } = this.keptAt.shift()!;
      const k = this.kept.get(ip);
      if (!k) continue;
      this.take(ip, k);
      this.push({ release: ip });
    }
    if (this.keptAt.length) this.keepTimer = setTimeout(() => this.expire(), Math.max(1, this.keptAt[0]!.at + KEEP_MS - Date.now()));
  }

  /** authFailed - a failed login: the primary counts it for all the workers and says how long to wait before answering. */
  authFailed(ip: string, user: string): Promise<number> {
    const n = ++this.next;
    return new Promise((resolve) => {
      this.waits.set(n, resolve);
      if (!send({ t: 'authFailed', n, ip, user })) this.lost();
    });
  }

  authWait(n: number, waitMs: number): void {
    this.waits.get(n)?.(waitMs);
    this.waits.delete(n);
  }

  private push(op: ConnOp): void {
    if (this.ops.length === 0) setImmediate(() => this.flush());
    this.ops.push(op);
  }

  private flush(): void {
    const ops = this.ops;
    this.ops = [];
    if (ops.length && !send({ t: 'conns', ops })) this.lost();
  }

  answered(answers: readonly AdmitAnswer[]): void {
    for (const a of answers) {
      this.asking.get(a.n)?.resolve(a.refusal);
      this.asking.delete(a.n);
    }
  }

  lost(): void {
    for (const w of this.asking.values()) w.reject(new Error('the primary is gone'));
    this.asking.clear();
    // Without the shared count a failed login waits the longest: a guesser gains nothing from a primary gone.
    for (const w of this.waits.values()) w(AUTH_WAIT_UNKNOWN_MS);
    this.waits.clear();
  }
}

/** runWorker - the worker's whole life; resolves with its exit code. */
export function runWorker(err: (s: string) => void): Promise<number> {
  return new Promise<number>((resolveExit) => {
    let petrel: Petrel | null = null;
    let store: RemoteStore | null = null;
    let outbound: OutboundWorker | null = null;
    const gate = new PrimaryGate();
    const held = new HeldBodies();
    let stopping = false;
    const stats: WorkerStats = { connections: 0, connects: 0, authFailures: 0, accepted: 0, acceptedOctets: 0, replies: {} };
    let statsTimer: NodeJS.Timeout | null = null;
    const flushStats = (): void => {
      statsTimer = null;
      stats.connections = petrel?.inbound?.connectionCount ?? 0;
      send({ t: 'stats', stats: { ...stats, replies: { ...stats.replies } } });
      stats.connects = stats.authFailures = stats.accepted = stats.acceptedOctets = 0;
      stats.replies = {};
    };
    const dirty = (): void => {
      statsTimer ??= setTimeout(flushStats, STATS_MS);
    };

    const stop = async (graceMs: number): Promise<void> => {
      if (stopping) return;
      stopping = true;
      // Sessions end and deliveries finish side by side; the last outcomes are on the channel before the exit.
      await Promise.all([
        petrel?.stop(graceMs).catch((e: Error) => err(`petrel worker ${process.pid}: error while stopping: ${e.message}`)),
        outbound?.stop(graceMs).catch((e: Error) => err(`petrel worker ${process.pid}: error while stopping deliveries: ${e.message}`)),
      ]);
      if (statsTimer) clearTimeout(statsTimer);
      flushStats();
      resolveExit(0);
    };

    const start = async (config: Config, workers: number): Promise<void> => {
      initTrace(config.log.level);
      store = new RemoteStore(config.data_dir, (items: InsertRequest[]) => send({ t: 'insert', items }), held);
      petrel = new Petrel(config, { role: 'inbound', store, gate, authFailed: (ip, user) => gate.authFailed(ip, user) });
      // The session hooks count here; the primary sums every worker's counts (see STATS_MS).
      const m = petrel.metrics;
      m.onReply = (code) => {
        stats.replies[code] = (stats.replies[code] ?? 0) + 1;
        dirty();
      };
      m.onAccepted = (size) => {
        stats.accepted++;
        stats.acceptedOctets += size;
        dirty();
      };
      m.onConnect = () => {
        stats.connects++;
        dirty();
      };
      m.onAuthFailure = () => {
        stats.authFailures++;
        dirty();
      };
      try {
        await petrel.start();
      } catch (e) {
        send({ t: 'failed', message: (e as Error).message });
        await petrel.stop(1000).catch(() => undefined);
        resolveExit(69);
        return;
      }
      outbound = new OutboundWorker(config, workers, send, held);
      send({ t: 'ready', bound: petrel.inbound?.bound ?? [] });
    };

    process.on('message', (m: unknown) => {
      if (!isMessage<ToWorker>(m)) return;
      switch (m.t) {
        case 'start':
          idRange(m.slot);
          void start(m.config, m.workers);
          break;
        case 'done':
          store?.answered(m.answers);
          break;
        case 'admitted':
          gate.answered(m.answers);
          break;
        case 'reclaim':
          gate.reclaim();
          break;
        case 'authWait':
          gate.authWait(m.n, m.waitMs);
          break;
        case 'reconfigure':
          void (petrel ? petrel.reconfigure(m.config) : Promise.reject(new Error('not started')))
            .then(() => send({ t: 'reconfigured', id: m.id, error: null }))
            .catch((e: Error) => send({ t: 'reconfigured', id: m.id, error: e.message }));
          break;
        case 'stop':
          void stop(m.graceMs);
          break;
        case 'deliver':
          // After "stop" the primary sends none (it delivers itself); a late one still runs (stop waits for it).
          outbound?.take(m.jobs);
          break;
        case 'backOff':
          outbound?.backOff(m.marks);
          break;
        case 'clearBackOff':
          outbound?.clearBackOff(m.hops);
          break;
        case 'release':
          held.drop(m.ids);
          break;
      }
    });
    // The primary drives stopping (it sends "stop"); a signal to this process alone stops it the same way.
    process.once('SIGTERM', () => void stop(5000));
    process.once('SIGINT', () => void stop(5000));
    process.on('SIGHUP', () => undefined);
    process.on('disconnect', () => {
      store?.lost();
      gate.lost();
    });
    send({ t: 'hello' });
  });
}
