/*
 * inbound/auth-throttle - failed logins counted per client address, across
 * sessions, so that a password guesser gains nothing by reconnecting: each
 * failure from an address is answered after a delay that grows with the
 * address's recent failures (1 s, 2 s, ... up to `maxDelayMs`).
 *
 * Invariants:
 * - bounded: at most `maxEntries` addresses are remembered; when full, the
 *   address that failed least recently is forgotten first (a Map keeps
 *   insertion order and every failure re-inserts its address), so a flood of
 *   addresses changes nothing but how much each one is slowed;
 * - a count fades: an address with no failure for `forgetMs` starts again
 *   from one.
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

  /** failed - record one failed login from `ip`; returns how long to wait before answering it. */
  failed(ip: string): number {
    this.total++;
    const now = this.now();
    const old = this.entries.get(ip);
    const failures = old && now - old.last < this.forgetMs ? old.failures + 1 : 1;
    this.entries.delete(ip);
    this.entries.set(ip, { failures, last: now });
    if (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
    return Math.min(failures * this.stepMs, this.maxDelayMs);
  }

  /** failures - the recent failure count of `ip` (0 when none or forgotten). */
  failures(ip: string): number {
    const e = this.entries.get(ip);
    return e && this.now() - e.last < this.forgetMs ? e.failures : 0;
  }

  get size(): number {
    return this.entries.size;
  }
}
