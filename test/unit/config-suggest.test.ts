// config-suggest: `petrel check-config` names the key meant for an unknown one
// (`relay_network` -> "did you mean relay_networks?"): the nearest known key
// of the same table by edit distance, or the same key where it belongs; no
// guess when nothing is near or two names are equally near.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, closestName, editDistance, parseConfigText } from '../../src/config/load.js';

function problems(text: string): string[] {
  try {
    parseConfigText(text, 'petrel.toml', '/srv');
  } catch (e) {
    if (e instanceof ConfigError) return e.message.split('\n');
    throw e;
  }
  return [];
}

test('editDistance: insertions, deletions, substitutions and neighbour swaps cost one each', () => {
  assert.equal(editDistance('relay_network', 'relay_networks'), 1);
  assert.equal(editDistance('domian', 'domain'), 1, 'a swap is one edit');
  assert.equal(editDistance('smarthost', 'smarthots'), 1);
  assert.equal(editDistance('max_recipient', 'max_recipients'), 1);
  assert.equal(editDistance('kitten', 'sitting'), 3);
  assert.equal(editDistance('', 'abc'), 3);
  assert.equal(editDistance('same', 'same'), 0);
});

test('closestName: near enough to be a typo, not tied, else nothing', () => {
  assert.equal(closestName('relay_network', ['listen', 'relay_networks', 'max_recipients']), 'relay_networks');
  assert.equal(closestName('Relay-Networks', ['relay_networks']), 'relay_networks', 'case and - for _ are free');
  assert.equal(closestName('bogus', ['listen', 'relay_networks', 'max_recipients']), undefined);
  assert.equal(closestName('tls', ['via', 'domain', 'tls']), 'tls');
  assert.equal(closestName('ab', ['ac', 'ad']), undefined, 'a tie is no suggestion');
});

test('check-config: an unknown key names the one meant, in its own table or where it belongs', () => {
  const p = problems(`hostnme = "x"
[smtp]
relay_network = ["10.0.0.0/8"]
max_recipient = 5
smarthost = "relay.example:25"
hostname = "y"
bogus = 1
[delivery]
dead_destination_backof = "1m"
[delivry]
smtp_port = 25
[[route]]
domain = "a.example"
via = "smtp:10.0.0.1:25"
[[routes]]
domian = "b.example"
via = "smtp:10.0.0.2:25"
`);
  const expect = [
    'petrel.toml:1: hostnme: unknown key; did you mean hostname?',
    'petrel.toml:3: smtp.relay_network: unknown key; did you mean relay_networks?',
    'petrel.toml:4: smtp.max_recipient: unknown key; did you mean max_recipients?',
    'petrel.toml:5: smtp.smarthost: unknown key; did you mean delivery.smarthost?',
    'petrel.toml:6: smtp.hostname: unknown key; did you mean hostname (at the top of the file, before any [table])?',
    'petrel.toml:7: smtp.bogus: unknown key',
    'petrel.toml:9: delivery.dead_destination_backof: unknown key; did you mean dead_destination_backoff?',
    'petrel.toml:10: delivry: unknown section; did you mean [delivery]?',
    'petrel.toml:12: route: unknown section; did you mean [[routes]]?',
    'petrel.toml:16: routes[0].domian: unknown key; did you mean domain?',
    'petrel.toml:15: routes[0].domain: is required',
  ];
  for (const e of expect) assert.ok(p.includes(e), `expected "${e}" in:\n${p.join('\n')}`);
  // Nothing else: a suggestion never hides or adds a problem.
  assert.equal(p.length, expect.length, p.join('\n'));
});
