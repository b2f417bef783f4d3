// Unit tests for core/dates: the RFC 5322 date-time Petrel writes, and its
// once-per-second formatting (the same text for every instant of one second).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rfc5322Date } from '../../src/core/dates.js';

test('rfc5322Date: UTC with +0000, seconds only, the same text within a second and a new one after', () => {
  const t = Date.UTC(2026, 10, 21, 11, 0, 0);
  assert.equal(rfc5322Date(new Date(t)), 'Sat, 21 Nov 2026 11:00:00 +0000');
  assert.equal(rfc5322Date(new Date(t + 999)), 'Sat, 21 Nov 2026 11:00:00 +0000');
  assert.equal(rfc5322Date(new Date(t + 1000)), 'Sat, 21 Nov 2026 11:00:01 +0000');
  // Back to an earlier second (a message received earlier, written later): not the remembered text.
  assert.equal(rfc5322Date(new Date(t + 500)), 'Sat, 21 Nov 2026 11:00:00 +0000');
  assert.equal(rfc5322Date(new Date(Date.UTC(1999, 11, 31, 23, 59, 59, 999))), 'Fri, 31 Dec 1999 23:59:59 +0000');
});
