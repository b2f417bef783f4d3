// Unit tests for what pickup and sendmail read from a message: line-end
// normalisation (streamed), header sections, RFC 5322 address lists, and the
// envelope taken from X-Envelope-* or From/To/Cc/Bcc.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CrlfNormalizer, toCrlf } from '../../src/core/crlf.js';
import { parseHeaderSection, headerValues } from '../../src/core/headers.js';
import { parseAddressList } from '../../src/core/address-list.js';
import { headerEnvelope } from '../../src/pickup/envelope.js';

test('CRLF normalisation: bare LF and bare CR become CR LF, also across chunk ends', () => {
  assert.equal(toCrlf(Buffer.from('a\nb\r\nc\rd\r')).toString(), 'a\r\nb\r\nc\r\nd\r\n');
  const n = new CrlfNormalizer();
  const out = [n.push(Buffer.from('x\r')), n.push(Buffer.from('\ny\r')), n.push(Buffer.from('z')), n.end()].map((b) => b.toString()).join('');
  assert.equal(out, 'x\r\ny\r\nz');
});

test('header section: folded fields, the body offset, a non-field line ends it', () => {
  const msg = Buffer.from('Subject: one\r\n two\r\nTo: a@b.test\r\n\r\nbody\r\n');
  const s = parseHeaderSection(msg);
  assert.deepEqual(s.fields.map((f) => [f.key, f.value]), [['subject', 'one two'], ['to', 'a@b.test']]);
  assert.equal(s.fields[0]!.raw.toString(), 'Subject: one\r\n two\r\n');
  assert.equal(msg.subarray(s.bodyStart).toString(), 'body\r\n');
  assert.equal(s.blankLine, true);
  const noBlank = parseHeaderSection(Buffer.from('To: a@b.test\r\nthis is body\r\n'));
  assert.equal(noBlank.blankLine, false);
  assert.equal(noBlank.open, false);
  assert.equal(noBlank.fields.length, 1);
  assert.equal(parseHeaderSection(Buffer.from('To: a@b.test\r\n')).open, true);
});

test('address lists: display names, comments, quotes, groups, routes', () => {
  assert.deepEqual(parseAddressList('Alice <alice@a.test>, bob@b.test (Bob), "Doe, John" <jd@c.test>'), ['alice@a.test', 'bob@b.test', 'jd@c.test']);
  assert.deepEqual(parseAddressList('team: x@a.test, "Y" <y@a.test>;, z@a.test'), ['x@a.test', 'y@a.test', 'z@a.test']);
  assert.deepEqual(parseAddressList('undisclosed-recipients:;'), []);
  assert.deepEqual(parseAddressList('<@relay.test:user@a.test>'), ['user@a.test']);
  assert.deepEqual(parseAddressList('"odd, local"@a.test'), ['"odd, local"@a.test']);
  assert.deepEqual(parseAddressList('bob'), ['bob']);
  assert.deepEqual(parseAddressList('Just A Name'), [], 'a display name alone is not an address');
  assert.deepEqual(parseAddressList('a@b.test (comment (nested) here) , <c@d.test>'), ['a@b.test', 'c@d.test']);
});

test('envelope: X-Envelope-* when present, removed with Bcc', () => {
  const s = parseHeaderSection(Buffer.from('X-Envelope-From: <s@x.test>\r\nX-Envelope-To: <r1@y.test>\r\nX-Envelope-To: r2@y.test, <r3@y.test>\r\nFrom: other@x.test\r\nTo: ignored@y.test\r\nBcc: hidden@y.test\r\n\r\n'));
  const e = headerEnvelope(s.fields, 'local.test');
  assert.ok(!('error' in e));
  assert.equal(e.sender, 's@x.test');
  assert.deepEqual(e.recipients, ['r1@y.test', 'r2@y.test', 'r3@y.test']);
  assert.deepEqual([...e.remove].sort(), ['bcc', 'x-envelope-from', 'x-envelope-to']);
  const nul = headerEnvelope(parseHeaderSection(Buffer.from('X-Envelope-From: <>\r\nTo: a@b.test\r\n\r\n')).fields, 'l.test');
  assert.ok(!('error' in nul) && nul.sender === '');
});

test('envelope: else From, and To/Cc/Bcc; bare names get the default domain; duplicates once', () => {
  const s = parseHeaderSection(Buffer.from('From: "Sender" <s@x.test>, other@x.test\r\nTo: a@y.test, bob\r\nCc: A@y.test\r\nBcc: secret@y.test\r\n\r\n'));
  const e = headerEnvelope(s.fields, 'local.test');
  assert.ok(!('error' in e));
  assert.equal(e.sender, 's@x.test');
  assert.deepEqual(e.recipients, ['a@y.test', 'bob@local.test', 'secret@y.test']);
  assert.equal(headerValues(s.fields, 'bcc')[0], 'secret@y.test');
});

test('envelope: what makes a file unusable', () => {
  const err = (text: string): string => {
    const e = headerEnvelope(parseHeaderSection(Buffer.from(text)).fields, 'l.test');
    assert.ok('error' in e, `expected an error for ${JSON.stringify(text)}`);
    return e.error;
  };
  assert.match(err('To: a@b.test\r\n\r\n'), /no sender/);
  assert.match(err('From: a@b.test\r\nSubject: x\r\n\r\n'), /no recipients/);
  assert.match(err('From: a@b.test\r\nTo: "unterminated@b.test\r\n\r\n'), /not a valid address/);
  assert.match(err('From: a@b.test\r\nTo: x@@b.test\r\n\r\n'), /not a valid address/);
  assert.match(err('X-Envelope-From: a@b.test\r\nX-Envelope-From: c@b.test\r\nTo: x@b.test\r\n\r\n'), /more than one X-Envelope-From/);
  assert.match(err('X-Envelope-From: not an address\r\nTo: x@b.test\r\n\r\n'), /sender .* is not a valid address/);
});
