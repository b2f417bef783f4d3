// SMTP smuggling through Petrel, end to end (issue 7; SEC Consult 2023 and
// the follow-up variants): a client sends one message whose content holds a
// fake end of data in every published form, followed by the commands of a
// second, smuggled message. Petrel relays to a test peer that records the
// exact octets. Properties, for every sequence:
// - Petrel answers exactly once for the message (250, or 554 5.6.0 when the
//   sequence holds a NUL) and then QUIT — the smuggled commands are never
//   answered as commands;
// - the peer gets exactly one transaction for it, with only CRLF line ends on
//   the wire, and its only end of data is the final CRLF.CRLF;
// - the smuggled sender/recipient appear nowhere as a transaction: not in
//   Petrel's event log, not at the peer.
// Plus the outbound side on its own: a stored message holding bare CR / bare
// LF (as a non-SMTP source could store it) leaves Petrel as CRLF only
// (RFC 5321 §2.3.8).
//
// Untrusted input: the DATA content.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { SmtpTalk } from '../helpers/smtp-talk.js';
import type { SmtpReply } from '../../src/core/smtp-reply.js';
import { startPetrel, waitFor, cleanup, type InProcess } from '../helpers/petrel-harness.js';
import { startPeer, type TestPeer } from '../helpers/test-peer.js';

const SMUGGLED = 'MAIL FROM:<smuggler@evil.example>\r\nRCPT TO:<victim@remote.example>\r\nDATA\r\nFrom: smuggler@evil.example\r\nSubject: smuggled\r\n\r\nsecond message\r\n';

/** Fake ends of data, as published (bare CR/LF variants, NUL variants, pipelined). */
const SEQUENCES: Array<[string, string]> = [
  ['LF.LF', '\n.\n'],
  ['LF.CRLF', '\n.\r\n'],
  ['CRLF.LF', '\r\n.\n'],
  ['CR.CR', '\r.\r'],
  ['CRLF.CR', '\r\n.\r'],
  ['CR.CRLF', '\r.\r\n'],
  ['CR.LF', '\r.\n'],
  ['LF.CR', '\n.\r'],
  ['LFCR.CRLF', '\n\r.\r\n'],
  ['CRLF.CRCRLF', '\r\n.\r\r\n'],
  ['CRLF.SP.CRLF', '\r\n. \r\n'],
  ['CRLF.LFCRLF', '\r\n.\n\r\n'],
  ['LFLF.LFLF', '\n\n.\n\n'],
  ['CRLF..CRLF', '\r\n..\r\n'],
  // Found by test/fuzz/smtp-session: a dot line ended by a bare LF must not start a line.
  ['CRLF.LF.CRLF', '\r\n.\n.\r\n'],
  ['LF.LF.CRLF', '\n.\n.\r\n'],
];
// Not in the list: "\r\r\n.\r\n" — its last five octets are a real CRLF.CRLF, so it
// is an end of data by RFC 5321 for every receiver alike (nothing to smuggle).
const NUL_SEQUENCES: Array<[string, string]> = [
  ['CRLF NUL.CRLF', '\r\n\u0000.\r\n'],
  ['CRLF.NUL CRLF', '\r\n.\u0000\r\n'],
  ['CRLF.CR NUL LF', '\r\n.\r\u0000\n'],
  ['NUL LF.LF', '\u0000\n.\n'],
];

/** bareLineEnds - positions of CR not followed by LF and LF not preceded by CR. */
function bareLineEnds(b: Buffer): number[] {
  const out: number[] = [];
  for (let i = 0; i < b.length; i++) {
    if (b[i] === 13 && b[i + 1] !== 10) out.push(i);
    if (b[i] === 10 && b[i - 1] !== 13) out.push(i);
  }
  return out;
}

