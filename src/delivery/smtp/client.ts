/*
 * delivery/smtp/client - SmtpClient: one SMTP or LMTP connection to one host.
 *
 * Hand-written on purpose. No well-kept Node client does what Petrel's
 * delivery promise needs: re-send recipients refused with 452 (or 552 to RCPT)
 * in a further transaction on the same connection, and match pipelined replies
 * to their commands one by one so every recipient gets its own outcome.
 * nodemailer's smtp-connection, the best of them, treats a refused RCPT as an
 * error of the whole message. This client only speaks the protocol and returns
 * every reply; deciding what a reply means for a recipient is session.ts's job.
 *
 * Invariants:
 * - replies are matched to commands strictly in order (RFC 2920 §3.1); a reply
 *   that cannot be parsed ends the connection (it could not be matched);
 * - with PIPELINING, [RSET,] MAIL, every RCPT and DATA leave in one write;
 *   without it, one command at a time, and DATA only after an accepted RCPT;
 * - the body is streamed (DotEncoder, one chunk at a time, with backpressure),
 *   never buffered whole; the final dot is sent only after the whole body was
 *   read without error: a body that fails to read mid-DATA ends the connection,
 *   so a truncated message is never delivered. A body already in memory
 *   (WholeBody) that is its own wire form (wireReady) is written as it is with
 *   the dot, in one corked write;
 * - every wait for a reply has a timeout (RFC 5321 §4.5.3.2 defaults);
 * - a failed connection fails every later call at once (no half-state).
 *
 * Untrusted input: everything the peer sends (reply lines are capped in length
 * and number and sanitised by ReplyParser).
 *
 * RFCs: 5321, 2920 (PIPELINING), 3207 (STARTTLS), 2033 (LMTP), 1870, 6152,
 * 6531, 3461 (the parameters are built by the caller, see envelope.ts).
 */
import { connect as netConnect, isIP, type Socket } from 'node:net';
import { connect as tlsConnect, type SecureContext, type TLSSocket } from 'node:tls';
import type { Readable } from 'node:stream';
import { ReplyParser, replyText, type SmtpReply } from '../../core/smtp-reply.js';
import { NO_CAPABILITIES, parseCapabilities, type Capabilities } from './capabilities.js';
import { DATA_END, DotEncoder, wireReady } from './body.js';
import { WholeBody } from '../agent.js';
import { socketFailure } from './failure-text.js';
import { checkPeer, type DaneMatcher, type TlsaRecord } from '../tls/cert-check.js';
import { verifies } from '../tls/policy.js';
import type { HostTlsPolicy, TlsOutcome, TlsPolicyFailure } from '../tls/outcome.js';

/** Per-phase timeouts in milliseconds (RFC 5321 §4.5.3.2 where it gives one). */
export interface SmtpTimeouts {
  connect: number;
  greeting: number;
  helo: number;
  starttls: number;
  mail: number;
  rcpt: number;
  data: number;
  dataBlock: number;
  dataEnd: number;
  rset: number;
  quit: number;
}

export const RFC5321_TIMEOUTS: SmtpTimeouts = {
  connect: 30_000,
  greeting: 300_000,
  helo: 300_000,
  starttls: 300_000,
  mail: 300_000,
  rcpt: 300_000,
  data: 120_000,
  dataBlock: 180_000,
  dataEnd: 600_000,
  rset: 300_000,
  quit: 10_000,
};

export interface SmtpClientOptions {
  /** IP address to connect to (or a name the system resolver knows), with port. */
  host?: string;
  port?: number;
  /** Unix socket path (LMTP), instead of host and port. */
  path?: string;
  /** Name of the host for logs and TLS SNI ("mx1.example.com"); defaults to host. */
  hostname?: string;
  /** Speak LMTP (LHLO, one reply per recipient after the data). */
  lmtp?: boolean;
  /** Our name in EHLO/LHLO/HELO. */
  heloName: string;
  /** Local address to bind ([delivery] source_ipv4 / source_ipv6, see source.ts); the system chooses when absent. */
  localAddress?: string;
  /**
   * "opportunistic": STARTTLS whenever offered; "required": fail (4.7.x) when
   * not offered or the handshake fails; "none": never (tests, local sockets).
   */
  tls?: 'opportunistic' | 'required' | 'none';
  /**
   * The policy this host must meet (delivery/tls/policy) and what to check it
   * with. Without it the certificate is not checked (LMTP, tests): the
   * outcome says policy "opportunistic", not verified.
   */
  tlsCheck?: { policy: HostTlsPolicy; context: () => SecureContext; tlsa?: TlsaRecord[]; matches?: DaneMatcher };
  timeouts?: Partial<SmtpTimeouts>;
}

