/*
 * inbound/tls - the certificate for STARTTLS. With `[tls] cert` and `key`
 * set, those PEM files are used (an unreadable file stops start-up with its
 * path). Otherwise a self-signed pair for `hostname` is made on first start in
 * data_dir/tls/ (key written 0600) and reused afterwards.
 */
import { createSecureContext, type SecureContext } from 'node:tls';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { generate } from 'selfsigned';
import type { Config } from '../config/schema.js';

export interface TlsMaterial {
  context: SecureContext;
  cert: string;
  key: string;
  selfSigned: boolean;
}

export async function loadTls(config: Config): Promise<TlsMaterial> {
  if (config.tls.cert || config.tls.key) {
    if (!config.tls.cert || !config.tls.key) throw new Error('tls.cert and tls.key must be set together');
    const cert = readFileSync(config.tls.cert, 'utf8');
    const key = readFileSync(config.tls.key, 'utf8');
    return { context: createSecureContext({ cert, key }), cert, key, selfSigned: false };
  }
  const dir = join(config.data_dir, 'tls');
  const certPath = join(dir, 'cert.pem');
  const keyPath = join(dir, 'key.pem');
  if (!existsSync(certPath) || !existsSync(keyPath)) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const pems = await generate([{ name: 'commonName', value: config.hostname }], {
      notAfterDate: new Date(Date.now() + 3650 * 86_400_000),
      keySize: 2048,
      extensions: [{ name: 'subjectAltName', altNames: [{ type: 2, value: config.hostname }] }],
    });
    writeFileSync(keyPath, pems.private, { mode: 0o600 });
    writeFileSync(certPath, pems.cert, { mode: 0o644 });
  }
  const cert = readFileSync(certPath, 'utf8');
  const key = readFileSync(keyPath, 'utf8');
  return { context: createSecureContext({ cert, key }), cert, key, selfSigned: true };
}
