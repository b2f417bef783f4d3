/*
 * inbound/smtp-session - one SMTP connection, one method per verb (RFC 5321, with
 * PIPELINING RFC 2920, SIZE RFC 1870, 8BITMIME RFC 6152, SMTPUTF8 RFC 6531,
 * ENHANCEDSTATUSCODES RFC 2034/3463, DSN RFC 3461, STARTTLS RFC 3207,
 * LIMITS RFC 9422, REQUIRETLS RFC 8689: offered and accepted only with TLS).
 *
 * Why not nodemailer's smtp-server: measured against CONTRACT.md's reply
 * table it answers a refused RCPT with the enhanced code of its own fixed
 * table (452 -> 4.2.2 where the contract and RFC 5321 §4.5.3.1.10 need 4.5.3;
 * 552 -> 5.2.2 where we need 5.3.4; 421 -> 4.4.2 where we need 4.7.0), has
 * no LIMITS, a hard-coded limit of 10 unknown commands, 16 KB command lines
 * (the contract says 512 + DSN extensions), no per-client connection limit and
 * no whole-DATA timeout — each would mean overriding its private methods.
 * The protocol core is small; owning it makes every reply ours.
 *
 * Invariants:
 * - 250 after DATA only once enqueue has committed durably (invariant 1);
 *   any failure before that is answered 451 4.3.0 / 452 4.3.1 and nothing is
 *   kept;
 * - replies go out in command order; with pipelining they are batched into
 *   one write when the client's input is drained;
 * - input is bounded: a line longer than its limit is discarded as it streams
 *   and answered 500 5.5.2; the session stops reading while it awaits storage;
 * - after STARTTLS, anything the client sent in clear after the command is
 *   discarded (no command injection, CVE-2011-0411) and the session restarts.
 *
 * Untrusted input: everything the client sends.
 */
import type { Socket } from 'node:net';
import { TLSSocket, type SecureContext } from 'node:tls';
import type { Config } from '../config/schema.js';
import { inboundChecksFor } from '../checks/inbound-checks.js';
import type { ClientListing } from '../checks/dnsbl.js';
import type { HeldMessage } from '../checks/held-message.js';
import { hasNonAscii } from '../core/address.js';
import { smtpReply, wireOf } from '../core/replies.js';
import type { SmtpReply } from '../core/smtp-reply.js';
import { EnqueueRejected, type Enqueuer, type Incoming, type IncomingRecipient } from '../enqueue/enqueue.js';
import type { Trace } from '../log/trace.js';
import { lineLimit, MAX_LINE, parseCommand, parseMail, parseRcpt, type MailParams } from './commands.js';
import { DataReader } from './data-reader.js';
import { normalizeIp, type RecipientPolicy } from './policy.js';
import { SaslExchange } from './sasl.js';
import type { SenderLogins } from './sender-logins.js';
import type { SubmissionUsers } from './submission-users.js';

export interface SessionContext {
  config: Config;
  enqueuer: Enqueuer;
  policy: RecipientPolicy;
  tls: SecureContext | null;
  trace: Trace;
  /** True when the spool has less free space than `min_free_space`. */
  lowOnSpace(): boolean;
  /** Observer for metrics: every reply code sent, and each message accepted. */
  onReply?(code: number): void;
  onAccepted?(queueId: string, size: number, recipients: number): void;
  /** Observer for metrics: a client connected (accepted or refused at the greeting). */
  onConnect?(): void;
  /** False once shutdown began: new transactions get 421. */
  accepting(): boolean;
  /** Users who may authenticate on submission listeners. */
  users: SubmissionUsers;
  /**
   * Failed logins by client address and by user name, across sessions:
   * record one and get how long to wait before answering it (see
   * inbound/auth-throttle).
   */
  authFailed(ip: string, user: string): number | Promise<number>;
  /** Who may send as whom once authenticated ([smtp] sender_logins); absent: anyone as anything. */
  senderLogins?: SenderLogins;
}

