/*
 * admin/auth - who may use the admin listener (CONTRACT.md, "Admin HTTP").
 *
 * - With a token: every path needs `Authorization: Bearer <token>` or the
 *   session cookie that the viewer's login form sets (HttpOnly,
 *   SameSite=Strict). Tokens are compared in constant time.
 * - Without a token (allowed on loopback only; config refuses otherwise):
 *   everything is open, but the Host header must name a loopback host, so a
 *   web page elsewhere cannot reach the API through DNS rebinding.
 * - Actions are POST only and need a JSON body (`Content-Type:
 *   application/json`) and, when the browser sends one, an Origin equal to
 *   this listener: an HTML form on another site can send neither, so there
 *   is no cross-site request forgery, with or without a token.
 *
 * Sessions live in memory (a restart logs the viewer out), at most
 * MAX_SESSIONS, the oldest evicted first; each expires after SESSION_MS.
 *
 * Untrusted input: request headers (Authorization, Cookie, Host, Origin,
 * Content-Type) and the login form's token.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

/** A viewer session lasts this long (12 hours: one working day). */
export const SESSION_MS = 12 * 3_600_000;
/** At most this many sessions are kept; more evict the oldest (a bounded table, DESIGN.md invariant 6). */
export const MAX_SESSIONS = 1000;
export const COOKIE = 'petrel_session';

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** isLoopbackHost - a Host header naming this machine ("127.0.0.1:8025", "localhost", "[::1]:8025"). */
export function isLoopbackHost(host: string | undefined): boolean {
  if (!host) return false;
  const name = host.startsWith('[') ? host.slice(1, host.indexOf(']')) : host.replace(/:\d+$/, '');
  return name === 'localhost' || name === '::1' || /^127\.\d+\.\d+\.\d+$/.test(name);
}

export class AdminAuth {
  private readonly sessions = new Map<string, number>();
  private readonly tokenDigest: Buffer | null;

  constructor(token: string) {
    this.tokenDigest = token ? digest(token) : null;
  }

  get required(): boolean {
    return this.tokenDigest !== null;
  }

  /** tokenMatches - constant-time comparison with the configured token. */
  tokenMatches(given: string): boolean {
    return this.tokenDigest !== null && timingSafeEqual(digest(given), this.tokenDigest);
  }

  /** allowed - may this request see anything at all? */
  allowed(req: IncomingMessage): boolean {
    if (!this.tokenDigest) return isLoopbackHost(req.headers.host);
    const auth = req.headers.authorization;
    if (auth && /^Bearer /i.test(auth) && this.tokenMatches(auth.slice(7).trim())) return true;
    const id = cookieValue(req.headers.cookie, COOKIE);
    if (!id) return false;
    const until = this.sessions.get(id);
    if (until === undefined) return false;
    if (until < Date.now()) {
      this.sessions.delete(id);
      return false;
    }
    return true;
  }

  /** actionAllowed - the extra rules for POST actions (see the file comment). */
  actionAllowed(req: IncomingMessage): string | null {
    if (!/^application\/json\b/i.test(req.headers['content-type'] ?? '')) return 'actions need Content-Type: application/json';
    const origin = req.headers.origin;
    if (origin !== undefined && origin !== 'null') {
      let host = '';
      try {
        host = new URL(origin).host;
      } catch {
        return 'bad Origin header';
      }
      if (host !== req.headers.host) return 'cross-origin actions are refused';
    } else if (origin === 'null') return 'cross-origin actions are refused';
    return null;
  }

  /** login - a new session for the right token; null otherwise. */
  login(token: string): string | null {
    if (!this.tokenMatches(token)) return null;
    const id = randomBytes(24).toString('base64url');
    if (this.sessions.size >= MAX_SESSIONS) {
      const oldest = this.sessions.keys().next().value;
      if (oldest !== undefined) this.sessions.delete(oldest);
    }
    this.sessions.set(id, Date.now() + SESSION_MS);
    return id;
  }

  logout(req: IncomingMessage): void {
    const id = cookieValue(req.headers.cookie, COOKIE);
    if (id) this.sessions.delete(id);
  }

  /** cookie - the Set-Cookie value for a session (empty id clears it). */
  static cookie(id: string): string {
    return `${COOKIE}=${id}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${id ? SESSION_MS / 1000 : 0}`;
  }
}

/** cookieValue - one cookie's value from a Cookie header. */
export function cookieValue(header: string | undefined, name: string): string | null {
  if (!header) return null;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return null;
}
