// delivery/tls/policy: the TLS policy decision point - DANE before MTA-STS
// before the operator's tls (RFC 7672 §2.2, RFC 8461 §2), DANE only for a
// DNSSEC-validated MX answer (§2.2.1), failures that refuse a host, and the
// failures that are only noted (MTA-STS testing). Stub resolvers stand in
// for dane.ts and mta-sts.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { NextHop } from '../../src/delivery/agent.js';
import { domainTls, hostPolicy, type MtaStsPolicy, type PolicySources } from '../../src/delivery/tls/policy.js';
import { mxAllowed } from '../../src/delivery/tls/mta-sts.js';
import type { TlsMode, TlsPolicyFailure } from '../../src/delivery/tls/outcome.js';

type SmtpHop = Extract<NextHop, { kind: 'smtp' }>;
const mx = (tls: TlsMode = 'opportunistic'): SmtpHop => ({ kind: 'smtp', key: 'mx:example.com', hosts: 'mx', domain: 'example.com', port: 25, tls });
const fixed = (tls: TlsMode): SmtpHop => ({ kind: 'smtp', key: 'smtp:relay.example.net:25', hosts: 'fixed', host: 'relay.example.net', port: 25, tls });
const rec = { usage: 3, selector: 1, matchingType: 1, data: Buffer.alloc(32, 7) };
const servfail: TlsPolicyFailure = { policy: 'tlsa', policyDomain: 'example.com', type: 'dnssec-invalid', detail: 'SERVFAIL' };
const sts = (mode: MtaStsPolicy['mode'], names = ['mx1.example.com']): MtaStsPolicy => ({ mode, mx: names, maxAge: 86400, id: '1' });

function sources(o: { tlsa?: Awaited<ReturnType<NonNullable<PolicySources['dane']>['resolver']['tlsaFor']>>; mxSecure?: boolean | TlsPolicyFailure; sts?: MtaStsPolicy | null }): PolicySources {
  const s: PolicySources = {};
  if (o.tlsa !== undefined) {
    s.dane = {
      resolver: {
        tlsaFor: async () => o.tlsa!,
        ...(o.mxSecure === undefined ? {} : { mxSecure: async () => (typeof o.mxSecure === 'object' ? { failure: o.mxSecure } : { secure: o.mxSecure as boolean }) }),
      },
      matches: () => false,
    };
  }
  if (o.sts !== undefined) s.sts = { resolver: { policyFor: async () => ({ policy: o.sts ?? null }) }, mxAllowed };
  return s;
}

async function decide(hop: SmtpHop, host: string, src: PolicySources) {
  return hostPolicy(hop, host, await domainTls(hop, src), src);
}

test('no DANE, no MTA-STS: the operator\'s tls, enforced unless opportunistic, naming the host', async () => {
  for (const mode of ['opportunistic', 'verify', 'required'] as const) {
    const d = await decide(mx(mode), 'mx1.example.com', {});
    assert.deepEqual(d.policy, { kind: mode, domain: 'example.com', enforce: mode !== 'opportunistic', names: ['mx1.example.com'] });
    assert.equal(d.refuse, undefined);
  }
  const r = await decide(fixed('verify'), 'relay.example.net', sources({ tlsa: { secure: true, records: [rec] }, sts: sts('enforce') }));
  assert.equal(r.policy.kind, 'verify', 'DANE and MTA-STS are for MX delivery only');
  assert.equal(r.policy.domain, 'relay.example.net');
});

test('DANE wins over MTA-STS and the operator; insecure TLSA or an insecure MX answer means no DANE', async () => {
  const both = await decide(mx('verify'), 'mx1.example.com', sources({ tlsa: { secure: true, records: [rec] }, mxSecure: true, sts: sts('enforce') }));
  assert.equal(both.policy.kind, 'tlsa');
  assert.equal(both.policy.enforce, true);
  assert.deepEqual(both.tlsa, [rec]);
  const insecure = await decide(mx(), 'mx1.example.com', sources({ tlsa: { secure: false, records: [] }, sts: sts('enforce') }));
  assert.equal(insecure.policy.kind, 'sts');
  const mxInsecure = await decide(mx(), 'mx1.example.com', sources({ tlsa: { secure: true, records: [rec] }, mxSecure: false }));
  assert.equal(mxInsecure.policy.kind, 'opportunistic', 'RFC 7672 §2.2.1: an unvalidated MX answer gets no DANE');
  const unusable = await decide(mx(), 'mx1.example.com', sources({ tlsa: { secure: true, records: [], unusable: 1 } }));
  assert.deepEqual([unusable.policy.kind, unusable.policy.enforce], ['required', true], 'secure but unusable TLSA: TLS is still mandatory');
});

test('DANE failures refuse the host before any connection: a TLSA SERVFAIL, a failed MX check, a resolver that throws', async () => {
  const a = await decide(mx(), 'mx1.example.com', sources({ tlsa: { failure: servfail } }));
  assert.equal(a.refuse, servfail);
  const b = await decide(mx(), 'mx1.example.com', sources({ tlsa: { secure: true, records: [rec] }, mxSecure: servfail }));
  assert.equal(b.refuse, servfail);
  const throwing: PolicySources = { dane: { resolver: { tlsaFor: async () => { throw new Error('socket closed'); } }, matches: () => false } };
  const c = await decide(mx(), 'mx1.example.com', throwing);
  assert.equal(c.refuse?.type, 'tlsa-invalid');
  assert.match(c.refuse!.detail, /socket closed/);
});

test('MTA-STS: enforce refuses a host the policy does not name; testing only notes it; none falls through to the operator', async () => {
  const named = await decide(mx(), 'mx1.example.com', sources({ sts: sts('enforce') }));
  assert.deepEqual([named.policy.kind, named.policy.enforce, named.refuse], ['sts', true, undefined]);
  const other = await decide(mx(), 'mx9.example.com', sources({ sts: sts('enforce') }));
  assert.equal(other.refuse?.policy, 'sts');
  assert.match(other.refuse!.detail, /mx9\.example\.com is not named/);
  const testing = await decide(mx(), 'mx9.example.com', sources({ sts: sts('testing') }));
  assert.deepEqual([testing.policy.kind, testing.policy.enforce, testing.refuse], ['sts', false, undefined]);
  assert.match(testing.note!.detail, /not named/);
  const testingVerify = await decide(mx('verify'), 'mx1.example.com', sources({ sts: sts('testing') }));
  assert.equal(testingVerify.policy.kind, 'verify', 'testing never weakens what the operator asks for');
  const none = await decide(mx('required'), 'mx9.example.com', sources({ sts: sts('none') }));
  assert.equal(none.policy.kind, 'required');
  const noPolicy = await decide(mx(), 'mx9.example.com', sources({ sts: null }));
  assert.equal(noPolicy.policy.kind, 'opportunistic');
});

test('a policy fetch that throws is treated as no policy, and noted for TLS reports', async () => {
  const src: PolicySources = { sts: { resolver: { policyFor: async () => { throw new Error('boom'); } }, mxAllowed } };
  const d = await domainTls(mx(), src);
  assert.equal(d.sts, null);
  assert.equal(d.stsFailure?.type, 'sts-policy-fetch-error');
  assert.equal((await hostPolicy(mx(), 'mx1.example.com', d, src)).policy.kind, 'opportunistic');
});
