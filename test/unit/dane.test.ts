/*
 * dane - delivery/tls/dane: which TLSA records match which certificate chains
 * (usages 2 and 3, selectors 0 and 1, matching types 0, 1 and 2, with
 * certificates made here by openssl), and what tlsaFor() makes of the
 * loopback DNS server's answers (AD set or not, NODATA, NXDOMAIN, SERVFAIL,
 * silence, garbage).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createTlsServer, connect as tlsConnect, type TLSSocket } from 'node:tls';
import { DaneResolver, daneMatches, peerChain, type TlsaRecord } from '../../src/delivery/tls/dane.js';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.js';

interface Made {
  der: Buffer;
  spki: Buffer;
}

/** made - DER and SPKI DER of a PEM certificate. */
function made(pem: string): Made {
  const c = new X509Certificate(pem);
  return { der: c.raw, spki: c.publicKey.export({ type: 'spki', format: 'der' }) };
}

let root: Made, inter: Made, leaf: Made, leafOfRoot: Made, other: Made;
/** PEM of the leaf's key and of its chain (leaf, intermediate), for a real TLS server. */
let leafKeyPem = '';
let chainPem = '';

before(() => {
  const dir = mkdtempSync(join(tmpdir(), 'petrel-dane-'));
  const ossl = (...args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  try {
    writeFileSync(join(dir, 'ca.ext'), 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n');
    ossl('req', '-x509', ...ec, '-days', '2', '-subj', '/CN=Test Root', '-keyout', 'root.key', '-out', 'root.pem');
    ossl('req', '-x509', ...ec, '-days', '2', '-subj', '/CN=Test Root', '-keyout', 'other.key', '-out', 'other.pem');
    ossl('req', ...ec, '-subj', '/CN=Test Intermediate', '-keyout', 'inter.key', '-out', 'inter.csr');
    ossl('x509', '-req', '-in', 'inter.csr', '-CA', 'root.pem', '-CAkey', 'root.key', '-set_serial', '2', '-days', '2', '-extfile', 'ca.ext', '-out', 'inter.pem');
    ossl('req', ...ec, '-subj', '/CN=mx.example', '-keyout', 'leaf.key', '-out', 'leaf.csr');
    ossl('x509', '-req', '-in', 'leaf.csr', '-CA', 'inter.pem', '-CAkey', 'inter.key', '-set_serial', '3', '-days', '2', '-out', 'leaf.pem');
    ossl('x509', '-req', '-in', 'leaf.csr', '-CA', 'root.pem', '-CAkey', 'root.key', '-set_serial', '4', '-days', '2', '-out', 'leaf2.pem');
    const read = (f: string): Made => made(readFileSync(join(dir, f), 'utf8'));
    root = read('root.pem');
    other = read('other.pem');
    inter = read('inter.pem');
    leaf = read('leaf.pem');
    leafOfRoot = read('leaf2.pem');
    leafKeyPem = readFileSync(join(dir, 'leaf.key'), 'utf8');
    chainPem = readFileSync(join(dir, 'leaf.pem'), 'utf8') + readFileSync(join(dir, 'inter.pem'), 'utf8');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const sha256 = (b: Buffer): Buffer => createHash('sha256').update(b).digest();
const sha512 = (b: Buffer): Buffer => createHash('sha512').update(b).digest();
const rec = (usage: number, selector: number, matchingType: number, data: Buffer): TlsaRecord => ({ usage, selector, matchingType, data });

/** data - the association data of (selector, matching type) for a certificate. */
function data(c: Made, selector: number, matchingType: number): Buffer {
  const octets = selector === 0 ? c.der : c.spki;
  return matchingType === 0 ? octets : matchingType === 1 ? sha256(octets) : sha512(octets);
}

test('DANE-EE (3) matches the leaf with every selector and matching type', () => {
  const chain = [leaf.der, inter.der, root.der];
  for (const s of [0, 1]) for (const m of [0, 1, 2]) assert.equal(daneMatches([rec(3, s, m, data(leaf, s, m))], chain), true, `3 ${s} ${m}`);
  // The leaf alone, with no chain, is enough for DANE-EE.
  assert.equal(daneMatches([rec(3, 1, 1, data(leaf, 1, 1))], [leaf.der]), true);
});

test('DANE-EE (3) does not match another certificate of the chain, nor another key', () => {
  const chain = [leaf.der, inter.der, root.der];
  assert.equal(daneMatches([rec(3, 1, 1, data(inter, 1, 1)), rec(3, 0, 1, data(root, 0, 1))], chain), false);
  assert.equal(daneMatches([rec(3, 1, 1, data(other, 1, 1))], chain), false);
});

test('DANE-TA (2) matches an issuer the leaf chains up to, at any depth, by certificate or key', () => {
  const chain = [leaf.der, inter.der, root.der];
  for (const s of [0, 1]) for (const m of [0, 1, 2]) {
    assert.equal(daneMatches([rec(2, s, m, data(root, s, m))], chain), true, `root 2 ${s} ${m}`);
    assert.equal(daneMatches([rec(2, s, m, data(inter, s, m))], chain), true, `intermediate 2 ${s} ${m}`);
  }
});

test('DANE-TA (2) does not match the leaf itself, nor a certificate the leaf does not chain to', () => {
  assert.equal(daneMatches([rec(2, 1, 1, data(leaf, 1, 1))], [leaf.der, inter.der]), false);
  // "other" has the same subject name as the root but a different key: the link does not verify.
  assert.equal(daneMatches([rec(2, 0, 1, data(other, 0, 1))], [leafOfRoot.der, other.der]), false);
  // The root, sent but not the issuer of the leaf's issuer (intermediate missing): the chain breaks.
  assert.equal(daneMatches([rec(2, 0, 1, data(root, 0, 1))], [leaf.der, root.der]), false);
});

test('DANE-TA "2 1 0": the anchor key itself, its certificate not sent', () => {
  assert.equal(daneMatches([rec(2, 1, 0, root.spki)], [leaf.der, inter.der]), true);
  assert.equal(daneMatches([rec(2, 1, 0, root.spki)], [leafOfRoot.der]), true);
  assert.equal(daneMatches([rec(2, 1, 0, other.spki)], [leafOfRoot.der]), false);
  assert.equal(daneMatches([rec(2, 1, 0, Buffer.from('not a key'))], [leafOfRoot.der]), false);
});

test('usages 0 and 1, unknown selectors and matching types, and wrong digest lengths are ignored', () => {
  const chain = [leaf.der, inter.der, root.der];
  assert.equal(daneMatches([rec(0, 0, 1, data(root, 0, 1)), rec(1, 1, 1, data(leaf, 1, 1))], chain), false);
  assert.equal(daneMatches([rec(3, 2, 1, data(leaf, 1, 1)), rec(3, 1, 3, data(leaf, 1, 1)), rec(3, 1, 255, data(leaf, 1, 0))], chain), false);
  assert.equal(daneMatches([rec(3, 1, 1, data(leaf, 1, 1).subarray(0, 20)), rec(3, 1, 2, data(leaf, 1, 1))], chain), false);
  // One usable record among unusable ones is enough.
  assert.equal(daneMatches([rec(1, 1, 1, data(leaf, 1, 1)), rec(3, 1, 1, data(leaf, 1, 1))], chain), true);
});

test('a chain that does not parse, or no chain at all, matches nothing and throws nothing', () => {
  assert.equal(daneMatches([rec(3, 0, 1, sha256(Buffer.from('junk')))], [Buffer.from('junk')]), false);
  assert.equal(daneMatches([rec(3, 1, 1, data(leaf, 1, 1))], []), false);
  assert.equal(daneMatches([rec(2, 0, 1, data(root, 0, 1))], [leaf.der, Buffer.from('junk'), root.der]), false);
  assert.equal(daneMatches([], [leaf.der]), false);
});

test('peerChain gives what a real TLS peer sent, leaf first, and daneMatches judges it', async () => {
  const server = createTlsServer({ key: leafKeyPem, cert: chainPem }, (s) => s.end());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  try {
    const socket = await new Promise<TLSSocket>((resolve, reject) => {
      const s = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false, servername: 'mx.example' }, () => resolve(s));
      s.once('error', reject);
    });
    const chain = peerChain(socket);
    socket.destroy();
    assert.equal(chain.length, 2);
    assert.ok(chain[0]!.equals(leaf.der) && chain[1]!.equals(inter.der));
    assert.equal(daneMatches([rec(3, 1, 1, data(leaf, 1, 1))], chain), true);
    assert.equal(daneMatches([rec(2, 0, 1, data(inter, 0, 1))], chain), true);
    assert.equal(daneMatches([rec(2, 1, 0, root.spki)], chain), true, 'the root was not sent: its key verifies the top');
    assert.equal(daneMatches([rec(3, 1, 1, data(other, 1, 1)), rec(2, 0, 1, data(other, 0, 1))], chain), false);
  } finally {
    await new Promise<void>((r) => server.close(() => r()));
  }
});

// --- tlsaFor against the loopback DNS server ---

let dns: DnsServer;
before(async () => {
  dns = await startDnsServer({});
});
after(() => dns.close());

const resolver = (): DaneResolver => new DaneResolver({ dnsServers: [dns.address], timeoutMs: 300 });

test('tlsaFor: AD set -> secure, usable records only, the rest counted; the TLSA name is _port._tcp.host', async () => {
  const good = rec(3, 1, 1, data(leaf, 1, 1));
  dns.table['_25._tcp.mx1.example'] = { TLSA: [good, rec(0, 0, 1, data(root, 0, 1)), rec(3, 1, 1, Buffer.alloc(7)), rec(2, 0, 9, Buffer.alloc(32))], AD: true };
  dns.queries.length = 0;
  const r = await resolver().tlsaFor('MX1.example.', 25);
  assert.deepEqual(r, { secure: true, records: [good], unusable: 3 });
  assert.deepEqual(dns.queries, [{ name: '_25._tcp.mx1.example', type: 'TLSA' }]);
});

test('tlsaFor: the same records without AD -> not secure, no records (no DANE)', async () => {
  dns.table['_25._tcp.mx2.example'] = { TLSA: [rec(3, 1, 1, data(leaf, 1, 1))] };
  assert.deepEqual(await resolver().tlsaFor('mx2.example', 25), { secure: false, records: [] });
});

test('tlsaFor: NODATA and NXDOMAIN are answers: secure as AD says, no records', async () => {
  dns.table['_25._tcp.mx3.example'] = { A: ['127.0.0.1'], AD: true };
  assert.deepEqual(await resolver().tlsaFor('mx3.example', 25), { secure: true, records: [], unusable: 0 });
  assert.deepEqual(await resolver().tlsaFor('nowhere.example', 25), { secure: false, records: [] });
  dns.ad = true;
  try {
    assert.deepEqual(await resolver().tlsaFor('nowhere.example', 25), { secure: true, records: [], unusable: 0 });
  } finally {
    dns.ad = false;
  }
});

test('tlsaFor: SERVFAIL for a host whose addresses are secure -> failure dnssec-invalid (the caller defers)', async () => {
  dns.table['_25._tcp.mx4.example'] = 'SERVFAIL';
  dns.table['mx4.example'] = { A: ['127.0.0.1'], AD: true };
  const r = await resolver().tlsaFor('mx4.example', 25);
  assert.ok('failure' in r);
  assert.equal(r.failure.type, 'dnssec-invalid');
  assert.equal(r.failure.policy, 'tlsa');
  assert.equal(r.failure.policyDomain, 'mx4.example');
  assert.match(r.failure.detail, /_25\._tcp\.mx4\.example.*SERVFAIL/);
});

test('tlsaFor: SERVFAIL for a host whose addresses are provably insecure -> no DANE (RFC 7672 §2.2.2)', async () => {
  dns.table['_25._tcp.mx5.example'] = 'SERVFAIL';
  dns.table['mx5.example'] = { A: ['127.0.0.1'] };
  assert.deepEqual(await resolver().tlsaFor('mx5.example', 25), { secure: false, records: [] });
});

test('tlsaFor: a silent resolver -> failure after the timeout, saying so', async () => {
  dns.table['_2525._tcp.mx6.example'] = 'SILENT';
  dns.table['mx6.example'] = 'SILENT';
  const r = await resolver().tlsaFor('mx6.example', 2525);
  assert.ok('failure' in r);
  assert.equal(r.failure.type, 'dnssec-invalid');
  assert.match(r.failure.detail, /no reply/);
});

test('tlsaFor: garbage answers -> failure naming them, no crash', async () => {
  dns.table['_25._tcp.mx7.example'] = 'MALFORMED';
  dns.table['mx7.example'] = 'MALFORMED';
  const r = await resolver().tlsaFor('mx7.example', 25);
  assert.ok('failure' in r);
  assert.match(r.failure.detail, /malformed/);
});

test('tlsaFor: an address literal has no TLSA name (no DANE, no query); a bad name or port is tlsa-invalid', async () => {
  dns.queries.length = 0;
  assert.deepEqual(await resolver().tlsaFor('[127.0.0.1]', 25), { secure: false, records: [] });
  assert.deepEqual(await resolver().tlsaFor('127.0.0.1', 25), { secure: false, records: [] });
  assert.equal(dns.queries.length, 0);
  for (const [h, p] of [['bad host', 25], ['a..b', 25], ['mx.example', 0], ['mx.example', 70000]] as const) {
    const r = await resolver().tlsaFor(h, p);
    assert.ok('failure' in r, `${h}:${p}`);
    assert.equal(r.failure.type, 'tlsa-invalid');
  }
});

test('tlsaFor: no dns_servers -> failure (DANE needs a validating resolver)', async () => {
  const r = await new DaneResolver({ dnsServers: [] }).tlsaFor('mx.example', 25);
  assert.ok('failure' in r);
});

test('mxSecure: the AD bit of the MX answer; a failed look-up is a failure', async () => {
  dns.table['signed.example'] = { MX: [[10, 'mx1.signed.example']], AD: true };
  dns.table['unsigned.example'] = { MX: [[10, 'mx1.unsigned.example']] };
  dns.table['broken.example'] = 'SERVFAIL';
  assert.deepEqual(await resolver().mxSecure('Signed.Example.'), { secure: true });
  assert.deepEqual(await resolver().mxSecure('unsigned.example'), { secure: false });
  const r = await resolver().mxSecure('broken.example');
  assert.ok('failure' in r);
  assert.equal(r.failure.type, 'dnssec-invalid');
  assert.match(r.failure.detail, /SERVFAIL/);
});
