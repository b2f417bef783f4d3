/*
 * delivery/tls/mta-sts - finds the MTA-STS policy (RFC 8461) of a recipient
 * domain for the SMTP agent: the `_mta-sts.<domain>` TXT record, the policy
 * file fetched over HTTPS from `mta-sts.<domain>`, and a bounded cache.
 *
 * Policy discovery (§3, §5.1), per policyFor(domain):
 * - TXT through the configured resolvers ([delivery] dns_servers). No usable
 *   record (none, several, malformed; or the look-up failed) -> the cached
 *   policy while it is unexpired (a record removed or hidden by an attacker
 *   does not end a policy before its max_age, §8.3), else no policy and no
 *   failure.
 * - The record's id equals the cached policy's -> the cached policy.
 * - Otherwise the policy is fetched: the A (else AAAA) record of
 *   mta-sts.<domain> through the same resolvers, a TLS connection to that
 *   address with SNI and certificate check for mta-sts.<domain> (Node's CAs
 *   plus [delivery] tls_ca_file), GET /.well-known/mta-sts.txt, only a 200
 *   with Content-Type text/plain is taken (no redirects, §3.3), at most
 *   64 KB, the exchange within timeoutMs. A good policy replaces the cached one.
 * - A fetch that fails keeps an unexpired cached policy in use (§5.1);
 *   the same id is not fetched again for failureRetryMs (5 min), so a dead
 *   policy server does not make every delivery to the domain wait for it;
 *   with nothing cached the answer is no policy with a failure of type
 *   sts-webpki-invalid (certificate), sts-policy-invalid (bad file, type or
 *   size) or sts-policy-fetch-error (anything else), for the attempt's event
 *   and TLS reports.
 *
 * Invariants: the cache (and the list of recent failures) holds at most
 * maxEntries domains (least recently used dropped first) and never returns a policy past its max_age; one fetch
 * per domain at a time (concurrent callers share it); nothing here throws.
 *
 * Untrusted input: DNS answers, the policy server's TLS, headers and body
 * (parsed by mta-sts-policy). Node's https module is used directly rather
 * than fetch(): undici cannot connect to an address we resolved ourselves
 * while checking the certificate against another name without a custom
 * dispatcher, and we need the resolvers the operator configured.
 */
import { readFileSync } from 'node:fs';
import { Resolver } from 'node:dns/promises';
import { request } from 'node:https';
import { rootCertificates } from 'node:tls';
import type { TlsFailureType, TlsPolicyFailure } from './outcome.js';
import { parsePolicy, parseStsTxt, type MtaStsPolicy } from './mta-sts-policy.js';

export { mxAllowed, policyStrings, parsePolicy, parseStsTxt, MAX_AGE_LIMIT, type MtaStsPolicy } from './mta-sts-policy.js';

/** §3.3 leaves the limit to the sender; 64 KB is far above any real policy. */
export const MAX_POLICY_SIZE = 64 * 1024;

export interface MtaStsResolverOptions {
  /** "ip:port" resolvers; the system's when empty. */
  dnsServers: string[];
  /** Extra trust anchors (PEM file), [delivery] tls_ca_file. */
  caFile?: string;
  /** The HTTPS exchange (connect, TLS, body); also each DNS query's timeout (tried twice). Default 10 s. */
  timeoutMs?: number;
  /** Domains cached at most. Default 10000. */
  maxEntries?: number;
  /** Port of the policy server; 443 except in tests. */
  httpsPort?: number;
  /** After a failed fetch, the same TXT id is not fetched again for this long (the failure, or the cached policy, is the answer). Default 5 min. */
  failureRetryMs?: number;
}

export interface MtaStsAnswer {
  policy: MtaStsPolicy | null;
  failure?: TlsPolicyFailure;
}

interface Cached {
  policy: MtaStsPolicy;
  /** Epoch ms after which the policy is not used. */
  expires: number;
}

/** FetchError - why a policy fetch failed, as an RFC 8460 result type. */
class FetchError extends Error {
  constructor(
    readonly type: Extract<TlsFailureType, 'sts-policy-fetch-error' | 'sts-policy-invalid' | 'sts-webpki-invalid'>,
    message: string,
  ) {
    super(message);
  }
}

