// The pickup directory end to end (CONTRACT.md, "pickup"; seed 004: nothing
// is ever deleted because of an error). Files are queued with their envelope
// from X-Envelope-* or From/To/Cc/Bcc (those headers removed), bare LF
// normalised to CR LF; deleted only once durably queued; unusable files go
// to pickup/bad/ with a reason and stay; files being written (".name",
// pickup/tmp/) are left alone until renamed; a storage failure leaves the
// file for later.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanup, startPetrel, tempDir, waitFor, type InProcess } from '../helpers/petrel-harness.js';
import type { EmbeddedStore } from '../../src/queue/embedded-store.js';
import type { MailEvent } from '../../src/log/events.js';

function config(dir: string): string {
  return `[queue]
retry_intervals = ["200ms"]
[smtp]
listen = ["127.0.0.1:0"]
max_message_size = "64KB"
[local]
domains = ["localhost"]
users_file = "${join(dir, 'users')}"
[[routes]]
domain = "files.example"
via = "directory:${join(dir, 'out')}"
`;
}

function setup(): string {
  const dir = tempDir();
  mkdirSync(join(dir, 'out'));
  writeFileSync(join(dir, 'users'), 'alice@localhost\nbob@localhost\n');
  return dir;
}

const pickup = (p: InProcess, ...name: string[]): string => join(p.dir, 'var', 'pickup', ...name);

/** drop - the pickup protocol: write under a ".name", then rename. */
function drop(p: InProcess, name: string, content: string | Buffer): void {
  writeFileSync(pickup(p, `.${name}`), content);
  renameSync(pickup(p, `.${name}`), pickup(p, name));
}

function outFiles(dir: string): string[] {
  // As a reader of the share must: files starting with "." are still being written.
  return readdirSync(join(dir, 'out'))
    .filter((f) => !f.startsWith('.'))
    .map((f) => readFileSync(join(dir, 'out', f), 'latin1'));
}

const received = (events: MailEvent[]): MailEvent[] => events.filter((e) => e.event === 'received');

test('X-Envelope-* give the envelope and are removed; bare LF becomes CR LF; the file is deleted once queued', async () => {
  const dir = setup();
  const p = await startPetrel(config(dir), {}, dir);
  try {
    drop(p, 'one', 'X-Envelope-From: <app@localhost>\nX-Envelope-To: <x@files.example>, <y@files.example>\nFrom: Someone Else <other@elsewhere.example>\nTo: display-only@elsewhere.example\nBcc: secret@elsewhere.example\nSubject: envelope\n\nline one\nline two\n');
    const out = await waitFor(() => (outFiles(dir).length === 1 ? outFiles(dir)[0] : null), 10_000, 'the message to be delivered');
    assert.match(out, /^X-Petrel-Envelope-Queue-Id: [0-9A-Z]{16}\r\nX-Petrel-Envelope-Received: .*\r\nX-Petrel-Envelope-Sender: <app@localhost>\r\nX-Petrel-Envelope-Recipient: <x@files\.example>\r\nX-Petrel-Envelope-Recipient: <y@files\.example>\r\n/);
    const message = out.slice(out.indexOf('Received: by'));
    assert.match(message, /^Received: by petrel\.test \(Petrel pickup\) id [0-9A-Z]{16}\r\n\t\(file one\);\r\n\t.*\+0000\r\nFrom: Someone Else <other@elsewhere\.example>\r\nTo: display-only@elsewhere\.example\r\nSubject: envelope\r\nDate: .*\r\nMessage-ID: <.*@petrel\.test>\r\n\r\nline one\r\nline two\r\n$/);
    assert.doesNotMatch(message, /X-Envelope|Bcc|secret/);
    assert.doesNotMatch(out.replace(/\r\n/g, ''), /\n/, 'no bare LF');
    // Delivery may start from the commit itself, a moment before the file is unlinked.
    await waitFor(() => readdirSync(pickup(p)).join() === 'bad', 5000, 'the file to be gone once queued');
    const ev = await waitFor(() => (received(p.events()).length === 2 ? received(p.events()) : null), 5000, 'the received events');
    assert.deepEqual(ev.map((e) => e.recipient), ['x@files.example', 'y@files.example']);
    assert.equal(ev[0]!.remote, 'pickup');
  } finally {
    await p.stop();
    cleanup(dir);
  }
});

