/*
 * cli/dkim - `petrel dkim keygen` makes a DKIM signing key and prints the DNS
 * record to publish; `petrel dkim check` looks the published records of a
 * domain's `[[dkim]]` keys up and says whether each matches its key.
 *
 * keygen: RSA-2048 by default, Ed25519 with --ed25519 (RFC 8463; publish both
 * while verifiers learn Ed25519). The key file is written with mode 0600 and
 * never over an existing file. check: through `[delivery] dns_servers` when
 * set, the system resolver otherwise.
 *
 * Exit codes: keygen 0 written, 1 not written (file exists, cannot write),
 * 64 usage. check 0 every record matches, 1 a record is missing or does not
 * match its key, 64 usage (or no [[dkim]] key for the domain), 69 a look-up
 * failed (DNS unavailable: nothing could be decided).
 *
 * Untrusted input: the command line, and the TXT records (parsed as tag=value
 * lists, only compared).
 */
import { generateKeyPairSync, createPrivateKey } from 'node:crypto';
import { Resolver } from 'node:dns/promises';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { configFrom, type Args, type CliCommand } from './command.js';
import { loadKey, publicKeyData, recordName, txtRecord, type DkimKeyConfig } from '../dkim/keys.js';

const HELP = `Usage: petrel dkim keygen --domain DOMAIN --selector SELECTOR [--ed25519] [--out FILE] [--config FILE]
       petrel dkim check --domain DOMAIN [--config FILE] [--json]

keygen  writes a new signing key (RSA 2048 bits, or Ed25519 with --ed25519)
        to FILE (default: <data_dir>/dkim/DOMAIN.SELECTOR.pem), mode 0600,
        never over an existing file, and prints the DNS TXT record to publish
        and the [[dkim]] table to add to the configuration.
        Exit: 0 written, 1 not written, 64 usage.
check   looks up SELECTOR._domainkey.DOMAIN for each [[dkim]] key of DOMAIN
        in the configuration (through [delivery] dns_servers when set) and
        says whether the published key is the configured one.
        Exit: 0 all match, 1 a record is missing or does not match,
        64 usage or no key for DOMAIN, 69 a look-up failed.
`;

const LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$/;

function flag(args: Args, name: string): string | null {
  const v = args.flags.get(name);
  return typeof v === 'string' && v.trim() ? v.trim() : null;
}

/** splitRecord - a TXT record as a tag=value map (RFC 6376 §3.2), tags lower-cased, white space removed from values. */
export function parseTags(text: string): Map<string, string> {
  const tags = new Map<string, string>();
  for (const part of text.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    tags.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1).replace(/\s+/g, ''));
  }
  return tags;
}

function keygen(args: Args, out: (s: string) => void, err: (s: string) => void): number {
  const domain = flag(args, 'domain')?.toLowerCase() ?? null;
  const selector = flag(args, 'selector');
  if (!domain || !LABEL.test(domain) || !domain.includes('.') || !selector || !LABEL.test(selector)) {
    err('petrel dkim keygen: --domain DOMAIN and --selector SELECTOR are needed (DNS names, e.g. --domain example.com --selector s2026)');
    return 64;
  }
  let file = flag(args, 'out');
  if (!file) {
    const config = configFrom(args, err);
    if (!config) return 64;
    file = join(config.data_dir, 'dkim', `${domain}.${selector}.pem`);
  }
  file = resolve(file);
  const ed = args.flags.get('ed25519') === true;
  const pair = ed ? generateKeyPairSync('ed25519') : generateKeyPairSync('rsa', { modulusLength: 2048 });
  const pem = pair.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  try {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    // 'wx': never over an existing key (it may be the one published).
    writeFileSync(file, pem, { mode: 0o600, flag: 'wx' });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    err(`petrel dkim keygen: cannot write ${file}: ${code === 'EEXIST' ? 'the file exists (remove it or use --out)' : (code ?? (e as Error).message)}`);
    return 1;
  }
  const record = txtRecord(pair.privateKey);
  out(`Wrote ${ed ? 'an Ed25519' : 'an RSA-2048'} key to ${file} (mode 0600).`);
  out('');
  out('Publish this TXT record:');
  out(`${recordName(selector, domain)}. IN TXT ${zoneText(record)}`);
  out('');
  out('Add to the configuration:');
  out('[[dkim]]');
  out(`domain = "${domain}"`);
  out(`selector = "${selector}"`);
  out(`key_file = "${file}"`);
  return 0;
}

