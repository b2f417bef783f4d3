/*
 * bench/profile - where a Petrel process spent its time: reads a V8 CPU
 * profile (`node --cpu-prof`, as `bench/relay --profile DIR` takes one) and
 * prints the functions with the most time of their own and with the most time
 * under them, as key=value lines, and draws the call tree as a flame graph
 * (SVG, drawn top-down: callers above callees, width = time).
 *
 * Written by hand: the profile is a tree of call frames plus sample ids and
 * time deltas, so a summary and an SVG are a page of code, while the flame
 * graph tools (flamegraph.pl, 0x, speedscope) either expect other input or
 * run the program under their own profiler.
 *
 * Usage: node dist/bench/profile.js FILE.cpuprofile [--top 25] [--svg flame.svg]
 *   profile_total_ms=24776 profile_busy_pct=85.0 samples=…
 *   self rank=1 pct=24.3 ms=6024 fn="writeUtf8String" at="(native)"
 *   incl rank=1 pct=32.0 ms=7936 fn="pump" at="dist/src/inbound/session.js:167"
 * (pct: of the whole profile, idle included; incl counts a function once per stack.)
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { arg } from './lib.js';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

export interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Frames that are not work: the thread waiting for I/O. */
const IDLE = '(idle)';

/** where - a frame's place, short: "dist/src/x.js:12", "node:net:359", "(native)". */
function where(cf: CallFrame): string {
  if (!cf.url) return '(native)';
  return `${cf.url.replace(/^.*\/(dist|node_modules)\//, '$1/')}:${cf.lineNumber + 1}`;
}

function name(cf: CallFrame): string {
  return cf.functionName || '(anonymous)';
}

/** selfTimes - microseconds sampled in each node itself (not its callees). */
function selfTimes(p: CpuProfile): Map<number, number> {
  const us = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) us.set(p.samples[i]!, (us.get(p.samples[i]!) ?? 0) + (p.timeDeltas[i] ?? 0));
  return us;
}

export interface Summary {
  totalMs: number;
  idleMs: number;
  self: Array<{ fn: string; at: string; ms: number }>;
  inclusive: Array<{ fn: string; at: string; ms: number }>;
}

/** summarize - own time and time-under per function (microsecond deltas summed to ms). */
export function summarize(p: CpuProfile): Summary {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const selfUs = selfTimes(p);
  const self = new Map<string, { fn: string; at: string; ms: number }>();
  const incl = new Map<string, { fn: string; at: string; ms: number }>();
  let total = 0;
  let idle = 0;
  const add = (m: Map<string, { fn: string; at: string; ms: number }>, cf: CallFrame, us: number): void => {
    const key = `${name(cf)} ${where(cf)}`;
    const e = m.get(key) ?? { fn: name(cf), at: where(cf), ms: 0 };
    e.ms += us / 1000;
    m.set(key, e);
  };
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (!node) continue;
    total += us;
    if (node.callFrame.functionName === IDLE) idle += us;
    add(self, node.callFrame, us);
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const cf = byId.get(cur)!.callFrame;
      const key = `${name(cf)} ${where(cf)}`;
      if (seen.has(key)) continue; // recursion: once per stack
      seen.add(key);
      add(incl, cf, us);
    }
  }
  const sorted = (m: Map<string, { fn: string; at: string; ms: number }>): Array<{ fn: string; at: string; ms: number }> => [...m.values()].sort((a, b) => b.ms - a.ms);
  return {
    totalMs: total / 1000,
    idleMs: idle / 1000,
    self: sorted(self),
    // The synthetic root frames say nothing: keep real functions only.
    inclusive: sorted(incl).filter((e) => !e.fn.startsWith('(')),
  };
}

const escapeXml = (s: string): string => s.replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c]!);

