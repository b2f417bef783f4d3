/*
 * delivery/directory - the directory connector (`via = "directory:PATH"`):
 * hands each message to a foreign system by writing it as one file into a
 * directory that system reads (a share, a spool). Format: docs/connectors.md.
 *
 * One job is one message and its recipients for this hop; it becomes one
 * file, `<queue_id>.eml`: a block of `X-Petrel-Envelope-*` header lines
 * (queue id, received time, sender, each recipient), then the message as
 * stored (CR LF line ends). It is written under a temporary name starting
 * with "." in PATH, fsync'd, hard-linked to its final name (never replacing a
 * file; rename where the file system has no hard links), and PATH is fsync'd:
 * only then are the recipients delivered.
 *
 * Invariants (seed 003: a connector that never counted a retry while its
 * share was unreachable):
 * - Petrel never creates PATH. A missing PATH, a file in its place, PATH not
 *   being a mount point when `directory_require_mount` is set, no permission,
 *   a read-only or full file system, a write that does not return within the
 *   timeout: each is a deferred result for every recipient of the job, so the
 *   scheduler counts the attempt, retries on schedule and, at max_lifetime,
 *   expires the recipients with a 4.4.7 report to the sender.
 * - A repeated attempt never leaves a second copy of what an earlier attempt
 *   already published (a crash after the link, before the outcome was
 *   recorded; a timed-out write that finished later): when `<queue_id>.eml`
 *   exists and its envelope block names this queue id and every recipient of
 *   the job, the job is delivered without writing again. A file of the same
 *   message that does not cover them (the foreign side has not taken an
 *   earlier part yet) is left alone and the job is written to
 *   `<queue_id>.1.eml`, `<queue_id>.2.eml`, ...
 * - Jobs for one PATH run one at a time, and while a write to PATH hangs
 *   (a dead network share blocks file system calls), later jobs for it are
 *   deferred at once instead of tying up more of the thread pool.
 * - A half-written temporary file is removed; nothing of the queue is.
 *
 * Untrusted input: envelope addresses (validated at entry; a control
 * character would fail the recipient rather than break the header block),
 * and the first block of an existing `<queue_id>.eml` (read, bounded, only
 * compared).
 */
import { randomBytes } from 'node:crypto';
import { open, stat, unlink } from 'node:fs/promises';
import { errno, fsyncDir, publishNoReplace, writeAll } from '../core/durable-fs.js';
import { storageStatus } from '../core/storage-status.js';
import { dirname, join } from 'node:path';
import { rfc5322Date } from '../core/dates.js';
import type { MessageRecord, RecipientRecord } from '../queue/store.js';
import { resultsFor, type DeliveryAgent, type DeliveryJob, type RecipientResult } from './agent.js';

/** The steps a fault-injection seam can fail (tests). */
export type DirectoryStep = 'stat' | 'open' | 'write' | 'fsync' | 'link';

export interface DirectoryAgentOptions {
  /** PATH must be a mount point (its device differs from its parent's); otherwise the share is taken as not mounted. */
  requireMount?: boolean;
  /** A job that has not finished writing after this long is reported deferred (a hung share). */
  timeoutMs?: number;
}

/** How much of an existing file's start is read to find its envelope block. */
const ENVELOPE_READ_LIMIT = 256 * 1024;

/** Highest `<queue_id>.<n>.eml` suffix tried before the job is deferred. */
const MAX_SUFFIX = 100;

type Outcome = Omit<RecipientResult, 'recipientId'>;

interface Gate {
  tail: Promise<void>;
  pending: number;
  /** Set while a timed-out write to this PATH has not returned. */
  hung: boolean;
}


/** envelopeBlock - the X-Petrel-Envelope-* lines that open each file (docs/connectors.md). */
export function envelopeBlock(message: Pick<MessageRecord, 'queueId' | 'receivedAt' | 'sender'>, recipients: readonly string[]): string {
  let out = `X-Petrel-Envelope-Queue-Id: ${message.queueId}\r\n`;
  out += `X-Petrel-Envelope-Received: ${rfc5322Date(new Date(message.receivedAt))}\r\n`;
  out += `X-Petrel-Envelope-Sender: <${message.sender}>\r\n`;
  for (const r of recipients) out += `X-Petrel-Envelope-Recipient: <${r}>\r\n`;
  return out;
}