/** Which listener a session came in on: MX/relay, or RFC 6409 submission (AUTH required). */
export type ListenerKind = 'smtp' | 'submission';

/** Authentication failures allowed per session before it is closed. */
const MAX_AUTH_FAILURES = 3;

type Phase = 'command' | 'data' | 'closed';

let sessionCounter = 0;

export class Session {
  readonly id = (++sessionCounter).toString(36);
  private socket: Socket;
  private readonly clientIp: string;
  private input: Buffer = Buffer.alloc(0);
  private output = '';
  private phase: Phase = 'command';
  private busy = false;
  /** Discarding the rest of an over-long command line. */
  private discarding = false;
  private unknown = 0;
  private helo = '';
  private esmtp = false;
  private tlsInfo: string | null = null;
  private authenticated = false;
  /** Whether the client's address is in relay_networks, worked out at the first RCPT. */
  private relayNet: boolean | undefined = undefined;
  private authUser = '';
  /** The AUTH exchange in progress: lines go to it, not to the command parser. */
  private sasl: SaslExchange | null = null;
  private authFailures = 0;
  private idleTimer: NodeJS.Timeout | null = null;
  private mail: MailParams | null = null;
  private recipients: IncomingRecipient[] = [];
  private incoming: Incoming | null = null;
  /** A message from outside held while it arrives, for the inbound checks (checks/inbound-checks); null when not checked. */
  private held: HeldMessage | null = null;
  /** The client's DNS block-list look-ups, started at connect (checks/dnsbl); null when none apply. */
  private dnsbl: ClientListing | null = null;
  private reader: DataReader | null = null;
  private dataTimer: NodeJS.Timeout | null = null;
  private sessionTimer: NodeJS.Timeout | null = null;
  /** session_timeout has passed: the session ends at the next command boundary. */
  private overtime = false;
  /** NOOP, RSET, VRFY, EXPN, HELP since the last accepted message. */
  private junk = 0;
  private readonly idleMs: number;

  constructor(
    socket: Socket,
    private readonly ctx: SessionContext,
    private readonly onClose: () => void,
    private readonly kind: ListenerKind = 'smtp',
  ) {
    this.socket = socket;
    this.clientIp = normalizeIp(socket.remoteAddress ?? '');
    this.idleMs = ctx.config.smtp.idle_timeout;
    this.attach(socket);
  }

  private attach(socket: Socket): void {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('error', (e) => this.ctx.trace.debug({ sid: this.id, err: e.message }, 'socket error'));
    socket.on('close', () => this.closed());
  }

  /** start - greet the client (or refuse it when over a limit). */
  start(refusal: SmtpReply | null): void {
    if (refusal) {
      this.send(refusal);
      this.end();
      return;
    }
    this.dnsbl = inboundChecksFor(this.ctx.config).dnsblFor(this.clientIp, this.kind, (ip) => this.ctx.policy.inRelayNetworks(ip));
    this.send(smtpReply('greeting', this.ctx.config.hostname));
    this.flush();
    this.armIdle();
    // The whole session is bounded too: a client that sends a command just
    // inside idle_timeout, forever, is still let go after session_timeout.
    this.sessionTimer = setTimeout(() => {
      this.overtime = true;
      if (!this.busy && this.phase === 'command') this.timeout('Session time limit reached');
    }, this.ctx.config.smtp.session_timeout);
    this.sessionTimer.unref();
  }

  /**
   * armIdle - (re)start the idle timer. It is restarted only when a whole
   * command has been handled, not on every octet: a client trickling one
   * byte at a time (slow-loris) is cut off after idle_timeout all the same.
   */
  private armIdle(): void {
    // The same timer restarted (refresh) costs less than a new one per command.
    if (this.idleTimer) {
      this.idleTimer.refresh();
      return;
    }
    this.idleTimer = setTimeout(() => this.timeout('Idle timeout'), this.idleMs);
    this.idleTimer.unref();
  }

