/*
 * bench/compare - Petrel and Postfix side by side on this machine, in the
 * same run: the same load generator (Postfix's smtp-source, 20 sessions),
 * the same sink (Postfix's smtp-sink, counting messages), alternating A/B
 * for several rounds. Both acknowledge only what is on stable storage.
 *
 * For each workload it prints one line per run and a summary line:
 *   workload=… petrel_over_postfix_e2e=… petrel_e2e_msgs_per_s=… postfix_e2e_msgs_per_s=…
 *   petrel_cpu_ms_per_msg=… postfix_cpu_ms_per_msg=… petrel_peak_rss_mb=… postfix_peak_rss_mb=…
 * (medians over the rounds). CPU counts every process of each MTA (Postfix:
 * all its daemons, living and exited); not the load generator or the sink.
 *
 * Usage: node dist/bench/compare.js [--messages 20000] [--rounds 3] [--workloads 1x4k,10x4k,1x100k,rcpt100k,dsn100k] [--workers N] [--shaping on|off] [--dkim rsa|ed25519] [--cpus LIST]
 * (--cpus 0: every process of the MTA under test pinned to CPU 0, Postfix's and Petrel's alike; run again with 0,1 for the 1-core / 2-core ratio.)
 * (--workers: Petrel's `[server] workers`; default: the configuration default.)
 * (--dkim rsa|ed25519: Petrel DKIM-signs every message, RSA-2048 or Ed25519; Postfix does not sign.)
 * (--shaping off: Petrel runs with [delivery] shaping = false, to measure what traffic shaping costs)
 * (rcpt100k, dsn100k: one message to 100,000 recipients; figures are per recipient.)
 * Needs root (for the private Postfix) and the Debian package postfix.
 */
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { arg, freePort, removeDir, run, sleep, startPetrel, tempDir, treeCpuMs, treeRssMb } from './lib.js';
import { startPostfixRelay } from './postfix.js';
import { childPids } from '../test/helpers/processes.js';
import { SmtpTalk } from '../test/helpers/smtp-talk.js';
import { startPeer } from '../test/helpers/test-peer.js';

/** Petrel's `[server] workers` for the runs ("" leaves the configuration default). */
const WORKERS = arg('workers', '');
/** --cpus LIST: pin the MTA under test (Petrel or Postfix, every process) to these CPUs, for 1-core against 2-core figures. */
const CPUS = arg('cpus', '');
/** --dkim rsa|ed25519: Petrel signs every message (From: bench@example.com) with a key made for the run. */
const DKIM = arg('dkim', '');

