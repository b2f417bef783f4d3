/*
 * admin/actions - every operator read and action, in one place, shaped as the
 * JSON the admin API returns (records converted by admin/json: snake_case
 * keys, ISO 8601 UTC times). The HTTP routes call it on the running server;
 * the CLI calls it directly on the queue store when the server is not
 * running — so both answer alike.
 *
 * Invariants:
 * - every action names its operator and reason, which the store writes into
 *   each event's `detail` in the same transaction as the change;
 * - every list is a bounded page with a cursor (`next`); nothing here loads
 *   the whole queue or the whole event log;
 * - an action takes effect on the running server at once: the store wakes the
 *   scheduler (onDue), redirects go into the live router, and failure reports
 *   asked for by `delete --ndr` are made straight away.
 *
 * Untrusted input: every argument (from URLs, JSON bodies, the command line)
 * is checked here; a bad one is an AdminError with status 400.
 */
import type { ProviderSnapshot } from '../delivery/smtp/shaping.js';
import { parseEndpoint } from '../config/schema.js';
import { formatAge, parseDuration } from '../core/units.js';
import { isQueueId, normalizeMessageId } from '../core/ids.js';
import { RECIPIENT_STATES, type MailEvent, type RecipientState } from '../log/events.js';
import type { ActionResult, ListFilter, MessageRecord, Operator, QueueStore, Target } from '../queue/store.js';
import type { Router } from '../routing/router.js';
import { reportWanted } from '../dsn/policy.js';
import { actionJson, destinationJson, messageJson, overrideJson, recipientJson, statesJson, trackJson, type DestinationJson, type MessageJson, type RecipientJson } from './json.js';
import { queueAges, type AgesView } from './ages.js';

/** An answer that is not a success: HTTP status and a message for people. */
export class AdminError extends Error {
  constructor(
    readonly status: 400 | 404 | 405 | 409 | 503,
    message: string,
  ) {
    super(message);
    this.name = 'AdminError';
  }
}

export const DEFAULT_PAGE = 50;
export const MAX_PAGE = 500;

export interface ActionsDeps {
  store: QueueStore;
  /** The running server's router (redirects take effect at once); absent offline. */
  router?: Router;
  /** Makes pending reports now (delete --ndr); absent offline: made at the next start. */
  report?: (queueId: string) => Promise<void>;
  /**
   * Called with the destinations an operator's retry applies to, before their
   * recipients are made due: the running server ends the delivery back-off of
   * their next hops there (an operator's retry always makes a real attempt at
   * once). Absent offline.
   */
  onRetry?: (destinations: string[]) => void | Promise<void>;
  /** Sends one UTC day's TLS reports now (tlsrpt/sender); absent offline: only the running server sends them. */
  tlsrptSend?: (day: string, force: boolean) => Promise<unknown[]>;
  /**
   * resume of a destination that names a suspended shaping provider: ends its
   * suspension and returns the destinations whose recipients were put back
   * meanwhile (made due now); null: no such suspension.
   */
  onResumeProvider?: (name: string) => string[] | null;
  /** The shaping providers as shown by `petrel queue` (live, not cached). */
  shaping?: () => ProviderSnapshot[];
  now?: () => number;
}

/** The JSON of actions (snake_case, ISO times: admin/json). */
export type ActionJson = ReturnType<typeof actionJson>;

export interface SummaryView {
  destinations: DestinationJson[];
  total: { recipients: number; messages: number };
  /** Traffic-shaping providers met so far, live (delivery/smtp/shaping); absent when shaping is off. */
  providers?: ProviderSnapshot[];
}

/** A listing row: the envelope, counts by state, and the first recipients (folded: `recipients_more`). */
export interface MessageView extends MessageJson, ReturnType<typeof statesJson> {
  recipients: RecipientJson[];
  /** Recipients of the message not in `recipients` (0 when all are there). */
  recipients_more: number;
  /** Cursor for the rest: `/api/messages/QUEUE_ID?recipients_after=N`; null when all are there. */
  recipients_next: number | null;
}

export interface ListPage {
  messages: MessageView[];
  next: string | null;
}

