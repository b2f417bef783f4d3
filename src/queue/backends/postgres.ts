/*
 * queue/backends/postgres - the QueueBackend of a cluster: several Petrel
 * nodes share one queue in PostgreSQL (pg). Every node receives, delivers,
 * reports and administers the whole queue; which node works on a recipient
 * is decided by claims, never by who received the message.
 *
 * Invariants kept here:
 * - durable means committed: every session runs with synchronous_commit = on
 *   (set explicitly), and insert()/apply() resolve only after COMMIT returned.
 *   If a commit's answer is lost with the connection the operation rejects
 *   although it may have committed: the client then gets 451 and may send the
 *   message again (a duplicate, never a loss).
 * - claims are leases judged by PostgreSQL's clock, never a node's:
 *   claimDue() picks due recipients with FOR UPDATE SKIP LOCKED and marks
 *   them "delivering" with the claim token and lease_until = clock_timestamp()
 *   + lease, in one statement, so two nodes never claim the same recipient; a
 *   claim whose lease ran out is claimable again by anyone (held destination
 *   or not: whoever held it may have been part way through). A patch guarded by
 *   a claim applies only WHERE claim = token (a late outcome nobody re-claimed
 *   is still recorded); any state but "delivering" clears claim and lease.
 *   open() never touches another node's claims (they end with their lease).
 * - a message, its recipients and its body chunks are deleted in the
 *   transaction that makes its last open recipient final with no report owed
 *   (isOpen): messages.open_count counts them, so finishing never counts rows.
 *   The counts change once per transaction, at its end, in qid order: every
 *   node locks message rows in one order and last, so two nodes finishing
 *   recipients of the same messages never deadlock (recipient rows are
 *   locked in id order within a statement; a deadlock that still happens is
 *   retried, MAX_TRIES times, inside the operation's savepoint).
 * - the events of a node carry its name and a seq (bigserial) that increases
 *   in this node's commit order: each node copies its own events to its
 *   events.jsonl (eventsAfter(seq, limit) = this node's; scope 'all' for the
 *   cluster-wide audit, where seqs of different nodes may commit out of
 *   order); eventsOf()/track() see every node's events.
 * - errors from a full disk or tablespace (SQLSTATE 53100, 53000) are thrown
 *   as StorageFull; a lost connection, or a statement unanswered for
 *   timeoutMs (a hung server, a network cut), rejects the operation (the
 *   caller answers 451 4.3.0) and the next operation connects again by itself.
 * - heartbeats are the database's clock too; a clean close() marks the node
 *   stopped, so it may start again at once (a live twin is refused by the
 *   queue layer).
 * - hot paths use indexes only: due recipients by next_at (partial index over
 *   claimable states), expired leases by lease_until (partial, "delivering"),
 *   claims by token, a node's claims by claim_node, pending reports (partial),
 *   a message's rows by qid, events by (node, seq), (qid, seq), message id,
 *   sender, recipient.
 *
 * Why one writer connection: the writes of one node (insert, apply) are
 * gathered into one transaction on one connection (group commit): operations
 * queue up while a COMMIT is in flight and the next batch starts when it
 * returned, so the database syncs once for many sessions. The operations of
 * a batch run back to back (no savepoint between them: that would be a round
 * trip each); if one fails, the batch is rolled back and each runs again in a
 * transaction of its own, so a failing operation (or one that lost a
 * deadlock to another node, retried) fails alone and the others commit, as
 * the embedded store's group commit does. One connection also makes
 * this node's event seqs increase in commit order, which the event log relies
 * on (it copies up to durableEventSeq()). Reads, claims, renewals, heartbeats
 * and body chunks use a pg.Pool; a LISTEN connection of its own hears
 * `petrel_wake` (sent in the transaction of every change that makes work due)
 * and reconnects by itself, with back-off, when it drops (and then wakes
 * this node once: it may have missed some). This node's own changes wake it
 * directly once committed, before its callers hear of the commit; the
 * notification of its own writer connection is then not passed on again.
 *
 * Bodies live in the database, in table bodies(qid, n, data bytea) as chunks
 * of 256 KB (BODY_CHUNK). The BodyWriter keeps at most one chunk in memory:
 * every full chunk is written as it fills, in its own transaction, before the
 * message exists, and `body_uploads(qid)` (touched at every chunk) marks the
 * upload as unfinished; the last, partial chunk is written in the message's
 * own insert transaction, which also deletes the upload mark. A small message
 * is therefore one transaction. An aborted or failed upload's chunks are
 * deleted at once (only while no message row names them, and not when the
 * failure left the outcome in doubt); whatever is left (a node died mid-DATA)
 * is swept at open and every SWEEP_EVERY_MS by heartbeat: uploads untouched
 * for ORPHAN_AGE_MS with no message row. readBody() streams one chunk per
 * query; readBodyBuffer() returns the body only when it is one chunk.
 * At larger scale bodies would move to an object store (S3-like): the chunks
 * become one object per message, uploaded (multipart) before the insert
 * commits, the message row keeping its key; deleting a message then queues
 * its key in a table swept by any node, and the sweep of uploads stays as is.
 */
import { createRequire } from 'node:module';
import type pgTypes from 'pg';
import type { ClientBase, ClientConfig, QueryResultRow } from 'pg';

/*
 * pg is loaded on first use, not at import: a server on the embedded queue
 * never pays for it (about 20 MB of RSS). pg is CommonJS, so require() is its
 * own loader.
 */
let pgModule: typeof pgTypes | null = null;
function pgLib(): typeof pgTypes {
  return (pgModule ??= createRequire(import.meta.url)('pg') as typeof pgTypes);
}
declare namespace pg {
  type Client = pgTypes.Client;
  type Pool = pgTypes.Pool;
}
import { Readable } from 'node:stream';
import { isoTime, type MailEvent, type RecipientState } from '../../log/events.js';
import { ReportAlreadyMade, StorageFull, isOpen } from '../backend.js';
import { MESSAGE_COLUMNS, eventTlsColumn, parseAttemptTls, recipientTlsColumn, toEvent, type EventRow } from './rows.js';
import type {
  ApplyResult,
  Change,
  ClaimSpec,
  InsertResult,
  InsertSpec,
  NodeInfo,
  OpenReport,
  QueueBackend,
  RecipientPatch,
  RecipientQuery,
} from '../backend.js';
import { newRecipientRecord } from '../store.js';
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
} from '../store.js';

/** Body chunk size: big enough that a 50 MB body is 200 rows, small enough to hold one per session in memory. */
export const BODY_CHUNK = 256 * 1024;
/** An unfinished upload untouched this long (no SMTP DATA phase idles that long) is swept. */
const ORPHAN_AGE_MS = 3_600_000;
/** How often heartbeat() also sweeps orphan uploads. */
const SWEEP_EVERY_MS = 600_000;
/** Most operations gathered into one transaction. */
const MAX_BATCH = 256;
/** Tries of one operation that lost a deadlock (or serialization failure) to another node. */
const MAX_TRIES = 4;
/** close(): longest wait for a connection to end politely (a database that does not answer must not hold a shutdown). */
const CLOSE_WAIT_MS = 2000;
/** Longest wait for the answer to one statement (migrations excepted) before the operation fails. */
const QUERY_TIMEOUT_MS = 60_000;
/** LISTEN reconnect back-off. */
const LISTEN_BACKOFF_MS = [100, 200, 500, 1000, 2000, 5000] as const;
/** The advisory lock key that serialises schema migration between nodes ("petrel" in ASCII). */
const MIGRATION_LOCK = 0x70657472656c;
/** How far an event's ts may lag behind its seq order (a message's received events carry its arrival time). */
const SINCE_SLACK_MS = 3_600_000;
/** The NOTIFY channel that wakes every node's scheduler. */
const WAKE_CHANNEL = 'petrel_wake';

const FINAL_SQL = `('delivered','failed','expired','removed')`;

/**
 * MIGRATIONS - the schema, in order; migration i brings the schema from
 * version i to i + 1. Never edit one that has shipped: add the next.
 */
