/*
 * admin/retry-now - what an operator's retry does to delivery on the running
 * server before its recipients are made due: the dead-destination back-off of
 * their next hops ends (delivery/smtp/pool clearBackOff), so the retry is a
 * real attempt at once, with every connection the limits allow (CONTRACT.md:
 * "An operator's retry makes a real attempt at once, whatever back-off is in
 * force"). In a cluster the shared "down" mark of those hops is removed too,
 * or the next reading of the marks would put the back-off back.
 *
 * The next hop of a destination is found as the scheduler finds it for a
 * recipient there (routing/router routeRecipient), so operator redirects,
 * routes and the smarthost give the same key the agents use.
 */
import type { ConnectionPool } from '../delivery/smtp/pool.js';
import type { QueueStore } from '../queue/store.js';
import type { Router } from '../routing/router.js';

export interface RetryNowDeps {
  router: Router;
  pool: ConnectionPool;
  /** With several nodes on one queue: the store holding the shared back-off marks, and this node's name. */
  cluster?: { store: QueueStore; node: string };
}

/** endBackOffs - end the back-off for the next hops of these destinations; resolves once the shared marks are gone too. */
export async function endBackOffs(destinations: string[], deps: RetryNowDeps): Promise<void> {
  const keys = new Set<string>();
  for (const destination of destinations) keys.add(deps.router.routeRecipient({ address: `postmaster@${destination}`, destination }).hop.key);
  for (const key of keys) {
    const ended = deps.pool.clearBackOff(key);
    if (!deps.cluster) continue;
    // A mark that cannot be removed now ends by itself (it carries its end time): the retry goes on.
    for (const poolKey of ended) await deps.cluster.store.markDown(poolKey, null, deps.cluster.node, '').catch(() => undefined);
  }
}
