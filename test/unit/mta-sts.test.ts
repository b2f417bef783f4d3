// MTA-STS (RFC 8461, issue 14): the TXT record and policy parsers, mx
// matching (§4.1), and the resolver against a loopback HTTPS policy server
// (test CA) and the loopback DNS server: modes parsed, bad policies refused,
// a wrong certificate is sts-webpki-invalid, a new TXT id refetches, max_age
// expires, the cache is bounded, and a cached policy outlives a dead server.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { MtaStsResolver, mxAllowed, parsePolicy, parseStsTxt, type MtaStsPolicy } from '../../src/delivery/tls/mta-sts.js';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.js';
import { cleanup, tempDir } from '../helpers/petrel-harness.js';
import { makeTestCa, selfSigned } from '../helpers/test-ca.js';

const policy = (mx: string[]): MtaStsPolicy => ({ mode: 'enforce', mx, maxAge: 86400, id: '1' });

test('mxAllowed: exact names, and *. matching exactly one left-most label', () => {
  const p = policy(['mx1.example.com', '*.mail.example.net']);
  assert.equal(mxAllowed(p, 'mx1.example.com'), true);
  assert.equal(mxAllowed(p, 'MX1.Example.COM.'), true);
  assert.equal(mxAllowed(p, 'mx2.example.com'), false);
  assert.equal(mxAllowed(p, 'a.mail.example.net'), true);
  assert.equal(mxAllowed(p, 'a.b.mail.example.net'), false);
  assert.equal(mxAllowed(p, 'mail.example.net'), false);
  assert.equal(mxAllowed(p, 'xmail.example.net'), false);
});

test('parseStsTxt: one v=STSv1 record with an id; several or malformed ones are no policy', () => {
  assert.deepEqual(parseStsTxt(['v=STSv1; id=20261203T1;']), { id: '20261203T1' });
  assert.deepEqual(parseStsTxt(['v=spf1 -all', 'v=STSv1;id=abc']), { id: 'abc' });
  assert.equal(parseStsTxt(['v=spf1 -all']), null);
  assert.ok('error' in parseStsTxt(['v=STSv1; id=a', 'v=STSv1; id=b'])!);
  assert.ok('error' in parseStsTxt(['v=STSv1; id=has-hyphen'])!);
  assert.ok('error' in parseStsTxt(['v=STSv1;'])!);
  assert.ok('error' in parseStsTxt(['v=STSv1; id=' + 'a'.repeat(33)])!);
});

test('parsePolicy: modes, mx lines, CRLF, unknown keys; refuses what §3.2 does not allow', () => {
  const ok = parsePolicy('version: STSv1\r\nmode: testing\r\nmx: MX1.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\nextension: x\r\n', 'i1');
  assert.deepEqual(ok, { policy: { mode: 'testing', mx: ['mx1.example.com', '*.example.net'], maxAge: 604800, id: 'i1' } });
  assert.deepEqual(parsePolicy('version: STSv1\nmode: none\nmax_age: 0\n', 'i'), { policy: { mode: 'none', mx: [], maxAge: 0, id: 'i' } });
  for (const bad of [
    'version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n',
    'version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n',
    'version: STSv1\nmode: enforce\nmax_age: 1\n',
    'version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n',
    'version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n',
    'version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 1\n',
    'version: STSv1\nmode: enforce\nmx: a.example\n',
    '<html>not a policy</html>',
  ]) assert.ok('error' in parsePolicy(bad, 'i'), bad);
});

// The resolver against real sockets.
let dns: DnsServer;
let dir: string;
let caFile: string;
const servers: Server[] = [];
interface PolicySite {
  server: Server;
  port: number;
  hits: number;
  body: string;
  type: string;
  status: number;
}