  private stopIdle(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }

  /** shutdown - Petrel is stopping: an idle session is told 421 now; a busy one after its current reply. */
  shutdown(): void {
    if (this.busy || this.phase !== 'command') return;
    this.send(smtpReply('shuttingDown', this.ctx.config.hostname));
    this.end();
  }

  private send(r: SmtpReply): void {
    this.output += wireOf(r);
    this.ctx.onReply?.(r.code);
  }

  private flush(): void {
    if (this.output && !this.socket.destroyed) this.socket.write(this.output);
    this.output = '';
  }

  /** end - flush and close after the last reply. */
  private end(): void {
    this.flush();
    this.phase = 'closed';
    const socket = this.socket;
    if (!this.tlsInfo && socket.writableLength === 0) {
      // The last reply is already with the kernel, which sends it and then the
      // FIN: close now rather than wait for the client to close first (many
      // clients reset the connection, and each reset costs an error object).
      socket.destroy();
      return;
    }
    socket.end();
    // A client that does not close its side is not allowed to hold the socket.
    setTimeout(() => socket.destroy(), 5000).unref();
  }

  private timeout(text: string): void {
    if (this.phase === 'closed') return;
    this.send(smtpReply('timeout', this.ctx.config.hostname, text));
    void this.abortData();
    this.end();
  }

  private closed(): void {
    if (this.dataTimer) clearTimeout(this.dataTimer);
    this.stopIdle();
    if (this.sessionTimer) clearTimeout(this.sessionTimer);
    this.phase = 'closed';
    void this.abortData();
    this.onClose();
  }

  private async abortData(): Promise<void> {
    const incoming = this.incoming;
    this.incoming = null;
    this.reader = null;
    void this.held?.dispose();
    this.held = null;
    if (this.dataTimer) clearTimeout(this.dataTimer);
    this.dataTimer = null;
    if (incoming) await incoming.abort().catch(() => undefined);
  }

  private receive(chunk: Buffer): void {
    if (this.phase === 'closed') return;
    this.input = this.input.length ? Buffer.concat([this.input, chunk]) : chunk;
    if (!this.busy) void this.pump();
  }

  /** pump - process buffered input in order; pauses reading while a command awaits. */
  private async pump(): Promise<void> {
    this.busy = true;
    this.socket.pause();
    try {
      while (this.input.length && this.phase !== 'closed') {
        if (this.phase === 'data') {
          await this.dataInput();
          // The message was answered: silence from here on is idle time again.
          if ((this.phase as Phase) === 'command') this.armIdle();
          continue;
        }
        const lf = this.input.indexOf(10);
        if (this.discarding) {
          if (lf < 0) {
            this.input = Buffer.alloc(0);
            break;
          }
          this.input = this.input.subarray(lf + 1);
          this.discarding = false;
          this.send(smtpReply('lineTooLong'));
          continue;
        }
        if (lf < 0) {
          const head = this.input.subarray(0, 4).toString('latin1');
          if (this.input.length > Math.min(MAX_LINE, this.input.length >= 4 ? lineLimit(head) : MAX_LINE)) {
            this.discarding = true;
            this.input = Buffer.alloc(0);
          }
          break;
        }
        const raw = this.input.subarray(0, lf + 1);
        this.input = this.input.subarray(lf + 1);
        if (raw.length > (this.sasl ? MAX_LINE : lineLimit(raw.subarray(0, 4).toString('latin1')))) {
          this.send(smtpReply('lineTooLong'));
          continue;
        }
        const line = raw.toString('utf8').replace(/\r?\n$/, '');
        if (this.sasl) await this.authResponse(line);
        else await this.command(line);
        if (this.phase === 'command') this.armIdle();
      }
    } catch (e) {
      this.ctx.trace.error({ sid: this.id, err: (e as Error).stack }, 'session failure');
      this.send(smtpReply('localError', this.ctx.config.hostname));
      void this.abortData();
      this.end();
    } finally {
      this.busy = false;
      if (this.overtime && this.phase === 'command') this.timeout('Session time limit reached');
      if (!this.ctx.accepting() && this.phase === 'command') this.shutdown();
      this.flush();
      this.resumeReading();
    }
  }

