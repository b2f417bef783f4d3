// outbound-failures: every way the next hop can fail ends in an exact result
// for every recipient (deferred unless certainly permanent), and nothing is
// lost: MX fallback, null MX, NXDOMAIN, SERVFAIL, DNS timeout, connection
// refused, black-holed port, silent peer, 421 greeting, drops at every point,
// TLS failures, SMTPUTF8, size, MAIL/DATA refusals.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { SmtpAgent, type SmtpAgentOptions } from '../../src/delivery/smtp/smtp-agent.js';
import { startPeer, type PeerOptions, type TestPeer } from '../helpers/test-peer.js';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.js';
import { startBlackHole } from '../helpers/black-hole.js';
import { collect, fixedHop, makeJob, mxHop, rcpts } from '../helpers/jobs.js';
import { closedPort } from '../helpers/petrel-harness.js';

const FAST = { connect: 1500, greeting: 1500, helo: 1500, starttls: 1500, mail: 1500, rcpt: 1500, data: 1500, dataBlock: 1500, dataEnd: 1500, rset: 1500, quit: 500 };

function agent(o: Partial<SmtpAgentOptions> = {}): SmtpAgent {
  return new SmtpAgent({ heloName: 'petrel.test', maxRecipientsPerTransaction: 100, timeouts: FAST, poolOptions: { deadBackoffMs: 0 }, ...o });
}

/** withPeer - start a peer, an agent, and close both after the test. */
async function setup(t: { after: (fn: () => Promise<void>) => void }, peerOptions: PeerOptions, agentOptions: Partial<SmtpAgentOptions> = {}): Promise<{ peer: TestPeer; a: SmtpAgent }> {
  const peer = await startPeer(peerOptions);
  const a = agent(agentOptions);
  t.after(async () => {
    await a.close();
    await peer.close();
  });
  return { peer, a };
}

async function withDns(t: { after: (fn: () => Promise<void>) => void }, table: Parameters<typeof startDnsServer>[0]): Promise<DnsServer> {
  const dns = await startDnsServer(table);
  t.after(() => dns.close());
  return dns;
}

test('MX fallback: the first MX refuses the connection, the second (higher preference value) accepts', async (t) => {
  const mx2 = await startPeer({ host: '127.0.0.3' });
  t.after(() => mx2.close());
  const dns = await withDns(t, {
    'example.test': { MX: [[10, 'mx1.example.test'], [20, 'mx2.example.test']] },
    'mx1.example.test': { A: ['127.0.0.2'] },
    'mx2.example.test': { A: ['127.0.0.3'] },
  });
  const a = agent({ dns: { servers: [dns.address], timeoutMs: 500, tries: 1 } });
  t.after(() => a.close());
  const job = makeJob(rcpts(3, 'example.test'), mxHop('example.test', mx2.port));
  const c = collect(job);
  await a.deliver(job, c.report);
  assert.equal(c.count('delivered'), 3);
  assert.match(c.byAddress.get('u1@example.test')!.remote, /^mx2\.example\.test \[127\.0\.0\.3\]/);
  assert.equal(mx2.transactions.length, 1);
  assert.deepEqual(dns.queries.filter((q) => q.type === 'MX').map((q) => q.name), ['example.test']);
});

test('MX fallback: the first MX answers 421 at greeting, the second accepts', async (t) => {
  const mx2 = await startPeer({ host: '127.0.0.3' });
  t.after(() => mx2.close());
  const mx1 = await startPeer({ host: '127.0.0.2', port: mx2.port, greeting: '421 4.3.2 Service not available' });
  t.after(() => mx1.close());
  const dns = await withDns(t, {
    'example.test': { MX: [[5, 'mx1.example.test'], [50, 'mx2.example.test']] },
    'mx1.example.test': { A: ['127.0.0.2'] },
    'mx2.example.test': { A: ['127.0.0.3'] },
  });
  const a = agent({ dns: { servers: [dns.address], timeoutMs: 500, tries: 1 } });
  t.after(() => a.close());
  const job = makeJob(['x@example.test'], mxHop('example.test', mx2.port));
  const c = collect(job);
  await a.deliver(job, c.report);
  assert.equal(c.count('delivered'), 1);
  assert.equal(mx1.connections.length, 1);
  assert.equal(mx1.transactions.length, 0);
  assert.equal(mx2.transactions.length, 1);
});

