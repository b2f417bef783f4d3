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
 * SpoolWriter - one message body being received. Memory while small, a
 * temporary file once past inlineMax; finish() makes a file body durable.
 */
export class SpoolWriter implements BodyWriter {
  private chunks: Buffer[] = [];
  private file: FileHandle | null = null;
  private tmpPath = '';
  private written = 0;
  private aborted = false;
  private failure: Error | null = null;

  constructor(
    private readonly spool: Spool,
    readonly queueId: string,
  ) {}

  get size(): number {
    return this.written;
  }

  async write(chunk: Buffer): Promise<void> {
    if (this.aborted) throw new Error('body writer already aborted');
    if (this.failure) throw this.failure;
    this.written += chunk.length;
    if (!this.file && this.written <= this.spool.inlineMax) {
      this.chunks.push(chunk);
      return;
    }
    try {
      this.spool.fault?.('write');
      if (!this.file) {
        this.tmpPath = join(this.spool.tmpDir, this.queueId);
        this.file = await open(this.tmpPath, 'wx', 0o600);
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

  /**
   * adopt - take over a complete body file another process of this server
   * wrote and fsync'd under tmp/ (an inbound worker: workers/worker-body):
   * finish() then fsyncs it again (cheap), renames it into place and returns
   * its directory, and abort() removes it, as for a body written here.
   */
  async adopt(path: string, size: number): Promise<void> {
    if (this.written || this.file) throw new Error('adopt into a body already written');
    this.file = await open(path, 'r');
    this.tmpPath = path;
    this.written = size;
  }

  /**
   * finish - for an inline body, return it; for a file body, fsync, close and
   * rename it into place (the caller fsyncs the directory before committing).
   */
  async finish(): Promise<{ inline: Buffer | null; dir: string | null }> {
    if (this.failure) throw this.failure;
    if (!this.file) return { inline: Buffer.concat(this.chunks, this.written), dir: null };
    this.spool.fault?.('fsync');
    await this.file.sync();
    await this.file.close();
    this.file = null;
    this.spool.fault?.('rename');
    await rename(this.tmpPath, this.spool.pathOf(this.queueId));
    this.tmpPath = '';
    return { inline: null, dir: this.spool.dirOf(this.queueId) };
  }

  async abort(): Promise<void> {
    if (this.aborted) return;
    this.aborted = true;
    this.chunks = [];
    if (this.file) {
      await this.file.close().catch(() => undefined);
      this.file = null;
    }
    if (this.tmpPath) await unlink(this.tmpPath).catch(() => undefined);
  }
}
