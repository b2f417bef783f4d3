/*
 * delivery/tls/policy - the TLS policy decision point: for one next hop and
 * one of its hosts, what must the TLS of the connection be (HostTlsPolicy)?
 *
 * Precedence (RFC 7672 §2.2 and RFC 8461 §2: DANE wins over MTA-STS):
 * 1. DANE, with `[delivery] dane = true`, for MX delivery whose MX answer
 *    is DNSSEC-validated (RFC 7672 §2.2.1; a failed MX check refuses every
 *    host): usable TLSA records (usage 2 or 3) of the MX host, validated
 *    (secure) -> kind "tlsa", enforced. Secure records none of which is
 *    usable -> TLS mandatory, not authenticated (§2.2; "required" unless the
 *    operator asks for verify). Insecure (no AD bit) or no record -> as if
 *    there were no DANE. A failed TLSA look-up (SERVFAIL) -> the host is
 *    refused before connecting (RFC 7672 §2.2: defer, never downgrade);
 * 2. MTA-STS, for MX delivery: "enforce" -> kind "sts", enforced, and a host
 *    the policy does not name is refused; "testing" -> deliver as usual, the
 *    failure only noted (for TLS reports); "none" or no policy -> on to 3;
 * 3. the operator's `tls` (the hop's, from [[routes]] or [delivery]):
 *    verify / required enforced, opportunistic not.
 *
 * Invariants: never throws (a resolver that throws is a failure, the host is
 * refused for DANE, the policy is treated as absent for MTA-STS, as RFC 8461
 * §5.1 says for a policy that cannot be fetched); a refusal is a
 * TlsPolicyFailure, which the agent turns into a deferral, 4.7.5.
 *
 * The resolvers (mta-sts.ts, dane.ts) are passed in (SmtpAgent.fromConfig
 * makes them from [delivery] mta_sts / dane), so this module depends only on
 * their interfaces and tests can stand in for them. Untrusted input: what they return (DNS, HTTPS).
 */
import type { NextHop } from '../agent.js';
import type { DaneMatcher, TlsaRecord } from './cert-check.js';
import type { HostTlsPolicy, TlsMode, TlsPolicyFailure } from './outcome.js';

import type { MtaStsPolicy } from './mta-sts.js';

export type { MtaStsPolicy };

/** mta-sts.ts's MtaStsResolver, as far as the agent uses it. */
export interface StsLookup {
  policyFor(domain: string): Promise<{ policy: MtaStsPolicy | null; failure?: TlsPolicyFailure }>;
}

/** dane.ts's DaneResolver, as far as the agent uses it. */
export interface DaneLookup {
  tlsaFor(host: string, port: number): Promise<{ secure: boolean; records: TlsaRecord[]; unusable?: number } | { failure: TlsPolicyFailure }>;
  /** Whether the MX answer of a domain is DNSSEC-validated; absent: taken as secure. */
  mxSecure?(domain: string): Promise<{ secure: boolean } | { failure: TlsPolicyFailure }>;
}

/** The policy sources the operator turned on ([delivery] mta_sts, dane), with their modules' helpers. */
export interface PolicySources {
  sts?: { resolver: StsLookup; mxAllowed: (policy: MtaStsPolicy, host: string) => boolean };
  dane?: { resolver: DaneLookup; matches: DaneMatcher };
}

type SmtpHop = Extract<NextHop, { kind: 'smtp' }>;

/** What is known of the hop's domain before its hosts are tried (one MTA-STS look-up per attempt). */
export interface DomainTls {
  sts: MtaStsPolicy | null;
  /** A failure fetching the policy: recorded, not enforced (RFC 8461 §5.1). */
  stsFailure?: TlsPolicyFailure;
  /** DANE for the MX hosts: allowed (the MX answer is secure), not, or the MX check failed. */
  daneMx?: boolean | TlsPolicyFailure;
}

/** The decision for one host. */
export interface HostDecision {
  policy: HostTlsPolicy;
  /** The usable TLSA records, for kind "tlsa". */
  tlsa: TlsaRecord[];
  /** Set: do not connect to this host; the failure is the attempt's (4.7.5). */
  refuse?: TlsPolicyFailure;
  /** A failure to record without enforcing it (MTA-STS testing). */
  note?: TlsPolicyFailure;
}

