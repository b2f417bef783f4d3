/*
 * delivery/maildir - final delivery into Maildir folders
 * (root/<domain>/<user>/{tmp,new,cur}, https://cr.yp.to/proto/maildir.html).
 *
 * Each recipient gets its own file, written to tmp/ with `Return-Path:` and
 * `Delivered-To:` added, fsync'd, hard-linked into new/ (link never replaces
 * an existing file; rename only where the file system has no hard links),
 * new/ fsync'd, and the tmp/ name removed: only then is the recipient
 * delivered. A mailbox directory created for the delivery has its parent
 * fsync'd too, so a crash cannot take a "delivered" mailbox away. Line ends
 * are stored as LF, as Maildir readers (Dovecot, mutt) expect.
 *
 * File names follow the Maildir spec: "<sec>.M<usec>P<pid>Q<n>R<random>.<host>"
 * with "/" and ":" in the host name written "\057" and "\072"; a name that
 * exists already (in tmp/ or new/) is never reused: a new one is made.
 *
 * Junk folder: a message whose header section carries `X-Petrel-Junk:` (put
 * there by the inbound checks only: DMARC failed under p=quarantine, or
 * rspamd's "add header"; checks/header-edit) goes to the Maildir++ folder
 * named by `[checks] junk_folder` (maildir/dom/user/.Junk/{tmp,new,cur},
 * with its `maildirfolder` marker file) instead of new/ of the inbox, under
 * the same durability rules; "" files it in the inbox like any other mail.
 * Only the first HEAD_PEEK octets are looked at.
 *
 * Invariants: a local error (full disk, quota, permissions, read-only file
 * system) defers, never loses; an address that cannot name a mailbox safely
 * (empty, a leading ".", "/", "\" or control characters, a component longer
 * than a file name may be) fails with 5.1.3 and never touches a path outside
 * the root; a half-written tmp file is removed.
 *
 * Untrusted input: the recipient address (from the envelope) becomes a path.
 */
import { mkdir, open, unlink } from 'node:fs/promises';
import { errno, fsyncDir, publishNoReplace, writeAll } from '../core/durable-fs.js';
import { storageStatus } from '../core/storage-status.js';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { dirname, join, sep } from 'node:path';
import { mailboxPath } from '../core/mailbox-path.js';
import { hasField, JUNK_FIELD } from '../checks/header-edit.js';
import { resultsFor, type DeliveryAgent, type DeliveryJob, type RecipientResult } from './agent.js';

let deliveries = 0;

/** Mailboxes written at once within one job. */
const PARALLEL = 8;

/** Octets of the stored message read to find X-Petrel-Junk: (it is written near the top, right after Received:). */
const HEAD_PEEK = 64 * 1024;

export interface MaildirOptions {
  /** `[checks] junk_folder`, read at each delivery (a reload changes it); "" or absent: no junk folder. */
  junkFolder?: () => string;
}

/** The steps a fault-injection seam can fail (tests). */
export type MaildirStep = 'mkdir' | 'open' | 'write' | 'fsync' | 'link';

