// outbound-tls: checked outbound TLS (issue 14). The SMTP agent against
// scriptable peers on 127.0.0.x presenting certificates of a CA made in the
// test, MX records from the loopback DNS server: `verify` delivers to a host
// whose chain and name check, defers 4.7.5 (never fails) a wrong name or an
// untrusted chain and tries the next MX; `required` without STARTTLS defers
// 4.7.4; every result says what its TLS was. MTA-STS and DANE go through the
// policy decision point: DANE with stub TLSA answers and dane.ts's matcher,
// MTA-STS with stub policies and with the real resolver and an HTTPS server.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { MtaStsResolver, mxAllowed } from '../../src/delivery/tls/mta-sts.js';
import { daneMatches } from '../../src/delivery/tls/dane.js';
import { SmtpAgent, type SmtpAgentOptions, type TlsAttemptResult } from '../../src/delivery/smtp/smtp-agent.js';
import type { TlsaRecord } from '../../src/delivery/tls/cert-check.js';
import type { MtaStsPolicy, PolicySources } from '../../src/delivery/tls/policy.js';
import { startPeer, testCertificate, type PeerOptions, type TestPeer } from '../helpers/test-peer.js';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.js';
import { collect, makeJob, mxHop } from '../helpers/jobs.js';
import { makeCa } from '../helpers/test-ca.js';

const FAST = { connect: 1500, greeting: 1500, helo: 1500, starttls: 1500, mail: 1500, rcpt: 1500, data: 1500, dataBlock: 1500, dataEnd: 1500, rset: 1500, quit: 500 };

const ca = makeCa();
const otherCa = makeCa('Someone Else CA');
after(() => {
  ca.dispose();
  otherCa.dispose();
});
const good1 = ca.issue(['mx1.example.test']);
const good2 = ca.issue(['mx2.example.test']);
const wrongName = ca.issue(['mail.elsewhere.test']);
const wildcard = ca.issue(['*.example.test']);
const untrusted = otherCa.issue(['mx1.example.test']);

type T = { after: (fn: () => Promise<void> | void) => void };

async function peer(t: T, o: PeerOptions): Promise<TestPeer> {
  const p = await startPeer({ starttls: true, ...o });
  t.after(() => p.close());
  return p;
}

/** twoMx - DNS for example.test: mx1 (127.0.0.2, preference 10) and mx2 (127.0.0.3, preference 20). */
async function twoMx(t: T, mx1Name = 'mx1.example.test'): Promise<DnsServer> {
  const dns = await startDnsServer({
    'example.test': { MX: [[10, mx1Name], [20, 'mx2.example.test']] },
    [mx1Name]: { A: ['127.0.0.2'] },
    'mx2.example.test': { A: ['127.0.0.3'] },
  });
  t.after(() => dns.close());
  return dns;
}

function agent(t: T, dns: DnsServer, o: Partial<SmtpAgentOptions> = {}): SmtpAgent {
  const a = new SmtpAgent({
    heloName: 'petrel.test',
    maxRecipientsPerTransaction: 100,
    timeouts: FAST,
    poolOptions: { deadBackoffMs: 0 },
    dns: { servers: [dns.address], timeoutMs: 500, tries: 1 },
    tlsCaFile: ca.caFile,
    ...o,
  });
  t.after(() => a.close());
  return a;
}

test('verify: a certificate of a trusted CA naming the MX host is delivered over verified TLS, and the result says so', async (t) => {
  const mx1 = await peer(t, { host: '127.0.0.2', tlsCert: good1 });
  const a = agent(t, await twoMx(t));
  const job = makeJob(['a@example.test'], mxHop('example.test', mx1.port, 'verify'));
  const c = collect(job);
  await a.deliver(job, c.report);
  const r = c.byAddress.get('a@example.test')!;
  assert.equal(r.kind, 'delivered', r.reply);
  assert.equal(mx1.transactions.length, 1);
  assert.equal(mx1.connections[0]!.tls, true);
  assert.ok(r.tls);
  assert.equal(r.tls.verified, true);
  assert.equal(r.tls.policy, 'verify');
  assert.equal(r.tls.policyDomain, 'example.test');
  assert.match(r.tls.version, /^TLSv1\.[23]$/);
  assert.ok(r.tls.cipher.length > 0);
  assert.equal(r.tlsFailure, undefined);
});

