/*
 * dkim/line-wrap - wraps lines over 998 octets as a message is enqueued
 * (RFC 5321 §4.5.3.1.6, RFC 5322 §2.1.1), so that the stored message is the
 * one relayed: nothing changes a message after it is signed (by Petrel at
 * enqueue, dkim/signer, or by anyone before). Until DKIM signing this was
 * done as the message went out (delivery/smtp/body), which broke every body
 * hash of a message with a long line.
 *
 * What is wrapped, and why:
 * - a header line is folded before a space or tab (CR LF inserted, nothing
 *   else): relaxed header canonicalisation (RFC 6376 §3.4.2) unfolds and
 *   compresses white space, so a relaxed signature made before, by anyone,
 *   stays valid. A long run with no white space at all is broken with
 *   CR LF SP, unless the message is already signed by someone else;
 * - a body line is broken with CR LF SP at 998 octets (never inside a UTF-8
 *   sequence when it can be avoided). That changes the body hash, so a
 *   message that arrives with a DKIM-Signature field keeps its body lines as
 *   they are: its signer signed them (RFC 6376 §5.3 asks signers to encode
 *   long lines; most receivers accept up to 2 KB or more), and wrapping would
 *   turn a valid signature into a failing one - and DMARC then rejects
 *   the message. This is the one case where a line over 998 octets leaves
 *   Petrel (docs/dkim.md).
 *
 * It also notes, on the way, what signing needs: the From: field's domain,
 * and whether the message was signed before.
 *
 * Invariants: output = input with only CR LF or CR LF SP inserted; memory is
 * one header line (up to MAX_HELD, beyond it folded as it goes) and nothing
 * for the body. The body is searched a window of MAX_LINE octets at a time
 * (one lastIndexOf), line by line only where a line may be too long; a
 * differential test holds it to the line-by-line reference (`{ fastPath:
 * false }`) for any input cut any way.
 *
 * Untrusted input: the message octets.
 */

/** Longest line, CR LF not counted (RFC 5321 §4.5.3.1.6). */
export const MAX_LINE = 998;
/** Header line octets held to find a fold point; a longer line is folded as it streams. */
const MAX_HELD = 64 * 1024;
/** From: octets kept to find its domain. */
const MAX_FROM = 4096;

const CR = 13;
const LF = 10;
const CRLF = Buffer.from('\r\n');
const CRLF_SP = Buffer.from('\r\n ');

export class LineWrapper {
  private inHeader = true;
  /** The header line being gathered (no LF yet). */
  private held: Buffer[] = [];
  private heldLen = 0;
  /** The held header line continues a CR LF SP break: its output line has one octet already. */
  private heldLead = 0;
  /** Body: octets of the current line written so far. */
  private lineLen = 0;
  /** A chunk ended with CR: it goes in front of the next one (CR LF is then never split). */
  private carryCR = false;
  /** The current header field is From:. */
  private inFrom = false;
  private fromText = '';
  /** The message came with a DKIM-Signature field. */
  signedBefore = false;
  /** Lines wrapped so far (for traces and tests). */
  wrapped = 0;
  /** false: the body line by line only (the reference the window jump is tested against). */
  private readonly fastPath: boolean;

  constructor(options: { fastPath?: boolean } = {}) {
    this.fastPath = options.fastPath ?? true;
  }

  /** fromDomain - the domain of the From: field's first address, lower case; '' when there is none. */
  get fromDomain(): string {
    return fromDomain(this.fromText);
  }

  /** push - the octets to store for this chunk (in order). */
  push(input: Buffer): Buffer[] {
    let chunk = input;
    if (this.carryCR) {
      chunk = Buffer.concat([CRLF.subarray(0, 1), chunk]);
      this.carryCR = false;
    }
    if (chunk.length && chunk[chunk.length - 1] === CR) {
      chunk = chunk.subarray(0, chunk.length - 1);
      this.carryCR = true;
    }
    const out: Buffer[] = [];
    let start = 0;
    while (start < chunk.length) {
      if (this.inHeader) start = this.headerPart(chunk, start, out);
      else {
        this.body(chunk, start, out);
        break;
      }
    }
    return out;
  }

  /** finish - end of message: what is still held. */
  finish(): Buffer[] {
    const out: Buffer[] = [];
    if (this.heldLen) this.headerLine(Buffer.concat(this.held, this.heldLen), out, true);
    this.held = [];
    this.heldLen = 0;
    if (this.carryCR) out.push(CRLF.subarray(0, 1));
    this.carryCR = false;
    return out;
  }

  private headerPart(chunk: Buffer, start: number, out: Buffer[]): number {
    const lf = chunk.indexOf(LF, start);
    if (lf < 0) {
      const rest = chunk.subarray(start);
      this.held.push(Buffer.from(rest));
      this.heldLen += rest.length;
      if (this.heldLen > MAX_HELD) {
        // A very long header line: fold what is held, keep its last piece.
        const line = Buffer.concat(this.held, this.heldLen);
        this.held = [this.headerLine(line, out, false)];
        this.heldLen = this.held[0]!.length;
      }
      return chunk.length;
    }
    let line = chunk.subarray(start, lf + 1);
    if (this.heldLen) {
      line = Buffer.concat([...this.held, line]);
      this.held = [];
      this.heldLen = 0;
    }
    if (line.length === 2 && line[0] === CR) {
      // The blank line: the body follows.
      this.inHeader = false;
      out.push(line);
      return lf + 1;
    }
    this.note(line);
    this.headerLine(line, out, true);
    return lf + 1;
  }

