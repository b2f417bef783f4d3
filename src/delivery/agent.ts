/*
 * delivery/agent - the edge between the scheduler and the transports.
 *
 * A DeliveryJob is one message and the recipients of it that go to one next
 * hop. An agent (smtp, lmtp, maildir, directory) attempts them and reports a
 * RecipientResult for each, as soon as it knows it (a 100,000-recipient job
 * reports transaction by transaction, so a crash repeats little).
 *
 * Contract every agent keeps:
 * - exactly one result per recipient of the job, through `report`; the
 *   scheduler turns any recipient left without one (a bug, an exception) into
 *   a deferral, never a loss;
 * - a failure to reach or use the next hop (DNS, connect, TLS, local I/O) is a
 *   result ("deferred" unless it is certainly permanent), never an exception
 *   that escapes without results;
 * - recipients refused with 452 (or 552 to RCPT) are sent again by the agent
 *   itself in a further transaction; they are not results until sent or until
 *   the connection fails.
 */
import { Readable } from 'node:stream';
import type { MessageRecord, RecipientRecord } from '../queue/store.js';
import type { TlsMode, TlsOutcome, TlsPolicyFailure } from './tls/outcome.js';

/** Where a recipient goes next, as decided by the router. */
export type NextHop =
  | { kind: 'smtp'; key: string; hosts: 'mx'; domain: string; port: number; tls: TlsMode }
  | { kind: 'smtp'; key: string; hosts: 'fixed'; host: string; port: number; tls: TlsMode }
  | { kind: 'lmtp'; key: string; host: string; port: number }
  | { kind: 'lmtp'; key: string; socket: string }
  | { kind: 'maildir'; key: string; root: string; perDomain: boolean }
  | { kind: 'directory'; key: string; path: string }
  /**
   * Decided without delivering: unknown local user, alias loop, null MX
   * (5.x.x: failed), or an alias expanded for a sender who asked for success
   * notices (2.0.0: delivered, with `report` naming the success report).
   */
  | { kind: 'reject'; key: string; status: string; text: string; report?: 'expanded' };

export type ResultKind = 'delivered' | 'deferred' | 'failed';

export interface RecipientResult {
  recipientId: number;
  kind: ResultKind;
  /** RFC 3463 status: "2.0.0", "4.4.1", "5.1.1". */
  status: string;
  /** The remote reply ("550 5.1.1 No such user") or the local error text. */
  reply: string;
  /** Who answered: "mx.example.com [127.0.0.2]" or "maildir" etc. */
  remote: string;
  /** True when the reply came from a remote server (the DSN says "smtp;"). */
  remoteReply: boolean;
  /** Delivered to a next hop that does not offer DSN: the report kind is "relayed". */
  relayed?: boolean;
  /** The connection was lost after the final dot: the message may have arrived. */
  possibleDuplicate?: boolean;
  /** SMTP: the TLS of the connection that decided this result (null: plain text); absent when no connection was made. */
  tls?: TlsOutcome | null;
  /** SMTP: the TLS policy failure behind a deferral (4.7.5), or one recorded without being enforced (MTA-STS testing). */
  tlsFailure?: TlsPolicyFailure;
  /**
   * Not attempted: traffic shaping held it back (its provider is suspended)
   * until this time (epoch ms). With kind "deferred" only; the scheduler puts
   * it back without counting an attempt (delivery/smtp/shaping).
   */
  heldUntil?: number;
  /**
   * Attempted and deferred, but not to be tried again before this time
   * (epoch ms): the reply suspended its provider (a "blocked" reply), so
   * the regular retry would only meet the suspension (or, on another node
   * of a cluster not told yet, the block again). The scheduler takes the
   * later of this and the retry schedule, within the queue lifetime.
   */
  notBefore?: number;
}

export interface DeliveryJob {
  message: MessageRecord;
  recipients: RecipientRecord[];
  hop: NextHop;
  /** Opens the stored message; rejects when it cannot be read (the scheduler quarantines). */
  openBody(): Promise<Readable>;
}

export interface DeliveryAgent {
  /** Attempt the job; call `report` with results as they become known. */
  deliver(job: DeliveryJob, report: (results: RecipientResult[]) => void): Promise<void>;
  /** Close idle connections and stop; in-flight jobs finish or are reported deferred. */
  close(): Promise<void>;
}

/**
 * WholeBody - a stored message already in memory as one Buffer (a small body,
 * or a fresh message handed over with its claim). It is a Readable like any
 * body; an agent that can use the octets at once takes `whole` and skips the
 * stream machinery (the SMTP client writes it with one system call).
 */
export class WholeBody extends Readable {
  constructor(readonly whole: Buffer) {
    super();
  }

  override _read(): void {
    this.push(this.whole);
    this.push(null);
  }
}

/** BodyUnreadable - thrown by openBody (and by agents reading it) when the stored message is damaged. */
export class BodyUnreadable extends Error {
  constructor(
    readonly queueId: string,
    override readonly cause: unknown,
  ) {
    super(`stored message ${queueId} cannot be read: ${(cause as Error)?.message ?? String(cause)}`);
    this.name = 'BodyUnreadable';
  }
}

/** resultsFor - the same outcome for every recipient of a job (connection failed, etc.). */
export function resultsFor(recipients: readonly RecipientRecord[], r: Omit<RecipientResult, 'recipientId'>): RecipientResult[] {
  return recipients.map((rc) => ({ ...r, recipientId: rc.id }));
}
