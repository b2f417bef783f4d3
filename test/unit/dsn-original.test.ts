/*
 * dsn-original - the third part of a report: RET=FULL within and over the
 * limit (also when the recorded size is wrong), headers only, a 50 MB header
 * section and a 10 MB header line read with bounded work, hostile bytes in
 * the original, a boundary collision, and an original that cannot be read.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { copyOriginal, HEADERS_LIMIT } from '../../src/dsn/original.js';
import { Scratch, Spill } from '../../src/dsn/spill.js';
import { ORIGINAL, build, lines, message, python, recipient } from '../helpers/dsn-writer.js';

/** A counted original: how often it was opened and how many octets were pulled from it. */
function counted(make: () => Readable): { open: () => Promise<Readable>; opened: number; pulled: number } {
  const c = {
    opened: 0,
    pulled: 0,
    open: async (): Promise<Readable> => {
      c.opened++;
      const s = make();
      s.on('data', (chunk: Buffer) => (c.pulled += chunk.length));
      return s;
    },
  };
  return c;
}

/** chunked - a stream of `buf` in slices, as a spool file is read. */
function chunked(buf: Buffer, size = 16 * 1024): Readable {
  return Readable.from(
    (function* () {
      for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
    })(),
  );
}

/** hugeHeaders - a header section of `total` octets, made lazily in 64 KB chunks, then a body. */
function hugeHeaders(total: number): Readable {
  let made = 0;
  let n = 0;
  return new Readable({
    read() {
      if (made >= total) {
        this.push('\r\nbody\r\n');
        this.push(null);
        return;
      }
      let chunk = '';
      while (chunk.length < 65536) chunk += `X-Filler-${n++}: ${'f'.repeat(60)}\r\n`;
      made += chunk.length;
      this.push(chunk);
    },
  });
}

const FULL = message({ ret: 'FULL' });

test('dsn original: RET=FULL within the limit returns the whole message, octet for octet', async () => {
  const o = counted(() => Readable.from([Buffer.from(ORIGINAL)]));
  const { raw, result } = await build({ kind: 'failed', message: FULL, original: o.open, recipients: [recipient(1)] });
  assert.equal(result.returned, 'full');
  assert.equal(o.opened, 1);
  const text = raw.toString();
  const start = text.indexOf('Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n\r\n');
  assert.ok(start > 0);
  const body = text.slice(text.indexOf('\r\n\r\n', start) + 4, text.lastIndexOf('\r\n--=_petrel-'));
  assert.equal(body, ORIGINAL);
  const p = await python(raw);
  assert.deepEqual(p.defects, []);
  assert.equal(p.parts[2]!.type, 'message/rfc822');
});

test('dsn original: RET=FULL over the limit (by its recorded size) returns the headers and says why', async () => {
  const big = ORIGINAL + 'x'.repeat(5000) + '\r\n';
  const o = counted(() => Readable.from([Buffer.from(big)]));
  const { raw, result } = await build({ kind: 'failed', message: message({ ret: 'FULL', size: big.length }), returnSizeLimit: 1024, original: o.open, recipients: [recipient(1)] });
  assert.equal(result.returned, 'headers');
  assert.equal(o.opened, 1, 'the headers were read once, without first trying the whole message');
  const p = await python(raw);
  assert.equal(p.parts[2]!.type, 'text/rfc822-headers');
  assert.ok(p.original?.headers.some(([n, v]) => n === 'Subject' && v === 'Quarterly report'));
  assert.match(p.parts[0]!.text!.replace(/\s+/g, ' '), /You asked for the whole message to be returned, but at 5\.\d KB it is larger than the 1 KB this mail system returns/);
  assert.ok(!raw.toString().includes('xxxxxxxxxx'), 'no body text returned');
});

test('dsn original: RET=FULL whose recorded size is wrong stops reading past the limit and falls back to the headers', async () => {
  const big = ORIGINAL + ('y'.repeat(1000) + '\r\n').repeat(1000); // ~1 MB
  const o = counted(() => chunked(Buffer.from(big)));
  const { raw, result } = await build({ kind: 'failed', message: message({ ret: 'FULL', size: 100 }), returnSizeLimit: 8 * 1024, original: o.open, recipients: [recipient(1)] });
  assert.equal(result.returned, 'headers');
  assert.equal(o.opened, 2, 'once for the whole message, once more for the headers');
  assert.ok(o.pulled < 200 * 1024, `pulled ${o.pulled} octets of a 1 MB message`);
  const p = await python(raw);
  assert.deepEqual(p.defects, []);
  assert.equal(p.parts[2]!.type, 'text/rfc822-headers');
  assert.ok(!raw.toString().includes('yyyyyyyyyy'));
});

