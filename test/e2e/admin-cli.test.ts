// `petrel queue`, `petrel quarantine` and `petrel track` as an operator uses
// them: against a running server (over the admin API, with a token), and
// with the server stopped (the queue opened directly) — same answers, useful
// exit codes (0, 1 nothing matched, 64 usage, 69 nothing to talk to), every
// action on the record with the operator and the reason.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { spawnPetrel, tempDir, cleanup, freePort, closedPort, startChild, baseConfig, waitFor, readEvents } from '../helpers/petrel-harness.js';
import { SmtpTalk } from '../helpers/smtp-talk.js';

async function cli(args: string[], cwd: string): Promise<{ code: number | string; out: string; err: string }> {
  const c = spawnPetrel(args, cwd);
  const code = await c.exited;
  return { code, out: c.stdout(), err: c.stderr() };
}

test('queue, quarantine and track: against the running server, then with it stopped', async () => {
  const dir = tempDir();
  const smtpPort = await freePort();
  const adminPort = await freePort();
  const deadPort = await closedPort(); // nothing listens there: the smarthost is a dead destination
  const cfg = join(dir, 'petrel.toml');
  const text = baseConfig(
    dir,
    `[queue]\nretry_intervals = ["1h"]\n[delivery]\nsmarthost = "127.0.0.1:${deadPort}"\n[admin]\nlisten = "127.0.0.1:${adminPort}"\ntoken = "cli-token"\n`,
    smtpPort,
  );
  const child = await startChild(dir, text);
  try {
    assert.match(child.stdout(), new RegExp(`listening admin http://127\\.0\\.0\\.1:${adminPort}/`));
    const t = await SmtpTalk.open(smtpPort);
    await t.read();
    await t.cmd('EHLO c.test');
    for (const [i, rcpts] of [['b@far.example', 'c@far.example'], ['d@far.example']].entries()) {
      const r = await t.send('alice@example.com', rcpts, `Subject: m${i}\r\nMessage-ID: <m${i}@c.test>\r\n\r\nhi\r\n`);
      assert.equal(r.code, 250);
    }
    await t.cmd('QUIT');
    t.close();
    const dest = `[127.0.0.1]:${deadPort}`;
    // Summary: one destination, 3 recipients, once their first attempt failed.
    await waitFor(async () => /\b3\s+2\s+3\b/.test((await cli(['queue', '--config', cfg], dir)).out), 15_000, 'three deferred recipients');
    const summary = await cli(['queue', '--config', cfg], dir);
    assert.equal(summary.code, 0);
    assert.match(summary.out, /^DESTINATION\s+RCPTS\s+MSGS\s+DEFERRED\s+HELD\s+OLDEST\s+NOTE\s+LAST ERROR$/m);
    assert.ok(summary.out.includes(dest));
    // --json: one object a line per message (as postqueue -j), each with all its recipients.
    const lines = (await cli(['queue', 'list', '--json', '--config', cfg], dir)).out.trim().split('\n');
    assert.equal(lines.length, 2);
    const json = lines.map((l) => JSON.parse(l) as { queue_id: string; received_at: string; recipients: Array<{ address: string; state: string; attempts: number; next_attempt: string; last_reply: string }> });
    const [id0, id1] = json.map((m) => m.queue_id) as [string, string];
    assert.deepEqual(json[0]!.recipients.map((r) => [r.address, r.state, r.attempts]), [['b@far.example', 'deferred', 1], ['c@far.example', 'deferred', 1]]);
    assert.match(json[0]!.recipients[0]!.next_attempt, /^\d{4}-\d\d-\d\dT.*Z$/);
    assert.match(json[0]!.recipients[0]!.last_reply, /refused|ECONNREFUSED/i);
    assert.match(json[0]!.received_at, /Z$/);
    assert.equal((await cli(['queue', 'list', '--json', '--limit', '1', '--config', cfg], dir)).out.trim().split('\n').length, 1);
    // People read each recipient under its message, folded after --recipients=N.
    const listed = await cli(['queue', 'list', '--config', cfg], dir);
    assert.match(listed.out, new RegExp(`^${id0} .*<alice@example\\.com>.*2 deferred`, 'm'));
    assert.match(listed.out, /^ {4}b@far\.example\s+deferred\s+1 attempt\s+next in \d+[smh]\s+\S/m);
    const foldedList = await cli(['queue', 'list', '--recipients=1', '--config', cfg], dir);
    assert.match(foldedList.out, new RegExp(`… and 1 more \\(petrel queue show ${id0}\\)`));
    assert.ok(!foldedList.out.includes('c@far.example'));
    // Ages, as qshape.
    const ages = await cli(['queue', '--ages', '--config', cfg], dir);
    assert.equal(ages.code, 0, ages.err);
    assert.match(ages.out, /^DESTINATION\s+T\s+5m\s+10m\s+20m\s+40m\s+80m\s+160m\s+320m\s+640m\s+1280m\s+1280m\+$/m);
    assert.match(ages.out, /^TOTAL\s+3\s+3\s+0/m);
    // Filters and paging.
    const page = await cli(['queue', 'list', '--limit', '1', '--config', cfg], dir);
    assert.equal(page.code, 0);
    assert.match(page.out, new RegExp(`more: petrel queue list \\.\\.\\. --after ${id0}`));
    assert.equal((await cli(['queue', 'list', '--recipient', 'nobody@far.example', '--config', cfg], dir)).code, 1, 'nothing matched');
    assert.equal((await cli(['queue', 'list', '--state', 'nonsense', '--config', cfg], dir)).code, 64);
    const show = await cli(['queue', 'show', id0, '--config', cfg], dir);
    assert.equal(show.code, 0);
    assert.match(show.out, /^b@far\.example\s+deferred\s+1\s+in \d+[mh]\s+/m);
    assert.match(show.out, /history:\n.*received/);
    assert.equal((await cli(['queue', 'show', '0000000000000000', '--config', cfg], dir)).code, 1);
    assert.equal((await cli(['queue', 'show', 'bad id', '--config', cfg], dir)).code, 64);
    assert.equal((await cli(['queue', 'retry', '--config', cfg], dir)).code, 64);
    // Actions, online.
    const susp = await cli(['queue', 'suspend', id1, '--reason', 'looking into it', '--config', cfg], dir);
    assert.equal(susp.code, 0, susp.err);
    assert.match(susp.out, /suspend: 1 recipient\(s\) changed/);
    const retry = await cli(['queue', 'retry', '--destination', dest, '--reason', 'peer back?', '--config', cfg], dir);
    assert.equal(retry.code, 0, retry.err);
    const del = await cli(['queue', 'delete', id1, '--silent', '--reason', 'duplicate', '--config', cfg], dir);
    assert.equal(del.code, 0, del.err);
    assert.equal((await cli(['queue', 'delete', id1, '--ndr', '--silent', '--config', cfg], dir)).code, 64);
    const track = await cli(['track', '--message-id', 'm1@c.test', '--config', cfg], dir);
    assert.equal(track.code, 0);
    assert.match(track.out, /suspended .*by .*\(cli\): looking into it/);
    assert.match(track.out, /removed .*without report by .*\(cli\): duplicate/);
    assert.equal((await cli(['track', '--sender', 'nobody@example.com', '--config', cfg], dir)).code, 1);
    assert.equal((await cli(['track', '--config', cfg], dir)).code, 64);
    assert.equal((await cli(['quarantine', 'list', '--config', cfg], dir)).code, 1, 'nothing quarantined');
    // A wrong token is refused (77), never bypassed.
    const wrong = join(dir, 'wrong.toml');
    (await import('node:fs')).writeFileSync(wrong, text.replace('cli-token', 'not-the-token'));
    assert.equal((await cli(['queue', '--config', wrong], dir)).code, 77);
    // --help for each.
    for (const c of ['queue', 'quarantine', 'track']) {
      const h = await cli([c, '--help'], dir);
      assert.equal(h.code, 0);
      assert.match(h.out, /Usage/);
    }

    // Stop the server: the same commands read and act on the queue directly.
    child.kill('SIGTERM');
    assert.equal(await child.exited, 0);
    const offline = await cli(['queue', '--config', cfg], dir);
    assert.equal(offline.code, 0, offline.err);
    assert.match(offline.err, /server is not running here; using the queue/);
    assert.ok(offline.out.includes(dest));
    const off = await cli(['queue', 'suspend', id0, '--reason', 'offline hold', '--config', cfg], dir);
    assert.equal(off.code, 0, off.err);
    const offShow = JSON.parse((await cli(['queue', 'show', id0, '--json', '--config', cfg], dir)).out);
    assert.ok(offShow.recipients.every((r: { suspended: boolean }) => r.suspended));
    const tr = await cli(['track', '--recipient', 'B@far.example', '--config', cfg], dir);
    assert.match(tr.out, /suspended .*offline hold/);
    const events = readEvents(join(dir, 'var', 'log', 'events.jsonl'));
    assert.ok(events.some((e) => e.event === 'removed' && /duplicate/.test(e.detail ?? '')), 'the online actions are in events.jsonl');
  } finally {
    child.kill('SIGKILL');
    cleanup(dir);
  }
});

test('with neither a server nor a queue: exit 69', async () => {
  const dir = tempDir();
  try {
    const port = await freePort();
    const cfg = join(dir, 'p.toml');
    (await import('node:fs')).writeFileSync(cfg, baseConfig(dir, `[admin]\nlisten = "127.0.0.1:${port}"\n`));
    const r = await cli(['queue', '--config', cfg], dir);
    assert.equal(r.code, 69);
    assert.match(r.err, /does not answer .* and there is no queue at/);
    assert.equal((await cli(['track', '--sender', 'a@b.c', '--config', cfg], dir)).code, 69);
  } finally {
    cleanup(dir);
  }
});
