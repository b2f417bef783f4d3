// Users, aliases and catch-alls end to end over SMTP (CONTRACT.md, "Local
// delivery, aliases"): an alias local part is valid in every local domain and
// need not be a user; bare targets stay in the alias's domain; targets may be
// remote; unknown users get 550 5.1.1 at RCPT; an alias loop is accepted at
// RCPT and then failed with a 5.4.6 report naming the address the sender
// wrote; the files are re-read on change and on SIGHUP without a restart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SmtpTalk, replyLine } from '../helpers/smtp-talk.js';
import { baseConfig, cleanup, freePort, startChild, startPetrel, tempDir, waitFor, type InProcess } from '../helpers/petrel-harness.js';
import type { MailEvent } from '../../src/log/events.js';

function config(dir: string): string {
  return `[queue]
retry_intervals = ["200ms"]
max_lifetime = "30s"
delay_warning = "1h"
[local]
domains = ["one.test", "two.test"]
users_file = "${join(dir, 'users')}"
aliases_file = "${join(dir, 'aliases')}"
[[routes]]
domain = "remote.example"
via = "directory:${join(dir, 'remote')}"
`;
}

async function session(port: number): Promise<SmtpTalk> {
  const t = await SmtpTalk.open(port);
  await t.read();
  await t.cmd('EHLO client.test');
  return t;
}

async function rcptReplies(port: number, rcpts: string[]): Promise<string[]> {
  const t = await session(port);
  await t.cmd('MAIL FROM:<x@example.com>');
  const out: string[] = [];
  for (const r of rcpts) out.push(replyLine(await t.cmd(`RCPT TO:<${r}>`)).slice(0, 9));
  t.close();
  return out;
}

async function send(port: number, from: string, rcpts: string[], message: string, params = ''): Promise<string> {
  const t = await session(port);
  assert.equal((await t.cmd(`MAIL FROM:<${from}>`)).code, 250);
  for (const r of rcpts) assert.equal((await t.cmd(`RCPT TO:<${r}>${params}`)).code, 250, r);
  assert.equal((await t.cmd('DATA')).code, 354);
  t.write(message.replace(/\r?\n/g, '\r\n') + '.\r\n');
  const r = await t.read();
  t.close();
  const m = /queued as ([0-9A-Z]{16})/.exec(replyLine(r));
  assert.ok(m, replyLine(r));
  return m[1]!;
}

function mailbox(p: InProcess, domain: string, user: string): string[] {
  const d = join(p.dir, 'var', 'mail', domain, user, 'new');
  return existsSync(d) ? readdirSync(d).map((f) => readFileSync(join(d, f), 'utf8')) : [];
}

const of = (events: MailEvent[], qid: string, event?: string): MailEvent[] => events.filter((e) => e.queue_id === qid && (!event || e.event === event));

function setup(): string {
  const dir = tempDir();
  mkdirSync(join(dir, 'remote'));
  writeFileSync(join(dir, 'users'), 'alice@one.test\nbob@one.test\nalice@two.test\nbob@two.test\n');
  writeFileSync(
    join(dir, 'aliases'),
    ['# aliases for the test', 'sales: alice, bob', 'support@two.test: bob', 'partner: ext@remote.example', 'loop-a: loop-b', 'loop-b: loop-a', '@two.test: alice', 'broken line without colon'].join('\n') + '\n',
  );
  return dir;
}

test('RCPT: users and aliases accepted in every local domain, unknown users 550 5.1.1, catch-all per domain', async () => {
  const dir = setup();
  const p = await startPetrel(config(dir), {}, dir);
  try {
    assert.deepEqual(await rcptReplies(p.port, ['alice@one.test', 'sales@one.test', 'sales@two.test', 'partner@one.test', 'loop-a@one.test', 'nobody@one.test', 'support@one.test', 'anything@two.test', 'postmaster@one.test']), [
      '250 2.1.5',
      '250 2.1.5',
      '250 2.1.5',
      '250 2.1.5',
      '250 2.1.5', // a loop is accepted at RCPT ...
      '550 5.1.1',
      '550 5.1.1', // support@ is only an alias in two.test
      '250 2.1.5', // two.test's catch-all
      '250 2.1.5',
    ]);
  } finally {
    await p.stop();
    cleanup(dir);
  }
});

test('expansion at enqueue: bare targets in the alias domain, remote targets routed, events per expanded recipient', async () => {
  const dir = setup();
  const p = await startPetrel(config(dir), {}, dir);
  try {
    const qid = await send(p.port, 'x@example.com', ['sales@two.test', 'partner@one.test', 'bob@two.test'], 'Subject: team\n\nhello team\n');
    const events = await waitFor(() => {
      const ev = of(p.events(), qid, 'delivered');
      return ev.length === 3 ? p.events() : null;
    }, 10_000, 'three deliveries');
    // sales@two.test -> alice@two.test, bob@two.test (bob@two.test also given directly: once).
    assert.deepEqual(of(events, qid, 'received').map((e) => e.recipient).sort(), ['alice@two.test', 'bob@two.test', 'ext@remote.example']);
    assert.equal(mailbox(p, 'two.test', 'alice').length, 1);
    assert.equal(mailbox(p, 'two.test', 'bob').length, 1);
    assert.match(mailbox(p, 'two.test', 'alice')[0]!, /^Return-Path: <x@example\.com>\nDelivered-To: alice@two\.test\n/);
    assert.deepEqual(readdirSync(join(p.dir, 'var', 'mail')), ['two.test'], 'nothing delivered to a mailbox named after an alias');
    const remote = readFileSync(join(dir, 'remote', `${qid}.eml`), 'utf8');
    assert.match(remote, /X-Petrel-Envelope-Recipient: <ext@remote\.example>\r\n/);
  } finally {
    await p.stop();
    cleanup(dir);
  }
});

