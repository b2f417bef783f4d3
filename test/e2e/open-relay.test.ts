// Open relay matrix (DESIGN.md invariant 9, issue 7 "Hostile input"): every
// combination of client network (inside / outside `relay_networks`, chosen
// with the client's own 127.0.0.x), listener and auth state (MX port,
// submission unauthenticated, submission authenticated), sender (local,
// remote, null, spoofed local) and recipient form (local, remote, address
// literals, %-hack, source routes, quoted local parts, postmaster, upper-case
// and trailing-dot domains) gets the exact RCPT reply the contract names —
// and afterwards nothing from an unauthorised session was queued for, or
// delivered to, a non-local recipient.
//
// Untrusted input here is the point: every address is what an abuser sends.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { SmtpTalk, replyLine } from '../helpers/smtp-talk.js';
import { startPetrel, waitFor, cleanup, tempDir, type InProcess } from '../helpers/petrel-harness.js';
import { startPeer, type TestPeer } from '../helpers/test-peer.js';
import { setUser } from '../../src/inbound/submission-users.js';

type Kind = 'local' | 'remote' | 'invalid';

/** Recipients as an abuser writes them, with what each really is. */
const RECIPIENTS: Array<[string, Kind]> = [
  ['bob@local.test', 'local'],
  ['bob@LOCAL.TEST', 'local'],
  ['postmaster', 'local'],
  ['PostMaster@local.test', 'local'],
  ['"bob@remote.example"@local.test', 'local'],
  ['bob%remote.example@local.test', 'local'],
  ['@remote.example:bob@local.test', 'local'],
  ['bob@remote.example', 'remote'],
  ['bob@REMOTE.EXAMPLE', 'remote'],
  ['bob@routed.example', 'remote'],
  ['bob@localhost', 'remote'],
  ['bob@[127.0.0.1]', 'remote'],
  ['bob@[IPv6:::1]', 'remote'],
  ['bob%local.test@remote.example', 'remote'],
  ['@local.test:bob@remote.example', 'remote'],
  ['@local.test,@local.test:bob@remote.example', 'remote'],
  ['"bob@local.test"@remote.example', 'remote'],
  ['postmaster@remote.example', 'remote'],
  ['bob@local.test.remote.example', 'remote'],
  ['bob@remote.example.', 'invalid'],
  ['bob@local.test.', 'invalid'],
  ['bob@local.test@remote.example', 'invalid'],
  ['bob@@remote.example', 'invalid'],
];

const SENDERS: Array<[string, string]> = [
  ['local', 'alice@local.test'],
  ['remote', 'mallory@remote.example'],
  ['null', ''],
  ['spoofed', 'postmaster@LOCAL.TEST'],
];

interface Client {
  label: string;
  ip: string;
  listener: 'mx' | 'submission';
  auth: 'none' | 'tls-only' | 'authenticated';
  /** What the contract says this client may do. */
  mayRelay: boolean;
}

const CLIENTS: Client[] = [
  { label: 'mx-outside-127.0.0.1', ip: '127.0.0.1', listener: 'mx', auth: 'none', mayRelay: false },
  { label: 'mx-outside-127.0.0.3', ip: '127.0.0.3', listener: 'mx', auth: 'none', mayRelay: false },
  { label: 'mx-outside-127.0.0.16', ip: '127.0.0.16', listener: 'mx', auth: 'none', mayRelay: false },
  { label: 'mx-inside-127.0.0.2', ip: '127.0.0.2', listener: 'mx', auth: 'none', mayRelay: true },
  { label: 'mx-inside-127.0.0.15', ip: '127.0.0.15', listener: 'mx', auth: 'none', mayRelay: true },
  { label: 'sub-plain-outside', ip: '127.0.0.3', listener: 'submission', auth: 'none', mayRelay: false },
  { label: 'sub-tls-outside', ip: '127.0.0.3', listener: 'submission', auth: 'tls-only', mayRelay: false },
  { label: 'sub-tls-inside', ip: '127.0.0.2', listener: 'submission', auth: 'tls-only', mayRelay: false },
  { label: 'sub-auth-outside', ip: '127.0.0.3', listener: 'submission', auth: 'authenticated', mayRelay: true },
];

