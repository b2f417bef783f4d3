/*
 * delivery/tls/dane - DANE for SMTP (RFC 7672): the TLSA records of one MX
 * host, trusted only when the operator's validating resolver vouches for them
 * (AD bit), and the check of a peer's certificate chain against them. The
 * outbound TLS policy code (smtp-agent / client, branch `tls`) decides what
 * to do with the result; this module only looks up and matches.
 *
 * Rules (RFC 7672 §2.2, RFC 6698, RFC 7671):
 * - the question is `_<port>._tcp.<host>` TLSA, through net/dns-secure with
 *   the DO bit; CNAMEs followed by the resolver are honoured (records owned
 *   by any name of the CNAME chain from the question count);
 * - AD set: the answer is secure (`secure: true`) and its usable records are
 *   returned; AD not set: `secure: false` and no records (no DANE, whatever
 *   the answer holds);
 * - NXDOMAIN or NODATA: no records, `secure` as the AD bit says;
 * - SERVFAIL, timeout, an unusable reply: `failure` (RFC 8460
 *   'dnssec-invalid'; the caller defers) — unless the host's own address
 *   records are provably insecure (answered without AD), in which case DANE
 *   cannot apply (RFC 7672 §2.2.2: no TLSA look-up for insecure hosts) and
 *   the answer is `secure: false`;
 * - usable records are usage 2 (DANE-TA) and 3 (DANE-EE) only (0 and 1 are
 *   not for SMTP, RFC 7672 §3.1.3), selector 0 (certificate) or 1 (SPKI),
 *   matching type 0 (exact), 1 (SHA-256, 32 octets) or 2 (SHA-512, 64
 *   octets); others are ignored and counted in `unusable` (a secure RRset
 *   with only unusable records still means TLS is mandatory, §2.2).
 *
 * daneMatches: usage 3 matches the leaf (first) certificate alone, whatever
 * its names or dates (RFC 7672 §3.1.1); usage 2 matches a certificate of the
 * chain that the leaf chains up to (each link checked with checkIssued and a
 * signature check), or, for "2 1 0" (the full public key published), the key
 * that signed the top certificate (RFC 7671 §5.2.2). The name check that
 * DANE-TA needs (RFC 7672 §3.2.3) is the caller's (HostTlsPolicy.names).
 *
 * Untrusted input: the DNS answer (via net/dns-secure, which checks id and
 * question) and the peer's certificates (parsed by node:crypto inside a try:
 * a certificate that does not parse matches nothing).
 */
import { createHash, X509Certificate, createPublicKey } from 'node:crypto';
import { isIP } from 'node:net';
import type { DetailedPeerCertificate, TLSSocket } from 'node:tls';
import { querySecure, sameName, SecureDnsError, type DnsRecord } from '../../net/dns-secure.js';
import type { TlsPolicyFailure } from './outcome.js';

export interface TlsaRecord {
  usage: number;
  selector: number;
  matchingType: number;
  data: Buffer;
}

export type TlsaResult = { secure: boolean; records: TlsaRecord[]; /** Secure records that were ignored (usage 0/1, unknown selector or matching type, wrong digest length). */ unusable?: number } | { failure: TlsPolicyFailure };

/** Digest length of each matching type (0: any length). */
const DIGEST_LENGTH: Record<number, number> = { 0: 0, 1: 32, 2: 64 };

/** usable - a record DANE for SMTP may use (see the rules). */
export function usable(r: TlsaRecord): boolean {
  if (r.usage !== 2 && r.usage !== 3) return false;
  if (r.selector !== 0 && r.selector !== 1) return false;
  const len = DIGEST_LENGTH[r.matchingType];
  if (len === undefined || r.data.length === 0) return false;
  return len === 0 || r.data.length === len;
}

