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
 *   the pool divides them by the same count of nodes. A throttle or block
 *   reply is seen by the node that got it only (each node slows or suspends
 *   on its own replies).
 * - dead-destination back-off: the node whose connection attempt fails
 *   writes a "down" mark (next hop, until, the failure) into the queue's
 *   overrides; every node reads the marks every second and backs off too, so
 *   a dead destination is probed by one connection at a time per node
 *   (delivery/smtp/pool), not by every job of every node.
 *   Expired marks are removed by whoever reads them.
 * On a single node none of this runs.
 */
import type { ConnectionPool } from '../delivery/smtp/pool.js';
import type { Trace } from '../log/trace.js';
import type { QueueStore } from '../queue/store.js';

export interface SharedLimitsOptions {
  store: QueueStore;
  pool: ConnectionPool;
  node: string;
  trace: Pick<Trace, 'warn'>;
  /** How often the marks are read (ms); nodes are counted every tenth time. */
  intervalMs?: number;
}

export class SharedLimits {
  private timer: NodeJS.Timeout | null = null;
  private ticks = 0;
  private running = false;

  constructor(private readonly o: SharedLimitsOptions) {}

  start(): void {
    this.o.pool.onDead = (key, until, error) => {
      void this.o.store.markDown(key, until, this.o.node, error).catch((e) => this.o.trace.warn({ key, err: (e as Error).message }, 'cannot share a back-off'));
    };
    this.timer = setInterval(() => void this.tick(), this.o.intervalMs ?? 1000);
    this.timer.unref();
    void this.tick();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.o.pool.onDead = null;
  }

  /** tick - read the other nodes' back-offs (and, every tenth time, how many nodes share the limits). */
  private async tick(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      const now = Date.now();
      for (const o of await this.o.store.overrides()) {
        if (o.kind !== 'down') continue;
        if (o.at > now) this.o.pool.markDead(o.destination, o.at, new Error(`${o.reason} (found by ${o.by})`));
        else await this.o.store.markDown(o.destination, null, this.o.node, '');
      }
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