export type ClientErrorKind = 'connect' | 'greeting' | 'helo' | 'tls' | 'timeout' | 'lost' | 'protocol' | 'body';

/** ClientError - a failure to use the connection; `status` is the RFC 3463 code to report. */
export class ClientError extends Error {
  /** Who we were talking to, when known ("mx1.example.com [192.0.2.1]:25"). */
  remote = '';
  /** The TLS policy check that failed (kind 'tls'), for the event, the DSN and TLS reports. */
  tlsFailure: TlsPolicyFailure | null = null;
  /** kind 'tls': the TLS the connection had when the policy check failed (null: none was set up). */
  tls: TlsOutcome | null = null;
  constructor(
    readonly kind: ClientErrorKind,
    readonly status: string,
    message: string,
    /** The remote reply behind the error (greeting 421, a refused EHLO), when there was one. */
    readonly reply: SmtpReply | null = null,
    override readonly cause?: unknown,
  ) {
    super(message);
    this.name = 'ClientError';
  }
}

/** One transaction to send. Parameters are pre-built (" SIZE=123 BODY=8BITMIME"), with their leading space. */
export interface TransactionRequest {
  sender: string;
  mailParams: string;
  recipients: { address: string; params: string }[];
  /** The stored message, opened; destroyed by the client when not used. */
  body: Readable;
}

/** Every reply of one transaction; null where none was received. */
export interface TransactionResult {
  mail: SmtpReply | null;
  rcpt: (SmtpReply | null)[];
  /** Reply to DATA (354 expected); null when DATA was not sent or not answered. */
  data: SmtpReply | null;
  /** After the final dot: one reply (SMTP), or one per accepted recipient in order (LMTP). */
  final: SmtpReply[];
  /** The final dot was written (a missing final reply then means "possible duplicate"). */
  dotSent: boolean;
  /** The connection failed during the transaction (or the body could not be read). */
  error: ClientError | null;
  /** No reply at all was received in this transaction (a stale reused connection). */
  noReply: boolean;
}

/** Longest reply line we accept, and most lines in one reply (a peer cannot make us buffer without end). */
const MAX_REPLY_LINE = 4096;
const MAX_REPLY_LINES = 200;

type Waiter = { resolve: (r: SmtpReply) => void; reject: (e: ClientError) => void };
type DrainWaiter = { resolve: () => void; reject: (e: ClientError) => void };

export class SmtpClient {
  readonly options: SmtpClientOptions;
  readonly timeouts: SmtpTimeouts;
  /** "mx1.example.com [127.0.0.2]" or "lmtp:/run/dovecot/lmtp". */
  readonly remote: string;
  capabilities: Capabilities = NO_CAPABILITIES;
  /** True once STARTTLS succeeded. */
  secure = false;
  /** What the TLS of this connection is (null: plain text). */
  tlsOutcome: TlsOutcome | null = null;
  /** A policy check that failed without being enforced (MTA-STS testing): recorded, mail goes on. */
  tlsNote: TlsPolicyFailure | null = null;
  /** A recipient limit learned from this peer's 452/552 replies (session.ts); null until seen. */
  learnedRcptMax: number | null = null;
  /** Transactions begun on this connection. */
  transactions = 0;
  /** Called once when the connection ends, whatever the reason. */
  onClose: (() => void) | null = null;

  private socket: Socket | TLSSocket | null = null;
  private parser = new ReplyParser();
  private partial = '';
  private replyLines = 0;
  private queue: SmtpReply[] = [];
  private qHead = 0;
  private waiter: Waiter | null = null;
  private drainWaiter: DrainWaiter | null = null;
  private failure: ClientError | null = null;
  private currentTimeout = -1;
  private phase = 'connect';
  private closed = false;
  /** The peer answered 421: it is closing the channel (RFC 5321 §3.8); no further transaction here. */
  private peerClosing = false;
  /** The last transaction did not end cleanly; the next one starts with RSET. */
  private needRset = false;

