/*
 * core/headers - the header section of a message (RFC 5322 §2.2, §3.6) as a
 * list of fields, for the ways in that must read and change it (pickup,
 * sendmail): find the end of the section, unfold values, drop fields (Bcc,
 * X-Envelope-*), and write the rest back exactly as it was.
 *
 * Input is already CR LF (core/crlf). Untrusted: the whole section. A line
 * that is neither a field nor a continuation ends the section (as
 * enqueue/header-scan does): what follows is body.
 */

export interface HeaderField {
  /** As written ("Subject"). */
  name: string;
  /** Lower-cased name. */
  key: string;
  /** The unfolded value, without the leading space. */
  value: string;
  /** The field exactly as written, every line with its CR LF. */
  raw: Buffer;
}

export interface HeaderSection {
  fields: HeaderField[];
  /** Offset in the input where the body starts (after the empty line, when there was one). */
  bodyStart: number;
  /** The section ended with an empty line (false: a non-field line or the end of the input ended it). */
  blankLine: boolean;
  /** The section ran to the end of the input without ending (more input might have continued it). */
  open: boolean;
}

const FIELD_NAME = /^[\x21-\x39\x3b-\x7e]+$/;

/** parseHeaderSection - split CR LF text into header fields and the body offset. */
export function parseHeaderSection(data: Buffer): HeaderSection {
  const fields: HeaderField[] = [];
  let pos = 0;
  let current: { start: number; end: number; name: string } | null = null;
  const close = (): void => {
    if (!current) return;
    const raw = data.subarray(current.start, current.end);
    const text = raw.toString('utf8');
    const colon = text.indexOf(':');
    const value = text
      .slice(colon + 1)
      .replace(/\r\n(?=[ \t])/g, '')
      .replace(/\r\n$/, '')
      .replace(/^[ \t]+/, '');
    fields.push({ name: current.name, key: current.name.toLowerCase(), value, raw });
    current = null;
  };
  while (pos < data.length) {
    const lf = data.indexOf(10, pos);
    if (lf < 0) {
      close();
      return { fields, bodyStart: pos, blankLine: false, open: true };
    }
    const line = data.subarray(pos, lf + 1);
    if (line.length === 2 && line[0] === 13) {
      close();
      return { fields, bodyStart: lf + 1, blankLine: true, open: false };
    }
    if ((line[0] === 32 || line[0] === 9) && current) {
      current.end = lf + 1;
      pos = lf + 1;
      continue;
    }
    const colon = line.indexOf(58);
    const name = colon > 0 ? line.subarray(0, colon).toString('latin1') : '';
    if (!name || !FIELD_NAME.test(name)) {
      close();
      return { fields, bodyStart: pos, blankLine: false, open: false };
    }
    close();
    current = { start: pos, end: lf + 1, name };
    pos = lf + 1;
  }
  close();
  return { fields, bodyStart: pos, blankLine: false, open: true };
}

/** headerValues - the unfolded values of every field with this (case-insensitive) name. */
export function headerValues(fields: readonly HeaderField[], name: string): string[] {
  const key = name.toLowerCase();
  return fields.filter((f) => f.key === key).map((f) => f.value);
}

/** hasHeader - true when a field with this name is present. */
export function hasHeader(fields: readonly HeaderField[], name: string): boolean {
  const key = name.toLowerCase();
  return fields.some((f) => f.key === key);
}