/** hostPart - the host name as the Maildir spec writes it in file names. */
export function hostPart(name = hostname()): string {
  return (name || 'localhost').replace(/\//g, '\\057').replace(/:/g, '\\072');
}

/** uniqueName - a Maildir file name: <sec>.M<usec>P<pid>Q<n>R<random>.<host> */
export function uniqueName(): string {
  const t = performance.timeOrigin + performance.now();
  const sec = Math.floor(t / 1000);
  const usec = Math.floor((t * 1000) % 1_000_000);
  deliveries = (deliveries + 1) % 1e9;
  return `${sec}.M${usec}P${process.pid}Q${deliveries}R${randomBytes(4).toString('hex')}.${hostPart()}`;
}



/**
 * ensureDir - mkdir -p, one level at a time (so the real error is reported:
 * a recursive mkdir says ENOENT on a read-only file system); each directory
 * created has its parent fsync'd, so it survives a crash.
 */
async function ensureDir(dir: string): Promise<void> {
  try {
    await mkdir(dir);
  } catch (e) {
    const code = errno(e);
    if (code === 'EEXIST') return;
    if (code !== 'ENOENT' || dirname(dir) === dir) throw e;
    await ensureDir(dirname(dir));
    try {
      await mkdir(dir);
    } catch (e2) {
      if (errno(e2) === 'EEXIST') return;
      throw e2;
    }
  }
  await fsyncDir(dirname(dir));
}

/** lfWriter - CR LF -> LF, carrying a CR that ends one chunk over to the next. */
function lfWriter(write: (b: Buffer) => Promise<void>): { push: (chunk: Buffer) => Promise<void>; end: () => Promise<void> } {
  let pendingCR = false;
  return {
    async push(chunk: Buffer) {
      const out = Buffer.allocUnsafe(chunk.length + 1);
      let o = 0;
      if (pendingCR) {
        if (chunk[0] !== 10) out[o++] = 13;
        pendingCR = false;
      }
      for (let i = 0; i < chunk.length; i++) {
        const b = chunk[i]!;
        if (b === 13) {
          if (i + 1 < chunk.length) {
            if (chunk[i + 1] !== 10) out[o++] = 13;
          } else pendingCR = true;
        } else out[o++] = b;
      }
      if (o) await write(out.subarray(0, o));
    },
    async end() {
      if (pendingCR) await write(Buffer.from([13]));
    },
  };
}

export class MaildirAgent implements DeliveryAgent {
  /** Fault-injection seam for tests: throw from here to fail that step. */
  fault: ((step: MaildirStep, path: string) => void) | null = null;

  constructor(private readonly options: MaildirOptions = {}) {}

  async deliver(job: DeliveryJob, report: (results: RecipientResult[]) => void): Promise<void> {
    if (job.hop.kind !== 'maildir') {
      report(resultsFor(job.recipients, { kind: 'deferred', status: '4.3.5', reply: `maildir agent given a ${job.hop.kind} hop`, remote: 'maildir', remoteReply: false }));
      return;
    }
    // Several mailboxes at once: their fsyncs overlap in the thread pool.
    const root = job.hop.root;
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < job.recipients.length) {
        const r = job.recipients[next++]!;
        const result = await this.deliverOne(job, root, r.address);
        report([{ ...result, recipientId: r.id }]);
      }
    };
    await Promise.all(Array.from({ length: Math.min(PARALLEL, job.recipients.length) }, worker));
  }

  private step(step: MaildirStep, path: string): void {
    this.fault?.(step, path);
  }

  private async deliverOne(job: DeliveryJob, root: string, address: string): Promise<Omit<RecipientResult, 'recipientId'>> {
    const inbox = mailboxPath(root, address);
    if (!inbox) return { kind: 'failed', status: '5.1.3', reply: `cannot deliver to <${address}>: the address does not name a valid mailbox`, remote: 'maildir', remoteReply: false };
    const body = ((await job.openBody()) as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    const closeBody = async (): Promise<void> => {
      await body.return?.().catch(() => undefined);
    };
    // The start of the message, read to find the junk mark; written first below.
    const head: Buffer[] = [];
    let ended = false;
    const folder = this.options.junkFolder?.() ?? '';
    let box = inbox;
    try {
      if (folder) {
        let text = '';
        while (text.length < HEAD_PEEK && !/\r?\n\r?\n/.test(text)) {
          const r = await body.next();
          if (r.done) {
            ended = true;
            break;
          }
          head.push(r.value);
          text += r.value.toString('latin1');
        }
        if (hasField(text, JUNK_FIELD)) box = join(inbox, `.${folder}`);
      }
    } catch (e) {
      await closeBody();
      if ((e as Error).name === 'BodyUnreadable') throw e;
      return localError(e, inbox);
    }
    let tmp = '';
    let file;
    try {
      // A folder lives inside a valid inbox Maildir, which is made too.
      for (const d of box === inbox ? ['tmp', 'new', 'cur'] : ['tmp', 'new', 'cur'].flatMap((x) => [join('..', x), x])) {
        this.step('mkdir', join(box, d));
        await ensureDir(join(box, d));
      }
      if (box !== inbox) await markFolder(box);
      // A name already in tmp/ is never reused (the spec's rule): take another.
      for (let tries = 0; !file; tries++) {
        tmp = join(box, 'tmp', uniqueName());
        try {
          this.step('open', tmp);
          file = await open(tmp, 'wx', 0o600);
        } catch (e) {
          if (errno(e) !== 'EEXIST' || tries >= 5) throw e;
        }
      }
    } catch (e) {
      await closeBody();
      return localError(e, box);
    }
    try {
      const f = file;
      const sender = job.message.sender;
      this.step('write', tmp);
      await writeAll(f, `Return-Path: <${sender}>\nDelivered-To: ${address}\n`);
      const lf = lfWriter(async (b) => {
        this.step('write', tmp);
        await writeAll(f, b);
      });
      for (const chunk of head) await lf.push(chunk);
      if (!ended) for (let r = await body.next(); !r.done; r = await body.next()) await lf.push(r.value);
      await lf.end();
      this.step('fsync', tmp);
      await f.sync();
      await f.close();
      file = null;
      const dest = await this.publish(tmp, box);
      return { kind: 'delivered', status: '2.0.0', reply: `delivered to maildir ${dest}`, remote: 'maildir', remoteReply: false };
    } catch (e) {
      await closeBody();
      if (file) await file.close().catch(() => undefined);
      await unlink(tmp).catch(() => undefined);
      if ((e as Error).name === 'BodyUnreadable') throw e;
      return localError(e, box);
    }
  }

  /** publish - tmp/<name> -> new/<name> without ever replacing a file; fsync new/; returns the final path. */
  private async publish(tmp: string, box: string): Promise<string> {
    for (let tries = 0; tries < 6; tries++) {
      const dest = join(box, 'new', tries === 0 ? tmp.slice(tmp.lastIndexOf(sep) + 1) : uniqueName());
      this.step('link', dest);
      const placed = await publishNoReplace(tmp, dest);
      if (placed === 'exists') continue;
      try {
        this.step('fsync', join(box, 'new'));
        await fsyncDir(join(box, 'new'));
      } catch (e) {
        // Not known to be durable, so not delivered: take the copy back (the retry makes a new one).
        await unlink(dest).catch(() => undefined);
        throw e;
      }
      if (placed === 'linked') await unlink(tmp).catch(() => undefined);
      return dest;
    }
    throw Object.assign(new Error(`no free name in ${join(box, 'new')}`), { code: 'EEXIST' });
  }

  async close(): Promise<void> {}
}

/** markFolder - the empty `maildirfolder` file that says a directory is a Maildir++ folder (Courier, Dovecot). */
async function markFolder(folder: string): Promise<void> {
  try {
    const f = await open(join(folder, 'maildirfolder'), 'wx', 0o600);
    await f.close();
    await fsyncDir(folder);
  } catch (e) {
    if (errno(e) !== 'EEXIST') throw e;
  }
}

/** localError - a local I/O failure as a deferral (status: core/storage-status, into a mailbox). */
function localError(e: unknown, box: string): Omit<RecipientResult, 'recipientId'> {
  const err = e as NodeJS.ErrnoException;
  return { kind: 'deferred', status: storageStatus(e, 'mailbox'), reply: `cannot write to maildir ${box}: ${err.code ?? err.message}`, remote: 'maildir', remoteReply: false };
}
