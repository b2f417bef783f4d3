/*
 * checks/header-edit - small edits of a message's header section that the
 * checks ask for: replace Subject: (rspamd's "rewrite subject"), remove the
 * fields only Petrel may write (`X-Petrel-Junk:`, which files a message in
 * the junk folder: a sender must not be able to set it on mail from
 * outside), and find such a field again at delivery.
 *
 * Invariants: every other field is kept octet for octet, folded lines
 * included; the new field is printable ASCII on one line (at most 998
 * octets); the header section's closing blank line stays.
 *
 * Untrusted input: the header section; the new subject (rspamd's answer,
 * already made printable by checks/rspamd).
 *
 * RFCs: RFC 5322 §2.2 (fields, folding), §3.6.5 (Subject).
 */

/** splitFields - the header section as whole fields (each with its folded lines and CR LF); the blank line last. */
export function splitFields(header: Buffer): string[] {
  const lines = header.toString('latin1').split(/(?<=\r\n)/);
  const fields: string[] = [];
  for (const line of lines) {
    if ((line.startsWith(' ') || line.startsWith('\t')) && fields.length && fields[fields.length - 1] !== '\r\n') fields[fields.length - 1] += line;
    else fields.push(line);
  }
  return fields;
}

const nameOf = (field: string): string => field.slice(0, Math.max(0, field.indexOf(':'))).trim().toLowerCase();

/** replaceSubject - Subject: fields removed and one `Subject: <subject>` put where the first was (or before the blank line). */
export function replaceSubject(header: Buffer, subject: string): Buffer {
  const line = `Subject: ${subject.replace(/[^\x20-\x7e]/g, '?')}`.slice(0, 998) + '\r\n';
  const out: string[] = [];
  let placed = false;
  for (const f of splitFields(header)) {
    if (nameOf(f) === 'subject') {
      if (!placed) out.push(line);
      placed = true;
      continue;
    }
    if (f === '\r\n' && !placed) {
      out.push(line);
      placed = true;
    }
    out.push(f);
  }
  if (!placed) out.push(line);
  return Buffer.from(out.join(''), 'latin1');
}

/** subjectOf - the first Subject: field's value, unfolded ("" when none). */
export function subjectOf(header: Buffer): string {
  const f = splitFields(header).find((x) => nameOf(x) === 'subject');
  return f ? f.slice(f.indexOf(':') + 1).replace(/\r\n/g, '').trim() : '';
}

/** removeFields - every field with this name (any case) removed, folded lines included; the rest kept octet for octet. */
export function removeFields(header: Buffer, name: string): Buffer {
  const lower = name.toLowerCase();
  const fields = splitFields(header);
  const kept = fields.filter((f) => f === '\r\n' || nameOf(f) !== lower);
  return kept.length === fields.length ? header : Buffer.from(kept.join(''), 'latin1');
}

/** JUNK_FIELD - the field the checks add to mail to be filed in the junk folder (delivery/maildir reads it). */
export const JUNK_FIELD = 'X-Petrel-Junk';

/**
 * hasField - does the header section (CR LF or LF line ends; what is given
 * may stop before its end) hold a field with this name? A field name at the
 * start of a line only: a folded continuation never counts.
 */
export function hasField(header: string, name: string): boolean {
  const end = header.search(/\r?\n\r?\n/);
  const section = end >= 0 ? header.slice(0, end + 1) : header;
  const lower = name.toLowerCase() + ':';
  return section.split(/\r?\n/).some((line) => line.slice(0, lower.length).toLowerCase() === lower || new RegExp(`^${name}[ \\t]+:`, 'i').test(line));
}