  /** note - what signing needs from a header line: the From: field, an earlier DKIM-Signature. */
  private note(line: Buffer): void {
    const first = line[0];
    if (first === 32 || first === 9) {
      if (this.inFrom && this.fromText.length < MAX_FROM) this.fromText += line.toString('latin1');
      return;
    }
    const colon = line.indexOf(58);
    const name = colon > 0 ? line.subarray(0, colon).toString('latin1').trim().toLowerCase() : '';
    this.inFrom = name === 'from' && this.fromText === '';
    if (this.inFrom) this.fromText = line.subarray(colon + 1, colon + 1 + MAX_FROM).toString('latin1');
    if (name === 'dkim-signature') this.signedBefore = true;
  }

  /**
   * headerLine - write a header line, folded before white space so that no
   * piece is longer than MAX_LINE. With `complete` false the line goes on in
   * the next chunk: its last piece is returned (not written), to go on with.
   */
  private headerLine(line: Buffer, out: Buffer[], complete: boolean): Buffer {
    // Content without its CR LF.
    let end = line.length;
    if (complete && end && line[end - 1] === LF) end--;
    if (complete && end && line[end - 1] === CR) end--;
    if (this.heldLead + end <= MAX_LINE) {
      this.heldLead = complete ? 0 : this.heldLead;
      if (complete) out.push(line);
      return complete ? Buffer.alloc(0) : line;
    }
    let s = 0;
    // Octets already on the current output line before line[s] (the SP of a CR LF SP break).
    let lead = this.heldLead;
    while (lead + end - s > MAX_LINE) {
      const room = MAX_LINE - lead;
      // The last space or tab at which the piece would be at most `room` octets (not at s: the piece would be empty).
      let cut = -1;
      for (let i = s + room; i > s; i--) {
        const c = line[i];
        if (c === 32 || c === 9) {
          cut = i;
          break;
        }
      }
      if (cut > 0) {
        out.push(line.subarray(s, cut), CRLF);
        this.wrapped++;
        s = cut;
        lead = 0;
      } else if (!this.signedBefore) {
        const at = utf8Boundary(line, s, s + room);
        out.push(line.subarray(s, at), CRLF_SP);
        this.wrapped++;
        s = at;
        lead = 1;
      } else break; // no white space, and someone's signature covers it: left as it is
    }
    if (!complete) {
      this.heldLead = lead;
      return Buffer.from(line.subarray(s));
    }
    this.heldLead = 0;
    out.push(line.subarray(s));
    return Buffer.alloc(0);
  }

  private body(chunk: Buffer, start: number, out: Buffer[]): void {
    if (this.signedBefore) {
      out.push(start ? chunk.subarray(start) : chunk);
      return;
    }
    let s = start;
    let pieceStart = start;
    const n = chunk.length;
    while (s < n) {
      if (this.fastPath) {
        // Window jump: the line going on at s ends within its room if an LF
        // lies there, and every line after it that ends by the last such LF
        // is shorter than the window (at most MAX_LINE): nothing up to that
        // LF needs a break. One search per window, not one per line (about
        // 13 lines of 74-78 octets a window).
        const last = chunk.lastIndexOf(LF, Math.min(s + MAX_LINE - this.lineLen, n - 1));
        if (last >= s) {
          this.lineLen = 0;
          s = last + 1;
          continue;
        }
      }
      const lf = chunk.indexOf(LF, s);
      // Content of this line in the chunk: up to its CR LF (a bare LF ends a line too).
      const end = lf < 0 ? n : lf > s && chunk[lf - 1] === CR ? lf - 1 : lf;
      let room = MAX_LINE - this.lineLen;
      while (end - s > room) {
        const at = utf8Boundary(chunk, s, s + room);
        out.push(chunk.subarray(pieceStart, at), CRLF_SP);
        this.wrapped++;
        this.lineLen = 1;
        s = at;
        pieceStart = at;
        room = MAX_LINE - 1;
      }
      if (lf < 0) {
        this.lineLen += end - s;
        s = n;
      } else {
        this.lineLen = 0;
        s = lf + 1;
      }
    }
    if (pieceStart < n) out.push(pieceStart === 0 ? chunk : chunk.subarray(pieceStart));
  }
}

/** utf8Boundary - `at`, moved back (at most 3 octets, never to `s`) so that it does not fall inside a UTF-8 sequence. */
function utf8Boundary(buf: Buffer, s: number, at: number): number {
  let c = at;
  for (let k = 0; k < 3 && c > s + 1 && (buf[c]! & 0xc0) === 0x80; k++) c--;
  return (buf[c]! & 0xc0) === 0x80 ? at : c;
}

/** fromDomain - the domain of the first address in a From: value ('' when none is found). */
export function fromDomain(value: string): string {
  const text = value.replace(/\r?\n/g, '');
  const angle = /<\s*[^<>@\s]*@([^<>\s]+?)\s*>/.exec(text);
  const bare = angle ?? /[^\s<>@",;:()]+@([A-Za-z0-9.\-[\]]+)/.exec(text);
  return bare ? bare[1]!.toLowerCase().replace(/\.$/, '') : '';
}
