/*
 * core/dates - the date forms Petrel writes into mail (Received:, Date:,
 * X-Petrel-Envelope-Received:), shared by enqueue, pickup, sendmail and the
 * delivery connectors.
 *
 * Standards: RFC 5322 §3.3 (date-time), always written in UTC ("+0000").
 */

/** The last date formatted: the same instant is often written many times in a row. */
let last = { t: NaN, text: '' };

/** rfc5322Date - "Sat, 21 Nov 2026 11:00:00 +0000" (RFC 5322 §3.3), always UTC. */
export function rfc5322Date(d: Date): string {
  const t = d.getTime();
  if (t !== last.t) last = { t, text: d.toUTCString().replace(/GMT$/, '+0000') };
  return last.text;
}
