// Which next-hop addresses are tried and in what order ([delivery]
// address_family, address_preference; delivery/smtp/address-order).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isIP } from 'node:net';
import { hasGlobalIpv6, isGlobalIpv6, orderAddresses, preferredFamily, type AddressPolicy } from '../../src/delivery/smtp/address-order.js';

const mixed = ['192.0.2.1', '2001:db8::1', '192.0.2.2', '2001:db8::2'];
const policy = (p: Partial<AddressPolicy>): AddressPolicy => ({ family: 'any', preference: 'auto', sourceIpv6: '', ...p });
const yes = (): boolean => true;
const no = (): boolean => false;

test('address_family filters: ipv4 keeps IPv4 only, ipv6 IPv6 only, each in DNS order; nothing left is an empty list', () => {
  assert.deepEqual(orderAddresses(mixed, policy({ family: 'ipv4' }), yes), ['192.0.2.1', '192.0.2.2']);
  assert.deepEqual(orderAddresses(mixed, policy({ family: 'ipv6' }), no), ['2001:db8::1', '2001:db8::2']);
  assert.deepEqual(orderAddresses(['192.0.2.1'], policy({ family: 'ipv6' }), yes), []);
  assert.deepEqual(orderAddresses(['not-an-ip', '192.0.2.1'], policy({}), no), ['192.0.2.1']);
});

test('address_preference orders "any": the preferred family first, each family in DNS order', () => {
  assert.deepEqual(orderAddresses(mixed, policy({ preference: 'ipv6' }), no), ['2001:db8::1', '2001:db8::2', '192.0.2.1', '192.0.2.2']);
  assert.deepEqual(orderAddresses(mixed, policy({ preference: 'ipv4' }), yes), ['192.0.2.1', '192.0.2.2', '2001:db8::1', '2001:db8::2']);
});

test('auto (RFC 6724, simplified): IPv6 first only with a global IPv6 source (the machine has one, or source_ipv6 is set)', () => {
  assert.deepEqual(orderAddresses(mixed, policy({}), no), ['192.0.2.1', '192.0.2.2', '2001:db8::1', '2001:db8::2']);
  assert.deepEqual(orderAddresses(mixed, policy({}), yes), ['2001:db8::1', '2001:db8::2', '192.0.2.1', '192.0.2.2']);
  assert.equal(preferredFamily(policy({ sourceIpv6: '2001:db8::25' }), no), 6);
  assert.equal(preferredFamily(policy({ family: 'ipv4', preference: 'ipv6' }), yes), 4);
});

test('global IPv6 is 2000::/3: not loopback, link-local, unique-local or v4-mapped', () => {
  for (const a of ['2001:db8::1', '2a00:1450::1', '3fff::1']) assert.ok(isGlobalIpv6(a), a);
  for (const a of ['::1', 'fe80::1', 'fd00::2', 'fc00::1', '::ffff:192.0.2.1', '4000::1', '192.0.2.1']) assert.ok(!isGlobalIpv6(a), a);
  const iface = (address: string, internal = false) => ({ address, internal, family: 'IPv6' as const, netmask: '', mac: '', cidr: null, scopeid: 0 });
  assert.equal(hasGlobalIpv6({ lo: [iface('::1', true)], eth0: [iface('fd00::2'), iface('fe80::1')] }), false);
  assert.equal(hasGlobalIpv6({ eth0: [iface('fe80::1'), iface('2001:db8::7')] }), true);
});

test('the system source is checked only when public: private, shared, loopback, link-local and ULA addresses are not', async () => {
  const { isPublicAddress, systemSource } = await import('../../src/delivery/smtp/system-source.js');
  for (const a of ['192.0.2.25', '8.8.8.8', '172.32.0.1', '100.128.0.1', '2001:db8::25']) assert.ok(isPublicAddress(a), a);
  for (const a of ['10.1.2.3', '172.16.0.1', '172.31.255.255', '192.168.1.1', '100.64.0.1', '127.0.0.1', '169.254.1.1', '0.0.0.0', '224.0.0.1', 'fd00::2', 'fe80::1', '::1', 'x']) assert.ok(!isPublicAddress(a), a);
  // Whatever this machine's routes are, the answer is an address of the family or a reason, never a throw.
  for (const f of [4, 6] as const) {
    const r = await systemSource(f);
    assert.ok('address' in r ? isIP(r.address) === f : typeof r.error === 'string', JSON.stringify(r));
  }
});
