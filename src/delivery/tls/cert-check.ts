/*
 * delivery/tls/cert-check - does the certificate a next hop presented meet
 * the policy decided for it (policy.ts)? And the trust anchors to check it
 * against: Node's default CAs plus `[delivery] tls_ca_file`.
 *
 * Rules:
 * - verify / sts (RFC 8461 §4.2): the chain ends at a trusted anchor (OpenSSL's
 *   verdict for the handshake, `authorized`), and one of the policy's names
 *   is a DNS-ID of the certificate: Node's tls.checkServerIdentity, which
 *   follows RFC 6125 (subjectAltName DNS-IDs, the CN only when there is none;
 *   a wildcard only as the whole left-most label, matching one label);
 * - tlsa (RFC 7672 §3): a DANE-EE (usage 3) record matching the leaf is
 *   enough: no name, no chain, no expiry check (§3.1); a DANE-TA (usage 2)
 *   record must match a certificate the leaf chains up to (dane.ts checks
 *   each link), and the leaf must carry one of the policy's names (§3.2).
 *   Matching records to certificates is dane.ts's `daneMatches`, passed in;
 * - opportunistic / required: not checked (the client does not call this):
 *   `verified` stays false, so it always means an authenticating policy
 *   passed (REQUIRETLS relies on it).
 *
 * Untrusted input: the peer's certificate chain (parsed by OpenSSL through
 * Node) and the operator's CA file (a bad file is a check-config error).
 *
 * Written here rather than taken from a library: the chain and name checks
 * are Node's own (OpenSSL, checkServerIdentity); what is left is mapping
 * their verdicts onto the RFC 8460 failure types, which no library does.
 */
import { readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { checkServerIdentity, createSecureContext, rootCertificates, type PeerCertificate, type SecureContext, type TLSSocket } from 'node:tls';
import type { HostTlsPolicy, TlsFailureType, TlsPolicyFailure } from './outcome.js';

import type { TlsaRecord } from './dane.js';

export type { TlsaRecord };

/** dane.ts's daneMatches: does any record match the chain (DER, leaf first)? */
export type DaneMatcher = (records: TlsaRecord[], chain: Buffer[]) => boolean;

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** pemCertificates - every certificate of a PEM text; throws when one does not parse. */
function pemCertificates(text: string): string[] {
  const certs = text.match(PEM_CERT) ?? [];
  for (const c of certs) new X509Certificate(c);
  return certs;
}

/** caFileProblem - why `[delivery] tls_ca_file` cannot be used (null: it can, or it is not set). */
export function caFileProblem(path: string): string | null {
  if (path === '') return null;
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    return `cannot read ${path}: ${err.code ?? err.message}`;
  }
  try {
    if (pemCertificates(text).length === 0) return `${path} holds no PEM certificate ("-----BEGIN CERTIFICATE-----")`;
  } catch (e) {
    return `${path} holds a certificate that cannot be parsed: ${(e as Error).message}`;
  }
  return null;
}

/** trustContext - a TLS client context trusting Node's default CAs plus those of `caFile` (checked at load). */
export function trustContext(caFile = ''): SecureContext {
  const extra = caFile ? pemCertificates(readFileSync(caFile, 'utf8')) : [];
  return createSecureContext({ ca: [...rootCertificates, ...extra] });
}

/** What the check found, for the outcome and, when it failed, the failure. */
export interface CertVerdict {
  verified: boolean;
  failure: TlsPolicyFailure | null;
}

/** chainOf - the peer's chain as DER, leaf first, as it sent it. */
export function chainOf(socket: TLSSocket): Buffer[] {
  const out: Buffer[] = [];
  let c = socket.getPeerCertificate(true) as (PeerCertificate & { issuerCertificate?: PeerCertificate }) | null;
  const seen = new Set<PeerCertificate>();
  while (c && c.raw && !seen.has(c) && out.length < 16) {
    seen.add(c);
    out.push(c.raw);
    c = (c as { issuerCertificate?: PeerCertificate }).issuerCertificate ?? null;
  }
  return out;
}

/** checkPeer - the certificate of a finished handshake against `policy` (see the rules above). */
export function checkPeer(socket: TLSSocket, policy: HostTlsPolicy, tlsa: TlsaRecord[] = [], matches?: DaneMatcher): CertVerdict {
  const fail = (type: TlsFailureType, detail: string): CertVerdict => ({
    verified: false,
    failure: { policy: policy.kind, policyDomain: policy.domain, type, detail },
  });
  const leaf = socket.getPeerCertificate(false);
  if (!leaf || !leaf.raw) return fail('validation-failure', 'the peer presented no certificate');

  if (policy.kind === 'tlsa') {
    if (!matches) return fail('tlsa-invalid', 'DANE TLSA records found but no matcher is configured');
    const chain = chainOf(socket);
    if (matches(tlsa.filter((r) => r.usage === 3), chain.slice(0, 1))) return { verified: true, failure: null };
    const ta = tlsa.filter((r) => r.usage === 2);
    if (!ta.length || !matches(ta, chain)) return fail('validation-failure', `no certificate of the chain matches a usable TLSA record of ${policy.names[0] ?? policy.domain}`);
    return nameVerdict(leaf, policy, fail);
  }

  if (!socket.authorized) {
    const code = String(socket.authorizationError ?? 'unknown error');
    return fail(chainFailure(code), `certificate of ${policy.names[0] ?? policy.domain} is not trusted: ${code}`);
  }
  return nameVerdict(leaf, policy, fail);
}

/** nameVerdict - one of the policy's names is a DNS-ID of the leaf (RFC 6125). */
function nameVerdict(leaf: PeerCertificate, policy: HostTlsPolicy, fail: (t: TlsFailureType, d: string) => CertVerdict): CertVerdict {
  for (const name of policy.names) if (checkServerIdentity(name, leaf) === undefined) return { verified: true, failure: null };
  const has = leaf.subjectaltname ? leaf.subjectaltname : `CN=${leaf.subject?.CN ?? '?'}`;
  return fail('certificate-host-mismatch', `certificate (${has.slice(0, 200)}) does not match ${policy.names.join(' or ') || '(no name)'}`);
}

/** chainFailure - an OpenSSL verify code as an RFC 8460 result type. */
function chainFailure(code: string): TlsFailureType {
  if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID') return 'certificate-expired';
  if (
    code === 'DEPTH_ZERO_SELF_SIGNED_CERT' ||
    code === 'SELF_SIGNED_CERT_IN_CHAIN' ||
    code === 'UNABLE_TO_GET_ISSUER_CERT' ||
    code === 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY' ||
    code === 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' ||
    code === 'CERT_UNTRUSTED' ||
    code === 'CERT_REJECTED'
  )
    return 'certificate-not-trusted';
  return 'validation-failure';
}
