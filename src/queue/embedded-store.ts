/*
 * queue/embedded-store - the default QueueStore: envelope, recipient state and
 * events in SQLite (better-sqlite3, WAL, synchronous=FULL for every durable
 * commit), bodies inline in SQLite when small and as spool files when large.
 *
 * Durability protocol (docs/queue.md): a body file is fsync'd and renamed into
 * spool/<x>/ and that directory fsync'd before the transaction that inserts its
 * row commits; that transaction also holds the recipients and their
 * `received` events, so a message is either wholly accepted or not at all.
 * Claims ("delivering") are written without a sync of their own: after a crash
 * open() turns every claim back into a due recipient, which is exactly what a
 * lost claim would have been.
 *
 * Hot paths use indexes only: due recipients by next_at (partial index over
 * claimable states), a message's recipients by queue id, pending reports by a
 * partial index; a message's "open" recipient count is kept in its row so
 * finishing a message never counts its recipients.
 *
 * Operator actions (docs/admin.md) write their events in the same transaction
 * as the change. A destination is held or redirected by one row in
 * `overrides`, consulted by the claim statements, never by rewriting its
 * recipients. Tracking queries use the events indexes (message_id, sender,
 * recipient, qid, ts) and never scan the log.
 */
import Database from 'better-sqlite3';
import type { Database as Db } from 'better-sqlite3';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { Worker } from 'node:worker_threads';
import { FINAL_STATES, RECIPIENT_STATES, isoTime, makeEvent, operatorDetail, type MailEvent, type RecipientState } from '../log/events.js';
import { GroupCommit } from './group-commit.js';
import { Spool, SpoolWriter } from './spool.js';
import { newRecipientRecord } from './store.js';
import type {
  ActionResult,
  BodyWriter,
  Claim,
  DestinationOverride,
  MessageStates,
  Operator,
  Target,
  TrackQuery,
  TrackResult,
  ClaimOptions,
  DestinationSummary,
  InsertOptions,
  ListFilter,
  MessageMeta,
  MessageRecord,
  NewMessage,
  Outcome,
  QueueStore,
  RecipientRecord,
  ReportKind,
} from './store.js';

