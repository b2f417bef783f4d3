/*
 * bench/many-domains - issue 17's "many domains behind one MX": N messages,
 * each to a domain of its own (d<i>.many.bench), every domain's MX the same
 * host (mx.sink.bench -> 127.0.0.1), answered by the loopback DNS server of
 * the tests (one wildcard entry); the host is Postfix's smtp-sink. Petrel
 * runs as a child process with the default [delivery] limits. Prints one
 * line of key=value figures:
 *
 *   accepted        messages acknowledged with 250
 *   delivered       `delivered` events (one per recipient delivered)
 *   duplicates      recipients with more than one `delivered` event (must be 0)
 *   tail_s          seconds from the last acceptance to an empty queue (issue
 *                   17's target: <= 30 s; before the fix: over three minutes)
 *   accept_s        seconds the load took to be accepted
 *   peak_rss_mb     Petrel's peak resident memory
 *   deferred        `deferred` events (expected 0)
 *
 * Usage: npm run build && node dist/bench/many-domains.js [--messages 70000] [--sessions 20]
 */
import { join } from 'node:path';
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { connect, type Socket } from 'node:net';
import { startDnsServer } from '../test/helpers/dns-server.js';
import { arg, EventCounter, freePort, removeDir, rssMb, sleep, startPetrel, startSink, tempDir } from './lib.js';

/** Session - one pipelined SMTP client session: MAIL, RCPT and DATA in one write, then the body. */
class Session {
  private buffer = '';
  private waiting: Array<(code: number) => void> = [];
  private constructor(private readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.buffer += d.toString('latin1');
      let i: number;
      while ((i = this.buffer.indexOf('\n')) >= 0) {
        const line = this.buffer.slice(0, i);
        this.buffer = this.buffer.slice(i + 1);
        if (line[3] === '-') continue; // a continuation line
        this.waiting.shift()?.(Number(line.slice(0, 3)));
      }
    });
  }

  static async open(port: number): Promise<Session> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect({ port, host: '127.0.0.1' }, () => resolve(s));
      s.once('error', reject);
    });
    const s = new Session(socket);
    await s.reply();
    s.socket.write('EHLO load.bench\r\n');
    await s.reply();
    return s;
  }

  private reply(): Promise<number> {
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** send - one message to one recipient; true when it was accepted. */
  async send(to: string, n: number): Promise<boolean> {
    const replies = [this.reply(), this.reply(), this.reply()];
    this.socket.write(`MAIL FROM:<load@bench.example>\r\nRCPT TO:<${to}>\r\nDATA\r\n`);
    const [mail, rcpt, data] = await Promise.all(replies);
    if (data !== 354) return false;
    const end = this.reply();
    this.socket.write(`From: load@bench.example\r\nTo: ${to}\r\nSubject: ${n}\r\n\r\nmessage ${n}\r\n.\r\n`);
    return mail === 250 && rcpt === 250 && (await end) === 250;
  }

  close(): void {
    this.socket.end('QUIT\r\n');
  }
}

/** duplicates - recipients with more than one `delivered` event. */
async function duplicates(path: string): Promise<number> {
  const seen = new Set<string>();
  let dup = 0;
  for await (const line of createInterface({ input: createReadStream(path) })) {
    if (!line.includes('"event":"delivered"')) continue;
    const r = /"recipient":"([^"]+)"/.exec(line)?.[1] ?? '';
    if (seen.has(r)) dup++;
    else seen.add(r);
  }
  return dup;
}

async function main(): Promise<void> {
  const messages = Number(arg('messages', '70000'));
  const sessions = Number(arg('sessions', '20'));
  const dir = tempDir('petrel-bench-many-domains-');
  const sinkPort = await freePort();
  const port = await freePort();
  const dns = await startDnsServer({ '*.many.bench': { MX: [[10, 'mx.sink.bench']] }, 'mx.sink.bench': { A: ['127.0.0.1'] } });
  dns.queries.push = () => 0; // 70,000 domains: the bench does not keep the query log
  const sink = await startSink(sinkPort);
  const petrel = await startPetrel(
    dir,
    `hostname = "petrel.bench"
data_dir = "${join(dir, 'var')}"
[smtp]
listen = ["127.0.0.1:${port}"]
max_connections_per_client = 1000
[delivery]
smtp_port = ${sinkPort}
dns_servers = ["${dns.address}"]
[local]
domains = []
[admin]
listen = ""
[log]
level = "warn"
`,
  );
  try {
    const pid = petrel.child.pid!;
    const events = join(dir, 'var', 'log', 'events.jsonl');
    const counter = new EventCounter(events);
    let peak = 0;
    const sampler = setInterval(() => (peak = Math.max(peak, rssMb(pid).peak)), 200);
    const t0 = Date.now();
    let next = 0;
    let accepted = 0;
    await Promise.all(
      Array.from({ length: sessions }, async () => {
        const s = await Session.open(port);
        for (let i = next++; i < messages; i = next++) if (await s.send(`user@d${i}.many.bench`, i)) accepted++;
        s.close();
      }),
    );
    const tAccept = Date.now();
    const deadline = tAccept + 900_000;
    const ended = (): number => counter.get('delivered') + counter.get('failed') + counter.get('expired');
    while (counter.poll() && ended() < accepted) {
      if (Date.now() > deadline) throw new Error(`only ${ended()} of ${accepted} delivered after 15 minutes`);
      await sleep(20);
    }
    const tDone = Date.now();
    clearInterval(sampler);
    peak = Math.max(peak, rssMb(pid).peak);
    console.log(
      [
        `messages=${messages}`,
        `sessions=${sessions}`,
        `accepted=${accepted}`,
        `delivered=${counter.get('delivered')}`,
        `duplicates=${await duplicates(events)}`,
        `tail_s=${((tDone - tAccept) / 1000).toFixed(1)}`,
        `accept_s=${((tAccept - t0) / 1000).toFixed(1)}`,
        `peak_rss_mb=${peak.toFixed(0)}`,
        `deferred=${counter.get('deferred')}`,
        `failed=${counter.get('failed')}`,
      ].join(' '),
    );
  } finally {
    await petrel.stop();
    await sink.stop();
    await dns.close();
    removeDir(dir);
  }
}

main().catch((e) => {
  console.error(`bench/many-domains: ${(e as Error).message}`);
  process.exit(1);
});
