/*
 * admin/json - the one place where the queue's records become the JSON that
 * Petrel writes for people and scripts: the HTTP API, every CLI `--json`, the
 * web viewer's data and its live event stream.
 *
 * The convention (CONTRACT.md, docs/admin.md "JSON conventions") is the event
 * log's: snake_case keys (`queue_id`, `message_id`, `next_attempt`) and times
 * as ISO 8601 UTC text (`2026-11-21T12:00:00.000Z`), `null` when there is no
 * such time. Counts stay numbers; durations for people (`oldest_age`) are
 * text. The TypeScript records of queue/store keep their camelCase names:
 * only what leaves the process is converted, here and nowhere else.
 *
 * Invariant: every function is a pure mapping of one record (no I/O), so a
 * list of any length is converted a record at a time.
 */
import type { AuditResult } from '../log/audit.js';
import type { AttemptTls, MailEvent } from '../log/events.js';
import type { ActionResult, DestinationOverride, DestinationSummary, MessageRecord, MessageStates, RecipientRecord, TrackResult } from '../queue/store.js';

/** iso - epoch ms as ISO 8601 UTC text; null for "no such time" (null, undefined, 0). */
export function iso(ms: number | null | undefined): string | null {
  return ms === null || ms === undefined || ms === 0 || !Number.isFinite(ms) ? null : new Date(ms).toISOString();
}

export interface MessageJson {
  queue_id: string;
  message_id: string;
  sender: string;
  envid: string | null;
  ret: 'FULL' | 'HDRS' | null;
  size: number;
  received_at: string | null;
  smtputf8: boolean;
  eight_bit: boolean;
  is_report: boolean;
  client: string;
  subject: string;
  recipient_count: number;
  quarantine: string;
  /** Sent with MAIL FROM ... REQUIRETLS (RFC 8689). */
  require_tls: boolean;
  /** Carries "TLS-Required: No" (RFC 8689 §5). */
  tls_required_no: boolean;
}

export function messageJson(m: MessageRecord): MessageJson {
  return {
    queue_id: m.queueId,
    message_id: m.messageId,
    sender: m.sender,
    envid: m.envid,
    ret: m.ret,
    size: m.size,
    received_at: iso(m.receivedAt),
    smtputf8: m.smtputf8,
    eight_bit: m.eightBit,
    is_report: m.isReport,
    client: m.client,
    subject: m.subject,
    recipient_count: m.recipientCount,
    quarantine: m.quarantine,
    require_tls: m.requireTls === true,
    tls_required_no: m.tlsRequiredNo === true,
  };
}

export interface RecipientJson {
  id: number;
  address: string;
  destination: string;
  state: string;
  attempts: number;
  /** Only for recipients waiting (queued, deferred); null otherwise. */
  next_attempt: string | null;
  last_attempt: string | null;
  last_reply: string;
  last_status: string;
  remote: string;
  /** The TLS of the last attempt ({tls, tls_failure?}, as in its event); null when none is known. */
  last_tls: AttemptTls | null;
  orcpt: string | null;
  notify: string | null;
  report: string | null;
  delay_notified: boolean;
  /** Held by an operator (suspend). */
  suspended: boolean;
  /** While delivering: the node whose claim holds it (a cluster); null otherwise. */
  node: string | null;
}

export function recipientJson(r: RecipientRecord): RecipientJson {
  const waiting = r.state === 'queued' || r.state === 'deferred';
  return {
    id: r.id,
    address: r.address,
    destination: r.destination,
    state: r.state,
    attempts: r.attempts,
    next_attempt: waiting ? iso(r.nextAttemptAt) : null,
    last_attempt: iso(r.lastAttemptAt),
    last_reply: r.lastReply,
    last_status: r.lastStatus,
    remote: r.remote,
    last_tls: r.lastTls ?? null,
    orcpt: r.orcpt,
    notify: r.notify,
    report: r.report,
    delay_notified: r.delayNotified,
    suspended: r.suspended,
    node: r.state === 'delivering' ? r.claimedBy ?? null : null,
  };
}

/** statesJson - a message's aggregates for a listing row (counts by state, destinations, next attempt). */
export function statesJson(s: MessageStates): { states: MessageStates['states']; destinations: string[]; suspended: number; next_attempt: string | null; last_reply: string } {
  return { states: s.states, destinations: s.destinations, suspended: s.suspended, next_attempt: iso(s.nextAttemptAt), last_reply: s.lastReply };
}

export interface DestinationJson {
  destination: string;
  recipients: number;
  messages: number;
  deferred: number;
  suspended: number;
  /** Arrival of its oldest waiting message. */
  oldest: string | null;
  /** How long ago that was, for people ("3h"). */
  oldest_age: string;
  last_reply: string;
  held: boolean;
  redirect: string | null;
}

export function destinationJson(d: DestinationSummary, oldestAge: string): DestinationJson {
  return {
    destination: d.destination,
    recipients: d.recipients,
    messages: d.messages,
    deferred: d.deferred,
    suspended: d.suspended,
    oldest: iso(d.oldest),
    oldest_age: oldestAge,
    last_reply: d.lastReply,
    held: d.held ?? false,
    redirect: d.redirect ?? null,
  };
}

export function actionJson(r: ActionResult): { changed: number; in_flight: number; queue_ids: string[] } {
  return { changed: r.changed, in_flight: r.inFlight, queue_ids: r.queueIds };
}

export function overrideJson(o: DestinationOverride): { destination: string; kind: string; to: string; by: string; reason: string; at: string | null } {
  return { destination: o.destination, kind: o.kind, to: o.to, by: o.by, reason: o.reason, at: iso(o.at) };
}

/** Events are written snake_case with ISO times already (log/events); passed as they are. */
export function eventJson(e: MailEvent): MailEvent {
  return e;
}

export function trackJson(t: TrackResult): { messages: Array<{ queue_id: string; events: MailEvent[] }>; next: number | null } {
  return { messages: t.messages.map((m) => ({ queue_id: m.queueId, events: m.events.map(eventJson) })), next: t.next };
}

/** auditJson - `petrel audit --json` in the same convention (log/audit's result, keys renamed). */
export function auditJson(r: AuditResult): Record<string, unknown> {
  return {
    events: r.events,
    first_seq: r.firstSeq,
    last_seq: r.lastSeq,
    messages: r.messages,
    recipients: r.recipients,
    by_state: r.byState,
    reports: r.reports,
    history_incomplete: r.historyIncomplete,
    exceptions: r.exceptions.map((x) => ({ kind: x.kind, queue_id: x.queueId, ...(x.recipient !== undefined ? { recipient: x.recipient } : {}), detail: x.detail })),
    seconds: r.seconds,
  };
}
