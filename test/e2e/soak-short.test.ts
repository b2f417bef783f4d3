// The soak, short (CI): 5,000 messages with unique headers through a Petrel
// child process to a peer that defers every 50th message once (test/helpers/
// soak). The same properties as bench/soak.ts with loose margins: every
// acknowledged message reaches the peer exactly once, no recipient waits
// longer than its retry schedule allows, nothing is refused, and memory at
// the end is not far above memory after warm-up (seed 002: no drift, no
// restart needed). Bounded: 5,000 messages, 90 s.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runSoak, summaryLine } from '../helpers/soak.js';

test('soak, short: 5,000 messages, none lost or doubled, retry schedule kept, memory flat', async () => {
  const lines: string[] = [];
  const r = await runSoak({
    messages: 5000,
    sessions: 8,
    rate: 0,
    sampleMs: 2000,
    maxSeconds: 90,
    deferEvery: 50,
    retrySeconds: [1, 2],
    warmupFraction: 0.3,
    firstAttemptSlackMs: 20_000,
    bodySize: 1500,
    log: (l) => lines.push(l),
  });
  const summary = summaryLine(r);
  const context = `${summary}\n${lines.join('\n')}`;
  assert.ok(r.finished, `every message delivered within the bound\n${context}`);
  assert.equal(r.sent, 5000, context);
  assert.equal(r.refused, 0, context);
  assert.equal(r.connectionErrors, 0, context);
  assert.equal(r.lost, 0, context);
  assert.equal(r.duplicates, 0, context);
  assert.equal(r.deferredAttempts, 100, `every 50th message deferred once, then retried\n${context}`);
  assert.equal(r.scheduleViolations, 0, context);
  assert.ok(r.samples.length >= 3, context);
  // Loose: a short run is still warming up (JIT, SQLite cache); the long run holds it to 20%.
  assert.ok(r.endRssMb <= r.warmupRssMb * 1.5, `memory at the end ${r.endRssMb} MB vs ${r.warmupRssMb} MB after warm-up\n${context}`);
  assert.ok(r.endHeapMb <= r.warmupHeapMb * 2 + 20, `heap at the end ${r.endHeapMb} MB vs ${r.warmupHeapMb} MB after warm-up\n${context}`);
});
