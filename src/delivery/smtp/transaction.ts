/*
 * delivery/smtp/transaction - delivers one message's recipients over one connected
 * SmtpClient (SMTP or LMTP), transaction after transaction, and turns every
 * reply into exactly one result per recipient.
 *
 * Invariants (CONTRACT "Delivery", DESIGN invariant 5):
 * - a recipient refused with 452, or with 552 to RCPT (RFC 5321 §4.5.3.1.10),
 *   is never a result by itself: it goes into the next transaction on the same
 *   connection (RSET, MAIL again), ahead of recipients not yet sent, until all
 *   are sent; if a transaction accepts nobody and every refusal was 452/552,
 *   those recipients (and the ones not yet sent) are deferred instead of
 *   looping;
 * - the DATA reply (LMTP: each per-recipient reply) decides exactly the
 *   recipients accepted in that transaction; other 4xx -> deferred, 5xx -> failed;
 * - no more recipients in a transaction than LIMITS RCPTMAX (RFC 9422) or the
 *   configured maximum, whichever is smaller;
 * - a lost connection after the final dot leaves the accepted recipients
 *   deferred with possibleDuplicate; any other failure defers every recipient
 *   not yet decided, with the error text;
 * - results are reported per transaction, as soon as they are known.
 *
 * Untrusted input: the peer's replies (through SmtpClient).
 */
import { hasNonAscii } from '../../core/address.js';
import { replyText, statusOf, type SmtpReply } from '../../core/smtp-reply.js';
import type { DeliveryJob, RecipientResult, ResultKind } from '../agent.js';
import type { RecipientRecord } from '../../queue/store.js';
import { ClientError, type SmtpClient } from './client.js';
import { mailParams, needsSmtpUtf8, rcptParams } from './envelope.js';
import { requireTlsFailure, requireTlsMet } from './require-tls.js';

export interface SessionOptions {
  /** Configured most recipients per transaction ([delivery] max_recipients_per_transaction). */
  maxRecipients: number;
  /** The connection was reused from the pool: if its first transaction gets no reply at all, say `stale`. */
  reused: boolean;
  /** Recipients left when the connection closes between transactions (a 421) may go on a new one: say `stale`. */
  reconnect: boolean;
}

export interface SessionOutcome {
  /**
   * The recipients in `undecided` had no result and may be tried on a fresh
   * connection: the reused connection was found dead before its first reply
   * (the peer closed it while idle), or it was closed by the peer (421)
   * between two transactions.
   */
  stale: boolean;
  undecided: RecipientRecord[];
  /** openBody() failed or the body stream broke: the recipients were reported deferred; rethrow it. */
  bodyError: unknown;
  /** Transactions run on this connection for this message. */
  transactions: number;
}

/** isResend - a refusal that means "too many recipients in this transaction: send again". */
export function isResend(r: SmtpReply): boolean {
  return r.code === 452 || r.code === 552;
}

/** kindOf - what a final reply means for a recipient. */
function kindOf(r: SmtpReply): ResultKind {
  return r.code >= 200 && r.code < 300 ? 'delivered' : r.code >= 500 ? 'failed' : 'deferred';
}

/** deferredStatus - the RFC 3463 status of a reply, of class 4 when the recipient is deferred (a 552 re-send, an odd 2xx). */
function deferredStatus(kind: ResultKind, r: SmtpReply): string {
  const s = statusOf(r);
  if (kind !== 'deferred' || s[0] === '4') return s;
  return s[0] === '5' ? `4${s.slice(1)}` : '4.5.0';
}

