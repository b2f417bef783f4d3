/*
 * dsn/fields - the machine-readable part of a report: the per-message and
 * per-recipient fields of message/delivery-status (RFC 3464 §2.2, §2.3) or,
 * when the original needed SMTPUTF8, message/global-delivery-status
 * (RFC 6533 §6.2), one block of fields at a time.
 *
 * Invariants:
 * - fields come in the order RFC 3464 gives; each is folded (dsn/mime) so no
 *   line passes 998 octets, and every block starts with its blank line;
 * - in message/delivery-status everything is US-ASCII: a non-ASCII address
 *   is written as "utf-8;" with \x{HEX} escapes (RFC 6533 §3,
 *   utf-8-addr-xtext), other non-ASCII text as "?"; in the global form UTF-8
 *   is written as it is (RFC 6533 §3 utf-8-address, §6.2);
 * - Status always has the class of the Action: 5.x.x for failed, 4.x.x for
 *   delayed, 2.x.x for delivered/relayed, and 4.4.7 for every expiry
 *   (CONTRACT "Delivery"), with the last error in Diagnostic-Code;
 * - Diagnostic-Code says "smtp;" only for a reply a remote server gave; a
 *   local error (DNS, connect, a missing directory, an alias loop) is written
 *   with Petrel's own diagnostic type, "X-Petrel;" (RFC 3464 §2.3.6 allows a
 *   diagnostic-type registered or "X-"; Postfix does the same with
 *   "X-Postfix;"), so no reader mistakes a local text for a peer's words.
 *
 * Untrusted input: remote replies, remote host names, ORCPT and ENVID as the
 * client gave them (cleaned of control characters, capped, folded).
 *
 * RFCs: 3461 §4.2 (ORCPT), 3463 (status codes), 3464, 5322 §2.2.3, 6533.
 */
import { domainToASCII } from 'node:url';
import type { MessageRecord, RecipientRecord, ReportKind } from '../queue/store.js';
import { asciiText, capText, cleanText, foldField, hasNonAscii } from './mime.js';
import { rfc5322Date } from '../core/dates.js';

/**
 * A recipient as the report reads it. `remoteReply` says whether lastReply
 * came from a remote server (RecipientResult.remoteReply); the store does not
 * keep it yet, so when it is absent isRemoteReply() infers it.
 */
export type ReportRecipient = RecipientRecord & { remoteReply?: boolean };

export type Action = 'failed' | 'delayed' | 'delivered' | 'relayed' | 'expanded';

/** RFC 3464 §2.3.3: the Action of each kind of report. */
export const ACTION: Record<ReportKind, Action> = {
  failed: 'failed',
  expired: 'failed',
  delayed: 'delayed',
  delivered: 'delivered',
  relayed: 'relayed',
  expanded: 'expanded',
};

/** Longest remote reply or local error quoted, in characters: a reply is never this long, a hostile one may be. */
export const MAX_DIAGNOSTIC = 2000;

const STATUS = /^([245])\.(\d{1,3})\.(\d{1,3})$/;

/** The class each kind's Status must have, and its generic code when there is nothing better. */
const CLASS: Record<ReportKind, { cls: '2' | '4' | '5'; generic: string }> = {
  failed: { cls: '5', generic: '5.0.0' },
  expired: { cls: '4', generic: '4.4.7' },
  delayed: { cls: '4', generic: '4.0.0' },
  delivered: { cls: '2', generic: '2.0.0' },
  relayed: { cls: '2', generic: '2.0.0' },
  expanded: { cls: '2', generic: '2.0.0' },
};

/** validStatus - the RFC 3463 code in `text`, or null. */
export function validStatus(text: string | null | undefined): string | null {
  const t = (text ?? '').trim();
  return STATUS.test(t) ? t : null;
}

/**
 * reportStatus - the Status field for a recipient in a report of `kind`:
 * always 4.4.7 for an expiry; otherwise its last status with the class of
 * the kind (a failure recorded as "4.4.1" is reported as "5.4.1").
 */
export function reportStatus(kind: ReportKind, lastStatus: string | null | undefined): string {
  if (kind === 'expired') return '4.4.7';
  const { cls, generic } = CLASS[kind];
  const s = validStatus(lastStatus);
  if (!s) return generic;
  if (cls === '2') return s[0] === '2' ? s : generic;
  return s[0] === cls ? s : `${cls}${s.slice(1)}`;
}

