// Unit tests for inbound/data-reader: the end of DATA, dot-unstuffing, line-end
// normalisation and every published SMTP smuggling sequence.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DataReader } from '../../src/inbound/data-reader.js';

/** read - feed `input` split at the given offsets; returns data, done and rest. */
function read(input: string, splits: number[] = []): { data: string; done: boolean; rest: string } {
  const r = new DataReader();
  const buf = Buffer.from(input, 'latin1');
  const cuts = [0, ...splits.filter((s) => s > 0 && s < buf.length).sort((a, b) => a - b), buf.length];
  let data = '';
  for (let i = 0; i + 1 < cuts.length; i++) {
    const out = r.push(buf.subarray(cuts[i], cuts[i + 1]));
    data += out.data.toString('latin1');
    if (out.done) return { data, done: true, rest: out.rest.toString('latin1') + buf.subarray(cuts[i + 1]).toString('latin1') };
  }
  return { data, done: false, rest: '' };
}

test('ends only at CRLF.CRLF and keeps what follows for the command reader', () => {
  assert.deepEqual(read('Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n'), { data: 'Subject: x\r\n\r\nhello\r\n', done: true, rest: 'QUIT\r\n' });
  assert.deepEqual(read('.\r\n'), { data: '', done: true, rest: '' });
});

test('dot-stuffing is removed only at the start of a CRLF line', () => {
  assert.equal(read('..leading\r\nmid.dle\r\n...\r\n.\r\n').data, '.leading\r\nmid.dle\r\n..\r\n');
});

test('smuggling sequences are content, never an end, and leave as CRLF', () => {
  const cases: Array<[string, string]> = [
    ['a\n.\nMAIL FROM:<x>\r\n', 'a\r\n.\r\nMAIL FROM:<x>\r\n'],
    ['a\n.\r\nMAIL FROM:<x>\r\n', 'a\r\n.\r\nMAIL FROM:<x>\r\n'],
    ['a\r\n.\nMAIL FROM:<x>\r\n', 'a\r\n.\r\nMAIL FROM:<x>\r\n'],
    ['a\r.\rMAIL FROM:<x>\r\n', 'a\r\n.\r\nMAIL FROM:<x>\r\n'],
    ['a\r\n.\rMAIL FROM:<x>\r\n', 'a\r\n.\r\nMAIL FROM:<x>\r\n'],
    ['a\r.\r\nMAIL FROM:<x>\r\n', 'a\r\n.\r\nMAIL FROM:<x>\r\n'],
    ['a\n\r.\r\nMAIL FROM:<x>\r\n', 'a\r\n\r\n.\r\nMAIL FROM:<x>\r\n'],
    // Found by test/fuzz: a dot line ended by a bare LF used to count as a line start.
    ['a\r\n.\n.\r\nMAIL FROM:<x>\r\n', 'a\r\n.\r\n.\r\nMAIL FROM:<x>\r\n'],
    ['a\r\n.\n.\n.\r\nMAIL FROM:<x>\r\n', 'a\r\n.\r\n.\r\n.\r\nMAIL FROM:<x>\r\n'],
    ['.\n.\r\nMAIL FROM:<x>\r\n', '.\r\n.\r\nMAIL FROM:<x>\r\n'],
  ];
  for (const [smuggle, stored] of cases) {
    const r = read(smuggle + 'real end\r\n.\r\n');
    assert.equal(r.done, true, JSON.stringify(smuggle));
    assert.equal(r.data, stored + 'real end\r\n', JSON.stringify(smuggle));
    assert.ok(!/[^\r]\n|\r[^\n]/.test(r.data), `no bare CR or LF stored for ${JSON.stringify(smuggle)}`);
  }
});

test('bare CR and bare LF are stored as CRLF', () => {
  assert.equal(read('one\ntwo\rthree\r\r\nfour\r\n.\r\n').data, 'one\r\ntwo\r\nthree\r\n\r\nfour\r\n');
});

