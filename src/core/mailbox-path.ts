/*
 * core/mailbox-path - which addresses can name a mailbox on disk, and where:
 * root/<domain>/<local part>, lower-cased, quotes removed. Shared by Maildir
 * delivery (which writes there) and local recipients (which refuse at RCPT
 * an address that could never be delivered).
 *
 * Invariants: a path is only given for an address whose local part and
 * domain are each one safe path component (not empty, no leading ".", no
 * "/", "\" or control characters, at most NAME_MAX octets), and it never
 * leaves the root.
 *
 * Untrusted input: the recipient address (from the envelope) becomes a path.
 */
import { dirname, resolve, sep } from 'node:path';
import { domainOf, localPartOf } from './address.js';

/** Longest file name component most file systems allow (octets). */
const NAME_MAX = 255;

/** unsafeName - true when this text cannot be one path component of a mailbox. */
const unsafeName = (s: string): boolean => s === '' || s.startsWith('.') || /[/\\\x00-\x1f\x7f]/.test(s) || Buffer.byteLength(s) > NAME_MAX;

/** canNameMailbox - can this address be delivered to a Maildir at all? (RCPT refuses those that cannot.) */
export function canNameMailbox(address: string): boolean {
  return !unsafeName(localPartOf(address).toLowerCase().replace(/^"(.*)"$/, '$1')) && !unsafeName(domainOf(address));
}

/** mailboxPath - root/<domain>/<user>, or null when the address cannot name one safely. */
export function mailboxPath(root: string, address: string): string | null {
  const local = localPartOf(address).toLowerCase().replace(/^"(.*)"$/, '$1');
  const domain = domainOf(address);
  if (unsafeName(local) || unsafeName(domain)) return null;
  const base = resolve(root);
  const box = resolve(base, domain, local);
  // Belt and braces: whatever the checks above missed, never leave the root.
  if (!box.startsWith(base + sep) || dirname(dirname(box)) !== base) return null;
  return box;
}
