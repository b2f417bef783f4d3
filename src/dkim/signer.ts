/*
 * dkim/signer - DKIM signing for enqueue (RFC 6376, Ed25519 RFC 8463): which
 * keys sign a message (its From: domain, or the nearest parent domain with a
 * `[[dkim]]` key), a place to hold the message while it is signed, and the
 * signing threads.
 *
 * Where the work runs: a signature costs CPU per message (measured here,
 * dkim/sign-core: RSA-2048 1.0 ms for 2 KB, 1.4 ms for 100 KB; Ed25519 0.2 /
 * 0.6 ms; the body hash alone 0.4 ms per 100 KB), which on the thread that
 * answers SMTP would cap the relay rate near a thousand RSA-signed messages a
 * second and stall every session meanwhile. So it runs on a small pool of worker threads
 * (dkim/sign-worker; min(4, cores - 1), at least one, started at the first
 * signature): the message goes to a thread in batches of up to 256 KB (each
 * copied once, into a buffer the thread then owns; the next sent when the
 * thread has taken the one before, so a large message is never all in
 * memory), and the thread answers the DKIM-Signature fields.
 * The SMTP thread only copies octets.
 *
 * Invariants:
 * - a message is signed once, before it is queued (enqueue/enqueue holds it
 *   here while it arrives and writes signature + message into the store), so
 *   the stored message is the signed one and a restart never signs again;
 * - a signing thread that fails or dies fails the messages it had (the
 *   client is answered 451 and sends again; a report is made again later),
 *   and the next signature starts a new thread;
 * - the scratch directory (data_dir/tmp/dkim, 0700) is emptied at start:
 *   what is there was never answered 250;
 * - reconfigure() (SIGHUP, `petrel reload`) takes new keys for the next
 *   signature; a message being signed finishes with the thread and keys it
 *   began with, and those threads stop once they have none left.
 *
 * Untrusted input: the message octets (passed to the threads).
 */
import { availableParallelism } from 'node:os';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { HeldMessage } from '../checks/held-message.js';
import { DkimKeys, type DkimKey, type DkimKeyConfig } from './keys.js';

interface Pending {
  resolve(v: { ack?: boolean; fields?: string }): void;
  reject(e: Error): void;
}

class SignThread {
  readonly worker: Worker;
  readonly pending = new Map<number, Pending>();
  dead = false;
  /** Messages being signed on this thread (a message is several sends). */
  active = 0;
  /** Replaced by a reload: takes no new message, stops when `active` is 0. */
  retiring = false;

  constructor(readonly keys: readonly DkimKey[]) {
    this.worker = new Worker(new URL('./sign-worker.js', import.meta.url), {
      workerData: { keys: keys.map((k) => ({ domain: k.domain, selector: k.selector, algorithm: k.algorithm, pem: k.pem })) },
    });
    this.worker.unref();
    this.worker.on('message', (m: { id: number; ack?: boolean; fields?: string; error?: string }) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.error !== undefined) p.reject(new Error(`DKIM signing failed: ${m.error}`));
      else p.resolve(m);
    });
    const fail = (e: Error): void => {
      this.dead = true;
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`DKIM signing thread exited (${code})`)));
  }

  /** send - one message part; resolves with the thread's answer to it. */
  send(msg: { id: number; keys?: number[]; data?: ArrayBuffer; end: boolean }): Promise<{ ack?: boolean; fields?: string }> {
    if (this.dead) return Promise.reject(new Error('DKIM signing thread is gone'));
    return new Promise((resolve, reject) => {
      this.pending.set(msg.id, { resolve, reject });
      this.worker.postMessage(msg, msg.data ? [msg.data] : []);
    });
  }
}

/** Octets sent to a signing thread in one message: a message held in memory (256 KB) goes in one. */
const SEND_BATCH = 256 * 1024;

/** ownCopy - the pieces in one new ArrayBuffer, transferred to the thread (one copy; a pooled buffer could not be). */
function ownCopy(pieces: Buffer[], length: number): ArrayBuffer {
  const ab = new ArrayBuffer(length);
  const view = Buffer.from(ab);
  let at = 0;
  for (const p of pieces) at += p.copy(view, at);
  return ab;
}

export interface DkimSignerOptions {
  keys: readonly DkimKeyConfig[];
  dataDir: string;
  /** Largest header section (`[smtp] max_header_size`): the held header stays in memory up to it. */
  headerLimit: number;
  /** Signing threads; default min(4, cores - 1), at least 1. */
  threads?: number;
}

