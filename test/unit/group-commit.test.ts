// Unit tests for queue/group-commit: one transaction for a batch, one WAL
// fsync for many commits, and a failing operation (or a failure writing the
// rows it left for afterOperation) that keeps nothing and fails alone while
// the others of its batch commit; a hold (asked for by the checkpointer)
// that starts no transaction until it is released or runs out.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { GroupCommit } from '../../src/queue/group-commit.js';

function setup(): { db: Database.Database; gc: GroupCommit; done: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'petrel-gc-'));
  const db = new Database(join(dir, 'q.db'));
  db.pragma('journal_mode = WAL');
  db.exec('CREATE TABLE t (v INTEGER)');
  const gc = new GroupCommit(db, join(dir, 'q.db-wal'));
  return { db, gc, done: () => (db.close(), rmSync(dir, { recursive: true, force: true })) };
}

test('operations queued in one turn share one transaction and one fsync', async () => {
  const { db, gc, done } = setup();
  try {
    const ins = db.prepare('INSERT INTO t VALUES (?)');
    await Promise.all(Array.from({ length: 50 }, (_, i) => gc.run(() => ins.run(i), true)));
    assert.equal((db.prepare('SELECT COUNT(*) AS n FROM t').get() as { n: number }).n, 50);
    assert.equal(gc.stats.batches, 1);
    assert.equal(gc.stats.syncs, 1);
  } finally {
    await gc.close();
    done();
  }
});

test('a failing operation keeps nothing and fails alone; the rest of its batch commits', async () => {
  const { db, gc, done } = setup();
  try {
    const ins = db.prepare('INSERT INTO t VALUES (?)');
    const a = gc.run(() => ins.run(1), true);
    const b = gc.run(() => {
      ins.run(2);
      throw new Error('half done');
    }, true);
    const c = gc.run(() => ins.run(3), false);
    await assert.rejects(b, /half done/);
    await a;
    await c;
    assert.deepEqual((db.prepare('SELECT v FROM t ORDER BY v').all() as Array<{ v: number }>).map((r) => r.v), [1, 3]);
  } finally {
    await gc.close();
    done();
  }
});

test('rows an operation leaves for afterOperation belong to it: if writing them fails, that operation alone fails and keeps nothing', async () => {
  const { db, gc, done } = setup();
  try {
    const ins = db.prepare('INSERT INTO t VALUES (?)');
    // The store's way: an operation queues rows, afterOperation writes them inside the transaction.
    let pending: number[] = [];
    gc.hooks = {
      afterOperation: () => {
        const rows = pending;
        pending = [];
        for (const v of rows) {
          if (v < 0) throw new Error('cannot write row');
          ins.run(v);
        }
      },
      committed: () => undefined,
      rolledBack: () => (pending = []),
      syncStarting: () => () => undefined,
    };
    const a = gc.run(() => void pending.push(1, 2), true);
    const b = gc.run(() => {
      ins.run(30);
      pending.push(31, -1);
    }, true);
    const c = gc.run(() => void pending.push(4), true);
    await assert.rejects(b, /cannot write row/);
    await a;
    await c;
    assert.deepEqual((db.prepare('SELECT v FROM t ORDER BY v').all() as Array<{ v: number }>).map((r) => r.v), [1, 2, 4]);
  } finally {
    await gc.close();
    done();
  }
});

test('a failed commit rejects the whole batch and keeps none of it', async () => {
  const { db, gc, done } = setup();
  try {
    const ins = db.prepare('INSERT INTO t VALUES (?)');
    gc.fault = () => {
      throw new Error('disk gone');
    };
    const all = [gc.run(() => ins.run(1), true), gc.run(() => ins.run(2), true)];
    for (const p of all) await assert.rejects(p, /disk gone/);
    gc.fault = null;
    assert.equal((db.prepare('SELECT COUNT(*) AS n FROM t').get() as { n: number }).n, 0);
    await gc.run(() => ins.run(9), true);
    assert.equal((db.prepare('SELECT COUNT(*) AS n FROM t').get() as { n: number }).n, 1);
  } finally {
    await gc.close();
    done();
  }
});

test('hold: no transaction starts until release; what gathered meanwhile commits in order, then', async () => {
  const { db, gc, done } = setup();
  try {
    const ins = db.prepare('INSERT INTO t VALUES (?)');
    const count = () => (db.prepare('SELECT COUNT(*) AS n FROM t').get() as { n: number }).n;
    gc.hold(60_000);
    assert.equal(gc.holding, true);
    let settled = 0;
    const writes = [1, 2, 3].map((v) => gc.run(() => ins.run(v), v !== 2).then(() => settled++));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(count(), 0, 'nothing committed while held');
    assert.equal(settled, 0);
    assert.equal(gc.stats.batches, 0);
    gc.release();
    assert.equal(gc.holding, false);
    await Promise.all(writes);
    assert.deepEqual((db.prepare('SELECT v FROM t').all() as Array<{ v: number }>).map((r) => r.v), [1, 2, 3]);
    assert.equal(gc.stats.batches, 1, 'one transaction for what gathered');
    assert.equal(gc.stats.holds, 1);
  } finally {
    await gc.close();
    done();
  }
});

test('hold: ends by itself after its time, when nobody releases it', async () => {
  const { db, gc, done } = setup();
  try {
    const ins = db.prepare('INSERT INTO t VALUES (?)');
    gc.hold(40);
    const write = gc.run(() => ins.run(7), true);
    await write;
    assert.equal(gc.holding, false);
    assert.equal((db.prepare('SELECT COUNT(*) AS n FROM t').get() as { n: number }).n, 1);
  } finally {
    await gc.close();
    done();
  }
});

test('close during a hold commits and syncs what is queued', async () => {
  const { db, gc, done } = setup();
  try {
    const ins = db.prepare('INSERT INTO t VALUES (?)');
    gc.hold(60_000);
    const write = gc.run(() => ins.run(9), true);
    await gc.close();
    await write;
    assert.equal((db.prepare('SELECT COUNT(*) AS n FROM t').get() as { n: number }).n, 1);
  } finally {
    done();
  }
});
