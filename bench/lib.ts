/*
 * bench/lib - shared pieces of the benchmark scripts: temporary directories,
 * free loopback ports, a Postfix smtp-sink as the receiving peer, a Petrel
 * child process, and CPU/RSS readings of a process from /proc.
 *
 * Benchmarks are run by hand (never by CI) and print machine-readable
 * `key=value` figures; BENCHMARKS.md records them with command and date.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync, rmSync, existsSync, openSync, readSync, closeSync, statSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { childPids } from '../test/helpers/processes.js';

export const ROOT = new URL('../../', import.meta.url).pathname;

/** The same helpers the tests use: temporary directories and free loopback ports. */
export { tempDir, freePort } from '../test/helpers/petrel-harness.js';

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** arg - `--name value` from the command line, or the default. */
export function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1]! : def;
}

const TICK_MS = 10; // USER_HZ is 100 on Linux

/** cpuMs - user+system CPU time a process has used so far. */
export function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * TICK_MS;
}

/** treeCpuMs - CPU time used so far by a process and its live children (`[server] workers`: the primary and its workers). */
export function treeCpuMs(pid: number): number {
  let ms = 0;
  for (const p of [pid, ...childPids(pid)]) {
    try {
      ms += cpuMs(p);
    } catch {
      // Gone meanwhile.
    }
  }
  return ms;
}

/** treeRssMb - resident memory of a process and its live children, summed. */
export function treeRssMb(pid: number): number {
  let mb = 0;
  for (const p of [pid, ...childPids(pid)]) {
    try {
      mb += rssMb(p).rss;
    } catch {
      // Gone meanwhile.
    }
  }
  return mb;
}

/**
 * cpuByThread - CPU time so far of every thread of a process and of its live
 * children, keyed "process thread": process "primary" (or "worker1".. in pid
 * order), thread "main" (the event loop) or its name in /proc (libuv's pool
 * is "libuv-worker", V8's helpers "V8 DefaultWorke", worker_threads "node"),
 * threads of one name summed.
 */
export function cpuByThread(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  const procs = [pid, ...childPids(pid)];
  procs.forEach((p, i) => {
    const proc = i === 0 ? 'primary' : `worker${i}`;
    let tids: string[] = [];
    try {
      tids = readdirSync(`/proc/${p}/task`);
    } catch {
      return;
    }
    for (const tid of tids) {
      try {
        const stat = readFileSync(`/proc/${p}/task/${tid}/stat`, 'utf8');
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        const ms = (Number(fields[11]) + Number(fields[12])) * TICK_MS;
        const thread = Number(tid) === p ? 'main' : readFileSync(`/proc/${p}/task/${tid}/comm`, 'utf8').trim().replace(/\s+/g, '_');
        const key = `${proc} ${thread}`;
        out.set(key, (out.get(key) ?? 0) + ms);
      } catch {
        // Gone meanwhile.
      }
    }
  });
  return out;
}

/**
 * systemCpuMs - the whole machine's CPU time so far from /proc/stat's first
 * line: busy (user, nice, system, irq, softirq, steal) and idle (idle,
 * iowait), summed over every core. Petrel's share of it against the rest
 * (smtp-source, smtp-sink, the kernel's loopback work, anyone else) shows
 * whether a run was bound by the machine's cores rather than by Petrel.
 */
export function systemCpuMs(): { busy: number; idle: number; softirq: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = f;
  return { busy: (user + nice + system + irq + softirq + steal) * TICK_MS, idle: (idle + iowait) * TICK_MS, softirq: (irq + softirq) * TICK_MS };
}

/** rssMb - current and peak resident memory of a process. */
export function rssMb(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0);
  return { rss: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 };
}

export interface Proc {
  child: ChildProcess;
  out: () => string;
  stop(): Promise<void>;
}

function track(child: ChildProcess): Proc {
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  return {
    child,
    out: () => out,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const done = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await done;
      clearTimeout(t);
    },
  };
}