  constructor(options: SmtpClientOptions) {
    this.options = options;
    this.timeouts = { ...RFC5321_TIMEOUTS, ...options.timeouts };
    const name = options.hostname ?? options.host ?? '';
    this.remote = options.path ? `${options.lmtp ? 'lmtp' : 'smtp'}:${options.path}` : `${name} [${options.host}]${options.port ? `:${options.port}` : ''}`;
  }

  /** usable - the connection is up and between transactions. */
  get usable(): boolean {
    return !this.closed && this.failure === null && !this.peerClosing;
  }

  /** connect - TCP/unix connect, greeting, EHLO/LHLO (HELO fallback), STARTTLS when offered; throws ClientError. */
  async connect(): Promise<void> {
    try {
      await this.open();
    } catch (e) {
      this.destroy();
      const err = e instanceof ClientError ? e : new ClientError('protocol', '4.5.0', String((e as Error)?.message ?? e), null, e);
      if (!err.remote) err.remote = this.remote;
      throw err;
    }
  }

  /** open - the steps of connect(). */
  private async open(): Promise<void> {
    const o = this.options;
    const where = o.path ?? `${o.hostname ?? o.host}[${o.host}]:${o.port}`;
    const socket = await this.openSocket(where);
    this.attach(socket);

    this.phase = 'greeting';
    const greeting = await this.read(this.timeouts.greeting);
    if (greeting.code !== 220) {
      this.quitQuietly();
      throw new ClientError('greeting', temporaryStatus(greeting), `host ${where} refused to talk to us: ${replyText(greeting)}`, greeting);
    }
    await this.hello(where);

    const tlsMode = o.tls ?? 'opportunistic';
    const policy = o.tlsCheck?.policy;
    if (tlsMode !== 'none' && this.capabilities.starttls) {
      await this.startTls(where);
      await this.hello(where);
    } else if (policy && verifies(policy)) {
      this.quitQuietly();
      throw policyError(policy, 'starttls-not-supported', `host ${where} does not offer STARTTLS`);
    } else if (tlsMode === 'required' || policy?.enforce) {
      this.quitQuietly();
      const e = new ClientError('tls', '4.7.4', `TLS is required, but host ${where} does not offer STARTTLS`);
      if (policy) e.tlsFailure = { policy: policy.kind, policyDomain: policy.domain, type: 'starttls-not-supported', detail: e.message };
      throw e;
    } else if (policy && !policy.enforce && policy.kind !== 'opportunistic') {
      this.tlsNote = { policy: policy.kind, policyDomain: policy.domain, type: 'starttls-not-supported', detail: `host ${where} does not offer STARTTLS` };
    }
    this.phase = 'idle';
    this.setTimeout(0);
  }

