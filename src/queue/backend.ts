/*
 * queue/backend - the narrow persistence interface under the queue layer
 * (queue/queue.ts): what a backend must store, fetch and change atomically.
 * It knows nothing of what an event says, which state an operator may touch,
 * when a report is owed or how a crash is recovered: that policy lives once,
 * in the queue layer, for every backend (OpenSMTPD's queue_backend split;
 * maddy's AddRcpt/Body/Commit/Abort). Backends: backends/memory (unit tests),
 * backends/sqlite (embedded, the default), backends/postgres (a cluster).
 *
 * The rules a backend keeps (test/unit/store-contract.test.ts runs the same
 * suite through the queue layer against every backend):
 * - insert() resolves only once the message, its body, its recipients and the
 *   events given are on stable storage; if it rejects, nothing is kept;
 * - apply() is one transaction: every patch whose guard holds, the events of
 *   those patches and the change's own events, durably, or nothing;
 * - a patch guarded by a claim token is applied only while the recipient
 *   still holds that claim (another claim since -> refused, reported back);
 *   a patch that sets any state other than "delivering" drops the claim;
 * - claimable (claimDue, nextDueAt, countDue): not suspended, destination not
 *   held (an `overrides` hold), and either queued or deferred with its next
 *   attempt due, or "delivering" with its lease run out (leases are given and
 *   judged by the backend's clock: PostgreSQL's now() in a cluster, never a
 *   caller's `now`);
 * - a message and its body are removed once every recipient is final
 *   (FINAL_STATES) and owes no report (`report` null): isOpen() below;
 * - errors from a full disk are thrown as StorageFull; nothing is deleted
 *   because of an error.
 */
import type { Readable } from 'node:stream';
import { FINAL_STATES, type AttemptTls, type MailEvent, type RecipientState } from '../log/events.js';
import type {
  BodyWriter,
  Claim,
  DestinationOverride,
  DestinationSummary,
  ListFilter,
  MessageRecord,
  MessageStates,
  NewMessage,
  RecipientRecord,
  ReportKind,
  TrackQuery,
  TrackResult,
} from './store.js';

/** A claim being made: its token (unique per claim, prefixed "node:") and how long its lease lasts. */
export interface ClaimSpec {
  token: string;
  leaseMs: number;
}

/** New values for a recipient's fields; absent fields are left as they are. */
export interface RecipientFields {
  state?: RecipientState;
  attempts?: number;
  nextAttemptAt?: number;
  lastAttemptAt?: number;
  lastReply?: string;
  lastStatus?: string;
  remote?: string;
  /** null clears it. */
  lastTls?: AttemptTls | null;
  report?: ReportKind | null;
  delayNotified?: boolean;
  suspended?: boolean;
}

/** A change to one recipient, with the guards under which it applies and the event that records it. */
export interface RecipientPatch {
  id: number;
  queueId: string;
  /** Guard: apply only while the recipient holds this claim (a delivery's outcome). */
  claim?: string;
  /** Guard: apply only while the recipient is in one of these states (operator actions, recovery). */
  states?: readonly RecipientState[];
  /**
   * What the recipient was when claimed, when the caller holds the claim: a
   * backend may use it instead of reading the row (only when `claim` holds).
   */
  prev?: { state: RecipientState; report: ReportKind | null };
  set: RecipientFields;
  /** Written in the same transaction; dropped with the patch when a guard refuses it. */
  event?: MailEvent;
}

/** One atomic change: patches, events, a message's quarantine mark, destination overrides. */
export interface Change {
  patches?: RecipientPatch[];
  /** Written whatever the guards say. */
  events?: MailEvent[];
  /** Set (or, with reason "", clear) a message's quarantine mark. */
  quarantine?: { queueId: string; reason: string };
  overrides?: Array<{ put: DestinationOverride } | { remove: { destination: string; kind: DestinationOverride['kind'] } }>;
  /** The change makes something due: wake the schedulers (every node's). */
  wake?: boolean;
}

export interface ApplyResult {
  /** Ids of patches not applied: a guard refused them, or the recipient is gone. */
  refused: number[];
}

/** A selection of recipients, in id order, a page at a time. */
export interface RecipientQuery {
  queueId?: string;
  destination?: string;
  states?: readonly RecipientState[];
  suspended?: boolean;
  /** Only recipients that owe a report. */
  withReport?: boolean;
  /** Only "delivering" recipients whose claim token starts with this ("node:"). */
  claimPrefix?: string;
  afterId: number;
  limit: number;
}

export interface InsertSpec {
  /** Insert the recipients already claimed (those of held destinations stay queued). */
  claim?: ClaimSpec;
  /**
   * The recipients whose pending report of `kind` this message is: their
   * `report` is cleared in the same transaction. If any of them no longer
   * owes a report of that kind (another node, or an earlier try, made it),
   * the insert fails with ReportAlreadyMade and nothing is kept.
   */
  clearReports?: ReportsCleared;
  /** Written in the same transaction (the queue layer's `received` events and any others). */
  events: MailEvent[];
}

