/*
 * queue/store-worker - the embedded backend's (queue/backends/sqlite)
 * background work, on a worker thread with connections of its own, so none
 * of it stops the event loop that serves SMTP sessions:
 *
 * 1. WAL checkpoints (PASSIVE: they never wait for, or block, the writer).
 *    The main connection turns its automatic checkpoints off while this
 *    worker runs, and back on if it dies.
 *    SQLite writes a WAL from its start again only once a checkpoint has
 *    taken in all of it; under a steady load the writer appends new frames
 *    while each checkpoint runs, so none ever does and the WAL grows for as
 *    long as the load lasts (657 MB in 12 s of 100 KB messages, measured) —
 *    disk, and CPU: each frame appended past the end of the file costs the
 *    kernel a fresh page to allocate and zero (a third of the writer's CPU at
 *    100 KB, perf). So when the WAL is `restartFrames` frames or longer and
 *    was written to since the last checkpoint, the worker asks the writer to
 *    pause ("hold"; queue/group-commit), checkpoints the rest while nothing
 *    is appended, and lets it go ("release"): the next transaction restarts
 *    the WAL. The pause lasts one checkpoint of what the first one left
 *    (0.3-4 ms measured; the writer ends it itself after a second whatever
 *    happens here); writes queued meanwhile commit in order.
 * 2. The message-tracking index (data_dir/queue/track.db): who sent what to
 *    whom, by Message-ID, sender, recipient and queue id, for `petrel track`.
 *    Kept out of the hot transaction (where four more indexes on every event
 *    cost about a third of the database writes per message); it trails the
 *    event table by at most one interval, can be deleted at any time, and is
 *    rebuilt from the event table on the next start. Queries read the table's
 *    newest events directly, so they miss nothing (queue/backends/sqlite).
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';

const { file, trackFile, intervalMs, restartFrames } = workerData as { file: string; trackFile: string; intervalMs: number; restartFrames: number };

const queue = new Database(file);
queue.pragma('synchronous = NORMAL');
queue.pragma('busy_timeout = 1000');

const TRACK_SCHEMA = `
CREATE TABLE IF NOT EXISTS track (
  seq INTEGER PRIMARY KEY,
  ts TEXT NOT NULL,
  qid TEXT NOT NULL,
  message_id TEXT NOT NULL,
  sender TEXT NOT NULL,
  recipient TEXT
);
CREATE INDEX IF NOT EXISTS track_message_id ON track(message_id);
CREATE INDEX IF NOT EXISTS track_sender ON track(sender COLLATE NOCASE);
CREATE INDEX IF NOT EXISTS track_recipient ON track(recipient COLLATE NOCASE) WHERE recipient IS NOT NULL;
CREATE INDEX IF NOT EXISTS track_qid ON track(qid);
`;

let track: Database.Database | null = null;
try {
  track = new Database(trackFile);
  track.pragma('journal_mode = WAL');
  // Rebuildable from the event table: no sync of its own.
  track.pragma('synchronous = OFF');
  // It reads the queue's events through an ATTACH (below): wait for a lock as the queue connection does.
  track.pragma('busy_timeout = 1000');
  track.exec(TRACK_SCHEMA);
  track.prepare(`ATTACH DATABASE ? AS q`).run(file);
} catch (e) {
  parentPort?.postMessage({ error: `tracking index unavailable: ${(e as Error).message}` });
  track = null;
}

// One statement per batch, inside SQLite: the rows never become JavaScript objects (reading 5000
// rows into objects and binding each by name cost about as much as the index maintenance itself).
// It reads the queue database through the ATTACH above (a read snapshot, as the queue connection's
// SELECT took) and writes only track.db.
const copyBatch = track?.prepare(
  `INSERT OR IGNORE INTO track (seq, ts, qid, message_id, sender, recipient)
   SELECT seq, ts, qid, message_id, sender, recipient FROM q.events WHERE seq > ? ORDER BY seq LIMIT 5000`,
);
const indexed = track?.prepare(`SELECT MAX(seq) AS s FROM track`);

/** index - copy the newest events' search keys into the tracking index, 5000 at a time. */
function index(): void {
  if (!track || !copyBatch || !indexed) return;
  for (;;) {
    const after = (indexed.get() as { s: number | null }).s ?? 0;
    if (copyBatch.run(after).changes < 5000) return;
  }
}

/** prune - drop index rows whose events the store has pruned (up to maxSeq). */
function prune(maxSeq: number): void {
  if (!track) return;
  track.prepare(`DELETE FROM track WHERE seq <= ? AND NOT EXISTS (SELECT 1 FROM q.events e WHERE e.seq = track.seq)`).run(maxSeq);
}

/** The answer of `PRAGMA wal_checkpoint`: frames in the WAL, and how many of them are in the database now. */
interface Checkpointed {
  busy: number;
  log: number;
  checkpointed: number;
}

function checkpoint(): Checkpointed {
  const [r] = queue.pragma('wal_checkpoint(PASSIVE)') as Checkpointed[];
  return r ?? { busy: 0, log: 0, checkpointed: 0 };
}

/** A hold asked for and not yet answered: no other work starts meanwhile. */
let holding = false;
/** Told to stop: the last checkpoint asks for no hold (the writer is closing). */
let stopping = false;
/** After a hold that did not take in the whole WAL (a reader kept an old snapshot), none before this time. */
let noHoldBefore = 0;
/** The WAL's length in frames at the last checkpoint: unchanged, nothing was written since. */
let lastLog = 0;

function work(): void {
  if (holding) return;
  try {
    index();
    const r = checkpoint();
    // `log` is the WAL's length when the checkpoint began: whatever the writer
    // appended while it ran is beyond it, so a checkpoint that took in all of
    // `log` has not necessarily taken in the whole WAL. A long WAL the writer
    // has written to since the last look (its length changed: appended to, or
    // started again and refilled) is held for; an unchanged one was wholly
    // taken in last time and starts again at the next write by itself.
    const written = r.log !== lastLog;
    lastLog = r.log;
    if (r.log >= restartFrames && written && !stopping && Date.now() >= noHoldBefore && parentPort) {
      holding = true;
      parentPort.postMessage({ kind: 'hold' });
    }
  } catch (e) {
    parentPort?.postMessage({ error: (e as Error).message });
  }
}

/** held - the writer has paused: checkpoint what is left, then let it go. */
function held(): void {
  try {
    if (!queue.open) return;
    const r = checkpoint();
    lastLog = r.log;
    if (r.checkpointed < r.log) noHoldBefore = Date.now() + 10 * intervalMs;
  } catch (e) {
    parentPort?.postMessage({ error: (e as Error).message });
  } finally {
    holding = false;
    parentPort?.postMessage({ kind: 'release' });
  }
}

work();
const timer = setInterval(work, intervalMs);
parentPort?.on('message', (m: { kind: string; maxSeq?: number }) => {
  if (m.kind === 'work') work();
  if (m.kind === 'held') held();
  if (m.kind === 'prune' && m.maxSeq !== undefined) prune(m.maxSeq);
  if (m.kind === 'stop') {
    clearInterval(timer);
    stopping = true;
    holding = false;
    work();
    track?.close();
    queue.close();
    parentPort?.postMessage({ kind: 'stopped' });
    parentPort?.close();
  }
});
