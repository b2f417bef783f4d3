// bench/oncpu: `perf script` samples summed per process and thread (main or
// other) by what ran (kernel, JavaScript, V8 and Node, SQLite, C library),
// on lines in the form a real record gives.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { classOf, onCpuLines, onCpuTotals } from '../../bench/oncpu.js';

const SCRIPT = [
  '   13652/13652  ffffffff82085acb ([kernel.kallsyms])',
  '   13652/13652      7f774f0857d9 (/tmp/perf-13652.map)',
  '   13652/13652      55d1e2a3b4c5 (/usr/bin/node)',
  '   13652/13652      55d1e2a3b4c6 (/usr/bin/node)',
  '   13652/13659      55d1e2a3b4c7 (/usr/bin/node)',
  '   13640/13640      7f0a1b2c3d4e (/work/main/node_modules/better-sqlite3/build/Release/better_sqlite3.node)',
  '   13640/13640      7f0a1b2c3d4f (/usr/lib/x86_64-linux-gnu/libc.so.6)',
  '   13640/13641      7f0a1b2c3d50 ([unknown])',
  'a line that is not a sample',
  '',
].join('\n');

test('what ran is told by the shared object', () => {
  assert.equal(classOf('[kernel.kallsyms]'), 'kernel');
  assert.equal(classOf('[JIT] tid 13652'), 'js');
  assert.equal(classOf('/tmp/perf-13652.map'), 'js');
  assert.equal(classOf('/usr/bin/node'), 'node');
  assert.equal(classOf('/x/better_sqlite3.node'), 'sqlite');
  assert.equal(classOf('/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30'), 'libc');
  assert.equal(classOf('[unknown]'), 'other');
});

test('samples are summed per process and thread; a thread that is not the process itself is "other"', () => {
  const t = onCpuTotals(SCRIPT);
  assert.deepEqual(Object.fromEntries(t.get('13652 main')!), { kernel: 1, js: 1, node: 2 });
  assert.deepEqual(Object.fromEntries(t.get('13652 other')!), { node: 1 });
  assert.deepEqual(Object.fromEntries(t.get('13640 main')!), { sqlite: 1, libc: 1 });
  assert.deepEqual(Object.fromEntries(t.get('13640 other')!), { other: 1 });
  assert.equal(t.size, 4);
});

test('one line per process and thread, named as the cpu_share lines name them, in shares of its samples', () => {
  assert.deepEqual(onCpuLines(SCRIPT, [13640, 13652, 13699]), [
    'oncpu process=primary thread=main samples=2 kernel_pct=0.0 js_pct=0.0 node_pct=0.0 sqlite_pct=50.0 libc_pct=50.0 other_pct=0.0',
    'oncpu process=primary thread=other samples=1 kernel_pct=0.0 js_pct=0.0 node_pct=0.0 sqlite_pct=0.0 libc_pct=0.0 other_pct=100.0',
    'oncpu process=worker1 thread=main samples=4 kernel_pct=25.0 js_pct=25.0 node_pct=50.0 sqlite_pct=0.0 libc_pct=0.0 other_pct=0.0',
    'oncpu process=worker1 thread=other samples=1 kernel_pct=0.0 js_pct=0.0 node_pct=100.0 sqlite_pct=0.0 libc_pct=0.0 other_pct=0.0',
  ]);
});
