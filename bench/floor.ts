/*
 * bench/floor - the least CPU a Node process spends taking smtp-source's
 * messages: a server that only finds line ends and the end of data and
 * answers every command (no parsing, no checks, no storage, no relay), on
 * the same loopback sockets and the same load as bench/relay. What Petrel's
 * inbound side costs beyond this is Petrel's own; this much is Node's and
 * the kernel's for any SMTP server written on it (BENCHMARKS.md, "Issue 17,
 * seventh round").
 *
 * Written by hand: it is the thing measured, thirty lines that must do
 * nothing more than the protocol's minimum.
 *
 * Usage: node dist/bench/floor.js [--messages 10000] [--sessions 20] [--size 4096] [--recipients 1]
 *   floor messages=10000 recipients=10 size=4096 msgs_per_s=862 cpu_ms_per_msg=0.513
 */
import { createServer, type Socket } from 'node:net';
import { arg, freePort, run } from './lib.js';

async function main(): Promise<void> {
  const messages = Number(arg('messages', '10000'));
  const sessions = Number(arg('sessions', '20'));
  const size = Number(arg('size', '4096'));
  const recipients = Number(arg('recipients', '1'));
  let taken = 0;
  const server = createServer((s: Socket) => {
    s.setNoDelay(true);
    s.on('error', () => undefined);
    let inData = false;
    let buf: Buffer = Buffer.alloc(0);
    s.write('220 floor ESMTP\r\n');
    s.on('data', (chunk: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      let out = '';
      for (;;) {
        if (inData) {
          const end = buf.indexOf('\r\n.\r\n');
          if (end < 0) {
            // Keep what may be the start of the end mark.
            if (buf.length > 4) buf = buf.subarray(buf.length - 4);
            break;
          }
          buf = buf.subarray(end + 5);
          inData = false;
          taken++;
          out += '250 2.0.0 Ok: queued\r\n';
          continue;
        }
        const lf = buf.indexOf(10);
        if (lf < 0) break;
        const verb = buf.subarray(0, Math.min(4, lf)).toString('latin1').toUpperCase();
        buf = buf.subarray(lf + 1);
        if (verb === 'QUIT') return void s.end(`${out}221 2.0.0 Bye\r\n`);
        if (verb === 'DATA') {
          inData = true;
          out += '354 End data with <CR><LF>.<CR><LF>\r\n';
        } else if (verb === 'EHLO') out += '250-floor\r\n250-PIPELINING\r\n250 8BITMIME\r\n';
        else out += '250 2.1.0 Ok\r\n';
      }
      if (out) s.write(out);
    });
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  try {
    const cpu0 = process.cpuUsage();
    const t0 = Date.now();
    await run('smtp-source', ['-s', String(sessions), '-m', String(messages), '-l', String(size), '-r', String(recipients), '-f', 'bench@example.com', '-t', 'rcpt@example.net', `127.0.0.1:${port}`]);
    const secs = (Date.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    if (taken !== messages) throw new Error(`took ${taken} of ${messages} messages`);
    console.log(
      `floor messages=${messages} recipients=${recipients} size=${size} msgs_per_s=${(messages / secs).toFixed(0)} cpu_ms_per_msg=${((cpu.user + cpu.system) / 1000 / messages).toFixed(3)}`,
    );
  } finally {
    server.close();
  }
}

main().catch((e) => {
  console.error(`bench/floor: ${(e as Error).message}`);
  process.exit(1);
});
