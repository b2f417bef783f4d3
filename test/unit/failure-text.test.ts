// failure-text: a failed connection or DNS look-up is said once and says what
// happened - "connect to 127.0.0.1[127.0.0.1]:PORT: Connection refused", not
// the code and Node's message repeating it; a DNS time-out or SERVFAIL is a
// temporary 4.4.3 that says "timed out"/"SERVFAIL", never "not found" (only
// NXDOMAIN is "not found", and it alone fails the recipient).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closedPort } from '../helpers/petrel-harness.js';
import { ClientError, SmtpClient } from '../../src/delivery/smtp/client.js';
import { lookupFailure, socketFailure } from '../../src/delivery/smtp/failure-text.js';
import { LookupError, MxResolver } from '../../src/delivery/smtp/mx.js';
import { startDnsServer } from '../helpers/dns-server.js';

test('connection refused: said once, in words, with no errno code or repeated address', async () => {
  const port = await closedPort();
  const c = new SmtpClient({ host: '127.0.0.1', port, heloName: 'petrel.test', tls: 'none' });
  const e = await c.connect().then(
    () => assert.fail('connected to a closed port'),
    (x: unknown) => x,
  );
  assert.ok(e instanceof ClientError);
  assert.equal(e.status, '4.4.1');
  assert.equal(e.message, `connect to 127.0.0.1[127.0.0.1]:${port}: Connection refused`);
});

test('socketFailure: system errors in the system\'s words; an unlisted one is its code; others keep their message', () => {
  const sys = (code: string): NodeJS.ErrnoException => Object.assign(new Error(`connect ${code} 192.0.2.1:25`), { code, syscall: 'connect' });
  assert.equal(socketFailure(sys('ECONNREFUSED')), 'Connection refused');
  assert.equal(socketFailure(sys('ECONNRESET')), 'Connection reset by peer');
  assert.equal(socketFailure(sys('EHOSTUNREACH')), 'No route to host');
  assert.equal(socketFailure(sys('ENETUNREACH')), 'Network is unreachable');
  assert.equal(socketFailure(sys('ETIMEDOUT')), 'Connection timed out');
  assert.equal(socketFailure(sys('EWHATEVER')), 'EWHATEVER', 'unknown system error: the code, once');
  const tls = Object.assign(new Error('wrong version number'), { code: 'ERR_SSL_WRONG_VERSION_NUMBER' });
  assert.equal(socketFailure(tls), 'wrong version number', 'not a system error: its message stays');
  assert.equal(socketFailure(new Error('odd')), 'odd');
});

test('lookupFailure: what happened, with the resolver codes once each', () => {
  assert.equal(lookupFailure('MX look-up for d1.example', ['ETIMEOUT']), 'MX look-up for d1.example timed out (ETIMEOUT)');
  assert.equal(lookupFailure('MX look-up for d1.example', ['ESERVFAIL']), 'MX look-up for d1.example failed: the DNS server answered SERVFAIL (ESERVFAIL)');
  assert.equal(lookupFailure('MX look-up for d1.example', ['EREFUSED']), 'MX look-up for d1.example was refused by the DNS server (EREFUSED)');
  assert.equal(lookupFailure('address look-up for mx.d1.example', ['ETIMEOUT', 'ETIMEOUT']), 'address look-up for mx.d1.example timed out (ETIMEOUT)');
  assert.equal(lookupFailure('address look-up for mx.d1.example', ['ETIMEOUT', 'ENODATA']), 'address look-up for mx.d1.example timed out (ETIMEOUT, ENODATA)');
  assert.equal(lookupFailure('MX look-up for d1.example', ['EODD']), 'MX look-up for d1.example failed (EODD)');
  assert.equal(lookupFailure('MX look-up for d1.example', []), 'MX look-up for d1.example failed');
  for (const code of ['ETIMEOUT', 'ESERVFAIL', 'EREFUSED', 'ECONNREFUSED', 'EAI_AGAIN']) {
    assert.doesNotMatch(lookupFailure('MX look-up for d1.example', [code]), /not found/i, code);
  }
});

test('MX resolver: a DNS time-out and a SERVFAIL are temporary 4.4.3 and say what happened; only NXDOMAIN is "not found"', async (t) => {
  const dns = await startDnsServer({
    'd1.example': 'SILENT',
    'sf.example': 'SERVFAIL',
    'mx.ok.example': 'SILENT',
  });
  t.after(() => dns.close());
  const resolver = new MxResolver({ servers: [dns.address], timeoutMs: 100, tries: 1 });
  const failure = (p: Promise<unknown>): Promise<LookupError> =>
    p.then(
      () => assert.fail('the look-up succeeded'),
      (e: unknown) => {
        assert.ok(e instanceof LookupError, String(e));
        return e;
      },
    );

  const timedOut = await failure(resolver.hosts('d1.example'));
  assert.equal(timedOut.permanent, false);
  assert.equal(timedOut.status, '4.4.3');
  assert.equal(timedOut.message, 'MX look-up for d1.example timed out (ETIMEOUT)');

  const servfail = await failure(resolver.hosts('sf.example'));
  assert.equal(servfail.permanent, false);
  assert.equal(servfail.status, '4.4.3');
  assert.equal(servfail.message, 'MX look-up for sf.example failed: the DNS server answered SERVFAIL (ESERVFAIL)');

  const addresses = await failure(resolver.addresses('mx.ok.example'));
  assert.equal(addresses.permanent, false);
  assert.equal(addresses.message, 'address look-up for mx.ok.example timed out (ETIMEOUT)');

  const nx = await failure(resolver.hosts('nx.example'));
  assert.equal(nx.permanent, true);
  assert.equal(nx.status, '5.1.2');
  assert.match(nx.message, /^Host or domain name not found: nx\.example/);
});
