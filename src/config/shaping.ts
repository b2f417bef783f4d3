/*
 * config/shaping - the [[shaping]] tables (issue 18): per provider (an MX host
 * suffix such as "*.google.com") or recipient domain, limits on connections,
 * new connections per time, messages per connection and messages per time.
 * See docs/shaping.md.
 *
 * Invariants: every entry is checked as a whole; a bad one is reported with
 * its key ("shaping[2].message_rate") and left out, never half applied; two
 * entries with the same `match` are an error.
 *
 * Untrusted input: the operator's TOML (values checked here).
 */
import { parseRate, type ShapingRule } from '../delivery/smtp/shaping.js';

/** The keys of one [[shaping]] entry (`match` required, the others optional). */
export const SHAPING_FIELDS = ['match', 'max_connections', 'connection_rate', 'messages_per_connection', 'message_rate'] as const;

const MATCH = /^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?$/i;

/**
 * parseShaping - the entries of doc.shaping; `problem(key, message)` gets each
 * error; `near(name, known)` suggests a known key for an unknown one.
 */
export function parseShaping(raw: unknown, problem: (key: string, message: string) => void, near: (name: string, known: readonly string[]) => string | undefined): ShapingRule[] {
  const out: ShapingRule[] = [];
  if (raw === undefined) return out;
  if (!Array.isArray(raw)) {
    problem('shaping', 'must be an array of tables ([[shaping]])');
    return out;
  }
  const seen = new Set<string>();
  raw.forEach((entry: unknown, i: number) => {
    const base = `shaping[${i}]`;
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) return problem(base, 'must be a table');
    const e = entry as Record<string, unknown>;
    let bad = false;
    const fail = (k: string, m: string): void => {
      bad = true;
      problem(`${base}.${k}`, m);
    };
    for (const k of Object.keys(e)) {
      if (!(SHAPING_FIELDS as readonly string[]).includes(k)) {
        const n = near(k, SHAPING_FIELDS);
        fail(k, n ? `unknown key; did you mean ${n}?` : 'unknown key');
      }
    }
    const rule: ShapingRule = { match: '' };
    if (typeof e.match !== 'string' || !MATCH.test(e.match.trim())) fail('match', e.match === undefined ? 'is required' : `must be an MX host suffix such as "*.google.com" or a domain (got ${JSON.stringify(e.match)})`);
    else rule.match = e.match.trim().toLowerCase().replace(/\.$/, '');
    for (const k of ['max_connections', 'messages_per_connection'] as const) {
      const v = e[k];
      if (v === undefined) continue;
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 1_000_000) fail(k, `must be an integer from 1 to 1000000 (got ${JSON.stringify(v)})`);
      else rule[k] = v;
    }
    for (const k of ['connection_rate', 'message_rate'] as const) {
      const v = e[k];
      if (v === undefined) continue;
      const r = typeof v === 'string' ? parseRate(v) : null;
      if (!r) fail(k, `must be a rate such as "60/m" (per s, m, h or d; got ${JSON.stringify(v)})`);
      else rule[k] = r;
    }
    if (rule.match && seen.has(rule.match)) fail('match', `"${rule.match}" already has a [[shaping]] table`);
    if (bad) return;
    seen.add(rule.match);
    out.push(rule);
  });
  return out;
}
