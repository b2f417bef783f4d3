/*
 * dsn-golden - one report of each kind (failed, expired, delayed, delivered,
 * relayed, expanded; with ORCPT and ENVID; RET=FULL under and over the limit;
 * SMTPUTF8; a postmaster notice about a failed report), compared octet for
 * octet with test/golden/dsn/<name>.eml (the boundary and the report's own
 * Date and Message-ID masked), then read back with two real MIME parsers -
 * Python's `email` package and mailparser - checking every field.
 *
 * To accept a deliberate change of the text: UPDATE_GOLDEN=1 node
 * scripts/run-tests.js dsn-golden, then review the diff of the .eml files.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { simpleParser } from 'mailparser';
import { ARRIVAL, LAST_ATTEMPT, NOW, ORIGINAL, build, lines, mask, message, originalFrom, python, recipient, type Case } from '../helpers/dsn-writer.js';

const GOLDEN = new URL('../../../test/golden/dsn/', import.meta.url);
const DAY = 86_400_000;
const ATTEMPT_DATE = 'Tue, 03 Mar 2026 09:41:30 +0000';
const ARRIVAL_DATE = 'Tue, 03 Mar 2026 09:15:00 +0000';

interface Expect {
  subject: string;
  to: string;
  global?: boolean;
  partTypes: string[];
  perMessage: Record<string, string>;
  /** Every field of every recipient block, exactly (lower-case names). */
  recipients: Record<string, string>[];
  /** Text the human part must contain (compared with runs of white space made one space). */
  human: string[];
  /** Header fields of the original the third part must carry. */
  originalHeaders: [string, string][];
  /** For RET=FULL: text the returned body must contain. */
  originalBody?: string;
  returned: 'full' | 'headers' | 'none';
}

const perMessage = (over: Record<string, string> = {}): Record<string, string> => ({
  'reporting-mta': 'dns; mx.petrel.example',
  'arrival-date': ARRIVAL_DATE,
  'x-petrel-queue-id': '01JNPX3V7Q0000AB',
  ...over,
});
const headersOnly = ['text/plain', 'message/delivery-status', 'text/rfc822-headers'];
const originalHeaders: [string, string][] = [
  ['Subject', 'Quarterly report'],
  ['Message-ID', '<q1-report.4711@example.org>'],
  ['From', 'Alice Example <alice@example.org>'],
];

const UTF8_ORIGINAL =
  'From: Jörg Müller <jörg@example.org>\r\n' +
  'To: Jürgen <jürgen@bücher.example>\r\n' +
  'Subject: Grüße aus München\r\n' +
  'Message-ID: <gruesse.1@example.org>\r\n' +
  'MIME-Version: 1.0\r\n' +
  'Content-Type: text/plain; charset=utf-8\r\n' +
  'Content-Transfer-Encoding: 8bit\r\n' +
  '\r\n' +
  'Hallo Jürgen!\r\n';

