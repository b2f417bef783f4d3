/*
 * delivery/smtp/shaping - traffic shaping per provider (issue 18): how fast
 * Petrel sends to the big mailbox providers, and how it reacts when they say
 * "too fast" or "blocked".
 *
 * A provider is what a `[[shaping]]` rule matches: a rule's `match` is an MX
 * host suffix ("*.google.com": every domain whose MX hosts end so is one
 * provider, "MX rollup") or a recipient domain ("example.com"). Built-in
 * rules for Google, Microsoft, Yahoo and Apple come first in the list and the
 * operator's rules override them (a rule with the same `match` replaces the
 * built-in one; other operator rules are checked first). A domain no rule
 * matches has no provider: only the [delivery] limits apply.
 *
 * Each provider has (enforced by delivery/smtp/pool):
 * - max_connections at once (across all its domains and host sets),
 * - connection_rate and message_rate: token buckets (burst = one second's
 *   worth, at least 1, refilled continuously); a job that finds
 *   no token waits in the pool's queue, woken by one timer, never spinning;
 *   waiting is not an attempt;
 * - messages_per_connection.
 * Throttle feedback (AIMD): a reply in the "too fast" table multiplies the
 * provider's factor by 1/2 (at most once per second: twenty replies of one
 * burst are one signal), which scales its connections and both rates; after
 * `throttle_hold` without a new throttle reply, every
 * `throttle_recovery_messages` accepted messages add 0.1 back, up to 1.
 * A reply in the "blocked" table suspends the provider for `block_suspend`
 * (one `suspended` event; jobs for it are not attempted: ProviderSuspended
 * from the pool, their recipients put back by the scheduler until the end,
 * neither bounced nor charged attempts); the time ending or an operator's
 * resume (`petrel queue resume --destination <provider>`) ends it with a
 * `resumed` event. Every decision is an event carrying the reply.
 *
 * Reload (`petrel reload`, SIGHUP with a changed file): the rules and the
 * reply tables are replaced; a provider keeps its object (the pool counts its
 * connections on it) and its throttle state, and takes its rule's new
 * limits; a provider whose rule is gone has no limits any more (and its
 * suspension ends).
 *
 * Kept across restarts (`statePath`, data_dir/shaping.json): each throttled
 * or suspended provider's factor and suspension, written (temporary file and
 * rename) a second after a change and at close, read at start; a restart
 * neither forgets a block nor goes back to full speed at a provider that
 * just said "too fast". Per node (a cluster's nodes each keep their own).
 *
 * In a cluster a suspension is shared (scheduler/shared-limits, onShare /
 * adoptSuspension / endShared): the node that met the "blocked" reply
 * marks it in the queue, the others suspend too, and an operator's resume
 * on any node resumes them all. Throttle factors stay per node.
 *
 * Bounded: one Provider per rule name met, made when first used.
 * Untrusted input: peer replies (matched against the tables, copied into
 * events cut to 500 characters) and DNS names (matched by suffix).
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import type { Config } from '../../config/schema.js';
import { EVENT_IDS, isoTime, type MailEvent } from '../../log/events.js';

/**
 * HeldBack - a job traffic shaping did not let start: not attempted, its
 * recipients are put back until `until` without an attempt counted
 * (delivery/smtp/deliver turns it into `heldUntil` results).
 */
export class HeldBack extends Error {
  constructor(
    readonly provider: string,
    readonly until: number,
    message: string,
  ) {
    super(message);
    this.name = 'HeldBack';
  }
}

/** ProviderSuspended - a job for a suspended provider is not attempted: its recipients are put back until `until`. */
export class ProviderSuspended extends HeldBack {
  constructor(
    provider: string,
    until: number,
    readonly reply: string,
  ) {
    super(provider, until, `not attempted: provider ${provider} is suspended until ${isoTime(until)} after the reply "${reply}"`);
    this.name = 'ProviderSuspended';
  }
}

/**
 * ProviderBusy - a job held back by its provider's limits (no token, no
 * connection slot) for longer than the pool keeps jobs waiting in memory is
 * not attempted: its recipients are put back until `until`, when the line
 * ahead of them should have gone (issue 18: a big backlog for one throttled
 * provider used to wait in memory and keep every other destination's mail
 * out of the scheduler's in-flight room).
 */