export class DkimSigner {
  /** The keys in force (replaced whole by reconfigure). */
  keys: DkimKeys;
  private readonly scratchDir: string;
  private readonly threads: SignThread[] = [];
  /** Threads replaced by a reload, still finishing a message. */
  private readonly retiring = new Set<SignThread>();
  private readonly maxThreads: number;
  private nextId = 1;

  constructor(private readonly options: DkimSignerOptions) {
    this.keys = DkimKeys.load(options.keys);
    this.scratchDir = join(options.dataDir, 'tmp', 'dkim');
    this.maxThreads = options.threads ?? Math.max(1, Math.min(4, availableParallelism() - 1));
    if (this.keys.size) rmSync(this.scratchDir, { recursive: true, force: true });
  }

  /** configured - whether any key exists (no key: nothing is held, nothing signed). */
  get configured(): boolean {
    return this.keys.size > 0;
  }

  /** hold - a holder for one message while it arrives (checks/held-message: memory up to 256 KB, then a scratch file). */
  hold(): HeldMessage {
    return new HeldMessage(this.scratchDir, this.options.headerLimit);
  }

  /** keysFor - the keys that sign mail whose From: is in `domain` (empty: not signed). */
  keysFor(domain: string): DkimKey[] {
    return domain ? this.keys.forDomain(domain) : [];
  }

  /**
   * reconfigure - the keys of a new configuration (reload; DkimKeys.load,
   * which throws on a key that cannot be used, is the caller's, before it
   * changes anything), for the next signature.
   */
  reconfigure(keys: DkimKeys): void {
    // Nothing was ever held for signing without keys: the scratch directory has no live files.
    if (!this.keys.size && keys.size) rmSync(this.scratchDir, { recursive: true, force: true });
    this.keys = keys;
    for (const t of this.threads.splice(0)) {
      t.retiring = true;
      if (t.active === 0) void t.worker.terminate().catch(() => undefined);
      else this.retiring.add(t);
    }
  }

  /** sign - the DKIM-Signature fields (each ending CR LF) of the message `chunks`, one per key. */
  async sign(chunks: AsyncIterable<Buffer>, keys: readonly DkimKey[]): Promise<string> {
    const thread = this.thread();
    thread.active++;
    try {
      return await this.signOn(thread, chunks, keys);
    } finally {
      if (--thread.active === 0 && thread.retiring) {
        this.retiring.delete(thread);
        void thread.worker.terminate().catch(() => undefined);
      }
    }
  }

  private async signOn(thread: SignThread, chunks: AsyncIterable<Buffer>, given: readonly DkimKey[]): Promise<string> {
    const id = this.nextId++;
    // Keys chosen before a reload are looked up again by domain and selector in the thread's set; one gone is not used.
    const indexes = given
      .map((k) => {
        const i = thread.keys.indexOf(k);
        return i >= 0 ? i : thread.keys.findIndex((n) => n.domain === k.domain && n.selector === k.selector && n.algorithm === k.algorithm);
      })
      .filter((i) => i >= 0);
    if (!indexes.length) return '';
    let first = true;
    // Pieces are gathered into one copy of up to SEND_BATCH octets that the thread owns (a
    // message held in memory is one exchange); the next batch goes when the thread has taken the last.
    let batch: Buffer[] = [];
    let batched = 0;
    const send = async (end: boolean): Promise<{ fields?: string }> => {
      const data = batched ? ownCopy(batch, batched) : undefined;
      batch = [];
      batched = 0;
      const answer = await thread.send({ id, ...(first ? { keys: indexes } : {}), ...(data ? { data } : {}), end });
      first = false;
      return answer;
    };
    for await (const chunk of chunks) {
      batch.push(chunk);
      batched += chunk.length;
      if (batched >= SEND_BATCH) await send(false);
    }
    const answer = await send(true);
    return answer.fields ?? '';
  }

  /** thread - the least busy signing thread, starting one while there are fewer than allowed. */
  private thread(): SignThread {
    for (let i = this.threads.length - 1; i >= 0; i--) if (this.threads[i]!.dead) this.threads.splice(i, 1);
    let best = this.threads.reduce<SignThread | null>((b, t) => (!b || t.pending.size < b.pending.size ? t : b), null);
    if (!best || (best.pending.size > 0 && this.threads.length < this.maxThreads)) {
      best = new SignThread(this.keys.keys);
      this.threads.push(best);
    }
    return best;
  }

  /** close - stop the signing threads. */
  async close(): Promise<void> {
    const threads = [...this.threads.splice(0), ...this.retiring];
    this.retiring.clear();
    await Promise.all(threads.map((t) => t.worker.terminate().catch(() => undefined)));
  }
}
