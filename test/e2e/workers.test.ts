// `[server] workers = 2` (issue 17): the primary keeps the queue, two
// inbound worker processes share the listening socket and accept for
// themselves (the kernel picks; to send through a given worker, the test
// stops the other with SIGSTOP for the moment of the accept). Mail through both workers
// is delivered once; a worker killed during DATA leaves no 250 and nothing
// queued, and is started again; a worker killed after its 250 loses nothing;
// a reload reaches the workers; kill -9 of the primary loses nothing
// acknowledged (and takes the workers with it); SIGTERM stops them all;
// failed logins are counted across the workers.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sendLoad } from '../helpers/load.js';
import { baseConfig, BIN, cleanup, freePort, readEvents, spawnPetrel, startChild, tempDir, waitFor, type Child } from '../helpers/petrel-harness.js';
import { alive, childPids, holderOf, listensOn } from '../helpers/processes.js';
import { WORKER_INITIAL_OLD_SPACE_MB, workerExecArgv } from '../../src/workers/primary.js';
import { KEEP_MS } from '../../src/workers/primary-gate.js';
import { SmtpTalk, replyLine } from '../helpers/smtp-talk.js';
import { setUser } from '../../src/inbound/submission-users.js';
import { startPeer } from '../helpers/test-peer.js';

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

/** shareOf - which process made a queue id (core/ids idRange: 2^27 counter values per process). */
function shareOf(queueId: string): number {
  let n = 0;
  for (const c of queueId.slice(9)) n = n * 32 + ALPHABET.indexOf(c);
  return Math.floor(n / 2 ** 27);
}

function config(dir: string, port: number, smtp = ''): string {
  return baseConfig(dir, `[smtp]\nlisten = ["127.0.0.1:${port}"]\nmax_connections_per_client = 3\n${smtp}[server]\nworkers = 2\n[local]\ndomains = ["local.test"]\n[log]\nlevel = "error"\n`);
}

/** mailbox - the messages delivered to user@local.test so far. */
function mailbox(dir: string, user: string): string[] {
  const p = join(dir, 'var', 'mail', 'local.test', user, 'new');
  return existsSync(p) ? readdirSync(p) : [];
}

/** greeted - a connection that has its greeting and EHLO answer, and the worker that holds it. */
async function greeted(port: number, workers: readonly number[]): Promise<{ t: SmtpTalk; holder: number }> {
  const t = await SmtpTalk.open(port);
  assert.equal((await t.read())?.code, 220);
  assert.equal((await t.cmd('EHLO client.test')).code, 250);
  const holder = await waitFor(() => holderOf(port, t.localPort, workers), 5000, 'the worker holding the connection');
  return { t, holder };
}

/** replaced - the workers once one in place of `dead` is listening (until then, a server whose every worker died refuses connections). */
async function replaced(primary: number, dead: number, port: number): Promise<number[]> {
  return waitFor(() => {
    const now = childPids(primary);
    return now.length === 2 && !now.includes(dead) && now.every((pid) => listensOn(pid, port)) ? now : null;
  }, 20_000, 'a new worker, listening, in place of the dead one');
}

/**
 * keptSlotsBack - the slots the workers keep for reuse after the last test's
 * connections ended have gone back to the primary (each goes KEEP_MS after it
 * was kept; waited for four times that). A test that counts connections from
 * this address starts from none: else `through` (which stops the other worker)
 * could meet the limit with a slot the stopped worker keeps, which it cannot
 * give back while stopped — seen under load as a 421 after the 2 s reclaim wait.
 */
const keptSlotsBack = (): Promise<void> => new Promise((r) => setTimeout(r, 4 * KEEP_MS));

/** through - a greeted connection held by `worker`: the others are stopped (SIGSTOP) until it has accepted. */
async function through(port: number, worker: number, workers: readonly number[]): Promise<SmtpTalk> {
  const others = workers.filter((w) => w !== worker);
  for (const w of others) process.kill(w, 'SIGSTOP');
  try {
    const { t, holder } = await greeted(port, workers);
    assert.equal(holder, worker, 'the running worker took the connection');
    return t;
  } finally {
    for (const w of others) process.kill(w, 'SIGCONT');
  }
}