export interface ShowView {
  /** Null when the message has left the queue (its events remain, for tracking). */
  message: MessageJson | null;
  recipients: RecipientJson[];
  recipients_next: number | null;
  events: MailEvent[];
  events_next: number | null;
}

/** Recipients shown per message in a listing unless `recipients=N` says otherwise (0 to 1000). */
export const LIST_RECIPIENTS = 20;
export const MAX_LIST_RECIPIENTS = 1000;

/** Raw query parameters, as strings (URL search params or CLI flags). */
export type Params = Record<string, string | undefined>;

/** pageSize - the `limit` parameter, bounded. */
export function pageSize(raw: string | undefined, def = DEFAULT_PAGE): number {
  if (raw === undefined || raw === '') return def;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new AdminError(400, `limit must be a whole number from 1 to ${MAX_PAGE}`);
  return Math.min(n, MAX_PAGE);
}

export function checkQueueId(id: string | undefined): string {
  if (!id || !isQueueId(id)) throw new AdminError(400, `not a queue id: ${JSON.stringify(id ?? '')} (16 characters, e.g. 1M7YZRKW60M0GRV1)`);
  return id;
}

function checkDestination(d: string | undefined): string {
  const v = (d ?? '').trim().toLowerCase();
  // A name (domain, [host]:port), never a path; no control octets (they would reach terminals and the viewer).
  if (!v || v.length > 300 || /[\s/\\\x00-\x1f\x7f]/.test(v)) throw new AdminError(400, `not a destination: ${JSON.stringify(d ?? '')}`);
  return v;
}

/** target - a queue id or a destination, exactly one. */
export function targetOf(p: Params): Target {
  if (p.destination !== undefined && p.queue_id !== undefined) throw new AdminError(400, 'give a queue id or a destination, not both');
  if (p.destination !== undefined) return { destination: checkDestination(p.destination) };
  return { queueId: checkQueueId(p.queue_id) };
}

export function operatorOf(who: string | undefined, reason: string | undefined): Operator {
  const clean = (s: string | undefined, max: number): string => (s ?? '').replace(/[\x00-\x1f\x7f]/g, ' ').trim().slice(0, max);
  return { who: clean(who, 200) || 'unknown operator', reason: clean(reason, 1000) || 'no reason given' };
}

/** listFilter - the message list's filters from query parameters. */
export function listFilter(p: Params, now: number): ListFilter {
  const f: ListFilter = { limit: pageSize(p.limit) };
  if (p.destination) f.destination = checkDestination(p.destination);
  if (p.state) {
    if (!(RECIPIENT_STATES as readonly string[]).includes(p.state)) throw new AdminError(400, `state must be one of ${RECIPIENT_STATES.join(', ')}`);
    f.state = p.state as RecipientState;
  }
  if (p.sender !== undefined && p.sender !== '') f.sender = p.sender === '<>' ? '' : p.sender.replace(/^<(.*)>$/, '$1');
  if (p.recipient) f.recipient = p.recipient.replace(/^<(.*)>$/, '$1');
  if (p.message_id) f.messageId = normalizeMessageId(p.message_id);
  if (p.older_than) {
    const d = parseDuration(p.older_than);
    if (d === null) throw new AdminError(400, `older_than must be a duration such as "30m", "1h" or "2d" (got "${p.older_than}")`);
    f.olderThan = d;
  }
  if (p.quarantined === '1' || p.quarantined === 'true') f.quarantined = true;
  if (p.after) f.after = checkQueueId(p.after);
  void now;
  return f;
}

/** sinceOf - "--since 2h" (a duration ago) or an ISO 8601 time, as ISO text. */
export function sinceOf(raw: string | undefined, now: number): string | undefined {
  if (raw === undefined || raw === '') return undefined;
  const d = parseDuration(raw);
  if (d !== null) return new Date(now - d).toISOString();
  const t = Date.parse(raw);
  if (Number.isNaN(t)) throw new AdminError(400, `since must be a duration ("2h") or a time ("2026-11-21T12:00:00Z") (got "${raw}")`);
  return new Date(t).toISOString();
}

