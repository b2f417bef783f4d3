// Fuzzing the inbound SMTP session with fast-check (issue 7): random and
// mutated sessions (test/fuzz/smtp-generators), each fed to a Session over an
// in-memory socket (test/fuzz/session-runner says why) with the real enqueue
// path. Properties: no crash, no hang, no unhandled rejection; every reply is
// well formed with an enhanced status code; what is acknowledged is stored,
// with CRLF line ends only; and the replies do not depend on how the same
// input is cut into reads.
//
// Bounded for CI: a few thousand sessions in all, seconds. The long run is
// bench/fuzz.ts (a million sessions). A failure prints fast-check's seed and
// path: `fc.assert(..., { seed, path })` replays it.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { chunking, cut, dataContent, hostileInput, modelSession, randomBytes } from './smtp-generators.js';
import { fuzzConfig, normalized, runSession } from './session-runner.js';

const config = fuzzConfig();
const rejections: unknown[] = [];
const onRejection = (e: unknown): void => void rejections.push(e);
before(() => process.on('unhandledRejection', onRejection));
after(() => {
  process.off('unhandledRejection', onRejection);
  assert.deepEqual(rejections.map(String), [], 'no unhandled rejection during the fuzz run');
});

const ADDRESSES = ['127.0.0.1', '10.9.8.7', '::ffff:127.0.0.1', '::1', undefined];

test('mutated and random sessions: no crash, no hang, well-formed replies, acknowledged = stored, CRLF only', async () => {
  await fc.assert(
    fc.asyncProperty(hostileInput, chunking, fc.constantFrom(...ADDRESSES), async (input, cuts, remoteAddress) => {
      const r = await runSession(cut(input, cuts), { config, remoteAddress });
      assert.deepEqual(r.problems, []);
    }),
    { numRuns: 2500 },
  );
});

test('the same input cut into different reads gets the same replies', async () => {
  await fc.assert(
    fc.asyncProperty(modelSession, chunking, async (input, cuts) => {
      const whole = await runSession([input], { config });
      const pieces = await runSession(cut(input, cuts), { config });
      assert.deepEqual(whole.problems, []);
      assert.deepEqual(pieces.problems, []);
      assert.equal(normalized(pieces.output), normalized(whole.output));
      assert.equal(pieces.stored.length, whole.stored.length);
    }),
    { numRuns: 600 },
  );
});

test('DATA content with dots, CR, LF, NUL and fake ends: one message or a clear refusal, never a second transaction', async () => {
  await fc.assert(
    fc.asyncProperty(dataContent, chunking, async (content, cuts) => {
      const input = Buffer.from(`EHLO c.test\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<bob@local.test>\r\nDATA\r\n${content}\r\n.\r\nQUIT\r\n`, 'latin1');
      const r = await runSession(cut(input, cuts), { config });
      assert.deepEqual(r.problems, []);
      const codes = r.output
        .toString('latin1')
        .split('\r\n')
        .filter((l) => /^\d{3} /.test(l))
        .map((l) => l.slice(0, 3));
      // Greeting, EHLO, MAIL, RCPT, 354, the one answer to the message, QUIT.
      assert.equal(codes.length, 7, codes.join(' '));
      assert.match(codes[5]!, /^(250|552|554)$/);
      assert.equal(r.stored.length, codes[5] === '250' ? 1 : 0);
      if (r.stored.length) {
        // Every octet of content is in the stored message (normalised), none of the session after it.
        assert.ok(!r.stored[0]!.includes('QUIT\r\n'));
      }
    }),
    { numRuns: 1000 },
  );
});

test('random bytes right after the greeting, and from outside relay_networks', async () => {
  await fc.assert(
    fc.asyncProperty(randomBytes, chunking, async (input, cuts) => {
      const r = await runSession(cut(input, cuts), { config, remoteAddress: '192.0.2.1' });
      assert.deepEqual(r.problems, []);
    }),
    { numRuns: 500 },
  );
});

test('regressions the fuzzer found, replayed deterministically', async () => {
  const cases: Array<[string, string, RegExp]> = [
    ['EHLO with a NUL (echoed in the reply)', 'EHLO \u0000\r\nEHLO a\u0001b\r\nQUIT\r\n', /^220 [^\r]*\r\n501 5\.5\.4 [^\r]*\r\n501 5\.5\.4 [^\r]*\r\n221 /],
    ['a parameter name with a NUL (echoed in the reply)', 'EHLO c.test\r\nMAIL FROM:<a@b.example> U@\u0000=1\r\nQUIT\r\n', /\r\n555 5\.5\.4 Unsupported parameter U@\?\r\n221 /],
    [
      'CRLF . LF . CRLF inside DATA (ended the message early)',
      'EHLO c.test\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<bob@local.test>\r\nDATA\r\nx\r\n.\n.\r\nRSET\r\n\r\n.\r\nQUIT\r\n',
      /\r\n354 [^\r]*\r\n250 2\.0\.0 Ok: queued as \S+\r\n221 /,
    ],
  ];
  for (const [what, input, want] of cases) {
    const r = await runSession([Buffer.from(input, 'latin1')], { config });
    assert.deepEqual(r.problems, [], what);
    assert.match(r.output.toString('latin1'), want, what);
  }
});