test('no MX: the domain\'s own A record is used (implicit MX)', async (t) => {
  const peer = await startPeer({ host: '127.0.0.4' });
  t.after(() => peer.close());
  const dns = await withDns(t, { 'plain.test': { A: ['127.0.0.4'] } });
  const a = agent({ dns: { servers: [dns.address], timeoutMs: 500, tries: 1 } });
  t.after(() => a.close());
  const job = makeJob(['x@plain.test'], mxHop('plain.test', peer.port));
  const c = collect(job);
  await a.deliver(job, c.report);
  assert.equal(c.count('delivered'), 1);
});

test('DNS answers: null MX -> failed 5.1.10; NXDOMAIN -> failed 5.1.2; no MX and no address -> failed 5.4.4; SERVFAIL and silence -> deferred 4.4.3', async (t) => {
  const dns = await withDns(t, {
    'nullmx.test': { MX: [[0, '.']] },
    'servfail.test': 'SERVFAIL',
    'silent.test': 'SILENT',
    'empty.test': {},
  });
  const a = agent({ dns: { servers: [dns.address], timeoutMs: 200, tries: 1 } });
  t.after(() => a.close());
  const cases: [string, string, string][] = [
    ['nullmx.test', 'failed', '5.1.10'],
    ['nx.test', 'failed', '5.1.2'],
    ['empty.test', 'failed', '5.4.4'],
    ['servfail.test', 'deferred', '4.4.3'],
    ['silent.test', 'deferred', '4.4.3'],
  ];
  for (const [domain, kind, status] of cases) {
    const job = makeJob(rcpts(2, domain), mxHop(domain, 25));
    const c = collect(job);
    await a.deliver(job, c.report);
    assert.equal(c.byAddress.size, 2, domain);
    for (const r of c.byAddress.values()) {
      assert.equal(r.kind, kind, `${domain}: ${r.reply}`);
      assert.equal(r.status, status, `${domain}: ${r.reply}`);
      assert.equal(r.remoteReply, false);
      // A look-up that did not answer clearly says what happened, never "not found".
      if (kind === 'deferred') assert.doesNotMatch(r.reply, /not found/i, `${domain}: ${r.reply}`);
    }
  }
});

test('connection refused -> deferred 4.4.1 for every recipient, local error text', async (t) => {
  const port = await closedPort();
  const a = agent();
  t.after(() => a.close());
  const job = makeJob(rcpts(3), fixedHop(port));
  const c = collect(job);
  await a.deliver(job, c.report);
  assert.equal(c.count('deferred'), 3);
  const r = c.byAddress.get('u1@example.net')!;
  assert.equal(r.status, '4.4.1');
  assert.equal(r.remoteReply, false);
  // Said once, in words: not "ECONNREFUSED connect ECONNREFUSED 127.0.0.1:PORT".
  assert.equal(r.reply, `connect to 127.0.0.1[127.0.0.1]:${port}: Connection refused`);
});

test('black-holed port (connect never completes) -> deferred 4.4.1 after connect_timeout', async (t) => {
  const hole = await startBlackHole();
  t.after(() => hole.close());
  const a = agent({ timeouts: { ...FAST, connect: 400 } });
  t.after(() => a.close());
  const job = makeJob(rcpts(2), fixedHop(hole.port));
  const c = collect(job);
  const started = Date.now();
  await a.deliver(job, c.report);
  const took = Date.now() - started;
  assert.equal(c.count('deferred'), 2);
  assert.equal(c.byAddress.get('u1@example.net')!.status, '4.4.1');
  assert.match(c.byAddress.get('u1@example.net')!.reply, /timed out/);
  assert.ok(took >= 350 && took < 3000, `took ${took} ms`);
});

test('a peer that accepts and never greets -> deferred 4.4.2 after the greeting timeout', async (t) => {
  const { a, peer } = await setup(t, { silent: true }, { timeouts: { ...FAST, greeting: 300 } });
  const job = makeJob(rcpts(2), fixedHop(peer.port));
  const c = collect(job);
  await a.deliver(job, c.report);
  assert.equal(c.count('deferred'), 2);
  assert.equal(c.byAddress.get('u1@example.net')!.status, '4.4.2');
  assert.match(c.byAddress.get('u1@example.net')!.reply, /timed out in greeting/);
});

