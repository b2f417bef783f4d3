/*
 * delivery/tls/outcome - the shared vocabulary of outbound TLS: the policy a
 * delivery must meet for one next-hop host (decided before connecting, from
 * the route/global `tls` setting, MTA-STS or DANE) and what the TLS of one
 * connection turned out to be (recorded on every attempt's event, shown by
 * `petrel queue show` and the viewer, and fed to TLS reporting, RFC 8460).
 *
 * Invariants:
 * - a policy that is enforced and not met is a deferral with status 4.7.5
 *   (never a bounce before expiry); a `testing` MTA-STS policy is never
 *   enforced, only recorded;
 * - `verified` is true only when the peer's certificate was checked (chain
 *   and name for `verify`/MTA-STS, TLSA match for DANE) and passed.
 *
 * Untrusted input: none (built by Petrel from what it checked).
 */

/** The operator's `tls` setting ([delivery] tls, [[routes]] tls). */
export type TlsMode = 'opportunistic' | 'verify' | 'required';

/** Which rule decided what TLS a host must offer (RFC 8460 policy types, plus the operator's own). */
export type TlsPolicyKind =
  /** No rule: STARTTLS when offered, certificate not checked, plain text fallback. */
  | 'opportunistic'
  /** The operator's `tls = "required"`: STARTTLS must succeed; certificate not checked. */
  | 'required'
  /** The operator's `tls = "verify"`: chain to a trusted anchor and the host name checked. */
  | 'verify'
  /** An MTA-STS policy (RFC 8461) of the recipient domain. */
  | 'sts'
  /** DANE TLSA records (RFC 7672) of the MX host, DNSSEC-validated. */
  | 'tlsa';

/** What one host must offer, decided before connecting to it. */
export interface HostTlsPolicy {
  kind: TlsPolicyKind;
  /** The domain whose policy this is (RFC 8460 policy-domain): the recipient domain for sts, the route or MX domain otherwise. */
  domain: string;
  /** false for an MTA-STS policy in `testing` mode: failures are recorded, mail goes on as opportunistic. */
  enforce: boolean;
  /** Names the certificate must match (verify/sts: the MX host name; tlsa: the TLSA base domain and its aliases). */
  names: string[];
}

/** RFC 8460 §4.3 result types, plus "none" for success. */
export type TlsFailureType =
  | 'starttls-not-supported'
  | 'certificate-host-mismatch'
  | 'certificate-expired'
  | 'certificate-not-trusted'
  | 'validation-failure'
  | 'tlsa-invalid'
  | 'dnssec-invalid'
  | 'dane-required'
  | 'sts-policy-fetch-error'
  | 'sts-policy-invalid'
  | 'sts-webpki-invalid';

/** What the TLS of one connection was; null on a connection without TLS. */
export interface TlsOutcome {
  /** "TLSv1.3" */
  version: string;
  /** "TLS_AES_256_GCM_SHA384" */
  cipher: string;
  /** The certificate was checked and passed (see the invariants). */
  verified: boolean;
  /** The policy that applied to this connection. */
  policy: TlsPolicyKind;
  /** The domain of that policy. */
  policyDomain: string;
}

/** A failed TLS policy check for one host, for the attempt's event, the DSN and TLS reports. */
export interface TlsPolicyFailure {
  policy: TlsPolicyKind;
  policyDomain: string;
  type: TlsFailureType;
  /** Human text: "certificate for mx.example.net does not match mx.example.com". */
  detail: string;
}
