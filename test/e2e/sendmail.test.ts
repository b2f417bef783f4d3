// `petrel sendmail` as applications call it (CONTRACT.md, "Running"): it
// works whether or not the server runs, exits 0 only once the message is
// durably queued (SMTP) or picked up (the pickup directory), EX_TEMPFAIL when
// it can do neither, and the usual sysexits for bad arguments or input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCli } from '../helpers/run-cli.js';
import { cleanup, freePort, startPetrel, tempDir, waitFor, type InProcess } from '../helpers/petrel-harness.js';
import type { MailEvent } from '../../src/log/events.js';

/** The same configuration for the server and for sendmail. */
function config(dir: string, port: number): string {
  return `hostname = "petrel.test"
data_dir = "${join(dir, 'var')}"
[smtp]
listen = ["127.0.0.1:${port}"]
max_message_size = "64KB"
[queue]
retry_intervals = ["200ms"]
[local]
domains = ["localhost"]
users_file = "${join(dir, 'users')}"
[[routes]]
domain = "files.example"
via = "directory:${join(dir, 'out')}"
`;
}

async function setup(): Promise<{ dir: string; port: number; file: string }> {
  const dir = tempDir();
  const port = await freePort();
  mkdirSync(join(dir, 'out'));
  writeFileSync(join(dir, 'users'), 'alice@localhost\nbob@localhost\n');
  writeFileSync(join(dir, 'petrel.toml'), config(dir, port));
  return { dir, port, file: join(dir, 'petrel.toml') };
}

/** start - the server on the same configuration sendmail reads. */
async function start(dir: string, port: number): Promise<InProcess> {
  const text = config(dir, port);
  return startPetrel(text.slice(text.indexOf('[smtp]')), {}, dir);
}

function outFiles(dir: string): string[] {
  // As a reader of the share must: files starting with "." are still being written.
  return readdirSync(join(dir, 'out'))
    .filter((f) => !f.startsWith('.'))
    .map((f) => readFileSync(join(dir, 'out', f), 'latin1'));
}

function pickupFiles(dir: string): string[] {
  const d = join(dir, 'var', 'pickup');
  return existsSync(d) ? readdirSync(d).filter((f) => f !== 'bad') : [];
}

const received = (events: MailEvent[]): MailEvent[] => events.filter((e) => e.event === 'received');

test('server running: -t -i -f -F; Bcc removed, From/Date/Message-ID added; queued over SMTP; exit 0', async () => {
  const { dir, port, file } = await setup();
  const p = await start(dir, port);
  try {
    const r = await runCli(['sendmail', '--config', file, '-t', '-i', '-f', 'app@localhost', '-F', 'The App', '-odi', '-oem', '-v'], 'To: x@files.example\nBcc: y@files.example\nSubject: via smtp\n\nline\n.\nafter a lone dot (kept with -i)\n');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /250 2\.0\.0 Ok: queued as [0-9A-Z]{16}/);
    const out = await waitFor(() => (outFiles(dir).length === 1 ? outFiles(dir)[0] : null), 10_000, 'delivery');
    assert.match(out, /X-Petrel-Envelope-Sender: <app@localhost>\r\nX-Petrel-Envelope-Recipient: <x@files\.example>\r\nX-Petrel-Envelope-Recipient: <y@files\.example>\r\n/);
    const msg = out.slice(out.indexOf('Received: from'));
    assert.match(msg, /\r\nTo: x@files\.example\r\nSubject: via smtp\r\nFrom: The App <app@localhost>\r\nDate: .*\+0000\r\nMessage-ID: <.*@petrel\.test>\r\n\r\nline\r\n\.\r\nafter a lone dot \(kept with -i\)\r\n$/);
    assert.doesNotMatch(msg, /Bcc|y@files/);
    assert.deepEqual(pickupFiles(dir), [], 'nothing went through pickup');
  } finally {
    await p.stop();
    cleanup(dir);
  }
});

test('without -i a lone "." ends the message, even while stdin stays open; recipients as arguments, bare names local', async () => {
  const { dir, port, file } = await setup();
  const p = await start(dir, port);
  try {
    const r = await runCli(['sendmail', '--config', file, '-f', 'app@localhost', 'x@files.example', 'bob'], 'Subject: dot\n\nbefore\n.\nafter\n', { keepStdinOpen: true, timeoutMs: 15_000 });
    assert.equal(r.code, 0, r.stderr);
    const out = await waitFor(() => (outFiles(dir).length === 1 ? outFiles(dir)[0] : null), 10_000, 'delivery');
    assert.match(out, /\r\n\r\nbefore\r\n$/);
    await waitFor(() => received(p.events()).some((e) => e.recipient === 'bob@localhost'), 10_000, 'bob@localhost');
  } finally {
    await p.stop();
    cleanup(dir);
  }
});