const cases: { name: string; input: Case; expect: Expect }[] = [
  {
    name: 'failed',
    input: {
      kind: 'failed',
      recipients: [
        recipient(1, {
          address: 'bob@example.com',
          orcpt: 'rfc822;bob.smith@example.com',
          lastReply: '550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown in virtual mailbox table',
          lastStatus: '5.1.1',
        }),
        recipient(2, {
          address: 'carol@example.net',
          lastReply: '552 5.2.2 <carol@example.net>: Mailbox full, quota exceeded',
          lastStatus: '5.2.2',
          remote: 'mx.example.net [203.0.113.25]',
        }),
        recipient(3, {
          address: 'dave@nowhere.example',
          lastReply: 'Host or domain name not found. Name service error for name=nowhere.example type=MX: Host not found',
          lastStatus: '5.1.2',
          remote: '',
        }),
      ],
    },
    expect: {
      subject: 'Undeliverable: Quarterly report',
      to: 'alice@example.org',
      partTypes: headersOnly,
      perMessage: perMessage(),
      recipients: [
        {
          'original-recipient': 'rfc822; bob.smith@example.com',
          'final-recipient': 'rfc822; bob@example.com',
          action: 'failed',
          status: '5.1.1',
          'remote-mta': 'dns; mx1.example.com',
          'diagnostic-code': 'smtp; 550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown in virtual mailbox table',
          'last-attempt-date': ATTEMPT_DATE,
        },
        {
          'final-recipient': 'rfc822; carol@example.net',
          action: 'failed',
          status: '5.2.2',
          'remote-mta': 'dns; mx.example.net',
          'diagnostic-code': 'smtp; 552 5.2.2 <carol@example.net>: Mailbox full, quota exceeded',
          'last-attempt-date': ATTEMPT_DATE,
        },
        {
          'final-recipient': 'rfc822; dave@nowhere.example',
          action: 'failed',
          status: '5.1.2',
          'diagnostic-code': 'X-Petrel; Host or domain name not found. Name service error for name=nowhere.example type=MX: Host not found',
          'last-attempt-date': ATTEMPT_DATE,
        },
      ],
      human: [
        'Your message could not be delivered to 3 recipients. This is a permanent error',
        'The address does not exist (1 recipient)',
        "The recipient's mail server said that this address does not exist.",
        '<bob@example.com> (originally sent to <bob.smith@example.com>)',
        'Server: mx1.example.com [192.0.2.10]',
        'Reply: 550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown in virtual mailbox table',
        "The recipient's mailbox is full (1 recipient)",
        'Reply: 552 5.2.2 <carol@example.net>: Mailbox full, quota exceeded',
        "The recipient's domain does not exist (1 recipient)",
        'Error: Host or domain name not found. Name service error for name=nowhere.example type=MX: Host not found',
        'The header section of your original message (not its text) is attached below.',
      ],
      originalHeaders,
      returned: 'headers',
    },
  },
  {
    name: 'expired',
    input: {
      kind: 'expired',
      now: new Date(ARRIVAL + 5 * DAY),
      recipients: [
        recipient(1, {
          address: 'bob@example.com',
          state: 'expired',
          report: 'expired',
          attempts: 23,
          lastReply: 'connect to mx1.example.com [192.0.2.10]:25: Connection timed out',
          lastStatus: '4.4.1',
        }),
        recipient(2, {
          address: 'carol@example.net',
          state: 'expired',
          report: 'expired',
          attempts: 23,
          lastReply: '452 4.2.2 <carol@example.net>: Mailbox full',
          lastStatus: '4.2.2',
          remote: 'mx.example.net [203.0.113.25]',
        }),
      ],
    },
    expect: {
      subject: 'Undeliverable (expired): Quarterly report',
      to: 'alice@example.org',
      partTypes: headersOnly,
      perMessage: perMessage(),
      recipients: [
        {
          'final-recipient': 'rfc822; bob@example.com',
          action: 'failed',
          status: '4.4.7',
          'diagnostic-code': 'X-Petrel; connect to mx1.example.com [192.0.2.10]:25: Connection timed out',
          'last-attempt-date': ATTEMPT_DATE,
        },
        {
          'final-recipient': 'rfc822; carol@example.net',
          action: 'failed',
          status: '4.4.7',
          'remote-mta': 'dns; mx.example.net',
          'diagnostic-code': 'smtp; 452 4.2.2 <carol@example.net>: Mailbox full',
          'last-attempt-date': ATTEMPT_DATE,
        },
      ],
      human: [
        'This mail system kept trying for 5 days, the longest it keeps a message, and has now given up.',
        "No mail server for the recipient's domain answered.",
        'Server: mx1.example.com [192.0.2.10] Last error: connect to mx1.example.com [192.0.2.10]:25: Connection timed out',
        "The recipient's mailbox is full (1 recipient)",
        'Last reply: 452 4.2.2 <carol@example.net>: Mailbox full',
      ],
      originalHeaders,
      returned: 'headers',
    },
  },
  {
    name: 'delayed',
    input: {
      kind: 'delayed',
      now: new Date(ARRIVAL + 4 * 3_600_000),
      retryUntil: ARRIVAL + 5 * DAY,
      recipients: [
        recipient(1, {
          address: 'bob@example.com',
          state: 'deferred',
          report: 'delayed',
          attempts: 7,
          lastReply: '450 4.7.1 <bob@example.com>: Recipient address rejected: Greylisted, see https://grey.example.com/why',
          lastStatus: '4.7.1',
        }),
      ],
    },
    expect: {
      subject: 'Delivery delayed: Quarterly report',
      to: 'alice@example.org',
      partTypes: headersOnly,
      perMessage: perMessage(),
      recipients: [
        {
          'final-recipient': 'rfc822; bob@example.com',
          action: 'delayed',
          status: '4.7.1',
          'remote-mta': 'dns; mx1.example.com',
          'diagnostic-code': 'smtp; 450 4.7.1 <bob@example.com>: Recipient address rejected: Greylisted, see https://grey.example.com/why',
          'last-attempt-date': ATTEMPT_DATE,
          'will-retry-until': 'Sun, 08 Mar 2026 09:15:00 +0000',
        },
      ],
      human: [
        'THIS IS A WARNING ONLY. YOU DO NOT NEED TO SEND YOUR MESSAGE AGAIN.',
        'has been trying for 4 hours and will keep trying for another 4 days and 20 hours',
        'Retry until: Sun, 08 Mar 2026 09:15:00 +0000',
        "The recipient's mail server refused your message (1 recipient)",
        'Last reply: 450 4.7.1',
      ],
      originalHeaders,
      returned: 'headers',
    },
  },
  {
    name: 'delivered',
    input: {
      kind: 'delivered',
      recipients: [
        recipient(1, { address: 'bob@localhost', state: 'delivered', report: 'delivered', lastReply: 'delivered to maildir', lastStatus: '2.0.0', remote: 'maildir' }),
        recipient(2, { address: 'carol@localhost', state: 'delivered', report: 'delivered', lastReply: 'delivered to maildir', lastStatus: '2.0.0', remote: 'maildir', orcpt: 'rfc822;carol@localhost' }),
      ],
    },
    expect: {
      subject: 'Delivered: Quarterly report',
      to: 'alice@example.org',
      partTypes: ['text/plain', 'message/delivery-status', 'text/rfc822-headers'],
      perMessage: perMessage(),
      recipients: [
        { 'final-recipient': 'rfc822; bob@localhost', action: 'delivered', status: '2.0.0', 'diagnostic-code': 'X-Petrel; delivered to maildir', 'last-attempt-date': ATTEMPT_DATE },
        {
          'original-recipient': 'rfc822; carol@localhost',
          'final-recipient': 'rfc822; carol@localhost',
          action: 'delivered',
          status: '2.0.0',
          'diagnostic-code': 'X-Petrel; delivered to maildir',
          'last-attempt-date': ATTEMPT_DATE,
        },
      ],
      human: ['Your message was delivered to 2 recipients.', 'It does not mean that the message has been read.', 'Delivered (2 recipients)', 'Details: delivered to maildir'],
      originalHeaders,
      returned: 'headers',
    },
  },
  {
    name: 'expanded',
    input: {
      kind: 'expanded',
      recipients: [
        recipient(1, {
          address: 'team@localhost',
          state: 'delivered',
          report: 'expanded',
          lastReply: '250 2.0.0 <team@localhost>: alias expanded',
          lastStatus: '2.0.0',
          remote: '',
          orcpt: 'rfc822;team@localhost',
        }),
      ],
    },
    expect: {
      subject: 'Expanded: Quarterly report',
      to: 'alice@example.org',
      partTypes: headersOnly,
      perMessage: perMessage(),
      recipients: [
        {
          'original-recipient': 'rfc822; team@localhost',
          'final-recipient': 'rfc822; team@localhost',
          action: 'expanded',
          status: '2.0.0',
          'diagnostic-code': 'X-Petrel; 250 2.0.0 <team@localhost>: alias expanded',
          'last-attempt-date': ATTEMPT_DATE,
        },
      ],
      human: [
        'Your message was accepted for 1 recipient, an alias on this mail system, and',
        'Passed on to the addresses of an alias (1 recipient)',
        'Details:     250 2.0.0 <team@localhost>: alias expanded',
      ],
      originalHeaders,
      returned: 'headers',
    },
  },
  {
    name: 'relayed',
    input: {
      kind: 'relayed',
      recipients: [
        recipient(1, {
          address: 'bob@legacy.example',
          state: 'delivered',
          report: 'relayed',
          lastReply: '250 2.0.0 Ok: queued as 4Fk2Lm0x',
          lastStatus: '2.0.0',
          remote: 'legacy-mx.example [192.0.2.30]',
        }),
      ],
    },
    expect: {
      subject: 'Relayed: Quarterly report',
      to: 'alice@example.org',
      partTypes: headersOnly,
      perMessage: perMessage(),
      recipients: [
        {
          'final-recipient': 'rfc822; bob@legacy.example',
          action: 'relayed',
          status: '2.0.0',
          'remote-mta': 'dns; legacy-mx.example',
          'diagnostic-code': 'smtp; 250 2.0.0 Ok: queued as 4Fk2Lm0x',
          'last-attempt-date': ATTEMPT_DATE,
        },
      ],
      human: [
        'Your message was passed on to the next mail server for 1 recipient.',
        'Passed on to a server that sends no delivery reports (1 recipient)',
        'Server: legacy-mx.example [192.0.2.30]',
        'Reply: 250 2.0.0 Ok: queued as 4Fk2Lm0x',
      ],
      originalHeaders,
      returned: 'headers',
    },
  },
  {
    name: 'orcpt-envid',
    input: {
      kind: 'failed',
      message: message({ envid: 'QQ314159', recipientCount: 2 }),
      recipients: [
        recipient(1, { address: 'bob@example.com', orcpt: 'rfc822;Bob@Example.COM' }),
        recipient(2, { address: 'juergen@example.net', orcpt: 'utf-8;j\\x{FC}rgen@example.net', lastReply: '550 5.1.1 <juergen@example.net>: unknown', remote: 'mx.example.net [203.0.113.25]' }),
      ],
    },
    expect: {
      subject: 'Undeliverable: Quarterly report',
      to: 'alice@example.org',
      partTypes: headersOnly,
      perMessage: perMessage({ 'original-envelope-id': 'QQ314159' }),
      recipients: [
        {
          'original-recipient': 'rfc822; Bob@Example.COM',
          'final-recipient': 'rfc822; bob@example.com',
          action: 'failed',
          status: '5.1.1',
          'remote-mta': 'dns; mx1.example.com',
          'diagnostic-code': 'smtp; 550 5.1.1 No such user',
          'last-attempt-date': ATTEMPT_DATE,
        },
        {
          'original-recipient': 'utf-8; j\\x{FC}rgen@example.net',
          'final-recipient': 'rfc822; juergen@example.net',
          action: 'failed',
          status: '5.1.1',
          'remote-mta': 'dns; mx.example.net',
          'diagnostic-code': 'smtp; 550 5.1.1 <juergen@example.net>: unknown',
          'last-attempt-date': ATTEMPT_DATE,
        },
      ],
      human: ['The address does not exist (2 recipients)', '<juergen@example.net> (originally sent to <jürgen@example.net>)'],
      originalHeaders,
      returned: 'headers',
    },
  },
  {
    name: 'ret-full',
    input: { kind: 'failed', message: message({ ret: 'FULL' }), recipients: [recipient(1, { address: 'bob@example.com' })] },
    expect: {
      subject: 'Undeliverable: Quarterly report',
      to: 'alice@example.org',
      partTypes: ['text/plain', 'message/delivery-status', 'message/rfc822'],
      perMessage: perMessage(),
      recipients: [
        {
          'final-recipient': 'rfc822; bob@example.com',
          action: 'failed',
          status: '5.1.1',
          'remote-mta': 'dns; mx1.example.com',
          'diagnostic-code': 'smtp; 550 5.1.1 No such user',
          'last-attempt-date': ATTEMPT_DATE,
        },
      ],
      human: ['Your original message is attached below.'],
      originalHeaders,
      originalBody: 'the figures for the first quarter are below.',
      returned: 'full',
    },
  },
  {
    name: 'ret-full-too-big',
    input: { kind: 'failed', message: message({ ret: 'FULL' }), returnSizeLimit: 300, recipients: [recipient(1, { address: 'bob@example.com' })] },
    expect: {
      subject: 'Undeliverable: Quarterly report',
      to: 'alice@example.org',
      partTypes: headersOnly,
      perMessage: perMessage(),
      recipients: [
        {
          'final-recipient': 'rfc822; bob@example.com',
          action: 'failed',
          status: '5.1.1',
          'remote-mta': 'dns; mx1.example.com',
          'diagnostic-code': 'smtp; 550 5.1.1 No such user',
          'last-attempt-date': ATTEMPT_DATE,
        },
      ],
      human: [`You asked for the whole message to be returned, but at ${Buffer.byteLength(ORIGINAL)} octets it is larger than the 300 octets this mail system returns, so only its header section is attached below.`],
      originalHeaders,
      returned: 'headers',
    },
  },
  {
    name: 'smtputf8',
    input: {
      kind: 'failed',
      to: 'jörg@example.org',
      original: originalFrom(UTF8_ORIGINAL),
      message: message({ smtputf8: true, eightBit: true, sender: 'jörg@example.org', subject: 'Grüße aus München', messageId: '<gruesse.1@example.org>', size: Buffer.byteLength(UTF8_ORIGINAL) }),
      recipients: [
        recipient(1, {
          address: 'jürgen@bücher.example',
          orcpt: 'utf-8;j\\x{FC}rgen@b\\x{FC}cher.example',
          lastReply: '550 5.1.1 <jürgen@bücher.example>: Benutzer unbekannt',
          remote: 'mx.bücher.example [192.0.2.40]',
        }),
        recipient(2, { address: 'anna@example.net', lastReply: '550 5.7.1 Message rejected: Nachricht abgelehnt – Richtlinie', lastStatus: '5.7.1', remote: 'mx.example.net [203.0.113.25]' }),
      ],
    },
    expect: {
      subject: 'Undeliverable: Grüße aus München',
      to: 'jörg@example.org',
      global: true,
      partTypes: ['text/plain', 'message/global-delivery-status', 'message/global-headers'],
      perMessage: perMessage(),
      recipients: [
        {
          'original-recipient': 'utf-8; jürgen@bücher.example',
          'final-recipient': 'utf-8; jürgen@bücher.example',
          action: 'failed',
          status: '5.1.1',
          'remote-mta': 'dns; mx.xn--bcher-kva.example',
          'diagnostic-code': 'smtp; 550 5.1.1 <jürgen@bücher.example>: Benutzer unbekannt',
          'last-attempt-date': ATTEMPT_DATE,
        },
        {
          'final-recipient': 'rfc822; anna@example.net',
          action: 'failed',
          status: '5.7.1',
          'remote-mta': 'dns; mx.example.net',
          'diagnostic-code': 'smtp; 550 5.7.1 Message rejected: Nachricht abgelehnt – Richtlinie',
          'last-attempt-date': ATTEMPT_DATE,
        },
      ],
      human: ['<jürgen@bücher.example>', 'Reply: 550 5.1.1 <jürgen@bücher.example>: Benutzer unbekannt', 'Subject: Grüße aus München'],
      originalHeaders: [
        ['Subject', 'Grüße aus München'],
        ['From', 'Jörg Müller <jörg@example.org>'],
      ],
      returned: 'headers',
    },
  },
  {
    name: 'postmaster',
    input: {
      kind: 'failed',
      to: 'postmaster@mx.petrel.example',
      message: message({ isReport: true, sender: '', subject: 'Undeliverable: Quarterly report', messageId: '<01JNPX0000000000.abcdefabcdef.dsn@mx.petrel.example>' }),
      original: originalFrom(
        'From: Mail Delivery System <MAILER-DAEMON@mx.petrel.example>\r\nTo: <alice@example.org>\r\nSubject: Undeliverable: Quarterly report\r\nMessage-ID: <01JNPX0000000000.abcdefabcdef.dsn@mx.petrel.example>\r\nAuto-Submitted: auto-replied\r\n\r\nbody\r\n',
      ),
      recipients: [recipient(1, { address: 'alice@example.org', lastReply: '550 5.1.1 <alice@example.org>: mailbox unavailable', remote: 'mx.example.org [198.51.100.2]' })],
    },
    expect: {
      subject: 'Postmaster notice: Undeliverable: Undeliverable: Quarterly report',
      to: 'postmaster@mx.petrel.example',
      partTypes: headersOnly,
      perMessage: perMessage(),
      recipients: [
        {
          'final-recipient': 'rfc822; alice@example.org',
          action: 'failed',
          status: '5.1.1',
          'remote-mta': 'dns; mx.example.org',
          'diagnostic-code': 'smtp; 550 5.1.1 <alice@example.org>: mailbox unavailable',
          'last-attempt-date': ATTEMPT_DATE,
        },
      ],
      human: ['This notice is for the postmaster.', 'Reports about reports are never sent to their sender, the null sender <>', 'The delivery report described below could not be delivered to 1 recipient.'],
      originalHeaders: [['Auto-Submitted', 'auto-replied']],
      returned: 'headers',
    },
  },
];

