/*
 * delivery/smtp/system-source - with no source address configured for a
 * family, which address would the system send from? `petrel check-config
 * --dns` asks, to check that address's identity instead.
 *
 * How: a UDP socket "connected" to a documentation address (192.0.2.1,
 * 2001:db8::1) makes the kernel pick the route and source address for
 * Internet destinations; no packet is sent. No default route: no answer
 * (ENETUNREACH), said as such.
 *
 * Invariants: only a public address is worth checking: a private, shared
 * (CGNAT), loopback, link-local or unique-local address is not what
 * receivers see (a NAT is in between), and is reported, not checked.
 *
 * Untrusted input: none.
 */
import { createSocket } from 'node:dgram';
import { isIP } from 'node:net';
import { isGlobalIpv6 } from './address-order.js';

/** systemSource - the source address the system would use towards the Internet, or why there is none. */
export function systemSource(family: 4 | 6): Promise<{ address: string } | { error: string }> {
  return new Promise((resolve) => {
    const socket = createSocket(family === 6 ? 'udp6' : 'udp4');
    const done = (r: { address: string } | { error: string }): void => {
      socket.close();
      resolve(r);
    };
    socket.once('error', (e: NodeJS.ErrnoException) => done({ error: e.code ?? e.message }));
    try {
      socket.connect(25, family === 6 ? '2001:db8::1' : '192.0.2.1', () => done({ address: socket.address().address }));
    } catch (e) {
      done({ error: (e as NodeJS.ErrnoException).code ?? String(e) });
    }
  });
}

/** isPublicAddress - an address receivers on the Internet could see as ours (not private, shared, loopback, link-local, ULA). */
export function isPublicAddress(address: string): boolean {
  if (isIP(address) === 6) return isGlobalIpv6(address);
  if (isIP(address) !== 4) return false;
  const [a, b] = address.split('.').map(Number) as [number, number];
  if (a === 10 || a === 127 || a === 0 || a >= 224) return false;
  if (a === 172 && b >= 16 && b <= 31) return false;
  if (a === 192 && b === 168) return false;
  if (a === 100 && b >= 64 && b <= 127) return false; // shared address space (CGNAT), RFC 6598
  if (a === 169 && b === 254) return false;
  return true;
}
