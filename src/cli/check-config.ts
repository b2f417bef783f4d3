/*
 * cli/check-config - `petrel check-config FILE`: validates a configuration
 * file and prints every problem as FILE:LINE: KEY: message (exit 1), or a
 * short summary of what the file configures (exit 0).
 *
 * Beyond the file's syntax: each [delivery] source_ipv4 / source_ipv6 must be
 * an address of this machine (tried by binding it; exit 1 otherwise, as
 * `petrel start` would refuse to start). With --dns, the sending identity is
 * checked in DNS (delivery/smtp/fcrdns: PTR, forward-confirmed, HELO name)
 * through [delivery] dns_servers; each problem is a "WARNING:" line and the
 * exit code is 2 (the file is valid; its DNS is not right yet). Each
 * [[dkim]] key's record is compared with its key file too (cli/dkim's
 * checkDkimKeys, the logic of `petrel dkim check`).
 */
import { readFileSync } from 'node:fs';
import { ConfigError, formatProblem, lineIndex, loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { preferredFamily } from '../delivery/smtp/address-order.js';
import { checkIdentities, makeResolver } from '../delivery/smtp/fcrdns.js';
import { identities, sourceProblems, type SendingIdentity } from '../delivery/smtp/source.js';
import { isPublicAddress, systemSource } from '../delivery/smtp/system-source.js';
import { checkDkimKeys } from './dkim.js';
import type { CliCommand } from './command.js';

export const checkConfigCommand: CliCommand = {
  name: 'check-config',
  summary: 'check a configuration file; print every error with its key and line',
  help: `Usage: petrel check-config FILE [--dns]   (or: petrel check-config --config FILE [--dns])

Checks FILE and prints every problem as FILE:LINE: KEY: what is wrong.
A [delivery] source_ipv4 / source_ipv6 that is not an address of this
machine (it cannot be bound) is such a problem.

--dns  also checks the sending identity in DNS, through [delivery]
       dns_servers (the system resolver when empty): each source address
       must have a PTR record whose name resolves back to it (forward-
       confirmed reverse DNS) and is the HELO name said from it. Each
       problem is printed as a "WARNING:" line. For a family with no
       source address configured, nothing is bound: the address the
       system would use towards the Internet is checked instead when it
       is public (a private address is behind NAT: it says so).
       Each [[dkim]] key's TXT record is compared with its key file, as
       petrel dkim check does; a missing or different record, or a look-up
       that fails, is a "WARNING:" line too.

Exit 0 when the file is valid (and, with --dns, the identity checks out),
1 when the file is not valid, 2 when it is valid but --dns found a problem.
`,
  run(args, out, err) {
    const file = args.positional[0] ?? args.flags.get('config');
    if (typeof file !== 'string') {
      err('Usage: petrel check-config FILE [--dns]');
      return 64;
    }
    let c: Config;
    try {
      c = loadConfig(file);
    } catch (e) {
      if (e instanceof ConfigError) return report(e, err);
      throw e;
    }
    const dns = args.flags.get('dns') === true;
    // Nothing to ask the machine or DNS: answer at once (no event loop turn).
    if (!dns && c.delivery.source_ipv4 === '' && c.delivery.source_ipv6 === '') return summary(file, c, out);
    return checkMachine(file, c, dns, out, err);
  },
};

function report(e: ConfigError, err: (s: string) => void): number {
  for (const p of e.problems) err(formatProblem(e.file, p));
  err(`${e.problems.length} problem(s) in ${e.file}`);
  return 1;
}

function summary(file: string, c: Config, out: (s: string) => void): number {
  out(`${file}: OK`);
  out(`  hostname ${c.hostname}; data_dir ${c.data_dir}`);
  out(`  smtp listen ${c.smtp.listen.map((e) => `${e.host}:${e.port}`).join(', ') || '(none)'}`);
  out(`  local domains ${c.local.domains.join(', ') || '(none)'} -> ${c.local.maildir}`);
  out(`  ${c.routes.length} route(s); smarthost ${c.delivery.smarthost ? `${c.delivery.smarthost.host}:${c.delivery.smarthost.port}` : '(none: MX)'}`);
  const ids = identities(c);
  const first = preferredFamily({ family: c.delivery.address_family, preference: c.delivery.address_preference, sourceIpv6: c.delivery.source_ipv6 });
  const source = (id: typeof ids.ipv4): string => `${id.address || '(system chooses)'} helo ${id.heloName}`;
  const families = c.delivery.address_family === 'any' ? `IPv4 and IPv6, IPv${first} first` : `IPv${c.delivery.address_family.slice(3)} only`;
  const used = [ids.ipv4, ids.ipv6].filter((id) => c.delivery.address_family === 'any' || c.delivery.address_family === `ipv${id.family}`);
  out(`  outbound ${families}; ${used.map((id) => `IPv${id.family} from ${source(id)}`).join('; ')}`);
  return 0;
}

/** checkMachine - the source addresses can be bound; with --dns, the identity checks out in DNS. */
async function checkMachine(file: string, c: Config, dns: boolean, out: (s: string) => void, err: (s: string) => void): Promise<number> {
  const bad = await sourceProblems(c);
  if (bad.length) {
    let lines = new Map<string, number>();
    try {
      lines = lineIndex(readFileSync(file, 'utf8'));
    } catch {
      /* the file was read a moment ago; without lines the problems are still named */
    }
    return report(new ConfigError(file, bad.map((p) => ({ key: p.key, line: lines.get(p.key) ?? null, message: p.message }))), err);
  }
  summary(file, c, out);
  if (!dns) return 0;
  const servers = c.delivery.dns_servers;
  const resolver = makeResolver(servers);
  out(`sending identity in DNS (through ${servers.length ? servers.join(', ') : 'the system resolver'}):`);
  let warnings = 0;
  // Each family that may be used: its configured source, else the address the system would use (checked when public).
  const toCheck: { label: string; id: SendingIdentity }[] = [];
  for (const id of Object.values(identities(c))) {
    const name = id.key.replace('delivery.', '');
    if (id.address !== '') {
      toCheck.push({ label: `${name} ${id.address}`, id });
      continue;
    }
    if (c.delivery.address_family !== 'any' && c.delivery.address_family !== `ipv${id.family}`) continue;
    const sys = await systemSource(id.family);
    const head = `  IPv${id.family}: no ${name} configured, nothing is bound`;
    if ('error' in sys) out(`${head}; the system has no route to the Internet (${sys.error}): not checked`);
    else if (!isPublicAddress(sys.address)) out(`${head}; the system would send from ${sys.address}, not a public address (receivers see the address of whatever NAT is in front): not checked`);
    else toCheck.push({ label: `IPv${id.family} ${sys.address} (chosen by the system; set ${name} to bind it)`, id: { ...id, address: sys.address } });
  }
  const reports = await checkIdentities(toCheck.map((t) => t.id), resolver);
  reports.forEach((r, i) => {
    const label = toCheck[i]!.label;
    if (r.warnings.length === 0) out(`  ${label}: PTR ${r.ptr.join(', ')}, forward-confirmed, is the HELO name ${r.identity.heloName}: OK`);
    for (const w of r.warnings) out(`WARNING: ${label}: ${w}`);
    warnings += r.warnings.length;
  });
  // [[dkim]] keys: the same comparison as `petrel dkim check`.
  if (c.dkim.length) {
    out('dkim keys in DNS:');
    for (const r of await checkDkimKeys(c.dkim, resolver)) {
      const line = `${r.name} ${r.algorithm} ${r.status.toUpperCase().replace('_', ' ')}: ${r.detail}`;
      if (r.status === 'match') out(`  ${line}`);
      else {
        out(`WARNING: dkim ${line}`);
        warnings++;
      }
    }
  }
  if (warnings) out(`${warnings} warning(s): receivers that check reverse DNS or DKIM may refuse or junk this server's mail`);
  return warnings ? 2 : 0;
}