test('a slow peer within the timeouts still delivers', async (t) => {
  const { a, peer } = await setup(t, { delayMs: 30 });
  const job = makeJob(rcpts(5), fixedHop(peer.port));
  const c = collect(job);
  await a.deliver(job, c.report);
  assert.equal(c.count('delivered'), 5);
});

test('421 at greeting -> deferred with the remote reply', async (t) => {
  const { a, peer } = await setup(t, { greeting: '421 4.7.0 Too many connections' });
  const job = makeJob(rcpts(2), fixedHop(peer.port));
  const c = collect(job);
  await a.deliver(job, c.report);
  const r = c.byAddress.get('u2@example.net')!;
  assert.equal(r.kind, 'deferred');
  assert.equal(r.status, '4.7.0');
  assert.equal(r.reply, '421 4.7.0 Too many connections');
  assert.equal(r.remoteReply, true);
});

test('connection dropped mid-DATA -> deferred (no possible duplicate); the next attempt delivers, nothing lost', async (t) => {
  const { a, peer } = await setup(t, { drop: 'mid-data', dropTimes: 1 });
  // 20 MB streamed: the client is still writing when the peer drops.
  const big = (): Readable =>
    Readable.from(
      (function* () {
        const line = Buffer.from('x'.repeat(78) + '\r\n');
        const block = Buffer.concat(Array(800).fill(line));
        for (let i = 0; i < 320; i++) yield block;
      })(),
    );
  const addresses = rcpts(4);
  const job = makeJob(addresses, fixedHop(peer.port), { body: big, size: 20 * 1024 * 1024 });
  const c1 = collect(job);
  await a.deliver(job, c1.report);
  assert.equal(c1.count('deferred'), 4);
  for (const r of c1.byAddress.values()) {
    assert.equal(r.possibleDuplicate, undefined);
    assert.equal(r.status, '4.4.2');
  }
  assert.equal(peer.delivered().length, 0);
  const c2 = collect(job);
  await a.deliver(job, c2.report);
  assert.equal(c2.count('delivered'), 4);
  assert.deepEqual(peer.delivered(), addresses);
  assert.equal(peer.transactions.at(-1)!.body.length, 320 * 800 * 80);
});

test('connection dropped after RCPT -> deferred, remoteReply false', async (t) => {
  const { a, peer } = await setup(t, { drop: 'rcpt' });
  const job = makeJob(rcpts(3), fixedHop(peer.port));
  const c = collect(job);
  await a.deliver(job, c.report);
  assert.equal(c.count('deferred'), 3);
  assert.equal(c.byAddress.get('u3@example.net')!.remoteReply, false);
  assert.equal(peer.delivered().length, 0);
});

test('connection lost after the final dot with no reply -> deferred with possibleDuplicate', async (t) => {
  const { a, peer } = await setup(t, { drop: 'dot' });
  const job = makeJob(rcpts(2), fixedHop(peer.port));
  const c = collect(job);
  await a.deliver(job, c.report);
  for (const r of c.byAddress.values()) {
    assert.equal(r.kind, 'deferred');
    assert.equal(r.possibleDuplicate, true);
    assert.match(r.reply, /may have been delivered/);
  }
  assert.equal(peer.transactions.length, 1);
  assert.ok(peer.transactions[0]!.raw.length > 0, 'the peer got the whole message');
});

test('STARTTLS offered -> used (opportunistic, self-signed certificate accepted)', async (t) => {
  const { a, peer } = await setup(t, { starttls: true });
  const job = makeJob(rcpts(2), fixedHop(peer.port));
  const c = collect(job);
  await a.deliver(job, c.report);
  assert.equal(c.count('delivered'), 2);
  assert.equal(peer.connections[0]!.tls, true);
  assert.equal(peer.connections[0]!.commands.filter((l) => l.startsWith('EHLO')).length, 2, 'EHLO again after TLS');
});