test('dsn original: a 50 MB header section is read only up to the cap, and only whole fields are returned', async () => {
  const o = counted(() => hugeHeaders(50 * 1024 * 1024));
  const { raw, result } = await build({ kind: 'failed', original: o.open, recipients: [recipient(1)] });
  assert.equal(result.returned, 'headers');
  // Bounded work, counted rather than timed: the original is opened once and read only a
  // little past the 64 KB cap (a few of its 64 KB chunks), never through its 50 MB.
  assert.equal(o.opened, 1, 'opened once');
  assert.ok(o.pulled < HEADERS_LIMIT + 256 * 1024, `pulled ${o.pulled} octets`);
  assert.ok(raw.length < HEADERS_LIMIT + 16 * 1024, `report of ${raw.length} octets`);
  const p = await python(raw);
  assert.deepEqual(p.defects, []);
  const fillers = p.original!.headers.filter(([n]) => n.startsWith('X-Filler-'));
  assert.ok(fillers.length > 500);
  fillers.forEach(([n, v], i) => {
    assert.equal(n, `X-Filler-${i}`);
    assert.equal(v, 'f'.repeat(60), `field ${n} is whole`);
  });
  const copied = fillers.reduce((s, [n, v]) => s + n.length + 2 + v.length + 2, 0);
  assert.ok(copied <= HEADERS_LIMIT && copied > HEADERS_LIMIT - 200, `copied ${copied} octets of fields`);
  assert.match(p.parts[0]!.text!.replace(/\s+/g, ' '), /That header section is longer than 64 KB, so only its first 64 KB \(whole header fields\) are included\./);
});

test('dsn original: a 10 MB header line without a line break is not held, and not returned', async () => {
  const o = counted(() => {
    let sent = 0;
    return new Readable({
      read() {
        if (sent === 0) this.push('Subject: fine\r\nX-Long: ');
        if (sent >= 10 * 1024 * 1024) return this.push(null);
        sent += 65536;
        this.push(Buffer.alloc(65536, 0x61));
      },
    });
  });
  const { raw, result } = await build({ kind: 'failed', original: o.open, recipients: [recipient(1)] });
  assert.equal(result.returned, 'headers');
  assert.ok(o.pulled < HEADERS_LIMIT + 256 * 1024, `pulled ${o.pulled}`);
  const p = await python(raw);
  assert.deepEqual(p.original!.headers, [['Subject', 'fine']]);
  for (const line of lines(raw)) assert.ok(line.length <= 998);
});

