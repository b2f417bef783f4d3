/*
 * test/helpers/postfix - a throw-away Postfix instance on loopback, for the
 * interop tests (receiving; startPostfix) and bench/postfix (relaying; both
 * through launchPostfix): its own config_directory, queue_directory and
 * data_directory under a temporary directory, smtpd on 127.0.0.1 at a high
 * port, every message delivered to the discard: transport, and its log
 * written to a file (maillog_file) so tests can count what it delivered.
 *
 * Postfix's master must start as root (it drops to the `postfix` user for its
 * daemons). When it cannot be started, launchPostfix throws with the reason:
 * the test fails, it is never skipped.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { freePort, portOpen } from './petrel-harness.js';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';

export interface PostfixInstance {
  port: number;
  dir: string;
  /** Lines of Postfix's log. */
  log(): string[];
  /** Recipients discarded (delivered) so far, from "status=sent" lines of the discard transport. */
  delivered(): string[];
  stop(): Promise<void>;
}

export interface PostfixOptions {
  recipientLimit: number;
}

/** postfixCommand - run `postfix -c DIR <verb>` (through `script` so its errors reach us, not syslog). */
function postfixCommand(conf: string, verb: string): { ok: boolean; output: string } {
  const r = spawnSync('script', ['-qc', `postfix -c ${conf} ${verb}`, '/dev/null'], { encoding: 'utf8', timeout: 60_000 });
  return { ok: r.status === 0 && !/fatal/.test(r.stdout ?? ''), output: `${r.stdout ?? ''}${r.stderr ?? ''}`.trim() };
}

/** A private Postfix, started: where it is, and how to stop it (directories removed). */
export interface LaunchedPostfix {
  port: number;
  dir: string;
  conf: string;
  queue: string;
  data: string;
  maillog: string;
  stop(): Promise<void>;
}

/**
 * launchPostfix - configure and start a private Postfix with smtpd on a free
 * loopback port; `main` adds its role's main.cf lines (where mail goes, the
 * recipient limit). Shared by the interop tests and bench/postfix. Throws with
 * the reason when it cannot start.
 */
export async function launchPostfix(o: { prefix: string; hostname: string; main: string[]; master?: string[] }): Promise<LaunchedPostfix> {
  if (!existsSync('/usr/sbin/postfix')) throw new Error('Postfix is not installed (Debian package "postfix" is needed)');
  if (userInfo().uid !== 0) throw new Error(`a private Postfix instance must be started as root (its master refuses otherwise); running as uid ${userInfo().uid}`);
  let postfixUid: number;
  try {
    postfixUid = Number(execFileSync('id', ['-u', 'postfix'], { encoding: 'utf8' }).trim());
  } catch {
    throw new Error('the "postfix" user does not exist (install the Debian postfix package)');
  }
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), o.prefix));
  chmodSync(dir, 0o755);
  const conf = join(dir, 'conf');
  const queue = join(dir, 'queue');
  const data = join(dir, 'data');
  const maillog = join(dir, 'maillog');
  for (const d of [conf, queue, data]) mkdirSync(d);
  chownSync(data, postfixUid, -1);
  writeFileSync(
    join(conf, 'main.cf'),
    [
      'compatibility_level = 3.6',
      `queue_directory = ${queue}`,
      `data_directory = ${data}`,
      'inet_interfaces = 127.0.0.1',
      'inet_protocols = ipv4',
      `myhostname = ${o.hostname}`,
      'mydestination =',
      'mynetworks = 127.0.0.0/8',
      'smtpd_relay_restrictions = permit_mynetworks, reject',
      `maillog_file = ${maillog}`,
      `maillog_file_prefixes = ${dir}`,
      'alias_maps =',
      'alias_database =',
      'smtputf8_enable = yes',
      ...o.main,
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
      ...(o.master ?? []),
      '',
    ].join('\n'),
  );
  const started = postfixCommand(conf, 'start');
  if (!started.ok) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`postfix -c ${conf} start failed: ${started.output}`);
  }
  const stop = async (): Promise<void> => {
    postfixCommand(conf, 'stop');
    // Let master and its children exit before the directories go.
    for (let i = 0; i < 50 && existsSync(join(queue, 'pid', 'master.pid')); i++) await new Promise((r) => setTimeout(r, 100));
    rmSync(dir, { recursive: true, force: true });
  };
  // Wait until smtpd answers.
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (await portOpen('127.0.0.1', port)) break;
    if (Date.now() > deadline) {
      const tail = existsSync(maillog) ? readFileSync(maillog, 'utf8').slice(-2000) : '';
      await stop();
      throw new Error(`postfix started but nothing listens on 127.0.0.1:${port}: ${tail}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { port, dir, conf, queue, data, maillog, stop };
}

/** startPostfix - a private Postfix that receives and discards (the interop tests' next hop). */
export async function startPostfix(o: PostfixOptions): Promise<PostfixInstance> {
  const pf = await launchPostfix({
    prefix: 'petrel-postfix-',
    hostname: 'postfix.interop.test',
    main: [
      'relay_domains = static:ALL',
      'smtpd_recipient_restrictions = permit_mynetworks, reject',
      `smtpd_recipient_limit = ${o.recipientLimit}`,
      'default_transport = discard:',
      'relay_transport = discard:',
      'local_transport = discard:',
      'default_destination_recipient_limit = 1000',
    ],
  });
  const log = (): string[] => (existsSync(pf.maillog) ? readFileSync(pf.maillog, 'utf8').split('\n').filter(Boolean) : []);
  return {
    port: pf.port,
    dir: pf.dir,
    log,
    delivered: () =>
      log()
        .filter((l) => l.includes('postfix/discard') && l.includes('status=sent'))
        .map((l) => /to=<([^>]*)>/.exec(l)?.[1] ?? ''),
    stop: pf.stop,
  };
}
