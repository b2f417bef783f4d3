// The pure parts of the inbound checks (issue 15): the authserv-id of an
// Authentication-Results: field and the removal of ours, the [checks]
// policy over results (temperror is never a permanent refusal), the held
// message (memory, then a scratch file; replayed exactly), and the DNS cache
// (bounded, negative answers kept, failures not).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { authservId, stripOwnResults } from '../../src/checks/auth-results.js';
import { checkAuthentication, decide } from '../../src/checks/authenticate.js';
import { CheckResolver } from '../../src/checks/dns.js';
import { encodeQuery, parseReply } from '../../src/checks/dns-wire.js';
import { HeldMessage } from '../../src/checks/held-message.js';
import { hasField, removeFields } from '../../src/checks/header-edit.js';
import { decideFilter } from '../../src/checks/rspamd.js';
import { parseRecipients } from '../../src/checks/route-recipients.js';
import { verdictFields } from '../../src/checks/verdict-fields.js';
import { startDnsServer } from '../helpers/dns-server.js';
import { cleanup, tempDir } from '../helpers/petrel-harness.js';

test('authservId: comments, case, a trailing dot and a version are ignored', () => {
  assert.equal(authservId(' mx.Example.ORG; spf=pass'), 'mx.example.org');
  assert.equal(authservId(' (forged (nested)) mx.example.org. 1; dkim=pass'), 'mx.example.org');
  assert.equal(authservId(' mx.example.org'), 'mx.example.org');
});

test('stripOwnResults removes only fields claiming our authserv-id, folded lines included, and keeps every other octet', () => {
  const header = Buffer.from('Received: x\r\nAuthentication-Results: petrel.test;\r\n\tdkim=pass\r\nSubject: caf\xe9\r\nauthentication-results : other.example; spf=pass\r\nAUTHENTICATION-RESULTS: PETREL.TEST.; dmarc=pass\r\n\r\n', 'latin1');
  const r = stripOwnResults(header, 'petrel.test');
  assert.equal(r.removed, 2);
  assert.equal(r.header.toString('latin1'), 'Received: x\r\nSubject: caf\xe9\r\nauthentication-results : other.example; spf=pass\r\n\r\n');
  const none = Buffer.from('Subject: x\r\n\r\n');
  assert.equal(stripOwnResults(none, 'petrel.test').header, none);
});

const policy = { spf_fail: 'tag' as const, dmarc_reject: true, arc_trusted: ['lists.example'] };
const found = { spf: 'pass', dkim: 'pass', dmarc: 'pass', arc: 'none', dmarcPolicy: 'reject', dmarcDomain: 'example.com', sealer: '', headers: 'Authentication-Results: h; spf=pass\r\n', dnsTrouble: false };

test('decide: p=reject refuses 550 5.7.1; a DNS failure behind it is 451 4.7.1; a trusted ARC chain overrides', () => {
  assert.equal(decide(policy, 'h', found).refusal, null);
  assert.equal(decide(policy, 'h', { ...found, dmarc: 'fail' }).refusal?.enhanced, '5.7.1');
  assert.equal(decide(policy, 'h', { ...found, dmarc: 'fail' }).refusal?.code, 550);
  assert.equal(decide(policy, 'h', { ...found, dmarc: 'fail', spf: 'temperror', dnsTrouble: true }).refusal?.code, 451);
  assert.equal(decide(policy, 'h', { ...found, dmarc: 'temperror', dnsTrouble: true }).refusal?.enhanced, '4.7.1');
  assert.equal(decide({ ...policy, dmarc_reject: false }, 'h', { ...found, dmarc: 'temperror' }).refusal, null);
  assert.equal(decide({ ...policy, dmarc_reject: false }, 'h', { ...found, dmarc: 'fail' }).refusal, null);
  const arc = decide(policy, 'h', { ...found, dmarc: 'fail', arc: 'pass', sealer: 'lists.example' });
  assert.equal(arc.refusal, null);
  assert.match(arc.headers, /X-Petrel-DMARC: reject policy of example\.com overridden/);
  assert.equal(decide(policy, 'h', { ...found, dmarc: 'fail', arc: 'pass', sealer: 'evil.example' }).refusal?.code, 550);
});

