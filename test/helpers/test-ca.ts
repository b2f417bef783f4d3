/*
 * test/helpers/test-ca - a throw-away certificate authority for tests that
 * check certificates (MTA-STS policy servers, verified SMTP TLS): a CA
 * certificate, and leaf certificates for given names signed by it (or
 * self-signed, for "not trusted" cases). EC P-256 keys: fast to make.
 * makeCa is the same made with openssl, with the CA in a file (what
 * `tls_ca_file` names) and several subjectAltName DNS names per certificate
 * (wildcards included); dispose() removes its directory.
 */
import { generate } from 'selfsigned';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

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

/** A CA made with openssl, its certificate in a file. */
export interface FileCa {
  /** The CA certificate file (PEM): what `tls_ca_file` names. */
  caFile: string;
  caPem: string;
  /** A server key and certificate for these DNS names (subjectAltName), signed by this CA. */
  issue(names: string[]): { key: string; cert: string };
  dispose(): void;
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** makeCa - a fresh CA named `name`. */
export function makeCa(name = 'Petrel Test CA'): FileCa {
  const dir = mkdtempSync(join(tmpdir(), 'petrel-ca-'));
  const run = (args: string[]): void => void execFileSync('openssl', args, { stdio: 'pipe' });
  run(['req', '-x509', ...EC, '-days', '2', '-subj', `/CN=${name}`, '-keyout', join(dir, 'ca.key'), '-out', join(dir, 'ca.pem'),
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  let n = 0;
  return {
    caFile: join(dir, 'ca.pem'),
    caPem: readFileSync(join(dir, 'ca.pem'), 'utf8'),
    issue(names) {
      const i = ++n;
      const ext = join(dir, `${i}.ext`);
      writeFileSync(ext, `subjectAltName=${names.map((x) => `DNS:${x}`).join(',')}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
      run(['req', ...EC, '-subj', `/CN=${names[0]}`, '-keyout', join(dir, `${i}.key`), '-out', join(dir, `${i}.csr`)]);
      run(['x509', '-req', '-in', join(dir, `${i}.csr`), '-CA', join(dir, 'ca.pem'), '-CAkey', join(dir, 'ca.key'), '-CAcreateserial', '-days', '2', '-extfile', ext, '-out', join(dir, `${i}.pem`)]);
      return { key: readFileSync(join(dir, `${i}.key`), 'utf8'), cert: readFileSync(join(dir, `${i}.pem`), 'utf8') };
    },
    dispose() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
