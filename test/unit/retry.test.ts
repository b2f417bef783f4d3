// Unit tests for scheduler/retry: retry waits, expiry at the lifetime, the one delay warning.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { afterTemporaryFailure, retryDelay } from '../../src/scheduler/retry.js';
import { wantsReport } from '../../src/dsn/policy.js';

const p = { retry_intervals: [60_000, 300_000, 900_000], max_lifetime: 86_400_000, delay_warning: 14_400_000 };
const zero = (): number => 0;

test('waits follow retry_intervals, the last repeating, jitter below 10%', () => {
  assert.equal(retryDelay(1, p.retry_intervals, zero), 60_000);
  assert.equal(retryDelay(2, p.retry_intervals, zero), 300_000);
  assert.equal(retryDelay(9, p.retry_intervals, zero), 900_000);
  for (let i = 0; i < 100; i++) {
    const d = retryDelay(1, p.retry_intervals);
    assert.ok(d >= 60_000 && d <= 66_000, String(d));
  }
});

test('no attempt is scheduled past expiry; failing at expiry expires', () => {
  const m = { receivedAt: 0 };
  const late = afterTemporaryFailure(p, m, { attempts: 30, delayNotified: true }, 86_000_000, zero);
  assert.equal(late.state, 'deferred');
  assert.equal(late.nextAttemptAt, 86_400_000);
  const gone = afterTemporaryFailure(p, m, { attempts: 31, delayNotified: true }, 86_400_000, zero);
  assert.equal(gone.state, 'expired');
});

test('the delay warning is due once, and an attempt is placed at the warning time', () => {
  const m = { receivedAt: 0 };
  const before = afterTemporaryFailure({ ...p, retry_intervals: [3_600_000 * 5] }, m, { attempts: 1, delayNotified: false }, 1000, zero);
  assert.equal(before.delayNotice, false);
  assert.equal(before.nextAttemptAt, 14_400_000);
  const at = afterTemporaryFailure(p, m, { attempts: 2, delayNotified: false }, 14_400_000, zero);
  assert.equal(at.delayNotice, true);
  const again = afterTemporaryFailure(p, m, { attempts: 3, delayNotified: true }, 15_000_000, zero);
  assert.equal(again.delayNotice, false);
  const never = afterTemporaryFailure({ ...p, delay_warning: p.max_lifetime }, m, { attempts: 3, delayNotified: false }, 20_000_000, zero);
  assert.equal(never.delayNotice, false);
});

test('NOTIFY decides which reports a sender wants', () => {
  assert.equal(wantsReport(null, 'FAILURE'), true);
  assert.equal(wantsReport(null, 'DELAY'), true);
  assert.equal(wantsReport(null, 'SUCCESS'), false);
  assert.equal(wantsReport('NEVER', 'FAILURE'), false);
  assert.equal(wantsReport('SUCCESS,FAILURE', 'DELAY'), false);
  assert.equal(wantsReport('SUCCESS,FAILURE', 'SUCCESS'), true);
});