/** causeStatus - the status that says what went wrong last (for an expiry, the last error, not 4.4.7). */
export function causeStatus(kind: ReportKind, lastStatus: string | null | undefined): string {
  if (kind === 'expired') return validStatus(lastStatus) ?? '4.4.7';
  return reportStatus(kind, lastStatus);
}

/** Delivery agents that answer for themselves: `remote` names them, not a peer (delivery/agent). */
const LOCAL_AGENTS = new Set(['maildir', 'directory', 'local', 'petrel']);
const REPLY = /^[2-5]\d{2}(?:[ -]|$)/;

/** isLocalAgent - `remote` names one of Petrel's own delivery agents (or nothing), not a peer. */
export function isLocalAgent(remote: string): boolean {
  const first = cleanText(remote).split(' ')[0] ?? '';
  return first === '' || LOCAL_AGENTS.has(first.toLowerCase());
}

/**
 * isRemoteReply - did a remote server give lastReply? Uses `remoteReply`
 * when the record carries it; otherwise: the text has the form of an SMTP
 * reply ("550 ...") and `remote` names a peer, not a local agent.
 */
export function isRemoteReply(r: ReportRecipient): boolean {
  if (typeof r.remoteReply === 'boolean') return r.remoteReply && cleanText(r.lastReply ?? '') !== '';
  return !isLocalAgent(r.remote ?? '') && REPLY.test(cleanText(r.lastReply ?? ''));
}

const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;
const LITERAL = /^\[(?:\d{1,3}(?:\.\d{1,3}){3}|IPv6:[0-9A-Fa-f:.]+)\]$/;

/**
 * remoteMtaName - the name for "Remote-MTA: dns; NAME" from a `remote` such
 * as "mx1.example.com [192.0.2.1]" or "mx1.example.com:25": the host name
 * (an A-label when it was given in Unicode), or an address literal; null
 * when `remote` names no host (a socket path).
 */
export function remoteMtaName(remote: string): string | null {
  const token = cleanText(remote).split(' ')[0] ?? '';
  if (LITERAL.test(token)) return token;
  let host = token.replace(/:\d{1,5}$/, '');
  // An internationalised name is written as its A-label (RFC 5890): "dns;" names are ASCII.
  if (hasNonAscii(host)) host = domainToASCII(host);
  if (/^\d{1,3}(?:\.\d{1,3}){3}$/.test(host)) return `[${host}]`;
  if (HOSTNAME.test(host)) return host.replace(/\.$/, '');
  return null;
}

/** utf8Xtext - RFC 6533 utf-8-addr-xtext: QCHAR as is, everything else as \x{HEX}. */
export function utf8Xtext(address: string): string {
  let out = '';
  for (const ch of address) {
    const c = ch.codePointAt(0)!;
    const qchar = c >= 0x21 && c <= 0x7e && c !== 0x2b && c !== 0x3d && c !== 0x5c;
    out += qchar ? ch : `\\x{${c.toString(16).toUpperCase()}}`;
  }
  return out;
}

/** decodeEmbedded - \x{HEX} escapes (RFC 6533 EmbeddedUnicodeChar) to the characters they stand for. */
export function decodeEmbedded(text: string): string {
  return text.replace(/\\x\{([0-9A-Fa-f]{1,6})\}/g, (all, hex: string) => {
    const c = parseInt(hex, 16);
    return c <= 0x10ffff && (c < 0xd800 || c > 0xdfff) ? String.fromCodePoint(c) : all;
  });
}

/** parseTypedAddress - "rfc822;user@example" -> { type: "rfc822", address: "user@example" }. */
export function parseTypedAddress(text: string): { type: string; address: string } {
  const clean = cleanText(text);
  const semi = clean.indexOf(';');
  // An ORCPT without a type cannot pass inbound (RFC 3461 §4.2); read it as rfc822 if one ever does.
  if (semi < 0) return { type: 'rfc822', address: clean };
  return { type: clean.slice(0, semi).trim().toLowerCase(), address: clean.slice(semi + 1).trim() };
}

/**
 * A recipient's untrusted text cleaned once (control characters removed,
 * replies capped), shared by the human part and the machine part.
 */
export interface CleanRecipient {
  id: number;
  address: string;
  orcpt: { type: string; address: string } | null;
  /** Who answered or was tried ("mx.example.com [192.0.2.1]"); null when a local agent or nobody. */
  server: string | null;
  /** The last reply or local error, capped at MAX_DIAGNOSTIC characters. */
  reply: string;
  /** True when `reply` came from a remote server. */
  remoteReply: boolean;
  lastStatus: string;
  lastAttemptAt: number | null;
}