/** readEnvelope - the queue id and recipients named by the envelope block at the start of `text`. */
export function readEnvelope(text: string): { queueId: string | null; recipients: string[] } {
  let queueId: string | null = null;
  const recipients: string[] = [];
  for (const line of text.split('\r\n')) {
    const m = /^X-Petrel-Envelope-([A-Za-z-]+): (.*)$/.exec(line);
    if (!m) break;
    if (m[1] === 'Queue-Id') queueId = m[2]!;
    else if (m[1] === 'Recipient') recipients.push(m[2]!.replace(/^<(.*)>$/, '$1'));
  }
  return { queueId, recipients };
}


/** fileName - `<queue_id>.eml`, then `<queue_id>.<n>.eml`. */
export function fileName(queueId: string, n: number): string {
  return n === 0 ? `${queueId}.eml` : `${queueId}.${n}.eml`;
}

export class DirectoryAgent implements DeliveryAgent {
  /** Fault-injection seam for tests: throw from here to fail that step (or return a promise that never settles to hang it). */
  fault: ((step: DirectoryStep, path: string) => void | Promise<void>) | null = null;
  private readonly gates = new Map<string, Gate>();
  private readonly timeoutMs: number;

  constructor(private readonly options: DirectoryAgentOptions = {}) {
    this.timeoutMs = options.timeoutMs ?? 60_000;
  }

  async deliver(job: DeliveryJob, report: (results: RecipientResult[]) => void): Promise<void> {
    const hop = job.hop;
    if (hop.kind !== 'directory') {
      report(resultsFor(job.recipients, { kind: 'deferred', status: '4.3.5', reply: `directory agent given a ${hop.kind} hop`, remote: 'directory', remoteReply: false }));
      return;
    }
    const path = hop.path;
    const bad = job.recipients.filter((r) => /[\x00-\x1f\x7f]/.test(r.address));
    if (bad.length) {
      report(resultsFor(bad, { kind: 'failed', status: '5.1.3', reply: 'the address cannot be written into an envelope header safely', remote: `directory ${path}`, remoteReply: false }));
    }
    const recipients = job.recipients.filter((r) => !bad.includes(r));
    if (recipients.length === 0) return;
    await this.gated(path, async (gate) => {
      if (gate.hung) {
        report(resultsFor(recipients, deferred(path, `an earlier write to ${path} has not returned (hung file system?)`, '4.3.0')));
        return;
      }
      let timer: NodeJS.Timeout | undefined;
      const work = this.write(job, path, recipients);
      const timedOut = new Promise<null>((resolve) => {
        // Not unref'd: a job in flight keeps the process alive; the timer is cleared when the write ends.
        timer = setTimeout(() => resolve(null), this.timeoutMs);
      });
      const result = await Promise.race([work, timedOut]).finally(() => clearTimeout(timer));
      if (result) {
        report(resultsFor(recipients, result));
        return;
      }
      gate.hung = true;
      // The late write may still finish; a retry then finds its file and does not write again.
      void work
        .catch(() => undefined)
        .finally(() => {
          gate.hung = false;
          if (gate.pending === 0) this.gates.delete(path);
        });
      report(resultsFor(recipients, deferred(path, `writing to ${path} did not finish within ${this.timeoutMs} ms`, '4.4.2')));
    });
  }

  /** gated - run `fn` when the jobs before it for the same PATH are done. */
  private async gated(path: string, fn: (gate: Gate) => Promise<void>): Promise<void> {
    let gate = this.gates.get(path);
    if (!gate) this.gates.set(path, (gate = { tail: Promise.resolve(), pending: 0, hung: false }));
    gate.pending++;
    const before = gate.tail;
    let release!: () => void;
    gate.tail = new Promise<void>((r) => (release = r));
    try {
      await before;
      await fn(gate);
    } finally {
      release();
      if (--gate.pending === 0 && !gate.hung) this.gates.delete(path);
    }
  }

  private async step(step: DirectoryStep, path: string): Promise<void> {
    if (this.fault) await this.fault(step, path);
  }

