/*
 * scheduler/retry - what happens to a recipient after a temporary failure:
 * when it is tried next, whether the sender gets its one delay warning, and
 * when it expires. Pure arithmetic, unit-tested.
 *
 * Invariants (DESIGN.md invariant 4):
 * - time in queue is bounded: no next attempt is ever scheduled after the
 *   message's expiry time, and a temporary failure at or after it expires the
 *   recipient (status 4.4.7) — so every recipient ends within max_lifetime plus
 *   one attempt;
 * - the delay warning goes out once: an attempt is scheduled at the warning
 *   time (if the interval would jump past it) so the warning is not late;
 * - waits follow `retry_intervals` (the last repeats) plus up to 10% jitter,
 *   never less than configured, so a restart does not retry everything at once.
 */

export interface RetryPolicy {
  retry_intervals: number[];
  max_lifetime: number;
  delay_warning: number;
}

/** retryDelay - the wait after the n-th attempt (n >= 1), with jitter in [0, 10%). */
export function retryDelay(attempts: number, intervals: readonly number[], random: () => number = Math.random): number {
  const base = intervals[Math.min(Math.max(attempts, 1), intervals.length) - 1]!;
  return Math.round(base * (1 + 0.1 * random()));
}

export interface Deferral {
  state: 'deferred' | 'expired';
  nextAttemptAt: number;
  /** The delay warning is due now (and will not be due again). */
  delayNotice: boolean;
}

/**
 * afterTemporaryFailure - decide a recipient's next step.
 * `attempts` counts the attempt that just failed.
 */
export function afterTemporaryFailure(
  p: RetryPolicy,
  m: { receivedAt: number },
  r: { attempts: number; delayNotified: boolean },
  now: number,
  random: () => number = Math.random,
): Deferral {
  const expiresAt = m.receivedAt + p.max_lifetime;
  if (now >= expiresAt) return { state: 'expired', nextAttemptAt: now, delayNotice: false };
  const warns = p.delay_warning > 0 && p.delay_warning < p.max_lifetime;
  const warnAt = m.receivedAt + p.delay_warning;
  const delayNotice = warns && !r.delayNotified && now >= warnAt;
  let next = now + retryDelay(r.attempts, p.retry_intervals, random);
  if (warns && !r.delayNotified && !delayNotice && next > warnAt) next = warnAt;
  return { state: 'deferred', nextAttemptAt: Math.min(next, expiresAt), delayNotice };
}
