// The outbound engine inside a whole Petrel (seeds 001 and 003): a dead next
// hop still counts every attempt and ends in an expiry report; a next hop that
// comes back before expiry gets the mail with no report; MX fallback and null
// MX through a loopback DNS server; and a real Postfix limited to 100
// recipients per message receives 5,000 with no bounce.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { SmtpTalk } from '../helpers/smtp-talk.js';
import { startPetrel, waitFor, cleanup, freePort, closedPort, type InProcess } from '../helpers/petrel-harness.js';
import { startPeer } from '../helpers/test-peer.js';
import { startBlackHole } from '../helpers/black-hole.js';
import { startDnsServer } from '../helpers/dns-server.js';
import { startPostfix } from '../helpers/postfix.js';

function reports(p: InProcess, user = 'alice'): number {
  const box = join(p.dir, 'var', 'mail', 'home.test', user, 'new');
  return existsSync(box) ? readdirSync(box).length : 0;
}

async function send(p: InProcess, rcpts: string[], from = 'alice@home.test'): Promise<void> {
  const t = await SmtpTalk.open(p.port);
  await t.read();
  await t.cmd('EHLO client.test');
  const r = await t.send(from, rcpts, 'Subject: outbound\r\n\r\nbody\r\n');
  assert.equal(r.code, 250);
  t.close();
}

const SHORT = '[queue]\nretry_intervals = ["250ms"]\nmax_lifetime = "3s"\ndelay_warning = "1h"\n';

for (const kind of ['connection refused', 'black-holed port'] as const) {
  test(`destination down (${kind}): every attempt counted, then one expiry report`, async () => {
    const hole = kind === 'black-holed port' ? await startBlackHole() : null;
    const port = hole ? hole.port : await closedPort();
    const p = await startPetrel(`[delivery]\nsmarthost = "127.0.0.1:${port}"\nconnect_timeout = "300ms"\ndead_destination_backoff = "0ms"\n[local]\ndomains = ["home.test"]\n${SHORT}`);
    try {
      await send(p, ['bob@far.example', 'carol@far.example']);
      await waitFor(() => reports(p) === 1, 15_000, 'the expiry report');
      await waitFor(() => p.events().filter((e) => e.event === 'expired').length === 2, 5000, 'expired events');
      const ev = p.events().filter((e) => e.sender === 'alice@home.test' && e.attempt);
      for (const r of ['bob@far.example', 'carol@far.example']) {
        const mine = ev.filter((e) => e.recipient === r);
        assert.ok(mine.length >= 4, `${r}: ${mine.length} attempts within 3 s`);
        assert.deepEqual(mine.map((e) => e.attempt), mine.map((_, i) => i + 1), 'attempts counted one by one');
        assert.ok(mine.slice(0, -1).every((e) => e.event === 'deferred' && e.error), 'each failed attempt is a deferral with its error');
        assert.equal(mine.at(-1)!.event, 'expired');
        assert.equal(mine.at(-1)!.status, '4.4.7');
      }
      await waitFor(() => p.events().some((e) => e.event === 'dsn_queued'), 5000, 'the dsn_queued event');
      assert.equal(p.events().filter((e) => e.event === 'dsn_queued').length, 1, 'one report for both');
    } finally {
      await p.stop();
      await hole?.close();
      cleanup(p.dir);
    }
  });
}

test('destination back before expiry: delivered, no report', async () => {
  const port = await freePort();
  const p = await startPetrel(`[delivery]\nsmarthost = "127.0.0.1:${port}"\ndead_destination_backoff = "0ms"\n[local]\ndomains = ["home.test"]\n[queue]\nretry_intervals = ["250ms"]\nmax_lifetime = "20s"\n`);
  const peer = await startPeer({ port }).catch(() => null);
  await peer?.close(); // reserve nothing: the port is free, the peer comes later
  try {
    await send(p, ['bob@far.example']);
    await waitFor(() => p.events().filter((e) => e.event === 'deferred').length >= 2, 10_000, 'two failed attempts');
    const back = await startPeer({ port });
    try {
      await waitFor(() => back.delivered().length === 1, 10_000, 'delivery');
      await waitFor(() => p.events().some((e) => e.event === 'delivered'), 5000, 'delivered event');
      const mine = p.events().filter((e) => e.recipient === 'bob@far.example' && e.attempt);
      assert.equal(mine.at(-1)!.event, 'delivered');
      assert.equal(mine.at(-1)!.attempt, mine.length);
      assert.equal(reports(p), 0);
    } finally {
      await back.close();
    }
  } finally {
    await p.stop();
    cleanup(p.dir);
  }
});

