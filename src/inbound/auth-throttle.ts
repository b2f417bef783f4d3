/*
 * inbound/auth-throttle - failed logins counted per client address and per
 * user name, across sessions, so that a password guesser gains nothing by
 * reconnecting, nor by spreading the guesses for one user over many
 * addresses: each failure is answered after a delay that grows with the
 * recent failures of its address or of its user name, whichever has more
 * (1 s, 2 s, ... up to `maxDelayMs`). Only failures wait: a user whose name
 * is being guessed still logs in at once with the right password.
 *
 * Invariants:
 * - bounded: at most `maxEntries` addresses and user names are remembered;
 *   when full, the one that failed least recently is forgotten first (a Map
 *   keeps insertion order and every failure re-inserts its keys), so a flood
 *   of addresses or names changes nothing but how much each one is slowed;
 * - a count fades: a key with no failure for `forgetMs` starts again from one.
 *
 * Untrusted input: the user name a client sent (kept at most 64 characters,
 * in its own key space: a name cannot be taken for an address).
 */

export interface AuthThrottleOptions {
  /** Delay per recent failure of the address. */
  stepMs?: number;
  /** Longest delay before answering a failed login. */
  maxDelayMs?: number;
  /** Quiet time after which an address's count starts again. */
  forgetMs?: number;
  /** Most addresses remembered. */
  maxEntries?: number;
  now?: () => number;
}

/** userKey - a user name's key: apart from addresses (which never contain a space), at most 64 characters. */
const userKey = (user: string): string => `user ${user.slice(0, 64)}`;

interface Entry {
  failures: number;
  last: number;
}

export class AuthThrottle {
  private readonly entries = new Map<string, Entry>();
  private readonly stepMs: number;
  private readonly maxDelayMs: number;
  private readonly forgetMs: number;
  private readonly maxEntries: number;
  private readonly now: () => number;
  /** Failed logins since start, for /metrics. */
  total = 0;

  constructor(o: AuthThrottleOptions = {}) {
    this.stepMs = o.stepMs ?? 1000;
    this.maxDelayMs = o.maxDelayMs ?? 10_000;
    this.forgetMs = o.forgetMs ?? 15 * 60_000;
    this.maxEntries = o.maxEntries ?? 10_000;
    this.now = o.now ?? Date.now;
  }

  /**
   * failed - record one failed login from `ip` (for `user`, when the client
   * named one); returns how long to wait before answering it.
   */
  failed(ip: string, user?: string): number {
    this.total++;
    let failures = this.count(ip);
    if (user !== undefined && user !== '') failures = Math.max(failures, this.count(userKey(user)));
    return Math.min(failures * this.stepMs, this.maxDelayMs);
  }

  /** failures - the recent failure count of `ip` (0 when none or forgotten). */
  failures(ip: string): number {
    return this.recent(ip);
  }

  /** userFailures - the recent failure count of the user name `user`. */
  userFailures(user: string): number {
    return this.recent(userKey(user));
  }

  private recent(key: string): number {
    const e = this.entries.get(key);
    return e && this.now() - e.last < this.forgetMs ? e.failures : 0;
  }

  /** count - one more failure for `key`; its recent count. */
  private count(key: string): number {
    const now = this.now();
    const old = this.entries.get(key);
    const failures = old && now - old.last < this.forgetMs ? old.failures + 1 : 1;
    this.entries.delete(key);
    this.entries.set(key, { failures, last: now });
    if (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
    return failures;
  }

  get size(): number {
    return this.entries.size;
  }
}
