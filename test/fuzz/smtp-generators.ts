/*
 * test/fuzz/smtp-generators - fast-check arbitraries for hostile SMTP client
 * input, shared by the bounded CI fuzzers (test/fuzz/*.test.ts) and the long
 * run (bench/fuzz.ts).
 *
 * A generated session is a byte string plus a way to cut it into reads:
 * - `modelSession`: a plausible command sequence (EHLO, MAIL, RCPT..., DATA,
 *   content, end, more transactions, QUIT) whose arguments are mutated: odd
 *   characters, NUL, bare CR, 8-bit and UTF-8, over-long text, wrong and
 *   duplicate parameters, wrong case, missing brackets;
 * - `dataContent`: DATA content built from dots, CR, LF, NUL, headers, long
 *   lines and fake ends of data (the smuggling sequences);
 * - `randomBytes`: raw bytes, biased toward protocol characters;
 * - `chunking`: cut points, so the same input arrives in different reads
 *   (one read per octet up to everything pipelined in one).
 *
 * Invariant: generators are pure (fast-check drives them from a seed), so a
 * failure is replayed from the seed and path fast-check prints.
 */
import fc from 'fast-check';

const enc = (s: string): Buffer => Buffer.from(s, 'latin1');

/** Octets that matter to an SMTP parser, weighted into every string. */
const SPECIAL = ['<', '>', ':', '@', '"', '\\', ' ', '\t', '=', ',', '+', '.', '%', '[', ']', '\u0000', '\r', '\n', '\u00ff', '\u0080', 'é', '€', '*', '/'];

/** text - short strings mixing ordinary and protocol-relevant characters (latin1 octets; UTF-8 encoded when it matters). */
export const text = (max = 40): fc.Arbitrary<string> =>
  fc.oneof(
    { weight: 4, arbitrary: fc.string({ maxLength: max }) },
    { weight: 3, arbitrary: fc.array(fc.oneof(fc.constantFrom(...SPECIAL), fc.string({ maxLength: 4 })), { maxLength: max / 2 }).map((a) => a.join('')) },
    { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: max }).map((s) => Buffer.from(s, 'utf8').toString('latin1')) },
    { weight: 1, arbitrary: fc.integer({ min: 400, max: 13_000 }).map((n) => 'x'.repeat(n)) },
  );

const LOCAL = ['alice', 'postmaster', 'PostMaster', '"quoted name"', '"a@b"', 'a%b', 'a.b', '.a', 'a..b', '', 'x'.repeat(70)];
const DOMAINS = ['local.test', 'LOCAL.TEST', 'remote.example', '[127.0.0.1]', '[IPv6:::1]', 'local.test.', 'bad_domain', '-x.example', 'a'.repeat(70) + '.example', ''];

/** address - a mailbox, well-formed or nearly so. */
export const address: fc.Arbitrary<string> = fc.oneof(
  { weight: 5, arbitrary: fc.tuple(fc.constantFrom(...LOCAL), fc.constantFrom(...DOMAINS)).map(([l, d]) => `${l}@${d}`) },
  { weight: 1, arbitrary: fc.constantFrom('', 'postmaster', 'Postmaster', '@a:b@local.test', '@a,@b:c@remote.example') },
  { weight: 2, arbitrary: fc.tuple(text(20), fc.constantFrom(...DOMAINS)).map(([l, d]) => `${l}@${d}`) },
  { weight: 1, arbitrary: text(60) },
);

const MAIL_PARAMS = ['SIZE', 'BODY', 'SMTPUTF8', 'RET', 'ENVID', 'AUTH', 'REQUIRETLS', 'NOTIFY', 'ORCPT', 'X-UNKNOWN'];
const VALUES = ['', '0', '100', '99999999999999999999999', '8BITMIME', '7BIT', 'FULL', 'HDRS', 'NEVER', 'SUCCESS,FAILURE', 'NEVER,DELAY', 'rfc822;a@b', 'rfc822;+2B+00', 'a+ZZ', '<>'];

