/*
 * delivery/smtp/address-order - which of a next hop's addresses are tried, and
 * in what order ([delivery] address_family, address_preference).
 *
 * Rules:
 * - address_family "ipv4" / "ipv6" keeps only addresses of that family;
 *   "any" keeps all;
 * - the preferred family comes first, each family keeping the order DNS gave
 *   (a stable partition, not an interleave);
 * - address_preference "ipv6" / "ipv4" names the preferred family;
 *   "auto" approximates RFC 6724 destination address selection (rule 2,
 *   matching scope, and rule 6, precedence, reduced to what matters for mail):
 *   IPv6 first only when this machine can send from a global IPv6 address
 *   (source_ipv6 is set, or an interface has one in 2000::/3); otherwise IPv4
 *   first, since an IPv6 destination reached from a ULA or link-local source
 *   does not work on the Internet.
 *
 * Pure functions, but for the machine's interfaces, read at most once a
 * minute (tests pass their own answer). Untrusted input: DNS answers, already checked with isIP.
 */
import { isIP } from 'node:net';
import { networkInterfaces, type NetworkInterfaceInfo } from 'node:os';

export type AddressFamily = 'any' | 'ipv4' | 'ipv6';
export type AddressPreference = 'auto' | 'ipv6' | 'ipv4';

export interface AddressPolicy {
  family: AddressFamily;
  preference: AddressPreference;
  /** [delivery] source_ipv6 ("" when unset): with "auto", a set source means IPv6 first. */
  sourceIpv6: string;
}

/** isGlobalIpv6 - an address in 2000::/3 (global unicast), the only IPv6 source that reaches the Internet. */
export function isGlobalIpv6(address: string): boolean {
  if (isIP(address) !== 6) return false;
  const first = address.split(':')[0] ?? '';
  if (first === '') return false; // "::..." (unspecified, loopback, v4-mapped)
  const value = parseInt(first.padStart(4, '0'), 16);
  return (value & 0xe000) === 0x2000;
}

/** hasGlobalIpv6 - whether any interface of this machine has a global IPv6 address. */
export function hasGlobalIpv6(interfaces: NodeJS.Dict<NetworkInterfaceInfo[]> = networkInterfaces()): boolean {
  return Object.values(interfaces).some((list) => (list ?? []).some((i) => i.family === 'IPv6' && !i.internal && isGlobalIpv6(i.address)));
}

/** How long the answer of hasGlobalIpv6 is reused: interfaces change rarely, connections are opened often. */
const INTERFACES_TTL_MS = 60_000;
let cachedGlobalIpv6: { value: boolean; until: number } | null = null;

/** hasGlobalIpv6Cached - hasGlobalIpv6, asked at most once a minute (the default for "auto"). */
export function hasGlobalIpv6Cached(now = Date.now()): boolean {
  if (!cachedGlobalIpv6 || now >= cachedGlobalIpv6.until) cachedGlobalIpv6 = { value: hasGlobalIpv6(), until: now + INTERFACES_TTL_MS };
  return cachedGlobalIpv6.value;
}

/** preferredFamily - the family tried first under `policy` (6 or 4). */
export function preferredFamily(policy: AddressPolicy, globalIpv6: () => boolean = hasGlobalIpv6Cached): 4 | 6 {
  if (policy.family === 'ipv4') return 4;
  if (policy.family === 'ipv6') return 6;
  if (policy.preference === 'ipv4') return 4;
  if (policy.preference === 'ipv6') return 6;
  return policy.sourceIpv6 !== '' || globalIpv6() ? 6 : 4;
}

/** orderAddresses - the addresses to try, filtered by family and ordered by preference (see the rules above). */
export function orderAddresses(addresses: readonly string[], policy: AddressPolicy, globalIpv6: () => boolean = hasGlobalIpv6Cached): string[] {
  const allowed = addresses.filter((a) => {
    const f = isIP(a);
    if (f === 0) return false;
    return policy.family === 'any' || (policy.family === 'ipv4' ? f === 4 : f === 6);
  });
  if (policy.family !== 'any') return allowed;
  const first = preferredFamily(policy, globalIpv6);
  return [...allowed.filter((a) => isIP(a) === first), ...allowed.filter((a) => isIP(a) !== first)];
}