test('verify: a certificate for another name defers 4.7.5 with the failure (never failed), nothing sent', async (t) => {
  const mx1 = await peer(t, { host: '127.0.0.2', tlsCert: wrongName });
  const dns = await startDnsServer({ 'example.test': { MX: [[10, 'mx1.example.test']] }, 'mx1.example.test': { A: ['127.0.0.2'] } });
  t.after(() => dns.close());
  const a = agent(t, dns);
  const job = makeJob(['a@example.test', 'b@example.test'], mxHop('example.test', mx1.port, 'verify'));
  const c = collect(job);
  await a.deliver(job, c.report);
  for (const r of c.byAddress.values()) {
    assert.equal(r.kind, 'deferred');
    assert.equal(r.status, '4.7.5');
    assert.equal(r.tlsFailure?.type, 'certificate-host-mismatch');
    assert.equal(r.tlsFailure?.policy, 'verify');
    assert.match(r.reply, /TLS policy .*not met.*mx1\.example\.test/);
    assert.equal(r.tls?.verified, false);
  }
  assert.equal(mx1.transactions.length, 0);
  assert.ok(!mx1.connections[0]!.commands.some((l) => /^MAIL/i.test(l)), 'no MAIL over an unverified connection');
});

test('verify: an untrusted chain (another CA, a self-signed certificate) defers 4.7.5 certificate-not-trusted', async (t) => {
  for (const cert of [untrusted, testCertificate()]) {
    const mx1 = await peer(t, { host: '127.0.0.2', tlsCert: cert });
    const dns = await startDnsServer({ 'example.test': { MX: [[10, 'mx1.example.test']] }, 'mx1.example.test': { A: ['127.0.0.2'] } });
    t.after(() => dns.close());
    const a = agent(t, dns);
    const job = makeJob(['a@example.test'], mxHop('example.test', mx1.port, 'verify'));
    const c = collect(job);
    await a.deliver(job, c.report);
    const r = c.byAddress.get('a@example.test')!;
    assert.equal(r.kind, 'deferred');
    assert.equal(r.status, '4.7.5');
    assert.equal(r.tlsFailure?.type, 'certificate-not-trusted');
    assert.equal(mx1.transactions.length, 0);
  }
});

test('verify: the first MX fails the check, the second one (good certificate) gets the mail', async (t) => {
  const mx2 = await peer(t, { host: '127.0.0.3', tlsCert: good2 });
  const mx1 = await peer(t, { host: '127.0.0.2', port: mx2.port, tlsCert: wrongName });
  const a = agent(t, await twoMx(t));
  const job = makeJob(['a@example.test'], mxHop('example.test', mx2.port, 'verify'));
  const c = collect(job);
  await a.deliver(job, c.report);
  const r = c.byAddress.get('a@example.test')!;
  assert.equal(r.kind, 'delivered', r.reply);
  assert.match(r.remote, /^mx2\.example\.test/);
  assert.equal(r.tls?.verified, true);
  assert.equal(mx1.connections.length, 1);
  assert.equal(mx1.transactions.length, 0);
  assert.equal(mx2.transactions.length, 1);
});

test('verify: a wildcard names one left-most label only (RFC 6125 §6.4.3)', async (t) => {
  const p = await peer(t, { host: '127.0.0.2', tlsCert: wildcard });
  for (const [mxName, ok] of [['mx1.example.test', true], ['a.mx1.example.test', false]] as const) {
    const dns = await startDnsServer({ 'example.test': { MX: [[10, mxName]] }, [mxName]: { A: ['127.0.0.2'] } });
    t.after(() => dns.close());
    const a = agent(t, dns);
    const job = makeJob(['a@example.test'], mxHop('example.test', p.port, 'verify'));
    const c = collect(job);
    await a.deliver(job, c.report);
    const r = c.byAddress.get('a@example.test')!;
    assert.equal(r.kind, ok ? 'delivered' : 'deferred', `${mxName}: ${r.reply}`);
    if (!ok) assert.equal(r.tlsFailure?.type, 'certificate-host-mismatch');
  }
});

