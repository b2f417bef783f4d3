// Unit tests for log/audit: the fate audit finds lost recipients, changes no
// event explains, and reports owed but never queued; it does not cry wolf
// over mail still in the queue, reports still to be made, or mail that
// arrived while it ran.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Auditor } from '../../src/log/audit.js';
import { makeEvent, type EventName, type MailEvent } from '../../src/log/events.js';
import type { RecipientRecord } from '../../src/queue/store.js';

let seq = 0;
let ids = 0;
function ev(event: EventName, qid: string, recipient: string | undefined, extra: Partial<MailEvent> = {}): MailEvent {
  return { ...makeEvent(event, { queue_id: qid, message_id: `<${qid}@t>`, sender: 'a@x', ...(recipient ? { recipient } : {}), ...extra }), seq: ++seq };
}

function stored(qid: string, address: string, state: RecipientRecord['state'], extra: Partial<RecipientRecord> = {}): [string, RecipientRecord] {
  return [
    `${qid}\u0000${address}`,
    { id: ++ids, queueId: qid, address, orcpt: null, notify: null, destination: 'x', state, attempts: 1, nextAttemptAt: Date.now() + 60_000, lastAttemptAt: null, lastReply: '', lastStatus: '', remote: '', report: null, delayNotified: false, suspended: false, ...extra },
  ];
}

test('a clean history has no exceptions, whatever stage each recipient is at', () => {
  const a = new Auditor();
  for (const e of [
    ev('received', 'Q1', 'd@x'),
    ev('delivered', 'Q1', 'd@x', { attempt: 1, report: 'none' }),
    ev('received', 'Q2', 'f@x'),
    ev('failed', 'Q2', 'f@x', { attempt: 1, report: 'failed' }),
    ev('dsn_queued', 'Q2', undefined, { state: 'failed', detail: 'failed report R1 to <a@x> about 1 recipient(s)' }),
    ev('received', 'Q3', 'w@x'),
    ev('deferred', 'Q3', 'w@x', { attempt: 1 }),
    ev('received', 'Q4', 'q@x'),
    ev('quarantined', 'Q4', 'q@x'),
    ev('received', 'Q5', 'p@x'),
    ev('failed', 'Q5', 'p@x', { attempt: 1, report: 'failed' }),
  ])
    a.apply(e);
  // Q5's report is still to be made: its message is still in the queue.
  const r = a.finish(new Map([stored('Q3', 'w@x', 'deferred'), stored('Q4', 'q@x', 'quarantined'), stored('Q5', 'p@x', 'failed', { report: 'failed' })]), 0);
  assert.deepEqual(r.exceptions, []);
  assert.deepEqual(r.byState, { delivered: 1, failed: 2, deferred: 1, quarantined: 1 });
  assert.deepEqual(r.reports, { owed: 2, queued: 1, pending: 1 });
});

test('a recipient accepted, unfinished and gone from the queue is lost', () => {
  const a = new Auditor();
  a.apply(ev('received', 'Q1', 'x@y'));
  a.apply(ev('deferred', 'Q1', 'x@y', { attempt: 1 }));
  const r = a.finish(new Map(), 0);
  assert.equal(r.exceptions.length, 1);
  assert.equal(r.exceptions[0]!.kind, 'lost');
  assert.equal(r.exceptions[0]!.recipient, 'x@y');
});

test('a failure whose report was never queued, message gone, is an exception', () => {
  const a = new Auditor();
  a.apply(ev('received', 'Q1', 'x@y'));
  a.apply(ev('received', 'Q1', 'z@y'));
  a.apply(ev('expired', 'Q1', 'x@y', { attempt: 9, report: 'expired' }));
  a.apply(ev('expired', 'Q1', 'z@y', { attempt: 9, report: 'expired' }));
  a.apply(ev('dsn_queued', 'Q1', undefined, { state: 'expired', detail: 'expired report R to <a@x> about 1 recipient(s)' }));
  const r = a.finish(new Map(), 0);
  assert.deepEqual(r.exceptions.map((x) => x.kind), ['report-missing']);
  assert.match(r.exceptions[0]!.detail, /2 recipient\(s\) owed a expired report, 1 covered/);
});

test('a store change without an event, and a store row without history, are exceptions', () => {
  seq = 0; // a log that starts at the beginning
  const a = new Auditor();
  a.apply(ev('received', 'Q1', 'x@y'));
  a.apply(ev('deferred', 'Q1', 'x@y', { attempt: 1 }));
  const r = a.finish(new Map([stored('Q1', 'x@y', 'delivered'), stored('Q9', 'ghost@y', 'queued')]), 0);
  assert.deepEqual(r.exceptions.map((x) => x.kind).sort(), ['unrecorded', 'unrecorded']);
});

test('mail that arrived after the store was read is not reported lost; rotated history is counted, not blamed', () => {
  const a = new Auditor();
  a.apply(ev('received', 'Q1', 'x@y'));
  const scanSeq = seq;
  a.apply(ev('received', 'Q2', 'late@y'));
  const r = a.finish(new Map([stored('Q1', 'x@y', 'queued')]), 0, scanSeq);
  assert.deepEqual(r.exceptions, []);
  const b = new Auditor();
  b.apply({ ...ev('deferred', 'Q7', 'old@y', { attempt: 3 }), seq: 500 });
  const r2 = b.finish(new Map([stored('Q7', 'old@y', 'deferred'), stored('Q8', 'older@y', 'deferred')]), 0);
  assert.deepEqual(r2.exceptions, []);
  assert.equal(r2.historyIncomplete, 2);
});
