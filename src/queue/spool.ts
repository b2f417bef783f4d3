/*
 * queue/spool - message bodies on disk, written by the durability protocol:
 * temporary name -> fsync(file) -> rename into place -> fsync(directory).
 *
 * Small bodies never touch a file: they stay in memory while being received
 * and are committed inside the SQLite transaction with the envelope, so many
 * messages share one sync (group commit). A body that grows past `inlineMax`
 * spills to spool/tmp/ as it streams (memory per session stays bounded).
 *
 * Invariants: a body file under spool/<x>/ is complete and fsync'd before any
 * row references it; tmp/ holds only bodies not yet accepted (removed on
 * abort, swept at start); a body is only deleted when its message is finished.
 */
import { mkdir, open, rename, unlink, readdir, rm, type FileHandle } from 'node:fs/promises';
import { createReadStream, openSync, fsyncSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { BodyWriter } from './store.js';
import { fsyncDir, writeAll } from '../core/durable-fs.js';

/** The characters a queue id can end with (core/ids): one spool folder each. */
const QUEUE_ID_CHARS = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

/** Fault-injection seam for tests: called before each durable step. */
export type SpoolFault = (step: 'write' | 'fsync' | 'rename' | 'dirsync') => void;

export class Spool {
  readonly tmpDir: string;
  fault: SpoolFault | null = null;

  constructor(
    readonly root: string,
    readonly inlineMax: number,
  ) {
    this.tmpDir = join(root, 'tmp');
  }

  async open(): Promise<void> {
    await mkdir(this.tmpDir, { recursive: true });
    // Anything left in tmp/ was never acknowledged: the client was not told 250.
    await rm(this.tmpDir, { recursive: true, force: true });
    await mkdir(this.tmpDir, { recursive: true });
    for (const c of QUEUE_ID_CHARS) await mkdir(join(this.root, c), { recursive: true });
    this.syncDirs([this.root]);
  }

  /** Where a committed body lives: spool/<last char of id>/<id>. */
  pathOf(queueId: string): string {
    return join(this.root, queueId.slice(-1), queueId);
  }

  dirOf(queueId: string): string {
    return join(this.root, queueId.slice(-1));
  }

  createWriter(queueId: string): SpoolWriter {
    return new SpoolWriter(this, queueId);
  }

  read(queueId: string): Readable {
    return createReadStream(this.pathOf(queueId), { highWaterMark: 64 * 1024 });
  }

  async remove(queueId: string): Promise<void> {
    await unlink(this.pathOf(queueId)).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw e;
    });
  }

  /** fsyncDirs - make renames into these directories durable. */
  syncDirs(dirs: Iterable<string>): void {
    for (const dir of dirs) {
      const fd = openSync(dir, 'r');
      try {
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    }
  }

  /** syncDir - fsync one directory without blocking the event loop. */
  async syncDir(dir: string): Promise<void> {
    this.fault?.('dirsync');
    await fsyncDir(dir);
  }

  /** List body files on disk (start-up sweep of orphans). */
  async listBodies(): Promise<string[]> {
    const out: string[] = [];
    for (const sub of await readdir(this.root).catch(() => [] as string[])) {
      if (sub === 'tmp' || sub.length !== 1) continue;
      for (const f of await readdir(join(this.root, sub)).catch(() => [] as string[])) out.push(f);
    }
    return out;
  }
}

/**
 * SpillingBody - a message body being received: in memory while it is at
 * most `inlineMax` octets, past that in a file of its own (at the path
 * openFile() gives, created exclusively). Shared by the store's SpoolWriter
 * and an inbound worker's body (workers/remote-store); they differ only in
 * where the file goes and what finishing means.
 */
export abstract class SpillingBody implements BodyWriter {
  protected chunks: Buffer[] = [];
  protected file: FileHandle | null = null;
  /** The file's path once the body spilled ('' while in memory). */
  protected filePath = '';
  protected written = 0;
  protected aborted = false;
  protected failure: Error | null = null;

  constructor(
    readonly queueId: string,
    private readonly inlineMax: number,
  ) {}

  get size(): number {
    return this.written;
  }

  /** filePathFor - where the body goes once it spills (its directory exists when this resolves). */
  protected abstract filePathFor(): Promise<string>;

  /** beforeFileWrite - a hook run before each write to the file (fault injection in tests). */
  protected beforeFileWrite(): void {}

  async write(chunk: Buffer): Promise<void> {
    if (this.aborted) throw new Error('body writer already aborted');
    if (this.failure) throw this.failure;
    this.written += chunk.length;
    if (!this.file && this.written <= this.inlineMax) {
      this.chunks.push(chunk);
      return;
    }
    try {
      this.beforeFileWrite();
      if (!this.file) {
        this.filePath = await this.filePathFor();
        this.file = await open(this.filePath, 'wx', 0o600);
        const pending = this.chunks;
        this.chunks = [];
        for (const c of pending) await writeAll(this.file, c);
      }
      await writeAll(this.file, chunk);
    } catch (e) {
      this.failure = e as Error;
      throw e;
    }
  }

  /** inline - the body when it stayed in memory, else null. */
  protected inline(): Buffer | null {
    if (this.file) return null;
    // A body written in one piece (a worker's message in the primary) is kept as it is: a copy would be one
    // more large buffer per message, and V8 counts those against the old generation's limit (BENCHMARKS.md,
    // "Issue 17, eighth round").
    if (this.chunks.length === 1) return this.chunks[0]!;
    return Buffer.concat(this.chunks, this.written);
  }

  /** syncFile - fsync and close the file body. */
  protected async syncFile(): Promise<void> {
    await this.file!.sync();
    await this.file!.close();
    this.file = null;
  }

  async abort(): Promise<void> {
    if (this.aborted) return;
    this.aborted = true;
    this.chunks = [];
    if (this.file) {
      await this.file.close().catch(() => undefined);
      this.file = null;
    }
    if (this.filePath) await unlink(this.filePath).catch(() => undefined);
  }
}

/**
 * SpoolWriter - one message body being received into the store. Memory while
 * small, a temporary file under tmp/ once past inlineMax; finish() makes a
 * file body durable and renames it into place.
 */
export class SpoolWriter extends SpillingBody {
  constructor(
    private readonly spool: Spool,
    queueId: string,
  ) {
    super(queueId, spool.inlineMax);
  }

  protected async filePathFor(): Promise<string> {
    return join(this.spool.tmpDir, this.queueId);
  }

  protected override beforeFileWrite(): void {
    this.spool.fault?.('write');
  }

  /**
   * adopt - take over a complete body file another process of this server
   * wrote and fsync'd under tmp/ (an inbound worker: workers/worker-body):
   * finish() then fsyncs it again (cheap), renames it into place and returns
   * its directory, and abort() removes it, as for a body written here.
   */
  async adopt(path: string, size: number): Promise<void> {
    if (this.written || this.file) throw new Error('adopt into a body already written');
    this.file = await open(path, 'r');
    this.filePath = path;
    this.written = size;
  }

  /**
   * finish - for an inline body, return it; for a file body, fsync, close and
   * rename it into place (the caller fsyncs the directory before committing).
   */
  async finish(): Promise<{ inline: Buffer | null; dir: string | null }> {
    if (this.failure) throw this.failure;
    const inline = this.inline();
    if (inline) return { inline, dir: null };
    this.spool.fault?.('fsync');
    await this.syncFile();
    this.spool.fault?.('rename');
    await rename(this.filePath, this.spool.pathOf(this.queueId));
    this.filePath = '';
    return { inline: null, dir: this.spool.dirOf(this.queueId) };
  }
}
