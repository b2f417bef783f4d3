/*
 * log/events - the registry of mail events: every state change of every
 * recipient, and a few message-level events, each with a stable numeric id.
 *
 * Invariant: an id, once given, never changes or gets reused; docs/events.md
 * documents each one and a test checks that the two agree.
 */
import type { AuthFields, FilterFields } from '../checks/verdict-fields.js';

export const EVENT_IDS = {
  received: 1000,
  pickup_rejected: 1100,
  not_scanned: 1200,
  dnsbl_error: 1300,
  delivered: 2000,
  deferred: 3000,
  failed: 4000,
  expired: 4100,
  delay_notice: 5000,
  dsn_queued: 5100,
  quarantined: 6000,
  released: 6100,
  removed: 7000,
  suspended: 7100,
  resumed: 7200,
  retry_requested: 7300,
  redirected: 7400,
  throttled: 7500,
  unthrottled: 7600,
} as const;

export type EventName = keyof typeof EVENT_IDS;

/** Recipient states (STYLE.md §5). */
export const RECIPIENT_STATES = ['queued', 'delivering', 'delivered', 'deferred', 'failed', 'expired', 'quarantined', 'removed'] as const;
export type RecipientState = (typeof RECIPIENT_STATES)[number];

/** States a recipient never leaves. */
export const FINAL_STATES: ReadonlySet<RecipientState> = new Set(['delivered', 'failed', 'expired', 'removed']);

/**
 * One event, as stored and as written to data_dir/log/events.jsonl.
 * `seq` orders events and makes each one unique; `id` is the event kind's id.
 */
export interface MailEvent {
  seq?: number;
  ts: string;
  id: number;
  event: EventName;
  queue_id: string;
  message_id: string;
  sender: string;
  recipient?: string;
  attempt?: number;
  state?: RecipientState | string;
  remote?: string;
  reply?: string;
  error?: string;
  /** RFC 3463 status, on outcomes. */
  status?: string;
  /** Free-form detail: operator and reason, report queue id, "possible duplicate". */
  detail?: string;
  /** On `received` of checked mail: SPF, DKIM, DMARC, ARC results (checks/verdict-fields, from `remote`). */
  auth?: AuthFields;
  /** On `received` of mail scanned by rspamd: action, score, required score, symbols (or not scanned, why). */
  filter?: FilterFields;
  /**
   * On outcomes and removals: the report this change owes the sender
   * ("failed", "expired", "delayed", "delivered", "relayed") or "none" (no
   * report: the sender is <>, NOTIFY says so, or it was not asked for). The
   * fate audit checks every owed report was queued.
   */
  report?: string;
  /**
   * On attempt outcomes of SMTP (and LMTP over TCP) deliveries: the TLS of the
   * connection (null: plain text, or no connection was made).
   */
  tls?: EventTls | null;
  /** On an attempt a TLS policy decided (deferred 4.7.5), or one MTA-STS testing noted: which policy and why. */
  tls_failure?: EventTlsFailure;
}

/** The TLS of one connection, as events and `petrel queue show` write it (delivery/tls/outcome TlsOutcome). */
export interface EventTls {
  version: string;
  cipher: string;
  verified: boolean;
  /** opportunistic | required | verify | sts | tlsa */
  policy: string;
  policy_domain: string;
}

/** A TLS policy failure (delivery/tls/outcome TlsPolicyFailure); `type` is an RFC 8460 result type. */
export interface EventTlsFailure {
  policy: string;
  policy_domain: string;
  type: string;
  detail: string;
}

/** The TLS of a recipient's last attempt, as the queue keeps it (recipient record `lastTls`). */
export interface AttemptTls {
  tls: EventTls | null;
  tls_failure?: EventTlsFailure;
}

/** operatorDetail - the `detail` of an operator action's event: who and why (invariant 2). */
export function operatorDetail(op: { who: string; reason: string }, what = ''): string {
  return `${what ? `${what} ` : ''}by ${op.who || 'unknown operator'}: ${op.reason || 'no reason given'}`.slice(0, 2000);
}

let isoMs = NaN;
let isoText = '';
/**
 * isoTime - `new Date(ms).toISOString()`, formatted once per millisecond: a
 * delivery or an accepted message writes an event per recipient, mostly
 * within the same millisecond.
 */
export function isoTime(ms: number = Date.now()): string {
  if (ms !== isoMs) {
    isoText = new Date(ms).toISOString();
    isoMs = ms;
  }
  return isoText;
}

export function makeEvent(event: EventName, fields: Omit<MailEvent, 'id' | 'event' | 'ts'> & { ts?: string }): MailEvent {
  return { ts: fields.ts ?? isoTime(), id: EVENT_IDS[event], event, ...fields };
}
