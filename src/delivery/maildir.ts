/*
 * delivery/maildir - final delivery into Maildir folders
 * (root/<domain>/<user>/{tmp,new,cur}, https://cr.yp.to/proto/maildir.html).
 *
 * Each recipient gets its own file, written to tmp/ with `Return-Path:` and
 * `Delivered-To:` added, fsync'd, renamed into new/, and new/ fsync'd: only
 * then is the recipient delivered. Line ends are stored as LF, as Maildir
 * readers (Dovecot, mutt) expect.
 *
 * Invariants: a local error (full disk, permissions) defers, never loses; an
 * address that cannot name a mailbox safely (a "/" or leading "." in the
 * local part) fails with 5.1.3 and never touches a path outside the root; a
 * half-written tmp file is removed.
 */
import { mkdir, open, rename, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { domainOf, localPartOf } from '../core/address.js';
import { resultsFor, type DeliveryAgent, type DeliveryJob, type RecipientResult } from './agent.js';

let deliveries = 0;

/** Mailboxes written at once within one job. */
const PARALLEL = 8;

/** mailboxPath - root/<domain>/<user>, or null when the address cannot name one safely. */
export function mailboxPath(root: string, address: string): string | null {
  const local = localPartOf(address).toLowerCase().replace(/^"(.*)"$/, '$1');
  const domain = domainOf(address);
  const unsafe = (s: string): boolean => s === '' || s.startsWith('.') || /[/\\\x00-\x1f]/.test(s);
  if (unsafe(local) || unsafe(domain)) return null;
  return join(root, domain, local);
}

/** uniqueName - a Maildir file name: time.M<usec>P<pid>Q<n>.host */
function uniqueName(): string {
  const now = Date.now();
  const usec = Number(process.hrtime.bigint() % 1_000_000n);
  deliveries = (deliveries + 1) % 1e9;
  return `${Math.floor(now / 1000)}.M${usec}P${process.pid}Q${deliveries}.${hostname().replace(/[/:]/g, '_')}`;
}

async function fsyncDir(dir: string): Promise<void> {
  const fd = await open(dir, 'r');
  try {
    await fd.sync();
  } finally {
    await fd.close();
  }
}

/** toLf - CR LF -> LF, carrying a CR that ends one chunk over to the next. */
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

  private async deliverOne(job: DeliveryJob, root: string, address: string): Promise<Omit<RecipientResult, 'recipientId'>> {
    const box = mailboxPath(root, address);
    if (!box) return { kind: 'failed', status: '5.1.3', reply: `cannot deliver to <${address}>: the address does not name a valid mailbox`, remote: 'maildir', remoteReply: false };
    const name = uniqueName();
    const tmp = join(box, 'tmp', name);
    const dest = join(box, 'new', name);
    let file;
    try {
      await mkdir(join(box, 'tmp'), { recursive: true });
      await mkdir(join(box, 'new'), { recursive: true });
      await mkdir(join(box, 'cur'), { recursive: true });
      file = await open(tmp, 'wx', 0o600);
    } catch (e) {
      return localError(e, box);
    }
    try {
      const f = file;
      const sender = job.message.sender;
      await f.write(`Return-Path: <${sender}>\nDelivered-To: ${address}\n`);
      const lf = lfWriter(async (b) => {
        await f.write(b);
      });
      const body = await job.openBody();
      for await (const chunk of body as AsyncIterable<Buffer>) await lf.push(chunk);
      await lf.end();
      await f.sync();
      await f.close();
      file = null;
      await rename(tmp, dest);
      await fsyncDir(join(box, 'new'));
      return { kind: 'delivered', status: '2.0.0', reply: `delivered to maildir ${dest}`, remote: 'maildir', remoteReply: false };
    } catch (e) {
      if (file) await file.close().catch(() => undefined);
      await unlink(tmp).catch(() => undefined);
      if ((e as Error).name === 'BodyUnreadable') throw e;
      return localError(e, box);
    }
  }

  async close(): Promise<void> {}
}

function localError(e: unknown, box: string): Omit<RecipientResult, 'recipientId'> {
  const err = e as NodeJS.ErrnoException;
  const status = err.code === 'ENOSPC' || err.code === 'EDQUOT' ? '4.2.2' : '4.3.0';
  return { kind: 'deferred', status, reply: `cannot write to maildir ${box}: ${err.code ?? err.message}`, remote: 'maildir', remoteReply: false };
}