/** colour - by where the code lives: Petrel (warm), its dependencies, Node's own, native/system. */
function colour(cf: CallFrame): string {
  if (/\/dist\//.test(cf.url)) return '#f2a65a';
  if (/node_modules\//.test(cf.url)) return '#c9a0dc';
  if (cf.url.startsWith('node:')) return '#8fc1e3';
  return '#e06c75';
}

/** flameSvg - the call tree drawn top-down; frames narrower than one pixel are left out. Idle time is left out. */
export function flameSvg(p: CpuProfile, title: string, width = 1400): string {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const selfUs = selfTimes(p);
  const total = new Map<number, number>();
  const sum = (id: number): number => {
    const n = byId.get(id)!;
    if (n.callFrame.functionName === IDLE) {
      total.set(id, 0);
      return 0;
    }
    let t = selfUs.get(id) ?? 0;
    for (const c of n.children ?? []) t += sum(c);
    total.set(id, t);
    return t;
  };
  const root = p.nodes[0]!;
  const all = sum(root.id) || 1;
  const row = 17;
  const top = 40;
  const scale = width / all;
  const parts: string[] = [];
  let depthMax = 0;
  const draw = (id: number, x: number, depth: number): void => {
    const n = byId.get(id)!;
    const t = total.get(id) ?? 0;
    const w = t * scale;
    if (w < 1) return;
    depthMax = Math.max(depthMax, depth);
    if (depth > 0) {
      const cf = n.callFrame;
      const label = `${name(cf)} ${where(cf)}`;
      const info = `${label} — ${(t / 1000).toFixed(0)} ms, ${((100 * t) / all).toFixed(1)} %`;
      const chars = Math.floor((w - 4) / 6.5);
      const text = chars >= 3 ? (label.length > chars ? `${label.slice(0, chars - 1)}…` : label) : '';
      const y = top + (depth - 1) * row;
      parts.push(
        `<g><title>${escapeXml(info)}</title><rect x="${x.toFixed(1)}" y="${y}" width="${(w - 0.5).toFixed(1)}" height="${row - 1}" fill="${colour(cf)}" rx="2"/>` +
          (text ? `<text x="${(x + 3).toFixed(1)}" y="${y + 12}">${escapeXml(text)}</text>` : '') +
          '</g>',
      );
    }
    let cx = x;
    const kids = [...(n.children ?? [])].sort((a, b) => (total.get(b) ?? 0) - (total.get(a) ?? 0));
    for (const c of kids) {
      draw(c, cx, depth + 1);
      cx += (total.get(c) ?? 0) * scale;
    }
  };
  draw(root.id, 0, 0);
  const height = top + depthMax * row + 30;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="monospace" font-size="11">`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    `<text x="4" y="16" font-size="14">${escapeXml(title)}</text>`,
    `<text x="4" y="32" fill="#555">busy time ${(all / 1000).toFixed(0)} ms (idle left out); width = time, callers above callees. Orange: Petrel, violet: dependencies, blue: Node, red: native. Hover for figures.</text>`,
    ...parts,
    '</svg>',
  ].join('\n');
}

/** report - the key=value lines of a summary. */
export function report(s: Summary, topN: number): string[] {
  const pct = (ms: number): string => ((100 * ms) / (s.totalMs || 1)).toFixed(1);
  const lines = [`profile_total_ms=${s.totalMs.toFixed(0)} profile_busy_pct=${pct(s.totalMs - s.idleMs)} profile_idle_ms=${s.idleMs.toFixed(0)}`];
  s.self.slice(0, topN).forEach((e, i) => lines.push(`self rank=${i + 1} pct=${pct(e.ms)} ms=${e.ms.toFixed(0)} fn=${JSON.stringify(e.fn)} at=${JSON.stringify(e.at)}`));
  s.inclusive.slice(0, topN).forEach((e, i) => lines.push(`incl rank=${i + 1} pct=${pct(e.ms)} ms=${e.ms.toFixed(0)} fn=${JSON.stringify(e.fn)} at=${JSON.stringify(e.at)}`));
  return lines;
}

/** analyse - summary lines for a profile file, and its flame graph written to `svg` when given. */
export function analyse(file: string, topN: number, svg: string | null, title = file): string[] {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  if (svg) writeFileSync(svg, flameSvg(p, title));
  return report(summarize(p), topN);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  // The profile is the first argument; options follow it.
  const file = process.argv[2];
  if (!file || file.startsWith('--')) {
    console.error('usage: node dist/bench/profile.js FILE.cpuprofile [--top 25] [--svg flame.svg]');
    process.exit(64);
  }
  try {
    for (const line of analyse(file, Number(arg('top', '25')), arg('svg', '') || null)) console.log(line);
  } catch (e) {
    console.error(`bench/profile: ${(e as Error).message}`);
    process.exit(1);
  }
}
