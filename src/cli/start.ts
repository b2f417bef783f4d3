/*
 * cli/start - `petrel start`: runs the server in the foreground.
 *
 * Prints where it listens and where it keeps its data, one fact a line
 * ("listening smtp 127.0.0.1:2525" is a stable line scripts may wait for).
 * SIGTERM/SIGINT: graceful stop within 30 s (CONTRACT.md, "Running"); a second
 * signal exits at once (the queue is safe either way: that is invariant 1).
 * The handlers are in place before anything starts: a signal that comes while
 * the server starts (the port can already take mail while the last worker is
 * still starting) stops it as soon as it has started, never by the signal's
 * default action.
 * SIGHUP: take the configuration file again (cli/reload: what `petrel reload`
 * sends; data_dir/petrel.pid names this process while it runs).
 */
import cluster from 'node:cluster';
import { availableParallelism } from 'node:os';
import { initTrace, trace } from '../log/trace.js';
import { resolve } from 'node:path';
import { Petrel } from '../petrel.js';
import { WorkerPool } from '../workers/primary.js';
import { runWorker } from '../workers/worker.js';
import { ReloadServer } from './reload.js';
import { configFrom, version, type CliCommand } from './command.js';
import { SourceAddressError } from '../delivery/smtp/identity-warnings.js';

export const startCommand: CliCommand = {
  name: 'start',
  summary: 'run the server in the foreground (SMTP, queue, delivery)',
  help: `Usage: petrel start [--config FILE]

Runs Petrel in the foreground until SIGTERM or SIGINT. On a signal it stops
accepting connections, lets SMTP replies in progress finish, ends deliveries in
progress as deferred (never lost) and exits within 30 seconds. A configuration
error stops it before anything starts (exit 78); so does a [delivery]
source_ipv4 / source_ipv6 that is not an address of this machine. The DNS of
the sending identity (PTR, forward-confirmed, HELO name) is checked after
start: each problem is a "petrel: warning: sending identity:" line on
standard error (see petrel check-config --dns).
`,
  async run(args, out, err) {
    // An inbound worker of `[server] workers` (workers/worker): the primary gives it its configuration.
    if (cluster.isWorker && process.env.PETREL_WORKER) return runWorker(err);
    const config = configFrom(args, err);
    if (!config) return 78;
    const log = initTrace(config.log.level);
    process.on('unhandledRejection', (e) => log.error({ err: (e as Error)?.stack ?? String(e) }, 'unhandled rejection (bug): continuing'));
    process.on('uncaughtException', (e) => log.error({ err: e.stack }, 'uncaught exception (bug): continuing'));
    // Until the server has started a signal is only noted (a second one exits at once); then `stop` takes it.
    let stopper: ((signal: string) => void) | null = null;
    let early: string | null = null;
    const onSignal = (signal: string): void => {
      if (stopper) return stopper(signal);
      if (early) {
        err(`petrel: second ${signal}, exiting now`);
        process.exit(1);
      }
      early = signal;
    };
    process.on('SIGTERM', () => onSignal('SIGTERM'));
    process.on('SIGINT', () => onSignal('SIGINT'));
    // SIGHUP while starting: the file may have changed after it was read, so it is read again once started.
    let hangUp: (() => void) | null = null;
    let hungUp = false;
    process.on('SIGHUP', () => (hangUp ? hangUp() : (hungUp = true)));
    const count = config.server.workers === 0 ? Math.min(255, availableParallelism()) : config.server.workers;
    // One process (workers = 1), or this one keeps the queue and `count` workers take the SMTP sessions and deliveries.
    const pool = count > 1 ? new WorkerPool({ count, trace: trace('workers') }) : null;
    pool?.launch(config);
    const petrel = new Petrel(config, pool ? { role: 'queue', connections: () => pool.connections, smtpAgent: (local) => pool.smtpAgent(local) } : {});
    try {
      await petrel.start();
      await pool?.start(petrel);
    } catch (e) {
      err(`petrel: cannot start: ${(e as Error).message}`);
      await pool?.stop(1000).catch(() => undefined);
      await petrel.stop(1000).catch(() => undefined);
      // A source address this machine lacks is a configuration error (EX_CONFIG), like a bad key.
      return e instanceof SourceAddressError ? 78 : 69;
    }
    const flag = args.flags.get('config');
    const reloads = new ReloadServer(config.data_dir, typeof flag === 'string' ? resolve(flag) : undefined, async (next) => {
      const later = await petrel.reconfigure(next);
      await pool?.reconfigure(next);
      return later;
    });
    reloads.writePid();
    out(`petrel ${version()} started, pid ${process.pid}, hostname ${config.hostname}${pool ? `, ${count} workers (pids ${pool.pids.join(' ')})` : ''}`);
    for (const b of pool?.bound ?? petrel.inbound?.bound ?? []) out(`listening ${b.kind} ${b.host}:${b.port}`);
    if (petrel.admin?.bound) out(`listening admin http://${petrel.admin.bound.host}:${petrel.admin.bound.port}/`);
    out(`data_dir ${config.data_dir} (event log: ${petrel.eventLog.path})`);
    out(`local domains ${config.local.domains.join(', ') || '(none)'} -> maildir ${config.local.maildir}`);
    return new Promise<number>((resolve) => {
      let stopping = false;
      const stop = (signal: string): void => {
        if (stopping) {
          err(`petrel: second ${signal}, exiting now`);
          process.exit(1);
        }
        stopping = true;
        out(`petrel: ${signal} received, stopping`);
        const hard = setTimeout(() => {
          err('petrel: stop took too long, exiting');
          process.exit(1);
        }, 29_000);
        hard.unref();
        (pool ? pool.stop(5000) : Promise.resolve())
          .then(() => petrel.stop(20_000))
          .then(() => {
            reloads.removePid();
            out('petrel: stopped');
            resolve(0);
          })
          .catch((e) => {
            err(`petrel: error while stopping: ${(e as Error).message}`);
            resolve(1);
          });
      };
      hangUp = () => {
        if (stopping) return;
        // The line is written once the reload is done: a script that waits for it then sees the new configuration.
        void reloads.hangUp().then((s) => (s.ok ? out(`petrel: SIGHUP received, ${s.message}`) : err(`petrel: SIGHUP received, reload refused, the configuration in force stays:\n${s.message}`)));
      };
      stopper = stop;
      if (early) stop(early);
      else if (hungUp) hangUp();
    });
  },
};
