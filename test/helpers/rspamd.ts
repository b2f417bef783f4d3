/*
 * test/helpers/rspamd - a throw-away rspamd (Debian's package) on loopback
 * ports, for the filter tests (issue 15).
 *
 * Its own LOCAL_CONFDIR, DBDIR and RUNDIR in a temporary folder; workers run
 * as _rspamd (the tests run as root: `-u _rspamd -g _rspamd`); the normal
 * worker, the controller and the proxy bind loopback ports; every module that
 * asks public DNS, fetches maps or needs Redis is turned off, and its own
 * resolver is the loopback DNS server given (nothing outside answers).
 * stop() ends the process it started (SIGTERM to its pid, then SIGKILL) and
 * removes the folder.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { request } from 'node:http';
import { join } from 'node:path';
import { freePort, tempDir } from './petrel-harness.js';

export interface Rspamd {
  url: string;
  port: number;
  stop(): Promise<void>;
  /** Stop only the process (the folder stays: start it again with restart()). */
  kill(): Promise<void>;
  restart(): Promise<void>;
  log(): string;
}

/** How long rspamd may take to answer its first scan. */
const READY_MS = 240_000;

/** Modules that ask DNS outside, fetch maps or need Redis: off. */
const OFF = [
  'rbl', 'surbl', 'fuzzy_check', 'asn', 'phishing', 'dmarc', 'dkim', 'spf', 'arc', 'dkim_signing', 'emails', 'url_redirector',
  'rspamd_update', 'whitelist', 'maillist', 'mx_check', 'reputation', 'greylist', 'ratelimit', 'neural', 'history_redis', 'replies',
  'clickhouse', 'elastic', 'metadata_exporter', 'external_services', 'antivirus', 'dcc', 'spamassassin', 'p0f', 'bimi', 'aws_s3',
  'url_reputation', 'multimap', 'milter_headers', 'external_relay', 'metric_exporter', 'spamtrap',
];

export function hasRspamd(): boolean {
  try {
    execFileSync('rspamd', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function uidOf(name: string): { uid: number; gid: number } {
  const uid = Number(execFileSync('id', ['-u', name]).toString().trim());
  const gid = Number(execFileSync('id', ['-g', name]).toString().trim());
  return { uid, gid };
}

function checkv2(port: number): Promise<number> {
  return new Promise((resolve) => {
    const r = request({ host: '127.0.0.1', port, path: '/checkv2', method: 'POST' }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    r.on('error', () => resolve(0));
    r.end('Subject: ping\r\n\r\nping\r\n');
  });
}

/** startRspamd - rspamd on loopback, resolving through `dns` ("127.0.0.1:PORT"). */
export async function startRspamd(dns: string): Promise<Rspamd> {
  const dir = tempDir('petrel-rspamd-');
  chmodSync(dir, 0o755);
  const local = join(dir, 'local');
  const db = join(dir, 'db');
  const run = join(dir, 'run');
  for (const d of [join(local, 'local.d'), join(local, 'override.d'), db, run]) mkdirSync(d, { recursive: true });
  const { uid, gid } = uidOf('_rspamd');
  chownSync(db, uid, gid);
  chownSync(run, uid, gid);
  const port = await freePort();
  const controller = await freePort();
  const proxy = await freePort();
  const ld = join(local, 'local.d');
  writeFileSync(join(ld, 'worker-normal.inc'), `bind_socket = "127.0.0.1:${port}";\ncount = 1;\n`);
  writeFileSync(join(ld, 'worker-controller.inc'), `bind_socket = "127.0.0.1:${controller}";\ncount = 1;\n`);
  writeFileSync(join(local, 'override.d', 'worker-proxy.inc'), `bind_socket = "127.0.0.1:${proxy}";\ncount = -1;\n`);
  writeFileSync(join(ld, 'options.inc'), `dns {\n  nameserver = ["${dns}"];\n  timeout = 0.5s;\n  retransmits = 1;\n}\n`);
  writeFileSync(join(ld, 'logging.inc'), `type = "file";\nfilename = "${join(run, 'rspamd.log')}";\nlevel = "info";\n`);
  writeFileSync(join(ld, 'redis.conf'), '');
  for (const m of OFF) writeFileSync(join(ld, `${m}.conf`), 'enabled = false;\n');
  let child: ChildProcess | null = null;
  const start = async (): Promise<void> => {
    child = spawn(
      'rspamd',
      ['-f', '-u', '_rspamd', '-g', '_rspamd', `--var=LOCAL_CONFDIR=${local}`, `--var=DBDIR=${db}`, `--var=RUNDIR=${run}`, `--var=LOGDIR=${run}`],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    // Its first start compiles its regular expressions: on a busy machine that takes minutes.
    const deadline = Date.now() + READY_MS;
    while ((await checkv2(port)) !== 200) {
      if (child.exitCode !== null) throw new Error(`rspamd exited (${child.exitCode}): ${stderr}`);
      if (Date.now() > deadline) {
        // Not left behind: the caller gets no handle to stop it.
        await kill();
        throw new Error(`rspamd not ready in ${READY_MS / 1000} s: ${stderr.slice(-2000)}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  const kill = async (): Promise<void> => {
    const c = child as ChildProcess | null;
    child = null;
    if (!c || c.exitCode !== null) return;
    const exited = new Promise<void>((r) => c.once('exit', () => r()));
    c.kill('SIGTERM');
    const timer = setTimeout(() => c.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
    // Its port is free again once the workers are gone.
    for (let i = 0; i < 50 && (await checkv2(port)) !== 0; i++) await new Promise((r) => setTimeout(r, 100));
  };
  try {
    await start();
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    kill,
    restart: start,
    async stop() {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
    log() {
      try {
        return execFileSync('cat', [join(run, 'rspamd.log')]).toString();
      } catch {
        return '';
      }
    },
  };
}
