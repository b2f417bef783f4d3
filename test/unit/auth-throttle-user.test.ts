// Failed logins are throttled per user name as well as per client address
// (issue 16): guesses for one user spread over many addresses are slowed too.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AuthThrottle } from '../../src/inbound/auth-throttle.js';

test('failures for one user from many addresses wait longer each time', () => {
  let now = 0;
  const t = new AuthThrottle({ stepMs: 1000, maxDelayMs: 10_000, forgetMs: 60_000, now: () => now });
  const waits = [1, 2, 3, 4, 5].map((i) => t.failed(`192.0.2.${i}`, 'alice'));
  assert.deepEqual(waits, [1000, 2000, 3000, 4000, 5000]);
  assert.equal(t.userFailures('alice'), 5);
  assert.equal(t.failures('192.0.2.1'), 1, 'each address failed once');
  // Another user from a fresh address starts at one.
  assert.equal(t.failed('192.0.2.99', 'bob'), 1000);
  // The address count still applies across user names.
  assert.equal(t.failed('192.0.2.99', 'carol'), 2000);
  // A count fades.
  now += 61_000;
  assert.equal(t.failed('192.0.2.7', 'alice'), 1000);
});

test('a user name cannot be taken for an address', () => {
  const t = new AuthThrottle({ stepMs: 1000 });
  t.failed('192.0.2.1', '192.0.2.1');
  assert.equal(t.failures('192.0.2.1'), 1);
  assert.equal(t.userFailures('192.0.2.1'), 1);
});
