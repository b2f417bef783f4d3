// delivery/smtp/require-tls: when a REQUIRETLS message (RFC 8689) may use a
// connection, and the 5.7.10 text when it may not - with today's client
// (`secure` only) and with the `tlsOutcome` the outbound TLS code adds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { requireTlsFailure, requireTlsMet, type RequireTlsClient } from '../../src/delivery/smtp/require-tls.js';
import { NO_CAPABILITIES } from '../../src/delivery/smtp/capabilities.js';

const client = (secure: boolean, requireTls: boolean, tlsOutcome?: { verified: boolean } | null): RequireTlsClient => ({
  secure,
  capabilities: { ...NO_CAPABILITIES, requireTls },
  ...(tlsOutcome === undefined ? {} : { tlsOutcome }),
});

test('without tlsOutcome (before outbound verification): STARTTLS done and REQUIRETLS offered is enough', () => {
  assert.equal(requireTlsMet(client(true, true)), 'ok');
  assert.equal(requireTlsMet(client(true, false)), 'not-offered');
  assert.equal(requireTlsMet(client(false, false)), 'no-verified-tls');
  // A peer cannot make plain text count by advertising REQUIRETLS before TLS.
  assert.equal(requireTlsMet(client(false, true)), 'no-verified-tls');
});

test('with tlsOutcome: only verified TLS counts; what the hop lacks is said first', () => {
  assert.equal(requireTlsMet(client(true, true, { verified: true })), 'ok');
  assert.equal(requireTlsMet(client(true, true, { verified: false })), 'no-verified-tls');
  assert.equal(requireTlsMet(client(true, true, null)), 'no-verified-tls');
  assert.equal(requireTlsMet(client(true, false, { verified: false })), 'not-offered');
  assert.equal(requireTlsMet(client(false, true, null)), 'no-verified-tls');
});

test('the failure is 5.7.10 and names the host and the reason', () => {
  const a = requireTlsFailure('not-offered', 'mx.example [192.0.2.1]');
  assert.equal(a.status, '5.7.10');
  assert.equal(a.text, '5.7.10 REQUIRETLS was requested for this message, but host mx.example [192.0.2.1] does not offer REQUIRETLS');
  assert.match(requireTlsFailure('no-verified-tls', 'mx.example [192.0.2.1]').text, /^5\.7\.10 .*has no verified TLS$/);
});
