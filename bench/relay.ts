/*
 * bench/relay - relay throughput end to end: Postfix's smtp-source pushes N
 * messages of S octets over C sessions into Petrel, which relays them to
 * Postfix's smtp-sink (its smarthost). Prints one line of key=value figures:
 *
 *   accept_msgs_per_s   messages acknowledged (250) per second, load start to smtp-source exit
 *   e2e_msgs_per_s      messages delivered to the sink per second, load start to last delivery
 *   cpu_ms_per_msg      Petrel's CPU time (user+system) per message, every process
 *   peak_rss_mb         Petrel's peak resident memory (the primary's; with workers, plus their RSS at the end)
 *
 * and one line per process and thread that used CPU, busiest first, so the
 * next bottleneck is visible:
 *   cpu_share process=primary thread=main ms_per_msg=0.512 pct_of_petrel=41.3
 * (from /proc/<pid>/task/<tid>/stat before and after; process "workerN" are
 * the inbound workers of `[server] workers`), and one line for the whole
 * machine over the same span (/proc/stat), to tell a run bound by the cores
 * (busy_pct near 100) from one bound by latency:
 *   system busy_pct=97.0 cpu_ms_per_msg=5.1 other_ms_per_msg=2.3 source_ms_per_msg=0.9 sink_ms_per_msg=0.1 irq_ms_per_msg=0.3
 * (other: everything but Petrel — smtp-source, smtp-sink, the kernel's
 * interrupt and loopback work not charged to a process (irq), and anyone
 * else on the machine).
 *
 * Usage: node dist/bench/relay.js [--messages 20000] [--sessions 20] [--size 4096] [--recipients 1] [--workers N] [--cpus LIST] [--profile DIR] [--gc on] [--perf on]
 * --workers sets `[server] workers` (default: the configuration default);
 * --cpus pins every Petrel process and thread to these CPUs (`taskset -a -p
 * -c LIST`, after it started; smtp-source and smtp-sink are not pinned).
 *
 * With --profile DIR, Petrel runs under `node --cpu-prof` (which costs it some
 * speed: compare figures of runs alike) and, once stopped, each thread's
 * profile is summarised (bench/profile: `self` and `incl` lines) and drawn as
 * DIR/flame-main.svg and DIR/flame-worker.svg.
 *
 * With --gc on, Petrel runs under `node --trace-gc` and one line per process
 * says what its collections cost the main thread during the load (bench/gc):
 *   gc process=worker1 scavenges=24 scavenge_ms=128 mark_compacts=5 mark_compact_ms=116 ms_per_msg=0.081
 *
 * With --perf on, `perf record` samples Petrel's processes during the load
 * and one line per process and thread says what ran while it was on a CPU
 * (bench/oncpu: the kernel, JavaScript, V8 and Node, SQLite, the C library):
 *   oncpu process=worker1 thread=main samples=1782 kernel_pct=18.7 js_pct=15.7 node_pct=56.6 sqlite_pct=0.0 libc_pct=8.4 other_pct=0.6
 */
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { analyse } from './profile.js';
import { gcLines } from './gc.js';
import { OnCpuRecorder, onCpuLines } from './oncpu.js';
import { childPids } from '../test/helpers/processes.js';
import { arg, cpuByThread, cpuMs, EventCounter, freePort, removeDir, rssMb, run, sleep, startPetrel, startSink, systemCpuMs, tempDir, treeCpuMs, treeRssMb } from './lib.js';

