/*
 * dsn/reporter - makes the reports a message is waiting for and queues them
 * as new messages from <> (DESIGN.md, "dsn"; invariants 2 and 9). Reports
 * re-enter the queue through enqueue, as every other message does: the same
 * alias expansion, routing, fast path and durable commit.
 *
 * For each kind pending on a message (failed, expired, delayed, delivered,
 * relayed, expanded) one report covers all its recipients of that kind:
 * written as a stream into a new message, committed in one transaction that
 * also clears those recipients' pending marks and records the `dsn_queued`
 * event (and one `delay_notice` per recipient for delay warnings). A crash
 * before that commit leaves the marks in place and the report is made again
 * on restart; after it, the report exists exactly once.
 *
 * A report about a report goes to the postmaster (as a "postmaster notice");
 * a failed postmaster notice is only logged: no loops (dsn/policy).
 */
import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import { makeEvent, type MailEvent } from '../log/events.js';
import type { Trace } from '../log/trace.js';
import type { MessageRecord, QueueStore, RecipientRecord, ReportKind } from '../queue/store.js';
import type { Enqueuer } from '../enqueue/enqueue.js';
import { ReportAlreadyMade } from '../queue/backend.js';
import { ReportEmpty, writeReport } from './build.js';
import { POSTMASTER_NOTICE } from './policy.js';

const KINDS: ReportKind[] = ['failed', 'expired', 'delayed', 'delivered', 'relayed', 'expanded'];

export interface ReporterDeps {
  config: Config;
  /** Read: the reported message, its recipients owing a report, its body. */
  store: QueueStore;
  /** Where reports are queued, as every message is. */
  enqueuer: Enqueuer;
  trace: Trace;
  onQueued?: (kind: ReportKind) => void;
}

export class Reporter {
  private readonly running = new Map<string, Promise<void>>();

  constructor(private readonly deps: ReporterDeps) {}

  get postmaster(): string {
    return this.deps.config.dsn.postmaster || `postmaster@${this.deps.config.hostname}`;
  }

  /** report - make every report pending on one message (serialised per message). */
  report(queueId: string): Promise<void> {
    const prev = this.running.get(queueId) ?? Promise.resolve();
    const next = prev.then(() => this.reportNow(queueId));
    this.running.set(queueId, next);
    void next.finally(() => {
      if (this.running.get(queueId) === next) this.running.delete(queueId);
    }).catch(() => undefined);
    return next;
  }

  private async reportNow(queueId: string): Promise<void> {
    const message = await this.deps.store.getMessage(queueId);
    if (!message) return;
    const kinds = new Set<ReportKind>();
    for await (const r of this.deps.store.reportRecipients(queueId)) if (r.report) kinds.add(r.report);
    for (const kind of KINDS) if (kinds.has(kind)) await this.one(message, kind);
  }

  private async one(message: MessageRecord, kind: ReportKind): Promise<void> {
    const store = this.deps.store;
    const toPostmaster = message.isReport;
    const to = toPostmaster ? this.postmaster : message.sender;
    const incoming = this.deps.enqueuer.begin({
      sender: '',
      recipients: [{ address: to, orcpt: null, notify: 'NEVER' }],
      smtputf8: false,
      eightBit: false,
      ret: null,
      envid: null,
      client: toPostmaster ? POSTMASTER_NOTICE : 'dsn',
      received: null,
      isReport: true,
      maxSize: 0,
      maxReceived: 0,
      // Signed with the key of the hostname's domain (From: MAILER-DAEMON@hostname), when there is one.
      sign: true,
    });
    const queueId = incoming.queueId;
    // Delay warnings get one delay_notice event per recipient: remember who was covered.
    const warned: RecipientRecord[] = [];
    const recipients = async function* (): AsyncIterable<RecipientRecord> {
      for await (const r of store.reportRecipients(message.queueId)) {
        if (r.report !== kind) continue;
        if (kind === 'delayed') warned.push(r);
        yield r;
      }
    };
    let written;
    try {
      written = await writeReport(
        {
          kind,
          hostname: this.deps.config.hostname,
          message,
          recipients: recipients(),
          original: () => store.readBody(message.queueId),
          returnSizeLimit: this.deps.config.dsn.return_size_limit,
          retryUntil: message.receivedAt + this.deps.config.queue.max_lifetime,
          to,
          scratchDir: join(this.deps.config.data_dir, 'spool', 'tmp'),
        },
        (chunk) => incoming.write(chunk),
      );
    } catch (e) {
      await incoming.abort().catch(() => undefined);
      if (e instanceof ReportEmpty) return;
      throw e;
    }
    const events: MailEvent[] = [
      makeEvent('dsn_queued', {
        queue_id: message.queueId,
        message_id: message.messageId,
        sender: message.sender,
        state: kind,
        detail: `${kind} report ${queueId} to <${to}> about ${written.recipientIds.length} recipient(s)`,
      }),
    ];
    for (const r of warned) {
      events.push(makeEvent('delay_notice', { queue_id: message.queueId, message_id: message.messageId, sender: message.sender, recipient: r.address, state: r.state, detail: `report ${queueId}` }));
    }
    // commit() aborts the body itself when it fails.
    try {
      await incoming.commit({ clearReports: { kind, ids: written.recipientIds }, events, smtputf8: written.smtputf8, eightBit: written.eightBit });
    } catch (e) {
      // Another node (sharing the queue) made this report first: one report, not two.
      if (e instanceof ReportAlreadyMade) {
        this.deps.trace.info({ qid: message.queueId, kind }, 'report made already by another node');
        return;
      }
      throw e;
    }
    this.deps.onQueued?.(kind);
    this.deps.trace.info({ qid: message.queueId, report: queueId, kind, n: written.recipientIds.length }, 'report queued');
  }
}
