/*
 * tlsrpt/recorder - counts what outbound TLS met, per UTC day and per policy
 * (RFC 8460 §4: policy type, string and domain), for the daily TLS reports.
 * The SMTP agent calls record() once per connection (or per failed policy
 * discovery); it only adds to counters in memory. Every flushMs the counts
 * gathered since the last flush are appended as one JSON line per policy to
 * data_dir/tlsrpt/<YYYY-MM-DD>.jsonl (tlsrpt/day-file reads them back).
 *
 * Durability: statistics, not mail. Lines are appended without fsync and
 * counts still in memory when the process dies (at most flushMs of them) are
 * lost; a line cut short by a crash is skipped by the reader. That is
 * accepted: a report a few sessions short is still a true report, and no
 * message depends on it. close() (server stop) flushes.
 *
 * Invariants:
 * - memory is bounded: at most maxFailureRows distinct failure-detail rows
 *   per policy domain per day (more failures are still counted in the
 *   summary), at most maxPolicies policies held between flushes (beyond it
 *   a record is dropped and counted in `dropped`);
 * - record() never throws and never waits for I/O.
 *
 * Untrusted input: the strings in a record come from the remote side (MX
 * names, policy text): they are only stored as JSON strings, capped in size.
 */
import { appendFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { TlsPolicyFailure, TlsPolicyKind } from '../delivery/tls/outcome.js';

/** One connection's TLS result, as the SMTP agent knows it. */
export interface TlsResult {
  policy: TlsPolicyKind;
  /** The domain whose policy applied (the recipient domain for sts). */
  policyDomain: string;
  /** The MX host name connected to (or tried). */
  mx: string;
  sendingIp?: string;
  receivingIp: string;
  success: boolean;
  failure?: TlsPolicyFailure;
  /** The policy as text lines (RFC 8460 policy-string): for sts, policyStrings(policy) of delivery/tls/mta-sts. */
  policyText?: string[];
}

/** RFC 8460 §4.4 policy-type. */
export type ReportPolicyType = 'sts' | 'tlsa' | 'no-policy-found';

/** One failure-details row (snake_case on disk; the report builder renames). */
export interface FailureRow {
  result_type: string;
  sending_mta_ip: string;
  receiving_ip: string;
  receiving_mx_hostname: string;
  failure_reason_code: string;
  count: number;
}

/** One line of a day file: counts for one policy since the previous line for it. */
export interface DayLine {
  policy_type: ReportPolicyType;
  policy_domain: string;
  policy_string: string[];
  success: number;
  failure: number;
  failures: FailureRow[];
}

/** The report's policy type for a policy kind: only sts and tlsa are published policies; the operator's own settings are not. */
export function reportPolicyType(kind: TlsPolicyKind): ReportPolicyType {
  return kind === 'sts' ? 'sts' : kind === 'tlsa' ? 'tlsa' : 'no-policy-found';
}

/** utcDay - "YYYY-MM-DD" of an epoch ms, in UTC (reports cover UTC days). */
export function utcDay(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

const cap = (s: string | undefined, n = 255): string => (s ?? '').slice(0, n);

export interface TlsRecorderOptions {
  /** data_dir/tlsrpt */
  dir: string;
  /** Distinct failure-detail rows kept per policy domain per day. Default 100. */
  maxFailureRows?: number;
  /** Policies held in memory between flushes. Default 10000. */
  maxPolicies?: number;
  /** Default 30 s. 0: no timer (flush() by hand; tests). */
  flushMs?: number;
  /** A flush that failed (the counts of it are lost). */
  onProblem?: (text: string) => void;
  now?: () => number;
}

interface Pending extends DayLine {
  rows: Map<string, FailureRow>;
}

export class TlsRecorder {
  /** day -> policy key -> counts since the last flush. */
  private pending = new Map<string, Map<string, Pending>>();
  private pendingCount = 0;
  /** day -> policy domain -> failure-detail row keys seen today (bounds the rows). */
  private rowKeys = new Map<string, Map<string, Set<string>>>();
  private timer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> = Promise.resolve();
  private readonly maxRows: number;
  private readonly maxPolicies: number;
  private readonly now: () => number;
  /** Records dropped because maxPolicies were already held. */
  dropped = 0;

  constructor(private readonly o: TlsRecorderOptions) {
    this.maxRows = o.maxFailureRows ?? 100;
    this.maxPolicies = o.maxPolicies ?? 10_000;
    this.now = o.now ?? Date.now;
    const every = o.flushMs ?? 30_000;
    if (every > 0) {
      this.timer = setInterval(() => void this.flush(), every);
      this.timer.unref();
    }
  }

  /** record - count one connection's TLS result (see TlsResult). Cheap; never throws. */
  record(r: TlsResult): void {
    try {
      const day = utcDay(this.now());
      const type = reportPolicyType(r.policy);
      const domain = cap(r.policyDomain.toLowerCase().replace(/\.$/, ''));
      if (!domain) return;
      const strings = type === 'no-policy-found' ? [] : (r.policyText ?? []).slice(0, 100).map((s) => cap(s, 1000));
      const key = `${type}\n${domain}\n${strings.join('\n')}`;
      let dayMap = this.pending.get(day);
      if (!dayMap) this.pending.set(day, (dayMap = new Map()));
      let p = dayMap.get(key);
      if (!p) {
        if (this.pendingCount >= this.maxPolicies) {
          this.dropped++;
          return;
        }
        p = { policy_type: type, policy_domain: domain, policy_string: strings, success: 0, failure: 0, failures: [], rows: new Map() };
        dayMap.set(key, p);
        this.pendingCount++;
      }
      if (r.success) {
        p.success++;
        return;
      }
      p.failure++;
      const row: FailureRow = {
        result_type: r.failure?.type ?? 'validation-failure',
        sending_mta_ip: cap(r.sendingIp, 64),
        receiving_ip: cap(r.receivingIp, 64),
        receiving_mx_hostname: cap(r.mx.toLowerCase().replace(/\.$/, '')),
        failure_reason_code: cap(r.failure?.detail, 500),
        count: 0,
      };
      const rowKey = `${row.result_type}\n${row.sending_mta_ip}\n${row.receiving_ip}\n${row.receiving_mx_hostname}`;
      const existing = p.rows.get(rowKey);
      if (existing) {
        existing.count++;
        return;
      }
      let days = this.rowKeys.get(day);
      if (!days) {
        // A new day: the row keys of days before yesterday are not needed any more.
        for (const d of this.rowKeys.keys()) if (d < utcDay(this.now() - 86_400_000)) this.rowKeys.delete(d);
        this.rowKeys.set(day, (days = new Map()));
      }
      let seen = days.get(domain);
      if (!seen) days.set(domain, (seen = new Set()));
      if (!seen.has(rowKey)) {
        if (seen.size >= this.maxRows) return; // counted in the summary only
        seen.add(rowKey);
      }
      row.count = 1;
      p.rows.set(rowKey, row);
    } catch {
      // Statistics must never disturb delivery.
    }
  }

  /** flush - append what was counted since the last flush to the day files. */
  flush(): Promise<void> {
    const batch = this.pending;
    this.pending = new Map();
    this.pendingCount = 0;
    this.flushing = this.flushing.then(() => this.write(batch));
    return this.flushing;
  }

  private async write(batch: Map<string, Map<string, Pending>>): Promise<void> {
    if (batch.size === 0) return;
    try {
      await mkdir(this.o.dir, { recursive: true });
      for (const [day, policies] of batch) {
        let text = '';
        for (const p of policies.values()) {
          const line: DayLine = { policy_type: p.policy_type, policy_domain: p.policy_domain, policy_string: p.policy_string, success: p.success, failure: p.failure, failures: [...p.rows.values()] };
          text += JSON.stringify(line) + '\n';
        }
        await appendFile(join(this.o.dir, `${day}.jsonl`), text, { mode: 0o640 });
      }
    } catch (e) {
      this.o.onProblem?.(`TLS report counts not written: ${(e as Error).message}`);
    }
  }

  /** close - stop the timer and flush. */
  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.flush();
  }
}
