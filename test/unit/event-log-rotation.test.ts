// log/event-log across rotation and retention: each event once, in order,
// with nothing skipped — also when Petrel stopped right after a rotation
// (the new file still empty) — and retention never deletes an event the
// file does not hold yet, nor one of a message still in the queue.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { EventLog } from '../../src/log/event-log.js';
import { makeEvent, type MailEvent } from '../../src/log/events.js';
import { trace } from '../../src/log/trace.js';
import { MemoryStore } from '../../src/queue/memory-store.js';
import { tempDir, cleanup } from '../helpers/petrel-harness.js';

function seqs(path: string): number[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => (JSON.parse(l) as MailEvent).seq!);
}

function events(n: number, ts = new Date().toISOString()): MailEvent[] {
  return Array.from({ length: n }, (_, i) => makeEvent('delivered', { ts, queue_id: `Q${String(i).padStart(15, '0')}`, message_id: `<m${i}@t>`, sender: 'a@b.c', recipient: 'x@y.z', state: 'delivered' }));
}

test('rotation keeps every event exactly once, in order, across files; the oldest beyond rotate_keep is dropped', async () => {
  const dir = tempDir();
  const path = join(dir, 'log', 'events.jsonl');
  const store = new MemoryStore();
  try {
    const log = new EventLog(store, path, trace('test'), 60_000);
    log.policy = { retentionMs: 0, rotateSize: 2000, keep: 3 };
    const written: number[] = [];
    log.onWritten = (evs) => written.push(...evs.map((e) => e.seq!));
    await log.open();
    for (let i = 0; i < 12; i++) {
      await store.appendEvents(events(5));
      await log.flush();
    }
    await log.close();
    assert.ok(existsSync(`${path}.1`) && existsSync(`${path}.3`), 'rotated files');
    assert.ok(!existsSync(`${path}.4`), 'no more than rotate_keep old files');
    const all = [...seqs(`${path}.3`), ...seqs(`${path}.2`), ...seqs(`${path}.1`), ...seqs(path)];
    assert.ok(all.length > 0);
    for (let i = 1; i < all.length; i++) assert.equal(all[i], all[i - 1]! + 1, 'contiguous, in order, no duplicates');
    assert.equal(all[all.length - 1], 60, 'the last event is there');
    assert.deepEqual(written, Array.from({ length: 60 }, (_, i) => i + 1), 'the observer saw each event once');
  } finally {
    cleanup(dir);
  }
});

test('a stop right after a rotation (new file empty): the next start continues after the last event of .1', async () => {
  const dir = tempDir();
  const path = join(dir, 'log', 'events.jsonl');
  const store = new MemoryStore();
  try {
    const log = new EventLog(store, path, trace('test'), 60_000);
    log.policy = { retentionMs: 0, rotateSize: 1, keep: 5 }; // every copy rotates
    await log.open();
    await store.appendEvents(events(3));
    await log.flush();
    await log.close();
    assert.deepEqual(seqs(path), [], 'the new file is empty');
    assert.deepEqual(seqs(`${path}.1`), [1, 2, 3]);
    // Also a torn empty file left by the crash: still nothing repeated.
    writeFileSync(path, '');
    const again = new EventLog(store, path, trace('test'), 60_000);
    await again.open();
    await store.appendEvents(events(2));
    await again.flush();
    await again.close();
    const all = [...seqs(`${path}.3`), ...seqs(`${path}.2`), ...seqs(`${path}.1`), ...seqs(path)];
    assert.deepEqual(all, [1, 2, 3, 4, 5]);
  } finally {
    cleanup(dir);
  }
});

test('retention deletes old events once they are in the file, never newer ones nor those of a queued message', async () => {
  const dir = tempDir();
  const path = join(dir, 'log', 'events.jsonl');
  const store = new MemoryStore();
  try {
    const oldMs = Date.now() - 40 * 86_400_000;
    const old = new Date(oldMs).toISOString();
    // A message still queued, received 40 days ago: its events stay.
    const body = store.createBody('QUEUEDMESSAGE001');
    await body.write(Buffer.from('x'));
    await store.insert(
      { queueId: 'QUEUEDMESSAGE001', messageId: '<q@t>', sender: 'a@b.c', envid: null, ret: null, size: 1, receivedAt: oldMs, smtputf8: false, eightBit: false, isReport: false, client: 't', subject: '', recipients: [{ address: 'x@y.z', orcpt: null, notify: null, destination: 'y.z' }] },
      body,
    );
    await store.appendEvents(events(4, old));
    await store.appendEvents(events(1));
    const log = new EventLog(store, path, trace('test'), 60_000);
    log.policy = { retentionMs: 30 * 86_400_000, rotateSize: 0, keep: 1 };
    await log.open();
    await log.prune();
    const left = await store.eventsAfter(0, 100);
    assert.deepEqual(left.map((e) => e.seq), [1, 6], 'the queued message\'s event and the new one remain');
    assert.deepEqual(seqs(path), [1, 2, 3, 4, 5, 6], 'the file keeps everything');
    await log.close();
  } finally {
    cleanup(dir);
  }
});

test('the event log copies only events that are on stable storage', async () => {
  let durable = 0;
  class HalfSynced extends MemoryStore {
    override durableEventSeq(): number {
      return durable;
    }
  }
  const store = new HalfSynced();
  const dir = tempDir();
  const log = new EventLog(store, join(dir, 'events.jsonl'), trace('test'), 10_000);
  try {
    await log.open();
    await store.appendEvents([1, 2, 3].map((n) => makeEvent('suspended', { queue_id: `Q${n}`, message_id: '', sender: '' })));
    durable = 2;
    await log.flush();
    const lines = (): string[] => readFileSync(join(dir, 'events.jsonl'), 'utf8').trim().split('\n');
    assert.deepEqual(lines().map((l) => (JSON.parse(l) as { queue_id: string }).queue_id), ['Q1', 'Q2']);
    durable = 3;
    await log.flush();
    assert.equal(lines().length, 3);
  } finally {
    await log.close();
    cleanup(dir);
  }
});