async function site(address: string, cert: { cert: string; key: string }, body: string): Promise<PolicySite> {
  const s: PolicySite = { server: null as unknown as Server, port: 0, hits: 0, body, type: 'text/plain; charset=utf-8', status: 200 };
  s.server = createServer({ cert: cert.cert, key: cert.key }, (req, res) => {
    s.hits++;
    if (req.url !== '/.well-known/mta-sts.txt') {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(s.status, { 'Content-Type': s.type, ...(s.status === 302 ? { Location: 'https://elsewhere.example/' } : {}) });
    res.end(s.body);
  });
  await new Promise<void>((r) => s.server.listen(0, address, () => r()));
  s.port = (s.server.address() as AddressInfo).port;
  servers.push(s.server);
  return s;
}

const POLICY = (mode: string, age = 86400) => `version: STSv1\nmode: ${mode}\nmx: mx1.example.com\nmx: *.mx.example.com\nmax_age: ${age}\n`;
let ca: Awaited<ReturnType<typeof makeTestCa>>;

before(async () => {
  dir = tempDir('petrel-mta-sts-');
  ca = await makeTestCa();
  caFile = join(dir, 'ca.pem');
  writeFileSync(caFile, ca.cert);
  dns = await startDnsServer({});
});

after(async () => {
  for (const s of servers) {
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
  await dns.close();
  cleanup(dir);
});

/** A domain with a TXT record and a policy site on its own loopback address. */
async function domainWithPolicy(domain: string, address: string, body: string, id = '1'): Promise<PolicySite> {
  const s = await site(address, await ca.issue(`mta-sts.${domain}`), body);
  dns.table[`_mta-sts.${domain}`] = { TXT: [`v=STSv1; id=${id}`] };
  dns.table[`mta-sts.${domain}`] = { A: [address] };
  return s;
}

// failureRetryMs 0: these tests change the site between calls and want each call to fetch.
const resolverFor = (s: PolicySite, extra: { maxEntries?: number; failureRetryMs?: number } = {}) => new MtaStsResolver({ dnsServers: [dns.address], caFile, timeoutMs: 3000, httpsPort: s.port, failureRetryMs: 0, ...extra });

test('enforce, testing and none policies are fetched over verified HTTPS and parsed', async () => {
  for (const [i, mode] of (['enforce', 'testing', 'none'] as const).entries()) {
    const domain = `${mode}.example`;
    const s = await domainWithPolicy(domain, `127.0.14.${10 + i}`, POLICY(mode));
    const r = await resolverFor(s).policyFor(domain);
    assert.equal(r.failure, undefined, JSON.stringify(r.failure));
    assert.deepEqual(r.policy, { mode, mx: ['mx1.example.com', '*.mx.example.com'], maxAge: 86400, id: '1' });
    assert.equal(mxAllowed(r.policy!, 'a.mx.example.com'), true);
  }
});

test('no TXT record: no policy and no failure, and no fetch', async () => {
  const s = await site('127.0.14.20', await ca.issue('mta-sts.none-here.example'), POLICY('enforce'));
  dns.table['mta-sts.none-here.example'] = { A: ['127.0.14.20'] };
  const r = await resolverFor(s).policyFor('none-here.example');
  assert.deepEqual(r, { policy: null });
  assert.equal(s.hits, 0);
});

test('a bad policy file, a wrong Content-Type and a redirect are refused with the right failure type', async () => {
  const s = await domainWithPolicy('bad.example', '127.0.14.21', 'version: STSv1\nmode: enforce\nmax_age: 10\n');
  const resolver = resolverFor(s);
  let r = await resolver.policyFor('bad.example');
  assert.equal(r.policy, null);
  assert.equal(r.failure?.type, 'sts-policy-invalid');
  assert.equal(r.failure?.policy, 'sts');
  assert.equal(r.failure?.policyDomain, 'bad.example');
  assert.match(r.failure!.detail, /mx/);
  s.body = POLICY('enforce');
  s.type = 'text/html';
  r = await resolver.policyFor('bad.example');
  assert.equal(r.failure?.type, 'sts-policy-invalid');
  s.type = 'text/plain';
  s.status = 302;
  r = await resolver.policyFor('bad.example');
  assert.equal(r.failure?.type, 'sts-policy-fetch-error');
  assert.match(r.failure!.detail, /redirect/);
  s.status = 200;
  s.body = POLICY('enforce') + 'x'.repeat(70 * 1024);
  r = await resolver.policyFor('bad.example');
  assert.equal(r.failure?.type, 'sts-policy-invalid');
  assert.match(r.failure!.detail, /larger/);
});

test('a certificate for another name, or not from a trusted CA, is sts-webpki-invalid', async () => {
  const wrong = await site('127.0.14.22', await ca.issue('mta-sts.other.example'), POLICY('enforce'));
  dns.table['_mta-sts.wrongname.example'] = { TXT: ['v=STSv1; id=1'] };
  dns.table['mta-sts.wrongname.example'] = { A: ['127.0.14.22'] };
  let r = await resolverFor(wrong).policyFor('wrongname.example');
  assert.equal(r.policy, null);
  assert.equal(r.failure?.type, 'sts-webpki-invalid');

  const untrusted = await site('127.0.14.23', await selfSigned('mta-sts.untrusted.example'), POLICY('enforce'));
  dns.table['_mta-sts.untrusted.example'] = { TXT: ['v=STSv1; id=1'] };
  dns.table['mta-sts.untrusted.example'] = { A: ['127.0.14.23'] };
  r = await resolverFor(untrusted).policyFor('untrusted.example');
  assert.equal(r.failure?.type, 'sts-webpki-invalid');
  // Without the test CA as an anchor even the right certificate is not trusted.
  const good = await domainWithPolicy('noanchor.example', '127.0.14.24', POLICY('enforce'));
  r = await new MtaStsResolver({ dnsServers: [dns.address], timeoutMs: 3000, httpsPort: good.port }).policyFor('noanchor.example');
  assert.equal(r.failure?.type, 'sts-webpki-invalid');
});

test('cached while the TXT id is the same; a new id refetches; a dead server keeps the cached policy', async () => {
  const s = await domainWithPolicy('cache.example', '127.0.14.25', POLICY('testing'), 'a1');
  const resolver = resolverFor(s);
  assert.equal((await resolver.policyFor('cache.example')).policy?.mode, 'testing');
  assert.equal((await resolver.policyFor('cache.example')).policy?.mode, 'testing');
  assert.equal(s.hits, 1);
  s.body = POLICY('enforce');
  dns.table['_mta-sts.cache.example'] = { TXT: ['v=STSv1; id=a2'] };
  const r = await resolver.policyFor('cache.example');
  assert.equal(s.hits, 2);
  assert.deepEqual([r.policy?.mode, r.policy?.id], ['enforce', 'a2']);
  // The server goes away and the id changes again: the cached policy stays in use (§5.1).
  s.server.closeAllConnections();
  await new Promise<void>((res) => s.server.close(() => res()));
  dns.table['_mta-sts.cache.example'] = { TXT: ['v=STSv1; id=a3'] };
  const kept = await resolver.policyFor('cache.example');
  assert.equal(kept.failure, undefined);
  assert.deepEqual([kept.policy?.mode, kept.policy?.id], ['enforce', 'a2']);
  // The TXT record disappears: the unexpired policy still applies.
  delete dns.table['_mta-sts.cache.example'];
  assert.equal((await resolver.policyFor('cache.example')).policy?.id, 'a2');
  // A fresh resolver (nothing cached) gets the fetch error.
  dns.table['_mta-sts.cache.example'] = { TXT: ['v=STSv1; id=a3'] };
  const fresh = await resolverFor(s).policyFor('cache.example');
  assert.equal(fresh.policy, null);
  assert.equal(fresh.failure?.type, 'sts-policy-fetch-error');
});

test('max_age expiry: a policy is not used after max_age (0: never cached)', async () => {
  const s = await domainWithPolicy('expiry.example', '127.0.14.26', POLICY('enforce', 0));
  const resolver = resolverFor(s);
  assert.equal((await resolver.policyFor('expiry.example')).policy?.maxAge, 0);
  assert.equal((await resolver.policyFor('expiry.example')).policy?.maxAge, 0);
  assert.equal(s.hits, 2, 'max_age 0: fetched each time');
  // Expired and the server is down: no policy is used any more.
  s.body = POLICY('enforce', 1);
  await resolver.policyFor('expiry.example');
  assert.equal(s.hits, 3);
  s.server.closeAllConnections();
  await new Promise<void>((res) => s.server.close(() => res()));
  const realNow = Date.now;
  Date.now = () => realNow() + 2000;
  try {
    const r = await resolver.policyFor('expiry.example');
    assert.equal(r.policy, null);
    assert.equal(r.failure?.type, 'sts-policy-fetch-error');
  } finally {
    Date.now = realNow;
  }
});

test('the cache holds at most maxEntries domains, least recently used dropped first', async () => {
  const sites: PolicySite[] = [];
  // One policy site serves three domains (its certificate names all three).
  const leaf = await generateMulti(['mta-sts.c1.example', 'mta-sts.c2.example', 'mta-sts.c3.example']);
  const s = await site('127.0.14.27', leaf, POLICY('enforce'));
  sites.push(s);
  for (const d of ['c1', 'c2', 'c3']) {
    dns.table[`_mta-sts.${d}.example`] = { TXT: ['v=STSv1; id=1'] };
    dns.table[`mta-sts.${d}.example`] = { A: ['127.0.14.27'] };
  }
  const resolver = resolverFor(s, { maxEntries: 2 });
  await resolver.policyFor('c1.example');
  await resolver.policyFor('c2.example');
  await resolver.policyFor('c1.example'); // c1 is now the most recently used
  assert.equal(s.hits, 2);
  await resolver.policyFor('c3.example'); // drops c2
  assert.equal(s.hits, 3);
  await resolver.policyFor('c1.example');
  assert.equal(s.hits, 3, 'c1 still cached');
  await resolver.policyFor('c2.example');
  assert.equal(s.hits, 4, 'c2 was dropped and fetched again');
});

test('concurrent callers share one fetch', async () => {
  const s = await domainWithPolicy('shared.example', '127.0.14.28', POLICY('enforce'));
  const resolver = resolverFor(s);
  const all = await Promise.all([1, 2, 3, 4].map(() => resolver.policyFor('shared.example')));
  assert.ok(all.every((r) => r.policy?.mode === 'enforce'));
  assert.equal(s.hits, 1);
});

/** generateMulti - a CA-signed certificate naming several hosts (subjectAltName). */
async function generateMulti(names: string[]): Promise<{ cert: string; key: string }> {
  const { generate } = await import('selfsigned');
  const p = await generate([{ name: 'commonName', value: names[0]! }], {
    keyType: 'ec',
    algorithm: 'sha256',
    ca: { key: ca.key, cert: ca.cert },
    extensions: [{ name: 'subjectAltName', altNames: names.map((value) => ({ type: 2, value })) }],
  });
  return { cert: p.cert, key: p.private };
}

test('DNS trouble: TXT SERVFAIL with nothing cached is no policy; a policy host without an address is a fetch error', async () => {
  dns.table['_mta-sts.dnsfail.example'] = 'SERVFAIL';
  const r = new MtaStsResolver({ dnsServers: [dns.address], caFile, timeoutMs: 3000 });
  assert.deepEqual(await r.policyFor('dnsfail.example'), { policy: null });
  dns.table['_mta-sts.noaddr.example'] = { TXT: ['v=STSv1; id=1'] };
  dns.table['mta-sts.noaddr.example'] = 'NXDOMAIN';
  const na = await r.policyFor('noaddr.example');
  assert.equal(na.policy, null);
  assert.equal(na.failure?.type, 'sts-policy-fetch-error');
  assert.match(na.failure!.detail, /no A or AAAA/);
});

test('the default port 443 (tests run as root: a policy server on 127.0.14.50:443)', async (t) => {
  const srv = createServer(await ca.issue('mta-sts.port443.example'), (_req, res) => res.writeHead(200, { 'Content-Type': 'text/plain' }).end(POLICY('enforce')));
  try {
    await new Promise<void>((res, rej) => {
      srv.once('error', rej);
      srv.listen(443, '127.0.14.50', () => res());
    });
  } catch (e) {
    // Only where port 443 cannot be bound (not root): the other tests run the same code on a free port.
    t.skip(`cannot listen on 127.0.14.50:443: ${(e as Error).message}`);
    return;
  }
  servers.push(srv);
  dns.table['_mta-sts.port443.example'] = { TXT: ['v=STSv1; id=1'] };
  dns.table['mta-sts.port443.example'] = { A: ['127.0.14.50'] };
  const r = await new MtaStsResolver({ dnsServers: [dns.address], caFile, timeoutMs: 3000 }).policyFor('port443.example');
  assert.equal(r.failure, undefined, JSON.stringify(r.failure));
  assert.equal(r.policy?.mode, 'enforce');
});

test('a failed fetch is not repeated for the same TXT id within failureRetryMs; a new id is fetched at once', async () => {
  const s = await domainWithPolicy('flaky.example', '127.0.14.29', 'not a policy', 'f1');
  const resolver = resolverFor(s, { failureRetryMs: 60_000 });
  assert.equal((await resolver.policyFor('flaky.example')).failure?.type, 'sts-policy-invalid');
  s.body = POLICY('enforce');
  const again = await resolver.policyFor('flaky.example');
  assert.equal(again.failure?.type, 'sts-policy-invalid', 'the recent failure stands');
  assert.equal(s.hits, 1);
  const realNow = Date.now;
  Date.now = () => realNow() + 61_000;
  try {
    assert.equal((await resolver.policyFor('flaky.example')).policy?.mode, 'enforce');
    assert.equal(s.hits, 2);
  } finally {
    Date.now = realNow;
  }
  // A new id after a failure is fetched at once.
  const r2 = resolverFor(s, { failureRetryMs: 60_000 });
  s.body = 'broken';
  assert.equal((await r2.policyFor('flaky.example')).policy, null);
  s.body = POLICY('testing');
  dns.table['_mta-sts.flaky.example'] = { TXT: ['v=STSv1; id=f2'] };
  assert.equal((await r2.policyFor('flaky.example')).policy?.mode, 'testing');
  assert.equal(s.hits, 4);
});
