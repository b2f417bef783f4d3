/*
 * admin/metrics - Prometheus metrics at /metrics (prom-client), names
 * starting with `petrel_`.
 *
 * Counters move with what happens: SMTP sessions, replies by code and
 * accepted messages (inbound hooks), attempts and delivery latency (the
 * scheduler's onResult), reports queued (the reporter's onQueued), and every
 * mail event by kind (fed from the event log as it copies events, so the
 * counts agree with the log exactly, expiries and quarantines included).
 * Gauges that need the queue (recipients by state, queue size and oldest age
 * per destination) are computed at scrape time from the store's aggregate
 * queries, never by touching rows on each event.
 *
 * Each Petrel has its own registry (tests run several in one process).
 * Destination labels are bounded: the MAX_DESTINATIONS largest, the rest
 * summed under destination="(other)".
 */
import { Counter, Gauge, Registry, collectDefaultMetrics, type Metric } from 'prom-client';
import type { MailEvent } from '../log/events.js';
import { RECIPIENT_STATES } from '../log/events.js';
import type { QueueStore, ReportKind } from '../queue/store.js';
import type { MessageRecord } from '../queue/store.js';
import type { NextHop, RecipientResult } from '../delivery/agent.js';
import type { ProviderSnapshot } from '../delivery/smtp/shaping.js';

/**
 * Tally - counts taken on the hot path (a reply, an event, an attempt: many
 * per message) in a plain Map, added to their prom-client counter when it is
 * scraped. A prom-client inc() with labels hashes the labels on every call;
 * this costs one Map update. Bounded by the label values in use.
 */
class Tally {
  private readonly pending = new Map<string, number>();
  constructor(private readonly labels: readonly string[]) {}
  add(key: string, n = 1): void {
    this.pending.set(key, (this.pending.get(key) ?? 0) + n);
  }
  /** flush - move the counts into `counter` (its collect() calls this before each scrape). */
  flush(counter: Counter): void {
    for (const [key, n] of this.pending) {
      if (this.labels.length === 0) counter.inc(n);
      else {
        const values = key.split('\u0000');
        counter.inc(Object.fromEntries(this.labels.map((l, i) => [l, values[i] ?? ''])), n);
      }
    }
    this.pending.clear();
  }
}

/**
 * Latency - a histogram with one label, in the exposition prom-client's
 * Histogram gives (same series order, bucket, _sum and _count lines: a test
 * compares the two), fed once per delivered recipient on the primary's main
 * thread. prom-client's observe() checks and hashes the labels object on every
 * call; here an observation is a Map look-up, a bucket scan and two additions.
 * Bounded by the label values in use (transports).
 */