/** Error codes of a certificate that did not verify (OpenSSL's, and Node's for the name check). */
function certificateError(code: string | undefined): boolean {
  if (!code) return false;
  return code === 'ERR_TLS_CERT_ALTNAME_INVALID' || /^(CERT_|UNABLE_TO_|DEPTH_ZERO_|SELF_SIGNED_|INVALID_CA|PATH_LENGTH_|HOSTNAME_MISMATCH|ERR_TLS_CERT)/.test(code);
}

export class MtaStsResolver {
  private readonly resolver: Resolver;
  private readonly cache = new Map<string, Cached>();
  private readonly inflight = new Map<string, Promise<MtaStsAnswer>>();
  /** Recent failed fetches: domain -> the TXT id it was for, until when it stands, and why. */
  private readonly failed = new Map<string, { id: string; until: number; failure: TlsPolicyFailure }>();
  private readonly failureRetryMs: number;
  private readonly ca: string[];
  private readonly timeoutMs: number;
  private readonly maxEntries: number;
  private readonly port: number;
  /** Why the CA file could not be read (then only Node's CAs are used); null when fine. */
  readonly caProblem: string | null = null;

  constructor(o: MtaStsResolverOptions) {
    this.timeoutMs = o.timeoutMs ?? 10_000;
    this.maxEntries = Math.max(1, o.maxEntries ?? 10_000);
    this.port = o.httpsPort ?? 443;
    this.failureRetryMs = o.failureRetryMs ?? 300_000;
    this.resolver = new Resolver({ timeout: this.timeoutMs, tries: 2 });
    if (o.dnsServers.length) this.resolver.setServers(o.dnsServers);
    this.ca = [...rootCertificates];
    if (o.caFile) {
      try {
        this.ca.push(readFileSync(o.caFile, 'utf8'));
      } catch (e) {
        // check-config reports an unreadable tls_ca_file; here it only means fewer anchors.
        this.caProblem = `cannot read ${o.caFile}: ${(e as Error).message}`;
      }
    }
  }

  /** policyFor - the policy that applies to mail for `domain` now (see the file comment). Never rejects. */
  policyFor(domain: string): Promise<MtaStsAnswer> {
    const d = domain.toLowerCase().replace(/\.$/, '');
    const running = this.inflight.get(d);
    if (running) return running;
    const p = this.discover(d).catch((e: unknown): MtaStsAnswer => ({ policy: this.cached(d), ...(this.cached(d) ? {} : { failure: this.failure(d, 'sts-policy-fetch-error', (e as Error).message) }) }));
    this.inflight.set(d, p);
    void p.finally(() => this.inflight.delete(d));
    return p;
  }

  /** cached - the unexpired cached policy of a domain (marked recently used), or null. */
  private cached(domain: string): MtaStsPolicy | null {
    const c = this.cache.get(domain);
    if (!c) return null;
    if (Date.now() >= c.expires) {
      this.cache.delete(domain);
      return null;
    }
    this.cache.delete(domain);
    this.cache.set(domain, c);
    return c.policy;
  }

  private remember(domain: string, policy: MtaStsPolicy): void {
    this.cache.delete(domain);
    if (policy.maxAge <= 0) return;
    this.cache.set(domain, { policy, expires: Date.now() + policy.maxAge * 1000 });
    while (this.cache.size > this.maxEntries) this.cache.delete(this.cache.keys().next().value as string);
  }

  private failure(domain: string, type: FetchError['type'], detail: string): TlsPolicyFailure {
    return { policy: 'sts', policyDomain: domain, type, detail };
  }

