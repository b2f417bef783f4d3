/*
 * checks/verify-recipient - "no backscatter": for a domain Petrel relays to
 * by a route with `verify_recipients = true`, ask the next hop whether it
 * knows a recipient before saying 250 to RCPT (Postfix's
 * reject_unverified_recipient), so that mail for unknown users is refused
 * while the client is still connected instead of bounced later to a sender
 * who may be forged.
 *
 * The probe is one short SMTP (or LMTP) dialogue with the route's next hop:
 * greeting, EHLO/LHLO, MAIL FROM:<>, RCPT TO:<address>, QUIT — no DATA.
 *
 * Invariants:
 * - 2xx to the probe's RCPT: known; 5xx: unknown (the client gets
 *   550 5.1.1); anything else (4xx, no answer within the timeout, refused
 *   connection, a broken reply) is "cannot be asked": 450 4.1.1, never a
 *   later bounce and never a 5xx;
 * - answers are cached, bounded (MAX_ENTRIES, oldest first out): known for
 *   KNOWN_TTL, unknown for UNKNOWN_TTL; "cannot be asked" is not cached;
 *   concurrent probes of the same address share one connection;
 * - the probe reads at most MAX_REPLY octets; it never sends mail.
 *
 * Untrusted input: the recipient address (checked by the RCPT parser before
 * it gets here; sent only inside <>), the next hop's replies.
 *
 * RFCs: RFC 5321 §3.3 (MAIL/RCPT without DATA), §4.5.3.2 (timeouts),
 * RFC 2033 (LMTP), RFC 3463 (5.1.1, 4.1.1).
 */
import { connect, type Socket } from 'node:net';
import type { Route } from '../config/schema.js';

export type Verdict = 'known' | 'unknown' | 'unreachable';

/** Known recipients are trusted for an hour, unknown ones for ten minutes (a new mailbox is found soon). */
const KNOWN_TTL = 60 * 60_000;
const UNKNOWN_TTL = 10 * 60_000;
const MAX_ENTRIES = 10_000;
/** A reply longer than this is not an SMTP reply we want. */
const MAX_REPLY = 64 * 1024;

/** probe - one dialogue with host:port about `address`; never throws. */
export function probe(target: { host: string; port: number; lmtp: boolean }, address: string, helo: string, timeoutMs: number): Promise<{ verdict: Verdict; reply: string }> {
  return new Promise((resolve) => {
    const socket: Socket = connect({ host: target.host, port: target.port });
    let buffer = '';
    let step = 0;
    let done = false;
    const finish = (verdict: Verdict, reply: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (step >= 1 && !socket.destroyed) socket.end('QUIT\r\n');
      setTimeout(() => socket.destroy(), 1000).unref();
      resolve({ verdict, reply: reply.replace(/[^\x20-\x7e]/g, '?').slice(0, 300) });
    };
    const timer = setTimeout(() => finish('unreachable', `no answer within ${timeoutMs} ms`), timeoutMs);
    const commands = [`${target.lmtp ? 'LHLO' : 'EHLO'} ${helo}`, 'MAIL FROM:<>', `RCPT TO:<${address}>`];
    socket.setEncoding('latin1');
    socket.on('error', (e) => finish('unreachable', e.message));
    socket.on('close', () => finish('unreachable', 'connection closed'));
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      if (buffer.length > MAX_REPLY) return finish('unreachable', 'reply too long');
      // A complete reply ends with a line "DDD " (or "DDD" alone).
      for (;;) {
        const m = /(^|\r\n)(\d{3})(?: [^\r\n]*)?\r\n/.exec(buffer);
        if (!m) return;
        const code = Number(m[2]);
        const text = buffer.slice(0, m.index + m[0].length).trim();
        buffer = buffer.slice(m.index + m[0].length);
        if (step === 3) return finish(code >= 200 && code < 300 ? 'known' : code >= 500 && code < 600 ? 'unknown' : 'unreachable', text);
        if (code < 200 || code >= 400) return finish('unreachable', text);
        socket.write(`${commands[step]}\r\n`);
        step++;
      }
    });
  });
}

interface Cached {
  verdict: Verdict;
  reply: string;
  expires: number;
}

export class RecipientVerifier {
  private readonly cache = new Map<string, Cached>();
  private readonly inflight = new Map<string, Promise<{ verdict: Verdict; reply: string }>>();
  /** Probes sent (tests and metrics). */
  probes = 0;

  /** Getters, read at each use: a reload may change the routes. */
  constructor(
    private readonly routes: () => readonly Route[],
    private readonly helo: () => string,
    private readonly timeoutMs: () => number,
  ) {}

  /** routeFor - the verifying route of an address's domain, or null (no probe). */
  private routeFor(address: string): Route | null {
    const domain = address.slice(address.lastIndexOf('@') + 1).toLowerCase();
    const r = this.routes().find((x) => x.domain === domain);
    return r && r.verify_recipients && (r.via.kind === 'smtp' || (r.via.kind === 'lmtp' && 'host' in r.via)) ? r : null;
  }

  /** verify - null when the domain is not verified; else the next hop's verdict (cached). */
  async verify(address: string): Promise<{ verdict: Verdict; reply: string } | null> {
    const route = this.routeFor(address);
    if (!route) return null;
    const key = address.toLowerCase();
    const hit = this.cache.get(key);
    if (hit && hit.expires > Date.now()) return hit;
    if (hit) this.cache.delete(key);
    const pending = this.inflight.get(key);
    if (pending) return pending;
    const via = route.via as { kind: 'smtp' | 'lmtp'; host: string; port: number };
    this.probes++;
    const p = probe({ host: via.host, port: via.port, lmtp: via.kind === 'lmtp' }, address, this.helo(), this.timeoutMs()).then((r) => {
      if (r.verdict !== 'unreachable') {
        while (this.cache.size >= MAX_ENTRIES) this.cache.delete(this.cache.keys().next().value!);
        this.cache.set(key, { ...r, expires: Date.now() + (r.verdict === 'known' ? KNOWN_TTL : UNKNOWN_TTL) });
      }
      return r;
    });
    this.inflight.set(key, p);
    return p.finally(() => this.inflight.delete(key));
  }

  get size(): number {
    return this.cache.size;
  }
}
