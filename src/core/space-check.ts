/*
 * core/space-check - at start, say so when `[queue] min_free_space` can never
 * be met.
 *
 * Petrel answers MAIL with `452 4.3.1` while the file system of `data_dir` has
 * less free space than `min_free_space`. A value larger than that file system
 * can ever have free (its size less the blocks reserved for root) is never met:
 * such a Petrel refuses every message, forever, and says nothing else about
 * it. This check turns that into one warning at start, on standard error (the
 * operator's terminal or the journal) and in the trace, naming both sizes and
 * the key to change. It only warns: the setting may be meant for a file system
 * not mounted yet, and refusing mail safely is what the setting is for.
 *
 * A data_dir that does not exist yet is judged by its nearest existing parent
 * (the file system it will be created on). A file system that cannot be asked
 * (statfs fails) gives no warning: nothing certain to say.
 */
import { statfsSync, type StatsFs } from 'node:fs';
import { dirname, resolve } from 'node:path';

/** The numbers of statfs that matter here (bsize, blocks, bfree, bavail). */
export type FsSize = Pick<StatsFs, 'bsize' | 'blocks' | 'bfree' | 'bavail'>;

/** Where the warning goes: the trace (a pino logger, or anything with warn) and a line for standard error. */
export interface SpaceWarningSinks {
  trace: { warn(fields: object, message: string): void };
  stderr?: (line: string) => void;
}

/** mib - a size for people, in MB (1024-based, as the configuration writes sizes), one decimal below 10 MB. */
function mib(octets: number): string {
  const m = octets / 1024 ** 2;
  if (m >= 1024) return `${(m / 1024).toFixed(1)}GB`;
  return m < 10 ? `${m.toFixed(1)}MB` : `${Math.round(m)}MB`;
}

/** statNearest - statfs of `path`, or of its nearest existing parent; null when none can be asked. */
function statNearest(path: string, statfs: (p: string) => FsSize): FsSize | null {
  let p = resolve(path);
  for (;;) {
    try {
      return statfs(p);
    } catch {
      const up = dirname(p);
      if (up === p) return null;
      p = up;
    }
  }
}

/**
 * impossibleMinFreeSpace - the warning text when `minFreeSpace` (octets) is more
 * than the file system of `dataDir` can ever have free; null when it can be
 * met (or the file system cannot be asked).
 */
export function impossibleMinFreeSpace(dataDir: string, minFreeSpace: number, statfs: (p: string) => FsSize = statfsSync): string | null {
  const s = statNearest(dataDir, statfs);
  if (!s) return null;
  const total = s.blocks * s.bsize;
  // Blocks reserved for root (bfree - bavail) are never free for an unprivileged Petrel.
  const mostEverFree = (s.blocks - (s.bfree - s.bavail)) * s.bsize;
  if (minFreeSpace <= mostEverFree) return null;
  return (
    `[queue] min_free_space (${mib(minFreeSpace)}) is more than the file system of data_dir ${dataDir} can ever have free ` +
    `(${mib(mostEverFree)} of ${mib(total)}): every message will be refused with 452 4.3.1; lower min_free_space or move data_dir`
  );
}

/**
 * warnImpossibleMinFreeSpace - at start: check, and when the setting can never
 * be met, warn in the trace and on standard error. Returns the warning (or null).
 */
export function warnImpossibleMinFreeSpace(
  dataDir: string,
  minFreeSpace: number,
  sinks: SpaceWarningSinks,
  statfs: (p: string) => FsSize = statfsSync,
): string | null {
  const warning = impossibleMinFreeSpace(dataDir, minFreeSpace, statfs);
  if (!warning) return null;
  sinks.trace.warn({ data_dir: dataDir, min_free_space: minFreeSpace }, warning);
  (sinks.stderr ?? ((line: string) => process.stderr.write(line + '\n')))(`petrel: warning: ${warning}`);
  return warning;
}
