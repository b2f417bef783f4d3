// admin/metrics Latency, the delivery latency histogram the primary feeds once
// per delivered recipient, exposes exactly what a prom-client Histogram with the
// same name, label and buckets exposes for the same observations: series in
// first-seen order, cumulative buckets, +Inf, _sum (added in the same order, so
// the same floating-point value) and _count.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Histogram, Registry } from 'prom-client';
import { AdminMetrics, LATENCY_BUCKETS, Latency } from '../../src/admin/metrics.js';
import { MemoryStore } from '../../src/queue/memory-store.js';
import type { NextHop, RecipientResult } from '../../src/delivery/agent.js';
import type { MessageRecord } from '../../src/queue/store.js';

const NAME = 'petrel_delivery_latency_seconds';
const HELP = 'Time from acceptance to delivery, per delivered recipient';

function pair(): { ours: Latency; theirs: Histogram; text: () => Promise<[string, string]> } {
  const a = new Registry();
  const b = new Registry();
  const ours = new Latency(NAME, HELP, 'transport', LATENCY_BUCKETS, a);
  const theirs = new Histogram({ name: NAME, help: HELP, labelNames: ['transport'], buckets: [...LATENCY_BUCKETS], registers: [b] });
  return { ours, theirs, text: async () => [await a.metrics(), await b.metrics()] };
}

test('Latency: no observation gives the same (empty) exposition as a prom-client Histogram', async () => {
  const { text } = pair();
  const [ours, theirs] = await text();
  assert.equal(ours, theirs);
});

test('Latency: the same observations give the same exposition as a prom-client Histogram, byte for byte', async () => {
  const { ours, theirs, text } = pair();
  // Bounds exactly, between bounds, zero, beyond the last bound, fractions whose sum rounds; three transports interleaved.
  const values = [0, 0.05, 0.050001, 0.1, 0.3, 1, 2.5, 7, 30, 61, 899.9, 3600, 86400, 86400.5, 1e6, 0.1 + 0.2, 1 / 3, 2 / 3];
  const transports = ['smtp', 'lmtp', 'smtp', 'maildir', 'directory'];
  let k = 0;
  for (let round = 0; round < 3; round++) {
    for (const v of values) {
      const t = transports[k++ % transports.length]!;
      ours.observe(t, v);
      theirs.observe({ transport: t }, v);
    }
  }
  const [a, b] = await text();
  assert.equal(a, b);
  assert.match(a, /^petrel_delivery_latency_seconds_bucket\{le="\+Inf",transport="smtp"\} \d+$/m);
});

test('Latency: any sequence of observations gives the same exposition as a prom-client Histogram', async () => {
  const observation = fc.tuple(fc.constantFrom('smtp', 'lmtp', 'maildir', 'directory', 'reject'), fc.oneof(fc.constantFrom(...LATENCY_BUCKETS, 0), fc.double({ min: 0, max: 2e5, noNaN: true })));
  await fc.assert(
    fc.asyncProperty(fc.array(observation, { maxLength: 200 }), async (list) => {
      const { ours, theirs, text } = pair();
      for (const [t, v] of list) {
        ours.observe(t, v);
        theirs.observe({ transport: t }, v);
      }
      const [a, b] = await text();
      assert.equal(a, b);
    }),
    { numRuns: 200 },
  );
});

test('Latency: reset empties every series, as for a prom-client Histogram', async () => {
  const { ours, theirs, text } = pair();
  ours.observe('smtp', 1);
  theirs.observe({ transport: 'smtp' }, 1);
  ours.reset();
  theirs.reset();
  ours.observe('lmtp', 2);
  theirs.observe({ transport: 'lmtp' }, 2);
  const [a, b] = await text();
  assert.equal(a, b);
});

test('AdminMetrics.onResult: a delivered recipient is one latency observation for its transport; other results none', async () => {
  const m = new AdminMetrics(new MemoryStore(), () => 0);
  const message = { receivedAt: Date.now() - 2000 } as MessageRecord;
  const hop = { kind: 'smtp' } as NextHop;
  const result = (kind: RecipientResult['kind']) => ({ recipientId: 1, kind, status: '2.0.0', reply: '250 ok', remote: '', remoteReply: true }) as RecipientResult;
  m.onResult(result('delivered'), message, hop);
  m.onResult(result('delivered'), message, hop);
  m.onResult(result('deferred'), message, hop);
  m.onResult(result('delivered'), message, { kind: 'lmtp' } as NextHop);
  const text = await m.text();
  assert.match(text, /^petrel_delivery_latency_seconds_count\{transport="smtp"\} 2$/m);
  assert.match(text, /^petrel_delivery_latency_seconds_count\{transport="lmtp"\} 1$/m);
  assert.match(text, /^petrel_delivery_latency_seconds_bucket\{le="1",transport="smtp"\} 0$/m);
  assert.match(text, /^petrel_delivery_latency_seconds_bucket\{le="5",transport="smtp"\} 2$/m);
  assert.match(text, /^petrel_delivery_attempts_total\{result="deferred",transport="smtp"\} 1$/m);
});
