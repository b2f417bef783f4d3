/*
 * checks/route-recipients - "no backscatter" from a list: the valid
 * recipients of a relayed domain, named by its route's `recipients_file`
 * (one address a line, `@domain` for every address of a domain, `#`
 * comments), as Postfix's relay_recipient_maps. A recipient of such a
 * domain that the file does not name is refused at RCPT (550 5.1.1), never
 * accepted and bounced later.
 *
 * Invariants:
 * - a file is read through core/table-file, once, when first needed, and
 *   again on reload() (SIGHUP, `petrel reload`); a file that cannot be read
 *   keeps the table read before; never read successfully, its domain's
 *   recipients get 450 4.1.1 ("unknown" is not known: the client tries
 *   again, nothing is refused for good because of an operator's typo);
 * - addresses compare case-insensitively (as local/users); a bad line is
 *   reported (FILE:LINE) and skipped, never fatal;
 * - memory is the files' size: each table holds what its file lists.
 *
 * Untrusted input: the recipient address (already parsed by the RCPT
 * parser) and the operator's file (possibly malformed).
 */
import { readTableFile } from '../core/table-file.js';

export type Listing = 'listed' | 'not listed' | 'unreadable';

interface Table {
  /** Full addresses and "@domain" catch-alls, lower case; null: never read successfully. */
  entries: Set<string> | null;
  problems: string[];
}

/** parseRecipients - the entries of a recipients file's text, and a problem per bad line ("FILE:LINE: ..."). */
export function parseRecipients(text: string, file: string): { entries: Set<string>; problems: string[] } {
  const entries = new Set<string>();
  const problems: string[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.replace(/(^|\s)#.*$/, '').trim();
    if (!line) return;
    if (!/^[^@\s]*@[^@\s]+$/.test(line)) {
      problems.push(`${file}:${i + 1}: not an address or @domain: ${line.slice(0, 80)}`);
      return;
    }
    entries.add(line.toLowerCase());
  });
  return { entries, problems };
}

export class RouteRecipients {
  private readonly tables = new Map<string, Table>();

  /** @param onProblem - told each bad line and unreadable file (traces). */
  constructor(private readonly onProblem: (text: string) => void = () => undefined) {}

  /** lookup - is `address` listed in `file`? Reads the file the first time it is asked about. */
  lookup(file: string, address: string): Listing {
    let t = this.tables.get(file);
    if (!t) {
      t = { entries: null, problems: [] };
      this.tables.set(file, t);
      this.read(file, t);
    }
    if (!t.entries) return 'unreadable';
    const a = address.toLowerCase();
    return t.entries.has(a) || t.entries.has(a.slice(a.lastIndexOf('@'))) ? 'listed' : 'not listed';
  }

  /** reload - re-read every file read so far, and forget those no route names now; returns the problems found. */
  reload(files: readonly string[]): string[] {
    for (const f of [...this.tables.keys()]) if (!files.includes(f)) this.tables.delete(f);
    const problems: string[] = [];
    for (const [file, t] of this.tables) problems.push(...this.read(file, t));
    return problems;
  }

  private read(file: string, t: Table): string[] {
    const got = readTableFile(file);
    if ('problem' in got) {
      t.problems = [`${got.problem}; ${t.entries ? 'keeping the previous table' : 'its recipients get 450 4.1.1 until it can be read'}`];
    } else {
      const parsed = parseRecipients(got.text, file);
      t.entries = parsed.entries;
      t.problems = parsed.problems;
    }
    for (const p of t.problems) this.onProblem(p);
    return t.problems;
  }
}