async function main(): Promise<void> {
  const messages = Number(arg('messages', '20000'));
  const sessions = Number(arg('sessions', '20'));
  const size = Number(arg('size', '4096'));
  const recipients = Number(arg('recipients', '1'));
  const workers = arg('workers', '');
  const cpus = arg('cpus', '');
  const profileDir = arg('profile', '') ? resolve(arg('profile', '')) : null;
  const traceGc = arg('gc', 'off') === 'on';
  const perf = arg('perf', 'off') === 'on';
  if (profileDir) mkdirSync(profileDir, { recursive: true });
  const dir = tempDir('petrel-bench-relay-');
  const sinkPort = await freePort();
  const port = await freePort();
  const sink = await startSink(sinkPort);
  const petrel = await startPetrel(
    dir,
    `hostname = "petrel.bench"
data_dir = "${join(dir, 'var')}"
[smtp]
listen = ["127.0.0.1:${port}"]
max_connections_per_client = 1000
[delivery]
smarthost = "127.0.0.1:${sinkPort}"
[local]
domains = []
[admin]
listen = ""
[log]
level = "warn"
${workers ? `[server]\nworkers = ${Number(workers)}\n` : ''}`,
    [...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []), ...(traceGc ? ['--trace-gc'] : [])],
    { lineBuffered: traceGc },
  );
  try {
    const pid = petrel.child.pid!;
    if (cpus) for (const p of [pid, ...childPids(pid)]) await run('taskset', ['-a', '-p', '-c', cpus, String(p)]);
    const counter = new EventCounter(join(dir, 'var', 'log', 'events.jsonl'));
    const threads0 = cpuByThread(pid);
    const cpu0 = treeCpuMs(pid);
    const sys0 = systemCpuMs();
    const sink0 = cpuMs(sink.child.pid!);
    let sourceMs = 0;
    // smtp-source is ours (run() below): its CPU is read at its exit, from this process's children, every 100 ms.
    const sourceSampler = setInterval(() => {
      for (const p of childPids(process.pid)) {
        try {
          if (readFileSync(`/proc/${p}/comm`, 'utf8').trim() === 'smtp-source') sourceMs = Math.max(sourceMs, cpuMs(p));
        } catch {
          // Gone meanwhile.
        }
      }
    }, 100);
    const t0 = Date.now();
    const gcFrom = petrel.out().length;
    let peak = 0;
    const sampler = setInterval(() => (peak = Math.max(peak, rssMb(pid).peak)), 200);
    const pids = [pid, ...childPids(pid)];
    const recorder = perf ? new OnCpuRecorder(pids, join(dir, 'perf.data')) : null;
    await run('smtp-source', ['-s', String(sessions), '-m', String(messages), '-l', String(size), '-r', String(recipients), '-f', 'bench@example.com', '-t', 'rcpt@example.net', `127.0.0.1:${port}`]);
    const tAccept = Date.now();
    clearInterval(sourceSampler);
    const want = messages * recipients;
    const deadline = Date.now() + 600_000;
    while (counter.poll() && counter.get('delivered') < want) {
      if (Date.now() > deadline) throw new Error(`only ${counter.get('delivered')} of ${want} delivered`);
      await sleep(20);
    }
    const tDone = Date.now();
    const perfScript = recorder ? await recorder.stop() : '';
    const gcTrace = petrel.out().slice(gcFrom);
    const cpu = treeCpuMs(pid) - cpu0;
    const sys1 = systemCpuMs();
    const sinkCpu = cpuMs(sink.child.pid!) - sink0;
    const threads1 = cpuByThread(pid);
    clearInterval(sampler);
    peak = Math.max(peak, rssMb(pid).peak) + (treeRssMb(pid) - rssMb(pid).rss);
    const accepted = counter.get('received') / recipients;
    console.log(
      [
        `messages=${messages}`,
        `recipients=${recipients}`,
        `size=${size}`,
        `sessions=${sessions}`,
        `accepted=${accepted}`,
        `accept_msgs_per_s=${(messages / ((tAccept - t0) / 1000)).toFixed(0)}`,
        `e2e_msgs_per_s=${(messages / ((tDone - t0) / 1000)).toFixed(0)}`,
        `cpu_ms_per_msg=${(cpu / messages).toFixed(3)}`,
        `peak_rss_mb=${peak.toFixed(0)}`,
        `deferred=${counter.get('deferred')}`,
        `processes=${1 + childPids(pid).length}`,
        `cpus=${cpus || 'all'}`,
      ].join(' '),
    );
    const shares = [...threads1].map(([key, ms]) => [key, ms - (threads0.get(key) ?? 0)] as const).filter(([, ms]) => ms > 0);
    const total = shares.reduce((a, [, ms]) => a + ms, 0) || 1;
    for (const [key, ms] of shares.sort((a, b) => b[1] - a[1])) {
      const [proc, thread] = key.split(' ');
      console.log(`cpu_share process=${proc} thread=${thread} ms_per_msg=${(ms / messages).toFixed(3)} pct_of_petrel=${((100 * ms) / total).toFixed(1)}`);
    }
    const sysBusy = sys1.busy - sys0.busy;
    const sysAll = sysBusy + sys1.idle - sys0.idle || 1;
    console.log(
      `system busy_pct=${((100 * sysBusy) / sysAll).toFixed(1)} cpu_ms_per_msg=${(sysBusy / messages).toFixed(3)} other_ms_per_msg=${((sysBusy - cpu) / messages).toFixed(3)} source_ms_per_msg=${(sourceMs / messages).toFixed(3)} sink_ms_per_msg=${(sinkCpu / messages).toFixed(3)} irq_ms_per_msg=${((sys1.softirq - sys0.softirq) / messages).toFixed(3)}`,
    );
    if (traceGc) for (const line of gcLines(gcTrace, [pid, ...childPids(pid)], messages)) console.log(line);
    if (recorder) for (const line of onCpuLines(perfScript, pids)) console.log(line);
    if (profileDir) {
      // The profiles are written when Petrel exits: CPU.<date>.<time>.<pid>.<thread>.<n>.cpuprofile, thread 0 the main one.
      await petrel.stop();
      const mine = readdirSync(profileDir).filter((f) => f.includes(`.${pid}.`) && f.endsWith('.cpuprofile'));
      for (const f of mine.sort()) {
        const thread = f.split('.')[4] === '0' ? 'main' : 'worker';
        console.log(`profile thread=${thread} file=${join(profileDir, f)}`);
        const title = `Petrel ${thread} thread: ${messages} messages x ${recipients} recipients, ${size} octets, ${sessions} sessions`;
        for (const line of analyse(join(profileDir, f), 25, join(profileDir, `flame-${thread}.svg`), title)) console.log(`${thread} ${line}`);
      }
    }
  } finally {
    await petrel.stop();
    await sink.stop();
    removeDir(dir);
  }
}

main().catch((e) => {
  console.error(`bench/relay: ${(e as Error).message}`);
  process.exit(1);
});