test('verify without STARTTLS defers 4.7.5 starttls-not-supported; required without STARTTLS defers 4.7.4; neither sends in plain text', async (t) => {
  const p = await peer(t, { host: '127.0.0.2', starttls: false });
  const dns = await startDnsServer({ 'example.test': { MX: [[10, 'mx1.example.test']] }, 'mx1.example.test': { A: ['127.0.0.2'] } });
  t.after(() => dns.close());
  for (const [mode, status] of [['verify', '4.7.5'], ['required', '4.7.4']] as const) {
    const a = agent(t, dns);
    const job = makeJob(['a@example.test'], mxHop('example.test', p.port, mode));
    const c = collect(job);
    await a.deliver(job, c.report);
    const r = c.byAddress.get('a@example.test')!;
    assert.equal(r.kind, 'deferred', mode);
    assert.equal(r.status, status, mode);
    assert.equal(r.tlsFailure?.type, 'starttls-not-supported', mode);
  }
  assert.equal(p.transactions.length, 0);
});

test('opportunistic: an unverifiable certificate is still used (encrypted, verified false); a plain-text peer gives tls null', async (t) => {
  const p = await peer(t, { host: '127.0.0.2', tlsCert: untrusted });
  const plain = await peer(t, { host: '127.0.0.3', port: p.port, starttls: false });
  const dns = await startDnsServer({
    'a.test': { MX: [[10, 'mx1.example.test']] },
    'b.test': { MX: [[10, 'mx2.example.test']] },
    'mx1.example.test': { A: ['127.0.0.2'] },
    'mx2.example.test': { A: ['127.0.0.3'] },
  });
  t.after(() => dns.close());
  const a = agent(t, dns);
  const j1 = makeJob(['x@a.test'], mxHop('a.test', p.port));
  const c1 = collect(j1);
  await a.deliver(j1, c1.report);
  const r1 = c1.byAddress.get('x@a.test')!;
  assert.equal(r1.kind, 'delivered');
  assert.equal(r1.tls?.verified, false);
  assert.equal(r1.tls?.policy, 'opportunistic');
  const j2 = makeJob(['x@b.test'], mxHop('b.test', p.port));
  const c2 = collect(j2);
  await a.deliver(j2, c2.report);
  const r2 = c2.byAddress.get('x@b.test')!;
  assert.equal(r2.kind, 'delivered');
  assert.equal(r2.tls, null);
  assert.equal(plain.transactions.length, 1);
});

/** spki311 - a DANE-EE SPKI SHA-256 record (3 1 1) or DANE-TA (2 1 1) for a PEM certificate. */
function spkiRecord(usage: number, pem: string): TlsaRecord {
  const spki = new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' });
  return { usage, selector: 1, matchingType: 1, data: createHash('sha256').update(spki).digest() };
}

function daneSources(answer: (host: string) => { secure: boolean; records: TlsaRecord[] } | { failure: { policy: 'tlsa'; policyDomain: string; type: 'dnssec-invalid'; detail: string } }): PolicySources {
  return { dane: { resolver: { tlsaFor: async (host) => answer(host) }, matches: daneMatches } };
}

test('DANE: a secure 3 1 1 record matching the leaf verifies a certificate no CA trusts for another name; a mismatch defers 4.7.5', async (t) => {
  const p = await peer(t, { host: '127.0.0.2', tlsCert: untrusted });
  const dns = await startDnsServer({ 'example.test': { MX: [[10, 'mx9.example.test']] }, 'mx9.example.test': { A: ['127.0.0.2'] } });
  t.after(() => dns.close());
  const seen: TlsAttemptResult[] = [];
  for (const [record, ok] of [[spkiRecord(3, untrusted.cert), true], [spkiRecord(3, good1.cert), false]] as const) {
    const a = agent(t, dns, { tlsSources: daneSources(() => ({ secure: true, records: [record] })), onTlsResult: (r) => seen.push(r) });
    const job = makeJob(['a@example.test'], mxHop('example.test', p.port));
    const c = collect(job);
    await a.deliver(job, c.report);
    const r = c.byAddress.get('a@example.test')!;
    assert.equal(r.kind, ok ? 'delivered' : 'deferred', r.reply);
    assert.equal(r.tls?.policy, 'tlsa');
    assert.equal(r.tls?.verified, ok);
    if (!ok) {
      assert.equal(r.status, '4.7.5');
      assert.equal(r.tlsFailure?.policy, 'tlsa');
    }
  }
  assert.deepEqual(seen.map((s) => [s.policy, s.mx, s.receivingIp, s.success]), [['tlsa', 'mx9.example.test', '127.0.0.2', true], ['tlsa', 'mx9.example.test', '127.0.0.2', false]]);
});

