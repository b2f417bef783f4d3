/*
 * delivery/smtp/pool - ConnectionPool: open connections to next hops, shared
 * by every job that goes there.
 *
 * Invariants:
 * - at most `maxPerDestination` connections (open, opening or in use) to one
 *   destination and `maxTotal` in all; a job that finds no free connection
 *   waits in line (FIFO per destination) instead of opening more;
 * - a connection carries at most `maxMessagesPerConnection` messages, then
 *   closes; an idle connection closes after `idleTimeoutMs`; a connection the
 *   peer closed is dropped from the idle list at once;
 * - dead-destination back-off: when opening a connection to a destination
 *   fails, the jobs waiting for it get that same error at once. For
 *   `deadBackoffMs` after, the destination is probed, as Postfix does: a job
 *   for it opens one connection (the probe) while the others wait on it; if
 *   the probe connects, the back-off ends and they go on as usual; if it
 *   fails, they all take its error. So no job is ever answered "down"
 *   without a connection having been tried for it (every deferral is a real
 *   attempt), and a dead destination gets one connection attempt at a time,
 *   not one per job;
 * - an operator's retry ends the back-off at once (clearBackOff);
 * - a slot freed under `maxTotal` (a connection closed, or parked idle while
 *   another destination waits at the cap) goes at once to the destination
 *   that has waited longest at the cap, which evicts the oldest idle
 *   connection (issue 17: they used to wait for an idle timer); no scan of
 *   every destination on this path;
 * - no unbounded maps: a destination's entry is deleted as soon as it has no
 *   connection, no waiter and no back-off in force (a timer clears back-offs);
 * - in a cluster (several nodes on one queue) the limits are the cluster's:
 *   this node uses its share of `maxPerDestination` (shareAmong: the limit
 *   divided by the nodes alive, rounded down, at least 1), and a back-off
 *   found by one node is told to the others (onDead / markDead), so every
 *   node probes a dead destination instead of opening its share of
 *   connections to it.
 *
 * - traffic shaping (delivery/smtp/shaping): a destination may belong to a
 *   provider, whose limits hold across all its destinations: connections
 *   open at once (idle ones included), new connections and messages per
 *   time (token buckets), messages per connection, and suspension. A job
 *   held back by them waits in its destination's line (one timer per
 *   provider wakes it, never a spin); waiting is not an attempt. A job for
 *   a suspended provider is not started: acquire rejects it with
 *   ProviderSuspended, and its recipients are put back, uncounted. In a
 *   cluster a provider's connections and rates are shared like
 *   `maxPerDestination` (divided by the nodes alive).
 * - a job waits in memory for its provider at most about `holdMaxMs`
 *   (checked every holdMaxMs / 2): then it is rejected with ProviderBusy
 *   and its recipients are put back, uncounted, until the provider's pace
 *   lets them go (Provider.reserve spreads them). So a backlog for one slow
 *   or throttled provider holds the scheduler's in-flight room for seconds,
 *   never for the minutes it takes to drain, and other destinations' mail
 *   is not starved (issue 18). Only shaped destinations are swept: a plain
 *   destination's line moves at the speed of its connections.
 *
 * Untrusted input: none (destinations are keys made by the router).
 */
import type { SmtpClient } from './client.js';
import { ProviderBusy, ProviderSuspended, describeLimits, type Provider } from './shaping.js';

export interface PoolOptions {
  maxPerDestination: number;
  maxTotal: number;
  maxMessagesPerConnection: number;
  idleTimeoutMs: number;
  deadBackoffMs: number;
  /** close(): how long connections in use may go on before they are cut (their recipients are then deferred). */
  shutdownGraceMs: number;
  /** How long a job may wait in memory for its shaping provider before it is put back (ProviderBusy). */
  holdMaxMs: number;
}

export const DEFAULT_POOL_OPTIONS: PoolOptions = {
  maxPerDestination: 20,
  maxTotal: 200,
  maxMessagesPerConnection: 100,
  idleTimeoutMs: 5000,
  deadBackoffMs: 30_000,
  shutdownGraceMs: 10_000,
  holdMaxMs: 2000,
};

/** Most next-hop names remembered for clearBackOff (an operator's retry of an older one finds no back-off to end: its attempt still goes, after it). */
const MAX_ALIASES = 10_000;