export class Latency {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly series = new Map<string, { counts: number[]; sum: number; count: number }>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly label: string,
    private readonly upperBounds: readonly number[],
    registry: Registry,
  ) {
    registry.registerMetric(this as unknown as Metric);
  }

  /** observe - one value in the series of `labelValue` (a value above the last bound counts only in +Inf). */
  observe(labelValue: string, value: number): void {
    let s = this.series.get(labelValue);
    if (!s) this.series.set(labelValue, (s = { counts: new Array<number>(this.upperBounds.length).fill(0), sum: 0, count: 0 }));
    const bounds = this.upperBounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    if (i < bounds.length) s.counts[i]!++;
    s.sum += value;
    s.count++;
  }

  reset(): void {
    this.series.clear();
  }

  /** get - the series as prom-client's registry formats them: cumulative buckets, then +Inf, _sum, _count. */
  get(): { name: string; help: string; type: string; aggregator: string; values: unknown[] } {
    const values: unknown[] = [];
    for (const [labelValue, s] of this.series) {
      const shared = { [this.label]: labelValue };
      let acc = 0;
      this.upperBounds.forEach((le, i) => {
        acc += s.counts[i]!;
        values.push({ labels: { le }, sharedLabels: shared, value: acc, metricName: `${this.name}_bucket`, exemplar: null });
      });
      values.push({ labels: { le: '+Inf' }, sharedLabels: shared, value: s.count, metricName: `${this.name}_bucket`, exemplar: null });
      values.push({ labels: {}, sharedLabels: shared, value: s.sum, metricName: `${this.name}_sum` });
      values.push({ labels: {}, sharedLabels: shared, value: s.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }
}

/** tallied - a counter fed by a Tally. */
function tallied(name: string, help: string, labelNames: string[], registers: Registry[]): { counter: Counter; tally: Tally } {
  const tally = new Tally(labelNames);
  const counter: Counter = new Counter({
    name,
    help,
    labelNames,
    registers,
    collect() {
      tally.flush(counter);
    },
  });
  return { counter, tally };
}

/** Upper bounds (seconds) of petrel_delivery_latency_seconds: 50 ms to a day. */
export const LATENCY_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400] as const;

/** At most this many destinations get their own label values (bounded cardinality). */
const MAX_DESTINATIONS = 200;

export class AdminMetrics {
  readonly registry = new Registry();
  private readonly received: Counter;
  private readonly receivedBytes: Counter;
  private readonly events: Tally;
  private readonly byOutcome: Record<string, Tally>;
  private readonly attempts: Tally;
  private readonly latency: Latency;
  private readonly sessions: Counter;
  private readonly replies: Tally;
  private readonly dsn: Counter;
  private readonly authFailures: Counter;

  constructor(
    private readonly store: QueueStore,
    connections: () => number,
    options: { defaults?: boolean } = {},
  ) {
    const registers = [this.registry];
    if (options.defaults) collectDefaultMetrics({ register: this.registry, prefix: 'petrel_process_' });
    this.received = new Counter({ name: 'petrel_messages_received_total', help: 'Messages accepted over SMTP (250 after DATA)', registers });
    this.receivedBytes = new Counter({ name: 'petrel_received_bytes_total', help: 'Octets of messages accepted over SMTP', registers });
    this.events = tallied('petrel_events_total', 'Mail events written to the event log, by kind', ['event'], registers).tally;
    const outcome = (name: string, help: string): Tally => tallied(name, help, [], registers).tally;
    this.byOutcome = {
      received: outcome('petrel_recipients_received_total', 'Recipients of accepted messages (received events)'),
      delivered: outcome('petrel_recipients_delivered_total', 'Recipients delivered (delivered events)'),
      deferred: outcome('petrel_recipients_deferred_total', 'Attempts that failed temporarily (deferred events)'),
      failed: outcome('petrel_recipients_failed_total', 'Recipients failed permanently (failed events)'),
      expired: outcome('petrel_recipients_expired_total', 'Recipients expired at the end of the queue lifetime (expired events)'),
      quarantined: outcome('petrel_recipients_quarantined_total', 'Recipients set aside because their message could not be read'),
      removed: outcome('petrel_recipients_removed_total', 'Recipients removed by an operator'),
    };
    this.attempts = tallied('petrel_delivery_attempts_total', 'Delivery attempts by result and transport', ['result', 'transport'], registers).tally;
    this.latency = new Latency('petrel_delivery_latency_seconds', 'Time from acceptance to delivery, per delivered recipient', 'transport', LATENCY_BUCKETS, this.registry);
    this.sessions = new Counter({ name: 'petrel_smtp_sessions_total', help: 'SMTP connections accepted or refused at the greeting', registers });
    this.replies = tallied('petrel_smtp_replies_total', 'SMTP replies sent, by code', ['code'], registers).tally;
    this.authFailures = new Counter({ name: 'petrel_smtp_auth_failures_total', help: 'Failed AUTH attempts on submission listeners', registers });
    this.dsn = new Counter({ name: 'petrel_dsn_sent_total', help: 'Delivery status notifications queued, by kind', labelNames: ['kind'], registers });
    new Gauge({
      name: 'petrel_smtp_connections',
      help: 'SMTP connections open now',
      registers,
      collect() {
        this.set(connections());
      },
    });
    const self = this;
    new Gauge({
      name: 'petrel_recipients',
      help: 'Recipients in the queue, by state',
      labelNames: ['state'],
      registers,
      async collect() {
        const counts = await self.store.countByState();
        for (const s of RECIPIENT_STATES) this.set({ state: s }, counts[s] ?? 0);
      },
    });
    // One summary query feeds the three per-destination gauges.
    let pending: Promise<Array<{ destination: string; recipients: number; messages: number; oldest: number }>> | null = null;
    const destinations = (): Promise<Array<{ destination: string; recipients: number; messages: number; oldest: number }>> => {
      if (!pending) {
        pending = self.store.summary().then((all) => {
          const top = all.filter((d) => d.recipients > 0).slice(0, MAX_DESTINATIONS);
          const rest = all.filter((d) => d.recipients > 0).slice(MAX_DESTINATIONS);
          if (rest.length) {
            top.push({
              ...rest[0]!,
              destination: '(other)',
              recipients: rest.reduce((n, d) => n + d.recipients, 0),
              messages: rest.reduce((n, d) => n + d.messages, 0),
              oldest: Math.min(...rest.map((d) => d.oldest)),
            });
          }
          return top;
        });
        setImmediate(() => (pending = null));
      }
      return pending;
    };
    new Gauge({
      name: 'petrel_queue_recipients',
      help: 'Unfinished recipients in the queue, per destination',
      labelNames: ['destination'],
      registers,
      async collect() {
        this.reset();
        for (const d of await destinations()) this.set({ destination: d.destination }, d.recipients);
      },
    });
    new Gauge({
      name: 'petrel_queue_messages',
      help: 'Messages with unfinished recipients, per destination',
      labelNames: ['destination'],
      registers,
      async collect() {
        this.reset();
        for (const d of await destinations()) this.set({ destination: d.destination }, d.messages);
      },
    });
    new Gauge({
      name: 'petrel_queue_oldest_age_seconds',
      help: 'Age of the oldest unfinished message, per destination',
      labelNames: ['destination'],
      registers,
      async collect() {
        this.reset();
        const now = Date.now();
        for (const d of await destinations()) this.set({ destination: d.destination }, Math.max(0, (now - d.oldest) / 1000));
      },
    });
  }

  /** Inbound hooks (SessionContext.onReply / onAccepted / onConnect). */
  onReply(code: number): void {
    this.replies.add(String(code));
  }
  onAccepted(size: number): void {
    this.received.inc();
    this.receivedBytes.inc(size);
  }
  onConnect(): void {
    this.sessions.inc();
  }
  onAuthFailure(): void {
    this.authFailures.inc();
  }

  /** Scheduler hook: one attempt's result. */
  onResult(result: RecipientResult, message: MessageRecord, hop: NextHop): void {
    this.attempts.add(`${result.kind}\u0000${hop.kind}`);
    if (result.kind === 'delivered') this.latency.observe(hop.kind, Math.max(0, (Date.now() - message.receivedAt) / 1000));
  }

  /** Reporter hook: a report was queued. */
  onReport(kind: ReportKind): void {
    this.dsn.inc({ kind });
  }

  /** Event log hook: events as they are written to events.jsonl. */
  onEvents(events: readonly MailEvent[]): void {
    for (const e of events) {
      this.events.add(e.event);
      if (e.recipient !== undefined) this.byOutcome[e.event]?.add('');
    }
  }

  /**
   * watchShaping - gauges of the traffic-shaping providers (delivery/smtp/shaping),
   * read at scrape time; labels bounded by the [[shaping]] rules.
   */
  watchShaping(snapshot: () => ProviderSnapshot[]): void {
    const registers = [this.registry];
    const gauge = (name: string, help: string, value: (p: ProviderSnapshot) => number): void => {
      new Gauge({
        name,
        help,
        labelNames: ['provider'],
        registers,
        collect() {
          this.reset();
          for (const p of snapshot()) this.set({ provider: p.provider }, value(p));
        },
      });
    };
    gauge('petrel_shaping_factor', 'Throttle factor of each shaping provider (1 = its configured limits)', (p) => p.factor);
    gauge('petrel_shaping_max_connections', 'Current connection limit of each shaping provider (-1: none)', (p) => p.max_connections ?? -1);
    gauge('petrel_shaping_connections', 'Connections open to each shaping provider', (p) => p.connections);
    gauge('petrel_shaping_messages_last_minute', 'Messages sent to each shaping provider in the last minute', (p) => p.messages_last_minute);
    gauge('petrel_shaping_suspended', '1 while a shaping provider is suspended after a "blocked" reply', (p) => (p.suspended_until ? 1 : 0));
  }

  async text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
