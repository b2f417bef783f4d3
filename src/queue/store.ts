/*
 * queue/store - the queue's types and the QueueStore interface: what the rest
 * of Petrel (enqueue, scheduler, reports, admin, CLI) asks of the queue.
 * messages, their recipients with per-recipient state, the schedule of next
 * attempts, pending reports, quarantine, claims, and the mail events that
 * record every change.
 *
 * One implementation: queue/queue (the policy layer, written once) over a
 * backend (queue/backend: memory, embedded SQLite, PostgreSQL). Every call
 * is asynchronous and batch-shaped (claim many recipients, record many
 * outcomes in one call): the PostgreSQL backend needs both, and batching is
 * what makes group commit possible.
 *
 * Invariants (test/unit/store-contract.test.ts checks them on every backend):
 * - insert() resolves only once the message, its body, its recipients and its
 *   `received` events are on stable storage; if it rejects, nothing is kept.
 * - recordOutcomes() writes each recipient's new state and its event in one
 *   transaction, durably, before resolving; an outcome whose claim another
 *   claim has taken over since is refused.
 * - a recipient in a final state (delivered, failed, expired, removed) is never
 *   claimed again; a message and its body are removed only when every
 *   recipient is final and no report about it is still to be made.
 * - claims are leases: after a crash (open() on this node; lease expiry for
 *   the others of a cluster) claimed recipients become due again.
 * - nothing is deleted because of an error: an unreadable message goes to
 *   quarantine.
 */
import type { Readable } from 'node:stream';
import type { AttemptTls, MailEvent, RecipientState } from '../log/events.js';
import type { NodeInfo, ReportsCleared } from './backend.js';

/** The kinds of report (DSN) a recipient can be waiting for. */
export type ReportKind = 'failed' | 'expired' | 'delayed' | 'delivered' | 'relayed' | 'expanded';

export interface NewRecipient {
  address: string;
  /** ORCPT as given ("rfc822;user@example"), decoded from xtext. */
  orcpt: string | null;
  /** NOTIFY as given, upper case, e.g. "SUCCESS,FAILURE" or "NEVER"; null when absent. */
  notify: string | null;
  /** Next-hop key shown to operators and used to group work ("example.com", "route:legacy.example", "local"). */
  destination: string;
}

export interface MessageMeta {
  queueId: string;
  /** The Message-ID header, with its angle brackets. */
  messageId: string;
  /** Envelope sender; "" is the null sender <>. */
  sender: string;
  envid: string | null;
  ret: 'FULL' | 'HDRS' | null;
  /** Octets as stored (after Received: was added and line ends normalised). */
  size: number;
  receivedAt: number;
  smtputf8: boolean;
  eightBit: boolean;
  /** A delivery report Petrel made: failures of it go to the postmaster, never to a report about a report. */
  isReport: boolean;
  /** Who handed it to us: "helo [ip]" or "pickup" or "dsn". */
  client: string;
  subject: string;
  /**
   * Received with MAIL FROM ... REQUIRETLS (RFC 8689): relayed only over
   * verified TLS to hops that offer REQUIRETLS, and passed on with it
   * (delivery/smtp/require-tls). Absent: false (every store returns it).
   * Petrel's own reports are never REQUIRETLS messages.
   */
  requireTls?: boolean;
  /**
   * The message carries "TLS-Required: No" (RFC 8689 §5) and was not sent
   * with REQUIRETLS: its sender asks that the recipient's TLS policies
   * (MTA-STS, DANE) not be enforced; the operator's own `tls` setting still
   * applies. Absent: false.
   */
  tlsRequiredNo?: boolean;
}

export interface NewMessage extends MessageMeta {
  recipients: NewRecipient[];
}

export interface MessageRecord extends MessageMeta {
  recipientCount: number;
  /** Non-empty when the message is quarantined: why. */
  quarantine: string;
}