describe('[server] workers = 2', () => {
  const dir = tempDir();
  let port = 0;
  let child: Child;
  let primary = 0;
  let workers: number[] = [];

  before(async () => {
    port = await freePort();
    child = await startChild(dir, config(dir, port));
    primary = child.proc.pid!;
    workers = childPids(primary);
  });
  after(async () => {
    child.kill('SIGKILL');
    await child.exited;
    cleanup(dir);
  });

  test('two workers, started at once; each accepts connections, and every message is delivered once', async () => {
    assert.equal(workers.length, 2, `two worker processes (${workers.join(' ')})`);
    assert.match(child.stdout(), new RegExp(`2 workers \\(pids ${workers.join(' ')}\\)`));
    // Their V8 heap starts with room for the array buffers of large messages (workers/primary: fewer full
    // collections) — unless this environment's NODE_OPTIONS sizes the heap: then the operator's sizing rules.
    const flag = `--initial-old-space-size=${WORKER_INITIAL_OLD_SPACE_MB}`;
    const expected = workerExecArgv([], process.env.NODE_OPTIONS ?? '').includes(flag);
    for (const w of workers) assert.equal(readFileSync(`/proc/${w}/cmdline`, 'latin1').split('\0').includes(flag), expected, `worker ${w} runs with ${flag}: ${expected}`);
    for (let i = 0; i < 8; i++) {
      const t = await through(port, workers[i % 2]!, workers);
      const r = await t.send('sender@example.com', [`spread${i}@local.test`], `Subject: spread ${i}\r\n\r\nhello ${i}\r\n`);
      assert.equal(r.code, 250, `message ${i}: ${r.lines.join(' ')}`);
      t.close();
    }
    await waitFor(() => Array.from({ length: 8 }, (_, i) => mailbox(dir, `spread${i}`).length === 1).every(Boolean), 20_000, 'all 8 delivered');
    const events = readEvents(join(dir, 'var', 'log', 'events.jsonl'));
    const received = events.filter((e) => e.event === 'received' && e.recipient?.startsWith('spread'));
    assert.equal(received.length, 8);
    assert.deepEqual([...new Set(received.map((e) => shareOf(e.queue_id!)))].sort(), [1, 2], 'queue ids from each worker share of the id counter');
    await new Promise((r) => setTimeout(r, 300));
    for (let i = 0; i < 8; i++) assert.equal(mailbox(dir, `spread${i}`).length, 1, `spread${i} delivered exactly once`);
  });

  test('kill -9 of a worker during DATA: no 250, nothing queued, its body file removed, the worker started again', async () => {
    const { t, holder } = await greeted(port, workers);
    assert.equal((await t.cmd('MAIL FROM:<sender@example.com>')).code, 250);
    assert.equal((await t.cmd('RCPT TO:<partial@local.test>')).code, 250);
    assert.equal((await t.cmd('DATA')).code, 354);
    // Past the inline size (128 KB): the worker spills the body to its own file under spool/tmp.
    t.write(`Subject: partial\r\n\r\n${'x'.repeat(76)}\r\n`.repeat(3000));
    const tmp = join(dir, 'var', 'spool', 'tmp', `w${holder}`);
    await waitFor(() => existsSync(tmp) && readdirSync(tmp).length === 1, 10_000, 'the body file in the worker tmp folder');
    process.kill(holder, 'SIGKILL');
    assert.equal(await t.read(10_000), null, 'the connection closed without a reply');
    await waitFor(() => !existsSync(tmp), 10_000, 'the dead worker tmp folder removed');
    workers = await replaced(primary, holder, port);
    const again = await greeted(port, workers);
    assert.equal((await again.t.send('sender@example.com', ['later@local.test'], 'Subject: later\r\n\r\nafter the crash\r\n')).code, 250);
    again.t.close();
    await waitFor(() => mailbox(dir, 'later').length === 1, 20_000, 'the next message delivered');
    assert.equal(mailbox(dir, 'partial').length, 0, 'the partial message was never queued');
    const events = readEvents(join(dir, 'var', 'log', 'events.jsonl'));
    assert.equal(events.filter((e) => e.recipient === 'partial@local.test').length, 0, 'no event for the partial message');
  });

  test('kill -9 of a worker right after its 250: the message is delivered', async () => {
    const { t, holder } = await greeted(port, workers);
    const r = await t.send('sender@example.com', ['acked@local.test'], 'Subject: acked\r\n\r\naccepted, then the worker dies\r\n');
    assert.equal(r.code, 250);
    process.kill(holder, 'SIGKILL');
    t.close();
    await waitFor(() => mailbox(dir, 'acked').length === 1, 20_000, 'the acknowledged message delivered');
    workers = await replaced(primary, holder, port);
  });

  test('max_connections_per_client counts the connections of every worker', async () => {
    await keptSlotsBack();
    const open = [await through(port, workers[0]!, workers), await through(port, workers[1]!, workers), await through(port, workers[0]!, workers)];
    for (const w of workers) {
      // The fourth from this client, whichever worker takes it: 421 4.7.0 from the server's count.
      const others = workers.filter((x) => x !== w);
      for (const o of others) process.kill(o, 'SIGSTOP');
      try {
        const t = await SmtpTalk.open(port);
        const r = await t.read();
        assert.equal(`${r?.code} ${r?.enhanced}`, '421 4.7.0', `worker ${w} refuses the fourth connection`);
        t.close();
      } finally {
        for (const o of others) process.kill(o, 'SIGCONT');
      }
    }
    for (const t of open) t.close();
    // Given back when they end: a new connection is served again.
    const again = await waitFor(async () => {
      const t = await SmtpTalk.open(port);
      const r = await t.read();
      if (r?.code === 220) return t;
      t.close();
      return null;
    }, 10_000, 'a connection served once the others ended');
    again.close();
  });

  test('a slot kept for reuse by one worker is given back when another worker would have to refuse', async (t0) => {
    const [w0, w1] = workers as [number, number];
    await keptSlotsBack();
    const open: SmtpTalk[] = [];
    t0.after(() => open.forEach((o) => o.close()));
    for (const w of [w0, w1, w0]) open.push(await through(port, w, workers));
    // The third ends: w0 keeps its slot for the next connection from this address (still counted by the primary).
    open.pop()!.close();
    await new Promise((r) => setTimeout(r, 50));
    // w0 stopped now cannot give the slot back by itself (its timers do not run).
    process.kill(w0, 'SIGSTOP');
    let t: SmtpTalk;
    try {
      t = await SmtpTalk.open(port);
      await waitFor(() => holderOf(port, t.localPort, workers) === w1, 5000, 'w1 accepted the connection');
      // w1 asks the primary; at the limit with w0's kept slot, the primary asks w0 for it first.
      await new Promise((r) => setTimeout(r, 100));
    } finally {
      process.kill(w0, 'SIGCONT');
    }
    const r = await t.read(10_000);
    assert.equal(r?.code, 220, `served with the slot w0 gave back (${r?.lines.join(' ')})`);
    // Three open again: the next one is refused, from either worker.
    const fourth = await SmtpTalk.open(port);
    assert.equal((await fourth.read())?.code, 421);
    fourth.close();
    t.close();
    for (const o of open) o.close();
  });

  test('petrel reload reaches every worker', async () => {
    await keptSlotsBack();
    writeFileSync(join(dir, 'petrel.toml'), config(dir, port, 'max_recipients = 1\n'));
    const reload = spawnPetrel(['reload', '--config', join(dir, 'petrel.toml')], dir);
    assert.equal(await reload.exited, 0, reload.stdout() + reload.stderr());
    for (const holder of [...workers, ...workers]) {
      const t = await through(port, holder, workers);
      assert.equal((await t.cmd('MAIL FROM:<sender@example.com>')).code, 250);
      assert.equal((await t.cmd('RCPT TO:<one@local.test>')).code, 250);
      const second = await t.cmd('RCPT TO:<two@local.test>');
      assert.equal(second.code, 452, `worker ${holder} has the new max_recipients`);
      t.close();
    }
  });
});