/** domainTls - the MTA-STS policy of an MX hop's domain (none for routes, smarthost and literals). */
export async function domainTls(hop: SmtpHop, sources: PolicySources): Promise<DomainTls> {
  if (hop.hosts !== 'mx' || hop.domain.startsWith('[')) return { sts: null };
  const out: DomainTls = { sts: null };
  if (sources.dane) out.daneMx = await daneMx(hop.domain, sources.dane.resolver);
  if (!sources.sts) return out;
  try {
    const r = await sources.sts.resolver.policyFor(hop.domain);
    out.sts = r.policy;
    if (r.failure) out.stsFailure = r.failure;
  } catch (e) {
    out.stsFailure = { policy: 'sts', policyDomain: hop.domain, type: 'sts-policy-fetch-error', detail: `MTA-STS policy of ${hop.domain}: ${(e as Error)?.message ?? e}` };
  }
  return out;
}

/** daneMx - may DANE apply to the MX hosts of `domain` (its MX answer is validated), or why that is unknown. */
async function daneMx(domain: string, resolver: DaneLookup): Promise<boolean | TlsPolicyFailure> {
  if (!resolver.mxSecure) return true;
  try {
    const r = await resolver.mxSecure(domain);
    return 'failure' in r ? r.failure : r.secure;
  } catch (e) {
    return { policy: 'tlsa', policyDomain: domain, type: 'dnssec-invalid', detail: `MX look-up of ${domain} failed: ${(e as Error)?.message ?? e}` };
  }
}

/** hostPolicy - the policy for `host` (the MX host name as found in DNS, or the route's host); see the precedence above. */
export async function hostPolicy(hop: SmtpHop, host: string, domain: DomainTls, sources: PolicySources): Promise<HostDecision> {
  const mx = hop.hosts === 'mx' && !host.startsWith('[');
  const policyDomain = hop.hosts === 'mx' ? hop.domain : hop.host;

  if (mx && sources.dane && domain.daneMx !== false) {
    const tlsa: HostTlsPolicy = { kind: 'tlsa', domain: policyDomain, enforce: true, names: [host] };
    if (typeof domain.daneMx === 'object') return { policy: tlsa, tlsa: [], refuse: domain.daneMx };
    let r: Awaited<ReturnType<DaneLookup['tlsaFor']>>;
    try {
      r = await sources.dane.resolver.tlsaFor(host, hop.port);
    } catch (e) {
      r = { failure: { policy: 'tlsa', policyDomain, type: 'tlsa-invalid', detail: `TLSA look-up for _${hop.port}._tcp.${host} failed: ${(e as Error)?.message ?? e}` } };
    }
    if ('failure' in r) return { policy: tlsa, tlsa: [], refuse: r.failure };
    const usable = r.records.filter((x) => x.usage === 2 || x.usage === 3);
    if (r.secure && usable.length) return { policy: tlsa, tlsa: usable };
    if (r.secure && (r.records.length || r.unusable)) return { policy: operatorPolicy(hop.tls === 'verify' ? 'verify' : 'required', policyDomain, host), tlsa: [] };
  }

  if (mx && domain.sts && domain.sts.mode !== 'none' && sources.sts) {
    const enforce = domain.sts.mode === 'enforce';
    const sts: HostTlsPolicy = { kind: 'sts', domain: hop.domain, enforce, names: [host] };
    const named = sources.sts.mxAllowed(domain.sts, host);
    const notNamed: TlsPolicyFailure = { policy: 'sts', policyDomain: hop.domain, type: 'validation-failure', detail: `MX host ${host} is not named by the MTA-STS policy of ${hop.domain}` };
    if (enforce) return named ? { policy: sts, tlsa: [] } : { policy: sts, tlsa: [], refuse: notNamed };
    // testing: mail goes as the operator's setting says; what would have failed is noted.
    if (hop.tls === 'opportunistic') return named ? { policy: sts, tlsa: [] } : { policy: sts, tlsa: [], note: notNamed };
    return named ? { policy: operatorPolicy(hop.tls, policyDomain, host), tlsa: [] } : { policy: operatorPolicy(hop.tls, policyDomain, host), tlsa: [], note: notNamed };
  }

  return { policy: operatorPolicy(hop.tls, policyDomain, host), tlsa: [] };
}

/** operatorPolicy - the policy of the operator's own `tls` setting. */
export function operatorPolicy(mode: TlsMode, domain: string, host: string): HostTlsPolicy {
  return { kind: mode, domain, enforce: mode !== 'opportunistic', names: [host.replace(/^\[(?:IPv6:)?|\]$/gi, '')] };
}

/** verifies - a policy whose certificate check is enforced (verify, enforced MTA-STS, DANE). */
export function verifies(p: HostTlsPolicy): boolean {
  return p.enforce && (p.kind === 'verify' || p.kind === 'sts' || p.kind === 'tlsa');
}
