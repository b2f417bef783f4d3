/*
 * test/helpers/postgres - a throw-away PostgreSQL cluster for tests: Debian's
 * `postgresql` package (binaries in /usr/lib/postgresql/<version>/bin, not on
 * PATH; the newest version found is used), a fresh data directory in a
 * temporary folder, listening only on 127.0.0.1 and a free port, its Unix
 * socket in that folder too, trust authentication (local and loopback), fsync
 * on. Nothing of the system's own cluster is used or touched.
 *
 * Privileges: initdb and the server refuse to run as root. Run as root (as
 * here and in CI), they run as the `postgres` user via `runuser -u postgres --`
 * and the folder is given to that user; run as another user, as that user.
 *
 * Every server started is stopped: by stop()/stopFast() (which also remove the
 * folder), and as a last resort when the test process exits (SIGQUIT to the
 * postmaster whose pid its postmaster.pid names).
 */
import { execFile } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

export interface Postgres {
  /** postgres://postgres@127.0.0.1:<port>/postgres */
  url: string;
  port: number;
  dir: string;
  /** Stop the server (fast shutdown) and remove its folder. Safe to call twice. */
  stop(): Promise<void>;
  /** Stop at once (immediate shutdown: a crash, as far as the server knows) and remove the folder. */
  stopFast(): Promise<void>;
  /** pg_ctl restart -m fast: every connection is cut, the server is back when this resolves. */
  restart(): Promise<void>;
  /** An outage: stop the server (fast), keeping its data; resume() starts it again on the same port. */
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** The same as pause()/resume(), by the names the cluster tests use. */
  stopServer(): Promise<void>;
  startServer(): Promise<void>;
  /** A server that stops answering (a hung host, a network cut): SIGSTOP to the postmaster and its children; thaw() undoes it. */
  freeze(): void;
  thaw(): void;
  /** The server's log so far. */
  log(): string;
}

const ROOT = '/usr/lib/postgresql';

/** postgresBin - the bin folder of the newest installed PostgreSQL, or an error saying how to install it. */
export function postgresBin(): string {
  const versions = existsSync(ROOT)
    ? readdirSync(ROOT)
        .filter((v) => existsSync(join(ROOT, v, 'bin', 'initdb')) && existsSync(join(ROOT, v, 'bin', 'pg_ctl')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  if (versions.length === 0) throw new Error(`PostgreSQL is not installed (no ${ROOT}/<version>/bin/initdb): apt-get install postgresql`);
  return join(ROOT, versions[0]!, 'bin');
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;

/** run - a PostgreSQL program, as the postgres user when we are root; rejects with its output on failure. */
function run(bin: string, program: string, args: string[], timeoutMs = 60_000): Promise<string> {
  const [cmd, argv] = asRoot ? ['runuser', ['-u', 'postgres', '--', join(bin, program), ...args]] : [join(bin, program), args];
  return new Promise((resolve, reject) => {
    execFile(cmd, argv, { timeout: timeoutMs, encoding: 'utf8', cwd: '/' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${program} ${args.join(' ')} failed: ${err.message}\n${stdout}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/** Servers not stopped yet: killed when the process exits, whatever happened. */
const running = new Set<string>();
let exitHook = false;

function postmasterPid(data: string): number | null {
  try {
    const pid = Number(readFileSync(join(data, 'postmaster.pid'), 'utf8').split('\n')[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/** clusterPids - the postmaster of this data directory and its children (backends, checkpointer, ...), by parent pid in /proc. */
function clusterPids(data: string): number[] {
  const top = postmasterPid(data);
  if (top === null) return [];
  const pids = [top];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(join('/proc', name, 'stat'), 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === top) pids.push(Number(name));
    } catch {
      /* gone meanwhile */
    }
  }
  return pids;
}

function killOnExit(): void {
  for (const data of running) {
    const pids = clusterPids(data);
    for (const pid of pids) {
      try {
        // A frozen server (freeze()) must run again to act on the signal.
        process.kill(pid, 'SIGCONT');
      } catch {
        /* already gone */
      }
    }
    if (pids[0] !== undefined) {
      try {
        process.kill(pids[0], 'SIGQUIT');
      } catch {
        /* already gone */
      }
    }
  }
}

/** startPostgres - a private PostgreSQL server, ready for connections. */
export async function startPostgres(): Promise<Postgres> {
  const bin = postgresBin();
  if (asRoot && spawnSync('getent', ['passwd', 'postgres']).status !== 0) throw new Error('no postgres user: apt-get install postgresql');
  const dir = mkdtempSync(join(tmpdir(), 'petrel-pg-'));
  const data = join(dir, 'data');
  const sock = join(dir, 'sock');
  const logFile = join(dir, 'server.log');
  mkdirSync(sock);
  if (asRoot) {
    const pw = spawnSync('getent', ['passwd', 'postgres'], { encoding: 'utf8' }).stdout.split(':');
    const uid = Number(pw[2]);
    const gid = Number(pw[3]);
    for (const p of [dir, sock]) chownSync(p, uid, gid);
  }
  const port = await freePort();
  const serverOptions = `-c listen_addresses=127.0.0.1 -c port=${port} -k ${sock} -c fsync=on -c synchronous_commit=on -c max_connections=100`;
  let stopped = false;
  try {
    await run(bin, 'initdb', ['-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C.UTF-8']);
    running.add(data);
    if (!exitHook) {
      exitHook = true;
      process.on('exit', killOnExit);
    }
    await run(bin, 'pg_ctl', ['-D', data, '-l', logFile, '-w', '-t', '60', '-o', serverOptions, 'start']);
  } catch (e) {
    await run(bin, 'pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']).catch(() => undefined);
    running.delete(data);
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  const shutdown = async (mode: 'fast' | 'immediate'): Promise<void> => {
    if (stopped) return;
    stopped = true;
    signal(frozen, 'SIGCONT');
    await run(bin, 'pg_ctl', ['-D', data, '-m', mode, '-w', '-t', '60', 'stop']).catch(() => {
      const pid = postmasterPid(data);
      if (pid !== null) {
        try {
          process.kill(pid, 'SIGQUIT');
        } catch {
          /* gone */
        }
      }
    });
    running.delete(data);
    rmSync(dir, { recursive: true, force: true });
  };
  const pause = async (): Promise<void> => {
    await run(bin, 'pg_ctl', ['-D', data, '-m', 'fast', '-w', '-t', '60', 'stop']);
  };
  const resume = async (): Promise<void> => {
    await run(bin, 'pg_ctl', ['-D', data, '-l', logFile, '-w', '-t', '60', '-o', serverOptions, 'start']);
  };
  const serverPids = (): number[] => clusterPids(data);
  let frozen: number[] = [];
  const signal = (pids: number[], sig: NodeJS.Signals): void => {
    for (const pid of pids) {
      try {
        process.kill(pid, sig);
      } catch {
        /* gone */
      }
    }
  };
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    dir,
    stop: () => shutdown('fast'),
    stopFast: () => shutdown('immediate'),
    restart: async () => {
      await run(bin, 'pg_ctl', ['-D', data, '-l', logFile, '-m', 'fast', '-w', '-t', '60', '-o', serverOptions, 'restart']);
    },
    pause,
    resume,
    stopServer: pause,
    startServer: resume,
    freeze: () => {
      frozen = serverPids();
      signal(frozen, 'SIGSTOP');
    },
    thaw: () => {
      signal(frozen, 'SIGCONT');
      frozen = [];
    },
    log: () => {
      try {
        return readFileSync(logFile, 'utf8');
      } catch {
        return '';
      }
    },
  };
}
