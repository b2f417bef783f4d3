// Unit tests for core/units: duration and size parsing as the contract writes them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatDuration, parseDuration, parseSize } from '../../src/core/units.js';

test('durations accept ms s m h d and nothing else', () => {
  assert.equal(parseDuration('500ms'), 500);
  assert.equal(parseDuration('30s'), 30_000);
  assert.equal(parseDuration('5m'), 300_000);
  assert.equal(parseDuration('4h'), 14_400_000);
  assert.equal(parseDuration('5d'), 432_000_000);
  for (const bad of ['', '30', '5 minutes', '-1s', '1w', 'm', '1.5.5s']) assert.equal(parseDuration(bad), null, bad);
  assert.equal(formatDuration(300_000), '5m');
  assert.equal(formatDuration(1500), '1500ms');
});

test('sizes are 1024-based and accept KB MB GB', () => {
  assert.equal(parseSize('50MB'), 50 * 1024 * 1024);
  assert.equal(parseSize('256KB'), 256 * 1024);
  assert.equal(parseSize('1GB'), 1024 ** 3);
  assert.equal(parseSize('100'), 100);
  assert.equal(parseSize('10mb'), 10 * 1024 * 1024);
  for (const bad of ['', 'MB', '5TB', '-1KB', 'ten']) assert.equal(parseSize(bad), null, bad);
});
