/*
 * delivery/smtp/body - DotEncoder: turns stored message octets into the DATA
 * stream, chunk by chunk, never holding more than one chunk.
 *
 * Invariants:
 * - a line that starts with "." gets a second "." (RFC 5321 §4.5.2);
 * - lines go out as they are stored: lines over 998 octets were wrapped at
 *   enqueue (dkim/line-wrap), before any DKIM signature, so nothing here
 *   changes a signed message (a wrap here broke every body hash). The one
 *   kind of message stored with longer lines - signed before it reached
 *   Petrel - keeps them, so that its signature stays valid;
 * - bare LF and bare CR become CRLF (RFC 5321 §2.3.8: a client sends CR and
 *   LF only as CRLF). The queue stores CRLF already; this makes the wire safe
 *   whatever the store holds, so a stored "<CR>.<CR>" can never reach the next
 *   hop as a fake end of data (SMTP smuggling); the data ends with CRLF "." CRLF.
 *
 * Untrusted input: the message octets (they came from a client).
 */

const CR = 13;
const LF = 10;
const DOT = 46;
/** Longest line, CRLF not counted (RFC 5321 §4.5.3.1.6); enforced at enqueue (dkim/line-wrap). */
export const MAX_LINE = 998;

const CRLF = Buffer.from('\r\n');
const DOT_BUF = Buffer.from('.');
const END = Buffer.from('.\r\n');
const CRLF_END = Buffer.from('\r\n.\r\n');

export class DotEncoder {
  /** Octets of the current wire line sent so far. */
  private lineLen = 0;
  /** The previous chunk ended with CR: its meaning depends on the next octet. */
  private pendingCR = false;
  private parts: Buffer[] = [];

  /** encode - the wire form of one chunk (may be empty). */
  encode(chunk: Buffer): Buffer {
    const parts = this.parts;
    const n = chunk.length;
    let i = 0;
    if (this.pendingCR && n > 0) {
      // The chunk before ended with CR: CR LF, or a bare CR; both end the line.
      this.pendingCR = false;
      parts.push(CRLF);
      this.lineLen = 0;
      if (chunk[0] === LF) i = 1;
    }
    // Next CR and LF at or after i (found once each, not per line: O(n) for any mix).
    let cr = chunk.indexOf(CR, i);
    let lf = chunk.indexOf(LF, i);
    while (i < n) {
      if (cr >= 0 && cr < i) cr = chunk.indexOf(CR, i);
      if (lf >= 0 && lf < i) lf = chunk.indexOf(LF, i);
      if (cr >= 0 && (lf < 0 || cr < lf)) {
        this.content(chunk, i, cr);
        if (cr + 1 === n) {
          // Is it CR LF or a bare CR? The next chunk says.
          this.pendingCR = true;
          i = n;
          break;
        }
        parts.push(CRLF);
        this.lineLen = 0;
        i = chunk[cr + 1] === LF ? cr + 2 : cr + 1;
      } else if (lf >= 0) {
        this.content(chunk, i, lf);
        parts.push(CRLF);
        this.lineLen = 0;
        i = lf + 1;
      } else {
        this.content(chunk, i, n);
        i = n;
      }
    }
    return this.flush();
  }

  /** end - what closes the data: a CRLF if the last line was not ended, then ".\r\n". */
  end(): Buffer {
    if (this.pendingCR || this.lineLen > 0) {
      this.pendingCR = false;
      this.lineLen = 0;
      return CRLF_END;
    }
    return END;
  }

  /** content - append line octets [s, e) of buf, stuffing a leading dot. */
  private content(buf: Buffer, s: number, e: number): void {
    if (s >= e) return;
    if (this.lineLen === 0 && buf[s] === DOT) {
      this.parts.push(DOT_BUF);
      this.lineLen = 1;
    }
    this.parts.push(buf.subarray(s, e));
    this.lineLen += e - s;
  }

  private flush(): Buffer {
    const parts = this.parts;
    if (parts.length === 0) return Buffer.alloc(0);
    const out = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    this.parts = [];
    return out;
  }
}

/**
 * wireReady - whether `message` already is its own wire form: lines end in
 * CRLF (the last one too), no bare CR or LF, no line starts with ".". The store keeps CRLF, so most messages are; then
 * the octets go out as they are, followed by ".\r\n", with no copy.
 */
export function wireReady(message: Buffer): boolean {
  const n = message.length;
  if (n < 2 || message[n - 1] !== LF || message[n - 2] !== CR) return false;
  // Line by line with memchr (indexOf): a few native calls a line, not a JS step an octet.
  let cr = message.indexOf(CR);
  for (let start = 0; start < n; ) {
    if (message[start] === DOT) return false;
    const lf = message.indexOf(LF, start); // found: the message ends with LF
    // The line's first CR must be the one just before its LF (no bare CR, no bare LF).
    if (cr !== lf - 1) return false;
    start = lf + 1;
    cr = start < n ? message.indexOf(CR, start) : -1;
  }
  return true;
}

/** DATA_END - what follows a wireReady message on the wire. */
export const DATA_END: Buffer = END;

/** encodeAll - the whole wire form of a message held in memory (tests, small bodies). */
export function encodeAll(message: Buffer): Buffer {
  const enc = new DotEncoder();
  return Buffer.concat([enc.encode(message), enc.end()]);
}
