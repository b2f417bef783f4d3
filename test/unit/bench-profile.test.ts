// bench/profile: the summary of a CPU profile (own time, time under, idle) and
// its flame graph, on a small profile whose figures are known.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { flameSvg, summarize, type CpuProfile } from '../../bench/profile.js';

const frame = (functionName: string, url = '', lineNumber = 0): { functionName: string; url: string; lineNumber: number } => ({ functionName, url, lineNumber });

// (root) -> pump -> flush -> writeUtf8String; pump -> command -> pump (recursion); (root) -> (idle)
const profile: CpuProfile = {
  nodes: [
    { id: 1, callFrame: frame('(root)'), children: [2, 6] },
    { id: 2, callFrame: frame('pump', 'file:///x/dist/src/inbound/session.js', 166), children: [3, 4] },
    { id: 3, callFrame: frame('flush', 'file:///x/dist/src/inbound/session.js', 109), children: [7] },
    { id: 4, callFrame: frame('command', 'file:///x/dist/src/inbound/session.js', 244), children: [5] },
    { id: 5, callFrame: frame('pump', 'file:///x/dist/src/inbound/session.js', 166) },
    { id: 6, callFrame: frame('(idle)') },
    { id: 7, callFrame: frame('writeUtf8String') },
  ],
  // microseconds per sample
  samples: [7, 7, 7, 5, 2, 6, 6, 3],
  timeDeltas: [1000, 1000, 1000, 2000, 500, 3000, 1000, 500],
};

test('summary: own time per function, time under it counted once per stack, idle apart', () => {
  const s = summarize(profile);
  assert.equal(s.totalMs, 10);
  assert.equal(s.idleMs, 4);
  const self = Object.fromEntries(s.self.map((e) => [e.fn, e.ms]));
  assert.deepEqual(self, { writeUtf8String: 3, pump: 2.5, '(idle)': 4, flush: 0.5 });
  const incl = Object.fromEntries(s.inclusive.map((e) => [e.fn, e.ms]));
  // pump: its own 0.5 + flush 0.5 + writeUtf8String 3 + the recursive pump under command 2 (once, not twice).
  assert.equal(incl.pump, 6);
  assert.equal(incl.flush, 3.5);
  assert.equal(incl.command, 2);
  assert.equal(s.self[0]!.fn, '(idle)', 'sorted by time');
  assert.equal(s.self[0]!.at, '(native)');
  assert.equal(s.self.find((e) => e.fn === 'pump')!.at, 'dist/src/inbound/session.js:167');
});

test('flame graph: one box per frame with width in proportion to its time, idle left out', () => {
  const svg = flameSvg(profile, 'test <profile>', 600);
  assert.match(svg, /^<svg /);
  assert.match(svg, /test &lt;profile&gt;/, 'the title is escaped');
  assert.doesNotMatch(svg, /\(idle\)/);
  const width = (fn: string): number[] =>
    [...svg.matchAll(new RegExp(`<title>${fn.replace(/[()]/g, '\\$&')} [^<]*</title><rect x="[\\d.]+" y="\\d+" width="([\\d.]+)"`, 'g'))].map((m) => Number(m[1]));
  // Busy time is 6 ms over 600 px: 100 px a millisecond (less the half-pixel gap).
  assert.deepEqual(width('pump'), [599.5, 199.5]);
  assert.deepEqual(width('flush'), [349.5]);
  assert.deepEqual(width('writeUtf8String'), [299.5]);
  assert.deepEqual(width('command'), [199.5]);
});