export class ProviderBusy extends HeldBack {
  constructor(provider: string, until: number, limits: string) {
    super(provider, until, `not attempted: provider ${provider} is at its limits (${limits}); next try at ${isoTime(until)}`);
    this.name = 'ProviderBusy';
  }
}

/** A rate: `count` per `perMs`. */
export interface Rate {
  count: number;
  perMs: number;
}

/** One [[shaping]] table. Unset limits are not enforced (the [delivery] ones still are). */
export interface ShapingRule {
  match: string;
  max_connections?: number;
  connection_rate?: Rate;
  messages_per_connection?: number;
  message_rate?: Rate;
}

/** The feedback settings ([delivery] throttle_* and block_*). */
export interface FeedbackOptions {
  /** Extra "too fast" patterns (regular expressions, case-insensitive), checked after the built-in ones. */
  throttleReplies: string[];
  /** Extra "blocked" patterns. */
  blockReplies: string[];
  /** How long a cut holds before accepted mail raises the limits again (ms). */
  throttleHoldMs: number;
  /** Accepted messages per additive step of 0.1. */
  recoveryMessages: number;
  /** How long a "blocked" reply suspends the provider (ms). */
  blockSuspendMs: number;
}

export const DEFAULT_FEEDBACK: FeedbackOptions = {
  throttleReplies: [],
  blockReplies: [],
  throttleHoldMs: 60_000,
  recoveryMessages: 50,
  blockSuspendMs: 3_600_000,
};

const PER_MINUTE = 60_000;

/**
 * The built-in rules: modest values, well under what these providers are
 * known to take from a sender with a good reputation, so a new sender is not
 * throttled; operators with an established reputation raise them.
 */
export const DEFAULT_RULES: readonly ShapingRule[] = [
  { match: '*.google.com', max_connections: 20, connection_rate: { count: 60, perMs: PER_MINUTE }, messages_per_connection: 100, message_rate: { count: 3000, perMs: PER_MINUTE } },
  { match: '*.outlook.com', max_connections: 10, connection_rate: { count: 30, perMs: PER_MINUTE }, messages_per_connection: 50, message_rate: { count: 1200, perMs: PER_MINUTE } },
  { match: '*.yahoodns.net', max_connections: 10, connection_rate: { count: 30, perMs: PER_MINUTE }, messages_per_connection: 20, message_rate: { count: 600, perMs: PER_MINUTE } },
  { match: '*.icloud.com', max_connections: 10, connection_rate: { count: 30, perMs: PER_MINUTE }, messages_per_connection: 50, message_rate: { count: 600, perMs: PER_MINUTE } },
];

/** Built-in "too fast" replies (matched against "<code> <enhanced> <text>"). */
export const THROTTLE_REPLIES: readonly string[] = [
  '^421 4\\.7\\.28\\b', // Gmail: unusual rate of unsolicited mail
  '^45[01] 4\\.2\\.1\\b.*(rate|too many|too fast|unusual)', // Gmail: user receiving mail too quickly
  '^451 4\\.7\\.(5\\d\\d|6\\d\\d)\\b', // Microsoft: 4.7.500-4.7.699 throttling
  '^421 4\\.7\\.0 \\[TS(S)?0[1-4]\\]', // Yahoo: temporarily deferred (TSS04 and kin)
  '^4\\d\\d .*\\b(rate limit(ed)?|too many (connections|messages)|sending too fast|throttl)', // generic
];

/** Built-in "blocked" replies: the sender is refused as such; more attempts only make it worse. */
export const BLOCK_REPLIES: readonly string[] = [
  '^5\\d\\d 5\\.7\\.1\\b.*\\b(block(ed)?|blocklist(ed)?|blacklist(ed)?|listed)\\b',
  '^5\\d\\d 5\\.7\\.606\\b', // Microsoft: banned sending IP
  '^554 .*\\[TSS09\\]', // Yahoo: permanently deferred
  '^5\\d\\d .*\\bspamhaus\\b',
];

