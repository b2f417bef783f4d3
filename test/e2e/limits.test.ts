// Limits with clear replies (issue 7, CONTRACT.md's inbound table), beyond
// what inbound-replies.test.ts covers: text lines far over 1,000 octets
// accepted and wrapped when relayed; the header section limit (552 5.3.4);
// unknown commands counted across a pipelined batch (421 4.7.0, nothing after
// it runs); max connections in all and per client under a burst of 200
// (421 4.7.0 at the greeting, every slot given back); slow-loris in a command
// line (cut at idle_timeout: the idle timer restarts only per whole command);
// idle after a message; a DATA phase that trickles (data_timeout); a client
// that never reads its replies (Petrel stops reading, memory bounded); and a
// 200 MB message refused while streaming with the server's memory flat; the
// whole session bounded (session_timeout) and commands that move no mail
// counted (max_junk_commands).
//
// Timing bounds are generous (a timeout of 1 s must fire before 4 s); nothing
// compares absolute speeds.
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { readFileSync, readdirSync, statSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { SmtpTalk, replyLine } from '../helpers/smtp-talk.js';
import { startPetrel, startChild, baseConfig, freePort, waitFor, cleanup, tempDir, type InProcess } from '../helpers/petrel-harness.js';
import { startPeer, type TestPeer } from '../helpers/test-peer.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Everything a test opened; afterEach closes what a failing test left open, so one failure does not cascade. */
const opened: Array<{ close(): void }> = [];

async function session(port: number, localAddress?: string): Promise<SmtpTalk> {
  const t = await SmtpTalk.open(port, '127.0.0.1', localAddress);
  opened.push(t);
  assert.equal((await t.read())?.code, 220);
  assert.equal((await t.cmd('EHLO client.test')).code, 250);
  return t;
}

/** firstLine - connect and read the first line the server sends (or "(closed)"), keeping the socket open. */
function firstLine(port: number, localAddress: string): Promise<{ socket: Socket; line: string }> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1', localAddress });
    opened.push({ close: () => socket.destroy() });
    let buf = '';
    let done = false;
    const finish = (line: string): void => {
      if (done) return;
      done = true;
      resolve({ socket, line });
    };
    socket.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      const i = buf.indexOf('\r\n');
      if (i >= 0) finish(buf.slice(0, i));
    });
    socket.on('error', (e) => finish(`(error ${(e as NodeJS.ErrnoException).code})`));
    socket.on('close', () => finish('(closed)'));
    setTimeout(() => finish('(no greeting in 15 s)'), 15_000).unref();
  });
}

/** spoolBytes - octets under data_dir/spool (what is kept on disk). */
function spoolBytes(dir: string): number {
  let n = 0;
  const walk = (d: string): void => {
    if (!existsSync(d)) return;
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      const s = statSync(p);
      if (s.isDirectory()) walk(p);
      else n += s.size;
    }
  };
  walk(join(dir, 'var', 'spool'));
  return n;
}

