/*
 * test/helpers/smtp-talk - a raw SMTP conversation for tests: write exact
 * lines (or bytes), read exact replies. Deliberately dumb: it does what the
 * test says, so tests can send what real clients should not.
 */
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { ReplyParser, type SmtpReply } from '../../src/core/smtp-reply.js';

export class SmtpTalk {
  private socket!: Socket | TLSSocket;
  private buffer = '';
  private replies: SmtpReply[] = [];
  private waiters: Array<(r: SmtpReply | null) => void> = [];
  private parser = new ReplyParser();
  closed = false;

  /** open - connect; `localAddress` picks the client's own 127.0.0.x (relay_networks tests). */
  static async open(port: number, host = '127.0.0.1', localAddress?: string): Promise<SmtpTalk> {
    const t = new SmtpTalk();
    await new Promise<void>((resolve, reject) => {
      t.socket = connect({ port, host, ...(localAddress ? { localAddress } : {}) }, () => resolve());
      t.socket.once('error', reject);
    });
    t.wire();
    return t;
  }

  private wire(): void {
    this.socket.on('data', (d: Buffer) => this.onData(d.toString('latin1')));
    this.socket.on('close', () => {
      this.closed = true;
      for (const w of this.waiters.splice(0)) w(null);
    });
    this.socket.on('error', () => undefined);
  }

  private onData(text: string): void {
    this.buffer += text;
    let i: number;
    while ((i = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, i).replace(/\r$/, '');
      this.buffer = this.buffer.slice(i + 1);
      const r = this.parser.push(line);
      if (r) {
        const w = this.waiters.shift();
        if (w) w(r);
        else this.replies.push(r);
      }
    }
  }

  /** read - the next reply; rejects after `ms` or resolves null when the server closed. */
  read(ms = 10_000): Promise<SmtpReply | null> {
    const r = this.replies.shift();
    if (r) return Promise.resolve(r);
    if (this.closed) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== done);
        reject(new Error(`no SMTP reply within ${ms} ms`));
      }, ms);
      const done = (x: SmtpReply | null): void => {
        clearTimeout(t);
        resolve(x);
      };
      this.waiters.push(done);
    });
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** cmd - send one line, read one reply. */
  async cmd(line: string): Promise<SmtpReply> {
    this.write(line + '\r\n');
    const r = await this.read();
    if (!r) throw new Error(`connection closed after ${line}`);
    return r;
  }

  async startTls(): Promise<void> {
    const r = await this.cmd('STARTTLS');
    if (r.code !== 220) throw new Error(`STARTTLS refused: ${r.code}`);
    const plain = this.socket as Socket;
    plain.removeAllListeners('data');
    this.socket = await new Promise<TLSSocket>((resolve, reject) => {
      const s = tlsConnect({ socket: plain, rejectUnauthorized: false }, () => resolve(s));
      s.once('error', reject);
    });
    this.parser = new ReplyParser();
    this.buffer = '';
    this.wire();
  }

  close(): void {
    this.socket.destroy();
  }

  /** The client's own port (which server process holds the connection: helpers/processes). */
  get localPort(): number {
    return this.socket.localPort ?? 0;
  }

  /** send - a whole transaction; returns the reply to the final dot (or the first refusal). */
  async send(from: string, to: string[], message: string): Promise<SmtpReply> {
    let r = await this.cmd(`MAIL FROM:<${from}>`);
    if (r.code !== 250) return r;
    let accepted = 0;
    for (const rcpt of to) if ((await this.cmd(`RCPT TO:<${rcpt}>`)).code === 250) accepted++;
    if (!accepted) {
      await this.cmd('RSET');
      return { code: 554, enhanced: '5.5.1', lines: ['no recipient accepted'] };
    }
    r = await this.cmd('DATA');
    if (r.code !== 354) return r;
    const body = message.replace(/\r?\n/g, '\r\n').replace(/^\./gm, '..');
    this.write(body.endsWith('\r\n') ? body : body + '\r\n');
    this.write('.\r\n');
    return (await this.read(30_000))!;
  }
}

export function replyLine(r: SmtpReply | null): string {
  if (!r) return '(closed)';
  return `${r.code} ${r.enhanced} ${r.lines.join(' | ')}`.replace(/\s+/g, ' ').trim();
}
