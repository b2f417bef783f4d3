/*
 * local/recipients - who exists in the local domains: the users file and the
 * aliases file together, kept current while Petrel runs.
 *
 * - exists(): the RCPT-time check (inbound/policy): an alias, a catch-all or
 *   a user is valid; anything else in a local domain gets 550 5.1.1 when a
 *   users_file is set (never accepted and bounced later).
 * - expand(): the enqueue-time expansion (local/expand), used by every way in.
 * - Both files are re-read when they change and on reload() (SIGHUP). A
 *   change is seen by polling the file's stat (inode, size, mtime, ctime)
 *   against the stat taken just before the last load — so a file replaced by
 *   rename (as editors and config tools do) is seen, and so is a change made
 *   between a load and the start of watching. A file that cannot be read
 *   keeps the previous table.
 *
 * Untrusted input: the two files. Every problem found is reported through
 * `onProblem` as "FILE:LINE: what", and the bad line is skipped.
 */
import { statSync } from 'node:fs';
import { readTableFile } from '../core/table-file.js';
import { domainOf } from '../core/address.js';
import { canNameMailbox } from '../core/mailbox-path.js';
import { emptyAliases, parseAliases, type AliasEntry, type AliasTable } from './aliases.js';
import { aliasFor, expandRecipients, type ExpandRecipient, type ExpandTables } from './expand.js';
import { LocalUsers } from './users.js';

export interface LocalRecipientsOptions {
  domains: readonly string[];
  usersFile: string;
  aliasesFile: string;
  /** Called with each problem found when a file is (re)loaded, and with alias loops found while expanding. */
  onProblem?: (text: string) => void;
}

export class LocalRecipients {
  private readonly domains: ReadonlySet<string>;
  private readonly users: LocalUsers;
  private aliases: AliasTable = emptyAliases();
  private aliasesLoaded = false;
  private timer: NodeJS.Timeout | null = null;
  private aliasProblems: string[] = [];
  /** Each file's stat signature taken just before it was last read. */
  private readonly loaded = new Map<string, string>();

  constructor(private readonly options: LocalRecipientsOptions) {
    this.domains = new Set(options.domains.map((d) => d.toLowerCase()));
    this.loaded.set(options.usersFile, signature(options.usersFile));
    this.users = new LocalUsers(options.usersFile);
    this.loadAliases();
    this.report(this.users.problems);
  }

  private loadUsers(): void {
    this.loaded.set(this.options.usersFile, signature(this.options.usersFile));
    this.report(this.users.reload());
  }

  private report(problems: readonly string[]): void {
    for (const p of problems) this.options.onProblem?.(p);
  }

  private loadAliases(): string[] {
    const file = this.options.aliasesFile;
    if (!file) return [];
    this.loaded.set(file, signature(file));
    const read = readTableFile(file);
    if ('problem' in read) {
      this.aliasProblems = [`${read.problem}; keeping the previous aliases`];
      this.report(this.aliasProblems);
      return this.aliasProblems;
    }
    const parsed = parseAliases(read.text, file, this.domains);
    this.aliases = parsed.table;
    this.aliasesLoaded = true;
    this.aliasProblems = [...parsed.problems, ...this.targetWarnings()];
    this.report(this.aliasProblems);
    return this.aliasProblems;
  }

  /** problems - what the last load of each file found. */
  get problems(): string[] {
    return [...this.users.problems, ...this.aliasProblems];
  }

  /** targetWarnings - with a users_file: local targets that are neither users nor aliases (delivered to a mailbox nobody is listed for). */
  private targetWarnings(): string[] {
    if (!this.users.restricted) return [];
    const out: string[] = [];
    const check = (entry: AliasEntry, domains: Iterable<string>): void => {
      for (const t of entry.targets) {
        for (const d of t.domain === null ? domains : [t.domain]) {
          if (!this.domains.has(d)) continue;
          const a = `${t.local}@${d}`;
          if (!this.users.exists(a) && !aliasFor(a, this.tables())) out.push(`${entry.where}: target <${a}> is not in the users file; it is delivered to that mailbox anyway`);
        }
      }
    };
    for (const entry of this.aliases.bare.values()) check(entry, this.domains);
    for (const [key, entry] of this.aliases.exact) check(entry, [key.slice(key.lastIndexOf('@') + 1)]);
    for (const [domain, entry] of this.aliases.catchAll) check(entry, [domain]);
    return out;
  }

  /** reload - re-read both files now (SIGHUP). */
  reload(): void {
    this.loadUsers();
    this.loadAliases();
  }

  /** watch - re-read a file when its stat changes (checked every `intervalMs`). */
  watch(intervalMs = 1000): void {
    this.unwatch();
    const { usersFile, aliasesFile } = this.options;
    if (!usersFile && !aliasesFile) return;
    this.timer = setInterval(() => {
      if (usersFile && signature(usersFile) !== this.loaded.get(usersFile)) this.loadUsers();
      if (aliasesFile && signature(aliasesFile) !== this.loaded.get(aliasesFile)) this.loadAliases();
    }, intervalMs);
    this.timer.unref();
  }

  unwatch(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  isLocalDomain(domain: string): boolean {
    return this.domains.has(domain.toLowerCase());
  }

  private tables(): ExpandTables {
    return {
      isLocalDomain: (d) => this.domains.has(d),
      aliases: this.aliases,
      isUser: (a) => this.users.exists(a),
      restricted: this.users.restricted,
    };
  }

  /** exists - is this address of a local domain valid at RCPT? (an alias, a catch-all, or a user whose name can be a mailbox) */
  exists(address: string): boolean {
    const domain = domainOf(address);
    // "../x", ".hidden", "a/b": no mailbox can have that name (delivery/maildir would fail it with 5.1.3).
    if (!canNameMailbox(address)) return false;
    if (this.users.exists(address)) return true;
    if (aliasFor(address, this.tables())) return true;
    return this.aliases.catchAll.has(domain);
  }

  /** expand - alias expansion of a message's recipients (local/expand). */
  expand<R extends ExpandRecipient>(recipients: readonly R[]): ExpandRecipient[] {
    if (!this.aliasesLoaded && !this.users.restricted) return [...recipients];
    const { recipients: out, notes } = expandRecipients(recipients, this.tables());
    for (const n of notes) this.options.onProblem?.(n);
    return out;
  }
}

/** signature - what a file's stat says about its content, to notice changes ("" for no file configured). */
function signature(file: string): string {
  if (!file) return '';
  try {
    const s = statSync(file);
    return `${s.dev}:${s.ino}:${s.size}:${s.mtimeMs}:${s.ctimeMs}`;
  } catch (e) {
    return `error:${(e as NodeJS.ErrnoException).code ?? String(e)}`;
  }
}
