/*
 * workers/messages - what the primary and its inbound workers say to each
 * other over the cluster IPC channel (`[server] workers` > 1; see
 * docs/architecture.md, "Processes"). Serialization is Node's "advanced"
 * (structured clone): Buffers and plain objects pass as they are.
 *
 * Invariants: no message is ever unbounded by a client: a body travels over
 * IPC only up to INLINE_BODY_MAX octets (the size the embedded store keeps
 * inside its database anyway); larger bodies stay in a spool file the worker
 * wrote and fsync'd, and only its path travels. Inserts and their answers are
 * batched (one IPC message per event-loop turn, not one per message).
 *
 * Untrusted input: none directly; the envelope fields came through the
 * worker's SMTP session, which checked them as it does in one process.
 */
import type { Config } from '../config/schema.js';
import type { BoundListener } from '../inbound/server.js';
import type { MailEvent } from '../log/events.js';
import type { MessageRecord, NewMessage, RecipientRecord } from '../queue/store.js';
import type { RecipientResult } from '../delivery/agent.js';
import type { SmtpHop, TlsAttemptResult } from '../delivery/smtp/smtp-agent.js';
import type { TargetHost } from '../delivery/smtp/mx.js';

/** Bodies up to this size travel inline (the embedded store's own inline limit, queue/backends/sqlite). */
export const INLINE_BODY_MAX = 128 * 1024;

/** The wait after a failed login when the shared count cannot be had (the primary not ready, or gone): the throttle's longest. */
export const AUTH_WAIT_UNKNOWN_MS = 10_000;

/** One message for the primary to commit. */
export interface InsertRequest {
  /** The worker's number for it (the answer carries it). */
  n: number;
  message: NewMessage;
  /** The whole body (small messages), or null when it is in `file`. */
  body: Uint8Array | null;
  /** A complete, fsync'd body file under spool/tmp/ (large messages). */
  file: string | null;
  events?: MailEvent[];
  /**
   * The worker keeps `body` in memory after sending it (workers/held-bodies):
   * when the primary takes the message on the fresh-message fast path, its
   * SMTP jobs come back to this worker without the body.
   */
  hold?: true;
}

/** The primary's answer: committed, or why not ("full": 452 4.3.1; else 451 4.3.0). */
export type InsertAnswer = { n: number; ok: true; held?: true } | { n: number; ok: false; full: boolean; message: string };

/** A connection to count (inbound/server ConnectionGate): admit `ip` (answer n), or release `ip`. */
export type ConnOp = { n: number; ip: string } | { release: string };

/** null: serve it; else the 421 reply to give. */
export interface AdmitAnswer {
  n: number;
  refusal: 'tooManyConnections' | 'tooManyFromClient' | null;
}

/** Counters a worker's sessions added since its last report, and its open connections now. */
export interface WorkerStats {
  connections: number;
  connects: number;
  authFailures: number;
  accepted: number;
  acceptedOctets: number;
  /** Reply code -> how many. */
  replies: Record<string, number>;
}

/**
 * One SMTP delivery job the primary hands to a worker (workers/outbound):
 * the claim's message and recipients, the next hop with its MX hosts as the
 * primary looked them up, and the whole body (at most workers/outbound
 * OUTBOUND_BODY_MAX) — or null: the worker holds it (it received the message
 * and the primary kept the body there: workers/held-bodies).
 */
export interface OutboundJob {
  id: number;
  message: MessageRecord;
  recipients: JobRecipient[];
  hop: SmtpHop;
  hosts: TargetHost[] | null;
  body: Uint8Array | null;
  /** How many share the per-destination connection limit: the cluster's nodes times the workers. */
  share: number;
}

/**
 * A job's recipient as it travels: what an SMTP delivery reads of it. A
 * tuple, not the whole RecipientRecord: at 10 recipients a job serializes
 * to a quarter of the octets and in about a third of the time (BENCHMARKS.md,
 * "Issue 17, sixth round").
 */