/** params - ESMTP parameters, valid, invalid and duplicated. */
export const params: fc.Arbitrary<string> = fc
  .array(
    fc.tuple(fc.constantFrom(...MAIL_PARAMS), fc.option(fc.oneof(fc.constantFrom(...VALUES), text(30)), { nil: undefined })),
    { maxLength: 4 },
  )
  .map((ps) => ps.map(([k, v]) => (v === undefined ? ` ${k}` : ` ${k}=${v}`)).join(''));

/** casing - the verb as a client might write it. */
const verb = (v: string): fc.Arbitrary<string> => fc.constantFrom(v, v.toLowerCase(), v[0] + v.slice(1).toLowerCase());

/** command - one command line (without its line end). */
export const command: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc.tuple(verb('EHLO'), fc.oneof(fc.constant('client.test'), text(30))).map(([v, a]) => `${v} ${a}`) },
  { weight: 1, arbitrary: fc.tuple(verb('HELO'), text(20)).map(([v, a]) => `${v} ${a}`) },
  {
    weight: 4,
    arbitrary: fc
      .tuple(verb('MAIL'), fc.constantFrom('FROM:', 'FROM: ', 'from:', 'FROM', 'FROM:<'), address, fc.constantFrom('>', '', '>>'), params)
      .map(([v, k, a, close, p]) => `${v} ${k}${k.endsWith('<') ? '' : '<'}${a}${close}${p}`),
  },
  {
    weight: 6,
    arbitrary: fc.tuple(verb('RCPT'), fc.constantFrom('TO:', 'TO: ', 'to:', 'TO'), address, fc.constantFrom('>', ''), params).map(([v, k, a, close, p]) => `${v} ${k}<${a}${close}${p}`),
  },
  { weight: 2, arbitrary: fc.tuple(verb('DATA'), fc.constantFrom('', ' x')).map(([v, a]) => v + a) },
  { weight: 1, arbitrary: fc.constantFrom('RSET', 'NOOP', 'NOOP x', 'VRFY alice', 'EXPN list', 'HELP', 'STARTTLS', 'STARTTLS x', 'BDAT 10 LAST', 'AUTH PLAIN AGFsaWNlAHg=', 'AUTH LOGIN', 'QUIT', '', ' ', 'MAIL', 'RCPT') },
  { weight: 1, arbitrary: text(80) },
);

/** A line end as clients send it (mostly right). */
const eol = fc.constantFrom('\r\n', '\r\n', '\r\n', '\r\n', '\n', '\r', '\r\r\n', '');

/** The published fake ends of data and their relatives. */
export const FAKE_ENDS = ['\n.\n', '\n.\r\n', '\r\n.\n', '\r.\r', '\r\n.\r', '\r.\r\n', '\r.\n', '\n.\r', '\n\r.\r\n', '\r\n.\u0000\r\n', '\r\n\u0000.\r\n', '\r\n. \r\n'];

/** dataContent - message content: headers, lines of dots, bare CR/LF, NUL, long lines, fake ends (never the real end). */
export const dataContent: fc.Arbitrary<string> = fc
  .array(
    fc.oneof(
      { weight: 4, arbitrary: fc.constantFrom('Subject: fuzz', 'Message-ID: <m@fuzz>', 'Received: from x', 'From: a@b', 'X: y', ' folded', '', 'body text') },
      { weight: 3, arbitrary: fc.constantFrom('.', '..', '...', '.x', ' .', '.\u0000') },
      { weight: 2, arbitrary: fc.constantFrom(...FAKE_ENDS) },
      { weight: 2, arbitrary: text(30) },
      { weight: 1, arbitrary: fc.integer({ min: 900, max: 6000 }).map((n) => 'L'.repeat(n)) },
    ),
    { maxLength: 12 },
  )
  .chain((parts) => fc.array(eol, { minLength: parts.length, maxLength: parts.length }).map((ends) => parts.map((p, i) => p + ends[i]).join('')))
  .map(withoutEnd);

