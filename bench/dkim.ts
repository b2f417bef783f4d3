/*
 * bench/dkim - relay throughput with DKIM signing off, RSA-2048 and Ed25519:
 * Postfix's smtp-source pushes N messages of S octets (From: the signing
 * domain) over C sessions into Petrel, which signs them at enqueue and relays
 * them to Postfix's smtp-sink. One line of key=value figures per mode, then
 * the ratios to unsigned:
 *
 *   mode=off|rsa|ed25519 accept_msgs_per_s e2e_msgs_per_s cpu_ms_per_msg (all
 *   of Petrel's threads: signing runs on its worker threads) peak_rss_mb
 *   ratio_rsa / ratio_ed25519  e2e rate signed / unsigned
 *
 * Usage: node dist/bench/dkim.js [--messages 3000] [--sessions 20] [--size 102400]
 *   [--modes off,rsa,ed25519] [--profile DIR]
 * With --profile DIR, Petrel runs under `node --cpu-prof` (one profile per
 * mode and thread, under DIR/<mode>; read them with bench/profile).
 */
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { arg, cpuMs, EventCounter, freePort, removeDir, rssMb, run, sleep, startPetrel, startSink, tempDir } from './lib.js';

type Mode = 'off' | 'rsa' | 'ed25519';

async function once(mode: Mode, messages: number, sessions: number, size: number, profileDir: string): Promise<number> {
  const dir = tempDir(`petrel-bench-dkim-${mode}-`);
  const sinkPort = await freePort();
  const port = await freePort();
  let dkim = '';
  if (mode !== 'off') {
    const pair = mode === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : generateKeyPairSync('ed25519');
    const keyFile = join(dir, 'key.pem');
    writeFileSync(keyFile, pair.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
    dkim = `[[dkim]]\ndomain = "example.com"\nselector = "bench"\nkey_file = "${keyFile}"\n`;
  }
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
${dkim}`,
    profileDir ? ['--cpu-prof', `--cpu-prof-dir=${join(profileDir, mode)}`] : [],
  );
  try {
    const pid = petrel.child.pid!;
    const counter = new EventCounter(join(dir, 'var', 'log', 'events.jsonl'));
    const cpu0 = cpuMs(pid);
    const t0 = Date.now();
    let peak = 0;
    const sampler = setInterval(() => (peak = Math.max(peak, rssMb(pid).peak)), 200);
    // smtp-source writes "From: <bench@example.com>": the signing domain.
    await run('smtp-source', ['-s', String(sessions), '-m', String(messages), '-l', String(size), '-f', 'bench@example.com', '-t', 'rcpt@example.net', `127.0.0.1:${port}`]);
    const tAccept = Date.now();
    const deadline = Date.now() + 600_000;
    while (counter.poll() && counter.get('delivered') < messages) {
      if (Date.now() > deadline) throw new Error(`only ${counter.get('delivered')} of ${messages} delivered`);
      await sleep(20);
    }
    const tDone = Date.now();
    const cpu = cpuMs(pid) - cpu0;
    clearInterval(sampler);
    peak = Math.max(peak, rssMb(pid).peak);
    const e2e = messages / ((tDone - t0) / 1000);
    console.log(
      [
        `mode=${mode}`,
        `messages=${messages}`,
        `size=${size}`,
        `sessions=${sessions}`,
        `accept_msgs_per_s=${(messages / ((tAccept - t0) / 1000)).toFixed(0)}`,
        `e2e_msgs_per_s=${e2e.toFixed(0)}`,
        `cpu_ms_per_msg=${(cpu / messages).toFixed(3)}`,
        `peak_rss_mb=${peak.toFixed(0)}`,
        `deferred=${counter.get('deferred')}`,
      ].join(' '),
    );
    return e2e;
  } finally {
    await petrel.stop();
    await sink.stop();
    removeDir(dir);
  }
}

async function main(): Promise<void> {
  const messages = Number(arg('messages', '3000'));
  const sessions = Number(arg('sessions', '20'));
  const size = Number(arg('size', '102400'));
  const profileDir = arg('profile', '');
  const modes = arg('modes', 'off,rsa,ed25519').split(',') as Mode[];
  const rate = new Map<Mode, number>();
  for (const mode of modes) rate.set(mode, await once(mode, messages, sessions, size, profileDir));
  const off = rate.get('off');
  if (off) {
    const ratios = modes.filter((m) => m !== 'off').map((m) => `ratio_${m === 'rsa' ? 'rsa' : 'ed25519'}=${(rate.get(m)! / off).toFixed(3)}`);
    if (ratios.length) console.log(ratios.join(' '));
  }
}

main().catch((e) => {
  console.error(`bench/dkim: ${(e as Error).message}`);
  process.exit(1);
});
