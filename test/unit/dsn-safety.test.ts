/*
 * dsn-safety - what no input may do to a report: a remote reply, host name,
 * ORCPT or subject with CR, LF or NUL cannot add a header field, a field to
 * the delivery-status part or a MIME part; a huge reply is capped and
 * folded; the boundary occurs only as a delimiter. And the writer's own
 * invariants: no report to <>, none about no recipient, only recipients
 * waiting for this kind, nothing written when reading the recipients fails,
 * scratch files removed, and a small report never touches the disk.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { simpleParser } from 'mailparser';
import { ReportEmpty, writeReport } from '../../src/dsn/build.js';
import { MAX_DIAGNOSTIC } from '../../src/dsn/fields.js';
import { build, iterate, lines, message, NOW, ORIGINAL, originalFrom, python, recipient } from '../helpers/dsn-writer.js';

const INJECT = '550 5.1.1 no such user\r\nX-Injected: yes\r\n\r\n--=_petrel-00000000000000000000000000000000\r\nContent-Type: text/html\r\n\r\n<b>hi</b>\x00\nFinal-Recipient: rfc822; evil@example.com\rAction: delivered';

function boundaryOf(raw: Buffer): string {
  const m = /boundary="([^"]+)"/.exec(raw.toString());
  assert.ok(m);
  return m[1]!;
}

test('dsn safety: CR, LF and NUL in a remote reply cannot inject header fields, status fields or parts', async () => {
  const { raw } = await build({
    kind: 'failed',
    message: message({ subject: 'Hi\r\nBcc: victim@example.com', messageId: '<x@y>\r\nX-Injected: yes' }),
    recipients: [
      recipient(1, { lastReply: INJECT, remote: 'mx.example.com\r\nX-Injected: yes [192.0.2.1]', orcpt: 'rfc822;a@example.com\r\nX-Injected: yes' }),
      recipient(2, { address: 'second@example.com' }),
    ],
  });
  assert.ok(!raw.includes(0), 'no NUL');
  for (const line of lines(raw)) {
    const s = line.toString();
    assert.ok(!/^X-Injected:/i.test(s), `a line starts a field: ${s}`);
    assert.ok(!/^(Bcc|Content-Type: text\/html|Action: delivered|Final-Recipient: rfc822; evil)/.test(s), `injected line: ${s}`);
  }
  const p = await python(raw);
  assert.deepEqual(p.defects, []);
  assert.deepEqual(
    p.parts.map((x) => x.type),
    ['text/plain', 'message/delivery-status', 'text/rfc822-headers'],
  );
  assert.equal(p.headers['bcc'], undefined);
  assert.equal(p.headers['x-injected'], undefined);
  assert.equal(p.recipients.length, 2);
  assert.deepEqual(Object.keys(p.recipients[0]!).sort(), ['action', 'diagnostic-code', 'final-recipient', 'last-attempt-date', 'original-recipient', 'remote-mta', 'status']);
  assert.equal(p.recipients[0]!['remote-mta'], 'dns; mx.example.com');
  assert.equal(p.recipients[0]!['original-recipient'], 'rfc822; a@example.com X-Injected: yes');
  assert.equal(p.recipients[0]!['action'], 'failed');
  assert.equal(p.recipients[0]!['final-recipient'], 'rfc822; user1@example.com');
  assert.ok(p.recipients[0]!['diagnostic-code']!.startsWith('smtp; 550 5.1.1 no such user X-Injected: yes --=_petrel-'), p.recipients[0]!['diagnostic-code']);
  assert.equal(p.recipients[1]!['final-recipient'], 'rfc822; second@example.com');
  // Every occurrence of the real boundary is one of the four delimiters.
  const b = boundaryOf(raw);
  const at = raw
    .toString()
    .split('\r\n')
    .filter((l) => l.startsWith(`--${b}`));
  assert.deepEqual(at, [`--${b}`, `--${b}`, `--${b}`, `--${b}--`]);
  const m = await simpleParser(raw, { keepDeliveryStatus: true });
  assert.equal(m.headers.get('x-injected'), undefined);
  assert.equal(m.attachments.length, 2);
});

test('dsn safety: a huge reply is capped and folded, and a 5,000-character word is cut to fit 998 octets', async () => {
  const word = 'w'.repeat(5000);
  const long = `550 5.7.1 ${'blah '.repeat(20000)}`;
  const { raw } = await build({ kind: 'failed', recipients: [recipient(1, { lastReply: `550 5.7.1 ${word}` }), recipient(2, { lastReply: long })] });
  for (const line of lines(raw)) assert.ok(line.length <= 998, `line of ${line.length}`);
  assert.ok(raw.length < 40_000, `report of ${raw.length} octets`);
  const p = await python(raw);
  assert.deepEqual(p.defects, []);
  const d1 = p.recipients[0]!['diagnostic-code']!;
  assert.ok(d1.replace(/\s/g, '').includes(word.slice(0, MAX_DIAGNOSTIC - 20)));
  const d2 = p.recipients[1]!['diagnostic-code']!;
  assert.ok(d2.endsWith('[...]'), 'the cut is marked');
  assert.ok(d2.length <= MAX_DIAGNOSTIC + 40);
});

test('dsn safety: a report is never sent to the null sender, and nothing is written', async () => {
  for (const to of ['', '<>', ' ']) {
    let writes = 0;
    await assert.rejects(
      writeReport({ kind: 'failed', hostname: 'h.example', message: message(), recipients: iterate([recipient(1)]), original: originalFrom(ORIGINAL), returnSizeLimit: 1000, to }, async () => {
        writes++;
      }),
      /never sent to the null sender/,
    );
    assert.equal(writes, 0);
  }
});

test('dsn safety: no report about no recipient (ReportEmpty), and nothing is written', async () => {
  let writes = 0;
  const run = (recipients: ReturnType<typeof recipient>[]): Promise<unknown> =>
    writeReport({ kind: 'failed', hostname: 'h.example', message: message(), recipients: iterate(recipients), original: originalFrom(ORIGINAL), returnSizeLimit: 1000, to: 'a@example.org' }, async () => {
      writes++;
    });
  await assert.rejects(run([]), ReportEmpty);
  await assert.rejects(run([recipient(1, { report: 'delayed' }), recipient(2, { report: 'expired' })]), ReportEmpty);
  assert.equal(writes, 0);
});

test('dsn safety: only recipients waiting for this kind of report are in it', async () => {
  const { raw, result } = await build({
    kind: 'failed',
    recipients: [recipient(1), recipient(2, { report: 'delayed' }), recipient(3, { report: null }), recipient(4, { report: 'expired' }), recipient(5)],
  });
  assert.deepEqual(result.recipientIds, [1, 3, 5]);
  const p = await python(raw);
  assert.deepEqual(
    p.recipients.map((r) => r['final-recipient']),
    ['rfc822; user1@example.com', 'rfc822; user3@example.com', 'rfc822; user5@example.com'],
  );
  assert.ok(!p.parts[0]!.text!.includes('user2@'));
});

test('dsn safety: when reading the recipients fails, nothing is written and the scratch files are gone', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'petrel-dsn-test-'));
  try {
    let writes = 0;
    async function* failing(): AsyncIterable<ReturnType<typeof recipient>> {
      for (let i = 1; i <= 20000; i++) yield recipient(i);
      throw new Error('store went away');
    }
    await assert.rejects(
      writeReport({ kind: 'failed', hostname: 'h.example', message: message(), recipients: failing(), original: originalFrom(ORIGINAL), returnSizeLimit: 1000, to: 'a@example.org', scratchDir: dir }, async () => {
        writes++;
      }),
      /store went away/,
    );
    assert.equal(writes, 0);
    assert.deepEqual(await readdir(dir), []);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('dsn safety: a large report spills to scratch files and removes them; a small one never touches the disk', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'petrel-dsn-test-'));
  try {
    const many = Array.from({ length: 20000 }, (_, i) => recipient(i + 1));
    let seen = false;
    let size = 0;
    await writeReport(
      { kind: 'failed', hostname: 'h.example', message: message(), recipients: iterate(many), original: originalFrom(ORIGINAL), returnSizeLimit: 1000, to: 'a@example.org', scratchDir: dir, now: NOW },
      async (c) => {
        size += c.length;
        if (!seen) seen = (await readdir(dir)).length === 1;
      },
    );
    assert.ok(seen, 'a scratch directory existed while the report was written');
    assert.ok(size > 5_000_000);
    assert.deepEqual(await readdir(dir), [], 'and it is gone');
    // A directory that does not exist would make any scratch file fail.
    const { result } = await build({ kind: 'failed', scratchDir: join(dir, 'does', 'not', 'exist'), recipients: [recipient(1), recipient(2)] });
    assert.deepEqual(result.recipientIds, [1, 2]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('dsn safety: the report is written in large chunks, not line by line', async () => {
  const many = Array.from({ length: 5000 }, (_, i) => recipient(i + 1));
  const { raw, writes } = await build({ kind: 'failed', recipients: many });
  assert.ok(raw.length / writes > 32 * 1024, `${writes} writes for ${raw.length} octets`);
});