test('decide: spf_fail = "reject" refuses fail 550 5.7.23 and temperror 451 4.7.24; "tag" never refuses on SPF', () => {
  const strict = { ...policy, spf_fail: 'reject' as const };
  assert.deepEqual([decide(strict, 'h', { ...found, spf: 'fail' }).refusal?.code, decide(strict, 'h', { ...found, spf: 'fail' }).refusal?.enhanced], [550, '5.7.23']);
  assert.deepEqual([decide(strict, 'h', { ...found, spf: 'temperror' }).refusal?.code, decide(strict, 'h', { ...found, spf: 'temperror' }).refusal?.enhanced], [451, '4.7.24']);
  assert.equal(decide(policy, 'h', { ...found, spf: 'fail' }).refusal, null);
  assert.equal(decide(strict, 'h', { ...found, spf: 'softfail' }).refusal, null);
});

test('decide: header text is printable ASCII with CR LF line ends', () => {
  const v = decide(policy, 'h', { ...found, headers: 'Authentication-Results: h;\n spf=pass (caf\u00e9\u0007)' });
  assert.equal(v.headers, 'Authentication-Results: h;\r\n spf=pass (caf??)\r\n');
});

async function collect(it: AsyncIterable<Buffer>): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const b of it) out.push(b);
  return out;
}

test('HeldMessage: memory, then a scratch file; replay gives the octets back in order, the header rewritable; dispose removes the file', async () => {
  const dir = tempDir();
  try {
    const scratch = join(dir, 'scratch');
    const held = new HeldMessage(scratch, 1024 * 1024, 0, 64);
    const parts = [Buffer.from('Subject: a\r\n'), Buffer.from('X: b\r'), Buffer.from('\n\r'), Buffer.from('\nbody line one\r\n'), Buffer.alloc(500, 'z'), Buffer.from('\r\nend\r\n')];
    for (const p of parts) await held.write(p);
    const whole = Buffer.concat(parts);
    assert.equal(held.headerEnd, whole.indexOf('\r\n\r\n') + 4);
    assert.equal(readdirSync(scratch).length, 1, 'beyond 64 octets the rest went to a file');
    const back = Buffer.concat(await collect(held.replay()));
    assert.ok(back.equals(whole));
    const rewritten = Buffer.concat(await collect(held.replay((h) => Buffer.concat([Buffer.from('New: 1\r\n'), h]))));
    assert.equal(rewritten.toString(), `New: 1\r\n${whole.toString()}`);
    await held.dispose();
    assert.deepEqual(readdirSync(scratch), []);
  } finally {
    cleanup(dir);
  }
});

test('HeldMessage: past maxSize nothing more is kept and it says so', async () => {
  const dir = tempDir();
  try {
    const held = new HeldMessage(join(dir, 's'), 1024, 100, 10);
    await held.write(Buffer.alloc(80, 'a'));
    await held.write(Buffer.alloc(80, 'b'));
    assert.equal(held.oversize, true);
    assert.ok(!existsSync(join(dir, 's')) || readdirSync(join(dir, 's')).length === 0);
    await held.dispose();
  } finally {
    cleanup(dir);
  }
});

test('CheckResolver: answers and NXDOMAIN cached, SERVFAIL not; the cache never grows past its bound', async () => {
  const dns = await startDnsServer({ 'a.test': { TXT: ['hello'] }, 'bad.test': 'SERVFAIL' });
  try {
    const r = new CheckResolver({ servers: [dns.address], timeoutMs: 300, maxEntries: 3 });
    assert.deepEqual(await r.resolve('a.test', 'TXT'), [['hello']]);
    assert.deepEqual(await r.resolve('A.TEST.', 'TXT'), [['hello']]);
    await assert.rejects(r.resolve('gone.test', 'TXT'), { code: 'ENOTFOUND' });
    await assert.rejects(r.resolve('gone.test', 'TXT'), { code: 'ENOTFOUND' });
    await assert.rejects(r.resolve('bad.test', 'TXT'), { code: 'ESERVFAIL' });
    await assert.rejects(r.resolve('bad.test', 'TXT'), { code: 'ESERVFAIL' });
    assert.equal(dns.queries.filter((q) => q.name === 'a.test').length, 1);
    assert.equal(dns.queries.filter((q) => q.name === 'gone.test').length, 1);
    assert.ok(dns.queries.filter((q) => q.name === 'bad.test').length >= 2);
    for (let i = 0; i < 10; i++) await r.resolve(`n${i}.test`, 'TXT').catch(() => undefined);
    assert.ok(r.size <= 3);
  } finally {
    await dns.close();
  }
});

