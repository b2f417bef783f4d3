// REQUIRETLS (RFC 8689) end to end on loopback: Petrel offers and accepts it
// only over TLS (530 5.7.10 otherwise); a REQUIRETLS message is relayed with
// REQUIRETLS to a hop that offers it over TLS; a hop without TLS, or over TLS
// without REQUIRETLS (the scriptable peer, and a real Postfix, which has no
// REQUIRETLS), fails the recipient 5.7.10 with a report, and the report
// itself is sent without REQUIRETLS; "TLS-Required: No" is kept with the
// message. (Issue 14. "Verified" is the outbound TLS outcome: a route with
// tls = "verify" whose certificate checks, or MTA-STS/DANE; opportunistic
// TLS, unverified, fails a REQUIRETLS message 5.7.10.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SmtpTalk, replyLine } from '../helpers/smtp-talk.js';
import { startPetrel, waitFor, cleanup, tempDir, type InProcess } from '../helpers/petrel-harness.js';
import { startPeer, testCertificate, type TestPeer } from '../helpers/test-peer.js';
import { launchPostfix } from '../helpers/postfix.js';

const MESSAGE = 'From: alice@sender.test\r\nTo: bob@dest.test\r\nSubject: secret\r\nMessage-ID: <rt-1@sender.test>\r\n\r\nthe secret\r\n';

/**
 * petrelWithRoutes - Petrel relaying each domain to its peer; sender.test (where reports go) to `mailbox`.
 * `verify`: the routes go to "localhost" with tls = "verify", trusting the peers' certificate
 * (testCertificate, CN=localhost): verified TLS, which a REQUIRETLS message needs.
 */
function petrelWithRoutes(routes: Record<string, number>, verify = false): Promise<InProcess> {
  const r = Object.entries(routes)
    .map(([domain, port]) => `[[routes]]\ndomain = "${domain}"\nvia = "smtp:${verify ? 'localhost' : '127.0.0.1'}:${port}"\n${verify ? 'tls = "verify"\n' : ''}`)
    .join('');
  if (!verify) return startPetrel(`[local]\ndomains = []\n${r}`);
  const dir = tempDir(); // Petrel's own directory: cleanup(p.dir) removes the trust anchor with it
  writeFileSync(join(dir, 'ca.pem'), testCertificate().cert);
  return startPetrel(`[local]\ndomains = []\n[delivery]\ntls_ca_file = "${join(dir, 'ca.pem')}"\n${r}`, {}, dir);
}

/** sendSecure - EHLO, STARTTLS, EHLO, then one transaction; MAIL FROM gets `params`. */
async function sendSecure(port: number, to: string[], params: string, message = MESSAGE): Promise<string> {
  const t = await SmtpTalk.open(port);
  try {
    await t.read();
    await t.cmd('EHLO client.test');
    await t.startTls();
    await t.cmd('EHLO client.test');
    const mail = await t.cmd(`MAIL FROM:<alice@sender.test>${params}`);
    assert.equal(mail.code, 250, replyLine(mail));
    for (const rcpt of to) assert.equal((await t.cmd(`RCPT TO:<${rcpt}>`)).code, 250);
    assert.equal((await t.cmd('DATA')).code, 354);
    t.write(message + '.\r\n');
    const r = (await t.read(30_000))!;
    assert.equal(r.code, 250, replyLine(r));
    await t.cmd('QUIT');
    return /queued as (\S+)/.exec(r.lines.join(' '))![1]!;
  } finally {
    t.close();
  }
}

test('REQUIRETLS is advertised only after STARTTLS; MAIL FROM REQUIRETLS without TLS gets 530 5.7.10', async () => {
  const p = await petrelWithRoutes({});
  try {
    const t = await SmtpTalk.open(p.port);
    await t.read();
    const ehlo = await t.cmd('EHLO client.test');
    assert.ok(!ehlo.lines.includes('REQUIRETLS'), ehlo.lines.join(','));
    const refused = await t.cmd('MAIL FROM:<alice@sender.test> REQUIRETLS');
    assert.equal(`${refused.code} ${refused.enhanced}`, '530 5.7.10', replyLine(refused));
    // The refusal leaves no transaction behind: a plain MAIL is fine.
    assert.equal((await t.cmd('MAIL FROM:<alice@sender.test>')).code, 250);
    await t.cmd('RSET');
    await t.startTls();
    const secure = await t.cmd('EHLO client.test');
    assert.ok(secure.lines.includes('REQUIRETLS'), secure.lines.join(','));
    assert.equal((await t.cmd('MAIL FROM:<alice@sender.test> REQUIRETLS')).code, 250);
    await t.cmd('QUIT');
    t.close();
  } finally {
    await p.stop();
    cleanup(p.dir);
  }
});

