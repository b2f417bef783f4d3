/*
 * bench/track - message tracking on a big event log: fills the embedded
 * store's events table with N events (default 1,000,000: 200,000 messages of
 * 5 events, 5,000 senders, 50,000 recipients) and times `track` look-ups by
 * Message-ID, sender (newest 100 messages), recipient, and sender with
 * --since — the queries `petrel track` and the viewer's event search run.
 * Also times a retention pass deleting a tenth of the log.
 *
 *   node dist/bench/track.js [--events 1000000]
 *
 * Prints key=value figures (milliseconds unless named otherwise).
 */
import { join } from 'node:path';
import { EmbeddedStore } from '../src/queue/embedded-store.js';
import { arg, removeDir, tempDir } from './lib.js';

const total = Number(arg('events', '1000000'));
const perMessage = 5;
const messages = Math.ceil(total / perMessage);
const dir = tempDir('petrel-bench-track-');
const store = new EmbeddedStore({ dataDir: dir });

function qid(i: number): string {
  return `B${String(i).padStart(15, '0')}`;
}

async function time<T>(fn: () => Promise<T>, runs = 5): Promise<{ ms: number; value: T }> {
  let best = Infinity;
  let value!: T;
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    value = await fn();
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return { ms: Math.round(best * 100) / 100, value };
}

try {
  await store.open();
  const db = store.database;
  const insert = db.prepare(
    `INSERT INTO events (ts, id, event, qid, message_id, sender, recipient, attempt, state, remote, reply, error, status, detail)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, NULL)`,
  );
  const t0 = Date.now();
  const start = Date.now() - 20 * 86_400_000;
  const fill = db.transaction((from: number, to: number) => {
    for (let m = from; m < to; m++) {
      const ts = (k: number): string => new Date(start + m * 8000 + k * 1000).toISOString();
      const sender = `sender${m % 5000}@example.com`;
      const rcpt = `user${m % 50000}@dest${m % 300}.example`;
      const mid = `<m${m}@bench.example>`;
      insert.run(ts(0), 1000, 'received', qid(m), mid, sender, rcpt, null, 'queued', 'client [127.0.0.1]', null, null);
      insert.run(ts(1), 3000, 'deferred', qid(m), mid, sender, rcpt, 1, 'deferred', 'mx.dest.example [192.0.2.1]', '451 4.3.0 try later', '4.3.0');
      insert.run(ts(2), 3000, 'deferred', qid(m), mid, sender, rcpt, 2, 'deferred', 'mx.dest.example [192.0.2.1]', '451 4.3.0 try later', '4.3.0');
      insert.run(ts(3), 2000, 'delivered', qid(m), mid, sender, rcpt, 3, 'delivered', 'mx.dest.example [192.0.2.1]', '250 2.0.0 ok', '2.0.0');
      insert.run(ts(4), 5100, 'dsn_queued', qid(m), mid, sender, null, null, 'relayed', null, null, null);
    }
  });
  for (let m = 0; m < messages; m += 10_000) fill(m, Math.min(messages, m + 10_000));
  db.exec('ANALYZE');
  const fillMs = Date.now() - t0;
  const n = (db.prepare('SELECT COUNT(*) AS n FROM events').get() as { n: number }).n;
  // The tracking index is built by the store's worker thread: wait until it holds every event.
  const last = (db.prepare('SELECT MAX(seq) AS s FROM events').get() as { s: number }).s;
  const t1 = Date.now();
  const { default: Database } = await import('better-sqlite3');
  for (;;) {
    let indexed = 0;
    try {
      const t = new Database(join(dir, 'queue', 'track.db'), { readonly: true, fileMustExist: true });
      indexed = (t.prepare('SELECT MAX(seq) AS s FROM track').get() as { s: number | null }).s ?? 0;
      t.close();
    } catch {
      indexed = 0;
    }
    if (indexed >= last) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  const indexMs = Date.now() - t1;

  const probe = Math.floor(messages * 0.37);
  const byId = await time(() => store.track({ messageId: `m${probe}@bench.example`, limit: 100 }));
  const bySender = await time(() => store.track({ sender: `SENDER${probe % 5000}@example.com`, limit: 100 }));
  const byRecipient = await time(() => store.track({ recipient: `user${probe % 50000}@dest${probe % 300}.example`, limit: 100 }));
  const since = new Date(start + Math.floor(messages * 0.9) * 8000).toISOString();
  const bySenderSince = await time(() => store.track({ sender: `sender${probe % 5000}@example.com`, since, limit: 100 }));
  const miss = await time(() => store.track({ sender: 'nobody@example.com', limit: 100 }));
  const cutoff = new Date(start + Math.floor(messages / 10) * 8000).toISOString();
  const prune = await time(() => store.pruneEvents(cutoff, Number.MAX_SAFE_INTEGER, 1_000_000), 1);

  const out = {
    events: n,
    fill_s: (fillMs / 1000).toFixed(1),
    index_s: (indexMs / 1000).toFixed(1),
    track_message_id_ms: byId.ms,
    track_message_id_events: byId.value.messages[0]?.events.length ?? 0,
    track_sender_ms: bySender.ms,
    track_sender_messages: bySender.value.messages.length,
    track_recipient_ms: byRecipient.ms,
    track_recipient_messages: byRecipient.value.messages.length,
    track_sender_since_ms: bySenderSince.ms,
    track_sender_since_messages: bySenderSince.value.messages.length,
    track_no_match_ms: miss.ms,
    prune_tenth_ms: prune.ms,
    pruned: prune.value,
  };
  process.stdout.write(Object.entries(out).map(([k, v]) => `${k}=${v}`).join(' ') + '\n');
} finally {
  await store.close();
  removeDir(join(dir));
}