  private async discover(domain: string): Promise<MtaStsAnswer> {
    let records: string[];
    try {
      records = (await this.resolver.resolveTxt(`_mta-sts.${domain}`)).map((chunks) => chunks.join(''));
    } catch {
      // NXDOMAIN, no TXT, or the look-up failed: no record now (§3.1, §5.1).
      records = [];
    }
    const txt = parseStsTxt(records);
    const cached = this.cached(domain);
    if (txt === null || 'error' in txt) return { policy: cached };
    if (cached && cached.id === txt.id) return { policy: cached };
    // A fetch for this id failed a moment ago: do not make every delivery wait for another one.
    const recent = this.failed.get(domain);
    if (recent && recent.id === txt.id && Date.now() < recent.until) return cached ? { policy: cached } : { policy: null, failure: recent.failure };
    try {
      const body = await this.fetchPolicy(domain);
      const parsed = parsePolicy(body, txt.id);
      if ('error' in parsed) throw new FetchError('sts-policy-invalid', `policy of ${domain}: ${parsed.error}`);
      this.remember(domain, parsed.policy);
      this.failed.delete(domain);
      return { policy: parsed.policy };
    } catch (e) {
      const f = e instanceof FetchError ? e : new FetchError('sts-policy-fetch-error', (e as Error).message);
      const failure = this.failure(domain, f.type, f.message);
      this.failed.delete(domain);
      this.failed.set(domain, { id: txt.id, until: Date.now() + this.failureRetryMs, failure });
      while (this.failed.size > this.maxEntries) this.failed.delete(this.failed.keys().next().value as string);
      if (cached) return { policy: cached };
      return { policy: null, failure };
    }
  }

  /** address - the policy host's address through the configured resolvers (A, else AAAA). */
  private async address(host: string): Promise<string> {
    for (const family of [4, 6] as const) {
      try {
        const list = family === 4 ? await this.resolver.resolve4(host) : await this.resolver.resolve6(host);
        if (list.length) return list[0]!;
      } catch {
        // try the other family
      }
    }
    throw new FetchError('sts-policy-fetch-error', `${host} has no A or AAAA record`);
  }

  /** fetchPolicy - the body of https://mta-sts.<domain>/.well-known/mta-sts.txt, or a FetchError. */
  private async fetchPolicy(domain: string): Promise<string> {
    const host = `mta-sts.${domain}`;
    const url = `https://${host}/.well-known/mta-sts.txt`;
    const ip = await this.address(host);
    return new Promise<string>((resolve, reject) => {
      let settled = false;
      const done = (e: Error | null, body?: string): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        req.destroy();
        if (e) reject(e);
        else resolve(body!);
      };
      const req = request({
        host: ip,
        port: this.port,
        servername: host,
        path: '/.well-known/mta-sts.txt',
        method: 'GET',
        headers: { Host: host, Accept: 'text/plain', 'User-Agent': 'Petrel MTA-STS' },
        ca: this.ca,
        rejectUnauthorized: true,
        agent: false,
      });
      const timer = setTimeout(() => done(new FetchError('sts-policy-fetch-error', `${url}: no complete answer within ${this.timeoutMs} ms`)), this.timeoutMs);
      req.on('error', (e: NodeJS.ErrnoException) => {
        if (certificateError(e.code)) done(new FetchError('sts-webpki-invalid', `${url}: certificate not valid for ${host}: ${e.message}`));
        else done(new FetchError('sts-policy-fetch-error', `${url}: ${e.code ?? ''} ${e.message}`.replace(/\s+/g, ' ')));
      });
      req.on('response', (res) => {
        if (res.statusCode !== 200) {
          // §3.3: redirects are not followed; any other status is no policy.
          done(new FetchError('sts-policy-fetch-error', `${url}: HTTP ${res.statusCode}${res.statusCode && res.statusCode >= 300 && res.statusCode < 400 ? ' (redirects are not followed, RFC 8461 §3.3)' : ''}`));
          return;
        }
        const type = String(res.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
        if (type !== 'text/plain') {
          done(new FetchError('sts-policy-invalid', `${url}: Content-Type "${type}" is not text/plain`));
          return;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_POLICY_SIZE) done(new FetchError('sts-policy-invalid', `${url}: larger than ${MAX_POLICY_SIZE} octets`));
          else chunks.push(c);
        });
        res.on('error', (e) => done(new FetchError('sts-policy-fetch-error', `${url}: ${e.message}`)));
        res.on('end', () => done(null, Buffer.concat(chunks).toString('utf8')));
      });
      req.end();
    });
  }
}