test('TLS handshake failure: required -> deferred 4.7.5; opportunistic -> delivered in plain text on a new connection', async (t) => {
  const { a, peer } = await setup(t, { starttls: true, tlsBroken: true });
  const job = makeJob(rcpts(2), fixedHop(peer.port, '127.0.0.1', 'required'));
  const c = collect(job);
  await a.deliver(job, c.report);
  assert.equal(c.count('deferred'), 2);
  assert.equal(c.byAddress.get('u1@example.net')!.status, '4.7.5');
  assert.equal(peer.transactions.length, 0);

  const job2 = makeJob(rcpts(2), fixedHop(peer.port));
  const c2 = collect(job2);
  await a.deliver(job2, c2.report);
  assert.equal(c2.count('delivered'), 2);
  assert.equal(peer.transactions.length, 1);
  assert.equal(peer.connections.at(-1)!.tls, false);
});

test('TLS required but STARTTLS not offered -> deferred 4.7.4, no MAIL sent', async (t) => {
  const { a, peer } = await setup(t, { starttls: false });
  const job = makeJob(rcpts(1), fixedHop(peer.port, '127.0.0.1', 'required'));
  const c = collect(job);
  await a.deliver(job, c.report);
  assert.equal(c.byAddress.get('u1@example.net')!.status, '4.7.4');
  assert.equal(c.byAddress.get('u1@example.net')!.kind, 'deferred');
  assert.ok(!peer.connections[0]!.commands.some((l) => l.startsWith('MAIL')));
});

test('SMTPUTF8 message to a peer without SMTPUTF8 -> failed 5.6.7, nothing sent; with SMTPUTF8 offered -> MAIL carries it', async (t) => {
  const { a, peer } = await setup(t, { smtputf8: false });
  const job = makeJob(['ünï@example.net', 'plain@example.net'], fixedHop(peer.port), { smtputf8: true });
  const c = collect(job);
  await a.deliver(job, c.report);
  assert.equal(c.count('failed'), 2);
  assert.equal(c.byAddress.get('plain@example.net')!.status, '5.6.7');
  assert.equal(peer.transactions.length, 0);

  // Not flagged SMTPUTF8, but one recipient address needs it: only that one fails.
  const job2 = makeJob(['ünï@example.net', 'plain@example.net'], fixedHop(peer.port));
  const c2 = collect(job2);
  await a.deliver(job2, c2.report);
  assert.equal(c2.byAddress.get('ünï@example.net')!.status, '5.6.7');
  assert.equal(c2.byAddress.get('plain@example.net')!.kind, 'delivered');

  const utf = await startPeer({ smtputf8: true });
  t.after(() => utf.close());
  const job3 = makeJob(['ünï@example.net'], fixedHop(utf.port), { smtputf8: true, sender: 'sëndér@example.org' });
  const c3 = collect(job3);
  await a.deliver(job3, c3.report);
  assert.equal(c3.count('delivered'), 1);
  assert.ok(utf.transactions[0]!.mailParams.includes('SMTPUTF8'));
  assert.equal(utf.transactions[0]!.sender, 'sëndér@example.org');
  assert.deepEqual(utf.transactions[0]!.accepted, ['ünï@example.net']);
});

test('DSN parameters, SIZE and BODY=8BITMIME are passed on only when offered', async (t) => {
  const dsnPeer = await startPeer({ dsn: true, size: 1_000_000, eightBitMime: true });
  const plainPeer = await startPeer({ dsn: false, eightBitMime: false });
  const a = agent();
  t.after(async () => {
    await a.close();
    await dsnPeer.close();
    await plainPeer.close();
  });
  const opts = { envid: 'env+id=1', ret: 'HDRS' as const, notify: 'SUCCESS,FAILURE', orcpt: (x: string) => `rfc822;${x}`, eightBit: true };
  const j1 = makeJob(['a+b@example.net'], fixedHop(dsnPeer.port), opts);
  const c1 = collect(j1);
  await a.deliver(j1, c1.report);
  assert.equal(c1.count('delivered'), 1);
  assert.equal(c1.byAddress.get('a+b@example.net')!.relayed, undefined);
  const tx = dsnPeer.transactions[0]!;
  assert.deepEqual(tx.mailParams, [`SIZE=${j1.message.size}`, 'BODY=8BITMIME', 'RET=HDRS', 'ENVID=env+2Bid+3D1']);
  assert.deepEqual(tx.rcpts[0]!.params, ['NOTIFY=SUCCESS,FAILURE', 'ORCPT=rfc822;a+2Bb@example.net']);

  const j2 = makeJob(['a+b@example.net'], fixedHop(plainPeer.port), opts);
  const c2 = collect(j2);
  await a.deliver(j2, c2.report);
  // 8-bit message to a peer without 8BITMIME: sent anyway, unconverted (as Postfix does).
  assert.equal(c2.count('delivered'), 1);
  assert.equal(c2.byAddress.get('a+b@example.net')!.relayed, true, 'no DSN at the next hop: relayed');
  assert.deepEqual(plainPeer.transactions[0]!.mailParams, []);
  assert.deepEqual(plainPeer.transactions[0]!.rcpts[0]!.params, []);
});

