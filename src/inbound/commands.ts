/*
 * inbound/commands - parse SMTP command lines and the parameters of MAIL and
 * RCPT (RFC 5321 §4.1, SIZE RFC 1870, 8BITMIME RFC 6152, DSN RFC 3461,
 * SMTPUTF8 RFC 6531, REQUIRETLS RFC 8689).
 *
 * Untrusted input: every octet a client sends. Parsers return either a value
 * or a reply (code, enhanced status, text) saying exactly what is wrong; they
 * never throw. Line-length limits (RFC 5321 §4.5.3.1.4, extended by RFC 3461
 * §4 for DSN parameters) are enforced by lineLimit() before parsing.
 */
import { parseMailbox, xtextDecode } from '../core/address.js';
import { smtpReply, type ReplyArgs, type ReplyName } from '../core/replies.js';
import type { SmtpReply } from '../core/smtp-reply.js';

export interface Command {
  verb: string;
  arg: string;
}

/** lineLimit - the longest line (with CRLF) allowed for a command starting with `head`. */
export function lineLimit(head: string): number {
  const verb = head.slice(0, 4).toUpperCase();
  if (verb === 'MAIL') return 512 + 100;
  if (verb === 'RCPT') return 512 + 500;
  if (verb === 'AUTH') return 12288 + 12;
  return 512;
}

/** The longest line the reader ever needs to hold before knowing it is too long. */
export const MAX_LINE = 12288 + 12;

export function parseCommand(line: string): Command {
  const m = /^([A-Za-z]+)(?: (.*))?$/.exec(line);
  if (!m) return { verb: '', arg: line };
  return { verb: m[1]!.toUpperCase(), arg: m[2] ?? '' };
}

export interface MailParams {
  sender: string;
  size: number | null;
  body: '7BIT' | '8BITMIME' | null;
  smtputf8: boolean;
  ret: 'FULL' | 'HDRS' | null;
  envid: string | null;
  /** MAIL FROM:<...> REQUIRETLS (RFC 8689): relay only over verified TLS to hops that offer REQUIRETLS. */
  requireTls: boolean;
}

export interface RcptParams {
  address: string;
  notify: string | null;
  orcpt: string | null;
}

type Parsed<T> = { ok: T } | { error: SmtpReply };

function bad<N extends ReplyName>(name: N, ...args: ReplyArgs<N>): { error: SmtpReply } {
  return { error: smtpReply(name, ...args) };
}

/**
 * splitPath - "FROM:<a@b> SIZE=1" -> path "a@b", params ["SIZE=1"].
 * Accepts the common "FROM: <a@b>" variant (a space after the colon).
 */
const PATH_ARG = {
  FROM: /^FROM:\s?<([^<>]*)>(?: +(.*))?$/i,
  TO: /^TO:\s?<([^<>]*)>(?: +(.*))?$/i,
};

function splitPath(arg: string, keyword: 'FROM' | 'TO'): { path: string; params: string[] } | null {
  const m = PATH_ARG[keyword].exec(arg.trimEnd());
  if (!m) return null;
  let path = m[1]!;
  // Source routes (RFC 5321 §4.1.2, obsolete) are accepted and ignored.
  const sr = /^@[^:]+:(.*)$/.exec(path);
  if (sr) path = sr[1]!;
  const params = (m[2] ?? '').split(' ').filter((p) => p !== '');
  return { path, params };
}

/** shown - a client's parameter name as it may appear in a reply: short, printable ASCII only. */
function shown(key: string): string {
  return key.slice(0, 40).replace(/[^\x21-\x7e]/g, '?');
}

function splitParam(p: string): [string, string | null] {
  const i = p.indexOf('=');
  return i < 0 ? [p.toUpperCase(), null] : [p.slice(0, i).toUpperCase(), p.slice(i + 1)];
}

