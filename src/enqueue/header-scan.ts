/*
 * enqueue/header-scan - reads the header section of a message as it streams
 * past, without holding it: counts Received: headers (loop detection, RFC
 * 5321 §6.3), finds Message-ID and Subject, and adds a Message-ID when the
 * message has none (at the end of the header section, so nothing is held).
 * It also reads the first TLS-Required: header field (RFC 8689 §5): its
 * only defined value is "No" (case-insensitive); anything else means
 * nothing.
 *
 * Input is already normalised to CR LF line ends (inbound/data-reader, or the
 * pickup reader). Untrusted: header names and values are only compared and
 * copied (bounded) for display, never interpreted further.
 */

const MAX_PARTIAL = 64 * 1024;
const MAX_VALUE = 998;

export class HeaderScanner {
  private inHeaders = true;
  private partial: Buffer[] = [];
  private partialLen = 0;
  /** The current line was too long to hold: its start was passed through already. */
  private longLine = false;
  private current: 'message-id' | 'subject' | 'tls-required' | null = null;
  /** The first TLS-Required: field's value (bounded), null when there is none. */
  private tlsRequired: string | null = null;
  received = 0;
  messageId = '';
  subject = '';
  /** True when the message had no Message-ID and one was added. */
  added = false;
  /** A Date: header was seen. */
  private hasDate = false;
  /** Octets of the header section seen so far. */
  headerBytes = 0;
  /** Where in the current chunk the header section ended (its length while it goes on). */
  private headerEnd = 0;

  /**
   * @param makeMessageId - a new Message-ID when the message has none
   * @param makeDate - a Date: value when the message has none (submission fix-ups, RFC 6409 §8.3); null adds no Date:
   */
  constructor(
    private readonly makeMessageId: () => string,
    private readonly makeDate: (() => string) | null = null,
  ) {}

  /** tlsRequiredNo - the message carries "TLS-Required: No" (RFC 8689 §5). */
  get tlsRequiredNo(): boolean {
    return this.tlsRequired !== null && this.tlsRequired.trim().toLowerCase() === 'no';
  }

  /** push - returns the octets to store for this chunk (in order). */
  push(chunk: Buffer): Buffer[] {
    if (!this.inHeaders) return [chunk];
    this.headerEnd = chunk.length;
    const out = this.pushHeaders(chunk);
    // Count what belonged to the header section: all of the chunk while still
    // in headers, else up to the line that ended it (the chunk that ends the
    // header section counts too — often it is the only one).
    this.headerBytes += this.headerEnd;
    return out;
  }

  private pushHeaders(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    let start = 0;
    for (;;) {
      const lf = chunk.indexOf(10, start);
      if (lf < 0) break;
      const piece = chunk.subarray(start, lf + 1);
      start = lf + 1;
      let line: Buffer;
      if (this.partialLen) {
        this.partial.push(piece);
        line = Buffer.concat(this.partial, this.partialLen + piece.length);
        this.partial = [];
        this.partialLen = 0;
      } else line = piece;
      const wasLong = this.longLine;
      this.longLine = false;
      if (wasLong) {
        out.push(line); // the rest of an over-long line: content, already classified
        continue;
      }
      this.line(line, out);
      if (!this.inHeaders) {
        this.headerEnd = start;
        if (start < chunk.length) out.push(chunk.subarray(start));
        return out;
      }
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      if (this.partialLen + rest.length > MAX_PARTIAL) {
        // A header line this long is not inspected further; pass it on as is.
        if (!this.longLine) {
          const held = Buffer.concat([...this.partial, rest]);
          this.partial = [];
          this.partialLen = 0;
          if (this.classify(held)) {
            out.push(held);
            this.longLine = true;
          } else {
            this.endHeaders(out);
            this.headerEnd = start;
            out.push(Buffer.from('\r\n'), held);
          }
        } else out.push(rest);
      } else {
        this.partial.push(Buffer.from(rest));
        this.partialLen += rest.length;
      }
    }
    return out;
  }

  /** finish - end of message: flush what is held; add Message-ID if the header section never ended. */
  finish(): Buffer[] {
    const out: Buffer[] = [];
    if (this.partialLen) {
      out.push(Buffer.concat(this.partial, this.partialLen));
      this.partial = [];
      this.partialLen = 0;
    }
    if (this.inHeaders) {
      this.inHeaders = false;
      const id = this.injection();
      if (id) out.unshift(id);
    }
    return out;
  }

  private injection(): Buffer | null {
    let text = '';
    if (!this.hasDate && this.makeDate) text += `Date: ${this.makeDate()}\r\n`;
    if (!this.messageId) {
      this.messageId = this.makeMessageId();
      this.added = true;
      text += `Message-ID: ${this.messageId}\r\n`;
    }
    return text ? Buffer.from(text) : null;
  }

  /** classify - note what a header line (start) is; returns false for a non-header line. */
  private classify(line: Buffer): boolean {
    const first = line[0];
    if (first === 32 || first === 9) {
      // Folded continuation of the current header.
      if (this.current) this.append(line.toString('latin1').trim());
      return true;
    }
    const colon = line.indexOf(58);
    if (colon <= 0) return false;
    const name = line.subarray(0, colon).toString('latin1');
    if (!/^[\x21-\x39\x3b-\x7e]+$/.test(name)) return false;
    const lower = name.toLowerCase();
    this.current = null;
    if (lower === 'received') this.received++;
    else if (lower === 'date') this.hasDate = true;
    else if (lower === 'message-id' && !this.messageId) {
      this.current = 'message-id';
      this.append(line.subarray(colon + 1).toString('utf8').trim());
    } else if (lower === 'tls-required' && this.tlsRequired === null) {
      this.current = 'tls-required';
      this.tlsRequired = '';
      this.append(line.subarray(colon + 1).toString('latin1').trim());
    } else if (lower === 'subject' && !this.subject) {
      this.current = 'subject';
      this.append(line.subarray(colon + 1).toString('utf8').trim());
    }
    return true;
  }

  private append(text: string): void {
    if (this.current === 'message-id') this.messageId = (this.messageId ? `${this.messageId}${text}` : text).slice(0, MAX_VALUE);
    else if (this.current === 'subject') this.subject = (this.subject ? `${this.subject} ${text}` : text).slice(0, MAX_VALUE);
    else if (this.current === 'tls-required') this.tlsRequired = `${this.tlsRequired ?? ''} ${text}`.slice(0, 100);
  }

  private line(line: Buffer, out: Buffer[]): void {
    const isBlank = line.length === 2 && line[0] === 13;
    if (isBlank) {
      this.inHeaders = false;
      const id = this.injection();
      if (id) out.push(id);
      out.push(line);
      return;
    }
    if (this.classify(line)) {
      out.push(line);
      return;
    }
    // A line that is not a header ends the header section: add what is missing
    // and the empty line a header section must end with (as Postfix's cleanup does).
    this.endHeaders(out);
    out.push(Buffer.from('\r\n'), line);
  }

  private endHeaders(out: Buffer[]): void {
    this.inHeaders = false;
    const id = this.injection();
    if (id) out.push(id);
  }
}