/** prepare - clean a recipient record for the report. */
export function prepare(r: ReportRecipient): CleanRecipient {
  const remote = cleanText(r.remote ?? '');
  const orcpt = r.orcpt !== null && r.orcpt !== undefined ? cleanText(r.orcpt) : '';
  return {
    id: r.id,
    address: cleanText(r.address ?? ''),
    orcpt: orcpt ? parseTypedAddress(orcpt) : null,
    server: isLocalAgent(remote) ? null : remote,
    reply: capText(cleanText(r.lastReply ?? ''), MAX_DIAGNOSTIC),
    remoteReply: isRemoteReply(r),
    lastStatus: r.lastStatus ?? '',
    lastAttemptAt: r.lastAttemptAt,
  };
}

/**
 * addressValue - "type; address" for Final-Recipient and Original-Recipient
 * under the rules of RFC 6533 §3 (see the file comment).
 */
export function addressValue(type: string, address: string, global: boolean): string {
  const t = type.toLowerCase();
  if (t === 'rfc822' || t === 'utf-8') {
    const raw = t === 'utf-8' ? decodeEmbedded(address) : address;
    if (t === 'rfc822' && !hasNonAscii(raw)) return `rfc822; ${raw}`;
    return `utf-8; ${global ? raw : utf8Xtext(raw)}`;
  }
  // An address type Petrel does not know (x400, unknown-address-type): as given.
  return `${asciiText(t)}; ${global ? address : asciiText(address)}`;
}

/** diagnosticValue - "smtp; 550 5.1.1 ..." or "X-Petrel; ...", or null when there is no text. */
export function diagnosticValue(reply: string, remote: boolean, global: boolean): string | null {
  const text = capText(cleanText(reply), MAX_DIAGNOSTIC);
  if (!text) return null;
  return `${remote ? 'smtp' : 'X-Petrel'}; ${global ? text : asciiText(text)}`;
}

/** field - one folded field line, CRLF-terminated. */
function field(name: string, value: string): string {
  return `${foldField(name, value)}\r\n`;
}

/** perMessageFields - the first block (RFC 3464 §2.2), CRLF-terminated lines. */
export function perMessageFields(m: MessageRecord, hostname: string, global: boolean): string {
  const text = (v: string): string => (global ? cleanText(v) : asciiText(cleanText(v)));
  let out = '';
  if (m.envid !== null && cleanText(m.envid) !== '') out += field('Original-Envelope-Id', capText(text(m.envid), 200));
  out += field('Reporting-MTA', `dns; ${text(hostname)}`);
  out += field('Arrival-Date', rfc5322Date(new Date(m.receivedAt)));
  out += field('X-Petrel-Queue-ID', text(m.queueId));
  return out;
}

export interface RecipientFieldsContext {
  kind: ReportKind;
  global: boolean;
  /** Will-Retry-Until, for a delay warning. */
  retryUntil?: number;
}

/** recipientFields - one per-recipient block (RFC 3464 §2.3), starting with its blank line. */
export function recipientFields(r: CleanRecipient, c: RecipientFieldsContext): string {
  let out = '\r\n';
  if (r.orcpt) out += field('Original-Recipient', addressValue(r.orcpt.type, r.orcpt.address, c.global));
  out += field('Final-Recipient', addressValue('rfc822', r.address, c.global));
  out += field('Action', ACTION[c.kind]);
  out += field('Status', reportStatus(c.kind, r.lastStatus));
  const mta = r.remoteReply && r.server ? remoteMtaName(r.server) : null;
  if (mta) out += field('Remote-MTA', `dns; ${mta}`);
  const diagnostic = diagnosticValue(r.reply, r.remoteReply, c.global);
  if (diagnostic) out += field('Diagnostic-Code', diagnostic);
  if (r.lastAttemptAt !== null && Number.isFinite(r.lastAttemptAt)) out += field('Last-Attempt-Date', rfc5322Date(new Date(r.lastAttemptAt)));
  if (c.kind === 'delayed' && c.retryUntil !== undefined && Number.isFinite(c.retryUntil)) {
    out += field('Will-Retry-Until', rfc5322Date(new Date(c.retryUntil)));
  }
  return out;
}
