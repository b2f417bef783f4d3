/*
 * dsn-scale - seed 000 (a server that could not build a report for more
 * than 32,766 recipients): 100,000 recipients make ONE valid report listing
 * all of them, reading each recipient once and writing in few large writes,
 * without holding them. (How long it takes is printed, not asserted: speed
 * belongs to benchmarks; a loaded machine is no fault of the writer.)
 *
 * The report is built in a child process (this file, run with
 * PETREL_DSN_SCALE_CHILD set) so the measurement sees nothing but the writer:
 * - "natural": the old-space heap capped at 64 MB, normal garbage
 *   collection, the report written to a file; counts the recipients read
 *   and the writes made, measures peak RSS, and the file is then read back
 *   with Python's email package;
 * - "retained": the same with a full garbage collection before each sample
 *   (every 5,000 recipients and every 8 writes), so the samples show what
 *   the writer holds, not garbage not yet collected;
 * - "hold": a control whose `write` keeps every chunk, as a writer holding
 *   the report would; the same measurement must see it, or it proves nothing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeReport } from '../../src/dsn/build.js';
import { iterate, message, ORIGINAL, originalFrom, recipient, lines } from '../helpers/dsn-writer.js';

const N = 100_000;
const MB = 1024 * 1024;

interface ChildResult {
  ms: number;
  size: number;
  /** Recipients pulled from the source, calls of the sink, and the octets given to it. */
  pulled: number;
  writes: number;
  written: number;
  ids: number;
  idsInOrder: boolean;
  peakRss: number;
  peakHeld: number;
  peakHeap: number;
}

/** The recipients, made one by one (the child never holds them either): three kinds of outcome. */
async function* recipients(n: number): AsyncIterable<ReturnType<typeof recipient>> {
  for (let i = 1; i <= n; i++) {
    if (i % 97 === 0) {
      yield recipient(i, { address: `user${i}@nowhere.example`, lastReply: 'Host or domain name not found. Name service error for name=nowhere.example type=MX: Host not found', lastStatus: '5.1.2', remote: '' });
    } else if (i % 50 === 0) {
      yield recipient(i, { address: `user${i}@example.com`, lastReply: `552 5.2.2 <user${i}@example.com>: Mailbox full`, lastStatus: '5.2.2' });
    } else {
      yield recipient(i, {
        address: `user${i}@example.com`,
        orcpt: i % 10 === 0 ? `rfc822;User${i}@Example.com` : null,
        lastReply: `550 5.1.1 <user${i}@example.com>: Recipient address rejected: User unknown in virtual mailbox table`,
      });
    }
  }
}

async function child(spec: { out: string; mode: 'natural' | 'retained' | 'hold' }): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with --expose-gc');
  const input = (n: number) => ({
    kind: 'failed' as const,
    hostname: 'mx.petrel.example',
    message: message({ recipientCount: n }),
    recipients: recipients(n),
    original: originalFrom(ORIGINAL),
    returnSizeLimit: 256 * 1024,
    to: 'alice@example.org',
  });
  // Warm up (module loading, JIT), so the baseline is the writer's starting point.
  await writeReport({ ...input(2000), recipients: iterate([recipient(1)]) }, async () => undefined);
  await writeReport(input(2000), async () => undefined);
  gc();
  const base = process.memoryUsage();
  const peak = { rss: 0, held: 0, heap: 0 };
  const sample = (): void => {
    if (spec.mode !== 'natural') gc();
    const u = process.memoryUsage();
    peak.rss = Math.max(peak.rss, u.rss - base.rss);
    peak.heap = Math.max(peak.heap, u.heapUsed - base.heapUsed);
    peak.held = Math.max(peak.held, u.heapUsed + u.arrayBuffers - base.heapUsed - base.arrayBuffers);
  };
  const timer = setInterval(() => spec.mode === 'natural' && sample(), 5);
  const fh = await open(spec.out, 'w');
  const kept: Buffer[] = [];
  let writes = 0;
  let written = 0;
  const made = recipients(N);
  let seen = 0;
  async function* watched(): AsyncIterable<ReturnType<typeof recipient>> {
    for await (const r of made) {
      if (++seen % 5000 === 0) sample();
      yield r;
    }
  }
  const t0 = performance.now();
  const result = await writeReport({ ...input(N), recipients: watched() }, async (chunk) => {
    if (spec.mode === 'hold') kept.push(chunk);
    written += chunk.length;
    await fh.write(chunk);
    if (++writes % 8 === 0) sample();
  });
  const ms = performance.now() - t0;
  sample();
  clearInterval(timer);
  await fh.close();
  const out: ChildResult = {
    ms,
    size: result.size,
    pulled: seen,
    writes,
    written,
    ids: result.recipientIds.length,
    idsInOrder: result.recipientIds.every((id, i) => id === i + 1),
    peakRss: peak.rss,
    peakHeld: peak.held,
    peakHeap: peak.heap,
  };
  process.stdout.write(JSON.stringify(out));
  if (kept.length === 0 && spec.mode === 'hold') throw new Error('control kept nothing');
}

function runChild(out: string, mode: 'natural' | 'retained' | 'hold'): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--expose-gc', '--max-old-space-size=64', fileURLToPath(import.meta.url)], {
      env: { ...process.env, PETREL_DSN_SCALE_CHILD: JSON.stringify({ out, mode }) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const so: Buffer[] = [];
    const se: Buffer[] = [];
    p.stdout.on('data', (c: Buffer) => so.push(c));
    p.stderr.on('data', (c: Buffer) => se.push(c));
    p.on('error', reject);
    p.on('close', (code) => {
      if (code !== 0) return reject(new Error(`child (${mode}) exited ${code}: ${Buffer.concat(se).toString()}`));
      resolve(JSON.parse(Buffer.concat(so).toString()) as ChildResult);
    });
  });
}

