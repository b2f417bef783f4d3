/*
 * enqueue/received - the Received: header Petrel adds to every message it
 * accepts (RFC 5321 §4.4, protocol names from RFC 3848).
 *
 * Untrusted input: the HELO name, which is copied only after replacing
 * anything outside printable ASCII and the characters that would change the
 * header's structure.
 */
import { rfc5322Date } from '../core/dates.js';

export interface ReceivedInfo {
  helo: string;
  ip: string;
  hostname: string;
  queueId: string;
  protocol: string;
  /** Named only when there is exactly one recipient (others stay private). */
  recipient: string | null;
  tls: string | null;
  date: Date;
}

function safe(text: string): string {
  return text.replace(/[^\x21-\x7e]|[()<>;[\]\\"]/g, '_').slice(0, 255);
}

/** protocolName - ESMTP, ESMTPS, ESMTPA, ESMTPSA, UTF8SMTPS, ... (RFC 3848, RFC 6531 §3.7.3). */
export function protocolName(opts: { esmtp: boolean; tls: boolean; auth: boolean; utf8: boolean }): string {
  if (!opts.esmtp) return 'SMTP';
  return `${opts.utf8 ? 'UTF8SMTP' : 'ESMTP'}${opts.tls ? 'S' : ''}${opts.auth ? 'A' : ''}`;
}

export function receivedHeader(r: ReceivedInfo): string {
  const from = r.helo ? `from ${safe(r.helo)} ([${r.ip}])` : `from [${r.ip}]`;
  const tls = r.tls ? ` (${r.tls.replace(/[^\x20-\x7e]|[()]/g, '_')})` : '';
  const forClause = r.recipient ? `\r\n\tfor <${r.recipient.replace(/[^\x21-\x7e]/g, '_')}>` : '';
  return `Received: ${from}\r\n\tby ${r.hostname} (Petrel) with ${r.protocol} id ${r.queueId}${tls}${forClause};\r\n\t${rfc5322Date(r.date)}\r\n`;
}