export type JobRecipient = [id: number, address: string, orcpt: string | null, notify: string | null, destination: string, attempts: number];

/** packRecipients - the recipients of a job, for the channel. */
export function packRecipients(rs: readonly RecipientRecord[]): JobRecipient[] {
  return rs.map((r) => [r.id, r.address, r.orcpt, r.notify, r.destination, r.attempts]);
}

/** unpackRecipients - the recipients of a job a worker takes: being delivered, with nothing of earlier attempts but their count. */
export function unpackRecipients(queueId: string, rs: readonly JobRecipient[]): RecipientRecord[] {
  return rs.map(([id, address, orcpt, notify, destination, attempts]) => ({
    id,
    queueId,
    address,
    orcpt,
    notify,
    destination,
    state: 'delivering',
    attempts,
    nextAttemptAt: 0,
    lastAttemptAt: null,
    lastReply: '',
    lastStatus: '',
    remote: '',
    report: null,
    delayNotified: false,
    suspended: false,
  }));
}

/** What a worker says of a job: results as they become known, and (once) that it ended. */
export interface OutboundReport {
  id: number;
  results?: RecipientResult[];
  /** The job ended; `error`: it ended with an exception (its recipients without a result are deferred). */
  done?: { error: string | null };
}

/** A destination backed off (connections to it failed) until `until`, in epoch ms. */
export interface BackOffMark {
  key: string;
  until: number;
  error: string;
}

export type ToPrimary =
  | { t: 'hello' }
  | { t: 'ready'; bound: BoundListener[] }
  | { t: 'failed'; message: string }
  | { t: 'insert'; items: InsertRequest[] }
  | { t: 'stats'; stats: WorkerStats }
  /** Connections in order: ask to admit one (n), or release an admitted one. */
  | { t: 'conns'; ops: ConnOp[] }
  /** Its kept connection slots were given back (the releases came before this): answer to "reclaim". */
  | { t: 'reclaimed' }
  | { t: 'reconfigured'; id: number; error: string | null }
  /** A failed login in a worker's session: the primary counts it for every worker and says how long to wait (answer n). */
  | { t: 'authFailed'; n: number; ip: string; user: string }
  /** Outbound (workers/outbound): job outcomes, TLS-report records, destinations this worker backed off. */
  | { t: 'outcomes'; items: OutboundReport[] }
  | { t: 'tlsResults'; items: TlsAttemptResult[] }
  | { t: 'backOff'; marks: BackOffMark[] }
  /** Several of the above, in order: everything a worker said in one turn of its event loop (workers/outbox). */
  | { t: 'many'; items: ToPrimary[] };

export type ToWorker =
  /** `slot`: this worker's share of the queue id counter (core/ids idRange), 1..255. */
  | { t: 'start'; config: Config; slot: number; workers: number }
  /** Insert answers; delivery jobs and releases waiting for this worker ride along (fewer IPC messages). */
  | { t: 'done'; answers: InsertAnswer[]; jobs?: OutboundJob[]; release?: string[] }
  | { t: 'admitted'; answers: AdmitAnswer[] }
  /** A connection would be refused: give back the connection slots kept for reuse, then say "reclaimed". */
  | { t: 'reclaim' }
  | { t: 'reconfigure'; id: number; config: Config }
  | { t: 'authWait'; n: number; waitMs: number }
  | { t: 'stop'; graceMs: number }
  /**
   * Outbound: jobs to deliver (possibly none), and the messages whose bodies the worker held for their
   * first delivery that no job will need any more; back-offs found elsewhere; an operator's retry ending a hop's back-off.
   */
  | { t: 'deliver'; jobs: OutboundJob[]; release?: string[] }
  | { t: 'backOff'; marks: BackOffMark[] }
  | { t: 'clearBackOff'; hops: string[] };

/** isMessage - a cluster message of ours (cluster also sends its own internal ones). */
export function isMessage<T extends { t: string }>(m: unknown): m is T {
  return typeof m === 'object' && m !== null && typeof (m as { t?: unknown }).t === 'string';
}