/** startSink - Postfix's smtp-sink on a loopback port (-u nobody when root). */
export async function startSink(port: number, extra: string[] = []): Promise<Proc> {
  const args = [...(process.getuid?.() === 0 ? ['-u', 'nobody'] : []), ...extra, `127.0.0.1:${port}`, '1024'];
  const p = track(spawn('smtp-sink', args, { stdio: ['ignore', 'pipe', 'pipe'] }));
  await sleep(300);
  if (p.child.exitCode !== null) throw new Error(`smtp-sink did not start: ${p.out()}`);
  return p;
}

/**
 * shebangNodeOptions - the Node options the `petrel` command starts with
 * (the `#!/usr/bin/env -S node …` line of bin/petrel.js), so that a benchmark
 * runs Petrel as an operator's `petrel start` does.
 */
export function shebangNodeOptions(): string[] {
  const first = readFileSync(join(ROOT, 'bin', 'petrel.js'), 'utf8').split('\n', 1)[0]!;
  const m = /^#!\/usr\/bin\/env(?: -S)? node((?: --\S+)*)\s*$/.exec(first);
  if (!m) throw new Error(`bin/petrel.js: unexpected first line: ${first}`);
  return m[1]!.split(' ').filter(Boolean);
}

/**
 * startPetrel - `petrel start` on a config text; resolves when it listens.
 * `lineBuffered`: its C library's standard output (V8's traces) is flushed a
 * line at a time (coreutils' stdbuf), so that lines of several processes on
 * the one pipe arrive whole and when written, not in 4 KB blocks.
 */
export async function startPetrel(dir: string, config: string, nodeArgs: string[] = [], options: { lineBuffered?: boolean } = {}): Promise<Proc> {
  const file = join(dir, 'petrel.toml');
  writeFileSync(file, config);
  const args = [...shebangNodeOptions(), ...nodeArgs, join(ROOT, 'bin', 'petrel.js'), 'start', '--config', file];
  const [cmd, argv] = options.lineBuffered ? ['stdbuf', ['-oL', process.execPath, ...args]] : [process.execPath, args];
  const p = track(spawn(cmd, argv, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] }));
  const deadline = Date.now() + 20_000;
  while (!/listening smtp /.test(p.out())) {
    if (p.child.exitCode !== null || Date.now() > deadline) throw new Error(`petrel did not start: ${p.out()}`);
    await sleep(50);
  }
  return p;
}

/**
 * EventCounter - counts events of given kinds in a growing events.jsonl by
 * reading only what was appended since the last call.
 */
export class EventCounter {
  private offset = 0;
  private partial = '';
  readonly counts = new Map<string, number>();

  constructor(private readonly path: string) {}

  poll(): Map<string, number> {
    if (!existsSync(this.path)) return this.counts;
    const size = statSync(this.path).size;
    if (size <= this.offset) return this.counts;
    const fd = openSync(this.path, 'r');
    try {
      const buf = Buffer.alloc(size - this.offset);
      readSync(fd, buf, 0, buf.length, this.offset);
      this.offset = size;
      const text = this.partial + buf.toString('utf8');
      const lines = text.split('\n');
      this.partial = lines.pop() ?? '';
      for (const line of lines) {
        const m = /"event":"([a-z_]+)"/.exec(line);
        if (m) this.counts.set(m[1]!, (this.counts.get(m[1]!) ?? 0) + 1);
      }
    } finally {
      closeSync(fd);
    }
    return this.counts;
  }

  get(kind: string): number {
    return this.counts.get(kind) ?? 0;
  }
}

/** run - a command to completion; resolves with its output, rejects on failure. */
export function run(cmd: string, args: string[], timeoutMs = 600_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(t);
      if (code === 0) resolve(out);
      else reject(new Error(`${cmd} exited ${code}: ${out.slice(-2000)}`));
    });
  });
}