/** parseRate - "60/m", "3000/h", "10/s"; null when not a rate. */
export function parseRate(text: string): Rate | null {
  const m = /^\s*(\d+)\s*\/\s*(s|m|h|d)\s*$/.exec(text);
  if (!m) return null;
  const count = Number(m[1]);
  if (!Number.isSafeInteger(count) || count < 1) return null;
  const perMs = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 's' | 'm' | 'h' | 'd'];
  return { count, perMs };
}

export function formatRate(r: Rate): string {
  const unit = r.perMs === 1000 ? 's' : r.perMs === 60_000 ? 'm' : r.perMs === 3_600_000 ? 'h' : 'd';
  return `${r.count}/${unit}`;
}

/** scaledRate - a rate at an AIMD factor, as shown to operators: "1500/m" (never below 1). */
function scaledRate(r: Rate, factor: number): string {
  return `${Math.max(1, Math.floor(r.count * factor))}/${formatRate(r).split('/')[1]}`;
}

/** mergeRules - the operator's rules, then the built-in ones not replaced by an operator rule of the same `match`. */
export function mergeRules(operator: readonly ShapingRule[], builtIn: readonly ShapingRule[] = DEFAULT_RULES): ShapingRule[] {
  const own = new Set(operator.map((r) => r.match.toLowerCase()));
  return [...operator, ...builtIn.filter((r) => !own.has(r.match.toLowerCase()))];
}

/** providerName - how a rule's provider is named in events, `petrel queue` and resume: its match without "*.". */
export function providerName(rule: ShapingRule): string {
  return rule.match.toLowerCase().replace(/^\*\./, '');
}

/** TokenBucket - `rate.count` tokens at most, refilled continuously; scaled by a factor (AIMD). */
export class TokenBucket {
  private tokens: number;
  private at: number;
  constructor(
    private readonly rate: Rate,
    now = Date.now(),
  ) {
    this.tokens = Math.max(1, (rate.count * Math.min(rate.perMs, 1000)) / rate.perMs);
    this.at = now;
  }

  /** refill - tokens for the time since the last call; at most one second's worth (so "3000/m" is 50 at once, not 3000). */
  private refill(now: number, factor: number): void {
    const cap = Math.max(1, ((this.rate.count * Math.min(this.rate.perMs, 1000)) / this.rate.perMs) * factor);
    this.tokens = Math.min(cap, this.tokens + ((now - this.at) * this.rate.count * factor) / this.rate.perMs);
    this.at = now;
  }

  /** take - one token now (0), or how many ms until one is there (nothing taken). */
  take(now: number, factor: number): number {
    this.refill(now, factor);
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil(((1 - this.tokens) * this.rate.perMs) / (this.rate.count * factor)));
  }

  /** peek - 0 when a token is there now, else how many ms until one is (nothing taken). */
  peek(now: number, factor: number): number {
    this.refill(now, factor);
    if (this.tokens >= 1) return 0;
    return Math.max(1, Math.ceil(((1 - this.tokens) * this.rate.perMs) / (this.rate.count * factor)));
  }

  /** clamp - drop tokens beyond the new (smaller) cap at once. */
  clamp(now: number, factor: number): void {
    this.refill(now, factor);
  }
}

/** Provider - the live state of one rule's provider. */
export class Provider {
  readonly name: string;
  /** AIMD factor in [MIN_FACTOR, 1]. */
  factor = 1;
  lastCut = 0;
  private acceptedSinceStep = 0;
  suspendedUntil = 0;
  suspendReply = '';
  suspendTimer: NodeJS.Timeout | null = null;
  /** In a cluster: this suspension is in the shared marks (adopted from one, or ours written), so a mark gone means resumed elsewhere. */
  sharedMark = false;
  /** The suspension came from another node's mark (its end is that node's event). */
  adopted = false;
  connections: TokenBucket | null;
  messages: TokenBucket | null;
  /** Connections open (idle included) or opening for this provider (the pool keeps it). */
  open = 0;
  /** Destinations whose recipients were put back during the suspension (an operator's resume makes them due). Bounded. */
  readonly held = new Set<string>();
  /** When the next job held back past the pool's wait may come back (ProviderBusy): jobs put back are spread at the provider's pace. */
  private holdHorizon = 0;
  /** Messages handed out in the last minute (for `petrel queue`): counts per second slot. */
  private readonly sent = new Array<number>(60).fill(0);
  private sentAt = 0;

