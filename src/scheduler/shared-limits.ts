/*
 * scheduler/shared-limits - per-destination limits that hold for a cluster,
 * not per node (several nodes on one PostgreSQL queue).
 *
 * Two things are shared, each the cheapest way that keeps the promise:
 * - connections per destination: each node takes its share of
 *   `max_connections_per_destination` (the limit divided by the nodes alive,
 *   rounded down, at least 1), so three nodes never open three times the
 *   limit to one receiver. A share needs no write per connection and cannot
 *   leak when a node dies (a shared counter in the database would need both
 *   a write per connection open and close and a sweep of a dead node's
 *   counts); its cost is that an idle node's share goes unused.
 *   The traffic-shaping limits of a provider (delivery/smtp/shaping:
 *   max_connections, connection_rate, message_rate) are shared the same way:
 *   the pool divides them by the same count of nodes. A throttle reply
 *   slows the node that got it only.
 * - a provider's suspension (a "blocked" reply): the node that met it
 *   writes a mark ("shaping:<provider>", until, the reply); the others
 *   suspend too when they read it, so the block costs one attempt in the
 *   cluster, not one per node. Ending it on any node (`petrel queue
 *   resume`) removes the mark; the others, finding it gone, resume too and
 *   make the recipients they had put back due at once. A node never adopts
 *   its own mark (its resume may not have reached the database yet).
 * - dead-destination back-off: the node whose connection attempt fails
 *   writes a "down" mark (next hop, until, the failure) into the queue's
 *   overrides; every node reads the marks every second and backs off too, so
 *   a dead destination is probed by one connection at a time per node
 *   (delivery/smtp/pool), not by every job of every node.
 *   Expired marks are removed by whoever reads them.
 * On a single node none of this runs.
 */
import type { ConnectionPool } from '../delivery/smtp/pool.js';
import type { Shaper } from '../delivery/smtp/shaping.js';
import type { Trace } from '../log/trace.js';
import type { QueueStore } from '../queue/store.js';

export interface SharedLimitsOptions {
  store: QueueStore;
  pool: ConnectionPool;
  node: string;
  trace: Pick<Trace, 'warn'>;
  /** How often the marks are read (ms); nodes are counted every tenth time. */
  intervalMs?: number;
  /** Traffic shaping, when on: its suspensions are shared. */
  shaper?: Shaper | null;
  /** Another node ended a suspension: make due the destinations this node had put back meanwhile. */
  retryHeld?: (destinations: string[], provider: string) => Promise<unknown>;
}

/** The mark of a provider's suspension among the overrides (kind "down"). */
const SHAPING = 'shaping:';

export class SharedLimits {
  private timer: NodeJS.Timeout | null = null;
  private ticks = 0;
  private running = false;

  constructor(private readonly o: SharedLimitsOptions) {}

  start(): void {
    this.o.pool.onDead = (key, until, error) => {
      void this.o.store.markDown(key, until, this.o.node, error).catch((e) => this.o.trace.warn({ key, err: (e as Error).message }, 'cannot share a back-off'));
    };
    const shaper = this.o.shaper;
    if (shaper) {
      shaper.onShare = (p, until, reply) => {
        void this.o.store
          .markDown(`${SHAPING}${p.name}`, until, this.o.node, reply)
          .then(() => {
            if (until !== null && p.suspendedUntil === until) p.sharedMark = true;
          })
          .catch((e) => this.o.trace.warn({ provider: p.name, err: (e as Error).message }, 'cannot share a suspension'));
      };
    }
    this.timer = setInterval(() => void this.tick(), this.o.intervalMs ?? 1000);
    this.timer.unref();
    void this.tick();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.o.pool.onDead = null;
    if (this.o.shaper) this.o.shaper.onShare = null;
  }

  /** tick - read the other nodes' back-offs (and, every tenth time, how many nodes share the limits). */
  private async tick(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      const now = Date.now();
      const suspended = new Set<string>();
      for (const o of await this.o.store.overrides()) {
        if (o.kind !== 'down') continue;
        if (o.at <= now) {
          await this.o.store.markDown(o.destination, null, this.o.node, '');
          continue;
        }
        if (o.destination.startsWith(SHAPING)) {
          const name = o.destination.slice(SHAPING.length);
          suspended.add(name);
          if (o.by !== this.o.node) this.o.shaper?.adoptSuspension(name, o.at, o.reason);
          continue;
        }
        this.o.pool.markDead(o.destination, o.at, new Error(`${o.reason} (found by ${o.by})`));
      }
      for (const [p, held] of this.o.shaper?.endShared(suspended) ?? []) if (held.length) await this.o.retryHeld?.(held, p.name);
      if (this.ticks++ % 10 === 0) {
        const alive = (await this.o.store.nodes()).filter((n) => n.alive).length;
        this.o.pool.shareAmong(Math.max(1, alive));
      }
    } catch (e) {
      this.o.trace.warn({ err: (e as Error).message }, 'cannot read the cluster limits');
    } finally {
      this.running = false;
    }
  }
}
