// log/event-log formatEvent: each line is exactly JSON.stringify of the event's
// fields in the contract's order, empty ones left out — also when consecutive
// events repeat or change fields (the formatter remembers quoted strings).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { formatEvent } from '../../src/log/event-log.js';
import type { MailEvent } from '../../src/log/events.js';

const ORDER = ['ts', 'seq', 'id', 'event', 'queue_id', 'message_id', 'sender', 'recipient', 'attempt', 'state', 'remote', 'reply', 'error', 'status', 'detail', 'report'] as const;

function reference(e: MailEvent): string {
  const o: Record<string, unknown> = {};
  for (const k of ORDER) if (e[k] !== undefined) o[k] = e[k];
  return `${JSON.stringify(o)}\n`;
}

test('formatEvent equals JSON.stringify in contract order, for any text and any sequence of events', () => {
  // Few distinct values, so consecutive events often share a field (the remembered case) and often do not.
  const text = fc.oneof(fc.constantFrom('', 'a@example.com', '250 2.0.0 Ok', 'x"y\\z', 'line\r\nbreak', 'ünïcödé ✉', '\u0000\u001f'), fc.string(), fc.string({ unit: 'binary' }));
  const opt = <T>(a: fc.Arbitrary<T>): fc.Arbitrary<T | undefined> => fc.option(a, { nil: undefined });
  const event: fc.Arbitrary<MailEvent> = fc.record({
    ts: fc.constantFrom('2026-11-21T17:00:00.000Z', '2026-11-21T17:00:00.001Z'),
    seq: opt(fc.nat()),
    id: fc.constantFrom(1000, 2000, 3000),
    event: fc.constantFrom('received', 'delivered', 'deferred'),
    queue_id: fc.constantFrom('Q1', 'Q2'),
    message_id: text,
    sender: text,
    recipient: opt(text),
    attempt: opt(fc.nat(50)),
    state: opt(fc.constantFrom('queued', 'delivered')),
    remote: opt(text),
    reply: opt(text),
    error: opt(text),
    status: opt(fc.constantFrom('2.0.0', '4.4.1')),
    detail: opt(text),
    report: opt(fc.constantFrom('none', 'failed')),
  }) as fc.Arbitrary<MailEvent>;
  fc.assert(
    fc.property(fc.array(event, { minLength: 1, maxLength: 20 }), (events) => {
      for (const e of events) assert.equal(formatEvent(e), reference(e));
    }),
    { numRuns: 2000 },
  );
});

test('a field that changes between two events is not carried over from the first', () => {
  const base: MailEvent = { ts: 't1', seq: 1, id: 2000, event: 'delivered', queue_id: 'Q', message_id: '<m@x>', sender: 's@x', recipient: 'a@x', reply: 'one' };
  assert.equal(JSON.parse(formatEvent(base)).reply, 'one');
  const next = { ...base, seq: 2, reply: 'two', message_id: '<n@x>' };
  const line = JSON.parse(formatEvent(next));
  assert.equal(line.reply, 'two');
  assert.equal(line.message_id, '<n@x>');
  assert.equal(line.seq, 2);
});
