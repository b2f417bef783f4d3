// smtp-body: DotEncoder - dot-stuffing (no wrapping: enqueue wraps), line ends and the
// final dot, byte for byte, and the same output however the input is chunked.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DATA_END, DotEncoder, MAX_LINE, encodeAll, wireReady } from '../../src/delivery/smtp/body.js';
import { parseCapabilities } from '../../src/delivery/smtp/capabilities.js';
import { ReplyParser } from '../../src/core/smtp-reply.js';

const enc = (s: string | Buffer): string => encodeAll(Buffer.from(s as string)).toString('latin1');

/** encodeChunked - the same input cut at the given sizes. */
function encodeChunked(input: Buffer, sizes: () => number): Buffer {
  const e = new DotEncoder();
  const out: Buffer[] = [];
  for (let i = 0; i < input.length; ) {
    const n = Math.max(1, sizes());
    out.push(e.encode(input.subarray(i, i + n)));
    i += n;
  }
  out.push(e.end());
  return Buffer.concat(out);
}

test('lines starting with a dot are stuffed, others are not', () => {
  assert.equal(enc('a\r\n.b\r\n..c\r\n.\r\nd.\r\n'), 'a\r\n..b\r\n...c\r\n..\r\nd.\r\n.\r\n');
  assert.equal(enc('.first\r\n'), '..first\r\n.\r\n');
});

test('the data ends with CRLF.CRLF, adding the CRLF a last line lacks; empty message is just the dot', () => {
  assert.equal(enc('x\r\n'), 'x\r\n.\r\n');
  assert.equal(enc('x'), 'x\r\n.\r\n');
  assert.equal(enc(''), '.\r\n');
  assert.equal(enc('\r\n'), '\r\n.\r\n');
});

test('bare LF and bare CR become CRLF (RFC 5321 §2.3.8); a dot after either is stuffed', () => {
  assert.equal(enc('a\nb\n'), 'a\r\nb\r\n.\r\n');
  assert.equal(enc('a\rb\r\n'), 'a\r\nb\r\n.\r\n');
  // "<CR>.<CR>" and "<LF>.<LF>" never reach the wire as a line holding one dot.
  assert.equal(enc('a\r.\rb\n.\nc'), 'a\r\n..\r\nb\r\n..\r\nc\r\n.\r\n');
  assert.equal(enc('a\r\r\n\r'), 'a\r\n\r\n\r\n.\r\n');
});

test('long lines go out as they are stored (enqueue wraps them, before any DKIM signature: dkim/line-wrap)', () => {
  const l999 = 'y'.repeat(999);
  assert.equal(enc(`${l999}\r\n`), `${l999}\r\n.\r\n`);
  assert.equal(enc(`.${'z'.repeat(2000)}\r\n`), `..${'z'.repeat(2000)}\r\n.\r\n`);
});

test('any chunking gives the same bytes (CR and LF split across chunks, dots at chunk starts)', () => {
  const parts: string[] = [];
  for (let i = 0; i < 300; i++) parts.push(i % 7 === 0 ? `.dot ${i}` : i % 11 === 0 ? 'q'.repeat(2100 + i) : `line ${i}`);
  const input = Buffer.from(parts.join('\r\n') + '\n.\nlast\r.\r\r\r\n.x\rend');
  const whole = encodeAll(input);
  let seed = 7;
  const rnd = (): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % 17) + 1;
  for (const sizes of [() => 1, () => 2, () => 3, rnd, () => 4096]) {
    assert.ok(encodeChunked(input, sizes).equals(whole));
  }
});

test('EHLO capabilities: PIPELINING, SIZE, 8BITMIME, SMTPUTF8, DSN, STARTTLS, LIMITS RCPTMAX, REQUIRETLS', () => {
  const p = new ReplyParser();
  const lines = ['250-mx.example', '250-PIPELINING', '250-SIZE 10240000', '250-8BITMIME', '250-SMTPUTF8', '250-DSN', '250-STARTTLS', '250-ENHANCEDSTATUSCODES', '250-REQUIRETLS', '250 LIMITS RCPTMAX=7 MAILMAX=10'];
  let r = null;
  for (const l of lines) r = p.push(l);
  const c = parseCapabilities(r!);
  assert.deepEqual(c, { esmtp: true, pipelining: true, size: 10240000, eightBitMime: true, smtputf8: true, dsn: true, starttls: true, enhancedStatusCodes: true, rcptMax: 7, requireTls: true });
  const bare = parseCapabilities({ code: 250, enhanced: '', lines: ['mx', 'SIZE', 'LIMITS RCPTMAX=x'] });
  assert.equal(bare.size, 0);
  assert.equal(bare.rcptMax, null);
  assert.equal(bare.pipelining, false);
  assert.equal(bare.requireTls, false);
});

test('wireReady: true exactly when the encoder would send the octets unchanged (the fast path sends them as they are)', () => {
  const line = (n: number, first = 'a'): string => first + 'x'.repeat(n - 1);
  assert.equal(wireReady(Buffer.from('a\r\nb\r\n')), true);
  assert.equal(wireReady(Buffer.from(`${line(MAX_LINE)}\r\n`)), true, 'a line of exactly 998 octets');
  for (const bad of ['', 'a', 'a\r\nb', '.a\r\n', 'a\r\n.b\r\n', 'a\nb\r\n', 'a\rb\r\n', 'a\r\n\n', 'a\r']) {
    assert.equal(wireReady(Buffer.from(bad)), false, JSON.stringify(bad.slice(0, 20)));
  }
  // Property: wireReady(x) if and only if the full encoder leaves x as it is.
  const piece = fc.constantFrom('a', '.', '\r', '\n', '\r\n', 'xyz', 'x'.repeat(400));
  fc.assert(
    fc.property(fc.array(piece, { maxLength: 40 }), (parts) => {
      const input = Buffer.from(parts.join(''), 'latin1');
      const unchanged = encodeAll(input).equals(Buffer.concat([input, DATA_END]));
      return wireReady(input) === (unchanged && input.length > 0);
    }),
    { numRuns: 3000 },
  );
});