  constructor(public rule: ShapingRule) {
    this.name = providerName(rule);
    this.connections = rule.connection_rate ? new TokenBucket(rule.connection_rate) : null;
    this.messages = rule.message_rate ? new TokenBucket(rule.message_rate) : null;
  }

  /** retune - take a reloaded rule's limits (buckets whose rate changed start anew); the throttle state stays. */
  retune(rule: ShapingRule): void {
    const same = (a?: Rate, b?: Rate): boolean => a?.count === b?.count && a?.perMs === b?.perMs;
    if (!same(this.rule.connection_rate, rule.connection_rate)) this.connections = rule.connection_rate ? new TokenBucket(rule.connection_rate) : null;
    if (!same(this.rule.message_rate, rule.message_rate)) this.messages = rule.message_rate ? new TokenBucket(rule.message_rate) : null;
    this.rule = rule;
  }

  get maxConnections(): number {
    return this.rule.max_connections === undefined ? Infinity : Math.max(1, Math.floor(this.rule.max_connections * this.factor));
  }

  get suspended(): boolean {
    return this.suspendedUntil > Date.now();
  }

  /** noteHeld - a destination's recipients were put back while suspended (at most MAX_HELD remembered). */
  noteHeld(destination: string): void {
    if (this.held.size < MAX_HELD) this.held.add(destination);
  }

  /**
   * reserve - when a job put back now (ProviderBusy) should come back: not
   * before `earliest`, and each one `intervalMs` after the one put back
   * before it, so a backlog comes back at the pace the provider takes it,
   * not all at once.
   */
  reserve(earliest: number, intervalMs: number): number {
    const at = Math.max(this.holdHorizon, earliest);
    this.holdHorizon = at + intervalMs;
    return Math.round(at);
  }

  /** countSent - one message handed to a connection (the current rate shown by `petrel queue`). */
  countSent(now = Date.now()): void {
    this.rollTo(now);
    this.sent[Math.floor(now / 1000) % 60]!++;
  }

  /** sentLastMinute - messages handed out in the last 60 s. */
  sentLastMinute(now = Date.now()): number {
    this.rollTo(now);
    return this.sent.reduce((a, b) => a + b, 0);
  }

  private rollTo(now: number): void {
    const sec = Math.floor(now / 1000);
    const from = Math.max(this.sentAt + 1, sec - 59);
    for (let s = from; s <= sec; s++) this.sent[s % 60] = 0;
    this.sentAt = Math.max(this.sentAt, sec);
  }

  /** onAccepted - additive increase: returns true when the factor went up (and reached 1: `recovered`). */
  onAccepted(o: FeedbackOptions, now = Date.now()): boolean {
    if (this.factor >= 1 || now - this.lastCut < o.throttleHoldMs) return false;
    if (++this.acceptedSinceStep < o.recoveryMessages) return false;
    this.acceptedSinceStep = 0;
    this.factor = Math.min(1, Math.round((this.factor + 0.1) * 1000) / 1000);
    return true;
  }

  /** onThrottle - multiplicative decrease (once per second at most); true when a cut was made. */
  onThrottle(now = Date.now()): boolean {
    if (now - this.lastCut < 1000) return false;
    this.lastCut = now;
    this.acceptedSinceStep = 0;
    this.factor = Math.max(MIN_FACTOR, this.factor / 2);
    this.connections?.clamp(now, this.factor);
    this.messages?.clamp(now, this.factor);
    return true;
  }
}

/** Most destinations remembered per suspension for the operator's resume (the others go when the suspension's time is over). */
const MAX_HELD = 10_000;

/** The lowest factor: a provider is slowed, never stopped, by throttle replies. */
const MIN_FACTOR = 1 / 64;