test('DANE: 2 1 1 (the CA) verifies a leaf naming the MX host, refuses one naming another; insecure records are ignored; a failed TLSA look-up defers without connecting', async (t) => {
  const p = await peer(t, { host: '127.0.0.2', tlsCert: { key: wrongName.key, cert: wrongName.cert + ca.caPem } });
  const dns = await startDnsServer({ 'example.test': { MX: [[10, 'mx1.example.test']] }, 'mx1.example.test': { A: ['127.0.0.2'] } });
  t.after(() => dns.close());
  const run = async (sources: PolicySources): Promise<ReturnType<typeof collect>> => {
    const a = agent(t, dns, { tlsSources: sources });
    const job = makeJob(['a@example.test'], mxHop('example.test', p.port));
    const c = collect(job);
    await a.deliver(job, c.report);
    return c;
  };
  // DANE-TA matching the CA in the chain, with a leaf naming the MX host: verified.
  const p2 = await peer(t, { host: '127.0.0.3', tlsCert: { key: good2.key, cert: good2.cert + ca.caPem } });
  const dns2 = await startDnsServer({ 'example.test': { MX: [[10, 'mx2.example.test']] }, 'mx2.example.test': { A: ['127.0.0.3'] } });
  t.after(() => dns2.close());
  const okTa = agent(t, dns2, { tlsSources: daneSources(() => ({ secure: true, records: [spkiRecord(2, ca.caPem)] })) });
  const jobTa = makeJob(['a@example.test'], mxHop('example.test', p2.port));
  const cTa = collect(jobTa);
  await okTa.deliver(jobTa, cTa.report);
  assert.equal(cTa.byAddress.get('a@example.test')!.kind, 'delivered', cTa.byAddress.get('a@example.test')!.reply);
  assert.equal(cTa.byAddress.get('a@example.test')!.tls?.verified, true);
  // DANE-TA matches the CA in the chain, but the leaf names mail.elsewhere.test, not mx1.example.test.
  const ta = (await run(daneSources(() => ({ secure: true, records: [spkiRecord(2, ca.caPem)] })))).byAddress.get('a@example.test')!;
  assert.equal(ta.kind, 'deferred');
  assert.equal(ta.tlsFailure?.type, 'certificate-host-mismatch');
  // Not DNSSEC-validated: as if there were no DANE (opportunistic delivers).
  const insecure = (await run(daneSources(() => ({ secure: false, records: [spkiRecord(3, good1.cert)] })))).byAddress.get('a@example.test')!;
  assert.equal(insecure.kind, 'delivered');
  assert.equal(insecure.tls?.policy, 'opportunistic');
  const before = p.connections.length;
  const failed = (await run(daneSources(() => ({ failure: { policy: 'tlsa', policyDomain: 'example.test', type: 'dnssec-invalid', detail: 'TLSA look-up: SERVFAIL' } })))).byAddress.get('a@example.test')!;
  assert.equal(failed.kind, 'deferred');
  assert.equal(failed.status, '4.7.5');
  assert.equal(failed.tlsFailure?.type, 'dnssec-invalid');
  assert.equal(p.connections.length, before, 'no connection to a host whose TLSA look-up failed');
});

function stsSources(policy: MtaStsPolicy): PolicySources {
  return { sts: { resolver: { policyFor: async () => ({ policy }) }, mxAllowed: (pol, host) => pol.mx.some((m) => (m.startsWith('*.') ? host.endsWith(m.slice(1)) && host.split('.').length === m.split('.').length : m === host)) } };
}

