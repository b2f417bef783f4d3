/*
 * enqueue/enqueue - turns an accepted envelope and a message stream into a
 * queued message (Postfix's "cleanup"): adds Received: (and Message-ID: when
 * missing), expands local aliases (local/expand: the envelope gets the
 * expanded recipients, ORCPT naming what the sender wrote), routes each
 * recipient to name its destination, streams the body
 * into the store and commits it durably.
 *
 * Invariants:
 * - commit() resolves only when the store has the message on stable storage:
 *   that is the moment inbound may say 250 (invariant 1);
 * - on any failure nothing is kept: the body writer is aborted, and the error
 *   says which reply to give (451 4.3.0 storage, 452 4.3.1 disk full,
 *   552 5.3.4 too big, 554 5.6.0 NUL, 554 5.4.6 loop);
 * - memory is bounded by the body writer's inline limit, whatever the size.
 *
 * Used by every way in: SMTP sessions, the pickup directory, and reports.
 */
import { newMessageId, newQueueId } from '../core/ids.js';
import { smtpReply } from '../core/replies.js';
import { storageStatus } from '../core/storage-status.js';
import type { SmtpReply } from '../core/smtp-reply.js';
import { makeEvent, type EventName, type MailEvent } from '../log/events.js';
import { ReportAlreadyMade, StorageFull, type ReportsCleared } from '../queue/backend.js';
import type { BodyWriter, Claim, NewRecipient, QueueStore } from '../queue/store.js';
import type { Router } from '../routing/router.js';
import { HeaderScanner } from './header-scan.js';
import { rfc5322Date } from '../core/dates.js';
import { protocolName, receivedHeader } from './received.js';

export interface IncomingRecipient {
  address: string;
  orcpt: string | null;
  notify: string | null;
  /** Set only for a recipient already decided to fail (core/decided); otherwise the router names it. */
  destination?: string;
}

export interface Envelope {
  sender: string;
  recipients: IncomingRecipient[];
  smtputf8: boolean;
  eightBit: boolean;
  ret: 'FULL' | 'HDRS' | null;
  envid: string | null;
  /** Shown in events and `queue show`: "helo [ip]", "pickup", "dsn". */
  client: string;
  /** For the Received: header; null adds none (Petrel's own reports). */
  received: { helo: string; ip: string; esmtp: boolean; tls: string | null; auth: boolean } | null;
  isReport: boolean;
  /** Largest message accepted (octets as received); 0 for no limit. */
  maxSize: number;
  /** More Received: headers than this fails the message with 5.4.6; 0 for no check. */
  maxReceived: number;
  /** Submission fix-ups (RFC 6409 §8): add Date: as well as Message-ID: when missing. */
  fixups?: boolean;
  /** Largest header section accepted (octets); 0 for no limit. */
  maxHeaderSize?: number;
}

/** EnqueueRejected - the message was not kept; `reply` says why, in SMTP terms. */
export class EnqueueRejected extends Error {
  constructor(readonly reply: SmtpReply) {
    super(`${reply.code} ${reply.enhanced} ${reply.lines.join(' ')}`);
    this.name = 'EnqueueRejected';
  }
}

export interface EnqueueOptions {
  hostname: string;
  store: QueueStore;
  router: Router;
  /** Alias expansion of the recipients (local/recipients), applied at commit. */
  expand?: (recipients: readonly IncomingRecipient[]) => IncomingRecipient[];
  /**
   * Fresh-message fast path (the scheduler): when it has room, the message's
   * recipients are inserted already claimed and handed over at once, instead
   * of being found by the next claim query.
   */
  fresh?: FreshSink;
}

export interface FreshSink {
  /** Room for this many more recipients in flight right now? */
  room(recipients: number): boolean;
  /** Take a claim made at insert time (after it is durable). */
  take(claim: Claim): void;
}

export class Enqueuer {
  constructor(private readonly options: EnqueueOptions) {}

  begin(envelope: Envelope): Incoming {
    return new Incoming(this.options, envelope);
  }
}

export class Incoming {
  readonly queueId: string;
  private readonly body: BodyWriter;
  private readonly scanner: HeaderScanner;
  private readonly receivedAt = Date.now();
  private size = 0;
  private oversize = false;
  private nul = false;
  private headerTooBig = false;
  private failure: Error | null = null;
  private started = false;
  /** Header fields added by addHeaders, written after Received:. */
  private extraHeaders = '';
  /** Message-level events added by addEvent, written with the message. */
  private readonly extraEvents: { event: EventName; detail: string }[] = [];

  constructor(
    private readonly options: EnqueueOptions,
    private readonly envelope: Envelope,
  ) {
    this.queueId = newQueueId(this.receivedAt);
    this.body = options.store.createBody(this.queueId);
    this.scanner = new HeaderScanner(
      () => newMessageId(options.hostname, this.queueId),
      envelope.fixups ? () => rfc5322Date(new Date(this.receivedAt)) : null,
    );
  }

  /**
   * addHeaders - header fields (each ending CR LF) to write right after
   * Received:, before the message: the inbound checks' results
   * (checks/inbound-checks). Only before the first write.
   */
  addHeaders(fields: string): void {
    if (this.started) throw new Error('addHeaders after the message began');
    this.extraHeaders += fields;
  }

  /** addEvent - a message-level event written in the same transaction as the message (the inbound checks': "not scanned"). */
  addEvent(event: EventName, detail: string): void {
    this.extraEvents.push({ event, detail });
  }