/** One provider as shown to operators (snake_case: it is written as JSON). */
export interface ProviderSnapshot {
  provider: string;
  match: string;
  /** AIMD factor: 1 = the configured limits. */
  factor: number;
  /** Current limits (configured x factor); null: not limited. */
  max_connections: number | null;
  connections: number;
  connection_rate: string | null;
  message_rate: string | null;
  messages_per_connection: number | null;
  /** Messages handed to its connections in the last 60 s. */
  messages_last_minute: number;
  suspended_until: string | null;
  suspend_reply: string;
}

/** Decision - what a reply means for its provider. */
export type Feedback = 'throttle' | 'block' | null;

export interface ShaperOptions {
  rules: readonly ShapingRule[];
  feedback?: Partial<FeedbackOptions>;
  /** Where the throttle state is kept across restarts (none: not kept). */
  statePath?: string;
  /** Told when the state file cannot be read or written (it is only an aid: shaping goes on without it). */
  onStateProblem?: (text: string) => void;
  /** Where shaping events go (the event log through the store); errors are the caller's to log. */
  onEvent?: (e: MailEvent) => void;
  /** A suspension ended (by time or operator): the pool wakes the provider's waiters. */
  onResume?: (p: Provider) => void;
}

/** Shaper - the rules, the providers met so far, and the reply tables. */
export class Shaper {
  rules: ShapingRule[] = [];
  feedback: FeedbackOptions = DEFAULT_FEEDBACK;
  /** Every provider met, by name (kept across reloads: the pool counts connections on these objects). */
  private readonly providers = new Map<string, Provider>();
  /** Names of the providers the current rules make (list() shows only these). */
  private active = new Set<string>();
  private throttle: RegExp[] = [];
  private block: RegExp[] = [];
  onEvent: ((e: MailEvent) => void) | null;
  onResume: ((p: Provider) => void) | null;
  /**
   * In a cluster (scheduler/shared-limits): told when this node suspends a
   * provider (`until`) or ends a suspension (null) by itself, so the other
   * nodes follow. Not told of what they told us.
   */
  onShare: ((p: Provider, until: number | null, reply: string) => void) | null = null;
  /** The rules in matching form, made once per configuration (providerFor runs for every job). */
  private compiled: { rule: ShapingRule; exact: string; suffix: string | null }[] = [];
  private readonly statePath: string | null;
  private readonly onStateProblem: (text: string) => void;
  private saveTimer: NodeJS.Timeout | null = null;

  constructor(o: ShaperOptions) {
    this.onEvent = o.onEvent ?? null;
    this.onResume = o.onResume ?? null;
    this.statePath = o.statePath ?? null;
    this.onStateProblem = o.onStateProblem ?? (() => undefined);
    this.reconfigure(o.rules, o.feedback ?? {});
    this.restore();
  }

  /**
   * reconfigure - new rules and reply tables (a reload): a provider met
   * before keeps its object and throttle state and takes its rule's new
   * limits; one whose rule is gone loses its limits and its suspension.
   */
  reconfigure(rules: readonly ShapingRule[], feedback: Partial<FeedbackOptions>): void {
    const nextFeedback = { ...DEFAULT_FEEDBACK, ...feedback };
    const throttle = [...THROTTLE_REPLIES, ...nextFeedback.throttleReplies].map((p) => new RegExp(p, 'i'));
    const block = [...BLOCK_REPLIES, ...nextFeedback.blockReplies].map((p) => new RegExp(p, 'i'));
    this.rules = [...rules];
    this.feedback = nextFeedback;
    this.throttle = throttle;
    this.block = block;
    this.compiled = this.rules.map((rule) => {
      const m = rule.match.toLowerCase();
      return { rule, exact: m, suffix: m.startsWith('*.') ? m.slice(1) : null };
    });
    const byName = new Map(this.rules.map((r) => [providerName(r), r] as const));
    this.active = new Set(byName.keys());
    for (const p of this.providers.values()) {
      const rule = byName.get(p.name);
      if (rule) {
        p.retune(rule);
        continue;
      }
      // Its rule is gone: destinations still pointing at it have no provider limits any more.
      p.retune({ match: p.rule.match });
      if (p.suspendedUntil !== 0) this.resume(p, 'its [[shaping]] rule was removed by a reload');
    }
  }