export interface RecipientRecord {
  id: number;
  queueId: string;
  address: string;
  orcpt: string | null;
  notify: string | null;
  destination: string;
  state: RecipientState;
  attempts: number;
  /** Epoch ms; meaningful for queued and deferred. */
  nextAttemptAt: number;
  lastAttemptAt: number | null;
  /** Last reply ("450 4.2.0 Try later") or local error text. */
  lastReply: string;
  /** RFC 3463 status of the last outcome ("4.4.1"). */
  lastStatus: string;
  /** The host that gave lastReply ("mx1.example.com [192.0.2.1]"). */
  remote: string;
  /** The TLS of the last attempt and the policy failure behind it (null: none known, e.g. no connection). */
  lastTls?: AttemptTls | null;
  report: ReportKind | null;
  delayNotified: boolean;
  /** Operator hold: not claimed while true. */
  suspended: boolean;
  /** While "delivering": the node whose claim holds it (the claim token's prefix); shared backends fill it. */
  claimedBy?: string;
}

/** A message and the recipients of it claimed for delivery now. */
export interface Claim {
  /** The claim's token: its outcomes are recorded only while the recipients still hold it. */
  token: string;
  message: MessageRecord;
  recipients: RecipientRecord[];
  /** The body, when the claim was made at insert time and the body was small (saves reading it back). */
  body?: Buffer;
}

/** The result of one attempt (or an operator action) for one recipient. */
export interface Outcome {
  recipientId: number;
  queueId: string;
  /** The claim this outcome ends (a delivery's): refused if another claim has taken the recipient since. */
  claim?: string;
  state: Exclude<RecipientState, 'queued' | 'delivering'> | 'queued';
  /** Attempt count after this outcome (unchanged for operator actions). */
  attempts: number;
  /** For deferred (and queued): when to try next. */
  nextAttemptAt?: number;
  lastAttemptAt?: number;
  lastReply?: string;
  lastStatus?: string;
  remote?: string;
  /** The TLS of this attempt (null clears it); undefined leaves it. */
  lastTls?: AttemptTls | null;
  /** Report to make about this recipient; undefined leaves the current one. */
  report?: ReportKind | null;
  delayNotified?: boolean;
  /** Operator hold (suspend/resume); undefined leaves it. */
  suspended?: boolean;
  /** The event that records this change (always one). */
  event: MailEvent;
  /**
   * What the recipient was before this change, when the caller knows it (the
   * scheduler holds the claim): saves the store a read per outcome.
   */
  prev?: { state: RecipientState; report: ReportKind | null };
}

/** Streaming body writer for a message being received. */
export interface BodyWriter {
  readonly queueId: string;
  /** Octets written so far. */
  readonly size: number;
  /** Append; resolves when the chunk is taken (backpressure). */
  write(chunk: Buffer): Promise<void>;
  /** Discard everything written; nothing is kept. Safe to call twice. */
  abort(): Promise<void>;
}

export interface InsertOptions {
  /**
   * Fresh-message fast path: insert the recipients already claimed (a lease of
   * this many ms) and return the claim, so the scheduler can start on them
   * without a claim round trip. Recipients of held destinations are inserted
   * queued, as usual, and left out of the claim.
   */
  claimLeaseMs?: number;
  /** Recipients whose pending report (of that kind) this message is; cleared in the same transaction, or the insert fails (ReportAlreadyMade). */
  clearReports?: ReportsCleared;
  /** Extra events to write in the same transaction (e.g. dsn_queued). */
  events?: MailEvent[];
}

export interface ClaimOptions {
  maxRecipients: number;
  /** Lease length (default: the queue's `[queue] lease`): after it, unless renewed, a claimed recipient is claimable again. */
  leaseMs?: number;
}

export interface DestinationSummary {
  destination: string;
  recipients: number;
  messages: number;
  oldest: number;
  deferred: number;
  suspended: number;
  lastReply: string;
  /** The whole destination is on hold (queue suspend --destination). */
  held?: boolean;
  /** Mail for it goes to this host:port (queue redirect). */
  redirect?: string;
}

export interface ListFilter {
  destination?: string;
  state?: RecipientState;
  sender?: string;
  recipient?: string;
  olderThan?: number;
  messageId?: string;
  /** Only quarantined messages. */
  quarantined?: boolean;
  /** Cursor: the queue id after which to continue. */
  after?: string;
  limit: number;
}

/** Who asked for an operator action, and why; written into each event's `detail`. */
export interface Operator {
  who: string;
  reason: string;
}

/** What an operator action applies to: one message, or every recipient of one destination. */
export type Target = { queueId: string } | { destination: string };

