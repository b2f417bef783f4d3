// dkim-line-wrap: lines over 998 octets wrapped at enqueue (before any DKIM
// signature): header lines folded before white space (invisible to relaxed
// canonicalisation), else CR LF SP; body lines CR LF SP; a message that came
// signed keeps its body lines; the same output however the input is chunked;
// the window jump over short body lines the same as line by line; the From:
// domain noted for signing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { LineWrapper, MAX_LINE, fromDomain } from '../../src/dkim/line-wrap.js';

function wrap(input: string | Buffer, chunk = 0): { out: string; w: LineWrapper } {
  const w = new LineWrapper();
  const buf = Buffer.isBuffer(input) ? input : Buffer.from(input, 'latin1');
  const parts: Buffer[] = [];
  if (chunk > 0) for (let i = 0; i < buf.length; i += chunk) parts.push(...w.push(buf.subarray(i, i + chunk)));
  else parts.push(...w.push(buf));
  parts.push(...w.finish());
  return { out: Buffer.concat(parts).toString('latin1'), w };
}

const longest = (s: string): number => Math.max(...s.split('\r\n').map((l) => l.length));

test('a line of 998 octets is untouched; 999 in the body is broken with CRLF + space', () => {
  const m = `Subject: x\r\n\r\n${'x'.repeat(998)}\r\n${'y'.repeat(999)}\r\n`;
  assert.equal(wrap(m).out, `Subject: x\r\n\r\n${'x'.repeat(998)}\r\n${'y'.repeat(998)}\r\n y\r\n`);
});

test('a long header line is folded before its spaces only (relaxed canonicalisation sees the same field)', () => {
  const words = Array.from({ length: 400 }, (_, i) => `w${i}`).join(' ');
  const m = `Subject: ${words}\r\n\r\nbody\r\n`;
  const { out } = wrap(m);
  assert.ok(longest(out) <= MAX_LINE);
  assert.equal(out.replace(/\r\n(?=[ \t])/g, ''), m, 'unfolding (RFC 5322 §2.2.3) gives the line back');
});

test('a header run with no white space: CRLF + space, and no piece over 998 counting that space', () => {
  const m = `X-Long: ${'h'.repeat(3000)}\r\n\r\n`;
  const { out } = wrap(m);
  assert.ok(longest(out) <= MAX_LINE, `longest ${longest(out)}`);
  assert.equal(out.replace(/\r\n /g, ''), m.replace('X-Long: ', 'X-Long:'));
});

test('a message signed before keeps its long body lines (their body hash), its header still folds at spaces', () => {
  const words = Array.from({ length: 400 }, (_, i) => `w${i}`).join(' ');
  const m = `DKIM-Signature: v=1; d=other.example\r\nSubject: ${words}\r\n\r\n${'b'.repeat(1500)}\r\n`;
  const { out, w } = wrap(m);
  assert.equal(w.signedBefore, true);
  assert.ok(out.includes(`\r\n${'b'.repeat(1500)}\r\n`));
  assert.equal(out.replace(/\r\n(?=[ \t])/g, ''), m);
});

test('the same output however the message is cut into chunks; nothing lost; no line over 998', () => {
  fc.assert(
    fc.property(
      fc.array(fc.oneof(fc.constant('a'), fc.constant(' '), fc.constant('\r\n'), fc.constant('é'), fc.constant('x'.repeat(700))), { maxLength: 40 }),
      fc.integer({ min: 1, max: 900 }),
      (pieces, chunk) => {
        const m = Buffer.from(`From: a@b.example\r\nX: ${pieces.join('')}\r\n\r\n${pieces.join('')}\r\n`, 'utf8');
        const whole = wrap(m).out;
        assert.equal(wrap(m, chunk).out, whole);
        assert.ok(longest(whole) <= MAX_LINE);
      },
    ),
    { numRuns: 300 },
  );
});

test('differential: the window jump gives the same body, breaks and count as line by line (fast path off), for any body cut any way', () => {
  // Lines on both sides of 998 octets (CR LF and bare ends), UTF-8 sequences to break around, runs of short lines for the jump.
  const piece = fc.constantFrom(
    'a',
    '\r\n',
    '\n',
    '\r',
    'x'.repeat(78) + '\r\n',
    'y'.repeat(997),
    'z'.repeat(998),
    'w'.repeat(999),
    'v'.repeat(1000),
    'é'.repeat(499),
    '€'.repeat(333),
    'u'.repeat(2500),
    ('s'.repeat(60) + '\r\n').repeat(20),
  );
  fc.assert(
    fc.property(fc.boolean(), fc.array(piece, { maxLength: 30 }), fc.array(fc.integer({ min: 1, max: 3000 }), { minLength: 1, maxLength: 6 }), (signed, parts, sizes) => {
      const input = Buffer.from(`${signed ? 'DKIM-Signature: v=1\r\n' : ''}Subject: x\r\n\r\n${parts.join('')}`, 'utf8');
      const run = (w: LineWrapper): { out: string; wrapped: number } => {
        const out: Buffer[] = [];
        for (let i = 0, k = 0; i < input.length; k++) {
          const n = sizes[k % sizes.length]!;
          out.push(...w.push(input.subarray(i, i + n)));
          i += n;
        }
        out.push(...w.finish());
        return { out: Buffer.concat(out).toString('latin1'), wrapped: w.wrapped };
      };
      const fast = run(new LineWrapper());
      assert.deepEqual(fast, run(new LineWrapper({ fastPath: false })));
      if (!signed) assert.ok(longest(fast.out.replace(/\r(?!\n)|(?<!\r)\n/g, '\r\n')) <= MAX_LINE);
    }),
    { numRuns: 3000 },
  );
});

test('From: domain for signing: display names, comments, folding, case', () => {
  assert.equal(fromDomain(' Alice <alice@Example.COM>'), 'example.com');
  assert.equal(fromDomain(' bob@sub.example.org (Bob)'), 'sub.example.org');
  assert.equal(fromDomain(' "x@evil.example" <c@good.example>'), 'good.example');
  assert.equal(fromDomain(' undisclosed'), '');
  const { w } = wrap('from: "A"\r\n <a@Fold.Example>\r\nTo: x@y\r\n\r\n');
  assert.equal(w.fromDomain, 'fold.example');
});