  /**
   * providerFor - the provider of a recipient domain reached through `hosts`
   * (MX host names, or the fixed host): the first rule whose match is the
   * domain, or a suffix ("*.x") of every host... of any host. Null: no rule.
   */
  providerFor(domain: string, hosts: readonly string[]): Provider | null {
    if (this.compiled.length === 0) return null;
    const d = domain.toLowerCase();
    for (const { rule, exact, suffix } of this.compiled) {
      let hit = false;
      if (suffix !== null) {
        for (const h of hosts) {
          const name = h.endsWith('.') ? h.slice(0, -1) : h;
          if (name.length > suffix.length && name.toLowerCase().endsWith(suffix)) hit = true;
        }
      } else hit = d === exact;
      if (!hit) continue;
      return this.provider(rule);
    }
    return null;
  }

  /** provider - the live state of `rule`'s provider (made when first met). */
  private provider(rule: ShapingRule): Provider {
    const name = providerName(rule);
    let p = this.providers.get(name);
    if (!p) this.providers.set(name, (p = new Provider(rule)));
    return p;
  }

  /** classify - what a reply line ("421 4.7.28 ...") says about sending speed. */
  classify(reply: string): Feedback {
    if (!/^[45]\d\d\b/.test(reply)) return null;
    if (this.block.some((r) => r.test(reply))) return 'block';
    if (this.throttle.some((r) => r.test(reply))) return 'throttle';
    return null;
  }

  /** list - the providers met so far (for `petrel queue`, metrics). */
  list(): Provider[] {
    return [...this.providers.values()].filter((p) => this.active.has(p.name));
  }

  /** snapshot - each provider met so far, as `petrel queue`, the API and /metrics show it. */
  snapshot(now = Date.now()): ProviderSnapshot[] {
    return this.list().map((p) => ({
      provider: p.name,
      match: p.rule.match,
      factor: p.factor,
      max_connections: p.rule.max_connections === undefined ? null : p.maxConnections,
      connections: p.open,
      connection_rate: p.rule.connection_rate ? scaledRate(p.rule.connection_rate, p.factor) : null,
      message_rate: p.rule.message_rate ? scaledRate(p.rule.message_rate, p.factor) : null,
      messages_per_connection: p.rule.messages_per_connection ?? null,
      messages_last_minute: p.sentLastMinute(now),
      suspended_until: p.suspendedUntil > now ? isoTime(p.suspendedUntil) : null,
      suspend_reply: p.suspendedUntil > now ? p.suspendReply : '',
    }));
  }

  get(name: string): Provider | undefined {
    const p = this.providers.get(name.toLowerCase());
    return p && this.active.has(p.name) ? p : undefined;
  }

  /** throttled - a "too fast" reply from the provider: halve (an event when a cut is made). */
  throttled(p: Provider, reply: string, remote: string): void {
    if (!p.onThrottle()) return;
    this.event('throttled', p, `provider ${p.name} slowed to ${describeLimits(p)} (factor ${p.factor})`, reply, remote);
  }

  /** accepted - a message accepted by the provider: additive increase (an event per step). */
  accepted(p: Provider): void {
    if (!p.onAccepted(this.feedback)) return;
    this.event('unthrottled', p, `provider ${p.name} raised to ${describeLimits(p)} (factor ${p.factor})${p.factor >= 1 ? ': recovered' : ''}`, '', '');
  }

  /** blocked - a "blocked" reply: suspend for blockSuspendMs (one event; a suspension in force is not extended). */
  blocked(p: Provider, reply: string, remote: string): void {
    if (p.suspended) return;
    this.suspend(p, Date.now() + this.feedback.blockSuspendMs, reply);
    this.event('suspended', p, `provider ${p.name} suspended until ${isoTime(p.suspendedUntil)} after a "blocked" reply`, reply, remote);
    this.onShare?.(p, p.suspendedUntil, p.suspendReply);
  }

