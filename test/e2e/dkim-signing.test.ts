// dkim-signing: DKIM signatures made by Petrel at enqueue (issue 14), checked
// by an independent verifier (Python's dkimpy) on the copy a real Postfix
// delivered to its mailbox: RSA-2048 and Ed25519 on the same message (the
// domain has both keys), From: oversigned, lines over 998 octets wrapped
// before signing; a message signed by someone else (dkimpy) keeps a valid
// signature, long lines included; mail from outside relay_networks is never
// signed; Petrel's own reports are signed with the key of the hostname's
// domain; a message from the pickup directory (petrel sendmail) is signed
// like submission mail.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPrivateKey } from 'node:crypto';
import { startPetrel, tempDir, waitFor } from '../helpers/petrel-harness.js';
import { launchPostfix } from '../helpers/postfix.js';
import { SmtpTalk, replyLine } from '../helpers/smtp-talk.js';
import { dkimpySign, dkimVerify } from '../helpers/dkimpy.js';
import { txtRecord } from '../../src/dkim/keys.js';

const INSIDE = '127.0.0.2';

function keyFile(dir: string, name: string, kind: 'rsa' | 'ed25519', pkcs1 = false): string {
  const pair = kind === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : generateKeyPairSync('ed25519');
  const pem = pair.privateKey.export({ type: pkcs1 ? 'pkcs1' : 'pkcs8', format: 'pem' }) as string;
  const path = join(dir, name);
  writeFileSync(path, pem, { mode: 0o600 });
  return path;
}

function record(path: string): string {
  return txtRecord(createPrivateKey(readFileSync(path, 'utf8')));
}

/** A mailbox Postfix delivers into (virtual(8), Maildir): each message as Postfix stored it. */
function mailbox(base: string): Buffer[] {
  const dir = join(base, 'box', 'new');
  return existsSync(dir) ? readdirSync(dir).map((f) => readFileSync(join(dir, f))) : [];
}

function find(messages: Buffer[], marker: string): Buffer | undefined {
  return messages.find((m) => m.includes(marker));
}

