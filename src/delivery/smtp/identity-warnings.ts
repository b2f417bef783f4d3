/*
 * delivery/smtp/identity-warnings - the sending identity checks as `petrel
 * start` runs them: the source addresses must be bindable (else start is
 * refused, naming the key), and their DNS (fcrdns.ts) is checked in the
 * background, each problem a warn-level trace line and a "petrel: warning:"
 * line on standard error. Start is never delayed by DNS: the check runs
 * after, and is cancelled by stop.
 *
 * Untrusted input: DNS answers, through fcrdns.ts.
 */
import type { Config } from '../../config/schema.js';
import { checkIdentities, makeResolver, type IdentityReport, type ReverseResolver } from './fcrdns.js';
import { identities, sourceProblems } from './source.js';

export interface IdentityWarningSinks {
  trace: { warn(fields: object, message: string): void; info(fields: object, message: string): void };
  stderr?: (line: string) => void;
}

/** SourceAddressError - a configured source address this machine does not have; start stops with it. */
export class SourceAddressError extends Error {
  constructor(readonly problems: { key: string; message: string }[]) {
    super(problems.map((p) => `${p.key}: ${p.message}`).join('; '));
    this.name = 'SourceAddressError';
  }
}

/** assertSourcesBindable - throws SourceAddressError when a configured source address cannot be bound. */
export async function assertSourcesBindable(config: Config): Promise<void> {
  const problems = await sourceProblems(config);
  if (problems.length) throw new SourceAddressError(problems);
}

/**
 * warnSendingIdentity - start the DNS checks of the configured source
 * addresses; each warning goes to the sinks. `done` resolves (never rejects)
 * with the reports; `cancel` stops the look-ups in flight.
 */
export function warnSendingIdentity(config: Config, sinks: IdentityWarningSinks, resolver?: ReverseResolver & { cancel?: () => void }): { done: Promise<IdentityReport[]>; cancel: () => void } {
  const ids = Object.values(identities(config)).filter((i) => i.address !== '');
  if (ids.length === 0) return { done: Promise.resolve([]), cancel: () => undefined };
  const r = resolver ?? makeResolver(config.delivery.dns_servers);
  const stderr = sinks.stderr ?? ((line: string) => process.stderr.write(line + '\n'));
  let cancelled = false;
  const done = checkIdentities(ids, r)
    .then((reports) => {
      // Stopped before DNS answered: the look-ups failed because we cancelled them, which is nothing to warn about.
      if (cancelled) return [];
      for (const rep of reports) {
        const fields = { source: rep.identity.address, helo: rep.identity.heloName, ptr: rep.ptr };
        if (rep.warnings.length === 0) sinks.trace.info(fields, `sending identity ${rep.identity.address} checks out: PTR ${rep.ptr.join(', ')}, forward-confirmed, matches the HELO name`);
        for (const w of rep.warnings) {
          sinks.trace.warn(fields, `sending identity: ${w}`);
          stderr(`petrel: warning: sending identity: ${w}`);
        }
      }
      return reports;
    })
    .catch((e: unknown) => {
      sinks.trace.warn({ err: String(e) }, 'sending identity: the DNS check could not run');
      return [];
    });
  return {
    done,
    cancel: () => {
      cancelled = true;
      r.cancel?.();
    },
  };
}
