/*
 * checks/dnsbl - DNS block lists (RFC 5782): the client's address looked up
 * in each of `[checks] dnsbl` when it connects, the answer used at RCPT.
 *
 * Invariants:
 * - listed means an A record in 127.0.0.2-127.0.0.255 (RFC 5782 §2.1);
 *   the client is then refused at RCPT with 554 5.7.1 naming the list, so
 *   that the recipients it tried are in the log;
 * - every other answer is not a listing: "no such name" is a clean client;
 *   a timeout, a server failure, or an answer outside 127.0.0.2-255 (lists
 *   answer 127.255.255.x when they refuse a query) is an error, written as
 *   a `dnsbl_error` event with the message, which is accepted;
 * - clients in relay_networks and on submission listeners are never looked
 *   up; an authenticated client is never refused;
 * - look-ups go through the checks' bounded, TTL-respecting cache
 *   (checks/dns), so a busy client costs one query per list per TTL.
 *
 * Untrusted input: the client address (only from the socket) and the
 * lists' answers.
 *
 * RFCs: RFC 5782 (DNSxL), RFC 3596 (the nibble form for IPv6).
 */
import { isIP } from 'node:net';
import type { ResolveFn } from './dns.js';

/** queryName - "4.3.2.1.list" for 1.2.3.4; the 32 reversed nibbles of an IPv6 address, then the list. */
export function queryName(ip: string, list: string): string | null {
  const family = isIP(ip);
  if (family === 4) return `${ip.split('.').reverse().join('.')}.${list}`;
  if (family !== 6) return null;
  const [head, tail] = ip.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  if (t.length && t[t.length - 1]!.includes('.')) return null; // an embedded IPv4 form: callers normalise those first
  const groups = [...h, ...Array(tail !== undefined ? 8 - h.length - t.length : 0).fill('0'), ...t];
  if (groups.length !== 8) return null;
  const hex = groups.map((g) => g.padStart(4, '0')).join('');
  return `${[...hex].reverse().join('.')}.${list}`;
}

export interface DnsblResult {
  /** The first list naming the client, or null. */
  listed: string | null;
  /** Lists that could not say (timeouts, refusals, strange answers): one text each. */
  errors: string[];
}

/** lookupClient - ask every list about `ip`; never throws. */
export async function lookupClient(ip: string, lists: string[], resolve: ResolveFn): Promise<DnsblResult> {
  const answers = await Promise.all(
    lists.map(async (list): Promise<{ list: string; listed?: boolean; error?: string }> => {
      const name = queryName(ip, list);
      if (!name) return { list };
      try {
        const a = (await resolve(name, 'A')) as string[];
        if (a.length && a.every((x) => /^127\.0\.0\.(\d+)$/.test(x) && Number(x.split('.')[3]) >= 2)) return { list, listed: true };
        return { list, error: `${list}: unexpected answer ${a.slice(0, 4).join(', ')} for ${ip} (not a listing)` };
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code ?? 'error';
        if (code === 'ENOTFOUND' || code === 'ENODATA') return { list, listed: false };
        return { list, error: `${list}: no answer for ${ip} (${code})` };
      }
    }),
  );
  return {
    listed: answers.find((a) => a.listed)?.list ?? null,
    errors: answers.filter((a) => a.error).map((a) => a.error!),
  };
}

/** ClientListing - one session's look-ups, started when the client connects. */
export class ClientListing {
  private result: DnsblResult | null = null;
  private readonly pending: Promise<DnsblResult>;

  constructor(ip: string, lists: string[], resolve: ResolveFn) {
    this.pending = lookupClient(ip, lists, resolve).then((r) => (this.result = r));
  }

  /** listed - the list naming the client, or null (waits for the answers, at most the checks' DNS timeout). */
  async listed(): Promise<string | null> {
    return (await this.pending).listed;
  }

  /** errors - what the lists could not say, once they have answered (for dnsbl_error events). */
  errors(): string[] {
    return this.result?.errors ?? [];
  }
}