  /** suspend - suspended until `until` (a timer ends it). */
  private suspend(p: Provider, until: number, reply: string): void {
    p.suspendedUntil = until;
    p.suspendReply = reply.slice(0, 500);
    p.sharedMark = false;
    p.adopted = false;
    if (p.suspendTimer) clearTimeout(p.suspendTimer);
    // An adopted suspension's end is the other node's event to write.
    p.suspendTimer = setTimeout(() => this.resume(p, 'suspension time over', { quiet: p.adopted }), Math.max(0, until - Date.now()));
    p.suspendTimer.unref();
  }

  /**
   * adoptSuspension - another node of the cluster suspended the provider
   * `name` until `until` (scheduler/shared-limits read its mark): suspend it
   * here too (no event: that node wrote it). False: no such rule here, or a
   * suspension at least as long is in force.
   */
  adoptSuspension(name: string, until: number, reply: string): boolean {
    const rule = this.rules.find((r) => providerName(r) === name);
    if (!rule || until <= Date.now()) return false;
    const p = this.provider(rule);
    if (p.suspendedUntil >= until) {
      p.sharedMark = true;
      return false;
    }
    this.suspend(p, until, reply);
    p.sharedMark = true;
    p.adopted = true;
    this.saveSoon();
    return true;
  }

  /**
   * endShared - the providers suspended here through a shared mark whose
   * mark is gone (another node resumed them, or the time is over): resumed
   * here too, without an event of their own; returns, per provider, the
   * destinations put back here meanwhile (to be made due now).
   */
  endShared(marked: ReadonlySet<string>): Map<Provider, string[]> {
    const out = new Map<Provider, string[]>();
    for (const p of this.providers.values()) {
      if (!p.suspended || !p.sharedMark || marked.has(p.name)) continue;
      const held = this.resume(p, 'resumed on another node', { quiet: true });
      if (held) out.set(p, held);
    }
    return out;
  }

  /**
   * resume - end a suspension (time over, or an operator); null when the
   * provider was not suspended, else the destinations whose recipients were
   * put back meanwhile (the operator's resume makes them due now).
   */
  resume(p: Provider, why: string, o: { quiet?: boolean } = {}): string[] | null {
    if (p.suspendedUntil === 0) return null;
    const held = [...p.held];
    p.held.clear();
    if (p.suspendTimer) clearTimeout(p.suspendTimer);
    p.suspendTimer = null;
    p.suspendedUntil = 0;
    p.suspendReply = '';
    p.sharedMark = false;
    p.adopted = false;
    if (o.quiet) this.saveSoon();
    else {
      this.event('resumed', p, `provider ${p.name} resumed: ${why}`, '', '');
      this.onShare?.(p, null, '');
    }
    this.onResume?.(p);
    return held;
  }

  /** close - stop the suspension timers; the throttle state is written now. */
  close(): void {
    for (const p of this.providers.values()) if (p.suspendTimer) clearTimeout(p.suspendTimer);
    if (this.saveTimer) {
      clearTimeout(this.saveTimer);
      this.saveTimer = null;
      this.save();
    }
  }

  /** save - write the throttled and suspended providers' state (temporary file, rename: never half written). */
  private save(): void {
    if (!this.statePath) return;
    const now = Date.now();
    const providers: Record<string, SavedProvider> = {};
    for (const p of this.providers.values()) {
      if (p.factor >= 1 && p.suspendedUntil <= now) continue;
      providers[p.name] = { factor: p.factor, last_cut: p.lastCut, suspended_until: p.suspendedUntil > now ? p.suspendedUntil : 0, suspend_reply: p.suspendReply };
    }
    const tmp = `${this.statePath}.tmp`;
    try {
      writeFileSync(tmp, `${JSON.stringify({ version: 1, saved: isoTime(now), providers }, null, 1)}\n`);
      renameSync(tmp, this.statePath);
    } catch (e) {
      this.onStateProblem(`cannot write ${this.statePath}: ${(e as Error).message}`);
    }
  }

  /** saveSoon - the state changed: written within a second (many changes of one burst are one write). */
  private saveSoon(): void {
    if (!this.statePath || this.saveTimer) return;
    this.saveTimer = setTimeout(() => {
      this.saveTimer = null;
      this.save();
    }, 1000);
    this.saveTimer.unref();
  }