export class AdminActions {
  private readonly now: () => number;
  /**
   * The summary groups the whole queue (about 0.6 s at 100,000 recipients), and
   * every open viewer polls it: an answer is reused for max(1 s, 5 x what it
   * cost), so summaries never take more than a sixth of the event loop. Any
   * action clears it.
   */
  private summaryCache: { at: number; took: number; value: Promise<SummaryView> } | null = null;

  constructor(private readonly deps: ActionsDeps) {
    this.now = deps.now ?? Date.now;
  }

  get store(): QueueStore {
    return this.deps.store;
  }

  /** summary - the queue by destination, like qshape (cached briefly; see summaryCache). */
  summary(): Promise<SummaryView> {
    const shaping = this.deps.shaping;
    if (!shaping) return this.queueSummary();
    return this.queueSummary().then((v) => ({ ...v, providers: shaping() }));
  }

  private queueSummary(): Promise<SummaryView> {
    const now = this.now();
    const c = this.summaryCache;
    if (c && now - c.at < Math.max(1000, c.took * 5)) return c.value;
    const entry = { at: now, took: 0, value: this.computeSummary() };
    this.summaryCache = entry;
    entry.value.then(
      () => (entry.took = this.now() - now),
      () => {
        if (this.summaryCache === entry) this.summaryCache = null;
      },
    );
    return entry.value;
  }

  private async computeSummary(): Promise<SummaryView> {
    const now = this.now();
    const destinations = (await this.deps.store.summary()).map((d) => destinationJson(d, d.oldest ? formatAge(now - d.oldest) : ''));
    const total = destinations.reduce((t, d) => ({ recipients: t.recipients + d.recipients, messages: t.messages + d.messages }), { recipients: 0, messages: 0 });
    return { destinations, total };
  }

  /** tlsrptSend - `petrel tlsrpt send`: one UTC day's TLS reports (default yesterday) queued now; what happened per domain. */
  async tlsrptSend(date: string | undefined, force: boolean): Promise<{ date: string; reports: unknown[] }> {
    if (!this.deps.tlsrptSend) throw new AdminError(503, 'TLS reports are sent by the running server, and it does not answer: start it (it also sends yesterday\'s reports by itself)');
    const day = date ?? new Date(this.now() - 86_400_000).toISOString().slice(0, 10);
    if (!/^\d{4}-\d{2}-\d{2}$/.test(day) || Number.isNaN(Date.parse(`${day}T00:00:00Z`)) || new Date(`${day}T00:00:00Z`).toISOString().slice(0, 10) !== day) throw new AdminError(400, `date must be a day as YYYY-MM-DD (got ${JSON.stringify(day).slice(0, 40)})`);
    if (day > new Date(this.now()).toISOString().slice(0, 10)) throw new AdminError(400, `${day} is in the future`);
    return { date: day, reports: await this.deps.tlsrptSend(day, force) };
  }

  /**
   * cluster - the nodes sharing this queue (one on a single node): name, last
   * heartbeat, start, recipients in flight, alive (heartbeat within the lease).
   * Snake case and ISO times, as the event log (CONTRACT.md).
   */
  async cluster(): Promise<{ nodes: Array<{ name: string; heartbeat_at: string; started_at: string; in_flight: number; alive: boolean }> }> {
    const nodes = await this.deps.store.nodes();
    return {
      nodes: nodes.map((n) => ({ name: n.name, heartbeat_at: new Date(n.heartbeatAt).toISOString(), started_at: new Date(n.startedAt).toISOString(), in_flight: n.inFlight, alive: n.alive })),
    };
  }

  /** ages - recipients per destination by age bucket, like Postfix's qshape (admin/ages: a page-wise scan). */
  ages(): Promise<AgesView> {
    return queueAges(this.deps.store, this.now());
  }

