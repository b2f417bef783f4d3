/*
 * bench/inbound - Petrel's inbound side alone: its SMTP listener and
 * sessions (inbound/server, inbound/smtp-session) and the enqueue path
 * (header scan, line wrap, Received:) into an in-memory queue, in this one
 * process, under the same smtp-source load as bench/relay and bench/floor.
 * No storage on disk, no delivery, no workers: what is measured is the CPU a
 * message costs the SMTP side, to set against bench/floor (the least a Node
 * process can spend on the same load) and to compare changes to the session
 * without the noise of a whole relay (BENCHMARKS.md, "Issue 17, seventh
 * round").
 *
 * Usage: node dist/bench/inbound.js [--messages 10000] [--sessions 20] [--size 4096] [--recipients 1]
 *   inbound messages=10000 recipients=10 size=4096 msgs_per_s=1480 cpu_ms_per_msg=0.611
 */
import { parseConfigText } from '../src/config/load.js';
import { Enqueuer } from '../src/enqueue/enqueue.js';
import { RecipientPolicy } from '../src/inbound/policy.js';
import { InboundServer } from '../src/inbound/server.js';
import type { SessionContext } from '../src/inbound/smtp-session.js';
import { SubmissionUsers } from '../src/inbound/submission-users.js';
import { LocalUsers } from '../src/local/users.js';
import type { Trace } from '../src/log/trace.js';
import { MemoryStore } from '../src/queue/memory-store.js';
import { Router } from '../src/routing/router.js';
import { arg, freePort, removeDir, run, tempDir } from './lib.js';

/** A Trace that drops everything but errors (which end the run). */
function quietTrace(errors: string[]): Trace {
  const t = {
    debug: () => undefined,
    info: () => undefined,
    warn: () => undefined,
    trace: () => undefined,
    fatal: (o: unknown) => errors.push(JSON.stringify(o)),
    error: (o: unknown) => errors.push(JSON.stringify(o)),
    child: () => t,
  };
  // The listener and its sessions call only the methods above; pino's whole Logger type is not needed.
  return t as unknown as Trace;
}

async function main(): Promise<void> {
  const messages = Number(arg('messages', '10000'));
  const sessions = Number(arg('sessions', '20'));
  const size = Number(arg('size', '4096'));
  const recipients = Number(arg('recipients', '1'));
  const dir = tempDir('petrel-bench-inbound-');
  const port = await freePort();
  const config = parseConfigText(
    `hostname = "petrel.bench"
data_dir = "${dir}"
[smtp]
listen = ["127.0.0.1:${port}"]
max_connections_per_client = 1000
relay_networks = ["127.0.0.0/8"]
[local]
domains = []
`,
    '<bench/inbound>',
    dir,
  );
  const errors: string[] = [];
  const store = new MemoryStore();
  let accepted = 0;
  const ctx: SessionContext = {
    config,
    enqueuer: new Enqueuer({ hostname: config.hostname, store, router: new Router(config) }),
    policy: new RecipientPolicy(config, new LocalUsers('')),
    tls: null,
    trace: quietTrace(errors),
    lowOnSpace: () => false,
    accepting: () => true,
    users: new SubmissionUsers(''),
    authFailed: () => 0,
    onAccepted: () => void accepted++,
  };
  const server = new InboundServer(ctx);
  await server.listen();
  try {
    const cpu0 = process.cpuUsage();
    const t0 = Date.now();
    await run('smtp-source', ['-s', String(sessions), '-m', String(messages), '-l', String(size), '-r', String(recipients), '-f', 'bench@example.com', '-t', 'rcpt@example.net', `127.0.0.1:${port}`]);
    const secs = (Date.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    if (errors.length) throw new Error(`session errors: ${errors.slice(0, 3).join('; ')}`);
    if (accepted !== messages) throw new Error(`accepted ${accepted} of ${messages} messages`);
    console.log(
      `inbound messages=${messages} recipients=${recipients} size=${size} msgs_per_s=${(messages / secs).toFixed(0)} cpu_ms_per_msg=${((cpu.user + cpu.system) / 1000 / messages).toFixed(3)}`,
    );
  } finally {
    await server.close();
    removeDir(dir);
  }
}

main().catch((e) => {
  console.error(`bench/inbound: ${(e as Error).message}`);
  process.exit(1);
});