/** A connection lent to one job. */
export interface Lease {
  readonly key: string;
  readonly client: SmtpClient;
  /** The connection had carried an earlier message (it may have died while idle). */
  readonly reused: boolean;
}

/** DestinationDown - the destination failed to open a connection recently; `cause` is that failure. */
export class DestinationDown extends Error {
  constructor(
    readonly key: string,
    override readonly cause: unknown,
    readonly until: number,
  ) {
    super((cause as Error)?.message ?? String(cause));
    this.name = 'DestinationDown';
  }
}

interface Idle {
  dest: Destination;
  client: SmtpClient;
  messages: number;
  timer: NodeJS.Timeout;
}

interface Waiter {
  /** When the job started waiting (the sweep puts back those of shaped destinations waiting too long). */
  since: number;
  open: () => Promise<SmtpClient>;
  resolve: (l: Lease) => void;
  reject: (e: unknown) => void;
}

interface Destination {
  key: string;
  idle: Idle[];
  /** Connections in use or being opened. */
  busy: number;
  waiters: Waiter[];
  deadUntil: number;
  deadError: unknown;
  deadTimer: NodeJS.Timeout | null;
  /** A probe connection to the backed-off destination is being opened (the other waiters wait on it). */
  probing: boolean;
  /** The shaping provider this destination belongs to, if any. */
  provider: Provider | null;
}

export class ConnectionPool {
  readonly options: PoolOptions;
  private readonly dests = new Map<string, Destination>();
  /**
   * Destinations with waiters held back only by `maxTotal`, oldest first: any
   * slot freed anywhere (a close, or a connection parked idle) goes to them at
   * once (issue 17: they waited for an idle timer). Holds only destinations
   * with waiters, so it is bounded by the dests map.
   */
  private readonly atCap = new Set<Destination>();
  /** Every idle connection, oldest parked first (eviction without scanning destinations). */
  private readonly idleAll = new Set<Idle>();
  /** Destinations held back by their provider's limits (one entry per provider with waiters). */
  private readonly heldBack = new Map<Provider, Set<Destination>>();
  /** The timer that wakes a provider's held-back destinations when a token is due. */
  private readonly providerTimers = new Map<Provider, NodeJS.Timeout>();
  /** Shaped destinations with waiters (swept for jobs that waited too long: ProviderBusy). */
  private readonly shapedWaiting = new Set<Destination>();
  private sweepTimer: NodeJS.Timeout | null = null;
  /** Messages carried so far by each connection in use. */
  private readonly carried = new WeakMap<SmtpClient, number>();
  private total = 0;
  private closing = false;
  /** Nodes sharing the per-destination limit (1 on a single node). */
  private nodes = 1;
  /** Told when this node backs off a destination (a cluster passes it to the other nodes). */
  onDead: ((key: string, until: number, error: string) => void) | null = null;
  /** Told when this pool backs off a destination (found here, or told by markDead) and when clearBackOff ends a hop's back-off ([server] workers: the primary passes both to its workers' pools). */
  onMarked: ((key: string, until: number, error: string) => void) | null = null;
  onCleared: ((hopKey: string) => void) | null = null;
  /**
   * The pool key each next hop used last (an MX hop's key is its MX host set,
   * not its name): clearBackOff finds a hop's connections through it.
   * Bounded: the oldest entry goes first.
   */
  private readonly aliases = new Map<string, string>();
  /** Connections lent out now (cut by close() after the grace period). */
  private readonly lent = new Set<SmtpClient>();
  private allReturned: (() => void) | null = null;

  constructor(options: Partial<PoolOptions> = {}) {
    this.options = { ...DEFAULT_POOL_OPTIONS, ...options };
  }

  /** shareAmong - `n` nodes share the per-destination limit now: this node takes its share. */
  shareAmong(n: number): void {
    this.nodes = Math.max(1, Math.floor(n));
    this.pumpAll();
  }

  /** sharedBy - how many nodes share the per-destination limit now (shareAmong). */
  get sharedBy(): number {
    return this.nodes;
  }

  /** perDestination - this node's share of the per-destination limit. */
  get perDestination(): number {
    return Math.max(1, Math.floor(this.options.maxPerDestination / this.nodes));
  }

