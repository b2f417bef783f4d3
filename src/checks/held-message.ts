/*
 * checks/held-message - a message from outside, held back while it is
 * checked (SPF, DKIM, DMARC, ARC, rspamd) and written to the queue only once
 * the verdict is known, so that the headers the checks add
 * (Authentication-Results:, the filter's headers) go at the top of the stored
 * message and a refused message is never stored at all.
 *
 * Why hold it, and not check while it streams into the store: the results
 * depend on the whole message (DKIM body hashes, the filter's scan), the
 * headers that carry them must come first, and the store takes the body as
 * one stream that cannot be prepended to. Holding only small messages would
 * leave large ones unchecked; so every checked message is held, in memory up
 * to MEMORY_LIMIT and in a scratch file beyond that (not fsync'd: it is not
 * the accepted copy; a crash loses only a message that was not yet answered,
 * which the client still has).
 *
 * Invariants:
 * - at most `maxSize` octets are kept: beyond it everything is dropped and
 *   the message is refused 552 5.3.4, as enqueue would;
 * - memory per message is at most MEMORY_LIMIT, or the header section when
 *   that is longer (it stays in memory so that it can be rewritten; it is
 *   bounded by `headerLimit`, `[smtp] max_header_size`: beyond it the rest
 *   goes to the file and the message is refused at enqueue anyway);
 * - replay() yields exactly the octets written, in order, except for the
 *   header section, which the caller may rewrite (forged
 *   Authentication-Results: removed);
 * - dispose() deletes the scratch file whatever happened; the directory is
 *   private (0700) and emptied when the checks start (checks/inbound-checks).
 *
 * Untrusted input: the message octets (only stored and copied here).
 */
import { createReadStream } from 'node:fs';
import { mkdir, open, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { writeAll } from '../core/durable-fs.js';

/** Octets kept in memory before the rest goes to the scratch file: 256 KB covers most mail, and 1,000 sessions hold at most 256 MB. */
export const MEMORY_LIMIT = 256 * 1024;

const CRLF2 = Buffer.from('\r\n\r\n');
const READ_CHUNK = 256 * 1024;

export class HeldMessage {
  private readonly memory: Buffer[] = [];
  private memoryBytes = 0;
  private file: FileHandle | null = null;
  private path: string | null = null;
  /** The last three octets seen, for a header end split across chunks. */
  private tail = Buffer.alloc(0);
  /** Offset just after the blank line ending the header section; -1 until seen. */
  headerEnd = -1;
  size = 0;
  private disposed = false;

  /** More than `maxSize` octets arrived: nothing more is kept (the message will be refused 552). */
  oversize = false;

  constructor(
    private readonly scratchDir: string,
    private readonly headerLimit: number,
    /** Largest message kept ([smtp] max_message_size); 0 for no limit. */
    private readonly maxSize = 0,
    private readonly memoryLimit = MEMORY_LIMIT,
  ) {}

  /** write - append message octets (CR LF line ends, no dot-stuffing). */
  async write(chunk: Buffer): Promise<void> {
    if (chunk.length === 0 || this.disposed || this.oversize) return;
    if (this.maxSize && this.size + chunk.length > this.maxSize) {
      this.oversize = true;
      await this.dispose();
      this.disposed = false;
      return;
    }
    // The chunk that ends the header section stays in memory with the rest of it (it may be rewritten).
    const headerOpen = this.headerEnd < 0;
    if (headerOpen) this.findHeaderEnd(chunk);
    this.size += chunk.length;
    const keepInMemory = !this.file && (this.memoryBytes + chunk.length <= this.memoryLimit || (headerOpen && this.memoryBytes <= this.headerLimit));
    if (keepInMemory) {
      // A copy: the chunk may be a view of the session's input buffer.
      this.memory.push(Buffer.from(chunk));
      this.memoryBytes += chunk.length;
      return;
    }
    if (!this.file) {
      await mkdir(this.scratchDir, { recursive: true, mode: 0o700 });
      this.path = join(this.scratchDir, `${randomBytes(9).toString('hex')}.msg`);
      this.file = await open(this.path, 'w', 0o600);
    }
    await writeAll(this.file, chunk);
  }

  private findHeaderEnd(chunk: Buffer): void {
    const start = this.size;
    if (start === 0 && chunk.length >= 2 && chunk[0] === 13 && chunk[1] === 10) {
      // No header fields at all: the blank line is the first line.
      this.headerEnd = 2;
      return;
    }
    const joined = this.tail.length ? Buffer.concat([this.tail, chunk]) : chunk;
    const i = joined.indexOf(CRLF2);
    if (i >= 0) this.headerEnd = start - this.tail.length + i + 4;
    else this.tail = Buffer.from(joined.subarray(Math.max(0, joined.length - 3)));
  }

  /**
   * replay - the message again, from the start; `rewriteHeader` may replace
   * the header section (including its blank line) when it is held in memory.
   */
  async *replay(rewriteHeader?: (header: Buffer) => Buffer): AsyncGenerator<Buffer> {
    if (rewriteHeader) {
      let first = this.memory.length === 1 ? this.memory[0]! : Buffer.concat(this.memory, this.memoryBytes);
      if (this.headerEnd >= 0 && this.headerEnd <= first.length) {
        const header = rewriteHeader(first.subarray(0, this.headerEnd));
        if (header.length) yield header;
        first = first.subarray(this.headerEnd);
      }
      if (first.length) yield first;
    } else {
      // Nothing to rewrite: the pieces as they were kept, no copy.
      yield* this.memory;
    }
    if (this.path) {
      for await (const chunk of createReadStream(this.path, { highWaterMark: READ_CHUNK })) yield chunk as Buffer;
    }
  }

  /** dispose - forget the message and delete its scratch file. Safe to call twice. */
  async dispose(): Promise<void> {
    this.disposed = true;
    this.memory.length = 0;
    this.memoryBytes = 0;
    const file = this.file;
    const path = this.path;
    this.file = null;
    this.path = null;
    if (file) await file.close().catch(() => undefined);
    if (path) await rm(path, { force: true }).catch(() => undefined);
  }
}
