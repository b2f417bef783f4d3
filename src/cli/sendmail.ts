/*
 * cli/sendmail - `petrel sendmail`: the sendmail(8) interface applications
 * call (options in cli/sendmail-args, usage in docs/connectors.md).
 *
 * Reads the message on standard input (up to a line with a single "." unless
 * -i / -oi; bare LF and CR become CR LF), takes recipients from the arguments
 * and, with -t, from To/Cc/Bcc; removes Bcc (and any X-Envelope-From/To, so
 * a message cannot choose its own envelope); adds From:, Date: and
 * Message-ID: when missing. Then:
 * 1. when the first `[smtp] listen` address answers, it submits over SMTP
 *    (cli/sendmail-smtp) and exits 0 on 250 — the message is in the queue;
 * 2. otherwise (no server, a refusal before DATA, a temporary failure, a lost
 *    connection) it writes the message with its envelope into the pickup
 *    directory (pickup/writer: temp name, fsync, rename, fsync directory) and
 *    exits 0 — the server queues it when it runs (pickup/pickup);
 * 3. if it can do neither it exits EX_TEMPFAIL (75): the caller keeps the
 *    message and tries again. It never exits 0 without the message being
 *    durable somewhere.
 *
 * Exit codes (sysexits.h): 0 queued or picked up; 64 EX_USAGE bad options or
 * recipient arguments; 65 EX_DATAERR no recipients with -t, a bad address in
 * the headers, a message too big or with NUL octets, or a permanent refusal
 * of the message by the server; 66 EX_NOINPUT standard input unreadable;
 * 75 EX_TEMPFAIL neither queued nor written to pickup; 78 EX_CONFIG bad
 * configuration.
 *
 * Untrusted input: arguments and the message (headers are parsed by
 * core/headers and core/address-list; -F is stripped of control characters).
 */
import { randomBytes } from 'node:crypto';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { hasNonAscii } from '../core/address.js';
import { parseAddressList } from '../core/address-list.js';
import { CrlfNormalizer } from '../core/crlf.js';
import { hasHeader, headerValues, parseHeaderSection } from '../core/headers.js';
import { rfc5322Date } from '../core/dates.js';
import { qualify, recipientsFrom } from '../pickup/envelope.js';
import { writePickupFile } from '../pickup/writer.js';
import { configFrom, type Args, type CliCommand } from './command.js';
import { parseSendmailArgs } from './sendmail-args.js';
import { submit } from './sendmail-smtp.js';

export const EX_USAGE = 64;
export const EX_DATAERR = 65;
export const EX_NOINPUT = 66;
export const EX_TEMPFAIL = 75;
export const EX_CONFIG = 78;

export interface SendmailIo {
  stdin: Readable;
  out: (s: string) => void;
  err: (s: string) => void;
  /** The calling user's login name (default: the process's user). */
  user?: string;
}

/** readMessage - standard input as CR LF text, stopping at a lone "." line unless ignoreDots; null when over `limit`. */
export async function readMessage(stdin: Readable, ignoreDots: boolean, limit: number): Promise<Buffer | null> {
  const norm = new CrlfNormalizer();
  let acc = Buffer.alloc(0);
  const dotEnd = (from: number): number => {
    if (acc.length >= 3 && acc[0] === 46 && acc[1] === 13 && acc[2] === 10) return 0;
    const i = acc.indexOf('\r\n.\r\n', Math.max(0, from - 4));
    return i < 0 ? -1 : i + 2;
  };
  for await (const chunk of stdin as AsyncIterable<Buffer | string>) {
    const before = acc.length;
    acc = Buffer.concat([acc, norm.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk))]);
    if (!ignoreDots) {
      const end = dotEnd(before);
      if (end >= 0) return acc.length > limit ? null : acc.subarray(0, end);
    }
    if (acc.length > limit) return null;
  }
  acc = Buffer.concat([acc, norm.end()]);
  if (!ignoreDots) {
    const end = dotEnd(0);
    if (end >= 0) return acc.subarray(0, end);
    // A final "." with no line end after it also ends the message.
    if (acc.length === 1 && acc[0] === 46) return Buffer.alloc(0);
    if (acc.length >= 3 && acc.subarray(acc.length - 3).toString('latin1') === '\r\n.') return acc.subarray(0, acc.length - 1);
  }
  return acc.length > limit ? null : acc;
}

