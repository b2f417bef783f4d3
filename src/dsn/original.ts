/*
 * dsn/original - copies the message a report is about into the report's
 * third part: its header section (text/rfc822-headers, RFC 3462 §2) or, with
 * RET=FULL, the whole message (message/rfc822), read as a stream.
 *
 * Invariants:
 * - bounded work: with only the headers, reading stops at the first empty
 *   line or after HEADERS_LIMIT octets of header fields, whichever comes
 *   first, even if the stored header section is 50 MB; with the whole
 *   message, reading stops as soon as more than `limit` octets were read
 *   (the caller then falls back to the headers);
 * - only complete header fields are copied: a cut never leaves half a field;
 * - every line written is at most 998 octets (a longer one is wrapped with
 *   CRLF + space, as Petrel does when relaying, CONTRACT "Inbound"), ends in
 *   CRLF, and holds no NUL or bare CR; header lines hold no control
 *   character but TAB;
 * - in the header section only field lines and their continuations are kept
 *   (a line that is neither could end the header block early in a reader);
 * - no line copied starts with "--" + boundary: if the original holds one,
 *   the copy stops with "collision" and the caller picks another boundary.
 *
 * Untrusted input: all of the original message (written by its sender).
 *
 * RFCs: 5322 §2.1.1, §2.2 (lines, fields), 2046 §5.1.1 (boundary), 3462 §2
 * and 3464 §2 (returned content), 6533 §6.3 (message/global-headers).
 */
import type { Readable } from 'node:stream';
import { MAX_LINE } from './mime.js';
import type { Spill } from './spill.js';

/**
 * The most of an original's header section returned. An honest header
 * section, even after thirty relays, is a few KB; 64 KB keeps the report
 * small enough for the receiving side while never cutting a real one.
 */
export const HEADERS_LIMIT = 64 * 1024;

export type CopyMode = 'full' | 'headers';

export interface CopyOptions {
  open: () => Promise<Readable>;
  mode: CopyMode;
  /** For "full": the most octets of original that may be returned. */
  limit: number;
  boundary: string;
  /** Where the copy goes (CRLF lines). */
  into: Spill;
}

export type CopyResult =
  /** Copied; `truncated` when the header section was cut at the cap. */
  | { status: 'ok'; truncated: boolean }
  /** "full" only: the original is larger than `limit`; nothing usable was copied. */
  | { status: 'too-big' }
  /** A line of the original starts with "--" + boundary; nothing usable was copied. */
  | { status: 'collision' };

const CRLF = Buffer.from('\r\n');
const SPACE = Buffer.from(' ');
// ftext (RFC 5322 §3.6.8): printable ASCII but ":"; a field line is "name:".
const FIELD_NAME = /^[\x21-\x39\x3b-\x7e]+:/;

class Stop {
  constructor(readonly result: CopyResult) {}
}

/** cleanBytes - drop NUL and CR (body), or every control octet but TAB (header). */
function cleanBytes(buf: Buffer, header: boolean): Buffer {
  let keep = true;
  for (const b of buf) {
    if (b === 0x00 || b === 0x0d || (header && ((b < 0x20 && b !== 0x09) || b === 0x7f))) {
      keep = false;
      break;
    }
  }
  if (keep) return buf;
  const out = Buffer.allocUnsafe(buf.length);
  let n = 0;
  for (const b of buf) {
    if (b === 0x00 || b === 0x0d || (header && ((b < 0x20 && b !== 0x09) || b === 0x7f))) continue;
    out[n++] = b;
  }
  return out.subarray(0, n);
}

/** Copier - the line state machine: raw chunks in, clean bounded lines out. */
class Copier {
  private phase: 'header' | 'body' = 'header';
  /** Cleaned octets of the current line not yet emitted. */
  private pending: Buffer[] = [];
  private pendingLength = 0;
  /** 0 for a line's first segment, then 1, 2... for its wrapped continuations. */
  private segment = 0;
  /** Octets of the current raw line other than CR (0 means an empty line). */
  private rawLength = 0;
  /** The current header line is being dropped (not a field, or no field to continue). */
  private dropping = false;
  /** The header field being gathered (its lines), and its size with CRLFs. */
  private field: Buffer[] = [];
  private fieldSize = 0;
  private headerOctets = 0;
  private readOctets = 0;
  private readonly marker: Buffer;

  constructor(private readonly o: CopyOptions) {
    this.marker = Buffer.from(`--${o.boundary}`, 'latin1');
  }

