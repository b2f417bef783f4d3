/*
 * inbound/submission-users - the users who may authenticate on submission
 * listeners (`[smtp] users_file`): one "user:<hash>" a line, "#" comments.
 * The hash is scrypt (RFC 7914) in a self-describing form:
 *   $scrypt$N=16384,r=8,p=1$<salt, base64>$<key, base64>
 * `petrel passwd USER` writes such lines (hashPassword + setUser).
 *
 * Invariants: passwords are never stored or logged in clear; verification
 * runs scrypt on the thread pool and compares in constant time; an unknown
 * user costs the same scrypt work as a known one (no user enumeration by
 * timing); a malformed line is reported with its line number and skipped.
 * Untrusted input: the user name and password a client sends.
 */
import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { readFileSync, writeFileSync, renameSync, openSync, fsyncSync, closeSync, existsSync } from 'node:fs';
import { dirname, join, basename } from 'node:path';
import { readTableFile } from '../core/table-file.js';

const DEFAULT = { N: 16384, r: 8, p: 1, keylen: 32 };

function scryptAsync(password: string, salt: Buffer, keylen: number, opts: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => scrypt(password, salt, keylen, { ...opts, maxmem: 128 * opts.N! * opts.r! * 2 }, (e, key) => (e ? reject(e) : resolve(key))));
}

/** hashPassword - a new "$scrypt$..." string for this password. */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scryptAsync(password, salt, DEFAULT.keylen, { N: DEFAULT.N, r: DEFAULT.r, p: DEFAULT.p });
  return `$scrypt$N=${DEFAULT.N},r=${DEFAULT.r},p=${DEFAULT.p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

interface Parsed {
  N: number;
  r: number;
  p: number;
  salt: Buffer;
  key: Buffer;
}

function parseHash(hash: string): Parsed | null {
  const m = /^\$scrypt\$N=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$/.exec(hash);
  if (!m) return null;
  const N = Number(m[1]);
  const r = Number(m[2]);
  const p = Number(m[3]);
  // Bounds keep a hostile or mistyped file from asking for gigabytes.
  if (N < 2 || N > 2 ** 20 || (N & (N - 1)) !== 0 || r < 1 || r > 32 || p < 1 || p > 16) return null;
  return { N, r, p, salt: Buffer.from(m[4]!, 'base64'), key: Buffer.from(m[5]!, 'base64') };
}

/** verifyPassword - does the password match the hash? */
export async function verifyPassword(password: string, hash: string): Promise<boolean> {
  const h = parseHash(hash);
  if (!h || h.key.length < 16) return false;
  const key = await scryptAsync(password, h.salt, h.key.length, { N: h.N, r: h.r, p: h.p });
  return timingSafeEqual(key, h.key);
}

/** A hash of a random password: checked against when the user is unknown, so timing says nothing. */
let decoy: Promise<string> | null = null;

export class SubmissionUsers {
  private users = new Map<string, string>();
  readonly problems: string[] = [];

  constructor(private readonly file: string) {
    this.reload();
  }

  get configured(): boolean {
    return this.file !== '';
  }

  reload(): void {
    if (!this.file) return;
    const read = readTableFile(this.file);
    if ('problem' in read) {
      this.problems.push(read.problem);
      return;
    }
    const text = read.text;
    const users = new Map<string, string>();
    text.split(/\r?\n/).forEach((raw, i) => {
      const line = raw.trim();
      if (!line || line.startsWith('#')) return;
      const colon = line.indexOf(':');
      const user = colon > 0 ? line.slice(0, colon) : '';
      const hash = colon > 0 ? line.slice(colon + 1) : '';
      if (!user || !parseHash(hash)) {
        this.problems.push(`${this.file}:${i + 1}: not "user:$scrypt$..."`);
        return;
      }
      users.set(user, hash);
    });
    this.users = users;
  }

  /** check - true when user and password match; always does one scrypt. */
  async check(user: string, password: string): Promise<boolean> {
    const hash = this.users.get(user);
    if (hash) return verifyPassword(password, hash);
    decoy ??= hashPassword(randomBytes(16).toString('hex'));
    await verifyPassword(password, await decoy);
    return false;
  }
}

/** setUser - add or replace one user's line in FILE (written to a temporary name, fsync'd, renamed). */
export async function setUser(file: string, user: string, password: string): Promise<'added' | 'changed'> {
  if (!/^[^\s:#]+$/.test(user)) throw new Error(`user names cannot contain spaces, ":" or "#": ${JSON.stringify(user)}`);
  const hash = await hashPassword(password);
  const lines = existsSync(file) ? readFileSync(file, 'utf8').split(/\r?\n/) : ['# Petrel submission users: user:<scrypt hash> (petrel passwd USER)'];
  let found = false;
  const out = lines
    .map((l) => {
      if (l.startsWith(`${user}:`)) {
        found = true;
        return `${user}:${hash}`;
      }
      return l;
    })
    .filter((l, i, a) => !(l === '' && i === a.length - 1));
  if (!found) out.push(`${user}:${hash}`);
  const tmp = join(dirname(file), `.${basename(file)}.${process.pid}.tmp`);
  writeFileSync(tmp, out.join('\n') + '\n', { mode: 0o600 });
  const fd = openSync(tmp, 'r');
  fsyncSync(fd);
  closeSync(fd);
  renameSync(tmp, file);
  return found ? 'changed' : 'added';
}
