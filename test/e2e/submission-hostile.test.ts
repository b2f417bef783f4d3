// The submission listener and STARTTLS, adversarially (issue 7), beyond
// submission.test.ts's happy paths and login slow-down:
// - command injection across STARTTLS (CVE-2011-0411): commands pipelined
//   after STARTTLS in clear are never run, on either listener;
// - AUTH PLAIN impersonation (an authorization identity other than the
//   authenticated user), malformed and over-long responses, cancelled
//   exchanges, AUTH in the wrong state — none authenticates, each gets its
//   exact reply, and the session still cannot relay;
// - a failed AUTH then a valid one counts failures; AUTH lines up to the
//   RFC 4954 limit are read, longer ones refused with 500 5.5.2.
//
// Untrusted input: everything the client sends, before and after TLS.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect as tlsConnect } from 'node:tls';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { SmtpTalk, replyLine } from '../helpers/smtp-talk.js';
import { startPetrel, cleanup, tempDir, type InProcess } from '../helpers/petrel-harness.js';
import { setUser } from '../../src/inbound/submission-users.js';

const PASSWORD = 'hostile submission password';
const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
const plain = (authz: string, user: string, pw: string): string => b64(`${authz}\u0000${user}\u0000${pw}`);

/** readLines - collect reply lines from a socket until `count` final lines (or close / timeout). */
function readReplies(socket: Socket, count: number, ms = 5000): Promise<string[]> {
  return new Promise((resolve) => {
    let buf = '';
    const finals: string[] = [];
    const done = (): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', done);
      resolve(finals);
    };
    const onData = (d: Buffer): void => {
      buf += d.toString('latin1');
      let i: number;
      while ((i = buf.indexOf('\r\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (/^\d{3} /.test(line)) finals.push(line);
        if (finals.length >= count) return done();
      }
    };
    const timer = setTimeout(done, ms);
    socket.on('data', onData);
    socket.on('close', done);
  });
}

describe('submission and STARTTLS, hostile clients', () => {
  let p: InProcess;
  let sub = 0;
  before(async () => {
    const dir = tempDir();
    await setUser(join(dir, 'users'), 'alice', PASSWORD);
    await setUser(join(dir, 'users'), 'bob', 'bob password');
    p = await startPetrel(`[smtp]\nlisten = ["127.0.0.1:0"]\nsubmission_listen = ["127.0.0.1:0"]\nusers_file = "users"\nrelay_networks = []\n[local]\ndomains = ["local.test"]\n`, {}, dir);
    sub = p.petrel.inbound!.bound.find((b) => b.kind === 'submission')!.port;
  });
  after(async () => {
    await p.stop();
    cleanup(p.dir);
  });

  for (const listener of ['mx', 'submission'] as const) {
    test(`${listener}: commands pipelined in clear after STARTTLS are discarded (CVE-2011-0411)`, async () => {
      const port = listener === 'mx' ? p.port : sub;
      const plainSocket = connect({ port, host: '127.0.0.1' });
      plainSocket.on('error', () => undefined);
      try {
        await new Promise((r) => plainSocket.once('connect', r));
        assert.match((await readReplies(plainSocket, 1))[0]!, /^220 /);
        plainSocket.write('EHLO client.test\r\n');
        await readReplies(plainSocket, 1);
        // The injection: in the same packet as STARTTLS.
        plainSocket.write(`STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\nRCPT TO:<victim@local.test>\r\nAUTH PLAIN ${plain('', 'alice', PASSWORD)}\r\n`);
        const afterStartTls = await readReplies(plainSocket, 1);
        assert.match(afterStartTls[0]!, /^220 2\.0\.0 /);
        const secure = tlsConnect({ socket: plainSocket, rejectUnauthorized: false });
        await new Promise((r, j) => {
          secure.once('secureConnect', r);
          secure.once('error', j);
        });
        // Nothing answers the injected commands; the session starts over (EHLO needed again).
        const early = await readReplies(secure as unknown as Socket, 1, 500);
        assert.deepEqual(early, [], 'no reply to anything sent in clear after STARTTLS');
        secure.write('MAIL FROM:<alice@local.test>\r\n');
        assert.match((await readReplies(secure as unknown as Socket, 1))[0]!, /^503 5\.5\.1 /, 'state was reset: EHLO first');
        secure.write('EHLO client.test\r\nRCPT TO:<victim@local.test>\r\n');
        const r = await readReplies(secure as unknown as Socket, 2);
        assert.match(r[0]!, /^250 /);
        assert.match(r[1]!, /^503 5\.5\.1 /, 'the injected MAIL did not open a transaction');
        secure.destroy();
      } finally {
        plainSocket.destroy();
      }
      assert.equal((await p.petrel.store.list({ limit: 10 })).length, 0);
    });
  }

  async function tlsSession(): Promise<SmtpTalk> {
    const t = await SmtpTalk.open(sub);
    await t.read();
    await t.cmd('EHLO client.test');
    await t.startTls();
    await t.cmd('EHLO client.test');
    return t;
  }

  test('AUTH PLAIN: impersonation, malformed and cancelled responses never authenticate', async () => {
    const cases: Array<[string, RegExp]> = [
      [`AUTH PLAIN ${plain('bob', 'alice', PASSWORD)}`, /^535 5\.7\.8 /], // alice's password, acting as bob
      [`AUTH PLAIN ${b64(`alice\u0000${PASSWORD}`)}`, /^501 5\.5\.2 /], // two fields
      [`AUTH PLAIN ${b64(`\u0000alice\u0000${PASSWORD}\u0000extra`)}`, /^501 5\.5\.2 /],
      ['AUTH PLAIN not*base64!', /^501 5\.5\.2 /],
      ['AUTH PLAIN =', /^(501 5\.5\.2|535 5\.7\.8) /],
      ['AUTH CRAM-MD5', /^504 5\.5\.4 /],
      ['AUTH', /^504 5\.5\.4 /],
    ];
    for (const [line, want] of cases) {
      const t = await tlsSession();
      try {
        assert.match(replyLine(await t.cmd(line)), want, line);
        assert.match(replyLine(await t.cmd('MAIL FROM:<alice@local.test>')), /^530 5\.7\.0 /, `${line}: not authenticated`);
      } finally {
        t.close();
      }
    }
    // Cancelled exchanges (RFC 4954 §4: "*").
    const t = await tlsSession();
    try {
      assert.equal((await t.cmd('AUTH PLAIN')).code, 334);
      assert.match(replyLine(await t.cmd('*')), /^501 5\.7\.0 /);
      assert.equal((await t.cmd('AUTH LOGIN')).code, 334);
      assert.equal((await t.cmd(b64('alice'))).code, 334);
      assert.match(replyLine(await t.cmd('*')), /^501 5\.7\.0 /);
      assert.match(replyLine(await t.cmd('MAIL FROM:<alice@local.test>')), /^530 5\.7\.0 /);
    } finally {
      t.close();
    }
  });

  test('AUTH in the wrong state, and AUTH lines at and over their length limit', async () => {
    const t = await SmtpTalk.open(sub);
    try {
      await t.read();
      assert.match(replyLine(await t.cmd(`AUTH PLAIN ${plain('', 'alice', PASSWORD)}`)), /^503 5\.5\.1 /, 'before EHLO');
      await t.cmd('HELO client.test');
      assert.match(replyLine(await t.cmd(`AUTH PLAIN ${plain('', 'alice', PASSWORD)}`)), /^503 5\.5\.1 /, 'after HELO (no ESMTP)');
      await t.cmd('EHLO client.test');
      assert.match(replyLine(await t.cmd(`AUTH PLAIN ${plain('', 'alice', PASSWORD)}`)), /^538 5\.7\.11 /, 'before TLS');
    } finally {
      t.close();
    }
    const u = await tlsSession();
    try {
      // A response just under the AUTH line limit is read and judged (wrong password)...
      const longPw = 'p'.repeat(9000);
      assert.match(replyLine(await u.cmd(`AUTH PLAIN ${plain('', 'alice', longPw)}`)), /^535 5\.7\.8 /);
      // ...one over it is refused as a line, without being decoded.
      assert.match(replyLine(await u.cmd(`AUTH PLAIN ${'A'.repeat(13_000)}`)), /^500 5\.5\.2 /);
      assert.equal((await u.cmd('NOOP')).code, 250, 'the session goes on');
      assert.match(replyLine(await u.cmd(`AUTH PLAIN ${plain('', 'alice', PASSWORD)}`)), /^235 2\.7\.0 /);
      assert.equal((await u.cmd('MAIL FROM:<alice@local.test>')).code, 250);
      assert.match(replyLine(await u.cmd(`AUTH PLAIN ${plain('', 'alice', PASSWORD)}`)), /^503 5\.5\.1 /, 'during a transaction / already authenticated');
    } finally {
      u.close();
    }
  });
});