test('without X-Envelope-*: sender from From, recipients from To, Cc and Bcc; Bcc removed; aliases and local delivery apply', async () => {
  const dir = setup();
  const p = await startPetrel(config(dir), {}, dir);
  try {
    drop(p, 'two', 'From: "Alice" <alice@localhost>\nTo: Bob <bob@localhost>, team: x@files.example;\nCc: y@files.example\nBcc: hidden@files.example\nSubject: headers\n\nbody\n');
    await waitFor(() => received(p.events()).length === 4, 10_000, 'four recipients');
    const ev = received(p.events());
    assert.deepEqual(ev.map((e) => e.recipient).sort(), ['bob@localhost', 'hidden@files.example', 'x@files.example', 'y@files.example']);
    assert.equal(ev[0]!.sender, 'alice@localhost');
    const out = await waitFor(() => (outFiles(dir).length === 1 ? outFiles(dir)[0] : null), 10_000, 'the files.example copy');
    assert.match(out, /X-Petrel-Envelope-Recipient: <hidden@files\.example>\r\n/, 'the envelope still has the Bcc recipient');
    assert.doesNotMatch(out.slice(out.indexOf('Received: by')), /Bcc|hidden/, 'the message does not');
    const box = join(p.dir, 'var', 'mail', 'localhost', 'bob', 'new');
    await waitFor(() => existsSync(box) && readdirSync(box).length === 1, 10_000, 'bob\'s copy');
  } finally {
    await p.stop();
    cleanup(dir);
  }
});

test('unusable files move to pickup/bad/ with a reason and an event, are never deleted, and are not read again', async () => {
  const dir = setup();
  const p = await startPetrel(config(dir), {}, dir);
  try {
    const cases: Record<string, string | Buffer> = {
      'no-sender': 'To: bob@localhost\nSubject: x\n\nbody\n',
      'no-recipient': 'From: alice@localhost\nSubject: x\n\nbody\n',
      'bad-address': 'From: alice@localhost\nTo: bob@@localhost\n\nbody\n',
      'nul-octet': Buffer.from('From: alice@localhost\nTo: bob@localhost\n\nbad \x00 byte\n', 'latin1'),
      'too-big': `From: alice@localhost\nTo: bob@localhost\n\n${'x'.repeat(70 * 1024)}\n`,
      'loop': `${'Received: from a by b; Sat, 21 Nov 2026 12:00:00 +0000\n'.repeat(31)}From: alice@localhost\nTo: bob@localhost\n\nbody\n`,
    };
    for (const [name, content] of Object.entries(cases)) drop(p, name, content);
    writeFileSync(join(dir, 'secret'), 'From: a@localhost\nTo: bob@localhost\n\nthe contents of a file the writer could not read\n');
    symlinkSync(join(dir, 'secret'), pickup(p, 'symlink'));
    const reasons: Record<string, RegExp> = {
      'no-sender': /no sender: neither X-Envelope-From nor From/,
      'no-recipient': /no recipients/,
      'bad-address': /"bob@@localhost" is not a valid address/,
      'nul-octet': /554 5\.6\.0/,
      'too-big': /552 5\.3\.4/,
      loop: /554 5\.4\.6/,
      symlink: /symbolic link/,
    };
    await waitFor(() => Object.keys(reasons).every((n) => existsSync(pickup(p, 'bad', `${n}.reason`))), 15_000, 'every bad file to be set aside');
    for (const [name, re] of Object.entries(reasons)) {
      assert.match(readFileSync(pickup(p, 'bad', `${name}.reason`), 'utf8'), re, name);
      assert.ok(existsSync(pickup(p, 'bad', name)), `${name} kept in bad/`);
    }
    assert.deepEqual(readFileSync(pickup(p, 'bad', 'nul-octet')), cases['nul-octet'], 'kept byte for byte');
    assert.deepEqual(readdirSync(pickup(p)), ['bad']);
    assert.equal(received(p.events()).length, 0, 'nothing was queued');
    // A second file with a name already in bad/ does not replace the first.
    drop(p, 'no-sender', 'To: bob@localhost\n\nsecond\n');
    await waitFor(() => existsSync(pickup(p, 'bad', 'no-sender.1')), 10_000, 'the second bad file');
    assert.match(readFileSync(pickup(p, 'bad', 'no-sender'), 'utf8'), /Subject: x/);
    // Each one is in the event log too, where the operator watches.
    const rejected = (): MailEvent[] => p.events().filter((e) => e.event === 'pickup_rejected');
    await waitFor(() => rejected().length === 8, 10_000, 'a pickup_rejected event per bad file');
    for (const [name, re] of Object.entries(reasons)) {
      const e = rejected().find((x) => x.detail?.startsWith(`pickup/bad/${name}: `));
      assert.ok(e, `event for ${name}`);
      assert.match(e.detail!, re);
      assert.equal(e.id, 1100);
      assert.equal(e.queue_id, '');
    }
    assert.ok(rejected().some((x) => x.detail?.startsWith('pickup/bad/no-sender.1: ')));
    // bad/ is never read again: a later scan leaves it as it is.
    const before = readdirSync(pickup(p, 'bad')).sort();
    p.petrel.pickup.kick();
    await p.petrel.pickup.idle();
    assert.deepEqual(readdirSync(pickup(p, 'bad')).sort(), before);
  } finally {
    await p.stop();
    cleanup(dir);
  }
});

