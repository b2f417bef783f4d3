// space-check: at start, a `[queue] min_free_space` larger than the file
// system of data_dir can ever have free (such a Petrel refuses every message
// with 452 4.3.1, forever) gives one warning, in the trace and on stderr; a
// setting that can be met gives none.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { impossibleMinFreeSpace, warnImpossibleMinFreeSpace, type FsSize } from '../../src/core/space-check.js';

const MB = 1024 ** 2;
// A 1000 MB file system, 500 MB free, 50 MB of it reserved for root.
const FS: FsSize = { bsize: 4096, blocks: (1000 * MB) / 4096, bfree: (500 * MB) / 4096, bavail: (450 * MB) / 4096 };

function sinks(): { warns: { fields: object; message: string }[]; lines: string[]; trace: { warn(f: object, m: string): void }; stderr: (l: string) => void } {
  const warns: { fields: object; message: string }[] = [];
  const lines: string[] = [];
  return { warns, lines, trace: { warn: (fields, message) => warns.push({ fields, message }) }, stderr: (l) => lines.push(l) };
}

test('min_free_space larger than the whole file system: one trace warning and one stderr line naming both sizes and 452 4.3.1', () => {
  const s = sinks();
  const w = warnImpossibleMinFreeSpace('/var/lib/petrel', 2000 * MB, s, () => FS);
  assert.ok(w);
  assert.equal(s.warns.length, 1);
  assert.equal(s.lines.length, 1);
  assert.equal(s.warns[0]!.message, w);
  assert.deepEqual(s.warns[0]!.fields, { data_dir: '/var/lib/petrel', min_free_space: 2000 * MB });
  assert.equal(s.lines[0], `petrel: warning: ${w}`);
  assert.match(w, /min_free_space \(2\.0GB\) is more than the file system of data_dir \/var\/lib\/petrel can ever have free \(950MB of 1000MB\)/);
  assert.match(w, /452 4\.3\.1/);
});

test('more than can ever be free for Petrel (the root-reserved blocks never are) also warns', () => {
  assert.ok(impossibleMinFreeSpace('/d', 960 * MB, () => FS), 'above 950 MB usable, below 1000 MB in all');
  assert.equal(impossibleMinFreeSpace('/d', 950 * MB, () => FS), null, 'exactly the most ever free can be met');
});

test('a setting that can be met gives no warning, even when there is too little free space right now', () => {
  const s = sinks();
  assert.equal(warnImpossibleMinFreeSpace('/d', 100 * MB, s, () => FS), null);
  assert.equal(warnImpossibleMinFreeSpace('/d', 600 * MB, s, () => FS), null, 'above the 450 MB free now: refused until space is freed, not forever');
  assert.equal(s.warns.length + s.lines.length, 0);
});

test('a data_dir not created yet is judged by its nearest existing parent; a file system that cannot be asked gives nothing', () => {
  const dir = mkdtempSync(join(tmpdir(), 'petrel-space-'));
  try {
    const missing = join(dir, 'not', 'yet', 'var');
    const asked: string[] = [];
    const statfs = (p: string): FsSize => {
      asked.push(p);
      return statfsSync(p);
    };
    assert.ok(impossibleMinFreeSpace(missing, Number.MAX_SAFE_INTEGER, statfs));
    assert.deepEqual(asked, [missing, join(dir, 'not', 'yet'), join(dir, 'not'), dir]);
    assert.equal(impossibleMinFreeSpace(missing, 1, statfsSync), null);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const s = sinks();
  const broken = (): FsSize => {
    throw Object.assign(new Error('EIO'), { code: 'EIO' });
  };
  assert.equal(warnImpossibleMinFreeSpace('/d', 2000 * MB, s, broken), null);
  assert.equal(s.warns.length + s.lines.length, 0);
});
