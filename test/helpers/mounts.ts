/*
 * test/helpers/mounts - tiny tmpfs mounts for tests that need a real full
 * disk (ENOSPC), a real read-only file system (EROFS) or a real mount point.
 * Tests run as root, where chmod does not stop writes; a mount does.
 * mountTmpfs() returns an Error when mounting is not permitted here;
 * tmpfsOrSkip() then skips the test with that reason (never silently). unmount() is safe to call
 * twice and falls back to a lazy unmount, so nothing stays mounted.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { TestContext } from 'node:test';

export interface Mount {
  path: string;
  remount(options: string): void;
  unmount(): void;
}

/** mountTmpfs - mount a tmpfs of `size` (e.g. "64k") on `path`; an Error says why it could not. */
export function mountTmpfs(path: string, size: string): Mount | Error {
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0755`, 'tmpfs', path], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return new Error(`cannot mount a tmpfs here: ${r.error?.message ?? r.stderr.trim()}`);
  let mounted = true;
  return {
    path,
    remount(options: string) {
      const x = spawnSync('mount', ['-o', `remount,${options}`, path], { encoding: 'utf8' });
      if (x.status !== 0) throw new Error(`remount ${options} failed: ${x.stderr}`);
    },
    unmount() {
      if (!mounted) return;
      const u = spawnSync('umount', [path], { encoding: 'utf8' });
      if (u.status !== 0) spawnSync('umount', ['-l', path]);
      mounted = false;
    },
  };
}

/**
 * tmpfsOrSkip - a tmpfs of `size` on `dir/name` (made here) for a test; when
 * mounting is not permitted the test is skipped with the reason, `dir` is
 * removed, and the answer is null.
 */
export function tmpfsOrSkip(t: TestContext, dir: string, name: string, size: string): Mount | null {
  const path = join(dir, name);
  mkdirSync(path);
  const mount = mountTmpfs(path, size);
  if (mount instanceof Error) {
    rmSync(dir, { recursive: true, force: true });
    t.skip(mount.message);
    return null;
  }
  return mount;
}
