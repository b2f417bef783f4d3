/*
 * inbound/sasl - the SASL exchange of SMTP AUTH (RFC 4954) for the PLAIN
 * (RFC 4616) and LOGIN mechanisms: it turns the AUTH argument and the
 * client's base64 lines into either the next challenge, a refusal, or the
 * credentials to check. It checks no password and keeps no state beyond one
 * exchange; the session verifies the credentials, throttles failures and
 * counts them.
 *
 * Invariants:
 * - an exchange ends with exactly one of: credentials, or a refusal reply
 *   (cancelled "*", not base64, malformed PLAIN, authzid not the authcid);
 * - PLAIN's authorization identity is accepted only when empty or equal to
 *   the authentication identity (no acting as another user).
 *
 * Untrusted input: the client's AUTH argument and every response line.
 */
import { smtpReply } from '../core/replies.js';
import type { SmtpReply } from '../core/smtp-reply.js';

/** What one step of the exchange gives the session. */
export type SaslStep =
  | { kind: 'challenge'; reply: SmtpReply }
  | { kind: 'refused'; reply: SmtpReply }
  | { kind: 'credentials'; user: string; password: string };

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** SaslExchange - one AUTH exchange, from the AUTH command to its credentials or refusal. */
export class SaslExchange {
  /** LOGIN: the user name once the client has sent it. */
  private loginUser: string | null = null;

  private constructor(readonly mechanism: 'PLAIN' | 'LOGIN') {}

  /**
   * begin - the AUTH argument ("PLAIN [initial-response]"): the exchange and
   * its first step, or the refusal of an unknown mechanism.
   */
  static begin(arg: string): { exchange: SaslExchange; step: SaslStep } | { exchange: null; step: SaslStep } {
    const [mechRaw, initial] = arg.trim().split(/\s+/, 2) as [string, string | undefined];
    const mech = mechRaw.toUpperCase();
    if (mech !== 'PLAIN' && mech !== 'LOGIN') return { exchange: null, step: { kind: 'refused', reply: smtpReply('authMechanism') } };
    const exchange = new SaslExchange(mech);
    if (initial !== undefined) return { exchange, step: exchange.respond(initial) };
    const prompt = mech === 'PLAIN' ? '' : Buffer.from('Username:').toString('base64');
    return { exchange, step: { kind: 'challenge', reply: smtpReply('authChallenge', prompt) } };
  }

  /** respond - one client line of the exchange (RFC 4954 §4). */
  respond(line: string): SaslStep {
    const text = line.trim();
    if (text === '*') return { kind: 'refused', reply: smtpReply('authCancelled') };
    if (!BASE64.test(text)) return { kind: 'refused', reply: smtpReply('authNotBase64') };
    const decoded = Buffer.from(text, 'base64').toString('utf8');
    if (this.mechanism === 'PLAIN') {
      // authzid NUL authcid NUL passwd (RFC 4616 §2)
      const parts = decoded.split('\u0000');
      if (parts.length !== 3) return { kind: 'refused', reply: smtpReply('authMalformed') };
      const [authzid, user, password] = parts as [string, string, string];
      if (authzid && authzid !== user) return { kind: 'refused', reply: smtpReply('authInvalid') };
      return { kind: 'credentials', user, password };
    }
    if (this.loginUser === null) {
      this.loginUser = decoded;
      return { kind: 'challenge', reply: smtpReply('authChallenge', Buffer.from('Password:').toString('base64')) };
    }
    return { kind: 'credentials', user: this.loginUser, password: decoded };
  }
}
