// The sending identity keys ([delivery] source_ipv4, source_ipv6,
// helo_name_ipv6, address_family, address_preference): checked with the key
// named, and the identity per family (delivery/smtp/source) they give.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, parseConfigText } from '../../src/config/load.js';
import { identities, identityFor } from '../../src/delivery/smtp/source.js';

function problems(text: string): string[] {
  try {
    parseConfigText(text, 'p.toml', '/tmp');
    return [];
  } catch (e) {
    if (e instanceof ConfigError) return e.problems.map((p) => `${p.line}: ${p.key}: ${p.message}`);
    throw e;
  }
}

test('a source address of the wrong family, or an unknown family or preference, is an error naming the key and line', () => {
  const got = problems('[delivery]\nsource_ipv4 = "::1"\nsource_ipv6 = "192.0.2.1"\naddress_family = "ip4"\naddress_preference = "v6"\n');
  assert.equal(got.length, 4, got.join('\n'));
  assert.match(got[0]!, /^2: delivery\.source_ipv4: must be "" or a specific IPv4 address/);
  assert.match(got[1]!, /^3: delivery\.source_ipv6: must be "" or a specific IPv6 address/);
  assert.match(got[2]!, /^4: delivery\.address_family: must be one of "any", "ipv4", "ipv6"/);
  assert.match(got[3]!, /^5: delivery\.address_preference: must be one of "auto", "ipv6", "ipv4"/);
  // The unspecified address is not a source: "" says "let the system choose".
  assert.equal(problems('[delivery]\nsource_ipv4 = "0.0.0.0"\nsource_ipv6 = "::"\n').length, 2);
});

test('defaults: nothing bound, helo_name (else hostname) on both families; helo_name_ipv6 only on IPv6', () => {
  const d = parseConfigText('hostname = "h.test"\n', 'p.toml', '/tmp');
  assert.deepEqual([d.delivery.source_ipv4, d.delivery.source_ipv6, d.delivery.address_family, d.delivery.address_preference], ['', '', 'any', 'auto']);
  const ids = identities(d);
  assert.deepEqual([ids.ipv4.address, ids.ipv4.heloName, ids.ipv6.address, ids.ipv6.heloName], ['', 'h.test', '', 'h.test']);
  const c = parseConfigText('hostname = "h.test"\n[delivery]\nsource_ipv4 = "192.0.2.25"\nsource_ipv6 = "2001:db8::25"\nhelo_name = "mail.test"\nhelo_name_ipv6 = "mail6.test"\n', 'p.toml', '/tmp');
  const both = identities(c);
  assert.deepEqual([identityFor(both, '198.51.100.7').address, identityFor(both, '198.51.100.7').heloName], ['192.0.2.25', 'mail.test']);
  assert.deepEqual([identityFor(both, '2001:db8:1::7').address, identityFor(both, '2001:db8:1::7').heloName], ['2001:db8::25', 'mail6.test']);
});
