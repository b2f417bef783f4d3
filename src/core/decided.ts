/*
 * core/decided - recipients whose fate enqueue already knows: alias expansion
 * found a loop (or went too deep), an alias was expanded for a sender who
 * asked to hear of its delivery, or a locally submitted message (pickup,
 * sendmail) names a local user that does not exist.
 *
 * Such a recipient is still queued like any other (so it is on the record,
 * counted and reported through the normal path); its `destination` is one of
 * the names below, and the router turns that destination into a `reject` hop
 * that the scheduler records with the status given here (5.x.x: `failed`,
 * 2.x.x: `delivered`). The sender gets a DSN (RFC 3464) as for any outcome.
 *
 * Untrusted input: none (the address is only copied into the reply text,
 * after removing anything that is not printable ASCII).
 */

export interface Decision {
  status: string;
  /** For a 2.x.x decision: the report a sender who asked for success notices gets. */
  report?: 'expanded';
  /** The reply recorded for the recipient (shown in the DSN's Diagnostic-Code). */
  text(address: string): string;
}

const safe = (a: string): string => a.replace(/[^\x21-\x7e]/g, '_').slice(0, 300);

export const DECIDED = {
  /** Alias expansion came back to an alias already being expanded, or went deeper than the limit. */
  'alias-loop': {
    status: '5.4.6',
    text: (a: string) => `550 5.4.6 <${safe(a)}>: alias expansion loop (or nested too deep); see the aliases file`,
  },
  /**
   * An alias the sender asked success notices for (NOTIFY=SUCCESS): its
   * expansions carry on without SUCCESS, and the alias itself ends here,
   * "delivered", with an `expanded` report (RFC 3461 §6.2.7.3; Postfix does
   * the same).
   */
  'alias-expanded': {
    status: '2.0.0',
    report: 'expanded',
    text: (a: string) => `250 2.0.0 <${safe(a)}>: alias expanded`,
  },
  /** A locally submitted message names a local user that is not in users_file. */
  'unknown-user': {
    status: '5.1.1',
    text: (a: string) => `550 5.1.1 <${safe(a)}>: Recipient address rejected: user unknown`,
  },
} as const satisfies Record<string, Decision>;

export type DecidedDestination = keyof typeof DECIDED;

export function isDecided(destination: string | undefined | null): destination is DecidedDestination {
  return destination !== undefined && destination !== null && Object.prototype.hasOwnProperty.call(DECIDED, destination);
}