test('a REQUIRETLS message is relayed with REQUIRETLS, over TLS, to a hop that offers it; other mail without', async () => {
  const hop = await startPeer({ starttls: true, requireTls: true });
  const p = await petrelWithRoutes({ 'dest.test': hop.port }, true);
  try {
    await sendSecure(p.port, ['bob@dest.test'], ' REQUIRETLS');
    await sendSecure(p.port, ['carol@dest.test'], '');
    await waitFor(() => hop.delivered().length === 2, 15_000, 'both relayed');
    const secret = hop.transactions.find((x) => x.completed && x.accepted.includes('bob@dest.test'))!;
    const plain = hop.transactions.find((x) => x.completed && x.accepted.includes('carol@dest.test'))!;
    assert.ok(secret.mailParams.includes('REQUIRETLS'), secret.mailParams.join(' '));
    assert.ok(!plain.mailParams.includes('REQUIRETLS'), plain.mailParams.join(' '));
    assert.equal(hop.connections.find((c) => c.id === secret.connection)!.tls, true);
    await waitFor(() => p.events().filter((e) => e.event === 'delivered').length === 2, 10_000, 'two delivered events');
  } finally {
    await p.stop();
    await hop.close();
    cleanup(p.dir);
  }
});

/** reportsTo - the reports the mailbox peer got: null sender, never REQUIRETLS, over a connection without TLS. */
function reportsIn(mailbox: TestPeer): string[] {
  return mailbox.transactions
    .filter((x) => x.completed)
    .map((x) => {
      assert.equal(x.sender, '', 'a report comes from <>');
      assert.ok(!x.mailParams.includes('REQUIRETLS'), 'a report is not a REQUIRETLS message');
      return x.body.toString('latin1');
    });
}

test('hops without TLS, or over TLS without REQUIRETLS, fail the recipient 5.7.10; the report goes out without REQUIRETLS', async () => {
  const noTls = await startPeer({});
  const noRequireTls = await startPeer({ starttls: true });
  const mailbox = await startPeer({});
  const p = await petrelWithRoutes({ 'plain.test': noTls.port, 'tls.test': noRequireTls.port, 'sender.test': mailbox.port });
  try {
    await sendSecure(p.port, ['bob@plain.test', 'carol@tls.test'], ' REQUIRETLS RET=FULL');
    await waitFor(() => p.events().filter((e) => e.event === 'failed').length === 2, 15_000, 'both failed');
    const failed = p.events().filter((e) => e.event === 'failed');
    for (const e of failed) assert.equal(e.status, '5.7.10', JSON.stringify(e));
    // Petrel's own decision, not a reply of the hop: the text is the event's `error`.
    assert.match(failed.find((e) => e.recipient === 'bob@plain.test')!.error ?? '', /REQUIRETLS.*no verified TLS/);
    assert.match(failed.find((e) => e.recipient === 'carol@tls.test')!.error ?? '', /REQUIRETLS.*does not offer REQUIRETLS/);
    // Nothing of the message reached either hop.
    assert.equal(noTls.transactions.length, 0);
    assert.equal(noRequireTls.transactions.length, 0);
    assert.equal(noRequireTls.connections[0]?.tls, true, 'the hop was reached over TLS');
    await waitFor(() => mailbox.delivered().length === 1, 15_000, 'the report');
    const [report] = reportsIn(mailbox);
    assert.match(report!, /Status: 5\.7\.10/);
    assert.match(report!, /Final-Recipient: rfc822; ?bob@plain\.test/);
    assert.match(report!, /Final-Recipient: rfc822; ?carol@tls\.test/);
    // Sent without REQUIRETLS, the report returns the original's headers only, whatever RET says.
    assert.match(report!, /Content-Type: text\/rfc822-headers/i);
    assert.match(report!, /Message-ID: <rt-1@sender\.test>/);
    assert.ok(!report!.includes('the secret'), 'the body is not returned');
  } finally {
    await p.stop();
    for (const x of [noTls, noRequireTls, mailbox]) await x.close();
    cleanup(p.dir);
  }
});

