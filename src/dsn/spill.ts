/*
 * dsn/spill - bounded buffers for a report being built: a Spill keeps what
 * is appended to it in memory up to a threshold and moves it to a scratch
 * file beyond that; a Batch gathers small pieces of output into large writes.
 *
 * Why: a report lists its recipients twice (the human part, then the
 * machine part) and groups them by what happened, but reads them only once.
 * Each section is appended to its own Spill while the recipients stream by
 * and copied out in order at the end, so memory holds at most one threshold
 * per section, whatever the number of recipients (seed 000: no fixed-size
 * table, no report too big to build).
 *
 * Invariants:
 * - memory held by a Spill is at most its threshold plus one pending text
 *   batch (TEXT_BATCH characters) and its encoding buffer; everything else
 *   is on disk;
 * - drain() yields the octets exactly in the order they were appended;
 * - scratch files live in one private directory (mode 0700, made by
 *   mkdtemp) created only when a Spill first overflows, and Scratch.dispose()
 *   removes it, whatever happened.
 *
 * Untrusted input: none interpreted; octets are stored and copied as given.
 *
 * RFCs: none (storage only); what is stored follows dsn/build.
 */
import { mkdtemp, open, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';

/** Per-Spill memory before it moves to disk: small enough that ~30 sections stay far under 100 MB. */
export const SPILL_THRESHOLD = 256 * 1024;
/** Characters of text gathered before they are turned into one Buffer. */
const TEXT_BATCH = 64 * 1024;
/** Size of the reads that copy a scratch file out, and of the writes a Batch makes: few calls, little memory. */
const IO_CHUNK = 256 * 1024;

/** Scratch - the private directory where Spills overflow; made lazily. */
export class Scratch {
  private dir: string | null = null;
  private making: Promise<string> | null = null;
  private count = 0;

  constructor(private readonly parent: string) {}

  /** file - a new empty scratch file, open for reading and writing. */
  async file(): Promise<FileHandle> {
    if (!this.dir) {
      this.making ??= mkdtemp(join(this.parent, 'petrel-dsn-'));
      this.dir = await this.making;
    }
    return open(join(this.dir, `s${this.count++}`), 'w+', 0o600);
  }

  /** used - true once a scratch file was made (tests check small reports stay in memory). */
  get used(): boolean {
    return this.making !== null;
  }

  async dispose(): Promise<void> {
    const dir = this.dir ?? (this.making ? await this.making.catch(() => null) : null);
    this.dir = null;
    this.making = null;
    if (dir) await rm(dir, { recursive: true, force: true });
  }
}

/** Spill - an append-only buffer of octets, in memory up to a threshold, then in a scratch file. */
export class Spill {
  /** Octets appended so far. */
  size = 0;
  /** True once any octet >= 0x80 was appended. */
  eightBit = false;
  private text: string[] = [];
  private textLength = 0;
  private chunks: Buffer[] = [];
  private memory = 0;
  private fh: FileHandle | null = null;
  private fileSize = 0;
  /** Reused to encode text on its way to disk, so spilling allocates nothing per batch. */
  private encoded: Buffer | null = null;

  constructor(
    private readonly scratch: Scratch,
    private readonly threshold = SPILL_THRESHOLD,
  ) {}

  /** append - add text, as UTF-8. */
  async append(text: string): Promise<void> {
    if (!this.eightBit && /[^\x00-\x7f]/.test(text)) this.eightBit = true;
    this.size += Buffer.byteLength(text, 'utf8');
    this.text.push(text);
    this.textLength += text.length;
    if (this.textLength >= TEXT_BATCH) await this.settleText();
  }

  /** bytes - add octets as they are (the Spill may keep `chunk`: do not reuse it). */
  async bytes(chunk: Buffer): Promise<void> {
    await this.settleText();
    if (chunk.length === 0) return;
    if (!this.eightBit && chunk.some((b) => b >= 0x80)) this.eightBit = true;
    this.size += chunk.length;
    if (!this.fh && this.memory + chunk.length < this.threshold) {
      this.chunks.push(chunk);
      this.memory += chunk.length;
      return;
    }
    await this.toDisk();
    await this.writeAll(chunk, chunk.length);
  }

  private async settleText(): Promise<void> {
    if (this.textLength === 0) return;
    const joined = this.text.length === 1 ? this.text[0]! : this.text.join('');
    this.text = [];
    this.textLength = 0;
    const n = Buffer.byteLength(joined, 'utf8');
    if (!this.fh && this.memory + n < this.threshold) {
      this.chunks.push(Buffer.from(joined, 'utf8'));
      this.memory += n;
      return;
    }
    await this.toDisk();
    if (!this.encoded || this.encoded.length < n) this.encoded = Buffer.allocUnsafe(Math.max(n, 3 * TEXT_BATCH + 4));
    const written = this.encoded.write(joined, 0, 'utf8');
    await this.writeAll(this.encoded, written);
  }

  /** toDisk - from now on everything goes to the scratch file; what memory holds goes first. */
  private async toDisk(): Promise<void> {
    this.fh ??= await this.scratch.file();
    const held = this.chunks;
    this.chunks = [];
    this.memory = 0;
    for (const c of held) await this.writeAll(c, c.length);
  }

  private async writeAll(data: Buffer, length: number): Promise<void> {
    let done = 0;
    while (done < length) {
      const { bytesWritten } = await this.fh!.write(data, done, length - done, this.fileSize + done);
      done += bytesWritten;
    }
    this.fileSize += length;
  }

  /** drain - copy everything appended, in order, to `out`. */
  async drain(out: (chunk: Buffer) => Promise<void>): Promise<void> {
    await this.settleText();
    if (!this.fh) {
      for (const c of this.chunks) await out(c);
      return;
    }
    for (let pos = 0; pos < this.fileSize; ) {
      // A fresh buffer each time: `out` may keep it (a memory-backed body writer does).
      const buf = Buffer.allocUnsafeSlow(Math.min(IO_CHUNK, this.fileSize - pos));
      const { bytesRead } = await this.fh.read(buf, 0, buf.length, pos);
      if (bytesRead === 0) throw new Error(`scratch file ended at ${pos} of ${this.fileSize} octets`);
      await out(bytesRead === buf.length ? buf : buf.subarray(0, bytesRead));
      pos += bytesRead;
    }
  }

  /** reset - forget everything (used when a copy of the original is abandoned). */
  async reset(): Promise<void> {
    await this.dispose();
    this.text = [];
    this.textLength = 0;
    this.chunks = [];
    this.memory = 0;
    this.size = 0;
    this.fileSize = 0;
    this.eightBit = false;
  }

  async dispose(): Promise<void> {
    const fh = this.fh;
    this.fh = null;
    if (fh) await fh.close();
  }
}

/** Batch - gathers small writes into chunks of about IO_CHUNK octets for `write`. */
export class Batch {
  /** Octets written through this batch. */
  size = 0;
  private chunks: Buffer[] = [];
  private pending = 0;

  constructor(private readonly write: (chunk: Buffer) => Promise<void>) {}

  async text(text: string): Promise<void> {
    await this.bytes(Buffer.from(text, 'utf8'));
  }

  async bytes(chunk: Buffer): Promise<void> {
    if (chunk.length === 0) return;
    this.size += chunk.length;
    if (this.pending === 0 && chunk.length >= IO_CHUNK) return this.write(chunk);
    this.chunks.push(chunk);
    this.pending += chunk.length;
    if (this.pending >= IO_CHUNK) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.pending === 0) return;
    const data = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.pending);
    this.chunks = [];
    this.pending = 0;
    await this.write(data);
  }
}