test('output that grows past its input (bare line ends, lone dots) is complete, in one chunk or several', () => {
  const cases: Array<[string, string]> = [
    ['\n'.repeat(9999) + '\r\n.\r\n', '\r\n'.repeat(10000)],
    ['x\r'.repeat(5000) + '\r\n.\r\n', 'x\r\n'.repeat(5000) + '\r\n'],
    ['\r\n' + '.\n'.repeat(3000) + '\r\n.\r\n', '\r\n' + '.\r\n'.repeat(3000) + '\r\n'],
    ['\r\n' + '.\r'.repeat(3000) + '\r\n.\r\n', '\r\n' + '.\r\n'.repeat(3000) + '\r\n'],
  ];
  for (const [input, want] of cases) {
    for (const splits of [[], [1], [7, 4001], [input.length - 3]]) {
      const r = read(input, splits);
      assert.equal(r.done, true);
      assert.equal(r.data.length, want.length, `${JSON.stringify(input.slice(0, 8))}… split at ${splits}`);
      assert.equal(r.data, want);
    }
  }
});

test('the result does not depend on how the input is split into chunks', () => {
  const inputs = ['Subject: x\r\n\r\n..a\r\n.b\n.\n\r.\r\r\n.\r\nafter', 'x\r\n.\r\n', '\r\n..\r\n.\r\n', 'a\r\r\r\n\n\n.\r\n.\r\n'];
  for (const input of inputs) {
    const whole = read(input);
    for (let a = 0; a <= input.length; a++) {
      for (let b = a; b <= input.length; b += 3) {
        assert.deepEqual(read(input, [a, b]), whole, `${JSON.stringify(input)} split at ${a},${b}`);
      }
    }
  }
});

test('differential: the same data, end and rest as the plain state machine (fast path off), for any input cut any way', () => {
  // Pieces that make every case: stuffed dots, lone dots, the end, bare CR and LF, long runs of content.
  const piece = fc.constantFrom('a', 'xyz', '.', '..', '\r', '\n', '\r\n', '\r\n.', '\r\n.\r\n', '.\r\n', '\n.\n', '\r.\r', 'q'.repeat(300));
  fc.assert(
    fc.property(fc.array(piece, { maxLength: 40 }), fc.array(fc.integer({ min: 1, max: 400 }), { minLength: 1, maxLength: 8 }), (parts, sizes) => {
      const input = Buffer.from(parts.join(''), 'latin1');
      const run = (reader: { push(b: Buffer): { data: Buffer; done: boolean; rest: Buffer } }): { data: string; done: boolean; rest: string } => {
        let data = '';
        for (let i = 0, k = 0; i < input.length; k++) {
          const n = sizes[k % sizes.length]!;
          const r = reader.push(input.subarray(i, i + n));
          data += r.data.toString('latin1');
          if (r.done) return { data, done: true, rest: r.rest.toString('latin1') + input.subarray(i + n).toString('latin1') };
          i += n;
        }
        return { data, done: false, rest: '' };
      };
      assert.deepEqual(run(new DataReader()), run(new DataReader({ fastPath: false })));
    }),
    { numRuns: 5000 },
  );
});

test('a clean chunk is handed on without a copy; one that needs a change is copied', () => {
  const clean = Buffer.from('Subject: x\r\n\r\nbody line\r\nmore\r\n.\r\nQUIT\r\n');
  const r = new DataReader().push(clean);
  assert.equal(r.done, true);
  const same = (a: Buffer, b: Buffer): boolean => a.buffer === b.buffer && a.byteOffset === b.byteOffset;
  assert.ok(same(r.data, clean), 'the same memory as the input');
  assert.equal(r.data.toString(), 'Subject: x\r\n\r\nbody line\r\nmore\r\n');
  assert.equal(r.rest.toString(), 'QUIT\r\n');
  const stuffed = Buffer.from('a\r\n..b\r\n.\r\n');
  const s = new DataReader().push(stuffed);
  assert.ok(!same(s.data, stuffed), 'a new buffer');
  assert.equal(s.data.toString(), 'a\r\n.b\r\n');
});
