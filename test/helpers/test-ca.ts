/*
 * test/helpers/test-ca - a throw-away certificate authority for tests that
 * check certificates (MTA-STS policy servers, verified SMTP TLS): a CA
 * certificate, and leaf certificates for given names signed by it (or
 * self-signed, for "not trusted" cases). EC P-256 keys: fast to make.
 */
import { generate } from 'selfsigned';

export interface TestCa {
  /** PEM of the CA certificate: a trust anchor (caFile / tls_ca_file). */
  cert: string;
  key: string;
  /** issue - a server certificate for `name` (CN and DNS SAN), signed by this CA. */
  issue(name: string): Promise<{ cert: string; key: string }>;
}

export async function makeTestCa(name = 'Petrel Test CA'): Promise<TestCa> {
  const ca = await generate([{ name: 'commonName', value: name }], {
    keyType: 'ec',
    algorithm: 'sha256',
    extensions: [
      { name: 'basicConstraints', cA: true, critical: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    ],
  });
  return {
    cert: ca.cert,
    key: ca.private,
    async issue(host: string) {
      const leaf = await generate([{ name: 'commonName', value: host }], { keyType: 'ec', algorithm: 'sha256', ca: { key: ca.private, cert: ca.cert } });
      return { cert: leaf.cert, key: leaf.private };
    },
  };
}

/** selfSigned - a certificate for `name` that no CA vouches for. */
export async function selfSigned(host: string): Promise<{ cert: string; key: string }> {
  const p = await generate([{ name: 'commonName', value: host }], { keyType: 'ec', algorithm: 'sha256' });
  return { cert: p.cert, key: p.private };
}
