/*
 * bench/postfix - a throw-away Postfix relay for side-by-side benchmarks
 * (started by test/helpers/postfix's launchPostfix): its own config, queue
 * and data directories under a temporary directory, smtpd on a loopback
 * port, every message relayed to one next hop
 * (relayhost = [127.0.0.1]:PORT). Defaults otherwise, so its durability is
 * Postfix's own (queue files fsync'd before 250). Needs root (Postfix's
 * master refuses otherwise) and the Debian package `postfix`.
 */
import { closeSync, fstatSync, openSync, readdirSync, readFileSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { launchPostfix } from '../test/helpers/postfix.js';

export interface PostfixRelay {
  port: number;
  dir: string;
  /** CPU time (user+system, ms) of every Postfix process, living and reaped. */
  cpuMs(): number;
  /** Resident memory of all live Postfix processes, MB. */
  rssMb(): number;
  /** A line of the mail log saying Postfix gave up on a bounce it could not write, or null. */
  gaveUp(): string | null;
  /** Every live Postfix process (the master and its children: processes it forks later inherit the master's CPU affinity). */
  pids(): number[];
  stop(): Promise<void>;
}

/** pidsUnder - the process and all its descendants. */
function pidsUnder(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(d));
      children.set(ppid, list);
    } catch {
      // gone already
    }
  }
  const out: number[] = [];
  const walk = (p: number): void => {
    out.push(p);
    for (const c of children.get(p) ?? []) walk(c);
  };
  walk(root);
  return out;
}

function statFields(pid: number): string[] | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}

export async function startPostfixRelay(opts: { nextHop: number; recipientLimit?: number; extra?: string[] }): Promise<PostfixRelay> {
  const pf = await launchPostfix({
    prefix: 'petrel-bench-postfix-',
    hostname: 'postfix.bench.test',
    main: ['relay_domains =', `relayhost = [127.0.0.1]:${opts.nextHop}`, `smtpd_recipient_limit = ${opts.recipientLimit ?? 1000}`, ...(opts.extra ?? [])],
  });
  const { port, dir, data } = pf;
  const masterPid = Number(readFileSync(join(data, 'master.lock'), 'utf8').trim());
  let logOffset = 0;
  let logTail = '';
  return {
    port,
    dir,
    pids: () => pidsUnder(masterPid),
    cpuMs() {
      const TICK = 10;
      let ticks = 0;
      const pids = pidsUnder(masterPid);
      for (const pid of pids) {
        const f = statFields(pid);
        if (!f) continue;
        ticks += Number(f[11]) + Number(f[12]);
        // Children already reaped by this process (daemons that exited) are in cutime/cstime.
        ticks += Number(f[13]) + Number(f[14]);
      }
      return ticks * TICK;
    },
    rssMb() {
      let kb = 0;
      for (const pid of pidsUnder(masterPid)) {
        try {
          kb += Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
        } catch {
          // gone
        }
      }
      return kb / 1024;
    },
    gaveUp() {
      // Read only what was appended since the last call (the log of 100,000
      // bounced recipients is tens of MB): a few lines of context are kept.
      let fd: number;
      try {
        fd = openSync(join(dir, 'maillog'), 'r');
      } catch {
        return null;
      }
      try {
        const size = fstatSync(fd).size;
        if (size <= logOffset) return null;
        const buf = Buffer.alloc(size - logOffset);
        readSync(fd, buf, 0, buf.length, logOffset);
        logOffset = size;
        logTail = (logTail + buf.toString('latin1')).slice(-4000);
      } finally {
        closeSync(fd);
      }
      const failed = /^.*status=deferred \(bounce failed\).*$/m.exec(logTail);
      if (!failed) return null;
      const cause = /warning: \w+: (queue file size limit exceeded)/.exec(logTail);
      return `bounce failed${cause ? ` (${cause[1]})` : ''}`;
    },
    stop: pf.stop,
  };
}