/** Python reads the report and counts: parts, status blocks, distinct Final-Recipients, actions. */
const COUNT_PY = String.raw`
import email, json, sys
m = email.message_from_binary_file(open(sys.argv[1], 'rb'))
parts = m.get_payload()
defects = [str(d) for p in m.walk() for d in p.defects]
blocks = parts[1].get_payload()
finals = [b['Final-Recipient'] for b in blocks[1:]]
text = parts[0].get_payload().replace('\r\n', '\n')
listed = sum(1 for l in text.split('\n') if l.startswith('  <user'))
print(json.dumps({'types': [p.get_content_type() for p in parts], 'defects': defects, 'blocks': len(blocks),
  'finals': len(finals), 'distinct': len(set(finals)), 'first': finals[0], 'last': finals[-1],
  'actions': sorted(set(b['Action'] for b in blocks[1:])), 'statuses': sorted(set(b['Status'] for b in blocks[1:])),
  'listed': listed, 'sections': text.count('\n' + '=' * 76 + '\n')}))
`;

function countWithPython(file: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const p = spawn('python3', ['-c', COUNT_PY, file], { stdio: ['ignore', 'pipe', 'pipe'] });
    const so: Buffer[] = [];
    const se: Buffer[] = [];
    p.stdout.on('data', (c: Buffer) => so.push(c));
    p.stderr.on('data', (c: Buffer) => se.push(c));
    p.on('close', (code) => (code === 0 ? resolve(JSON.parse(Buffer.concat(so).toString()) as Record<string, unknown>) : reject(new Error(Buffer.concat(se).toString()))));
  });
}

const childSpec = process.env.PETREL_DSN_SCALE_CHILD;
if (childSpec) {
  await child(JSON.parse(childSpec) as { out: string; mode: 'natural' | 'retained' | 'hold' });
} else {
  test('dsn scale: 100,000 recipients make one valid report listing all of them, each read once, in few large writes and bounded memory', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'petrel-dsn-scale-'));
    try {
      const file = join(dir, 'report.eml');
      const natural = await runChild(file, 'natural');
      t.diagnostic(`100,000 recipients: ${Math.round(natural.ms)} ms (not asserted), ${(natural.size / MB).toFixed(1)} MB report in ${natural.writes} writes, peak extra RSS ${(natural.peakRss / MB).toFixed(1)} MB, peak extra heap ${(natural.peakHeap / MB).toFixed(1)} MB (old space capped at 64 MB)`);
      assert.equal(natural.ids, N);
      assert.ok(natural.idsInOrder);
      // The work is linear and its I/O batched: every recipient is read from the store once
      // (the report lists each twice, from its own spills, never by reading the queue again),
      // every octet is written once, and the writes are large - on average at least 64 KB,
      // never one per recipient or per line.
      assert.equal(natural.pulled, N, 'each recipient read once');
      assert.equal(natural.written, natural.size, 'each octet written once');
      assert.ok(natural.writes <= natural.size / (64 * 1024), `${natural.writes} writes for ${natural.size} octets`);
      assert.ok(natural.peakRss < 100 * MB, `peak extra RSS ${natural.peakRss}`);

      // The file: one report, every line CRLF and within 998 octets, all 100,000 recipients in both parts.
      const raw = await readFile(file);
      assert.equal(raw.length, natural.size);
      let longest = 0;
      for (const l of lines(raw)) longest = Math.max(longest, l.length);
      assert.ok(longest <= 998, `longest line ${longest}`);
      const c = await countWithPython(file);
      t.diagnostic(`python: ${JSON.stringify(c)}`);
      assert.deepEqual(c['types'], ['text/plain', 'message/delivery-status', 'text/rfc822-headers']);
      assert.deepEqual(c['defects'], []);
      assert.equal(c['blocks'], N + 1);
      assert.equal(c['finals'], N);
      assert.equal(c['distinct'], N);
      assert.equal(c['first'], 'rfc822; user1@example.com');
      assert.equal(c['last'], 'rfc822; user100000@example.com');
      assert.deepEqual(c['actions'], ['failed']);
      assert.deepEqual(c['statuses'], ['5.1.1', '5.1.2', '5.2.2']);
      assert.equal(c['listed'], N, 'the human part lists every recipient');
      assert.equal(c['sections'], 2 * 3 + 1, 'three explanations, each written once');

      const retained = await runChild(file, 'retained');
      t.diagnostic(`retained (after full GC): peak ${(retained.peakHeld / MB).toFixed(1)} MB heap+buffers while writing a ${(retained.size / MB).toFixed(1)} MB report`);
      assert.ok(retained.peakHeld < 100 * MB);
      // Far below the report itself: nothing per recipient is kept but its id.
      assert.ok(retained.peakHeld < 16 * MB, `retained ${retained.peakHeld}`);

      const hold = await runChild(file, 'hold');
      t.diagnostic(`control that keeps the report: peak ${(hold.peakHeld / MB).toFixed(1)} MB retained`);
      assert.ok(hold.peakHeld > retained.size * 0.8, 'the measurement sees a writer that holds the report');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
}
