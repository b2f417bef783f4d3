/*
 * test/helpers/soak - the soak run shared by bench/soak.ts (200,000 messages)
 * and test/e2e/soak-short.test.ts (a few thousand): seed 002 as a test — a
 * long run must show no drift in memory or behaviour, and nothing may need a
 * restart to get moving again.
 *
 * A Petrel child process (`petrel start`) relays to a TestPeer that defers
 * the first delivery attempt of every n-th message with 451 (so the retry
 * schedule is exercised) and accepts everything else. Clients send messages
 * with unique headers (Message-ID, X-Soak-Seq) over several sessions, at an
 * optional rate. Every `sampleMs` a sample is taken:
 * - Petrel's RSS (/proc) and heap in use (its /metrics, prom-client defaults),
 *   printed for people and judged by bench/soak.ts only (memory is a
 *   measurement; on a loaded machine it is no proof of anything);
 * - what Petrel holds open, counted: its file descriptors (/proc/PID/fd) and
 *   its active handles (sockets, servers, files: /metrics), and the
 *   recipients still in the queue (queued, deferred, delivering);
 * - queue latency: received -> delivered from Petrel's own event log
 *   (p50/p99/max of the deliveries in the window), the backlog, the oldest
 *   recipient still waiting;
 * - schedule violations: a recipient whose next attempt came (or is still
 *   missing) later than its retry interval allows (10% jitter + slack), or
 *   whose first attempt waited longer than `firstAttemptSlackMs`.
 * The result says whether every acknowledged message reached the peer exactly
 * once (lost, duplicates), and gives what Petrel held open and its memory
 * after warm-up and at the end: a leak per message or per connection shows
 * as descriptors and handles that grow with the messages sent.
 *
 * Bounded: at most `messages` messages and `maxSeconds` seconds; the child,
 * the peer and every socket are stopped at the end, whatever happened.
 */
import { closeSync, existsSync, openSync, readSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { SmtpTalk } from './smtp-talk.js';
import { startChild, freePort, tempDir, cleanup, type Child } from './petrel-harness.js';
import { startPeer, type TestPeer } from './test-peer.js';

/** childPids - the processes `pid` started (its workers), from /proc/PID/task/TID/children. */
function childPids(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      for (const c of readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim().split(/\s+/)) if (c) out.push(Number(c));
    }
  } catch {
    // No such process any more: none.
  }
  return out;
}

export interface SoakOptions {
  messages: number;
  sessions: number;
  /** Messages per second offered (0: as fast as Petrel takes them). */
  rate: number;
  sampleMs: number;
  maxSeconds: number;
  /** The first attempt of every n-th message is deferred by the peer (0: none). */
  deferEvery: number;
  /** Petrel's [queue] retry_intervals, in seconds. */
  retrySeconds: number[];
  /** Warm-up ends once this share of the messages was sent. */
  warmupFraction: number;
  /** A first attempt may wait this long after acceptance (backlog under load). */
  firstAttemptSlackMs: number;
  /** Body size of each message, octets (approximately). */
  bodySize: number;
  /** `[server] workers` (absent: the configuration default); RSS is then the primary's plus its workers'. */
  workers?: number;
  log: (line: string) => void;
}

export interface SoakSample {
  seconds: number;
  sent: number;
  delivered: number;
  backlog: number;
  rssMb: number;
  heapMb: number;
  /** Open file descriptors of the Petrel process. */
  fds: number;
  /** Its active handles (prom-client's nodejs_active_handles_total). */
  handles: number;
  /** Recipients queued, deferred or being delivered (its petrel_recipients gauge). */
  inQueue: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  oldestWaitingS: number;
  scheduleViolations: number;
}

export interface SoakResult {
  samples: SoakSample[];
  sent: number;
  refused: number;
  /** Client connections that broke (closed without a reply, reset). */
  connectionErrors: number;
  delivered: number;
  lost: number;
  duplicates: number;
  deferredAttempts: number;
  scheduleViolations: number;
  warmupRssMb: number;
  endRssMb: number;
  warmupHeapMb: number;
  endHeapMb: number;
  warmupFds: number;
  endFds: number;
  warmupHandles: number;
  endHandles: number;
  endInQueue: number;
  maxLatencyMs: number;
  seconds: number;
  finished: boolean;
}

interface Waiting {
  receivedAt: number;
  last: number;
  attempts: number;
  flagged: boolean;
}

