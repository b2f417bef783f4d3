// End to end: a real Petrel on loopback answers every situation in
// CONTRACT.md's inbound reply table with the right code and enhanced status.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SmtpTalk, replyLine } from '../helpers/smtp-talk.js';
import { startPetrel, waitFor, cleanup, tempDir, type InProcess } from '../helpers/petrel-harness.js';

describe('inbound SMTP replies', () => {
  let p: InProcess;
  before(async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'users.txt'), '# valid users\nalice@local.test\nbob@local.test\n');
    p = await startPetrel(`[smtp]
listen = ["127.0.0.1:0"]
max_recipients = 5
max_message_size = "10KB"
max_unknown_commands = 3
max_connections_per_client = 4
idle_timeout = "2s"
relay_networks = ["10.0.0.0/8"]
[local]
domains = ["local.test"]
users_file = "users.txt"
`, {}, dir);
  });
  after(async () => {
    await p.stop();
    cleanup(p.dir);
  });

  async function session(): Promise<SmtpTalk> {
    const t = await SmtpTalk.open(p.port);
    const greet = await t.read();
    assert.equal(greet?.code, 220);
    const ehlo = await t.cmd('EHLO client.test');
    assert.equal(ehlo.code, 250);
    return t;
  }

  test('EHLO advertises the extensions and LIMITS RCPTMAX', async () => {
    const t = await SmtpTalk.open(p.port);
    await t.read();
    const r = await t.cmd('EHLO client.test');
    for (const ext of ['PIPELINING', 'SIZE 10240', '8BITMIME', 'SMTPUTF8', 'ENHANCEDSTATUSCODES', 'DSN', 'STARTTLS', 'LIMITS RCPTMAX=5']) {
      assert.ok(r.lines.includes(ext), `${ext} in ${r.lines.join(',')}`);
    }
    t.close();
  });

  test('RCPT beyond max_recipients gets 452 4.5.3; earlier ones stay accepted', async () => {
    const t = await session();
    assert.equal((await t.cmd('MAIL FROM:<a@example.com>')).code, 250);
    const replies = [];
    for (let i = 0; i < 7; i++) replies.push(replyLine(await t.cmd(`RCPT TO:<${i % 2 ? 'alice' : 'bob'}@local.test>`)));
    assert.deepEqual(replies.map((r) => r.slice(0, 9)), ['250 2.1.5', '250 2.1.5', '250 2.1.5', '250 2.1.5', '250 2.1.5', '452 4.5.3', '452 4.5.3']);
    assert.equal(replies[6], '452 4.5.3 Too many recipients');
    t.close();
  });

  test('relaying from outside relay_networks gets 554 5.7.1', async () => {
    const t = await session();
    await t.cmd('MAIL FROM:<a@example.com>');
    assert.match(replyLine(await t.cmd('RCPT TO:<someone@elsewhere.example>')), /^554 5\.7\.1 /);
    t.close();
  });

  test('an unknown local user gets 550 5.1.1 at RCPT', async () => {
    const t = await session();
    await t.cmd('MAIL FROM:<a@example.com>');
    assert.match(replyLine(await t.cmd('RCPT TO:<nobody@local.test>')), /^550 5\.1\.1 /);
    t.close();
  });

  test('declared SIZE over the limit gets 552 5.3.4 at MAIL', async () => {
    const t = await session();
    assert.match(replyLine(await t.cmd('MAIL FROM:<a@example.com> SIZE=20000')), /^552 5\.3\.4 /);
    t.close();
  });

  test('actual size over the limit gets 552 5.3.4 at end of data, nothing kept', async () => {
    const t = await session();
    await t.cmd('MAIL FROM:<a@example.com>');
    assert.equal((await t.cmd('RCPT TO:<postmaster>')).code, 250, 'postmaster is always a valid local user');
    assert.equal((await t.cmd('DATA')).code, 354);
    t.write('Subject: big\r\n\r\n' + ('y'.repeat(70) + '\r\n').repeat(300) + '.\r\n');
    assert.match(replyLine(await t.read()), /^552 5\.3\.4 /);
    // The session goes on.
    assert.equal((await t.cmd('NOOP')).code, 250);
    t.close();
    assert.equal((await p.petrel.store.list({ limit: 10 })).length, 0);
  });

  test('a NUL octet in data gets 554 5.6.0, nothing kept', async () => {
    const t = await session();
    await t.cmd('MAIL FROM:<a@example.com>');
    await t.cmd('RCPT TO:<postmaster>');
    await t.cmd('DATA');
    t.write('Subject: nul\r\n\r\nbad\u0000byte\r\n.\r\n');
    assert.match(replyLine(await t.read()), /^554 5\.6\.0 /);
    t.close();
    assert.equal((await p.petrel.store.list({ limit: 10 })).length, 0);
  });

  test('command lines over 512 octets get 500 5.5.2; MAIL and RCPT get their DSN allowance', async () => {
    const t = await session();
    assert.match(replyLine(await t.cmd('NOOP ' + 'x'.repeat(600))), /^500 5\.5\.2 /);
    assert.equal((await t.cmd('MAIL FROM:<a@example.com> ENVID=' + 'e'.repeat(90))).code, 250);
    assert.equal((await t.cmd('RCPT TO:<postmaster> ORCPT=rfc822;' + 'o'.repeat(450))).code, 250);
    assert.match(replyLine(await t.cmd('RCPT TO:<postmaster> ORCPT=rfc822;' + 'o'.repeat(1100))), /^500 5\.5\.2 /);
    // A line far longer than any buffer is discarded as it streams.
    t.write('NOOP ' + 'z'.repeat(200_000) + '\r\n');
    assert.match(replyLine(await t.read()), /^500 5\.5\.2 /);
    assert.equal((await t.cmd('NOOP')).code, 250);
    t.close();
  });

  test('more than max_unknown_commands gets 421 4.7.0 and the connection closes', async () => {
    const t = await session();
    for (let i = 0; i < 3; i++) assert.match(replyLine(await t.cmd('FOO')), /^500 5\.5\.2/);
    assert.match(replyLine(await t.cmd('FOO')), /^421 4\.7\.0 /);
    assert.equal(await t.read(), null);
  });

  test('over max_connections_per_client gets 421 4.7.0 at greeting', async () => {
    await waitFor(() => p.petrel.inbound!.connectionCount === 0, 5000, 'earlier connections to close');
    const open: SmtpTalk[] = [];
    for (let i = 0; i < 4; i++) {
      const t = await SmtpTalk.open(p.port);
      assert.equal((await t.read())?.code, 220);
      open.push(t);
    }
    const extra = await SmtpTalk.open(p.port);
    assert.match(replyLine(await extra.read()), /^421 4\.7\.0 /);
    for (const t of open) t.close();
    extra.close();
    await waitFor(() => p.petrel.inbound!.connectionCount === 0, 5000, 'connections to close');
  });

  test('idle timeout gets 421 4.4.2 and a close', async () => {
    const t = await session();
    const r = await t.read(5000);
    assert.match(replyLine(r), /^421 4\.4\.2 /);
    assert.equal(await t.read(), null);
  });

  test('bad sequences get 503 5.5.1; DATA with no recipient gets 554 5.5.1', async () => {
    const t = await session();
    assert.match(replyLine(await t.cmd('RCPT TO:<postmaster>')), /^503 5\.5\.1/);
    assert.match(replyLine(await t.cmd('DATA')), /^503 5\.5\.1/);
    await t.cmd('MAIL FROM:<a@example.com>');
    assert.match(replyLine(await t.cmd('MAIL FROM:<a@example.com>')), /^503 5\.5\.1/);
    assert.match(replyLine(await t.cmd('DATA')), /^554 5\.5\.1/);
    t.close();
  });

  test('accepted mail is delivered to the local Maildir with its event trail', async () => {
    const t = await session();
    const r = await t.send('a@example.com', ['alice@local.test'], 'Subject: hello\r\nMessage-ID: <hello-1@example.com>\r\n\r\nbody\r\n');
    assert.match(replyLine(r), /^250 2\.0\.0 Ok: queued as [0-9A-Z]{16}$/);
    t.close();
    const box = join(p.dir, 'var', 'mail', 'local.test', 'alice', 'new');
    await waitFor(() => existsSync(box) && readdirSync(box).length === 1, 5000, 'maildir delivery');
    await waitFor(() => p.events().some((e) => e.event === 'delivered'), 5000, 'delivered event');
    const ev = p.events().filter((e) => e.message_id === '<hello-1@example.com>');
    assert.deepEqual(ev.map((e) => [e.event, e.recipient, e.state, e.attempt]), [
      ['received', 'alice@local.test', 'queued', undefined],
      ['delivered', 'alice@local.test', 'delivered', 1],
    ]);
  });
});