test('server not running: the message goes durably into the pickup directory (exit 0), and is delivered when Petrel starts', async () => {
  const { dir, port, file } = await setup();
  const r = await runCli(['sendmail', '--config', file, '-t', '-f', 'app@localhost'], 'To: x@files.example\nBcc: hidden@files.example\nX-Envelope-To: injected@files.example\nSubject: offline\n\nqueued while down\n');
  assert.equal(r.code, 0, r.stderr);
  const files = pickupFiles(dir);
  assert.equal(files.length, 1, 'one file, no temporary left');
  assert.ok(!files[0]!.startsWith('.'));
  const content = readFileSync(join(dir, 'var', 'pickup', files[0]!), 'latin1');
  assert.match(content, /^X-Envelope-From: <app@localhost>\r\nX-Envelope-To: <x@files\.example>\r\nX-Envelope-To: <hidden@files\.example>\r\nTo: x@files\.example\r\nSubject: offline\r\n/);
  assert.doesNotMatch(content, /injected|Bcc:/, 'the message cannot choose its own envelope; Bcc removed');
  const p = await start(dir, port);
  try {
    const out = await waitFor(() => (outFiles(dir).length === 1 ? outFiles(dir)[0] : null), 10_000, 'delivery after start');
    assert.match(out, /X-Petrel-Envelope-Recipient: <x@files\.example>\r\nX-Petrel-Envelope-Recipient: <hidden@files\.example>\r\n/);
    assert.match(out, /\r\n\r\nqueued while down\r\n$/);
    assert.deepEqual(pickupFiles(dir), []);
  } finally {
    await p.stop();
    cleanup(dir);
  }
});

test('a recipient the server refuses (unknown user) falls back to pickup: the sender gets a 5.1.1 report', async () => {
  const { dir, port, file } = await setup();
  const p = await start(dir, port);
  try {
    const r = await runCli(['sendmail', '--config', file, '-f', 'alice@localhost', '-v', 'nobody@localhost', 'x@files.example'], 'Subject: partly unknown\n\nhi\n');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /RCPT <nobody@localhost>: 550 5\.1\.1 .*written to .*pickup/);
    const failed = await waitFor(() => p.events().find((e) => e.event === 'failed'), 10_000, 'the failure');
    assert.equal(failed.recipient, 'nobody@localhost');
    assert.equal(failed.status, '5.1.1');
    await waitFor(() => outFiles(dir).length === 1, 10_000, 'the other recipient');
  } finally {
    await p.stop();
    cleanup(dir);
  }
});

test('exit codes: 64 usage, 65 data errors, 75 when it can neither submit nor write, 78 configuration', async () => {
  const { dir, port, file } = await setup();
  try {
    const usage = await runCli(['sendmail', '--config', file, '-Q', 'x@files.example'], 'x');
    assert.equal(usage.code, 64);
    assert.match(usage.stderr, /unknown option -Q/);
    assert.equal((await runCli(['sendmail', '--config', file], 'Subject: x\n\n')).code, 64, 'no recipients and no -t');
    assert.equal((await runCli(['sendmail', '--config', file, 'not an address'], 'x')).code, 64);
    assert.equal((await runCli(['sendmail', '--config', file, 'x@files.example', '-f', 'a@b.test'], 'x')).code, 64, 'options after recipients');
    assert.equal((await runCli(['sendmail', '--config', file, '--frobnicate', 'x@files.example'], 'x')).code, 64);
    const noRcpt = await runCli(['sendmail', '--config', file, '-t'], 'Subject: nobody\n\nx\n');
    assert.equal(noRcpt.code, 65);
    assert.match(noRcpt.stderr, /no recipient addresses found/);
    assert.equal((await runCli(['sendmail', '--config', file, '-t'], 'To: bad@@x\n\nx\n')).code, 65);
    assert.equal((await runCli(['sendmail', '--config', file, '-i', 'x@files.example'], 'Subject: big\n\n' + 'x'.repeat(70 * 1024))).code, 65);
    assert.equal((await runCli(['sendmail', '--config', file, 'x@files.example'], Buffer.from('Subject: nul\n\n\x00\n', 'latin1'))).code, 65);
    assert.deepEqual(pickupFiles(dir), [], 'nothing written for refused input');
    // No server, and the pickup directory cannot be made: EX_TEMPFAIL, nothing claimed.
    writeFileSync(join(dir, 'blocker'), '');
    writeFileSync(join(dir, 'bad.toml'), config(dir, port).replace(`data_dir = "${join(dir, 'var')}"`, `data_dir = "${join(dir, 'blocker', 'var')}"`));
    const temp = await runCli(['sendmail', '--config', join(dir, 'bad.toml'), 'x@files.example'], 'Subject: x\n\nx\n');
    assert.equal(temp.code, 75);
    assert.match(temp.stderr, /cannot queue the message: server not used .*ECONNREFUSED.*cannot write to the pickup directory: ENOTDIR/);
    writeFileSync(join(dir, 'broken.toml'), '[smtp]\nmax_recipients = 0\n');
    assert.equal((await runCli(['sendmail', '--config', join(dir, 'broken.toml'), 'x@files.example'], 'x')).code, 78);
    const hup = await runCli(['sendmail', '--config', file, '-bi'], '');
    assert.equal(hup.code, 0);
    assert.match((await runCli(['sendmail', '--help'], '')).stdout, /Exit codes: 0 queued; 64 usage/);
  } finally {
    cleanup(dir);
  }
});

test('a message the server refuses for good (too many Received:) exits 65, not written to pickup', async () => {
  const { dir, port, file } = await setup();
  const p = await start(dir, port);
  try {
    const r = await runCli(['sendmail', '--config', file, 'x@files.example'], `${'Received: from a by b; Sat, 21 Nov 2026 12:00:00 +0000\n'.repeat(31)}Subject: loop\n\nx\n`);
    assert.equal(r.code, 65);
    assert.match(r.stderr, /message refused: 554 5\.4\.6/);
    assert.deepEqual(pickupFiles(dir), []);
  } finally {
    await p.stop();
    cleanup(dir);
  }
});
