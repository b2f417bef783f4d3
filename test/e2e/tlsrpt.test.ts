// TLS reporting end to end (RFC 8460, issue 14): results recorded in a
// running Petrel, `petrel tlsrpt send` with the loopback DNS answering the
// _smtp._tls TXT records; the report is queued, delivered (to a local
// Maildir) and its gzip'd JSON checked against RFC 8460 §4.4. A day already
// sent is not sent again (CLI or the server's daily run), and without a
// server the command says so.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { simpleParser } from 'mailparser';
import { TlsRecorder } from '../../src/tlsrpt/recorder.js';
import { startDnsServer } from '../helpers/dns-server.js';
import { cleanup, freePort, startPetrel, tempDir, waitFor } from '../helpers/petrel-harness.js';
import { runCli } from '../helpers/run-cli.js';
import { startPeer } from '../helpers/test-peer.js';

const STS = ['version: STSv1', 'mode: testing', 'mx: mx.rcpt.example', 'max_age: 604800'];

function maildirFiles(dir: string): string[] {
  const d = join(dir, 'var', 'mail', 'reports.example', 'tls', 'new');
  return existsSync(d) ? readdirSync(d).map((f) => join(d, f)) : [];
}

test('petrel tlsrpt send: the report reaches the rua address as RFC 8460 §5.3 mail; once per day', async () => {
  const dns = await startDnsServer({
    '_smtp._tls.rcpt.example': { TXT: ['v=TLSRPTv1; rua=mailto:tls@reports.example,https://reports.example/tlsrpt'] },
    '_smtp._tls.quiet.example': 'NXDOMAIN',
  });
  const dir = tempDir('petrel-tlsrpt-e2e-');
  const adminPort = await freePort();
  const p = await startPetrel(`[delivery]\ndns_servers = ["${dns.address}"]\n[local]\ndomains = ["reports.example"]\n[tlsrpt]\norganization = "Petrel Test Org"\n[admin]\nlisten = "127.0.0.1:${adminPort}"\n`, {}, dir);
  const cfg = join(dir, 'petrel.toml');
  try {
    const today = new Date().toISOString().slice(0, 10);
    const rec = p.petrel.tlsRecorder;
    rec.record({ policy: 'sts', policyDomain: 'rcpt.example', mx: 'mx.rcpt.example', receivingIp: '192.0.2.10', sendingIp: '127.0.0.1', success: true, policyText: STS });
    rec.record({ policy: 'sts', policyDomain: 'rcpt.example', mx: 'mx.rcpt.example', receivingIp: '192.0.2.10', sendingIp: '127.0.0.1', success: false, policyText: STS, failure: { policy: 'sts', policyDomain: 'rcpt.example', type: 'certificate-expired', detail: 'certificate of mx.rcpt.example expired' } });
    rec.record({ policy: 'opportunistic', policyDomain: 'quiet.example', mx: 'mx.quiet.example', receivingIp: '192.0.2.20', success: true });

    const r = await runCli(['tlsrpt', 'send', '--date', today, '--config', cfg]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`${today}  rcpt\\.example  QUEUED  [0-9A-Z]{16}  to tls@reports\\.example: .*https: URIs skipped`));
    assert.match(r.stdout, /quiet\.example  NO-RUA: not sent: no v=TLSRPTv1/);

    const file = await waitFor(() => maildirFiles(dir)[0], 30_000, 'the report in the Maildir');
    const mail = await simpleParser(readFileSync(file));
    assert.equal(mail.subject, `Report Domain: rcpt.example Submitter: Petrel Test Org Report-ID: <${today}.rcpt.example@petrel.test>`);
    assert.equal(mail.headers.get('tls-report-domain'), 'rcpt.example');
    assert.equal(mail.headers.get('tls-report-submitter'), 'Petrel Test Org');
    assert.equal((mail.headers.get('content-type') as { params: Record<string, string> }).params['report-type'], 'tlsrpt');
    assert.match(readFileSync(file, 'latin1'), /^Return-Path: <>\r?$/m);
    const part = mail.attachments.find((a) => a.contentType === 'application/tlsrpt+gzip');
    assert.ok(part, 'an application/tlsrpt+gzip part');
    assert.match(part.filename!, new RegExp(`^petrel\\.test!rcpt\\.example!\\d{10}!\\d{10}!001\\.json\\.gz$`));
    const report = JSON.parse(gunzipSync(part.content).toString('utf8'));
    assert.equal(report['organization-name'], 'Petrel Test Org');
    assert.equal(report['contact-info'], 'postmaster@petrel.test');
    assert.equal(report['report-id'], `${today}.rcpt.example@petrel.test`);
    assert.deepEqual(report['date-range'], { 'start-datetime': `${today}T00:00:00Z`, 'end-datetime': `${today}T23:59:59Z` });
    assert.equal(report.policies.length, 1);
    assert.deepEqual(report.policies[0].policy, { 'policy-type': 'sts', 'policy-string': STS, 'policy-domain': 'rcpt.example', 'mx-host': ['mx.rcpt.example'] });
    assert.deepEqual(report.policies[0].summary, { 'total-successful-session-count': 1, 'total-failure-session-count': 1 });
    assert.deepEqual(report.policies[0]['failure-details'], [{ 'result-type': 'certificate-expired', 'sending-mta-ip': '127.0.0.1', 'receiving-mx-hostname': 'mx.rcpt.example', 'receiving-ip': '192.0.2.10', 'failed-session-count': 1, 'failure-reason-code': 'certificate of mx.rcpt.example expired' }]);
    // The queued report carried the marker the SMTP agent uses to skip TLS reporting on it.
    await waitFor(() => p.events().some((e) => e.event === 'received' && e.recipient === 'tls@reports.example' && e.remote === 'tlsrpt' && e.sender === ''), 10_000, 'the report\'s received event, client "tlsrpt", sender <>');

    // Today is not over: sending it again is allowed (not remembered as sent).
    assert.match((await runCli(['tlsrpt', 'send', '--date', today, '--config', cfg])).stdout, /rcpt\.example  QUEUED/);
    await waitFor(() => maildirFiles(dir).length === 2, 30_000, 'the second report');

    // Yesterday, counted by another recorder on the same data_dir: sent once, by the CLI; the daily run then has nothing to do.
    const yesterday = new Date(Date.now() - 86_400_000).toISOString().slice(0, 10);
    const old = new TlsRecorder({ dir: join(dir, 'var', 'tlsrpt'), flushMs: 0, now: () => Date.parse(`${yesterday}T10:00:00Z`) });
    old.record({ policy: 'sts', policyDomain: 'rcpt.example', mx: 'mx.rcpt.example', receivingIp: '192.0.2.10', success: true, policyText: STS });
    await old.close();
    const first = await runCli(['tlsrpt', 'send', '--config', cfg, '--json']);
    assert.equal(first.code, 0, first.stderr);
    const j = JSON.parse(first.stdout) as { date: string; reports: { domain: string; status: string }[] };
    assert.equal(j.date, yesterday);
    assert.deepEqual(j.reports.map((x) => [x.domain, x.status]), [['rcpt.example', 'queued']]);
    const again = await runCli(['tlsrpt', 'send', '--date', yesterday, '--config', cfg]);
    assert.match(again.stdout, /rcpt\.example  ALREADY-SENT/);
    assert.deepEqual(await p.petrel.tlsReports.sendDue(), []);
    await waitFor(() => maildirFiles(dir).length === 3, 30_000, 'yesterday\'s report');
    const forced = await runCli(['tlsrpt', 'send', '--date', yesterday, '--force', '--config', cfg]);
    assert.match(forced.stdout, /rcpt\.example  QUEUED/);

    // Usage errors.
    assert.equal((await runCli(['tlsrpt', 'send', '--date', 'yesterday', '--config', cfg])).code, 64);
    assert.equal((await runCli(['tlsrpt', 'frobnicate', '--config', cfg])).code, 64);
    const future = await runCli(['tlsrpt', 'send', '--date', '2999-01-01', '--config', cfg]);
    assert.notEqual(future.code, 0);
    assert.match(future.stderr, /future/);
  } finally {
    await p.stop();
    await dns.close();
  }
  // No server: the command says so.
  const down = await runCli(['tlsrpt', 'send', '--config', cfg]);
  assert.equal(down.code, 69, down.stdout + down.stderr);
  assert.match(down.stderr, /running server/);
  cleanup(dir);
});