  /** transaction - one MAIL/RCPT.../DATA/body exchange; never throws, the result says what happened. */
  async transaction(req: TransactionRequest): Promise<TransactionResult> {
    const res: TransactionResult = {
      mail: null,
      rcpt: req.recipients.map(() => null),
      data: null,
      final: [],
      dotSent: false,
      error: null,
      noReply: true,
    };
    let bodyUsed = false;
    try {
      if (this.failure) throw this.failure;
      this.transactions++;
      const rset = this.transactions > 1 || this.needRset;
      this.needRset = true;
      const mailCmd = `MAIL FROM:<${req.sender}>${req.mailParams}`;
      const rcptCmds = req.recipients.map((r) => `RCPT TO:<${r.address}>${r.params}`);
      let accepted = 0;

      if (this.capabilities.pipelining) {
        // RFC 2920: the whole batch in one write, DATA last; replies in order.
        const lines = rset ? ['RSET', mailCmd, ...rcptCmds, 'DATA'] : [mailCmd, ...rcptCmds, 'DATA'];
        this.writeNow(lines.join('\r\n') + '\r\n');
        if (rset) {
          this.phase = 'RSET';
          await this.read(this.timeouts.rset);
          res.noReply = false;
        }
        this.phase = 'MAIL FROM';
        res.mail = await this.read(this.timeouts.mail);
        res.noReply = false;
        this.phase = 'RCPT TO';
        for (let i = 0; i < rcptCmds.length; i++) {
          const r = await this.read(this.timeouts.rcpt);
          res.rcpt[i] = r;
          if (r.code >= 200 && r.code < 300) accepted++;
        }
        this.phase = 'DATA';
        res.data = await this.read(this.timeouts.data);
        if (res.data.code === 354 && (accepted === 0 || !isOk(res.mail))) {
          // RFC 2920 §3.1: DATA went out with the batch but nothing may be sent; end it empty.
          this.writeNow('.\r\n');
          res.data = null;
          if (this.options.lmtp) {
            // How many replies an LMTP server gives to an empty transaction is not defined: stop here.
            this.fail(new ClientError('protocol', '4.5.0', 'LMTP server accepted DATA with no recipient; connection closed'));
            this.destroy();
          } else {
            this.phase = 'end of empty data';
            await this.read(this.timeouts.dataEnd);
          }
          return res;
        }
      } else {
        if (rset) {
          this.phase = 'RSET';
          await this.command('RSET', this.timeouts.rset);
          res.noReply = false;
        }
        this.phase = 'MAIL FROM';
        res.mail = await this.command(mailCmd, this.timeouts.mail);
        res.noReply = false;
        if (!isOk(res.mail)) return res;
        this.phase = 'RCPT TO';
        for (let i = 0; i < rcptCmds.length; i++) {
          const r = await this.command(rcptCmds[i]!, this.timeouts.rcpt);
          res.rcpt[i] = r;
          if (r.code >= 200 && r.code < 300) accepted++;
        }
        if (accepted === 0) return res;
        this.phase = 'DATA';
        res.data = await this.command('DATA', this.timeouts.data);
      }
      if (res.data.code !== 354) return res;

      this.phase = 'message content';
      bodyUsed = true;
      await this.sendBody(req.body);
      res.dotSent = true;
      this.phase = 'end of data';
      const replies = this.options.lmtp ? accepted : 1;
      for (let i = 0; i < replies; i++) res.final.push(await this.read(this.timeouts.dataEnd));
      this.needRset = false;
      this.setTimeout(0);
      this.phase = 'idle';
    } catch (e) {
      res.error = e instanceof ClientError ? e : new ClientError('protocol', '4.5.0', String((e as Error)?.message ?? e), null, e);
    } finally {
      if (!bodyUsed) req.body.destroy();
    }
    return res;
  }

  /** quit - polite QUIT, waiting briefly for 221; always ends the connection. */
  async quit(): Promise<void> {
    if (this.closed) return;
    if (!this.failure) {
      try {
        this.phase = 'QUIT';
        await this.command('QUIT', this.timeouts.quit);
      } catch {
        // The peer may close first; nothing depends on its 221.
      }
    }
    this.destroy();
  }

  /** destroy - end the connection now. */
  destroy(): void {
    this.fail(new ClientError('lost', '4.4.2', `connection to ${this.remote} closed`));
    this.socket?.destroy();
    this.markClosed();
  }