  /**
   * markDead - another node found `key` dead until `until`: back off here too
   * (unless a longer back-off is in force). Not told on through onDead.
   */
  markDead(key: string, until: number, error: Error): void {
    if (this.closing || until <= Date.now()) return;
    const d = this.dest(key);
    if (d.deadUntil >= until) return;
    this.backOff(d, error, until);
    this.onMarked?.(key, until, error.message);
  }

  /** size - connections open or opening, in all. */
  get size(): number {
    return this.total;
  }

  /** destinations - entries held (for tests: proves idle destinations are removed). */
  get destinations(): number {
    return this.dests.size;
  }

  /**
   * clearBackOff - an operator's retry: end the back-off of every connection
   * key of the next hop `hopKey` (the router's key; the agents' pool keys are
   * "<agent>:<hopKey>:..."), so the retry's attempt goes at once, with every
   * connection the limits allow. Returns the pool keys whose back-off ended.
   */
  clearBackOff(hopKey: string): string[] {
    this.onCleared?.(hopKey);
    const ended: string[] = [];
    const alias = this.aliases.get(hopKey);
    for (const d of [...this.dests.values()]) {
      const rest = d.key.slice(d.key.indexOf(':') + 1);
      if (d.key !== hopKey && d.key !== alias && !rest.startsWith(`${hopKey}:`)) continue;
      if (d.deadUntil === 0 && !d.deadTimer) continue;
      if (d.deadTimer) clearTimeout(d.deadTimer);
      d.deadTimer = null;
      d.deadUntil = 0;
      d.deadError = null;
      ended.push(d.key);
      this.pump(d);
      this.tidy(d);
    }
    return ended;
  }

  /** alias - the next hop `hopKey` uses the pool key `key` now (see clearBackOff). */
  alias(hopKey: string, key: string): void {
    if (this.aliases.get(hopKey) === key) return;
    this.aliases.delete(hopKey);
    if (this.aliases.size >= MAX_ALIASES) this.aliases.delete(this.aliases.keys().next().value as string);
    this.aliases.set(hopKey, key);
  }

  /** acquire - a connection to `key`: an idle one, a new one from `open` (a probe while backed off), or the next one freed. */
  acquire(key: string, open: () => Promise<SmtpClient>, provider: Provider | null = null): Promise<Lease> {
    if (this.closing) return Promise.reject(new Error('delivery is stopping'));
    const d = this.dest(key);
    if (provider) d.provider = provider;
    return new Promise<Lease>((resolve, reject) => {
      d.waiters.push({ since: Date.now(), open, resolve, reject });
      this.pump(d);
      if (d.provider && d.waiters.length) {
        this.shapedWaiting.add(d);
        this.armSweep();
      }
    });
  }

  /** release - give a connection back; `reusable` false (or a spent/closed one) closes it. */
  release(lease: Lease, reusable: boolean): void {
    const d = this.dests.get(lease.key);
    const client = lease.client;
    this.lent.delete(client);
    if (this.lent.size === 0) this.allReturned?.();
    const messages = (this.carried.get(client) ?? 0) + 1;
    this.carried.set(client, messages);
    if (!d) {
      // Cannot happen while the lease is out; close rather than leak.
      void client.quit();
      return;
    }
    d.busy--;
    const p = d.provider;
    const perConnection = p?.rule.messages_per_connection ?? Infinity;
    const overProvider = p !== null && p.open > this.maxOf(p); // a throttle cut: shed connections
    if (reusable && client.usable && messages < this.options.maxMessagesPerConnection && messages < perConnection && !overProvider && !this.closing) {
      if (p) {
        // Shaped: the next message of the line passes the provider's rate first.
        this.park(d, client, messages);
        this.pump(d);
        this.pumpAtCap();
        this.wakeProvider(p);
      } else if (d.waiters.length) {
        const next = d.waiters.shift()!;
        d.busy++;
        this.lent.add(client);
        next.resolve({ key: d.key, client, reused: true });
      } else {
        this.park(d, client, messages);
        // A waiter elsewhere held back by maxTotal takes the slot now (it evicts an idle connection).
        this.pumpAtCap();
      }
    } else {
      this.closedOne(d, client.quit());
      this.pump(d);
      this.pumpAtCap();
      this.wakeProvider(p);
    }
    this.tidy(d);
  }