test('an alias loop is accepted, then failed 5.4.6 with a report naming what the sender wrote', async () => {
  const dir = setup();
  const p = await startPetrel(config(dir), {}, dir);
  try {
    const qid = await send(p.port, 'alice@one.test', ['loop-a@one.test', 'bob@one.test'], 'Subject: round and round\n\nloop\n');
    const failed = await waitFor(() => of(p.events(), qid, 'failed')[0], 10_000, 'the loop to fail');
    assert.equal(failed.recipient, 'loop-a@one.test');
    assert.equal(failed.status, '5.4.6');
    assert.match(failed.error!, /^550 5\.4\.6 <loop-a@one\.test>: alias expansion loop/);
    await waitFor(() => of(p.events(), qid, 'delivered').length === 1, 10_000, 'bob still gets it');
    const report = await waitFor(() => mailbox(p, 'one.test', 'alice').find((m) => m.includes('message/delivery-status')), 10_000, 'the report to alice');
    assert.match(report, /Original-Recipient: rfc822; ?loop-a@one\.test\nFinal-Recipient: rfc822; loop-a@one\.test\nAction: failed\nStatus: 5\.4\.6\n/);
    assert.match(report, /Diagnostic-Code: X-Petrel; 550 5\.4\.6 <loop-a@one\.test>: alias expansion loop/);
    // The event log file follows the store a moment later.
    await waitFor(() => of(p.events(), qid, 'dsn_queued').length === 1, 5000, 'the dsn_queued event');
  } finally {
    await p.stop();
    cleanup(dir);
  }
});

test('reports about expanded recipients name the original address (ORCPT), unless the client gave one', async () => {
  const dir = setup();
  writeFileSync(join(dir, 'aliases'), 'gone: ghost@remote.example\nkept: ghost2@remote.example\n');
  const p = await startPetrel(config(dir).replace(`directory:${join(dir, 'remote')}`, `directory:${join(dir, 'missing')}`).replace('"30s"', '"2s"'), {}, dir);
  try {
    const t = await session(p.port);
    await t.cmd('MAIL FROM:<alice@one.test>');
    assert.equal((await t.cmd('RCPT TO:<gone@one.test>')).code, 250);
    assert.equal((await t.cmd('RCPT TO:<kept@one.test> ORCPT=rfc822;Client+2BGiven@one.test')).code, 250);
    await t.cmd('DATA');
    t.write('Subject: orcpt\r\n\r\nx\r\n.\r\n');
    assert.equal((await t.read())!.code, 250);
    t.close();
    const report = await waitFor(() => mailbox(p, 'one.test', 'alice').find((m) => m.includes('message/delivery-status')), 15_000, 'the expiry report');
    assert.match(report, /Original-Recipient: rfc822; ?gone@one\.test\nFinal-Recipient: rfc822; ghost@remote\.example\n/);
    assert.match(report, /Original-Recipient: rfc822; ?Client\+Given@one\.test\nFinal-Recipient: rfc822; ghost2@remote\.example\n/);
  } finally {
    await p.stop();
    cleanup(dir);
  }
});

test('the aliases and users files are re-read on change, without a restart', async () => {
  const dir = setup();
  const p = await startPetrel(config(dir), {}, dir);
  try {
    assert.deepEqual(await rcptReplies(p.port, ['newalias@one.test', 'carol@one.test']), ['550 5.1.1', '550 5.1.1']);
    writeFileSync(join(dir, 'aliases'), readFileSync(join(dir, 'aliases'), 'utf8') + 'newalias: alice\n');
    writeFileSync(join(dir, 'users'), readFileSync(join(dir, 'users'), 'utf8') + 'carol@one.test\n');
    await waitFor(async () => (await rcptReplies(p.port, ['newalias@one.test', 'carol@one.test'])).every((r) => r === '250 2.1.5'), 10_000, 'the new alias and user to be valid');
  } finally {
    await p.stop();
    cleanup(dir);
  }
});

test('SIGHUP re-reads the files (and does not stop the server)', async () => {
  const dir = setup();
  const port = await freePort();
  const child = await startChild(dir, baseConfig(dir, `[smtp]\nlisten = ["127.0.0.1:${port}"]\n${config(dir)}`));
  try {
    assert.deepEqual(await rcptReplies(port, ['hup@one.test']), ['550 5.1.1']);
    writeFileSync(join(dir, 'aliases'), 'hup: alice\n');
    child.kill('SIGHUP');
    await waitFor(() => /SIGHUP received/.test(child.stdout()), 5000, 'the SIGHUP line');
    assert.deepEqual(await rcptReplies(port, ['hup@one.test']), ['250 2.1.5']);
    assert.equal(child.proc.exitCode, null, 'still running');
  } finally {
    child.kill('SIGTERM');
    await child.exited;
    cleanup(dir);
  }
});
