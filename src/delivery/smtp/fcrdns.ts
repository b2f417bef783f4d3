/*
 * delivery/smtp/fcrdns - does the sending identity check out in DNS, as the
 * big receivers check it? For each configured source address:
 *   1. a PTR record exists for it;
 *   2. a PTR name resolves (A for IPv4, AAAA for IPv6) back to the address
 *      (forward-confirmed reverse DNS);
 *   3. the HELO name said from that address is such a confirmed name.
 * Each failed step is one warning sentence; the caller decides where it goes
 * (`petrel start`: a warn-level trace line and a line on standard error;
 * `petrel check-config --dns`: WARNING lines and exit code 2).
 *
 * Invariants: this only reads DNS and never stops mail; a look-up that does
 * not answer clearly (timeout, SERVFAIL) is a warning that says so, never a
 * claim that the record is missing.
 *
 * Untrusted input: DNS answers (names are compared, never used otherwise;
 * addresses are compared as addresses, so "::1" equals "0:0::1").
 */
import { promises as dnsPromises } from 'node:dns';
import { BlockList } from 'node:net';
import type { SendingIdentity } from './source.js';

export interface IdentityReport {
  identity: SendingIdentity;
  /** The PTR names found (lower case, no final dot). */
  ptr: string[];
  /** The PTR names that resolve back to the address. */
  confirmed: string[];
  /** Empty when all is well. */
  warnings: string[];
}

/** What this module needs of a resolver (node:dns promises Resolver fits; tests may pass a fake). */
export interface ReverseResolver {
  reverse(address: string): Promise<string[]>;
  resolve4(name: string): Promise<string[]>;
  resolve6(name: string): Promise<string[]>;
}

const NOT_THERE = new Set(['ENOTFOUND', 'ENODATA']);

/** makeResolver - a resolver on [delivery] dns_servers (the system's when empty). */
export function makeResolver(servers: string[], timeoutMs = 5000): dnsPromises.Resolver {
  const r = new dnsPromises.Resolver({ timeout: timeoutMs, tries: 2 });
  if (servers.length) r.setServers(servers);
  return r;
}

const norm = (name: string): string => name.toLowerCase().replace(/\.$/, '');

/** sameAddress - whether two addresses of one family are the same address, whatever their spelling. */
export function sameAddress(a: string, b: string, family: 4 | 6): boolean {
  const list = new BlockList();
  try {
    list.addAddress(a, family === 6 ? 'ipv6' : 'ipv4');
    return list.check(b, family === 6 ? 'ipv6' : 'ipv4');
  } catch {
    return false;
  }
}

/** checkIdentity - the three checks above for one identity with a bound address. */
export async function checkIdentity(identity: SendingIdentity, resolver: ReverseResolver): Promise<IdentityReport> {
  const report: IdentityReport = { identity, ptr: [], confirmed: [], warnings: [] };
  const { address, heloName, family } = identity;
  const hint = 'receivers may refuse or junk mail from it; ask whoever runs the address block to set the PTR';
  try {
    report.ptr = [...new Set((await resolver.reverse(address)).map(norm))];
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? String(e);
    report.warnings.push(NOT_THERE.has(code) ? `${address} has no PTR record (${code}): ${hint}` : `the PTR look-up of ${address} did not answer clearly (${code}): cannot tell whether it checks out`);
    return report;
  }
  if (report.ptr.length === 0) {
    report.warnings.push(`${address} has no PTR record: ${hint}`);
    return report;
  }
  const unclear: string[] = [];
  for (const name of report.ptr) {
    try {
      const forward = family === 6 ? await resolver.resolve6(name) : await resolver.resolve4(name);
      if (forward.some((a) => sameAddress(address, a, family))) report.confirmed.push(name);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? String(e);
      if (!NOT_THERE.has(code)) unclear.push(`${name} (${code})`);
    }
  }
  if (report.confirmed.length === 0) {
    const rr = family === 6 ? 'AAAA' : 'A';
    report.warnings.push(
      unclear.length
        ? `the ${rr} look-up of the PTR name(s) of ${address} did not answer clearly: ${unclear.join(', ')}; cannot tell whether it checks out`
        : `the PTR name(s) of ${address} (${report.ptr.join(', ')}) do not resolve back to it (${rr}): reverse DNS is not forward-confirmed; receivers may refuse or junk mail from it`,
    );
  }
  const helo = norm(heloName);
  if (!report.ptr.includes(helo)) {
    const key = family === 6 ? 'helo_name_ipv6 (or helo_name)' : 'helo_name';
    report.warnings.push(`the HELO name ${helo} sent from ${address} is not its PTR name (${report.ptr.join(', ')}): set [delivery] ${key} to it, or change the PTR`);
  } else if (report.confirmed.length > 0 && !report.confirmed.includes(helo)) {
    report.warnings.push(`the HELO name ${helo} sent from ${address} is its PTR name, but does not resolve back to ${address}`);
  }
  return report;
}

/** checkIdentities - checkIdentity for each identity that binds an address. */
export async function checkIdentities(ids: SendingIdentity[], resolver: ReverseResolver): Promise<IdentityReport[]> {
  return Promise.all(ids.filter((i) => i.address !== '').map((i) => checkIdentity(i, resolver)));
}
