/*
 * cli/sendmail-smtp - the small SMTP client `petrel sendmail` uses to hand a
 * message to a running Petrel (RFC 5321; one transaction, no pipelining, no
 * TLS: it only talks to Petrel's own listener on this machine).
 *
 * The answer is one of three, and the caller acts on it:
 * - `queued`: 250 to the final dot: the message is durable in the queue;
 * - `refused`: a permanent reply to DATA or to the final dot (too big, NUL
 *   octets, a mail loop): handing the message over another way would not help;
 * - `unavailable`: anything else (no server, a timeout, a 4xx, a recipient
 *   refused, a connection lost even after the dot): the caller writes the
 *   message into the pickup directory. After a lost connection past the dot
 *   that may queue it twice — a duplicate, never a loss.
 *
 * Untrusted input: the server's replies (parsed by core/smtp-reply, only
 * compared and printed).
 */
import { connect, type Socket } from 'node:net';
import { ReplyParser, replyText, type SmtpReply } from '../core/smtp-reply.js';

export type SubmitResult = { kind: 'queued'; reply: string } | { kind: 'refused'; reply: string } | { kind: 'unavailable'; reason: string };

export interface SubmitInput {
  host: string;
  port: number;
  helo: string;
  sender: string;
  recipients: readonly string[];
  /** The message, CR LF line ends, not dot-stuffed. */
  message: Buffer;
  eightBit: boolean;
  utf8: boolean;
  connectTimeoutMs?: number;
  replyTimeoutMs?: number;
}

class Conversation {
  private buffer = '';
  private parser = new ReplyParser();
  private waiting: ((r: SmtpReply | Error) => void) | null = null;
  private ready: Array<SmtpReply | Error> = [];

  constructor(
    private readonly socket: Socket,
    private readonly replyTimeoutMs: number,
  ) {
    socket.on('data', (d: Buffer) => this.data(d.toString('latin1')));
    socket.on('close', () => this.deliver(new Error('connection closed')));
    socket.on('error', (e) => this.deliver(e));
  }

  private data(text: string): void {
    this.buffer += text;
    let i: number;
    while ((i = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, i).replace(/\r$/, '');
      this.buffer = this.buffer.slice(i + 1);
      try {
        const r = this.parser.push(line);
        if (r) this.deliver(r);
      } catch (e) {
        this.deliver(e as Error);
      }
    }
  }

  private deliver(r: SmtpReply | Error): void {
    const w = this.waiting;
    if (w) {
      this.waiting = null;
      w(r);
    } else this.ready.push(r);
  }

  read(ms = this.replyTimeoutMs): Promise<SmtpReply> {
    const r = this.ready.shift();
    if (r) return r instanceof Error ? Promise.reject(r) : Promise.resolve(r);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiting = null;
        reject(new Error(`no reply within ${ms} ms`));
      }, ms);
      this.waiting = (x) => {
        clearTimeout(t);
        if (x instanceof Error) reject(x);
        else resolve(x);
      };
    });
  }

  async cmd(line: string, ms?: number): Promise<SmtpReply> {
    this.socket.write(line + '\r\n');
    return this.read(ms);
  }
}

/** dotStuff - RFC 5321 §4.5.2: a line starting with "." gets another one; ends with CR LF . CR LF. */
export function dotStuff(message: Buffer): Buffer {
  const text = message.toString('latin1');
  const body = (text.startsWith('.') ? '.' : '') + text.replace(/\r\n\./g, '\r\n..');
  const ended = body === '' || body.endsWith('\r\n') ? body : body + '\r\n';
  return Buffer.from(ended + '.\r\n', 'latin1');
}

function open(host: string, port: number, ms: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port });
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error(`connect to ${host}:${port} timed out`));
    }, ms);
    s.once('connect', () => {
      clearTimeout(t);
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
  });
}

/** submit - one SMTP transaction with a Petrel listener. */
export async function submit(input: SubmitInput): Promise<SubmitResult> {
  let socket: Socket;
  try {
    socket = await open(input.host, input.port, input.connectTimeoutMs ?? 5000);
  } catch (e) {
    return { kind: 'unavailable', reason: `cannot connect to ${input.host}:${input.port}: ${(e as Error).message}` };
  }
  const c = new Conversation(socket, input.replyTimeoutMs ?? 60_000);
  const step = (what: string, r: SmtpReply, ok: (code: number) => boolean): SubmitResult | null =>
    ok(r.code) ? null : { kind: 'unavailable', reason: `${what}: ${replyText(r)}` };
  let stage = 'greeting';
  try {
    let fail = step('greeting', await c.read(), (code) => code === 220);
    if (fail) return fail;
    stage = 'EHLO';
    const ehlo = await c.cmd(`EHLO ${input.helo}`);
    if ((fail = step('EHLO', ehlo, (code) => code === 250))) return fail;
    const ext = new Set(ehlo.lines.slice(1).map((l) => l.split(' ')[0]!.toUpperCase()));
    if (input.utf8 && !ext.has('SMTPUTF8')) return { kind: 'unavailable', reason: 'the server does not offer SMTPUTF8' };
    const params = `${input.eightBit && ext.has('8BITMIME') ? ' BODY=8BITMIME' : ''}${input.utf8 ? ' SMTPUTF8' : ''}`;
    stage = 'MAIL';
    if ((fail = step('MAIL', await c.cmd(`MAIL FROM:<${input.sender}>${params}`), (code) => code === 250))) return quit(c, socket, fail);
    for (const r of input.recipients) {
      stage = `RCPT <${r}>`;
      if ((fail = step(`RCPT <${r}>`, await c.cmd(`RCPT TO:<${r}>`), (code) => code === 250 || code === 251))) return quit(c, socket, fail);
    }
    stage = 'DATA';
    const data = await c.cmd('DATA');
    if (data.code >= 500) return quit(c, socket, { kind: 'refused', reply: replyText(data) });
    if ((fail = step('DATA', data, (code) => code === 354))) return quit(c, socket, fail);
    stage = 'end of data';
    socket.write(dotStuff(input.message));
    const end = await c.read(Math.max(input.replyTimeoutMs ?? 60_000, 120_000));
    const result: SubmitResult =
      end.code === 250 ? { kind: 'queued', reply: replyText(end) } : end.code >= 500 ? { kind: 'refused', reply: replyText(end) } : { kind: 'unavailable', reason: `end of data: ${replyText(end)}` };
    return quit(c, socket, result);
  } catch (e) {
    socket.destroy();
    return { kind: 'unavailable', reason: `${stage}: ${(e as Error).message}` };
  }
}

async function quit(c: Conversation, socket: Socket, result: SubmitResult): Promise<SubmitResult> {
  try {
    if (result.kind !== 'queued') await c.cmd('RSET', 5000);
    await c.cmd('QUIT', 5000);
  } catch {
    // The answer is already known; how the connection ends does not change it.
  }
  socket.destroy();
  return result;
}