test('message larger than the peer\'s SIZE -> failed 5.3.4 without a transaction', async (t) => {
  const { a, peer } = await setup(t, { size: 100 });
  const job = makeJob(rcpts(2), fixedHop(peer.port), { size: 5000 });
  const c = collect(job);
  await a.deliver(job, c.report);
  assert.equal(c.count('failed'), 2);
  assert.equal(c.byAddress.get('u1@example.net')!.status, '5.3.4');
  assert.equal(peer.transactions.length, 0);
});

test('MAIL refused: 550 fails every recipient, 451 defers every recipient', async (t) => {
  const p550 = await startPeer({ mailReply: () => '550 5.7.1 Sender rejected' });
  const p451 = await startPeer({ mailReply: () => '451 4.3.0 Try later' });
  const a = agent({ maxRecipientsPerTransaction: 2 });
  t.after(async () => {
    await a.close();
    await p550.close();
    await p451.close();
  });
  const j1 = makeJob(rcpts(5), fixedHop(p550.port));
  const c1 = collect(j1);
  await a.deliver(j1, c1.report);
  assert.equal(c1.count('failed'), 5);
  assert.equal(c1.byAddress.get('u5@example.net')!.reply, '550 5.7.1 Sender rejected');
  const j2 = makeJob(rcpts(5), fixedHop(p451.port));
  const c2 = collect(j2);
  await a.deliver(j2, c2.report);
  assert.equal(c2.count('deferred'), 5);
});

test('DATA refused with 554 -> accepted recipients failed; final 451 -> deferred; refused RCPTs keep their own result', async (t) => {
  const p554 = await startPeer({ dataReply: '554 5.7.0 No thanks', rcptReply: (x) => (x.startsWith('u2@') ? '550 5.1.1 Unknown' : undefined) });
  const p451 = await startPeer({ finalReply: () => '451 4.3.0 Queue trouble' });
  const a = agent();
  t.after(async () => {
    await a.close();
    await p554.close();
    await p451.close();
  });
  const j1 = makeJob(rcpts(3), fixedHop(p554.port));
  const c1 = collect(j1);
  await a.deliver(j1, c1.report);
  assert.equal(c1.byAddress.get('u1@example.net')!.reply, '554 5.7.0 No thanks');
  assert.equal(c1.byAddress.get('u2@example.net')!.reply, '550 5.1.1 Unknown');
  assert.equal(c1.count('failed'), 3);
  const j2 = makeJob(rcpts(3), fixedHop(p451.port));
  const c2 = collect(j2);
  await a.deliver(j2, c2.report);
  assert.equal(c2.count('deferred'), 3);
  assert.equal(c2.byAddress.get('u3@example.net')!.status, '4.3.0');
});

test('every RCPT refused with pipelined DATA answered 354 anyway: a lone dot ends it, nothing delivered', async (t) => {
  const { a, peer } = await setup(t, { dataAlways354: true, rcptReply: () => '550 5.1.1 Unknown' });
  const job = makeJob(rcpts(2), fixedHop(peer.port));
  const c = collect(job);
  await a.deliver(job, c.report);
  assert.equal(c.count('failed'), 2);
  assert.equal(peer.transactions[0]!.raw.toString(), '.\r\n');
  // The connection stayed in step: a second message on it is delivered.
  const job2 = makeJob(['ok@example.net'], fixedHop(peer.port));
  peer.options.rcptReply = undefined;
  const c2 = collect(job2);
  await a.deliver(job2, c2.report);
  assert.equal(c2.count('delivered'), 1);
  assert.equal(peer.connections.length, 1);
});

