/*
 * local/expand - alias expansion of a message's recipients at enqueue time.
 * Pure: the tables come in, the expanded recipient list goes out.
 *
 * Rules (docs/local-delivery.md):
 * - only addresses in local domains are expanded; an alias applies when its
 *   name matches ("name@domain" first, then the bare "name", valid in every
 *   local domain); aliases win over users of the same name;
 * - a bare target is in the domain of the address being expanded; a target
 *   naming the address being expanded, or written "\name", is that mailbox
 *   (not expanded again); other targets are expanded in turn;
 * - a catch-all ("@domain: ...") applies only to the address the sender
 *   wrote, when it is neither an alias nor a user listed in users_file (with
 *   no users_file: every non-alias address of the domain); its targets are
 *   never caught again;
 * - an expansion that comes back to an alias it is inside (a -> b -> a), or
 *   nests deeper than MAX_ALIAS_DEPTH, fails the whole original recipient:
 *   it is queued once, as written, with destination "alias-loop" (core/decided),
 *   and fails with 5.4.6 and a DSN;
 * - a top-level local address that is no alias, no catch-all and no user
 *   (only possible with a users_file) is queued with destination
 *   "unknown-user" (5.1.1). SMTP refuses those at RCPT; pickup and sendmail
 *   have no RCPT to refuse them at, so the sender gets a DSN;
 * - each expanded recipient keeps NOTIFY and gets ORCPT = the original
 *   address when none was given (RFC 3461 §6.2: reports name what the sender
 *   wrote); duplicates across the whole message are dropped (first kept);
 * - when NOTIFY asked for SUCCESS, the alias itself is queued once more with
 *   destination "alias-expanded" (ends "delivered" with an `expanded` report,
 *   Action: expanded) and its addresses get NOTIFY less SUCCESS, so the
 *   sender hears once about the alias, not once per address it names.
 *
 * Bounded work: each alias is expanded at most once per original recipient,
 * so a file with shared sub-lists cannot blow up exponentially.
 */
import type { DecidedDestination } from '../core/decided.js';
import type { AliasEntry, AliasTable } from './aliases.js';

/** Deepest nesting of aliases followed (sendmail's MaxAliasRecursion is also 10). */
export const MAX_ALIAS_DEPTH = 10;

export interface ExpandTables {
  isLocalDomain(domain: string): boolean;
  aliases: AliasTable;
  /** users_file membership (postmaster always); true for everyone without a users_file. */
  isUser(address: string): boolean;
  /** A users_file is in use. */
  restricted: boolean;
}

export interface ExpandRecipient {
  address: string;
  orcpt: string | null;
  notify: string | null;
  /** Already decided (core/decided); undefined: the router names it. */
  destination?: string;
}

type One = { kind: 'addresses'; addresses: string[] } | { kind: 'loop'; chain: string } | { kind: 'unknown' };

function split(address: string): { local: string; domain: string } {
  const at = address.lastIndexOf('@');
  return { local: address.slice(0, at), domain: address.slice(at + 1).toLowerCase() };
}

/** aliasFor - the alias entry for an address of a local domain, if any (exact name first). */
export function aliasFor(address: string, t: ExpandTables): AliasEntry | null {
  const { local, domain } = split(address);
  const l = local.toLowerCase();
  return t.aliases.exact.get(`${l}@${domain}`) ?? t.aliases.bare.get(l) ?? null;
}

/** expandOne - what one address the sender wrote becomes. */
export function expandOne(address: string, t: ExpandTables, maxDepth = MAX_ALIAS_DEPTH): One {
  const out: string[] = [];
  const path: string[] = [];
  const shown: string[] = [];
  const done = new Set<string>();
  let loop: string | null = null;
  let unknown = false;

  const visit = (addr: string, top: boolean): void => {
    if (loop) return;
    const { domain } = split(addr);
    let entry: AliasEntry | null = null;
    if (t.isLocalDomain(domain)) {
      entry = aliasFor(addr, t);
      if (!entry && top && !(t.restricted && t.isUser(addr))) entry = t.aliases.catchAll.get(domain) ?? null;
      if (!entry && top && t.restricted && !t.isUser(addr)) unknown = true;
    }
    if (!entry) {
      out.push(addr);
      return;
    }
    const node = `${entry.name}|${domain}`;
    if (path.includes(node)) {
      loop = [...shown, addr].join(' -> ');
      return;
    }
    if (path.length >= maxDepth) {
      loop = `${[...shown, addr].join(' -> ')} (more than ${maxDepth} levels)`;
      return;
    }
    if (done.has(node)) return;
    path.push(node);
    shown.push(addr);
    for (const target of entry.targets) {
      const to = `${target.local}@${target.domain ?? domain}`;
      if (target.mailbox || to.toLowerCase() === addr.toLowerCase()) out.push(to);
      else visit(to, false);
      if (loop) return;
    }
    path.pop();
    shown.pop();
    done.add(node);
  };

  visit(address, true);
  if (loop) return { kind: 'loop', chain: loop };
  if (unknown) return { kind: 'unknown' };
  const seen = new Set<string>();
  return { kind: 'addresses', addresses: out.filter((a) => !seen.has(a.toLowerCase()) && seen.add(a.toLowerCase())) };
}

function wantsSuccess(notify: string | null): boolean {
  return notify !== null && notify.split(',').some((k) => k.trim().toUpperCase() === 'SUCCESS');
}

/** withoutSuccess - a NOTIFY value less SUCCESS ("SUCCESS" alone becomes "NEVER"). */
function withoutSuccess(notify: string): string {
  const rest = notify.split(',').filter((k) => k.trim().toUpperCase() !== 'SUCCESS');
  return rest.length ? rest.join(',') : 'NEVER';
}

/** expandRecipients - the whole message's recipients, expanded and de-duplicated; `notes` describe loops found. */
export function expandRecipients(input: readonly ExpandRecipient[], t: ExpandTables, maxDepth = MAX_ALIAS_DEPTH): { recipients: ExpandRecipient[]; notes: string[] } {
  const recipients: ExpandRecipient[] = [];
  const notes: string[] = [];
  const seen = new Set<string>();
  const push = (r: ExpandRecipient): void => {
    const key = `${r.address.toLowerCase()}\0${r.destination ?? ''}`;
    if (seen.has(key)) return;
    seen.add(key);
    recipients.push(r);
  };
  const decided = (r: ExpandRecipient, destination: DecidedDestination): ExpandRecipient => ({ ...r, orcpt: r.orcpt ?? `rfc822;${r.address}`, destination });
  for (const r of input) {
    if (r.destination !== undefined || !t.isLocalDomain(split(r.address).domain)) {
      push(r);
      continue;
    }
    const one = expandOne(r.address, t, maxDepth);
    if (one.kind === 'loop') {
      notes.push(`alias loop for <${r.address}>: ${one.chain}`);
      push(decided(r, 'alias-loop'));
    } else if (one.kind === 'unknown') {
      push(decided(r, 'unknown-user'));
    } else if (one.addresses.length === 1 && one.addresses[0] === r.address) {
      push(r);
    } else {
      // An alias. A sender who asked to hear of delivery hears that the alias
      // was expanded; its addresses carry on without SUCCESS (RFC 3461 §6.2.7.3).
      const success = wantsSuccess(r.notify);
      if (success) push(decided(r, 'alias-expanded'));
      const notify = success ? withoutSuccess(r.notify!) : r.notify;
      for (const a of one.addresses) push({ address: a, orcpt: r.orcpt ?? `rfc822;${r.address}`, notify });
    }
  }
  return { recipients, notes };
}
