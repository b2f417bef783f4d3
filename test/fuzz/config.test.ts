// Fuzzing configuration files through parseConfigText (issue 7): generated
// and mutated TOML (test/fuzz/config-generators). Properties: it returns a
// Config or throws a ConfigError — never anything else; every problem names a
// key (one of Petrel's keys, a routes[i] key, an unknown key as written,
// "(syntax)" for TOML errors) with a message; a line number when the key is
// on a line of the file; and a Config that parses has the types the rest of
// Petrel relies on. Bounded for CI.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { parseConfigText } from '../../src/config/load.js';
import { anyConfig, checkConfigText } from './config-generators.js';

test('random and mutated configuration files: a Config or a ConfigError naming each key', () => {
  fc.assert(
    fc.property(anyConfig, (text) => {
      assert.deepEqual(checkConfigText(text), [], text);
    }),
    { numRuns: 3000 },
  );
});

test('the generators reach both outcomes (the property is not vacuous)', () => {
  let ok = 0;
  let refused = 0;
  for (const text of fc.sample(anyConfig, { numRuns: 2000, seed: 42 })) {
    try {
      parseConfigText(text, 'fuzz.toml', '/tmp');
      ok++;
    } catch {
      refused++;
    }
  }
  assert.ok(ok > 20 && refused > 200, `ok=${ok} refused=${refused}`);
});
