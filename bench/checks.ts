/*
 * bench/checks - the inbound rate with the checks of issue 15 on against
 * off: Postfix's smtp-source pushes N messages of S octets over C sessions
 * from 127.0.0.1 into Petrel, whose relay_networks leave loopback outside
 * (so every message is checked), for local delivery. DNS is answered by the
 * loopback test server (SPF pass, DMARC p=none for the sender's domain);
 * rspamd (Debian's, on loopback, test/helpers/rspamd) when installed.
 * Prints one key=value line per mode:
 *
 *   mode=off        no checks ([checks] authenticate = false: it is on by default)
 *   mode=auth       [checks] authenticate = true (SPF, DKIM, DMARC, ARC) and dnsbl with one list
 *   mode=auth+rspamd the same and [filter] rspamd_url
 *
 *   accept_msgs_per_s   messages acknowledged (250) per second, load start to smtp-source exit
 *   accepted            received events / recipients (all N when nothing was refused)
 *   cpu_ms_per_msg      Petrel's CPU time per message (rspamd's own is not counted)
 *
 * Usage: node dist/bench/checks.js [--messages 2000] [--sessions 20] [--size 4096]
 */
import { join } from 'node:path';
import { startDnsServer } from '../test/helpers/dns-server.js';
import { hasRspamd, startRspamd } from '../test/helpers/rspamd.js';
import { arg, cpuMs, EventCounter, freePort, removeDir, run, sleep, startPetrel, tempDir } from './lib.js';

async function one(mode: string, extra: string, dnsAddress: string, messages: number, sessions: number, size: number): Promise<string> {
  const dir = tempDir('petrel-bench-checks-');
  const port = await freePort();
  const petrel = await startPetrel(
    dir,
    `hostname = "petrel.bench"
data_dir = "${join(dir, 'var')}"
[smtp]
listen = ["127.0.0.1:${port}"]
max_connections_per_client = 1000
relay_networks = ["10.0.0.0/8"]
[delivery]
dns_servers = ["${dnsAddress}"]
[local]
domains = ["bench.test"]
[admin]
listen = ""
[log]
level = "warn"
${extra}`,
  );
  try {
    const pid = petrel.child.pid!;
    const counter = new EventCounter(join(dir, 'var', 'log', 'events.jsonl'));
    const cpu0 = cpuMs(pid);
    const t0 = Date.now();
    await run('smtp-source', ['-s', String(sessions), '-m', String(messages), '-l', String(size), '-f', 'bench@sender.bench', '-t', 'rcpt@bench.test', `127.0.0.1:${port}`]);
    const tAccept = Date.now();
    const cpu = cpuMs(pid) - cpu0;
    await sleep(500);
    counter.poll();
    return [
      `mode=${mode}`,
      `messages=${messages}`,
      `size=${size}`,
      `sessions=${sessions}`,
      `accepted=${counter.get('received')}`,
      `accept_msgs_per_s=${(messages / ((tAccept - t0) / 1000)).toFixed(0)}`,
      `cpu_ms_per_msg=${(cpu / messages).toFixed(2)}`,
    ].join(' ');
  } finally {
    await petrel.stop();
    removeDir(dir);
  }
}

async function main(): Promise<void> {
  const messages = Number(arg('messages', '2000'));
  const sessions = Number(arg('sessions', '20'));
  const size = Number(arg('size', '4096'));
  const dns = await startDnsServer({
    'sender.bench': { TXT: ['v=spf1 ip4:127.0.0.1 -all'] },
    '_dmarc.sender.bench': { TXT: ['v=DMARC1; p=none'] },
  });
  const rspamd = hasRspamd() ? await startRspamd(dns.address) : null;
  try {
    const auth = `[checks]\nauthenticate = true\ndnsbl = ["bl.bench"]\n`;
    // authenticate is on by default: "off" turns it off.
    console.log(await one('off', `[checks]\nauthenticate = false\n`, dns.address, messages, sessions, size));
    console.log(await one('auth', auth, dns.address, messages, sessions, size));
    if (rspamd) console.log(await one('auth+rspamd', `${auth}[filter]\nrspamd_url = "${rspamd.url}"\n`, dns.address, messages, sessions, size));
    else console.log('mode=auth+rspamd skipped (rspamd not installed)');
  } finally {
    await rspamd?.stop();
    await dns.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
