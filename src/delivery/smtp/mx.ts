/*
 * delivery/smtp/mx - the hosts to try for a destination domain (RFC 5321 §5.1).
 *
 * Rules:
 * - MX records by preference, lowest first; hosts of equal preference in a
 *   random order (load spreading, §5.1);
 * - no MX records (NODATA) -> the domain itself is the one host (implicit MX);
 * - a null MX (RFC 7505: the single record "0 .") -> failed at once, 5.1.10;
 * - NXDOMAIN -> failed, 5.1.2; a domain with neither MX nor address -> failed, 5.4.4;
 * - SERVFAIL, refused, timeout (any doubt) -> deferred, 4.4.3: a look-up
 *   that did not answer clearly never fails a recipient, and its text says
 *   what happened ("MX look-up for d1.example timed out (ETIMEOUT)"), never
 *   "not found" (failure-text.ts);
 * - each host's addresses come from A then AAAA; an address literal
 *   ("[192.0.2.1]") is used as it is.
 *
 * Cache: the SMTP agent resolves a domain's MX hosts before it borrows a
 * connection (the pool key is the host set: "MX rollup", domains behind the
 * same hosts share connections), so hosts() answers are kept for
 * `cacheTtlMs` in a table of at most `cacheMax` domains (oldest dropped
 * first). Only answers are kept; a failure (any LookupError) is never cached,
 * so the next attempt asks again, exactly as without a cache. Addresses are
 * not cached (they are looked up only when a connection is opened).
 *
 * Untrusted input: DNS answers (names are only used to look up addresses and
 * to label results; addresses are checked with isIP before use).
 */
import { promises as dnsPromises } from 'node:dns';
import { isIP } from 'node:net';
import { lookupFailure } from './failure-text.js';

export interface ResolverOptions {
  /** "ip:port" strings ([delivery] dns_servers); the system resolver when empty. */
  servers?: string[];
  /** Per-query timeout in ms (c-ares, doubled per try). */
  timeoutMs?: number;
  tries?: number;
  /** How long a domain's MX hosts are kept (ms); 0 turns the cache off. */
  cacheTtlMs?: number;
  /** Most domains kept. */
  cacheMax?: number;
}

/** One host to try, with its addresses in the order to try them. */
export interface TargetHost {
  name: string;
  preference: number;
  /** Filled by addresses(); empty until then. */
  addresses: string[];
}

export class LookupError extends Error {
  constructor(
    /** True when the answer is certain: the recipients fail. */
    readonly permanent: boolean,
    readonly status: string,
    message: string,
  ) {
    super(message);
    this.name = 'LookupError';
  }
}

const PERMANENT_CODES = new Set(['ENOTFOUND', 'ENODATA']);

interface CachedHosts {
  hosts: TargetHost[];
  until: number;
}

export class MxResolver {
  private readonly resolver: dnsPromises.Resolver;
  private readonly cache = new Map<string, CachedHosts>();
  private readonly cacheTtlMs: number;
  private readonly cacheMax: number;

  constructor(options: ResolverOptions = {}) {
    this.resolver = new dnsPromises.Resolver({ timeout: options.timeoutMs ?? 5000, tries: options.tries ?? 2 });
    if (options.servers && options.servers.length) this.resolver.setServers(options.servers);
    this.cacheTtlMs = options.cacheTtlMs ?? 60_000;
    this.cacheMax = options.cacheMax ?? 10_000;
  }

  /**
   * cachedHosts - hosts(), answered from the cache while fresh. The order of
   * hosts of equal preference is shuffled again on each use (load spreading);
   * each call gets its own copies.
   */
  async cachedHosts(domain: string): Promise<TargetHost[]> {
    const key = domain.toLowerCase();
    const hit = this.cache.get(key);
    const now = Date.now();
    if (hit && hit.until > now) return orderByPreference(hit.hosts.map((h) => ({ ...h, addresses: [...h.addresses] })));
    if (hit) this.cache.delete(key);
    const hosts = await this.hosts(domain);
    if (this.cacheTtlMs > 0) {
      if (this.cache.size >= this.cacheMax) this.cache.delete(this.cache.keys().next().value as string);
      this.cache.set(key, { hosts: hosts.map((h) => ({ ...h, addresses: [...h.addresses] })), until: now + this.cacheTtlMs });
    }
    return hosts;
  }

