// bench/gc: the summary of `node --trace-gc` lines per process (young and
// full collections, main-thread ms with the incremental marking steps), on
// lines copied from a real run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gcLines, gcTotals } from '../../bench/gc.js';

const TRACE = [
  '[25276:0x37b01670]       49 ms: Scavenge 4.2 (4.5) -> 3.8 (5.5) MB, 0.73 / 0.01 ms  (average mu = 1.000, current mu = 1.000) task; ',
  '[25276:0x37b01670]      504 ms: Mark-Compact 17.8 (29.3) -> 11.4 (30.0) MB, 11.86 / 0.07 ms  (+ 12.2 ms in 19 steps since start of marking, biggest step 8.2 ms, walltime since start of marking 26 ms) (average mu = 1.000, current mu = 1.000) finalize incremental marking via task; GC in old space requested',
  '[25287:0x1ecd9670]      711 ms: Mark-Compact 17.3 (28.8) -> 10.9 (29.5) MB, 8.03 / 0.07 ms  (average mu = 1.000, current mu = 1.000) allocation failure; ',
  '[25287:0x1ecd9670]      712 ms: Scavenge (reduce) 4.6 (5.7) -> 4.2 (6.2) MB, 1.25 / 0.01 ms  (average mu = 1.000, current mu = 1.000) allocation failure; ',
  'listening smtp 127.0.0.1:2525',
  '',
].join('\n');

test('collections are summed per process: scavenges, full collections with their marking steps', () => {
  const t = gcTotals(TRACE);
  assert.deepEqual(t.get(25276), { scavenges: 1, scavengeMs: 0.73, markCompacts: 1, markCompactMs: 11.86 + 12.2 });
  assert.deepEqual(t.get(25287), { scavenges: 1, scavengeMs: 1.25, markCompacts: 1, markCompactMs: 8.03 });
  assert.equal(t.size, 2, 'other output is not a collection');
});

test('one line per process, named as the cpu_share lines name them; a process without collections says 0', () => {
  assert.deepEqual(gcLines(TRACE, [25276, 25287, 25288], 10), [
    'gc process=primary scavenges=1 scavenge_ms=1 mark_compacts=1 mark_compact_ms=24 ms_per_msg=2.479',
    'gc process=worker1 scavenges=1 scavenge_ms=1 mark_compacts=1 mark_compact_ms=8 ms_per_msg=0.928',
    'gc process=worker2 scavenges=0 scavenge_ms=0 mark_compacts=0 mark_compact_ms=0 ms_per_msg=0.000',
  ]);
});