describe('limits, in process', () => {
  let p: InProcess;
  let peer: TestPeer;
  before(async () => {
    peer = await startPeer();
    p = await startPetrel(`[smtp]
listen = ["127.0.0.1:0"]
max_header_size = "4KB"
max_unknown_commands = 3
max_connections = 50
max_connections_per_client = 20
idle_timeout = "1s"
data_timeout = "1500ms"
[local]
domains = ["local.test"]
[delivery]
smarthost = "127.0.0.1:${peer.port}"
`);
  });
  afterEach(() => {
    for (const o of opened.splice(0)) o.close();
  });
  after(async () => {
    await p.stop();
    await peer.close();
    cleanup(p.dir);
  });

  test('text lines far over 1,000 octets are accepted and leave wrapped, nothing lost', async () => {
    const t = await session(p.port);
    const header = 'X-Long: ' + 'h'.repeat(3000); // under max_header_size = 4KB
    const huge = Array.from({ length: 300_000 }, (_, i) => String.fromCharCode(97 + (i % 26))).join('');
    const message = `${header}\r\nSubject: long lines\r\nMessage-ID: <long@limits.test>\r\n\r\n${'x'.repeat(998)}\r\n${'y'.repeat(999)}\r\n${'z'.repeat(1000)}\r\n${huge}`;
    const r = await t.send('alice@example.com', ['bob@remote.example'], message);
    assert.match(replyLine(r), /^250 2\.0\.0 /);
    t.close();
    await waitFor(() => peer.transactions.some((x) => x.completed && x.body.includes('<long@limits.test>')), 10_000, 'relayed');
    const tx = peer.transactions.find((x) => x.body.includes('<long@limits.test>'))!;
    const lines = tx.raw.toString('latin1').split('\r\n');
    assert.ok(lines.every((l) => l.length <= 998), `longest line on the wire: ${Math.max(...lines.map((l) => l.length))}`);
    const body = tx.body.toString('latin1');
    const mine = body.slice(body.indexOf('X-Long:'));
    // Unwrapping (CRLF + space -> nothing) gives back exactly what the client sent (plus the CRLF a last line needs);
    // the header line is folded before its space first (RFC 5322 folding, invisible to relaxed DKIM), so that space goes too.
    assert.equal(mine.replace(/\r\n /g, ''), message.replace('X-Long: ', 'X-Long:') + '\r\n');
  });

  test('a header section over max_header_size gets 552 5.3.4, nothing kept; a big body under a small header is fine', async () => {
    const t = await session(p.port);
    const before = (await p.petrel.store.list({ limit: 1000 })).length;
    const many = Array.from({ length: 100 }, (_, i) => `X-Filler-${i}: ${'f'.repeat(40)}`).join('\r\n');
    const r1 = await t.send('alice@example.com', ['bob@local.test'], `${many}\r\nSubject: big header\r\n\r\nbody\r\n`);
    assert.match(replyLine(r1), /^552 5\.3\.4 /);
    // A header section that never ends (no empty line, every line a header) is the same.
    const r2 = await t.send('alice@example.com', ['bob@local.test'], `${many}\r\n${many}`);
    assert.match(replyLine(r2), /^552 5\.3\.4 /);
    // One folded header over the limit.
    const r3 = await t.send('alice@example.com', ['bob@local.test'], `Subject: x\r\n${Array.from({ length: 200 }, () => ' fold fold fold fold').join('\r\n')}\r\n\r\nb\r\n`);
    assert.match(replyLine(r3), /^552 5\.3\.4 /);
    assert.equal((await p.petrel.store.list({ limit: 1000 })).length, before, 'nothing kept');
    const r4 = await t.send('alice@example.com', ['bob@local.test'], `Subject: small header\r\n\r\n${('b'.repeat(70) + '\r\n').repeat(2000)}`);
    assert.match(replyLine(r4), /^250 2\.0\.0 /, 'the body does not count toward the header limit');
    assert.equal((await t.cmd('NOOP')).code, 250, 'the session goes on');
    t.close();
  });

  test('unknown commands in one pipelined batch: 500 each, 421 4.7.0 at the limit, nothing after it runs', async () => {
    const t = await session(p.port);
    // Garbage lines of every shape count as unknown commands.
    t.write('FOO\r\n\r\n\u0001\u0002\u00ff bar\r\nXYZZY\r\nNOOP\r\nMAIL FROM:<a@example.com>\r\n');
    const replies: string[] = [];
    for (;;) {
      const r = await t.read(5000);
      if (!r) break;
      replies.push(replyLine(r).slice(0, 9));
    }
    assert.deepEqual(replies, ['500 5.5.2', '500 5.5.2', '500 5.5.2', '421 4.7.0']);
  });

  test('a burst of 200 connections from one client: exactly max_connections_per_client greeted, the rest 421 4.7.0', async () => {
    await waitFor(() => p.petrel.inbound!.connectionCount === 0, 10_000, 'earlier sessions to end');
    for (let round = 0; round < 2; round++) {
      const all = await Promise.all(Array.from({ length: 200 }, () => firstLine(p.port, '127.0.0.5')));
      const greeted = all.filter((c) => c.line.startsWith('220 '));
      const refused = all.filter((c) => /^421 4\.7\.0 /.test(c.line));
      assert.equal(greeted.length, 20, `round ${round}: ${all.map((c) => c.line.slice(0, 9)).filter((l) => !l.startsWith('220')).slice(0, 3)}`);
      assert.equal(refused.length, 180, `every other connection is refused with 421 4.7.0: ${all.find((c) => !/^(220|421 4\.7\.0) /.test(c.line))?.line}`);
      for (const c of all) c.socket.destroy();
      // Every slot is given back: the next round sees the same numbers (no leak, seed 002).
      await waitFor(() => p.petrel.inbound!.connectionCount === 0, 10_000, 'slots released');
    }
  });

  test('a burst of 200 connections from ten clients: max_connections in all, each client at most its share', async () => {
    const ips = Array.from({ length: 10 }, (_, i) => `127.0.0.${40 + i}`);
    const all = await Promise.all(Array.from({ length: 200 }, (_, i) => firstLine(p.port, ips[i % 10]!).then((c) => ({ ...c, ip: ips[i % 10]! }))));
    const greeted = all.filter((c) => c.line.startsWith('220 '));
    assert.equal(greeted.length, 50, 'max_connections = 50');
    assert.equal(all.filter((c) => /^421 4\.7\.0 /.test(c.line)).length, 150);
    for (const ip of ips) assert.ok(greeted.filter((c) => c.ip === ip).length <= 20);
    for (const c of all) c.socket.destroy();
    await waitFor(() => p.petrel.inbound!.connectionCount === 0, 10_000, 'slots released');
    const t = await session(p.port, '127.0.0.40');
    assert.equal((await t.cmd('NOOP')).code, 250, 'a client is served again once the burst is gone');
    t.close();
  });

  test('slow-loris: one octet every 100 ms inside a command line is cut at idle_timeout with 421 4.4.2', async () => {
    const t = await session(p.port);
    const line = 'NOOP ' + 'z'.repeat(60) + '\r\n'; // 6.7 s of trickling, far longer than idle_timeout = 1 s
    const t0 = Date.now();
    let sent = 0;
    while (!t.closed && sent < line.length) {
      t.write(line[sent++]!);
      await sleep(100);
    }
    const elapsed = Date.now() - t0;
    assert.ok(t.closed, 'the server closed the connection');
    assert.ok(sent < line.length, `cut before the line was complete (sent ${sent} of ${line.length})`);
    assert.ok(elapsed < 4000, `cut after ${elapsed} ms with idle_timeout = 1 s`);
    assert.match(replyLine(await t.read()), /^421 4\.4\.2 /);
  });

  test('whole commands keep a session alive; silence after a message is cut at idle_timeout', async () => {
    const t = await session(p.port);
    for (let i = 0; i < 4; i++) {
      await sleep(500);
      assert.equal((await t.cmd('NOOP')).code, 250, 'a command every 500 ms is not idle');
    }
    const r = await t.send('alice@example.com', ['bob@local.test'], 'Subject: then silence\r\n\r\nbody\r\n');
    assert.equal(r.code, 250);
    const t0 = Date.now();
    const idle = await t.read(6000).catch(() => null);
    assert.match(replyLine(idle), /^421 4\.4\.2 /, 'the idle timer runs again after a message');
    assert.ok(Date.now() - t0 < 4000);
    assert.equal(await t.read(), null);
  });

  test('a DATA phase that trickles is cut at data_timeout with 421 4.4.2, nothing kept', async () => {
    const before = (await p.petrel.store.list({ limit: 1000 })).length;
    const t = await session(p.port);
    await t.cmd('MAIL FROM:<alice@example.com>');
    await t.cmd('RCPT TO:<bob@local.test>');
    assert.equal((await t.cmd('DATA')).code, 354);
    const t0 = Date.now();
    // Whole lines, one every 100 ms: each would reset an idle timer; the DATA phase as a whole is bounded.
    for (let i = 0; i < 100 && !t.closed; i++) {
      t.write(`line ${i}\r\n`);
      await sleep(100);
    }
    assert.ok(t.closed, 'closed');
    assert.ok(Date.now() - t0 < 5000, `cut after ${Date.now() - t0} ms with data_timeout = 1.5 s`);
    assert.match(replyLine(await t.read()), /^421 4\.4\.2 /);
    assert.equal((await p.petrel.store.list({ limit: 1000 })).length, before, 'nothing kept');
  });

  test('a client that pipelines and never reads its replies: Petrel stops reading (bounded memory)', async () => {
    await waitFor(() => p.petrel.inbound!.connectionCount === 0, 10_000, 'earlier sessions to end');
    const socket = connect({ port: p.port, host: '127.0.0.1' });
    opened.push({ close: () => socket.destroy() });
    await new Promise((r) => socket.once('connect', r));
    await waitFor(() => p.petrel.inbound!.connectionCount === 1, 5000, 'the session to start');
    socket.pause(); // never read a reply
    socket.on('error', () => undefined);
    const batch = Buffer.from('NOOP\r\n'.repeat(10_000));
    let written = 0;
    let stalled = false;
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline && written < 512 * 1024 * 1024) {
      if (!socket.write(batch)) {
        const drained = await Promise.race([new Promise<boolean>((r) => socket.once('drain', () => r(true))), sleep(1500).then(() => false)]);
        if (!drained) {
          stalled = true;
          break;
        }
      }
      written += batch.length;
    }
    // What Petrel holds for this client: replies it could not send yet (reach-in: the server's private socket set).
    const sockets = (p.petrel.inbound as unknown as { sockets: Set<Socket> }).sockets;
    const held = [...sockets].reduce((n, s) => n + s.writableLength, 0);
    socket.destroy();
    assert.ok(stalled, `the client could write ${Math.round(written / 1e6)} MB of commands without Petrel pausing`);
    assert.ok(written < 32 * 1024 * 1024, `written before the stall: ${written}`);
    assert.ok(held < 1024 * 1024, `Petrel buffered ${Math.round(held / 1e6)} MB of unread replies`);
  });
});