  /** cacheSize - domains held (tests: the table is bounded). */
  get cacheSize(): number {
    return this.cache.size;
  }

  /** hosts - the ordered MX hosts of a domain (addresses not yet resolved); throws LookupError. */
  async hosts(domain: string): Promise<TargetHost[]> {
    const literal = /^\[(?:IPv6:)?([^\]]+)\]$/i.exec(domain);
    if (literal && isIP(literal[1]!)) return [{ name: domain, preference: 0, addresses: [literal[1]!] }];
    let records: { exchange: string; priority: number }[];
    try {
      records = await this.resolver.resolveMx(domain);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? '';
      if (code === 'ENODATA') return [{ name: domain, preference: 0, addresses: [] }];
      if (code === 'ENOTFOUND') throw new LookupError(true, '5.1.2', `Host or domain name not found: ${domain} (MX look-up: NXDOMAIN)`);
      // Any other failure is a doubt, not an answer: say what happened ("timed out"), keep it temporary.
      throw new LookupError(false, '4.4.3', lookupFailure(`MX look-up for ${domain}`, [code || (e as Error).message]));
    }
    const real = records.filter((r) => r.exchange !== '' && r.exchange !== '.');
    if (real.length === 0) {
      if (records.length > 0) throw new LookupError(true, '5.1.10', `Domain ${domain} does not accept mail (null MX, RFC 7505)`);
      return [{ name: domain, preference: 0, addresses: [] }];
    }
    return orderByPreference(real.map((r) => ({ name: r.exchange.replace(/\.$/, '').toLowerCase(), preference: r.priority, addresses: [] })));
  }

  /** addresses - A then AAAA of one host; [] when it has none; throws LookupError only for a temporary failure of both. */
  async addresses(host: string): Promise<string[]> {
    if (isIP(host)) return [host];
    const [a, aaaa] = await Promise.allSettled([this.resolver.resolve4(host), this.resolver.resolve6(host)]);
    const out: string[] = [];
    const errors: string[] = [];
    let temporary = false;
    for (const r of [a, aaaa]) {
      if (r.status === 'fulfilled') out.push(...r.value.filter((x) => isIP(x)));
      else {
        const code = (r.reason as NodeJS.ErrnoException).code ?? '';
        if (!PERMANENT_CODES.has(code)) {
          temporary = true;
          errors.unshift(code || String(r.reason)); // the doubt is what the text says happened
        } else errors.push(code);
      }
    }
    if (out.length === 0 && temporary) throw new LookupError(false, '4.4.3', lookupFailure(`address look-up for ${host}`, errors));
    return out;
  }
}

/**
 * hostSetKey - the identity of a next hop reached by MX: its host names,
 * sorted, so domains whose MX records name the same hosts (in any order or
 * preference) share one key ("MX rollup"). An implicit MX (the domain itself,
 * no MX record) is marked so, so it never shares with a domain whose MX names
 * that host: its "no address" is a permanent answer for that domain only.
 */
export function hostSetKey(domain: string, hosts: readonly TargetHost[]): string {
  const names = hosts.map((h) => h.name).sort();
  const implicit = hosts.length === 1 && hosts[0]!.name.toLowerCase() === domain.toLowerCase() ? 'implicit=' : '';
  return `${implicit}${names.join(',')}`;
}

/** orderByPreference - sort by preference, shuffling hosts of equal preference. */
export function orderByPreference<T extends { preference: number }>(hosts: T[], random: () => number = Math.random): T[] {
  const keyed = hosts.map((h) => ({ h, k: random() }));
  keyed.sort((x, y) => x.h.preference - y.h.preference || x.k - y.k);
  return keyed.map((x) => x.h);
}
