/*
 * checks/dns - the resolver the inbound checks use (SPF, DKIM, DMARC, ARC,
 * DNS block lists), with a bounded cache.
 *
 * Every look-up goes to `[delivery] dns_servers` when set (the system
 * resolver's servers otherwise) with a short timeout: a server that does
 * not answer is an ETIMEOUT, which the callers turn into `temperror` (never
 * a permanent refusal). TXT and MX are asked on the wire (checks/dns-wire),
 * since node:dns does not report their TTL; A and AAAA through node:dns
 * with `ttl: true`; the rest (PTR) through node:dns.
 *
 * Invariants:
 * - the cache holds at most `maxEntries` answers; the oldest entry is evicted
 *   first (Map insertion order), so it can never fill (DESIGN invariant 6);
 * - an answer is kept as long as its DNS TTL says (the lowest TTL of its
 *   records and CNAMEs), but at least `minTtlMs` (a zero-TTL record cannot
 *   make every message ask again) and at most `maxTtlMs` (a changed record
 *   is seen within it); an answer whose TTL is not known (PTR) is kept
 *   `unknownTtlMs`;
 * - "no such name" (ENOTFOUND) and "no record of that type" (ENODATA) are
 *   answers and are cached (negatively) for the SOA's negative TTL (RFC
 *   2308), within the same floor and at most `maxNegativeTtlMs` (a record
 *   just published is seen soon), `unknownTtlMs` without a SOA; every other
 *   failure (timeout, SERVFAIL, refused, a broken reply) is not cached, so
 *   the next message asks again;
 * - concurrent look-ups of the same name and type share one query.
 *
 * Untrusted input: names come from the message (From: domain, DKIM d= and
 * s=, SPF includes) and answers from the network; both are only passed on
 * as strings, and each answer is capped (MAX_ANSWER_CHARS) before caching.
 *
 * RFCs: RFC 1035, RFC 2308 (negative caching).
 */
import { promises as dnsPromises, getServers } from 'node:dns';
import { wireQuery } from './dns-wire.js';

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
  /** Floor and cap of a cached answer's life (its TTL within them). */
  minTtlMs?: number;
  maxTtlMs?: number;
  /** Cap of a negative answer's life. */
  maxNegativeTtlMs?: number;
  /** Life of an answer whose TTL is not known. */
  unknownTtlMs?: number;
}

/** Defaults: at least 10 s, at most 1 hour; negative answers at most 5 minutes; a TTL not known, 60 s. */
export const DNS_CACHE_TTLS = { minTtlMs: 10_000, maxTtlMs: 3_600_000, maxNegativeTtlMs: 300_000, unknownTtlMs: 60_000 };

/** dnsError - an error shaped like node:dns's (callers read `.code`). */
function dnsError(code: string, name: string): Error {
  return Object.assign(new Error(`${code} ${name}`), { code, hostname: name });
}

export class CheckResolver {
  private readonly resolver: dnsPromises.Resolver;
  private readonly cache = new Map<string, Entry>();
  private readonly inflight = new Map<string, Promise<DnsAnswer>>();
  private readonly maxEntries: number;
  private readonly ttls: typeof DNS_CACHE_TTLS;
  private readonly servers: string[];
  private readonly timeoutMs: number;
  /** Look-ups answered from the cache and sent to a server (tests and metrics). */
  hits = 0;
  queries = 0;

  constructor(options: CheckResolverOptions) {
    this.timeoutMs = options.timeoutMs ?? 3000;
    this.resolver = new dnsPromises.Resolver({ timeout: this.timeoutMs, tries: 2 });
    if (options.servers.length) this.resolver.setServers(options.servers);
    this.servers = options.servers.length ? [...options.servers] : getServers();
    this.maxEntries = options.maxEntries ?? 10_000;
    this.ttls = {
      minTtlMs: options.minTtlMs ?? DNS_CACHE_TTLS.minTtlMs,
      maxTtlMs: options.maxTtlMs ?? DNS_CACHE_TTLS.maxTtlMs,
      maxNegativeTtlMs: options.maxNegativeTtlMs ?? DNS_CACHE_TTLS.maxNegativeTtlMs,
      unknownTtlMs: options.unknownTtlMs ?? DNS_CACHE_TTLS.unknownTtlMs,
    };
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

  /** life - how long to keep an answer with this TTL (seconds; undefined: not known). */
  private life(ttlSeconds: number | undefined, cap: number): number {
    if (ttlSeconds === undefined || !Number.isFinite(ttlSeconds)) return Math.min(this.ttls.unknownTtlMs, cap);
    return Math.min(cap, Math.max(this.ttls.minTtlMs, ttlSeconds * 1000));
  }

  private async query(name: string, type: string, key: string): Promise<DnsAnswer> {
    this.queries++;
    let answer: DnsAnswer;
    let ttl: number | undefined;
    try {
      if (type === 'A' || type === 'AAAA') {
        const records = type === 'A' ? await this.resolver.resolve4(name, { ttl: true }) : await this.resolver.resolve6(name, { ttl: true });
        answer = records.map((r) => r.address);
        if (records.length) ttl = Math.min(...records.map((r) => r.ttl));
      } else if (type === 'TXT' || type === 'MX') {
        const got = await wireQuery(this.servers, name, type, this.timeoutMs);
        answer = got.records;
        ttl = got.ttl;
      } else {
        answer = (await this.resolver.resolve(name, type as 'TXT')) as DnsAnswer;
      }
    } catch (e) {
      const err = e as NodeJS.ErrnoException & { ttl?: number };
      const code = err.code ?? 'ESERVFAIL';
      if (code === 'ENOTFOUND' || code === 'ENODATA') this.remember(key, { expires: Date.now() + this.life(err.ttl, this.ttls.maxNegativeTtlMs), negative: code });
      throw e;
    }
    if (JSON.stringify(answer).length > MAX_ANSWER_CHARS) throw dnsError('ETOOBIG', name);
    this.remember(key, { expires: Date.now() + this.life(ttl, this.ttls.maxTtlMs), answer });
    return answer;
  }

  /** expiresIn - ms left for a cached answer (tests); undefined when not cached. */
  expiresIn(name: string, rrtype: string): number | undefined {
    const e = this.cache.get(`${rrtype.toUpperCase()} ${name.toLowerCase().replace(/\.$/, '')}`);
    return e ? e.expires - Date.now() : undefined;
  }

  private remember(key: string, entry: Entry): void {
    this.cache.delete(key);
    while (this.cache.size >= this.maxEntries) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(key, entry);
  }
}