  /** resumeProvider - a provider's suspension ended (shaping calls it): its held-back jobs go now. */
  resumeProvider(p: Provider): void {
    this.wakeProvider(p);
  }

  /** maxOf - this node's share of a provider's connection limit (in a cluster, divided by the nodes alive, at least 1). */
  private maxOf(p: Provider): number {
    return Math.max(1, Math.floor(p.maxConnections / this.nodes));
  }

  /** shareOf - the factor this node applies to a provider's rates: its AIMD factor, divided among the nodes alive. */
  private shareOf(p: Provider): number {
    return p.factor / this.nodes;
  }

  /**
   * closedOne - bookkeeping of one connection of `d` closed (or never opened).
   * `quitting`: the QUIT under way; a provider counts the connection until it
   * is over, so the peer never sees more than the provider's limit at once.
   */
  private closedOne(d: Destination, quitting: Promise<void> | null = null): void {
    this.total--;
    const p = d.provider;
    if (!p) return;
    if (!quitting) {
      p.open--;
      return;
    }
    void quitting.finally(() => {
      p.open--;
      this.wakeProvider(p);
    });
  }

  /** holdBack - `d` waits for its provider (a slot, a token, or the end of a suspension); `inMs`: when a token is due. */
  private holdBack(d: Destination, p: Provider, inMs: number | null): void {
    let set = this.heldBack.get(p);
    if (!set) this.heldBack.set(p, (set = new Set()));
    set.add(d);
    if (inMs !== null && !this.providerTimers.has(p)) {
      const t = setTimeout(() => {
        this.providerTimers.delete(p);
        this.wakeProvider(p);
      }, inMs); // not unref'd: jobs are waiting on it (close() clears it)
      this.providerTimers.set(p, t);
    }
  }

  private armSweep(): void {
    if (this.sweepTimer || this.closing) return;
    this.sweepTimer = setTimeout(() => {
      this.sweepTimer = null;
      this.sweep();
    }, Math.max(10, Math.floor(this.options.holdMaxMs / 2)));
    this.sweepTimer.unref(); // the jobs waiting keep their own timers and sockets
  }

  /**
   * sweep - put back the jobs of shaped destinations that have waited longer
   * than holdMaxMs (the head of each line: they are the ones the provider
   * has not taken in that time), each with the time its provider's pace
   * gives it (Provider.reserve).
   */
  private sweep(): void {
    const now = Date.now();
    const limit = now - this.options.holdMaxMs;
    for (const d of this.shapedWaiting) {
      const p = d.provider;
      if (!p || d.waiters.length === 0) {
        this.shapedWaiting.delete(d);
        continue;
      }
      let shed = 0;
      while (shed < d.waiters.length && d.waiters[shed]!.since <= limit) shed++;
      if (shed === 0) continue;
      const wait = p.messages ? p.messages.peek(now, this.shareOf(p)) : 0;
      const earliest = now + Math.max(this.options.holdMaxMs, wait);
      const interval = this.paceOf(p, now);
      const limits = describeLimits(p);
      for (const w of d.waiters.splice(0, shed)) w.reject(new ProviderBusy(p.name, p.reserve(earliest, interval), limits));
      if (d.waiters.length === 0) {
        this.shapedWaiting.delete(d);
        this.atCap.delete(d);
        this.tidy(d);
      }
    }
    if (this.shapedWaiting.size) this.armSweep();
  }

  /**
   * paceOf - about how many ms apart this node can hand the provider one more
   * job: its message rate when it has one, else what it took in the last
   * minute (a connection-limited provider), else a second.
   */
  private paceOf(p: Provider, now: number): number {
    const rate = p.rule.message_rate;
    if (rate) return rate.perMs / (rate.count * this.shareOf(p));
    const seen = p.sentLastMinute(now);
    return seen >= 10 ? 60_000 / seen : 1000;
  }

  /** wakeProvider - serve the destinations held back by `p`, oldest first. */
  private wakeProvider(p: Provider | null): void {
    if (!p || this.closing) return;
    const set = this.heldBack.get(p);
    if (!set) return;
    this.heldBack.delete(p);
    for (const d of set) if (d.waiters.length) this.pump(d);
  }

