// Seed 000 made into a test: a message with 100,000 recipients, every one
// refused permanently by the next hop -> exactly one report, listing all
// 100,000, delivered to the sender's mailbox. Petrel runs as its own process
// so its peak memory can be read (and is printed as a diagnostic).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SmtpTalk } from '../helpers/smtp-talk.js';
import { startChild, waitFor, cleanup, freePort, tempDir, baseConfig, readEvents, type Child } from '../helpers/petrel-harness.js';
import { startPeer } from '../helpers/test-peer.js';
import { python } from '../helpers/dsn-writer.js';

const N = 100_000;

function peakRssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/^VmHWM:\s+(\d+)/m.exec(status)?.[1] ?? 0) / 1024;
}

test(`one report for ${N.toLocaleString('en')} failed recipients`, async (t) => {
  const dir = tempDir();
  const peer = await startPeer({ rcptReply: () => '550 5.1.1 No such user' });
  const port = await freePort();
  let child: Child | null = null;
  try {
    child = await startChild(
      dir,
      baseConfig(dir, `[smtp]\nlisten = ["127.0.0.1:${port}"]\nmax_recipients = ${N}\n[delivery]\nsmarthost = "127.0.0.1:${peer.port}"\n[local]\ndomains = ["home.test"]\n[log]\nlevel = "error"\n`),
    );
    const t0 = Date.now();
    const c = await SmtpTalk.open(port);
    await c.read();
    await c.cmd('EHLO bulk.test');
    let batch = 'MAIL FROM:<alice@home.test>\r\n';
    for (let i = 0; i < N; i++) batch += `RCPT TO:<user${i}@far.example>\r\n`;
    c.write(batch + 'DATA\r\n');
    assert.equal((await c.read())!.code, 250);
    for (let i = 0; i < N; i++) assert.equal((await c.read(60_000))!.code, 250);
    assert.equal((await c.read())!.code, 354);
    c.write('From: <alice@home.test>\r\nSubject: to everyone\r\nMessage-ID: <everyone@home.test>\r\n\r\nhello all\r\n.\r\n');
    assert.equal((await c.read(120_000))!.code, 250);
    await c.cmd('QUIT');
    c.close();
    const tAccepted = Date.now();
    const box = join(dir, 'var', 'mail', 'home.test', 'alice', 'new');
    await waitFor(() => existsSync(box) && readdirSync(box).length > 0, 300_000, 'the report in the mailbox');
    const tReport = Date.now();
    const peak = peakRssMb(child.proc.pid!);
    await new Promise((r) => setTimeout(r, 1000));
    const files = readdirSync(box);
    assert.equal(files.length, 1, 'exactly one report');
    const raw = Buffer.from(readFileSync(join(box, files[0]!), 'latin1').replace(/\r?\n/g, '\r\n'), 'latin1');
    const parsed = await python(raw, 'compat32');
    assert.deepEqual(parsed.defects, []);
    assert.equal(parsed.recipients.length, N);
    const finals = new Set(parsed.recipients.map((r) => r['final-recipient']));
    assert.equal(finals.size, N, 'every recipient listed once');
    assert.ok(parsed.recipients.every((r) => r['action'] === 'failed' && r['status'] === '5.1.1'));
    const events = readEvents(join(dir, 'var', 'log', 'events.jsonl'));
    assert.equal(events.filter((e) => e.event === 'failed').length, N);
    assert.equal(events.filter((e) => e.event === 'dsn_queued').length, 1);
    t.diagnostic(`accept_s=${((tAccepted - t0) / 1000).toFixed(1)} report_in_mailbox_s=${((tReport - t0) / 1000).toFixed(1)} peak_rss_mb=${peak.toFixed(0)} report_mb=${(raw.length / 1e6).toFixed(1)}`);
    assert.ok(peak < 500, `peak RSS ${peak.toFixed(0)} MB`);
  } finally {
    child?.kill('SIGTERM');
    await child?.exited;
    await peer.close();
    cleanup(dir);
  }
});