test('MTA-STS enforce: an MX host the policy does not name is not used; the named one gets the mail over verified TLS', async (t) => {
  const mx2 = await peer(t, { host: '127.0.0.3', tlsCert: good2 });
  const mx1 = await peer(t, { host: '127.0.0.2', port: mx2.port, tlsCert: good1 });
  const a = agent(t, await twoMx(t), { tlsSources: stsSources({ mode: 'enforce', mx: ['mx2.example.test'], maxAge: 86400, id: '1' }) });
  const job = makeJob(['a@example.test'], mxHop('example.test', mx2.port));
  const c = collect(job);
  await a.deliver(job, c.report);
  const r = c.byAddress.get('a@example.test')!;
  assert.equal(r.kind, 'delivered', r.reply);
  assert.equal(r.tls?.policy, 'sts');
  assert.equal(r.tls?.verified, true);
  assert.equal(mx1.connections.length, 0);
});

test('MTA-STS testing: a certificate that does not verify is delivered anyway, and the failure recorded', async (t) => {
  const mx1 = await peer(t, { host: '127.0.0.2', tlsCert: wrongName });
  const dns = await startDnsServer({ 'example.test': { MX: [[10, 'mx1.example.test']] }, 'mx1.example.test': { A: ['127.0.0.2'] } });
  t.after(() => dns.close());
  const a = agent(t, dns, { tlsSources: stsSources({ mode: 'testing', mx: ['mx1.example.test'], maxAge: 86400, id: '1' }) });
  const job = makeJob(['a@example.test'], mxHop('example.test', mx1.port));
  const c = collect(job);
  await a.deliver(job, c.report);
  const r = c.byAddress.get('a@example.test')!;
  assert.equal(r.kind, 'delivered', r.reply);
  assert.equal(r.tls?.policy, 'sts');
  assert.equal(r.tls?.verified, false);
  assert.equal(r.tlsFailure?.type, 'certificate-host-mismatch');
});

/** policySite - an HTTPS MTA-STS policy server on `address` (a certificate of the test CA for mta-sts.<domain>). */
async function policySite(t: T, address: string, domain: string, body: string): Promise<number> {
  const site = ca.issue([`mta-sts.${domain}`]);
  const server = createHttpsServer({ cert: site.cert, key: site.key }, (req, res) => {
    if (req.url !== '/.well-known/mta-sts.txt') return void res.writeHead(404).end();
    res.writeHead(200, { 'Content-Type': 'text/plain' }).end(body);
  });
  await new Promise<void>((r) => server.listen(0, address, () => r()));
  t.after(async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });
  return (server.address() as AddressInfo).port;
}

test('MTA-STS with the real resolver: a policy served over HTTPS; enforce skips the wrong-name MX and delivers to the right one, testing delivers and records; both are told to TLS reporting', async (t) => {
  const mx2 = await peer(t, { host: '127.0.0.3', tlsCert: good2 });
  const mx1 = await peer(t, { host: '127.0.0.2', port: mx2.port, tlsCert: wrongName });
  for (const mode of ['enforce', 'testing'] as const) {
    const httpsPort = await policySite(t, '127.0.0.5', 'example.test', `version: STSv1\nmode: ${mode}\nmx: mx1.example.test\nmx: mx2.example.test\nmax_age: 86400\n`);
    const dns = await twoMx(t);
    dns.table['_mta-sts.example.test'] = { TXT: [`v=STSv1; id=${mode}1`] };
    dns.table['mta-sts.example.test'] = { A: ['127.0.0.5'] };
    const seen: TlsAttemptResult[] = [];
    const resolver = new MtaStsResolver({ dnsServers: [dns.address], caFile: ca.caFile, timeoutMs: 3000, httpsPort });
    const a = agent(t, dns, { tlsSources: { sts: { resolver, mxAllowed } }, onTlsResult: (r) => seen.push(r) });
    const before = [mx1.transactions.length, mx2.transactions.length];
    const job = makeJob(['a@example.test'], mxHop('example.test', mx2.port));
    const c = collect(job);
    await a.deliver(job, c.report);
    const r = c.byAddress.get('a@example.test')!;
    assert.equal(r.kind, 'delivered', `${mode}: ${r.reply}`);
    assert.equal(r.tls?.policy, 'sts');
    if (mode === 'enforce') {
      assert.match(r.remote, /^mx2\.example\.test/);
      assert.equal(r.tls?.verified, true);
      assert.equal(mx1.transactions.length, before[0], 'nothing to the MX whose certificate names another host');
      assert.deepEqual(seen.map((s) => [s.mx, s.success, s.failure?.type]), [['mx1.example.test', false, 'certificate-host-mismatch'], ['mx2.example.test', true, undefined]]);
    } else {
      // testing: mx1 (preference 10) is used although its certificate does not verify; the failure is recorded.
      assert.match(r.remote, /^mx1\.example\.test/);
      assert.equal(r.tls?.verified, false);
      assert.equal(r.tlsFailure?.type, 'certificate-host-mismatch');
      assert.equal(mx1.transactions.length, before[0] + 1);
      assert.deepEqual(seen.map((s) => [s.mx, s.success, s.failure?.type]), [['mx1.example.test', false, 'certificate-host-mismatch']]);
    }
    assert.ok(seen.every((s) => s.policy === 'sts' && s.policyDomain === 'example.test' && s.policyText?.includes(`mode: ${mode}`)));
  }
});