  /**
   * close - refuse new work, fail waiters, close idle connections; connections
   * in use may finish for shutdownGraceMs, then are cut (their jobs defer the
   * recipients not yet decided). Resolves when every connection is closed.
   */
  async close(): Promise<void> {
    this.closing = true;
    const quits: Promise<void>[] = [];
    for (const d of this.dests.values()) {
      for (const w of d.waiters.splice(0)) w.reject(new Error('delivery is stopping'));
      for (const i of d.idle.splice(0)) {
        this.idleAll.delete(i);
        clearTimeout(i.timer);
        this.closedOne(d);
        quits.push(i.client.quit());
      }
      if (d.deadTimer) clearTimeout(d.deadTimer);
      d.deadTimer = null;
      d.deadUntil = 0;
      this.tidy(d);
    }
    this.atCap.clear();
    for (const t of this.providerTimers.values()) clearTimeout(t);
    this.providerTimers.clear();
    this.heldBack.clear();
    this.shapedWaiting.clear();
    if (this.sweepTimer) clearTimeout(this.sweepTimer);
    this.sweepTimer = null;
    await Promise.all(quits);
    if (this.lent.size) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => (this.allReturned = resolve)),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, this.options.shutdownGraceMs))),
      ]);
      clearTimeout(timer);
      for (const c of this.lent) c.destroy();
    }
  }

  private dest(key: string): Destination {
    let d = this.dests.get(key);
    if (!d) {
      d = { key, idle: [], busy: 0, waiters: [], deadUntil: 0, deadError: null, deadTimer: null, probing: false, provider: null };
      this.dests.set(key, d);
    }
    return d;
  }

  /** park - keep an idle connection until reused, closed by the peer, or timed out. */
  private park(d: Destination, client: SmtpClient, messages: number): void {
    const entry: Idle = {
      dest: d,
      client,
      messages,
      timer: setTimeout(() => this.dropIdle(d, entry, true), this.options.idleTimeoutMs),
    };
    entry.timer.unref();
    client.onClose = () => this.dropIdle(d, entry, false);
    d.idle.push(entry);
    this.idleAll.add(entry);
  }

  private dropIdle(d: Destination, entry: Idle, quit: boolean): void {
    const i = d.idle.indexOf(entry);
    if (i < 0) return;
    d.idle.splice(i, 1);
    this.idleAll.delete(entry);
    clearTimeout(entry.timer);
    entry.client.onClose = null;
    if (quit) this.closedOne(d, entry.client.quit());
    else this.closedOne(d);
    this.tidy(d);
    this.pumpAtCap();
    this.wakeProvider(d.provider);
  }

  /** pump - serve a destination's waiters: idle connections first, then new ones within the limits. */
  private pump(d: Destination): void {
    const p = d.provider;
    while (d.waiters.length) {
      let now = 0;
      if (p) {
        // Shaped: suspended, or no message token yet -> wait for the provider.
        if (p.suspended) {
          // Not attempted: the jobs are put back (their recipients wait in the queue, not in memory).
          const err = new ProviderSuspended(p.name, p.suspendedUntil, p.suspendReply);
          for (const w of d.waiters.splice(0)) w.reject(err);
          this.atCap.delete(d);
          this.tidy(d);
          return;
        }
        now = Date.now();
        const wait = p.messages ? p.messages.peek(now, this.shareOf(p)) : 0;
        if (wait > 0) return this.holdBack(d, p, wait);
      }
      const idle = d.idle.pop();
      if (idle) {
        this.idleAll.delete(idle);
        clearTimeout(idle.timer);
        idle.client.onClose = null;
        const w = d.waiters.shift()!;
        d.busy++;
        this.lent.add(idle.client);
        if (p) this.sent(p, now);
        w.resolve({ key: d.key, client: idle.client, reused: true });
        continue;
      }
      if (d.busy >= this.perDestination) return;
      // Backed off: one probe at a time; the others wait for its result.
      const dead = d.deadUntil > Date.now();
      if (dead && d.probing) return;
      if (p) {
        if (p.open >= this.maxOf(p)) {
          // At the provider's limit: an idle connection of another of its destinations makes room
          // once its QUIT is over (closedOne wakes the provider then); until then, wait.
          this.evictIdle(d, p);
          return this.holdBack(d, p, null);
        }
        const wait = p.connections ? p.connections.peek(now, this.shareOf(p)) : 0;
        if (wait > 0) return this.holdBack(d, p, wait);
      }
      if (this.total >= this.options.maxTotal && !this.evictIdle(d)) {
        this.atCap.add(d);
        return;
      }
      const w = d.waiters.shift()!;
      if (p) {
        p.connections?.take(now, this.shareOf(p));
        this.sent(p, now);
      }
      this.openFor(d, w, dead);
    }
    this.atCap.delete(d);
  }

  /** sent - one message goes to the provider now: a message token is used. */
  private sent(p: Provider, now: number): void {
    p.messages?.take(now, this.shareOf(p));
    p.countSent(now);
  }

  private pumpAll(): void {
    for (const d of this.dests.values()) if (d.waiters.length) this.pump(d);
  }

  /** pumpAtCap - a slot may be free: serve the destinations waiting at maxTotal, oldest first, while slots last. */
  private pumpAtCap(): void {
    for (const d of this.atCap) {
      if (this.total >= this.options.maxTotal && this.idleAll.size === 0) return;
      this.atCap.delete(d);
      if (d.waiters.length) this.pump(d);
      if (this.atCap.has(d)) return; // still at the cap: no slot left for the ones behind it
    }
  }

  /** evictIdle - close the oldest idle connection of another destination (of provider `of`, when given) to make room. */
  private evictIdle(except: Destination, of: Provider | null = null): boolean {
    for (const entry of this.idleAll) {
      const d = entry.dest;
      if (d === except || (of && d.provider !== of)) continue;
      const i = d.idle.indexOf(entry);
      if (i >= 0) d.idle.splice(i, 1);
      this.idleAll.delete(entry);
      clearTimeout(entry.timer);
      entry.client.onClose = null;
      this.closedOne(d, entry.client.quit());
      this.tidy(d);
      return true;
    }
    return false;
  }

  private openFor(d: Destination, w: Waiter, probe = false): void {
    d.busy++;
    this.total++;
    if (d.provider) d.provider.open++;
    if (probe) d.probing = true;
    w.open().then(
      (client) => {
        if (probe) {
          // The destination answers again: the back-off ends; the others may open connections.
          d.probing = false;
          if (d.deadTimer) clearTimeout(d.deadTimer);
          d.deadTimer = null;
          d.deadUntil = 0;
          d.deadError = null;
        }
        if (this.closing) {
          // Opened while stopping: not used; the job defers its recipients.
          client.destroy();
          d.busy--;
          this.closedOne(d);
          w.reject(new Error('delivery is stopping'));
          this.tidy(d);
          return;
        }
        this.carried.set(client, 0);
        this.lent.add(client);
        w.resolve({ key: d.key, client, reused: false });
        if (probe) this.pump(d);
      },
      (err: unknown) => {
        if (probe) d.probing = false;
        d.busy--;
        this.closedOne(d);
        if (!this.closing) {
          this.backOff(d, err, Date.now() + this.options.deadBackoffMs);
          const text = (err as Error)?.message ?? String(err);
          this.onDead?.(d.key, d.deadUntil, text);
          this.onMarked?.(d.key, d.deadUntil, text);
        }
        w.reject(err);
        this.tidy(d);
        this.pumpAtCap();
        this.wakeProvider(d.provider);
      },
    );
  }

  /** backOff - dead-destination back-off until `until`: everyone waiting gets this failure now. */
  private backOff(d: Destination, err: unknown, until: number): void {
    d.deadUntil = until;
    d.deadError = err;
    if (d.deadTimer) clearTimeout(d.deadTimer);
    d.deadTimer = setTimeout(() => {
      d.deadTimer = null;
      d.deadUntil = 0;
      d.deadError = null;
      this.tidy(d);
    }, Math.max(0, until - Date.now()));
    d.deadTimer.unref();
    for (const other of d.waiters.splice(0)) other.reject(new DestinationDown(d.key, err, d.deadUntil));
  }

  /** tidy - forget a destination with nothing open, waiting or backed off. */
  private tidy(d: Destination): void {
    if (d.idle.length === 0 && d.busy === 0 && d.waiters.length === 0 && d.deadUntil <= Date.now() && !d.deadTimer) {
      if (this.dests.get(d.key) === d) this.dests.delete(d.key);
      this.atCap.delete(d);
    }
  }
}