export interface InsertResult {
  /** The recipients inserted claimed (with their ids), in the order given. */
  claimed: RecipientRecord[];
  /** The body, when it is held in one piece (small messages). */
  body?: Buffer;
}

/** What open() found: messages damaged beyond use, for the queue layer to quarantine. */
export interface OpenReport {
  damaged: Array<{ queueId: string; reason: string }>;
}

/** A node of a cluster, as its heartbeat row says. */
export interface NodeInfo {
  name: string;
  /** Epoch ms of its last heartbeat (the database's clock). */
  heartbeatAt: number;
  startedAt: number;
  /** Recipients it holds claimed now. */
  inFlight: number;
  /** Its heartbeat is younger than the lease: it is alive. */
  alive: boolean;
}

export interface QueueBackend {
  /** "memory", "embedded" or "postgres". */
  readonly kind: string;
  /** Several nodes share this backend (claims of others must be left to their leases). */
  readonly shared: boolean;

  open(options: { recover: boolean }): Promise<OpenReport>;
  close(): Promise<void>;

  createBody(queueId: string): BodyWriter;
  insert(message: NewMessage, body: BodyWriter, spec: InsertSpec): Promise<InsertResult>;
  readBody(queueId: string): Promise<Readable>;
  readBodyBuffer(queueId: string): Promise<Buffer | null>;

  /** Claim up to `max` claimable recipients due at `now`, oldest due first, grouped by message. */
  claimDue(now: number, max: number, claim: ClaimSpec): Promise<Claim[]>;
  /** Extend the leases of these claims; rejects when the store cannot be reached. */
  renew(tokens: string[], leaseMs: number): Promise<void>;
  nextDueAt(): Promise<number | null>;
  countDue(queueId: string, now: number): Promise<number>;

  apply(change: Change, options?: { durable?: boolean }): Promise<ApplyResult>;

  getMessage(queueId: string): Promise<MessageRecord | null>;
  selectRecipients(q: RecipientQuery): Promise<RecipientRecord[]>;
  countRecipients(q: Omit<RecipientQuery, 'afterId' | 'limit'>): Promise<number>;
  /** Messages with recipients owing a report and none of them "delivering". */
  pendingReports(limit: number): Promise<string[]>;

  /** Unfinished recipients by destination (holds and redirects are not merged in: the queue layer does it). */
  summary(): Promise<DestinationSummary[]>;
  list(filter: ListFilter): Promise<MessageRecord[]>;
  messageStates(queueIds: string[]): Promise<MessageStates[]>;
  countByState(): Promise<Partial<Record<RecipientState, number>>>;
  overrides(): Promise<DestinationOverride[]>;

  durableEventSeq(): number;
  onEvents(listener: (events: MailEvent[]) => void): void;
  /** This node's events after `seq` in seq order; scope "all": every node's (single-node backends: the same). */
  eventsAfter(seq: number, limit: number, scope?: 'node' | 'all'): Promise<MailEvent[]>;
  eventsOf(queueId: string, afterSeq: number, limit: number): Promise<MailEvent[]>;
  track(query: TrackQuery): Promise<TrackResult>;
  pruneEvents(before: string, maxSeq: number, limit: number): Promise<number>;

  /** Something became due (a local change with `wake`, an insert with unclaimed recipients, or another node's). */
  onWake(listener: () => void): void;

  /** Cluster membership (shared backends): write this node's heartbeat; list the nodes. */
  heartbeat?(node: string, startedAt: number): Promise<void>;
  /** This node stops cleanly: its heartbeat ends now (a restart under its name need not wait out the lease). */
  leave?(node: string): Promise<void>;
  nodes?(leaseMs: number): Promise<NodeInfo[]>;
}

/** StorageFull - the store is out of space (disk, quota, tablespace): the reply is 452 4.3.1. */
export class StorageFull extends Error {
  constructor(cause?: unknown) {
    super(`queue storage is full${cause instanceof Error ? `: ${cause.message}` : ''}`, { cause });
    this.name = 'StorageFull';
  }
}

/** The recipients a report covers, and its kind. */
export interface ReportsCleared {
  kind: ReportKind;
  ids: number[];
}

/** ReportAlreadyMade - a report's recipients no longer owe it: it was made already (by another node); this one is not kept. */
export class ReportAlreadyMade extends Error {
  constructor(readonly queueId: string) {
    super(`the report about ${queueId} was made already`);
    this.name = 'ReportAlreadyMade';
  }
}

/** isOpen - a recipient keeps its message in the queue while it is unfinished or still owes a report. */
export function isOpen(state: string, report: string | null): boolean {
  return !FINAL_STATES.has(state as RecipientState) || report !== null;
}

/** CLAIMABLE_STATES - the states a due recipient can be claimed from (with its lease run out: also delivering). */
export const CLAIMABLE_STATES: readonly RecipientState[] = ['queued', 'deferred'];
