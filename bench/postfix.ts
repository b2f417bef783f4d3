/*
 * bench/postfix - a throw-away Postfix relay for side-by-side benchmarks:
 * its own config, queue and data directories under a temporary directory,
 * smtpd on a loopback port, every message relayed to one next hop
 * (relayhost = [127.0.0.1]:PORT). Defaults otherwise, so its durability is
 * Postfix's own (queue files fsync'd before 250). Needs root (Postfix's
 * master refuses otherwise) and the Debian package `postfix`.
 */
import { spawnSync, execFileSync } from 'node:child_process';
import { chmodSync, chownSync, closeSync, fstatSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from 'node:net';
import { freePort, sleep, tempDir } from './lib.js';

export interface PostfixRelay {
  port: number;
  dir: string;
  /** CPU time (user+system, ms) of every Postfix process, living and reaped. */
  cpuMs(): number;
  /** Resident memory of all live Postfix processes, MB. */
  rssMb(): number;
  /** A line of the mail log saying Postfix gave up on a bounce it could not write, or null. */
  gaveUp(): string | null;
  stop(): Promise<void>;
}

function postfix(conf: string, verb: string): { ok: boolean; out: string } {
  const r = spawnSync('script', ['-qc', `postfix -c ${conf} ${verb}`, '/dev/null'], { encoding: 'utf8', timeout: 60_000 });
  return { ok: r.status === 0 && !/fatal/.test(r.stdout ?? ''), out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
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
  const postfixUid = Number(execFileSync('id', ['-u', 'postfix'], { encoding: 'utf8' }).trim());
  const dir = tempDir('petrel-bench-postfix-');
  chmodSync(dir, 0o755);
  const conf = join(dir, 'conf');
  const queue = join(dir, 'queue');
  const data = join(dir, 'data');
  for (const d of [conf, queue, data]) mkdirSync(d);
  chownSync(data, postfixUid, -1);
  const port = await freePort();
  writeFileSync(
    join(conf, 'main.cf'),
    [
      'compatibility_level = 3.6',
      `queue_directory = ${queue}`,
      `data_directory = ${data}`,
      'inet_interfaces = 127.0.0.1',
      'inet_protocols = ipv4',
      'myhostname = postfix.bench.test',
      'mydestination =',
      'mynetworks = 127.0.0.0/8',
      'relay_domains =',
      'smtpd_relay_restrictions = permit_mynetworks, reject',
      `relayhost = [127.0.0.1]:${opts.nextHop}`,
      `smtpd_recipient_limit = ${opts.recipientLimit ?? 1000}`,
      'alias_maps =',
      'alias_database =',
      `maillog_file = ${join(dir, 'maillog')}`,
      `maillog_file_prefixes = ${dir}`,
      'smtputf8_enable = yes',
      ...(opts.extra ?? []),
      '',
    ].join('\n'),
  );
  writeFileSync(
    join(conf, 'master.cf'),
    [
      `127.0.0.1:${port} inet n - n - - smtpd`,
      'pickup unix n - n 60 1 pickup',
      'cleanup unix n - n - 0 cleanup',
      'qmgr unix n - n 300 1 qmgr',
      'tlsmgr unix - - n 1000? 1 tlsmgr',
      'rewrite unix - - n - - trivial-rewrite',
      'bounce unix - - n - 0 bounce',
      'defer unix - - n - 0 bounce',
      'trace unix - - n - 0 bounce',
      'verify unix - - n - 1 verify',
      'flush unix n - n 1000? 0 flush',
      'proxymap unix - - n - - proxymap',
      'showq unix n - n - - showq',
      'error unix - - n - - error',
      'retry unix - - n - - error',
      'discard unix - - n - - discard',
      'smtp unix - - n - - smtp',
      'relay unix - - n - - smtp',
      'anvil unix - - n - 1 anvil',
      'scache unix - - n - 1 scache',
      'postlog unix-dgram n - n - 1 postlogd',
      '',
    ].join('\n'),
  );
  const started = postfix(conf, 'start');
  if (!started.ok) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`postfix start failed: ${started.out}`);
  }
  for (let i = 0; ; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const s = connect({ host: '127.0.0.1', port }, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (up) break;
    if (i > 150) throw new Error('postfix did not listen');
    await sleep(100);
  }
  const masterPid = Number(readFileSync(join(data, 'master.lock'), 'utf8').trim());
  let logOffset = 0;
  let logTail = '';
  return {
    port,
    dir,
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
    async stop() {
      postfix(conf, 'stop');
      await sleep(500);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
