/*
 * queue/backends/sqlite - the embedded QueueBackend (the default): envelope,
 * recipient state and events in SQLite (better-sqlite3, WAL, an fsync of the
 * WAL before any durable write is acknowledged), bodies inline in SQLite when
 * small and as spool files when large. Storage only: what an event says,
 * which states an operator action touches, quarantine and crash recovery are
 * the queue layer's (queue/queue.ts); this file stores, fetches and changes
 * rows atomically, under the rules of queue/backend.ts.
 *
 * Durability protocol (docs/queue.md): a body file is fsync'd and renamed into
 * spool/<x>/ and that directory fsync'd before the transaction that inserts its
 * row commits; that transaction also holds the recipients and the events the
 * queue layer gave (its `received` events), so a message is either wholly
 * accepted or not at all. Writes go through GroupCommit: the operations of one
 * turn of the event loop share a transaction, and durable ones share an fsync.
 * Claims ("delivering", a token in `claim`, a lease in `lease_until`) and
 * lease renewals are written without a sync of their own: after a crash the
 * queue layer turns this node's claims back into due recipients, which is
 * exactly what a lost claim would have been.
 *
 * Invariants:
 * - a recipient's `claim` is set exactly while it is "delivering"; any patch
 *   that sets another state clears it and the lease;
 * - a patch guarded by a claim is applied only while the recipient still holds
 *   that claim. This file has one writer process (the CLI opens it beside a
 *   server with recover:false and never claims), so the live claims made here
 *   are also kept in memory (`claims`): a delivery's outcome is checked
 *   without reading its row; with no claim in memory (after a restart) the
 *   row's `claim` decides;
 * - a message's "open" recipient count (unfinished, or owing a report) is kept
 *   in its row; the change that brings it to 0 deletes the message, its
 *   recipients and (after the commit) its body file;
 * - nothing is deleted because of an error; a full disk (SQLITE_FULL, ENOSPC,
 *   EDQUOT) is thrown as StorageFull.
 *
 * Hot paths use indexes only: due recipients by next_at (partial index over
 * claimable states), claims whose lease ran out by lease_until (partial index
 * over "delivering": it holds only the claims in flight, oldest lease first,
 * so finding none that ran out is one seek), a
 * message's recipients by queue id, pending reports by a partial index. A
 * destination is held or redirected by one row in `overrides`, consulted by
 * the claim statements, never by rewriting its recipients. Tracking queries
 * use the tracking index (queue/store-worker) and the events' qid index and
 * never scan the log.
 */
import Database from 'better-sqlite3';
import type { Database as Db } from 'better-sqlite3';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { Worker } from 'node:worker_threads';
import { RECIPIENT_STATES, type MailEvent, type RecipientState } from '../../log/events.js';
import { GroupCommit } from '../group-commit.js';
import { Spool, SpoolWriter } from '../spool.js';
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
import {
  ReportAlreadyMade,
  StorageFull,
  isOpen,
  type ApplyResult,
  type Change,
  type ClaimSpec,
  type InsertResult,
  type InsertSpec,
  type OpenReport,
  type QueueBackend,
  type RecipientPatch,
  type RecipientQuery,
} from '../backend.js';
import { MESSAGE_COLUMNS, eventTlsColumn, parseAttemptTls, recipientTlsColumn, toEvent, type EventRow } from './rows.js';