describe('session bounds: total session time and commands that move no mail', () => {
  let p: InProcess;
  before(async () => {
    p = await startPetrel(`[smtp]
listen = ["127.0.0.1:0"]
idle_timeout = "1s"
session_timeout = "2500ms"
max_junk_commands = 8
[local]
domains = ["local.test"]
`);
  });
  afterEach(() => {
    for (const o of opened.splice(0)) o.close();
  });
  after(async () => {
    await p.stop();
    cleanup(p.dir);
  });

  test('NOOP/RSET/VRFY/HELP past max_junk_commands get 421 4.7.0; each accepted message starts the count again', async () => {
    const t = await session(p.port);
    for (const c of ['NOOP', 'RSET', 'VRFY bob', 'HELP', 'NOOP', 'EXPN list', 'NOOP', 'NOOP']) assert.notEqual((await t.cmd(c)).code, 421, c);
    assert.match(replyLine(await t.cmd('NOOP')), /^421 4\.7\.0 /, 'the ninth command that moves no mail');
    assert.equal(await t.read(), null, 'closed');

    const u = await session(p.port);
    for (let i = 0; i < 7; i++) assert.equal((await u.cmd('NOOP')).code, 250);
    assert.equal((await u.send('alice@example.com', ['bob@local.test'], 'Subject: keeps it going\r\n\r\nx\r\n')).code, 250);
    for (let i = 0; i < 8; i++) assert.equal((await u.cmd('RSET')).code, 250, `RSET ${i + 1} after a message`);
    assert.match(replyLine(await u.cmd('NOOP')), /^421 4\.7\.0 /);
  });

  test('a client that keeps a session busy past session_timeout is let go with 421 4.4.2 between commands', async () => {
    const t = await session(p.port);
    const t0 = Date.now();
    let accepted = 0;
    let last: string = '';
    // A message every 300 ms: never idle, never junk; only the session's age ends it.
    while (Date.now() - t0 < 8000) {
      const r = await t.send('alice@example.com', ['bob@local.test'], `Subject: ${accepted}\r\n\r\nx\r\n`).catch(() => null);
      if (!r || r.code !== 250) {
        last = replyLine(r);
        break;
      }
      accepted++;
      await sleep(300);
    }
    const elapsed = Date.now() - t0;
    assert.ok(elapsed >= 2000 && elapsed < 6000, `ended after ${elapsed} ms with session_timeout = 2.5 s`);
    const why = last || replyLine(await t.read());
    assert.match(why, /^421 4\.4\.2 .*[Ss]ession time/, why);
    assert.ok(accepted >= 3, `messages accepted before the limit: ${accepted}`);
  });

  test('a message being received when session_timeout passes is finished and accepted; then 421 4.4.2', async () => {
    const before = (await p.petrel.store.list({ limit: 1000 })).length;
    const t = await session(p.port);
    await t.cmd('MAIL FROM:<alice@example.com>');
    await t.cmd('RCPT TO:<bob@local.test>');
    assert.equal((await t.cmd('DATA')).code, 354);
    t.write('Subject: long upload\r\n\r\n');
    // 3.5 s of data: past session_timeout (2.5 s), inside data_timeout (10 min).
    for (let i = 0; i < 35 && !t.closed; i++) {
      t.write(`line ${i}\r\n`);
      await sleep(100);
    }
    assert.ok(!t.closed, 'not cut in the middle of a message');
    t.write('.\r\n');
    assert.match(replyLine(await t.read()), /^250 2\.0\.0 /);
    assert.match(replyLine(await t.read()), /^421 4\.4\.2 /);
    assert.equal(await t.read(), null);
    await waitFor(async () => (await p.petrel.store.list({ limit: 1000 })).length >= before, 5000, 'stored');
  });
});

