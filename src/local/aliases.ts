/*
 * local/aliases - the aliases file (`[local] aliases_file`): its syntax and
 * the table it makes. Expansion itself is local/expand.
 *
 *   # comment (a "#" at the start of a line or after white space)
 *   postmaster: root                  bare name: valid in every local domain
 *   sales: alice, bob@example.org     a bare target is in the alias's domain
 *   info@example.test: carol          only in example.test (wins over "info:")
 *   alice: \alice, alice@remote.test  "\name" is name's own mailbox, not expanded again
 *   @example.test: catchall           catch-all: any other address of the domain
 *     , dave                          a line starting with white space continues the entry
 *
 * Untrusted input: the file's text (an operator's, but possibly malformed).
 * A bad entry is reported with file and line and skipped as a whole (never
 * half-used); a duplicate name keeps the first entry. Names compare
 * case-insensitively. Program, file and :include: targets are not supported
 * (reported as errors): Petrel delivers to mailboxes and addresses only.
 */
import { parseMailbox } from '../core/address.js';

export interface AliasTarget {
  local: string;
  /** null: the domain of the address being expanded. */
  domain: string | null;
  /** "\name": the mailbox itself, never expanded again. */
  mailbox: boolean;
}

export interface AliasEntry {
  /** As written, lower-cased: "sales", "info@example.test" or "@example.test". */
  name: string;
  targets: AliasTarget[];
  /** Where it was written, for messages: "FILE:LINE". */
  where: string;
}

export interface AliasTable {
  /** Bare names, valid in every local domain. */
  bare: Map<string, AliasEntry>;
  /** "local@domain" names. */
  exact: Map<string, AliasEntry>;
  /** Catch-alls by domain. */
  catchAll: Map<string, AliasEntry>;
}

export function emptyAliases(): AliasTable {
  return { bare: new Map(), exact: new Map(), catchAll: new Map() };
}

/** splitTargets - "a, b, \"x,y\"@z" -> ["a", "b", "\"x,y\"@z"] (commas inside quotes do not split). */
function splitTargets(text: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === '\\' && quoted && i + 1 < text.length) {
      cur += c + text[++i];
      continue;
    }
    if (c === '"') quoted = !quoted;
    if (c === ',' && !quoted) {
      out.push(cur.trim());
      cur = '';
    } else cur += c;
  }
  out.push(cur.trim());
  return out;
}

/** parseTarget - one target, or the reason it is not one. */
function parseTarget(text: string): AliasTarget | string {
  if (/^[|/]/.test(text) || /^:include:/i.test(text)) return `"${text.slice(0, 60)}": program, file and :include: targets are not supported`;
  const mailbox = text.startsWith('\\');
  const body = mailbox ? text.slice(1) : text;
  const at = body.lastIndexOf('@');
  if (at < 0) {
    if (!parseMailbox(`${body}@example.test`, true)) return `"${text.slice(0, 60)}" is not a valid local part`;
    return { local: body, domain: null, mailbox };
  }
  const m = parseMailbox(body, true);
  if (!m) return `"${text.slice(0, 60)}" is not a valid address`;
  return { local: m.local, domain: m.domain, mailbox };
}

/** parseName - the left-hand side: "name", "name@domain" or "@domain". */
function parseName(text: string, localDomains: ReadonlySet<string>): { kind: keyof AliasTable; key: string } | string {
  const name = text.trim().toLowerCase();
  if (name.startsWith('@')) {
    const domain = name.slice(1);
    if (!localDomains.has(domain)) return `catch-all "@${domain}" is not for a local domain ([local] domains)`;
    return { kind: 'catchAll', key: domain };
  }
  if (name.includes('@')) {
    const m = parseMailbox(name, true);
    if (!m) return `"${text.trim().slice(0, 60)}" is not a valid address`;
    if (!localDomains.has(m.domain)) return `"${name}" is not in a local domain ([local] domains)`;
    return { kind: 'exact', key: `${m.local}@${m.domain}` };
  }
  if (!parseMailbox(`${name}@example.test`, true)) return `"${text.trim().slice(0, 60)}" is not a valid alias name`;
  return { kind: 'bare', key: name };
}

/** parseAliases - the table in an aliases file's text, and a problem ("FILE:LINE: ...") per skipped entry. */
export function parseAliases(text: string, file: string, localDomains: ReadonlySet<string>): { table: AliasTable; problems: string[] } {
  const table = emptyAliases();
  const problems: string[] = [];
  // Join continuation lines to the entry they continue, remembering where each entry started.
  const entries: Array<{ line: number; text: string }> = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.replace(/(^|\s)#.*$/, '');
    if (line.trim() === '') return;
    if (/^\s/.test(line)) {
      const last = entries[entries.length - 1];
      if (last) last.text += ' ' + line.trim();
      else problems.push(`${file}:${i + 1}: continuation line with no entry before it`);
      return;
    }
    entries.push({ line: i + 1, text: line.trim() });
  });
  for (const e of entries) {
    const where = `${file}:${e.line}`;
    // The name ends at the first ":" that is not inside quotes (a quoted local part may hold one).
    const colon = /^((?:"(?:[^"\\]|\\.)*"|[^:"])*):/.exec(e.text);
    if (!colon) {
      problems.push(`${where}: expected "name: target, target"`);
      continue;
    }
    const name = parseName(colon[1]!, localDomains);
    if (typeof name === 'string') {
      problems.push(`${where}: ${name}`);
      continue;
    }
    const targets: AliasTarget[] = [];
    let bad: string | null = null;
    for (const t of splitTargets(e.text.slice(colon[0].length))) {
      if (t === '') continue; // "a, b," and "a,, b": stray commas are harmless
      const r = parseTarget(t);
      if (typeof r === 'string') {
        bad = r;
        break;
      }
      targets.push(r);
    }
    if (!bad && targets.length === 0) bad = 'no targets';
    if (bad) {
      problems.push(`${where}: ${bad}; entry skipped`);
      continue;
    }
    const map = table[name.kind];
    const already = map.get(name.key);
    if (already) {
      problems.push(`${where}: "${already.name}" is already defined at ${already.where}; this entry is ignored`);
      continue;
    }
    map.set(name.key, { name: name.kind === 'catchAll' ? `@${name.key}` : name.key, targets, where });
  }
  return { table, problems };
}
