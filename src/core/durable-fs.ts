/*
 * core/durable-fs - the file-system steps of the durability protocol that
 * several writers share (spool, Maildir, directory connector, pickup):
 * fsync a directory, and publish a finished temporary file under a final name
 * without ever replacing an existing file.
 *
 * Invariants: publishNoReplace never overwrites a file (hard link, or, on a
 * file system without hard links, rename only after checking the name is
 * free); it reports "exists" instead, and the caller picks another name.
 * writeAll writes every octet or throws: write(2) may write less than it was
 * given without an error (a file system with room for only part of it), and
 * FileHandle.write reports that only in bytesWritten; a writer that ignores it
 * fsyncs and publishes a truncated file as if it were whole. writeAllSync is
 * the same promise for a writer on the main thread's hot path that cannot
 * afford a thread-pool round trip per write (the event log).
 */
import { writeSync } from 'node:fs';
import { link, lstat, open, rename, type FileHandle } from 'node:fs/promises';

/** errno - the code of a Node.js system error ("ENOENT"), or undefined. */
export const errno = (e: unknown): string | undefined => (e as NodeJS.ErrnoException)?.code;

/**
 * writeAll - write all of `data` at the file's position: after a short write
 * the rest is written again, so that a full disk fails with ENOSPC instead of
 * leaving the file short without a word.
 */
export async function writeAll(file: FileHandle, data: Buffer | string): Promise<void> {
  let buf = typeof data === 'string' ? Buffer.from(data) : data;
  while (buf.length > 0) {
    const { bytesWritten } = await file.write(buf, 0, buf.length);
    if (bytesWritten <= 0) throw Object.assign(new Error('write made no progress'), { code: 'EIO' });
    buf = buf.subarray(bytesWritten);
  }
}

/**
 * writeAllSync - writeAll with write(2) on the calling thread: every octet of
 * `data` at the file's position, or an exception. For a file opened with a
 * FileHandle, pass `handle.fd`: once the handle is closing it is -1 and the
 * write throws rather than reaching whatever file reuses the number.
 */
export function writeAllSync(fd: number, data: Buffer): void {
  let buf = data;
  while (buf.length > 0) {
    const bytesWritten = writeSync(fd, buf, 0, buf.length);
    if (bytesWritten <= 0) throw Object.assign(new Error('write made no progress'), { code: 'EIO' });
    buf = buf.subarray(bytesWritten);
  }
}

/** fsyncDir - make the entries of a directory (new names, renames) durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const fd = await open(dir, 'r');
  try {
    await fd.sync();
  } finally {
    await fd.close();
  }
}

/**
 * publishNoReplace - make `tmp` appear as `dest`, never replacing a file:
 * "linked" (tmp is still there; the caller removes it after making the new
 * name durable), "renamed" (no hard links on this file system: tmp is gone),
 * or "exists" (dest is taken; nothing changed).
 */
export async function publishNoReplace(tmp: string, dest: string): Promise<'linked' | 'renamed' | 'exists'> {
  try {
    await link(tmp, dest);
    return 'linked';
  } catch (e) {
    const code = errno(e);
    if (code === 'EEXIST') return 'exists';
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS') throw e;
  }
  const there = await lstat(dest).then(
    () => true,
    (err: unknown) => (errno(err) === 'ENOENT' ? false : Promise.reject(err)),
  );
  if (there) return 'exists';
  await rename(tmp, dest);
  return 'renamed';
}