/**
 * withoutEnd - the content with a dot added wherever a real end of data would
 * fall (CRLF "." CRLF inside it, "." CRLF at its start, or a "CRLF ." at its
 * end that the end of data would complete), as a client's dot-stuffing does:
 * the session decides where the message ends, not the generator. Every
 * other fake end is left alone.
 */
export function withoutEnd(content: string): string {
  let s = content;
  for (let guard = 0; guard < 10_000; guard++) {
    const full = s + '\r\n.\r\n';
    const at = full.startsWith('.\r\n') ? 0 : full.indexOf('\r\n.\r\n') + 2;
    if (at === full.length - 3) return s;
    s = s.slice(0, at) + '.' + s.slice(at);
  }
  return s;
}

/** transaction - MAIL, some RCPTs, DATA, content and (usually) the end of data. */
const transaction: fc.Arbitrary<string> = fc
  .tuple(
    fc.constantFrom('alice@local.test', 'bob@remote.example', ''),
    fc.array(fc.oneof(fc.constantFrom('bob@local.test', 'carol@remote.example', 'postmaster'), address), { minLength: 1, maxLength: 7 }),
    dataContent,
    fc.constantFrom('\r\n.\r\n', '\r\n.\r\n', '\r\n.\r\n', '.\r\n', ''),
  )
  .map(([from, rcpts, content, end]) => `MAIL FROM:<${from}>\r\n${rcpts.map((r) => `RCPT TO:<${r}>\r\n`).join('')}DATA\r\n${content}${end}`);

/** modelSession - a plausible session with mutated arguments, in bytes. */
export const modelSession: fc.Arbitrary<Buffer> = fc
  .tuple(
    fc.constantFrom('EHLO client.test\r\n', 'HELO client.test\r\n', '', 'EHLO\r\n'),
    fc.array(fc.oneof({ weight: 2, arbitrary: transaction }, { weight: 3, arbitrary: fc.tuple(command, eol).map(([c, e]) => c + e) }), { maxLength: 10 }),
    fc.constantFrom('QUIT\r\n', ''),
  )
  .map(([hello, body, quit]) => enc(hello + body.join('') + quit));

/** randomBytes - raw input, biased toward CR, LF, dot, NUL and command words. */
export const randomBytes: fc.Arbitrary<Buffer> = fc.oneof(
  fc.uint8Array({ maxLength: 600 }).map((a) => Buffer.from(a)),
  fc
    .array(fc.oneof(fc.constantFrom('\r', '\n', '.', '\u0000', '\r\n', 'DATA\r\n', 'MAIL FROM:<a@b>\r\n', 'RCPT TO:<postmaster>\r\n', 'EHLO x\r\n', ':', '<', '>'), fc.string({ maxLength: 8 })), { maxLength: 80 })
    .map((a) => enc(a.join(''))),
);

/** hostileInput - any of the above. */
export const hostileInput: fc.Arbitrary<Buffer> = fc.oneof({ weight: 3, arbitrary: modelSession }, { weight: 1, arbitrary: randomBytes });

/** chunking - cut points as fractions: the same input in 1 to many reads. */
export const chunking: fc.Arbitrary<number[]> = fc.oneof(
  { weight: 2, arbitrary: fc.constant<number[]>([]) },
  { weight: 4, arbitrary: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 30 }) },
  { weight: 1, arbitrary: fc.constant<number[]>([-1]) }, // -1: one read per octet
);

/** cut - split `input` at the fractions in `cuts`; [-1]: one read per octet (per few octets past 2,000 reads). */
export function cut(input: Buffer, cuts: number[]): Buffer[] {
  if (cuts.length === 1 && cuts[0] === -1) {
    const step = Math.max(1, Math.ceil(input.length / 2000));
    return Array.from({ length: Math.ceil(input.length / step) }, (_, i) => input.subarray(i * step, (i + 1) * step));
  }
  const at = [...new Set(cuts.map((c) => Math.floor(c * input.length)))].filter((x) => x > 0 && x < input.length).sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const x of [...at, input.length]) {
    if (x > prev) out.push(input.subarray(prev, x));
    prev = x;
  }
  return out;
}