const SCHEMA = `
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
  quarantine TEXT NOT NULL DEFAULT ''
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
  report TEXT,
  delay_notified INTEGER NOT NULL DEFAULT 0,
  suspended INTEGER NOT NULL DEFAULT 0,
  lease_until INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS recipients_qid ON recipients(qid);
CREATE INDEX IF NOT EXISTS recipients_due ON recipients(next_at) WHERE state IN ('queued','deferred') AND suspended = 0;
CREATE INDEX IF NOT EXISTS recipients_report ON recipients(qid) WHERE report IS NOT NULL;
DROP INDEX IF EXISTS recipients_delivering;
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
  report TEXT
);
CREATE INDEX IF NOT EXISTS events_qid ON events(qid);
DROP INDEX IF EXISTS events_message_id;
DROP INDEX IF EXISTS events_sender;
DROP INDEX IF EXISTS events_recipient;
DROP INDEX IF EXISTS events_ts;
DROP INDEX IF EXISTS recipients_destination;
CREATE INDEX IF NOT EXISTS recipients_dest ON recipients(destination);
CREATE INDEX IF NOT EXISTS messages_quarantine ON messages(qid) WHERE quarantine != '';
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

/** How far an event's ts may lag behind its seq order (a message's received events carry its arrival time). */
const SINCE_SLACK_MS = 3_600_000;
/** Most event rows written by one INSERT (15 parameters each; SQLite allows 32,766). */
const EVENT_ROWS_PER_INSERT = 32;

/** Held destinations, as a subquery the claim statements exclude (an empty table costs nothing). */
const NOT_HELD = `destination NOT IN (SELECT destination FROM overrides WHERE kind = 'hold')`;

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
  report: string | null;
  delay_notified: number;
  suspended: number;
}

interface EventRow {
  seq: number;
  ts: string;
  id: number;
  event: string;
  qid: string;
  message_id: string;
  sender: string;
  recipient: string | null;
  attempt: number | null;
  state: string | null;
  remote: string | null;
  reply: string | null;
  error: string | null;
  status: string | null;
  detail: string | null;
  report: string | null;
}

const MESSAGE_COLUMNS = 'qid, message_id, sender, envid, ret, size, received_at, smtputf8, eight_bit, is_report, client, subject, rcpt_count, quarantine';
const RECIPIENT_COLUMNS =
  'id, qid, address, orcpt, notify, destination, state, attempts, next_at, last_at, last_reply, last_status, remote, report, delay_notified, suspended';

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
  };
}

function toRecipient(r: RecipientRow): RecipientRecord {
  return {
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
    report: r.report as ReportKind | null,
    delayNotified: r.delay_notified === 1,
    suspended: r.suspended === 1,
  };
}

export function toEvent(r: EventRow): MailEvent {
  const e: MailEvent = { seq: r.seq, ts: r.ts, id: r.id, event: r.event as MailEvent['event'], queue_id: r.qid, message_id: r.message_id, sender: r.sender };
  if (r.recipient !== null) e.recipient = r.recipient;
  if (r.attempt !== null) e.attempt = r.attempt;
  if (r.state !== null) e.state = r.state;
  if (r.remote !== null) e.remote = r.remote;
  if (r.reply !== null) e.reply = r.reply;
  if (r.error !== null) e.error = r.error;
  if (r.status !== null) e.status = r.status;
  if (r.detail !== null) e.detail = r.detail;
  if (r.report !== null && r.report !== undefined) e.report = r.report;
  return e;
}

/** messageMeta - the message fields of a new message (without its recipients). */
export function messageMeta(m: NewMessage): MessageMeta {
  const { recipients: _r, ...meta } = m;
  return meta;
}

/** A recipient counts as "open" while it is unfinished or still owes a report. */
function isOpen(state: string, report: string | null): boolean {
  return !FINAL_STATES.has(state as RecipientState) || report !== null;
}

export interface EmbeddedStoreOptions {
  dataDir: string;
  /** Bodies up to this size are stored inside the database (one sync for many). */
  inlineMax?: number;
  /**
   * Crash recovery at open (claims back to due, orphan body files swept).
   * Default true. The CLI opening the queue beside a server it cannot reach
   * passes false: a running server's claims and new bodies must be left alone.
   */
  recover?: boolean;
}

export class EmbeddedStore implements QueueStore {
  private db!: Db;
  private commit!: GroupCommit;
  readonly spool: Spool;
  private readonly dueListeners: Array<() => void> = [];
  private worker: Worker | null = null;
  /** Read-only connection to the tracking index, opened on first use. */
  private trackReader: Db | null | undefined = undefined;
  /** Held destinations (the `overrides` hold rows), read once and dropped whenever a hold changes. */
  private held: Set<string> | null = null;
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
  private st!: ReturnType<EmbeddedStore['prepare']>;

  constructor(private readonly options: EmbeddedStoreOptions) {
    this.spool = new Spool(join(options.dataDir, 'spool'), options.inlineMax ?? 128 * 1024);
  }

  /** Test seam: make commits fail (storage failure). */
  get groupCommit(): GroupCommit {
    return this.commit;
  }

  async open(): Promise<void> {
    mkdirSync(join(this.options.dataDir, 'queue'), { recursive: true });
    await this.spool.open();
    const file = join(this.options.dataDir, 'queue', 'queue.db');
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('foreign_keys = OFF');
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(SCHEMA);
    this.st = this.prepare();
    this.commit = new GroupCommit(this.db, `${file}-wal`);
    const last = (this.db.prepare(`SELECT MAX(seq) AS s FROM events`).get() as { s: number | null }).s ?? 0;
    this.seqs = { tx: 0, committed: last, durable: last };
    this.commit.hooks = {
      afterOperation: () => this.flushEvents(),
      committed: () => {
        if (this.seqs.tx > this.seqs.committed) this.seqs.committed = this.seqs.tx;
        this.seqs.tx = 0;
        if (this.txEvents.length) {
          for (const e of this.txEvents) this.unsyncedEvents.push(e);
          this.txEvents = [];
        }
      },
      rolledBack: () => {
        this.seqs.tx = 0;
        this.txEvents = [];
        this.pendingEvents = [];
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
    this.startWorker(file);
    if (this.options.recover === false) return;
    // Recovery: claims held when the last process stopped are due again now.
    const now = Date.now();
    this.db
      .prepare(`UPDATE recipients SET state = CASE WHEN attempts = 0 THEN 'queued' ELSE 'deferred' END, next_at = ?, lease_until = 0 WHERE state = 'delivering'`)
      .run(now);
    await this.sweepOrphans();
    await this.verify();
  }

  /**
   * verify - start-up check for damage (a truncated or missing body file, a
   * recipient row in no known state, unreadable counters, recipients whose
   * message row is gone). Each damaged message is quarantined with an event,
   * so an operator sees it and can repair and release it; nothing is deleted,
   * and undamaged mail is not held up (invariant 7, seed 004).
   */
  private async verify(): Promise<void> {
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
    if (damaged.size === 0 && orphans.length === 0) return;
    await this.commit.run(() => {
      for (const { qid } of orphans) {
        // The envelope is gone: keep the recipients visible under a placeholder message.
        this.db
          .prepare(
            `INSERT INTO messages (qid, message_id, sender, envid, ret, size, received_at, smtputf8, eight_bit, is_report, client, subject, body, rcpt_count, open_count, quarantine)
             VALUES (?, '', '', NULL, NULL, 0, ?, 0, 0, 0, '', '', NULL, (SELECT COUNT(*) FROM recipients WHERE qid = ?), (SELECT COUNT(*) FROM recipients WHERE qid = ?), ?)`,
          )
          .run(qid, Date.now(), qid, qid, 'message row missing: recipients kept under a placeholder');
        damaged.set(qid, 'message row missing: recipients kept under a placeholder');
      }
      for (const [qid, why] of damaged) {
        this.st.quarantineMessage.run(why, qid);
        const head = (this.db.prepare(`SELECT message_id, sender FROM messages WHERE qid = ?`).get(qid) as { message_id: unknown; sender: unknown } | undefined) ?? { message_id: '', sender: '' };
        const rows = this.db.prepare(`SELECT id, address, state FROM recipients WHERE qid = ?`).all(qid) as Array<{ id: number; address: unknown; state: unknown }>;
        for (const r of rows) {
          if (typeof r.state === 'string' && FINAL_STATES.has(r.state as RecipientState)) continue;
          this.db.prepare(`UPDATE recipients SET state = 'quarantined', lease_until = 0 WHERE id = ?`).run(r.id);
          this.insertEvent(
            makeEvent('quarantined', {
              queue_id: qid,
              message_id: String(head.message_id ?? ''),
              sender: String(head.sender ?? ''),
              recipient: String(r.address ?? ''),
              state: 'quarantined',
              error: why,
            }),
          );
        }
      }
    }, true);
  }

  private prepare() {
    const db = this.db;
    return {
      insertMessage: db.prepare(
        `INSERT INTO messages (qid, message_id, sender, envid, ret, size, received_at, smtputf8, eight_bit, is_report, client, subject, body, rcpt_count, open_count)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      insertRecipient: db.prepare(
        `INSERT INTO recipients (qid, address, orcpt, notify, destination, state, next_at, lease_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      getMessage: db.prepare(`SELECT ${MESSAGE_COLUMNS} FROM messages WHERE qid = ?`),
      getBody: db.prepare(`SELECT body FROM messages WHERE qid = ?`),
      getRecipients: db.prepare(`SELECT ${RECIPIENT_COLUMNS} FROM recipients WHERE qid = ? ORDER BY id`),
      getRecipientState: db.prepare(`SELECT qid, state, report FROM recipients WHERE id = ?`),
      due: db.prepare(
        `SELECT ${RECIPIENT_COLUMNS} FROM recipients WHERE state IN ('queued','deferred') AND suspended = 0 AND next_at <= ? AND ${NOT_HELD} ORDER BY next_at LIMIT ?`,
      ),
      claim: db.prepare(`UPDATE recipients SET state = 'delivering', lease_until = ? WHERE id = ?`),
      // ORDER BY + LIMIT (not MIN) so the index is walked only past held destinations' rows.
      nextDue: db.prepare(
        `SELECT next_at AS t FROM recipients WHERE state IN ('queued','deferred') AND suspended = 0 AND ${NOT_HELD} ORDER BY next_at LIMIT 1`,
      ),
      countDue: db.prepare(
        `SELECT COUNT(*) AS n FROM recipients WHERE qid = ? AND state IN ('queued','deferred') AND suspended = 0 AND next_at <= ? AND ${NOT_HELD}`,
      ),
      update: db.prepare(
        `UPDATE recipients SET state = ?, attempts = ?, next_at = COALESCE(?, next_at), last_at = COALESCE(?, last_at),
           last_reply = COALESCE(?, last_reply), last_status = COALESCE(?, last_status), remote = COALESCE(?, remote),
           report = ?, delay_notified = COALESCE(?, delay_notified), suspended = COALESCE(?, suspended), lease_until = 0
         WHERE id = ?`,
      ),
      clearReport: db.prepare(`UPDATE recipients SET report = NULL WHERE id = ?`),
      addOpen: db.prepare(`UPDATE messages SET open_count = open_count + ? WHERE qid = ? RETURNING open_count, body IS NULL AS file`),
      deleteMessage: db.prepare(`DELETE FROM messages WHERE qid = ?`),
      deleteRecipients: db.prepare(`DELETE FROM recipients WHERE qid = ?`),
      pendingReports: db.prepare(
        `SELECT DISTINCT r.qid AS qid FROM recipients r WHERE r.report IS NOT NULL AND NOT EXISTS (SELECT 1 FROM recipients x WHERE x.qid = r.qid AND x.state = 'delivering') LIMIT ?`,
      ),
      reportPage: db.prepare(`SELECT ${RECIPIENT_COLUMNS} FROM recipients WHERE qid = ? AND report IS NOT NULL AND id > ? ORDER BY id LIMIT ?`),
      quarantineMessage: db.prepare(`UPDATE messages SET quarantine = ? WHERE qid = ?`),
      eventsAfter: db.prepare(`SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?`),
      hasMessage: db.prepare(`SELECT 1 FROM messages WHERE qid = ?`),
    };
  }

  /**
   * startWorker - WAL checkpoints and the tracking index on a worker thread
   * (queue/store-worker); if it cannot run, SQLite's own automatic
   * checkpoints stay on and tracking reads the event table directly.
   */
  private startWorker(file: string): void {
    if (this.options.recover === false) return; // a reader (CLI, audit): the server does this work
    try {
      const worker = new Worker(new URL('./store-worker.js', import.meta.url), { workerData: { file, trackFile: this.trackFile, intervalMs: 250 } });
      worker.unref();
      this.db.pragma('wal_autocheckpoint = 0');
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
    return this.spool.createWriter(queueId);
  }

  async insert(message: NewMessage, body: BodyWriter, options: InsertOptions = {}): Promise<Claim | null> {
    if (!(body instanceof SpoolWriter)) throw new Error('body writer does not belong to this store');
    let finished: { inline: Buffer | null; dir: string | null };
    try {
      finished = await body.finish();
    } catch (e) {
      await body.abort();
      throw e;
    }
    try {
      // The renamed body file's directory entry is durable before any row names it.
      if (finished.dir) await this.spool.syncDir(finished.dir);
      let claim: Claim | null = null;
      const removed = await this.commit.run(
        (db) => {
          claim = null;
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
          );
          const lease = options.claimLeaseMs;
          const held = lease === undefined ? null : this.heldDestinations();
          const isHeld = (d: string): boolean => held!.has(d);
          for (const r of message.recipients) {
            const claimed = lease !== undefined && !isHeld(r.destination);
            const info = this.st.insertRecipient.run(message.queueId, r.address, r.orcpt, r.notify, r.destination, claimed ? 'delivering' : 'queued', message.receivedAt, claimed ? message.receivedAt + lease : 0);
            if (claimed) {
              claim ??= {
                message: { ...messageMeta(message), recipientCount: message.recipients.length, quarantine: '' },
                recipients: [],
                ...(finished.inline ? { body: finished.inline } : {}),
              };
              claim.recipients.push(newRecipientRecord(Number(info.lastInsertRowid), message.queueId, r, 'delivering', message.receivedAt));
            }
            this.insertEvent({
              ts: isoTime(message.receivedAt),
              id: 1000,
              event: 'received',
              queue_id: message.queueId,
              message_id: message.messageId,
              sender: message.sender,
              recipient: r.address,
              state: 'queued',
              remote: message.client,
            });
          }
          for (const e of options.events ?? []) this.insertEvent(e);
          const deltas = new Map<string, number>();
          for (const id of options.clearReports ?? []) {
            const row = this.st.getRecipientState.get(id) as { qid: string; state: string; report: string | null } | undefined;
            if (!row || row.report === null) continue;
            this.st.clearReport.run(id);
            if (isOpen(row.state, row.report) && !isOpen(row.state, null)) deltas.set(row.qid, (deltas.get(row.qid) ?? 0) - 1);
          }
          void db;
          return this.applyDeltas(deltas);
        },
        true,
      );
      await this.removeBodies(removed);
      // Only what was not claimed here is for the scheduler to find.
      if (!claim || (claim as Claim).recipients.length < message.recipients.length) this.emitDue();
      return claim;
    } catch (e) {
      if (finished.dir) await this.spool.remove(message.queueId).catch(() => undefined);
      throw e;
    }
  }

  /**
   * insertEvent - add an event to the operation being run. Its events are
   * written when it ends, inside its transaction (flushEvents, the commit's
   * afterOperation hook), several rows per INSERT:
   * an accepted message or a delivery writes one event per recipient, and one
   * statement for many rows costs a fraction of one statement each.
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
      const params: unknown[] = new Array(n * 15);
      for (let k = 0; k < n; k++) {
        const e = list[i + k]!;
        const o = k * 15;
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
      const row = '(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)';
      st = this.db.prepare(
        `INSERT INTO events (ts, id, event, qid, message_id, sender, recipient, attempt, state, remote, reply, error, status, detail, report) VALUES ${new Array(n).fill(row).join(', ')}`,
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

  async claimDue(now: number, options: ClaimOptions): Promise<Claim[]> {
    return this.commit.run(() => {
      const rows = this.st.due.all(now, options.maxRecipients) as RecipientRow[];
      const claims = new Map<string, Claim>();
      for (const row of rows) {
        let claim = claims.get(row.qid);
        if (!claim) {
          const m = this.st.getMessage.get(row.qid) as MessageRow | undefined;
          if (!m) continue;
          claim = { message: toMessage(m), recipients: [] };
          claims.set(row.qid, claim);
        }
        this.st.claim.run(now + options.leaseMs, row.id);
        row.state = 'delivering';
        claim.recipients.push(toRecipient(row));
      }
      return [...claims.values()];
    }, false);
  }

  async nextDueAt(): Promise<number | null> {
    const row = this.st.nextDue.get() as { t: number } | undefined;
    return row ? row.t : null;
  }

  async countDue(queueId: string, now: number): Promise<number> {
    return (this.st.countDue.get(queueId, now) as { n: number }).n;
  }

  async recordOutcomes(outcomes: Outcome[]): Promise<void> {
    if (outcomes.length === 0) return;
    let becameDue = false;
    const removed = await this.commit.run(() => {
      // First what each outcome does to its message's count of open recipients...
      const deltas = new Map<string, number>();
      const reports: Array<string | null> = [];
      for (const o of outcomes) {
        const old = o.prev
          ? { qid: o.queueId, state: o.prev.state as string, report: o.prev.report as string | null }
          : (this.st.getRecipientState.get(o.recipientId) as { qid: string; state: string; report: string | null } | undefined);
        if (!old) throw new Error(`recipient ${o.recipientId} of ${o.queueId} is not in the queue`);
        const report = o.report === undefined ? old.report : o.report;
        reports.push(report);
        const delta = Number(isOpen(o.state, report)) - Number(isOpen(old.state, old.report));
        if (delta) deltas.set(old.qid, (deltas.get(old.qid) ?? 0) + delta);
        if (o.state === 'queued' || o.state === 'deferred') becameDue = true;
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
      outcomes.forEach((o, i) => {
        if (!finishing.has(o.queueId)) {
          const changed = this.st.update.run(
            o.state,
            o.attempts,
            o.nextAttemptAt ?? null,
            o.lastAttemptAt ?? null,
            o.lastReply ?? null,
            o.lastStatus ?? null,
            o.remote ?? null,
            reports[i],
            o.delayNotified === undefined ? null : o.delayNotified ? 1 : 0,
            o.suspended === undefined ? null : o.suspended ? 1 : 0,
            o.recipientId,
          ).changes;
          if (changed === 0) throw new Error(`recipient ${o.recipientId} of ${o.queueId} is not in the queue`);
        }
        this.insertEvent(o.event);
      });
      for (const qid of finishing) {
        this.st.deleteRecipients.run(qid);
        this.st.deleteMessage.run(qid);
      }
      return files;
    }, true);
    await this.removeBodies(removed);
    if (becameDue) this.emitDue();
  }

  async getMessage(queueId: string): Promise<MessageRecord | null> {
    const row = this.st.getMessage.get(queueId) as MessageRow | undefined;
    return row ? toMessage(row) : null;
  }

  async getRecipients(queueId: string): Promise<RecipientRecord[]> {
    return (this.st.getRecipients.all(queueId) as RecipientRow[]).map(toRecipient);
  }

  async pendingReports(limit: number): Promise<string[]> {
    return (this.st.pendingReports.all(limit) as Array<{ qid: string }>).map((r) => r.qid);
  }

  async *reportRecipients(queueId: string): AsyncIterable<RecipientRecord> {
    let after = 0;
    for (;;) {
      const rows = this.st.reportPage.all(queueId, after, 1000) as RecipientRow[];
      if (rows.length === 0) return;
      for (const r of rows) yield toRecipient(r);
      after = rows[rows.length - 1]!.id;
    }
  }

  async quarantine(queueId: string, reason: string, event: (r: RecipientRecord) => MailEvent): Promise<void> {
    await this.commit.run(() => {
      this.st.quarantineMessage.run(reason, queueId);
      for (const row of this.st.getRecipients.all(queueId) as RecipientRow[]) {
        if (FINAL_STATES.has(row.state as RecipientState) || row.state === 'quarantined') continue;
        const r = toRecipient(row);
        this.db.prepare(`UPDATE recipients SET state = 'quarantined', lease_until = 0 WHERE id = ?`).run(r.id);
        this.insertEvent(event(r));
      }
    }, true);
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
    const out: DestinationSummary[] = rows.map(({ last_reply, ...r }) => ({ ...r, lastReply: last_reply ?? '' }));
    const by = new Map(out.map((d) => [d.destination, d]));
    for (const o of await this.overrides()) {
      let d = by.get(o.destination);
      if (!d) {
        d = { destination: o.destination, recipients: 0, messages: 0, oldest: 0, deferred: 0, suspended: 0, lastReply: '' };
        by.set(o.destination, d);
        out.push(d);
      }
      if (o.kind === 'hold') d.held = true;
      else d.redirect = o.to;
    }
    return out;
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

  async eventsAfter(seq: number, limit: number): Promise<MailEvent[]> {
    return (this.st.eventsAfter.all(seq, limit) as EventRow[]).map(toEvent);
  }

  async appendEvents(events: MailEvent[]): Promise<void> {
    if (events.length === 0) return;
    await this.commit.run(() => {
      for (const e of events) this.insertEvent(e);
    }, true);
  }

  onDue(listener: () => void): void {
    this.dueListeners.push(listener);
  }

  private emitDue(): void {
    for (const l of this.dueListeners) l();
  }

  /** messageHead - the fields every event of a message carries. */
  private messageHead(queueId: string): { message_id: string; sender: string } | undefined {
    return this.db.prepare(`SELECT message_id, sender FROM messages WHERE qid = ?`).get(queueId) as { message_id: string; sender: string } | undefined;
  }

  /** destinationEvent - the one event of an action on a whole destination. */
  private destinationEvent(event: 'retry_requested' | 'suspended' | 'resumed' | 'redirected', destination: string, op: Operator, what: string): void {
    this.insertEvent(makeEvent(event, { queue_id: '', message_id: '', sender: '', detail: operatorDetail(op, `destination ${destination} ${what}`) }));
  }

  /**
   * onMessage - run `change` for each recipient of one message in `states`,
   * writing the event `change` returns, in one durable transaction.
   */
  private async onMessage(
    queueId: string,
    states: readonly RecipientState[],
    extra: string,
    change: (r: RecipientRow, head: { message_id: string; sender: string }) => MailEvent | null,
    after?: () => string[],
  ): Promise<ActionResult> {
    const result = await this.commit.run(() => {
      const head = this.messageHead(queueId);
      const res: ActionResult & { files: string[] } = { changed: 0, inFlight: 0, queueIds: [], files: [] };
      if (!head) return res;
      const rows = this.db
        .prepare(`SELECT ${RECIPIENT_COLUMNS} FROM recipients WHERE qid = ? AND state IN (${states.map(() => '?').join(',')}) ${extra} ORDER BY id`)
        .all(queueId, ...states) as RecipientRow[];
      for (const r of rows) {
        const e = change(r, head);
        if (!e) continue;
        this.insertEvent(e);
        res.changed++;
      }
      res.inFlight = (this.db.prepare(`SELECT COUNT(*) AS n FROM recipients WHERE qid = ? AND state = 'delivering'`).get(queueId) as { n: number }).n;
      if (res.changed) res.queueIds.push(queueId);
      if (after) res.files = after();
      return res;
    }, true);
    const { files, ...out } = result;
    await this.removeBodies(files);
    return out;
  }

  async retryNow(target: Target, op: Operator): Promise<ActionResult> {
    const now = Date.now();
    let res: ActionResult;
    if ('destination' in target) {
      res = await this.commit.run(() => {
        const n = this.db
          .prepare(`UPDATE recipients SET next_at = ? WHERE destination = ? AND state IN ('queued','deferred') AND next_at > ?`)
          .run(now, target.destination, now).changes;
        this.destinationEvent('retry_requested', target.destination, op, `retried (${n} recipient(s))`);
        const inFlight = (this.db.prepare(`SELECT COUNT(*) AS n FROM recipients WHERE destination = ? AND state = 'delivering'`).get(target.destination) as { n: number }).n;
        return { changed: n, inFlight, queueIds: [] };
      }, true);
    } else {
      const upd = this.db.prepare(`UPDATE recipients SET next_at = ? WHERE id = ?`);
      res = await this.onMessage(target.queueId, ['queued', 'deferred'], '', (r, h) => {
        upd.run(now, r.id);
        return makeEvent('retry_requested', { queue_id: r.qid, message_id: h.message_id, sender: h.sender, recipient: r.address, state: r.state, detail: operatorDetail(op) });
      });
    }
    if (res.changed) this.emitDue();
    return res;
  }

  async suspend(target: Target, op: Operator): Promise<ActionResult> {
    if ('destination' in target) return this.hold(target.destination, op, true);
    const upd = this.db.prepare(`UPDATE recipients SET suspended = 1 WHERE id = ?`);
    return this.onMessage(target.queueId, ['queued', 'deferred', 'delivering'], 'AND suspended = 0', (r, h) => {
      upd.run(r.id);
      return makeEvent('suspended', { queue_id: r.qid, message_id: h.message_id, sender: h.sender, recipient: r.address, state: r.state, detail: operatorDetail(op) });
    });
  }

  async resume(target: Target, op: Operator): Promise<ActionResult> {
    let res: ActionResult;
    if ('destination' in target) res = await this.hold(target.destination, op, false);
    else {
      const upd = this.db.prepare(`UPDATE recipients SET suspended = 0 WHERE id = ?`);
      res = await this.onMessage(target.queueId, ['queued', 'deferred', 'delivering'], 'AND suspended = 1', (r, h) => {
        upd.run(r.id);
        return makeEvent('resumed', { queue_id: r.qid, message_id: h.message_id, sender: h.sender, recipient: r.address, state: r.state, detail: operatorDetail(op) });
      });
    }
    if (res.changed) this.emitDue();
    return res;
  }

  /** heldDestinations - the destinations on hold now (cached; see `held`). */
  private heldDestinations(): Set<string> {
    this.held ??= new Set((this.db.prepare(`SELECT destination FROM overrides WHERE kind = 'hold'`).all() as Array<{ destination: string }>).map((r) => r.destination));
    return this.held;
  }

  /** hold - put a whole destination on hold (one overrides row) or take it off. */
  private hold(destination: string, op: Operator, on: boolean): Promise<ActionResult> {
    return this.commit.run(() => {
      const exists = this.db.prepare(`SELECT 1 FROM overrides WHERE destination = ? AND kind = 'hold'`).get(destination) !== undefined;
      const open = (this.db.prepare(`SELECT COUNT(*) AS n FROM recipients WHERE destination = ? AND state IN ('queued','deferred','delivering')`).get(destination) as { n: number }).n;
      if (exists === on) return { changed: 0, inFlight: 0, queueIds: [] };
      if (on) this.db.prepare(`INSERT INTO overrides (destination, kind, target, by, reason, at) VALUES (?, 'hold', '', ?, ?, ?)`).run(destination, op.who, op.reason, Date.now());
      else this.db.prepare(`DELETE FROM overrides WHERE destination = ? AND kind = 'hold'`).run(destination);
      this.held = null;
      this.destinationEvent(on ? 'suspended' : 'resumed', destination, op, on ? `held (${open} recipient(s))` : `released from hold (${open} recipient(s))`);
      // A hold is a change even for an empty destination: count at least 1.
      return { changed: Math.max(open, 1), inFlight: 0, queueIds: [] };
    }, true);
  }

  async remove(queueId: string, op: Operator, report: false | ((m: MessageRecord, r: RecipientRecord) => boolean)): Promise<ActionResult> {
    const m = await this.getMessage(queueId);
    if (!m) return { changed: 0, inFlight: 0, queueIds: [] };
    const deltas = new Map<string, number>();
    const upd = this.db.prepare(`UPDATE recipients SET state = 'removed', report = ?, last_reply = ?, last_status = ?, lease_until = 0 WHERE id = ?`);
    const text = `removed from the queue by the postmaster (${op.who}): ${op.reason || 'no reason given'}`.slice(0, 1000);
    const res = await this.onMessage(
      queueId,
      ['queued', 'deferred', 'quarantined'],
      '',
      (row, h) => {
        const r = toRecipient(row);
        const wanted = report !== false && report(m, r);
        const newReport = wanted ? 'failed' : row.report;
        upd.run(newReport, wanted ? text : row.last_reply, wanted ? '5.0.0' : row.last_status, row.id);
        const delta = Number(isOpen('removed', newReport)) - Number(isOpen(row.state, row.report));
        if (delta) deltas.set(queueId, (deltas.get(queueId) ?? 0) + delta);
        return makeEvent('removed', {
          queue_id: queueId,
          message_id: h.message_id,
          sender: h.sender,
          recipient: row.address,
          state: 'removed',
          report: wanted ? 'failed' : 'none',
          detail: operatorDetail(op, wanted ? 'with a failure report to the sender' : 'without report'),
        });
      },
      () => this.applyDeltas(deltas),
    );
    return res;
  }

  async release(queueId: string, op: Operator): Promise<ActionResult> {
    const now = Date.now();
    const upd = this.db.prepare(`UPDATE recipients SET state = 'queued', next_at = ?, lease_until = 0 WHERE id = ?`);
    const res = await this.onMessage(
      queueId,
      ['quarantined'],
      '',
      (r, h) => {
        upd.run(now, r.id);
        return makeEvent('released', { queue_id: queueId, message_id: h.message_id, sender: h.sender, recipient: r.address, state: 'queued', detail: operatorDetail(op) });
      },
      () => {
        this.db.prepare(`UPDATE messages SET quarantine = '' WHERE qid = ?`).run(queueId);
        return [];
      },
    );
    if (res.changed) this.emitDue();
    return res;
  }

  async redirect(destination: string, to: string | null, op: Operator): Promise<void> {
    await this.commit.run(() => {
      if (to === null) {
        const n = this.db.prepare(`DELETE FROM overrides WHERE destination = ? AND kind = 'redirect'`).run(destination).changes;
        if (n) this.destinationEvent('redirected', destination, op, 'no longer redirected');
      } else {
        this.db
          .prepare(`INSERT OR REPLACE INTO overrides (destination, kind, target, by, reason, at) VALUES (?, 'redirect', ?, ?, ?, ?)`)
          .run(destination, to, op.who, op.reason, Date.now());
        this.destinationEvent('redirected', destination, op, `redirected to ${to}`);
      }
    }, true);
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
    return rows.map((r) => ({ destination: r.destination, kind: r.kind === 'hold' ? 'hold' : 'redirect', to: r.target, by: r.by, reason: r.reason, at: r.at }));
  }

  async scanRecipients(afterId: number, limit: number): Promise<RecipientRecord[]> {
    return (this.db.prepare(`SELECT ${RECIPIENT_COLUMNS} FROM recipients WHERE id > ? ORDER BY id LIMIT ?`).all(afterId, limit) as RecipientRow[]).map(toRecipient);
  }

  async recipientPage(queueId: string, afterId: number, limit: number): Promise<RecipientRecord[]> {
    return (this.db.prepare(`SELECT ${RECIPIENT_COLUMNS} FROM recipients WHERE qid = ? AND id > ? ORDER BY id LIMIT ?`).all(queueId, afterId, limit) as RecipientRow[]).map(
      toRecipient,
    );
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

  async eventsOf(queueId: string, afterSeq: number, limit: number): Promise<MailEvent[]> {
    return (this.db.prepare(`SELECT * FROM events WHERE qid = ? AND seq > ? ORDER BY seq LIMIT ?`).all(queueId, afterSeq, limit) as EventRow[]).map(toEvent);
  }

  private get trackFile(): string {
    return join(this.options.dataDir, 'queue', 'track.db');
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
    return this.commit.run(
      () =>
        this.db
          .prepare(
            `DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE seq <= ? AND ts < ? AND qid NOT IN (SELECT qid FROM messages) ORDER BY seq LIMIT ?)`,
          )
          .run(maxSeq, before, limit).changes,
      false,
    ).then((n) => {
      if (n > 0) this.worker?.postMessage({ kind: 'prune', maxSeq });
      return n;
    });
  }

  /** The database handle, for the admin and audit modules that query it directly. */
  get database(): Db {
    return this.db;
  }

  /** sweepOrphans - body files whose message row is gone (a crash between commit and unlink). */
  private async sweepOrphans(): Promise<void> {
    for (const qid of await this.spool.listBodies()) {
      if (!this.st.hasMessage.get(qid)) await this.spool.remove(qid);
    }
  }
}
