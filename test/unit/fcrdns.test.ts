// The sending identity's DNS checks (delivery/smtp/fcrdns): PTR present,
// forward-confirmed, HELO name = PTR name; doubt is said as doubt.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkIdentity, sameAddress, type ReverseResolver } from '../../src/delivery/smtp/fcrdns.js';
import type { SendingIdentity } from '../../src/delivery/smtp/source.js';

const fail = (code: string): Promise<never> => Promise.reject(Object.assign(new Error(code), { code }));

function fake(ptr: Record<string, string[] | string>, fwd: Record<string, string[] | string>): ReverseResolver {
  const get = (t: Record<string, string[] | string>, k: string): Promise<string[]> => {
    const v = t[k];
    return v === undefined ? fail('ENOTFOUND') : typeof v === 'string' ? fail(v) : Promise.resolve(v);
  };
  return { reverse: (a) => get(ptr, a), resolve4: (n) => get(fwd, n), resolve6: (n) => get(fwd, n) };
}

const v4 = (address: string, heloName: string): SendingIdentity => ({ family: 4, key: 'delivery.source_ipv4', address, heloName });
const v6 = (address: string, heloName: string): SendingIdentity => ({ family: 6, key: 'delivery.source_ipv6', address, heloName });

test('an identity that checks out has no warning; IPv6 addresses compare as addresses, names without case or final dot', async () => {
  const r = await checkIdentity(v4('192.0.2.25', 'Mail.Example.com'), fake({ '192.0.2.25': ['mail.example.com.'] }, { 'mail.example.com': ['192.0.2.25'] }));
  assert.deepEqual(r.warnings, []);
  assert.deepEqual(r.confirmed, ['mail.example.com']);
  const r6 = await checkIdentity(v6('2001:db8::25', 'mail6.example.com'), fake({ '2001:db8::25': ['mail6.example.com'] }, { 'mail6.example.com': ['2001:0db8:0:0::0025'] }));
  assert.deepEqual(r6.warnings, []);
  assert.ok(sameAddress('::1', '0:0:0:0:0:0:0:1', 6));
  assert.ok(!sameAddress('192.0.2.1', '192.0.2.2', 4));
});

test('no PTR, a PTR that does not resolve back, a HELO name that is not the PTR name: one warning each', async () => {
  const none = await checkIdentity(v4('192.0.2.25', 'mail.example.com'), fake({}, {}));
  assert.equal(none.warnings.length, 1);
  assert.match(none.warnings[0]!, /192\.0\.2\.25 has no PTR record \(ENOTFOUND\)/);
  const both = await checkIdentity(v4('192.0.2.25', 'mail.example.com'), fake({ '192.0.2.25': ['host25.isp.example'] }, { 'host25.isp.example': ['192.0.2.99'] }));
  assert.equal(both.warnings.length, 2);
  assert.match(both.warnings[0]!, /\(host25\.isp\.example\) do not resolve back to it \(A\)/);
  assert.match(both.warnings[1]!, /HELO name mail\.example\.com sent from 192\.0\.2\.25 is not its PTR name \(host25\.isp\.example\): set \[delivery\] helo_name/);
});

test('a look-up that does not answer clearly is a doubt, never "no PTR record"', async () => {
  const r = await checkIdentity(v4('192.0.2.25', 'mail.example.com'), fake({ '192.0.2.25': 'ETIMEOUT' }, {}));
  assert.equal(r.warnings.length, 1);
  assert.match(r.warnings[0]!, /did not answer clearly \(ETIMEOUT\)/);
  assert.doesNotMatch(r.warnings[0]!, /no PTR/);
  const f = await checkIdentity(v4('192.0.2.25', 'mail.example.com'), fake({ '192.0.2.25': ['mail.example.com'] }, { 'mail.example.com': 'ESERVFAIL' }));
  assert.match(f.warnings.join('\n'), /did not answer clearly: mail\.example\.com \(ESERVFAIL\)/);
});
