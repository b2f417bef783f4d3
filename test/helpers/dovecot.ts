/*
 * test/helpers/dovecot - a private Dovecot LMTP server (RFC 2033) for tests:
 * Debian's dovecot-core + dovecot-lmtpd, started in the foreground with its
 * own configuration, sockets, state and mail in a temporary directory,
 * listening on 127.0.0.1 and a free port. Nothing of the system's Dovecot is
 * used or touched. stop() ends it (SIGTERM, then SIGKILL of its process
 * group) and removes the directory.
 *
 * Users come from a passwd-file; mail goes to `maildir:<dir>/mail/%d/%n`
 * (user@domain -> mail/domain/user/{new,cur,tmp}), so a test can look for a
 * delivered message the way it does for Petrel's own Maildir.
 *
 * Privileges: Dovecot refuses to deliver mail as root ("Mail access not
 * allowed for root") and refuses uid 0 in a passwd-file. Run as root (as
 * here and in CI), mail is written as `nobody:nogroup` (the mail directory is
 * given to that user); run as another user, everything runs as that user.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { freePort, portOpen, tempDir, waitFor } from './petrel-harness.js';

export const DOVECOT_BIN = ['/usr/sbin/dovecot', '/usr/bin/dovecot'].find((p) => existsSync(p)) ?? 'dovecot';

export interface Dovecot {
  host: string;
  port: number;
  dir: string;
  /** Root of the mail: <dir>/mail. */
  mailRoot: string;
  /** Files in user@domain's new/ folder (empty when there is none yet). */
  newMessages(address: string): string[];
  /** Dovecot's own log so far. */
  log(): string;
  stop(): Promise<void>;
}

/** dovecotAvailable - null when Dovecot with LMTP can run here, else why not (for an explicit skip). */
export function dovecotAvailable(): string | null {
  const v = spawnSync(DOVECOT_BIN, ['--version'], { encoding: 'utf8' });
  if (v.error || v.status !== 0) return `dovecot is not installed (${v.error?.message ?? v.stderr}); apt-get install dovecot-core dovecot-lmtpd`;
  const lmtp = ['/usr/lib/dovecot/lmtp', '/usr/libexec/dovecot/lmtp'].some((p) => existsSync(p));
  if (!lmtp) return 'dovecot-lmtpd is not installed (no /usr/lib/dovecot/lmtp); apt-get install dovecot-lmtpd';
  return null;
}

function idOf(kind: 'passwd' | 'group', name: string): number | null {
  const r = spawnSync('getent', [kind, name], { encoding: 'utf8' });
  const f = r.status === 0 ? r.stdout.split(':') : [];
  return f[2] !== undefined ? Number(f[2]) : null;
}

/** startDovecot - a private Dovecot LMTP server with these users ("user@domain"). */
export async function startDovecot(users: readonly string[]): Promise<Dovecot> {
  const dir = tempDir('petrel-dovecot-');
  const host = '127.0.0.1';
  const port = await freePort(host);
  const mailRoot = join(dir, 'mail');
  for (const d of ['run', 'state', 'mail', 'home']) mkdirSync(join(dir, d));
  const me = userInfo();
  const root = me.uid === 0;
  const mailUser = root ? 'nobody' : me.username;
  // Dovecot wants group names, not numbers.
  const myGroup = spawnSync('id', ['-gn'], { encoding: 'utf8' }).stdout.trim() || String(me.gid);
  const mailGroup = root ? (idOf('group', 'nogroup') !== null ? 'nogroup' : 'nobody') : myGroup;
  if (root) {
    // mkdtemp makes the directory 0700: the mail user must be able to pass through it.
    chmodSync(dir, 0o755);
    const uid = idOf('passwd', mailUser) ?? 65534;
    const gid = idOf('group', mailGroup) ?? 65534;
    chownSync(join(dir, 'mail'), uid, gid);
    chownSync(join(dir, 'home'), uid, gid);
  }
  // base_dir holds unix sockets: keep it short (108 octets at most for a socket path).
  writeFileSync(join(dir, 'passwd'), users.map((u) => `${u}:{PLAIN}secret::::${join(dir, 'home', u)}::\n`).join(''));
  const internal = root ? 'root' : me.username;
  const conf = `# Private Dovecot for Petrel's tests (test/helpers/dovecot.ts)
base_dir = ${join(dir, 'run')}
state_dir = ${join(dir, 'state')}
log_path = ${join(dir, 'dovecot.log')}
info_log_path = ${join(dir, 'dovecot.log')}
protocols = lmtp
listen = ${host}
ssl = no
default_internal_user = ${internal}
default_internal_group = ${root ? 'root' : myGroup}
default_login_user = ${internal}
first_valid_uid = 1
first_valid_gid = 0
mail_uid = ${mailUser}
mail_gid = ${mailGroup}
mail_location = maildir:${mailRoot}/%d/%n
lmtp_save_to_detail_mailbox = no
passdb {
  driver = passwd-file
  args = ${join(dir, 'passwd')}
}
userdb {
  driver = passwd-file
  args = ${join(dir, 'passwd')}
}
service lmtp {
  inet_listener lmtp {
    address = ${host}
    port = ${port}
  }
  unix_listener lmtp {
    mode = 0600
  }
}
service anvil {
  chroot =
}
service stats {
  chroot =
}
`;
  const file = join(dir, 'dovecot.conf');
  writeFileSync(file, conf);
  // Its own process group, so stop() can end every Dovecot process at once.
  const proc: ChildProcess = spawn(DOVECOT_BIN, ['-c', file, '-F'], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let output = '';
  proc.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<void>((resolve) => proc.on('exit', () => resolve()));
  const readLog = (): string => {
    try {
      return readFileSync(join(dir, 'dovecot.log'), 'utf8');
    } catch {
      return '';
    }
  };
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    if (proc.exitCode === null && proc.signalCode === null) {
      try {
        process.kill(-proc.pid!, 'SIGTERM');
      } catch {
        proc.kill('SIGTERM');
      }
      const t = setTimeout(() => {
        try {
          process.kill(-proc.pid!, 'SIGKILL');
        } catch {
          // already gone
        }
      }, 5000);
      await exited;
      clearTimeout(t);
    }
    // Children (auth, lmtp) may outlive the master by a moment: end the group.
    try {
      process.kill(-proc.pid!, 'SIGKILL');
    } catch {
      // none left
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(async () => proc.exitCode !== null || (await portOpen(host, port)), 15_000, 'dovecot to listen');
    if (proc.exitCode !== null) throw new Error(`dovecot exited with ${proc.exitCode}: ${output}${readLog()}`);
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    host,
    port,
    dir,
    mailRoot,
    newMessages(address: string) {
      const at = address.lastIndexOf('@');
      const d = join(mailRoot, address.slice(at + 1), address.slice(0, at), 'new');
      return existsSync(d) ? readdirSync(d).map((f) => join(d, f)) : [];
    },
    log: readLog,
    stop,
  };
}
