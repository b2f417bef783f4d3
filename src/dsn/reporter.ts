/*
 * dsn/reporter - makes the reports a message is waiting for and queues them
 * as new messages from <> (DESIGN.md, "dsn"; invariant 2 and 9).
 *
 * For each kind pending on a message (failed, expired, delayed, delivered,
 * relayed) one report covers all its recipients of that kind: written as a
 * stream into a new body, inserted in one transaction that also clears those
 * recipients' pending marks and records the `dsn_queued` event (and one
 * `delay_notice` per recipient for delay warnings). A crash before that commit
 * leaves the marks in place and the report is made again on restart; after it,
 * the report exists exactly once.
 *
 * A report about a report goes to the postmaster (as a "postmaster notice");
 * a failed postmaster notice is only logged: no loops.
 */
import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import { newQueueId } from '../core/ids.js';
import { makeEvent, type MailEvent } from '../log/events.js';
import type { Trace } from '../log/trace.js';
import type { MessageRecord, NewRecipient, QueueStore, RecipientRecord, ReportKind } from '../queue/store.js';
import type { Router } from '../scheduler/router.js';
import { POSTMASTER_NOTICE } from '../scheduler/scheduler.js';
import { ReportEmpty, writeReport } from './build.js';
import type { IncomingRecipient } from '../enqueue/enqueue.js';

const KINDS: ReportKind[] = ['failed', 'expired', 'delayed', 'delivered', 'relayed', 'expanded'];

export interface ReporterDeps {
  config: Config;
  store: QueueStore;
  router: Router;
  trace: Trace;
  onQueued?: (kind: ReportKind) => void;
  /** Local alias expansion (the same as for every other message), so a report to an alias reaches its targets. */
  expand?: (recipients: readonly IncomingRecipient[]) => IncomingRecipient[];
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

  /** reportRecipients - where a report to `to` goes: expanded like any message's recipients. */
  private reportRecipients(to: string): NewRecipient[] {
    const given: IncomingRecipient[] = [{ address: to, orcpt: null, notify: 'NEVER' }];
    const expanded = this.deps.expand ? this.deps.expand(given) : given;
    return expanded.map((r) => ({ address: r.address, orcpt: r.orcpt, notify: 'NEVER', destination: r.destination ?? this.deps.router.route(r.address).destination }));
  }

  private async one(message: MessageRecord, kind: ReportKind): Promise<void> {
    const store = this.deps.store;
    const toPostmaster = message.isReport;
    const to = toPostmaster ? this.postmaster : message.sender;
    const queueId = newQueueId();
    const body = store.createBody(queueId);
    // Delay warnings get one delay_notice event per recipient: remember who was covered.
    const warned: RecipientRecord[] = [];
    const recipients = async function* (): AsyncIterable<RecipientRecord> {
      for await (const r of store.reportRecipients(message.queueId)) {
        if (r.report !== kind) continue;
        if (kind === 'delayed') warned.push(r);
        yield r;
      }
    };
    try {
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
          (chunk) => body.write(chunk),
        );
      } catch (e) {
        if (e instanceof ReportEmpty) {
          await body.abort();
          return;
        }
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
      await store.insert(
        {
          queueId,
          messageId: written.messageId,
          sender: '',
          envid: null,
          ret: null,
          size: body.size,
          receivedAt: Date.now(),
          smtputf8: written.smtputf8,
          eightBit: written.eightBit,
          isReport: true,
          client: toPostmaster ? POSTMASTER_NOTICE : 'dsn',
          subject: written.subject,
          recipients: this.reportRecipients(to),
        },
        body,
        { clearReports: written.recipientIds, events },
      );
      this.deps.onQueued?.(kind);
      this.deps.trace.info({ qid: message.queueId, report: queueId, kind, n: written.recipientIds.length }, 'report queued');
    } catch (e) {
      await body.abort().catch(() => undefined);
      throw e;
    }
  }
}
