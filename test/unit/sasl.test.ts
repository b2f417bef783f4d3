// inbound/sasl: the AUTH exchange (RFC 4954, PLAIN RFC 4616, LOGIN) gives a
// challenge, a refusal or credentials, and nothing else.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatReply } from '../../src/core/smtp-reply.js';
import { SaslExchange, type SaslStep } from '../../src/inbound/sasl.js';

const b64 = (s: string): string => Buffer.from(s).toString('base64');
const wire = (s: SaslStep): string => ('reply' in s ? formatReply(s.reply).trim() : `credentials ${s.user}/${s.password}`);

test('PLAIN with an initial response gives the credentials; a foreign authzid is refused', () => {
  assert.equal(wire(SaslExchange.begin(`PLAIN ${b64('\0alice\0secret')}`).step), 'credentials alice/secret');
  assert.equal(wire(SaslExchange.begin(`plain ${b64('alice\0alice\0secret')}`).step), 'credentials alice/secret');
  assert.equal(wire(SaslExchange.begin(`PLAIN ${b64('bob\0alice\0secret')}`).step), '535 5.7.8 Authentication credentials invalid');
  assert.equal(wire(SaslExchange.begin(`PLAIN ${b64('alice\0secret')}`).step), '501 5.5.2 Malformed PLAIN response');
});

test('PLAIN without, and LOGIN step by step', () => {
  const p = SaslExchange.begin('PLAIN');
  assert.equal(wire(p.step), '334');
  assert.equal(wire(p.exchange!.respond(b64('\0carol\0pw'))), 'credentials carol/pw');
  const l = SaslExchange.begin('LOGIN');
  assert.equal(wire(l.step), `334 ${b64('Username:')}`);
  assert.equal(wire(l.exchange!.respond(b64('dave'))), `334 ${b64('Password:')}`);
  assert.equal(wire(l.exchange!.respond(b64('pw2'))), 'credentials dave/pw2');
});

test('cancel, bad base64 and unknown mechanisms are refused', () => {
  assert.equal(wire(SaslExchange.begin('LOGIN').exchange!.respond('*')), '501 5.7.0 Authentication cancelled');
  assert.equal(wire(SaslExchange.begin('LOGIN').exchange!.respond('not base64!')), '501 5.5.2 Cannot decode response (base64 expected)');
  const x = SaslExchange.begin('CRAM-MD5');
  assert.equal(x.exchange, null);
  assert.equal(wire(x.step), '504 5.5.4 Unrecognized authentication type (PLAIN or LOGIN)');
});
