// End to end: SPF, DKIM, DMARC and ARC on mail from outside (issue 15). A
// real Petrel on loopback, with relay_networks not covering 127.0.0.1 (so
// loopback clients are "outside"), asks the loopback DNS server for every
// record: pass, fail, softfail, temperror (a name that never answers),
// p=reject refused at the end of data with nothing kept, p=none and
// p=quarantine tagged, a forged Authentication-Results: removed, an ARC
// chain from a trusted sealer overriding p=reject. p=quarantine failures go
// to the junk folder (maildir/dom/user/.Junk), a sender's own X-Petrel-Junk:
// is removed. A second Petrel with spf_fail = "reject" gives 550 5.7.23 and,
// on a DNS failure, 451 4.7.24; its junk_folder = "" keeps junk in the inbox.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { dkimSign, sealMessage } from 'mailauth';
import { startDnsServer, type DnsEntry, type DnsServer } from '../helpers/dns-server.js';
import { SmtpTalk, replyLine } from '../helpers/smtp-talk.js';
import { cleanup, startPetrel, waitFor, type InProcess } from '../helpers/petrel-harness.js';

const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 1024 });
const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const dkimTxt = `v=DKIM1; k=rsa; p=${publicKey.export({ type: 'spki', format: 'der' }).toString('base64')}`;

function message(from: string, subject: string, extra = ''): string {
  return `${extra}From: <${from}>\r\nTo: <bob@local.test>\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@sender>\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\n\r\nHello Bob,\r\nthis is ${subject}.\r\n`;
}

async function signed(domain: string, text: string): Promise<string> {
  const r = await dkimSign(text, { signatureData: [{ signingDomain: domain, selector: 's1', privateKey: keyPem }] } as never);
  return r.signatures + text;
}

async function sealed(sealer: string, text: string): Promise<string> {
  const headers = await sealMessage(text, { signingDomain: sealer, selector: 's1', privateKey: keyPem, authResults: `${sealer}; spf=pass smtp.mailfrom=orig.test; dkim=pass header.d=orig.test`, cv: 'none' } as never);
  return headers.toString() + text;
}

const TABLE: Record<string, DnsEntry> = {
  'pass.test': { TXT: ['v=spf1 ip4:127.0.0.1 -all'] },
  '_dmarc.pass.test': { TXT: ['v=DMARC1; p=reject'] },
  's1._domainkey.pass.test': { TXT: [dkimTxt] },
  'rej.test': { TXT: ['v=spf1 ip4:192.0.2.1 -all'] },
  '_dmarc.rej.test': { TXT: ['v=DMARC1; p=reject'] },
  'soft.test': { TXT: ['v=spf1 ~all'] },
  'none.test': { TXT: ['v=spf1 -all'] },
  '_dmarc.none.test': { TXT: ['v=DMARC1; p=none'] },
  's1._domainkey.none.test': { TXT: [dkimTxt] },
  'quar.test': { TXT: ['v=spf1 -all'] },
  '_dmarc.quar.test': { TXT: ['v=DMARC1; p=quarantine'] },
  'spfpass.test': { TXT: ['v=spf1 ip4:127.0.0.1 -all'] },
  // Over 64 K characters of TXT (quotes double in JSON): too big to be trusted or kept.
  'huge.test': { TXT: Array.from({ length: 200 }, (_, i) => `v=spf1 ${i} ${'"'.repeat(200)}`) },
  'slow.test': 'SILENT',
  'dtemp.test': { TXT: ['v=spf1 -all'] },
  '_dmarc.dtemp.test': 'SILENT',
  'broken.test': { TXT: ['v=spf1 ip4:not-an-address include: -all'] },
  '_dmarc.broken.test': { TXT: ['v=DMARC1; p=bogus; pct=abc'] },
  's1._domainkey.lists.test': { TXT: [dkimTxt] },
  's1._domainkey.other.test': { TXT: [dkimTxt] },
};

/** maildirFiles - the messages in bob's inbox, or in one of his Maildir++ folders. */
function maildirFiles(p: InProcess, folder = ''): string[] {
  const dir = join(p.dir, 'var', 'mail', 'local.test', 'bob', folder ? `.${folder}` : '', 'new');
  return existsSync(dir) ? readdirSync(dir).map((f) => readFileSync(join(dir, f), 'latin1').replace(/\r?\n/g, '\r\n')) : [];
}