/** zoneText - a TXT value as zone-file strings of at most 255 octets each. */
function zoneText(value: string): string {
  const parts: string[] = [];
  for (let i = 0; i < value.length; i += 250) parts.push(`"${value.slice(i, i + 250)}"`);
  return parts.length > 1 ? `( ${parts.join(' ')} )` : parts[0]!;
}

export interface CheckResult {
  selector: string;
  name: string;
  algorithm: string;
  status: 'match' | 'mismatch' | 'missing' | 'lookup_failed';
  detail: string;
}

/** checkDkimKeys - look up each key's published record and compare it with the key file (`petrel dkim check`, `petrel check-config --dns`). */
export async function checkDkimKeys(entries: DkimKeyConfig[], resolver: Pick<Resolver, 'resolveTxt'>): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  for (const entry of entries) {
    const key = loadKey(entry);
    const name = recordName(entry.selector, entry.domain);
    const base = { selector: entry.selector, name, algorithm: key.algorithm };
    let records: string[][];
    try {
      records = await resolver.resolveTxt(name);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? '';
      if (code === 'ENOTFOUND' || code === 'ENODATA') results.push({ ...base, status: 'missing', detail: `no TXT record at ${name}` });
      else results.push({ ...base, status: 'lookup_failed', detail: `look-up of ${name} failed: ${code || (e as Error).message}` });
      continue;
    }
    const dkim = records.map((r) => r.join('')).filter((t) => /^\s*v\s*=\s*DKIM1\b/i.test(t) || /(^|;)\s*p\s*=/.test(t));
    if (!dkim.length) {
      results.push({ ...base, status: 'missing', detail: `no DKIM record among the TXT records at ${name}` });
      continue;
    }
    const want = publicKeyData(createPrivateKey(key.pem));
    const wantK = key.algorithm === 'ed25519-sha256' ? 'ed25519' : 'rsa';
    const tags = parseTags(dkim[0]!);
    const k = (tags.get('k') ?? 'rsa').toLowerCase();
    const p = tags.get('p') ?? '';
    if (dkim.length > 1) results.push({ ...base, status: 'mismatch', detail: `${dkim.length} DKIM records at ${name}: verifiers treat that as an error` });
    else if (p === '') results.push({ ...base, status: 'mismatch', detail: 'the published key is revoked (empty p=)' });
    else if (k !== wantK) results.push({ ...base, status: 'mismatch', detail: `published k=${k}, the key file is ${wantK}` });
    else if (p !== want) results.push({ ...base, status: 'mismatch', detail: 'the published key (p=) is not the public half of the key file' });
    else results.push({ ...base, status: 'match', detail: 'the published key is the key file\'s' });
  }
  return results;
}

async function check(args: Args, out: (s: string) => void, err: (s: string) => void): Promise<number> {
  const domain = flag(args, 'domain')?.toLowerCase() ?? null;
  if (!domain) {
    err('petrel dkim check: --domain DOMAIN is needed');
    return 64;
  }
  const config = configFrom(args, err);
  if (!config) return 64;
  const entries = config.dkim.filter((k) => k.domain.toLowerCase() === domain);
  if (!entries.length) {
    err(`petrel dkim check: no [[dkim]] key for ${domain} in the configuration`);
    return 64;
  }
  const resolver = new Resolver({ timeout: 5000, tries: 2 });
  if (config.delivery.dns_servers.length) resolver.setServers(config.delivery.dns_servers);
  const results = await checkDkimKeys(entries, resolver);
  if (args.flags.get('json') === true) out(JSON.stringify({ domain, keys: results }, null, 2));
  else for (const r of results) out(`${r.name}  ${r.algorithm}  ${r.status.toUpperCase().replace('_', ' ')}: ${r.detail}`);
  if (results.some((r) => r.status === 'lookup_failed')) return 69;
  return results.every((r) => r.status === 'match') ? 0 : 1;
}

export const dkimCommand: CliCommand = {
  name: 'dkim',
  summary: 'DKIM keys: keygen writes a key and prints its DNS record; check compares the published record with the key',
  help: HELP,
  run(args, out, err) {
    const sub = args.positional[0];
    if (sub === 'keygen') return keygen(args, out, err);
    if (sub === 'check') return check(args, out, err);
    err(HELP);
    return 64;
  },
};
