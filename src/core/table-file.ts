/*
 * core/table-file - reading an operator's table file (local users, aliases,
 * submission users, sender logins): its text, or the one problem line that
 * says why it cannot be read ("FILE: cannot read: ENOENT"). Each caller keeps
 * the table it read before when this fails; nothing here throws.
 */
import { readFileSync } from 'node:fs';

/** readTableFile - the file's text, or the problem to report. */
export function readTableFile(file: string): { text: string } | { problem: string } {
  try {
    return { text: readFileSync(file, 'utf8') };
  } catch (e) {
    return { problem: `${file}: cannot read: ${(e as NodeJS.ErrnoException).code ?? String(e)}` };
  }
}
