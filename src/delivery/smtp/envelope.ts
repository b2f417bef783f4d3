/*
 * delivery/smtp/envelope - the MAIL FROM and RCPT TO parameters Petrel sends,
 * chosen from what the message needs and what the next hop offers.
 *
 * Invariants: an extension's parameter is sent only when the next hop
 * advertised the extension (RFC 5321 §4.1.1.11 forbids others); ENVID and
 * ORCPT are xtext-encoded (RFC 3461 §4). The decision to fail an SMTPUTF8
 * message (5.6.7) is the session's; this module only builds text.
 *
 * Untrusted input: envelope values that came from a client (already checked
 * at reception; xtext encoding keeps them from breaking the command line).
 * RFCs: 1870 (SIZE), 6152 (8BITMIME), 6531 (SMTPUTF8), 3461 (DSN), 8689
 * (REQUIRETLS: whether the message may go at all is require-tls.ts's call).
 */
import { hasNonAscii, xtextEncode } from '../../core/address.js';
import type { MessageMeta, RecipientRecord } from '../../queue/store.js';
import type { Capabilities } from './capabilities.js';

/** needsSmtpUtf8 - the message was received with SMTPUTF8 or its sender is not ASCII. */
export function needsSmtpUtf8(message: MessageMeta): boolean {
  return message.smtputf8 || hasNonAscii(message.sender);
}

/** mailParams - " SIZE=n BODY=8BITMIME SMTPUTF8 REQUIRETLS RET=.. ENVID=.." as far as offered. */
export function mailParams(message: MessageMeta, caps: Capabilities, smtputf8: boolean): string {
  let p = '';
  if (caps.size !== null) p += ` SIZE=${message.size}`;
  // An 8-bit message to a peer without 8BITMIME is sent anyway, unconverted (as Postfix does by default).
  if (message.eightBit && caps.eightBitMime) p += ' BODY=8BITMIME';
  if (smtputf8) p += ' SMTPUTF8';
  if (message.requireTls && caps.requireTls) p += ' REQUIRETLS';
  if (caps.dsn) {
    if (message.ret) p += ` RET=${message.ret}`;
    if (message.envid) p += ` ENVID=${xtextEncode(message.envid)}`;
  }
  return p;
}

/** rcptParams - " NOTIFY=.. ORCPT=type;xtext" when the next hop offers DSN. */
export function rcptParams(r: RecipientRecord, caps: Capabilities): string {
  if (!caps.dsn) return '';
  let p = '';
  if (r.notify) p += ` NOTIFY=${r.notify}`;
  if (r.orcpt) {
    const i = r.orcpt.indexOf(';');
    if (i > 0) p += ` ORCPT=${r.orcpt.slice(0, i)};${xtextEncode(r.orcpt.slice(i + 1))}`;
  }
  return p;
}
