/*
 * pickup/envelope - the envelope of a message that comes as a file (pickup)
 * or on standard input (sendmail -t), read from its header fields.
 *
 * - Sender: `X-Envelope-From` when present (one; "<>" is the null sender),
 *   else the first address of `From`.
 * - Recipients: every `X-Envelope-To` when present (each a comma-separated
 *   list), else every address in `To`, `Cc` and `Bcc` (groups included).
 * - `X-Envelope-From`, `X-Envelope-To` and `Bcc` are removed from the message
 *   (Bcc always: it must never reach the recipients).
 * - A bare local part ("bob") is taken to be in `defaultDomain`.
 *
 * Untrusted input: the header fields. Every address is checked with
 * core/address parseMailbox; anything unusable is an error naming it (the
 * caller moves the file to pickup/bad/ or exits EX_DATAERR), never guessed.
 */
import { parseAddressList } from '../core/address-list.js';
import { hasNonAscii, parseMailbox } from '../core/address.js';
import { headerValues, type HeaderField } from '../core/headers.js';

export interface HeaderEnvelope {
  /** "" is the null sender. */
  sender: string;
  recipients: string[];
  /** Lower-cased names of the fields to remove from the message. */
  remove: Set<string>;
  /** An address needs SMTPUTF8. */
  utf8: boolean;
}

/** qualify - "bob" -> "bob@<domain>"; checks the result; null when it is not an address. */
export function qualify(text: string, defaultDomain: string): string | null {
  const a = text.trim().replace(/^<(.*)>$/, '$1');
  const full = a.includes('@') ? a : `${a}@${defaultDomain}`;
  const m = parseMailbox(full, true);
  return m ? `${m.local}@${m.domain}` : null;
}

/** recipientsFrom - the addresses in these header values, qualified and de-duplicated (or the first bad one). */
export function recipientsFrom(values: readonly string[], defaultDomain: string): { recipients: string[] } | { error: string } {
  const recipients: string[] = [];
  const seen = new Set<string>();
  for (const v of values) {
    for (const a of parseAddressList(v)) {
      const q = qualify(a, defaultDomain);
      if (!q) return { error: `"${a.slice(0, 100)}" is not a valid address` };
      if (!seen.has(q.toLowerCase())) {
        seen.add(q.toLowerCase());
        recipients.push(q);
      }
    }
  }
  return { recipients };
}

/** senderFrom - the X-Envelope-From value (or a From value) as an envelope sender. */
function senderFrom(value: string, defaultDomain: string, envelope: boolean): string | { error: string } {
  const v = value.trim();
  if (envelope && (v === '<>' || v === '')) return '';
  const list = envelope ? [v] : parseAddressList(v);
  if (list.length === 0) return { error: 'From: names no address' };
  const q = qualify(list[0]!, defaultDomain);
  return q ?? { error: `sender "${list[0]!.slice(0, 100)}" is not a valid address` };
}

/** headerEnvelope - the envelope from the header fields, or why there is none. */
export function headerEnvelope(fields: readonly HeaderField[], defaultDomain: string): HeaderEnvelope | { error: string } {
  const remove = new Set(['x-envelope-from', 'x-envelope-to', 'bcc']);
  const envFrom = headerValues(fields, 'X-Envelope-From');
  if (envFrom.length > 1) return { error: 'more than one X-Envelope-From' };
  let sender: string | { error: string };
  if (envFrom.length === 1) sender = senderFrom(envFrom[0]!, defaultDomain, true);
  else {
    const from = headerValues(fields, 'From');
    if (from.length === 0) return { error: 'no sender: neither X-Envelope-From nor From is present' };
    sender = senderFrom(from[0]!, defaultDomain, false);
  }
  if (typeof sender !== 'string') return sender;
  const envTo = headerValues(fields, 'X-Envelope-To');
  const rcpt = recipientsFrom(envTo.length ? envTo : [...headerValues(fields, 'To'), ...headerValues(fields, 'Cc'), ...headerValues(fields, 'Bcc')], defaultDomain);
  if ('error' in rcpt) return rcpt;
  if (rcpt.recipients.length === 0) return { error: envTo.length ? 'X-Envelope-To names no address' : 'no recipients: no X-Envelope-To, and To, Cc and Bcc name no address' };
  return { sender, recipients: rcpt.recipients, remove, utf8: hasNonAscii(sender) || rcpt.recipients.some(hasNonAscii) };
}