  /**
   * resumeReading - read on, but only once the client has taken our replies:
   * a client that pipelines commands and never reads would otherwise make us
   * buffer replies without bound.
   */
  private resumeReading(): void {
    if (this.phase === 'closed' || this.socket.destroyed) return;
    if (!this.socket.writableNeedDrain) return void this.socket.resume();
    const socket = this.socket;
    socket.once('drain', () => {
      if (socket === this.socket && !this.busy) this.resumeReading();
    });
  }

  private async command(line: string): Promise<void> {
    const { verb, arg } = parseCommand(line);
    switch (verb) {
      case 'EHLO':
        return this.ehlo(arg, true);
      case 'HELO':
        return this.ehlo(arg, false);
      case 'MAIL':
        return this.mailFrom(arg);
      case 'RCPT':
        return this.rcptTo(arg);
      case 'DATA':
        return this.data(arg);
      case 'QUIT':
        this.send(smtpReply('bye', this.ctx.config.hostname));
        return this.end();
      case 'RSET':
      case 'NOOP':
      case 'VRFY':
      case 'EXPN':
      case 'HELP':
        return this.junkCommand(verb);
      case 'STARTTLS':
        return this.startTls(arg);
      case 'AUTH':
        return this.auth(arg);
      case 'BDAT':
        return this.send(smtpReply('bdatNotOffered'));
      default:
        return this.unrecognized();
    }
  }

  /**
   * junkCommand - commands that move no mail. They are counted (the count
   * starts again with each accepted message) so that a client cannot hold a
   * connection open with them for ever: past max_junk_commands, 421 4.7.0.
   */
  private junkCommand(verb: 'RSET' | 'NOOP' | 'VRFY' | 'EXPN' | 'HELP'): void {
    if (++this.junk > this.ctx.config.smtp.max_junk_commands) {
      this.send(smtpReply('tooManyJunk', this.ctx.config.hostname));
      return this.end();
    }
    switch (verb) {
      case 'RSET':
        this.resetTransaction();
        return this.send(smtpReply('ok'));
      case 'NOOP':
        return this.send(smtpReply('ok'));
      case 'VRFY':
        return this.send(smtpReply('vrfy'));
      case 'EXPN':
        return this.send(smtpReply('expnNotAvailable'));
      case 'HELP':
        return this.send(smtpReply('help'));
    }
  }

  private unrecognized(): void {
    this.unknown++;
    if (this.unknown > this.ctx.config.smtp.max_unknown_commands) {
      this.send(smtpReply('tooManyUnknown', this.ctx.config.hostname));
      return this.end();
    }
    this.send(smtpReply('unrecognized'));
  }

  private resetTransaction(): void {
    this.mail = null;
    this.recipients = [];
  }

  private ehlo(arg: string, extended: boolean): void {
    const name = arg.trim();
    if (!name || /[\s\x00-\x1f\x7f]/.test(name)) return this.send(smtpReply('heloSyntax', extended ? 'EHLO' : 'HELO'));
    this.helo = name.slice(0, 255);
    this.esmtp = extended;
    this.resetTransaction();
    if (!extended) return this.send(smtpReply('helo', this.ctx.config.hostname));
    const c = this.ctx.config;
    const lines = [
      `${c.hostname} Hello ${this.helo} [${this.clientIp}]`,
      'PIPELINING',
      `SIZE ${c.smtp.max_message_size}`,
      '8BITMIME',
      'SMTPUTF8',
      'ENHANCEDSTATUSCODES',
      'DSN',
    ];
    if (this.ctx.tls && !this.tlsInfo) lines.push('STARTTLS');
    if (this.tlsInfo) lines.push('REQUIRETLS');
    if (this.authOffered()) lines.push('AUTH PLAIN LOGIN');
    lines.push(`LIMITS RCPTMAX=${c.smtp.max_recipients}`);
    lines.push('HELP');
    this.send(smtpReply('ehlo', lines));
  }

