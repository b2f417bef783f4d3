// dkim-body-hash: the relaxed body hash (dkim/body-hash) gives the same bh=
// as mailauth's canonicaliser (the library the signer used before, and the
// one receivers' verifiers follow) on random bodies cut at random places:
// runs of spaces and tabs, white space at line ends, lines of white space
// only, empty lines at the end, an empty body. Bodies end with CR LF, as every
// message Petrel stores does (a last line without CR LF is tested only where
// verifiers agree: mailauth and dkimpy differ on a last line of white space
// with no CR LF, which never reaches the signer).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import fc from 'fast-check';
import { RelaxedBodyHash } from '../../src/dkim/body-hash.js';

const require = createRequire(import.meta.url);
const { dkimBody } = require('mailauth/lib/dkim/body/index.js') as {
  dkimBody: (canon: string, algo: string, maxLength: false) => { update(b: Buffer): void; digest(e: 'base64'): string };
};

function reference(body: Buffer): string {
  const h = dkimBody('relaxed', 'sha256', false);
  h.update(body);
  return h.digest('base64');
}

function ours(body: Buffer, cuts: number[]): string {
  const h = new RelaxedBodyHash();
  let at = 0;
  for (const c of [...cuts].sort((a, b) => a - b)) {
    const to = Math.min(body.length, c);
    if (to <= at) continue;
    h.update(body.subarray(at, to));
    at = to;
  }
  h.update(body.subarray(at));
  return h.digest();
}

const piece = fc.constantFrom('a', 'b', 'xyz', ' ', '  ', '\t', ' \t ', '\r\n', '\r\n\r\n', 'word word', '.', 'é');

test('random bodies, cut anywhere: the same hash as mailauth relaxed', () => {
  fc.assert(
    fc.property(fc.array(piece, { maxLength: 60 }), fc.array(fc.nat({ max: 400 }), { maxLength: 8 }), (parts, cuts) => {
      const text = parts.join('');
      const body = Buffer.from(text === '' || text.endsWith('\r\n') ? text : `${text}\r\n`, 'utf8');
      assert.equal(ours(body, cuts), reference(body), JSON.stringify(body.toString('latin1')));
    }),
    { numRuns: 3000 },
  );
});

test('the cases by name', () => {
  const cases = [
    '',
    '\r\n',
    '\r\n\r\n\r\n',
    'a\r\n',
    'a\r\n\r\n\r\n',
    'a',
    'a  b\t\tc  \r\n',
    '   \r\n\t\r\nx\r\n  \r\n',
    'x\r\n\r\n  \r\n\t\r\n',
    'line\r\n\r\nafter empty\r\n',
    'no end',
    'a  b\r\nno end',
    `${'X'.repeat(78)}\r\n`.repeat(1280),
  ];
  for (const c of cases) {
    const body = Buffer.from(c, 'latin1');
    assert.equal(ours(body, []), reference(body), JSON.stringify(c.slice(0, 40)));
    assert.equal(ours(body, [1, 2, 3, 5, 8, 13]), reference(body), JSON.stringify(c.slice(0, 40)));
  }
});

test('a body of empty lines only hashes like the empty body; empty lines followed by text count', () => {
  const empty = ours(Buffer.from(''), []);
  assert.equal(ours(Buffer.from('\r\n\r\n'), [2]), empty);
  assert.notEqual(ours(Buffer.from('\r\n\r\nx\r\n'), [2]), ours(Buffer.from('x\r\n'), []));
});

test('relaxed header form: the same as mailauth for ASCII fields; octet 0xA0 (inside UTF-8) is not white space', async () => {
  const { relaxedHeader } = await import('../../src/dkim/sign-core.js');
  const { formatRelaxedLine } = require('mailauth/lib/tools.js') as { formatRelaxedLine: (l: Buffer, s?: string) => Buffer };
  const fields = ['Subject: hello', 'SUBJECT :  a  \t b  ', 'To: a@b,\r\n\tc@d', 'X-Empty:', 'From:\r\n x@y', 'DKIM-Signature: v=1; a=rsa-sha256;\r\n\tb='];
  for (const f of fields) {
    const raw = Buffer.from(f, 'latin1');
    assert.equal(relaxedHeader(raw, '\r\n').toString('latin1'), formatRelaxedLine(raw, '\r\n').toString('latin1'), f);
  }
  const utf8 = Buffer.from('Subject: voil\u00e0 caf\u00e9', 'utf8'); // "à" is C3 A0
  assert.equal(relaxedHeader(utf8).toString('utf8'), 'subject:voil\u00e0 caf\u00e9');
});
