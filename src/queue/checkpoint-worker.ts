/*
 * queue/checkpoint-worker - runs SQLite WAL checkpoints on a worker thread,
 * with its own connection, so copying the WAL back into the database (and
 * that file's fsyncs) never stops the event loop that serves SMTP sessions.
 *
 * PASSIVE checkpoints only: they never wait for, or block, the writer. The
 * main connection turns its own automatic checkpoints off while this worker
 * runs (queue/embedded-store), and turns them back on if the worker dies.
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';

const { file, intervalMs } = workerData as { file: string; intervalMs: number };
const db = new Database(file);
db.pragma('synchronous = NORMAL');
db.pragma('busy_timeout = 1000');

function checkpoint(): void {
  try {
    db.pragma('wal_checkpoint(PASSIVE)');
  } catch (e) {
    parentPort?.postMessage({ error: (e as Error).message });
  }
}

const timer = setInterval(checkpoint, intervalMs);
parentPort?.on('message', (m: string) => {
  if (m === 'checkpoint') checkpoint();
  if (m === 'stop') {
    clearInterval(timer);
    checkpoint();
    db.close();
    parentPort?.postMessage('stopped');
    parentPort?.close();
  }
});