  /** openSocket - TCP or unix connect with the connect timeout. */
  private openSocket(where: string): Promise<Socket> {
    const o = this.options;
    return new Promise((resolve, reject) => {
      const socket = o.path ? netConnect({ path: o.path }) : netConnect({ host: o.host!, port: o.port ?? 25, ...(o.localAddress ? { localAddress: o.localAddress } : {}) });
      socket.setNoDelay(true);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new ClientError('connect', '4.4.1', `connect to ${where}: timed out after ${this.timeouts.connect} ms`));
      }, this.timeouts.connect);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(socket);
      });
      socket.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        socket.destroy();
        // Name the bound source (source.ts): an address gone from the machine fails here, and must say so.
        const from = o.localAddress ? ` from ${o.localAddress}` : '';
        reject(new ClientError('connect', '4.4.1', `connect to ${where}${from}: ${socketFailure(err)}`, null, err));
      });
    });
  }

  /** hello - EHLO (or LHLO); HELO when EHLO is refused (SMTP only). */
  private async hello(where: string): Promise<void> {
    this.phase = this.options.lmtp ? 'LHLO' : 'EHLO';
    const verb = this.options.lmtp ? 'LHLO' : 'EHLO';
    const r = await this.command(`${verb} ${this.options.heloName}`, this.timeouts.helo);
    if (r.code === 250) {
      this.capabilities = parseCapabilities(r);
      return;
    }
    if (!this.options.lmtp && r.code >= 500 && r.code !== 554) {
      this.phase = 'HELO';
      const h = await this.command(`HELO ${this.options.heloName}`, this.timeouts.helo);
      if (h.code === 250) {
        this.capabilities = NO_CAPABILITIES;
        return;
      }
      this.quitQuietly();
      throw new ClientError('helo', temporaryStatus(h), `host ${where} refused HELO: ${replyText(h)}`, h);
    }
    this.quitQuietly();
    throw new ClientError('helo', temporaryStatus(r), `host ${where} refused ${verb}: ${replyText(r)}`, r);
  }

  /** startTls - STARTTLS, then the TLS handshake on the same socket (no certificate check: opportunistic). */
  private async startTls(where: string): Promise<void> {
    this.phase = 'STARTTLS';
    const r = await this.command('STARTTLS', this.timeouts.starttls);
    if (r.code !== 220) {
      this.quitQuietly();
      const e = new ClientError('tls', '4.7.5', `host ${where} refused STARTTLS: ${replyText(r)}`, r);
      const policy = this.options.tlsCheck?.policy;
      if (policy && policy.kind !== 'opportunistic') e.tlsFailure = { policy: policy.kind, policyDomain: policy.domain, type: 'starttls-not-supported', detail: e.message };
      throw e;
    }
    const plain = this.socket as Socket;
    this.detach(plain);
    const name = this.options.hostname;
    const check = this.options.tlsCheck;
    const secure = await new Promise<TLSSocket>((resolve, reject) => {
      const s = tlsConnect({
        socket: plain,
        // Never refused by OpenSSL itself: the verdict is checked after the handshake (tls/cert-check),
        // against the policy, so that it can be recorded, and enforced only where the policy says.
        rejectUnauthorized: false,
        // `authorized` then speaks for the chain only; the names are checked against the policy's (cert-check).
        ...(check ? { secureContext: check.context(), checkServerIdentity: () => undefined } : {}),
        ...(name && isIP(name) === 0 ? { servername: name.replace(/\.$/, '') } : {}),
      });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new ClientError('tls', '4.7.5', `TLS handshake with ${where} timed out`));
      }, this.timeouts.starttls);
      const onClose = (): void => {
        clearTimeout(timer);
        reject(new ClientError('tls', '4.7.5', `TLS handshake with ${where} failed: connection closed`));
      };
      s.once('close', onClose);
      s.once('secureConnect', () => {
        clearTimeout(timer);
        s.removeAllListeners('error');
        s.removeListener('close', onClose);
        resolve(s);
      });
      s.once('error', (err) => {
        clearTimeout(timer);
        s.destroy();
        reject(new ClientError('tls', '4.7.5', `TLS handshake with ${where} failed: ${err.message}`, null, err));
      });
    }).catch((e: ClientError) => {
      const policy = check?.policy;
      if (policy && policy.kind !== 'opportunistic') e.tlsFailure = { policy: policy.kind, policyDomain: policy.domain, type: 'validation-failure', detail: e.message };
      this.fail(e);
      this.markClosed();
      throw e;
    });
    this.secure = true;
    this.attach(secure);
    const cipher = secure.getCipher();
    const outcome: TlsOutcome = {
      version: secure.getProtocol() ?? 'unknown',
      cipher: cipher?.standardName ?? cipher?.name ?? 'unknown',
      verified: false,
      policy: check?.policy.kind ?? 'opportunistic',
      policyDomain: check?.policy.domain ?? '',
    };
    this.tlsOutcome = outcome;
    // Only a policy that authenticates checks the certificate: `verified` then means what REQUIRETLS
    // (require-tls.ts) and TLS reports read it as; opportunistic and required stay unverified.
    if (!check || check.policy.kind === 'opportunistic' || check.policy.kind === 'required') return;
    const verdict = checkPeer(secure, check.policy, check.tlsa, check.matches);
    outcome.verified = verdict.verified;
    if (!verdict.failure) return;
    if (!verifies(check.policy)) {
      this.tlsNote = verdict.failure;
      return;
    }
    this.quitQuietly();
    const e = policyError(check.policy, verdict.failure.type, `host ${where}: ${verdict.failure.detail}`);
    e.tls = outcome;
    throw e;
  }

  /** sendBody - stream the message through the DotEncoder, then the final dot; one write for small messages. */
  private async sendBody(body: Readable): Promise<void> {
    this.setTimeout(this.timeouts.dataBlock);
    if (body instanceof WholeBody && wireReady(body.whole)) {
      // Already in wire form (the common case): as it is, then the dot, in one write.
      if (this.failure) throw this.failure;
      const socket = this.socket!;
      socket.cork();
      socket.write(body.whole);
      const drained = this.write(DATA_END);
      socket.uncork();
      body.destroy();
      await drained;
      return;
    }
    const enc = new DotEncoder();
    let prev: Buffer | null = null;
    try {
      for await (const chunk of body) {
        const out = enc.encode(typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer));
        if (out.length === 0) continue;
        if (prev) await this.write(prev);
        prev = out;
      }
    } catch (e) {
      if (e instanceof ClientError) throw e;
      // The connection is mid-DATA: the only safe end is to drop it (never send the dot).
      const err = new ClientError('body', '4.3.0', `stored message could not be read: ${(e as Error)?.message ?? e}`, null, e);
      this.fail(err);
      this.destroy();
      throw err;
    }
    const tail = enc.end();
    await this.write(prev ? Buffer.concat([prev, tail]) : tail);
  }

  /** command - write one line and read its reply. */
  private command(line: string, timeout: number): Promise<SmtpReply> {
    if (this.failure) return Promise.reject(this.failure);
    this.writeNow(line + '\r\n');
    return this.read(timeout);
  }

  /** writeNow - queue bytes on the socket without waiting for drain (commands are small). */
  private writeNow(data: string | Buffer): void {
    if (this.failure) throw this.failure;
    this.socket!.write(data);
  }

  /** write - write and wait for the socket to drain when it asks us to (backpressure). */
  private write(data: Buffer): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.socket!.write(data)) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.drainWaiter = { resolve, reject };
    });
  }

  /** read - the next reply, within `timeout` ms of socket inactivity. */
  private read(timeout: number): Promise<SmtpReply> {
    if (this.qHead < this.queue.length) {
      const r = this.queue[this.qHead++]!;
      if (this.qHead === this.queue.length) {
        this.queue = [];
        this.qHead = 0;
      }
      return Promise.resolve(r);
    }
    if (this.failure) return Promise.reject(this.failure);
    this.setTimeout(timeout);
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  /** setTimeout - arm the socket's inactivity timer for the current phase (0: none). */
  private setTimeout(ms: number): void {
    if (ms !== this.currentTimeout && this.socket) {
      this.currentTimeout = ms;
      this.socket.setTimeout(ms);
    }
  }

  /** onData - split what arrives into lines and lines into replies; any protocol violation ends the connection. */
  private readonly onData = (chunk: string): void => {
    let text = this.partial + chunk;
    let nl: number;
    try {
      while ((nl = text.indexOf('\n')) >= 0) {
        let line = text.slice(0, nl);
        text = text.slice(nl + 1);
        if (line.endsWith('\r')) line = line.slice(0, -1);
        if (++this.replyLines > MAX_REPLY_LINES) throw new Error(`reply longer than ${MAX_REPLY_LINES} lines`);
        const reply = this.parser.push(line);
        if (reply) {
          this.replyLines = 0;
          this.deliverReply(reply);
        }
      }
      if (text.length > MAX_REPLY_LINE) throw new Error(`reply line longer than ${MAX_REPLY_LINE} octets`);
      this.partial = text;
    } catch (e) {
      this.partial = '';
      this.fail(new ClientError('protocol', '4.5.0', `protocol error from ${this.remote} in ${this.phase}: ${(e as Error).message}`));
      this.destroy();
    }
  };

  /** deliverReply - hand a complete reply to the reader waiting for it, or queue it (pipelining). */
  private deliverReply(reply: SmtpReply): void {
    if (reply.code === 421) this.peerClosing = true;
    const w = this.waiter;
    if (w) {
      this.waiter = null;
      w.resolve(reply);
    } else {
      this.queue.push(reply);
    }
  }

  private readonly onTimeout = (): void => {
    if (this.currentTimeout <= 0) return;
    this.fail(new ClientError('timeout', '4.4.2', `conversation with ${this.remote} timed out in ${this.phase} (${this.currentTimeout} ms)`));
    this.destroy();
  };

  private readonly onError = (err: Error): void => {
    this.fail(new ClientError('lost', '4.4.2', `lost connection with ${this.remote} in ${this.phase}: ${socketFailure(err)}`, null, err));
  };

  private readonly onEnd = (): void => {
    this.fail(new ClientError('lost', '4.4.2', `lost connection with ${this.remote} in ${this.phase}`));
  };

  private readonly onSocketClose = (): void => {
    this.fail(new ClientError('lost', '4.4.2', `lost connection with ${this.remote} in ${this.phase}`));
    this.markClosed();
  };

  private readonly onDrain = (): void => {
    const d = this.drainWaiter;
    this.drainWaiter = null;
    d?.resolve();
  };

  /** fail - record the first failure and reject whoever waits; later reads fail at once. */
  private fail(err: ClientError): void {
    if (this.failure) return;
    // Replies already received stay readable (a 421 before the close is still a reply).
    this.failure = err;
    const w = this.waiter;
    this.waiter = null;
    w?.reject(err);
    const d = this.drainWaiter;
    this.drainWaiter = null;
    d?.reject(err);
  }

  /** markClosed - note the end of the connection once and tell the pool. */
  private markClosed(): void {
    if (this.closed) return;
    this.closed = true;
    const cb = this.onClose;
    this.onClose = null;
    cb?.();
  }

  /** attach - read replies from this socket (the plain one, then the TLS one). */
  private attach(socket: Socket | TLSSocket): void {
    this.socket = socket;
    this.partial = '';
    this.currentTimeout = -1;
    socket.setEncoding('utf8');
    socket.on('data', this.onData);
    socket.on('timeout', this.onTimeout);
    socket.on('error', this.onError);
    socket.on('end', this.onEnd);
    socket.on('close', this.onSocketClose);
    socket.on('drain', this.onDrain);
  }

  /** detach - stop reading a socket (before it is wrapped in TLS). */
  private detach(socket: Socket | TLSSocket): void {
    socket.setTimeout(0);
    socket.removeListener('data', this.onData);
    socket.removeListener('timeout', this.onTimeout);
    socket.removeListener('error', this.onError);
    socket.removeListener('end', this.onEnd);
    socket.removeListener('close', this.onSocketClose);
    socket.removeListener('drain', this.onDrain);
  }

  /** quitQuietly - say QUIT without waiting, then close (after a refusal at greeting or EHLO). */
  private quitQuietly(): void {
    try {
      if (!this.failure) this.socket?.end('QUIT\r\n');
    } catch {
      // closing anyway
    }
    this.destroy();
  }
}

/** policyError - a TLS policy not met: deferred 4.7.5 (CONTRACT "Delivery"), carrying the failure. */
function policyError(policy: HostTlsPolicy, type: TlsPolicyFailure['type'], detail: string): ClientError {
  const what = policy.kind === 'sts' ? 'MTA-STS' : policy.kind === 'tlsa' ? 'DANE' : `tls = "${policy.kind}"`;
  const e = new ClientError('tls', '4.7.5', `TLS policy (${what}, ${policy.domain}) not met: ${detail}`);
  e.tlsFailure = { policy: policy.kind, policyDomain: policy.domain, type, detail };
  return e;
}

function isOk(r: SmtpReply | null): boolean {
  return r !== null && r.code >= 200 && r.code < 300;
}

/** temporaryStatus - a refusal at greeting/EHLO is reported as temporary (the next attempt may reach another host). */
function temporaryStatus(r: SmtpReply): string {
  if (r.enhanced && r.enhanced[0] === '4') return r.enhanced;
  return r.enhanced ? `4${r.enhanced.slice(1)}` : '4.4.0';
}
