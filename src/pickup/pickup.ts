/*
 * pickup/pickup - the pickup directory (`data_dir/pickup/`): messages dropped
 * there as files are queued like any other (Postfix's pickup). The protocol
 * for writers and the file format are in docs/connectors.md.
 *
 * The directory is watched (fs.watch) and scanned every 2 seconds as a
 * safety net (a watch can miss events, e.g. on network file systems). Only
 * regular files directly in pickup/ whose names do not start with "." are
 * read: writers create ".name" (or work in pickup/tmp/) and rename when done,
 * so a file is never read half-written.
 *
 * For each file: the envelope comes from its header (pickup/envelope); the
 * message, with X-Envelope-*, Bcc removed, a Received: and (when missing) a
 * Date: added, line ends normalised to CR LF, goes through the Enqueuer like
 * SMTP mail (so aliases are expanded, Message-ID added, limits applied,
 * and it is DKIM-signed when its From: domain has a [[dkim]] key, as
 * submission mail is; a signature that cannot be made leaves the file to be
 * tried again, never queued unsigned).
 *
 * Invariants (seed 004: nothing is ever deleted because of an error):
 * - a file is deleted only after Enqueuer.commit() resolved (the message is
 *   durable in the queue); the directory is then fsync'd;
 * - a file that cannot be used (no sender, no recipient, a bad address, too
 *   big, NUL octets, too many Received:, not a regular file, unreadable) is
 *   moved to pickup/bad/ with a `<name>.reason` file, a `pickup_rejected`
 *   event in the event log and a trace line, and stays there: it is never
 *   deleted and never read again;
 * - a temporary failure (the queue cannot store now) leaves the file where it
 *   is; it is tried again after a pause;
 * - one file at a time: memory is bounded by the header limit, not the
 *   number or size of files.
 *
 * Untrusted input: file names and contents (any local user who may write to
 * pickup/ can submit mail, as with sendmail itself). Symbolic links and files
 * with several hard links are refused (moved to bad/ unread), so the
 * directory cannot be used to mail out files its writer could not read.
 */