/** A host name we may build a TLSA name from: LDH labels (and _), at most 253 octets. */
const HOST = /^(?=.{1,253}$)([A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)(\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;

/** tlsaRecords - the TLSA records of the answer owned by `name` or by a name its CNAME chain leads to. */
function tlsaRecords(name: string, answers: DnsRecord[]): TlsaRecord[] {
  const names = [name];
  // Follow the chain as far as the answer goes (bounded by its length: no loop).
  for (let i = 0; i < answers.length; i++) {
    const next = answers.find((a) => a.type === 'CNAME' && names.some((n) => sameName(n, a.name)) && !names.some((n) => sameName(n, a.data)));
    if (!next || next.type !== 'CNAME') break;
    names.push(next.data);
  }
  const out: TlsaRecord[] = [];
  for (const a of answers) {
    if (a.type !== 'TLSA' || !names.some((n) => sameName(n, a.name))) continue;
    // Checked field by field: the types say what dns-packet should give, not what a reply can make it give.
    const d = a.data as { usage?: unknown; selector?: unknown; matchingType?: unknown; certificate?: unknown } | undefined;
    if (typeof d?.usage !== 'number' || typeof d.selector !== 'number' || typeof d.matchingType !== 'number' || !Buffer.isBuffer(d.certificate)) continue;
    out.push({ usage: d.usage, selector: d.selector, matchingType: d.matchingType, data: Buffer.from(d.certificate) });
  }
  return out;
}

export class DaneResolver {
  private readonly dnsServers: string[];
  private readonly timeoutMs: number;

  constructor(o: { dnsServers: string[]; timeoutMs?: number }) {
    this.dnsServers = o.dnsServers;
    this.timeoutMs = o.timeoutMs ?? 5000;
  }

  /** tlsaFor - the DNSSEC-validated TLSA records of `host` on `port`; see the module rules. */
  async tlsaFor(host: string, port: number): Promise<TlsaResult> {
    const h = host.replace(/\.$/, '').toLowerCase();
    const failure = (detail: string, type: TlsPolicyFailure['type'] = 'dnssec-invalid'): { failure: TlsPolicyFailure } => ({
      failure: { policy: 'tlsa', policyDomain: h, type, detail },
    });
    // An address literal ([192.0.2.1]) has no TLSA name: no DANE.
    if (isIP(h.replace(/^\[|\]$/g, '')) !== 0) return { secure: false, records: [] };
    if (!HOST.test(h) || !Number.isInteger(port) || port < 1 || port > 65_535) return failure(`no TLSA name can be made from host ${JSON.stringify(host.slice(0, 80))} port ${port}`, 'tlsa-invalid');
    const name = `_${port}._tcp.${h}`;
    const opts = { servers: this.dnsServers, timeoutMs: this.timeoutMs };
    let why: string;
    try {
      const a = await querySecure(name, 'TLSA', opts);
      if (a.rcode === 'NOERROR' || a.rcode === 'NXDOMAIN') {
        if (!a.ad) return { secure: false, records: [] };
        const all = a.rcode === 'NOERROR' ? tlsaRecords(name, a.answers) : [];
        const records = all.filter(usable);
        return { secure: true, records, unusable: all.length - records.length };
      }
      why = `TLSA look-up of ${name} answered ${a.rcode} by ${a.server}`;
    } catch (e) {
      if (!(e instanceof SecureDnsError)) throw e;
      why = `TLSA look-up of ${name} failed: ${e.message}`;
    }
    // RFC 7672 §2.2.2: DANE applies only to hosts whose address records are secure.
    if (await this.provablyInsecure(h)) return { secure: false, records: [] };
    return failure(why);
  }

  /**
   * mxSecure - whether the MX RRset of `domain` is DNSSEC-validated (AD):
   * RFC 7672 §2.2.1 uses DANE for the MX hosts only when it is (an insecure
   * MX answer could name an attacker's host, with TLSA records of its own).
   * A failed look-up is a failure (the caller defers), as for TLSA.
   */
  async mxSecure(domain: string): Promise<{ secure: boolean } | { failure: TlsPolicyFailure }> {
    const d = domain.replace(/\.$/, '').toLowerCase();
    try {
      const a = await querySecure(d, 'MX', { servers: this.dnsServers, timeoutMs: this.timeoutMs });
      if (a.rcode === 'NOERROR' || a.rcode === 'NXDOMAIN') return { secure: a.ad };
      return { failure: { policy: 'tlsa', policyDomain: d, type: 'dnssec-invalid', detail: `MX look-up of ${d} answered ${a.rcode} by ${a.server}` } };
    } catch (e) {
      if (!(e instanceof SecureDnsError)) throw e;
      return { failure: { policy: 'tlsa', policyDomain: d, type: 'dnssec-invalid', detail: `MX look-up of ${d} failed: ${e.message}` } };
    }
  }

  /** provablyInsecure - the host's A records were answered (NOERROR/NXDOMAIN) without AD. */
  private async provablyInsecure(host: string): Promise<boolean> {
    try {
      const a = await querySecure(host, 'A', { servers: this.dnsServers, timeoutMs: this.timeoutMs });
      return (a.rcode === 'NOERROR' || a.rcode === 'NXDOMAIN') && !a.ad;
    } catch {
      return false;
    }
  }
}

/** parse - a DER certificate, or null when it does not parse. */
function parse(der: Buffer): X509Certificate | null {
  try {
    return new X509Certificate(der);
  } catch {
    return null;
  }
}

/** selected - the octets a TLSA selector names: the whole certificate (0) or its SubjectPublicKeyInfo (1). */
function selected(cert: X509Certificate, der: Buffer, selector: number): Buffer | null {
  if (selector === 0) return der;
  if (selector === 1) return cert.publicKey.export({ type: 'spki', format: 'der' });
  return null;
}

/** matches - one record against one certificate. */
function matches(r: TlsaRecord, cert: X509Certificate, der: Buffer): boolean {
  const octets = selected(cert, der, r.selector);
  if (!octets) return false;
  if (r.matchingType === 0) return octets.equals(r.data);
  if (r.matchingType === 1) return createHash('sha256').update(octets).digest().equals(r.data);
  if (r.matchingType === 2) return createHash('sha512').update(octets).digest().equals(r.data);
  return false;
}

/** signedBy - `child` names `parent` as issuer and carries its signature. */
function signedBy(child: X509Certificate, parent: X509Certificate): boolean {
  try {
    return child.checkIssued(parent) && child.verify(parent.publicKey);
  } catch {
    return false;
  }
}

/**
 * daneMatches - whether the peer's chain (DER, leaf first) satisfies one of
 * the usable records; see the module comment.
 */
export function daneMatches(records: TlsaRecord[], chain: Buffer[]): boolean {
  const certs = chain.map(parse);
  const leaf = certs[0];
  if (!leaf) return false;
  // How far up the chain each certificate is reached by checked links from the leaf.
  let linked = 0;
  while (linked + 1 < certs.length && certs[linked + 1] && signedBy(certs[linked]!, certs[linked + 1]!)) linked++;
  for (const r of records.filter(usable)) {
    if (r.usage === 3 && matches(r, leaf, chain[0]!)) return true;
    if (r.usage !== 2) continue;
    for (let i = 1; i <= linked; i++) if (matches(r, certs[i]!, chain[i]!)) return true;
    if (r.selector === 1 && r.matchingType === 0) {
      // "2 1 0": the trust anchor's key itself, its certificate not sent.
      try {
        if (certs[linked]!.verify(createPublicKey({ key: r.data, format: 'der', type: 'spki' }))) return true;
      } catch {
        /* not a key: no match */
      }
    }
  }
  return false;
}

/** Most certificates taken from a peer's chain (a chain is a handful; a peer cannot make us walk without end). */
const MAX_CHAIN = 16;

/**
 * peerChain - the DER certificates a TLS peer presented, leaf first, as
 * daneMatches takes them (node:tls links them through issuerCertificate; a
 * self-signed root points at itself). Empty when the peer sent none.
 */
export function peerChain(socket: TLSSocket): Buffer[] {
  const out: Buffer[] = [];
  let c: DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
  while (c && c.raw && out.length < MAX_CHAIN) {
    out.push(c.raw);
    const next: DetailedPeerCertificate | undefined = c.issuerCertificate;
    if (!next || next === c || next.raw?.equals(c.raw)) break;
    c = next;
  }
  return out;
}
