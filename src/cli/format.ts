/*
 * cli/format - output for people: aligned tables, ages, times; and the exit
 * code for an admin API status. (Scripts use --json instead.)
 */
import { formatAge } from '../core/units.js';

/** table - rows aligned in columns under a header; the last column is not padded. */
export function table(header: string[], rows: string[][]): string {
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return all.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n');
}

export function age(since: number | null | undefined, now = Date.now()): string {
  return since ? formatAge(now - since) : '-';
}

/** when - a next-attempt time relative to now: "now", "in 5m". */
export function when(at: number | null | undefined, now = Date.now()): string {
  if (at === null || at === undefined) return '-';
  return at <= now ? 'now' : `in ${formatAge(at - now)}`;
}

export function clip(s: string, n: number): string {
  const one = s.replace(/\s+/g, ' ');
  return one.length > n ? `${one.slice(0, n - 1)}…` : one;
}

/** exitFor - the exit code for an API status: 0 ok, 1 not found / conflict, 64 bad request, 77 refused, 70 other. */
export function exitFor(status: number): number {
  if (status >= 200 && status < 300) return 0;
  if (status === 404 || status === 409) return 1;
  if (status === 400 || status === 405) return 64;
  if (status === 401 || status === 403) return 77;
  return 70;
}
