/*
 * dsn-fields - the small pure parts of the DSN writer: Status per kind,
 * remote or local diagnostics, Remote-MTA names, RFC 6533 address forms,
 * the plain-language explanations, and the line tools (cleaning, folding,
 * wrapping, encoded words) checked against their 998-octet promise.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { explain, reasonKey } from '../../src/dsn/explain.js';
import { addressValue, causeStatus, decodeEmbedded, diagnosticValue, isRemoteReply, parseTypedAddress, remoteMtaName, reportStatus, utf8Xtext } from '../../src/dsn/fields.js';
import { cleanText, encodedWords, foldField, formatCount, formatSpan, MAX_LINE, octets, wrapText } from '../../src/dsn/mime.js';
import { build, python, recipient } from '../helpers/dsn-writer.js';

test('dsn fields: Status has the class of the Action; expiry is always 4.4.7', () => {
  assert.equal(reportStatus('failed', '5.1.1'), '5.1.1');
  assert.equal(reportStatus('failed', '4.4.1'), '5.4.1');
  assert.equal(reportStatus('failed', ''), '5.0.0');
  assert.equal(reportStatus('failed', 'garbage'), '5.0.0');
  assert.equal(reportStatus('expired', '4.2.2'), '4.4.7');
  assert.equal(reportStatus('expired', '5.1.1'), '4.4.7');
  assert.equal(reportStatus('delayed', '4.7.1'), '4.7.1');
  assert.equal(reportStatus('delayed', '5.7.1'), '4.7.1');
  assert.equal(reportStatus('delayed', ''), '4.0.0');
  assert.equal(reportStatus('delivered', '2.1.5'), '2.1.5');
  assert.equal(reportStatus('delivered', '5.1.1'), '2.0.0');
  assert.equal(reportStatus('relayed', ''), '2.0.0');
  // What went wrong last, for the explanation of an expiry.
  assert.equal(causeStatus('expired', '4.2.2'), '4.2.2');
  assert.equal(causeStatus('expired', ''), '4.4.7');
});

test('dsn fields: a reply is "smtp" only when a peer gave it', () => {
  assert.equal(isRemoteReply(recipient(1, { lastReply: '550 5.1.1 no', remote: 'mx.example.com [192.0.2.1]' })), true);
  assert.equal(isRemoteReply(recipient(1, { lastReply: '550-5.1.1 first line', remote: 'mx.example.com' })), true);
  assert.equal(isRemoteReply(recipient(1, { lastReply: 'connect to mx.example.com: Connection refused', remote: 'mx.example.com' })), false);
  assert.equal(isRemoteReply(recipient(1, { lastReply: '550 5.1.1 unknown user', remote: '' })), false);
  assert.equal(isRemoteReply(recipient(1, { lastReply: '250 delivered', remote: 'maildir' })), false);
  assert.equal(isRemoteReply(recipient(1, { lastReply: 'permission denied', remote: 'directory /srv/share' })), false);
  // The agent's own flag wins when the record carries it.
  assert.equal(isRemoteReply(recipient(1, { lastReply: '550 5.4.6 alias loop', remote: 'mx.example.com', remoteReply: false })), false);
  assert.equal(isRemoteReply(recipient(1, { lastReply: 'odd words', remote: 'lmtp', remoteReply: true })), true);
  assert.equal(diagnosticValue('550 5.1.1 x', true, false), 'smtp; 550 5.1.1 x');
  assert.equal(diagnosticValue('no route', false, false), 'X-Petrel; no route');
  assert.equal(diagnosticValue('  \r\n ', false, false), null);
  assert.equal(diagnosticValue('550 nö', true, false), 'smtp; 550 n?');
  assert.equal(diagnosticValue('550 nö', true, true), 'smtp; 550 nö');
});

test('dsn fields: Remote-MTA names', () => {
  assert.equal(remoteMtaName('mx1.example.com [192.0.2.1]'), 'mx1.example.com');
  assert.equal(remoteMtaName('mx1.example.com.:25'), 'mx1.example.com');
  assert.equal(remoteMtaName('192.0.2.7:2525'), '[192.0.2.7]');
  assert.equal(remoteMtaName('[IPv6:2001:db8::1]'), '[IPv6:2001:db8::1]');
  assert.equal(remoteMtaName('mx.bücher.example'), 'mx.xn--bcher-kva.example');
  assert.equal(remoteMtaName('/run/dovecot/lmtp'), null);
  assert.equal(remoteMtaName('evil;host\r\nX: y'), null);
});

test('dsn fields: addresses in RFC 3464 and RFC 6533 forms', () => {
  assert.equal(addressValue('rfc822', 'bob@example.com', false), 'rfc822; bob@example.com');
  assert.equal(addressValue('rfc822', 'bob@example.com', true), 'rfc822; bob@example.com');
  assert.equal(addressValue('rfc822', 'jürgen@bücher.example', true), 'utf-8; jürgen@bücher.example');
  assert.equal(addressValue('rfc822', 'jürgen@bücher.example', false), 'utf-8; j\\x{FC}rgen@b\\x{FC}cher.example');
  assert.equal(addressValue('utf-8', 'j\\x{FC}rgen@example.net', true), 'utf-8; jürgen@example.net');
  assert.equal(addressValue('UTF-8', 'j\\x{FC}rgen@example.net', false), 'utf-8; j\\x{FC}rgen@example.net');
  assert.equal(addressValue('x400', 'c=de;a=x', false), 'x400; c=de;a=x');
  assert.equal(utf8Xtext('a+b=c\\d e😀'), 'a\\x{2B}b\\x{3D}c\\x{5C}d\\x{20}e\\x{1F600}');
  assert.equal(decodeEmbedded('\\x{1F600}\\x{D800}\\x{110000}'), '😀\\x{D800}\\x{110000}');
  assert.deepEqual(parseTypedAddress('RFC822;Bob@Example.com'), { type: 'rfc822', address: 'Bob@Example.com' });
  assert.deepEqual(parseTypedAddress('bob@example.com'), { type: 'rfc822', address: 'bob@example.com' });
});

test('dsn explain: every status gets words; specific codes get their own', () => {
  assert.equal(explain('failed', '5.1.1', true).title, 'The address does not exist');
  assert.equal(explain('failed', '5.1.1', true).what, "The recipient's mail server said that this address does not exist.");
  assert.equal(explain('failed', '5.1.1', false).what, 'This address does not exist on this mail system.');
  assert.notEqual(explain('failed', '5.1.1', true).key, explain('failed', '5.1.1', false).key);
  assert.equal(explain('failed', '5.2.2', true).title, "The recipient's mailbox is full");
  assert.equal(explain('failed', '5.7.26', true).key, explain('failed', '5.7.23', true).key);
  assert.equal(explain('failed', '5.4.6', false).title, 'The message went round in a loop');
  assert.equal(reasonKey('5.1.99'), '1');
  assert.equal(reasonKey('5.99.1'), '');
  assert.equal(reasonKey('nonsense'), '');
  assert.ok(explain('failed', '5.1.1', true).advice.length > 0);
  assert.equal(explain('delayed', '4.2.2', true).advice, '', 'a delay has nothing for the sender to do yet');
  assert.equal(explain('delivered', '2.0.0', false).title, 'Delivered');
  assert.equal(explain('relayed', '2.0.0', true).key, 'relayed');
  // Few explanations, whatever the codes: a report has a bounded number of sections.
  const keys = new Set<string>();
  for (const cls of [4, 5]) {
    for (let s = 0; s < 10; s++) {
      for (let d = 0; d < 30; d++) {
        for (const remote of [true, false]) {
          const e = explain(cls === 4 ? 'delayed' : 'failed', `${cls}.${s}.${d}`, remote);
          assert.ok(e.title && e.what, `${cls}.${s}.${d}`);
          keys.add(e.key);
        }
      }
    }
  }
  assert.ok(keys.size <= 60, `${keys.size} explanations`);
});

test('dsn mime: cleaning removes every control character', () => {
  assert.equal(cleanText(' a\r\nb\x00c\td\x7fe\u0085f '), 'a b c d e f');
});

/** A tiny deterministic generator for the fuzz below. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

test('dsn mime: folding and wrapping keep every line within 998 octets and lose no word', () => {
  const rand = rng(42);
  const alphabet = ['a', 'b', ' ', ' ', 'ü', '€', '😀', '-', 'x'];
  for (let i = 0; i < 300; i++) {
    const n = Math.floor(rand() * 6000);
    let text = '';
    for (let j = 0; j < n; j++) text += rand() < 0.002 ? ' ' : alphabet[Math.floor(rand() * alphabet.length)]!;
    const value = cleanText(text);
    const folded = foldField('Diagnostic-Code', value).split('\r\n');
    for (const l of folded) assert.ok(octets(l) <= MAX_LINE, `folded line of ${octets(l)} octets`);
    folded.slice(1).forEach((l) => assert.ok(l.startsWith(' ')));
    assert.equal(folded.join('').replace(/^Diagnostic-Code:/, '').replace(/ /g, ''), value.replace(/ /g, ''));
    const wrapped = wrapText(value, 76, '      ', '  ');
    for (const l of wrapped) assert.ok(octets(l) <= MAX_LINE);
    wrapped.forEach((l, k) => assert.ok(l.startsWith(k === 0 ? '  ' : '      ')));
    assert.equal(wrapped.join('').replace(/ /g, ''), value.replace(/ /g, ''));
  }
  // Short text is left as it is.
  assert.equal(foldField('Action', 'failed'), 'Action: failed');
  assert.deepEqual(wrapText('one two', 76, '  '), ['  one two']);
});

test('dsn mime: encoded words decode back to the text and stay within 75 characters', () => {
  const text = 'Grüße aus München – 😀 '.repeat(10);
  const words = encodedWords(text);
  for (const w of words) assert.ok(w.length <= 75, w);
  const decoded = words.map((w) => Buffer.from(/^=\?UTF-8\?B\?(.*)\?=$/.exec(w)![1]!, 'base64').toString('utf8')).join('');
  assert.equal(decoded, text);
});

test('dsn mime: spans and counts in words', () => {
  assert.equal(formatSpan(5 * 86_400_000), '5 days');
  assert.equal(formatSpan(86_400_000 + 2 * 3_600_000), '1 day and 2 hours');
  assert.equal(formatSpan(4 * 3_600_000), '4 hours');
  assert.equal(formatSpan(5 * 86_400_000 - 60_000), '5 days');
  assert.equal(formatSpan(90_000), '2 minutes');
  assert.equal(formatSpan(0), '1 minute');
  assert.equal(formatCount(100000), '100,000');
  assert.equal(formatCount(999), '999');
});

test('dsn fields: Will-Retry-Until only in a delay warning that knows when Petrel gives up', async () => {
  const delayed = recipient(1, { state: 'deferred', report: 'delayed', lastReply: '451 4.3.0 try later', lastStatus: '4.3.0' });
  const without = await python((await build({ kind: 'delayed', recipients: [delayed] })).raw);
  assert.equal(without.recipients[0]!['will-retry-until'], undefined);
  assert.ok(without.parts[0]!.text!.replace(/\s+/g, ' ').includes('will keep trying. If it finally cannot deliver it, you will get another message.'));
  const withTime = await python((await build({ kind: 'delayed', retryUntil: Date.UTC(2026, 2, 8, 9, 15), recipients: [delayed] })).raw);
  assert.equal(withTime.recipients[0]!['will-retry-until'], 'Sun, 08 Mar 2026 09:15:00 +0000');
  const failed = await python((await build({ kind: 'failed', retryUntil: Date.UTC(2026, 2, 8, 9, 15), recipients: [recipient(1)] })).raw);
  assert.equal(failed.recipients[0]!['will-retry-until'], undefined);
});
