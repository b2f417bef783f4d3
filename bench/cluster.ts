/*
 * bench/cluster - throughput of 1, 2 and 3 Petrel nodes sharing one
 * PostgreSQL queue on this machine, and of one node on the embedded queue,
 * in the same run (same load, same sink). Postfix's smtp-source pushes N
 * messages of S octets, split evenly over the nodes (one smtp-source per
 * node), and every node relays to one Postfix smtp-sink. Prints one line of
 * key=value figures per setup:
 *
 *   setup               embedded | postgres-1 | postgres-2 | postgres-3
 *   accept_msgs_per_s   messages acknowledged (250) per second
 *   e2e_msgs_per_s      messages delivered per second, load start to last delivery
 *   petrel_cpu_ms_per_msg  CPU of the Petrel processes per message
 *   pg_cpu_ms_per_msg   CPU of the PostgreSQL server processes per message (0 for embedded)
 *
 * Usage: node dist/bench/cluster.js [--messages 20000] [--sessions 20] [--size 4096] [--setups embedded,postgres-1,postgres-2,postgres-3]
 * Needs Debian's postgresql and postfix packages (a throw-away PostgreSQL
 * cluster is started on a loopback port, as the tests do).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { startPostgres } from '../test/helpers/postgres.js';
import { arg, cpuMs, EventCounter, freePort, removeDir, run, sleep, startPetrel, startSink, tempDir, type Proc } from './lib.js';

/** pgPids - the processes of the PostgreSQL server listening on `port` (its postmaster and children). */
function pgPids(dataDir: string): number[] {
  const out: number[] = [];
  let master = 0;
  try {
    master = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  } catch {
    return out;
  }
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (Number(d) === master || ppid === master) out.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

function cpuOf(pids: number[]): number {
  let sum = 0;
  for (const p of pids) {
    try {
      sum += cpuMs(p);
    } catch {
      // gone meanwhile
    }
  }
  return sum;
}

async function main(): Promise<void> {
  const messages = Number(arg('messages', '20000'));
  const sessions = Number(arg('sessions', '20'));
  const size = Number(arg('size', '4096'));
  const setups = arg('setups', 'embedded,postgres-1,postgres-2,postgres-3').split(',');
  const db = await startPostgres();
  const sinkPort = await freePort();
  const sink = await startSink(sinkPort);
  try {
    let n = 0;
    for (const setup of setups) {
      const nodes = setup === 'embedded' ? 1 : Number(setup.split('-')[1]);
      let queue = '';
      if (setup !== 'embedded') {
        const name = `bench${++n}`;
        const c = new pg.Client({ connectionString: db.url });
        await c.connect();
        await c.query(`CREATE DATABASE ${name}`);
        await c.end();
        queue = `[queue]\nbackend = "postgres"\npostgres_url = "${db.url.replace(/\/[^/?]*(\?|$)/, `/${name}$1`)}"\nlease = "1m"\n`;
      }
      const dirs: string[] = [];
      const procs: Proc[] = [];
      const ports: number[] = [];
      try {
        for (let i = 0; i < nodes; i++) {
          const dir = tempDir('petrel-bench-cluster-');
          dirs.push(dir);
          const port = await freePort();
          ports.push(port);
          procs.push(
            await startPetrel(
              dir,
              `hostname = "petrel.bench"\ndata_dir = "${join(dir, 'var')}"\n[smtp]\nlisten = ["127.0.0.1:${port}"]\nmax_connections_per_client = 1000\n[delivery]\nsmarthost = "127.0.0.1:${sinkPort}"\n[local]\ndomains = []\n[admin]\nlisten = ""\n[log]\nlevel = "warn"\n${queue.replace('[queue]\n', `[queue]\nnode_name = "node${i + 1}"\n`)}`,
            ),
          );
        }
        const counters = dirs.map((d) => new EventCounter(join(d, 'var', 'log', 'events.jsonl')));
        const petrelPids = procs.map((p) => p.child.pid!);
        const pgP = setup === 'embedded' ? [] : pgPids(db.dir.endsWith('data') ? db.dir : join(db.dir, 'data'));
        const cpu0 = cpuOf(petrelPids);
        const pg0 = cpuOf(pgP);
        const t0 = Date.now();
        const share = Math.floor(messages / nodes);
        await Promise.all(
          ports.map((port, i) =>
            run('smtp-source', ['-s', String(Math.max(1, Math.floor(sessions / nodes))), '-m', String(i === 0 ? messages - share * (nodes - 1) : share), '-l', String(size), '-f', 'bench@example.com', '-t', 'rcpt@example.net', `127.0.0.1:${port}`]),
          ),
        );
        const tAccept = Date.now();
        const delivered = (): number => counters.reduce((s, c) => s + (c.poll().get('delivered') ?? 0), 0);
        const deadline = Date.now() + 600_000;
        while (delivered() < messages && Date.now() < deadline) await sleep(50);
        const tDone = Date.now();
        const cpu = cpuOf(petrelPids) - cpu0;
        const pgCpu = cpuOf(pgP) - pg0;
        console.log(
          `setup=${setup} nodes=${nodes} messages=${messages} size=${size} delivered=${delivered()} accept_msgs_per_s=${((messages * 1000) / (tAccept - t0)).toFixed(0)} e2e_msgs_per_s=${((messages * 1000) / (tDone - t0)).toFixed(0)} petrel_cpu_ms_per_msg=${(cpu / messages).toFixed(2)} pg_cpu_ms_per_msg=${(pgCpu / messages).toFixed(2)}`,
        );
      } finally {
        await Promise.all(procs.map((p) => p.stop()));
        for (const d of dirs) removeDir(d);
      }
    }
  } finally {
    await sink.stop();
    await db.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
