// TLS reporting (RFC 8460, issue 14), the parts without a server: the
// recorder's counts and their bound, the day file read back (bad lines
// skipped), the _smtp._tls rua record, the §4.4 JSON and the §5.3 message
// (parsed by mailparser, the report gunzip'd).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { simpleParser } from 'mailparser';
import { TlsRecorder, type TlsResult } from '../../src/tlsrpt/recorder.js';
import { buildReport, readDay, reportFileName } from '../../src/tlsrpt/report.js';
import { parseTlsrptTxt } from '../../src/tlsrpt/rua.js';
import { buildReportMessage } from '../../src/tlsrpt/message.js';
import { isTlsReport, TLSRPT_CLIENT } from '../../src/tlsrpt/sender.js';
import { cleanup, tempDir } from '../helpers/petrel-harness.js';

const DAY = '2026-12-02';
const at = Date.parse(`${DAY}T12:00:00Z`);
const STS = ['version: STSv1', 'mode: enforce', 'mx: mx1.example.com', 'mx: *.mx.example.com', 'max_age: 86400'];

function results(): TlsResult[] {
  const ok: TlsResult = { policy: 'sts', policyDomain: 'example.com', mx: 'mx1.example.com', receivingIp: '192.0.2.1', sendingIp: '198.51.100.7', success: true, policyText: STS };
  const bad: TlsResult = { ...ok, mx: 'mx2.Example.com.', receivingIp: '192.0.2.2', success: false, failure: { policy: 'sts', policyDomain: 'example.com', type: 'certificate-host-mismatch', detail: 'certificate for other.example does not match mx2.example.com' } };
  const plain: TlsResult = { policy: 'opportunistic', policyDomain: 'example.com', mx: 'mx9.example.com', receivingIp: '192.0.2.9', success: true };
  return [ok, ok, ok, bad, bad, plain, { ...plain, policyDomain: 'other.example' }];
}

test('recorder: counts per day and policy, failure rows merged, written as JSON lines and read back', async () => {
  const dir = tempDir('petrel-tlsrpt-');
  try {
    const rec = new TlsRecorder({ dir, flushMs: 0, now: () => at });
    for (const r of results()) rec.record(r);
    await rec.flush();
    // A second flush adds to the same day.
    rec.record(results()[0]!);
    await rec.close();
    const lines = readFileSync(join(dir, `${DAY}.jsonl`), 'utf8').trim().split('\n');
    assert.equal(lines.length, 4);
    // A line cut short by a crash is skipped, not fatal.
    appendFileSync(join(dir, `${DAY}.jsonl`), '{"policy_type":"sts","policy_dom');
    const day = await readDay(dir, DAY);
    assert.equal(day.badLines, 1);
    const ex = day.domains.get('example.com')!;
    const sts = ex.find((l) => l.policy_type === 'sts')!;
    assert.deepEqual([sts.success, sts.failure], [4, 2]);
    assert.deepEqual(sts.failures, [{ result_type: 'certificate-host-mismatch', sending_mta_ip: '198.51.100.7', receiving_ip: '192.0.2.2', receiving_mx_hostname: 'mx2.example.com', failure_reason_code: 'certificate for other.example does not match mx2.example.com', count: 2 }]);
    const none = ex.find((l) => l.policy_type === 'no-policy-found')!;
    assert.deepEqual([none.success, none.failure, none.policy_string], [1, 0, []]);
    assert.ok(day.domains.has('other.example'));
    assert.deepEqual((await readDay(dir, '2026-12-01')).domains.size, 0);
  } finally {
    cleanup(dir);
  }
});

test('recorder: at most maxFailureRows failure rows per domain and day; every failure still counted', async () => {
  const dir = tempDir('petrel-tlsrpt-');
  try {
    const rec = new TlsRecorder({ dir, flushMs: 0, now: () => at, maxFailureRows: 3 });
    for (let i = 0; i < 10; i++) {
      rec.record({ policy: 'tlsa', policyDomain: 'example.com', mx: `mx${i}.example.com`, receivingIp: `192.0.2.${i}`, success: false, failure: { policy: 'tlsa', policyDomain: 'example.com', type: 'tlsa-invalid', detail: 'no match' }, policyText: ['3 1 1 abcd'] });
      if (i === 4) await rec.flush(); // the bound holds across flushes
    }
    await rec.close();
    const line = (await readDay(dir, DAY)).domains.get('example.com')![0]!;
    assert.equal(line.failure, 10);
    assert.equal(line.failures.length, 3);
    // Bad input never throws.
    rec.record({ policy: 'sts', policyDomain: '', mx: '', receivingIp: '', success: true });
    rec.record(null as unknown as TlsResult);
  } finally {
    cleanup(dir);
  }
});