  /** write - one attempt; resolves with the outcome for every recipient (rejects only with BodyUnreadable). */
  private async write(job: DeliveryJob, path: string, recipients: RecipientRecord[]): Promise<Outcome> {
    const remote = `directory ${path}`;
    try {
      await this.step('stat', path);
      const st = await stat(path);
      if (!st.isDirectory()) return deferred(path, `${path} is not a directory`, '4.3.0');
      if (this.options.requireMount) {
        const parent = await stat(dirname(path));
        if (parent.dev === st.dev && parent.ino !== st.ino) return deferred(path, `${path} is not a mount point (share not mounted?)`, '4.3.0');
      }
    } catch (e) {
      const code = errno(e);
      if (code === 'ENOENT' || code === 'ENOTDIR') return deferred(path, `${path} does not exist (share not mounted?); Petrel never creates it`, '4.3.0');
      return ioError(path, e);
    }
    const addresses = recipients.map((r) => r.address);
    const queueId = job.message.queueId;
    let tmp = '';
    let file;
    try {
      // Published by an earlier attempt already? Otherwise the first free name.
      let n = 0;
      for (; n <= MAX_SUFFIX; n++) {
        const covered = await this.covers(join(path, fileName(queueId, n)), queueId, addresses);
        if (covered === 'yes') {
          return { kind: 'delivered', status: '2.0.0', reply: `already written to ${join(path, fileName(queueId, n))} by an earlier attempt`, remote, remoteReply: false };
        }
        if (covered === 'absent') break;
      }
      if (n > MAX_SUFFIX) return deferred(path, `${path} already holds ${MAX_SUFFIX} unread files of message ${queueId}`, '4.3.0');
      tmp = join(path, `.${queueId}.${randomBytes(6).toString('hex')}.tmp`);
      await this.step('open', tmp);
      file = await open(tmp, 'wx', 0o644);
      const f = file;
      await this.step('write', tmp);
      await writeAll(f, envelopeBlock(job.message, addresses));
      const body = await job.openBody();
      for await (const chunk of body as AsyncIterable<Buffer>) {
        await this.step('write', tmp);
        await writeAll(f, chunk);
      }
      await this.step('fsync', tmp);
      await f.sync();
      await f.close();
      file = null;
      const dest = await this.publish(tmp, path, queueId, n);
      tmp = '';
      return { kind: 'delivered', status: '2.0.0', reply: `written to ${dest}`, remote, remoteReply: false };
    } catch (e) {
      if (file) await file.close().catch(() => undefined);
      if (tmp) await unlink(tmp).catch(() => undefined);
      if ((e as Error).name === 'BodyUnreadable') throw e;
      return ioError(path, e);
    }
  }

  /** covers - does this file exist, and does its envelope name this queue id and all these recipients? */
  private async covers(file: string, queueId: string, addresses: readonly string[]): Promise<'yes' | 'no' | 'absent'> {
    let fd;
    try {
      fd = await open(file, 'r');
    } catch (e) {
      if (errno(e) === 'ENOENT') return 'absent';
      throw e;
    }
    try {
      const buf = Buffer.alloc(ENVELOPE_READ_LIMIT);
      const { bytesRead } = await fd.read(buf, 0, buf.length, 0);
      const env = readEnvelope(buf.subarray(0, bytesRead).toString('utf8'));
      if (env.queueId !== queueId) return 'no';
      const named = new Set(env.recipients);
      return addresses.every((a) => named.has(a)) ? 'yes' : 'no';
    } finally {
      await fd.close();
    }
  }

  /** publish - link the temporary file to the first free final name (never replacing one); fsync PATH. */
  private async publish(tmp: string, path: string, queueId: string, from: number): Promise<string> {
    for (let n = from; n <= MAX_SUFFIX; n++) {
      const dest = join(path, fileName(queueId, n));
      await this.step('link', dest);
      const placed = await publishNoReplace(tmp, dest);
      if (placed === 'exists') continue;
      await this.syncDir(path, dest);
      if (placed === 'linked') await unlink(tmp).catch(() => undefined);
      return dest;
    }
    throw Object.assign(new Error(`no free file name for ${queueId} in ${path}`), { code: 'EEXIST' });
  }

  /** syncDir - fsync PATH; if that fails the file is taken back (not known durable, so not delivered). */
  private async syncDir(path: string, dest: string): Promise<void> {
    try {
      await this.step('fsync', path);
      await fsyncDir(path);
    } catch (e) {
      await unlink(dest).catch(() => undefined);
      throw e;
    }
  }

  async close(): Promise<void> {}
}

function deferred(path: string, text: string, status: string): Outcome {
  return { kind: 'deferred', status, reply: text, remote: `directory ${path}`, remoteReply: false };
}

/** ioError - a local I/O failure as a deferral (status: core/storage-status, into a mailbox). */
function ioError(path: string, e: unknown): Outcome {
  const err = e as NodeJS.ErrnoException;
  return deferred(path, `cannot write to ${path}: ${err.code ?? err.message}`, storageStatus(e, 'mailbox'));
}
