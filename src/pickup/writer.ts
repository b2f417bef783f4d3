/*
 * pickup/writer - puts one message into the pickup directory the way the
 * pickup protocol requires (docs/connectors.md): written under a name that
 * starts with "." (which the reader ignores), fsync'd, renamed to its final
 * name, and the directory fsync'd. When this resolves the message survives a
 * crash, and the reader can never see it half-written.
 *
 * Used by `petrel sendmail` when the server does not answer. Files are
 * created mode 0600: only Petrel's own user (or root) reads them.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, unlink } from 'node:fs/promises';
import { fsyncDir, writeAll } from '../core/durable-fs.js';
import { dirname, join, resolve } from 'node:path';


/** ensurePickupDir - mkdir -p; a directory created now has its parent fsync'd. */
export async function ensurePickupDir(dir: string): Promise<void> {
  const first = await mkdir(dir, { recursive: true });
  if (first === undefined) return;
  for (let d = resolve(dir); ; d = dirname(d)) {
    await fsyncDir(dirname(d));
    if (d === resolve(first) || dirname(d) === d) break;
  }
}

/** pickupName - a new, unique file name for the pickup directory. */
export function pickupName(): string {
  return `${Date.now()}.${process.pid}.${randomBytes(6).toString('hex')}.eml`;
}

/** writePickupFile - durably drop `data` into `dir`; resolves with the final path. */
export async function writePickupFile(dir: string, data: Buffer | readonly Buffer[]): Promise<string> {
  await ensurePickupDir(dir);
  const name = pickupName();
  const tmp = join(dir, `.${name}.tmp`);
  const final = join(dir, name);
  const fd = await open(tmp, 'wx', 0o600);
  try {
    for (const chunk of Buffer.isBuffer(data) ? [data] : data) await writeAll(fd, chunk);
    await fd.sync();
    await fd.close();
    await rename(tmp, final);
  } catch (e) {
    await fd.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  await fsyncDir(dir);
  return final;
}
