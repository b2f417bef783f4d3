/*
 * local/users - the valid users of the local domains (`[local] users_file`,
 * one "user@domain" a line, "#" comments). With no file, every local part of
 * a local domain is valid (the default).
 *
 * Untrusted input: the file (an operator's, but possibly malformed): bad lines
 * are reported with file and line number and skipped, never fatal at run time.
 * A file that cannot be read keeps the previous table (the first time: an
 * empty one, so nobody is wrongly accepted and then bounced).
 * Local parts compare case-insensitively, as every mail system in practice does.
 */
import { readTableFile } from '../core/table-file.js';

/** parseUsers - the users in a users file's text, and a problem per bad line ("FILE:LINE: ..."). */
export function parseUsers(text: string, file: string): { users: Set<string>; problems: string[] } {
  const users = new Set<string>();
  const problems: string[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.replace(/(^|\s)#.*$/, '').trim();
    if (!line) return;
    if (!/^[^@\s]+@[^@\s]+$/.test(line)) {
      problems.push(`${file}:${i + 1}: not an address: ${line.slice(0, 80)}`);
      return;
    }
    users.add(line.toLowerCase());
  });
  return { users, problems };
}

export class LocalUsers {
  private users: Set<string> | null = null;
  /** Problems found by the last (re)load. */
  problems: string[] = [];

  constructor(private readonly file: string) {
    this.reload();
  }

  /** reload - (re)read the file; keeps the old table if it cannot be read. Returns the problems found. */
  reload(): string[] {
    if (!this.file) {
      this.users = null;
      this.problems = [];
      return this.problems;
    }
    const read = readTableFile(this.file);
    if ('problem' in read) {
      this.problems = [`${read.problem}; keeping the previous table`];
      if (this.users === null) this.users = new Set();
      return this.problems;
    }
    const parsed = parseUsers(read.text, this.file);
    this.users = parsed.users;
    this.problems = parsed.problems;
    return this.problems;
  }

  /** exists - true when the address is a valid local user (always without a users file; postmaster always, RFC 5321 §4.5.1). */
  exists(address: string): boolean {
    if (this.users === null) return true;
    const a = address.toLowerCase();
    return this.users.has(a) || a.startsWith('postmaster@');
  }

  /** restricted - true when a users file lists the valid users. */
  get restricted(): boolean {
    return this.users !== null;
  }
}