test('[server] workers = 2: kill -9 of the primary under load loses nothing acknowledged; SIGTERM stops every process', async (t) => {
  const dir = tempDir();
  const sink = await startPeer({});
  const port = await freePort();
  const text = baseConfig(dir, `[smtp]\nlisten = ["127.0.0.1:${port}"]\nmax_connections_per_client = 100\n[server]\nworkers = 2\n[delivery]\nsmarthost = "127.0.0.1:${sink.port}"\n[local]\ndomains = []\n[queue]\nretry_intervals = ["500ms"]\n[log]\nlevel = "error"\n`);
  let child: Child | null = null;
  try {
    child = await startChild(dir, text);
    const first = childPids(child.proc.pid!);
    assert.equal(first.length, 2);
    const acked = new Set<string>();
    const next = { i: 0, to: 900 };
    const running = sendLoad(port, next, acked, { clients: 6, prefix: 'wcrash' });
    await waitFor(() => acked.size >= 200, 60_000, '200 acknowledged before the kill');
    child.kill('SIGKILL');
    await child.exited;
    await running;
    await waitFor(() => first.every((pid) => !alive(pid)), 10_000, 'the workers gone with their primary');
    child = await startChild(dir, text);
    await sendLoad(port, next, acked, { clients: 6, prefix: 'wcrash' });
    const arrived = (): string[] =>
      sink.transactions.filter((x) => x.completed && x.finalReplies[0]?.startsWith('2')).map((x) => /^Message-ID: (.*)$/m.exec(x.body.toString('latin1'))?.[1]?.trim() ?? '');
    await waitFor(() => {
      const got = new Set(arrived());
      return [...acked].every((id) => got.has(id));
    }, 60_000, 'every acknowledged message at the sink');
    t.diagnostic(`acknowledged=${acked.size} arrived=${arrived().length}`);
    assert.ok(acked.size >= 900 - 12, `nearly all acknowledged (${acked.size})`);
    const second = childPids(child.proc.pid!);
    child.kill('SIGTERM');
    assert.equal(await child.exited, 0, child.stderr());
    child = null;
    assert.ok(second.every((pid) => !alive(pid)), 'no worker left after SIGTERM');
    const audit = spawnPetrel(['audit', '--config', join(dir, 'petrel.toml')], dir);
    assert.equal(await audit.exited, 0, audit.stdout() + audit.stderr());
    assert.match(audit.stdout(), /exceptions: 0/);
  } finally {
    child?.kill('SIGKILL');
    await child?.exited;
    await sink.close();
    cleanup(dir);
  }
});