/**
 * A destination-level setting: an operator's hold or redirect, or (in a
 * cluster) a dead-destination back-off one node tells the others about.
 */
export interface DestinationOverride {
  destination: string;
  /**
   * "hold" keeps the destination's recipients from being claimed; "redirect"
   * sends them to `to`; "down": connecting failed, every node backs off until
   * `at` (the failure in `reason`, the node that found it in `by`).
   */
  kind: 'hold' | 'redirect' | 'down';
  /** host:port for redirects; "" otherwise. */
  to: string;
  by: string;
  reason: string;
  /** When it was set; for "down": until when. */
  at: number;
}

/** The result of an operator action: how many recipients it changed (and how many it could not). */
export interface ActionResult {
  changed: number;
  /** Recipients being delivered right now: left alone (their attempt decides). */
  inFlight: number;
  /** The queue ids touched (at most the first 1000). */
  queueIds: string[];
}

/** Per-message aggregates for listings: counts by state and the next attempt. */
export interface MessageStates {
  queueId: string;
  states: Partial<Record<RecipientState, number>>;
  destinations: string[];
  suspended: number;
  nextAttemptAt: number | null;
  lastReply: string;
}

/** A message-tracking query (petrel track): at least one of the keys. */
export interface TrackQuery {
  messageId?: string;
  sender?: string;
  recipient?: string;
  queueId?: string;
  /** ISO 8601 time; only events at or after it match. */
  since?: string;
  /** Cursor: only matching events with seq below this. */
  beforeSeq?: number;
  /** Most messages returned. */
  limit: number;
}

export interface TrackResult {
  /** Each matching message's events, oldest message first, each in seq order. */
  messages: Array<{ queueId: string; events: MailEvent[] }>;
  /** Pass as beforeSeq for more (older) matches; null when there are none. */
  next: number | null;
}

export interface QueueStore {
  /** Open (and recover: claims held before a crash become due again). */
  open(): Promise<void>;
  close(): Promise<void>;

  createBody(queueId: string): BodyWriter;
  /** Resolves with the claim when `claimLeaseMs` was given (null when nothing could be claimed). */
  insert(message: NewMessage, body: BodyWriter, options?: InsertOptions): Promise<Claim | null>;
  readBody(queueId: string): Promise<Readable>;
  /** The whole body when the store holds it in one piece (small messages); null when it must be streamed. */
  readBodyBuffer(queueId: string): Promise<Buffer | null>;

  claimDue(now: number, options: ClaimOptions): Promise<Claim[]>;
  /** Earliest next attempt of any claimable recipient, or null when none. */
  nextDueAt(): Promise<number | null>;
  /** Recipients of this message that are due (and not claimed) now. */
  countDue(queueId: string, now: number): Promise<number>;
  /** Resolves with the recipients whose outcome was refused (another claim holds them now). */
  recordOutcomes(outcomes: Outcome[]): Promise<{ refused: number[] }>;
  /** How long a claim lasts unless renewed (ms). */
  readonly leaseMs: number;
  /** May a delivery start now? False while this node cannot renew its claims (it fences itself). */
  mayDeliver(): boolean;
  /** Every job of a claim has ended: stop renewing its lease. */
  endClaim(token: string): void;
  /** The nodes sharing this queue, with their heartbeats and recipients in flight. */
  nodes(): Promise<NodeInfo[]>;

  getMessage(queueId: string): Promise<MessageRecord | null>;
  getRecipients(queueId: string): Promise<RecipientRecord[]>;

  /** Messages with recipients waiting for a report (none of them claimed). */
  pendingReports(limit: number): Promise<string[]>;
  /** The recipients of one message waiting for a report, in id order, streamed. */
  reportRecipients(queueId: string): AsyncIterable<RecipientRecord>;

  /** Set aside a message that cannot be read: every unfinished recipient -> quarantined. */
  quarantine(queueId: string, reason: string): Promise<void>;

  /** Operator views. */
  summary(): Promise<DestinationSummary[]>;
  list(filter: ListFilter): Promise<MessageRecord[]>;