  /** note - a short verdict (the inbound checks') added to `client`: shown in the received event and `queue show`. */
  note(text: string): void {
    this.envelope.client += ` (${text})`;
  }

  private async start(): Promise<void> {
    this.started = true;
    await this.writeReceived();
    if (this.extraHeaders) await this.body.write(Buffer.from(this.extraHeaders, 'latin1'));
  }

  private async writeReceived(): Promise<void> {
    const r = this.envelope.received;
    if (!r) return;
    const header = receivedHeader({
      helo: r.helo,
      ip: r.ip,
      hostname: this.options.hostname,
      queueId: this.queueId,
      protocol: protocolName({ esmtp: r.esmtp, tls: r.tls !== null, auth: r.auth, utf8: this.envelope.smtputf8 }),
      recipient: this.envelope.recipients.length === 1 ? this.envelope.recipients[0]!.address : null,
      tls: r.tls,
      date: new Date(this.receivedAt),
    });
    await this.body.write(Buffer.from(header, 'utf8'));
  }

  /** write - message octets (CR LF line ends, no dot-stuffing). Never throws: failures are kept for commit(). */
  async write(chunk: Buffer): Promise<void> {
    if (chunk.length === 0) return;
    this.size += chunk.length;
    if (!this.nul && chunk.indexOf(0) >= 0) this.nul = true;
    if (this.envelope.maxSize && this.size > this.envelope.maxSize) this.oversize = true;
    if (this.failure || this.oversize || this.nul || this.headerTooBig) return;
    try {
      if (!this.started) await this.start();
      const pieces = this.scanner.push(chunk);
      if (this.envelope.maxHeaderSize && this.scanner.headerBytes > this.envelope.maxHeaderSize) {
        this.headerTooBig = true;
        return;
      }
      for (const piece of pieces) await this.body.write(piece);
    } catch (e) {
      this.failure = e as Error;
    }
  }

  /**
   * commit - store durably; resolves with the queue id, or throws
   * EnqueueRejected. A report (dsn/reporter) passes the recipients whose
   * pending report it is and its events: they are cleared and written in the
   * same transaction as the report itself, so a report exists exactly once.
   */
  async commit(report: ReportCommit = {}): Promise<{ queueId: string; messageId: string; size: number }> {
    try {
      if (this.oversize) throw new EnqueueRejected(smtpReply('messageTooBig', this.envelope.maxSize));
      if (this.nul) throw new EnqueueRejected(smtpReply('nulOctets'));
      if (this.headerTooBig) throw new EnqueueRejected(smtpReply('headerTooBig', this.envelope.maxHeaderSize ?? 0));
      if (this.failure) throw this.failure;
      if (!this.started) await this.start();
      for (const piece of this.scanner.finish()) await this.body.write(piece);
      if (this.envelope.maxReceived && this.scanner.received > this.envelope.maxReceived) {
        throw new EnqueueRejected(smtpReply('tooManyHops', this.scanner.received));
      }
      const given = this.options.expand ? this.options.expand(this.envelope.recipients) : this.envelope.recipients;
      const fresh = this.options.fresh;
      const claimLeaseMs = fresh && fresh.room(given.length) ? this.options.store.leaseMs : undefined;
      const recipients: NewRecipient[] = given.map((r) => ({ address: r.address, orcpt: r.orcpt, notify: r.notify, destination: r.destination ?? this.options.router.route(r.address).destination }));
      const claim = await this.options.store.insert(
        {
          queueId: this.queueId,
          messageId: this.scanner.messageId,
          sender: this.envelope.sender,
          envid: this.envelope.envid,
          ret: this.envelope.ret,
          size: this.body.size,
          receivedAt: this.receivedAt,
          smtputf8: report.smtputf8 ?? this.envelope.smtputf8,
          eightBit: report.eightBit ?? this.envelope.eightBit,
          isReport: this.envelope.isReport,
          client: this.envelope.client,
          subject: this.scanner.subject,
          recipients,
        },
        this.body,
        {
          ...(claimLeaseMs === undefined ? {} : { claimLeaseMs }),
          ...(report.clearReports ? { clearReports: report.clearReports } : {}),
          ...(report.events || this.extraEvents.length ? { events: [...(report.events ?? []), ...this.ownEvents()] } : {}),
        },
      );
      if (claim) fresh!.take(claim);
      return { queueId: this.queueId, messageId: this.scanner.messageId, size: this.body.size };
    } catch (e) {
      await this.body.abort().catch(() => undefined);
      if (e instanceof EnqueueRejected || e instanceof ReportAlreadyMade) throw e;
      throw new EnqueueRejected(storageReply(e));
    }
  }

  private ownEvents(): MailEvent[] {
    return this.extraEvents.map((e) =>
      makeEvent(e.event, { queue_id: this.queueId, message_id: this.scanner.messageId, sender: this.envelope.sender, detail: e.detail }),
    );
  }

  async abort(): Promise<void> {
    await this.body.abort();
  }
}

/** What a report's commit adds (see Incoming.commit). */
export interface ReportCommit {
  clearReports?: ReportsCleared;
  events?: MailEvent[];
  /** The report's own body decides these (known only once it is written). */
  smtputf8?: boolean;
  eightBit?: boolean;
}

/** storageReply - the reply for a failure to store: 452 4.3.1 when the storage is full, else 451 4.3.0. */
export function storageReply(e: unknown): SmtpReply {
  if (e instanceof StorageFull || storageStatus(e, 'spool') === '4.3.1') return smtpReply('storageFull');
  return smtpReply('storageError');
}