test('a real Postfix (STARTTLS, no REQUIRETLS): the REQUIRETLS message fails 5.7.10 with a report, plain mail is delivered', async () => {
  const certDir = mkdtempSync(join(tmpdir(), 'petrel-rt-cert-'));
  chmodSync(certDir, 0o755);
  const { key, cert } = testCertificate();
  writeFileSync(join(certDir, 'cert.pem'), cert, { mode: 0o644 });
  writeFileSync(join(certDir, 'key.pem'), key, { mode: 0o600 });
  const launched = await launchPostfix({
    prefix: 'petrel-postfix-rt-',
    hostname: 'postfix.interop.test',
    main: [
      'relay_domains = static:ALL',
      'smtpd_recipient_restrictions = permit_mynetworks, reject',
      'default_transport = discard:',
      'relay_transport = discard:',
      'local_transport = discard:',
      'smtpd_tls_security_level = may',
      `smtpd_tls_cert_file = ${join(certDir, 'cert.pem')}`,
      `smtpd_tls_key_file = ${join(certDir, 'key.pem')}`,
      'smtpd_tls_loglevel = 1',
    ],
  });
  const pf = { ...launched, log: (): string[] => (existsSync(launched.maillog) ? readFileSync(launched.maillog, 'utf8').split('\n') : []) };
  const mailbox = await startPeer({});
  const p = await petrelWithRoutes({ 'postfix.test': pf.port, 'sender.test': mailbox.port });
  try {
    await sendSecure(p.port, ['bob@postfix.test'], ' REQUIRETLS');
    await sendSecure(p.port, ['carol@postfix.test'], '');
    await waitFor(() => p.events().some((e) => e.event === 'failed') && p.events().some((e) => e.event === 'delivered' && e.recipient === 'carol@postfix.test'), 30_000, 'both outcomes');
    const failed = p.events().find((e) => e.event === 'failed')!;
    assert.equal(failed.recipient, 'bob@postfix.test');
    assert.equal(failed.status, '5.7.10');
    assert.match(failed.error ?? '', /does not offer REQUIRETLS/, 'Postfix was reached over TLS');
    await waitFor(() => pf.log().some((l) => l.includes('to=<carol@postfix.test>') && l.includes('status=sent')), 15_000, 'Postfix delivered carol');
    assert.ok(!pf.log().some((l) => l.includes('bob@postfix.test')), 'nothing for bob reached Postfix');
    await waitFor(() => mailbox.delivered().length === 1, 15_000, 'the report');
    assert.match(reportsIn(mailbox)[0]!, /Status: 5\.7\.10/);
  } finally {
    await p.stop();
    await mailbox.close();
    await pf.stop();
    rmSync(certDir, { recursive: true, force: true });
    cleanup(p.dir);
  }
});

test('"TLS-Required: No" is kept with the message, unless it came with REQUIRETLS (RFC 8689 §4.1)', async () => {
  const later = await startPeer({ starttls: true, requireTls: true, rcptReply: () => '450 4.2.0 try later' });
  const p = await petrelWithRoutes({ 'dest.test': later.port }, true);
  try {
    const withHeader = MESSAGE.replace('Subject: secret', 'Subject: secret\r\nTLS-Required: No');
    const a = await sendSecure(p.port, ['bob@dest.test'], '', withHeader);
    const b = await sendSecure(p.port, ['bob@dest.test'], ' REQUIRETLS', withHeader);
    const c = await sendSecure(p.port, ['bob@dest.test'], '');
    const flags = async (qid: string) => {
      const m = await p.petrel.store.getMessage(qid);
      return [m?.requireTls, m?.tlsRequiredNo];
    };
    assert.deepEqual(await flags(a), [false, true]);
    assert.deepEqual(await flags(b), [true, false]);
    assert.deepEqual(await flags(c), [false, false]);
  } finally {
    await p.stop();
    await later.close();
    cleanup(p.dir);
  }
});