test('the server path: a report to a remote rua goes over SMTP to the MX the loopback DNS names, from <>', async () => {
  const peer = await startPeer();
  const dns = await startDnsServer({
    '_smtp._tls.rcpt2.example': { TXT: ['v=TLSRPTv1;rua=mailto:tlsrpt@reports.far.example'] },
    'reports.far.example': { MX: [[10, 'mx.reports.far.example']] },
    'mx.reports.far.example': { A: ['127.0.0.1'] },
  });
  const p = await startPetrel(`[delivery]\ndns_servers = ["${dns.address}"]\nsmtp_port = ${peer.port}\n`);
  try {
    const today = new Date().toISOString().slice(0, 10);
    for (let i = 0; i < 3; i++) p.petrel.tlsRecorder.record({ policy: 'tlsa', policyDomain: 'rcpt2.example', mx: 'mx.rcpt2.example', receivingIp: '192.0.2.30', success: i > 0, policyText: ['3 1 1 AABBCC'], ...(i === 0 ? { failure: { policy: 'tlsa', policyDomain: 'rcpt2.example', type: 'tlsa-invalid' as const, detail: 'no TLSA record matches' } } : {}) });
    const sent = await p.petrel.tlsReports.sendDay(today);
    assert.deepEqual(sent.map((e) => [e.domain, e.status, e.to]), [['rcpt2.example', 'queued', ['tlsrpt@reports.far.example']]]);
    const tx = await waitFor(() => peer.transactions.find((t) => t.completed), 30_000, 'the report at the peer');
    assert.equal(tx.sender, '');
    assert.deepEqual(tx.accepted, ['tlsrpt@reports.far.example']);
    const mail = await simpleParser(tx.body);
    assert.equal(mail.headers.get('tls-report-domain'), 'rcpt2.example');
    assert.equal(mail.headers.get('tls-report-submitter'), 'petrel.test');
    const report = JSON.parse(gunzipSync(mail.attachments.find((a) => a.contentType === 'application/tlsrpt+gzip')!.content).toString('utf8'));
    assert.equal(report['organization-name'], 'petrel.test', 'organization defaults to hostname');
    assert.deepEqual(report.policies[0].policy, { 'policy-type': 'tlsa', 'policy-string': ['3 1 1 AABBCC'], 'policy-domain': 'rcpt2.example' });
    assert.deepEqual(report.policies[0].summary, { 'total-successful-session-count': 2, 'total-failure-session-count': 1 });
    assert.equal(report.policies[0]['failure-details'][0]['result-type'], 'tlsa-invalid');
  } finally {
    await p.stop();
    await dns.close();
    await peer.close();
    cleanup(p.dir);
  }
});
