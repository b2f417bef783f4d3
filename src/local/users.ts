/*
 * local/users - the valid users of the local domains (`[local] users_file`,
 * one "user@domain" a line, "#" comments). With no file, every local part of
 * a local domain is valid (the default).
 *
 * Untrusted input: the file (an operator's, but possibly malformed): bad lines
 * are reported with their line number and skipped, never fatal at run time.
 * Local parts compare case-insensitively, as every mail system in practice does.
 */
import { readFileSync } from 'node:fs';

export class LocalUsers {
  private users: Set<string> | null = null;
  readonly problems: string[] = [];

  constructor(private readonly file: string) {
    this.reload();
  }

  /** reload - (re)read the file; keeps the old table if it cannot be read. */
  reload(): void {
    if (!this.file) {
      this.users = null;
      return;
    }
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (e) {
      this.problems.push(`${this.file}: cannot read: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
      if (this.users === null) this.users = new Set();
      return;
    }
    const users = new Set<string>();
    text.split(/\r?\n/).forEach((raw, i) => {
      const line = raw.replace(/#.*$/, '').trim();
      if (!line) return;
      if (!/^[^@\s]+@[^@\s]+$/.test(line)) {
        this.problems.push(`${this.file}:${i + 1}: not an address: ${line.slice(0, 80)}`);
        return;
      }
      users.add(line.toLowerCase());
    });
    this.users = users;
  }

  /** exists - true when the address is a valid local user (always without a users file; postmaster always, RFC 5321 §4.5.1). */
  exists(address: string): boolean {
    if (this.users === null) return true;
    const a = address.toLowerCase();
    return this.users.has(a) || a.startsWith('postmaster@');
  }

  get restricted(): boolean {
    return this.users !== null;
  }
}