test('checkAuthentication over its budget (DNS that never answers): temperror everywhere, 451 4.7.1 with dmarc_reject, never a 5xx', async () => {
  async function* msg(): AsyncGenerator<Buffer> {
    yield Buffer.from('From: <a@slow.example>\r\nSubject: x\r\n\r\nbody\r\n');
  }
  const never = (): Promise<never> => new Promise(() => undefined);
  const t0 = Date.now();
  const v = await checkAuthentication({ message: msg(), ip: '192.0.2.1', helo: 'c.example', sender: 'a@slow.example', hostname: 'mx.test', resolver: never, budgetMs: 200 }, policy);
  assert.ok(Date.now() - t0 < 2000);
  assert.equal(v.spf, 'temperror');
  assert.equal(v.refusal?.code, 451);
  assert.equal(v.refusal?.enhanced, '4.7.1');
  assert.match(v.headers, /^Authentication-Results: mx\.test; none \(checks failed: no result within 200 ms/);
  const tagged = await checkAuthentication({ message: msg(), ip: '192.0.2.1', helo: 'c.example', sender: 'a@slow.example', hostname: 'mx.test', resolver: never, budgetMs: 100 }, { ...policy, dmarc_reject: false });
  assert.equal(tagged.refusal, null);
});

test('HeldMessage: a header section longer than the memory limit stays in memory (it can still be rewritten)', async () => {
  const dir = tempDir();
  try {
    const held = new HeldMessage(join(dir, 's'), 1024 * 1024, 0, 16);
    const header = 'Authentication-Results: mx.test; spf=pass\r\nX-Pad: ' + 'p'.repeat(100) + '\r\n\r\n';
    for (let i = 0; i < header.length; i += 10) await held.write(Buffer.from(header.slice(i, i + 10)));
    await held.write(Buffer.from('body\r\n'));
    const out = Buffer.concat(await collect(held.replay((h) => stripOwnResults(h, 'mx.test').header))).toString();
    assert.equal(out, header.replace('Authentication-Results: mx.test; spf=pass\r\n', '') + 'body\r\n');
    await held.dispose();
  } finally {
    cleanup(dir);
  }
});

test('decide: a p=quarantine failure names its domain for the junk folder; a pass or a refusal does not', () => {
  assert.equal(decide(policy, 'h', { ...found, dmarc: 'fail', dmarcPolicy: 'quarantine' }).quarantine, 'example.com');
  assert.equal(decide(policy, 'h', found).quarantine, '');
  assert.equal(decide({ ...policy, spf_fail: 'reject' }, 'h', { ...found, spf: 'fail', dmarc: 'fail', dmarcPolicy: 'quarantine' }).quarantine, '');
});

test('decideFilter: "add header" is junk, "rewrite subject" and "no action" are not; the verdict is kept for the event', () => {
  const ok = (action: string) => ({ ok: true as const, action, score: 7.5, required: 15, symbols: ['BAD(7.5)'], smtpMessage: '', headers: [] as [string, string][], subject: null });
  const add = decideFilter(ok('add header'), 'tempfail', false);
  assert.equal(add.junk, 'rspamd add header 7.5/15');
  assert.deepEqual(add.verdict, { action: 'add header', score: 7.5, required: 15, symbols: ['BAD(7.5)'] });
  assert.equal(decideFilter(ok('rewrite subject'), 'tempfail', false).junk, null);
  assert.equal(decideFilter(ok('no action'), 'tempfail', false).junk, null);
  assert.equal(decideFilter({ ok: false, error: 'x' }, 'accept', false).verdict, null);
});

test('removeFields and hasField: only whole fields with that name, folded lines included; hasField stops at the blank line', () => {
  const header = Buffer.from('Received: x\r\nX-Petrel-Junk: a\r\n\tb\r\nSubject: X-Petrel-Junk: no\r\nx-petrel-junk : c\r\n\r\n', 'latin1');
  assert.equal(removeFields(header, 'X-Petrel-Junk').toString('latin1'), 'Received: x\r\nSubject: X-Petrel-Junk: no\r\n\r\n');
  const plain = Buffer.from('Subject: x\r\n\r\n');
  assert.equal(removeFields(plain, 'X-Petrel-Junk'), plain);
  assert.ok(hasField('Received: x\r\nx-petrel-junk: yes\r\n\r\nbody', 'X-Petrel-Junk'));
  assert.ok(hasField('Received: x\nX-Petrel-Junk : yes\n\nbody', 'X-Petrel-Junk'));
  assert.ok(!hasField('Received: x\r\n X-Petrel-Junk: folded\r\nSubject: s\r\n\r\nX-Petrel-Junk: in the body\r\n', 'X-Petrel-Junk'));
});

test('parseRecipients: addresses and @domain lower-cased, comments skipped, a bad line reported with file and line', () => {
  const r = parseRecipients('# list\nAlice@Example.COM\n@Catch.Example # all of it\n\nnot an address\na@b@c\n', 'f.txt');
  assert.deepEqual([...r.entries], ['alice@example.com', '@catch.example']);
  assert.deepEqual(r.problems, ['f.txt:5: not an address or @domain: not an address', 'f.txt:6: not an address or @domain: a@b@c']);
});

test('CheckResolver: TXT and MX kept for their TTL within the floor and the cap; NXDOMAIN for the SOA negative TTL', async () => {
  const dns = await startDnsServer({
    'short.test': { TXT: ['v=spf1 -all'], ttl: 1 },
    'mid.test': { TXT: ['v=spf1 -all'], MX: [[10, 'mx.mid.test']], ttl: 120 },
    'long.test': { TXT: ['v=DMARC1; p=none'], ttl: 86_400 },
    'a.test': { A: ['192.0.2.1'], ttl: 300 },
  });
  try {
    const r = new CheckResolver({ servers: [dns.address], timeoutMs: 300, minTtlMs: 10_000, maxTtlMs: 3_600_000 });
    assert.deepEqual(await r.resolve('short.test', 'TXT'), [['v=spf1 -all']]);
    assert.deepEqual(await r.resolve('mid.test', 'MX'), [{ priority: 10, exchange: 'mx.mid.test' }]);
    await r.resolve('mid.test', 'TXT');
    await r.resolve('long.test', 'TXT');
    await r.resolve('a.test', 'A');
    const left = (n: string, t: string): number => r.expiresIn(n, t) ?? -1;
    // TTL 1 s: the floor (10 s); 120 s: its own; a day: the cap (1 h).
    assert.ok(left('short.test', 'TXT') > 9_000 && left('short.test', 'TXT') <= 10_000, String(left('short.test', 'TXT')));
    assert.ok(left('mid.test', 'TXT') > 119_000 && left('mid.test', 'TXT') <= 120_000);
    assert.ok(left('mid.test', 'MX') > 119_000 && left('mid.test', 'MX') <= 120_000);
    assert.ok(left('long.test', 'TXT') > 3_599_000 && left('long.test', 'TXT') <= 3_600_000);
    assert.ok(left('a.test', 'A') > 299_000 && left('a.test', 'A') <= 300_000);
    // Answered from the cache: one question each.
    await r.resolve('mid.test', 'TXT');
    assert.equal(dns.queries.filter((q) => q.name === 'mid.test' && q.type === 'TXT').length, 1);
    // Without a SOA, a negative answer is kept the "TTL not known" time (60 s by default).
    await assert.rejects(r.resolve('nowhere.test', 'TXT'), { code: 'ENOTFOUND' });
    assert.ok(left('nowhere.test', 'TXT') > 59_000 && left('nowhere.test', 'TXT') <= 60_000);
  } finally {
    await dns.close();
  }
});

test('dns-wire parseReply: negative TTL from the SOA; truncated, looping and lying replies are EBADRESP, never a crash', () => {
  const q = encodeQuery(7, 'x.test', 16);
  const reply = (rcode: number, an: Buffer[], ns: Buffer[]): Buffer => {
    const h = Buffer.from(q.subarray(0, 12));
    h[2] = 0x81;
    h[3] = 0x80 | rcode;
    h.writeUInt16BE(an.length, 6);
    h.writeUInt16BE(ns.length, 8);
    h.writeUInt16BE(0, 10);
    return Buffer.concat([h, q.subarray(12, q.length - 11), ...an, ...ns]);
  };
  const rr = (type: number, ttl: number, rdata: Buffer): Buffer => {
    const b = Buffer.alloc(12);
    b.writeUInt16BE(0xc00c, 0);
    b.writeUInt16BE(type, 2);
    b.writeUInt16BE(1, 4);
    b.writeUInt32BE(ttl, 6);
    b.writeUInt16BE(rdata.length, 10);
    return Buffer.concat([b, rdata]);
  };
  const soa = Buffer.concat([Buffer.from([0, 0]), Buffer.alloc(20)]);
  soa.writeUInt32BE(30, soa.length - 4);
  assert.throws(() => parseReply(reply(3, [], [rr(6, 900, soa)]), 7, 'x.test', 16), (e: { code: string; ttl: number }) => e.code === 'ENOTFOUND' && e.ttl === 30);
  assert.throws(() => parseReply(reply(0, [], [rr(6, 20, soa)]), 7, 'x.test', 16), (e: { code: string; ttl: number }) => e.code === 'ENODATA' && e.ttl === 20);
  const good = reply(0, [rr(16, 50, Buffer.from('\x05hello\x03you', 'latin1'))], []);
  assert.deepEqual(parseReply(good, 7, 'x.test', 16), { records: [['hello', 'you']], ttl: 50 });
  // Every cut of a good reply, a TXT string longer than its record, a pointer loop, another id.
  for (let n = 0; n < good.length; n++) assert.throws(() => parseReply(good.subarray(0, n), 7, 'x.test', 16), { code: 'EBADRESP' });
  assert.throws(() => parseReply(reply(0, [rr(16, 50, Buffer.from('\x09hi', 'latin1'))], []), 7, 'x.test', 16), { code: 'EBADRESP' });
  const loop = reply(0, [rr(16, 50, Buffer.from('\x01a'))], []);
  loop.writeUInt16BE(0xc000 | (loop.length - 14), loop.length - 14);
  assert.throws(() => parseReply(loop, 7, 'x.test', 16), { code: 'EBADRESP' });
  assert.throws(() => parseReply(good, 8, 'x.test', 16), { code: 'EBADRESP' });
});

test('verdictFields: the checks\' note at the end of the client text as auth and filter fields; a HELO that imitates it is never read', () => {
  assert.deepEqual(verdictFields('mx.example [192.0.2.1] (spf=pass dkim=none dmarc=fail (p=quarantine) arc=none; rspamd: add header 7.5/15 [BAD(7.5) R_SPF_ALLOW(-0.2)])'), {
    auth: { spf: 'pass', dkim: 'none', dmarc: 'fail', arc: 'none', dmarc_policy: 'quarantine' },
    filter: { action: 'add header', score: 7.5, required: 15, symbols: ['BAD(7.5)', 'R_SPF_ALLOW(-0.2)'] },
  });
  assert.deepEqual(verdictFields('h [192.0.2.1] (spf=softfail dkim=pass dmarc=none arc=pass)'), { auth: { spf: 'softfail', dkim: 'pass', dmarc: 'none', arc: 'pass' } });
  assert.deepEqual(verdictFields('h [192.0.2.1] (rspamd: not scanned (no answer within 20000 ms))'), { filter: { action: 'not scanned', error: 'no answer within 20000 ms' } });
  assert.deepEqual(verdictFields('h [192.0.2.1] (rspamd: no action -1.2/15 [])'), { filter: { action: 'no action', score: -1.2, required: 15, symbols: [] } });
  // Not checked: nothing. A forged HELO before the address, or a login, never counts.
  assert.deepEqual(verdictFields('h [192.0.2.1]'), {});
  assert.deepEqual(verdictFields('x (spf=pass dkim=pass dmarc=pass arc=none) [192.0.2.1]'), {});
  assert.deepEqual(verdictFields('x (spf=pass dkim=pass dmarc=pass arc=none [192.0.2.1] (authenticated as bob)'), {});
  assert.deepEqual(verdictFields('pickup'), {});
  assert.deepEqual(verdictFields(undefined), {});
});
