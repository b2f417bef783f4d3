/*
 * bench/recipients - one message with many recipients (default 100,000)
 * through a whole Petrel: accepted over SMTP (pipelined RCPTs), relayed to a
 * peer that takes 100 recipients per transaction (452 after that). Prints:
 *
 *   accept_s      SMTP session start to the 250 after DATA
 *   deliver_s     the 250 after DATA to the last recipient delivered
 *   transactions  transactions the peer saw
 *   peak_rss_mb   Petrel's peak resident memory
 *
 * Usage: node dist/bench/recipients.js [--recipients 100000] [--per-transaction 100] [--fail]
 *   --fail: the peer refuses every recipient (550): measures the one report for all of them.
 */
import { join } from 'node:path';
import { SmtpTalk } from '../test/helpers/smtp-talk.js';
import { startPeer } from '../test/helpers/test-peer.js';
import { arg, EventCounter, freePort, removeDir, rssMb, sleep, startPetrel, tempDir } from './lib.js';

async function main(): Promise<void> {
  const n = Number(arg('recipients', '100000'));
  const per = Number(arg('per-transaction', '100'));
  const fail = process.argv.includes('--fail');
  const peer = await startPeer(fail ? { rcptReply: () => '550 5.1.1 No such user' } : { rcptLimit: { after: per, reply: '452 4.5.3 Too many recipients' } });
  const dir = tempDir('petrel-bench-rcpt-');
  const port = await freePort();
  const petrel = await startPetrel(
    dir,
    `hostname = "petrel.bench"\ndata_dir = "${join(dir, 'var')}"\n[smtp]\nlisten = ["127.0.0.1:${port}"]\nmax_recipients = ${n}\n[delivery]\nsmarthost = "127.0.0.1:${peer.port}"\nmax_recipients_per_transaction = 1000\n[local]\ndomains = ["home.test"]\n[admin]\nlisten = ""\n[log]\nlevel = "warn"\n`,
  );
  try {
    const pid = petrel.child.pid!;
    let peak = 0;
    const sampler = setInterval(() => (peak = Math.max(peak, rssMb(pid).peak)), 100);
    const counter = new EventCounter(join(dir, 'var', 'log', 'events.jsonl'));
    const t0 = Date.now();
    const c = await SmtpTalk.open(port);
    await c.read();
    await c.cmd('EHLO bench.test');
    let batch = 'MAIL FROM:<alice@home.test>\r\n';
    for (let i = 0; i < n; i++) batch += `RCPT TO:<user${i}@far.example>\r\n`;
    c.write(batch + 'DATA\r\n');
    for (let i = 0; i < n + 2; i++) await c.read(120_000);
    c.write('Subject: bench\r\n\r\nhello\r\n.\r\n');
    const r = await c.read(120_000);
    if (r?.code !== 250) throw new Error(`not accepted: ${r?.code}`);
    c.close();
    const t1 = Date.now();
    const kind = fail ? 'failed' : 'delivered';
    while (counter.poll() && counter.get(kind) < n) {
      if (Date.now() - t1 > 600_000) throw new Error(`only ${counter.get(kind)} ${kind}`);
      await sleep(20);
    }
    const t2 = Date.now();
    if (fail) while (counter.poll() && counter.get('delivered') < 1) await sleep(20); // the report, delivered locally
    const t3 = Date.now();
    clearInterval(sampler);
    peak = Math.max(peak, rssMb(pid).peak);
    console.log(
      [
        `recipients=${n}`,
        `mode=${fail ? 'fail-all' : `limit-${per}`}`,
        `accept_s=${((t1 - t0) / 1000).toFixed(2)}`,
        `deliver_s=${((t2 - t1) / 1000).toFixed(2)}`,
        ...(fail ? [`report_in_mailbox_s=${((t3 - t1) / 1000).toFixed(2)}`] : []),
        `transactions=${peer.transactions.length}`,
        `peak_rss_mb=${peak.toFixed(0)}`,
      ].join(' '),
    );
  } finally {
    await petrel.stop();
    await peer.close();
    removeDir(dir);
  }
}

main().catch((e) => {
  console.error(`bench/recipients: ${(e as Error).message}`);
  process.exit(1);
});
