/*
 * delivery/smtp/require-tls - may a REQUIRETLS message (RFC 8689) go over
 * this connection? Only when its TLS was verified and the hop advertised
 * REQUIRETLS after TLS (§4.2.1); then MAIL FROM carries ` REQUIRETLS`
 * (envelope.ts). Otherwise its recipients fail `5.7.10` with a report: the
 * sender asked for no delivery at all rather than a delivery without it.
 *
 * Not decided here: a certificate that does not verify under an enforced
 * policy (route `verify`, MTA-STS, DANE) is a TLS policy failure, deferred
 * 4.7.5 by the outbound TLS code before any transaction (CONTRACT
 * "Delivery"); this check only sees connections that got that far.
 *
 * Until the outbound verification lands (branch `tls`: SmtpClient gains
 * `tlsOutcome` with `verified`), "verified" is read as `client.secure`
 * (STARTTLS done): `verifiedTls` below is the one place to switch.
 *
 * The rule applies to every sender, the null sender included (a failure of
 * a message from <> makes no report, only events); LMTP (final delivery)
 * is not a relay hop and is exempt. Petrel's own reports are never
 * REQUIRETLS messages (enqueue sets the flag only from MAIL FROM).
 *
 * Untrusted input: none (the capabilities were parsed by capabilities.ts).
 */
import type { SmtpClient } from './client.js';

export type RequireTlsCheck = 'ok' | 'no-verified-tls' | 'not-offered';

/** The parts of a connection the check reads. */
export type RequireTlsClient = Pick<SmtpClient, 'secure' | 'capabilities'> & { tlsOutcome?: { verified: boolean } | null };

/** verifiedTls - the connection's TLS was verified (see the module comment for the interim rule). */
function verifiedTls(client: RequireTlsClient): boolean {
  if (client.tlsOutcome !== undefined) return client.tlsOutcome?.verified === true;
  return client.secure;
}

/**
 * requireTlsMet - whether a REQUIRETLS message may be sent over `client`, or
 * why not: no TLS at all; TLS, but the hop does not offer REQUIRETLS (what
 * the hop lacks is said first: it is the same whatever policy applied); TLS
 * that was not verified.
 */
export function requireTlsMet(client: RequireTlsClient): RequireTlsCheck {
  if (!client.secure) return 'no-verified-tls';
  if (!client.capabilities.requireTls) return 'not-offered';
  if (!verifiedTls(client)) return 'no-verified-tls';
  return 'ok';
}

/** requireTlsFailure - the status and text of a recipient failed for REQUIRETLS, as its DSN and events show it. */
export function requireTlsFailure(check: Exclude<RequireTlsCheck, 'ok'>, remote: string): { status: string; text: string } {
  const why = check === 'not-offered' ? `host ${remote} does not offer REQUIRETLS` : `the connection to host ${remote} has no verified TLS`;
  return { status: '5.7.10', text: `5.7.10 REQUIRETLS was requested for this message, but ${why}` };
}