const PASSWORD = 'relay matrix password';
const plain = (user: string, pw: string): string => Buffer.from(`\u0000${user}\u0000${pw}`).toString('base64');

/** expected - the exact RCPT reply (code and enhanced status) the contract gives. */
function expected(client: Client, kind: Kind): string {
  if (client.listener === 'submission' && client.auth !== 'authenticated') return '503 5.5.1'; // MAIL was refused with 530
  if (kind === 'invalid') return '501 5.1.3';
  if (kind === 'local') return '250 2.1.5';
  return client.mayRelay ? '250 2.1.5' : '554 5.7.1';
}

describe('open relay matrix', () => {
  let p: InProcess;
  let peer: TestPeer;
  let sub = 0;
  /** Message-ID label -> whether its session may relay. */
  const sent = new Map<string, Client>();

  before(async () => {
    const dir = tempDir();
    await setUser(join(dir, 'users'), 'alice', PASSWORD);
    peer = await startPeer();
    p = await startPetrel(
      `[smtp]
listen = ["127.0.0.1:0"]
submission_listen = ["127.0.0.1:0"]
users_file = "users"
relay_networks = ["127.0.0.2/32", "127.0.0.8/29"]
max_connections_per_client = 200
[local]
domains = ["local.test"]
[delivery]
smarthost = "127.0.0.1:${peer.port}"
[[routes]]
domain = "routed.example"
via = "smtp:127.0.0.1:${peer.port}"
`,
      {},
      dir,
    );
    sub = p.petrel.inbound!.bound.find((b) => b.kind === 'submission')!.port;
  });
  after(async () => {
    await p.stop();
    await peer.close();
    cleanup(p.dir);
  });

  /** open - a session in the client's state, EHLO done (and TLS / AUTH as the state says). */
  async function open(c: Client, helo: string): Promise<SmtpTalk> {
    const t = await SmtpTalk.open(c.listener === 'mx' ? p.port : sub, '127.0.0.1', c.ip);
    assert.equal((await t.read())?.code, 220);
    assert.equal((await t.cmd(`EHLO ${helo}`)).code, 250);
    if (c.auth !== 'none') {
      await t.startTls();
      assert.equal((await t.cmd(`EHLO ${helo}`)).code, 250);
    }
    if (c.auth === 'authenticated') assert.match(replyLine(await t.cmd(`AUTH PLAIN ${plain('alice', PASSWORD)}`)), /^235 2\.7\.0 /);
    return t;
  }

  for (const c of CLIENTS) {
    test(`${c.label}: every sender x recipient gets the contract's RCPT reply`, async () => {
      const problems: string[] = [];
      for (const [senderKind, sender] of SENDERS) {
        // Outside clients also claim to be the server itself: a HELO name is no credential.
        const t = await open(c, c.mayRelay ? 'client.test' : 'petrel.test');
        try {
          const mail = replyLine(await t.cmd(`MAIL FROM:<${sender}>`));
          if (c.listener === 'submission' && c.auth !== 'authenticated') assert.match(mail, /^530 5\.7\.0 /, `${c.label} MAIL`);
          else assert.match(mail, /^250 2\.1\.0 /, `${c.label} MAIL FROM:<${sender}>`);
          let accepted = 0;
          for (const [rcpt, kind] of RECIPIENTS) {
            const r = replyLine(await t.cmd(`RCPT TO:<${rcpt}>`));
            const want = expected(c, kind);
            if (!r.startsWith(want + ' ')) problems.push(`${c.label} <${sender}> -> <${rcpt}> (${kind}): got "${r}", want ${want}`);
            if (r.startsWith('250')) accepted++;
          }
          if (accepted) {
            const label = `${c.label}.${senderKind}`;
            sent.set(label, c);
            assert.equal((await t.cmd('DATA')).code, 354);
            t.write(`From: <${sender || 'mailer-daemon@remote.example'}>\r\nSubject: relay matrix\r\nMessage-ID: <${label}@matrix.test>\r\n\r\nbody\r\n.\r\n`);
            assert.match(replyLine(await t.read()), /^250 2\.0\.0 /, label);
          }
          await t.cmd('QUIT');
        } finally {
          t.close();
        }
      }
      assert.deepEqual(problems, []);
    });
  }

  test('AUTH on the MX port is refused and changes nothing; XCLIENT-style claims are unknown commands', async () => {
    const t = await SmtpTalk.open(p.port, '127.0.0.1', '127.0.0.3');
    try {
      await t.read();
      await t.cmd('EHLO client.test');
      assert.match(replyLine(await t.cmd(`AUTH PLAIN ${plain('alice', PASSWORD)}`)), /^503 5\.5\.1 /);
      assert.match(replyLine(await t.cmd('XCLIENT ADDR=127.0.0.2 NAME=inside.test')), /^500 5\.5\.2 /);
      assert.match(replyLine(await t.cmd('XFORWARD ADDR=127.0.0.2')), /^500 5\.5\.2 /);
      await t.cmd('MAIL FROM:<alice@local.test> AUTH=<alice@local.test>');
      assert.match(replyLine(await t.cmd('RCPT TO:<bob@remote.example>')), /^554 5\.7\.1 /);
    } finally {
      t.close();
    }
  });

  test('a failed AUTH on submission leaves the session unable to relay', async () => {
    const t = await SmtpTalk.open(sub, '127.0.0.1', '127.0.0.2');
    try {
      await t.read();
      await t.cmd('EHLO client.test');
      await t.startTls();
      await t.cmd('EHLO client.test');
      assert.match(replyLine(await t.cmd(`AUTH PLAIN ${plain('alice', 'wrong')}`)), /^535 5\.7\.8 /);
      assert.match(replyLine(await t.cmd(`AUTH PLAIN ${plain('alice', PASSWORD)}x`)), /^(535 5\.7\.8|501 5\.5\.2) /);
      assert.match(replyLine(await t.cmd('MAIL FROM:<alice@local.test>')), /^530 5\.7\.0 /);
      assert.match(replyLine(await t.cmd('RCPT TO:<bob@remote.example>')), /^503 5\.5\.1 /);
    } finally {
      t.close();
    }
  });

  test('afterwards: nothing from an unauthorised session was queued for or delivered to a non-local recipient', async () => {
    assert.ok(sent.size >= 20, `messages sent: ${sent.size}`);
    const labelOf = (messageId: string | undefined): string => /^<(.+)@matrix\.test>$/.exec(messageId ?? '')?.[1] ?? '';
    // Every recipient reaches its end (delivered: locally, or by the peer).
    await waitFor(
      () => {
        const ev = p.events();
        const received = ev.filter((e) => e.event === 'received' && labelOf(e.message_id)).length;
        return received > 0 && ev.filter((e) => e.event === 'delivered' && labelOf(e.message_id)).length === received;
      },
      20_000,
      'every matrix recipient delivered',
    );
    const events = p.events().filter((e) => labelOf(e.message_id));
    const offenders = events
      .filter((e) => e.event === 'received')
      .filter((e) => !e.recipient!.endsWith('@local.test') && !sent.get(labelOf(e.message_id))!.mayRelay)
      .map((e) => `${labelOf(e.message_id)} -> ${e.recipient}`);
    assert.deepEqual(offenders, [], 'queued for a remote recipient without the right to relay');
    // Sessions that may not relay produced local deliveries only; the peer saw only permitted sessions.
    for (const tx of peer.transactions) {
      const label = /Message-ID: <(.+)@matrix\.test>/.exec(tx.body.toString('latin1'))?.[1] ?? '';
      assert.ok(sent.get(label)?.mayRelay, `the peer got a message from ${label || 'an unknown session'}`);
      for (const a of tx.accepted) assert.ok(!a.endsWith('@local.test'), `local recipient ${a} relayed`);
    }
    const relayed = peer.transactions.flatMap((tx) => tx.accepted);
    assert.ok(relayed.includes('bob@remote.example') && relayed.includes('bob@[127.0.0.1]') && relayed.includes('bob%local.test@remote.example'));
    // The %-hack and the quoted local part stayed local: delivered into their own mailboxes here.
    for (const box of ['bob%remote.example', 'bob@remote.example', 'bob']) {
      const d = join(p.dir, 'var', 'mail', 'local.test', box, 'new');
      assert.ok(existsSync(d) && readdirSync(d).length > 0, `maildir ${box}`);
    }
  });
});