test('MX rollup keeps TLS policies apart: a connection opened for a domain without a policy is not lent to a domain whose MTA-STS policy enforces, behind the same MX host', async (t) => {
  const mx = await peer(t, { host: '127.0.0.2', tlsCert: wrongName });
  const dns = await startDnsServer({
    'loose.test': { MX: [[10, 'mx1.shared.test']] },
    'strict.test': { MX: [[10, 'mx1.shared.test']] },
    'mx1.shared.test': { A: ['127.0.0.2'] },
  });
  t.after(() => dns.close());
  const policy: MtaStsPolicy = { mode: 'enforce', mx: ['mx1.shared.test'], maxAge: 86400, id: '1' };
  const sources: PolicySources = {
    sts: { resolver: { policyFor: async (d: string) => ({ policy: d === 'strict.test' ? policy : null }) }, mxAllowed: (pol, host) => pol.mx.includes(host) },
  };
  const a = agent(t, dns, { tlsSources: sources });
  const loose = makeJob(['a@loose.test'], mxHop('loose.test', mx.port));
  const c1 = collect(loose);
  await a.deliver(loose, c1.report);
  assert.equal(c1.byAddress.get('a@loose.test')!.kind, 'delivered', 'opportunistic TLS takes the certificate that does not verify');
  assert.equal(a.pool.size, 1, 'the connection is kept for reuse');
  const strict = makeJob(['b@strict.test'], mxHop('strict.test', mx.port));
  const c2 = collect(strict);
  await a.deliver(strict, c2.report);
  const r = c2.byAddress.get('b@strict.test')!;
  assert.equal(r.kind, 'deferred', 'not sent over the unverified connection of the other domain');
  assert.equal(r.status, '4.7.5');
  assert.equal(r.tlsFailure?.type, 'certificate-host-mismatch');
});

test('"TLS-Required: No" (RFC 8689 §5): the domain\'s MTA-STS policy is not applied to that message, nor is its session counted for TLS reports', async (t) => {
  const mx = await peer(t, { host: '127.0.0.2', tlsCert: wrongName });
  const dns = await startDnsServer({ 'example.test': { MX: [[10, 'mx1.example.test']] }, 'mx1.example.test': { A: ['127.0.0.2'] } });
  t.after(() => dns.close());
  const told: TlsAttemptResult[] = [];
  const a = agent(t, dns, { tlsSources: stsSources({ mode: 'enforce', mx: ['mx1.example.test'], maxAge: 86400, id: '1' }), onTlsResult: (r) => told.push(r) });
  const relaxed = makeJob(['a@example.test'], mxHop('example.test', mx.port));
  relaxed.message.tlsRequiredNo = true;
  const c1 = collect(relaxed);
  await a.deliver(relaxed, c1.report);
  assert.equal(c1.byAddress.get('a@example.test')!.kind, 'delivered', c1.byAddress.get('a@example.test')!.reply);
  assert.equal(told.length, 0);
  const strict = makeJob(['b@example.test'], mxHop('example.test', mx.port));
  const c2 = collect(strict);
  await a.deliver(strict, c2.report);
  assert.equal(c2.byAddress.get('b@example.test')!.status, '4.7.5', 'the same domain without the header: the policy holds');
  assert.equal(told.length, 1);
});
