/*
 * dkim/keys - the signing keys of `[[dkim]]` tables: read from their PEM
 * files, checked (RSA of at least 2048 bits, or Ed25519), and chosen for a
 * message by its From: domain, or the nearest parent domain that has a key.
 *
 * Invariants:
 * - a key that is missing, unreadable, not a private key, RSA under 2048
 *   bits or of another type is refused with a text naming the file: at
 *   `check-config` (config/load) and at start, never at the first message;
 * - a domain has at most one key of each algorithm (RSA, Ed25519); when it
 *   has both, both signatures are made (RFC 8463 §4 recommends it while
 *   verifiers learn Ed25519).
 *
 * Untrusted input: none from the network; the From: domain is only compared.
 * Standards: RFC 6376 §3.6.1 (key records), RFC 8463 §4 (Ed25519 keys: p= is
 * the raw 32-octet public key, not a SubjectPublicKeyInfo).
 */
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';

/** One `[[dkim]]` table, as the configuration holds it. */
export interface DkimKeyConfig {
  domain: string;
  selector: string;
  key_file: string;
  /** Its position among the [[dkim]] tables of the file (for error lines). */
  index?: number;
}

export type DkimAlgorithm = 'rsa-sha256' | 'ed25519-sha256';

export interface DkimKey {
  domain: string;
  selector: string;
  algorithm: DkimAlgorithm;
  /** The PEM text (passed to the signing threads). */
  pem: string;
  privateKey: KeyObject;
}

/** Smallest RSA key accepted (RFC 8301 §3.2: verifiers may refuse less than 1024; large providers expect 2048). */
export const MIN_RSA_BITS = 2048;

/** loadKey - read and check one key file; throws an Error whose message says what is wrong. */
export function loadKey(entry: DkimKeyConfig): DkimKey {
  let pem: string;
  try {
    pem = readFileSync(entry.key_file, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new Error(`cannot read key file ${entry.key_file}: ${err.code ?? err.message}`);
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: pem, format: 'pem' });
  } catch {
    throw new Error(`${entry.key_file} is not a PEM private key`);
  }
  const type = privateKey.asymmetricKeyType;
  if (type === 'rsa') {
    const bits = privateKey.asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits < MIN_RSA_BITS) throw new Error(`${entry.key_file}: RSA key of ${bits} bits is too weak (at least ${MIN_RSA_BITS})`);
    return { domain: entry.domain, selector: entry.selector, algorithm: 'rsa-sha256', pem, privateKey };
  }
  if (type === 'ed25519') return { domain: entry.domain, selector: entry.selector, algorithm: 'ed25519-sha256', pem, privateKey };
  throw new Error(`${entry.key_file}: a ${type ?? 'unknown'} key; DKIM keys are RSA (2048 bits or more) or Ed25519`);
}

/** publicKeyData - the p= value of the key's DNS record. */
export function publicKeyData(privateKey: KeyObject): string {
  const pub = createPublicKey(privateKey);
  if (privateKey.asymmetricKeyType === 'ed25519') {
    // RFC 8463 §4: the bare key; the SPKI DER of an Ed25519 key ends with it.
    const der = pub.export({ type: 'spki', format: 'der' });
    return der.subarray(der.length - 32).toString('base64');
  }
  return pub.export({ type: 'spki', format: 'der' }).toString('base64');
}

/** txtRecord - the TXT record text to publish at `<selector>._domainkey.<domain>`. */
export function txtRecord(privateKey: KeyObject): string {
  const k = privateKey.asymmetricKeyType === 'ed25519' ? 'ed25519' : 'rsa';
  return `v=DKIM1; k=${k}; p=${publicKeyData(privateKey)}`;
}

/** recordName - where the record lives in DNS. */
export function recordName(selector: string, domain: string): string {
  return `${selector}._domainkey.${domain}`;
}

/** DkimKeys - the keys of a configuration, by domain. */
export class DkimKeys {
  private readonly byDomain = new Map<string, DkimKey[]>();

  constructor(readonly keys: DkimKey[]) {
    for (const k of keys) {
      const d = k.domain.toLowerCase();
      const list = this.byDomain.get(d) ?? [];
      list.push(k);
      this.byDomain.set(d, list);
    }
  }

  /** load - every key of the configuration; throws on the first bad one (config/load reports them all before). */
  static load(entries: readonly DkimKeyConfig[]): DkimKeys {
    return new DkimKeys(entries.map(loadKey));
  }

  get size(): number {
    return this.keys.length;
  }

  /**
   * forDomain - the keys that sign mail from `domain`: its own, else those of
   * its nearest parent that has keys (mail from a.b.example.com signed by
   * example.com); empty when none.
   */
  forDomain(domain: string): DkimKey[] {
    let d = domain.toLowerCase().replace(/\.$/, '');
    while (d) {
      const keys = this.byDomain.get(d);
      if (keys) return keys;
      const dot = d.indexOf('.');
      if (dot < 0) break;
      d = d.slice(dot + 1);
    }
    return [];
  }
}

/** checkKeyEntries - the problem of each entry whose key cannot be used, by index (config/load). */
export function keyProblems(entries: readonly DkimKeyConfig[]): { index: number; message: string }[] {
  const out: { index: number; message: string }[] = [];
  const seen = new Map<string, number>();
  entries.forEach((entry, index) => {
    try {
      const key = loadKey(entry);
      const id = `${entry.domain.toLowerCase()} ${key.algorithm}`;
      if (seen.has(id)) out.push({ index, message: `"${entry.domain}" already has a ${key.algorithm === 'rsa-sha256' ? 'RSA' : 'Ed25519'} key (a domain has at most one of each)` });
      seen.set(id, index);
    } catch (e) {
      out.push({ index, message: (e as Error).message });
    }
  });
  return out;
}
