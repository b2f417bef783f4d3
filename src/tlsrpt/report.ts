/*
 * tlsrpt/report - one UTC day's counts (the recorder's day file) as RFC 8460
 * §4 aggregate reports: one JSON report per policy domain, with its
 * policies[] (sts, tlsa, no-policy-found), summary counts and failure
 * details, and the §5.1 file name of the gzip'd report.
 *
 * Invariants: a day file is only read, never changed; a line that does not
 * parse (a crash cut it short, or the file was edited) is skipped and
 * counted, never fatal; failure-details rows stay at most maxFailureRows
 * per policy domain (the summary counts every failure).
 *
 * Untrusted input: the day file (written by the recorder, but read as if
 * anything could be in it).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DayLine, FailureRow, ReportPolicyType } from './recorder.js';

/** RFC 8460 §4.4, as sent. */
export interface TlsReportJson {
  'organization-name': string;
  'date-range': { 'start-datetime': string; 'end-datetime': string };
  'contact-info': string;
  'report-id': string;
  policies: {
    policy: { 'policy-type': ReportPolicyType; 'policy-string'?: string[]; 'policy-domain': string; 'mx-host'?: string[] };
    summary: { 'total-successful-session-count': number; 'total-failure-session-count': number };
    'failure-details'?: {
      'result-type': string;
      'sending-mta-ip'?: string;
      'receiving-mx-hostname'?: string;
      'receiving-ip'?: string;
      'failed-session-count': number;
      'failure-reason-code'?: string;
    }[];
  }[];
}

export interface DayCounts {
  /** policy domain -> its policies' counts. */
  domains: Map<string, DayLine[]>;
  /** Lines that did not parse. */
  badLines: number;
}

const str = (v: unknown): v is string => typeof v === 'string';
const num = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

function validLine(v: unknown): v is DayLine {
  if (typeof v !== 'object' || v === null) return false;
  const l = v as Record<string, unknown>;
  return (
    (l.policy_type === 'sts' || l.policy_type === 'tlsa' || l.policy_type === 'no-policy-found') &&
    str(l.policy_domain) &&
    l.policy_domain.length > 0 &&
    Array.isArray(l.policy_string) &&
    l.policy_string.every(str) &&
    num(l.success) &&
    num(l.failure) &&
    Array.isArray(l.failures) &&
    l.failures.every((f: unknown) => {
      const r = f as Record<string, unknown>;
      return typeof f === 'object' && f !== null && str(r.result_type) && str(r.sending_mta_ip) && str(r.receiving_ip) && str(r.receiving_mx_hostname) && str(r.failure_reason_code) && num(r.count);
    })
  );
}

/** readDay - the counts of one day, merged per policy; empty when there is no file. */
export async function readDay(dir: string, day: string, maxFailureRows = 100): Promise<DayCounts> {
  let text: string;
  try {
    text = await readFile(join(dir, `${day}.jsonl`), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { domains: new Map(), badLines: 0 };
    throw e;
  }
  const merged = new Map<string, DayLine & { rows: Map<string, FailureRow> }>();
  const rowsPerDomain = new Map<string, number>();
  let badLines = 0;
  for (const raw of text.split('\n')) {
    if (!raw.trim()) continue;
    let line: unknown;
    try {
      line = JSON.parse(raw);
    } catch {
      badLines++;
      continue;
    }
    if (!validLine(line)) {
      badLines++;
      continue;
    }
    const key = `${line.policy_type}\n${line.policy_domain}\n${line.policy_string.join('\n')}`;
    let m = merged.get(key);
    if (!m) merged.set(key, (m = { ...line, success: 0, failure: 0, failures: [], rows: new Map() }));
    m.success += line.success;
    m.failure += line.failure;
    for (const f of line.failures) {
      const rk = `${f.result_type}\n${f.sending_mta_ip}\n${f.receiving_ip}\n${f.receiving_mx_hostname}`;
      const have = m.rows.get(rk);
      if (have) {
        have.count += f.count;
        continue;
      }
      const n = rowsPerDomain.get(line.policy_domain) ?? 0;
      if (n >= maxFailureRows) continue;
      rowsPerDomain.set(line.policy_domain, n + 1);
      m.rows.set(rk, { ...f });
    }
  }
  const domains = new Map<string, DayLine[]>();
  for (const m of merged.values()) {
    const { rows, ...line } = m;
    line.failures = [...rows.values()];
    const list = domains.get(line.policy_domain) ?? [];
    list.push(line);
    domains.set(line.policy_domain, list);
  }
  return { domains, badLines };
}

export interface ReportContext {
  organization: string;
  /** contact-info: the postmaster. */
  contact: string;
  /** The submitter's domain (hostname): report ids and file names. */
  submitter: string;
  /** "YYYY-MM-DD", UTC. */
  day: string;
  /** In a cluster, this node's name: each node reports its own sessions, under its own report-id. */
  node?: string;
}

/** dayRange - the first and last second of a UTC day, as epoch seconds. */
export function dayRange(day: string): { start: number; end: number } {
  const start = Date.parse(`${day}T00:00:00Z`) / 1000;
  return { start, end: start + 86_399 };
}

/** reportId - stable for a day, domain and submitter (a receiver can spot a report sent twice). */
export function reportId(ctx: ReportContext, domain: string): string {
  return `${ctx.day}.${domain}${ctx.node ? `.${ctx.node}` : ''}@${ctx.submitter}`;
}

/** buildReport - the RFC 8460 report of one policy domain's day. */
export function buildReport(ctx: ReportContext, domain: string, lines: readonly DayLine[]): TlsReportJson {
  const { start, end } = dayRange(ctx.day);
  const iso = (s: number) => new Date(s * 1000).toISOString().replace(/\.000Z$/, 'Z');
  return {
    'organization-name': ctx.organization,
    'date-range': { 'start-datetime': iso(start), 'end-datetime': iso(end) },
    'contact-info': ctx.contact,
    'report-id': reportId(ctx, domain),
    policies: lines.map((l) => {
      const mx = l.policy_type === 'sts' ? l.policy_string.filter((s) => /^mx:/.test(s)).map((s) => s.slice(3).trim()) : [];
      return {
        policy: {
          'policy-type': l.policy_type,
          ...(l.policy_string.length ? { 'policy-string': l.policy_string } : {}),
          'policy-domain': l.policy_domain,
          ...(mx.length ? { 'mx-host': mx } : {}),
        },
        summary: { 'total-successful-session-count': l.success, 'total-failure-session-count': l.failure },
        ...(l.failures.length
          ? {
              'failure-details': l.failures.map((f) => ({
                'result-type': f.result_type,
                ...(f.sending_mta_ip ? { 'sending-mta-ip': f.sending_mta_ip } : {}),
                ...(f.receiving_mx_hostname ? { 'receiving-mx-hostname': f.receiving_mx_hostname } : {}),
                ...(f.receiving_ip ? { 'receiving-ip': f.receiving_ip } : {}),
                'failed-session-count': f.count,
                ...(f.failure_reason_code ? { 'failure-reason-code': f.failure_reason_code } : {}),
              })),
            }
          : {}),
      };
    }),
  };
}

/** reportFileName - RFC 8460 §5.1: sender!policy-domain!begin!end!unique-id.json.gz */
export function reportFileName(ctx: ReportContext, domain: string): string {
  const { start, end } = dayRange(ctx.day);
  return `${ctx.submitter}!${domain}!${start}!${end + 1}!001.json.gz`;
}