/** displayName - a From: display name, quoted or RFC 2047-encoded as needed. */
export function displayName(name: string): string {
  const clean = name.replace(/[\x00-\x1f\x7f]/g, ' ').trim();
  if (hasNonAscii(clean)) return `=?UTF-8?B?${Buffer.from(clean, 'utf8').toString('base64')}?=`;
  if (/^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~ ]+$/.test(clean)) return clean;
  return `"${clean.replace(/["\\]/g, '\\$&')}"`;
}

function loginName(): string {
  try {
    return userInfo().username || 'nobody';
  } catch {
    return process.env.LOGNAME || process.env.USER || 'nobody';
  }
}

/** runSendmail - the command, with its input and output given (tests call it directly). */
export async function runSendmail(args: Args, io: SendmailIo): Promise<number> {
  const a = parseSendmailArgs(args.positional);
  if ('error' in a) {
    io.err(`petrel sendmail: ${a.error}`);
    io.err('Usage: petrel sendmail [--config FILE] [-t] [-i] [-f sender] [-F name] [recipient ...] < message');
    return EX_USAGE;
  }
  for (const k of args.flags.keys()) {
    if (k !== 'config') {
      io.err(`petrel sendmail: unknown option --${k}`);
      return EX_USAGE;
    }
  }
  if (a.config !== null && !args.flags.has('config')) args.flags.set('config', a.config);
  const config = configFrom(args, io.err);
  if (!config) return EX_CONFIG;
  if (a.newAliases) {
    io.out('petrel sendmail: nothing to do: Petrel re-reads the aliases file when it changes');
    return 0;
  }
  const domain = config.local.domains[0] ?? config.hostname;

  // Recipients given as arguments (each may be a list: "a, b").
  const recipients: string[] = [];
  const seen = new Set<string>();
  const add = (r: string): void => {
    if (!seen.has(r.toLowerCase())) {
      seen.add(r.toLowerCase());
      recipients.push(r);
    }
  };
  for (const arg of a.recipients) {
    const list = parseAddressList(arg);
    if (list.length === 0) {
      io.err(`petrel sendmail: "${arg}" is not an address`);
      return EX_USAGE;
    }
    for (const r of list) {
      const q = qualify(r, domain);
      if (!q) {
        io.err(`petrel sendmail: "${r}" is not a valid address`);
        return EX_USAGE;
      }
      add(q);
    }
  }
  if (!a.extract && recipients.length === 0) {
    io.err('petrel sendmail: no recipients given (name them as arguments, or use -t to take them from the message)');
    return EX_USAGE;
  }

  // The envelope sender.
  let sender: string;
  if (a.sender !== null) {
    const s = a.sender.trim();
    if (s === '' || s === '<>') sender = '';
    else {
      const q = qualify(s, domain);
      if (!q) {
        io.err(`petrel sendmail: sender "${s}" is not a valid address`);
        return EX_USAGE;
      }
      sender = q;
    }
  } else sender = qualify(io.user ?? loginName(), domain) ?? `nobody@${domain}`;

  // The message.
  let data: Buffer | null;
  try {
    data = await readMessage(io.stdin, a.ignoreDots, config.smtp.max_message_size);
  } catch (e) {
    io.err(`petrel sendmail: cannot read the message from standard input: ${(e as Error).message}`);
    return EX_NOINPUT;
  }
  if (data === null) {
    io.err(`petrel sendmail: message larger than max_message_size (${config.smtp.max_message_size} octets)`);
    return EX_DATAERR;
  }
  if (data.indexOf(0) >= 0) {
    io.err('petrel sendmail: message contains NUL octets');
    return EX_DATAERR;
  }
  const section = parseHeaderSection(data);
  if (a.extract) {
    const r = recipientsFrom([...headerValues(section.fields, 'To'), ...headerValues(section.fields, 'Cc'), ...headerValues(section.fields, 'Bcc')], domain);
    if ('error' in r) {
      io.err(`petrel sendmail: ${r.error} (in To, Cc or Bcc)`);
      return EX_DATAERR;
    }
    for (const x of r.recipients) add(x);
    if (recipients.length === 0) {
      io.err('petrel sendmail: no recipient addresses found in the message header (-t)');
      return EX_DATAERR;
    }
  }
  const removed = new Set(['bcc', 'x-envelope-from', 'x-envelope-to']);
  const parts: Buffer[] = section.fields.filter((f) => !removed.has(f.key)).map((f) => f.raw);
  const added: string[] = [];
  if (!hasHeader(section.fields, 'From')) {
    const addr = sender || `MAILER-DAEMON@${config.hostname}`;
    added.push(`From: ${a.fullName ? `${displayName(a.fullName)} <${addr}>` : addr}`);
  }
  if (!hasHeader(section.fields, 'Date')) added.push(`Date: ${rfc5322Date(new Date())}`);
  if (!hasHeader(section.fields, 'Message-ID')) added.push(`Message-ID: <${Date.now().toString(36)}.${randomBytes(6).toString('hex')}@${config.hostname}>`);
  for (const h of added) parts.push(Buffer.from(`${h}\r\n`, 'utf8'));
  parts.push(Buffer.from('\r\n'), data.subarray(section.bodyStart));
  const message = Buffer.concat(parts);
  const eightBit = message.some((b) => b > 127);
  const utf8 = hasNonAscii(sender) || recipients.some(hasNonAscii);

  // 1. The running server, over SMTP.
  const listen = config.smtp.listen[0];
  let why = 'no [smtp] listen address';
  if (listen && listen.port !== 0) {
    const host = listen.host === '0.0.0.0' ? '127.0.0.1' : listen.host === '::' ? '::1' : listen.host;
    const r = await submit({ host, port: listen.port, helo: config.hostname, sender, recipients, message, eightBit, utf8 });
    if (r.kind === 'queued') {
      if (a.verbose) io.err(`petrel sendmail: ${r.reply}`);
      return 0;
    }
    if (r.kind === 'refused') {
      io.err(`petrel sendmail: message refused: ${r.reply}`);
      return EX_DATAERR;
    }
    why = r.reason;
  }

  // 2. The pickup directory.
  const envelope = [`X-Envelope-From: <${sender}>`, ...recipients.map((r) => `X-Envelope-To: <${r}>`)].map((l) => `${l}\r\n`).join('');
  try {
    const file = await writePickupFile(join(config.data_dir, 'pickup'), [Buffer.from(envelope, 'utf8'), message]);
    if (a.verbose) io.err(`petrel sendmail: server not used (${why}); written to ${file}`);
    return 0;
  } catch (e) {
    io.err(`petrel sendmail: cannot queue the message: server not used (${why}), and cannot write to the pickup directory: ${(e as Error).message}`);
    return EX_TEMPFAIL;
  }
}

