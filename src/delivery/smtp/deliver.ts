/*
 * delivery/smtp/deliver - the part of a delivery that SMTP and LMTP share:
 * borrow a connection from the pool, run the session on it, give it back, and
 * make sure every recipient of the job gets exactly one result.
 *
 * Invariants (delivery/agent contract):
 * - exactly one result per recipient: a result reported twice is dropped, and
 *   a recipient left without one (a bug) is deferred before returning;
 * - a failure to reach the next hop (DNS, connect, TLS, greeting, back-off) is
 *   a result for every recipient not yet decided, never an exception;
 * - the only exception that leaves is BodyUnreadable, after every recipient
 *   was reported (the scheduler quarantines the message);
 * - a reused connection found dead before answering anything is replaced by a
 *   fresh one (bounded), so a peer's idle timeout never costs an attempt.
 *
 * Untrusted input: none directly (replies are handled by session.ts).
 */
import { BodyUnreadable, type DeliveryJob, type RecipientResult } from '../agent.js';
import type { RecipientRecord } from '../../queue/store.js';
import { ClientError, type SmtpClient } from './client.js';
import { LookupError } from './mx.js';
import { DestinationDown, type ConnectionPool } from './pool.js';
import { runTransactions } from './transaction.js';
import { HeldBack, type Provider } from './shaping.js';

/** How many times a job may move to a new connection (dead reused one, 421 between transactions) in one attempt. */
const MAX_STALE_RETRIES = 3;

export interface PooledDelivery {
  pool: ConnectionPool;
  /** Pool key: one per next hop and TLS policy. */
  key: string;
  /** Label for results when no host was reached ("example.com", "lmtp:/run/lmtp"). */
  label: string;
  open: () => Promise<SmtpClient>;
  maxRecipients: number;
  /** The shaping provider of this next hop (delivery/smtp/shaping), if any: the pool applies its limits. */
  provider?: Provider | null;
}

/** errorResults - one deferred (or, for a certain DNS answer, failed) result per recipient for a failure to reach the next hop. */
export function errorResults(recipients: readonly RecipientRecord[], err: unknown, label: string): RecipientResult[] {
  const e = err instanceof DestinationDown ? err.cause : err;
  let base: Omit<RecipientResult, 'recipientId'>;
  if (e instanceof HeldBack) {
    base = { kind: 'deferred', status: '4.7.1', reply: e.message, remote: label, remoteReply: false, heldUntil: e.until };
  } else if (e instanceof LookupError) {
    base = { kind: e.permanent ? 'failed' : 'deferred', status: e.status, reply: e.message, remote: label, remoteReply: false };
  } else if (e instanceof ClientError) {
    base = {
      kind: 'deferred',
      status: e.status,
      reply: e.reply ? `${e.reply.code}${e.reply.enhanced ? ` ${e.reply.enhanced}` : ''} ${e.reply.lines.join(' ')}`.trim() : e.message,
      remote: e.remote || label,
      remoteReply: e.reply !== null,
    };
    if (e.kind === 'tls') base.tls = e.tls;
    if (e.tlsFailure) base.tlsFailure = e.tlsFailure;
  } else {
    base = { kind: 'deferred', status: '4.3.0', reply: `local error: ${(e as Error)?.message ?? String(e)}`, remote: label, remoteReply: false };
  }
  return recipients.map((r) => ({ ...base, recipientId: r.id }));
}

/** deliverPooled - see the invariants above. */
export async function deliverPooled(job: DeliveryJob, report: (results: RecipientResult[]) => void, d: PooledDelivery): Promise<void> {
  const open = new Map<number, RecipientRecord>(job.recipients.map((r) => [r.id, r]));
  const once = (results: RecipientResult[]): void => {
    const fresh = results.filter((r) => open.delete(r.recipientId));
    if (fresh.length) report(fresh);
  };
  let bodyError: unknown = null;
  try {
    let todo = job.recipients;
    for (let round = 0; todo.length > 0; round++) {
      let lease;
      try {
        lease = await d.pool.acquire(d.key, d.open, d.provider ?? null);
      } catch (e) {
        once(errorResults(todo, e, d.label));
        break;
      }
      let reusable = false;
      try {
        const out = await runTransactions(lease.client, job, todo, once, {
          maxRecipients: d.maxRecipients,
          reused: lease.reused && round < MAX_STALE_RETRIES,
          reconnect: round < MAX_STALE_RETRIES,
        });
        reusable = !out.stale && out.bodyError === null && lease.client.usable;
        if (out.bodyError !== null) bodyError = out.bodyError;
        todo = out.stale ? out.undecided : [];
      } finally {
        d.pool.release(lease, reusable);
      }
    }
  } catch (e) {
    once(errorResults([...open.values()], e, d.label));
  } finally {
    if (open.size) once(errorResults([...open.values()], new Error('delivery ended without a result for this recipient'), d.label));
  }
  if (bodyError !== null) throw bodyError instanceof BodyUnreadable ? bodyError : new BodyUnreadable(job.message.queueId, bodyError);
}
