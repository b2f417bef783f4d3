/*
 * test/helpers/petrel-harness - a real Petrel for end-to-end tests, in this
 * process (fast, and tests can reach its store and inject faults) or as a
 * child process (`petrel start`, for signals and kill -9). Every instance
 * lives in its own temporary directory and listens on 127.0.0.1 port 0 unless
 * the test says otherwise. stop() always releases everything.
 */
import { mkdtempSync, rmSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, createServer } from 'node:net';
import { parseConfigText } from '../../src/config/load.js';
import { Petrel, type PetrelOptions } from '../../src/petrel.js';
import type { MailEvent } from '../../src/log/events.js';

export const ROOT = new URL('../../../', import.meta.url).pathname;
export const BIN = join(ROOT, 'bin', 'petrel.js');

export function tempDir(prefix = 'petrel-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/**
 * closedPort - a loopback port where nothing listens, for "connection
 * refused": port 1 (tcpmux, never served here). Not freePort(): a port free a
 * moment ago may be another test's by now (test files run side by side, and
 * the kernel hands the same numbers out again). Seen once in a full run: the
 * expiry test got its report 1.5 s after the send, before max_lifetime (a
 * bounce, not the expiry: something answered on the "refused" port, most
 * likely another test's server). Checked: a port that does not refuse fails
 * the test here, by name.
 */
export async function closedPort(): Promise<number> {
  const port = 1;
  await new Promise<void>((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      reject(new Error(`closedPort: something listens on 127.0.0.1:${port}; these tests need a port that refuses`));
    });
    s.once('error', (e: NodeJS.ErrnoException) => (e.code === 'ECONNREFUSED' ? resolve() : reject(e)));
  });
  return port;
}

/** freePort - a port that was free a moment ago on the given loopback address. */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/** portOpen - whether something accepts a TCP connection on host:port now. */
export function portOpen(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** baseConfig - a config for tests: loopback, short retries, everything in `dir`; the admin listener on a free port. */
export function baseConfig(dir: string, extra = '', port = 0): string {
  return `hostname = "petrel.test"
data_dir = "${join(dir, 'var')}"
${extra.includes('[smtp]') ? '' : `[smtp]\nlisten = ["127.0.0.1:${port}"]\n`}
${extra}
${extra.includes('[admin]') ? '' : `[admin]\nlisten = "127.0.0.1:0"\n`}`;
}

export interface InProcess {
  petrel: Petrel;
  dir: string;
  port: number;
  stop(): Promise<void>;
  events(): MailEvent[];
}

/** startPetrel - in-process Petrel with the given TOML (see baseConfig for defaults). */
export async function startPetrel(extra = '', options: PetrelOptions = {}, dir = tempDir()): Promise<InProcess> {
  const text = baseConfig(dir, extra);
  writeFileSync(join(dir, 'petrel.toml'), text);
  const config = parseConfigText(text, join(dir, 'petrel.toml'), dir);
  const petrel = new Petrel(config, options);
  await petrel.start();
  const port = petrel.inbound!.bound[0]?.port ?? 0;
  let stopped = false;
  return {
    petrel,
    dir,
    port,
    async stop() {
      if (stopped) return;
      stopped = true;
      await petrel.stop(5000);
    },
    events() {
      return readEvents(join(config.data_dir, 'log', 'events.jsonl'));
    },
  };
}

export function readEvents(path: string): MailEvent[] {
  if (!existsSync(path)) return [];
  const text = readFileSync(path, 'utf8');
  // The writer may be appending right now: a last line without its newline is not complete yet.
  const complete = text.slice(0, text.lastIndexOf('\n') + 1);
  return complete
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as MailEvent);
}

/** waitFor - poll `check` until it returns a truthy value or `ms` pass. */
export async function waitFor<T>(check: () => T | Promise<T>, ms = 10_000, what = 'condition'): Promise<Exclude<T, false | 0 | '' | null | undefined>> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v as Exclude<T, false | 0 | '' | null | undefined>;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export interface Child {
  proc: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  /** Resolves with the exit code (or signal name). */
  exited: Promise<number | string>;
  kill(signal?: NodeJS.Signals): void;
}

/** spawnPetrel - `node bin/petrel.js ARGS` with captured output. */
export function spawnPetrel(args: string[], cwd = ROOT, env: NodeJS.ProcessEnv = {}): Child {
  const proc = spawn(process.execPath, [BIN, ...args], { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | string>((resolve) => proc.on('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  return {
    proc,
    stdout: () => out,
    stderr: () => err,
    exited,
    kill(signal = 'SIGTERM') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    },
  };
}

/** startChild - spawn `petrel start` on a config and wait until it listens. */
/** exitedWithin - the child's exit, or after `ms` whatever it does (the timer is cleared: it does not keep the test process alive). */
export async function exitedWithin(child: Child, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([child.exited, new Promise((r) => (timer = setTimeout(r, ms)))]);
  clearTimeout(timer);
}

export async function startChild(dir: string, configText: string): Promise<Child> {
  const file = join(dir, 'petrel.toml');
  writeFileSync(file, configText);
  const child = spawnPetrel(['start', '--config', file], dir);
  try {
    await waitFor(() => /listening smtp /.test(child.stdout()) || child.proc.exitCode !== null, 20_000, 'petrel to listen');
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
  if (child.proc.exitCode !== null) throw new Error(`petrel exited: ${child.stderr()}`);
  return child;
}

export function cleanup(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}
