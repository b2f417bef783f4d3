/*
 * checks/dns - the resolver the inbound checks use (SPF, DKIM, DMARC, ARC,
 * DNS block lists), with a bounded cache.
 *
 * Every look-up goes to `[delivery] dns_servers` when set (the system
 * resolver otherwise), through one node:dns Resolver with a short timeout:
 * a server that does not answer is an ETIMEOUT, which the callers turn into
 * `temperror` (never a permanent refusal).
 *
 * Invariants:
 * - the cache holds at most `maxEntries` answers; the oldest entry is evicted
 *   first (Map insertion order), so it can never fill (DESIGN invariant 6);
 * - an answer is kept no longer than its DNS TTL where node:dns reports one
 *   (A and AAAA), and never longer than `maxTtlMs` (node:dns does not expose
 *   the TTL of TXT, MX or PTR answers: `maxTtlMs` is their lifetime, short
 *   by default so that a changed record is seen soon);
 * - "no such name" (ENOTFOUND) and "no record of that type" (ENODATA) are
 *   answers and are cached (negatively) like records; every other failure
 *   (timeout, SERVFAIL, refused) is not cached, so the next message asks
 *   again;
 * - concurrent look-ups of the same name and type share one query.
 *
 * Untrusted input: names come from the message (From: domain, DKIM d= and
 * s=, SPF includes) and answers from the network; both are only passed on
 * as strings, and each answer is capped (MAX_ANSWER_CHARS) before caching.
 *
 * RFCs: RFC 1035 (the resolver itself is node's c-ares).
 */
import { promises as dnsPromises } from 'node:dns';

/** An answer as dns.promises.resolve gives it: string[] (A, AAAA, PTR, NS), string[][] (TXT), objects (MX). */
export type DnsAnswer = unknown[];

/** The signature mailauth expects of a resolver (node's dns.promises.resolve). */
export type ResolveFn = (name: string, rrtype: string) => Promise<any>;

/** Total characters of one cached answer: more is refused as a temporary failure (an oversized answer is not trusted, nor kept). */
const MAX_ANSWER_CHARS = 64 * 1024;

interface Entry {
  expires: number;
  answer?: DnsAnswer;
  /** A cached "no such name" / "no data" (its error code). */
  negative?: string;
}

export interface CheckResolverOptions {
  /** "ip:port" ([delivery] dns_servers); the system resolver when empty. */
  servers: string[];
  /** Per-query timeout (ms); node retries once. */
  timeoutMs?: number;
  maxEntries?: number;
  maxTtlMs?: number;
}

/** dnsError - an error shaped like node:dns's (callers read `.code`). */
function dnsError(code: string, name: string): Error {
  return Object.assign(new Error(`${code} ${name}`), { code, hostname: name });
}

export class CheckResolver {
  private readonly resolver: dnsPromises.Resolver;
  private readonly cache = new Map<string, Entry>();
  private readonly inflight = new Map<string, Promise<DnsAnswer>>();
  private readonly maxEntries: number;
  private readonly maxTtlMs: number;
  /** Look-ups answered from the cache and sent to a server (tests and metrics). */
  hits = 0;
  queries = 0;

  constructor(options: CheckResolverOptions) {
    this.resolver = new dnsPromises.Resolver({ timeout: options.timeoutMs ?? 3000, tries: 2 });
    if (options.servers.length) this.resolver.setServers(options.servers);
    this.maxEntries = options.maxEntries ?? 10_000;
    this.maxTtlMs = options.maxTtlMs ?? 60_000;
  }

  /** resolve - like dns.promises.resolve(name, rrtype), cached; bound so that it can be handed to mailauth. */
  readonly resolve: ResolveFn = (name, rrtype) => this.lookup(String(name), String(rrtype).toUpperCase());

  get size(): number {
    return this.cache.size;
  }

  private async lookup(name: string, type: string): Promise<DnsAnswer> {
    const key = `${type} ${name.toLowerCase().replace(/\.$/, '')}`;
    const now = Date.now();
    const hit = this.cache.get(key);
    if (hit) {
      if (hit.expires > now) {
        this.hits++;
        if (hit.negative) throw dnsError(hit.negative, name);
        return hit.answer!;
      }
      this.cache.delete(key);
    }
    const pending = this.inflight.get(key);
    if (pending) return pending;
    const p = this.query(name, type, key).finally(() => this.inflight.delete(key));
    this.inflight.set(key, p);
    return p;
  }

  private async query(name: string, type: string, key: string): Promise<DnsAnswer> {
    this.queries++;
    let answer: DnsAnswer;
    let ttlMs = this.maxTtlMs;
    try {
      if (type === 'A' || type === 'AAAA') {
        const records = type === 'A' ? await this.resolver.resolve4(name, { ttl: true }) : await this.resolver.resolve6(name, { ttl: true });
        answer = records.map((r) => r.address);
        if (records.length) ttlMs = Math.min(ttlMs, Math.min(...records.map((r) => r.ttl)) * 1000);
      } else {
        answer = (await this.resolver.resolve(name, type as 'TXT')) as DnsAnswer;
      }
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? 'ESERVFAIL';
      if (code === 'ENOTFOUND' || code === 'ENODATA') this.remember(key, { expires: Date.now() + this.maxTtlMs, negative: code });
      throw e;
    }
    if (JSON.stringify(answer).length > MAX_ANSWER_CHARS) throw dnsError('ETOOBIG', name);
    if (ttlMs > 0) this.remember(key, { expires: Date.now() + ttlMs, answer });
    return answer;
  }

  private remember(key: string, entry: Entry): void {
    this.cache.delete(key);
    while (this.cache.size >= this.maxEntries) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(key, entry);
  }
}