/** delivered - the stored copy of the message whose Subject is `subject`, once delivered. */
async function delivered(p: InProcess, subject: string, folder = ''): Promise<string> {
  return waitFor(() => maildirFiles(p, folder).find((m) => m.includes(`Subject: ${subject}\r\n`)), 10_000, `delivery of ${subject}`);
}

/** head - the top of the message up to the first blank line, unfolded. */
function head(m: string): string {
  return m.slice(0, m.indexOf('\r\n\r\n')).replace(/\r\n[ \t]+/g, ' ');
}

describe('inbound authentication checks', () => {
  let dns: DnsServer;
  let p: InProcess;
  let strict: InProcess;

  before(async () => {
    dns = await startDnsServer({ ...TABLE });
    const common = `[smtp]
listen = ["127.0.0.1:0"]
relay_networks = ["10.0.0.0/8"]
[local]
domains = ["local.test"]
[delivery]
dns_servers = ["${dns.address}"]
`;
    p = await startPetrel(`${common}[checks]
authenticate = true
dns_timeout = "300ms"
arc_trusted = ["lists.test"]
`);
    strict = await startPetrel(`${common.replace('relay_networks = ["10.0.0.0/8"]', 'relay_networks = ["10.0.0.0/8"]\nmax_message_size = "300KB"')}[checks]
authenticate = true
spf_fail = "reject"
dns_timeout = "300ms"
junk_folder = ""
`);
  });
  after(async () => {
    await p.stop();
    await strict.stop();
    await dns.close();
    cleanup(p.dir);
    cleanup(strict.dir);
  });

  async function send(target: InProcess, from: string, text: string, helo = 'client.test'): Promise<string> {
    const t = await SmtpTalk.open(target.port);
    await t.read();
    await t.cmd(`EHLO ${helo}`);
    const r = await t.send(from, ['bob@local.test'], text);
    t.close();
    return replyLine(r);
  }

  test('SPF pass, DKIM pass, DMARC pass: accepted with our Authentication-Results after Received:', async () => {
    const r = await send(p, 'alice@pass.test', await signed('pass.test', message('alice@pass.test', 'all pass')));
    assert.match(r, /^250 2\.0\.0/);
    const m = head(await delivered(p, 'all pass'));
    // Maildir delivery puts Return-Path: and Delivered-To: above what was stored.
    assert.match(m, /^Return-Path: <alice@pass\.test>\r\nDelivered-To: bob@local\.test\r\nReceived: from client\.test .*\r\nReceived-SPF: pass .*\r\nAuthentication-Results: /);
    assert.match(m, /Authentication-Results: petrel\.test; dkim=pass header\.i=@pass\.test/);
    assert.match(m, /spf=pass \(petrel\.test: domain of alice@pass\.test designates 127\.0\.0\.1/);
    assert.match(m, /dmarc=pass/);
    assert.match(m, /Received-SPF: pass/);
    assert.ok(m.indexOf('Received: from') < m.indexOf('Authentication-Results:'));
    const ev = p.events().find((e) => e.event === 'received' && e.remote?.includes('spf=pass dkim=pass dmarc=pass'));
    assert.ok(ev, 'the received event carries the verdict');
    assert.deepEqual({ ...ev.auth, dmarc_policy: undefined }, { spf: 'pass', dkim: 'pass', dmarc: 'pass', arc: 'none', dmarc_policy: undefined }, 'and as the auth field');
  });

  test('DMARC fail with p=reject: 550 5.7.1 at end of data, nothing kept', async () => {
    const before = p.events().filter((e) => e.event === 'received').length;
    const r = await send(p, 'mallory@rej.test', message('ceo@rej.test', 'forged ceo'));
    assert.match(r, /^550 5\.7\.1 Email rejected per DMARC policy for rej\.test/);
    await new Promise((res) => setTimeout(res, 200));
    assert.equal(p.events().filter((e) => e.event === 'received').length, before, 'no received event');
    assert.equal(maildirFiles(p).filter((m) => m.includes('forged ceo')).length, 0);
  });

  test('SPF softfail and no DMARC: accepted and tagged', async () => {
    assert.match(await send(p, 'x@soft.test', message('x@soft.test', 'soft one')), /^250 /);
    const m = head(await delivered(p, 'soft one'));
    assert.match(m, /spf=softfail/);
    assert.match(m, /dmarc=none/);
  });

  test('SPF fail and DKIM fail (body changed) with p=none: accepted, tagged fail', async () => {
    const text = (await signed('none.test', message('x@none.test', 'p none'))).replace('Hello Bob', 'Hello Eve');
    assert.match(await send(p, 'x@none.test', text), /^250 /);
    const m = head(await delivered(p, 'p none'));
    assert.match(m, /dkim=(fail|neutral) /);
    assert.match(m, /spf=fail/);
    assert.match(m, /dmarc=fail .*p=NONE/);
  });

  test('DMARC fail with p=quarantine: accepted with X-Petrel-DMARC, delivered to the Junk folder', async () => {
    assert.match(await send(p, 'x@quar.test', message('x@quar.test', 'quarantine me')), /^250 /);
    const m = head(await delivered(p, 'quarantine me', 'Junk'));
    assert.match(m, /X-Petrel-DMARC: quarantine \(policy of quar\.test\)/);
    assert.match(m, /\r\nX-Petrel-Junk: DMARC quarantine policy of quar\.test\r\n/);
    // A Maildir++ folder: its marker file, and the inbox around it is a valid Maildir.
    const bob = join(p.dir, 'var', 'mail', 'local.test', 'bob');
    assert.ok(existsSync(join(bob, '.Junk', 'maildirfolder')));
    for (const d of ['tmp', 'new', 'cur']) assert.ok(existsSync(join(bob, d)) && existsSync(join(bob, '.Junk', d)), d);
    assert.equal(maildirFiles(p).filter((x) => x.includes('quarantine me')).length, 0, 'not in the inbox');
  });

  test('a sender\'s own X-Petrel-Junk: is removed and the message goes to the inbox', async () => {
    const text = message('x@soft.test', 'claims junk', 'X-Petrel-Junk: forged\r\n x-continued\r\n');
    assert.match(await send(p, 'x@soft.test', text), /^250 /);
    const m = await delivered(p, 'claims junk');
    assert.doesNotMatch(m, /X-Petrel-Junk|x-continued/i);
    assert.equal(maildirFiles(p, 'Junk').filter((x) => x.includes('claims junk')).length, 0);
  });

  test('junk_folder = "": a p=quarantine failure is tagged and stays in the inbox', async () => {
    // SPF passes for spfpass.test (not aligned with From:), no DKIM: DMARC fails for quar.test.
    assert.match(await send(strict, 'x@spfpass.test', message('x@quar.test', 'quarantine inbox')), /^250 /);
    const m = head(await delivered(strict, 'quarantine inbox'));
    assert.match(m, /X-Petrel-Junk: DMARC quarantine policy of quar\.test/);
    assert.ok(!existsSync(join(strict.dir, 'var', 'mail', 'local.test', 'bob', '.Junk')));
  });

  test('SPF temperror (the DNS server never answers): accepted and tagged with spf_fail = "tag"', async () => {
    assert.match(await send(p, 'x@slow.test', message('x@slow.test', 'slow dns')), /^250 /);
    const m = head(await delivered(p, 'slow dns'));
    assert.match(m, /spf=temperror/);
  });

  test('an oversized DNS answer (SPF): temperror, accepted and tagged, no crash', async () => {
    assert.match(await send(p, 'x@huge.test', message('x@huge.test', 'huge answer')), /^250 /);
    const m = head(await delivered(p, 'huge answer'));
    assert.match(m, /spf=temperror/);
  });

  test('DMARC record lookup times out with dmarc_reject: 451 4.7.1, never a 5xx', async () => {
    assert.match(await send(p, 'x@dtemp.test', message('x@dtemp.test', 'dmarc dns')), /^451 4\.7\.1 /);
  });

  test('broken SPF and DMARC records: permerror / no policy, accepted, no crash', async () => {
    assert.match(await send(p, 'x@broken.test', message('x@broken.test', 'broken records')), /^250 /);
    const m = head(await delivered(p, 'broken records'));
    assert.match(m, /spf=permerror/);
  });

  test('a forged Authentication-Results: claiming our authserv-id is removed; others are kept', async () => {
    const forged = 'Authentication-Results: petrel.test;\r\n dkim=pass header.d=bank.example; dmarc=pass\r\nAuthentication-Results: (comment) PETREL.TEST.; spf=pass\r\nAuthentication-Results: upstream.example; spf=pass\r\n';
    assert.match(await send(p, 'x@soft.test', message('x@soft.test', 'forged results', forged)), /^250 /);
    const m = head(await delivered(p, 'forged results'));
    const ours = m.split('\r\n').filter((l) => /^Authentication-Results: \(?.*petrel\.test/i.test(l));
    assert.equal(ours.length, 1, ours.join('\n'));
    assert.doesNotMatch(m, /bank\.example/);
    assert.match(m, /Authentication-Results: upstream\.example; spf=pass/);
  });

  test('a valid ARC chain is reported; from a trusted sealer it overrides p=reject, from another it does not', async () => {
    const trusted = await sealed('lists.test', message('ceo@rej.test', 'via trusted list'));
    assert.match(await send(p, 'bounce@lists.test', trusted), /^250 /);
    const m = head(await delivered(p, 'via trusted list'));
    assert.match(m, /arc=pass/);
    assert.match(m, /X-Petrel-DMARC: reject policy of rej\.test overridden by the trusted ARC chain of lists\.test/);
    const other = await sealed('other.test', message('ceo@rej.test', 'via other list'));
    assert.match(await send(p, 'bounce@other.test', other), /^550 5\.7\.1 /);
  });

  test('spf_fail = "reject": SPF fail is 550 5.7.23, SPF temperror is 451 4.7.24, SPF pass accepted', async () => {
    assert.match(await send(strict, 'x@none.test', message('x@none.test', 'strict fail')), /^550 5\.7\.23 /);
    assert.match(await send(strict, 'x@slow.test', message('x@slow.test', 'strict slow')), /^451 4\.7\.24 /);
    assert.match(await send(strict, 'alice@pass.test', message('alice@pass.test', 'strict pass')), /^250 /);
  });

  test('a large message (held in a scratch file) is checked whole: DKIM passes; the scratch file is gone after', async () => {
    const big = message('alice@pass.test', 'big one').replace('Hello Bob,\r\n', `Hello Bob,\r\n${'0123456789abcdef'.repeat(4).concat('\r\n').repeat(20_000)}`);
    assert.match(await send(p, 'alice@pass.test', await signed('pass.test', big)), /^250 /);
    const m = await delivered(p, 'big one');
    assert.ok(m.length > 1_000_000);
    assert.match(head(m), /dkim=pass header\.i=@pass\.test/);
    const scratch = join(p.dir, 'var', 'tmp', 'checks');
    assert.deepEqual(existsSync(scratch) ? readdirSync(scratch) : [], []);
  });

  test('a client in relay_networks is not checked (no Authentication-Results:, no DNS questions)', async () => {
    const trusted = await startPetrel(`[smtp]
listen = ["127.0.0.1:0"]
[local]
domains = ["local.test"]
[delivery]
dns_servers = ["${dns.address}"]
[checks]
authenticate = true
`);
    try {
      const n = dns.queries.length;
      assert.match(await send(trusted, 'x@rej.test', message('ceo@rej.test', 'from inside')), /^250 /);
      const m = head(await delivered(trusted, 'from inside'));
      assert.doesNotMatch(m, /Authentication-Results|Received-SPF/);
      assert.equal(dns.queries.length, n);
    } finally {
      await trusted.stop();
      cleanup(trusted.dir);
    }
  });

  test('a held message over max_message_size is refused 552 5.3.4 and a NUL octet 554 5.6.0, nothing kept, no scratch file left', async () => {
    const big = message('alice@pass.test', 'too big').replace('Hello Bob,\r\n', `Hello Bob,\r\n${'x'.repeat(70).concat('\r\n').repeat(6000)}`);
    assert.match(await send(strict, 'alice@pass.test', big), /^552 5\.3\.4 /);
    assert.match(await send(strict, 'alice@pass.test', message('alice@pass.test', 'nul').replace('Hello Bob', 'Hello\u0000Bob')), /^554 5\.6\.0 /);
    await new Promise((res) => setTimeout(res, 200));
    assert.equal(maildirFiles(strict).filter((m) => /Subject: (too big|nul)\r\n/.test(m)).length, 0);
    const scratch = join(strict.dir, 'var', 'tmp', 'checks');
    assert.deepEqual(existsSync(scratch) ? readdirSync(scratch) : [], []);
  });

  test('DNS answers are cached: a second message from the same domain asks no more questions', async () => {
    await send(p, 'alice@pass.test', await signed('pass.test', message('alice@pass.test', 'cache one')));
    const n = dns.queries.length;
    await send(p, 'alice@pass.test', await signed('pass.test', message('alice@pass.test', 'cache two')));
    assert.equal(dns.queries.length, n);
  });
});