test('[server] workers = 2: failed logins are counted for all the workers, so a guesser gains nothing from another worker', async () => {
  const dir = tempDir();
  await setUser(join(dir, 'users'), 'alice', 'correct horse battery');
  const sub = await freePort();
  const port = await freePort();
  const child = await startChild(dir, config(dir, port, `submission_listen = ["127.0.0.1:${sub}"]\nusers_file = "${join(dir, 'users')}"\n`));
  try {
    const workers = childPids(child.proc.pid!);
    assert.equal(workers.length, 2);
    /** A wrong password through `worker`; how long its 535 took. */
    const guess = async (worker: number): Promise<number> => {
      const t = await through(sub, worker, workers);
      await t.startTls();
      await t.cmd('EHLO client.test');
      const t0 = Date.now();
      t.write(`AUTH PLAIN ${Buffer.from('\u0000alice\u0000guess').toString('base64')}\r\n`);
      const r = await t.read(30_000);
      const took = Date.now() - t0;
      assert.match(r ? replyLine(r) : 'closed', /^535 5\.7\.8 /);
      t.close();
      return took;
    };
    // 1 s, then 2 s, then 3 s from this address: each worker's own count would give 1, 1, 2.
    await guess(workers[0]!);
    const second = await guess(workers[1]!);
    const third = await guess(workers[0]!);
    assert.ok(second >= 1800, `the second failure (on the other worker) waited for two: ${second} ms`);
    assert.ok(third >= 2800, `the third failure waited for three: ${third} ms`);
  } finally {
    child.kill('SIGKILL');
    await child.exited;
    cleanup(dir);
  }
});

test('the petrel command (bin/petrel.js run by its first line) starts the primary and its workers with a 64 MB old generation; SIGTERM stops them', async () => {
  const dir = tempDir();
  const port = await freePort();
  const file = join(dir, 'petrel.toml');
  writeFileSync(file, config(dir, port));
  // Run as an operator's `petrel start` runs it: the file itself, through its `#!/usr/bin/env -S node …` line.
  const proc = spawn(BIN, ['start', '--config', file], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | string>((resolve) => proc.on('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  try {
    await waitFor(() => /listening smtp /.test(out) || proc.exitCode !== null, 20_000, 'petrel to listen');
    assert.equal(proc.exitCode, null, `petrel exited: ${out}`);
    const flag = `--initial-old-space-size=${WORKER_INITIAL_OLD_SPACE_MB}`;
    const argsOf = (pid: number): string[] => readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0');
    const workers = await waitFor(() => (childPids(proc.pid!).length === 2 ? childPids(proc.pid!) : null), 20_000, 'two workers');
    for (const pid of [proc.pid!, ...workers]) {
      const args = argsOf(pid);
      assert.ok(args.includes(BIN), `process ${pid} runs bin/petrel.js: ${args.join(' ')}`);
      assert.equal(args.filter((a) => /^--initial-old-space-size=/.test(a)).join(' '), flag, `process ${pid} has ${flag} once: ${args.join(' ')}`);
    }
    const t = await SmtpTalk.open(port);
    assert.equal((await t.read())?.code, 220);
    t.close();
    proc.kill('SIGTERM');
    assert.equal(await exited, 0, out);
  } finally {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    await exited;
    cleanup(dir);
  }
});
