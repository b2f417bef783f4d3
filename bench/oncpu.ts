/*
 * bench/oncpu - where each Petrel process's CPU went while it was on a CPU:
 * `perf record` samples the processes during the load (bench/relay --perf on)
 * and this sums the samples per process and thread (main, other) by what was
 * running: the kernel (system calls, loopback TCP, page cache), JavaScript
 * compiled by V8 (js), V8 and Node themselves (node: the interpreter, inline
 * caches, builtins, the garbage collector, libuv), SQLite (better-sqlite3),
 * and the C library (malloc, memcpy).
 *
 * Why beside --profile: V8's profiler samples by the wall clock, so a thread
 * that was preempted inside a system call (a socket write that woke its
 * reader, the fsync request that woke a pool thread) has that wait counted
 * as the call's own time; with two cores and three busy processes that
 * inflated writeUtf8String to a quarter of a worker (BENCHMARKS.md, "Issue
 * 17, seventh round"). perf counts only time on a CPU.
 *
 * Written by hand: perf's own reports group by one key at a time; this needs
 * process, thread and a handful of classes of shared object together, which
 * is a pass over `perf script` lines. perf itself is Debian's linux-perf
 * (only this benchmark uses it).
 *
 *   oncpu process=worker1 thread=main samples=1782 kernel_pct=18.7 js_pct=15.7 node_pct=56.6 sqlite_pct=0.0 libc_pct=8.4 other_pct=0.6
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';

/** What ran, by the shared object perf names. */
export type CpuClass = 'kernel' | 'js' | 'node' | 'sqlite' | 'libc' | 'other';
const CLASSES: CpuClass[] = ['kernel', 'js', 'node', 'sqlite', 'libc', 'other'];

/** classOf - the class of a sample by its shared object's name. */
export function classOf(dso: string): CpuClass {
  if (dso.startsWith('[kernel') || dso === '[vdso]') return 'kernel';
  if (dso.startsWith('[JIT]') || /\/perf-\d+\.map$/.test(dso)) return 'js';
  if (/better_sqlite3\.node$/.test(dso)) return 'sqlite';
  if (/\/(libc|libm|libstdc\+\+|libgcc_s)\.so/.test(dso) || /\/ld-linux/.test(dso)) return 'libc';
  if (/\/node$/.test(dso)) return 'node';
  return 'other';
}

/** One line of `perf script -F pid,tid,ip,dso` on a record made without call graphs. */
const LINE = /^\s*(\d+)\/(\d+)\s+[0-9a-f]+\s+\((.*)\)\s*$/;

/** onCpuTotals - samples per "pid main|other", then per class. */
export function onCpuTotals(script: string): Map<string, Map<CpuClass, number>> {
  const out = new Map<string, Map<CpuClass, number>>();
  for (const line of script.split('\n')) {
    const m = LINE.exec(line);
    if (!m) continue;
    const key = `${m[1]} ${m[1] === m[2] ? 'main' : 'other'}`;
    let t = out.get(key);
    if (!t) out.set(key, (t = new Map()));
    const c = classOf(m[3]!);
    t.set(c, (t.get(c) ?? 0) + 1);
  }
  return out;
}

/** onCpuLines - one line per process and thread, named as relay's cpu_share lines name them (pids: the primary first). */
export function onCpuLines(script: string, pids: number[]): string[] {
  const totals = onCpuTotals(script);
  const lines: string[] = [];
  pids.forEach((pid, i) => {
    const proc = i === 0 ? 'primary' : `worker${i}`;
    for (const thread of ['main', 'other']) {
      const t = totals.get(`${pid} ${thread}`);
      if (!t) continue;
      const n = [...t.values()].reduce((a, b) => a + b, 0);
      const pct = (c: CpuClass): string => ((100 * (t.get(c) ?? 0)) / n).toFixed(1);
      lines.push(`oncpu process=${proc} thread=${thread} samples=${n} ${CLASSES.map((c) => `${c}_pct=${pct(c)}`).join(' ')}`);
    }
  });
  return lines;
}

/** OnCpuRecorder - `perf record` on running processes, stopped (SIGINT) when the load ends. */
export class OnCpuRecorder {
  private readonly child: ChildProcess;
  private readonly exited: Promise<void>;
  private err = '';

  constructor(
    pids: number[],
    private readonly file: string,
    hz = 499,
  ) {
    const probe = spawnSync('perf', ['--version'], { encoding: 'utf8' });
    if (probe.error || probe.status !== 0) throw new Error(`--perf on needs perf (Debian package linux-perf): ${probe.error?.message ?? probe.stderr}`);
    this.child = spawn('perf', ['record', '-q', '-F', String(hz), '-p', pids.join(','), '-o', file], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.child.stderr?.on('data', (d: Buffer) => (this.err += d.toString()));
    this.exited = new Promise((resolve, reject) => {
      this.child.once('error', (e) => reject(new Error(`perf: ${e.message} (Debian package linux-perf)`)));
      this.child.once('exit', () => resolve());
    });
  }

  /** stop - end the recording; the `perf script` text of what it sampled. */
  async stop(): Promise<string> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGINT');
    await this.exited;
    const r = spawnSync('perf', ['script', '-i', this.file, '-F', 'pid,tid,ip,dso'], { encoding: 'utf8', maxBuffer: 1 << 30 });
    if (r.status !== 0) throw new Error(`perf script failed: ${r.stderr || this.err}`);
    return r.stdout;
  }
}
