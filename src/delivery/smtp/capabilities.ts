/*
 * delivery/smtp/capabilities - what a next hop says it can do, read from its
 * EHLO (or LHLO) reply.
 *
 * Untrusted input: the reply lines of a remote server. Unknown keywords are
 * ignored; a malformed SIZE or LIMITS value is treated as not advertised.
 * RFCs: 5321 §4.1.1.1 (EHLO), 1870 (SIZE), 2920 (PIPELINING), 6152 (8BITMIME),
 * 6531 (SMTPUTF8), 3461 (DSN), 3207 (STARTTLS), 2034 (ENHANCEDSTATUSCODES),
 * 9422 (LIMITS RCPTMAX), 8689 (REQUIRETLS).
 */
import type { SmtpReply } from '../../core/smtp-reply.js';

export interface Capabilities {
  /** EHLO/LHLO was answered 250 (false after a HELO fallback: no extensions). */
  esmtp: boolean;
  pipelining: boolean;
  /** SIZE limit in octets; 0 when SIZE is offered without a limit; null when not offered. */
  size: number | null;
  eightBitMime: boolean;
  smtputf8: boolean;
  dsn: boolean;
  starttls: boolean;
  enhancedStatusCodes: boolean;
  /** LIMITS RCPTMAX=n (RFC 9422 §4.2); null when not advertised. */
  rcptMax: number | null;
  /** REQUIRETLS (RFC 8689): meaningful only when offered over TLS. */
  requireTls: boolean;
}

export const NO_CAPABILITIES: Capabilities = {
  esmtp: false,
  pipelining: false,
  size: null,
  eightBitMime: false,
  smtputf8: false,
  dsn: false,
  starttls: false,
  enhancedStatusCodes: false,
  rcptMax: null,
  requireTls: false,
};

/** parseCapabilities - the extensions in an EHLO/LHLO 250 reply (the first line is the greeting name). */
export function parseCapabilities(reply: SmtpReply): Capabilities {
  const caps: Capabilities = { ...NO_CAPABILITIES, esmtp: true };
  for (const line of reply.lines.slice(1)) {
    const words = line.trim().split(/\s+/);
    const keyword = (words[0] ?? '').toUpperCase();
    switch (keyword) {
      case 'PIPELINING':
        caps.pipelining = true;
        break;
      case 'SIZE': {
        const v = words[1] === undefined ? 0 : /^\d{1,15}$/.test(words[1]) ? Number(words[1]) : null;
        caps.size = v;
        break;
      }
      case '8BITMIME':
        caps.eightBitMime = true;
        break;
      case 'SMTPUTF8':
        caps.smtputf8 = true;
        break;
      case 'DSN':
        caps.dsn = true;
        break;
      case 'STARTTLS':
        caps.starttls = true;
        break;
      case 'ENHANCEDSTATUSCODES':
        caps.enhancedStatusCodes = true;
        break;
      case 'REQUIRETLS':
        caps.requireTls = true;
        break;
      case 'LIMITS':
        for (const w of words.slice(1)) {
          const m = /^RCPTMAX=(\d{1,9})$/i.exec(w);
          if (m && Number(m[1]) > 0) caps.rcptMax = Number(m[1]);
        }
        break;
      default:
        break;
    }
  }
  return caps;
}