test('rua: one v=TLSRPTv1 record; mailto addresses decoded; https skipped; several records or none: no reports', () => {
  assert.deepEqual(parseTlsrptTxt(['v=TLSRPTv1; rua=mailto:tls%2Breports@example.com?subject=x,https://r.example/tls,mailto:b@example.net']), { mailto: ['tls+reports@example.com', 'b@example.net'], skipped: ['https://r.example/tls'] });
  assert.deepEqual(parseTlsrptTxt(['v=spf1 -all', 'v=TLSRPTv1;rua=mailto:a@example.com']).mailto, ['a@example.com']);
  assert.match(parseTlsrptTxt([]).problem!, /no v=TLSRPTv1/);
  assert.match(parseTlsrptTxt(['v=TLSRPTv1; rua=mailto:a@x.example', 'v=TLSRPTv1; rua=mailto:b@x.example']).problem!, /2 v=TLSRPTv1/);
  assert.match(parseTlsrptTxt(['v=TLSRPTv1; rua=https://r.example/']).problem!, /https/);
  assert.match(parseTlsrptTxt(['v=TLSRPTv1; rua=mailto:not an address']).problem!, /no usable mailto/);
  assert.match(parseTlsrptTxt(['v=TLSRPTv1;']).problem!, /no rua/);
});

test('report JSON (§4.4) and message (§5.3): fields, subject, headers, gzip part and its file name', async () => {
  const dir = tempDir('petrel-tlsrpt-');
  try {
    const rec = new TlsRecorder({ dir, flushMs: 0, now: () => at });
    for (const r of results()) rec.record(r);
    await rec.close();
    const day = await readDay(dir, DAY);
    const ctx = { organization: 'Example Org', contact: 'postmaster@petrel.test', submitter: 'petrel.test', day: DAY };
    const report = buildReport(ctx, 'example.com', day.domains.get('example.com')!);
    assert.equal(report['organization-name'], 'Example Org');
    assert.deepEqual(report['date-range'], { 'start-datetime': '2026-12-02T00:00:00Z', 'end-datetime': '2026-12-02T23:59:59Z' });
    assert.equal(report['contact-info'], 'postmaster@petrel.test');
    assert.equal(report['report-id'], '2026-12-02.example.com@petrel.test');
    const sts = report.policies.find((p) => p.policy['policy-type'] === 'sts')!;
    assert.deepEqual(sts.policy, { 'policy-type': 'sts', 'policy-string': STS, 'policy-domain': 'example.com', 'mx-host': ['mx1.example.com', '*.mx.example.com'] });
    assert.deepEqual(sts.summary, { 'total-successful-session-count': 3, 'total-failure-session-count': 2 });
    assert.deepEqual(sts['failure-details'], [{ 'result-type': 'certificate-host-mismatch', 'sending-mta-ip': '198.51.100.7', 'receiving-mx-hostname': 'mx2.example.com', 'receiving-ip': '192.0.2.2', 'failed-session-count': 2, 'failure-reason-code': 'certificate for other.example does not match mx2.example.com' }]);
    const none = report.policies.find((p) => p.policy['policy-type'] === 'no-policy-found')!;
    assert.deepEqual(none.policy, { 'policy-type': 'no-policy-found', 'policy-domain': 'example.com' });
    assert.equal(none['failure-details'], undefined);

    const name = reportFileName(ctx, 'example.com');
    assert.equal(name, `petrel.test!example.com!${Date.parse('2026-12-02T00:00:00Z') / 1000}!${Date.parse('2026-12-03T00:00:00Z') / 1000}!001.json.gz`);
    const msg = buildReportMessage({ ...ctx, from: 'noreply-tlsrpt@petrel.test', to: ['tls@example.com'] }, 'example.com', report);
    const text = msg.data.toString('latin1');
    for (const line of text.split('\r\n')) assert.ok(line.length <= 998 && !line.includes('\n'));
    const parsed = await simpleParser(msg.data);
    assert.equal(parsed.subject, 'Report Domain: example.com Submitter: Example Org Report-ID: <2026-12-02.example.com@petrel.test>');
    assert.equal(parsed.headers.get('tls-report-domain'), 'example.com');
    assert.equal(parsed.headers.get('tls-report-submitter'), 'Example Org');
    assert.equal(parsed.headers.get('tls-required'), 'No');
    const ct = parsed.headers.get('content-type') as { value: string; params: Record<string, string> };
    assert.equal(ct.value, 'multipart/report');
    assert.equal(ct.params['report-type'], 'tlsrpt');
    const part = parsed.attachments.find((a) => a.contentType === 'application/tlsrpt+gzip')!;
    assert.equal(part.filename, name);
    assert.deepEqual(JSON.parse(gunzipSync(part.content).toString('utf8')), report);
  } finally {
    cleanup(dir);
  }
});