/** EventTail - the events appended to events.jsonl since the last read, parsed. */
class EventTail {
  private offset = 0;
  private partial = '';
  constructor(private readonly path: string) {}
  read(): Array<{ event: string; ts: string; queue_id: string; recipient?: string; attempt?: number }> {
    if (!existsSync(this.path)) return [];
    const size = statSync(this.path).size;
    if (size <= this.offset) return [];
    const fd = openSync(this.path, 'r');
    try {
      const buf = Buffer.alloc(size - this.offset);
      readSync(fd, buf, 0, buf.length, this.offset);
      this.offset = size;
      const lines = (this.partial + buf.toString('utf8')).split('\n');
      this.partial = lines.pop() ?? '';
      return lines.filter((l) => l.trim()).map((l) => JSON.parse(l) as { event: string; ts: string; queue_id: string });
    } finally {
      closeSync(fd);
    }
  }
}

function metric(text: string, name: string): number {
  return Number(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+]+)$`, 'm').exec(text)?.[1] ?? NaN);
}

/** stateCount - petrel_recipients{state="STATE"} from a /metrics text (NaN when absent). */
function stateCount(text: string, state: string): number {
  return Number(new RegExp(`^petrel_recipients\\{state="${state}"\\} ([0-9.e+]+)$`, 'm').exec(text)?.[1] ?? NaN);
}

function httpGet(port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path }, (res) => {
      let t = '';
      res.on('data', (d: Buffer) => (t += d.toString()));
      res.on('end', () => resolve(t));
    });
    req.on('error', reject);
    req.setTimeout(5000, () => req.destroy(new Error('metrics timed out')));
    req.end();
  });
}

function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export async function runSoak(o: SoakOptions): Promise<SoakResult> {
  const dir = tempDir('petrel-soak-');
  const deferredOnce = new Set<number>();
  const seen = new Uint16Array(o.messages + 1);
  let deliveredAtPeer = 0;
  let duplicates = 0;
  const peer: TestPeer = await startPeer({
    finalReply: (tx) => {
      const m = /\r\nX-Soak-Seq: (\d+)\r\n/.exec(tx.body.toString('latin1'));
      const seq = m ? Number(m[1]) : -1;
      if (o.deferEvery && seq > 0 && seq % o.deferEvery === 0 && !deferredOnce.has(seq)) {
        deferredOnce.add(seq);
        return '451 4.3.0 soak: come back later';
      }
      if (seq > 0 && seq <= o.messages) {
        if (seen[seq]!++ > 0) duplicates++;
        else deliveredAtPeer++;
      }
      return '250 2.0.0 Ok: soaked';
    },
  });
  const port = await freePort();
  const adminPort = await freePort();
  let child: Child | null = null;
  const t0 = Date.now();
  const samples: SoakSample[] = [];
  const result: SoakResult = {
    samples,
    sent: 0,
    refused: 0,
    connectionErrors: 0,
    delivered: 0,
    lost: 0,
    duplicates: 0,
    deferredAttempts: 0,
    scheduleViolations: 0,
    warmupRssMb: NaN,
    endRssMb: NaN,
    warmupHeapMb: NaN,
    endHeapMb: NaN,
    warmupFds: NaN,
    endFds: NaN,
    warmupHandles: NaN,
    endHandles: NaN,
    endInQueue: NaN,
    maxLatencyMs: 0,
    seconds: 0,
    finished: false,
  };
  const talks = new Set<SmtpTalk>();
  let stopSending = false;
  try {
    child = await startChild(
      dir,
      `hostname = "petrel.soak"
