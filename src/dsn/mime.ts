/*
 * dsn/mime - the line-level tools the report writer is built on: cleaning
 * untrusted text, folding header fields, wrapping prose, dates, RFC 2047
 * encoded words and the MIME boundary.
 *
 * Invariants:
 * - every line these functions return is at most MAX_LINE (998) octets and
 *   holds no CR, LF or other control character, so a caller that joins them
 *   with CRLF can never produce an over-long line or a line break it did not
 *   mean (RFC 5322 §2.1.1, §2.2.3);
 * - a folded field's continuation lines start with a space, a wrapped prose
 *   line with its indent, so no line they make can start with "--" followed
 *   by the boundary unless the caller's own fixed text does.
 *
 * Untrusted input: whatever the caller passes (remote replies, addresses,
 * the original's subject); it is cleaned here, never interpreted.
 *
 * RFCs: 5322 (lines, folding, dates), 2045/2046 (boundary syntax),
 * 2047 (encoded words), 6532 (raw UTF-8 in headers of an SMTPUTF8 report).
 */
import { randomBytes } from 'node:crypto';

/** RFC 5322 §2.1.1: a line is at most 998 octets, CRLF excluded. */
export const MAX_LINE = 998;
/** Where folding and wrapping aim (RFC 5322 §2.1.1 "SHOULD be no more than 78"). */
export const SOFT_LINE = 78;

/**
 * cleanText - untrusted text to something that fits on a line: every run of
 * control characters (C0 including CR, LF, NUL and TAB; DEL; C1) becomes one
 * space, and the ends are trimmed.
 */
export function cleanText(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\x00-\x1f\x7f-\x9f]+/g, ' ').trim();
}

/** asciiText - non-ASCII characters become "?" (for parts that must be US-ASCII). */
export function asciiText(text: string): string {
  return text.replace(/[^\x00-\x7f]/gu, '?');
}

/** hasNonAscii - true when the text is not plain US-ASCII. */
export function hasNonAscii(text: string): boolean {
  return /[^\x00-\x7f]/.test(text);
}

/** octets - the UTF-8 length of a string. */
export function octets(text: string): number {
  return Buffer.byteLength(text, 'utf8');
}

/**
 * capText - cut text to at most `max` characters, marking the cut, so one
 * enormous remote reply cannot make a report of unbounded size.
 */
export function capText(text: string, max: number): string {
  if (text.length <= max) return text;
  return `${text.slice(0, max).replace(/[\ud800-\udbff]$/, '')} [...]`;
}

/**
 * splitByOctets - cut one word (no spaces to fold at) into pieces of at most
 * `max` octets, never inside a UTF-8 sequence.
 */
export function splitByOctets(word: string, max: number): string[] {
  // UTF-8 needs at most 3 octets per UTF-16 unit: short words need no counting.
  if (word.length * 3 <= max) return [word];
  const out: string[] = [];
  let piece = '';
  let size = 0;
  for (const ch of word) {
    const n = octets(ch);
    if (size + n > max && piece) {
      out.push(piece);
      piece = '';
      size = 0;
    }
    piece += ch;
    size += n;
  }
  if (piece || out.length === 0) out.push(piece);
  return out;
}

/**
 * foldField - "Name: value" folded at spaces (RFC 5322 §2.2.3): lines aim at
 * SOFT_LINE characters and never pass MAX_LINE octets; a word too long for
 * one line is cut (the only way to keep the hard limit). The value must
 * already be clean (cleanText); lines are joined with CRLF, no final CRLF.
 */
export function foldField(name: string, value: string): string {
  if (name.length + 2 + value.length <= SOFT_LINE && !/ {2}|^ | $/.test(value)) return `${name}: ${value}`;
  const lines: string[] = [];
  let line = `${name}:`;
  let lineOctets = octets(line);
  let empty = true; // nothing after the name (or the fold's space) yet
  for (const word of value.split(' ')) {
    if (word === '') continue;
    for (const piece of splitByOctets(word, MAX_LINE - 1)) {
      const n = octets(piece);
      const fits = lineOctets + 1 + n <= MAX_LINE;
      if (fits && (empty || line.length + 1 + piece.length <= SOFT_LINE)) {
        line += ` ${piece}`;
        lineOctets += 1 + n;
      } else {
        lines.push(line);
        line = ` ${piece}`;
        lineOctets = 1 + n;
      }
      empty = false;
    }
  }
  lines.push(line);
  return lines.join('\r\n');
}