test('DKIM signing through Petrel to a real Postfix, verified by dkimpy', async (t) => {
  const keys = tempDir('petrel-dkim-keys-');
  const rsa = keyFile(keys, 'example.com.rsa.pem', 'rsa');
  const ed = keyFile(keys, 'example.com.ed.pem', 'ed25519');
  const host = keyFile(keys, 'petrel.test.pem', 'ed25519');
  const foreign = keyFile(keys, 'other.example.pem', 'rsa', true);
  const records: Record<string, string> = {
    'r2026._domainkey.example.com': record(rsa),
    'e2026._domainkey.example.com': record(ed),
    'h1._domainkey.petrel.test': record(host),
    'theirs._domainkey.other.example': record(foreign),
  };

  // Postfix delivers example.net and example.com to one Maildir (virtual(8)).
  const base = mkdtempSync(join(tmpdir(), 'petrel-dkim-box-'));
  const uid = Number(execFileSync('id', ['-u', 'postfix'], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', 'postfix'], { encoding: 'utf8' }).trim());
  mkdirSync(base, { recursive: true });
  chownSync(base, uid, gid);
  const pf = await launchPostfix({
    prefix: 'petrel-dkim-postfix-',
    hostname: 'postfix.dkim.test',
    main: [
      'virtual_mailbox_domains = example.net, example.com',
      `virtual_mailbox_base = ${base}`,
      'virtual_mailbox_maps = static:box/',
      `virtual_uid_maps = static:${uid}`,
      `virtual_gid_maps = static:${gid}`,
      'virtual_minimum_uid = 1',
      'smtpd_recipient_restrictions = permit_mynetworks, reject',
    ],
    master: ['virtual unix - n n - - virtual'],
  });
  const p = await startPetrel(`[smtp]
listen = ["127.0.0.1:0"]
relay_networks = ["${INSIDE}/32"]
[local]
domains = ["local.test"]
[[routes]]
domain = "example.net"
via = "smtp:127.0.0.1:${pf.port}"
[[routes]]
domain = "example.com"
via = "smtp:127.0.0.1:${pf.port}"
[[dkim]]
domain = "example.com"
selector = "r2026"
key_file = "${rsa}"
[[dkim]]
domain = "example.com"
selector = "e2026"
key_file = "${ed}"
[[dkim]]
domain = "petrel.test"
selector = "h1"
key_file = "${host}"
`);
  t.after(async () => {
    await p.stop();
    await pf.stop();
    rmSync(base, { recursive: true, force: true });
    rmSync(keys, { recursive: true, force: true });
  });

  const longWords = Array.from({ length: 200 }, (_, i) => `word${i}`).join(' '); // ~1,300 octets with spaces
  const longRun = 'L'.repeat(2500);

  // 1. From our network, From: a domain with both keys, long lines: wrapped at enqueue, then signed twice.
  const inside = await SmtpTalk.open(p.port, '127.0.0.1', INSIDE);
  await inside.read();
  await inside.cmd('EHLO inside.test');
  const ours = `From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: ours ${longWords}\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <ours@example.com>\r\n\r\nHello\r\n${longRun}\r\n  spaced   line  \r\n`;
  assert.equal((await inside.send('alice@example.com', ['bob@example.net'], ours)).code, 250);

  // 2. Signed by someone else (dkimpy, other.example has no key here), long lines in header and body.
  const theirsRaw = Buffer.from(`From: Carol <carol@other.example>\r\nTo: bob@example.net\r\nSubject: theirs ${longWords}\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <theirs@other.example>\r\n\r\nHi\r\n${'T'.repeat(1500)}\r\n`);
  const theirs = dkimpySign(theirsRaw, 'other.example', 'theirs', foreign);
  assert.deepEqual(dkimVerify(theirs, records).map((v) => v.ok), [true], 'dkimpy verifies its own signature');
  assert.equal((await inside.send('carol@other.example', ['bob@example.net'], theirs.toString('latin1'))).code, 250);

  // 3. A delivery report (NOTIFY=SUCCESS to a local mailbox) goes back to alice@example.com, From: MAILER-DAEMON@petrel.test.
  assert.equal((await inside.cmd('MAIL FROM:<alice@example.com>')).code, 250);
  assert.equal((await inside.cmd('RCPT TO:<dave@local.test> NOTIFY=SUCCESS')).code, 250);
  assert.equal((await inside.cmd('DATA')).code, 354);
  inside.write('From: alice@example.com\r\nTo: dave@local.test\r\nSubject: report me\r\nMessage-ID: <reportme@example.com>\r\n\r\nx\r\n.\r\n');
  assert.equal((await inside.read())!.code, 250);
  inside.close();

  // 4. From outside relay_networks (an MX receiving), From: example.com all the same: never signed.
  const outside = await SmtpTalk.open(p.port, '127.0.0.1', '127.0.0.1');
  await outside.read();
  await outside.cmd('EHLO outside.test');
  const r = await outside.send('alice@example.com', ['erin@local.test'], 'From: alice@example.com\r\nTo: erin@local.test\r\nSubject: from outside\r\nMessage-ID: <outside@example.com>\r\n\r\nx\r\n');
  assert.equal(r.code, 250, replyLine(r));
  outside.close();

  // 5. A file in the pickup directory (what petrel sendmail writes when the server is not reachable), From: example.com.
  const pickupDir = join(p.dir, 'var', 'pickup');
  mkdirSync(pickupDir, { recursive: true });
  writeFileSync(join(pickupDir, '.picked'), 'X-Envelope-From: alice@example.com\nX-Envelope-To: bob@example.net\nFrom: Alice <alice@example.com>\nTo: bob@example.net\nSubject: picked up\nMessage-ID: <pickup@example.com>\n\nfrom the pickup directory\n');
  renameSync(join(pickupDir, '.picked'), join(pickupDir, 'picked'));

  const box = await waitFor(() => {
    const m = mailbox(base);
    return find(m, '<ours@example.com>') && find(m, '<theirs@other.example>') && find(m, '<pickup@example.com>') && m.some((x) => x.includes('MAILER-DAEMON@petrel.test')) ? m : false;
  }, 30_000, 'four messages in the Postfix mailbox');

  // 5: the picked-up message carries valid signatures of both example.com keys.
  const v5 = dkimVerify(find(box, '<pickup@example.com>')!, records);
  assert.deepEqual(v5.map((v) => [v.d, v.s, v.ok]).sort(), [['example.com', 'e2026', true], ['example.com', 'r2026', true]], JSON.stringify(v5));

  // 1: two valid signatures by example.com (RSA and Ed25519), From oversigned, no l=, no line over 998.
  const oursGot = find(box, '<ours@example.com>')!;
  const v1 = dkimVerify(oursGot, records);
  assert.deepEqual(v1.map((v) => [v.d, v.s, v.a, v.ok]).sort(), [['example.com', 'e2026', 'ed25519-sha256', true], ['example.com', 'r2026', 'rsa-sha256', true]], JSON.stringify(v1));
  for (const v of v1) assert.equal(v.h.split(':').filter((n) => n.trim().toLowerCase() === 'from').length, 2, `From oversigned: h=${v.h}`);
  assert.ok(!/;\s*l=/.test(oursGot.toString('latin1')), 'no l= tag');
  // (Postfix's Maildir copy has LF line ends.)
  for (const line of oursGot.toString('latin1').split(/\r?\n/)) assert.ok(line.length <= 998, `a line of ${line.length}`);
  assert.ok(oursGot.toString('latin1').replace(/\r?\n /g, ' ').includes(longWords), 'the long header line folded at spaces only');

  // 2: their signature still verifies; Petrel added none (other.example has no key here).
  const theirsGot = find(box, '<theirs@other.example>')!;
  const v2 = dkimVerify(theirsGot, records);
  assert.deepEqual(v2.map((v) => [v.d, v.ok]), [['other.example', true]], JSON.stringify(v2));
  assert.ok(theirsGot.includes('T'.repeat(1500)), 'the signed long body line kept as it was');

  // 3: the report is signed with the hostname's domain key.
  const report = box.find((x) => x.includes('MAILER-DAEMON@petrel.test'))!;
  const v3 = dkimVerify(report, records);
  assert.deepEqual(v3.map((v) => [v.d, v.s, v.ok]), [['petrel.test', 'h1', true]], JSON.stringify(v3));

  // 4: stored in Petrel's own Maildir without a signature.
  const erin = join(p.dir, 'var', 'mail', 'local.test', 'erin', 'new');
  const files = await waitFor(() => (existsSync(erin) ? readdirSync(erin) : []).length > 0 && readdirSync(erin), 10_000, 'delivered to erin');
  const outsideGot = readFileSync(join(erin, files[0]!), 'latin1');
  assert.ok(outsideGot.includes('<outside@example.com>'));
  assert.ok(!/^dkim-signature:/im.test(outsideGot), 'mail from outside is not signed');
});

test('a message over the 256 KB held in memory (the rest in a scratch file) is signed whole, in several chunks; the scratch file is gone after', async (t) => {
  const { MemoryStore } = await import('../../src/queue/memory-store.js');
  const { Router } = await import('../../src/routing/router.js');
  const { Enqueuer } = await import('../../src/enqueue/enqueue.js');
  const { DkimSigner } = await import('../../src/dkim/signer.js');
  const { parseConfigText } = await import('../../src/config/load.js');
  const dir = tempDir('petrel-dkim-big-');
  const rsa = keyFile(dir, 'rsa.pem', 'rsa');
  const ed = keyFile(dir, 'ed.pem', 'ed25519');
  const config = parseConfigText(`data_dir = "${join(dir, 'var')}"\n[[dkim]]\ndomain = "example.com"\nselector = "r"\nkey_file = "${rsa}"\n[[dkim]]\ndomain = "example.com"\nselector = "e"\nkey_file = "${ed}"\n`, 'x', dir);
  const store = new MemoryStore();
  await store.open();
  const dkim = new DkimSigner({ keys: config.dkim, dataDir: config.data_dir, headerLimit: 1 << 20 });
  t.after(async () => {
    await dkim.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const enq = new Enqueuer({ hostname: 'petrel.test', store, router: new Router(config), dkim });
  const body = Array.from({ length: 9000 }, (_, i) => `line ${i} ${'x'.repeat(60)}  \r\n`).join(''); // ~640 KB, trailing spaces
  const msg = Buffer.from(`From: <bob@sub.example.com>\r\nTo: b@example.net\r\nSubject: big\r\n\r\n${body}`);
  const inc = enq.begin({ sender: 'bob@sub.example.com', recipients: [{ address: 'b@example.net', orcpt: null, notify: null }], smtputf8: false, eightBit: false, ret: null, envid: null, client: 'test', received: null, isReport: false, maxSize: 0, maxReceived: 0, sign: true });
  for (let i = 0; i < msg.length; i += 65536) await inc.write(msg.subarray(i, i + 65536));
  const { queueId } = await inc.commit();
  const stored = await store.readBodyBuffer(queueId);
  const v = dkimVerify(stored!, { 'r._domainkey.example.com': record(rsa), 'e._domainkey.example.com': record(ed) });
  assert.deepEqual(v.map((x) => [x.d, x.s, x.ok]).sort(), [['example.com', 'e', true], ['example.com', 'r', true]], JSON.stringify(v));
  const scratch = join(config.data_dir, 'tmp', 'dkim');
  assert.deepEqual(existsSync(scratch) ? readdirSync(scratch) : [], [], 'no scratch file left');
});
