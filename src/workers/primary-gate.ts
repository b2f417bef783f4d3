/*
 * workers/primary-gate - a worker's side of the connection limits and the
 * failed-login throttle, which the primary counts for all the workers
 * (`[smtp] max_connections`, `max_connections_per_client`, the login
 * throttle): see PrimaryGate below.
 *
 * Invariants: the primary's count is exact — every slot this worker holds
 * (a connection open, or a kept slot) was admitted by the primary and is
 * given back exactly once (release, expiry, reclaim); a lost primary refuses
 * what is still asked.
 */
import type { ConnectionGate } from '../inbound/server.js';
import { AUTH_WAIT_UNKNOWN_MS, type AdmitAnswer, type ConnOp, type ToPrimary } from './messages.js';
import type { Outbox, OutboxPart } from './outbox.js';

/** How long a slot of an ended connection is kept for the next connection from the same address (no IPC for it). */
export const KEEP_MS = 250;
/** Most slots kept at once by one worker. */
const MAX_KEPT = 64;
/** After a reclaim (a limit near), slots are given back at once for this long. */
export const QUIET_MS = 1000;

/**
 * PrimaryGate - the connection limits and the failed-login throttle
 * counted by the primary for all the workers: each admit and release goes
 * to it, in order, batched per event-loop turn (workers/outbox), and each failed login asks
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
export class PrimaryGate implements ConnectionGate, OutboxPart {
  private next = 0;
  private ops: ConnOp[] = [];
  private readonly asking = new Map<number, { resolve: (r: AdmitAnswer['refusal']) => void; reject: (e: Error) => void }>();
  /** Failed logins waiting for the primary's count. */
  private readonly waits = new Map<number, (ms: number) => void>();
  /**
   * Kept slots by address: when each was kept, oldest first (a new connection
   * takes the oldest, so those left are the freshest). `keptAt` holds every
   * keeping in time order; when one is KEEP_MS old, the oldest slot still kept
   * for its address is given back only if it is itself that old — a busy
   * address whose slots are taken as fast as they are kept loses none.
   */
  private readonly kept = new Map<string, number[]>();
  private keptSize = 0;
  private readonly keptAt: Array<{ ip: string; at: number }> = [];
  private keepTimer: NodeJS.Timeout | null = null;
  private quietUntil = 0;

  constructor(
    /** Where its messages to the primary leave (the ops batched per turn with the worker's other messages). */
    private readonly outbox: Outbox,
    private readonly connected: () => boolean,
  ) {}

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
    if (this.keptSize >= MAX_KEPT || Date.now() < this.quietUntil || !this.connected()) {
      this.push({ release: ip });
      return;
    }
    const at = Date.now();
    const k = this.kept.get(ip);
    if (k) k.push(at);
    else this.kept.set(ip, [at]);
    this.keptSize++;
    this.keptAt.push({ ip, at });
    this.keepTimer ??= setTimeout(() => this.expire(), KEEP_MS);
  }

  /** reclaim - the primary is near a limit: every kept slot goes back now, and none is kept for a while. */
  reclaim(): void {
    this.quietUntil = Date.now() + QUIET_MS;
    for (const [ip, k] of this.kept) for (let i = 0; i < k.length; i++) this.push({ release: ip });
    this.kept.clear();
    this.keptSize = 0;
    this.keptAt.length = 0;
    // After the releases: the primary reads them first.
    if (!this.outbox.now({ t: 'reclaimed' })) this.lost();
  }

  /** take - the oldest slot kept for `ip` (`k`: its list, not empty) is used. */
  private take(ip: string, k: number[]): void {
    k.shift();
    if (k.length === 0) this.kept.delete(ip);
    this.keptSize--;
  }

  /** expire - kept slots older than KEEP_MS go back to the primary. */
  private expire(): void {
    this.keepTimer = null;
    const old = Date.now() - KEEP_MS;
    while (this.keptAt.length && this.keptAt[0]!.at <= old) {
      const { ip } = this.keptAt.shift()!;
      const k = this.kept.get(ip);
      if (!k || k[0]! > old) continue;
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
      if (!this.outbox.now({ t: 'authFailed', n, ip, user })) this.lost();
    });
  }

  authWait(n: number, waitMs: number): void {
    this.waits.get(n)?.(waitMs);
    this.waits.delete(n);
  }

  private push(op: ConnOp): void {
    this.ops.push(op);
    this.outbox.soon(this);
  }

  /** gathered - the admits and releases of this turn, in order, for the outbox. */
  gathered(): ToPrimary[] {
    if (this.ops.length === 0) return [];
    const ops = this.ops;
    this.ops = [];
    return [{ t: 'conns', ops }];
  }

  /** sent - the channel is gone: what is asked is refused. */
  sent(ok: boolean): void {
    if (!ok) this.lost();
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