const MIGRATIONS: readonly string[] = [
  `
CREATE TABLE messages (
  qid text COLLATE "C" PRIMARY KEY,
  message_id text NOT NULL,
  sender text NOT NULL,
  envid text,
  ret text,
  size bigint NOT NULL,
  received_at bigint NOT NULL,
  smtputf8 boolean NOT NULL,
  eight_bit boolean NOT NULL,
  is_report boolean NOT NULL,
  client text NOT NULL,
  subject text NOT NULL,
  body_chunks integer NOT NULL,
  rcpt_count integer NOT NULL,
  open_count integer NOT NULL,
  quarantine text NOT NULL DEFAULT ''
);
CREATE INDEX messages_quarantine ON messages (qid) WHERE quarantine <> '';
CREATE INDEX messages_message_id ON messages (message_id);
CREATE TABLE bodies (
  qid text COLLATE "C" NOT NULL,
  n integer NOT NULL,
  data bytea NOT NULL,
  PRIMARY KEY (qid, n)
);
CREATE TABLE body_uploads (
  qid text COLLATE "C" PRIMARY KEY,
  node text NOT NULL,
  touched_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX body_uploads_touched ON body_uploads (touched_at);
CREATE TABLE recipients (
  id bigserial PRIMARY KEY,
  qid text COLLATE "C" NOT NULL,
  address text NOT NULL,
  orcpt text,
  notify text,
  destination text NOT NULL,
  state text NOT NULL,
  attempts integer NOT NULL DEFAULT 0,
  next_at bigint NOT NULL,
  last_at bigint,
  last_reply text NOT NULL DEFAULT '',
  last_status text NOT NULL DEFAULT '',
  remote text NOT NULL DEFAULT '',
  report text,
  delay_notified boolean NOT NULL DEFAULT false,
  suspended boolean NOT NULL DEFAULT false,
  claim text COLLATE "C",
  claim_node text COLLATE "C",
  lease_until timestamptz
);
CREATE INDEX recipients_qid ON recipients (qid);
CREATE INDEX recipients_due ON recipients (next_at) WHERE state IN ('queued','deferred') AND NOT suspended;
CREATE INDEX recipients_lease ON recipients (lease_until) WHERE state = 'delivering';
CREATE INDEX recipients_claim ON recipients (claim) WHERE claim IS NOT NULL;
CREATE INDEX recipients_claim_node ON recipients (claim_node, id) WHERE state = 'delivering';
CREATE INDEX recipients_report ON recipients (qid) WHERE report IS NOT NULL;
CREATE INDEX recipients_dest ON recipients (destination);
CREATE INDEX recipients_state ON recipients (state);
CREATE TABLE events (
  seq bigserial PRIMARY KEY,
  node text COLLATE "C" NOT NULL,
  ts text COLLATE "C" NOT NULL,
  id integer NOT NULL,
  event text NOT NULL,
  qid text COLLATE "C" NOT NULL,
  message_id text NOT NULL,
  sender text NOT NULL,
  recipient text,
  attempt integer,
  state text,
  remote text,
  reply text,
  error text,
  status text,
  detail text,
  report text
);
CREATE INDEX events_node_seq ON events (node, seq);
CREATE INDEX events_qid ON events (qid, seq);
CREATE INDEX events_message_id ON events (message_id, seq);
CREATE INDEX events_sender ON events (lower(sender), seq);
CREATE INDEX events_recipient ON events (lower(recipient), seq);
CREATE TABLE overrides (
  destination text NOT NULL,
  kind text NOT NULL,
  target text NOT NULL DEFAULT '',
  set_by text NOT NULL DEFAULT '',
  reason text NOT NULL DEFAULT '',
  at bigint NOT NULL,
  PRIMARY KEY (destination, kind)
);
CREATE TABLE nodes (
  name text PRIMARY KEY,
  heartbeat_at timestamptz NOT NULL,
  started_at bigint NOT NULL,
  stopped boolean NOT NULL DEFAULT false
);
`,
  // 1 -> 2 (issue 14, RFC 8689): a message's REQUIRETLS and "TLS-Required: No" flags.
  `
ALTER TABLE messages ADD COLUMN IF NOT EXISTS require_tls boolean NOT NULL DEFAULT false;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS tls_required_no boolean NOT NULL DEFAULT false;
`,
  // 2 -> 3 (issue 14): the TLS of a recipient's last attempt and of each attempt's event (JSON of AttemptTls; '' / NULL: none).
  `
ALTER TABLE recipients ADD COLUMN IF NOT EXISTS last_tls text NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN IF NOT EXISTS tls text;
`,
];

/** The schema version this Petrel knows. */
export const SCHEMA_VERSION = MIGRATIONS.length;

const NOT_HELD = `destination NOT IN (SELECT destination FROM overrides WHERE kind = 'hold')`;
const CLAIMABLE = `state IN ('queued','deferred') AND NOT suspended`;
const LEASE = `clock_timestamp() + make_interval(secs => $LEASE::float8 / 1000)`;

interface MessageRow {
  qid: string;
  message_id: string;
  sender: string;
  envid: string | null;
  ret: string | null;
  size: number;
  received_at: number;
  smtputf8: boolean;
  eight_bit: boolean;
  is_report: boolean;
  client: string;
  subject: string;
  rcpt_count: number;
  quarantine: string;
  require_tls: boolean;
  tls_required_no: boolean;
}

interface RecipientRow {
  id: number;
  qid: string;
  address: string;
  orcpt: string | null;
  notify: string | null;
  destination: string;
  state: string;
  attempts: number;
  next_at: number;
  last_at: number | null;
  last_reply: string;
  last_status: string;
  remote: string;
  last_tls: string;
  report: string | null;
  delay_notified: boolean;
  suspended: boolean;
  claim_node: string | null;
}


const RECIPIENT_COLUMNS =
  'id, qid, address, orcpt, notify, destination, state, attempts, next_at, last_at, last_reply, last_status, remote, last_tls, report, delay_notified, suspended, claim_node';
const EVENT_COLUMNS = 'seq, ts, id, event, qid, message_id, sender, recipient, attempt, state, remote, reply, error, status, detail, report, tls';

function toMessage(r: MessageRow): MessageRecord {
  return {
    queueId: r.qid,
    messageId: r.message_id,
    sender: r.sender,
    envid: r.envid,
    ret: r.ret === 'FULL' || r.ret === 'HDRS' ? r.ret : null,
    size: r.size,
    receivedAt: r.received_at,
    smtputf8: r.smtputf8,
    eightBit: r.eight_bit,
    isReport: r.is_report,
    client: r.client,
    subject: r.subject,
    recipientCount: r.rcpt_count,
    quarantine: r.quarantine,
    requireTls: r.require_tls === true,
    tlsRequiredNo: r.tls_required_no === true,
  };
}

function toRecipient(r: RecipientRow): RecipientRecord {
  const rec: RecipientRecord = {
    id: r.id,
    queueId: r.qid,
    address: r.address,
    orcpt: r.orcpt,
    notify: r.notify,
    destination: r.destination,
    state: r.state as RecipientState,
    attempts: r.attempts,
    nextAttemptAt: r.next_at,
    lastAttemptAt: r.last_at,
    lastReply: r.last_reply,
    lastStatus: r.last_status,
    remote: r.remote,
    lastTls: parseAttemptTls(r.last_tls),
    report: r.report as ReportKind | null,
    delayNotified: r.delay_notified,
    suspended: r.suspended,
  };
  if (r.state === 'delivering' && r.claim_node !== null) rec.claimedBy = r.claim_node;
  return rec;
}

/** claimNode - the node a claim token names: its text before the first ':'. */
export function claimNode(token: string): string {
  const i = token.indexOf(':');
  return i < 0 ? token : token.slice(0, i);
}

