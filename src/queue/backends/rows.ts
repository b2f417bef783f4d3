/*
 * queue/backends/rows - what the SQL backends (sqlite, postgres) share about
 * their rows: the event row and its mapping to a MailEvent, and the message
 * columns they select. A column that is NULL is an absent field, never an
 * empty one (the event log writes only the fields an event has).
 */
import type { AttemptTls, MailEvent } from '../../log/events.js';

/** An `events` row, as both SQL backends store it. */
export interface EventRow {
  seq: number;
  ts: string;
  id: number;
  event: string;
  qid: string;
  message_id: string;
  sender: string;
  recipient: string | null;
  attempt: number | null;
  state: string | null;
  remote: string | null;
  reply: string | null;
  error: string | null;
  status: string | null;
  detail: string | null;
  report: string | null;
  /** JSON of the event's `tls` and `tls_failure` (AttemptTls); null or absent when it has neither. */
  tls?: string | null;
}

/** The columns of `messages` a MessageRecord is made from (the body and the open count are not among them). */
export const MESSAGE_COLUMNS = 'qid, message_id, sender, envid, ret, size, received_at, smtputf8, eight_bit, is_report, client, subject, rcpt_count, quarantine, require_tls, tls_required_no';

/** toEvent - an event row as the MailEvent it records. */
export function toEvent(r: EventRow): MailEvent {
  const e: MailEvent = { seq: r.seq, ts: r.ts, id: r.id, event: r.event as MailEvent['event'], queue_id: r.qid, message_id: r.message_id, sender: r.sender };
  if (r.recipient !== null) e.recipient = r.recipient;
  if (r.attempt !== null) e.attempt = r.attempt;
  if (r.state !== null) e.state = r.state;
  if (r.remote !== null) e.remote = r.remote;
  if (r.reply !== null) e.reply = r.reply;
  if (r.error !== null) e.error = r.error;
  if (r.status !== null) e.status = r.status;
  if (r.detail !== null) e.detail = r.detail;
  if (r.report !== null && r.report !== undefined) e.report = r.report;
  const t = parseAttemptTls(r.tls);
  if (t) {
    e.tls = t.tls;
    if (t.tls_failure) e.tls_failure = t.tls_failure;
  }
  return e;
}

/** attemptTlsColumn - an event's TLS fields as the JSON its `tls` column holds (null: it has none). */
export function eventTlsColumn(e: MailEvent): string | null {
  if (e.tls === undefined && e.tls_failure === undefined) return null;
  return JSON.stringify(e.tls_failure ? { tls: e.tls ?? null, tls_failure: e.tls_failure } : { tls: e.tls ?? null });
}

/** recipientTlsColumn - a recipient's lastTls as its `last_tls` column ('' clears it, null leaves it). */
export function recipientTlsColumn(t: AttemptTls | null | undefined): string | null {
  return t === undefined ? null : t === null ? '' : JSON.stringify(t);
}

/** parseAttemptTls - a `tls` / `last_tls` column back to its fields; a value that does not parse is none (never an error). */
export function parseAttemptTls(text: string | null | undefined): AttemptTls | null {
  if (!text) return null;
  try {
    const v = JSON.parse(text) as AttemptTls;
    return v && typeof v === 'object' && 'tls' in v ? v : null;
  } catch {
    return null;
  }
}