  /**
   * list - one page of messages matching the filters; `next` continues. Each
   * message carries its first `recipients` recipients (default
   * LIST_RECIPIENTS, in id order, whatever their state: the filters choose
   * messages) and how many more it has.
   */
  async list(p: Params): Promise<ListPage> {
    const filter = listFilter(p, this.now());
    let per = LIST_RECIPIENTS;
    if (p.recipients !== undefined && p.recipients !== '') {
      per = Number(p.recipients);
      if (!Number.isInteger(per) || per < 0) throw new AdminError(400, `recipients must be a whole number from 0 to ${MAX_LIST_RECIPIENTS}`);
      per = Math.min(per, MAX_LIST_RECIPIENTS);
    }
    const rows = await this.deps.store.list({ ...filter, limit: filter.limit + 1 });
    const page = rows.slice(0, filter.limit);
    const states = await this.deps.store.messageStates(page.map((m) => m.queueId));
    const messages: MessageView[] = [];
    for (const [i, m] of page.entries()) {
      const rs = per > 0 ? await this.deps.store.recipientPage(m.queueId, 0, per + 1) : [];
      const shown = rs.slice(0, per);
      messages.push({
        ...messageJson(m),
        ...statesJson(states[i]!),
        recipients: shown.map(recipientJson),
        recipients_more: Math.max(0, m.recipientCount - shown.length),
        recipients_next: rs.length > per && per > 0 ? shown[shown.length - 1]!.id : null,
      });
    }
    return { messages, next: rows.length > filter.limit ? page[page.length - 1]!.queueId : null };
  }

  /** show - one message: envelope, a page of recipients, a page of its events. */
  async show(queueId: string, p: Params = {}): Promise<ShowView> {
    checkQueueId(queueId);
    const limit = pageSize(p.limit, MAX_PAGE);
    const afterRcpt = p.recipients_after ? Number(p.recipients_after) : 0;
    const afterSeq = p.events_after ? Number(p.events_after) : 0;
    if (!Number.isInteger(afterRcpt) || !Number.isInteger(afterSeq)) throw new AdminError(400, 'recipients_after and events_after are numbers');
    const message = await this.deps.store.getMessage(queueId);
    const recipients = message ? await this.deps.store.recipientPage(queueId, afterRcpt, limit + 1) : [];
    const events = await this.deps.store.eventsOf(queueId, afterSeq, 1001);
    if (!message && events.length === 0) throw new AdminError(404, `no message ${queueId} in the queue or the event log`);
    return {
      message: message ? messageJson(message) : null,
      recipients: recipients.slice(0, limit).map(recipientJson),
      recipients_next: recipients.length > limit ? recipients[limit - 1]!.id : null,
      events: events.slice(0, 1000),
      events_next: events.length > 1000 ? events[999]!.seq ?? null : null,
    };
  }

  private async needMessage(queueId: string): Promise<MessageRecord> {
    const m = await this.deps.store.getMessage(checkQueueId(queueId));
    if (!m) throw new AdminError(404, `no message ${queueId} in the queue`);
    return m;
  }

  private async needTarget(t: Target): Promise<void> {
    if ('queueId' in t) await this.needMessage(t.queueId);
  }

  /**
   * retry - make the target's waiting recipients due now. The server's
   * back-off for their next hops ends first (onRetry), so the scheduler, woken
   * by the store, makes a real attempt at once rather than meeting the
   * back-off of a destination that failed to connect a moment ago.
   */
  async retry(t: Target, op: Operator): Promise<ActionJson> {
    this.summaryCache = null;
    await this.needTarget(t);
    await this.retryHook(t);
    return actionJson(await this.deps.store.retryNow(t, op));
  }

  private async retryHook(t: Target): Promise<void> {
    if (!this.deps.onRetry) return;
    const destinations = 'destination' in t ? [t.destination] : ((await this.deps.store.messageStates([t.queueId]))[0]?.destinations ?? []);
    if (destinations.length) await this.deps.onRetry(destinations);
  }

  async suspend(t: Target, op: Operator): Promise<ActionJson> {
    this.summaryCache = null;
    await this.needTarget(t);
    return actionJson(await this.deps.store.suspend(t, op));
  }

  async resume(t: Target, op: Operator): Promise<ActionJson> {
    this.summaryCache = null;
    // A provider suspended by a "blocked" reply (delivery/smtp/shaping): its jobs wait in flight, none is held in the store.
    const held = 'destination' in t ? (this.deps.onResumeProvider?.(t.destination) ?? null) : null;
    if ('destination' in t && held) {
      // Its recipients were put back until the suspension's end: they go now.
      const sum: ActionResult = { changed: 0, inFlight: 0, queueIds: [] };
      for (const destination of held) {
        const r = await this.deps.store.retryNow({ destination }, op);
        sum.changed += r.changed;
        sum.inFlight += r.inFlight;
        if (sum.queueIds.length < 1000) sum.queueIds.push(...r.queueIds.slice(0, 1000 - sum.queueIds.length));
      }
      const j: ActionJson & { provider: string } = { ...actionJson(sum), provider: t.destination };
      return j;
    }
    await this.needTarget(t);
    return actionJson(await this.deps.store.resume(t, op));
  }

