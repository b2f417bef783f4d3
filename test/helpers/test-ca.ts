/*
 * test/helpers/test-ca - a certificate authority made in the test with
 * openssl (EC P-256, valid two days), and server certificates it signs for
 * given DNS names, for outbound TLS verification tests. Each CA lives in its
 * own temporary directory, removed by dispose().
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestCa {
  /** The CA certificate file (PEM): what `tls_ca_file` names. */
  caFile: string;
  caPem: string;
  /** A server key and certificate for these DNS names (subjectAltName), signed by this CA. */
  issue(names: string[]): { key: string; cert: string };
  dispose(): void;
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** makeCa - a fresh CA named `name`. */
export function makeCa(name = 'Petrel Test CA'): TestCa {
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
