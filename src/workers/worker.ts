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
import { isMessage, type ToPrimary, type ToWorker, type WorkerStats } from './messages.js';
import { Outbox } from './outbox.js';
import { PrimaryGate } from './primary-gate.js';

/** How often at most a worker reports its counters. */
const STATS_MS = 250;

/** write - one IPC message to the primary (workers/outbox: every message of a turn in one); false when the channel is gone. */
function write(m: ToPrimary, written?: (ok: boolean) => void): boolean {
  if (!process.connected || !process.send) return false;
  try {
    return process.send(m, undefined, {}, written ? (e: Error | null) => written(!e) : undefined) || true;
  } catch {
    return false;
  }
}

/** runWorker - the worker's whole life; resolves with its exit code. */
export function runWorker(err: (s: string) => void): Promise<number> {
  return new Promise<number>((resolveExit) => {
    let petrel: Petrel | null = null;
    let store: RemoteStore | null = null;
    let outbound: OutboundWorker | null = null;
    const outbox = new Outbox(write);
    const send = (m: ToPrimary): boolean => outbox.now(m);
    const gate = new PrimaryGate(outbox, () => process.connected === true);
    const held = new HeldBodies();
    let stopping = false;
    const stats: WorkerStats = { connections: 0, connects: 0, authFailures: 0, accepted: 0, acceptedOctets: 0, replies: {} };
    let statsTimer: NodeJS.Timeout | null = null;
    const flushStats = (): void => {
      statsTimer = null;
      stats.connections = petrel?.inbound?.connectionCount ?? 0;
      outbox.post({ t: 'stats', stats: { ...stats, replies: { ...stats.replies } } });
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
      store = new RemoteStore(config.data_dir, outbox, held);
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
      outbound = new OutboundWorker(config, workers, outbox, held);
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
          if (m.release) held.drop(m.release);
          if (m.jobs) outbound?.take(m.jobs);
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
          if (m.release) held.drop(m.release);
          outbound?.take(m.jobs);
          break;
        case 'backOff':
          outbound?.backOff(m.marks);
          break;
        case 'clearBackOff':
          outbound?.clearBackOff(m.hops);
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