/** runTransactions - deliver `recipients` of `job` over `client`; see the invariants above. */
export async function runTransactions(
  client: SmtpClient,
  job: DeliveryJob,
  recipients: RecipientRecord[],
  reportResults: (results: RecipientResult[]) => void,
  options: SessionOptions,
): Promise<SessionOutcome> {
  // Every result over a TCP connection says what its TLS was (null: plain text), and a policy failure noted on it.
  const tls = client.options.path ? undefined : client.tlsOutcome;
  const note = client.tlsNote;
  const report = tls === undefined
    ? reportResults
    : (results: RecipientResult[]): void => {
        for (const r of results) {
          r.tls = tls;
          if (note) r.tlsFailure = note;
        }
        reportResults(results);
      };
  const caps = client.capabilities;
  const lmtp = client.options.lmtp === true;
  const remote = client.remote;
  const message = job.message;

  const fromReply = (rc: RecipientRecord, r: SmtpReply, kind: ResultKind = kindOf(r), extra: Partial<RecipientResult> = {}): RecipientResult => ({
    recipientId: rc.id,
    kind,
    status: deferredStatus(kind, r),
    reply: replyText(r),
    remote,
    remoteReply: true,
    ...(kind === 'delivered' && !lmtp && !caps.dsn ? { relayed: true } : {}),
    ...extra,
  });
  const fromError = (rc: RecipientRecord, e: ClientError, extra: Partial<RecipientResult> = {}): RecipientResult => ({
    recipientId: rc.id,
    kind: 'deferred',
    status: e.status,
    reply: e.reply ? replyText(e.reply) : e.message,
    remote,
    remoteReply: e.reply !== null,
    ...extra,
  });
  const local = (rc: RecipientRecord, kind: ResultKind, status: string, text: string): RecipientResult => ({
    recipientId: rc.id,
    kind,
    status,
    reply: text,
    remote,
    remoteReply: false,
  });

  // Decisions that need no transaction: REQUIRETLS, SMTPUTF8 and SIZE (RFC 8689 §4.2.1, RFC 6531 §3.2, RFC 1870 §6).
  const messageUtf8 = needsSmtpUtf8(message);
  let todo = recipients;
  if (message.requireTls && !lmtp) {
    const met = requireTlsMet(client);
    if (met !== 'ok') {
      const f = requireTlsFailure(met, remote);
      report(todo.map((r) => local(r, 'failed', f.status, f.text)));
      todo = [];
    }
  }
  if (!caps.smtputf8) {
    const refused = messageUtf8 ? todo : todo.filter((r) => hasNonAscii(r.address));
    if (refused.length) {
      report(refused.map((r) => local(r, 'failed', '5.6.7', `5.6.7 SMTPUTF8 is required, but was not offered by host ${remote}`)));
      todo = messageUtf8 ? [] : todo.filter((r) => !hasNonAscii(r.address));
    }
  }
  if (todo.length && caps.size && message.size > caps.size) {
    report(todo.map((r) => local(r, 'failed', '5.3.4', `5.3.4 message size ${message.size} exceeds the size limit ${caps.size} of host ${remote}`)));
    todo = [];
  }
  const smtputf8 = caps.smtputf8 && (messageUtf8 || todo.some((r) => hasNonAscii(r.address)));
  const mParams = mailParams(message, caps, smtputf8);
  let limit = Math.max(1, Math.min(options.maxRecipients, caps.rcptMax ?? Infinity, client.learnedRcptMax ?? Infinity));

  let pending = todo; // not yet sent, in order
  let pendingAt = 0;
  let resend: RecipientRecord[] = []; // refused with 452/552, go first
  let transactions = 0;
  const rest = (): RecipientRecord[] => resend.concat(pending.slice(pendingAt));

  while (resend.length > 0 || pendingAt < pending.length) {
    const batch = resend.splice(0, limit);
    if (batch.length < limit) {
      const take = pending.slice(pendingAt, pendingAt + (limit - batch.length));
      pendingAt += take.length;
      batch.push(...take);
    }

    let body;
    try {
      body = await job.openBody();
    } catch (e) {
      const text = `stored message cannot be read: ${(e as Error)?.message ?? e}`;
      report(batch.concat(rest()).map((r) => local(r, 'deferred', '4.3.0', text)));
      return { stale: false, undecided: [], bodyError: e, transactions };
    }

    const first = transactions === 0;
    transactions++;
    const res = await client.transaction({
      sender: message.sender,
      mailParams: mParams,
      recipients: batch.map((r) => ({ address: r.address, params: rcptParams(r, caps) })),
      body,
    });

    if (res.error && res.mail === null && res.error.kind !== 'body' && (first ? options.reused && res.noReply : options.reconnect)) {
      // Nothing of this transaction was decided: a reused connection the peer closed while idle, or
      // one it closed (421) as the next transaction began. The recipients may go on a new connection.
      return { stale: true, undecided: batch.concat(rest()), bodyError: null, transactions };
    }

    const results: RecipientResult[] = [];
    const retry: RecipientRecord[] = [];
    const retryReplies: SmtpReply[] = [];
    const undecided: RecipientRecord[] = [];

    // A refused MAIL speaks for the message: it decides every recipient left.
    if (res.mail && !(res.mail.code >= 200 && res.mail.code < 300)) {
      const mail = res.mail;
      const kind: ResultKind = mail.code >= 500 ? 'failed' : 'deferred';
      report(batch.concat(rest()).map((r) => fromReply(r, mail, kind)));
      return { stale: false, undecided: [], bodyError: null, transactions };
    }

    const accepted: RecipientRecord[] = [];
    let refusedOther = 0;
    batch.forEach((rc, i) => {
      const r = res.rcpt[i];
      if (!r) undecided.push(rc);
      else if (r.code >= 200 && r.code < 300) accepted.push(rc);
      else if (isResend(r)) {
        retry.push(rc);
        retryReplies.push(r);
      }
      else {
        refusedOther++;
        results.push(fromReply(rc, r, r.code >= 500 ? 'failed' : 'deferred'));
      }
    });

    if (accepted.length) {
      const data = res.data;
      if (data && data.code !== 354) {
        const kind: ResultKind = data.code >= 500 ? 'failed' : 'deferred';
        for (const rc of accepted) results.push(fromReply(rc, data, kind));
      } else if (lmtp) {
        accepted.forEach((rc, j) => {
          const r = res.final[j];
          if (r) results.push(fromReply(rc, r));
          else undecided.push(rc);
        });
      } else if (res.final[0]) {
        const r = res.final[0];
        for (const rc of accepted) results.push(fromReply(rc, r));
      } else {
        undecided.push(...accepted);
      }
    }

    if (res.error) {
      // The connection is gone: everything not decided is deferred with the error.
      const e = res.error;
      for (const rc of undecided) {
        const afterDot = res.dotSent && accepted.includes(rc);
        results.push(fromError(rc, e, afterDot ? { possibleDuplicate: true, reply: `${e.message} (after the final dot: the message may have been delivered)` } : {}));
      }
      for (const rc of retry.concat(rest())) results.push(fromError(rc, e));
      report(results);
      return { stale: false, undecided: [], bodyError: e.kind === 'body' ? e.cause ?? e : null, transactions };
    }

    if (accepted.length === 0 && refusedOther === 0 && retry.length === batch.length) {
      // Every recipient was refused with 452/552 and nobody was accepted: looping would not progress.
      retry.forEach((rc, i) => results.push(fromReply(rc, retryReplies[i]!, 'deferred')));
      const last = retryReplies[retryReplies.length - 1]!;
      for (const rc of rest()) results.push(fromReply(rc, last, 'deferred'));
      report(results);
      return { stale: false, undecided: [], bodyError: null, transactions };
    }

    if (results.length) report(results);
    resend = retry.concat(resend);
    // A peer that accepted f recipients and refused every later one with 452/552 has a limit of f:
    // later transactions on this connection offer no more (fewer wasted RCPTs; correctness does not depend on it).
    const f = res.rcpt.findIndex((r) => r !== null && isResend(r));
    if (f > 0 && res.rcpt.slice(f).every((r) => r !== null && isResend(r))) {
      client.learnedRcptMax = Math.min(client.learnedRcptMax ?? Infinity, f);
      limit = Math.min(limit, f);
    }

    if (!client.usable && (resend.length || pendingAt < pending.length)) {
      // CONTRACT: re-sent recipients go on the same connection, or a new one if that one ends.
      if (options.reconnect) return { stale: true, undecided: rest(), bodyError: null, transactions };
      const e = new ClientError('lost', '4.4.2', `connection to ${remote} closed between transactions`);
      report(rest().map((rc) => fromError(rc, e)));
      return { stale: false, undecided: [], bodyError: null, transactions };
    }
  }
  return { stale: false, undecided: [], bodyError: null, transactions };
}
