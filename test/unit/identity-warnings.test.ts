// The start-up identity check (delivery/smtp/identity-warnings): each DNS
// problem is one warn trace line and one "petrel: warning:" stderr line; a
// check cancelled by stop says nothing (its failed look-ups are ours).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfigText } from '../../src/config/load.js';
import { warnSendingIdentity } from '../../src/delivery/smtp/identity-warnings.js';

const config = parseConfigText('hostname = "h.test"\n[delivery]\nsource_ipv4 = "192.0.2.25"\nhelo_name = "mail.example.com"\n', 'p.toml', '/tmp');

function sinks(): { warn: string[]; info: string[]; stderr: string[]; sinks: Parameters<typeof warnSendingIdentity>[1] } {
  const warn: string[] = [];
  const info: string[] = [];
  const stderr: string[] = [];
  return { warn, info, stderr, sinks: { trace: { warn: (_f, m) => warn.push(m), info: (_f, m) => info.push(m) }, stderr: (l) => stderr.push(l) } };
}

test('each problem is a warn trace line and a stderr line; an identity that checks out is one info line', async () => {
  const s = sinks();
  const resolver = { reverse: async () => ['host25.isp.example'], resolve4: async () => ['192.0.2.25'], resolve6: async () => [] };
  const reports = await warnSendingIdentity(config, s.sinks, resolver).done;
  assert.equal(reports.length, 1);
  assert.deepEqual(s.stderr, ['petrel: warning: sending identity: the HELO name mail.example.com sent from 192.0.2.25 is not its PTR name (host25.isp.example): set [delivery] helo_name to it, or change the PTR']);
  assert.deepEqual(s.warn, [s.stderr[0]!.replace('petrel: warning: ', '')]);
  const ok = sinks();
  await warnSendingIdentity(config, ok.sinks, { ...resolver, reverse: async () => ['mail.example.com'] }).done;
  assert.deepEqual([ok.warn, ok.stderr, ok.info.length], [[], [], 1]);
});

test('stopped before DNS answered: nothing is said; no source configured: nothing is asked', async () => {
  const s = sinks();
  let reject: (e: Error) => void = () => undefined;
  const pending = new Promise<string[]>((_, r) => (reject = r));
  const check = warnSendingIdentity(config, s.sinks, { reverse: () => pending, resolve4: async () => [], resolve6: async () => [], cancel: () => reject(Object.assign(new Error('cancelled'), { code: 'ECANCELLED' })) });
  check.cancel();
  assert.deepEqual(await check.done, []);
  assert.deepEqual([s.warn, s.stderr], [[], []]);
  let asked = false;
  const none = warnSendingIdentity(parseConfigText('', 'p.toml', '/tmp'), s.sinks, { reverse: async () => ((asked = true), []), resolve4: async () => [], resolve6: async () => [] });
  assert.deepEqual([await none.done, asked], [[], false]);
});