data_dir = "${join(dir, 'var')}"
[smtp]
listen = ["127.0.0.1:${port}"]
max_connections_per_client = 1000
[queue]
retry_intervals = [${o.retrySeconds.map((s) => `"${s}s"`).join(', ')}]
[delivery]
smarthost = "127.0.0.1:${peer.port}"
[local]
domains = []
[admin]
listen = "127.0.0.1:${adminPort}"
[log]
level = "warn"
rotate_size = 0
${o.workers === undefined ? '' : `[server]\nworkers = ${o.workers}\n`}`,
    );
    const pid = child.proc.pid!;
    const tail = new EventTail(join(dir, 'var', 'log', 'events.jsonl'));
    const waiting = new Map<string, Waiting>();
    let window: number[] = [];
    let deliveredEvents = 0;
    const intervalMs = (attempts: number): number => o.retrySeconds[Math.min(attempts - 1, o.retrySeconds.length - 1)]! * 1000;
    const allowedMs = (w: Waiting): number => (w.attempts === 0 ? o.firstAttemptSlackMs : intervalMs(w.attempts) * 1.1 + o.firstAttemptSlackMs);
    const violation = (w: Waiting): void => {
      if (w.flagged) return;
      w.flagged = true;
      result.scheduleViolations++;
    };
    const consume = (): void => {
      for (const e of tail.read()) {
        const ts = Date.parse(e.ts);
        const key = `${e.queue_id} ${e.recipient ?? ''}`;
        if (e.event === 'received') {
          waiting.set(key, { receivedAt: ts, last: ts, attempts: 0, flagged: false });
          continue;
        }
        if (e.event !== 'deferred' && e.event !== 'delivered' && e.event !== 'failed' && e.event !== 'expired') continue;
        const w = waiting.get(key);
        if (!w) continue; // a report or an event from before this tail started
        if (ts - w.last > allowedMs(w)) violation(w);
        w.attempts++;
        w.last = ts;
        if (e.event === 'deferred') {
          result.deferredAttempts++;
          continue;
        }
        waiting.delete(key);
        if (e.event === 'delivered') {
          deliveredEvents++;
          const latency = ts - w.receivedAt;
          window.push(latency);
          result.maxLatencyMs = Math.max(result.maxLatencyMs, latency);
        }
      }
    };
    const proc = child;
    const rss = (): number => {
      if (proc.proc.exitCode !== null || proc.proc.signalCode !== null) {
        throw new Error(`petrel exited during the soak (code ${proc.proc.exitCode}, signal ${proc.proc.signalCode}); data in ${dir}\nstdout: ${proc.stdout().slice(-3000)}\nstderr: ${proc.stderr().slice(-3000)}`);
      }
      // The primary and its worker processes (with [server] workers), each read from /proc.
      let kb = 0;
      for (const p of [pid, ...childPids(pid)]) {
        try {
          kb += Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1] ?? NaN);
        } catch {
          // A worker that just ended: not counted in this sample.
        }
      }
      return kb / 1024;
    };
    const fds = (): number => readdirSync(`/proc/${pid}/fd`).length;
    const sample = async (): Promise<SoakSample> => {
      consume();
      const now = Date.now();
      let oldest = 0;
      for (const w of waiting.values()) {
        oldest = Math.max(oldest, now - w.receivedAt);
        if (now - w.last > allowedMs(w) + 2000) violation(w); // + event log lag
      }
      const sorted = window.sort((a, b) => a - b);
      window = [];
      const metrics = await httpGet(adminPort, '/metrics').catch(() => '');
      const s: SoakSample = {
        seconds: Math.round((now - t0) / 1000),
        sent: result.sent,
        delivered: deliveredEvents,
        backlog: waiting.size,
        rssMb: Math.round(rss()),
        heapMb: Math.round(metric(metrics, 'petrel_process_nodejs_heap_size_used_bytes') / 1e6),
        fds: fds(),
        handles: metric(metrics, 'petrel_process_nodejs_active_handles_total'),
        inQueue: stateCount(metrics, 'queued') + stateCount(metrics, 'deferred') + stateCount(metrics, 'delivering'),
        p50Ms: percentile(sorted, 50),
        p99Ms: percentile(sorted, 99),
        maxMs: sorted.at(-1) ?? 0,
        oldestWaitingS: Math.round(oldest / 1000),
        scheduleViolations: result.scheduleViolations,
      };
      samples.push(s);
      // The peer keeps what it saw; only the counters above are needed.
      peer.transactions.splice(0);
      peer.connections.splice(0);
      o.log(
        `sample seconds=${s.seconds} sent=${s.sent} delivered=${s.delivered} backlog=${s.backlog} rss_mb=${s.rssMb} heap_mb=${s.heapMb} fds=${s.fds} handles=${s.handles} in_queue=${s.inQueue} latency_p50_ms=${s.p50Ms} p99_ms=${s.p99Ms} max_ms=${s.maxMs} oldest_waiting_s=${s.oldestWaitingS} schedule_violations=${s.scheduleViolations}`,
      );
      return s;
    };

    // Senders: `sessions` connections taking sequence numbers from one counter, at the offered rate.
    let next = 0;
    const deadline = t0 + o.maxSeconds * 1000;
    const body = ('soak body line, long enough to look like mail text and not compress to nothing\r\n').repeat(Math.max(1, Math.round(o.bodySize / 82)));
    const acked = new Uint8Array(o.messages + 1);
    const sender = async (): Promise<void> => {
      let t: SmtpTalk | null = null;
      let onThis = 0;
      while (!stopSending && next < o.messages && Date.now() < deadline) {
        const seq = ++next;
        if (o.rate > 0) {
          const due = t0 + (seq / o.rate) * 1000;
          if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()));
        }
        let stage = 'connect';
        try {
          if (!t || t.closed || onThis >= 500) {
            if (t) {
              await t.cmd('QUIT').catch(() => undefined);
              t.close();
              talks.delete(t);
            }
            t = await SmtpTalk.open(port);
            talks.add(t);
            stage = 'greeting';
            const greeting = await t.read();
            if (greeting?.code !== 220) throw new Error(`greeting ${greeting ? `${greeting.code} ${greeting.enhanced} ${greeting.lines.join(' ')}` : '(closed)'}`);
            stage = 'EHLO';
            await t.cmd('EHLO soak.client');
            onThis = 0;
          }
          onThis++;
          stage = `message ${onThis} on the connection`;
          const id = `<soak-${seq}-${t0}@soak.test>`;
          const r = await t.send(
            `sender${seq % 97}@soak.test`,
            [`rcpt${seq % 1009}@remote.example`],
            `From: <sender${seq % 97}@soak.test>\r\nTo: <rcpt${seq % 1009}@remote.example>\r\nSubject: soak message ${seq}\r\nMessage-ID: ${id}\r\nX-Soak-Seq: ${seq}\r\nDate: ${new Date().toUTCString()}\r\n\r\n${body}`,
          );
          if (r.code === 250) {
            result.sent++;
            acked[seq] = 1;
          } else {
            result.refused++;
            if (result.refused <= 20) o.log(`refused seq=${seq} at ${Math.round((Date.now() - t0) / 1000)} s: ${r.code} ${r.enhanced} ${r.lines.join(' ')}`);
          }
        } catch (e) {
          // The connection broke: note it (a failure of the run), and go on with a new one.
          result.connectionErrors++;
          if (result.connectionErrors <= 20) o.log(`connection error seq=${seq} at ${Math.round((Date.now() - t0) / 1000)} s, ${stage}: ${(e as Error).message}`);
          t?.close();
          if (t) talks.delete(t);
          t = null;
        }
      }
      if (t) {
        await t.cmd('QUIT').catch(() => undefined);
        t.close();
        talks.delete(t);
      }
    };
    const senders = Promise.all(Array.from({ length: o.sessions }, () => sender()));
    let sendersDone = false;
    void senders.then(() => (sendersDone = true));

    let warm = false;
    while (Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, o.sampleMs));
      const s = await sample();
      if (!warm && result.sent >= o.messages * o.warmupFraction) {
        warm = true;
        result.warmupRssMb = s.rssMb;
        result.warmupHeapMb = s.heapMb;
        result.warmupFds = s.fds;
        result.warmupHandles = s.handles;
        o.log(`warm-up done at sent=${result.sent}: rss_mb=${s.rssMb} heap_mb=${s.heapMb} fds=${s.fds} handles=${s.handles}`);
      }
      if (sendersDone && waiting.size === 0) {
        result.finished = true;
        break;
      }
    }
    stopSending = true;
    await senders;
    // The end: one more quiet sample, after the last delivery.
    await new Promise((r) => setTimeout(r, Math.min(o.sampleMs, 5000)));
    const end = await sample();
    result.endRssMb = end.rssMb;
    result.endHeapMb = end.heapMb;
    result.endFds = end.fds;
    result.endHandles = end.handles;
    result.endInQueue = end.inQueue;
    result.delivered = deliveredAtPeer;
    let lost = 0;
    for (let i = 1; i <= o.messages; i++) if (acked[i] && !seen[i]) lost++;
    result.lost = lost;
    result.duplicates = duplicates;
    if (result.connectionErrors || result.refused) {
      o.log(`petrel stderr (tail): ${child.stderr().slice(-4000)}`);
      o.log(`petrel stdout (tail): ${child.stdout().slice(-2000)}`);
    }
  } finally {
    stopSending = true;
    for (const t of talks) t.close();
    if (child) {
      child.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const exited = await Promise.race([child.exited.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 30_000)))]);
      clearTimeout(timer);
      if (!exited) {
        child.kill('SIGKILL');
        await child.exited;
      }
    }
    await peer.close();
    // A failed run keeps its data for diagnosis (the error names the folder).
    if (result.finished) cleanup(dir);
    else o.log(`data kept in ${dir}`);
  }
  result.seconds = Math.round((Date.now() - t0) / 1000);
  return result;
}

/** summaryLine - the result as key=value figures. */
export function summaryLine(r: SoakResult): string {
  const ratio = r.endRssMb / r.warmupRssMb;
  return `messages=${r.sent} refused=${r.refused} connection_errors=${r.connectionErrors} delivered=${r.delivered} lost=${r.lost} duplicates=${r.duplicates} deferred_attempts=${r.deferredAttempts} schedule_violations=${r.scheduleViolations} warmup_rss_mb=${r.warmupRssMb} end_rss_mb=${r.endRssMb} rss_ratio=${ratio.toFixed(2)} warmup_heap_mb=${r.warmupHeapMb} end_heap_mb=${r.endHeapMb} warmup_fds=${r.warmupFds} end_fds=${r.endFds} warmup_handles=${r.warmupHandles} end_handles=${r.endHandles} end_in_queue=${r.endInQueue} max_latency_ms=${r.maxLatencyMs} seconds=${r.seconds} finished=${r.finished}`;
}