export const sendmailCommand: CliCommand = {
  name: 'sendmail',
  summary: 'submit a message from standard input, as sendmail(8) does (-t, -i, -f, -F)',
  help: `Usage: petrel sendmail [--config FILE] [options] [recipient ...] < message

Queues the message read from standard input for the recipients given (and,
with -t, those in its To, Cc and Bcc headers). Works whether or not the server
runs: it submits over SMTP to the first [smtp] listen address, or writes the
message into the pickup directory (data_dir/pickup) when the server does not
answer. Exits 0 once the message is durably queued or picked up.

Options:
  -t            take recipients from To, Cc and Bcc (added to the arguments); Bcc is removed
  -i, -oi       a line with a single "." does not end the message
  -f SENDER     envelope sender (also -r; "" or "<>" for the null sender); default: your user name
  -F NAME       full name for the From: header added when the message has none
  -C FILE       configuration file (same as --config)
  -v            say what was done (on standard error)
  -bm           deliver mail (the default); -bi and -I do nothing (aliases reload by themselves)
Accepted and ignored: -odX -oeX -om -oo (any -oX), -B TYPE, -N DSN, -R RET, -V ENVID,
  -L LABEL, -A X, -U -m -n -x -G -c, -e X, -p PROTO. (-h is help, not a hop count.)

Bare names ("bob") are taken to be in the first of [local] domains.
Exit codes: 0 queued; 64 usage; 65 bad message or refused; 66 no input;
75 cannot queue now (try again); 78 bad configuration.
`,
  run(args, out, err) {
    return runSendmail(args, { stdin: process.stdin, out, err });
  },
};
