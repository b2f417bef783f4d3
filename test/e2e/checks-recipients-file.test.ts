// End to end: no backscatter from a list (issue 15). A route's
// recipients_file names the valid recipients of a relayed domain (addresses,
// "@domain" catch-alls, # comments): others get 550 5.1.1 at RCPT; the file
// is read again on reload (SIGHUP / petrel reload); a file that cannot be
// read keeps the table read before, and one never read gives 450 4.1.1.
// With verify_recipients too, a listed address is still asked of the next
// hop; one not listed is refused without a probe.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseConfigText } from '../../src/config/load.js';
import { SmtpTalk, replyLine } from '../helpers/smtp-talk.js';
import { startPeer, type TestPeer } from '../helpers/test-peer.js';
import { baseConfig, cleanup, startPetrel, type InProcess } from '../helpers/petrel-harness.js';

describe('[[routes]] recipients_file: unknown recipients refused at RCPT', () => {
  let peer: TestPeer;
  let p: InProcess;
  let list: string;
  let extra: string;

  before(async () => {
    peer = await startPeer({ rcptReply: (address) => (address.startsWith('gone@') ? '550 5.1.1 No such user' : undefined) });
    p = await startPetrel('');
    list = join(p.dir, 'legacy.txt');
    writeFileSync(list, '# the mailboxes of legacy.test\nAlice@legacy.test\nbob@legacy.test   # Bob\n@catch.test\nnot an address\n');
    extra = `[smtp]
listen = ["127.0.0.1:0"]
[[routes]]
domain = "legacy.test"
via = "smtp:127.0.0.1:${peer.port}"
recipients_file = "legacy.txt"
[[routes]]
domain = "catch.test"
via = "smtp:127.0.0.1:${peer.port}"
recipients_file = "legacy.txt"
[[routes]]
domain = "both.test"
via = "smtp:127.0.0.1:${peer.port}"
recipients_file = "both.txt"
verify_recipients = true
[[routes]]
domain = "missing.test"
via = "smtp:127.0.0.1:${peer.port}"
recipients_file = "missing.txt"
`;
    writeFileSync(join(p.dir, 'both.txt'), 'gone@both.test\nhere@both.test\n');
    // The running server takes the routes as `petrel reload` gives them (relative paths against the file's folder).
    await p.petrel.reconfigure(parseConfigText(baseConfig(p.dir, extra), join(p.dir, 'petrel.toml'), p.dir));
  });
  after(async () => {
    await p.stop();
    await peer.close();
    cleanup(p.dir);
  });

  async function rcpts(addresses: string[]): Promise<string[]> {
    const t = await SmtpTalk.open(p.port);
    await t.read();
    await t.cmd('EHLO client.test');
    await t.cmd('MAIL FROM:<someone@sender.test>');
    const out: string[] = [];
    for (const a of addresses) out.push(replyLine(await t.cmd(`RCPT TO:<${a}>`)));
    await t.cmd('QUIT');
    t.close();
    return out;
  }

  test('listed (any case) and catch-all accepted; not listed 550 5.1.1, with no probe of the next hop', async () => {
    const before = peer.connections.length;
    const [alice, bob, nobody, any] = await rcpts(['alice@LEGACY.test', 'Bob@legacy.test', 'nobody@legacy.test', 'whoever@catch.test']);
    assert.match(alice!, /^250 /);
    assert.match(bob!, /^250 /);
    assert.equal(nobody, '550 5.1.1 <nobody@legacy.test>: Recipient address rejected: not a known recipient of this domain');
    assert.match(any!, /^250 /);
    assert.equal(peer.connections.length, before, 'a list answers without asking anyone');
  });

  test('with verify_recipients too: not listed is refused without a probe; listed is still asked of the next hop', async () => {
    const [stranger, gone, here] = await rcpts(['stranger@both.test', 'gone@both.test', 'here@both.test']);
    assert.match(stranger!, /^550 5\.1\.1 .*not a known recipient/);
    assert.match(gone!, /^550 5\.1\.1 .*rejected by its next hop/);
    assert.match(here!, /^250 /);
    assert.ok(!peer.transactions.some((tx) => tx.rcpts.some((r) => r.address.startsWith('stranger@'))));
  });

  test('a file that was never readable: 450 4.1.1, never a 5xx', async () => {
    const [r] = await rcpts(['anyone@missing.test']);
    assert.match(r!, /^450 4\.1\.1 <anyone@missing\.test>: .*recipients file unreadable/);
  });

  test('reload (SIGHUP) reads the file again; a file gone keeps the table read before', async () => {
    writeFileSync(list, 'alice@legacy.test\nnewcomer@legacy.test\n');
    assert.match((await rcpts(['newcomer@legacy.test']))[0]!, /^550 /, 'not before the reload');
    p.petrel.reload();
    const [newcomer, bob] = await rcpts(['newcomer@legacy.test', 'bob@legacy.test']);
    assert.match(newcomer!, /^250 /);
    assert.match(bob!, /^550 5\.1\.1 /);
    rmSync(list);
    p.petrel.reload();
    const [still, out] = await rcpts(['newcomer@legacy.test', 'bob@legacy.test']);
    assert.match(still!, /^250 /);
    assert.match(out!, /^550 5\.1\.1 /);
    // The missing file appears: the next reload reads it.
    writeFileSync(join(p.dir, 'missing.txt'), '@missing.test\n');
    p.petrel.reload();
    assert.match((await rcpts(['anyone@missing.test']))[0]!, /^250 /);
    // [checks] is read at each use: a reload that changes it needs no restart.
    const later = await p.petrel.reconfigure(parseConfigText(baseConfig(p.dir, `${extra}[checks]\njunk_folder = "Spam"\n`), join(p.dir, 'petrel.toml'), p.dir));
    assert.deepEqual(later, []);
    assert.equal(p.petrel.config.checks.junk_folder, 'Spam');
  });
});
