/*
 * core/dates - the date forms Petrel writes into mail (Received:, Date:,
 * X-Petrel-Envelope-Received:), shared by enqueue, pickup, sendmail and the
 * delivery connectors.
 *
 * Standards: RFC 5322 §3.3 (date-time), always written in UTC ("+0000").
 */

/**
 * The last second formatted: the form has no fraction of a second, so every
 * message received within one second (hundreds, under load) writes the same
 * text; it is made once per second, not once per message.
 */
let last = { s: NaN, text: '' };

/** rfc5322Date - "Sat, 21 Nov 2026 11:00:00 +0000" (RFC 5322 §3.3), always UTC. */
export function rfc5322Date(d: Date): string {
  const s = Math.floor(d.getTime() / 1000);
  if (s !== last.s) last = { s, text: d.toUTCString().replace(/GMT$/, '+0000') };
  return last.text;
}