test('dsn original: hostile octets in the header section are removed; long lines folded; non-fields dropped', async () => {
  const hostile =
    ' leading continuation without a field\r\n' +
    'From: Alice <alice@example.org>\r\n' +
    'Subject: hello\x00\x07 there\x1b[31m\r\n' +
    'not a header line\r\n' +
    'X-Bare: one\rtwo\r\n' +
    `X-Long: ${'z'.repeat(3000)}\r\n` +
    '\x00\r\n' +
    'X-Folded: first\r\n\tsecond\r\n' +
    '\r\n' +
    'body\r\n';
  const { raw } = await build({ kind: 'failed', original: async () => Readable.from([Buffer.from(hostile, 'latin1')]), recipients: [recipient(1)] });
  for (const line of lines(raw)) assert.ok(line.length <= 998, `line of ${line.length}`);
  const text = raw.toString('latin1');
  const part = text.slice(text.indexOf('Content-Type: text/rfc822-headers'));
  // eslint-disable-next-line no-control-regex
  assert.ok(!/[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/.test(part), 'no control characters');
  const p = await python(raw);
  assert.deepEqual(p.defects, []);
  const h = p.original!.headers;
  assert.deepEqual(
    h.map(([n]) => n),
    ['From', 'Subject', 'X-Bare', 'X-Long', 'X-Folded'],
  );
  assert.equal(h[1]![1], 'hello there[31m');
  assert.equal(h[2]![1], 'onetwo');
  assert.equal(h[3]![1]!.replace(/\s/g, ''), 'z'.repeat(3000), 'the long field is folded, not cut');
  assert.equal(h[4]![1]!.replace(/\s+/g, ' '), 'first second');
});

test('dsn original: a returned body with long lines is wrapped at 998 octets, NUL removed, end without CRLF handled', async () => {
  const body = `Subject: long\r\n\r\n${'a'.repeat(2500)}\r\nnul\x00here\r\nlast line without break`;
  const { raw, result } = await build({
    kind: 'failed',
    message: message({ ret: 'FULL', size: body.length }),
    original: async () => Readable.from([Buffer.from(body)]),
    recipients: [recipient(1)],
  });
  assert.equal(result.returned, 'full');
  for (const line of lines(raw)) assert.ok(line.length <= 998);
  const p = await python(raw);
  assert.deepEqual(p.defects, []);
  const returned = p.original!.body!;
  assert.equal(returned.replace(/\r\n/g, '\n').replace(/\n /g, ''), `${'a'.repeat(2500)}\nnulhere\nlast line without break\n`);
});

test('dsn original: a line of the original that starts with the boundary is detected (the writer then picks another)', async () => {
  const scratch = new Scratch('/nonexistent-scratch-dir');
  const into = new Spill(scratch);
  const boundary = '=_petrel-0123456789abcdef0123456789abcdef';
  const open = async (): Promise<Readable> => Readable.from([Buffer.from(`Subject: x\r\n\r\nbefore\r\n--${boundary}--\r\nafter\r\n`)]);
  assert.deepEqual(await copyOriginal({ open, mode: 'full', limit: 1e6, boundary, into }), { status: 'collision' });
  assert.deepEqual(await copyOriginal({ open, mode: 'full', limit: 1e6, boundary: '=_petrel-ffffffffffffffffffffffffffffffff', into: new Spill(scratch) }), { status: 'ok', truncated: false });
  // In a header field name, too.
  const open2 = async (): Promise<Readable> => Readable.from([Buffer.from(`--${boundary}: x\r\n\r\n`)]);
  assert.deepEqual(await copyOriginal({ open: open2, mode: 'headers', limit: 0, boundary, into: new Spill(scratch) }), { status: 'collision' });
  assert.equal(scratch.used, false);
});

test('dsn original: an original that looks like it holds boundaries does not break the report', async () => {
  const fake = `Subject: tricky\r\n--=_petrel-00000000000000000000000000000000: x\r\n\r\n--=_petrel-00000000000000000000000000000000--\r\n--=_petrel-\r\n`;
  const { raw } = await build({ kind: 'failed', message: message({ ret: 'FULL', size: fake.length }), original: async () => Readable.from([Buffer.from(fake)]), recipients: [recipient(1)] });
  const p = await python(raw);
  assert.deepEqual(p.defects, []);
  assert.deepEqual(
    p.parts.map((x) => x.type),
    ['text/plain', 'message/delivery-status', 'message/rfc822'],
  );
  assert.equal(p.recipients.length, 1);
});

test('dsn original: an original that cannot be read still gets its report, without the third part', async () => {
  for (const open of [
    async (): Promise<Readable> => {
      throw new Error('ENOENT: spool file missing');
    },
    async (): Promise<Readable> =>
      new Readable({
        read() {
          this.push('Subject: half\r\nX-Part');
          this.destroy(new Error('EIO: read error'));
        },
      }),
  ]) {
    const { raw, result } = await build({ kind: 'failed', original: open, recipients: [recipient(1), recipient(2)] });
    assert.equal(result.returned, 'none');
    assert.match(result.originalError ?? '', /ENOENT|EIO/);
    const p = await python(raw);
    assert.deepEqual(p.defects, []);
    assert.deepEqual(
      p.parts.map((x) => x.type),
      ['text/plain', 'message/delivery-status'],
    );
    assert.equal(p.recipients.length, 2);
    assert.ok(p.parts[0]!.text!.replace(/\s+/g, ' ').includes('A copy of the original message could not be attached: it could not be read from the queue.'));
    assert.ok(!raw.toString().includes('X-Part'));
  }
});