/** likePrefix - a LIKE pattern matching strings that start with `prefix` (its wildcards escaped). */
function likePrefix(prefix: string): string {
  return `${prefix.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}

/** Marks an error after which a commit may or may not have happened (the connection was lost around it). */
const IN_DOUBT = Symbol('petrel.inDoubt');

/** mapError - out-of-space errors become StorageFull; everything else is passed on as it is. */
function mapError(e: unknown): unknown {
  const code = (e as { code?: unknown } | null)?.code;
  if (code === '53100' || code === '53000') return new StorageFull(e);
  return e;
}

/** connectionLost - the error of a connection that broke (server shut down or restarted, socket closed), not of a statement. */
function connectionLost(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code === 'string') return code.startsWith('08') || code === '57P01' || code === '57P02' || code === '57P03' || code === 'ECONNRESET' || code === 'EPIPE';
  return e instanceof Error && /Connection terminated|connection is closed|Client has encountered a connection error/i.test(e.message);
}

/**
 * keepSeqs - the seqs one INSERT gave its rows (taken from the sequence in
 * row order by this node's one writer, so ascending = the order given), on
 * copies of the events kept for the listeners.
 */
function keepSeqs(tx: TxState, events: readonly MailEvent[], seqs: number[]): void {
  seqs.sort((a, b) => a - b);
  events.forEach((e, i) => tx.events.push({ ...e, seq: seqs[i]! }));
}

/** within - wait for `p` (settled either way) at most `ms`; false when the time ran out. */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([p.then(() => true, () => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** destroySocket - cut a connection at once (pg's end() waits for the server to close it). */
function destroySocket(c: unknown): void {
  (c as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
}

/** endClient - end a connection politely, or cut it when the server does not answer in time. */
async function endClient(c: pg.Client): Promise<void> {
  if (!(await within(c.end(), CLOSE_WAIT_MS))) destroySocket(c);
}

/** int - a whole number for an integer column or LIMIT (a computed time may carry a fraction of a millisecond). */
function int(v: number): number;
function int(v: number | null | undefined): number | null;
function int(v: number | null | undefined): number | null {
  return v === null || v === undefined ? null : Math.round(v);
}

function retryable(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return code === '40P01' || code === '40001';
}

/** int8 (bigserial ids, epoch ms, counts) as JavaScript numbers: every value Petrel stores is below 2^53. */
const TYPES = {
  getTypeParser: ((oid: number, format?: string) => {
    if (oid === 20 && format !== 'binary') return (v: string) => Number(v);
    return pgLib().types.getTypeParser(oid, (format ?? 'text') as 'text');
  }) as typeof pgTypes.types.getTypeParser,
};

export interface PostgresBackendOptions {
  /** postgres://user@host:port/db */
  url: string;
  /** This node's name: unique among the nodes sharing the queue, without ':'. */
  node: string;
  /** Default lease for claims made at insert when the spec gives none (ms). */
  leaseMs?: number;
  /** Most pooled connections for reads, claims and body chunks (default 10). */
  pool?: number;
  /** Longest wait for one statement's answer, ms (default 60 s; migrations wait as long as they take). */
  timeoutMs?: number;
}

/** The events and NOTIFY of one operation, kept only if it commits. */
interface TxState {
  events: MailEvent[];
  /** Events of apply() operations, written for the whole batch in one statement at its end. */
  deferred: MailEvent[];
  notify: boolean;
  /** Changes of messages' open counts, applied once for the whole batch (applyDeltas). */
  deltas: Map<string, number>;
}

function newTx(): TxState {
  return { events: [], deferred: [], notify: false, deltas: new Map() };
}

interface WriteOp {
  run(c: ClientBase, tx: TxState): Promise<unknown>;
  /** How many times it has run alone (deadlocks with another node are tried again). */
  tries?: number;
  resolve(v: unknown): void;
  reject(e: unknown): void;
}

/** The outcome of patching recipients inside a transaction. */
interface PatchResult {
  applied: Set<number>;
}

export class PostgresBackend implements QueueBackend {
  readonly kind = 'postgres';
  readonly shared = true;
  readonly node: string;

  private pool: pg.Pool | null = null;
  private writer: pg.Client | null = null;
  private writerConnecting: Promise<pg.Client> | null = null;
  private readonly queue: WriteOp[] = [];
  private draining: Promise<void> | null = null;
  private listener: pg.Client | null = null;
  private listenTimer: NodeJS.Timeout | null = null;
  private listenTry = 0;
  private closed = false;
  private durableSeq = 0;
  private lastSweep = 0;
  /** Nodes this instance wrote heartbeats for: close() marks them stopped (a clean stop may restart at once). */
  private readonly heartbeats = new Set<string>();
  private readonly eventListeners: Array<(events: MailEvent[]) => void> = [];
  private readonly wakeListeners: Array<() => void> = [];
  /** Group commit: transactions committed, and the operations they carried. */
  readonly stats = { batches: 0, ops: 0 };
  /** Test seam: the next write (insert, apply) fails with this error, inside its transaction, as a storage failure would. */
  failNext: Error | null = null;

  constructor(private readonly options: PostgresBackendOptions) {
    if (options.node.includes(':')) throw new Error(`node name ${JSON.stringify(options.node)} must not contain ':'`);
    this.node = options.node;
  }

  private clientConfig(role: string): ClientConfig {
    return {
      connectionString: this.options.url,
      application_name: `petrel ${this.node} ${role}`.slice(0, 63),
      // Durable commits whatever the server's default says.
      options: '-c synchronous_commit=on',
      connectionTimeoutMillis: Math.min(10_000, this.options.timeoutMs ?? QUERY_TIMEOUT_MS),
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
      // A database that stops answering (a network cut, a hung server) fails the operation
      // instead of holding it forever; the connection is then dropped and made again.
      ...(role === 'migrate' || role === 'listen' ? {} : { query_timeout: this.options.timeoutMs ?? QUERY_TIMEOUT_MS }),
      types: TYPES,
    };
  }

  // ---- connections -------------------------------------------------------

  private get db(): pg.Pool {
    if (!this.pool) throw new Error('the PostgreSQL queue is not open');
    return this.pool;
  }

  /**
   * query - one statement on a pooled connection; out-of-space errors become
   * StorageFull. A read (every statement here that starts with SELECT is
   * one) that met a connection the server had just closed (a restart) is
   * tried once more on a fresh connection; a write never is (it may have
   * committed).
   */
  private async query<R extends QueryResultRow>(sql: string, params: unknown[] = [], name?: string): Promise<R[]> {
    // A name makes it a prepared statement, parsed once per connection (hot statements).
    const q = name ? { name, text: sql, values: params } : { text: sql, values: params };
    try {
      return (await this.db.query<R>(q)).rows;
    } catch (e) {
      if (!connectionLost(e) || !/^\s*SELECT\b/.test(sql)) throw mapError(e);
    }
    try {
      return (await this.db.query<R>(q)).rows;
    } catch (e) {
      throw mapError(e);
    }
  }

  /** writerClient - the one connection this node writes through, connected again after it was lost. */
  private async writerClient(): Promise<pg.Client> {
    if (this.writer) return this.writer;
    this.writerConnecting ??= (async () => {
      const c = new (pgLib().Client)(this.clientConfig('writer'));
      const lost = (): void => {
        if (this.writer === c) this.writer = null;
      };
      c.on('error', lost);
      c.on('end', lost);
      try {
        await c.connect();
        await c.query('SET synchronous_commit = on');
      } catch (e) {
        c.removeAllListeners('end');
        await c.end().catch(() => undefined);
        throw e;
      }
      this.writer = c;
      return c;
    })().finally(() => {
      this.writerConnecting = null;
    });
    return this.writerConnecting;
  }

  /** writerPid - the server process of this node's writer connection (NOTIFYs from it are this node's own). */
  private writerPid(): number | null {
    return (this.writer as (pg.Client & { processID?: number | null }) | null)?.processID ?? null;
  }

  private dropWriter(c: pg.Client): void {
    if (this.writer === c) this.writer = null;
    void endClient(c);
  }

  /**
   * write - run `run` in this node's next group-commit transaction, inside a
   * savepoint of its own; resolves once COMMIT returned.
   */
  private write<T>(run: (c: ClientBase, tx: TxState) => Promise<T>): Promise<T> {
    if (this.closed || !this.pool) return Promise.reject(new Error('the PostgreSQL queue is not open'));
    const guarded = async (c: ClientBase, tx: TxState): Promise<T> => {
      const fault = this.failNext;
      if (fault) {
        this.failNext = null;
        throw fault;
      }
      return run(c, tx);
    };
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ run: guarded, resolve: resolve as (v: unknown) => void, reject });
      this.draining ??= this.drain().finally(() => {
        this.draining = null;
      });
    });
  }

  private async drain(): Promise<void> {
    while (this.queue.length) await this.runBatch(this.queue.splice(0, MAX_BATCH));
  }

  /**
   * runBatch - one transaction for these operations, run back to back with
   * nothing between them (optimistic: a savepoint around each would cost a
   * round trip per operation on the one writer connection). If one of them
   * fails, the transaction is rolled back and each operation runs again in a
   * transaction of its own, so a failing operation keeps nothing and fails
   * alone; one that lost a deadlock to another node is tried again.
   */
  private async runBatch(batch: WriteOp[]): Promise<void> {
    let c: pg.Client;
    try {
      c = await this.writerClient();
    } catch (e) {
      for (const op of batch) op.reject(mapError(e));
      return;
    }
    const results: unknown[] = [];
    const events: MailEvent[] = [];
    const deferred: MailEvent[] = [];
    const deltas = new Map<string, number>();
    let notify = false;
    let stage = 'begin';
    try {
      await c.query('BEGIN');
      stage = 'ops';
      for (const op of batch) {
        const tx = newTx();
        results.push(await op.run(c, tx));
        for (const e of tx.events) events.push(e);
        for (const e of tx.deferred) deferred.push(e);
        for (const [qid, d] of tx.deltas) deltas.set(qid, (deltas.get(qid) ?? 0) + d);
        notify ||= tx.notify;
      }
      // The outcomes' events, in one statement for the whole batch: their seqs follow
      // every event written above, so this node's seqs still rise in commit order.
      if (deferred.length) {
        const last = newTx();
        await this.writeEvents(c, last, deferred);
        for (const e of last.events) events.push(e);
      }
      // Messages' open counts last, for the whole batch in qid order: every node locks
      // message rows in the same order, and only here, so their writers never deadlock on them.
      await this.applyDeltas(c, deltas);
      if (notify) await c.query(`NOTIFY ${WAKE_CHANNEL}`);
      stage = 'commit';
      await c.query('COMMIT');
      this.stats.batches++;
      this.stats.ops += batch.length;
    } catch (e) {
      let err = mapError(e);
      let alive = true;
      try {
        await c.query('ROLLBACK');
      } catch {
        // The connection is gone: a COMMIT that was sent may still have happened.
        alive = false;
        this.dropWriter(c);
        if (stage === 'commit' && err instanceof Error) (err as Error & { [IN_DOUBT]?: boolean })[IN_DOUBT] = true;
      }
      if (alive && stage === 'ops') {
        if (batch.length > 1) {
          // Find the one that failed: each alone, in order (the rest commit).
          for (const op of batch) await this.runBatch([op]);
          return;
        }
        const op = batch[0]!;
        op.tries = (op.tries ?? 1) + 1;
        if (retryable(e) && op.tries <= MAX_TRIES) return this.runBatch(batch);
      }
      if (!(err instanceof Error)) err = new Error(String(err));
      for (const op of batch) op.reject(err);
      return;
    }
    // Committed: this node's seqs up to the last of these events are durable.
    if (events.length) {
      const last = events[events.length - 1]!.seq!;
      if (last > this.durableSeq) this.durableSeq = last;
      for (const l of this.eventListeners) {
        try {
          l(events);
        } catch {
          /* a listener's failure is its own */
        }
      }
    }
    // This node wakes at once, before its callers hear of the commit (the NOTIFY it sent
    // comes back through LISTEN a moment later and is ignored: see listen()).
    if (notify) this.emitWake();
    batch.forEach((op, i) => op.resolve(results[i]));
  }

  // ---- LISTEN ------------------------------------------------------------

  private async listen(reconnect: boolean): Promise<void> {
    if (this.closed) return;
    const c = new (pgLib().Client)(this.clientConfig('listen'));
    let gone = false;
    const lost = (): void => {
      if (gone) return;
      gone = true;
      if (this.listener === c) this.listener = null;
      void c.end().catch(() => undefined);
      this.scheduleListen();
    };
    c.on('error', lost);
    c.on('end', lost);
    c.on('notification', (n) => {
      // Every node's NOTIFY but this node's own writer's: that one woke this node when it committed.
      if (n.channel === WAKE_CHANNEL && n.processId !== this.writerPid()) this.emitWake();
    });
    try {
      await c.connect();
      await c.query(`LISTEN ${WAKE_CHANNEL}`);
    } catch {
      lost();
      return;
    }
    if (this.closed || gone) {
      gone = true;
      void c.end().catch(() => undefined);
      return;
    }
    this.listener = c;
    this.listenTry = 0;
    // Whatever was notified while we were not listening: look again.
    if (reconnect) this.emitWake();
  }

  private scheduleListen(): void {
    if (this.closed || this.listenTimer) return;
    const delay = LISTEN_BACKOFF_MS[Math.min(this.listenTry, LISTEN_BACKOFF_MS.length - 1)]!;
    this.listenTry++;
    this.listenTimer = setTimeout(() => {
      this.listenTimer = null;
      void this.listen(true);
    }, delay);
    this.listenTimer.unref();
  }

  /** Whether the LISTEN connection is up (tests wait for it after an outage). */
  get listening(): boolean {
    return this.listener !== null;
  }

  private emitWake(): void {
    for (const l of this.wakeListeners) {
      try {
        l();
      } catch {
        /* a listener's failure is its own */
      }
    }
  }

  onWake(listener: () => void): void {
    this.wakeListeners.push(listener);
  }

  // ---- open / close ------------------------------------------------------

  async open(options: { recover: boolean }): Promise<OpenReport> {
    this.closed = false;
    this.pool = new (pgLib().Pool)({ ...this.clientConfig('pool'), max: this.options.pool ?? 10, idleTimeoutMillis: 30_000 });
    // An idle pooled connection that breaks (server restart) is dropped by the pool; nothing to do.
    this.pool.on('error', () => undefined);
    try {
      // Migration on a connection of its own: creating an index on a big table may take long.
      const m = new (pgLib().Client)(this.clientConfig('migrate'));
      m.on('error', () => undefined);
      try {
        await m.connect();
        await this.migrate(m);
      } finally {
        await m.end().catch(() => undefined);
      }
      const c = await this.writerClient();
      const row = (await c.query<{ s: number | null }>(`SELECT max(seq) AS s FROM events WHERE node = $1`, [this.node])).rows[0];
      this.durableSeq = Math.max(this.durableSeq, row?.s ?? 0);
      if (options.recover) await this.sweepUploads();
    } catch (e) {
      await this.close();
      throw mapError(e);
    }
    await this.listen(false);
    return { damaged: [] };
  }

  /** migrate - bring the schema to SCHEMA_VERSION, under an advisory lock so nodes starting together take turns. */
  private async migrate(c: ClientBase): Promise<void> {
    await c.query('BEGIN');
    try {
      await c.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
      await c.query(`CREATE TABLE IF NOT EXISTS petrel_meta (key text PRIMARY KEY, value text NOT NULL)`);
      const rows = (await c.query<{ value: string }>(`SELECT value FROM petrel_meta WHERE key = 'schema_version'`)).rows;
      const version = rows.length ? Number(rows[0]!.value) : 0;
      if (!Number.isInteger(version) || version < 0) throw new Error(`queue schema version ${JSON.stringify(rows[0]?.value)} in petrel_meta is not a version`);
      if (version > SCHEMA_VERSION) throw new Error(`queue schema version ${version} is newer than this Petrel knows (${SCHEMA_VERSION}); upgrade Petrel`);
      for (let v = version; v < SCHEMA_VERSION; v++) await c.query(MIGRATIONS[v]!);
      if (version !== SCHEMA_VERSION) {
        await c.query(
          `INSERT INTO petrel_meta (key, value) VALUES ('schema_version', $1) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`,
          [String(SCHEMA_VERSION)],
        );
      }
      await c.query('COMMIT');
    } catch (e) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw e;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.listenTimer) clearTimeout(this.listenTimer);
    this.listenTimer = null;
    const l = this.listener;
    this.listener = null;
    if (l) {
      l.removeAllListeners('end');
      l.removeAllListeners('error');
      l.on('error', () => undefined);
      await endClient(l);
    }
    // Writes under way get their answer (bounded by timeoutMs).
    while (this.draining) await this.draining;
    if (this.writerConnecting) await this.writerConnecting.catch(() => undefined);
    if (this.heartbeats.size && this.pool) {
      // A clean stop: not alive any more (its claims are released by the queue layer or end with their leases).
      await within(this.pool.query(`UPDATE nodes SET stopped = true WHERE name = ANY($1::text[])`, [[...this.heartbeats]]), CLOSE_WAIT_MS);
      this.heartbeats.clear();
    }
    const w = this.writer;
    this.writer = null;
    if (w) await endClient(w);
    const p = this.pool;
    this.pool = null;
    if (p && !(await within(p.end(), CLOSE_WAIT_MS))) {
      // pg-pool keeps its connections in _clients: cut those the server did not let go.
      for (const c of (p as unknown as { _clients?: unknown[] })._clients ?? []) destroySocket(c);
    }
  }

  // ---- bodies ------------------------------------------------------------

  createBody(queueId: string): BodyWriter {
    return new PgBodyWriter(this, queueId);
  }

  /** writeChunk - one full chunk of an upload, in its own transaction, marking the upload as unfinished. */
  async writeChunk(queueId: string, n: number, data: Buffer): Promise<void> {
    await this.query(
      `WITH u AS (
         INSERT INTO body_uploads (qid, node) VALUES ($1, $4)
         ON CONFLICT (qid) DO UPDATE SET touched_at = clock_timestamp()
       )
       INSERT INTO bodies (qid, n, data) VALUES ($1, $2, $3)`,
      [queueId, n, data, this.node],
    );
  }

  /** dropUpload - an upload that never became a message: its chunks go (never those a message row names). */
  async dropUpload(queueId: string): Promise<void> {
    await this.query(
      `WITH orphan AS (SELECT NOT EXISTS (SELECT 1 FROM messages WHERE qid = $1) AS yes),
            b AS (DELETE FROM bodies WHERE qid = $1 AND (SELECT yes FROM orphan))
       DELETE FROM body_uploads WHERE qid = $1 AND (SELECT yes FROM orphan)`,
      [queueId],
    );
  }

  /** sweepUploads - uploads left unfinished for ORPHAN_AGE_MS (a node died during DATA): their chunks go. */
  private async sweepUploads(): Promise<void> {
    this.lastSweep = Date.now();
    const rows = await this.query<{ qid: string }>(
      `SELECT qid FROM body_uploads WHERE touched_at < clock_timestamp() - make_interval(secs => $1::float8 / 1000) ORDER BY touched_at LIMIT 1000`,
      [ORPHAN_AGE_MS],
    );
    for (const r of rows) await this.dropUpload(r.qid);
  }

  async insert(message: NewMessage, body: BodyWriter, spec: InsertSpec): Promise<InsertResult> {
    if (!(body instanceof PgBodyWriter) || body.owner !== this || body.queueId !== message.queueId) throw new Error('body writer does not belong to this queue');
    let tail: { data: Buffer; n: number };
    try {
      tail = await body.finish();
    } catch (e) {
      await body.abort();
      throw e;
    }
    const chunks = tail.n + 1;
    const claimToken = spec.claim?.token ?? null;
    const leaseMs = spec.claim?.leaseMs ?? this.options.leaseMs ?? 120_000;
    try {
      return await this.write(async (c, tx) => {
        // One statement: the message, its last chunk, its recipients (claimed unless their
        // destination is held) and its events; then the reports it clears, if any.
        const params: unknown[] = [];
        const at = (v: unknown): string => `$${params.push(v)}`;
        const qid = at(message.queueId);
        const claimed = at(claimToken);
        const rs = message.recipients;
        const events = spec.events;
        const text = `WITH msg AS (
             INSERT INTO messages (qid, message_id, sender, envid, ret, size, received_at, smtputf8, eight_bit, is_report, client, subject, body_chunks, rcpt_count, open_count, require_tls, tls_required_no)
             VALUES (${qid}, ${at(message.messageId)}, ${at(message.sender)}, ${at(message.envid)}, ${at(message.ret)}, ${at(int(message.size))}, ${at(int(message.receivedAt))},
                     ${at(message.smtputf8)}, ${at(message.eightBit)}, ${at(message.isReport)}, ${at(message.client)}, ${at(message.subject)}, ${at(chunks)}, ${at(rs.length)}, ${at(rs.length)},
                     ${at(message.requireTls === true)}, ${at(message.tlsRequiredNo === true)})
           ), body AS (
             INSERT INTO bodies (qid, n, data) VALUES (${qid}, ${at(tail.n)}, ${at(tail.data)})
           ), upload AS (
             DELETE FROM body_uploads WHERE qid = ${qid}
           ), rcpt AS (
             INSERT INTO recipients (qid, address, orcpt, notify, destination, state, next_at, claim, claim_node, lease_until)
             SELECT ${qid}, t.address, t.orcpt, t.notify, t.destination, CASE WHEN t.claimed THEN 'delivering' ELSE 'queued' END, ${at(int(message.receivedAt))},
                    CASE WHEN t.claimed THEN ${claimed}::text END, CASE WHEN t.claimed THEN ${at(claimToken === null ? null : claimNode(claimToken))}::text END,
                    CASE WHEN t.claimed THEN ${LEASE.replace('$LEASE', at(leaseMs))} END
             FROM (SELECT u.*, ${claimed}::text IS NOT NULL AND u.destination NOT IN (SELECT destination FROM overrides WHERE kind = 'hold') AS claimed
                   FROM unnest(${at(rs.map((r) => r.address))}::text[], ${at(rs.map((r) => r.orcpt))}::text[], ${at(rs.map((r) => r.notify))}::text[],
                               ${at(rs.map((r) => r.destination))}::text[]) WITH ORDINALITY AS u(address, orcpt, notify, destination, ord)) t
             ORDER BY t.ord
             RETURNING id, state
           )${events.length ? `, ev AS (${this.eventInsert(events, params)})` : ''}
           SELECT id, state FROM rcpt${events.length ? ` UNION ALL SELECT seq, NULL FROM ev` : ''}`;
        const rows = (await c.query<{ id: number; state: string | null }>({ name: events.length ? 'petrel_insert_ev' : 'petrel_insert', text, values: params })).rows;
        const ids = rows.filter((r) => r.state !== null).sort((a, b) => a.id - b.id);
        keepSeqs(
          tx,
          events,
          rows.filter((r) => r.state === null).map((r) => r.id),
        );
        const claimedRecords: RecipientRecord[] = [];
        rs.forEach((r, i) => {
          const row = ids[i]!;
          if (row.state !== 'delivering') {
            tx.notify = true;
            return;
          }
          const rec = newRecipientRecord(row.id, message.queueId, r, 'delivering', message.receivedAt);
          rec.claimedBy = claimNode(claimToken!);
          claimedRecords.push(rec);
        });
        if (spec.clearReports?.ids.length) {
          // Still owed, by this report's kind? Locked, so a second node's report of it waits here and then finds it made.
          const ids = spec.clearReports.ids;
          const owed = await c.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM (SELECT id FROM recipients WHERE id = ANY($1::bigint[]) AND report = $2 ORDER BY id FOR UPDATE) x`,
            [ids, spec.clearReports.kind],
          );
          if (owed.rows[0]!.n !== ids.length) throw new ReportAlreadyMade(message.queueId);
          await this.patchRecipients(
            c,
            tx,
            ids.map((id) => ({ id, queueId: '', set: { report: null } })),
          );
        }
        const result: InsertResult = { claimed: claimedRecords };
        if (chunks === 1) result.body = tail.data;
        return result;
      });
    } catch (e) {
      // Only when the insert surely did not commit: else its chunks may be a message's now (the sweep decides later).
      if (!(e instanceof Error && (e as Error & { [IN_DOUBT]?: boolean })[IN_DOUBT])) await this.dropUpload(message.queueId).catch(() => undefined);
      throw e;
    }
  }

  async readBodyBuffer(queueId: string): Promise<Buffer | null> {
    const rows = await this.query<{ body_chunks: number; data: Buffer | null }>(
      `SELECT m.body_chunks, b.data FROM messages m LEFT JOIN bodies b ON b.qid = m.qid AND b.n = 0 AND m.body_chunks = 1 WHERE m.qid = $1`,
      [queueId],
    );
    if (!rows.length) throw new Error(`no message ${queueId} in the queue`);
    const r = rows[0]!;
    if (r.body_chunks !== 1) return null;
    if (r.data === null) throw new Error(`the body of ${queueId} is missing from the queue`);
    return r.data;
  }

  async readBody(queueId: string): Promise<Readable> {
    const rows = await this.query<{ body_chunks: number; data: Buffer | null }>(
      `SELECT m.body_chunks, b.data FROM messages m LEFT JOIN bodies b ON b.qid = m.qid AND b.n = 0 WHERE m.qid = $1`,
      [queueId],
    );
    if (!rows.length) throw new Error(`no message ${queueId} in the queue`);
    const { body_chunks: chunks, data: first } = rows[0]!;
    if (first === null) throw new Error(`the body of ${queueId} is missing from the queue`);
    if (chunks === 1) return Readable.from([first]);
    return this.chunkStream(queueId, chunks, first);
  }

  /** chunkStream - a body read one chunk (one query) at a time, as the reader asks for more. */
  private chunkStream(queueId: string, chunks: number, first: Buffer): Readable {
    let n = 0;
    let reading = false;
    const stream = new Readable({
      highWaterMark: BODY_CHUNK,
      read: () => {
        if (reading) return;
        if (n === 0) {
          n = 1;
          stream.push(first);
          if (chunks === 1) stream.push(null);
          return;
        }
        if (n >= chunks) {
          stream.push(null);
          return;
        }
        reading = true;
        const want = n;
        this.query<{ data: Buffer }>(`SELECT data FROM bodies WHERE qid = $1 AND n = $2`, [queueId, want]).then(
          (rows) => {
            reading = false;
            if (!rows.length) {
              stream.destroy(new Error(`chunk ${want} of the body of ${queueId} is missing from the queue`));
              return;
            }
            n = want + 1;
            const more = stream.push(rows[0]!.data);
            if (n >= chunks) stream.push(null);
            else if (more) stream.read(0);
          },
          (e: unknown) => {
            reading = false;
            stream.destroy(e instanceof Error ? e : new Error(String(e)));
          },
        );
      },
    });
    return stream;
  }

  // ---- claims ------------------------------------------------------------

  async claimDue(now: number, max: number, claim: ClaimSpec): Promise<Claim[]> {
    if (max <= 0) return [];
    type Row = RecipientRow & { m_qid: string | null } & { [K in keyof MessageRow as `m_${K}`]: MessageRow[K] };
    const rows = await this.query<Row>(
      `WITH expired AS (
         SELECT id FROM recipients
         WHERE state = 'delivering' AND lease_until < clock_timestamp() AND NOT suspended AND ${NOT_HELD}
         ORDER BY lease_until LIMIT $2
         FOR UPDATE SKIP LOCKED
       ), due AS (
         SELECT id FROM recipients
         WHERE ${CLAIMABLE} AND next_at <= $1 AND ${NOT_HELD}
         ORDER BY next_at LIMIT ($2 - (SELECT count(*) FROM expired))
         FOR UPDATE SKIP LOCKED
       ), claimed AS (
         UPDATE recipients r SET state = 'delivering', claim = $3, claim_node = $4, lease_until = ${LEASE.replace('$LEASE', '$5')}
         FROM (SELECT id FROM expired UNION ALL SELECT id FROM due) p
         WHERE r.id = p.id
         RETURNING r.${RECIPIENT_COLUMNS.split(', ').join(', r.')}
       )
       SELECT c.*, ${MESSAGE_COLUMNS.split(', ')
         .map((k) => `m.${k} AS m_${k}`)
         .join(', ')}
       FROM claimed c LEFT JOIN messages m ON m.qid = c.qid
       ORDER BY c.next_at, c.id`,
      [int(now), int(max), claim.token, claimNode(claim.token), claim.leaseMs],
      'petrel_claim',
    );
    const claims = new Map<string, Claim>();
    for (const row of rows) {
      if (row.m_qid === null) continue;
      let cl = claims.get(row.qid);
      if (!cl) {
        cl = {
          token: claim.token,
          message: toMessage({
            qid: row.m_qid,
            message_id: row.m_message_id,
            sender: row.m_sender,
            envid: row.m_envid,
            ret: row.m_ret,
            size: row.m_size,
            received_at: row.m_received_at,
            smtputf8: row.m_smtputf8,
            eight_bit: row.m_eight_bit,
            is_report: row.m_is_report,
            client: row.m_client,
            subject: row.m_subject,
            rcpt_count: row.m_rcpt_count,
            quarantine: row.m_quarantine,
            require_tls: row.m_require_tls,
            tls_required_no: row.m_tls_required_no,
          }),
          recipients: [],
        };
        claims.set(row.qid, cl);
      }
      cl.recipients.push(toRecipient(row));
    }
    return [...claims.values()];
  }

  async renew(tokens: string[], leaseMs: number): Promise<void> {
    if (tokens.length === 0) return;
    for (let attempt = 1; ; attempt++) {
      try {
        // Rows a writer is changing right now (an outcome being recorded) are skipped, not
        // waited for: renew never waits on, nor deadlocks with, a writer; the next renewal
        // (a quarter lease later) catches any whose change did not commit.
        await this.db.query(
          `UPDATE recipients SET lease_until = ${LEASE.replace('$LEASE', '$2')}
           WHERE id IN (SELECT id FROM recipients WHERE claim = ANY($1::text[]) AND state = 'delivering' FOR UPDATE SKIP LOCKED)`,
          [tokens, leaseMs],
        );
        return;
      } catch (e) {
        if (retryable(e) && attempt < MAX_TRIES) continue;
        throw mapError(e);
      }
    }
  }

  async nextDueAt(): Promise<number | null> {
    const rows = await this.query<{ due: number | null; lease_in: number | null }>(
      `SELECT (SELECT next_at FROM recipients WHERE ${CLAIMABLE} AND ${NOT_HELD} ORDER BY next_at LIMIT 1) AS due,
              (SELECT (extract(epoch FROM lease_until - clock_timestamp()) * 1000)::float8 FROM recipients WHERE state = 'delivering' ORDER BY lease_until LIMIT 1) AS lease_in`,
    );
    const { due, lease_in } = rows[0]!;
    // A lease ends by the database's clock: turned into this node's, as "that long from now".
    const leaseEnd = lease_in === null ? null : Date.now() + Math.max(0, Math.ceil(lease_in));
    if (due === null) return leaseEnd;
    if (leaseEnd === null) return due;
    return Math.min(due, leaseEnd);
  }

  async countDue(queueId: string, now: number): Promise<number> {
    const rows = await this.query<{ n: number }>(
      `SELECT count(*) AS n FROM recipients
       WHERE qid = $1 AND NOT suspended AND ${NOT_HELD} AND ((${CLAIMABLE} AND next_at <= $2) OR (state = 'delivering' AND lease_until < clock_timestamp()))`,
      [queueId, int(now)],
    );
    return rows[0]!.n;
  }

  // ---- changes -----------------------------------------------------------

  async apply(change: Change, _options?: { durable?: boolean }): Promise<ApplyResult> {
    // Every commit is durable here (synchronous_commit = on): `durable: false` costs the same.
    return this.write(async (c, tx) => {
      const patches = change.patches ?? [];
      const { applied } = await this.patchRecipients(c, tx, patches);
      const events: MailEvent[] = [];
      for (const p of patches) if (p.event && applied.has(p.id)) events.push(p.event);
      for (const e of change.events ?? []) events.push(e);
      if (change.quarantine) await c.query(`UPDATE messages SET quarantine = $2 WHERE qid = $1`, [change.quarantine.queueId, change.quarantine.reason]);
      for (const o of change.overrides ?? []) {
        if ('put' in o) {
          const p = o.put;
          await c.query(
            `INSERT INTO overrides (destination, kind, target, set_by, reason, at) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (destination, kind) DO UPDATE SET target = EXCLUDED.target, set_by = EXCLUDED.set_by, reason = EXCLUDED.reason, at = EXCLUDED.at`,
            [p.destination, p.kind, p.to, p.by, p.reason, int(p.at)],
          );
        } else {
          await c.query(`DELETE FROM overrides WHERE destination = $1 AND kind = $2`, [o.remove.destination, o.remove.kind]);
        }
      }
      for (const e of events) tx.deferred.push(e);
      if (change.wake) tx.notify = true;
      return { refused: patches.filter((p) => !applied.has(p.id)).map((p) => p.id) };
    });
  }

  /**
   * patchRecipients - apply patches whose guards hold (one statement per
   * round; a recipient patched twice goes in a later round); what they do to
   * their messages' open counts goes into tx.deltas (applied at the end of
   * the batch: applyDeltas).
   */
  private async patchRecipients(c: ClientBase, tx: TxState, patches: readonly RecipientPatch[]): Promise<PatchResult> {
    const applied = new Set<number>();
    const deltas = tx.deltas;
    let rest = [...patches];
    while (rest.length) {
      const seen = new Set<number>();
      const round: RecipientPatch[] = [];
      const later: RecipientPatch[] = [];
      for (const p of rest) (seen.has(p.id) ? later : round).push(p), seen.add(p.id);
      rest = later;
      const s = (p: RecipientPatch) => p.set;
      const rows = (
        await c.query<{ id: number; qid: string; old_state: string; old_report: string | null; state: string; report: string | null }>(
          {
            name: 'petrel_patch',
            text: `WITH p AS (
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::integer[], $6::bigint[], $7::bigint[],
                                  $8::text[], $9::text[], $10::text[], $11::boolean[], $12::text[], $13::boolean[], $14::boolean[], $15::text[])
               AS t(id, guard_claim, guard_states, state, attempts, next_at, last_at, last_reply, last_status, remote, set_report, report, delay_notified, suspended, last_tls)
           ), old AS (
             SELECT r.id, r.state, r.report FROM recipients r JOIN p ON p.id = r.id
             WHERE (p.guard_claim IS NULL OR r.claim = p.guard_claim)
               AND (p.guard_states IS NULL OR r.state = ANY (string_to_array(p.guard_states, ',')))
             ORDER BY r.id
             FOR UPDATE OF r
           )
           UPDATE recipients r SET
             state = COALESCE(p.state, r.state),
             attempts = COALESCE(p.attempts, r.attempts),
             next_at = COALESCE(p.next_at, r.next_at),
             last_at = COALESCE(p.last_at, r.last_at),
             last_reply = COALESCE(p.last_reply, r.last_reply),
             last_status = COALESCE(p.last_status, r.last_status),
             remote = COALESCE(p.remote, r.remote),
             last_tls = COALESCE(p.last_tls, r.last_tls),
             report = CASE WHEN p.set_report THEN p.report ELSE r.report END,
             delay_notified = COALESCE(p.delay_notified, r.delay_notified),
             suspended = COALESCE(p.suspended, r.suspended),
             claim = CASE WHEN COALESCE(p.state, r.state) = 'delivering' THEN r.claim END,
             claim_node = CASE WHEN COALESCE(p.state, r.state) = 'delivering' THEN r.claim_node END,
             lease_until = CASE WHEN COALESCE(p.state, r.state) = 'delivering' THEN r.lease_until END
           FROM p JOIN old ON old.id = p.id
           WHERE r.id = p.id
           RETURNING r.id, r.qid, old.state AS old_state, old.report AS old_report, r.state, r.report`,
            values: [
            round.map((p) => p.id),
            round.map((p) => p.claim ?? null),
            round.map((p) => (p.states ? p.states.join(',') : null)),
            round.map((p) => s(p).state ?? null),
            round.map((p) => int(s(p).attempts)),
            round.map((p) => int(s(p).nextAttemptAt)),
            round.map((p) => int(s(p).lastAttemptAt)),
            round.map((p) => s(p).lastReply ?? null),
            round.map((p) => s(p).lastStatus ?? null),
            round.map((p) => s(p).remote ?? null),
            round.map((p) => s(p).report !== undefined),
            round.map((p) => s(p).report ?? null),
            round.map((p) => s(p).delayNotified ?? null),
            round.map((p) => s(p).suspended ?? null),
            round.map((p) => recipientTlsColumn(s(p).lastTls)),
          ],
          },
        )
      ).rows;
      for (const r of rows) {
        applied.add(r.id);
        const delta = Number(isOpen(r.state, r.report)) - Number(isOpen(r.old_state, r.old_report));
        if (delta) deltas.set(r.qid, (deltas.get(r.qid) ?? 0) + delta);
      }
    }
    return { applied };
  }

  /** applyDeltas - adjust open counts (in qid order: the lock order every node keeps); delete finished messages. */
  private async applyDeltas(c: ClientBase, deltas: Map<string, number>): Promise<void> {
    const list = [...deltas].filter(([, d]) => d !== 0).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    if (!list.length) return;
    // One statement: lock the rows, count, and delete the messages left with nothing open
    // (their recipients and body chunks with them); the UPDATE and the DELETE touch different rows.
    await c.query({
      name: 'petrel_deltas',
      text: `WITH d AS (SELECT * FROM unnest($1::text[], $2::integer[]) AS t(qid, delta)),
            cur AS (SELECT m.qid, m.open_count + d.delta AS n FROM messages m JOIN d ON d.qid = m.qid ORDER BY m.qid FOR UPDATE OF m),
            upd AS (UPDATE messages m SET open_count = cur.n FROM cur WHERE m.qid = cur.qid AND cur.n > 0),
            done AS (SELECT qid FROM cur WHERE n <= 0),
            r AS (DELETE FROM recipients WHERE qid IN (SELECT qid FROM done)),
            b AS (DELETE FROM bodies WHERE qid IN (SELECT qid FROM done))
       DELETE FROM messages WHERE qid IN (SELECT qid FROM done)`,
      values: [list.map(([q]) => q), list.map(([, d]) => d)],
    });
  }

  /** writeEvents - insert events in order; their seqs (this node's, increasing) go on the copies kept for the listeners. */
  private async writeEvents(c: ClientBase, tx: TxState, events: readonly MailEvent[]): Promise<void> {
    if (!events.length) return;
    const params: unknown[] = [];
    const text = this.eventInsert(events, params);
    keepSeqs(tx, events, (await c.query<{ seq: number }>({ name: 'petrel_events', text, values: params })).rows.map((r) => r.seq));
  }

  /**
   * eventInsert - the INSERT of these events (with RETURNING seq), its
   * parameters appended to `params`: one statement for any number of rows,
   * alone or as a CTE of a bigger statement. Rows go in in the order given.
   */
  private eventInsert(events: readonly MailEvent[], params: unknown[]): string {
    const col = <K extends keyof MailEvent>(k: K) => events.map((e) => e[k] ?? null);
    const at = (v: unknown): string => `$${params.push(v)}`;
    return `INSERT INTO events (node, ts, id, event, qid, message_id, sender, recipient, attempt, state, remote, reply, error, status, detail, report, tls)
         SELECT ${at(this.node)}, t.ts, t.id, t.event, t.qid, t.message_id, t.sender, t.recipient, t.attempt, t.state, t.remote, t.reply, t.error, t.status, t.detail, t.report, t.tls
         FROM unnest(${at(events.map((e) => e.ts || isoTime()))}::text[], ${at(col('id'))}::integer[], ${at(col('event'))}::text[], ${at(col('queue_id'))}::text[],
                     ${at(col('message_id'))}::text[], ${at(col('sender'))}::text[], ${at(col('recipient'))}::text[], ${at(events.map((e) => int(e.attempt)))}::integer[],
                     ${at(col('state'))}::text[], ${at(col('remote'))}::text[], ${at(col('reply'))}::text[], ${at(col('error'))}::text[], ${at(col('status'))}::text[],
                     ${at(col('detail'))}::text[], ${at(col('report'))}::text[], ${at(events.map(eventTlsColumn))}::text[])
              WITH ORDINALITY AS t(ts, id, event, qid, message_id, sender, recipient, attempt, state, remote, reply, error, status, detail, report, tls, ord)
         ORDER BY t.ord
         RETURNING seq`;
  }

  // ---- reads -------------------------------------------------------------

  async getMessage(queueId: string): Promise<MessageRecord | null> {
    const rows = await this.query<MessageRow>(`SELECT ${MESSAGE_COLUMNS} FROM messages WHERE qid = $1`, [queueId]);
    return rows.length ? toMessage(rows[0]!) : null;
  }

  /** recipientWhere - the WHERE of a recipient selection (every branch has an index: qid, destination, claim_node/claim, report). */
  private recipientWhere(q: Omit<RecipientQuery, 'afterId' | 'limit'>, args: unknown[]): string[] {
    const where: string[] = [];
    const arg = (v: unknown): string => {
      args.push(v);
      return `$${args.length}`;
    };
    if (q.queueId !== undefined) where.push(`qid = ${arg(q.queueId)}`);
    if (q.destination !== undefined) where.push(`destination = ${arg(q.destination)}`);
    if (q.states !== undefined) where.push(`state = ANY(${arg([...q.states])}::text[])`);
    if (q.suspended !== undefined) where.push(`suspended = ${arg(q.suspended)}`);
    if (q.withReport) where.push(`report IS NOT NULL`);
    if (q.claimPrefix !== undefined) {
      where.push(`state = 'delivering'`);
      const m = /^([^:]*):$/.exec(q.claimPrefix);
      if (m) where.push(`claim_node = ${arg(m[1])}`);
      else where.push(`claim LIKE ${arg(likePrefix(q.claimPrefix))}`);
    }
    return where;
  }

  async selectRecipients(q: RecipientQuery): Promise<RecipientRecord[]> {
    const args: unknown[] = [];
    const where = this.recipientWhere(q, args);
    args.push(int(q.afterId), int(q.limit));
    where.push(`id > $${args.length - 1}`);
    const rows = await this.query<RecipientRow>(`SELECT ${RECIPIENT_COLUMNS} FROM recipients WHERE ${where.join(' AND ')} ORDER BY id LIMIT $${args.length}`, args);
    return rows.map(toRecipient);
  }

  async countRecipients(q: Omit<RecipientQuery, 'afterId' | 'limit'>): Promise<number> {
    const args: unknown[] = [];
    const where = this.recipientWhere(q, args);
    const rows = await this.query<{ n: number }>(`SELECT count(*) AS n FROM recipients ${where.length ? `WHERE ${where.join(' AND ')}` : ''}`, args);
    return rows[0]!.n;
  }

  async pendingReports(limit: number): Promise<string[]> {
    const rows = await this.query<{ qid: string }>(
      `SELECT DISTINCT r.qid FROM recipients r
       WHERE r.report IS NOT NULL AND NOT EXISTS (SELECT 1 FROM recipients x WHERE x.qid = r.qid AND x.state = 'delivering')
       LIMIT $1`,
      [int(limit)],
    );
    return rows.map((r) => r.qid);
  }

  async summary(): Promise<DestinationSummary[]> {
    const rows = await this.query<{
      destination: string;
      recipients: number;
      messages: number;
      oldest: number;
      deferred: number;
      suspended: number;
      last_reply: string | null;
    }>(
      `SELECT r.destination, count(*) AS recipients, count(DISTINCT r.qid) AS messages, min(m.received_at) AS oldest,
              count(*) FILTER (WHERE r.state = 'deferred') AS deferred, count(*) FILTER (WHERE r.suspended) AS suspended,
              (SELECT x.last_reply FROM recipients x WHERE x.destination = r.destination AND x.last_reply <> '' AND x.state NOT IN ${FINAL_SQL}
               ORDER BY x.last_at DESC NULLS LAST LIMIT 1) AS last_reply
       FROM recipients r JOIN messages m ON m.qid = r.qid
       WHERE r.state NOT IN ${FINAL_SQL}
       GROUP BY r.destination ORDER BY recipients DESC, r.destination`,
    );
    return rows.map(({ last_reply, ...r }) => ({ ...r, lastReply: last_reply ?? '' }));
  }

  async list(filter: ListFilter): Promise<MessageRecord[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    const rcpt: string[] = [];
    const arg = (v: unknown): string => {
      args.push(v);
      return `$${args.length}`;
    };
    if (filter.after) where.push(`m.qid > ${arg(filter.after)}`);
    if (filter.sender !== undefined) where.push(`m.sender = ${arg(filter.sender)}`);
    if (filter.messageId) where.push(`m.message_id IN (${arg(filter.messageId)}, ${arg(`<${filter.messageId.replace(/^<|>$/g, '')}>`)})`);
    if (filter.olderThan !== undefined) where.push(`m.received_at <= ${arg(int(Date.now() - filter.olderThan))}`);
    if (filter.quarantined) where.push(`m.quarantine <> ''`);
    if (filter.destination) rcpt.push(`r.destination = ${arg(filter.destination)}`);
    if (filter.state) rcpt.push(`r.state = ${arg(filter.state)}`);
    if (filter.recipient) rcpt.push(`r.address = ${arg(filter.recipient)}`);
    if (rcpt.length) where.push(`EXISTS (SELECT 1 FROM recipients r WHERE r.qid = m.qid AND ${rcpt.join(' AND ')})`);
    const cols = MESSAGE_COLUMNS.split(', ')
      .map((c) => `m.${c}`)
      .join(', ');
    const rows = await this.query<MessageRow>(
      `SELECT ${cols} FROM messages m ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY m.qid LIMIT ${arg(int(filter.limit))}`,
      args,
    );
    return rows.map(toMessage);
  }

  async messageStates(queueIds: string[]): Promise<MessageStates[]> {
    if (!queueIds.length) return [];
    const agg = await this.query<{ qid: string; state: RecipientState; destination: string; n: number; s: number; nx: number | null }>(
      `SELECT qid, state, destination, count(*) AS n, count(*) FILTER (WHERE suspended) AS s,
              min(next_at) FILTER (WHERE state IN ('queued','deferred')) AS nx
       FROM recipients WHERE qid = ANY($1::text[]) GROUP BY qid, state, destination ORDER BY qid, destination`,
      [queueIds],
    );
    const last = await this.query<{ qid: string; last_reply: string }>(
      `SELECT DISTINCT ON (qid) qid, last_reply FROM recipients WHERE qid = ANY($1::text[]) AND last_reply <> '' ORDER BY qid, last_at DESC NULLS LAST`,
      [queueIds],
    );
    const lastBy = new Map(last.map((r) => [r.qid, r.last_reply]));
    return queueIds.map((qid) => {
      const out: MessageStates = { queueId: qid, states: {}, destinations: [], suspended: 0, nextAttemptAt: null, lastReply: lastBy.get(qid) ?? '' };
      for (const r of agg) {
        if (r.qid !== qid) continue;
        out.states[r.state] = (out.states[r.state] ?? 0) + r.n;
        if (!out.destinations.includes(r.destination) && out.destinations.length < 10) out.destinations.push(r.destination);
        out.suspended += r.s;
        if (r.nx !== null && (out.nextAttemptAt === null || r.nx < out.nextAttemptAt)) out.nextAttemptAt = r.nx;
      }
      return out;
    });
  }

  async countByState(): Promise<Partial<Record<RecipientState, number>>> {
    const out: Partial<Record<RecipientState, number>> = {};
    for (const r of await this.query<{ state: RecipientState; n: number }>(`SELECT state, count(*) AS n FROM recipients GROUP BY state`)) out[r.state] = r.n;
    return out;
  }

  async overrides(): Promise<DestinationOverride[]> {
    const rows = await this.query<{ destination: string; kind: string; target: string; set_by: string; reason: string; at: number }>(
      `SELECT destination, kind, target, set_by, reason, at FROM overrides ORDER BY destination, kind`,
    );
    return rows.map((r) => ({ destination: r.destination, kind: r.kind as DestinationOverride['kind'], to: r.target, by: r.set_by, reason: r.reason, at: r.at }));
  }

  // ---- events ------------------------------------------------------------

  durableEventSeq(): number {
    return this.durableSeq;
  }

  onEvents(listener: (events: MailEvent[]) => void): void {
    this.eventListeners.push(listener);
  }

  /** eventsAfter - this node's events after `seq` (its event log's source); scope 'all': every node's (the cluster audit). */
  async eventsAfter(seq: number, limit: number, scope: 'node' | 'all' = 'node'): Promise<MailEvent[]> {
    const rows =
      scope === 'all'
        ? await this.query<EventRow>(`SELECT ${EVENT_COLUMNS} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2`, [seq, limit])
        : await this.query<EventRow>(`SELECT ${EVENT_COLUMNS} FROM events WHERE node = $1 AND seq > $2 ORDER BY seq LIMIT $3`, [this.node, seq, limit]);
    return rows.map(toEvent);
  }

  async eventsOf(queueId: string, afterSeq: number, limit: number): Promise<MailEvent[]> {
    const rows = await this.query<EventRow>(`SELECT ${EVENT_COLUMNS} FROM events WHERE qid = $1 AND seq > $2 ORDER BY seq LIMIT $3`, [queueId, afterSeq, limit]);
    return rows.map(toEvent);
  }

  /**
   * track - the messages whose events match, newest first (each key has an
   * index ending in seq, so matches are walked newest first a page at a
   * time), with all their events.
   */
  async track(q: TrackQuery): Promise<TrackResult> {
    const where: string[] = [];
    const args: unknown[] = [];
    const arg = (v: unknown): string => {
      args.push(v);
      return `$${args.length}`;
    };
    if (q.messageId !== undefined) where.push(`message_id = ${arg(`<${q.messageId.trim().replace(/^<(.*)>$/, '$1')}>`)}`);
    if (q.sender !== undefined) where.push(`lower(sender) = lower(${arg(q.sender.replace(/^<(.*)>$/, '$1'))})`);
    if (q.recipient !== undefined) where.push(`lower(recipient) = lower(${arg(q.recipient.replace(/^<(.*)>$/, '$1'))})`);
    if (q.queueId !== undefined) where.push(`qid = ${arg(q.queueId)}`);
    if (where.length === 0) throw new Error('track needs a message id, sender, recipient or queue id');
    // ts follows seq to within a message's DATA phase: a walk stops SINCE_SLACK_MS before `since`.
    const stopAt = q.since !== undefined ? new Date(Date.parse(q.since) - SINCE_SLACK_MS).toISOString() : null;
    const page = 1000;
    let before = q.beforeSeq ?? null;
    const qids: string[] = [];
    let next: number | null = null;
    outer: for (let pages = 0; pages < 1000; pages++) {
      const a = [...args];
      const cursor = before === null ? '' : ` AND seq < $${a.push(before)}`;
      const rows = await this.query<{ seq: number; qid: string; ts: string }>(
        `SELECT seq, qid, ts FROM events WHERE ${where.join(' AND ')}${cursor} ORDER BY seq DESC LIMIT $${a.push(page)}`,
        a,
      );
      for (const row of rows) {
        if (stopAt !== null && row.ts < stopAt) break outer;
        if (q.since !== undefined && row.ts < q.since) continue;
        if (qids.includes(row.qid)) continue;
        if (qids.length >= q.limit) {
          next = row.seq + 1;
          break outer;
        }
        qids.push(row.qid);
      }
      if (rows.length < page) break;
      before = rows[rows.length - 1]!.seq;
    }
    const messages = await Promise.all(
      qids.reverse().map(async (qid) => ({
        queueId: qid,
        events: (await this.query<EventRow>(`SELECT ${EVENT_COLUMNS} FROM events WHERE qid = $1 ORDER BY seq LIMIT 10000`, [qid])).map(toEvent),
      })),
    );
    return { messages, next };
  }

  /**
   * pruneEvents - delete up to `limit` of THIS node's events older than
   * `before` with seq <= maxSeq (its event log has them), never those of a
   * message still in the queue. Each node prunes what it wrote.
   */
  async pruneEvents(before: string, maxSeq: number, limit: number): Promise<number> {
    const rows = await this.query<{ n: number }>(
      `WITH gone AS (
         DELETE FROM events WHERE seq IN (
           SELECT e.seq FROM events e
           WHERE e.node = $1 AND e.seq <= $2 AND e.ts < $3 AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.qid = e.qid)
           ORDER BY e.seq LIMIT $4)
         RETURNING 1)
       SELECT count(*) AS n FROM gone`,
      [this.node, int(maxSeq), before, int(limit)],
    );
    return rows[0]!.n;
  }

  // ---- cluster -----------------------------------------------------------

  async heartbeat(node: string, startedAt: number): Promise<void> {
    await this.query(
      `INSERT INTO nodes (name, heartbeat_at, started_at, stopped) VALUES ($1, clock_timestamp(), $2, false)
       ON CONFLICT (name) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at, started_at = EXCLUDED.started_at, stopped = false`,
      [node, int(startedAt)],
    );
    this.heartbeats.add(node);
    // Not part of the heartbeat's answer: a sweep that fails is tried again next time.
    if (Date.now() - this.lastSweep >= SWEEP_EVERY_MS) void this.sweepUploads().catch(() => undefined);
  }

  async nodes(leaseMs: number): Promise<NodeInfo[]> {
    const rows = await this.query<{ name: string; hb: number; started_at: number; in_flight: number; alive: boolean }>(
      `SELECT n.name, (extract(epoch FROM n.heartbeat_at) * 1000)::float8 AS hb, n.started_at,
              (SELECT count(*) FROM recipients r WHERE r.state = 'delivering' AND r.claim_node = n.name) AS in_flight,
              NOT n.stopped AND n.heartbeat_at > clock_timestamp() - make_interval(secs => $1::float8 / 1000) AS alive
       FROM nodes n ORDER BY n.name`,
      [leaseMs],
    );
    return rows.map((r) => ({ name: r.name, heartbeatAt: Math.round(r.hb), startedAt: r.started_at, inFlight: r.in_flight, alive: r.alive }));
  }
}