  /** remove - delete a message's unfinished recipients, with a failure report (ndr) or silently. */
  async remove(queueId: string, op: Operator, ndr: boolean): Promise<ActionJson> {
    this.summaryCache = null;
    await this.needMessage(queueId);
    const res = await this.deps.store.remove(queueId, op, ndr ? (m, r) => reportWanted(m, r, 'FAILURE') : false);
    if (ndr && res.changed && this.deps.report) await this.deps.report(queueId);
    return actionJson(res);
  }

  /** release - a quarantined message back into the queue. */
  async release(queueId: string, op: Operator): Promise<ActionJson> {
    this.summaryCache = null;
    const m = await this.needMessage(queueId);
    if (!m.quarantine) throw new AdminError(409, `message ${queueId} is not quarantined`);
    return actionJson(await this.deps.store.release(queueId, op));
  }

  /** quarantineDelete - remove a quarantined message (removed events, never silent in the log). */
  async quarantineDelete(queueId: string, op: Operator, ndr: boolean): Promise<ActionJson> {
    const m = await this.needMessage(queueId);
    if (!m.quarantine) throw new AdminError(409, `message ${queueId} is not quarantined`);
    return this.remove(queueId, op, ndr);
  }

  /** redirect - send a destination's mail to host:port from now on ("" or null ends it), and try it now. */
  async redirect(destination: string, to: string | null, op: Operator): Promise<{ destination: string; to: string | null; retried: number }> {
    this.summaryCache = null;
    const dest = checkDestination(destination);
    let ep: { host: string; port: number } | null = null;
    if (to !== null && to !== '') {
      ep = parseEndpoint(to.trim());
      if (!ep || ep.port === 0) throw new AdminError(400, `to must be "host:port" (got "${to}")`);
    }
    const text = ep ? `${ep.host.includes(':') ? `[${ep.host}]` : ep.host}:${ep.port}` : null;
    await this.deps.store.redirect(dest, text, op);
    this.deps.router?.setRedirect(dest, ep);
    await this.retryHook({ destination: dest });
    const res = await this.deps.store.retryNow({ destination: dest }, op);
    return { destination: dest, to: text, retried: res.changed };
  }

  async overrides() {
    return { overrides: (await this.deps.store.overrides()).map(overrideJson) };
  }

  /** quarantine - a page of quarantined messages. */
  async quarantine(p: Params): Promise<ListPage> {
    return this.list({ after: p.after, limit: p.limit, quarantined: '1' });
  }

  /** track - every event of the messages matching a message id, sender, recipient or queue id. */
  async track(p: Params): Promise<ReturnType<typeof trackJson>> {
    const q = {
      limit: pageSize(p.limit, 100),
      ...(p.message_id ? { messageId: normalizeMessageId(p.message_id) } : {}),
      ...(p.sender !== undefined && p.sender !== '' ? { sender: p.sender === '<>' ? '' : p.sender } : {}),
      ...(p.recipient ? { recipient: p.recipient } : {}),
      ...(p.queue_id ? { queueId: checkQueueId(p.queue_id) } : {}),
    };
    if (!('messageId' in q) && !('sender' in q) && !('recipient' in q) && !('queueId' in q)) {
      throw new AdminError(400, 'track needs message_id, sender, recipient or queue_id');
    }
    const since = sinceOf(p.since, this.now());
    const before = p.before ? Number(p.before) : undefined;
    if (before !== undefined && !Number.isInteger(before)) throw new AdminError(400, 'before must be a number (the `next` of the previous page)');
    return trackJson(await this.deps.store.track({ ...q, ...(since ? { since } : {}), ...(before !== undefined ? { beforeSeq: before } : {}) }));
  }
}