/** dkimConfig - a [[dkim]] table with a fresh key in `dir` ('' without --dkim). */
function dkimConfig(dir: string): string {
  if (!DKIM) return '';
  if (DKIM !== 'rsa' && DKIM !== 'ed25519') throw new Error('--dkim takes rsa or ed25519');
  const pair = DKIM === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : generateKeyPairSync('ed25519');
  const keyFile = join(dir, 'dkim.pem');
  writeFileSync(keyFile, pair.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
  return `[[dkim]]\ndomain = "example.com"\nselector = "bench"\nkey_file = "${keyFile}"\n`;
}

interface Workload {
  name: string;
  recipients: number;
  size: number;
  /** One message to this many recipients instead of smtp-source's load (see bulk()). */
  bulk?: 'relay' | 'dsn';
}

const WORKLOADS: Record<string, Workload> = {
  '1x4k': { name: '1rcpt-4KB', recipients: 1, size: 4096 },
  '10x4k': { name: '10rcpt-4KB', recipients: 10, size: 4096 },
  '1x100k': { name: '1rcpt-100KB', recipients: 1, size: 100 * 1024 },
  rcpt100k: { name: '100000rcpt-via-100-per-transaction', recipients: 100_000, size: 1024, bulk: 'relay' },
  dsn100k: { name: 'dsn-for-100000-failed', recipients: 100_000, size: 1024, bulk: 'dsn' },
};

interface RunResult {
  system: 'petrel' | 'postfix';
  /** Messages (bulk: recipients) per second, end to end. */
  e2e: number;
  /** Bulk runs: seconds from connect to the last delivery (or the report). */
  seconds?: number;
  accept: number;
  cpuPerMsg: number;
  peakRss: number;
  /** Bulk runs: why the run could not finish (the MTA gave up), if it did not. */
  unfinished?: string;
}

/** CountingSink - smtp-sink with -c; the latest "mesg=N" it printed. */
class CountingSink {
  private child: ChildProcess;
  private count = 0;
  private tail = '';
  constructor(readonly port: number) {
    this.child = spawn('smtp-sink', [...(process.getuid?.() === 0 ? ['-u', 'nobody'] : []), '-c', `127.0.0.1:${port}`, '1024'], { stdio: ['ignore', 'pipe', 'ignore'] });
    this.child.stdout!.on('data', (d: Buffer) => {
      const text = this.tail + d.toString('latin1');
      const all = [...text.matchAll(/mesg=(\d+)/g)];
      if (all.length) this.count = Number(all[all.length - 1]![1]);
      this.tail = text.slice(-32);
    });
  }
  get messages(): number {
    return this.count;
  }
  async stop(): Promise<void> {
    this.child.kill();
    await new Promise((r) => this.child.once('exit', r));
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** The MTA under test, started: its port, CPU and RSS probes, and how to stop it. */
interface UnderTest {
  port: number;
  cpu(): number;
  rss(): number;
  /** Postfix: the log line saying it gave up on a report, if it did. */
  gaveUp?(): string | null;
  stop(): Promise<void>;
}

/**
 * pin - with --cpus LIST, every thread of these processes runs only on those
 * CPUs (`taskset -a -p -c LIST`); what they fork later inherits it. The load
 * generator and the sink are never pinned.
 */
async function pin(pids: number[]): Promise<void> {
  if (!CPUS) return;
  for (const p of pids) await run('taskset', ['-a', '-p', '-c', CPUS, String(p)]).catch(() => undefined); // a process gone meanwhile
}

/**
 * startSystem - Petrel (relaying to `nextHop` as its smarthost, with `smtp`
 * lines added to its [smtp] section) or Postfix (relayhost = nextHop).
 */
async function startSystem(system: 'petrel' | 'postfix', dir: string, nextHop: number, o: { smtp: string; recipientLimit?: number }): Promise<UnderTest> {
  if (system === 'postfix') {
    const postfix = await startPostfixRelay({ nextHop, ...(o.recipientLimit ? { recipientLimit: o.recipientLimit } : {}) });
    await pin(postfix.pids());
    return { port: postfix.port, cpu: () => postfix.cpuMs(), rss: () => postfix.rssMb(), gaveUp: () => postfix.gaveUp(), stop: () => postfix.stop() };
  }
  const port = await freePort();
  const petrel = await startPetrel(
    dir,
    `hostname = "petrel.bench"\ndata_dir = "${join(dir, 'var')}"\n[smtp]\nlisten = ["127.0.0.1:${port}"]\n${o.smtp}\n[delivery]\nsmarthost = "127.0.0.1:${nextHop}"\n${arg('shaping', 'on') === 'off' ? 'shaping = false\n' : ''}[local]\ndomains = []\n[admin]\nlisten = ""\n[log]\nlevel = "warn"\n${WORKERS ? `[server]\nworkers = ${Number(WORKERS)}\n` : ''}${dkimConfig(dir)}`,
  );
  const pid = petrel.child.pid!;
  await pin([pid, ...childPids(pid)]);
  // Every process of Petrel: the primary and its inbound workers (`[server] workers`).
  return { port, cpu: () => treeCpuMs(pid), rss: () => treeRssMb(pid), stop: () => petrel.stop() };
}

/**
 * Meter - one run's figures for the MTA under test: CPU used and peak RSS
 * (sampled every 200 ms) from its creation, and the time to acceptance
 * (accepted()) and to the end (result()). `units` are messages, or
 * recipients for the bulk workloads.
 */
class Meter {
  private readonly cpu0: number;
  private peak = 0;
  private readonly sampler: NodeJS.Timeout;
  readonly t0 = Date.now();
  private tAccept = 0;

  constructor(private readonly mta: UnderTest) {
    this.cpu0 = mta.cpu();
    this.sampler = setInterval(() => (this.peak = Math.max(this.peak, mta.rss())), 200);
  }

  accepted(): void {
    this.tAccept = Date.now();
  }

  /** result - the run's figures (the sampler stops); an unfinished run has e2e 0. */
  result(system: RunResult['system'], units: number, o: { seconds?: boolean; unfinished?: string } = {}): RunResult {
    const seconds = (Date.now() - this.t0) / 1000;
    this.stop();
    this.peak = Math.max(this.peak, this.mta.rss());
    return {
      system,
      e2e: o.unfinished ? 0 : units / seconds,
      accept: units / ((this.tAccept - this.t0) / 1000),
      cpuPerMsg: (this.mta.cpu() - this.cpu0) / units,
      peakRss: this.peak,
      ...(o.seconds ? { seconds } : {}),
      ...(o.unfinished ? { unfinished: o.unfinished } : {}),
    };
  }

  stop(): void {
    clearInterval(this.sampler);
  }
}

async function once(system: 'petrel' | 'postfix', w: Workload, messages: number): Promise<RunResult> {
  const sinkPort = await freePort();
  const sink = new CountingSink(sinkPort);
  await sleep(300);
  let mta: UnderTest | null = null;
  let meter: Meter | null = null;
  const dir = tempDir('petrel-bench-compare-');
  try {
    mta = await startSystem(system, dir, sinkPort, { smtp: 'max_connections_per_client = 1000' });
    await sleep(500);
    meter = new Meter(mta);
    await run('smtp-source', ['-s', '20', '-m', String(messages), '-l', String(w.size), '-r', String(w.recipients), '-f', 'bench@example.com', '-t', 'rcpt@example.net', `127.0.0.1:${mta.port}`]);
    meter.accepted();
    const deadline = Date.now() + 900_000;
    while (sink.messages < messages) {
      if (Date.now() > deadline) throw new Error(`${system}: only ${sink.messages} of ${messages} at the sink`);
      await sleep(20);
    }
    return meter.result(system, messages);
  } finally {
    meter?.stop();
    await mta?.stop();
    await sink.stop();
    removeDir(dir);
  }
}

/**
 * bulk - one message with w.recipients recipients, pipelined, relayed to a
 * peer that takes 100 per transaction (452 after that) — or, for 'dsn',
 * refuses every one of them (550) and accepts the report to the sender. The
 * run ends when the peer has every recipient (relay) or the report (dsn).
 * e2e is reported as recipients per second; CPU per recipient.
 */
async function bulk(system: 'petrel' | 'postfix', w: Workload): Promise<RunResult> {
  const n = w.recipients;
  const peer = await startPeer(
    w.bulk === 'dsn'
      ? { rcptReply: (a) => (a.startsWith('user') ? '550 5.1.1 No such user' : undefined) }
      : { rcptLimit: { after: 100, reply: '452 4.5.3 Too many recipients' } },
  );
  let mta: UnderTest | null = null;
  let meter: Meter | null = null;
  const dir = tempDir('petrel-bench-compare-');
  try {
    mta = await startSystem(system, dir, peer.port, { smtp: `max_recipients = ${n}`, recipientLimit: n });
    await sleep(500);
    meter = new Meter(mta);
    const c = await SmtpTalk.open(mta.port);
    await c.read();
    await c.cmd('EHLO bench.test');
    let batch = 'MAIL FROM:<alice@home.example>\r\n';
    for (let i = 0; i < n; i++) batch += `RCPT TO:<user${i}@far.example>\r\n`;
    c.write(batch + 'DATA\r\n');
    for (let i = 0; i < n + 2; i++) await c.read(300_000);
    c.write(`Subject: bulk\r\n\r\n${'x'.repeat(w.size)}\r\n.\r\n`);
    const r = await c.read(300_000);
    if (r?.code !== 250) throw new Error(`${system}: not accepted: ${r?.code}`);
    meter.accepted();
    await c.cmd('QUIT').catch(() => undefined);
    c.close();
    const done = (): boolean =>
      w.bulk === 'dsn' ? peer.transactions.some((x) => x.completed && x.sender === '' && x.accepted.includes('alice@home.example')) : peer.delivered().length >= n;
    const deadline = Date.now() + 900_000;
    let unfinished: string | undefined;
    while (!done()) {
      if (Date.now() > deadline) {
        unfinished = `no report after ${Math.round((Date.now() - meter.t0) / 1000)} s`;
        break;
      }
      // Postfix gives up on a report it cannot write ("queue file size limit
      // exceeded" -> "bounce failed", the message deferred to try again in
      // 5 minutes, and again): say so rather than wait out the deadline.
      const why = mta.gaveUp?.() ?? null;
      if (why) {
        unfinished = why;
        break;
      }
      await sleep(50);
    }
    return meter.result(system, n, { seconds: true, ...(unfinished ? { unfinished } : {}) });
  } finally {
    meter?.stop();
    await mta?.stop();
    await peer.close();
    removeDir(dir);
  }
}

async function main(): Promise<void> {
  const messages = Number(arg('messages', '20000'));
  const rounds = Number(arg('rounds', '3'));
  const names = arg('workloads', '1x4k,10x4k,1x100k').split(',');
  for (const key of names) {
    const w = WORKLOADS[key];
    if (!w) throw new Error(`unknown workload ${key} (${Object.keys(WORKLOADS).join(', ')})`);
    const results: RunResult[] = [];
    for (let r = 0; r < rounds; r++) {
      const order: Array<'petrel' | 'postfix'> = r % 2 === 0 ? ['petrel', 'postfix'] : ['postfix', 'petrel'];
      for (const system of order) {
        const res = w.bulk ? await bulk(system, w) : await once(system, w, messages);
        results.push(res);
        console.log(
          `workload=${w.name} round=${r + 1} system=${system} e2e_msgs_per_s=${res.e2e.toFixed(0)} accept_msgs_per_s=${res.accept.toFixed(0)} cpu_ms_per_msg=${res.cpuPerMsg.toFixed(3)} peak_rss_mb=${res.peakRss.toFixed(0)}${res.seconds !== undefined ? ` seconds=${res.seconds.toFixed(1)}` : ''}${res.unfinished ? ` finished=false reason="${res.unfinished}"` : ''}`,
        );
      }
    }
    const of = (s: 'petrel' | 'postfix', f: (x: RunResult) => number): number => median(results.filter((x) => x.system === s).map(f));
    const pe = of('petrel', (x) => x.e2e);
    const po = of('postfix', (x) => x.e2e);
    console.log(
      [
        `workload=${w.name}`,
        `messages=${messages}`,
        `rounds=${rounds}`,
        `cpus=${CPUS || 'all'}`,
        `petrel_over_postfix_e2e=${(pe / po).toFixed(2)}`,
        `petrel_e2e_msgs_per_s=${pe.toFixed(0)}`,
        `postfix_e2e_msgs_per_s=${po.toFixed(0)}`,
        `petrel_cpu_ms_per_msg=${of('petrel', (x) => x.cpuPerMsg).toFixed(3)}`,
        `postfix_cpu_ms_per_msg=${of('postfix', (x) => x.cpuPerMsg).toFixed(3)}`,
        `petrel_peak_rss_mb=${of('petrel', (x) => x.peakRss).toFixed(0)}`,
        `postfix_peak_rss_mb=${of('postfix', (x) => x.peakRss).toFixed(0)}`,
        ...(['petrel', 'postfix'] as const).flatMap((sys) => {
          const u = results.filter((x) => x.system === sys && x.unfinished).length;
          return u ? [`${sys}_unfinished_runs=${u}`] : [];
        }),
      ].join(' '),
    );
  }
}

main().catch((e) => {
  console.error(`bench/compare: ${(e as Error).stack}`);
  process.exit(1);
});
