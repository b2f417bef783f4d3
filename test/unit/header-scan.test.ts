// Unit tests for enqueue/header-scan: Received counting, Message-ID and
// Subject, and a Message-ID added where missing, whatever the chunking.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HeaderScanner } from '../../src/enqueue/header-scan.js';

function scan(text: string, chunk = 7): { out: string; s: HeaderScanner } {
  const s = new HeaderScanner(() => '<new@petrel.test>');
  const buf = Buffer.from(text);
  let out = '';
  for (let i = 0; i < buf.length; i += chunk) for (const b of s.push(buf.subarray(i, i + chunk))) out += b.toString();
  for (const b of s.finish()) out += b.toString();
  return { out, s };
}

test('finds Message-ID (folded too), Subject, and counts Received', () => {
  const text = 'Received: a\r\nReceived: b\r\n\tcontinued\r\nMessage-ID:\r\n <id@x>\r\nSubject: hi\r\n there\r\n\r\nReceived: in body\r\n';
  for (const chunk of [1, 3, 7, 1000]) {
    const { out, s } = scan(text, chunk);
    assert.equal(out, text, `chunk ${chunk}`);
    assert.equal(s.received, 2);
    assert.equal(s.messageId, '<id@x>');
    assert.equal(s.subject, 'hi there');
    assert.equal(s.added, false);
  }
});

test('adds a Message-ID at the end of the header section when missing', () => {
  assert.equal(scan('Subject: x\r\n\r\nbody\r\n').out, 'Subject: x\r\nMessage-ID: <new@petrel.test>\r\n\r\nbody\r\n');
  assert.equal(scan('Subject: x\r\n').out, 'Subject: x\r\nMessage-ID: <new@petrel.test>\r\n');
  assert.equal(scan('').out, 'Message-ID: <new@petrel.test>\r\n');
  // A body with no header section: the header and an empty line go before it.
  assert.equal(scan('just text\r\nmore\r\n').out, 'Message-ID: <new@petrel.test>\r\n\r\njust text\r\nmore\r\n');
});

test('an over-long header line is passed through unharmed', () => {
  const long = 'X-Long: ' + 'a'.repeat(200_000) + '\r\n';
  const text = long + 'Message-ID: <m@x>\r\n\r\nbody\r\n';
  const { out, s } = scan(text, 8192);
  assert.equal(out, text);
  assert.equal(s.messageId, '<m@x>');
});

test('headerBytes counts the header section whatever the chunking, the chunk that ends it included', () => {
  const header = 'Subject: x\r\nX-A: ' + 'a'.repeat(5000) + '\r\n';
  const text = header + '\r\n' + 'b'.repeat(10_000) + '\r\n';
  for (const chunk of [1, 7, 100, 4096, text.length]) {
    const { s } = scan(text, chunk);
    assert.equal(s.headerBytes, header.length + 2, `chunk ${chunk}`);
  }
  // A header section ended by a line that is not a header: counted up to that line, not the body after it.
  const { s } = scan(header + 'not a header line\r\n' + 'c'.repeat(9000), 100_000);
  assert.equal(s.headerBytes, header.length + 'not a header line\r\n'.length);
});

test('TLS-Required: No (RFC 8689 §5) is noticed in the header section only, folded or not, in any case', () => {
  for (const chunk of [1, 5, 1000]) {
    assert.equal(scan('Subject: x\r\nTLS-Required: No\r\n\r\nbody\r\n', chunk).s.tlsRequiredNo, true, `chunk ${chunk}`);
    assert.equal(scan('tls-required:\r\n  no\r\nSubject: x\r\n\r\n', chunk).s.tlsRequiredNo, true, `folded, chunk ${chunk}`);
  }
  assert.equal(scan('Subject: x\r\n\r\nTLS-Required: No\r\n').s.tlsRequiredNo, false, 'in the body');
  assert.equal(scan('TLS-Required: Yes\r\n\r\n').s.tlsRequiredNo, false, 'no other value is defined');
  assert.equal(scan('TLS-Required: No thanks\r\n\r\n').s.tlsRequiredNo, false);
  assert.equal(scan('Subject: x\r\n\r\n').s.tlsRequiredNo, false);
  // The first field counts.
  assert.equal(scan('TLS-Required: Maybe\r\nTLS-Required: No\r\n\r\n').s.tlsRequiredNo, false);
});