  /** feed - one raw chunk; throws Stop when the copy is over. */
  async feed(chunk: Buffer): Promise<void> {
    this.readOctets += chunk.length;
    if (this.o.mode === 'full' && this.readOctets > this.o.limit) throw new Stop({ status: 'too-big' });
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      const span = chunk.subarray(start, nl < 0 ? chunk.length : nl);
      for (const b of span) if (b !== 0x0d) { this.rawLength++; break; }
      await this.take(cleanBytes(span, this.phase === 'header'));
      if (nl < 0) return;
      await this.endLine();
      start = nl + 1;
    }
  }

  /** end - the original ended (possibly without a final line break). */
  async end(): Promise<CopyResult> {
    if (this.pendingLength > 0 || this.segment > 0 || this.rawLength > 0) await this.endLine();
    if (this.phase === 'header') await this.flushField();
    return { status: 'ok', truncated: false };
  }

  private async take(clean: Buffer): Promise<void> {
    if (clean.length === 0) return;
    this.pending.push(clean);
    this.pendingLength += clean.length;
    // Emit full segments as soon as they exist, so a huge line needs no huge buffer.
    for (;;) {
      const room = MAX_LINE - (this.segment > 0 ? 1 : 0);
      if (this.pendingLength <= room) return;
      const all = Buffer.concat(this.pending, this.pendingLength);
      let cut = room;
      // Never cut inside a UTF-8 sequence (continuation octets are 10xxxxxx).
      while (cut > room - 3 && ((all[cut] ?? 0) & 0xc0) === 0x80) cut--;
      await this.emit(all.subarray(0, cut));
      this.pending = [all.subarray(cut)];
      this.pendingLength = all.length - cut;
    }
  }

  private async endLine(): Promise<void> {
    if (this.phase === 'header' && this.rawLength === 0) {
      // The empty line: the header section ends here.
      await this.flushField();
      if (this.o.mode === 'headers') throw new Stop({ status: 'ok', truncated: false });
      this.phase = 'body';
      await this.write(Buffer.alloc(0));
    } else {
      const rest = this.pendingLength ? Buffer.concat(this.pending, this.pendingLength) : Buffer.alloc(0);
      // A header line that cleaning emptied is dropped: an empty line would end the section.
      if (!(this.phase === 'header' && this.segment === 0 && rest.length === 0)) await this.emit(rest);
    }
    this.pending = [];
    this.pendingLength = 0;
    this.segment = 0;
    this.rawLength = 0;
    this.dropping = false;
  }

  /** emit - one output line (a line's first segment or a wrapped continuation). */
  private async emit(content: Buffer): Promise<void> {
    const first = this.segment === 0;
    this.segment++;
    const line = first ? content : Buffer.concat([SPACE, content]);
    if (this.phase === 'body') return this.write(line);
    if (first) {
      const head = line.subarray(0, MAX_LINE).toString('latin1');
      if (head.startsWith(' ') || head.startsWith('\t')) {
        this.dropping = this.field.length === 0;
      } else if (FIELD_NAME.test(head)) {
        await this.flushField();
        this.dropping = false;
      } else {
        this.dropping = true;
      }
    }
    if (this.dropping) return;
    this.field.push(line);
    this.fieldSize += line.length + 2;
    if (this.o.mode === 'headers' && this.headerOctets + this.fieldSize > HEADERS_LIMIT) throw new Stop({ status: 'ok', truncated: true });
  }

  private async flushField(): Promise<void> {
    for (const line of this.field) await this.write(line);
    this.headerOctets += this.fieldSize;
    this.field = [];
    this.fieldSize = 0;
  }

  private async write(line: Buffer): Promise<void> {
    if (line.length >= this.marker.length && line.subarray(0, this.marker.length).equals(this.marker)) throw new Stop({ status: 'collision' });
    await this.o.into.bytes(line);
    await this.o.into.bytes(CRLF);
  }
}

/**
 * copyOriginal - copy the original into `o.into` under the rules above.
 * Rejects when the original cannot be opened or read (the caller leaves the
 * third part out). On "too-big" or "collision" `o.into` holds a partial
 * copy the caller must reset.
 */
export async function copyOriginal(o: CopyOptions): Promise<CopyResult> {
  const stream = await o.open();
  const copier = new Copier(o);
  try {
    for await (const chunk of stream as AsyncIterable<Buffer | string>) {
      await copier.feed(typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk);
    }
    return await copier.end();
  } catch (e) {
    if (e instanceof Stop) return e.result;
    throw e;
  } finally {
    stream.destroy();
  }
}