test('isTlsReport: only Petrel\'s own report messages queued by the TLS report sender', () => {
  assert.equal(isTlsReport({ client: TLSRPT_CLIENT, isReport: true }), true);
  assert.equal(isTlsReport({ client: 'tlsrpt', isReport: false }), false);
  assert.equal(isTlsReport({ client: 'dsn', isReport: true }), false);
  assert.equal(isTlsReport({ client: 'helo [127.0.0.1]', isReport: false }), false);
});

test('sender: the daily run sends due days once, retries a domain whose TXT look-up failed, and gives a day up after MAX_DAYS_BACK', async () => {
  const { parseConfigText } = await import('../../src/config/load.js');
  const { MemoryStore } = await import('../../src/queue/memory-store.js');
  const { Router } = await import('../../src/routing/router.js');
  const { Enqueuer } = await import('../../src/enqueue/enqueue.js');
  const { TlsReportSender, MAX_DAYS_BACK } = await import('../../src/tlsrpt/sender.js');
  const dir = tempDir('petrel-tlsrpt-');
  const store = new MemoryStore();
  await store.open();
  try {
    const config = parseConfigText(`hostname = "petrel.test"\ndata_dir = "${join(dir, 'var')}"\n`, 'x', dir);
    const enqueuer = new Enqueuer({ hostname: 'petrel.test', store, router: new Router(config) });
    let now = Date.parse('2026-12-03T08:00:00Z');
    const txt: Record<string, string[][] | 'SERVFAIL'> = { '_smtp._tls.a.example': [['v=TLSRPTv1; rua=mailto:r@a.example']], '_smtp._tls.b.example': 'SERVFAIL' };
    const lookups: string[] = [];
    const resolveTxt = async (name: string): Promise<string[][]> => {
      lookups.push(name);
      const v = txt[name];
      if (v === 'SERVFAIL') throw Object.assign(new Error('SERVFAIL'), { code: 'ESERVFAIL' });
      if (!v) throw Object.assign(new Error('ENOTFOUND'), { code: 'ENOTFOUND' });
      return v;
    };
    const sender = new TlsReportSender({ config, enqueuer, resolveTxt, now: () => now });
    const rec = new TlsRecorder({ dir: join(dir, 'var', 'tlsrpt'), flushMs: 0, now: () => Date.parse('2026-12-02T09:00:00Z') });
    for (const d of ['a.example', 'b.example', 'c.example']) rec.record({ policy: 'opportunistic', policyDomain: d, mx: `mx.${d}`, receivingIp: '192.0.2.1', success: true });
    await rec.close();

    let out = await sender.sendDue();
    assert.deepEqual(out.map((e) => [e.domain, e.status]), [['a.example', 'queued'], ['b.example', 'failed'], ['c.example', 'no-rua']]);
    const queued = await store.getMessage(out[0]!.queue_id!);
    assert.equal(queued?.client, 'tlsrpt');
    assert.equal(queued?.isReport, true);
    assert.equal(queued?.sender, '');
    // An hour later: only b is tried again; DNS is back.
    txt['_smtp._tls.b.example'] = [['v=TLSRPTv1; rua=mailto:r@b.example']];
    now += 3_600_000;
    lookups.length = 0;
    out = await sender.sendDue();
    assert.deepEqual(out.map((e) => [e.domain, e.status]), [['a.example', 'already-sent'], ['b.example', 'queued'], ['c.example', 'already-sent']]);
    assert.deepEqual(lookups, ['_smtp._tls.b.example']);
    // The day is complete: nothing more, even after a "restart" (a new sender on the same data_dir).
    now += 3_600_000;
    assert.deepEqual(await new TlsReportSender({ config, enqueuer, resolveTxt, now: () => now }).sendDue(), []);

    // A day whose domain never answers is given up after MAX_DAYS_BACK days.
    const rec2 = new TlsRecorder({ dir: join(dir, 'var', 'tlsrpt'), flushMs: 0, now: () => Date.parse('2026-12-03T09:00:00Z') });
    rec2.record({ policy: 'opportunistic', policyDomain: 'down.example', mx: 'mx.down.example', receivingIp: '192.0.2.1', success: true });
    await rec2.close();
    txt['_smtp._tls.down.example'] = 'SERVFAIL';
    let tries = 0;
    for (let day = 1; day <= MAX_DAYS_BACK + 1; day++) {
      now = Date.parse('2026-12-03T12:00:00Z') + day * 86_400_000;
      tries += (await sender.sendDue()).filter((e) => e.domain === 'down.example').length;
    }
    assert.equal(tries, MAX_DAYS_BACK, 'tried once a day for MAX_DAYS_BACK days, then given up');
  } finally {
    await store.close();
    cleanup(dir);
  }
});
