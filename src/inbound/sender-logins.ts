/*
 * inbound/sender-logins - who may send as whom (`[smtp] sender_logins`), as
 * Postfix's smtpd_sender_login_maps with reject_sender_login_mismatch: an
 * authenticated client may use a MAIL FROM address only when the file names
 * its login as an owner of that address, or of the address's `@domain`.
 *
 * The file: one "address-or-@domain: login, login" a line, "#" comments.
 *   alice@example.com: alice
 *   sales@example.com: alice, bob
 *   @example.net: carol
 * An exact address is looked up first, then its @domain; the address and the
 * domain are compared without regard to case, logins exactly (as
 * `[smtp] users_file` names them).
 *
 * Invariants:
 * - with no file configured nothing is refused (the check is off);
 * - with a file, an authenticated login may use only the addresses it owns:
 *   an address the file does not name is owned by nobody, and refused;
 * - the null sender `<>` (reports) is not an address anyone owns, and is let
 *   through, as Postfix does;
 * - a line that cannot be read is reported with its line number and skipped;
 *   a file that cannot be read keeps the table read before (reload()).
 *
 * Untrusted input: the MAIL FROM address (already parsed by inbound/commands)
 * and the login (already authenticated).
 */
import { readTableFile } from '../core/table-file.js';

/** parseSenderLogins - the table and the problems of the file's text. */
export function parseSenderLogins(text: string, file: string): { owners: Map<string, Set<string>>; problems: string[] } {
  const owners = new Map<string, Set<string>>();
  const problems: string[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.replace(/#.*$/, '').trim();
    if (!line) return;
    const colon = line.indexOf(':');
    const key = colon > 0 ? line.slice(0, colon).trim().toLowerCase() : '';
    const logins = colon > 0 ? line.slice(colon + 1).split(/[\s,]+/).filter((l) => l !== '') : [];
    const keyOk = /^@[^\s@]+$/.test(key) || /^[^\s@]+@[^\s@]+$/.test(key);
    if (!keyOk || logins.length === 0) {
      problems.push(`${file}:${i + 1}: not "address-or-@domain: login, login"`);
      return;
    }
    const set = owners.get(key) ?? new Set<string>();
    for (const l of logins) set.add(l);
    owners.set(key, set);
  });
  return { owners, problems };
}

export class SenderLogins {
  private owners = new Map<string, Set<string>>();
  /** Problems of the last read (line numbers), for the trace and check-config. */
  problems: string[] = [];

  constructor(private readonly file: string) {
    this.reload();
  }

  /** configured - whether a sender_logins file is in force. */
  get configured(): boolean {
    return this.file !== '';
  }

  /** reload - read the file again; when it cannot be read, the table read before stays. */
  reload(): void {
    if (!this.file) return;
    const read = readTableFile(this.file);
    if ('problem' in read) {
      this.problems = [read.problem];
      return;
    }
    const text = read.text;
    const parsed = parseSenderLogins(text, this.file);
    this.owners = parsed.owners;
    this.problems = parsed.problems;
  }

  /** mayUse - may the client logged in as `login` use `sender` in MAIL FROM? */
  mayUse(login: string, sender: string): boolean {
    if (!this.configured || sender === '') return true;
    const address = sender.toLowerCase();
    const exact = this.owners.get(address);
    if (exact) return exact.has(login);
    const domain = this.owners.get(address.slice(address.lastIndexOf('@')));
    return domain?.has(login) ?? false;
  }
}