test('MX: the first host refuses, the second accepts; a null MX fails at once with 5.1.10', async () => {
  const port = await freePort('127.0.0.3');
  const good = await startPeer({ host: '127.0.0.3', port });
  const dns = await startDnsServer({
    'mx.example': { MX: [[10, 'a.mx.example'], [20, 'b.mx.example']] },
    'a.mx.example': { A: ['127.0.0.2'] },
    'b.mx.example': { A: ['127.0.0.3'] },
    'nomail.example': { MX: [[0, '.']] },
  });
  const p = await startPetrel(`[delivery]\nsmtp_port = ${port}\ndns_servers = ["${dns.address}"]\n[local]\ndomains = ["home.test"]\n`);
  try {
    await send(p, ['bob@mx.example', 'nobody@nomail.example']);
    await waitFor(() => good.delivered().length === 1, 10_000, 'delivery to the second MX');
    assert.deepEqual(good.delivered(), ['bob@mx.example']);
    await waitFor(() => p.events().some((e) => e.event === 'failed'), 5000, 'null MX failure');
    const failed = p.events().find((e) => e.event === 'failed')!;
    assert.equal(failed.recipient, 'nobody@nomail.example');
    assert.equal(failed.status, '5.1.10');
    assert.equal(failed.attempt, 1);
    await waitFor(() => reports(p) === 1, 5000, 'failure report');
  } finally {
    await p.stop();
    await good.close();
    await dns.close();
    cleanup(p.dir);
  }
});

test('a real Postfix limited to 100 recipients receives 5,000 through Petrel: 0 bounces', async (t) => {
  const pf = await startPostfix({ recipientLimit: 100 });
  const p = await startPetrel(`[smtp]\nlisten = ["127.0.0.1:0"]\nmax_recipients = 5000\n[delivery]\nsmarthost = "127.0.0.1:${pf.port}"\nmax_recipients_per_transaction = 1000\n[local]\ndomains = ["home.test"]\n`);
  try {
    const c = await SmtpTalk.open(p.port);
    await c.read();
    await c.cmd('EHLO client.test');
    let batch = 'MAIL FROM:<alice@home.test>\r\n';
    for (let i = 0; i < 5000; i++) batch += `RCPT TO:<u${i}@remote.test>\r\n`;
    c.write(batch + 'DATA\r\n');
    for (let i = 0; i < 5002; i++) assert.ok((await c.read())!.code < 400);
    const t0 = Date.now();
    c.write('Subject: to 5,000\r\n\r\nhello\r\n.\r\n');
    assert.equal((await c.read())!.code, 250);
    c.close();
    await waitFor(() => p.events().filter((e) => e.event === 'delivered').length === 5000, 60_000, '5,000 delivered');
    t.diagnostic(`5,000 recipients relayed to Postfix (limit 100) in ${Date.now() - t0} ms`);
    const ev = p.events();
    assert.equal(ev.filter((e) => e.event === 'failed' || e.event === 'deferred').length, 0);
    assert.equal(ev.filter((e) => e.event === 'dsn_queued').length, 0);
    assert.equal(reports(p), 0);
    await waitFor(() => pf.delivered().length === 5000, 60_000, 'Postfix to deliver all 5,000');
    assert.equal(new Set(pf.delivered()).size, 5000);
  } finally {
    await p.stop();
    await pf.stop();
    cleanup(p.dir);
  }
});