  private mailFrom(arg: string): void {
    if (!this.helo) return this.send(smtpReply('needHelo'));
    if (this.mail) return this.send(smtpReply('nestedMail'));
    if (this.kind === 'submission' && !this.authenticated) {
      return this.send(smtpReply(this.tlsInfo ? 'authRequired' : 'starttlsFirst'));
    }
    if (!this.ctx.accepting()) {
      this.send(smtpReply('shuttingDownAtMail', this.ctx.config.hostname));
      return this.end();
    }
    const parsed = parseMail(arg, { dsn: this.esmtp, smtputf8: this.esmtp, requireTls: this.tlsInfo !== null });
    if ('error' in parsed) return this.send(parsed.error);
    const p = parsed.ok;
    if (!this.esmtp && (p.size !== null || p.body !== null || p.requireTls)) return this.send(smtpReply('parametersNeedEhlo'));
    // reject_sender_login_mismatch: a login sends only as the addresses it owns.
    if (this.authenticated && this.ctx.senderLogins && !this.ctx.senderLogins.mayUse(this.authUser, p.sender)) {
      this.ctx.trace.info({ sid: this.id, user: this.authUser, sender: p.sender }, 'sender not owned by the login');
      return this.send(smtpReply('senderNotOwned', p.sender, this.authUser));
    }
    if (p.size !== null && p.size > this.ctx.config.smtp.max_message_size) {
      return this.send(smtpReply('sizeDeclared', this.ctx.config.smtp.max_message_size));
    }
    if (this.ctx.lowOnSpace()) return this.send(smtpReply('storageFull'));
    this.mail = p;
    this.recipients = [];
    this.send(smtpReply('senderOk'));
  }

  private async rcptTo(arg: string): Promise<void> {
    if (!this.mail) return this.send(smtpReply('needMail'));
    const parsed = parseRcpt(arg, { dsn: this.esmtp }, this.mail.smtputf8);
    if ('error' in parsed) return this.send(parsed.error);
    const p = parsed.ok;
    if (this.recipients.length >= this.ctx.config.smtp.max_recipients) return this.send(smtpReply('tooManyRecipients'));
    let address = p.address;
    if (/^postmaster$/i.test(address)) address = `postmaster@${this.ctx.config.local.domains[0] ?? this.ctx.config.hostname}`;
    else address = address.slice(0, address.lastIndexOf('@') + 1) + address.slice(address.lastIndexOf('@') + 1).toLowerCase();
    if (!this.mail.smtputf8 && hasNonAscii(address)) return this.send(smtpReply('needsSmtputf8'));
    this.relayNet ??= this.ctx.policy.inRelayNetworks(this.clientIp);
    const refusal = this.ctx.policy.check(address, { clientIp: this.clientIp, authenticated: this.authenticated, inRelayNetworks: this.relayNet });
    if (refusal) return this.send(refusal);
    const listed = this.dnsbl && !this.authenticated ? await this.dnsbl.listed() : null;
    if (listed) {
      this.ctx.trace.info({ sid: this.id, ip: this.clientIp, list: listed, sender: this.mail.sender, recipient: address }, 'client on a block list');
      return this.send(smtpReply('dnsblListed', this.clientIp, listed));
    }
    const unverified = this.ctx.config.routes.length ? await inboundChecksFor(this.ctx.config).verifyRecipient(address) : null;
    if (unverified) return this.send(unverified);
    this.recipients.push({ address, orcpt: p.orcpt, notify: p.notify });
    this.send(smtpReply('recipientOk'));
  }

