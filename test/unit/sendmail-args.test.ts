// Unit tests for cli/sendmail-args (the sendmail(8) command line as
// applications use it), and the sendmail helpers that read the message
// (dot handling with and without -i) and write a From: display name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { parseSendmailArgs, type SendmailArgs } from '../../src/cli/sendmail-args.js';
import { displayName, readMessage } from '../../src/cli/sendmail.js';
import { dotStuff } from '../../src/cli/sendmail-smtp.js';

function ok(argv: string[]): SendmailArgs {
  const r = parseSendmailArgs(argv);
  assert.ok(!('error' in r), `unexpected error: ${JSON.stringify(r)}`);
  return r;
}

test('the options applications use', () => {
  const a = ok(['-t', '-i', '-f', 'app@x.test', '-F', 'The App', 'bob@y.test']);
  assert.equal(a.extract, true);
  assert.equal(a.ignoreDots, true);
  assert.equal(a.sender, 'app@x.test');
  assert.equal(a.fullName, 'The App');
  assert.deepEqual(a.recipients, ['bob@y.test']);
  const b = ok(['-oi', '-fme@x.test', '-FMe', '-ti', 'x@y.test', 'z@y.test']);
  assert.equal(b.ignoreDots, true);
  assert.equal(b.sender, 'me@x.test');
  assert.equal(b.fullName, 'Me');
  assert.equal(b.extract, true);
  assert.deepEqual(b.recipients, ['x@y.test', 'z@y.test']);
  assert.equal(ok(['-r', '<>', 'x@y.test']).sender, '<>');
  assert.equal(ok(['-C', '/etc/petrel.toml', 'x@y.test']).config, '/etc/petrel.toml');
  assert.deepEqual(ok(['--', '-odd@y.test']).recipients, ['-odd@y.test']);
});

test('harmless options are accepted and ignored; -bi is newaliases', () => {
  const a = ok(['-odi', '-oem', '-om', '-v', '-U', '-B', '8BITMIME', '-N', 'never', '-bm', '-Am', 'x@y.test']);
  assert.equal(a.verbose, true);
  assert.deepEqual(a.ignored, ['-odi', '-oem', '-om', '-U', '-B 8BITMIME', '-N never', '-A m']);
  assert.equal(ok(['-bi']).newAliases, true);
  assert.equal(ok(['-I']).newAliases, true);
});

test('usage errors', () => {
  const err = (argv: string[]): string => {
    const r = parseSendmailArgs(argv);
    assert.ok('error' in r, `expected an error for ${argv.join(' ')}`);
    return r.error;
  };
  assert.match(err(['-Q']), /unknown option -Q/);
  assert.match(err(['-f']), /-f needs a value/);
  assert.match(err(['-bp']), /-bp is not supported/);
  assert.match(err(['-bs']), /-bs is not supported/);
  assert.match(err(['-q1h']), /-q is not supported/);
  assert.match(err(['bob@y.test', '-f', 'x@y.test']), /after the recipients/);
});

test('reading the message: a lone "." ends it unless -i; line ends become CR LF', async () => {
  const read = (text: string | string[], ignoreDots: boolean, limit = 1000) => readMessage(Readable.from((Array.isArray(text) ? text : [text]).map((t) => Buffer.from(t))), ignoreDots, limit);
  assert.equal((await read('a\n.\nb\n', false))!.toString(), 'a\r\n');
  assert.equal((await read(['a\n', '.', '\n', 'b\n'], false))!.toString(), 'a\r\n', 'the dot line split across reads');
  assert.equal((await read('.\nrest\n', false))!.toString(), '');
  assert.equal((await read('a\n.', false))!.toString(), 'a\r\n', 'a final dot without a line end');
  assert.equal((await read('a\n.\nb\n', true))!.toString(), 'a\r\n.\r\nb\r\n');
  assert.equal((await read('a\n..\nb', false))!.toString(), 'a\r\n..\r\nb', 'no un-stuffing: only a lone dot is special');
  assert.equal(await read('x'.repeat(2000), true), null, 'over the limit');
});

test('From: display names are quoted or encoded; control characters cannot inject headers', () => {
  assert.equal(displayName('The App'), 'The App');
  assert.equal(displayName('Doe, John'), '"Doe, John"');
  assert.equal(displayName('Say "hi"'), '"Say \\"hi\\""');
  assert.equal(displayName('Zoë'), `=?UTF-8?B?${Buffer.from('Zoë').toString('base64')}?=`);
  assert.equal(displayName('Evil\r\nBcc: x@y.test'), '"Evil  Bcc: x@y.test"');
});

test('dot-stuffing for SMTP', () => {
  assert.equal(dotStuff(Buffer.from('.a\r\nb\r\n.\r\n..c\r\n')).toString(), '..a\r\nb\r\n..\r\n...c\r\n.\r\n');
  assert.equal(dotStuff(Buffer.from('no end')).toString(), 'no end\r\n.\r\n');
  assert.equal(dotStuff(Buffer.alloc(0)).toString(), '.\r\n');
});