/** Tables; columns added since a table was first made are added by addMissingColumns() before the indexes. */
const TABLES = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
  qid TEXT PRIMARY KEY,
  message_id TEXT NOT NULL,
  sender TEXT NOT NULL,
  envid TEXT,
  ret TEXT,
  size INTEGER NOT NULL,
  received_at INTEGER NOT NULL,
  smtputf8 INTEGER NOT NULL,
  eight_bit INTEGER NOT NULL,
  is_report INTEGER NOT NULL,
  client TEXT NOT NULL,
  subject TEXT NOT NULL,
  body BLOB,
  rcpt_count INTEGER NOT NULL,
  open_count INTEGER NOT NULL,
  quarantine TEXT NOT NULL DEFAULT '',
  require_tls INTEGER NOT NULL DEFAULT 0,
  tls_required_no INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS recipients (
  id INTEGER PRIMARY KEY,
  qid TEXT NOT NULL,
  address TEXT NOT NULL,
  orcpt TEXT,
  notify TEXT,
  destination TEXT NOT NULL,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_at INTEGER NOT NULL,
  last_at INTEGER,
  last_reply TEXT NOT NULL DEFAULT '',
  last_status TEXT NOT NULL DEFAULT '',
  remote TEXT NOT NULL DEFAULT '',
  last_tls TEXT NOT NULL DEFAULT '',
  report TEXT,
  delay_notified INTEGER NOT NULL DEFAULT 0,
  suspended INTEGER NOT NULL DEFAULT 0,
  lease_until INTEGER NOT NULL DEFAULT 0,
  claim TEXT
);
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  ts TEXT NOT NULL,
  id INTEGER NOT NULL,
  event TEXT NOT NULL,
  qid TEXT NOT NULL,
  message_id TEXT NOT NULL,
  sender TEXT NOT NULL,
  recipient TEXT,
  attempt INTEGER,
  state TEXT,
  remote TEXT,
  reply TEXT,
  error TEXT,
  status TEXT,
  detail TEXT,
  report TEXT,
  tls TEXT
);
CREATE TABLE IF NOT EXISTS overrides (
  destination TEXT NOT NULL,
  kind TEXT NOT NULL,
  target TEXT NOT NULL DEFAULT '',
  by TEXT NOT NULL DEFAULT '',
  reason TEXT NOT NULL DEFAULT '',
  at INTEGER NOT NULL,
  PRIMARY KEY (destination, kind)
);
`;

/** Columns later versions added to tables of existing queue.db files (name -> definition). */
const ADDED_COLUMNS: Record<string, Array<[string, string]>> = {
  recipients: [
    ['lease_until', 'INTEGER NOT NULL DEFAULT 0'],
    ['claim', 'TEXT'],
    ['last_tls', "TEXT NOT NULL DEFAULT ''"],
  ],
  // RFC 8689 flags of a message (issue 14); a queue.db from before them holds none.
  messages: [
    ['require_tls', 'INTEGER NOT NULL DEFAULT 0'],
    ['tls_required_no', 'INTEGER NOT NULL DEFAULT 0'],
  ],
  // The TLS of each attempt's event (issue 14).
  events: [['tls', 'TEXT']],
};

const INDEXES = `
CREATE INDEX IF NOT EXISTS recipients_qid ON recipients(qid);
CREATE INDEX IF NOT EXISTS recipients_due ON recipients(next_at) WHERE state IN ('queued','deferred') AND suspended = 0;
CREATE INDEX IF NOT EXISTS recipients_report ON recipients(qid) WHERE report IS NOT NULL;
CREATE INDEX IF NOT EXISTS recipients_lease ON recipients(lease_until) WHERE state = 'delivering';
DROP INDEX IF EXISTS recipients_delivering;
CREATE INDEX IF NOT EXISTS events_qid ON events(qid);
DROP INDEX IF EXISTS events_message_id;
DROP INDEX IF EXISTS events_sender;
DROP INDEX IF EXISTS events_recipient;
DROP INDEX IF EXISTS events_ts;
DROP INDEX IF EXISTS recipients_destination;
CREATE INDEX IF NOT EXISTS recipients_dest ON recipients(destination);
CREATE INDEX IF NOT EXISTS messages_quarantine ON messages(qid) WHERE quarantine != '';
`;

/** How far an event's ts may lag behind its seq order (a message's received events carry its arrival time). */
const SINCE_SLACK_MS = 3_600_000;
/** Most event rows written by one INSERT (15 parameters each; SQLite allows 32,766). */
const EVENT_ROWS_PER_INSERT = 32;

/** Held destinations, as a subquery the claim statements exclude (an empty table costs nothing). */
const NOT_HELD = `destination NOT IN (SELECT destination FROM overrides WHERE kind = 'hold')`;
/**
 * A claim whose lease ran out by this process's clock (the recipient is
 * claimable again), over the recipients_lease index. Not the caller's `now`:
 * that may lie ahead (claiming what will be due soon) and must not end live
 * leases. Suspended recipients and held destinations stay put, as after a
 * crash.
 */
const LEASE_RAN_OUT = `state = 'delivering' AND lease_until < ? AND suspended = 0 AND ${NOT_HELD}`;
/** A queued or deferred recipient due at `?`, over the recipients_due index. */
const DUE = `state IN ('queued','deferred') AND suspended = 0 AND next_at <= ? AND ${NOT_HELD}`;

/** Error codes of a full disk or quota, from SQLite and from the file system. */
const FULL_CODES = new Set(['SQLITE_FULL', 'ENOSPC', 'EDQUOT']);

/** storageError - a full disk's error as StorageFull; any other error as it is. */
export function storageError(e: unknown): unknown {
  if (e instanceof StorageFull) return e;
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' && FULL_CODES.has(code) ? new StorageFull(e) : e;
}

interface MessageRow {
  qid: string;
  message_id: string;
  sender: string;
  envid: string | null;
  ret: string | null;
  size: number;
  received_at: number;
  smtputf8: number;
  eight_bit: number;
  is_report: number;
  client: string;
  subject: string;
  rcpt_count: number;
  quarantine: string;
  require_tls: number;
  tls_required_no: number;
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
  delay_notified: number;
  suspended: number;
  claim: string | null;
}


const RECIPIENT_COLUMNS =
  'id, qid, address, orcpt, notify, destination, state, attempts, next_at, last_at, last_reply, last_status, remote, last_tls, report, delay_notified, suspended, claim';

function toMessage(r: MessageRow): MessageRecord {
  return {
    queueId: r.qid,
    messageId: r.message_id,
    sender: r.sender,
    envid: r.envid,
    ret: r.ret === 'FULL' || r.ret === 'HDRS' ? r.ret : null,
    size: r.size,
    receivedAt: r.received_at,
    smtputf8: r.smtputf8 === 1,
    eightBit: r.eight_bit === 1,
    isReport: r.is_report === 1,
    client: r.client,
    subject: r.subject,
    recipientCount: r.rcpt_count,
    quarantine: r.quarantine,
    requireTls: r.require_tls === 1,
    tlsRequiredNo: r.tls_required_no === 1,
  };
}

/** claimOwner - the node a claim token names (its prefix before ':'). */
function claimOwner(token: string): string {
  const i = token.indexOf(':');
  return i < 0 ? token : token.slice(0, i);
}

function toRecipient(r: RecipientRow): RecipientRecord {
  const out: RecipientRecord = {
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
    delayNotified: r.delay_notified === 1,
    suspended: r.suspended === 1,
  };
  if (r.state === 'delivering' && r.claim !== null) out.claimedBy = claimOwner(r.claim);
  return out;
}

/** The body writer of this backend: the spool's, with a full disk reported as StorageFull. */
class SqliteBodyWriter extends SpoolWriter {
  override async write(chunk: Buffer): Promise<void> {
    try {
      await super.write(chunk);
    } catch (e) {
      throw storageError(e);
    }
  }
}

/** The longest the writer pauses for the checkpointer (see queue/store-worker); it ends the pause itself after this. */
const HOLD_MAX_MS = 1000;

export interface SqliteBackendOptions {
  dataDir: string;
  /** Bodies up to this size are stored inside the database (one sync for many). */
  inlineMax?: number;
  /** This node's name (the prefix of the claim tokens the queue layer makes here); default "local". Kept for the queue layer, not used here. */
  node?: string;
  /** How often the store worker checkpoints the WAL (ms; default 250). For tests. */
  checkpointIntervalMs?: number;
  /** A WAL this long (frames) and still written to gets the writer paused while a checkpoint takes in the rest (default 1000; see queue/store-worker). For tests. */
  walRestartFrames?: number;
}

export class SqliteBackend implements QueueBackend {
  readonly kind = 'embedded';
  readonly shared = false;
  readonly node: string;
  readonly spool: Spool;
  private db!: Db;
  private commit!: GroupCommit;
  private recover = true;
  private readonly wakeListeners: Array<() => void> = [];
  private worker: Worker | null = null;
  /** Read-only connection to the tracking index, opened on first use. */
  private trackReader: Db | null | undefined = undefined;
  /** Held destinations (the `overrides` hold rows), read once and dropped whenever the overrides change. */
  private held: Set<string> | null = null;
  /**
   * Live claims made by this process: recipient id -> token (committed), and
   * the changes to it made by the transaction being run (token, or null: the
   * claim ended), merged on commit and dropped on rollback.
   */
  private claims = new Map<number, string>();
  private txClaims = new Map<number, string | null>();
  /** Event sequence numbers: inserted in the open transaction, committed, and durable (fsync'd). */
  private seqs = { tx: 0, committed: 0, durable: 0 };
  /** Events of the open transaction, of committed ones not yet fsync'd, and who wants them once durable. */
  private txEvents: MailEvent[] = [];
  /** Events of the operation being run, written when it ends (flushEvents). */
  private pendingEvents: MailEvent[] = [];
  /** Prepared multi-row event INSERTs, by number of rows. */
  private eventInserts: Database.Statement[] = [];
  private unsyncedEvents: MailEvent[] = [];
  private readonly eventListeners: Array<(events: MailEvent[]) => void> = [];
  private st!: ReturnType<SqliteBackend['prepare']>;
  /** Statements made from a query's shape (recipient selections), prepared once each. */
  private shaped = new Map<string, Database.Statement>();

  constructor(private readonly options: SqliteBackendOptions) {
    this.spool = new Spool(join(options.dataDir, 'spool'), options.inlineMax ?? 128 * 1024);
    this.node = options.node ?? 'local';
  }

  /** Test seam: make commits fail (storage failure). */
  get groupCommit(): GroupCommit {
    return this.commit;
  }

  /** The database handle, for the admin and audit modules that query it directly. */
  get database(): Db {
    return this.db;
  }

  private get file(): string {
    return join(this.options.dataDir, 'queue', 'queue.db');
  }

  private get trackFile(): string {
    return join(this.options.dataDir, 'queue', 'track.db');
  }

  async open(options: { recover: boolean }): Promise<OpenReport> {
    try {
      return await this.openNow(options);
    } catch (e) {
      throw storageError(e);
    }
  }

  private async openNow(options: { recover: boolean }): Promise<OpenReport> {
    this.recover = options.recover;
    mkdirSync(join(this.options.dataDir, 'queue'), { recursive: true });
    // Spool.open() empties spool/tmp/: beside a running server (recover false)
    // that would pull the bodies of its sessions in progress from under them.
    if (this.recover || !existsSync(this.spool.tmpDir)) await this.spool.open();
    const file = this.file;
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    // A WAL grown past this by a burst is cut back to it when it next starts again (it is reused from its start, not shrunk, below it).
    this.db.pragma(`journal_size_limit = ${64 * 1024 * 1024}`);
    this.db.pragma('foreign_keys = OFF');
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(TABLES);
    this.addMissingColumns();
    this.db.exec(INDEXES);
    this.st = this.prepare();
    this.shaped.clear();
    this.commit = new GroupCommit(this.db, `${file}-wal`);
    const last = (this.db.prepare(`SELECT MAX(seq) AS s FROM events`).get() as { s: number | null }).s ?? 0;
    this.seqs = { tx: 0, committed: last, durable: last };
    this.claims.clear();
    this.txClaims.clear();
    this.commit.hooks = {
      afterOperation: () => this.flushEvents(),
      committed: () => {
        if (this.seqs.tx > this.seqs.committed) this.seqs.committed = this.seqs.tx;
        this.seqs.tx = 0;
        if (this.txEvents.length) {
          for (const e of this.txEvents) this.unsyncedEvents.push(e);
          this.txEvents = [];
        }
        if (this.txClaims.size) {
          for (const [id, token] of this.txClaims) {
            if (token === null) this.claims.delete(id);
            else this.claims.set(id, token);
          }
          this.txClaims.clear();
        }
      },
      rolledBack: () => {
        this.seqs.tx = 0;
        this.txEvents = [];
        this.pendingEvents = [];
        this.txClaims.clear();
        // It may have been read inside the transaction that was undone.
        this.held = null;
      },
      syncStarting: () => {
        const upTo = this.seqs.committed;
        const events = this.unsyncedEvents;
        this.unsyncedEvents = [];
        return () => {
          if (upTo > this.seqs.durable) this.seqs.durable = upTo;
          if (events.length) for (const l of this.eventListeners) l(events);
        };
      },
    };
    if (!this.recover) return { damaged: [] };
    this.startWorker(file);
    await this.sweepOrphans();
    return { damaged: await this.verify() };
  }

  /** addMissingColumns - bring the tables of a queue.db made by an older version up to date (ALTER TABLE ADD COLUMN). */
  private addMissingColumns(): void {
    for (const [table, columns] of Object.entries(ADDED_COLUMNS)) {
      const have = new Set((this.db.prepare(`PRAGMA table_info(${table})`).all() as Array<{ name: string }>).map((c) => c.name));
      for (const [name, def] of columns) if (!have.has(name)) this.db.exec(`ALTER TABLE ${table} ADD COLUMN ${name} ${def}`);
    }
  }

  /**
   * verify - start-up check for damage (a truncated or missing body file, a
   * recipient row in no known state, unreadable counters, recipients whose
   * message row is gone). Recipients whose message row is gone are kept under
   * a placeholder message (storage repair); every damaged message is returned
   * for the queue layer to quarantine. Nothing is deleted.
   */
  private async verify(): Promise<OpenReport['damaged']> {
    const states = RECIPIENT_STATES.map((x) => `'${x}'`).join(',');
    const damaged = new Map<string, string>();
    const note = (qid: string, why: string): void => {
      if (!damaged.has(qid)) damaged.set(qid, why);
    };
    for (const r of this.db
      .prepare(
        `SELECT qid, state, typeof(attempts) AS ta, typeof(next_at) AS tn FROM recipients
         WHERE state NOT IN (${states}) OR typeof(attempts) <> 'integer' OR typeof(next_at) <> 'integer' OR attempts < 0`,
      )
      .all() as Array<{ qid: string; state: unknown; ta: string; tn: string }>) {
      note(r.qid, `damaged recipient row (state ${JSON.stringify(r.state)}, attempts ${r.ta}, next_at ${r.tn})`);
    }
    for (const m of this.db
      .prepare(
        `SELECT qid FROM messages WHERE typeof(received_at) <> 'integer' OR typeof(size) <> 'integer' OR size < 0 OR typeof(sender) <> 'text' OR typeof(message_id) <> 'text'`,
      )
      .all() as Array<{ qid: string }>) {
      note(m.qid, 'damaged message row');
    }
    for (const m of this.db.prepare(`SELECT qid, size FROM messages WHERE body IS NULL AND quarantine = ''`).all() as Array<{ qid: string; size: number }>) {
      let actual: number | null = null;
      try {
        actual = statSync(this.spool.pathOf(m.qid)).size;
      } catch {
        actual = null;
      }
      if (actual === null) note(m.qid, 'body file missing from the spool');
      else if (actual !== m.size) note(m.qid, `body file is ${actual} octets, ${m.size} were accepted (truncated or damaged)`);
    }
    const orphans = this.db
      .prepare(`SELECT DISTINCT r.qid AS qid FROM recipients r WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.qid = r.qid)`)
      .all() as Array<{ qid: string }>;
    if (orphans.length) {
      const why = 'message row missing: recipients kept under a placeholder';
      await this.run(() => {
        for (const { qid } of orphans) {
          // The envelope is gone: keep the recipients visible under a placeholder message.
          this.db
            .prepare(
              `INSERT INTO messages (qid, message_id, sender, envid, ret, size, received_at, smtputf8, eight_bit, is_report, client, subject, body, rcpt_count, open_count, quarantine)
               VALUES (?, '', '', NULL, NULL, 0, ?, 0, 0, 0, '', '', NULL, (SELECT COUNT(*) FROM recipients WHERE qid = ?), (SELECT COUNT(*) FROM recipients WHERE qid = ?), ?)`,
            )
            .run(qid, Date.now(), qid, qid, why);
        }
      }, true);
      for (const { qid } of orphans) damaged.set(qid, why);
    }
    return [...damaged].map(([queueId, reason]) => ({ queueId, reason }));
  }

  private prepare() {
    const db = this.db;
    return {
      insertMessage: db.prepare(
        `INSERT INTO messages (qid, message_id, sender, envid, ret, size, received_at, smtputf8, eight_bit, is_report, client, subject, body, rcpt_count, open_count, require_tls, tls_required_no)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      insertRecipient: db.prepare(
        `INSERT INTO recipients (qid, address, orcpt, notify, destination, state, next_at, lease_until, claim) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      getMessage: db.prepare(`SELECT ${MESSAGE_COLUMNS} FROM messages WHERE qid = ?`),
      getBody: db.prepare(`SELECT body FROM messages WHERE qid = ?`),
      getRecipientState: db.prepare(`SELECT qid, state, report, claim FROM recipients WHERE id = ?`),
      // Claims whose lease ran out first (they are overdue), then due recipients by next_at.
      leaseRanOut: db.prepare(`SELECT ${RECIPIENT_COLUMNS} FROM recipients WHERE ${LEASE_RAN_OUT} ORDER BY lease_until LIMIT ?`),
      due: db.prepare(`SELECT ${RECIPIENT_COLUMNS} FROM recipients WHERE ${DUE} ORDER BY next_at LIMIT ?`),
      claim: db.prepare(`UPDATE recipients SET state = 'delivering', claim = ?, lease_until = ? WHERE id = ?`),
      renewId: db.prepare(`UPDATE recipients SET lease_until = ? WHERE id = ? AND claim = ?`),
      // ORDER BY + LIMIT (not MIN) so the index is walked only past held destinations' rows.
      nextDue: db.prepare(`SELECT next_at AS t FROM recipients WHERE state IN ('queued','deferred') AND suspended = 0 AND ${NOT_HELD} ORDER BY next_at LIMIT 1`),
      nextLeaseEnd: db.prepare(`SELECT lease_until AS t FROM recipients WHERE state = 'delivering' AND suspended = 0 AND ${NOT_HELD} ORDER BY lease_until LIMIT 1`),
      countDue: db.prepare(
        `SELECT COUNT(*) AS n FROM recipients WHERE qid = ? AND ((${DUE}) OR (${LEASE_RAN_OUT}))`,
      ),
      update: db.prepare(
        `UPDATE recipients SET state = COALESCE(?, state), attempts = COALESCE(?, attempts), next_at = COALESCE(?, next_at), last_at = COALESCE(?, last_at),
           last_reply = COALESCE(?, last_reply), last_status = COALESCE(?, last_status), remote = COALESCE(?, remote), last_tls = COALESCE(?, last_tls),
           report = ?, delay_notified = COALESCE(?, delay_notified), suspended = COALESCE(?, suspended),
           claim = CASE WHEN ? THEN NULL ELSE claim END, lease_until = CASE WHEN ? THEN 0 ELSE lease_until END
         WHERE id = ?`,
      ),
      clearReport: db.prepare(`UPDATE recipients SET report = NULL WHERE id = ?`),
      addOpen: db.prepare(`UPDATE messages SET open_count = open_count + ? WHERE qid = ? RETURNING open_count, body IS NULL AS file`),
      deleteMessage: db.prepare(`DELETE FROM messages WHERE qid = ?`),
      deleteRecipients: db.prepare(`DELETE FROM recipients WHERE qid = ?`),
      pendingReports: db.prepare(
        `SELECT DISTINCT r.qid AS qid FROM recipients r WHERE r.report IS NOT NULL AND NOT EXISTS (SELECT 1 FROM recipients x WHERE x.qid = r.qid AND x.state = 'delivering') LIMIT ?`,
      ),
      quarantineMessage: db.prepare(`UPDATE messages SET quarantine = ? WHERE qid = ?`),
      putOverride: db.prepare(`INSERT OR REPLACE INTO overrides (destination, kind, target, by, reason, at) VALUES (?, ?, ?, ?, ?, ?)`),
      removeOverride: db.prepare(`DELETE FROM overrides WHERE destination = ? AND kind = ?`),
      heldRows: db.prepare(`SELECT destination FROM overrides WHERE kind = 'hold'`),
      eventsAfter: db.prepare(`SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?`),
      hasMessage: db.prepare(`SELECT 1 FROM messages WHERE qid = ?`),
      hasRecipients: db.prepare(`SELECT 1 FROM recipients WHERE qid = ? LIMIT 1`),
    };
  }

  /** run - a GroupCommit operation, with a full disk's error reported as StorageFull. */
  private async run<T>(op: (db: Db) => T, durable: boolean): Promise<T> {
    if (!this.commit) throw new Error('queue store is not open');
    try {
      return await this.commit.run(op, durable);
    } catch (e) {
      throw storageError(e);
    }
  }

  /**
   * startWorker - WAL checkpoints and the tracking index on a worker thread
   * (queue/store-worker); if it cannot run, SQLite's own automatic
   * checkpoints stay on and tracking reads the event table directly.
   */
  private startWorker(file: string): void {
    try {
      const worker = new Worker(new URL('../store-worker.js', import.meta.url), {
        workerData: { file, trackFile: this.trackFile, intervalMs: this.options.checkpointIntervalMs ?? 250, restartFrames: this.options.walRestartFrames ?? 1000 },
      });
      worker.unref();
      this.db.pragma('wal_autocheckpoint = 0');
      // The checkpointer asks the writer to pause while it takes in the rest of the WAL (see store-worker).
      worker.on('message', (m: { kind?: string }) => {
        if (m.kind === 'hold') {
          this.commit.hold(HOLD_MAX_MS);
          worker.postMessage({ kind: 'held' });
        } else if (m.kind === 'release') this.commit.release();
      });
      worker.on('error', () => this.workerGone());
      worker.on('exit', () => this.workerGone());
      this.worker = worker;
    } catch {
      this.worker = null;
    }
  }

  private workerGone(): void {
    if (!this.worker) return;
    this.worker = null;
    this.commit.release();
    if (this.db?.open) this.db.pragma('wal_autocheckpoint = 1000');
  }

  async close(): Promise<void> {
    if (!this.db?.open) return;
    const worker = this.worker;
    if (worker) {
      this.worker = null;
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => void worker.terminate().then(() => resolve()), 2000);
        worker.once('exit', () => {
          clearTimeout(t);
          resolve();
        });
        worker.postMessage({ kind: 'stop' });
      });
    }
    await this.commit.close();
    if (this.trackReader) this.trackReader.close();
    this.trackReader = undefined;
    if (process.env.PETREL_STORE_STATS) process.stderr.write(`group commit: ${JSON.stringify(this.commit.stats)}\n`);
    this.db.close();
  }

  createBody(queueId: string): BodyWriter {
    return new SqliteBodyWriter(this.spool, queueId);
  }

  /** heldDestinations - the destinations on hold now (cached; see `held`). */
  private heldDestinations(): Set<string> {
    this.held ??= new Set((this.st.heldRows.all() as Array<{ destination: string }>).map((r) => r.destination));
    return this.held;
  }

  /** noteClaim - a claim made (token) or ended (null) by the transaction being run: seen by its later operations, kept on commit. */
  private noteClaim(id: number, token: string | null): void {
    this.txClaims.set(id, token);
  }

  /** liveClaim - the claim this process knows a recipient holds: a token, null (none), or undefined (not known here: read the row). */
  private liveClaim(id: number): string | null | undefined {
    const t = this.txClaims.get(id);
    if (t !== undefined) return t;
    return this.claims.get(id);
  }

  async insert(message: NewMessage, body: BodyWriter, spec: InsertSpec): Promise<InsertResult> {
    if (!(body instanceof SpoolWriter)) throw new Error('body writer does not belong to this store');
    let finished: { inline: Buffer | null; dir: string | null };
    try {
      finished = await body.finish();
    } catch (e) {
      await body.abort();
      throw storageError(e);
    }
    let claimed: RecipientRecord[] = [];
    try {
      // The renamed body file's directory entry is durable before any row names it.
      if (finished.dir) await this.spool.syncDir(finished.dir);
      const removed = await this.run(() => {
        claimed = [];
        this.st.insertMessage.run(
          message.queueId,
          message.messageId,
          message.sender,
          message.envid,
          message.ret,
          message.size,
          message.receivedAt,
          message.smtputf8 ? 1 : 0,
          message.eightBit ? 1 : 0,
          message.isReport ? 1 : 0,
          message.client,
          message.subject,
          finished.inline,
          message.recipients.length,
          message.recipients.length,
          message.requireTls ? 1 : 0,
          message.tlsRequiredNo ? 1 : 0,
        );
        const claim = spec.claim;
        const held = claim ? this.heldDestinations() : null;
        const leaseUntil = claim ? Date.now() + claim.leaseMs : 0;
        const owner = claim ? claimOwner(claim.token) : '';
        for (const r of message.recipients) {
          const take = claim !== undefined && !held!.has(r.destination);
          const info = this.st.insertRecipient.run(
            message.queueId,
            r.address,
            r.orcpt,
            r.notify,
            r.destination,
            take ? 'delivering' : 'queued',
            message.receivedAt,
            take ? leaseUntil : 0,
            take ? claim.token : null,
          );
          if (take) {
            const id = Number(info.lastInsertRowid);
            this.noteClaim(id, claim.token);
            const rec = newRecipientRecord(id, message.queueId, r, 'delivering', message.receivedAt);
            rec.claimedBy = owner;
            claimed.push(rec);
          }
        }
        for (const e of spec.events) this.insertEvent(e);
        const deltas = new Map<string, number>();
        for (const id of spec.clearReports?.ids ?? []) {
          const row = this.st.getRecipientState.get(id) as { qid: string; state: string; report: string | null } | undefined;
          if (!row || row.report !== spec.clearReports!.kind) throw new ReportAlreadyMade(message.queueId);
          this.st.clearReport.run(id);
          if (isOpen(row.state, row.report) && !isOpen(row.state, null)) deltas.set(row.qid, (deltas.get(row.qid) ?? 0) - 1);
        }
        return this.applyDeltas(deltas);
      }, true);
      await this.removeBodies(removed);
    } catch (e) {
      if (finished.dir) await this.spool.remove(message.queueId).catch(() => undefined);
      throw storageError(e);
    }
    // Only what was not claimed here is for the scheduler to find.
    if (claimed.length < message.recipients.length) this.emitWake();
    return { claimed, ...(finished.inline ? { body: finished.inline } : {}) };
  }

  /**
   * insertEvent - add an event to the operation being run. Its events are
   * written when it ends, inside its transaction (flushEvents, the commit's
   * afterOperation hook), several rows per INSERT: an accepted message or a
   * delivery writes one event per recipient, and one statement for many rows
   * costs a fraction of one statement each.
   */
  private insertEvent(e: MailEvent): void {
    this.pendingEvents.push(e);
  }

  /** flushEvents - write the operation's events (the commit's afterOperation hook). Seqs are the rowids given, in order. */
  private flushEvents(): void {
    const list = this.pendingEvents;
    if (list.length === 0) return;
    this.pendingEvents = [];
    const keep = this.eventListeners.length > 0;
    for (let i = 0; i < list.length; ) {
      const n = Math.min(EVENT_ROWS_PER_INSERT, list.length - i);
      // Positional parameters: binding by name costs more, on the hottest statement.
      const params: unknown[] = new Array(n * 16);
      for (let k = 0; k < n; k++) {
        const e = list[i + k]!;
        const o = k * 16;
        params[o] = e.ts;
        params[o + 1] = e.id;
        params[o + 2] = e.event;
        params[o + 3] = e.queue_id;
        params[o + 4] = e.message_id;
        params[o + 5] = e.sender;
        params[o + 6] = e.recipient ?? null;
        params[o + 7] = e.attempt ?? null;
        params[o + 8] = e.state ?? null;
        params[o + 9] = e.remote ?? null;
        params[o + 10] = e.reply ?? null;
        params[o + 11] = e.error ?? null;
        params[o + 12] = e.status ?? null;
        params[o + 13] = e.detail ?? null;
        params[o + 14] = e.report ?? null;
        params[o + 15] = eventTlsColumn(e);
      }
      const last = Number(this.eventInsert(n).run(params).lastInsertRowid);
      // One statement's rows get consecutive rowids (a single writer; AUTOINCREMENT).
      if (keep) {
        for (let k = 0; k < n; k++) {
          const e = list[i + k]!;
          e.seq = last - n + 1 + k;
          this.txEvents.push(e);
        }
      }
      this.seqs.tx = last;
      i += n;
    }
  }

  /** eventInsert - the prepared INSERT of `n` event rows (made once per size). */
  private eventInsert(n: number): Database.Statement {
    let st = this.eventInserts[n];
    if (!st) {
      const row = '(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)';
      st = this.db.prepare(
        `INSERT INTO events (ts, id, event, qid, message_id, sender, recipient, attempt, state, remote, reply, error, status, detail, report, tls) VALUES ${new Array(n).fill(row).join(', ')}`,
      );
      this.eventInserts[n] = st;
    }
    return st;
  }

  onEvents(listener: (events: MailEvent[]) => void): void {
    this.eventListeners.push(listener);
  }

  /**
   * durableEventSeq - the newest event known to be on stable storage. Events
   * are visible as soon as their transaction commits, a moment before the
   * fsync that makes them durable; the event log copies only up to here, so
   * the file never records a change a power loss could still undo.
   */
  durableEventSeq(): number {
    return this.seqs.durable;
  }

  /** applyDeltas - adjust open counts; delete messages that have nothing left open. Returns file bodies to unlink. */
  private applyDeltas(deltas: Map<string, number>): string[] {
    const files: string[] = [];
    for (const [qid, delta] of deltas) {
      if (delta === 0) continue;
      const row = this.st.addOpen.get(delta, qid) as { open_count: number; file: number } | undefined;
      if (row && row.open_count <= 0) {
        this.st.deleteRecipients.run(qid);
        this.st.deleteMessage.run(qid);
        if (row.file) files.push(qid);
      }
    }
    return files;
  }

  private async removeBodies(queueIds: string[]): Promise<void> {
    for (const qid of queueIds) await this.spool.remove(qid).catch(() => undefined);
  }

  async readBodyBuffer(queueId: string): Promise<Buffer | null> {
    const row = this.st.getBody.get(queueId) as { body: Buffer | null } | undefined;
    if (!row) throw new Error(`no message ${queueId} in the queue`);
    return row.body;
  }

  async readBody(queueId: string): Promise<Readable> {
    const row = this.st.getBody.get(queueId) as { body: Buffer | null } | undefined;
    if (!row) throw new Error(`no message ${queueId} in the queue`);
    if (row.body) return Readable.from([row.body]);
    const stream = this.spool.read(queueId);
    // Surface "cannot open" as a rejection here rather than as a later stream error.
    await new Promise<void>((resolve, reject) => {
      stream.once('open', () => resolve());
      stream.once('error', reject);
    });
    return stream;
  }

  async claimDue(now: number, max: number, claim: ClaimSpec): Promise<Claim[]> {
    if (max <= 0) return [];
    return this.run(() => {
      const rows = this.st.leaseRanOut.all(Date.now(), max) as RecipientRow[];
      if (rows.length < max) for (const r of this.st.due.all(now, max - rows.length) as RecipientRow[]) rows.push(r);
      const claims = new Map<string, Claim>();
      const until = Date.now() + claim.leaseMs;
      for (const row of rows) {
        let c = claims.get(row.qid);
        if (!c) {
          const m = this.st.getMessage.get(row.qid) as MessageRow | undefined;
          if (!m) continue;
          c = { token: claim.token, message: toMessage(m), recipients: [] };
          claims.set(row.qid, c);
        }
        this.st.claim.run(claim.token, until, row.id);
        this.noteClaim(row.id, claim.token);
        row.state = 'delivering';
        row.claim = claim.token;
        c.recipients.push(toRecipient(row));
      }
      return [...claims.values()];
    }, false);
  }

  /**
   * renew - extend the leases of live claims. Every claim on this file is made
   * by this process and known in `claims` (those of an earlier process are
   * the queue layer's to recover at open), so each is one update by id.
   */
  async renew(tokens: string[], leaseMs: number): Promise<void> {
    if (tokens.length === 0) return;
    const wanted = new Set(tokens);
    await this.run(() => {
      const until = Date.now() + leaseMs;
      for (const [id, token] of this.claims) {
        if (wanted.has(token) && !this.txClaims.has(id)) this.st.renewId.run(until, id, token);
      }
      for (const [id, token] of this.txClaims) {
        if (token !== null && wanted.has(token)) this.st.renewId.run(until, id, token);
      }
    }, false);
  }

  async nextDueAt(): Promise<number | null> {
    const due = this.st.nextDue.get() as { t: number } | undefined;
    const lease = this.st.nextLeaseEnd.get() as { t: number } | undefined;
    // A lease is claimable once it has run out: the first millisecond after lease_until.
    const l = lease ? lease.t + 1 : null;
    if (!due) return l;
    return l === null ? due.t : Math.min(due.t, l);
  }

  async countDue(queueId: string, now: number): Promise<number> {
    return (this.st.countDue.get(queueId, now, Date.now()) as { n: number }).n;
  }

  async apply(change: Change, options: { durable?: boolean } = {}): Promise<ApplyResult> {
    const patches = change.patches ?? [];
    const durable = options.durable ?? true;
    const { refused, files } = await this.run(() => this.applyNow(change, patches), durable);
    await this.removeBodies(files);
    if (change.wake) this.emitWake();
    return { refused };
  }

  /** applyNow - the body of apply(), inside the transaction. */
  private applyNow(change: Change, patches: RecipientPatch[]): { refused: number[]; files: string[] } {
    const refused: number[] = [];
    // First which patches apply and what each does to its message's count of open recipients...
    const accepted: Array<{ p: RecipientPatch; report: string | null }> = [];
    const deltas = new Map<string, number>();
    for (const p of patches) {
      let old: { qid: string; state: string; report: string | null } | undefined;
      let ok = true;
      let row: { qid: string; state: string; report: string | null; claim: string | null } | undefined;
      const readRow = () => (row ??= this.st.getRecipientState.get(p.id) as typeof row);
      if (p.claim !== undefined) {
        const live = this.liveClaim(p.id);
        if (live !== undefined) ok = live === p.claim;
        else {
          const r = readRow();
          ok = r !== undefined && r.state === 'delivering' && r.claim === p.claim;
        }
        if (ok && p.prev) old = { qid: p.queueId, state: p.prev.state, report: p.prev.report };
      }
      if (ok && !old) {
        const r = readRow();
        if (r) old = { qid: r.qid, state: r.state, report: r.report };
        else ok = false;
      }
      if (ok && p.states && !p.states.includes(old!.state as RecipientState)) ok = false;
      if (!ok) {
        refused.push(p.id);
        continue;
      }
      const report = p.set.report === undefined ? old!.report : p.set.report;
      accepted.push({ p, report });
      const delta = Number(isOpen(p.set.state ?? old!.state, report)) - Number(isOpen(old!.state, old!.report));
      if (delta) deltas.set(old!.qid, (deltas.get(old!.qid) ?? 0) + delta);
    }
    // ...then the messages this finishes: their rows go, so their recipients need no update.
    const finishing = new Set<string>();
    const files: string[] = [];
    for (const [qid, delta] of deltas) {
      if (delta === 0) continue;
      const row = this.st.addOpen.get(delta, qid) as { open_count: number; file: number } | undefined;
      if (row && row.open_count <= 0) {
        finishing.add(qid);
        if (row.file) files.push(qid);
      }
    }
    for (const { p, report } of accepted) {
      const s = p.set;
      const ends = s.state !== undefined && s.state !== 'delivering' ? 1 : 0;
      if (!finishing.has(p.queueId)) {
        const changed = this.st.update.run(
          s.state ?? null,
          s.attempts ?? null,
          s.nextAttemptAt ?? null,
          s.lastAttemptAt ?? null,
          s.lastReply ?? null,
          s.lastStatus ?? null,
          s.remote ?? null,
          recipientTlsColumn(s.lastTls),
          report,
          s.delayNotified === undefined ? null : s.delayNotified ? 1 : 0,
          s.suspended === undefined ? null : s.suspended ? 1 : 0,
          ends,
          ends,
          p.id,
        ).changes;
        if (changed === 0) {
          // Gone since (prev was trusted): nothing of it is written.
          refused.push(p.id);
          continue;
        }
      }
      if (ends && this.liveClaim(p.id) !== undefined) this.noteClaim(p.id, null);
      if (p.event) this.insertEvent(p.event);
    }
    for (const qid of finishing) {
      this.st.deleteRecipients.run(qid);
      this.st.deleteMessage.run(qid);
    }
    for (const e of change.events ?? []) this.insertEvent(e);
    if (change.quarantine) this.st.quarantineMessage.run(change.quarantine.reason, change.quarantine.queueId);
    if (change.overrides?.length) {
      for (const o of change.overrides) {
        if ('put' in o) this.st.putOverride.run(o.put.destination, o.put.kind, o.put.to, o.put.by, o.put.reason, o.put.at);
        else this.st.removeOverride.run(o.remove.destination, o.remove.kind);
      }
      this.held = null;
    }
    return { refused, files };
  }

  async getMessage(queueId: string): Promise<MessageRecord | null> {
    const row = this.st.getMessage.get(queueId) as MessageRow | undefined;
    return row ? toMessage(row) : null;
  }

  /** recipientWhere - the WHERE clause of a recipient query (each key over an index of its own). */
  private recipientWhere(q: Omit<RecipientQuery, 'afterId' | 'limit'>): { where: string[]; args: unknown[] } {
    const where: string[] = [];
    const args: unknown[] = [];
    if (q.queueId !== undefined) (where.push('qid = ?'), args.push(q.queueId));
    if (q.destination !== undefined) (where.push('destination = ?'), args.push(q.destination));
    if (q.states !== undefined) {
      if (q.states.length === 0) where.push('0');
      else (where.push(`state IN (${q.states.map(() => '?').join(',')})`), args.push(...q.states));
    }
    if (q.suspended !== undefined) (where.push('suspended = ?'), args.push(q.suspended ? 1 : 0));
    if (q.withReport) where.push('report IS NOT NULL');
    if (q.claimPrefix !== undefined) {
      // substr, not LIKE: a node's name may hold '_' or '%'. The lease_until term selects the recipients_lease index.
      where.push(`state = 'delivering' AND lease_until >= -9223372036854775807 AND substr(claim, 1, ?) = ?`);
      args.push(q.claimPrefix.length, q.claimPrefix);
    }
    return { where, args };
  }

  async selectRecipients(q: RecipientQuery): Promise<RecipientRecord[]> {
    const { where, args } = this.recipientWhere(q);
    where.push('id > ?');
    args.push(q.afterId);
    const sql = `SELECT ${RECIPIENT_COLUMNS} FROM recipients WHERE ${where.join(' AND ')} ORDER BY id LIMIT ?`;
    return (this.statement(sql).all(...args, q.limit) as RecipientRow[]).map(toRecipient);
  }

  async countRecipients(q: Omit<RecipientQuery, 'afterId' | 'limit'>): Promise<number> {
    const { where, args } = this.recipientWhere(q);
    const sql = `SELECT COUNT(*) AS n FROM recipients ${where.length ? `WHERE ${where.join(' AND ')}` : ''}`;
    return (this.statement(sql).get(...args) as { n: number }).n;
  }

  /** statement - the prepared statement of this SQL (a handful of shapes, each prepared once). */
  private statement(sql: string): Database.Statement {
    let st = this.shaped.get(sql);
    if (!st) {
      st = this.db.prepare(sql);
      if (this.shaped.size < 256) this.shaped.set(sql, st);
    }
    return st;
  }

  async pendingReports(limit: number): Promise<string[]> {
    return (this.st.pendingReports.all(limit) as Array<{ qid: string }>).map((r) => r.qid);
  }

  async summary(): Promise<DestinationSummary[]> {
    const rows = this.db
      .prepare(
        `SELECT r.destination AS destination, COUNT(*) AS recipients, COUNT(DISTINCT r.qid) AS messages, MIN(m.received_at) AS oldest,
                SUM(r.state = 'deferred') AS deferred, SUM(r.suspended) AS suspended,
                (SELECT last_reply FROM recipients x WHERE x.destination = r.destination AND x.last_reply != '' AND x.state NOT IN ('delivered','failed','expired','removed') ORDER BY x.last_at DESC LIMIT 1) AS last_reply
         FROM recipients r JOIN messages m ON m.qid = r.qid
         WHERE r.state NOT IN ('delivered','failed','expired','removed')
         GROUP BY r.destination ORDER BY recipients DESC`,
      )
      .all() as Array<{ destination: string; recipients: number; messages: number; oldest: number; deferred: number; suspended: number; last_reply: string | null }>;
    return rows.map(({ last_reply, ...r }) => ({ ...r, lastReply: last_reply ?? '' }));
  }

  async list(filter: ListFilter): Promise<MessageRecord[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    const rcpt: string[] = [];
    if (filter.after) (where.push('m.qid > ?'), args.push(filter.after));
    if (filter.sender !== undefined) (where.push('m.sender = ?'), args.push(filter.sender));
    if (filter.messageId) (where.push('m.message_id IN (?, ?)'), args.push(filter.messageId, `<${filter.messageId.replace(/^<|>$/g, '')}>`));
    if (filter.olderThan !== undefined) (where.push('m.received_at <= ?'), args.push(Date.now() - filter.olderThan));
    if (filter.quarantined) where.push(`m.quarantine != ''`);
    if (filter.destination) (rcpt.push('r.destination = ?'), args.push(filter.destination));
    if (filter.state) (rcpt.push('r.state = ?'), args.push(filter.state));
    if (filter.recipient) (rcpt.push('r.address = ?'), args.push(filter.recipient));
    if (rcpt.length) where.push(`EXISTS (SELECT 1 FROM recipients r WHERE r.qid = m.qid AND ${rcpt.join(' AND ')})`);
    const sql = `SELECT ${MESSAGE_COLUMNS.split(', ').map((c) => `m.${c}`).join(', ')} FROM messages m ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY m.qid LIMIT ?`;
    return (this.db.prepare(sql).all(...args, filter.limit) as MessageRow[]).map(toMessage);
  }

  async messageStates(queueIds: string[]): Promise<MessageStates[]> {
    const agg = this.db.prepare(
      `SELECT state, destination, COUNT(*) AS n, SUM(suspended) AS s, MIN(CASE WHEN state IN ('queued','deferred') THEN next_at END) AS nx
       FROM recipients WHERE qid = ? GROUP BY state, destination`,
    );
    const last = this.db.prepare(`SELECT last_reply FROM recipients WHERE qid = ? AND last_reply != '' ORDER BY last_at DESC LIMIT 1`);
    return queueIds.map((qid) => {
      const out: MessageStates = { queueId: qid, states: {}, destinations: [], suspended: 0, nextAttemptAt: null, lastReply: '' };
      for (const r of agg.all(qid) as Array<{ state: RecipientState; destination: string; n: number; s: number; nx: number | null }>) {
        out.states[r.state] = (out.states[r.state] ?? 0) + r.n;
        if (!out.destinations.includes(r.destination) && out.destinations.length < 10) out.destinations.push(r.destination);
        out.suspended += r.s;
        if (r.nx !== null && (out.nextAttemptAt === null || r.nx < out.nextAttemptAt)) out.nextAttemptAt = r.nx;
      }
      out.lastReply = (last.get(qid) as { last_reply: string } | undefined)?.last_reply ?? '';
      return out;
    });
  }

  async countByState(): Promise<Partial<Record<RecipientState, number>>> {
    const out: Partial<Record<RecipientState, number>> = {};
    for (const r of this.db.prepare(`SELECT state, COUNT(*) AS n FROM recipients GROUP BY state`).all() as Array<{ state: RecipientState; n: number }>) out[r.state] = r.n;
    return out;
  }

  async overrides(): Promise<DestinationOverride[]> {
    const rows = this.db.prepare(`SELECT destination, kind, target, by, reason, at FROM overrides ORDER BY destination, kind`).all() as Array<{
      destination: string;
      kind: string;
      target: string;
      by: string;
      reason: string;
      at: number;
    }>;
    return rows.map((r) => ({ destination: r.destination, kind: r.kind as DestinationOverride['kind'], to: r.target, by: r.by, reason: r.reason, at: r.at }));
  }

  /** Every event after `seq` (one node: the whole log). */
  async eventsAfter(seq: number, limit: number): Promise<MailEvent[]> {
    return (this.st.eventsAfter.all(seq, limit) as EventRow[]).map(toEvent);
  }

  async eventsOf(queueId: string, afterSeq: number, limit: number): Promise<MailEvent[]> {
    return (this.db.prepare(`SELECT * FROM events WHERE qid = ? AND seq > ? ORDER BY seq LIMIT ?`).all(queueId, afterSeq, limit) as EventRow[]).map(toEvent);
  }

  /** tracking - the tracking index (store-worker), or null when there is none yet. */
  private tracking(): Db | null {
    if (this.trackReader === undefined) {
      try {
        this.trackReader = existsSync(this.trackFile) ? new Database(this.trackFile, { readonly: true, fileMustExist: true }) : null;
      } catch {
        this.trackReader = null;
      }
      if (this.trackReader === null) return null;
    }
    return this.trackReader;
  }

  /**
   * track - the messages whose events match, newest first, with all their
   * events. Matches come from the tracking index and, for events newer than
   * what it holds, from the event table itself, so nothing is missed.
   */
  async track(q: TrackQuery): Promise<TrackResult> {
    const where: string[] = [];
    const args: unknown[] = [];
    if (q.messageId !== undefined) (where.push('message_id = ?'), args.push(`<${q.messageId.trim().replace(/^<(.*)>$/, '$1')}>`));
    if (q.sender !== undefined) (where.push('sender = ? COLLATE NOCASE'), args.push(q.sender.replace(/^<(.*)>$/, '$1')));
    if (q.recipient !== undefined) (where.push('recipient = ? COLLATE NOCASE'), args.push(q.recipient.replace(/^<(.*)>$/, '$1')));
    if (q.queueId !== undefined) (where.push('qid = ?'), args.push(q.queueId));
    if (where.length === 0) throw new Error('track needs a message id, sender, recipient or queue id');
    if (q.beforeSeq !== undefined) (where.push('+seq < ?'), args.push(q.beforeSeq));
    const index = this.tracking();
    let indexed = 0;
    try {
      indexed = index ? ((index.prepare(`SELECT MAX(seq) AS s FROM track`).get() as { s: number | null }).s ?? 0) : 0;
    } catch {
      indexed = 0;
    }
    type Hit = { seq: number; qid: string; ts: string };
    // Newest first: the events the index does not hold yet, then the index.
    const tail = this.db.prepare(`SELECT seq, qid, ts FROM events WHERE seq > ? AND ${where.join(' AND ')} ORDER BY seq DESC`);
    const walks: Array<IterableIterator<Hit>> = [tail.iterate(indexed, ...args) as IterableIterator<Hit>];
    if (index && indexed > 0) walks.push(index.prepare(`SELECT seq, qid, ts FROM track WHERE ${where.join(' AND ')} ORDER BY seq DESC`).iterate(...args) as IterableIterator<Hit>);
    // ts follows seq to within a message's DATA phase, so a walk stops once
    // it is SINCE_SLACK_MS before `since`: nothing older can match.
    const stopAt = q.since !== undefined ? new Date(Date.parse(q.since) - SINCE_SLACK_MS).toISOString() : null;
    const qids: string[] = [];
    let next: number | null = null;
    outer: for (const walk of walks) {
      for (const row of walk) {
        if (stopAt !== null && row.ts < stopAt) break outer;
        if (q.since !== undefined && row.ts < q.since) continue;
        if (qids.includes(row.qid)) continue;
        if (qids.length >= q.limit) {
          next = row.seq + 1;
          break outer;
        }
        qids.push(row.qid);
      }
    }
    for (const w of walks) w.return?.();
    const of = this.db.prepare(`SELECT * FROM events WHERE qid = ? ORDER BY seq LIMIT 10000`);
    const messages = qids.reverse().map((qid) => ({ queueId: qid, events: (of.all(qid) as EventRow[]).map(toEvent) }));
    return { messages, next };
  }

  async pruneEvents(before: string, maxSeq: number, limit: number): Promise<number> {
    const n = await this.run(
      () =>
        this.db
          .prepare(`DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE seq <= ? AND ts < ? AND qid NOT IN (SELECT qid FROM messages) ORDER BY seq LIMIT ?)`)
          .run(maxSeq, before, limit).changes,
      false,
    );
    if (n > 0) this.worker?.postMessage({ kind: 'prune', maxSeq });
    return n;
  }

  onWake(listener: () => void): void {
    this.wakeListeners.push(listener);
  }

  private emitWake(): void {
    for (const l of this.wakeListeners) l();
  }

  /**
   * sweepOrphans - body files whose message is gone (a crash between the
   * commit that finished it and the unlink). A file whose recipients are
   * still there lost only its message row (damage, kept under a placeholder
   * by verify): it stays.
   */
  private async sweepOrphans(): Promise<void> {
    for (const qid of await this.spool.listBodies()) {
      if (!this.st.hasMessage.get(qid) && !this.st.hasRecipients.get(qid)) await this.spool.remove(qid);
    }
  }
}
