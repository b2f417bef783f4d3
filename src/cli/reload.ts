/*
 * cli/reload - `petrel reload`: the running server takes a new configuration
 * file, and the command says whether it did (CONTRACT.md: exit 0 once the
 * running server has taken it; with errors, the check-config report and a
 * non-zero exit, the server keeping the configuration it had).
 *
 * How it reaches the server: by its pid and SIGHUP, the Unix way, so that
 * `kill -HUP`, systemd's ExecReload and this command do the same thing and no
 * admin listener is needed. The files, all in data_dir:
 * - petrel.pid       written by `petrel start` (removed when it stops);
 * - reload.request   written by this command before the signal: a token and
 *                    the absolute path of the file to take;
 * - reload.status    written by the server after each reload (JSON: token,
 *                    ok, message, at), through a temporary name and rename,
 *                    so a reader never sees half of it.
 * A SIGHUP without a request (kill, systemd) re-reads the file the server
 * runs with. This command waits for the status carrying its token.
 *
 * Exit codes: 0 taken; 1 refused (errors in the file, a key that needs a
 * restart, TLS files or listeners that cannot be opened: the report says
 * which); 69 no running server for this data_dir; 75 no answer in time.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ConfigError, formatProblem, loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import type { CliCommand } from './command.js';

/** How long the command waits for the server's answer. */
const ANSWER_MS = 30_000;

export interface ReloadStatus {
  token: string | null;
  ok: boolean;
  message: string;
  at: string;
}

export const pidFile = (dataDir: string): string => join(dataDir, 'petrel.pid');
const requestFile = (dataDir: string): string => join(dataDir, 'reload.request');
const statusFile = (dataDir: string): string => join(dataDir, 'reload.status');

/** writeAtomically - a small file through a temporary name and rename. */
function writeAtomically(path: string, text: string): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode: 0o600 });
  renameSync(tmp, path);
}

/** problemsOf - the check-config report of a configuration error, one line a problem. */
export function problemsOf(e: ConfigError): string {
  return [...e.problems.map((p) => formatProblem(e.file, p)), `${e.problems.length} problem(s) in ${e.file}`].join('\n');
}

/**
 * ReloadServer - the server's side (used by `petrel start`): the pid file,
 * and on SIGHUP the reload itself and its status.
 */
export class ReloadServer {
  private running: Promise<void> = Promise.resolve();

  constructor(
    private readonly dataDir: string,
    /** The configuration file the server runs with (undefined: the defaults). */
    private configFile: string | undefined,
    /** Takes the configuration, or throws why not; returns the changed keys that wait for a restart. */
    private readonly apply: (config: Config) => Promise<string[]>,
  ) {}

  writePid(): void {
    writeAtomically(pidFile(this.dataDir), `${process.pid}\n`);
  }

  removePid(): void {
    rmSync(pidFile(this.dataDir), { force: true });
  }

  /** hangUp - a SIGHUP: reloads run one after another, never two at once. */
  hangUp(): Promise<ReloadStatus> {
    const done = this.running.then(() => this.reloadOnce());
    this.running = done.then(() => undefined);
    return done;
  }

  private async reloadOnce(): Promise<ReloadStatus> {
    let token: string | null = null;
    try {
      const req = JSON.parse(readFileSync(requestFile(this.dataDir), 'utf8')) as { token?: string; config?: string | null };
      rmSync(requestFile(this.dataDir), { force: true });
      token = typeof req.token === 'string' ? req.token : null;
      if (req.config !== undefined) this.configFile = req.config ?? undefined;
    } catch {
      // No request: a plain SIGHUP re-reads the file the server runs with.
    }
    let status: ReloadStatus;
    try {
      const next = loadConfig(this.configFile);
      const later = await this.apply(next);
      const note = later.length ? ` (${later.join(', ')}: at the next restart)` : '';
      status = { token, ok: true, message: `configuration ${this.configFile ?? '(defaults)'} taken${note}`, at: new Date().toISOString() };
    } catch (e) {
      const message = e instanceof ConfigError ? problemsOf(e) : (e as Error).message;
      status = { token, ok: false, message, at: new Date().toISOString() };
    }
    try {
      writeAtomically(statusFile(this.dataDir), JSON.stringify(status) + '\n');
    } catch {
      // The status is for `petrel reload`; the reload itself has happened (or not) all the same.
    }
    return status;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export const reloadCommand: CliCommand = {
  name: 'reload',
  summary: 'make the running server take its configuration file again (same as SIGHUP)',
  help: `Usage: petrel reload [--config FILE]

Checks FILE (as check-config does), then has the running server whose
data_dir FILE names take it: routes, smarthost, limits, local domains, users,
aliases, submission users, sender logins, TLS certificates; listeners are
opened and closed to match. No connection and no message is dropped.
Exit 0 once the server has taken the file. With errors in the file, or a
change that needs a restart (data_dir, [queue] backend, postgres_url,
node_name), it prints why and exits 1; the server keeps the configuration
it had, whole. Exit 69 when no server runs for that data_dir.
`,
  async run(args, out, err) {
    const flag = args.flags.get('config');
    if (flag === true) {
      err('petrel: --config needs a file name');
      return 64;
    }
    const file = typeof flag === 'string' ? resolve(flag) : undefined;
    let config: Config;
    try {
      config = loadConfig(file);
    } catch (e) {
      if (e instanceof ConfigError) {
        err(problemsOf(e));
        err('petrel reload: the file has errors; the running server keeps its configuration');
        return 1;
      }
      throw e;
    }
    let pid = NaN;
    try {
      pid = Number(readFileSync(pidFile(config.data_dir), 'utf8').trim());
    } catch {
      // no pid file: no server
    }
    if (!Number.isInteger(pid) || pid <= 0 || !alive(pid)) {
      err(`petrel reload: no running server for data_dir ${config.data_dir} (no live pid in ${pidFile(config.data_dir)}); if the server runs with another data_dir: data_dir cannot change while it runs, restart it to apply this file`);
      return 69;
    }
    const token = randomBytes(8).toString('hex');
    writeAtomically(requestFile(config.data_dir), JSON.stringify({ token, config: file ?? null }) + '\n');
    process.kill(pid, 'SIGHUP');
    const deadline = Date.now() + ANSWER_MS;
    while (Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      let status: ReloadStatus | null = null;
      try {
        status = JSON.parse(readFileSync(statusFile(config.data_dir), 'utf8')) as ReloadStatus;
      } catch {
        continue;
      }
      if (status.token !== token) continue;
      if (status.ok) {
        out(`petrel reload: ${status.message} (pid ${pid})`);
        return 0;
      }
      err(status.message);
      err('petrel reload: refused; the running server keeps the configuration it had');
      return 1;
    }
    err(`petrel reload: no answer from pid ${pid} within ${ANSWER_MS / 1000} s`);
    return 75;
  },
};