describe('limits, real process', () => {
  test('a 200 MB message over max_message_size is refused while streaming: 552 5.3.4, memory flat, nothing kept', async (tc) => {
    const dir = tempDir();
    const port = await freePort();
    const child = await startChild(dir, baseConfig(dir, `[smtp]\nlisten = ["127.0.0.1:${port}"]\nmax_message_size = "1MB"\n[local]\ndomains = ["local.test"]\n`));
    const rss = (): number => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.proc.pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;
    let peak = 0;
    const sampler = setInterval(() => (peak = Math.max(peak, rss())), 50);
    try {
      const t = await session(port);
      // Warm up: one accepted message, so what is measured next is the refusal only.
      assert.equal((await t.send('a@example.com', ['bob@local.test'], 'Subject: warm\r\n\r\nup\r\n')).code, 250);
      await sleep(300);
      const baseline = rss();
      peak = baseline;
      await t.cmd('MAIL FROM:<a@example.com>');
      await t.cmd('RCPT TO:<bob@local.test>');
      assert.equal((await t.cmd('DATA')).code, 354);
      const chunk = Buffer.from(('m'.repeat(1022) + '\r\n').repeat(1024)); // 1 MB
      const raw = (t as unknown as { socket: Socket }).socket; // the talk's socket, to wait for drain: test-only reach-in
      let maxSpool = 0;
      for (let i = 0; i < 200; i++) {
        if (!raw.write(chunk)) await new Promise((r) => raw.once('drain', r));
        if (i % 20 === 0) maxSpool = Math.max(maxSpool, spoolBytes(dir));
      }
      raw.write('.\r\n');
      assert.match(replyLine(await t.read(60_000)), /^552 5\.3\.4 /);
      clearInterval(sampler);
      const grew = peak - baseline;
      tc.diagnostic(`rss baseline ${Math.round(baseline / 1e6)} MB, peak ${Math.round(peak / 1e6)} MB while refusing 200 MB; spool peak ${maxSpool} octets`);
      assert.ok(grew < 64 * 1024 * 1024, `server RSS grew by ${Math.round(grew / 1e6)} MB for a refused 200 MB message`);
      assert.ok(maxSpool < 8 * 1024 * 1024, `spool held ${maxSpool} octets while refusing`);
      assert.equal((await t.cmd('NOOP')).code, 250, 'the session goes on');
      t.close();
      await sleep(200);
      assert.ok(spoolBytes(dir) < 1024 * 1024, 'nothing kept');
    } finally {
      clearInterval(sampler);
      child.kill('SIGTERM');
      await child.exited;
      cleanup(dir);
    }
  });
});