const squash = (s: string): string => s.replace(/\s+/g, ' ');

for (const c of cases) {
  test(`dsn golden ${c.name}: matches test/golden/dsn/${c.name}.eml`, async () => {
    const { raw, result } = await build(c.input);
    const masked = mask(raw);
    const file = new URL(`${c.name}.eml`, GOLDEN);
    if (process.env.UPDATE_GOLDEN === '1') await writeFile(file, masked);
    const golden = await readFile(file, 'utf8').catch((e: Error) => assert.fail(`golden file missing (run with UPDATE_GOLDEN=1 to create it): ${e.message}`));
    assert.equal(masked, golden);
    assert.equal(result.returned, c.expect.returned);
    assert.equal(result.smtputf8, c.expect.global === true);
    assert.deepEqual(result.recipientIds, c.input.recipients.map((r) => r.id));
  });

  test(`dsn golden ${c.name}: every line CRLF-terminated and within 998 octets`, async () => {
    const { raw } = await build(c.input);
    for (const line of lines(raw)) assert.ok(line.length <= 998, `line of ${line.length} octets`);
    // 7bit unless something in it needs 8 bits, and then said so.
    const eight = raw.some((b) => b >= 0x80);
    const head = raw.toString('latin1').split('\r\n\r\n')[0]!;
    assert.equal(head.includes('\r\nContent-Transfer-Encoding: 8bit'), eight);
  });

  test(`dsn golden ${c.name}: Python's email package reads every field`, async () => {
    const { raw, result } = await build(c.input);
    const p = await python(raw);
    const e = c.expect;
    assert.deepEqual(p.defects, []);
    assert.equal(p.contentType, 'multipart/report');
    assert.equal(p.params['report-type'], e.global ? 'global-delivery-status' : 'delivery-status');
    assert.match(p.params['boundary'] ?? '', /^=_petrel-[0-9a-f]{32}$/);
    assert.deepEqual(p.headers['from'], ['Mail Delivery System <MAILER-DAEMON@mx.petrel.example>']);
    // The "default" policy shows an address header as its addresses.
    assert.deepEqual(p.headers['to'], [e.to]);
    assert.deepEqual(p.headers['subject'], [e.subject]);
    assert.deepEqual(p.headers['auto-submitted'], ['auto-replied']);
    assert.deepEqual(p.headers['mime-version'], ['1.0']);
    assert.deepEqual(p.headers['message-id'], [result.messageId]);
    assert.match(result.messageId, /^<01JNPX3V7Q0000AB\.[0-9a-f]{12}\.dsn@mx\.petrel\.example>$/);
    assert.equal(p.headers['date']?.length, 1);
    assert.equal(Date.parse(p.headers['date']![0]!), (c.input.now ?? NOW).getTime());
    assert.deepEqual(
      p.parts.map((x) => x.type),
      e.partTypes,
    );
    assert.deepEqual(p.perMessage, e.perMessage);
    assert.equal(p.statusBlocks, 1 + e.recipients.length);
    assert.deepEqual(p.recipients, e.recipients);
    const text = squash(p.parts[0]!.text ?? '');
    for (const s of e.human) assert.ok(text.includes(squash(s)), `human part lacks ${JSON.stringify(s)}:\n${p.parts[0]!.text}`);
    for (const r of c.input.recipients) assert.ok(text.includes(`<${r.address}>`), `human part lacks ${r.address}`);
    assert.ok(p.original, 'third part present');
    for (const [name, value] of e.originalHeaders) {
      assert.ok(
        p.original.headers.some(([n, v]) => n.toLowerCase() === name.toLowerCase() && v === value),
        `original lacks ${name}: ${value} in ${JSON.stringify(p.original.headers)}`,
      );
    }
    if (e.originalBody !== undefined) assert.ok(p.original.body?.includes(e.originalBody), `returned body: ${p.original.body}`);
  });

  test(`dsn golden ${c.name}: mailparser shows what a mail client shows`, async () => {
    const { raw, result } = await build(c.input);
    const m = await simpleParser(raw, { keepDeliveryStatus: true });
    assert.equal(m.subject, c.expect.subject);
    assert.equal(result.subject, c.expect.subject);
    const from = Array.isArray(m.from) ? m.from[0] : m.from;
    assert.equal(from?.value[0]?.address, 'MAILER-DAEMON@mx.petrel.example');
    const to = Array.isArray(m.to) ? m.to[0] : m.to;
    assert.equal(to?.value[0]?.address, c.expect.to);
    assert.equal(m.headers.get('auto-submitted'), 'auto-replied');
    assert.equal(m.messageId, result.messageId);
    assert.equal(m.date?.getTime(), (c.input.now ?? NOW).getTime());
    const text = squash(m.text ?? '');
    for (const r of c.input.recipients) {
      assert.ok(text.includes(`<${r.address}>`), `text lacks ${r.address}`);
      assert.ok(text.includes(squash(r.lastReply)), `text lacks the exact reply ${r.lastReply}`);
    }
    const types = m.attachments.map((a) => a.contentType);
    assert.deepEqual(types, c.expect.partTypes.slice(1));
  });
}

test('dsn golden: the fixture dates are the ones the golden files show', () => {
  // Guards the constants above: a changed fixture must change the golden files too.
  assert.equal(new Date(ARRIVAL).toUTCString(), 'Tue, 03 Mar 2026 09:15:00 GMT');
  assert.equal(new Date(LAST_ATTEMPT).toUTCString(), 'Tue, 03 Mar 2026 09:41:30 GMT');
});
