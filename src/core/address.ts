/*
 * core/address - mailbox syntax for the envelope (RFC 5321 §4.1.2, RFC 6531).
 *
 * Untrusted input: every MAIL/RCPT path and every address in pickup headers.
 * The local part is kept exactly as given (it is case-sensitive in principle);
 * the domain is lower-cased so routing and local-domain checks compare equal.
 */

export interface Mailbox {
  local: string;
  domain: string;
}

const ATEXT = "A-Za-z0-9!#$%&'*+\\-/=?^_`{|}~";
const DOT_ATOM = new RegExp(`^[${ATEXT}]+(\\.[${ATEXT}]+)*$`);
const QUOTED = /^"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"$/;
const DOMAIN = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const ADDRESS_LITERAL = /^\[(?:\d{1,3}(?:\.\d{1,3}){3}|IPv6:[0-9A-Fa-f:.]+)\]$/;

/** hasNonAscii - true when the text needs SMTPUTF8. */
export function hasNonAscii(text: string): boolean {
  // eslint-disable-next-line no-control-regex
  return /[^\x00-\x7f]/.test(text);
}

/**
 * parseMailbox - "user@example.com" -> { local, domain } or null.
 * With `utf8` (SMTPUTF8 was given), UTF-8 is allowed in both parts (RFC 6531 §3.3).
 */
export function parseMailbox(text: string, utf8 = false): Mailbox | null {
  if (text.length > 254 + 2) return null;
  const at = text.lastIndexOf('@');
  if (at <= 0 || at === text.length - 1) return null;
  const local = text.slice(0, at);
  const domain = text.slice(at + 1);
  if (local.length > 64 && !utf8) return null;
  if (!utf8 && (hasNonAscii(local) || hasNonAscii(domain))) return null;
  const asciiLocal = utf8 ? local.replace(/[^\x00-\x7f]/g, 'a') : local;
  const asciiDomain = utf8 ? domain.replace(/[^\x00-\x7f]/g, 'a') : domain;
  if (!DOT_ATOM.test(asciiLocal) && !QUOTED.test(asciiLocal)) return null;
  if (!DOMAIN.test(asciiDomain) && !ADDRESS_LITERAL.test(domain)) return null;
  return { local, domain: domain.toLowerCase() };
}

export function formatMailbox(m: Mailbox): string {
  return `${m.local}@${m.domain}`;
}

/** domainOf - the lower-cased domain of an address already known to be valid. */
export function domainOf(address: string): string {
  return address.slice(address.lastIndexOf('@') + 1).toLowerCase();
}

export function localPartOf(address: string): string {
  return address.slice(0, address.lastIndexOf('@'));
}

/** xtextDecode - RFC 3461 §4 xtext ("+2B" for "+"). */
export function xtextDecode(text: string): string | null {
  if (!/^(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*$/.test(text)) return null;
  return text.replace(/\+([0-9A-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
}

/** xtextEncode - the reverse, for passing ORCPT and ENVID on. */
export function xtextEncode(text: string): string {
  let out = '';
  for (const ch of text) {
    const c = ch.codePointAt(0)!;
    out += c >= 0x21 && c <= 0x7e && ch !== '+' && ch !== '=' ? ch : Buffer.from(ch, 'utf8').reduce((s, b) => s + '+' + b.toString(16).toUpperCase().padStart(2, '0'), '');
  }
  return out;
}