  private data(arg: string): void {
    if (arg.trim()) return this.send(smtpReply('dataParameters'));
    if (!this.mail) return this.send(smtpReply('dataNeedsMail'));
    if (this.recipients.length === 0) return this.send(smtpReply('noValidRecipients'));
    const c = this.ctx.config;
    this.incoming = this.ctx.enqueuer.begin({
      sender: this.mail.sender,
      recipients: this.recipients,
      smtputf8: this.mail.smtputf8,
      eightBit: this.mail.body === '8BITMIME',
      ret: this.mail.ret,
      envid: this.mail.envid,
      requireTls: this.mail.requireTls,
      client: `${this.helo} [${this.clientIp}]${this.authenticated ? ` (authenticated as ${this.authUser})` : ''}`,
      received: { helo: this.helo, ip: this.clientIp, esmtp: this.esmtp, tls: this.tlsInfo, auth: this.authenticated },
      fixups: this.kind === 'submission',
      isReport: false,
      maxSize: c.smtp.max_message_size,
      maxReceived: c.dsn.max_received_headers,
      maxHeaderSize: c.smtp.max_header_size,
      // DKIM: our senders' mail (submission, relay_networks) is signed when its From: domain has a key; mail from outside never.
      sign: this.authenticated || (this.relayNet ?? this.ctx.policy.inRelayNetworks(this.clientIp)),
    });
    for (const e of this.dnsbl?.errors() ?? []) this.incoming.addEvent('dnsbl_error', e);
    const checks = inboundChecksFor(c);
    this.held = checks.applies({ kind: this.kind, inRelayNetworks: this.relayNet ?? false, authenticated: this.authenticated }) ? checks.hold() : null;
    this.reader = new DataReader();
    this.phase = 'data';
    this.stopIdle();
    this.dataTimer = setTimeout(() => this.timeout('Timeout during DATA'), c.smtp.data_timeout);
    this.dataTimer.unref();
    this.send(smtpReply('startData'));
    // The 354 must reach the client before it sends the message.
    this.flush();
  }

  /** dataInput - feed buffered input to the data reader; at the end, commit and answer. */
  private async dataInput(): Promise<void> {
    const reader = this.reader!;
    const incoming = this.incoming!;
    const chunk = this.input;
    this.input = Buffer.alloc(0);
    const r = reader.push(chunk);
    if (r.data.length) await (this.held ?? incoming).write(r.data);
    if (!r.done) return;
    this.input = r.rest;
    if (this.dataTimer) clearTimeout(this.dataTimer);
    this.dataTimer = null;
    this.incoming = null;
    this.reader = null;
    this.phase = 'command';
    const recipients = this.recipients.length;
    const sender = this.mail?.sender ?? '';
    const rcpts = this.recipients.map((r) => r.address);
    this.resetTransaction();
    const held = this.held;
    this.held = null;
    if (held) {
      // The inbound checks decide; an accepted message is written into incoming with their results.
      const checked = await inboundChecksFor(this.ctx.config).finish(held, incoming, { ip: this.clientIp, helo: this.helo, sender, recipients: rcpts });
      this.ctx.trace.info({ sid: this.id, checks: checked.summary }, 'inbound checks');
      if (checked.refusal) {
        await incoming.abort().catch(() => undefined);
        return this.send(checked.refusal);
      }
    }
    try {
      const done = await incoming.commit();
      this.junk = 0;
      this.ctx.onAccepted?.(done.queueId, done.size, recipients);
      this.send(smtpReply('queued', done.queueId));
    } catch (e) {
      if (e instanceof EnqueueRejected) {
        this.ctx.trace.info({ sid: this.id, reply: e.message }, 'message not accepted');
        this.send(e.reply);
      } else throw e;
    }
  }