test('dot-stuffing byte for byte on the wire; a stored long line goes out as stored (enqueue wraps, dkim/line-wrap)', async (t) => {
  const { a, peer } = await setup(t, {});
  const long = 'L'.repeat(2500);
  const body = `Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\n${long}\r\nend without newline`;
  const job = makeJob(['x@example.net'], fixedHop(peer.port), { body });
  const c = collect(job);
  await a.deliver(job, c.report);
  assert.equal(c.count('delivered'), 1);
  const expected =
    `Subject: dots\r\n\r\n..leading dot\r\n...two dots\r\n..\r\n` +
    `${long}\r\nend without newline\r\n.\r\n`;
  assert.equal(peer.transactions[0]!.raw.toString('latin1'), expected);
});

test('stored body unreadable: at open -> all deferred 4.3.0 then BodyUnreadable; mid-DATA -> connection dropped, never a truncated delivery', async (t) => {
  const { a, peer } = await setup(t, {});
  const job = makeJob(rcpts(2), fixedHop(peer.port));
  job.openBody = async () => {
    throw new Error('ENOENT: spool file missing');
  };
  const c = collect(job);
  await assert.rejects(a.deliver(job, c.report), (e: Error) => e.name === 'BodyUnreadable');
  assert.equal(c.count('deferred'), 2);
  assert.equal(c.byAddress.get('u1@example.net')!.status, '4.3.0');
  assert.equal(c.byAddress.get('u1@example.net')!.remoteReply, false);

  const broken = (): Readable => {
    let reads = 0;
    return new Readable({
      read() {
        if (reads++ === 0) this.push(Buffer.from('Subject: half\r\n\r\nfirst part\r\n'));
        else setImmediate(() => this.destroy(new Error('EIO: read error')));
      },
    });
  };
  const job2 = makeJob(rcpts(2), fixedHop(peer.port), { body: broken });
  const c2 = collect(job2);
  await assert.rejects(a.deliver(job2, c2.report), (e: Error) => e.name === 'BodyUnreadable');
  assert.equal(c2.count('deferred'), 2);
  assert.equal(peer.delivered().length, 0, 'nothing delivered from a broken body');
  assert.equal(peer.transactions.filter((tx) => tx.completed).length, 0);
});

test('421 to a RCPT: that recipient deferred, the connection is not used again', async (t) => {
  const { a, peer } = await setup(t, { rcptReply: (x) => (x.startsWith('u2@') ? '421 4.3.2 Shutting down' : undefined) });
  const job = makeJob(rcpts(3), fixedHop(peer.port));
  const c = collect(job);
  await a.deliver(job, c.report);
  assert.equal(c.byAddress.get('u2@example.net')!.kind, 'deferred');
  assert.equal(c.byAddress.get('u2@example.net')!.reply, '421 4.3.2 Shutting down');
  assert.equal(c.byAddress.get('u1@example.net')!.kind, 'delivered');
  assert.equal(c.byAddress.get('u3@example.net')!.kind, 'delivered');
  const job2 = makeJob(['next@example.net'], fixedHop(peer.port));
  const c2 = collect(job2);
  await a.deliver(job2, c2.report);
  assert.equal(c2.count('delivered'), 1);
  assert.equal(peer.connections.length, 2, 'a new connection after the 421');
});

test('421 between transactions while re-sending 452s: the rest go on a new connection in the same attempt', async (t) => {
  const { a, peer } = await setup(t, {
    rcptLimit: { after: 2, reply: '452 4.5.3 Too many recipients' },
    rsetReply: (conn) => (conn === 1 ? '421 4.3.2 Going down' : undefined),
  });
  const job = makeJob(rcpts(5), fixedHop(peer.port));
  const c = collect(job);
  await a.deliver(job, c.report);
  assert.equal(c.count('delivered'), 5, [...c.byAddress.values()].map((r) => r.reply).join('; '));
  assert.equal(peer.connections.length, 2);
  assert.deepEqual(peer.delivered(), rcpts(5));
  const completed = (conn: number): number => peer.transactions.filter((x) => x.connection === conn && x.completed).length;
  assert.deepEqual([completed(1), completed(2)], [1, 2]);
});