describe('SMTP smuggling through Petrel', () => {
  let p: InProcess;
  let peer: TestPeer;
  before(async () => {
    peer = await startPeer();
    p = await startPetrel(`[delivery]\nsmarthost = "127.0.0.1:${peer.port}"\n[local]\ndomains = []\n`);
  });
  after(async () => {
    await p.stop();
    await peer.close();
    cleanup(p.dir);
  });

  /**
   * smuggle - one connection: a whole pipelined write (envelope, DATA, content
   * with the fake end and the smuggled commands, the real end, QUIT) — or, with
   * `waitFor354`, the content only after 354 as a cautious client sends it.
   * Returns every reply Petrel gave after EHLO.
   */
  async function smuggle(tag: string, seq: string, waitFor354: boolean, chunked: boolean): Promise<string[]> {
    const t = await SmtpTalk.open(p.port);
    try {
      await t.read();
      await t.cmd('EHLO client.test');
      const head = `MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n`;
      const content = `From: alice@example.com\r\nSubject: ${tag}\r\nMessage-ID: <${tag}@smuggle.test>\r\n\r\nfirst message${seq}${SMUGGLED}\r\n.\r\nQUIT\r\n`;
      const replies: string[] = [];
      const short = (r: SmtpReply | null): string => (r ? `${r.code}${r.enhanced ? ` ${r.enhanced}` : ''}` : '(closed)');
      if (waitFor354) {
        t.write(head);
        for (let i = 0; i < 3; i++) replies.push(short(await t.read()));
        assert.equal(replies[2], '354');
      }
      const bytes = Buffer.from(waitFor354 ? content : head + content, 'latin1');
      if (chunked) {
        // One octet at a time around the fake end: it must not matter where reads split.
        for (let i = 0; i < bytes.length; i += 1 + (i % 5)) {
          t.write(bytes.subarray(i, i + 1 + (i % 5)));
          if (i % 40 === 0) await new Promise((r) => setImmediate(r));
        }
      } else t.write(bytes);
      for (;;) {
        const r = await t.read(10_000);
        if (!r) break;
        replies.push(short(r));
      }
      return replies;
    } finally {
      t.close();
    }
  }

  const tags: string[] = [];
  for (const [name, seq] of SEQUENCES) {
    for (const mode of ['pipelined', 'after-354', 'chunked'] as const) {
      test(`${name} (${mode}): one message, one 250, then QUIT`, async () => {
        const tag = `s${tags.length}`;
        tags.push(tag);
        const replies = await smuggle(tag, seq, mode === 'after-354', mode === 'chunked');
        assert.deepEqual(replies, ['250 2.1.0', '250 2.1.5', '354', '250 2.0.0', '221 2.0.0'], JSON.stringify(seq));
      });
    }
  }
  for (const [name, seq] of NUL_SEQUENCES) {
    test(`${name}: 554 5.6.0 for the whole message, the smuggled commands never run`, async () => {
      const replies = await smuggle(`nul-${name}`, seq, false, false);
      assert.deepEqual(replies, ['250 2.1.0', '250 2.1.5', '354', '554 5.6.0', '221 2.0.0']);
    });
  }

  test('the peer got exactly one CRLF-only transaction per message, and nothing smuggled anywhere', async () => {
    await waitFor(() => peer.delivered().length >= tags.length, 20_000, 'every message relayed');
    await new Promise((r) => setTimeout(r, 200));
    const byTag = new Map<string, number>();
    for (const tx of peer.transactions) {
      assert.equal(tx.sender, 'alice@example.com', 'only the real sender reaches the peer');
      assert.deepEqual(tx.accepted, ['bob@example.net']);
      const tag = /Message-ID: <(.+)@smuggle\.test>/.exec(tx.body.toString('latin1'))?.[1];
      assert.ok(tag, 'a known message');
      byTag.set(tag, (byTag.get(tag) ?? 0) + 1);
      assert.deepEqual(bareLineEnds(tx.raw), [], `${tag}: only CRLF on the wire`);
      // The only CRLF "." CRLF on the wire is the end.
      const raw = tx.raw.toString('latin1');
      assert.equal(raw.indexOf('\r\n.\r\n'), raw.length - 5, `${tag}: a single end of data`);
      assert.ok(tx.body.toString('latin1').includes('second message'), `${tag}: the "second message" is content of the first`);
      for (const line of raw.split('\r\n')) assert.ok(line.length <= 998, `${tag}: a line of ${line.length} octets`);
    }
    assert.deepEqual([...byTag.entries()].filter(([, n]) => n !== 1), [], 'exactly one transaction per message');
    assert.equal(byTag.size, tags.length);
    const events = p.events();
    assert.ok(!events.some((e) => e.sender === 'smuggler@evil.example' || e.recipient === 'victim@remote.example'), 'no smuggled transaction in the event log');
    assert.equal(events.filter((e) => e.event === 'received').length, tags.length, 'NUL messages were not kept');
  });

  test('outbound: stored bare CR / bare LF (a non-SMTP source) leave as CRLF, never as a fake end', async () => {
    const before = peer.transactions.length;
    const incoming = p.petrel.enqueuer.begin({
      sender: 'alice@example.com',
      recipients: [{ address: 'bob@example.net', orcpt: null, notify: null }],
      smtputf8: false,
      eightBit: false,
      ret: null,
      envid: null,
      client: 'pickup',
      received: null,
      isReport: false,
      maxSize: 0,
      maxReceived: 0,
    });
    const body = 'Subject: stored\r\nMessage-ID: <stored@smuggle.test>\r\n\r\nx' + SEQUENCES.map(([, s]) => s + 'after').join('') + '\r.\r' + SMUGGLED + '\r\n';
    await incoming.write(Buffer.from(body, 'latin1'));
    await incoming.commit();
    await waitFor(() => peer.transactions.length > before && peer.transactions.at(-1)!.completed, 10_000, 'the stored message relayed');
    const tx = peer.transactions.at(-1)!;
    assert.equal(peer.transactions.length, before + 1, 'one transaction');
    assert.deepEqual(bareLineEnds(tx.raw), [], 'only CRLF on the wire');
    const raw = tx.raw.toString('latin1');
    assert.equal(raw.indexOf('\r\n.\r\n'), raw.length - 5, 'a single end of data');
    assert.ok(tx.body.toString('latin1').includes('second message'));
  });
});