/** parseMail - the argument of MAIL ("FROM:<...> params"). */
export function parseMail(arg: string, offered: { dsn: boolean; smtputf8: boolean; /** REQUIRETLS: only on a TLS session (RFC 8689). */ requireTls?: boolean }): Parsed<MailParams> {
  const sp = splitPath(arg, 'FROM');
  if (!sp) return bad('mailSyntax');
  const out: MailParams = { sender: sp.path, size: null, body: null, smtputf8: false, ret: null, envid: null, requireTls: false };
  const seen = new Set<string>();
  for (const p of sp.params) {
    const [key, value] = splitParam(p);
    if (seen.has(key)) return bad('duplicateParameter', shown(key));
    seen.add(key);
    switch (key) {
      case 'SIZE':
        if (value === null || !/^\d{1,20}$/.test(value)) return bad('badParameter', 'SIZE');
        out.size = Number(value);
        break;
      case 'BODY': {
        const v = value?.toUpperCase();
        if (v !== '7BIT' && v !== '8BITMIME') return bad('badParameter', 'BODY', '7BIT or 8BITMIME');
        out.body = v;
        break;
      }
      case 'SMTPUTF8':
        if (!offered.smtputf8) return bad('parameterNotOffered', 'SMTPUTF8');
        if (value !== null) return bad('parameterNoValue', 'SMTPUTF8');
        out.smtputf8 = true;
        break;
      case 'RET': {
        if (!offered.dsn) return bad('parameterNotSupported', 'RET');
        const v = value?.toUpperCase();
        if (v !== 'FULL' && v !== 'HDRS') return bad('badParameter', 'RET', 'FULL or HDRS');
        out.ret = v;
        break;
      }
      case 'ENVID': {
        if (!offered.dsn) return bad('parameterNotSupported', 'ENVID');
        const v = value === null ? null : xtextDecode(value);
        if (v === null || v.length > 100) return bad('badParameter', 'ENVID');
        out.envid = v;
        break;
      }
      case 'AUTH':
        // RFC 4954 §5: accepted and not trusted.
        break;
      case 'REQUIRETLS':
        if (!offered.requireTls) return bad('requireTlsNeedsTls');
        if (value !== null) return bad('parameterNoValue', 'REQUIRETLS');
        out.requireTls = true;
        break;
      default:
        return bad('unsupportedParameter', shown(key));
    }
  }
  if (out.sender !== '' && !parseMailbox(out.sender, out.smtputf8)) return bad('badSender');
  return { ok: out };
}

/** parseRcpt - the argument of RCPT ("TO:<...> params"). */
export function parseRcpt(arg: string, offered: { dsn: boolean }, utf8: boolean): Parsed<RcptParams> {
  const sp = splitPath(arg, 'TO');
  if (!sp) return bad('rcptSyntax');
  const out: RcptParams = { address: sp.path, notify: null, orcpt: null };
  const seen = new Set<string>();
  for (const p of sp.params) {
    const [key, value] = splitParam(p);
    if (seen.has(key)) return bad('duplicateParameter', shown(key));
    seen.add(key);
    switch (key) {
      case 'NOTIFY': {
        if (!offered.dsn) return bad('parameterNotSupported', 'NOTIFY');
        const items = (value ?? '').toUpperCase().split(',');
        const valid = items.every((i) => ['NEVER', 'SUCCESS', 'FAILURE', 'DELAY'].includes(i)) && new Set(items).size === items.length;
        if (!valid || (items.includes('NEVER') && items.length > 1)) return bad('badParameter', 'NOTIFY');
        out.notify = items.join(',');
        break;
      }
      case 'ORCPT': {
        if (!offered.dsn) return bad('parameterNotSupported', 'ORCPT');
        const m = value === null ? null : /^([A-Za-z0-9-]+);(.+)$/.exec(value);
        const decoded = m ? xtextDecode(m[2]!) : null;
        if (!m || decoded === null || decoded.length > 500) return bad('badParameter', 'ORCPT');
        out.orcpt = `${m[1]};${decoded}`;
        break;
      }
      default:
        return bad('unsupportedParameter', shown(key));
    }
  }
  if (/^postmaster$/i.test(out.address)) return { ok: out };
  if (!parseMailbox(out.address, utf8)) return bad('badRecipient');
  return { ok: out };
}
