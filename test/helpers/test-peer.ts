/*
 * test/helpers/test-peer - a scriptable SMTP/LMTP server for tests, on
 * loopback only (any 127.0.0.x, port 0) or a unix socket.
 *
 * Each test says how the peer behaves: which extensions it advertises, how it
 * answers each RCPT (a limit after N with 452 or 552, per-address replies),
 * DATA and the final dot (LMTP: per recipient), whether it greets with 421,
 * stays silent, drops the connection at a given point, breaks TLS, or is slow.
 * It records everything: connections, the commands and how they arrived (one
 * read = one chunk, to check pipelining), every transaction with its envelope,
 * parameters, the exact octets of its data and the unstuffed body.
 *
 * The peer's own logic is synchronous; only its replies go through an ordered
 * queue (so a delay never reorders them).
 */
import { createServer, type Server, type Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export type DropPoint = 'mail' | 'rcpt' | 'data' | 'mid-data' | 'dot';

export interface PeerOptions {
  host?: string;
  port?: number;
  /** Listen on a unix socket instead (LMTP). */
  path?: string;
  lmtp?: boolean;
  name?: string;
  pipelining?: boolean;
  dsn?: boolean;
  smtputf8?: boolean;
  eightBitMime?: boolean;
  /** SIZE to advertise (0: without a limit); null/undefined: not advertised. */
  size?: number | null;
  starttls?: boolean;
  /** Advertise REQUIRETLS (RFC 8689), after STARTTLS only, as the RFC says. */
  requireTls?: boolean;
  /** Advertise LIMITS RCPTMAX=n. */
  rcptMax?: number;
  enhancedStatusCodes?: boolean;
  /** Answer EHLO with 502 (the client must fall back to HELO). */
  refuseEhlo?: boolean;
  /** The greeting line; a non-220 greeting is followed by a close. */
  greeting?: string;
  /** Never greet (a black hole that accepts). */
  silent?: boolean;
  /** Refuse every RCPT after `after` accepted ones in a transaction with `reply`. */
  rcptLimit?: { after: number; reply: string };
  /** Per-address RCPT reply (undefined: the default 250). */
  rcptReply?: (address: string, tx: PeerTransaction) => string | undefined;
  mailReply?: (sender: string) => string | undefined;
  /** Reply to RSET on connection n (undefined: 250). A 421 reply is followed by a close, as real servers do. */
  rsetReply?: (connection: number) => string | undefined;
  /** Reply to DATA instead of 354. */
  dataReply?: string;
  /** Answer 354 to DATA even when no recipient was accepted (a broken pipelining server). */
  dataAlways354?: boolean;
  /** Reply after the final dot (SMTP). */
  finalReply?: (tx: PeerTransaction) => string;
  /** LMTP: reply for each accepted recipient after the dot. */
  lmtpReply?: (address: string, tx: PeerTransaction) => string;
  /** Close the connection without a reply at this point (the first `dropTimes` times; default always). */
  drop?: DropPoint;
  dropTimes?: number;
  /** Delay before every reply, ms. */
  delayMs?: number;
  /** Answer STARTTLS with 220, then send garbage instead of a TLS handshake. */
  tlsBroken?: boolean;
  /** The key and certificate (PEM; the certificate may be followed by its chain) STARTTLS presents; default testCertificate(). */
  tlsCert?: { key: string; cert: string };
}

export interface PeerRcpt {
  address: string;
  params: string[];
  reply: string;
}

export interface PeerTransaction {
  connection: number;
  /** 1-based index of this transaction on its connection. */
  index: number;
  sender: string;
  mailParams: string[];
  rcpts: PeerRcpt[];
  accepted: string[];
  /** Octets received after 354, through the terminating CRLF.CRLF (or ".\r\n" for an empty message). */
  raw: Buffer;
  /** The message as the client meant it: raw without the terminator, dot-unstuffed. */
  body: Buffer;
  completed: boolean;
  finalReplies: string[];
}

export interface PeerConnection {
  id: number;
  tls: boolean;
  helo: string;
  /** The client's address as this peer saw it (its source address). */
  remoteAddress: string;
  /** The client's port (tests find the process holding the other end: helpers/processes clientOf). */
  remotePort: number;
  commands: string[];
  /** Commands grouped by the read they arrived in. */
  chunks: string[][];
  transactions: number;
  closed: boolean;
}

let certCache: { key: string; cert: string } | null = null;

/** testCertificate - a self-signed certificate for "localhost", made once per process with openssl. */
export function testCertificate(): { key: string; cert: string } {
  if (certCache) return certCache;
  const dir = mkdtempSync(join(tmpdir(), 'petrel-cert-'));
  try {
    execFileSync(
      'openssl',
      ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', '/CN=localhost', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')],
      { stdio: 'pipe' },
    );
    certCache = { key: readFileSync(join(dir, 'key.pem'), 'utf8'), cert: readFileSync(join(dir, 'cert.pem'), 'utf8') };
    return certCache;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const TERMINATOR = Buffer.from('\r\n.\r\n');

export class TestPeer {
  readonly options: PeerOptions;
  readonly connections: PeerConnection[] = [];
  readonly transactions: PeerTransaction[] = [];
  /** Most connections open at once. */
  maxConcurrent = 0;
  /** Most sessions in use at once: open and not yet past QUIT (a closing connection the client has let go of is not counted). */
  maxActive = 0;
  private open = 0;
  private active = 0;
  private server: Server;
  private sockets = new Set<Socket>();
  private drops = 0;
  port = 0;

  constructor(options: PeerOptions = {}) {
    this.options = options;
    this.server = createServer((s) => this.session(s));
  }

  /** start - listen (127.0.0.1:0 unless told otherwise); resolves with the peer. */
  async start(): Promise<this> {
    const o = this.options;
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      if (o.path) this.server.listen(o.path, () => resolve());
      else {
        const host = o.host ?? '127.0.0.1';
        if (!host.startsWith('127.') && host !== '::1') throw new Error('test peers listen on loopback only');
        this.server.listen(o.port ?? 0, host, () => resolve());
      }
    });
    const addr = this.server.address();
    if (addr && typeof addr === 'object') this.port = addr.port;
    return this;
  }

  /** close - drop every connection and stop listening. */
  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** dropConnections - cut every open connection now (as a peer's idle timeout would). */
  dropConnections(): void {
    for (const s of this.sockets) s.destroy();
  }

  /** delivered - every address accepted in a completed transaction, in order. */
  delivered(): string[] {
    const out: string[] = [];
    for (const tx of this.transactions) {
      if (!tx.completed) continue;
      if (this.options.lmtp) tx.accepted.forEach((a, i) => tx.finalReplies[i]?.startsWith('2') && out.push(a));
      else if (tx.finalReplies[0]?.startsWith('2')) out.push(...tx.accepted);
    }
    return out;
  }

  private shouldDrop(point: DropPoint): boolean {
    if (this.options.drop !== point) return false;
    if (this.drops >= (this.options.dropTimes ?? Infinity)) return false;
    this.drops++;
    return true;
  }

  private session(raw: Socket): void {
    const o = this.options;
    const conn: PeerConnection = { id: this.connections.length + 1, tls: false, helo: '', remoteAddress: raw.remoteAddress ?? '', remotePort: raw.remotePort ?? 0, commands: [], chunks: [], transactions: 0, closed: false };
    this.connections.push(conn);
    this.sockets.add(raw);
    this.open++;
    this.maxConcurrent = Math.max(this.maxConcurrent, this.open);
    this.active++;
    this.maxActive = Math.max(this.maxActive, this.active);
    let quitSeen = false;
    const inactive = (): void => {
      if (quitSeen) return;
      quitSeen = true;
      this.active--;
    };
    let sock: Socket = raw;
    raw.setNoDelay(true);
    raw.on('error', () => {});
    raw.on('close', () => {
      inactive();
      this.sockets.delete(raw);
      this.open--;
      conn.closed = true;
    });

    let out: Promise<void> = Promise.resolve();
    let dead = false;
    const send = (text: string): void => {
      const lines = text.endsWith('\r\n') ? text : `${text}\r\n`;
      out = out.then(async () => {
        if (o.delayMs) await new Promise((r) => setTimeout(r, o.delayMs));
        if (!dead && !sock.destroyed) sock.write(lines);
      });
    };
    const after = (fn: () => void): void => {
      out = out.then(fn);
    };
    const drop = (): void => {
      dead = true;
      sock.destroy();
      raw.destroy();
    };

    type Mode = 'command' | 'data' | 'paused';
    let mode: Mode = 'command';
    let buf: Buffer = Buffer.alloc(0);
    let tx: PeerTransaction | null = null;
    let dataChunks: Buffer[] = [];
    let dataLen = 0;
    let dataTail: Buffer = Buffer.alloc(0);
    let chunk: string[] = [];

    const ehloLines = (): string[] => {
      const l = [o.name ?? 'peer.test'];
      if (o.pipelining !== false) l.push('PIPELINING');
      if (o.size !== undefined && o.size !== null) l.push(o.size ? `SIZE ${o.size}` : 'SIZE');
      if (o.eightBitMime !== false) l.push('8BITMIME');
      if (o.smtputf8) l.push('SMTPUTF8');
      if (o.dsn) l.push('DSN');
      if (o.starttls && !conn.tls) l.push('STARTTLS');
      if (o.requireTls && conn.tls) l.push('REQUIRETLS');
      if (o.enhancedStatusCodes !== false) l.push('ENHANCEDSTATUSCODES');
      if (o.rcptMax) l.push(`LIMITS RCPTMAX=${o.rcptMax}`);
      return l;
    };
    const multi = (code: number, lines: string[]): string => lines.map((l, i) => `${code}${i < lines.length - 1 ? '-' : ' '}${l}`).join('\r\n');

    const endData = (rawData: Buffer): void => {
      const t = tx!;
      t.raw = rawData;
      const content = rawData.length >= 3 && rawData.equals(Buffer.from('.\r\n')) ? Buffer.alloc(0) : rawData.subarray(0, rawData.length - 3);
      t.body = Buffer.from(content.toString('latin1').replace(/(^|\r\n)\./g, '$1'), 'latin1');
      if (this.shouldDrop('dot')) {
        after(drop);
        return;
      }
      t.completed = true;
      if (o.lmtp) {
        for (const a of t.accepted) {
          const r = o.lmtpReply?.(a, t) ?? '250 2.1.5 Delivered';
          t.finalReplies.push(r);
          send(r);
        }
      } else {
        const r = o.finalReply?.(t) ?? '250 2.0.0 Ok: queued';
        t.finalReplies.push(r);
        send(r);
      }
      tx = null;
    };

    const command = (line: string): void => {
      conn.commands.push(line);
      chunk.push(line);
      const verb = line.split(' ')[0]!.toUpperCase();
      let m: RegExpExecArray | null;
      switch (verb) {
        case 'EHLO':
        case 'LHLO':
          if ((verb === 'LHLO') !== !!o.lmtp || o.refuseEhlo) return send('502 5.5.1 Command not recognised');
          conn.helo = line.slice(5);
          return send(multi(250, ehloLines()));
        case 'HELO':
          conn.helo = line.slice(5);
          return send(`250 ${o.name ?? 'peer.test'}`);
        case 'STARTTLS':
          if (!o.starttls || conn.tls) return send('502 5.5.1 Not offered');
          send('220 2.0.0 Ready to start TLS');
          mode = 'paused';
          after(() => {
            if (o.tlsBroken) {
              raw.write('this is not a TLS handshake\r\n');
              setTimeout(drop, 20);
              return;
            }
            const { key, cert } = o.tlsCert ?? testCertificate();
            raw.removeListener('data', onData);
            const secure = new TLSSocket(raw, { isServer: true, key, cert });
            secure.on('error', () => drop());
            secure.on('data', onData);
            sock = secure;
            conn.tls = true;
            mode = 'command';
          });
          return;
        case 'MAIL':
          m = /^MAIL FROM:\s*<([^>]*)>\s*(.*)$/i.exec(line);
          if (!m) return send('501 5.5.4 Syntax error');
          if (tx) return send('503 5.5.1 Nested MAIL command');
          if (this.shouldDrop('mail')) return after(drop);
          {
            const params = m[2]!.trim() ? m[2]!.trim().split(/\s+/) : [];
            const size = params.find((p) => /^SIZE=/i.test(p));
            const r = o.mailReply?.(m[1]!) ?? (o.size && size && Number(size.slice(5)) > o.size ? '552 5.3.4 Message size exceeds fixed limit' : '250 2.1.0 Ok');
            if (r.startsWith('2')) {
              conn.transactions++;
              tx = { connection: conn.id, index: conn.transactions, sender: m[1]!, mailParams: params, rcpts: [], accepted: [], raw: Buffer.alloc(0), body: Buffer.alloc(0), completed: false, finalReplies: [] };
              this.transactions.push(tx);
            }
            return send(r);
          }
        case 'RCPT': {
          m = /^RCPT TO:\s*<([^>]*)>\s*(.*)$/i.exec(line);
          if (!m) return send('501 5.5.4 Syntax error');
          if (!tx) return send('503 5.5.1 Need MAIL command');
          if (this.shouldDrop('rcpt')) return after(drop);
          const address = m[1]!;
          let r: string | undefined;
          if (o.rcptLimit && tx.accepted.length >= o.rcptLimit.after) r = o.rcptLimit.reply;
          r ??= o.rcptReply?.(address, tx) ?? '250 2.1.5 Ok';
          tx.rcpts.push({ address, params: m[2]!.trim() ? m[2]!.trim().split(/\s+/) : [], reply: r });
          if (r.startsWith('2')) tx.accepted.push(address);
          return send(r);
        }
        case 'DATA':
          if (!tx) return send('503 5.5.1 Need MAIL command');
          if (tx.accepted.length === 0 && !o.dataAlways354) return send('554 5.5.1 No valid recipients');
          if (this.shouldDrop('data')) return after(drop);
          if (o.dataReply) return send(o.dataReply);
          mode = 'data';
          dataChunks = [];
          dataLen = 0;
          dataTail = Buffer.alloc(0);
          return send('354 End data with <CR><LF>.<CR><LF>');
        case 'RSET': {
          tx = null;
          const r = o.rsetReply?.(conn.id) ?? '250 2.0.0 Ok';
          send(r);
          if (r.startsWith('421')) after(drop);
          return;
        }
        case 'NOOP':
          return send('250 2.0.0 Ok');
        case 'QUIT':
          inactive();
          send('221 2.0.0 Bye');
          return after(() => sock.end());
        default:
          return send('502 5.5.2 Error: command not recognized');
      }
    };

    const onData = (data: Buffer): void => {
      if (dead) return;
      buf = buf.length ? Buffer.concat([buf, data]) : data;
      chunk = [];
      while (buf.length && !dead) {
        if (mode === 'paused') break;
        if (mode === 'command') {
          const nl = buf.indexOf(10);
          if (nl < 0) break;
          const line = buf.subarray(0, nl).toString('utf8').replace(/\r$/, '');
          buf = buf.subarray(nl + 1);
          command(line);
        } else {
          if (this.shouldDrop('mid-data')) {
            drop();
            break;
          }
          // The terminator may straddle reads: look at the last 4 octets already received too.
          const probe = dataTail.length ? Buffer.concat([dataTail, buf]) : buf;
          let end = -1;
          if (dataLen === 0 && probe.length >= 3 && probe[0] === 46 && probe[1] === 13 && probe[2] === 10) end = 3;
          else {
            const i = probe.indexOf(TERMINATOR);
            if (i >= 0) end = i + TERMINATOR.length;
          }
          if (end < 0) {
            dataChunks.push(buf);
            dataLen += buf.length;
            dataTail = Buffer.from(probe.subarray(Math.max(0, probe.length - 4)));
            buf = Buffer.alloc(0);
            break;
          }
          const used = end - dataTail.length;
          dataChunks.push(buf.subarray(0, used));
          buf = buf.subarray(used);
          mode = 'command';
          const all = Buffer.concat(dataChunks);
          dataChunks = [];
          dataLen = 0;
          dataTail = Buffer.alloc(0);
          endData(all);
        }
      }
      if (chunk.length) conn.chunks.push(chunk);
    };

    raw.on('data', onData);
    if (o.silent) return;
    const greeting = o.greeting ?? `220 ${o.name ?? 'peer.test'} ${o.lmtp ? 'LMTP' : 'ESMTP'} test peer`;
    send(greeting);
    if (!greeting.startsWith('220')) after(() => sock.end());
  }
}

/** startPeer - a started TestPeer. */
export function startPeer(options: PeerOptions = {}): Promise<TestPeer> {
  return new TestPeer(options).start();
}
