// smtp-client: SmtpClient against the scriptable peer - greeting, EHLO and the
// HELO fallback, capabilities, one write per pipelined batch, replies matched
// in order, per-phase timeouts, a malformed reply, and MX ordering rules.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { ClientError, SmtpClient } from '../../src/delivery/smtp/client.js';
import { orderByPreference } from '../../src/delivery/smtp/mx.js';
import { startPeer } from '../helpers/test-peer.js';
import { createServer } from 'node:net';

const body = (): Readable => Readable.from([Buffer.from('Subject: x\r\n\r\nhi\r\n')]);

test('EHLO refused -> HELO fallback, no extensions used, one command at a time', async (t) => {
  const peer = await startPeer({ refuseEhlo: true });
  t.after(() => peer.close());
  const c = new SmtpClient({ host: '127.0.0.1', port: peer.port, heloName: 'petrel.test' });
  await c.connect();
  assert.equal(c.capabilities.esmtp, false);
  assert.equal(c.capabilities.pipelining, false);
  const res = await c.transaction({ sender: '', mailParams: '', recipients: [{ address: 'a@x.test', params: '' }], body: body() });
  assert.equal(res.error, null);
  assert.equal(res.final[0]!.code, 250);
  await c.quit();
  assert.deepEqual(peer.connections[0]!.commands.slice(0, 3), ['EHLO petrel.test', 'HELO petrel.test', 'MAIL FROM:<>']);
});

test('pipelined batch: MAIL, every RCPT and DATA in one write; replies matched in order', async (t) => {
  const peer = await startPeer({ rcptReply: (a) => (a.startsWith('bad') ? '550 5.1.1 No' : undefined) });
  t.after(() => peer.close());
  const c = new SmtpClient({ host: '127.0.0.1', port: peer.port, heloName: 'petrel.test' });
  await c.connect();
  assert.equal(c.capabilities.pipelining, true);
  const recipients = ['ok1@x.test', 'bad1@x.test', 'ok2@x.test', 'bad2@x.test'].map((address) => ({ address, params: '' }));
  const res = await c.transaction({ sender: 's@x.test', mailParams: ' SIZE=20', recipients, body: body() });
  assert.deepEqual(res.rcpt.map((r) => r!.code), [250, 550, 250, 550]);
  assert.equal(res.data!.code, 354);
  assert.equal(res.dotSent, true);
  assert.equal(res.final.length, 1);
  const batch = peer.connections[0]!.chunks.find((ch) => ch[0]!.startsWith('MAIL'))!;
  assert.deepEqual(batch, ['MAIL FROM:<s@x.test> SIZE=20', 'RCPT TO:<ok1@x.test>', 'RCPT TO:<bad1@x.test>', 'RCPT TO:<ok2@x.test>', 'RCPT TO:<bad2@x.test>', 'DATA']);
  await c.quit();
});

test('a reply slower than its phase timeout ends the connection with a 4.4.2 timeout error', async (t) => {
  const peer = await startPeer({ delayMs: 300 });
  t.after(() => peer.close());
  const c = new SmtpClient({ host: '127.0.0.1', port: peer.port, heloName: 'petrel.test', timeouts: { greeting: 1000, helo: 1000, mail: 100 } });
  await c.connect();
  const res = await c.transaction({ sender: '', mailParams: '', recipients: [{ address: 'a@x.test', params: '' }], body: body() });
  assert.ok(res.error instanceof ClientError);
  assert.equal(res.error.kind, 'timeout');
  assert.equal(res.error.status, '4.4.2');
  assert.match(res.error.message, /MAIL FROM/);
  assert.equal(c.usable, false);
});

test('a malformed reply line is a protocol error, never matched to a command', async (t) => {
  const server = createServer((s) => {
    s.on('error', () => {});
    s.write('220 hello\r\n');
    s.on('data', () => s.write('this is not smtp\r\n'));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.after(() => new Promise<void>((r) => server.close(() => r())));
  const port = (server.address() as { port: number }).port;
  const c = new SmtpClient({ host: '127.0.0.1', port, heloName: 'petrel.test', timeouts: { helo: 1000 } });
  await assert.rejects(c.connect(), (e: ClientError) => e.kind === 'protocol' && /malformed reply/.test(e.message));
});

test('an endless reply line is cut off (bounded buffering)', async (t) => {
  const server = createServer((s) => {
    s.on('error', () => {});
    s.write('220 ');
    s.write('x'.repeat(100_000));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.after(() => new Promise<void>((r) => server.close(() => r())));
  const port = (server.address() as { port: number }).port;
  const c = new SmtpClient({ host: '127.0.0.1', port, heloName: 'petrel.test', timeouts: { greeting: 2000 } });
  await assert.rejects(c.connect(), (e: ClientError) => e.kind === 'protocol' && /longer than/.test(e.message));
});

test('IPv6 loopback connects', async (t) => {
  let peer;
  try {
    peer = await startPeer({ host: '::1' });
  } catch (e) {
    assert.fail(`cannot listen on ::1 here: ${(e as Error).message}`);
  }
  t.after(() => peer.close());
  const c = new SmtpClient({ host: '::1', port: peer.port, heloName: 'petrel.test' });
  await c.connect();
  assert.match(c.remote, /\[::1\]/);
  await c.quit();
});

test('MX order: by preference, equal preferences shuffled', () => {
  const hosts = [
    { name: 'c', preference: 20 },
    { name: 'a1', preference: 10 },
    { name: 'b', preference: 15 },
    { name: 'a2', preference: 10 },
  ];
  const seen = new Set<string>();
  let seed = 1;
  const rnd = (): number => ((seed = (seed * 16807) % 2147483647) / 2147483647);
  for (let i = 0; i < 40; i++) {
    const order = orderByPreference(hosts, rnd).map((h) => h.name);
    assert.deepEqual(order.slice(2), ['b', 'c']);
    assert.deepEqual([...order.slice(0, 2)].sort(), ['a1', 'a2']);
    seen.add(order.slice(0, 2).join(','));
  }
  assert.equal(seen.size, 2, 'both orders of the equal-preference pair occur');
});