  /** The newest event on stable storage (the event log copies no further). */
  durableEventSeq(): number;
  /**
   * Events as they become durable, in seq order (the event log takes them
   * from here instead of reading them back). A listener may miss some (it
   * came late, or dropped a backlog): eventsAfter() always has them.
   */
  onEvents(listener: (events: MailEvent[]) => void): void;
  /**
   * Events written after `seq`, in order: this node's (the event log copies
   * them), or with scope "all" every node's (the cluster-wide fate audit).
   */
  eventsAfter(seq: number, limit: number, scope?: 'node' | 'all'): Promise<MailEvent[]>;
  appendEvents(events: MailEvent[]): Promise<void>;

  /** Called after every commit that made something due (the scheduler wakes). */
  onDue(listener: () => void): void;

  /*
   * Operator actions (admin API, CLI, viewer). Each writes its events, with
   * the operator and reason in `detail`, in the same transaction as the
   * change; a single-message action touches only that message's rows.
   */
  /** Make queued/deferred recipients due now (event retry_requested each; one destination-level event). */
  retryNow(target: Target, op: Operator): Promise<ActionResult>;
  /** Hold: a message's recipients (suspended flag, event each) or a whole destination (hold row, one event). */
  suspend(target: Target, op: Operator): Promise<ActionResult>;
  /** Release a hold made by suspend(). */
  resume(target: Target, op: Operator): Promise<ActionResult>;
  /**
   * Remove a message's unfinished recipients (queued, deferred, quarantined;
   * not those in flight): state removed, event removed each. `report` says,
   * per recipient, whether its sender gets a failure report (the reporter
   * sends it); false: none.
   */
  remove(queueId: string, op: Operator, report: false | ((m: MessageRecord, r: RecipientRecord) => boolean)): Promise<ActionResult>;
  /** Release a quarantined message: its quarantined recipients -> queued, due now, event released each. */
  release(queueId: string, op: Operator): Promise<ActionResult>;
  /** Send a destination's mail to host:port from now on (`to` null removes the redirect). */
  redirect(destination: string, to: string | null, op: Operator): Promise<void>;
  /** Destination holds and redirects in force (and, in a cluster, back-offs). */
  overrides(): Promise<DestinationOverride[]>;
  /** Tell every node sharing the queue that `destination` is down until `until` (null: it is not). */
  markDown(destination: string, until: number | null, by: string, error: string): Promise<void>;

  /** A page of one message's recipients, in id order, after recipient id `afterId`. */
  recipientPage(queueId: string, afterId: number, limit: number): Promise<RecipientRecord[]>;
  /** Every recipient in the store, in id order, a page at a time (the fate audit). */
  scanRecipients(afterId: number, limit: number): Promise<RecipientRecord[]>;
  /** Per-message aggregates for the given messages (a listing page). */
  messageStates(queueIds: string[]): Promise<MessageStates[]>;
  /** Recipients in the queue by state (cheap: for metrics at scrape time). */
  countByState(): Promise<Partial<Record<RecipientState, number>>>;

  /** A page of one message's events in seq order, after `afterSeq`. */
  eventsOf(queueId: string, afterSeq: number, limit: number): Promise<MailEvent[]>;
  /** Message tracking: every event of the messages that match (indexed; never a scan). */
  track(query: TrackQuery): Promise<TrackResult>;
  /**
   * Retention: delete up to `limit` events older than `before` (ISO time) with
   * seq <= `maxSeq` (events already copied to the event log file), never those
   * of a message still in the queue. Returns how many were deleted.
   */
  pruneEvents(before: string, maxSeq: number, limit: number): Promise<number>;
}

/**
 * newRecipientRecord - the record of a recipient as it is inserted: no
 * attempt yet, nothing to report, due at `nextAttemptAt` (its message's
 * arrival); `state` is "delivering" when the insert also claimed it.
 */
export function newRecipientRecord(id: number, queueId: string, r: NewRecipient, state: 'queued' | 'delivering', nextAttemptAt: number): RecipientRecord {
  return {
    id,
    queueId,
    address: r.address,
    orcpt: r.orcpt,
    notify: r.notify,
    destination: r.destination,
    state,
    attempts: 0,
    nextAttemptAt,
    lastAttemptAt: null,
    lastReply: '',
    lastStatus: '',
    remote: '',
    lastTls: null,
    report: null,
    delayNotified: false,
    suspended: false,
  };
}
