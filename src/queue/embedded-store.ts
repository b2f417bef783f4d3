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
 */
import Database from 'better-sqlite3';
import type { Database as Db } from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { FINAL_STATES, type MailEvent, type RecipientState } from '../log/events.js';
import { GroupCommit } from './group-commit.js';
import { Spool, SpoolWriter } from './spool.js';
import type {
  BodyWriter,
  Claim,
  ClaimOptions,
  DestinationSummary,
  InsertOptions,
  ListFilter,
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
CREATE INDEX IF NOT EXISTS recipients_delivering ON recipients(id) WHERE state = 'delivering';
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
  detail TEXT
);
CREATE INDEX IF NOT EXISTS events_qid ON events(qid);
CREATE INDEX IF NOT EXISTS events_message_id ON events(message_id);
`;

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
  return e;
}

/** A recipient counts as "open" while it is unfinished or still owes a report. */
function isOpen(state: string, report: string | null): boolean {
  return !FINAL_STATES.has(state as RecipientState) || report !== null;
}

export interface EmbeddedStoreOptions {
  dataDir: string;
  /** Bodies up to this size are stored inside the database (one sync for many). */
  inlineMax?: number;
}

export class EmbeddedStore implements QueueStore {
  private db!: Db;
  private commit!: GroupCommit;
  readonly spool: Spool;
  private readonly dueListeners: Array<() => void> = [];
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
    // Recovery: claims held when the last process stopped are due again now.
    const now = Date.now();
    this.db
      .prepare(`UPDATE recipients SET state = CASE WHEN attempts = 0 THEN 'queued' ELSE 'deferred' END, next_at = ?, lease_until = 0 WHERE state = 'delivering'`)
      .run(now);
    await this.sweepOrphans();
  }

  private prepare() {
    const db = this.db;
    return {
      insertMessage: db.prepare(
        `INSERT INTO messages (qid, message_id, sender, envid, ret, size, received_at, smtputf8, eight_bit, is_report, client, subject, body, rcpt_count, open_count)
         VALUES (@qid, @message_id, @sender, @envid, @ret, @size, @received_at, @smtputf8, @eight_bit, @is_report, @client, @subject, @body, @rcpt_count, @rcpt_count)`,
      ),
      insertRecipient: db.prepare(
        `INSERT INTO recipients (qid, address, orcpt, notify, destination, state, next_at) VALUES (?, ?, ?, ?, ?, 'queued', ?)`,
      ),
      insertEvent: db.prepare(
        `INSERT INTO events (ts, id, event, qid, message_id, sender, recipient, attempt, state, remote, reply, error, status, detail)
         VALUES (@ts, @id, @event, @queue_id, @message_id, @sender, @recipient, @attempt, @state, @remote, @reply, @error, @status, @detail)`,
      ),
      getMessage: db.prepare(`SELECT ${MESSAGE_COLUMNS} FROM messages WHERE qid = ?`),
      getBody: db.prepare(`SELECT body FROM messages WHERE qid = ?`),
      getRecipients: db.prepare(`SELECT ${RECIPIENT_COLUMNS} FROM recipients WHERE qid = ? ORDER BY id`),
      getRecipientState: db.prepare(`SELECT qid, state, report FROM recipients WHERE id = ?`),
      due: db.prepare(
        `SELECT ${RECIPIENT_COLUMNS} FROM recipients WHERE state IN ('queued','deferred') AND suspended = 0 AND next_at <= ? ORDER BY next_at LIMIT ?`,
      ),
      claim: db.prepare(`UPDATE recipients SET state = 'delivering', lease_until = ? WHERE id = ?`),
      nextDue: db.prepare(`SELECT MIN(next_at) AS t FROM recipients WHERE state IN ('queued','deferred') AND suspended = 0`),
      countDue: db.prepare(
        `SELECT COUNT(*) AS n FROM recipients WHERE qid = ? AND state IN ('queued','deferred') AND suspended = 0 AND next_at <= ?`,
      ),
      update: db.prepare(
        `UPDATE recipients SET state = @state, attempts = @attempts, next_at = COALESCE(@next_at, next_at), last_at = COALESCE(@last_at, last_at),
           last_reply = COALESCE(@last_reply, last_reply), last_status = COALESCE(@last_status, last_status), remote = COALESCE(@remote, remote),
           report = @report, delay_notified = COALESCE(@delay_notified, delay_notified), suspended = COALESCE(@suspended, suspended), lease_until = 0
         WHERE id = @id`,
      ),
      clearReport: db.prepare(`UPDATE recipients SET report = NULL WHERE id = ?`),
      addOpen: db.prepare(`UPDATE messages SET open_count = open_count + ? WHERE qid = ? RETURNING open_count, body IS NULL AS file`),
      deleteMessage: db.prepare(`DELETE FROM messages WHERE qid = ?`),
      deleteRecipients: db.prepare(`DELETE FROM recipients WHERE qid = ?`),
      pendingReports: db.prepare(
        `SELECT DISTINCT qid FROM recipients WHERE report IS NOT NULL AND qid NOT IN (SELECT qid FROM recipients WHERE state = 'delivering') LIMIT ?`,
      ),
      reportPage: db.prepare(`SELECT ${RECIPIENT_COLUMNS} FROM recipients WHERE qid = ? AND report IS NOT NULL AND id > ? ORDER BY id LIMIT ?`),
      quarantineMessage: db.prepare(`UPDATE messages SET quarantine = ? WHERE qid = ?`),
      eventsAfter: db.prepare(`SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?`),
      hasMessage: db.prepare(`SELECT 1 FROM messages WHERE qid = ?`),
    };
  }

  async close(): Promise<void> {
    if (!this.db?.open) return;
    await this.commit.close();
    if (process.env.PETREL_STORE_STATS) process.stderr.write(`group commit: ${JSON.stringify(this.commit.stats)}\n`);
    this.db.close();
  }

  createBody(queueId: string): BodyWriter {
    return this.spool.createWriter(queueId);
  }

  async insert(message: NewMessage, body: BodyWriter, options: InsertOptions = {}): Promise<void> {
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
      const removed = await this.commit.run(
        (db) => {
          this.st.insertMessage.run({
            qid: message.queueId,
            message_id: message.messageId,
            sender: message.sender,
            envid: message.envid,
            ret: message.ret,
            size: message.size,
            received_at: message.receivedAt,
            smtputf8: message.smtputf8 ? 1 : 0,
            eight_bit: message.eightBit ? 1 : 0,
            is_report: message.isReport ? 1 : 0,
            client: message.client,
            subject: message.subject,
            body: finished.inline,
            rcpt_count: message.recipients.length,
          });
          for (const r of message.recipients) {
            this.st.insertRecipient.run(message.queueId, r.address, r.orcpt, r.notify, r.destination, message.receivedAt);
            this.insertEvent({
              ts: new Date(message.receivedAt).toISOString(),
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
    } catch (e) {
      if (finished.dir) await this.spool.remove(message.queueId).catch(() => undefined);
      throw e;
    }
    this.emitDue();
  }

  private insertEvent(e: MailEvent): void {
    this.st.insertEvent.run({
      ts: e.ts,
      id: e.id,
      event: e.event,
      queue_id: e.queue_id,
      message_id: e.message_id,
      sender: e.sender,
      recipient: e.recipient ?? null,
      attempt: e.attempt ?? null,
      state: e.state ?? null,
      remote: e.remote ?? null,
      reply: e.reply ?? null,
      error: e.error ?? null,
      status: e.status ?? null,
      detail: e.detail ?? null,
    });
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
    const row = this.st.nextDue.get() as { t: number | null };
    return row.t;
  }

  async countDue(queueId: string, now: number): Promise<number> {
    return (this.st.countDue.get(queueId, now) as { n: number }).n;
  }

  async recordOutcomes(outcomes: Outcome[]): Promise<void> {
    if (outcomes.length === 0) return;
    let becameDue = false;
    const removed = await this.commit.run(() => {
      const deltas = new Map<string, number>();
      for (const o of outcomes) {
        const old = this.st.getRecipientState.get(o.recipientId) as { qid: string; state: string; report: string | null } | undefined;
        if (!old) throw new Error(`recipient ${o.recipientId} of ${o.queueId} is not in the queue`);
        const report = o.report === undefined ? old.report : o.report;
        this.st.update.run({
          id: o.recipientId,
          state: o.state,
          attempts: o.attempts,
          next_at: o.nextAttemptAt ?? null,
          last_at: o.lastAttemptAt ?? null,
          last_reply: o.lastReply ?? null,
          last_status: o.lastStatus ?? null,
          remote: o.remote ?? null,
          report,
          delay_notified: o.delayNotified === undefined ? null : o.delayNotified ? 1 : 0,
          suspended: o.suspended === undefined ? null : o.suspended ? 1 : 0,
        });
        this.insertEvent(o.event);
        const delta = Number(isOpen(o.state, report)) - Number(isOpen(old.state, old.report));
        if (delta) deltas.set(old.qid, (deltas.get(old.qid) ?? 0) + delta);
        if (o.state === 'queued' || o.state === 'deferred') becameDue = true;
      }
      return this.applyDeltas(deltas);
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
    return rows.map((r) => ({ ...r, lastReply: r.last_reply ?? '' }));
  }

  async list(filter: ListFilter): Promise<MessageRecord[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    const rcpt: string[] = [];
    if (filter.after) (where.push('m.qid > ?'), args.push(filter.after));
    if (filter.sender !== undefined) (where.push('m.sender = ?'), args.push(filter.sender));
    if (filter.messageId) (where.push('m.message_id IN (?, ?)'), args.push(filter.messageId, `<${filter.messageId.replace(/^<|>$/g, '')}>`));
    if (filter.olderThan !== undefined) (where.push('m.received_at <= ?'), args.push(Date.now() - filter.olderThan));
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