/**
 * PgBodyWriter - a body being received: at most one chunk (BODY_CHUNK) held in
 * memory; each full chunk is written as it fills. finish() hands the last,
 * partial chunk to the insert transaction.
 */
export class PgBodyWriter implements BodyWriter {
  private parts: Buffer[] = [];
  private held = 0;
  private written = 0;
  private total = 0;
  private chain: Promise<void> = Promise.resolve();
  private state: 'open' | 'finished' | 'aborted' = 'open';
  /** A chunk write failed in a way that may still have committed: leave the chunks to the sweep. */
  private inDoubt = false;

  constructor(
    readonly owner: PostgresBackend,
    readonly queueId: string,
  ) {}

  get size(): number {
    return this.total;
  }

  write(chunk: Buffer): Promise<void> {
    if (this.state !== 'open') return Promise.reject(new Error(`body of ${this.queueId} is ${this.state}`));
    const run = this.chain.then(async () => {
      if (this.state !== 'open') throw new Error(`body of ${this.queueId} is ${this.state}`);
      this.total += chunk.length;
      let rest = chunk;
      while (rest.length) {
        const take = Math.min(rest.length, BODY_CHUNK - this.held);
        // Copied: the caller may reuse its buffer once write() resolved.
        this.parts.push(Buffer.from(rest.subarray(0, take)));
        this.held += take;
        rest = rest.subarray(take);
        if (this.held === BODY_CHUNK) {
          const data = Buffer.concat(this.parts, this.held);
          this.parts = [];
          this.held = 0;
          try {
            await this.owner.writeChunk(this.queueId, this.written, data);
          } catch (e) {
            if (!(e as { code?: unknown }).code) this.inDoubt = true;
            throw e;
          }
          this.written++;
        }
      }
    });
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** finish - no more writes: the last chunk (possibly empty) and its number. */
  async finish(): Promise<{ data: Buffer; n: number }> {
    await this.chain;
    if (this.state !== 'open') throw new Error(`body of ${this.queueId} is ${this.state}`);
    this.state = 'finished';
    const data = Buffer.concat(this.parts, this.held);
    this.parts = [];
    this.held = 0;
    return { data, n: this.written };
  }

  async abort(): Promise<void> {
    if (this.state === 'aborted') return;
    this.state = 'aborted';
    await this.chain;
    this.parts = [];
    this.held = 0;
    if (this.written > 0 && !this.inDoubt) await this.owner.dropUpload(this.queueId).catch(() => undefined);
  }
}