test('files being written are not read: ".name" and pickup/tmp/ are ignored until renamed', async () => {
  const dir = setup();
  const p = await startPetrel(config(dir), {}, dir);
  try {
    mkdirSync(pickup(p, 'tmp'));
    writeFileSync(pickup(p, '.partial'), 'From: alice@localhost\nTo: x@files.example\n');
    writeFileSync(pickup(p, 'tmp', 'partial2'), 'From: alice@localhost\nTo: x@files.example\n');
    p.petrel.pickup.kick();
    await p.petrel.pickup.idle();
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(received(p.events()).length, 0);
    assert.ok(existsSync(pickup(p, '.partial')) && existsSync(pickup(p, 'tmp', 'partial2')));
    writeFileSync(pickup(p, '.partial'), 'From: alice@localhost\nTo: x@files.example\nSubject: finished\n\nnow complete\n');
    renameSync(pickup(p, '.partial'), pickup(p, 'done'));
    renameSync(pickup(p, 'tmp', 'partial2'), pickup(p, 'done2'));
    await waitFor(() => received(p.events()).length === 2, 10_000, 'both once renamed');
    const out = await waitFor(() => (outFiles(dir).length === 2 ? outFiles(dir) : null), 10_000, 'delivery');
    assert.ok(out.some((f) => /\r\nSubject: finished\r\n(?:.*\r\n)*\r\nnow complete\r\n$/.test(f)), 'the finished content, not the partial one');
  } finally {
    await p.stop();
    cleanup(dir);
  }
});

test('a storage failure leaves the file in place; it is queued once storage works again', async () => {
  const dir = setup();
  const p = await startPetrel(config(dir), {}, dir);
  try {
    const store = p.petrel.store as EmbeddedStore;
    store.groupCommit.fault = () => {
      throw new Error('injected: I/O error');
    };
    drop(p, 'waits', 'From: alice@localhost\nTo: x@files.example\nSubject: wait\n\nbody\n');
    await waitFor(() => p.petrel.pickup.stats.temporary >= 1, 10_000, 'a temporary failure');
    assert.ok(existsSync(pickup(p, 'waits')), 'the file stays');
    assert.deepEqual(readdirSync(pickup(p, 'bad')), [], 'a temporary failure is not a bad file');
    store.groupCommit.fault = null;
    await waitFor(() => received(p.events()).length === 1, 15_000, 'queued once storage works');
    // The file goes once its commit has resolved, a moment after the event log has the event.
    await waitFor(() => !existsSync(pickup(p, 'waits')), 5_000, 'the file removed after it was queued');
    assert.equal(received(p.events()).length, 1, 'queued exactly once');
  } finally {
    await p.stop();
    cleanup(dir);
  }
});

test('files dropped while Petrel was down are queued at start; an unknown local user gets a 5.1.1 report', async () => {
  const dir = setup();
  mkdirSync(join(dir, 'var', 'pickup'), { recursive: true });
  writeFileSync(join(dir, 'var', 'pickup', 'early'), 'From: alice@localhost\nTo: x@files.example, nobody@localhost\nSubject: early\n\nbody\n');
  const p = await startPetrel(config(dir), {}, dir);
  try {
    await waitFor(() => received(p.events()).filter((e) => e.sender === 'alice@localhost').length === 2, 10_000, 'the early file');
    const failed = await waitFor(() => p.events().find((e) => e.event === 'failed'), 10_000, 'the unknown user to fail');
    assert.equal(failed.recipient, 'nobody@localhost');
    assert.equal(failed.status, '5.1.1');
    const box = join(p.dir, 'var', 'mail', 'localhost', 'alice', 'new');
    const report = await waitFor(() => existsSync(box) && readdirSync(box).map((f) => readFileSync(join(box, f), 'utf8')).find((m) => m.includes('delivery-status')), 10_000, 'the report');
    assert.match(report, /Final-Recipient: rfc822; nobody@localhost\nAction: failed\nStatus: 5\.1\.1\n/);
  } finally {
    await p.stop();
    cleanup(dir);
  }
});
