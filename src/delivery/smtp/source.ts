/*
 * delivery/smtp/source - the sending identity: which local address an
 * outbound connection binds and which name it gives in EHLO, per address
 * family ([delivery] source_ipv4, source_ipv6, helo_name, helo_name_ipv6).
 *
 * Invariants:
 * - a connection to an IPv4 address binds source_ipv4 (when set) and says
 *   helo_name; one to an IPv6 address binds source_ipv6 (when set) and says
 *   helo_name_ipv6, else helo_name; helo_name empty means hostname;
 * - an unset source leaves the choice to the system (nothing is bound);
 * - a source address this machine does not have is found before any mail
 *   is sent: sourceProblems() tries to bind each one (port 0, closed at once)
 *   and names the key; `petrel start` refuses to start and `petrel
 *   check-config` reports it.
 *
 * Untrusted input: none (configuration, already checked for syntax).
 */
import { createServer } from 'node:net';
import { isIP } from 'node:net';
import type { Config } from '../../config/schema.js';

/** One configured identity: the address bound for one family and the name it says. */
export interface SendingIdentity {
  family: 4 | 6;
  /** The config key that set it ("delivery.source_ipv4"). */
  key: 'delivery.source_ipv4' | 'delivery.source_ipv6';
  /** The address bound; "" when the system chooses. */
  address: string;
  heloName: string;
}

/** identities - the identity for IPv4 and for IPv6 connections under `config`. */
export function identities(config: Config): { ipv4: SendingIdentity; ipv6: SendingIdentity } {
  const d = config.delivery;
  const helo = d.helo_name || config.hostname;
  return {
    ipv4: { family: 4, key: 'delivery.source_ipv4', address: d.source_ipv4 ?? '', heloName: helo },
    ipv6: { family: 6, key: 'delivery.source_ipv6', address: d.source_ipv6 ?? '', heloName: d.helo_name_ipv6 || helo },
  };
}

/** identityFor - the identity to use towards `destination` (an IP address). */
export function identityFor(ids: { ipv4: SendingIdentity; ipv6: SendingIdentity }, destination: string): SendingIdentity {
  return isIP(destination) === 6 ? ids.ipv6 : ids.ipv4;
}

/** tryBind - null when `address` can be bound on this machine, else the reason (the error code). */
export function tryBind(address: string): Promise<string | null> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    server.listen({ host: address, port: 0, exclusive: true }, () => server.close(() => resolve(null)));
  });
}

/** sourceProblems - each configured source address this machine cannot bind, as { key, message }. */
export async function sourceProblems(config: Config): Promise<{ key: string; message: string }[]> {
  const out: { key: string; message: string }[] = [];
  for (const id of Object.values(identities(config))) {
    if (id.address === '') continue;
    const why = await tryBind(id.address);
    if (why !== null) {
      const reason = why === 'EADDRNOTAVAIL' ? 'is not an address of this machine' : 'cannot be bound';
      out.push({ key: id.key, message: `${id.address} ${reason} (${why}): outbound connections could not use it` });
    }
  }
  return out;
}
