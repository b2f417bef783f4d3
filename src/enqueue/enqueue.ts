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
 * Lines over 998 octets are wrapped here (dkim/line-wrap), so the stored
 * message is the one relayed. A message to sign (envelope.sign, and a
 * `[[dkim]]` key for its From: domain) is held while it arrives
 * (checks/held-message) and stored with its DKIM-Signature fields on top
 * (dkim/signer): the stored message is the signed one.
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
import type { HeldMessage } from '../checks/held-message.js';
import { LineWrapper } from '../dkim/line-wrap.js';
import type { DkimSigner } from '../dkim/signer.js';

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
  /** MAIL FROM ... REQUIRETLS (RFC 8689); absent: false. Petrel's own reports never set it. */
  requireTls?: boolean;
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
  /** DKIM-sign when the From: domain has a key (dkim/signer): submission, relay_networks, Petrel's reports; never mail from outside. */
  sign?: boolean;
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
  /** DKIM signing ([[dkim]] keys), for envelopes with `sign`. */
  dkim?: DkimSigner;
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
  /** Wraps lines over 998 octets; notes the From: domain for signing. */
  private readonly wrapper = new LineWrapper();
  /** The message held while it arrives, to be signed at commit; null when not signed. */
  private held: HeldMessage | null;

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
    this.held = envelope.sign && options.dkim?.configured ? options.dkim.hold() : null;
  }

  /** out - store octets: into the held message when it is to be signed, else into the store. */
  private out(piece: Buffer): Promise<void> {
    return this.held ? this.held.write(piece) : this.body.write(piece);
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
    if (this.extraHeaders) await this.out(Buffer.from(this.extraHeaders, 'latin1'));
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
    await this.out(Buffer.from(header, 'utf8'));
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
      for (const piece of pieces) for (const p of this.wrapper.push(piece)) await this.out(p);
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
      for (const piece of this.scanner.finish()) for (const p of this.wrapper.push(piece)) await this.out(p);
      for (const p of this.wrapper.finish()) await this.out(p);
      if (this.held) await this.signAndStore(this.held);
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
          // RFC 8689 §4.1: REQUIRETLS wins; TLS-Required: No counts only without it.
          requireTls: this.envelope.requireTls === true,
          tlsRequiredNo: this.envelope.requireTls !== true && this.scanner.tlsRequiredNo,
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
    } finally {
      await this.held?.dispose();
    }
  }

  /**
   * signAndStore - the held message into the store, with a DKIM-Signature
   * field per key of its From: domain on top (none: stored as it is). A
   * signature that cannot be made fails the commit (451: the client sends
   * again), never stores the message unsigned.
   */
  private async signAndStore(held: HeldMessage): Promise<void> {
    const keys = this.options.dkim!.keysFor(this.wrapper.fromDomain);
    if (keys.length) {
      const fields = await this.options.dkim!.sign(held.replay(), keys);
      await this.body.write(Buffer.from(fields, 'latin1'));
    }
    for await (const chunk of held.replay()) await this.body.write(chunk);
  }

  private ownEvents(): MailEvent[] {
    return this.extraEvents.map((e) =>
      makeEvent(e.event, { queue_id: this.queueId, message_id: this.scanner.messageId, sender: this.envelope.sender, detail: e.detail }),
    );
  }

  async abort(): Promise<void> {
    await this.held?.dispose();
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