import { constants, watch, type FSWatcher } from 'node:fs';
import { lstat, mkdir, open, readdir, rename, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { errno, fsyncDir, publishNoReplace } from '../core/durable-fs.js';
import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import { CrlfNormalizer } from '../core/crlf.js';
import { hasHeader, parseHeaderSection } from '../core/headers.js';
import { EnqueueRejected, type Enqueuer, type Envelope } from '../enqueue/enqueue.js';
import { rfc5322Date } from '../core/dates.js';
import { makeEvent, type MailEvent } from '../log/events.js';
import type { Trace } from '../log/trace.js';
import { headerEnvelope } from './envelope.js';

/** Largest header section read (the envelope must be in it). */
export const MAX_HEADER = 1024 * 1024;

/** Read size. */
const CHUNK = 64 * 1024;

export interface PickupOptions {
  config: Config;
  enqueuer: Enqueuer;
  trace: Trace;
  /** Safety-net scan interval. */
  scanIntervalMs?: number;
  /** Pause before a file that failed temporarily is tried again. */
  retryMs?: number;
  /** Writes an event to the event log (through the store): here, `pickup_rejected`. */
  record?: (events: MailEvent[]) => Promise<void>;
}

/** Why a file goes to bad/ (permanent) rather than being tried again. */
class Unusable extends Error {}



export class PickupDirectory {
  readonly dir: string;
  readonly badDir: string;
  private watcher: FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private again = false;
  private stopped = true;
  /** Files that failed temporarily: not before this time (only names present in the directory). */
  private notBefore = new Map<string, number>();
  /** Counters for tests and metrics. */
  readonly stats = { queued: 0, bad: 0, temporary: 0 };

  constructor(private readonly options: PickupOptions) {
    this.dir = join(options.config.data_dir, 'pickup');
    this.badDir = join(this.dir, 'bad');
  }

  async start(): Promise<void> {
    await mkdir(this.badDir, { recursive: true });
    this.stopped = false;
    this.startWatch();
    this.timer = setInterval(() => this.kick(), this.options.scanIntervalMs ?? 2000);
    this.timer.unref();
    this.kick();
  }

  private startWatch(): void {
    try {
      this.watcher = watch(this.dir, { persistent: false }, () => this.kick());
      this.watcher.on('error', (e) => {
        this.options.trace.warn({ dir: this.dir, err: e.message }, 'pickup watch failed; scanning only');
        this.watcher?.close();
        this.watcher = null;
      });
    } catch (e) {
      this.options.trace.warn({ dir: this.dir, err: (e as Error).message }, 'cannot watch pickup directory; scanning only');
    }
  }

  /** kick - scan soon (coalesced: one scan at a time, another after it when asked meanwhile). */
  kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = (async () => {
      do {
        this.again = false;
        await this.scan().catch((e) => this.options.trace.error({ err: (e as Error).stack }, 'pickup scan failed'));
      } while (this.again && !this.stopped);
    })().finally(() => {
      this.running = null;
    });
  }

  /** idle - resolves when no scan is running (tests). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.watcher?.close();
    this.watcher = null;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }

  private async scan(): Promise<void> {
    let entries;
    try {
      entries = await readdir(this.dir, { withFileTypes: true });
    } catch (e) {
      if (errno(e) === 'ENOENT') {
        await mkdir(this.badDir, { recursive: true });
        if (!this.watcher) this.startWatch();
        return;
      }
      throw e;
    }
    const names = entries.filter((d) => !d.name.startsWith('.') && !d.isDirectory()).map((d) => d.name).sort();
    const present = new Set(names);
    for (const n of this.notBefore.keys()) if (!present.has(n)) this.notBefore.delete(n);
    const now = Date.now();
    for (const name of names) {
      if (this.stopped) return;
      if ((this.notBefore.get(name) ?? 0) > now) continue;
      await this.processFile(name);
    }
  }

  /** processFile - queue one file, or move it to bad/, or leave it for later. */
  private async processFile(name: string): Promise<void> {
    const path = join(this.dir, name);
    const trace = this.options.trace;
    try {
      const queued = await this.enqueueFile(path, name);
      if (!queued) return; // gone meanwhile
      await unlink(path);
      await fsyncDir(this.dir);
      this.notBefore.delete(name);
      this.stats.queued++;
      trace.info({ file: name, qid: queued.queueId, message_id: queued.messageId }, 'pickup file queued');
    } catch (e) {
      if (e instanceof Unusable) {
        await this.moveToBad(name, e.message);
        return;
      }
      this.stats.temporary++;
      this.notBefore.set(name, Date.now() + (this.options.retryMs ?? 2000));
      trace.warn({ file: name, err: (e as Error).message }, 'pickup file not queued now; will try again');
    }
  }

  /** enqueueFile - parse and queue; throws Unusable for a file that can never be queued. Null: the file is gone. */
  private async enqueueFile(path: string, name: string): Promise<{ queueId: string; messageId: string } | null> {
    let fd: FileHandle;
    try {
      const st = await lstat(path);
      if (!st.isFile()) throw new Unusable(st.isSymbolicLink() ? 'a symbolic link (refused)' : 'not a regular file');
      fd = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch (e) {
      if (e instanceof Unusable) throw e;
      const code = errno(e);
      if (code === 'ENOENT') return null;
      if (code === 'ELOOP') throw new Unusable('a symbolic link (refused)');
      if (code === 'EACCES' || code === 'EPERM') throw new Unusable(`cannot be read by Petrel (${code})`);
      throw e;
    }
    try {
      const st = await fd.stat();
      if (!st.isFile()) throw new Unusable('not a regular file');
      if (st.nlink > 1) throw new Unusable(`has ${st.nlink} hard links (refused: only a file written for pickup is read)`);
      const c = this.options.config;
      if (st.size > c.smtp.max_message_size * 2 + MAX_HEADER) throw new Unusable(`too big (${st.size} octets; max_message_size is ${c.smtp.max_message_size})`);
      const eightBit = await scanEightBit(fd);
      // Read and normalise until the header section is complete.
      const norm = new CrlfNormalizer();
      let head = Buffer.alloc(0);
      let pos = 0;
      let eof = false;
      const buf = Buffer.alloc(CHUNK);
      let section = parseHeaderSection(head);
      while (!eof) {
        const { bytesRead } = await fd.read(buf, 0, CHUNK, pos);
        pos += bytesRead;
        if (bytesRead === 0) {
          eof = true;
          head = Buffer.concat([head, norm.end()]);
        } else head = Buffer.concat([head, norm.push(buf.subarray(0, bytesRead))]);
        section = parseHeaderSection(head);
        if (!section.open) break;
        if (head.length > MAX_HEADER) throw new Unusable(`header section larger than ${MAX_HEADER} octets`);
      }
      const env = headerEnvelope(section.fields, c.local.domains[0] ?? c.hostname);
      if ('error' in env) throw new Unusable(env.error);
      const envelope: Envelope = {
        sender: env.sender,
        recipients: env.recipients.map((address) => ({ address, orcpt: null, notify: null })),
        smtputf8: env.utf8,
        eightBit,
        ret: null,
        envid: null,
        client: 'pickup',
        received: null,
        isReport: false,
        maxSize: c.smtp.max_message_size,
        maxReceived: c.dsn.max_received_headers,
        // Written by a local user (petrel sendmail), like submission mail: signed when the From: domain has a key.
        sign: true,
      };
      const incoming = this.options.enqueuer.begin(envelope);
      try {
        await incoming.write(Buffer.from(`Received: by ${c.hostname} (Petrel pickup) id ${incoming.queueId}\r\n\t(file ${name.replace(/[^\x21-\x7e]/g, '_').slice(0, 100)});\r\n\t${rfc5322Date(new Date())}\r\n`));
        for (const f of section.fields) if (!env.remove.has(f.key)) await incoming.write(f.raw);
        if (!hasHeader(section.fields, 'Date')) await incoming.write(Buffer.from(`Date: ${rfc5322Date(new Date())}\r\n`));
        // The empty line that ends the header section (written even when the file had none), then the body.
        await incoming.write(Buffer.from('\r\n'));
        await incoming.write(head.subarray(section.bodyStart));
        while (!eof) {
          const { bytesRead } = await fd.read(buf, 0, CHUNK, pos);
          pos += bytesRead;
          if (bytesRead === 0) {
            eof = true;
            await incoming.write(norm.end());
          } else await incoming.write(norm.push(buf.subarray(0, bytesRead)));
        }
      } catch (e) {
        await incoming.abort().catch(() => undefined);
        throw e;
      }
      try {
        const done = await incoming.commit();
        return { queueId: done.queueId, messageId: done.messageId };
      } catch (e) {
        if (e instanceof EnqueueRejected && e.reply.code >= 500) throw new Unusable(`not accepted: ${e.message}`);
        throw e;
      }
    } finally {
      await fd.close().catch(() => undefined);
    }
  }

  /** moveToBad - set a file aside for the operator, with the reason beside it; never deleted. */
  private async moveToBad(name: string, reason: string): Promise<void> {
    const trace = this.options.trace;
    const from = join(this.dir, name);
    try {
      await mkdir(this.badDir, { recursive: true });
      for (let n = 0; n < 1000; n++) {
        const target = n === 0 ? name : `${name}.${n}`;
        const dest = join(this.badDir, target);
        if (await exists(join(this.badDir, `${target}.reason`))) continue;
        let placed;
        try {
          placed = await publishNoReplace(from, dest);
        } catch (e) {
          if (errno(e) === 'ENOENT') return; // gone already (picked up or removed by its writer)
          throw e;
        }
        if (placed === 'exists') continue;
        if (placed === 'linked') await unlink(from);
        // Written aside and renamed: a reader (the operator, a script) never sees a reason file half written.
        const reasonTmp = join(this.badDir, `.${target}.reason.tmp`);
        await writeFile(reasonTmp, `${new Date().toISOString()} ${name}: ${reason}\n`);
        await rename(reasonTmp, join(this.badDir, `${target}.reason`));
        await fsyncDir(this.badDir);
        await fsyncDir(this.dir);
        this.notBefore.delete(name);
        this.stats.bad++;
        trace.warn({ file: name, moved_to: dest, reason }, 'pickup file cannot be queued; moved to pickup/bad/');
        await this.options
          .record?.([makeEvent('pickup_rejected', { queue_id: '', message_id: '', sender: '', state: 'rejected', detail: `pickup/bad/${target}: ${reason}`.slice(0, 2000) })])
          .catch((e: unknown) => trace.warn({ file: name, err: (e as Error).message }, 'pickup_rejected event not written'));
        return;
      }
      throw new Error('no free name in pickup/bad/');
    } catch (e) {
      // Left in place (never deleted); tried again later, which may move it then.
      this.notBefore.set(name, Date.now() + (this.options.retryMs ?? 2000));
      trace.error({ file: name, reason, err: (e as Error).message }, 'cannot move unusable pickup file to bad/');
    }
  }
}

async function exists(path: string): Promise<boolean> {
  return lstat(path).then(
    () => true,
    () => false,
  );
}

/** scanEightBit - does the file hold any octet above 127 (so the message is 8BITMIME)? */
async function scanEightBit(fd: FileHandle): Promise<boolean> {
  const buf = Buffer.alloc(CHUNK);
  for (let pos = 0; ; ) {
    const { bytesRead } = await fd.read(buf, 0, CHUNK, pos);
    if (bytesRead === 0) return false;
    for (let i = 0; i < bytesRead; i++) if (buf[i]! > 127) return true;
    pos += bytesRead;
  }
}