  /** restore - take the state a previous run left, for providers that still have a rule; a bad file is named and ignored. */
  private restore(): void {
    if (!this.statePath) return;
    let text: string;
    try {
      text = readFileSync(this.statePath, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') this.onStateProblem(`cannot read ${this.statePath}: ${(e as Error).message}`);
      return;
    }
    let saved: Record<string, SavedProvider>;
    try {
      const doc = JSON.parse(text) as { providers?: Record<string, SavedProvider> };
      saved = doc.providers ?? {};
      if (typeof saved !== 'object' || saved === null) throw new Error('"providers" is not an object');
    } catch (e) {
      this.onStateProblem(`${this.statePath} is not a shaping state file (${(e as Error).message}): ignored; every provider starts at its configured limits`);
      return;
    }
    const now = Date.now();
    for (const rule of this.rules) {
      const s = saved[providerName(rule)];
      if (!s || typeof s !== 'object') continue;
      const p = this.provider(rule);
      if (typeof s.factor === 'number' && s.factor > 0 && s.factor < 1) {
        p.factor = Math.max(MIN_FACTOR, s.factor);
        p.lastCut = typeof s.last_cut === 'number' ? Math.min(s.last_cut, now) : now;
      }
      if (typeof s.suspended_until === 'number' && s.suspended_until > now) {
        this.suspend(p, s.suspended_until, typeof s.suspend_reply === 'string' ? s.suspend_reply : '');
        // In a cluster the queue's mark decides: if another node ended the suspension while this one
        // was down, the mark is gone and endShared resumes it here too (on one node: no effect).
        p.sharedMark = true;
      }
    }
  }

  private event(name: 'throttled' | 'unthrottled' | 'suspended' | 'resumed', p: Provider, detail: string, reply: string, remote: string): void {
    this.saveSoon();
    if (!this.onEvent) return;
    const e: MailEvent = { ts: isoTime(), id: EVENT_IDS[name], event: name, queue_id: '', message_id: '', sender: '', state: 'provider', detail: detail.slice(0, 2000) };
    if (reply) e.reply = reply.slice(0, 500);
    if (remote) e.remote = remote;
    this.onEvent(e);
  }
}

/** One provider in the state file (data_dir/shaping.json). */
interface SavedProvider {
  factor: number;
  last_cut: number;
  suspended_until: number;
  suspend_reply: string;
}

/** describeLimits - "10 connections, 30/m connections, 1500/m messages" at the current factor. */
export function describeLimits(p: Provider): string {
  const parts: string[] = [];
  const r = p.rule;
  if (r.max_connections !== undefined) parts.push(`${p.maxConnections} connections`);
  if (r.connection_rate) parts.push(`${scaledRate(r.connection_rate, p.factor)} new connections`);
  if (r.message_rate) parts.push(`${scaledRate(r.message_rate, p.factor)} messages`);
  return parts.join(', ') || 'no limits';
}

/** shaperFrom - the Shaper of a Config ([[shaping]] over the built-in rules, [delivery] feedback keys), or null when shaping is off. */
export function shaperFrom(config: Config, hooks: Pick<ShaperOptions, 'onEvent' | 'onResume' | 'statePath' | 'onStateProblem'> = {}): Shaper | null {
  if (!config.delivery.shaping) return null;
  return new Shaper({ ...shapingOf(config), ...hooks });
}

/** shapingOf - the rules ([[shaping]] over the built-in ones) and feedback settings of a Config (Shaper.reconfigure takes them on reload). */
export function shapingOf(config: Config): { rules: ShapingRule[]; feedback: FeedbackOptions } {
  const d = config.delivery;
  return {
    rules: mergeRules(config.shaping ?? []),
    feedback: {
      throttleReplies: d.throttle_replies,
      blockReplies: d.block_replies,
      throttleHoldMs: d.throttle_hold,
      recoveryMessages: d.throttle_recovery_messages,
      blockSuspendMs: d.block_suspend,
    },
  };
}
