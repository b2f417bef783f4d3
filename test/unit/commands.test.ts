// Unit tests for inbound/commands: MAIL and RCPT parameters (SIZE, BODY,
// SMTPUTF8, DSN) and line limits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lineLimit, parseCommand, parseMail, parseRcpt } from '../../src/inbound/commands.js';

const on = { dsn: true, smtputf8: true };

test('commands are case-insensitive and keep their argument', () => {
  assert.deepEqual(parseCommand('mail FROM:<a@b>'), { verb: 'MAIL', arg: 'FROM:<a@b>' });
  assert.deepEqual(parseCommand('QUIT'), { verb: 'QUIT', arg: '' });
});

test('MAIL parameters', () => {
  const r = parseMail('FROM:<a@example.com> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=abc+2Bdef SMTPUTF8', on);
  assert.ok('ok' in r);
  assert.deepEqual(r.ok, { sender: 'a@example.com', size: 1000, body: '8BITMIME', smtputf8: true, ret: 'HDRS', envid: 'abc+def', requireTls: false });
  const nul = parseMail('FROM:<>', on);
  assert.ok('ok' in nul && nul.ok.sender === '');
  const bad = (arg: string, code: number): void => {
    const x = parseMail(arg, on);
    assert.ok('error' in x, arg);
    assert.equal(x.error.code, code, arg);
  };
  bad('FROM:a@b', 501);
  bad('FROM:<a@b> SIZE=big', 501);
  bad('FROM:<a@b> FOO=1', 555);
  bad('FROM:<a@b> RET=ALL', 501);
  bad('FROM:<not an address>', 553);
  bad('FROM:<a@b> SIZE=1 SIZE=2', 501);
});

test('MAIL REQUIRETLS (RFC 8689): accepted only where offered (a TLS session), takes no value', () => {
  const r = parseMail('FROM:<a@example.com> requiretls', { ...on, requireTls: true });
  assert.ok('ok' in r && r.ok.requireTls === true);
  for (const offered of [{ ...on, requireTls: false }, on]) {
    const x = parseMail('FROM:<a@example.com> REQUIRETLS', offered);
    assert.ok('error' in x);
    assert.equal(`${x.error.code} ${x.error.enhanced}`, '530 5.7.10');
  }
  const v = parseMail('FROM:<a@example.com> REQUIRETLS=yes', { ...on, requireTls: true });
  assert.ok('error' in v && v.error.code === 501);
  const twice = parseMail('FROM:<a@example.com> REQUIRETLS REQUIRETLS', { ...on, requireTls: true });
  assert.ok('error' in twice && twice.error.code === 501);
});

test('RCPT parameters: NOTIFY and ORCPT', () => {
  const r = parseRcpt('TO:<b@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40example.com', { dsn: true }, false);
  assert.ok('ok' in r);
  assert.deepEqual(r.ok, { address: 'b@example.com', notify: 'SUCCESS,FAILURE', orcpt: 'rfc822;b@example.com' });
  for (const arg of ['TO:<b@x> NOTIFY=NEVER,SUCCESS', 'TO:<b@x> NOTIFY=SOMETIMES', 'TO:<b@x> ORCPT=nonsense']) {
    const x = parseRcpt(arg, { dsn: true }, false);
    assert.ok('error' in x && x.error.code === 501, arg);
  }
  const utf = parseRcpt('TO:<usér@exämple.com>', { dsn: true }, false);
  assert.ok('error' in utf);
  assert.ok('ok' in parseRcpt('TO:<usér@exämple.com>', { dsn: true }, true));
  assert.ok('ok' in parseRcpt('TO:<Postmaster>', { dsn: true }, false));
});

test('line limits: 512, MAIL +100, RCPT +500 (RFC 3461 §4)', () => {
  assert.equal(lineLimit('NOOP'), 512);
  assert.equal(lineLimit('MAIL'), 612);
  assert.equal(lineLimit('rcpt'), 1012);
});

test('a parameter name echoed in a reply is short printable ASCII (found by test/fuzz: NUL was echoed)', () => {
  for (const arg of ['FROM:<a@b> U@\u0000=1', 'FROM:<a@b> X\u0001\u00ff=1 ' + 'Y'.repeat(300), 'FROM:<a@b> Z\u0000 Z\u0000']) {
    const r = parseMail(arg, on);
    assert.ok('error' in r);
    for (const l of r.error.lines) assert.match(l, /^[\x20-\x7e]{1,80}$/, JSON.stringify(l));
  }
  const r = parseRcpt('TO:<a@b> Q\u0000=1', on, false);
  assert.ok('error' in r && /^Unsupported parameter Q\?$/.test(r.error.lines[0]!));
});