/**
 * wrapText - prose to lines of at most `width` characters (a longer word
 * gets a line of its own, cut only at MAX_LINE octets), each starting with
 * `indent`; the first line may have its own indent (a label). Text must be
 * clean.
 */
export function wrapText(text: string, width: number, indent: string, firstIndent = indent): string[] {
  if (firstIndent.length + text.length <= width && text !== '' && !/ {2}|^ | $/.test(text)) return [firstIndent + text];
  const words = text.split(' ').filter((w) => w !== '');
  const lines: string[] = [];
  let prefix = firstIndent;
  let line = '';
  const flush = (): void => {
    lines.push(prefix + line);
    prefix = indent;
    line = '';
  };
  for (const word of words) {
    for (const piece of splitByOctets(word, MAX_LINE - octets(indent) - 8)) {
      if (line === '') line = piece;
      else if (prefix.length + line.length + 1 + piece.length <= width && octets(prefix + line) + 1 + octets(piece) <= MAX_LINE) line += ` ${piece}`;
      else {
        flush();
        line = piece;
      }
    }
  }
  if (line !== '' || lines.length === 0) flush();
  return lines;
}


/**
 * encodedWords - text as RFC 2047 "B" encoded words of at most 75 characters
 * (45 octets of UTF-8 each, never split inside a character), to be joined by
 * spaces and folded: for Subject: when the report cannot carry raw UTF-8.
 */
export function encodedWords(text: string): string[] {
  return splitByOctets(text, 45).map((piece) => `=?UTF-8?B?${Buffer.from(piece, 'utf8').toString('base64')}?=`);
}

/**
 * newBoundary - a fresh multipart boundary: a fixed "=_petrel-" (so no line
 * of the writer's own text, which never starts with "--=", can match) and
 * 128 random bits (so content made before the report, like the original,
 * cannot carry it except by a collision the writer checks for anyway).
 */
export function newBoundary(): string {
  return `=_petrel-${randomBytes(16).toString('hex')}`;
}

/** formatCount - 100000 -> "100,000". */
export function formatCount(n: number): string {
  return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

/** plural - "1 recipient", "2 recipients". */
export function plural(n: number, word: string): string {
  return `${formatCount(n)} ${word}${n === 1 ? '' : 's'}`;
}

/** formatSpan - a duration in words for people: "5 days", "4 hours", "1 day and 2 hours", "30 minutes". */
export function formatSpan(ms: number): string {
  const minute = 60_000;
  const hour = 60 * minute;
  const day = 24 * hour;
  const unit = (n: number, w: string): string => `${n} ${w}${n === 1 ? '' : 's'}`;
  if (ms >= day) {
    const d = Math.floor(ms / day);
    const h = Math.round((ms - d * day) / hour);
    if (h === 24) return unit(d + 1, 'day');
    return h ? `${unit(d, 'day')} and ${unit(h, 'hour')}` : unit(d, 'day');
  }
  if (ms >= hour) {
    const h = Math.floor(ms / hour);
    const m = Math.round((ms - h * hour) / minute);
    if (m === 60) return unit(h + 1, 'hour');
    return m ? `${unit(h, 'hour')} and ${unit(m, 'minute')}` : unit(h, 'hour');
  }
  return unit(Math.max(1, Math.round(ms / minute)), 'minute');
}

/** formatSize - 262144 -> "256 KB" (1024-based, as the configuration writes sizes). */
export function formatSize(n: number): string {
  if (n >= 1024 * 1024) return `${Math.round((n / (1024 * 1024)) * 10) / 10} MB`;
  if (n >= 1024) return `${Math.round((n / 1024) * 10) / 10} KB`;
  return `${n} octets`;
}