  private startTls(arg: string): void {
    if (arg.trim()) return this.send(smtpReply('starttlsParameters'));
    if (!this.ctx.tls) return this.send(smtpReply('starttlsNotAvailable'));
    if (this.tlsInfo) return this.send(smtpReply('tlsActive'));
    this.send(smtpReply('tlsReady'));
    this.flush();
    // RFC 3207 §4.2 / CVE-2011-0411: nothing sent in clear after STARTTLS is used.
    this.input = Buffer.alloc(0);
    const plain = this.socket;
    plain.removeAllListeners('data');
    plain.removeAllListeners('close');
    plain.removeAllListeners('timeout');
    this.busy = true;
    const secure = new TLSSocket(plain, { isServer: true, secureContext: this.ctx.tls });
    secure.once('secure', () => {
      const cipher = secure.getCipher();
      this.tlsInfo = `using ${secure.getProtocol() ?? 'TLS'} with cipher ${cipher?.name ?? 'unknown'}`;
      // RFC 3207 §4.2: forget everything learnt before TLS.
      this.helo = '';
      this.esmtp = false;
      this.resetTransaction();
      this.busy = false;
      if (this.input.length) void this.pump();
    });
    secure.on('error', (e) => {
      this.ctx.trace.debug({ sid: this.id, err: e.message }, 'TLS handshake failed');
      secure.destroy();
    });
    this.socket = secure;
    this.attach(secure);
  }

  /** authOffered - AUTH is offered on submission listeners, and only once TLS is active (RFC 4954 §4, RFC 6409). */
  private authOffered(): boolean {
    return this.kind === 'submission' && this.tlsInfo !== null && this.ctx.users.configured && !this.authenticated;
  }

  private auth(arg: string): void | Promise<void> {
    if (this.kind !== 'submission') return this.send(smtpReply('authNotHere'));
    if (!this.esmtp) return this.send(smtpReply('authNeedsEhlo'));
    if (this.authenticated) return this.send(smtpReply('authDone'));
    if (this.mail) return this.send(smtpReply('authInTransaction'));
    if (!this.tlsInfo) return this.send(smtpReply('encryptionRequired'));
    if (!this.ctx.users.configured) return this.send(smtpReply('authNoUsers'));
    const { exchange, step } = SaslExchange.begin(arg);
    this.sasl = exchange;
    return this.authStep(step);
  }

  /** authResponse - one client line of an AUTH exchange (RFC 4954 §4). */
  private authResponse(line: string): Promise<void> | void {
    return this.authStep(this.sasl!.respond(line));
  }

  /** authStep - act on a step of the SASL exchange: challenge, refusal, or credentials to check. */
  private async authStep(step: ReturnType<SaslExchange['respond']>): Promise<void> {
    if (step.kind === 'challenge') return this.send(step.reply);
    this.sasl = null;
    if (step.kind === 'refused') return this.send(step.reply);
    const { user, password } = step;
    const ok = await this.ctx.users.check(user, password);
    if (ok) {
      this.authenticated = true;
      this.authUser = user;
      this.ctx.trace.info({ sid: this.id, user, ip: this.clientIp }, 'authenticated');
      return this.send(smtpReply('authOk'));
    }
    this.authFailures++;
    // Slow down guessing: each failure from the same address, or for the same
    // user name (in this session or any other lately), waits longer before its answer.
    const wait = await this.ctx.authFailed(this.clientIp, user);
    this.ctx.trace.warn({ sid: this.id, user: user.slice(0, 64), ip: this.clientIp, failures: this.authFailures, wait_ms: wait }, 'authentication failed');
    await new Promise((r) => setTimeout(r, wait));
    if (this.phase === 'closed') return;
    if (this.authFailures >= MAX_AUTH_FAILURES) {
      this.send(smtpReply('tooManyAuthFailures', this.ctx.config.hostname));
      return this.end();
    }
    this.send(smtpReply('authInvalid'));
  }
}
